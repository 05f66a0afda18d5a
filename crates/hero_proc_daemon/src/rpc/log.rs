//! `log.query`: the daemon's structured events.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::LogQuery, _, _>(query);
}

async fn query(q: LogQuery, c: Arc<Ctx>) -> Res<Vec<LogEventView>> {
    let min_level = match q.min_level.as_deref() {
        None => None,
        Some(l) => {
            Some(l.parse::<hero_proc_logstore::Level>().map_err(|e| rpc_err(ErrorCode::Invalid, e.to_string()))?)
        }
    };
    let query = hero_proc_logstore::LogQuery {
        source_prefix: q.source,
        min_level,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        contains: q.contains,
        limit: bounded("log.query", q.limit, 100, LOG_QUERY_MAX, "`until_ms` (the oldest ts_ms returned)")?,
        ..Default::default()
    };
    let logs = c.engine.logs.clone();
    let events = tokio::task::spawn_blocking(move || logs.query(&query))
        .await
        .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
    Ok(events
        .into_iter()
        .map(|e| LogEventView {
            ts_ms: e.ts_ms,
            source: e.source,
            level: e.level.as_str().to_owned(),
            message: e.message,
            job_id: e.job_id,
        })
        .collect())
}
