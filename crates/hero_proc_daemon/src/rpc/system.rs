//! `system.*`: what the daemon is and holds, and the compactor.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::SystemInfo, _, _>(info);
    r.add::<m::SystemCompact, _, _>(compact);
    r.add::<m::SystemCompactorStatus, _, _>(compactor_status);
}

async fn info(_: NoParams, c: Arc<Ctx>) -> Res<SystemInfo> {
    let stats = c.engine.store.db_stats().map_err(store_err)?;
    let services = c.engine.status(None).await.map(crate::views::services).map_err(engine_err)?;
    let counts = c.engine.store.job_counts_by_phase().map_err(store_err)?;
    Ok(SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at_ms: c.started_at_ms,
        root: c.paths.root.display().to_string(),
        socket: c.paths.socket.display().to_string(),
        db_path: c.paths.db.display().to_string(),
        db_size_bytes: stats.size_bytes,
        db_free_pages: stats.freelist_count,
        log_dir: c.paths.logs.display().to_string(),
        log_bytes: c.engine.logs.total_bytes().unwrap_or(0),
        services: services.len(),
        services_running: services.iter().filter(|s| s.state == ServiceState::Running).count(),
        actions: c.engine.store.list_actions().map_err(store_err)?.len(),
        jobs_running: counts.running as usize,
        containment: c.engine.containment.describe(),
        containment_fallback: c.engine.containment.fallback_reason.clone(),
    })
}

async fn compact(_: NoParams, c: Arc<Ctx>) -> Res<CompactView> {
    c.compactor.compact_now().await.map_err(|e| rpc_err(ErrorCode::Store, e))
}

async fn compactor_status(_: NoParams, c: Arc<Ctx>) -> Res<CompactorStatusView> {
    c.compactor.status().map_err(|e| rpc_err(ErrorCode::Store, e))
}
