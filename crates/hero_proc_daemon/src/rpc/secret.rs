//! `secret.*`: values go in, never come out.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_store::{Origin, Ref};

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::SecretSet, _, _>(set);
    r.add::<m::SecretList, _, _>(list);
    r.add::<m::SecretDelete, _, _>(delete);
}

async fn set(q: SecretSet, c: Arc<Ctx>) -> Res<Done> {
    for (field, value) in [("context", &q.context), ("name", &q.name)] {
        if !hero_proc_spec::schema::is_valid_name(value) {
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!(
                    "invalid parameters: {field}: invalid secret {field} `{value}` [name.invalid]\n  hint: {}",
                    hero_proc_spec::schema::NAME_HINT
                ),
            ));
        }
    }
    let w = hand_warning(&c, "secret", &Ref::new(&q.context, &q.name));
    let changed = c
        .vault
        .set(&q.context, &q.name, q.value.expose(), "rpc", &Origin::manual())
        .map_err(|e| rpc_err(ErrorCode::Store, e.to_string()))?;
    let mut message = None;
    c.reconciler.changed_by_hand();
    if changed {
        let restarted = c.engine.secret_changed(Ref::new(&q.context, &q.name)).await.map_err(engine_err)?;
        if !restarted.is_empty() {
            let names: Vec<String> = restarted.iter().map(|r| r.to_string()).collect();
            message = Some(format!("restarting {}", names.join(", ")));
        }
    }
    Ok(warned(Done { changed, message, warning: None }, w))
}

async fn list(_: NoParams, c: Arc<Ctx>) -> Res<Vec<SecretMetaView>> {
    let list = c.engine.store.list_secrets().map_err(store_err)?;
    Ok(list
        .into_iter()
        .map(|s| SecretMetaView {
            context: s.value.context,
            name: s.value.name,
            source: s.value.source,
            fingerprint: s.value.fingerprint.chars().take(12).collect(),
            managed: s.managed,
            revision: s.revision,
            updated_at_ms: s.updated_at_ms,
        })
        .collect())
}

async fn delete(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    let w = hand_warning(&c, "secret", &r);
    let res = c.engine.store.delete_secret(&r.context, &r.name).map(done).map(|d| warned(d, w)).map_err(store_err);
    c.reconciler.changed_by_hand();
    res
}
