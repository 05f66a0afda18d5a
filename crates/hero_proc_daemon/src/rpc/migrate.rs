//! `migrate.*`: the config repository's migrations against the record.

use std::sync::Arc;

use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use super::common::*;
use super::reconcile::foreign;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::MigrateStatus, _, _>(status);
    r.add::<m::MigrateBaseline, _, _>(baseline);
}

async fn status(_: NoParams, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.migrate_status().await.map_err(reconcile_err)?)
}

async fn baseline(q: MigrateBaseline, c: Arc<Ctx>) -> Res<Foreign> {
    foreign(c.reconciler.migrate_baseline(&q.name).await.map_err(reconcile_err)?)
}
