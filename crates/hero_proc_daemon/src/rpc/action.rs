//! `action.*`: actions set by hand, read with where they came from.

use std::sync::Arc;

use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_store::{Origin, Ref, Stored};
use jsonrpsee::types::Params;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add_raw::<m::ActionSet, _, _>(set);
    r.add::<m::ActionGet, _, _>(get);
    r.add::<m::ActionList, _, _>(list);
    r.add::<m::ActionDelete, _, _>(delete);
}

fn view(s: Stored<hero_proc_spec::Action>) -> ActionView {
    ActionView { action: s.value, managed: s.managed, revision: s.revision, updated_at_ms: s.updated_at_ms }
}

async fn set(p: Params<'static>, c: Arc<Ctx>) -> Res<Done> {
    // The file rules first (codes, hints); then the wire type, stricter on JSON types.
    validate_object(&p, "action", hero_proc_spec::object::check_action)?;
    let a: ActionSet = parse(&p)?;
    check_names("action", &a.action.context, &a.action.name)?;
    let w = hand_warning(&c, "action", &Ref::new(&a.action.context, &a.action.name));
    let r = c.engine.set_action(a.action, Origin::manual()).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    r
}

async fn get(r: Ref, c: Arc<Ctx>) -> Res<ActionView> {
    match c.engine.store.get_action(&r.context, &r.name).map_err(store_err)? {
        Some(s) => Ok(view(s)),
        None => Err(rpc_err(
            hero_proc_rpc::ErrorCode::NotFound,
            format!("no action {r}; `hero_proc action list` shows what exists"),
        )),
    }
}

async fn list(_: NoParams, c: Arc<Ctx>) -> Res<Vec<ActionView>> {
    Ok(c.engine.store.list_actions().map_err(store_err)?.into_iter().map(view).collect())
}

async fn delete(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    let w = hand_warning(&c, "action", &r);
    let res = c.engine.delete_action(r).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    res
}
