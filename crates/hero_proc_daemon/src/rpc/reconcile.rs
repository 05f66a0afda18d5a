//! `reconcile.*`: plan and apply the configuration repository, and the sync's state.
//! The results are the reconciler's own types, carried as [`Foreign`] JSON.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use serde::Serialize;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::ReconcilePlan, _, _>(plan);
    r.add::<m::ReconcileApply, _, _>(apply);
    r.add::<m::ReconcileStatus, _, _>(status);
    r.add::<m::ReconcileSuspend, _, _>(suspend);
    r.add::<m::ReconcileResume, _, _>(resume);
    r.add::<m::ReconcileHistory, _, _>(history);
    r.add::<m::ReconcileHold, _, _>(hold);
    r.add::<m::ReconcileRelease, _, _>(release);
}

/// `service core/web` from `{kind, name}`, checked like any reference.
fn object_of(q: &HoldParams) -> Res<String> {
    if !["action", "service", "secret"].contains(&q.kind.as_str()) {
        return Err(rpc_err(
            ErrorCode::Invalid,
            format!("invalid parameters: kind: `{}` is not action, service or secret", q.kind),
        ));
    }
    Ok(format!("{} {}", q.kind, parse_ref(&q.name)?))
}

async fn hold(q: HoldParams, c: Arc<Ctx>) -> Res<Foreign> {
    let object = object_of(&q)?;
    foreign(c.reconciler.hold(&object).await.map_err(reconcile_err)?)
}

async fn release(q: HoldParams, c: Arc<Ctx>) -> Res<Foreign> {
    let object = object_of(&q)?;
    foreign(c.reconciler.release(&object).await.map_err(reconcile_err)?)
}

/// A reconciler's result as JSON text (written once, exactly as it serializes).
pub(super) fn foreign<T: Serialize>(v: T) -> Res<Foreign> {
    Foreign::encode(&v).map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))
}

async fn plan(q: ReconcileParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.plan(q).await.map_err(reconcile_err)?)
}

async fn apply(q: ReconcileParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.apply(q).await.map_err(reconcile_err)?)
}

async fn status(_: NoParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.status().await.map_err(reconcile_err)?)
}

async fn suspend(_: NoParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.suspend().await.map_err(reconcile_err)?)
}

async fn resume(_: NoParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.resume().await.map_err(reconcile_err)?)
}

async fn history(q: HistoryQuery, c: Arc<Ctx>) -> Res<Foreign> {
    let limit = bounded("reconcile.history", q.limit, 50, HISTORY_MAX, "a smaller limit")?;
    foreign(c.engine.store.history(limit).map_err(store_err)?)
}

#[cfg(test)]
mod tests {
    use hero_proc_rpc::methods::{self as m, Method};
    use serde_json::Value;

    fn schema<M: Method>() -> Value {
        let mut g = m::SchemaGenerator::default();
        M::result_schema(&mut g).to_value()
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// The hand-written schemas of the reconciler's results (the contract crate cannot
    /// derive them) name exactly the fields those types write, and every sync result.
    #[test]
    fn hand_written_result_schemas_follow_the_reconcilers_types() {
        // Every optional part present, so every field is written.
        let status = hero_proc_reconcile::SyncStatus { commit_status: Some(Default::default()), ..Default::default() };
        let status = serde_json::to_value(status).unwrap();
        assert_eq!(keys(&schema::<m::ReconcileStatus>()["properties"]), keys(&status));
        let migrate = serde_json::to_value(hero_proc_reconcile::MigrateStatus::default()).unwrap();
        assert_eq!(keys(&schema::<m::MigrateStatus>()["properties"]), keys(&migrate));
        let results = &schema::<m::ReconcileHistory>()["items"]["properties"]["record"]["properties"]["result"]["enum"];
        for r in hero_proc_store::SyncResult::ALL {
            assert!(results.as_array().unwrap().iter().any(|x| x == r.as_str()), "{}", r.as_str());
        }
    }
}
