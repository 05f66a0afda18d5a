//! The service lifecycle as a pure state machine: `step(svc, event, now) -> effects`.
//!
//! Nothing here touches the store, spawns, signals, logs or reads a clock: the caller
//! passes the time in, and performs the returned [`Effect`]s (see `executor.rs`), feeding
//! their results back as [`Event`]s (a spawn's pid, an exit, a health result). So every
//! transition, races included, is tested below without a process or a database.
//!
//! Each state carries the data valid in it ([`Life`]): a job and pid exist only while
//! starting, running or stopping; a backoff deadline only in backoff; what follows a
//! stop only while stopping. A generation, bumped on every start and stop, makes events
//! of an older start (a backoff timer, a health result) stale.

use std::fmt;
use std::time::{Duration, Instant};

use hero_proc_logstore::Level;
use hero_proc_spec::{Liveness, Restart, Service};
use hero_proc_store::{JobId, Ref};

use super::view::{CheckResult, ServiceSnapshot, ServiceState};
use crate::backoff::{self, Decision};

/// The time of a step, read once by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Wall clock (ms since the epoch), for what status shows.
    pub ms: i64,
    /// Monotonic, for how long a process ran.
    pub at: Instant,
}

/// What follows a stop in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    Stop,
    Restart,
    /// A liveness check failed: wait out the restart policy's backoff, then start.
    Backoff {
        after: Duration,
        crash_loop: bool,
    },
    /// A liveness check failed and the policy does not restart: fail with the reason.
    Fail,
}

/// A service's lifecycle state, with the data valid in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Life {
    Inactive,
    /// Waiting for what it `requires` (the reason names it).
    Waiting,
    /// Running step `step` (a pre-action, or the main action until it is healthy).
    /// `job` is None only between the decision to run a step and its spawn.
    Starting {
        step: usize,
        job: Option<(JobId, u32)>,
        main_since: Option<Instant>,
    },
    Running {
        job: JobId,
        pid: u32,
        main_since: Instant,
    },
    Backoff {
        until_ms: i64,
    },
    Stopping {
        job: JobId,
        pid: u32,
        step: usize,
        then: Then,
    },
    Exited,
    Failed,
}

impl Life {
    pub fn tag(&self) -> ServiceState {
        match self {
            Life::Inactive => ServiceState::Inactive,
            Life::Waiting => ServiceState::Waiting,
            Life::Starting { .. } => ServiceState::Starting,
            Life::Running { .. } => ServiceState::Running,
            Life::Backoff { .. } => ServiceState::Backoff,
            Life::Stopping { .. } => ServiceState::Stopping,
            Life::Exited => ServiceState::Exited,
            Life::Failed => ServiceState::Failed,
        }
    }

    /// The job of the step running now (stopping included) and its pid.
    pub fn job(&self) -> Option<(JobId, u32)> {
        match *self {
            Life::Starting { job: Some(j), .. } => Some(j),
            Life::Running { job, pid, .. } | Life::Stopping { job, pid, .. } => Some((job, pid)),
            _ => None,
        }
    }
}

/// Why a service is not running as asked, or is waiting: what status shows as `reason`.
/// Typed so callers can tell a crash loop from a missing requirement; the sentence is
/// [`fmt::Display`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Waiting for services it `requires` (each named, with why when not defined).
    WaitingFor(Vec<String>),
    /// Restarting after an exit, after `next_in`.
    Restarting { exit: String, next_in: Duration },
    /// A run of fast failures: the backoff grew to `next_in`.
    CrashLoop { failures: u32, exit: String, next_in: Duration },
    /// Exited cleanly and the policy (`on-failure`) does not restart a clean exit.
    CleanExit { exit: String },
    /// Exited and the policy (`never`) does not restart it.
    Exited { exit: String },
    /// The policy's retries ran out.
    GaveUp { restarts: u32, exit: String },
    /// A pre-start action failed, so the main one never ran.
    PreStartFailed { action: String, exit: String },
    /// A service it requires failed.
    RequirementFailed(Ref),
    /// Started, not healthy yet: the failing checks with their details.
    NotHealthyYet(Vec<String>),
    /// Was healthy, and a periodic probe now fails (still running).
    Unhealthy(Vec<String>),
    /// A liveness check failed `failures` times in a row: stopped, and restarted after
    /// `next_in` (None: the restart policy does not restart it).
    LivenessFailed { check: String, failures: u32, next_in: Option<Duration> },
    /// Stopped by an operator (kept across daemon restarts).
    StoppedByHand,
    /// Could not start (spawn, secret, placement, the store): the cause as said.
    CannotStart(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wait = |d: &Duration| humantime_short(*d);
        match self {
            Reason::WaitingFor(what) => write!(f, "waiting for {}", what.join(", ")),
            Reason::Restarting { exit, next_in } => write!(f, "exited ({exit}); restarting in {}", wait(next_in)),
            Reason::CrashLoop { failures, exit, next_in } => {
                write!(
                    f,
                    "crash loop: {failures} fast failures in a row, last: {exit}; next start in {}",
                    wait(next_in)
                )
            }
            Reason::CleanExit { exit } => write!(f, "exited ({exit}); restart policy does not restart a clean exit"),
            Reason::Exited { exit } => write!(f, "exited ({exit})"),
            Reason::GaveUp { restarts, exit } => write!(f, "gave up after {restarts} restarts; last: {exit}"),
            Reason::PreStartFailed { action, exit } => write!(f, "pre-start action `{action}` failed: {exit}"),
            Reason::RequirementFailed(r) => write!(f, "required service {r} failed"),
            Reason::NotHealthyYet(failing) => write!(f, "not healthy yet: {}", failing.join("; ")),
            Reason::Unhealthy(failing) => write!(f, "unhealthy: {}", failing.join("; ")),
            Reason::LivenessFailed { check, failures, next_in } => {
                write!(f, "liveness check {check} failed {failures} times")?;
                match next_in {
                    Some(d) => write!(f, "; restarting in {}", wait(d)),
                    None => f.write_str("; the restart policy does not restart it"),
                }
            }
            Reason::StoppedByHand => f.write_str("stopped by hand; `hero_proc service start` starts it"),
            Reason::CannotStart(why) => f.write_str(why),
        }
    }
}

/// A service's live record: its spec, its lifecycle and the counters status shows.
#[derive(Clone, Debug)]
pub struct Svc {
    pub spec: Service,
    pub managed: bool,
    pub life: Life,
    /// Whether it should be running (start/restart asked, or status: start).
    pub wanted: bool,
    /// Bumped on every start and stop: events of an older generation are stale.
    pub generation: u64,
    pub restarts: u32,
    /// Consecutive fast failures (the backoff's input).
    pub failures: u32,
    pub crash_loop: bool,
    /// When `life` last changed state.
    pub since_ms: i64,
    pub last_exit: Option<String>,
    pub reason: Option<Reason>,
    /// The last result of each health check of the main action, in spec order (a
    /// `hero_sockets` check has a row per socket).
    pub health: Vec<Vec<CheckResult>>,
    pub health_failures: u64,
    /// Failed probes in a row, per check (periodic probing, after it was healthy).
    pub fails_in_row: Vec<u32>,
    /// Restarts a failed liveness check caused.
    pub liveness_restarts: u64,
}

/// What the main action is, for deciding after it ends.
#[derive(Clone, Debug)]
pub struct MainFacts {
    /// A long-running process (restarted per policy) rather than a one-shot.
    pub process: bool,
    pub restart: Restart,
}

/// Something that happened to a service, or was asked of it.
#[derive(Clone, Debug)]
pub enum Event {
    /// Ask it to run (start, status: start, a dependency pulling it in).
    Start,
    /// Ask it to stop.
    Stop,
    /// An operator's restart. `recordable` says whether a new job can be recorded (the
    /// running process is kept when it cannot).
    Restart { recordable: Result<(), String> },
    /// Restart it if it has a process (a changed config or secret); otherwise nothing.
    RestartRunning,
    /// The caller checked its dependencies: start now, or wait for the ones named.
    Begin { waiting_for: Vec<String> },
    /// The current step spawned. `probe`: the main action is a process to health-check.
    Spawned { job: JobId, pid: u32, probe: bool },
    /// The current step could not start. `retry` (the main action, given) when it is
    /// retried like a crash (the binary may appear).
    SpawnFailed { why: String, retry: Option<MainFacts> },
    /// A job of this service ended. `main` is the main action's facts when the job is the
    /// current main step (looked up by the caller), or why it cannot be read.
    Exited { job: JobId, success: bool, text: String, main: Option<Result<MainFacts, String>> },
    /// Readiness probes of `generation` reported (every check, in spec order).
    Health { generation: u64, checks: Vec<Vec<CheckResult>>, healthy: bool },
    /// A periodic probe of check `index` (after the service was healthy) reported.
    /// `label` names the check; `liveness` and `restart` are its spec's, read by the
    /// caller, for deciding a liveness restart.
    Probed {
        generation: u64,
        index: usize,
        label: String,
        results: Vec<CheckResult>,
        liveness: Option<Liveness>,
        restart: Restart,
    },
    /// The backoff timer of `generation` elapsed.
    BackoffDone { generation: u64 },
    /// A service it requires failed.
    DepFailed { dep: Ref },
    /// It cannot go on (e.g. its action vanished).
    Fail { why: String },
    /// A process a previous daemon started for it is still running: adopt it as its main
    /// step (health decides when it is running).
    Adopt { job: JobId, pid: u32 },
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Check its dependencies and feed [`Event::Begin`].
    Begin,
    /// Kill processes in its unit that no job records (before a first step spawns).
    KillUnknown,
    /// Create the job of step `step` and spawn it; feed `Spawned` or `SpawnFailed`.
    RunStep { step: usize, attempt: u32 },
    /// Stop the job (with the stop signal of the action of `step`).
    StopJob { job: JobId, step: usize },
    /// Probe the main action's health checks; feed `Health` with this generation.
    ProbeHealth { generation: u64 },
    /// It became healthy: probe each check every its period while this generation runs,
    /// feeding `Probed`. The caller ends the probing when the generation or state moves.
    Monitor { generation: u64 },
    /// Feed `BackoffDone { generation }` after `after`.
    ArmBackoff { after: Duration, generation: u64 },
    /// An event line for the log store (source `hero_proc.service`).
    Log { level: Level, message: String },
    /// Something became active or failed: services waiting may go on.
    WakeWaiters,
}

/// The result of a step: whether it acted (start/stop answer this), a refusal, effects.
#[derive(Debug, Default)]
pub struct Step {
    pub acted: bool,
    pub refused: Option<String>,
    pub effects: Vec<Effect>,
}

impl Svc {
    pub fn new(spec: Service, managed: bool, now_ms: i64) -> Svc {
        Svc {
            spec,
            managed,
            life: Life::Inactive,
            wanted: false,
            generation: 0,
            restarts: 0,
            failures: 0,
            crash_loop: false,
            since_ms: now_ms,
            last_exit: None,
            reason: None,
            health: Vec::new(),
            health_failures: 0,
            fails_in_row: Vec::new(),
            liveness_restarts: 0,
        }
    }

    pub fn key(&self) -> Ref {
        Ref::new(&self.spec.context, &self.spec.name)
    }

    pub fn state(&self) -> ServiceState {
        self.life.tag()
    }

    /// Index of the main (last) action.
    pub fn main_step(&self) -> usize {
        self.spec.actions.len().saturating_sub(1)
    }

    /// The step whose job `job` is, while it is the current (not stopping) job.
    pub fn live_step(&self, job: JobId) -> Option<usize> {
        match self.life {
            Life::Starting { step, job: Some((j, _)), .. } if j == job => Some(step),
            Life::Running { job: j, .. } if j == job => Some(self.main_step()),
            _ => None,
        }
    }

    /// The step the current job runs (for its stop signal).
    pub fn job_step(&self) -> Option<usize> {
        match self.life {
            Life::Starting { step, job: Some(_), .. } | Life::Stopping { step, .. } => Some(step),
            Life::Running { .. } => Some(self.main_step()),
            _ => None,
        }
    }

    pub fn restart_pending(&self) -> bool {
        matches!(self.life, Life::Stopping { then: Then::Restart, .. })
    }

    fn set(&mut self, life: Life, now: Now) {
        if self.life.tag() != life.tag() {
            self.since_ms = now.ms;
        }
        self.life = life;
    }

    pub fn snapshot(&self) -> ServiceSnapshot {
        let job = self.life.job();
        ServiceSnapshot {
            context: self.spec.context.clone(),
            name: self.spec.name.clone(),
            status: self.spec.status,
            state: self.state(),
            pid: job.map(|(_, pid)| pid),
            job_id: job.map(|(j, _)| j.0),
            restarts: self.restarts,
            crash_loop: self.crash_loop,
            backoff_until_ms: match self.life {
                Life::Backoff { until_ms } => Some(until_ms),
                _ => None,
            },
            since_ms: self.since_ms,
            last_exit: self.last_exit.clone(),
            reason: self.reason.clone(),
            health: self.health.iter().flatten().cloned().collect(),
            health_failures: self.health_failures,
            liveness_restarts: self.liveness_restarts,
            managed: self.managed,
        }
    }
}

/// The transition function.
pub fn step(svc: &mut Svc, event: Event, now: Now) -> Step {
    let mut out = Step::default();
    match event {
        Event::Start => out.acted = start(svc, &mut out.effects),
        Event::Stop => out.acted = stop(svc, now, &mut out.effects),
        Event::Restart { recordable } => restart(svc, recordable, now, &mut out),
        Event::RestartRunning => out.acted = restart_running(svc, now, &mut out.effects),
        Event::Begin { waiting_for } => begin(svc, waiting_for, now, &mut out.effects),
        Event::Spawned { job, pid, probe } => spawned(svc, job, pid, probe, now, &mut out.effects),
        Event::SpawnFailed { why, retry } => {
            svc.last_exit = Some(why.clone());
            let from = svc.life.clone();
            let step = if let Life::Starting { step, .. } = from { step } else { 0 };
            match retry {
                Some(main) if step == svc.main_step() => {
                    after_main_exit(svc, &main.restart, false, Duration::ZERO, why, now, &mut out.effects)
                }
                _ => fail(svc, Reason::CannotStart(why), now, &mut out.effects),
            }
        }
        Event::Exited { job, success, text, main } => exited(svc, job, success, text, main, now, &mut out.effects),
        Event::Health { generation, checks, healthy } => {
            health(svc, generation, checks, healthy, now, &mut out.effects)
        }
        Event::Probed { generation, index, label, results, liveness, restart } => {
            probed(svc, generation, index, label, results, liveness, &restart, now, &mut out.effects)
        }
        Event::BackoffDone { generation } => {
            if svc.generation == generation && matches!(svc.life, Life::Backoff { .. }) && svc.wanted {
                svc.restarts += 1;
                out.effects.push(Effect::Begin);
            }
        }
        Event::DepFailed { dep } => fail(svc, Reason::RequirementFailed(dep), now, &mut out.effects),
        Event::Fail { why } => fail(svc, Reason::CannotStart(why), now, &mut out.effects),
        Event::Adopt { job, pid } => {
            svc.wanted = true;
            let step = svc.main_step();
            svc.set(Life::Starting { step, job: Some((job, pid)), main_since: Some(now.at) }, now);
            out.effects.push(Effect::ProbeHealth { generation: svc.generation });
        }
    }
    out
}

/// Returns false when it already runs, is starting, waits or is in backoff. A start while
/// a stop is under way turns that stop into a restart: the old process still ends first.
fn start(svc: &mut Svc, fx: &mut Vec<Effect>) -> bool {
    svc.wanted = true;
    if let Life::Stopping { then: then @ (Then::Stop | Then::Fail), .. } = &mut svc.life {
        *then = Then::Restart;
        svc.failures = 0;
        svc.crash_loop = false;
        return true;
    }
    if svc.life.job().is_some() || matches!(svc.life, Life::Waiting | Life::Backoff { .. }) {
        return false;
    }
    svc.failures = 0;
    svc.crash_loop = false;
    fx.push(Effect::Begin);
    true
}

/// Returns false when it was not running.
fn stop(svc: &mut Svc, now: Now, fx: &mut Vec<Effect>) -> bool {
    svc.wanted = false;
    svc.generation += 1;
    if let Some((job, pid)) = svc.life.job() {
        let step = svc.job_step().unwrap_or(0);
        svc.set(Life::Stopping { job, pid, step, then: Then::Stop }, now);
        fx.push(Effect::StopJob { job, step });
        return true;
    }
    let was = !matches!(svc.life, Life::Inactive | Life::Failed);
    svc.set(Life::Inactive, now);
    svc.reason = None;
    was
}

/// Stop the current job and start again once it ended; a restart under way absorbs
/// this one (fifty concurrent restarts: one stop, one start).
fn restart_running(svc: &mut Svc, now: Now, fx: &mut Vec<Effect>) -> bool {
    let Some((job, pid)) = svc.life.job() else { return false };
    if svc.restart_pending() {
        return false;
    }
    let step = svc.job_step().unwrap_or(0);
    svc.wanted = true;
    svc.set(Life::Stopping { job, pid, step, then: Then::Restart }, now);
    fx.push(Effect::StopJob { job, step });
    true
}

fn restart(svc: &mut Svc, recordable: Result<(), String>, now: Now, out: &mut Step) {
    let key = svc.key();
    if svc.life.job().is_some() {
        if let (false, Err(why)) = (svc.restart_pending(), recordable) {
            out.refused = Some(format!(
                "not restarting {key}: its new job could not be recorded ({why}); the running process is kept"
            ));
            return;
        }
        restart_running(svc, now, &mut out.effects);
        out.acted = true;
        return;
    }
    if matches!(svc.life, Life::Backoff { .. }) {
        // An operator's restart (after fixing a crash loop) happens now, not after the
        // backoff: the pending timer becomes stale.
        svc.generation += 1;
        svc.set(Life::Inactive, now);
    }
    out.acted = start(svc, &mut out.effects);
}

fn begin(svc: &mut Svc, waiting_for: Vec<String>, now: Now, fx: &mut Vec<Effect>) {
    // Already under way (a begin queued twice): a second first step would leave the
    // first process unwatched.
    if svc.life.job().is_some() || matches!(svc.life, Life::Starting { .. }) {
        return;
    }
    if !waiting_for.is_empty() {
        svc.set(Life::Waiting, now);
        svc.reason = Some(Reason::WaitingFor(waiting_for));
        return;
    }
    svc.generation += 1;
    svc.reason = None;
    svc.health.clear();
    svc.set(Life::Starting { step: 0, job: None, main_since: None }, now);
    fx.push(Effect::KillUnknown);
    fx.push(Effect::RunStep { step: 0, attempt: svc.restarts + 1 });
}

fn spawned(svc: &mut Svc, job: JobId, pid: u32, probe: bool, now: Now, fx: &mut Vec<Effect>) {
    let Life::Starting { step, job: None, .. } = svc.life else { return };
    let main = step == svc.main_step();
    let main_since = main.then_some(now.at);
    svc.set(Life::Starting { step, job: Some((job, pid)), main_since }, now);
    if main && probe {
        fx.push(Effect::ProbeHealth { generation: svc.generation });
    }
}

fn exited(
    svc: &mut Svc,
    job: JobId,
    success: bool,
    text: String,
    main: Option<Result<MainFacts, String>>,
    now: Now,
    fx: &mut Vec<Effect>,
) {
    let main_since = match svc.life {
        Life::Stopping { job: j, then, .. } if j == job => {
            // Stopped on purpose (stop, restart, delete, a failed liveness check): settle,
            // and start again if asked.
            svc.last_exit = Some(text);
            svc.health.clear();
            match then {
                Then::Stop => svc.set(Life::Inactive, now),
                Then::Restart => {
                    svc.set(Life::Inactive, now);
                    svc.restarts += 1;
                    fx.push(Effect::Begin);
                }
                Then::Backoff { after, crash_loop } => {
                    svc.crash_loop = crash_loop;
                    svc.set(Life::Backoff { until_ms: now.ms + after.as_millis() as i64 }, now);
                    fx.push(Effect::ArmBackoff { after, generation: svc.generation });
                }
                Then::Fail => {
                    let why = svc.reason.take().unwrap_or(Reason::CannotStart("liveness check failed".into()));
                    return fail(svc, why, now, fx);
                }
            }
            fx.push(Effect::WakeWaiters);
            return;
        }
        Life::Starting { job: Some((j, _)), main_since, .. } if j == job => main_since,
        Life::Running { job: j, main_since, .. } if j == job => Some(main_since),
        // Not its current job: an exit of an older start, already settled.
        _ => return,
    };
    svc.last_exit = Some(text.clone());
    let step = svc.live_step(job).unwrap_or(0);
    if step != svc.main_step() {
        if success {
            svc.set(Life::Starting { step: step + 1, job: None, main_since: None }, now);
            fx.push(Effect::RunStep { step: step + 1, attempt: svc.restarts + 1 });
        } else {
            let action = svc.spec.actions.get(step).map(|a| a.name.clone()).unwrap_or_default();
            fail(svc, Reason::PreStartFailed { action, exit: text }, now, fx);
        }
        return;
    }
    let facts = match main {
        Some(Ok(f)) => f,
        Some(Err(why)) => return fail(svc, Reason::CannotStart(why), now, fx),
        None => return fail(svc, Reason::CannotStart("the main action could not be read".into()), now, fx),
    };
    if !facts.process && success {
        svc.set(Life::Exited, now);
        fx.push(Effect::WakeWaiters);
        return;
    }
    let ran_for = main_since.map(|t| now.at.saturating_duration_since(t)).unwrap_or_default();
    after_main_exit(svc, &facts.restart, success, ran_for, text, now, fx);
}

/// The main process ended on its own: restart per policy, with backoff.
fn after_main_exit(
    svc: &mut Svc,
    policy: &Restart,
    success: bool,
    ran_for: Duration,
    why: String,
    now: Now,
    fx: &mut Vec<Effect>,
) {
    let key = svc.key();
    let (decision, failures) = backoff::decide(policy, success, ran_for, svc.failures);
    svc.failures = failures;
    svc.health.clear();
    match decision {
        Decision::Restart { after, crash_loop } if svc.wanted => {
            svc.crash_loop = crash_loop;
            svc.set(Life::Backoff { until_ms: now.ms + after.as_millis() as i64 }, now);
            let wait = humantime_short(after);
            let exit = why.clone();
            svc.reason = Some(if crash_loop {
                Reason::CrashLoop { failures, exit, next_in: after }
            } else {
                Reason::Restarting { exit, next_in: after }
            });
            fx.push(Effect::ArmBackoff { after, generation: svc.generation });
            let level = if crash_loop { Level::Error } else { Level::Warn };
            fx.push(Effect::Log { level, message: format!("{key} exited ({why}); restart in {wait}") });
        }
        Decision::GiveUp { .. } if success => {
            svc.set(Life::Inactive, now);
            svc.reason = Some(Reason::CleanExit { exit: why });
            fx.push(Effect::WakeWaiters);
        }
        Decision::GiveUp { retries_exhausted } => {
            let reason = if retries_exhausted {
                Reason::GaveUp { restarts: failures, exit: why }
            } else {
                Reason::Exited { exit: why }
            };
            fail(svc, reason, now, fx);
        }
        Decision::Restart { .. } => {
            svc.set(Life::Inactive, now);
            fx.push(Effect::WakeWaiters);
        }
    }
}

fn health(
    svc: &mut Svc,
    generation: u64,
    checks: Vec<Vec<CheckResult>>,
    healthy: bool,
    now: Now,
    fx: &mut Vec<Effect>,
) {
    if svc.generation != generation || svc.life.job().is_none() {
        return;
    }
    svc.health = checks;
    if !healthy {
        svc.health_failures += 1;
        svc.reason = Some(Reason::NotHealthyYet(failing(svc)));
        return;
    }
    if let Life::Starting { job: Some((job, pid)), main_since, .. } = svc.life {
        svc.set(Life::Running { job, pid, main_since: main_since.unwrap_or(now.at) }, now);
        svc.reason = None;
        svc.fails_in_row = vec![0; svc.health.len()];
        fx.push(Effect::WakeWaiters);
        if !svc.health.is_empty() {
            fx.push(Effect::Monitor { generation: svc.generation });
        }
    }
}

/// `check: detail` of every failing row.
fn failing(svc: &Svc) -> Vec<String> {
    svc.health
        .iter()
        .flatten()
        .filter(|c| !c.healthy)
        .map(|c| format!("{}: {}", c.check, c.detail.clone().unwrap_or_default()))
        .collect()
}

/// A periodic probe of a running service: keep what status shows true, notice sockets
/// that appear or vanish, and restart it when a liveness check failed often enough.
#[allow(clippy::too_many_arguments)]
fn probed(
    svc: &mut Svc,
    generation: u64,
    index: usize,
    label: String,
    mut results: Vec<CheckResult>,
    liveness: Option<Liveness>,
    restart: &Restart,
    now: Now,
    fx: &mut Vec<Effect>,
) {
    let Life::Running { job, pid, main_since } = svc.life else { return };
    if svc.generation != generation || index >= svc.health.len() {
        return;
    }
    let key = svc.key();
    let before = std::mem::take(&mut svc.health[index]);
    // The last error of a row stays visible after it recovers.
    for r in &mut results {
        if r.healthy && r.last_error.is_none() {
            r.last_error = before.iter().find(|b| b.check == r.check).and_then(|b| b.last_error.clone());
        }
    }
    // Sockets (rows) that came or went since the last probe.
    let was: Vec<&str> = before.iter().map(|c| c.check.as_str()).collect();
    let is: Vec<&str> = results.iter().map(|c| c.check.as_str()).collect();
    let gone: Vec<&str> = was.iter().filter(|c| !is.contains(c)).copied().collect();
    let new: Vec<&str> =
        if before.is_empty() { Vec::new() } else { is.iter().filter(|c| !was.contains(c)).copied().collect() };
    if !gone.is_empty() {
        fx.push(Effect::Log { level: Level::Warn, message: format!("{key}: {label}: gone: {}", gone.join(", ")) });
    }
    if !new.is_empty() {
        fx.push(Effect::Log { level: Level::Info, message: format!("{key}: {label}: appeared: {}", new.join(", ")) });
    }
    let ok = results.iter().all(|c| c.healthy);
    let was_ok = before.iter().all(|c| c.healthy);
    svc.health[index] = results;
    if svc.fails_in_row.len() < svc.health.len() {
        svc.fails_in_row.resize(svc.health.len(), 0);
    }
    if ok {
        svc.fails_in_row[index] = 0;
        if !was_ok {
            fx.push(Effect::Log { level: Level::Info, message: format!("{key}: {label}: healthy again") });
        }
    } else {
        svc.health_failures += 1;
        svc.fails_in_row[index] += 1;
        if was_ok {
            let detail = failing(svc).join("; ");
            fx.push(Effect::Log { level: Level::Warn, message: format!("{key}: unhealthy: {detail}") });
        }
    }
    let all_ok = svc.health.iter().flatten().all(|c| c.healthy);
    svc.reason = if all_ok { None } else { Some(Reason::Unhealthy(failing(svc))) };

    let Some(l) = liveness else { return };
    let failures = svc.fails_in_row[index];
    if failures < l.failures {
        return;
    }
    // The process answers no more: stop it and start again after the policy's backoff,
    // as if it had crashed after running this long.
    let ran_for = now.at.saturating_duration_since(main_since);
    let (decision, fast) = backoff::decide(restart, false, ran_for, svc.failures);
    svc.failures = fast;
    svc.liveness_restarts += 1;
    let step = svc.main_step();
    let (then, next_in) = match decision {
        Decision::Restart { after, crash_loop } if svc.wanted => (Then::Backoff { after, crash_loop }, Some(after)),
        _ => (Then::Fail, None),
    };
    let reason = Reason::LivenessFailed { check: label, failures, next_in };
    fx.push(Effect::Log { level: Level::Error, message: format!("{key}: {reason}; stopping pid {pid}") });
    svc.reason = Some(reason);
    svc.set(Life::Stopping { job, pid, step, then }, now);
    fx.push(Effect::StopJob { job, step });
}

fn fail(svc: &mut Svc, why: Reason, now: Now, fx: &mut Vec<Effect>) {
    let key = svc.key();
    svc.set(Life::Failed, now);
    fx.push(Effect::Log { level: Level::Error, message: format!("{key} failed: {why}") });
    svc.reason = Some(why);
    fx.push(Effect::WakeWaiters);
}

pub fn humantime_short(d: Duration) -> String {
    if d.as_millis() < 1000 { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs()) }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
