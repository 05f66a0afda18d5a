//! `job.*`: jobs (one execution of an action) and their output, page by page.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_store::{JobFilter, JobId, Phase, RunId};

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::JobList, _, _>(list);
    r.add::<m::JobGet, _, _>(get);
    r.add::<m::JobLogs, _, _>(logs);
}

async fn list(q: JobQuery, c: Arc<Ctx>) -> Res<Vec<JobView>> {
    let filter = JobFilter {
        phase: q.phase.map(phase_from_wire),
        service: q.service.as_deref().map(parse_ref).transpose()?,
        run_id: q.run_id.map(RunId),
        limit: bounded("job.list", q.limit, 100, JOB_LIST_MAX, "`before_id` (the smallest id returned)")?,
        before_id: q.before_id.map(JobId),
    };
    Ok(c.engine.store.list_jobs(&filter).map_err(store_err)?.into_iter().map(job_view).collect())
}

async fn get(q: IdRef, c: Arc<Ctx>) -> Res<JobView> {
    match c.engine.store.get_job(JobId(q.id)).map_err(store_err)? {
        Some(j) => Ok(job_view(j)),
        None => Err(rpc_err(ErrorCode::NotFound, format!("no job {}", q.id))),
    }
}

async fn logs(q: JobLogs, c: Arc<Ctx>) -> Res<LogLines> {
    if c.engine.store.get_job(JobId(q.id)).map_err(store_err)?.is_none() {
        return Err(rpc_err(ErrorCode::NotFound, format!("no job {}", q.id)));
    }
    let max_bytes = bounded(
        "job.logs",
        q.max_bytes,
        LOG_PAGE_MAX_BYTES,
        LOG_PAGE_MAX_BYTES,
        "`offset` (the answer's `next_offset`)",
    )?;
    if let Some(t) = q.tail
        && t > LOG_PAGE_MAX_LINES
    {
        return Err(rpc_err(
            ErrorCode::Invalid,
            format!(
                "job.logs: tail {t} is over the maximum of {LOG_PAGE_MAX_LINES} lines; read the whole output \
                 forward instead, page by page with `offset` (`hero_proc job logs {}` does)",
                q.id
            ),
        ));
    }
    let opts = hero_proc_logstore::ReadOpts {
        tail_lines: q.tail,
        max_bytes: Some(max_bytes.max(1)),
        offset: q.offset,
        include_rotated: true,
        max_lines: Some(LOG_PAGE_MAX_LINES),
        max_line_bytes: q.tail.map(|_| LOG_LINE_MAX_BYTES),
    };
    let logs = c.engine.logs.clone();
    // File reads off the async workers: a page is at most 1 MiB, but the disk may be slow.
    let out = tokio::task::spawn_blocking(move || logs.read_job_output(q.id, opts))
        .await
        .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
    let out = match out {
        Ok(out) => out,
        // The job exists but has no file: it has not started yet, wrote nothing (an empty
        // file goes back to the spare pool when its job ends), or its output was removed
        // by the caps. All read as no lines; a follower's offset past 0 says `reset`.
        Err(hero_proc_logstore::Error::NoOutput { .. }) => {
            hero_proc_logstore::JobOutput { reset: q.offset.is_some_and(|o| o > 0), ..Default::default() }
        }
        Err(e) => return Err(rpc_err(ErrorCode::Internal, e.to_string())),
    };
    Ok(LogLines {
        lines: out.lines,
        next_offset: out.next_offset,
        has_more: out.has_more,
        ends_mid_line: out.ends_mid_line,
        reset: out.reset,
    })
}

pub(super) fn phase_to_wire(p: Phase) -> JobPhase {
    match p {
        Phase::Pending => JobPhase::Pending,
        Phase::Running => JobPhase::Running,
        Phase::Succeeded => JobPhase::Succeeded,
        Phase::Failed => JobPhase::Failed,
        Phase::Cancelled => JobPhase::Cancelled,
    }
}

pub(super) fn phase_from_wire(p: JobPhase) -> Phase {
    match p {
        JobPhase::Pending => Phase::Pending,
        JobPhase::Running => Phase::Running,
        JobPhase::Succeeded => Phase::Succeeded,
        JobPhase::Failed => Phase::Failed,
        JobPhase::Cancelled => Phase::Cancelled,
    }
}

pub(super) fn job_view(j: hero_proc_store::Job) -> JobView {
    JobView {
        id: j.id.0,
        run_id: j.run_id.map(|r| r.0),
        action: j.action.to_string(),
        service: j.service.map(|s| s.to_string()),
        phase: phase_to_wire(j.phase),
        attempt: j.attempt,
        pid: j.pid,
        exit_code: j.exit_code,
        signal: j.signal,
        error: j.error,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
    }
}
