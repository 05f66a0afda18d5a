//! Runs: a set of jobs (one per action named), ordered by `depends_on` between them.
//! [`LiveRun`] is the pure part (which jobs are ready, which are doomed, the run's
//! outcome); the supervisor creates the rows, spawns and records.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hero_proc_spec::{Action, Signal};
use hero_proc_store::{JobExit, JobId, NewJob, Phase, Ref, RunId, StoreError};

use super::{EngineError, Purpose, Supervisor, now_ms};
use crate::process::StartTicks;

/// A run in progress.
#[derive(Default)]
pub(super) struct LiveRun {
    /// Jobs of the run not started yet, and the jobs (of the same run) each waits for.
    pub(super) pending: Vec<(JobId, Action, Vec<JobId>)>,
    pub(super) running: HashSet<JobId>,
    /// Finished jobs and whether each succeeded.
    pub(super) done: HashMap<JobId, bool>,
    pub(super) cancelled: bool,
}

/// What a run does next: start `ready`, cancel `doomed`.
#[derive(Debug, Default)]
pub(super) struct Advance {
    pub(super) ready: Vec<(JobId, Action)>,
    pub(super) doomed: Vec<JobId>,
}

impl LiveRun {
    /// Take the pending jobs whose dependencies all succeeded (ready) or one failed or
    /// the run was cancelled (doomed, recorded as not succeeded). Pure.
    pub(super) fn advance(&mut self) -> Advance {
        let mut out = Advance::default();
        let (cancelled, done) = (self.cancelled, &self.done);
        self.pending.retain(|(id, a, deps)| {
            if cancelled || deps.iter().any(|d| done.get(d) == Some(&false)) {
                out.doomed.push(*id);
                return false;
            }
            if deps.iter().all(|d| done.get(d) == Some(&true)) {
                out.ready.push((*id, a.clone()));
                return false;
            }
            true
        });
        for id in &out.doomed {
            self.done.insert(*id, false);
        }
        out
    }

    /// The run's final phase once nothing is pending or running.
    pub(super) fn outcome(&self) -> Option<Phase> {
        if !self.pending.is_empty() || !self.running.is_empty() {
            return None;
        }
        Some(if self.cancelled {
            Phase::Cancelled
        } else if self.done.values().all(|v| *v) {
            Phase::Succeeded
        } else {
            Phase::Failed
        })
    }
}

/// A run as recorded: what its submitter is told, without reading it back.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub run: RunId,
    pub label: String,
    pub created_at_ms: i64,
    /// Its jobs (all pending), in the order of the actions given.
    pub jobs: Vec<(JobId, Ref)>,
}

impl Supervisor {
    /// Record a run and start what of it can start.
    pub(super) fn submit(&mut self, actions: Vec<Ref>, label: String) -> Result<RunId, EngineError> {
        let run = self.record_run(actions, label)?.run;
        self.advance_run(run);
        Ok(run)
    }

    /// Record a run (its row and its jobs' rows, in one transaction) and hold it live,
    /// without starting anything: `advance_run` starts its jobs. The caller may answer
    /// in between, so a client's next call overlaps with the spawns.
    pub(super) fn record_run(&mut self, actions: Vec<Ref>, label: String) -> Result<Submitted, EngineError> {
        if actions.is_empty() {
            return Err(EngineError::Invalid("a run needs at least one action".into()));
        }
        // A run may name one action many times: read each once.
        let mut specs = Vec::with_capacity(actions.len());
        let mut seen: HashMap<&Ref, Action> = HashMap::new();
        for r in &actions {
            if !seen.contains_key(r) {
                match self.stored_action(r)? {
                    Some(a) => seen.insert(r, a),
                    None => {
                        return Err(EngineError::NotFound(format!(
                            "no action {r}; `hero_proc action list` shows what exists"
                        )));
                    }
                };
            }
            specs.push(seen[r].clone());
        }
        // depends_on between actions of this run order its jobs; others are ignored.
        let mut live = LiveRun::default();
        // One transaction for the run and all its rows: a run costs one commit, not one
        // per job (nor three for a run of one). The starts and exits this thread has not
        // written yet go first in it: a client that submits one job per call pays one
        // commit a job, not two.
        let created = now_ms();
        let write_run = |tx: &hero_proc_store::Tx<'_>| {
            let run = tx.create_running_run(&label, created)?;
            let ids = specs
                .iter()
                .map(|a| {
                    let id = tx.create_job(&NewJob {
                        run_id: Some(run),
                        action: a,
                        service: None,
                        attempt: 1,
                        created_at_ms: created,
                    })?;
                    Ok((Ref::new(&a.context, &a.name), id))
                })
                .collect::<Result<Vec<(Ref, JobId)>, StoreError>>()?;
            Ok::<_, StoreError>((run, ids))
        };
        let along = (self.has_unrecorded() && self.flush_delay.is_none()).then(|| {
            self.store.transaction(|tx| {
                self.write_unrecorded(tx)?;
                write_run(tx)
            })
        });
        let (run, ids) = match along {
            Some(Ok(out)) => {
                self.unrecorded_written();
                out
            }
            // One of them failed: they are written on their own, with their own error
            // handling, and the run after.
            Some(Err(_)) => {
                self.flush_exits();
                self.store.transaction(write_run)?
            }
            // None, or a failed write's retry timer has them.
            None => self.store.transaction(write_run)?,
        };
        for (a, (_, id)) in specs.into_iter().zip(ids.clone()) {
            let deps = a
                .depends_on
                .iter()
                .filter_map(|d| {
                    let r = Ref::resolve(&d.name, &a.context, |x| ids.iter().any(|(k, _)| k == x));
                    ids.iter().find(|(k, _)| *k == r).map(|(_, j)| *j)
                })
                .collect();
            live.pending.push((id, a, deps));
        }
        self.runs.insert(run, live);
        Ok(Submitted { run, label, created_at_ms: created, jobs: ids.into_iter().map(|(r, j)| (j, r)).collect() })
    }

    pub(super) fn advance_run(&mut self, run: RunId) {
        let Some(live) = self.runs.get_mut(&run) else { return };
        let Advance { ready, doomed } = live.advance();
        // Written with the exits that doomed them (see `unrecorded`).
        let now = now_ms();
        for id in doomed {
            let error = Some("a job it depends on did not succeed, or the run was cancelled".into());
            let exit = JobExit { phase: Phase::Cancelled, exit_code: None, signal: None, error, finished_at_ms: now };
            self.unrecorded.push((id, exit));
        }
        let mut started = Vec::with_capacity(ready.len());
        let mut start_failed = false;
        for (id, a) in ready {
            match self.start_run_job(run, id, &a) {
                Some(s) => started.push(s),
                None => start_failed = true,
            }
        }
        self.record_starts(started);
        if start_failed {
            // Jobs that depend on one that could not start are cancelled now.
            return self.advance_run(run);
        }
        if let Some(phase) = self.runs.get(&run).and_then(LiveRun::outcome) {
            self.unrecorded_runs.push((run, phase, now_ms()));
            self.runs.remove(&run);
        }
    }

    /// The jobs started in one step of a run: written with the rest of this turn.
    fn record_starts(&mut self, started: Vec<(JobId, u32, StartTicks)>) {
        let now = now_ms();
        self.unrecorded_starts.extend(started.into_iter().map(|(job, pid, ticks)| (job, pid, ticks, now)));
    }

    /// Start a run's pending job (its row exists already). Returns what to record as
    /// started, or None when it could not start (already recorded as failed).
    fn start_run_job(&mut self, run: RunId, job: JobId, action: &Action) -> Option<(JobId, u32, StartTicks)> {
        match self.launch(job, action, Purpose::Run { run }) {
            Ok((pid, ticks)) => {
                if let Some(live) = self.runs.get_mut(&run) {
                    live.running.insert(job);
                }
                Some((job, pid, ticks))
            }
            Err(_) => {
                if let Some(live) = self.runs.get_mut(&run) {
                    live.done.insert(job, false);
                }
                None
            }
        }
    }

    /// A job of a run ended: note it. When it was the run's last job, the run ends here
    /// and its phase is returned (the caller records it with the exit).
    pub(super) fn run_job_exited(&mut self, run: RunId, job: JobId, ok: bool) -> Option<Phase> {
        let live = self.runs.get_mut(&run)?;
        live.running.remove(&job);
        live.done.insert(job, ok);
        let phase = live.outcome()?;
        self.runs.remove(&run);
        Some(phase)
    }

    pub(super) fn cancel_run(&mut self, run: RunId) -> Result<bool, EngineError> {
        let Some(live) = self.runs.get_mut(&run) else {
            return match self.store.get_run(run)? {
                Some(_) => Ok(false),
                None => Err(EngineError::NotFound(format!("no run {run}"))),
            };
        };
        live.cancelled = true;
        let running: Vec<JobId> = live.running.iter().copied().collect();
        for j in running {
            if let Some(lj) = self.jobs.get_mut(&j) {
                lj.stop(Signal::Term, Duration::from_secs(10));
            }
        }
        self.advance_run(run);
        Ok(true)
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
