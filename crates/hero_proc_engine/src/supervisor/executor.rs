//! Performs the service machine's effects: spawn a step, signal a job, probe health, arm
//! a backoff timer, write event lines, wake waiting services. Results come back as
//! events through [`Supervisor::feed`], so every decision stays in `services::step`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hero_proc_logstore::{Level, LogEvent};
use hero_proc_spec::{Action, HealthCheck, Probe, Restart, Signal};
use hero_proc_store::{JobId, Ref};

use super::deps;
use super::services::{self, Effect, Event, MainFacts, Now, Step};
use super::view::{CheckResult, ServiceState};
use super::{LiveJob, Msg, Purpose, Supervisor, now_ms};
use crate::contain::Unit;
use crate::health;
use crate::process;

/// Decoded actions the supervisor keeps at most (then it starts afresh).
const ACTION_CACHE_MAX: usize = 4096;

impl Supervisor {
    pub(super) fn event(&self, level: Level, source: &str, message: String, job: Option<JobId>) {
        match level {
            Level::Error => tracing::error!(source, "{message}"),
            Level::Warn => tracing::warn!(source, "{message}"),
            _ => tracing::info!(source, "{message}"),
        }
        let ev = LogEvent {
            ts_ms: now_ms(),
            source: source.to_owned(),
            level,
            message,
            job_id: job.map(|j| j.0),
            fields: Default::default(),
        };
        if let Err(e) = self.logs.append_event(&ev) {
            tracing::warn!("cannot write to the log store: {e}");
        }
    }

    /// Step a service's machine with `ev` and perform what it decided.
    pub(super) fn feed(&mut self, key: &Ref, ev: Event) -> Step {
        let Some(svc) = self.services.get_mut(key) else {
            self.end_stale_monitor(key);
            return Step::default();
        };
        let mut out = services::step(svc, ev, Now { ms: now_ms(), at: Instant::now() });
        let effects = std::mem::take(&mut out.effects);
        for e in effects {
            self.perform(key, e);
        }
        self.end_stale_monitor(key);
        out
    }

    fn perform(&mut self, key: &Ref, effect: Effect) {
        match effect {
            Effect::Begin => self.begin(key),
            Effect::KillUnknown => self.end_unknown_processes(key),
            Effect::RunStep { step, attempt } => self.run_step(key, step, attempt),
            Effect::StopJob { job, step } => self.stop_job(key, job, step),
            Effect::ProbeHealth { generation } => self.probe_health(key, generation),
            Effect::Monitor { generation } => self.monitor(key, generation),
            Effect::ArmBackoff { after, generation } => {
                let tx = self.tx.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Msg::BackoffDone { key, generation });
                });
            }
            Effect::Log { level, message } => self.event(level, "hero_proc.service", message, None),
            Effect::WakeWaiters => self.wake_waiters(),
        }
    }

    /// Ask for a service to run. Returns false when it already runs or is starting.
    pub(super) fn want_start(&mut self, key: &Ref) -> bool {
        self.feed(key, Event::Start).acted
    }

    /// Ask for a service to stop. Returns false when it was not running.
    pub(super) fn want_stop(&mut self, key: &Ref) -> bool {
        self.feed(key, Event::Stop).acted
    }

    /// Restart a service that has a process (config or secret changed); a restart under
    /// way is enough.
    pub(super) fn restart_running(&mut self, key: &Ref) -> bool {
        self.feed(key, Event::RestartRunning).acted
    }

    /// The containment unit of a service.
    pub(super) fn unit_of(&self, key: &Ref) -> Unit {
        self.contain.unit(&key.context, &key.name)
    }

    pub(super) fn action_for(&self, key: &Ref, step: usize) -> Result<Action, String> {
        let svc = self.services.get(key).ok_or("service vanished")?;
        let named = svc.spec.actions.get(step).ok_or("no such step")?;
        // The lookup that decides a bare name's resolution keeps what it found: one
        // lookup (and one copy of the action), not two.
        let found = std::cell::Cell::new(None);
        let r = Ref::resolve(&named.name, &svc.spec.context, |r| match self.stored_action(r) {
            Ok(Some(a)) => {
                found.set(Some(a));
                true
            }
            _ => false,
        });
        if let Some(a) = found.into_inner() {
            return Ok(a);
        }
        // An explicit `context/name` (not looked up above), nothing found, or a store
        // error (reported here).
        match self.stored_action(&r) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(format!("action {r} does not exist")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The action `r` as stored, decoded once per generation of the actions table: a
    /// job's start, its checks, its stop and its exit each need it, and a read and a JSON
    /// decode per need were a tenth of the supervisor's time per job.
    pub(super) fn stored_action(&self, r: &Ref) -> Result<Option<Action>, hero_proc_store::StoreError> {
        // Read before the row: a write committed in between moves the generation again, so
        // what is cached below is dropped at the next call.
        let generation = self.store.actions_generation();
        {
            let cache = self.actions.borrow();
            if cache.0 == generation
                && let Some(a) = cache.1.get(r)
            {
                return Ok(a.clone());
            }
        }
        let a = self.store.get_action(&r.context, &r.name)?.map(|s| s.value);
        let mut cache = self.actions.borrow_mut();
        if cache.0 != generation || cache.1.len() >= ACTION_CACHE_MAX {
            *cache = (generation, HashMap::new());
        }
        cache.1.insert(r.clone(), a.clone());
        Ok(a)
    }

    /// Check what a service waits for, pull in what it requires, and feed `Begin`.
    fn begin(&mut self, key: &Ref) {
        let d = deps::deps(&self.services, key);
        for r in &d.pull_in {
            // Starting one may have pulled in the next already.
            if self.services.get(r).is_some_and(|s| !s.wanted) {
                self.want_start(r);
            }
        }
        self.feed(key, Event::Begin { waiting_for: d.waiting_for });
    }

    /// Before a service starts (it has no job here): processes already in its unit are
    /// unknown to the store (a lost or replaced database, or an earlier daemon's process
    /// whose record is gone). They are stopped rather than adopted: without a job record
    /// there is no output file, start time or config version to adopt them by, and
    /// starting a second copy next to them is what must never happen.
    fn end_unknown_processes(&mut self, key: &Ref) {
        let unit = self.unit_of(key);
        self.kill_unrecorded(
            &unit,
            &format!("of {key}"),
            "(lost database or an earlier daemon's process) before starting it, so it never runs twice",
        );
    }

    /// Kill every process in `unit` (none of them is recorded by a job) and say so.
    pub(super) fn kill_unrecorded(&mut self, unit: &Unit, whose: &str, why: &str) {
        let pids = unit.pids();
        if pids.is_empty() {
            return;
        }
        let gone = unit.kill_all(Duration::from_secs(5));
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        self.event(
            Level::Warn,
            "hero_proc.contain",
            format!(
                "killed process(es) {} {whose} that no job of this daemon records {why}{}",
                list.join(", "),
                if gone { "" } else { "; some did not exit within 5s" }
            ),
            None,
        );
    }

    /// Run step `step` of a starting service and feed the outcome.
    fn run_step(&mut self, key: &Ref, step: usize, attempt: u32) {
        let action = match self.action_for(key, step) {
            Ok(a) => a,
            Err(why) => {
                self.feed(key, Event::Fail { why });
                return;
            }
        };
        let purpose = Purpose::Service { key: key.clone() };
        let ev = match self.start_job(&action, None, Some(key.clone()), attempt, purpose) {
            Ok((job, pid)) => Event::Spawned { job, pid, probe: action.process },
            Err(why) => {
                // A spec that cannot start is retried like a crash (the binary may appear),
                // but not once the database was replaced: no start can succeed until a
                // restart.
                let retry = (action.process && self.store.check_file().is_ok())
                    .then(|| MainFacts { process: true, restart: action.restart.clone() });
                Event::SpawnFailed { why, retry }
            }
        };
        self.feed(key, ev);
    }

    /// Send the stop signal of the step's action to the job's watcher.
    fn stop_job(&mut self, key: &Ref, job: JobId, step: usize) {
        let (sig, timeout) = self
            .action_for(key, step)
            .map(|a| (a.stop.signal, a.stop.timeout.0))
            .unwrap_or((Signal::Term, Duration::from_secs(10)));
        if let Some(live) = self.jobs.get_mut(&job) {
            live.stop(sig, timeout);
        }
    }

    /// A service's job ended: look up its main action if the machine needs it, and feed.
    pub(super) fn on_service_exit(&mut self, key: &Ref, job: JobId, exit: process::Exit, timed_out: bool) {
        let Some(svc) = self.services.get(key) else { return };
        let main = svc
            .live_step(job)
            .filter(|s| *s == svc.main_step())
            .map(|step| self.action_for(key, step).map(|a| MainFacts { process: a.process, restart: a.restart }));
        let text = if timed_out { "timed out".into() } else { exit.to_string() };
        self.feed(key, Event::Exited { job, success: exit.success() && !timed_out, text, main });
    }

    /// The main action's checks and the account `exec` checks run as (its resolution
    /// error, if any, already failed the start), and its restart policy.
    fn checks_of(&self, key: &Ref) -> (Vec<HealthCheck>, Option<process::Account>, Restart) {
        let Some(svc) = self.services.get(key) else { return (Vec::new(), None, Restart::default()) };
        match self.action_for(key, svc.main_step()) {
            Ok(a) => {
                let account = a.user.as_deref().and_then(|u| process::Account::resolve(u, a.group.as_deref()).ok());
                (a.health, account, a.restart)
            }
            Err(_) => (Vec::new(), None, Restart::default()),
        }
    }

    /// Probe health checks until they pass (readiness), then stop probing (periodic
    /// probing starts with [`Effect::Monitor`]). Without checks it is healthy at once.
    fn probe_health(&mut self, key: &Ref, generation: u64) {
        let (checks, account, _) = self.checks_of(key);
        if checks.is_empty() {
            self.feed(key, Event::Health { generation, checks: Vec::new(), healthy: true });
            return;
        }
        let tx = self.tx.clone();
        let key = key.clone();
        let expand = self.expand.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(20);
            loop {
                let mut views = Vec::with_capacity(checks.len());
                for hc in &checks {
                    views.push(probe_one(&hc.probe, &key.name, &expand, account.as_ref()).await);
                }
                let all = views.iter().flatten().all(|c| c.healthy);
                if tx.send(Msg::Healthy { key: key.clone(), generation, checks: views, healthy: all }).is_err() || all {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Probe each check every its period while the service runs healthy-once: a timer
    /// per due check, nothing in between (a service without checks costs nothing). The
    /// task ends when [`Supervisor::feed`] sees the generation or the state move on.
    fn monitor(&mut self, key: &Ref, generation: u64) {
        let (checks, account, restart) = self.checks_of(key);
        if checks.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        let k = key.clone();
        let expand = self.expand.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut due: Vec<tokio::time::Instant> =
                checks.iter().enumerate().map(|(i, c)| start + first_probe_after(c.interval().0, &k, i)).collect();
            loop {
                let Some(next) = due.iter().min().copied() else { return };
                tokio::time::sleep_until(next).await;
                for (index, hc) in checks.iter().enumerate() {
                    if due[index] > tokio::time::Instant::now() {
                        continue;
                    }
                    let results = probe_one(&hc.probe, &k.name, &expand, account.as_ref()).await;
                    // The next probe is a period after this one ended: a slow check
                    // never queues probes behind itself.
                    due[index] = tokio::time::Instant::now() + hc.interval().0;
                    let msg = Msg::Probed {
                        key: k.clone(),
                        generation,
                        index,
                        label: describe(&hc.probe),
                        results,
                        liveness: hc.liveness,
                        restart: restart.clone(),
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        });
        if let Some((_, old)) = self.monitors.insert(key.clone(), (generation, task.abort_handle())) {
            old.abort();
        }
    }

    /// End the periodic probing of a service whose generation or state moved on (or
    /// that is gone).
    pub(super) fn end_stale_monitor(&mut self, key: &Ref) {
        let Some((generation, _)) = self.monitors.get(key) else { return };
        let live =
            self.services.get(key).is_some_and(|s| s.generation == *generation && s.state() == ServiceState::Running);
        if !live && let Some((_, task)) = self.monitors.remove(key) {
            task.abort();
        }
    }

    /// Something became active or failed: services waiting on it may go on.
    pub(super) fn wake_waiters(&mut self) {
        let waiting: Vec<Ref> = self
            .services
            .iter()
            .filter(|(_, s)| s.state() == ServiceState::Waiting && s.wanted)
            .map(|(k, _)| k.clone())
            .collect();
        for k in waiting {
            // An earlier one in this loop may have started it already (a wake inside).
            if !self.services.get(&k).is_some_and(|s| s.state() == ServiceState::Waiting && s.wanted) {
                continue;
            }
            // A required service that failed fails its dependents instead of leaving
            // them waiting forever.
            match deps::failed_dependency(&self.services, &k) {
                Some(dep) => {
                    self.feed(&k, Event::DepFailed { dep });
                }
                None => self.begin(&k),
            }
        }
    }

    /// Adopt a re-attached process as a service's main step, watching it.
    pub(super) fn adopt(&mut self, key: &Ref, job: JobId, running: process::Running) {
        let unit = self.unit_of(key);
        let pid = running.pid;
        let stop = self.watch(job, running, None, Some(unit));
        self.jobs.insert(job, LiveJob::running(Purpose::Service { key: key.clone() }, stop));
        self.event(Level::Info, "hero_proc.engine", format!("re-attached to {key} (pid {pid})"), Some(job));
        self.feed(key, Event::Adopt { job, pid });
    }
}

/// When the first periodic probe of check `index` runs after the service became healthy:
/// somewhere in the second half of its period, spread by service and check, so services
/// started together (a boot, a revision) do not probe in step ever after.
pub(super) fn first_probe_after(period: Duration, key: &Ref, index: usize) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key, index).hash(&mut h);
    let spread = (h.finish() % 1000) as f64 / 1000.0;
    period.mul_f64(0.5 + 0.5 * spread)
}

/// Probe one check: one row, or a row per socket for `hero_sockets`.
async fn probe_one(
    probe: &Probe,
    service: &str,
    expand: &crate::paths::Expand,
    account: Option<&process::Account>,
) -> Vec<CheckResult> {
    if let Probe::HeroSockets(true) = probe {
        let sockets = health::hero_sockets(service, expand).await;
        let at = now_ms();
        return sockets.into_iter().map(|s| CheckResult::new(s.role, s.health.to_result(), at)).collect();
    }
    let h = health::check_as(probe, service, expand, account).await;
    vec![CheckResult::new(describe(probe), h.to_result(), now_ms())]
}

fn describe(hc: &Probe) -> String {
    use Probe as H;
    match hc {
        H::UnixSocket(p) => format!("unix_socket {p}"),
        H::Http(h) => format!("http {}{}", h.socket.clone().or(h.url.clone()).unwrap_or_default(), h.path),
        H::Tcp(a) => format!("tcp {a}"),
        H::Exec(c) => format!("exec {c}"),
        H::HeroSockets(_) => "hero_sockets".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probes_spread_over_the_second_half_of_the_period() {
        let period = Duration::from_secs(10);
        let delays: Vec<Duration> =
            (0..50).map(|i| first_probe_after(period, &Ref::new("core", format!("s{i}")), 0)).collect();
        assert!(delays.iter().all(|d| *d >= period / 2 && *d <= period), "{delays:?}");
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "fifty services do not probe in step: {delays:?}");
        // The same service and check: the same offset (no clock, no randomness).
        let web = Ref::new("core", "web");
        assert_eq!(first_probe_after(period, &web, 1), first_probe_after(period, &web, 1));
    }
}
