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
    let id = c.engine.submit(refs, label).await.map_err(engine_err)?;
    let run =
        c.engine.store.get_run(id).map_err(store_err)?.ok_or_else(|| rpc_err(ErrorCode::Internal, "run vanished"))?;
    run_view(&c, run)
}

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
    run_view_jobs(ctx, r, 10_000)
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
