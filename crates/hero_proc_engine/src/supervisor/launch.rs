//! Process I/O of jobs: create the job row, open its output, spawn, watch, and record
//! exits (in batches, kept in memory and retried when a write fails).

use std::time::Duration;

use hero_proc_logstore::Level;
use hero_proc_spec::{Action, EnvValue, Signal};
use hero_proc_store::{JobExit, JobId, NewJob, Phase, Ref, RunId, StoreError, Tx};
use tokio::sync::oneshot;

use super::{JobLife, LiveJob, Msg, Purpose, Supervisor, now_ms};
use crate::contain::Unit;
use crate::process::{self, Exit, Running, StartTicks};

impl Supervisor {
    /// Create the job row, open its output file, spawn, and watch it (the start is
    /// recorded with the rest of this turn: see `unrecorded_starts`).
    pub(super) fn start_job(
        &mut self,
        action: &Action,
        run: Option<RunId>,
        service: Option<Ref>,
        attempt: u32,
        purpose: Purpose,
    ) -> Result<(JobId, u32), String> {
        let job = self
            .store
            .create_job(&NewJob { run_id: run, action, service, attempt, created_at_ms: now_ms() })
            .map_err(|e| e.to_string())?;
        let (pid, ticks) = self.launch(job, action, purpose)?;
        self.unrecorded_starts.push((job, pid, ticks, now_ms()));
        Ok((job, pid))
    }

    /// Open the job's output file, resolve its environment, spawn it and watch it. On
    /// failure the job row is finished as failed with the reason (and the reason logged).
    /// The caller records the start (so a burst can share one transaction).
    pub(super) fn launch(
        &mut self,
        job: JobId,
        action: &Action,
        purpose: Purpose,
    ) -> Result<(u32, StartTicks), String> {
        // A daemon whose database was replaced starts nothing: the processes it would
        // start could not be recorded, and a daemon on the restored file would start them
        // again.
        let unit = match &purpose {
            Purpose::Service { key, .. } => Some(self.unit_of(key)),
            Purpose::Run { .. } => None,
        };
        let spawned = self
            .store
            .check_file()
            .map_err(|e| e.to_string())
            .and_then(|()| self.logs.open_job_output(job.0).map_err(|e| format!("cannot open the output file: {e}")))
            .and_then(|output| Ok((output, self.resolve_env(action)?, placement(action, unit.as_ref())?)))
            .and_then(|(output, env, place)| {
                process::spawn_in(action, &env, &self.expand, &output, &place).map_err(|e| e.to_string())
            });
        let running = match spawned {
            Ok(r) => r,
            Err(why) => {
                let exit = JobExit {
                    phase: Phase::Failed,
                    exit_code: None,
                    signal: None,
                    error: Some(why.clone()),
                    finished_at_ms: now_ms(),
                };
                let _ = self.store.finish_job(job, &exit);
                let msg = format!("job {job} ({}/{}) could not start: {why}", action.context, action.name);
                self.event(Level::Error, "hero_proc.job", msg, Some(job));
                return Err(why);
            }
        };
        let started = (running.pid, running.start_ticks.clone());
        let timeout = if action.process {
            None
        } else {
            action.timeout.map(|d| (d.0, action.stop.signal, action.stop.timeout.0))
        };
        let stop = self.watch(job, running, timeout, unit);
        self.jobs.insert(job, LiveJob::running(purpose, stop));
        Ok(started)
    }

    fn resolve_env(&self, action: &Action) -> Result<Vec<(String, String)>, String> {
        action
            .env
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Plain(s) => Ok((k.clone(), s.clone())),
                EnvValue::Secret(n) => self.secrets.reveal(&action.context, &n.name).map(|s| (k.clone(), s)),
            })
            .collect()
    }

    /// Watch a process: report its exit; stop it on request or on its timeout. With a
    /// unit, the exit is reported only once the unit is empty: whatever the process
    /// forked (double forks and `setsid` included) is stopped with it.
    pub(super) fn watch(
        &self,
        job: JobId,
        mut running: Running,
        timeout: Option<(Duration, Signal, Duration)>,
        unit: Option<Unit>,
    ) -> oneshot::Sender<(Signal, Duration)> {
        let (stop_tx, stop_rx) = oneshot::channel::<(Signal, Duration)>();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let limit = async {
                match timeout {
                    Some((d, _, _)) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let mut timed_out = false;
            // Descendants that left the group get the stop signal too, and the rest of
            // the stop timeout to exit before they are killed.
            let graceful = |sig: Signal, t: Duration| {
                if let Some(u) = &unit {
                    u.signal_all(sig.number());
                }
                tokio::time::Instant::now() + t
            };
            let mut grace_until = None;
            let exit = tokio::select! {
                r = running.wait() => r,
                Ok((sig, t)) = stop_rx => {
                    grace_until = Some(graceful(sig, t));
                    running.stop(sig, t).await
                }
                () = limit => {
                    timed_out = true;
                    let (_, sig, t) = timeout.expect("limit fires only with a timeout");
                    grace_until = Some(graceful(sig, t));
                    running.stop(sig, t).await
                }
            };
            let exit = exit.unwrap_or(Exit::Unknown);
            // A group does not outlive its main process: no orphans holding ports.
            let _ = process::signal_group(running.pid, libc::SIGKILL);
            if let Some(u) = unit {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(until) = grace_until {
                        u.wait_empty(until.saturating_duration_since(tokio::time::Instant::now()));
                    }
                    if !u.kill_all(Duration::from_secs(10)) {
                        tracing::error!(marker = %u.marker, "processes of the unit survived SIGKILL for 10s");
                    }
                    u.remove_if_empty();
                })
                .await;
            }
            let _ = tx.send(Msg::Exited { job, exit, timed_out });
        });
        stop_tx
    }

    /// Record a batch of exits in one transaction, then react to each in order.
    pub(super) fn on_exits(&mut self, batch: Vec<(JobId, Exit, bool)>) {
        let now = now_ms();
        let mut done = Vec::with_capacity(batch.len());
        for (job, exit, timed_out) in batch {
            let Some(live) = self.jobs.remove(&job) else { continue };
            let stopped = matches!(live.life, JobLife::Stopping);
            let phase = if exit.success() && !timed_out {
                Phase::Succeeded
            } else if stopped && !timed_out {
                Phase::Cancelled
            } else {
                Phase::Failed
            };
            let (code, signal) = match exit {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
                Exit::Unknown | Exit::NotStarted(_) => (None, None),
            };
            let error = if timed_out {
                Some("timed out".to_owned())
            } else if matches!(exit, Exit::Unknown | Exit::NotStarted(_)) {
                Some(exit.to_string())
            } else {
                None
            };
            done.push((
                job,
                live,
                exit,
                timed_out,
                JobExit { phase, exit_code: code, signal, error, finished_at_ms: now },
            ));
        }
        // A run whose last job this is ends now: its phase is written with the exit.
        for (job, live, _, _, ex) in &done {
            if let Purpose::Run { run } = live.purpose
                && let Some(phase) = self.run_job_exited(run, *job, ex.phase == Phase::Succeeded)
            {
                self.unrecorded_runs.push((run, phase, now));
            }
        }
        // Written with the next write (a one-call client's next `run.submit` takes them
        // along), before any answer, or `WRITE_DELAY` after this turn at the latest.
        self.unrecorded.extend(done.iter().map(|(job, _, _, _, ex)| (*job, ex.clone())));
        for (job, live, exit, timed_out, _) in done {
            match live.purpose {
                Purpose::Service { key } => self.on_service_exit(&key, job, exit, timed_out),
                Purpose::Run { run } => self.advance_run(run),
            }
        }
    }

    /// The output files of the jobs whose exits are committed go back to the spare pool
    /// when they are empty and no process holds them (`LogStore::recycle_job_output`):
    /// after the commit, so a daemon that dies first re-attaches nothing it needs.
    pub(super) fn recycle_outputs(&mut self) {
        for job in std::mem::take(&mut self.ended_outputs) {
            self.logs.recycle_job_output(job.0);
        }
    }

    /// Whether starts, exits or run phases wait to be written.
    pub(super) fn has_unrecorded(&self) -> bool {
        !(self.unrecorded.is_empty() && self.unrecorded_starts.is_empty() && self.unrecorded_runs.is_empty())
    }

    /// Write the starts, exits and run phases not yet recorded, inside `tx` (starts
    /// first: a job may have started and ended since the last write). The caller tells
    /// the supervisor what was committed ([`Self::unrecorded_written`]).
    pub(super) fn write_unrecorded(&self, tx: &Tx<'_>) -> Result<(), StoreError> {
        // A job that started and ended since the last write: one statement, and no
        // start time read for it (none is needed for a finished job).
        // `ended`: the exits not yet written (with no starts to match, all of them).
        let mut ended: std::collections::HashMap<JobId, &JobExit> = if self.unrecorded_starts.is_empty() {
            Default::default()
        } else {
            self.unrecorded.iter().map(|(j, ex)| (*j, ex)).collect()
        };
        for (job, pid, ticks, at) in &self.unrecorded_starts {
            match ended.remove(job) {
                Some(ex) => tx.finish_started_job(*job, *pid, ticks.if_known(), *at, ex)?,
                // Read now unless its watcher has reaped it (then its exit is written
                // next, and no start time is needed: see StartTicks).
                None => tx.mark_job_running(*job, *pid, ticks.get_or_read(*pid), *at)?,
            }
        }
        for (job, ex) in &self.unrecorded {
            if self.unrecorded_starts.is_empty() || ended.contains_key(job) {
                tx.finish_job(*job, ex)?;
            }
        }
        for (run, phase, at) in &self.unrecorded_runs {
            tx.set_run_phase(*run, *phase, *at)?;
        }
        Ok(())
    }

    /// What [`Self::write_unrecorded`] wrote is committed: forget it. The output files of
    /// the jobs that ended go back to the spare pool at the end of the turn (after any
    /// answer: see `recycle_outputs`), or right after a flush.
    pub(super) fn unrecorded_written(&mut self) {
        if self.flush_delay.take().is_some() {
            let msg = format!(
                "recorded {} job exits and {} job starts that a failed write had kept",
                self.unrecorded.len(),
                self.unrecorded_starts.len()
            );
            self.event(Level::Info, "hero_proc.job", msg, None);
        }
        self.unrecorded_starts.clear();
        self.unrecorded_runs.clear();
        // What is queued from now on gets a full WRITE_DELAY.
        self.write_due = None;
        let ended = std::mem::take(&mut self.unrecorded);
        self.ended_outputs.extend(ended.into_iter().map(|(job, _)| job));
    }

    /// Write the starts, exits and run phases not yet recorded, in one transaction. A start that cannot be written is dropped with an
    /// error event (its job stays pending; a later daemon re-attaches it by its output
    /// file). On failure the exits stay in memory, and the retry timer is armed (doubling
    /// from 1 s to 30 s) unless the database was replaced (nothing can be written until
    /// a restart).
    pub(super) fn flush_exits(&mut self) {
        if !self.has_unrecorded() {
            return;
        }
        let e = match self.store.transaction(|tx| self.write_unrecorded(tx)) {
            Ok(()) => {
                self.unrecorded_written();
                if !self.store.in_batch() {
                    self.recycle_outputs();
                }
                return;
            }
            Err(e) => e,
        };
        let retry = matches!(
            e,
            StoreError::DiskFull { .. }
                | StoreError::Busy { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Io { .. }
                | StoreError::Sqlite { .. }
        );
        let first = self.flush_delay.is_none();
        if first || !retry {
            let what = if retry { "kept; retrying until they can be written" } else { "dropped" };
            let counts = match (self.unrecorded_starts.len(), self.unrecorded.len()) {
                (0, x) => format!("{x} job exits"),
                (s, 0) => format!("{s} job starts"),
                (s, x) => format!("{s} job starts and {x} job exits"),
            };
            let msg = format!("cannot record {counts} ({what}): {e}");
            self.event(Level::Error, "hero_proc.job", msg, None);
        }
        if !retry {
            self.unrecorded_starts.clear();
            self.unrecorded.clear();
            // A run's phase goes on its own: its jobs' rows may be what failed.
            for (run, phase, at) in std::mem::take(&mut self.unrecorded_runs) {
                let _ = self.store.set_run_phase(run, phase, at);
            }
            return;
        }
        let delay = self.flush_delay.map_or(Duration::from_secs(1), |d| (d * 2).min(Duration::from_secs(30)));
        self.flush_delay = Some(delay);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::FlushExits);
        });
    }
}

/// Where and as whom `action` runs: its account (`user:`), its unit's cgroup and marker.
fn placement(action: &Action, unit: Option<&Unit>) -> Result<process::Placement, String> {
    let account = match &action.user {
        Some(u) => Some(process::Account::resolve(u, action.group.as_deref()).map_err(|e| e.to_string())?),
        None => None,
    };
    let cgroup = match unit {
        Some(u) => u.prepare().map_err(|e| process::SpawnError::Contain(e).to_string())?,
        None => None,
    };
    Ok(process::Placement { account, cgroup, marker: unit.map(|u| u.marker.clone()) })
}
