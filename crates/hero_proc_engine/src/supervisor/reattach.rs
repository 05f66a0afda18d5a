//! Boot: load services, adopt the processes a previous daemon left running (if they are
//! still the same processes and run the current config), clean up the rest, and start
//! what should run.

use std::collections::HashSet;
use std::time::Duration;

use hero_proc_logstore::Level;
use hero_proc_spec::{Action, ServiceStatus, Signal};
use hero_proc_store::{Job, JobExit, Phase, Ref, RunId};

use super::services::{Reason, Svc};
use super::{LiveJob, Purpose, Supervisor, key_of, now_ms};
use crate::process::{self, Running};

impl Supervisor {
    /// Load services, re-attach surviving processes, start what should run.
    pub(super) fn boot(&mut self) {
        let describe = match &self.contain.fallback_reason {
            None => (Level::Info, format!("containment: {}", self.contain.describe())),
            Some(why) => (
                Level::Warn,
                format!(
                    "containment: subreaper (no writable cgroup v2: {why}); under systemd set Delegate=yes on the unit to get a cgroup per service"
                ),
            ),
        };
        self.event(describe.0, "hero_proc.contain", describe.1, None);
        match self.store.list_services() {
            Ok(list) => {
                for s in list {
                    self.services.insert(key_of(&s.value), Svc::new(s.value, s.managed, now_ms()));
                }
            }
            Err(e) => self.event(Level::Error, "hero_proc.engine", format!("cannot load services: {e}"), None),
        }
        self.reattach();
        self.sweep_stray_units();
        let stopped = self.stopped_by_hand();
        for r in &stopped {
            if let Some(svc) = self.services.get_mut(r)
                && svc.life.job().is_none()
            {
                svc.reason = Some(Reason::StoppedByHand);
            }
        }
        match self.store.list_actions() {
            Ok(list) => {
                for a in list {
                    self.update_schedule(&a.value);
                }
            }
            Err(e) => self.event(Level::Error, "hero_proc.engine", format!("cannot load actions: {e}"), None),
        }
        self.arm_cron();
        let keys: Vec<Ref> = self
            .services
            .iter()
            .filter(|(k, s)| s.spec.status == ServiceStatus::Start && s.life.job().is_none() && !stopped.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.want_start(&k);
        }
    }

    /// Services stopped by hand (the stop holds across daemon restarts).
    pub(super) fn stopped_by_hand(&self) -> HashSet<Ref> {
        match self.store.stop_intents() {
            Ok(list) => list.into_iter().map(|(r, _)| r).collect(),
            Err(e) => {
                self.event(Level::Error, "hero_proc.engine", format!("cannot read stopped services: {e}"), None);
                HashSet::new()
            }
        }
    }

    /// Adopt processes a previous daemon started, if they are still the same processes.
    fn reattach(&mut self) {
        let active = match self.store.active_jobs() {
            Ok(a) => a,
            Err(e) => {
                self.event(Level::Error, "hero_proc.engine", format!("cannot read active jobs: {e}"), None);
                return;
            }
        };
        // Jobs the previous daemon spawned but died before recording (job starts are
        // written in batches): find their processes by their output files.
        let unrecorded: Vec<std::path::PathBuf> =
            active.iter().filter(|j| j.pid.is_none()).map(|j| self.logs.job_output_path(j.id.0)).collect();
        let found = process::find_by_output(&unrecorded);
        for mut job in active {
            if job.pid.is_none()
                && let Some(&pid) = found.get(&self.logs.job_output_path(job.id.0))
            {
                self.record_found(&mut job, pid);
            }
            let adopted = match (job.phase, job.pid, job.pid_start_ticks) {
                (Phase::Running, Some(pid), Some(ticks)) => process::reattach(pid, ticks),
                _ => None,
            };
            let service = job.service.clone().filter(|s| self.services.contains_key(s));
            match (adopted, service) {
                (Some(running), Some(key)) => self.reattach_service(&key, &job, running),
                (Some(running), None) if job.service.is_some() => self.stop_orphan(&job, running),
                (Some(running), None) => {
                    // A run job from the previous daemon: let it finish, but we cannot
                    // continue its run, so stop tracking after it exits.
                    let stop = self.watch(job.id, running, None, None);
                    let purpose = Purpose::Run { run: job.run_id.unwrap_or(RunId(0)) };
                    self.jobs.insert(job.id, LiveJob::running(purpose, stop));
                }
                (None, _) => {
                    // Gone, reused PID, or no longer ours: record it and move on. Services
                    // with status start are started again by boot.
                    let why = if job.phase == Phase::Pending {
                        "hero_proc restarted before the job started"
                    } else {
                        "the process was gone when hero_proc restarted"
                    };
                    let exit = JobExit {
                        phase: Phase::Failed,
                        exit_code: None,
                        signal: None,
                        error: Some(why.into()),
                        finished_at_ms: now_ms(),
                    };
                    let _ = self.store.finish_job(job.id, &exit);
                }
            }
        }
    }

    /// A job started but not recorded before a crash: its process was found by its
    /// output file; record it as running.
    fn record_found(&mut self, job: &mut Job, pid: u32) {
        let Some(ticks) = process::proc_start_ticks(pid) else { return };
        let started = now_ms();
        if self.store.mark_job_running(job.id, pid, Some(ticks), started).is_ok() {
            job.phase = Phase::Running;
            job.pid = Some(pid);
            job.pid_start_ticks = Some(ticks);
            job.started_at_ms = Some(started);
            self.event(
                Level::Warn,
                "hero_proc.engine",
                format!("found pid {pid} of job {} (started, not recorded, before a crash)", job.id.0),
                Some(job.id),
            );
        }
    }

    fn reattach_service(&mut self, key: &Ref, job: &Job, running: Running) {
        self.adopt(key, job.id, running);
        // A reconcile interrupted between its store commit and its restarts leaves a
        // process running an older config: restart it now.
        if let Some(why) = self.stale_reason(key, job) {
            self.event(
                Level::Warn,
                "hero_proc.engine",
                format!("{key} was started before {why} (an interrupted apply?); restarting it"),
                Some(job.id),
            );
            self.restart_running(key);
        }
    }

    /// Its service was deleted while no daemon was watching (an apply interrupted after
    /// its commit): stop it rather than leave an orphan.
    fn stop_orphan(&mut self, job: &Job, running: Running) {
        let (sig, timeout) =
            job.spec().map(|a| (a.stop.signal, a.stop.timeout.0)).unwrap_or((Signal::Term, Duration::from_secs(10)));
        let unit = job.service.as_ref().map(|k| self.unit_of(k));
        let stop = self.watch(job.id, running, None, unit);
        let mut live = LiveJob::running(Purpose::Run { run: job.run_id.unwrap_or(RunId(0)) }, stop);
        live.stop(sig, timeout);
        self.jobs.insert(job.id, live);
        let name = job.service.as_ref().map(|s| s.to_string()).unwrap_or_default();
        self.event(
            Level::Warn,
            "hero_proc.engine",
            format!("stopping pid {} of deleted service {name}", job.pid.unwrap_or(0)),
            Some(job.id),
        );
    }

    /// After re-attach: a cgroup whose processes no job records (its service was deleted
    /// while no daemon ran, or the database was lost or replaced) is emptied, so a start
    /// never runs a second copy next to them; empty cgroups are removed (they are created
    /// again at start).
    fn sweep_stray_units(&mut self) {
        for (leaf, unit) in self.contain.existing() {
            let tracked = self
                .services
                .iter()
                .any(|(k, s)| s.life.job().is_some() && format!("{}.{}", k.context, k.name) == leaf);
            if !tracked {
                self.kill_unrecorded(
                    &unit,
                    &format!("in the cgroup of {leaf}"),
                    "(lost or replaced database, or a service deleted meanwhile)",
                );
            }
            unit.remove_if_empty();
        }
    }

    /// Why a re-attached service process no longer matches its config, if it does not:
    /// its main action is another one, or changed, or a secret it reads changed since it
    /// started.
    fn stale_reason(&self, key: &Ref, job: &Job) -> Option<String> {
        let svc = self.services.get(key)?;
        let current = self.action_for(key, svc.main_step()).ok()?;
        let current_ref = Ref::new(&current.context, &current.name);
        if current_ref != job.action {
            return Some(format!("its main action became {current_ref}"));
        }
        match job.spec() {
            Ok(old) if old == current => {}
            _ => return Some(format!("action {current_ref} changed")),
        }
        let started = job.started_at_ms.unwrap_or(job.created_at_ms);
        for sec in current.secret_refs() {
            if let Ok(Some(stored)) = self.store.get_secret(&current.context, &sec.name)
                && stored.updated_at_ms > started
            {
                return Some(format!("secret {}/{} changed", current.context, sec.name));
            }
        }
        None
    }

    /// Restart a running service whose main process started from an older version of a
    /// changed action than the store now holds (description and tags aside, as the plan
    /// counts them); a restart already under way is enough.
    pub(super) fn restart_if_stale(&mut self, key: &Ref, changed: &HashSet<&Ref>) {
        let Some(svc) = self.services.get(key) else { return };
        let Some((job, _)) = svc.life.job().filter(|_| !svc.restart_pending()) else { return };
        let Ok(current) = self.action_for(key, svc.main_step()) else { return };
        if !changed.contains(&Ref::new(&current.context, &current.name)) {
            return;
        }
        let Ok(Some(row)) = self.store.get_job(job) else { return };
        let Ok(old) = row.spec() else { return };
        let runtime = |a: &Action| Action { description: None, tags: Vec::new(), ..a.clone() };
        if row.action != Ref::new(&current.context, &current.name) || runtime(&old) == runtime(&current) {
            return;
        }
        let why = format!("its process started from an older {}/{}", current.context, current.name);
        self.event(Level::Info, "hero_proc.reconcile", format!("restarting {key}: {why}"), Some(job));
        self.restart_running(key);
    }
}
