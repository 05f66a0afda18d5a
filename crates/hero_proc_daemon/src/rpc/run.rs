//! `run.*`: runs (a set of jobs submitted together, ordered by `depends_on`).

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_store::{JobFilter, Ref, RunId};
use jsonrpsee::types::ErrorObjectOwned;

use super::common::*;
use super::job::{job_view, phase_to_wire};
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::RunSubmit, _, _>(submit);
    r.add::<m::RunList, _, _>(list);
    r.add::<m::RunGet, _, _>(get);
    r.add::<m::RunCancel, _, _>(cancel);
}

async fn submit(q: RunSubmit, c: Arc<Ctx>) -> Res<RunView> {
    let refs = q.actions.iter().map(|a| parse_ref(a)).collect::<Result<Vec<Ref>, _>>()?;
    let label = q.label.unwrap_or_else(|| q.actions.join(" "));
    let s = c.engine.submit(refs, label).await.map_err(engine_err)?;
    // Answered from what the engine recorded (a run and its pending jobs), not read back:
    // one submission, one commit, no reads.
    let max = RUN_VIEW_JOBS as usize;
    let jobs = s
        .jobs
        .iter()
        .take(max)
        .map(|(id, action)| JobView {
            id: id.0,
            run_id: Some(s.run.0),
            action: action.to_string(),
            service: None,
            phase: JobPhase::Pending,
            attempt: 1,
            pid: None,
            exit_code: None,
            signal: None,
            error: None,
            created_at_ms: s.created_at_ms,
            started_at_ms: None,
            finished_at_ms: None,
        })
        .collect();
    Ok(RunView {
        id: s.run.0,
        label: s.label,
        phase: JobPhase::Running,
        created_at_ms: s.created_at_ms,
        finished_at_ms: None,
        jobs,
        jobs_more: s.jobs.len() > max,
    })
}

/// Jobs in one run's view (`run.get`, `run.submit`); more are paged with `job.list`.
const RUN_VIEW_JOBS: u32 = 10_000;

async fn list(q: RunList, c: Arc<Ctx>) -> Res<Vec<RunView>> {
    let limit = bounded("run.list", q.limit, 50, RUN_LIST_MAX, "`before_id` (the smallest id returned)")?;
    // One snapshot, two queries (not one per run).
    let runs = c.engine.store.list_runs_with_jobs(limit, q.before_id.map(RunId), RUN_LIST_JOBS).map_err(store_err)?;
    Ok(runs.into_iter().map(|r| view(r.run, r.jobs.into_iter().map(job_view).collect(), r.jobs_more)).collect())
}

async fn get(q: RunGet, c: Arc<Ctx>) -> Res<RunView> {
    match c.engine.store.get_run(RunId(q.id)).map_err(store_err)? {
        Some(r) if !q.jobs => Ok(view(r, Vec::new(), false)),
        Some(r) => run_view(&c, r),
        None => Err(rpc_err(ErrorCode::NotFound, format!("no run {}", q.id))),
    }
}

async fn cancel(q: IdRef, c: Arc<Ctx>) -> Res<Done> {
    c.engine.cancel_run(RunId(q.id)).await.map(done).map_err(engine_err)
}

pub(super) fn run_view(ctx: &Ctx, r: hero_proc_store::Run) -> Result<RunView, ErrorObjectOwned> {
    run_view_jobs(ctx, r, RUN_VIEW_JOBS)
}

/// A run with at most `max_jobs` of its jobs (the first ones); `jobs_more` says if
/// there are more.
pub(super) fn run_view_jobs(ctx: &Ctx, r: hero_proc_store::Run, max_jobs: u32) -> Result<RunView, ErrorObjectOwned> {
    let jobs = ctx
        .engine
        .store
        .list_jobs(&JobFilter { run_id: Some(r.id), limit: max_jobs + 1, ..Default::default() })
        .map_err(store_err)?;
    let jobs_more = jobs.len() > max_jobs as usize;
    let mut jobs: Vec<JobView> = jobs.into_iter().take(max_jobs as usize).map(job_view).collect();
    jobs.sort_by_key(|j| j.id);
    Ok(view(r, jobs, jobs_more))
}

/// A run as the wire shows it, with the jobs given (oldest first).
fn view(r: hero_proc_store::Run, jobs: Vec<JobView>, jobs_more: bool) -> RunView {
    RunView {
        id: r.id.0,
        label: r.label,
        phase: phase_to_wire(r.phase),
        created_at_ms: r.created_at_ms,
        finished_at_ms: r.finished_at_ms,
        jobs,
        jobs_more,
    }
}
