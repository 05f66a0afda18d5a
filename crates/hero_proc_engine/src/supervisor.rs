//! The supervisor: one task that owns all runtime state and reacts to messages.
//!
//! Commands (from RPC) and events (a process exited, a health check passed, a backoff
//! elapsed, a cron tick) arrive on one channel and are handled one at a time, so there
//! is no lock and no race between, say, a restart and a crash: fifty concurrent
//! `service.restart` calls leave exactly one process. Every wait is an event (child exit
//! via SIGCHLD/pidfd, timers via tokio), so an idle daemon does not wake up.
//!
//! Jobs and runs are written to the store as they change; the store is the record, this
//! task's maps are the live view. Store calls are synchronous SQLite calls made from this
//! task: WAL commits without fsync take microseconds, and one writer keeps them ordered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hero_proc_logstore::{Level, LogEvent, LogStore};
use hero_proc_rpc::wire::{CheckView, ServiceState, ServiceView};
use hero_proc_spec::{Action, EnvValue, Service, ServiceStatus, Signal};
use hero_proc_store::{JobExit, JobId, NewJob, Origin, Phase, Ref, RunId, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::{self, Decision};
use crate::contain::{Containment, Unit};
use crate::health::{self, Health};
use crate::paths::Expand;
use crate::process::{self, Exit, Running};

/// Resolves `{ secret: name }` environment values at start time. The plaintext lives
/// only in the child's environment and this call's return value.
pub trait SecretSource: Send + Sync {
    fn reveal(&self, context: &str, name: &str) -> Result<String, String>;
}

/// Used until a secret store is configured: every reference fails with a clear reason.
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn reveal(&self, context: &str, name: &str) -> Result<String, String> {
        Err(format!("secret `{name}` is not set in context `{context}`: add it to secrets/{context}.sops.yaml"))
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Errors a command can answer with; the RPC layer maps them to stable codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] hero_proc_store::StoreError),
    #[error("the supervisor is shutting down")]
    Unavailable,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Msg {
    SetAction(Box<Action>, Origin, Reply<bool>),
    DeleteAction(Ref, Reply<bool>),
    SetService(Box<Service>, Origin, Reply<bool>),
    DeleteService(Ref, Reply<bool>),
    Start(Ref, Reply<bool>),
    Stop(Ref, Reply<bool>),
    Restart(Ref, Reply<bool>),
    Status(Option<Ref>, Reply<Vec<ServiceView>>),
    Submit(Vec<Ref>, String, Reply<RunId>),
    CancelRun(RunId, Reply<bool>),
    Shutdown(Reply<()>),
    // Events.
    Exited {
        job: JobId,
        exit: Exit,
        timed_out: bool,
    },
    Healthy {
        key: Ref,
        generation: u64,
        checks: Vec<CheckView>,
        healthy: bool,
    },
    BackoffDone {
        key: Ref,
        generation: u64,
    },
    CronTick {
        generation: u64,
    },
    /// Retry writing the exits a failed write left in memory.
    FlushExits,
    EnsureHeroDb(Reply<crate::hero_db::Decision>),
    SecretChanged(Ref, Reply<Vec<Ref>>),
    ConfigApplied(Box<ConfigChange>, Reply<()>),
}

/// What the reconciler changed in the store (in one transaction), for the engine to
/// act on: reload the rows, stop what was deleted, apply statuses, restart what the plan
/// says. Restarts of services that are not running are ignored; starts of running ones
/// are no-ops.
#[derive(Clone, Debug, Default)]
pub struct ConfigChange {
    pub actions_changed: Vec<Ref>,
    pub actions_deleted: Vec<Ref>,
    pub services_changed: Vec<Ref>,
    pub services_deleted: Vec<Ref>,
    pub restarts: Vec<Ref>,
    pub starts: Vec<Ref>,
    pub stops: Vec<Ref>,
}

/// A cheap, cloneable handle to the supervisor task.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Msg>,
    pub store: Arc<Store>,
    pub logs: Arc<LogStore>,
    /// How service process trees are contained (cgroup v2 or the subreaper fallback).
    pub containment: Arc<Containment>,
}

/// How the engine is set up.
pub struct EngineConfig {
    pub expand: Expand,
    pub secrets: Arc<dyn SecretSource>,
    /// Stop supervised processes when the daemon exits (default: leave them running; the
    /// next daemon re-attaches).
    pub stop_on_exit: bool,
    /// Check that hero_db runs right after autostart (SPEC 5.3). False when
    /// `HERO_PROC_NO_AUTOSTART_DB=1`, or when a repository is configured (the daemon then
    /// calls [`Engine::ensure_hero_db`] after the first reconcile).
    pub ensure_hero_db_at_boot: bool,
}

macro_rules! ask {
    ($self:ident, $variant:ident $(, $arg:expr)*) => {{
        let (tx, rx) = oneshot::channel();
        $self.tx.send(Msg::$variant($($arg,)* tx)).map_err(|_| EngineError::Unavailable)?;
        rx.await.map_err(|_| EngineError::Unavailable)?
    }};
}

impl Engine {
    /// Start the supervisor: re-attach to processes a previous daemon left running,
    /// then start every service with `status: start`.
    pub fn start(store: Arc<Store>, logs: Arc<LogStore>, config: EngineConfig) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let contain = Arc::new(Containment::detect(config.expand.root()));
        let engine = Engine { tx: tx.clone(), store: store.clone(), logs: logs.clone(), containment: contain.clone() };
        let ensure_db = config.ensure_hero_db_at_boot;
        let mut sup = Supervisor {
            tx,
            store,
            logs,
            expand: config.expand,
            secrets: config.secrets,
            stop_on_exit: config.stop_on_exit,
            services: BTreeMap::new(),
            jobs: HashMap::new(),
            runs: HashMap::new(),
            schedules: BTreeMap::new(),
            cron_generation: 0,
            unrecorded: Vec::new(),
            flush_delay: None,
            contain,
        };
        if engine.containment.mode == crate::contain::Mode::Subreaper {
            // Orphans of any job now reparent to the daemon: reap them as they exit.
            if let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                tokio::spawn(async move {
                    while sigchld.recv().await.is_some() {
                        let _ = tokio::task::spawn_blocking(crate::contain::reap_orphans).await;
                    }
                });
            }
        }
        sup.boot();
        if ensure_db {
            sup.ensure_hero_db();
        }
        tokio::spawn(sup.run(rx));
        engine
    }

    pub async fn set_action(&self, a: Action, origin: Origin) -> Result<bool, EngineError> {
        ask!(self, SetAction, Box::new(a), origin)
    }
    pub async fn delete_action(&self, r: Ref) -> Result<bool, EngineError> {
        ask!(self, DeleteAction, r)
    }
    pub async fn set_service(&self, s: Service, origin: Origin) -> Result<bool, EngineError> {
        ask!(self, SetService, Box::new(s), origin)
    }
    pub async fn delete_service(&self, r: Ref) -> Result<bool, EngineError> {
        ask!(self, DeleteService, r)
    }
    pub async fn start_service(&self, r: Ref) -> Result<bool, EngineError> {
        ask!(self, Start, r)
    }
    pub async fn stop_service(&self, r: Ref) -> Result<bool, EngineError> {
        ask!(self, Stop, r)
    }
    pub async fn restart_service(&self, r: Ref) -> Result<bool, EngineError> {
        ask!(self, Restart, r)
    }
    /// Runtime views of one service (`Some`) or all.
    pub async fn status(&self, r: Option<Ref>) -> Result<Vec<ServiceView>, EngineError> {
        ask!(self, Status, r)
    }
    pub async fn submit(&self, actions: Vec<Ref>, label: String) -> Result<RunId, EngineError> {
        ask!(self, Submit, actions, label)
    }
    pub async fn cancel_run(&self, id: RunId) -> Result<bool, EngineError> {
        ask!(self, CancelRun, id)
    }
    /// A secret's value changed: restart the running services whose actions use it.
    /// Returns the services restarted.
    pub async fn secret_changed(&self, secret: Ref) -> Result<Vec<Ref>, EngineError> {
        ask!(self, SecretChanged, secret)
    }
    /// Act on config rows the reconciler wrote to the store (see [`ConfigChange`]).
    pub async fn config_applied(&self, change: ConfigChange) -> Result<(), EngineError> {
        ask!(self, ConfigApplied, Box::new(change))
    }
    /// Ensure `core/hero_db` runs (SPEC 5.3); returns what was decided.
    pub async fn ensure_hero_db(&self) -> Result<crate::hero_db::Decision, EngineError> {
        ask!(self, EnsureHeroDb)
    }
    /// Stop the supervisor task. Processes keep running unless `stop_on_exit`.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        ask!(self, Shutdown)
    }
}

/// A service's live state.
struct Svc {
    spec: Service,
    managed: bool,
    state: ServiceState,
    /// Whether it should be running (start/restart asked, or status: start).
    wanted: bool,
    /// The job of the step running now (a pre-action or the main process).
    job: Option<JobId>,
    /// Index into `spec.actions` of the step running now.
    step: usize,
    pid: Option<u32>,
    restarts: u32,
    failures: u32,
    crash_loop: bool,
    since_ms: i64,
    backoff_until_ms: Option<i64>,
    last_exit: Option<String>,
    reason: Option<String>,
    health: Vec<CheckView>,
    health_failures: u64,
    /// Bumped on every start/stop: events of an older generation are stale.
    generation: u64,
    /// A stop is in progress and a start should follow it.
    restart_after_stop: bool,
    main_started: Option<Instant>,
}

impl Svc {
    fn new(spec: Service, managed: bool) -> Svc {
        Svc {
            spec,
            managed,
            state: ServiceState::Inactive,
            wanted: false,
            job: None,
            step: 0,
            pid: None,
            restarts: 0,
            failures: 0,
            crash_loop: false,
            since_ms: now_ms(),
            backoff_until_ms: None,
            last_exit: None,
            reason: None,
            health: Vec::new(),
            health_failures: 0,
            generation: 0,
            restart_after_stop: false,
            main_started: None,
        }
    }
    fn set_state(&mut self, s: ServiceState) {
        if self.state != s {
            self.state = s;
            self.since_ms = now_ms();
        }
    }
}

/// Why a job runs.
#[derive(Clone)]
enum Purpose {
    Service { key: Ref, generation: u64, step: usize },
    Run { run: RunId },
}

struct LiveJob {
    purpose: Purpose,
    stop: Option<oneshot::Sender<(Signal, Duration)>>,
}

struct LiveRun {
    /// Jobs of the run and the jobs (of the same run) each waits for.
    pending: Vec<(JobId, Action, Vec<JobId>)>,
    running: HashSet<JobId>,
    done: HashMap<JobId, bool>,
    cancelled: bool,
}

struct Supervisor {
    tx: mpsc::UnboundedSender<Msg>,
    store: Arc<Store>,
    logs: Arc<LogStore>,
    expand: Expand,
    secrets: Arc<dyn SecretSource>,
    stop_on_exit: bool,
    services: BTreeMap<Ref, Svc>,
    jobs: HashMap<JobId, LiveJob>,
    runs: HashMap<RunId, LiveRun>,
    /// Scheduled actions and when each fires next.
    schedules: BTreeMap<Ref, Schedule>,
    /// Bumped whenever the timer is re-armed: older ticks are stale.
    cron_generation: u64,
    /// Exits a store write failed to record (disk full): kept, and written on the next
    /// exit or start, or by the retry timer.
    unrecorded: Vec<(JobId, JobExit)>,
    /// The retry timer's current delay while it is armed (it runs only while exits are
    /// unrecorded, so an idle daemon does not wake up).
    flush_delay: Option<Duration>,
    contain: Arc<Containment>,
}

struct Schedule {
    cron: croner::Cron,
    next: Option<chrono::DateTime<chrono::Local>>,
    /// The run of the previous tick, while it is still going: ticks do not overlap.
    running: Option<RunId>,
}

/// Whether a restart can record its new job (before its old process is stopped).
fn svc_can_restart(store: &Store) -> bool {
    store.check_file().and_then(|()| store.check_space()).is_ok()
}

fn key_of(s: &Service) -> Ref {
    Ref::new(&s.context, &s.name)
}

/// Resolve a reference written in `context`: own context, then `core`; `ctx/name` explicit.
fn resolve_ref(name: &str, context: &str, exists: impl Fn(&Ref) -> bool) -> Ref {
    if let Some((c, n)) = name.split_once('/') {
        return Ref::new(c, n);
    }
    let own = Ref::new(context, name);
    if exists(&own) {
        return own;
    }
    let core = Ref::new(hero_proc_spec::DEFAULT_CONTEXT, name);
    if exists(&core) { core } else { own }
}

impl Supervisor {
    fn event(&self, level: Level, source: &str, message: String, job: Option<JobId>) {
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

    /// Load services, re-attach surviving processes, start what should run.
    fn boot(&mut self) {
        match &self.contain.fallback_reason {
            None => self.event(Level::Info, "hero_proc.contain", format!("containment: {}", self.contain.describe()), None),
            Some(why) => self.event(
                Level::Warn,
                "hero_proc.contain",
                format!(
                    "containment: subreaper (no writable cgroup v2: {why}); under systemd set Delegate=yes on the unit to get a cgroup per service"
                ),
                None,
            ),
        }
        match self.store.list_services() {
            Ok(list) => {
                for s in list {
                    let key = key_of(&s.value);
                    self.services.insert(key, Svc::new(s.value, s.managed));
                }
            }
            Err(e) => self.event(Level::Error, "hero_proc.engine", format!("cannot load services: {e}"), None),
        }
        self.reattach();
        self.sweep_stray_units();
        let stopped: HashSet<Ref> = match self.store.stop_intents() {
            Ok(list) => list.into_iter().map(|(r, _)| r).collect(),
            Err(e) => {
                self.event(Level::Error, "hero_proc.engine", format!("cannot read stopped services: {e}"), None);
                HashSet::new()
            }
        };
        for r in &stopped {
            if let Some(svc) = self.services.get_mut(r)
                && svc.job.is_none()
            {
                svc.reason = Some("stopped by hand; `hero_proc service start` starts it".into());
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
            .filter(|(k, s)| s.spec.status == ServiceStatus::Start && s.job.is_none() && !stopped.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.want_start(&k);
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
                && let Some(ticks) = process::proc_start_ticks(pid)
            {
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
            let adopted = match (job.phase, job.pid, job.pid_start_ticks) {
                (Phase::Running, Some(pid), Some(ticks)) => process::reattach(pid, ticks),
                _ => None,
            };
            let service = job.service.clone().filter(|s| self.services.contains_key(s));
            match (adopted, service) {
                (Some(running), Some(key)) => {
                    let svc = self.services.get_mut(&key).expect("checked");
                    let main = svc.spec.actions.len().saturating_sub(1);
                    svc.wanted = true;
                    svc.job = Some(job.id);
                    svc.step = main;
                    svc.pid = Some(running.pid);
                    svc.main_started = Some(Instant::now());
                    svc.set_state(ServiceState::Starting);
                    let generation = svc.generation;
                    let unit = self.unit_of(&key);
                    let stop = self.watch(job.id, running, None, Some(unit));
                    self.jobs.insert(
                        job.id,
                        LiveJob {
                            purpose: Purpose::Service { key: key.clone(), generation, step: main },
                            stop: Some(stop),
                        },
                    );
                    self.event(
                        Level::Info,
                        "hero_proc.engine",
                        format!("re-attached to {key} (pid {})", job.pid.unwrap_or(0)),
                        Some(job.id),
                    );
                    self.check_health(&key);
                    // A reconcile interrupted between its store commit and its restarts
                    // leaves a process running an older config: restart it now.
                    if let Some(why) = self.stale_reason(&key, &job) {
                        self.event(
                            Level::Warn,
                            "hero_proc.engine",
                            format!("{key} was started before {why} (an interrupted apply?); restarting it"),
                            Some(job.id),
                        );
                        if let Some(svc) = self.services.get_mut(&key) {
                            svc.restart_after_stop = true;
                        }
                        self.stop_job_of(&key);
                    }
                }
                (Some(r), None) if job.service.is_some() => {
                    // Its service was deleted while no daemon was watching (an apply
                    // interrupted after its commit): stop it rather than leave an orphan.
                    let (sig, timeout) = job
                        .spec()
                        .map(|a| (a.stop.signal, a.stop.timeout.0))
                        .unwrap_or((Signal::Term, Duration::from_secs(10)));
                    let unit = job.service.as_ref().map(|k| self.unit_of(k));
                    let stop = self.watch(job.id, r, None, unit);
                    let _ = stop.send((sig, timeout));
                    self.jobs.insert(
                        job.id,
                        LiveJob { purpose: Purpose::Run { run: job.run_id.unwrap_or(RunId(0)) }, stop: None },
                    );
                    let name = job.service.as_ref().map(|s| s.to_string()).unwrap_or_default();
                    self.event(
                        Level::Warn,
                        "hero_proc.engine",
                        format!("stopping pid {} of deleted service {name}", job.pid.unwrap_or(0)),
                        Some(job.id),
                    );
                }
                (adopted, _) => {
                    // Gone, reused PID, or no longer ours: record it and move on. Services
                    // with status start are started again by boot.
                    if let Some(r) = adopted {
                        // A run job from the previous daemon: let it finish, but we cannot
                        // continue its run, so stop tracking after it exits.
                        let stop = self.watch(job.id, r, None, None);
                        self.jobs.insert(
                            job.id,
                            LiveJob { purpose: Purpose::Run { run: job.run_id.unwrap_or(RunId(0)) }, stop: Some(stop) },
                        );
                        continue;
                    }
                    let why = if job.phase == Phase::Pending {
                        "hero_proc restarted before the job started"
                    } else {
                        "the process was gone when hero_proc restarted"
                    };
                    let _ = self.store.finish_job(
                        job.id,
                        &JobExit {
                            phase: Phase::Failed,
                            exit_code: None,
                            signal: None,
                            error: Some(why.into()),
                            finished_at_ms: now_ms(),
                        },
                    );
                }
            }
        }
    }

    /// After re-attach: a cgroup whose processes no job records (its service was deleted
    /// while no daemon ran, or the database was lost or replaced) is emptied, so a start
    /// never runs a second copy next to them; empty cgroups are removed (they are created
    /// again at start).
    fn sweep_stray_units(&mut self) {
        for (leaf, unit) in self.contain.existing() {
            let tracked =
                self.services.iter().any(|(k, s)| s.job.is_some() && format!("{}.{}", k.context, k.name) == leaf);
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

    /// The containment unit of a service.
    fn unit_of(&self, key: &Ref) -> Unit {
        self.contain.unit(&key.context, &key.name)
    }

    /// Record (or forget) that a service was stopped by hand.
    fn set_stop_intent(&self, key: &Ref, stopped: bool) {
        let r = if stopped {
            self.store.set_stop_intent(&key.context, &key.name, now_ms())
        } else {
            self.store.clear_stop_intent(&key.context, &key.name).map(|_| ())
        };
        if let Err(e) = r {
            self.event(
                Level::Error,
                "hero_proc.engine",
                format!(
                    "{key}: cannot record that it was {}: {e}",
                    if stopped { "stopped by hand" } else { "started" }
                ),
                None,
            );
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut shutting: Option<Reply<()>> = None;
        let mut deadline = tokio::time::Instant::now();
        loop {
            let msg = if shutting.is_some() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => m,
                    _ => break,
                }
            } else {
                match rx.recv().await {
                    Some(m) => m,
                    None => return,
                }
            };
            match msg {
                Msg::Shutdown(reply) if !self.stop_on_exit => {
                    let _ = reply.send(Ok(()));
                    return;
                }
                Msg::Shutdown(reply) => {
                    let keys: Vec<Ref> = self.services.keys().cloned().collect();
                    for k in &keys {
                        self.want_stop(k);
                    }
                    shutting = Some(reply);
                    deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                }
                Msg::Exited { job, exit, timed_out } => {
                    // Exits come in bursts (a run of many short jobs): record every exit
                    // already queued in one transaction, then react to each.
                    let mut batch = vec![(job, exit, timed_out)];
                    let mut next = None;
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(Msg::Exited { job, exit, timed_out }) => batch.push((job, exit, timed_out)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.on_exits(batch);
                    if let Some(m) = next {
                        match m {
                            Msg::Shutdown(reply) => {
                                // Rare: handle it on the next turn of the loop.
                                let tx = self.tx.clone();
                                let _ = tx.send(Msg::Shutdown(reply));
                            }
                            other => self.handle(other),
                        }
                    }
                }
                other => self.handle(other),
            }
            if shutting.is_some() && self.jobs.values().all(|j| matches!(j.purpose, Purpose::Run { .. })) {
                break;
            }
        }
        if let Some(reply) = shutting {
            let _ = reply.send(Ok(()));
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::SetAction(a, origin, reply) => {
                let r = self.store.put_action(&a, &origin).map(|_| true).map_err(EngineError::from);
                if r.is_ok() {
                    self.update_schedule(&a);
                    self.arm_cron();
                }
                let _ = reply.send(r);
            }
            Msg::DeleteAction(r, reply) => {
                let used = self.services.values().any(|s| {
                    s.spec.actions.iter().any(|a| {
                        resolve_ref(&a.name, &s.spec.context, |_| true) == r
                            || (a.name == r.name && s.spec.context == r.context)
                    })
                });
                let res = if used {
                    Err(EngineError::Conflict(format!(
                        "action {r} is used by a service; delete or change the service first"
                    )))
                } else {
                    self.store.delete_action(&r.context, &r.name).map_err(EngineError::from)
                };
                if matches!(res, Ok(true)) && self.schedules.remove(&r).is_some() {
                    self.arm_cron();
                }
                let _ = reply.send(res);
            }
            Msg::SetService(s, origin, reply) => {
                let _ = reply.send(self.set_service(*s, origin));
            }
            Msg::DeleteService(r, reply) => {
                let res = match self.services.contains_key(&r) {
                    false => Err(EngineError::NotFound(format!("no service {r}"))),
                    true => {
                        self.want_stop(&r);
                        self.services.remove(&r);
                        self.set_stop_intent(&r, false);
                        self.store.delete_service(&r.context, &r.name).map_err(EngineError::from)
                    }
                };
                let _ = reply.send(res);
            }
            Msg::Start(r, reply) => {
                let res = match self.services.contains_key(&r) {
                    false => Err(EngineError::NotFound(format!("no service {r}"))),
                    true => {
                        self.set_stop_intent(&r, false);
                        Ok(self.want_start(&r))
                    }
                };
                let _ = reply.send(res);
            }
            Msg::Stop(r, reply) => {
                let res = match self.services.contains_key(&r) {
                    false => Err(EngineError::NotFound(format!("no service {r}"))),
                    true => {
                        // A stop by hand stays a stop across daemon restarts.
                        self.set_stop_intent(&r, true);
                        Ok(self.want_stop(&r))
                    }
                };
                let _ = reply.send(res);
            }
            Msg::Restart(r, reply) => {
                if self.services.contains_key(&r) {
                    self.set_stop_intent(&r, false);
                }
                let res = match self.services.get_mut(&r) {
                    None => Err(EngineError::NotFound(format!("no service {r}"))),
                    Some(svc) if svc.job.is_some() && !svc.restart_after_stop && !svc_can_restart(&self.store) => {
                        let why = self.store.check_file().and_then(|()| self.store.check_space());
                        let why = why.err().map(|e| e.to_string()).unwrap_or_default();
                        Err(EngineError::Conflict(format!(
                            "not restarting {r}: its new job could not be recorded ({why}); the running process is kept"
                        )))
                    }
                    Some(svc) if svc.job.is_some() => {
                        // Coalesce: a restart already under way absorbs this one.
                        if !svc.restart_after_stop {
                            svc.restart_after_stop = true;
                            svc.wanted = true;
                            self.stop_job_of(&r);
                        }
                        Ok(true)
                    }
                    Some(svc) if svc.state == ServiceState::Backoff => {
                        // An operator's restart (after fixing a crash loop) happens now,
                        // not after the backoff: the pending timer becomes stale.
                        svc.backoff_until_ms = None;
                        svc.generation += 1;
                        svc.set_state(ServiceState::Inactive);
                        Ok(self.want_start(&r))
                    }
                    Some(_) => Ok(self.want_start(&r)),
                };
                let _ = reply.send(res);
            }
            Msg::Status(r, reply) => {
                let res = match r {
                    Some(r) => match self.services.get(&r) {
                        Some(s) => Ok(vec![self.view(&r, s)]),
                        None => Err(EngineError::NotFound(format!("no service {r}"))),
                    },
                    None => Ok(self.services.iter().map(|(k, s)| self.view(k, s)).collect()),
                };
                let _ = reply.send(res);
            }
            Msg::Submit(actions, label, reply) => {
                let _ = reply.send(self.submit(actions, label));
            }
            Msg::CancelRun(id, reply) => {
                let _ = reply.send(self.cancel_run(id));
            }
            Msg::Shutdown(_) => unreachable!("handled in run"),
            Msg::Exited { job, exit, timed_out } => self.on_exit(job, exit, timed_out),
            Msg::Healthy { key, generation, checks, healthy } => self.on_health(key, generation, checks, healthy),
            Msg::SecretChanged(secret, reply) => {
                let users: Vec<Ref> = self
                    .services
                    .iter()
                    .filter(|(_, svc)| svc.job.is_some())
                    .filter(|(k, svc)| {
                        (0..svc.spec.actions.len()).any(|step| {
                            self.action_for(k, step).is_ok_and(|a| {
                                a.context == secret.context && a.secret_refs().any(|n| n.name == secret.name)
                            })
                        })
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &users {
                    if let Some(svc) = self.services.get_mut(k)
                        && !svc.restart_after_stop
                    {
                        svc.restart_after_stop = true;
                        svc.wanted = true;
                        self.stop_job_of(k);
                    }
                }
                let _ = reply.send(Ok(users));
            }
            Msg::ConfigApplied(change, reply) => {
                self.config_applied(*change);
                let _ = reply.send(Ok(()));
            }
            Msg::EnsureHeroDb(reply) => {
                let d = self.ensure_hero_db();
                let _ = reply.send(Ok(d));
            }
            Msg::CronTick { generation } => {
                if generation == self.cron_generation {
                    self.fire_due();
                    self.arm_cron();
                }
            }
            Msg::FlushExits => {
                // A write since may have flushed them already; then the timer just ends.
                if self.unrecorded.is_empty() {
                    self.flush_delay = None;
                } else {
                    self.flush_exits();
                }
            }
            Msg::BackoffDone { key, generation } => {
                if let Some(svc) = self.services.get_mut(&key)
                    && svc.generation == generation
                    && svc.state == ServiceState::Backoff
                    && svc.wanted
                {
                    svc.restarts += 1;
                    svc.backoff_until_ms = None;
                    self.begin(&key);
                }
            }
        }
    }

    fn view(&self, key: &Ref, s: &Svc) -> ServiceView {
        ServiceView {
            context: key.context.clone(),
            name: key.name.clone(),
            status: s.spec.status,
            state: s.state,
            pid: s.pid,
            job_id: s.job.map(|j| j.0),
            restarts: s.restarts,
            crash_loop: s.crash_loop,
            backoff_until_ms: s.backoff_until_ms,
            since_ms: s.since_ms,
            last_exit: s.last_exit.clone(),
            reason: s.reason.clone(),
            health: s.health.clone(),
            health_failures: s.health_failures,
            managed: s.managed,
        }
    }

    fn set_service(&mut self, spec: Service, origin: Origin) -> Result<bool, EngineError> {
        for a in &spec.actions {
            let r = resolve_ref(&a.name, &spec.context, |r| {
                self.store.get_action(&r.context, &r.name).ok().flatten().is_some()
            });
            if self.store.get_action(&r.context, &r.name)?.is_none() {
                return Err(EngineError::Invalid(format!(
                    "service {}/{} runs unknown action `{}`: set the action first",
                    spec.context, spec.name, a.name
                )));
            }
        }
        self.store.put_service(&spec, &origin)?;
        let key = key_of(&spec);
        let status = spec.status;
        match self.services.get_mut(&key) {
            Some(svc) => {
                let changed = svc.spec != spec;
                svc.spec = spec;
                svc.managed = origin.managed;
                if !changed {
                    return Ok(false);
                }
                self.set_stop_intent(&key, false);
            }
            None => {
                self.services.insert(key.clone(), Svc::new(spec, origin.managed));
                // Services waiting for this one being defined can go on.
                self.wake_waiters();
            }
        }
        match status {
            ServiceStatus::Start => {
                self.want_start(&key);
            }
            ServiceStatus::Stop => {
                self.want_stop(&key);
            }
            ServiceStatus::Ignore => {}
        }
        Ok(true)
    }

    /// Ask for a service to run. Returns false when it already runs or is starting.
    fn want_start(&mut self, key: &Ref) -> bool {
        let Some(svc) = self.services.get_mut(key) else { return false };
        svc.wanted = true;
        if svc.job.is_some() || matches!(svc.state, ServiceState::Waiting | ServiceState::Backoff) {
            return false;
        }
        svc.failures = 0;
        svc.crash_loop = false;
        self.begin(key);
        true
    }

    /// Ask for a service to stop. Returns false when it was not running.
    fn want_stop(&mut self, key: &Ref) -> bool {
        let Some(svc) = self.services.get_mut(key) else { return false };
        svc.wanted = false;
        svc.restart_after_stop = false;
        svc.generation += 1;
        svc.backoff_until_ms = None;
        if svc.job.is_some() {
            svc.set_state(ServiceState::Stopping);
            self.stop_job_of(key);
            true
        } else {
            let was = !matches!(svc.state, ServiceState::Inactive | ServiceState::Failed);
            svc.set_state(ServiceState::Inactive);
            svc.reason = None;
            was
        }
    }

    fn stop_job_of(&mut self, key: &Ref) {
        let Some(job) = self.services.get(key).and_then(|s| s.job) else { return };
        let action = self.services.get(key).and_then(|s| self.action_for(key, s.step).ok());
        let (sig, timeout) =
            action.map(|a| (a.stop.signal, a.stop.timeout.0)).unwrap_or((Signal::Term, Duration::from_secs(10)));
        if let Some(svc) = self.services.get_mut(key) {
            svc.set_state(ServiceState::Stopping);
        }
        if let Some(live) = self.jobs.get_mut(&job)
            && let Some(stop) = live.stop.take()
        {
            let _ = stop.send((sig, timeout));
        }
    }

    /// Restart a running service whose main process started from an older version of a
    /// changed action than the store now holds (description and tags aside, as the plan
    /// counts them); a restart already under way is enough.
    fn restart_if_stale(&mut self, key: &Ref, changed: &HashSet<&Ref>) {
        let Some(svc) = self.services.get(key) else { return };
        let Some(job) = svc.job.filter(|_| !svc.restart_after_stop) else { return };
        let Ok(current) = self.action_for(key, svc.spec.actions.len().saturating_sub(1)) else { return };
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
        if let Some(svc) = self.services.get_mut(key) {
            svc.restart_after_stop = true;
            svc.wanted = true;
        }
        self.stop_job_of(key);
    }

    /// Why a re-attached service process no longer matches its config, if it does not:
    /// its main action is another one, or changed, or a secret it reads changed since it
    /// started.
    fn stale_reason(&self, key: &Ref, job: &hero_proc_store::Job) -> Option<String> {
        let svc = self.services.get(key)?;
        let current = self.action_for(key, svc.spec.actions.len().saturating_sub(1)).ok()?;
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

    fn action_for(&self, key: &Ref, step: usize) -> Result<Action, String> {
        let svc = self.services.get(key).ok_or("service vanished")?;
        let named = svc.spec.actions.get(step).ok_or("no such step")?;
        let r = resolve_ref(&named.name, &svc.spec.context, |r| {
            self.store.get_action(&r.context, &r.name).ok().flatten().is_some()
        });
        match self.store.get_action(&r.context, &r.name) {
            Ok(Some(a)) => Ok(a.value),
            Ok(None) => Err(format!("action {r} does not exist")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Start a service from its first action, once everything it `requires` is up.
    fn begin(&mut self, key: &Ref) {
        let Some(svc) = self.services.get(key) else { return };
        let requires: Vec<Ref> = svc
            .spec
            .requires
            .iter()
            .map(|r| resolve_ref(&r.name, &svc.spec.context, |k| self.services.contains_key(k)))
            .collect();
        let after: Vec<Ref> = svc
            .spec
            .after
            .iter()
            .map(|r| resolve_ref(&r.name, &svc.spec.context, |k| self.services.contains_key(k)))
            .collect();
        let mut waiting_for = Vec::new();
        for r in &requires {
            match self.services.get(r).map(|s| s.state) {
                Some(s) if s.is_active() => {}
                Some(_) => waiting_for.push(r.clone()),
                // It may be defined later (set in another call): wait, and say so.
                None => waiting_for.push(r.clone()),
            }
        }
        // `after` orders only against services that are on their way up.
        for r in &after {
            if let Some(s) = self.services.get(r)
                && matches!(s.state, ServiceState::Waiting | ServiceState::Starting)
            {
                waiting_for.push(r.clone());
            }
        }
        if !waiting_for.is_empty() {
            // Pull in what it requires, as systemd's Requires= does.
            for r in &requires {
                if self.services.get(r).is_some_and(|s| !s.wanted) {
                    self.want_start(r);
                }
            }
            let names: Vec<String> = waiting_for
                .iter()
                .map(|r| if self.services.contains_key(r) { r.to_string() } else { format!("{r} (not defined)") })
                .collect();
            let svc = self.services.get_mut(key).expect("exists");
            svc.set_state(ServiceState::Waiting);
            svc.reason = Some(format!("waiting for {}", names.join(", ")));
            return;
        }
        self.end_unknown_processes(key);
        let svc = self.services.get_mut(key).expect("exists");
        svc.generation += 1;
        svc.step = 0;
        svc.reason = None;
        svc.health.clear();
        svc.set_state(ServiceState::Starting);
        self.run_step(key);
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
    fn kill_unrecorded(&mut self, unit: &Unit, whose: &str, why: &str) {
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

    /// Run the current step of a starting service.
    fn run_step(&mut self, key: &Ref) {
        let (step, generation, attempt) = {
            let svc = &self.services[key];
            (svc.step, svc.generation, svc.restarts + 1)
        };
        let action = match self.action_for(key, step) {
            Ok(a) => a,
            Err(e) => return self.fail_service(key, e),
        };
        let purpose = Purpose::Service { key: key.clone(), generation, step };
        match self.start_job(&action, None, Some(key.clone()), attempt, purpose) {
            Ok((job, pid)) => {
                let svc = self.services.get_mut(key).expect("exists");
                svc.job = Some(job);
                svc.pid = Some(pid);
                let is_main = step + 1 == svc.spec.actions.len();
                if is_main {
                    svc.main_started = Some(Instant::now());
                    if action.process {
                        self.check_health(key);
                    }
                }
            }
            Err(e) => self.on_start_failure(key, &action, e),
        }
    }

    fn on_start_failure(&mut self, key: &Ref, action: &Action, why: String) {
        let svc = self.services.get_mut(key).expect("exists");
        svc.job = None;
        svc.pid = None;
        svc.last_exit = Some(why.clone());
        // A spec that cannot start is retried like a crash (the binary may appear), but
        // not once the database was replaced: no start can succeed until a restart.
        let is_main = svc.step + 1 == svc.spec.actions.len();
        if is_main && action.process && self.store.check_file().is_ok() {
            self.after_main_exit(key, action, false, Duration::ZERO, why);
        } else {
            self.fail_service(key, why);
        }
    }

    fn fail_service(&mut self, key: &Ref, why: String) {
        if let Some(svc) = self.services.get_mut(key) {
            svc.job = None;
            svc.pid = None;
            svc.set_state(ServiceState::Failed);
            svc.reason = Some(why.clone());
        }
        self.event(Level::Error, "hero_proc.service", format!("{key} failed: {why}"), None);
        self.wake_waiters();
    }

    /// Create the job row, open its output file, spawn, and watch it.
    fn start_job(
        &mut self,
        action: &Action,
        run: Option<RunId>,
        service: Option<Ref>,
        attempt: u32,
        purpose: Purpose,
    ) -> Result<(JobId, u32), String> {
        self.flush_exits();
        let job = self
            .store
            .create_job(&NewJob { run_id: run, action, service, attempt, created_at_ms: now_ms() })
            .map_err(|e| e.to_string())?;
        let (pid, ticks) = self.launch(job, action, purpose)?;
        if let Err(e) = self.store.mark_job_running(job, pid, Some(ticks), now_ms()) {
            self.event(Level::Error, "hero_proc.job", format!("job {job}: cannot record start: {e}"), Some(job));
        }
        Ok((job, pid))
    }

    /// Open the job's output file, resolve its environment, spawn it and watch it. On
    /// failure the job row is finished as failed with the reason (and the reason logged).
    /// The caller records the start (so a burst can share one transaction).
    fn launch(&mut self, job: JobId, action: &Action, purpose: Purpose) -> Result<(u32, u64), String> {
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
        let started = (running.pid, running.start_ticks);
        let timeout = if action.process {
            None
        } else {
            action.timeout.map(|d| (d.0, action.stop.signal, action.stop.timeout.0))
        };
        let stop = self.watch(job, running, timeout, unit);
        self.jobs.insert(job, LiveJob { purpose, stop: Some(stop) });
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
    fn watch(
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

    fn on_exit(&mut self, job: JobId, exit: Exit, timed_out: bool) {
        self.on_exits(vec![(job, exit, timed_out)]);
    }

    /// Record a batch of exits in one transaction, then react to each in order.
    fn on_exits(&mut self, batch: Vec<(JobId, Exit, bool)>) {
        let now = now_ms();
        let mut done = Vec::with_capacity(batch.len());
        for (job, exit, timed_out) in batch {
            let Some(live) = self.jobs.remove(&job) else { continue };
            let stopped = live.stop.is_none();
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
                Exit::Unknown => (None, None),
            };
            let error = if timed_out {
                Some("timed out".to_owned())
            } else if exit == Exit::Unknown {
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
        self.unrecorded.extend(done.iter().map(|(job, _, _, _, ex)| (*job, ex.clone())));
        self.flush_exits();
        for (job, live, exit, timed_out, ex) in done {
            match live.purpose {
                Purpose::Service { key, generation, step } => {
                    self.on_service_exit(&key, generation, step, exit, timed_out)
                }
                Purpose::Run { run } => self.on_run_job_exit(run, job, ex.phase == Phase::Succeeded),
            }
        }
    }

    /// Write the exits not yet recorded, in one transaction. On failure they stay in
    /// memory, and the retry timer is armed (doubling from 1 s to 30 s) unless the
    /// database was replaced (nothing can be written until a restart).
    fn flush_exits(&mut self) {
        if self.unrecorded.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.unrecorded);
        let r = self.store.transaction(|tx| {
            for (job, ex) in &pending {
                tx.finish_job(*job, ex)?;
            }
            Ok(())
        });
        let e = match r {
            Ok(()) => {
                if self.flush_delay.is_some() {
                    self.event(
                        Level::Info,
                        "hero_proc.job",
                        format!("recorded {} job exits that a failed write had kept", pending.len()),
                        None,
                    );
                }
                self.flush_delay = None;
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
            let what = if retry { "kept; retrying until it can be written" } else { "dropped" };
            let msg = format!("cannot record {} job exits ({what}): {e}", pending.len());
            self.event(Level::Error, "hero_proc.job", msg, None);
        }
        if !retry {
            return;
        }
        self.unrecorded = pending;
        let delay = self.flush_delay.map_or(Duration::from_secs(1), |d| (d * 2).min(Duration::from_secs(30)));
        self.flush_delay = Some(delay);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::FlushExits);
        });
    }

    fn on_service_exit(&mut self, key: &Ref, generation: u64, step: usize, exit: Exit, timed_out: bool) {
        let Some(svc) = self.services.get_mut(key) else { return };
        svc.job = None;
        svc.pid = None;
        svc.last_exit = Some(if timed_out { "timed out".into() } else { exit.to_string() });
        // Stopped on purpose (stop, restart, delete): settle, and start again if asked.
        if svc.generation != generation || svc.state == ServiceState::Stopping {
            svc.set_state(ServiceState::Inactive);
            svc.health.clear();
            if svc.restart_after_stop {
                svc.restart_after_stop = false;
                svc.restarts += 1;
                self.begin(key);
            }
            self.wake_waiters();
            return;
        }
        let is_main = step + 1 == svc.spec.actions.len();
        let ran_for = svc.main_started.map(|t| t.elapsed()).unwrap_or_default();
        if !is_main {
            if exit.success() && !timed_out {
                svc.step += 1;
                self.run_step(key);
            } else {
                let name = svc.spec.actions[step].name.clone();
                let why = format!("pre-start action `{name}` failed: {}", svc.last_exit.clone().unwrap_or_default());
                self.fail_service(key, why);
            }
            return;
        }
        let why = svc.last_exit.clone().unwrap_or_default();
        let action = match self.action_for(key, step) {
            Ok(a) => a,
            Err(e) => return self.fail_service(key, e),
        };
        if !action.process && exit.success() && !timed_out {
            let svc = self.services.get_mut(key).expect("exists");
            svc.set_state(ServiceState::Exited);
            self.wake_waiters();
            return;
        }
        self.after_main_exit(key, &action, exit.success() && !timed_out, ran_for, why);
    }

    /// The main process ended on its own: restart per policy, with backoff.
    fn after_main_exit(&mut self, key: &Ref, action: &Action, success: bool, ran_for: Duration, why: String) {
        let svc = self.services.get_mut(key).expect("exists");
        let (decision, failures) = backoff::decide(&action.restart, success, ran_for, svc.failures);
        svc.failures = failures;
        svc.health.clear();
        match decision {
            Decision::Restart { after, crash_loop } if svc.wanted => {
                svc.crash_loop = crash_loop;
                svc.set_state(ServiceState::Backoff);
                svc.backoff_until_ms = Some(now_ms() + after.as_millis() as i64);
                svc.reason = Some(if crash_loop {
                    format!(
                        "crash loop: {failures} fast failures in a row, last: {why}; next start in {}",
                        humantime_short(after)
                    )
                } else {
                    format!("exited ({why}); restarting in {}", humantime_short(after))
                });
                let generation = svc.generation;
                let tx = self.tx.clone();
                let key2 = key.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Msg::BackoffDone { key: key2, generation });
                });
                let level = if crash_loop { Level::Error } else { Level::Warn };
                self.event(
                    level,
                    "hero_proc.service",
                    format!("{key} exited ({why}); restart in {}", humantime_short(after)),
                    None,
                );
            }
            Decision::GiveUp { retries_exhausted } => {
                if success {
                    svc.set_state(ServiceState::Inactive);
                    svc.reason = Some(format!("exited ({why}); restart policy does not restart a clean exit"));
                    self.wake_waiters();
                } else {
                    let why = if retries_exhausted {
                        format!("gave up after {failures} restarts; last: {why}")
                    } else {
                        format!("exited ({why})")
                    };
                    self.fail_service(key, why);
                }
            }
            Decision::Restart { .. } => {
                svc.set_state(ServiceState::Inactive);
                self.wake_waiters();
            }
        }
    }

    /// Probe health checks until they pass (readiness), then stop probing.
    fn check_health(&mut self, key: &Ref) {
        let Some(svc) = self.services.get(key) else { return };
        let step = svc.spec.actions.len().saturating_sub(1);
        let generation = svc.generation;
        let (checks, account) = match self.action_for(key, step) {
            // `exec` checks run as the action's account (its resolution error, if any,
            // already failed the start).
            Ok(a) => {
                let account = a.user.as_deref().and_then(|u| process::Account::resolve(u, a.group.as_deref()).ok());
                (a.health, account)
            }
            Err(_) => (Vec::new(), None),
        };
        if checks.is_empty() {
            let svc = self.services.get_mut(key).expect("exists");
            svc.set_state(ServiceState::Running);
            self.wake_waiters();
            return;
        }
        let tx = self.tx.clone();
        let key = key.clone();
        let expand = self.expand.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(20);
            loop {
                let mut views = Vec::new();
                let mut all = true;
                for hc in &checks {
                    if let hero_proc_spec::HealthCheck::HeroSockets(true) = hc {
                        for s in health::hero_sockets(&key.name, &expand).await {
                            let (ok, detail) = split(&s.health);
                            all &= ok;
                            views.push(CheckView { check: s.role, healthy: ok, detail });
                        }
                        continue;
                    }
                    let h = health::check_as(hc, &key.name, &expand, account.as_ref()).await;
                    let (ok, detail) = split(&h);
                    all &= ok;
                    views.push(CheckView { check: describe(hc), healthy: ok, detail });
                }
                if tx.send(Msg::Healthy { key: key.clone(), generation, checks: views, healthy: all }).is_err() || all {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }

    fn on_health(&mut self, key: Ref, generation: u64, checks: Vec<CheckView>, healthy: bool) {
        let Some(svc) = self.services.get_mut(&key) else { return };
        if svc.generation != generation || svc.job.is_none() {
            return;
        }
        svc.health = checks;
        if healthy && svc.state == ServiceState::Starting {
            svc.set_state(ServiceState::Running);
            svc.reason = None;
            self.wake_waiters();
        } else if !healthy {
            svc.health_failures += 1;
            let failing: Vec<String> = svc
                .health
                .iter()
                .filter(|c| !c.healthy)
                .map(|c| format!("{}: {}", c.check, c.detail.clone().unwrap_or_default()))
                .collect();
            svc.reason = Some(format!("not healthy yet: {}", failing.join("; ")));
        }
    }

    /// Something became active or failed: services waiting on it may go on.
    fn wake_waiters(&mut self) {
        let waiting: Vec<Ref> = self
            .services
            .iter()
            .filter(|(_, s)| s.state == ServiceState::Waiting && s.wanted)
            .map(|(k, _)| k.clone())
            .collect();
        for k in waiting {
            // A required service that failed fails its dependents instead of leaving
            // them waiting forever.
            let failed_dep = {
                let svc = &self.services[&k];
                svc.spec.requires.iter().find_map(|r| {
                    let rr = resolve_ref(&r.name, &svc.spec.context, |x| self.services.contains_key(x));
                    self.services.get(&rr).filter(|s| s.state == ServiceState::Failed).map(|_| rr)
                })
            };
            match failed_dep {
                Some(dep) => self.fail_service(&k, format!("required service {dep} failed")),
                None => self.begin(&k),
            }
        }
    }

    fn config_applied(&mut self, c: ConfigChange) {
        for r in &c.services_deleted {
            self.want_stop(r);
            self.services.remove(r);
            self.set_stop_intent(r, false);
        }
        for r in &c.actions_deleted {
            self.schedules.remove(r);
        }
        for r in &c.actions_changed {
            if let Ok(Some(a)) = self.store.get_action(&r.context, &r.name) {
                self.update_schedule(&a.value);
            }
        }
        self.arm_cron();
        for r in &c.services_changed {
            match self.store.get_service(&r.context, &r.name) {
                Ok(Some(stored)) => match self.services.get_mut(r) {
                    Some(svc) => {
                        // Git changed the service: a stop by hand no longer holds.
                        let changed = svc.spec != stored.value;
                        svc.spec = stored.value;
                        svc.managed = stored.managed;
                        if changed {
                            self.set_stop_intent(r, false);
                        }
                    }
                    None => {
                        self.services.insert(r.clone(), Svc::new(stored.value, stored.managed));
                    }
                },
                Ok(None) => {}
                Err(e) => self.event(Level::Error, "hero_proc.reconcile", format!("cannot reload {r}: {e}"), None),
            }
        }
        for r in &c.stops {
            self.want_stop(r);
        }
        for r in &c.restarts {
            if let Some(svc) = self.services.get_mut(r)
                && svc.job.is_some()
                && !svc.restart_after_stop
            {
                svc.restart_after_stop = true;
                svc.wanted = true;
                self.stop_job_of(r);
            }
        }
        for r in &c.starts {
            // The plan decided to start it (git changed it, or self_heal): that ends a stop
            // by hand.
            self.set_stop_intent(r, false);
            self.want_start(r);
        }
        // The plan restarts services it saw running; one that a restart in flight started
        // while the new rows were being committed runs the old action: restart it too.
        let changed: HashSet<&Ref> = c.actions_changed.iter().collect();
        let running: Vec<Ref> = self.services.iter().filter(|(_, s)| s.job.is_some()).map(|(k, _)| k.clone()).collect();
        for r in running {
            self.restart_if_stale(&r, &changed);
        }
        let stopped: HashSet<Ref> =
            self.store.stop_intents().map(|l| l.into_iter().map(|(r, _)| r).collect()).unwrap_or_default();
        // Services whose status became start (or that are new) and are not running.
        for r in &c.services_changed {
            if !stopped.contains(r)
                && self.services.get(r).is_some_and(|s| s.spec.status == ServiceStatus::Start && !s.wanted)
            {
                self.want_start(r);
            }
            if self.services.get(r).is_some_and(|s| s.spec.status == ServiceStatus::Stop && s.wanted) {
                self.want_stop(r);
            }
        }
        self.wake_waiters();
    }

    /// SPEC 5.3: after autostart, hero_db must be active; say so loudly when it cannot be.
    fn ensure_hero_db(&mut self) -> crate::hero_db::Decision {
        use crate::hero_db::{self as db, Decision};
        let key = Ref::new(db::CONTEXT, db::NAME);
        let registered = self.services.get(&key).map(|s| (s.spec.status, s.state));
        let decision = db::decide(registered, false);
        match decision {
            Decision::Skip => {}
            // Said too, so the check leaves a mark that it ran (tests and operators wait on it).
            Decision::AlreadyActive => {
                self.event(Level::Info, db::SOURCE, "hero_db is active: nothing to do".into(), None)
            }
            Decision::InProgress => {
                self.event(Level::Info, db::SOURCE, "hero_db is starting: nothing to do".into(), None)
            }
            Decision::Start if self.store.stop_intents().is_ok_and(|l| l.iter().any(|(r, _)| *r == key)) => {
                self.event(
                    Level::Warn,
                    db::SOURCE,
                    "hero_db was stopped by hand; leaving it stopped. `hero_proc service start hero_db` starts it"
                        .into(),
                    None,
                );
            }
            Decision::Start => {
                self.event(
                    Level::Info,
                    db::SOURCE,
                    "hero_db is registered with status start but idle; starting it".into(),
                    None,
                );
                self.want_start(&key);
            }
            Decision::KeepStatus(status) => {
                let word = match status {
                    ServiceStatus::Start => "start",
                    ServiceStatus::Stop => "stop",
                    ServiceStatus::Ignore => "ignore",
                };
                self.event(
                    Level::Warn,
                    db::SOURCE,
                    format!("hero_db has `status: {word}`; leaving it as the operator asked. Services that require it will wait. Set `status: start` to have hero_proc keep it running."),
                    None,
                );
            }
            Decision::Missing => self.event(Level::Error, db::SOURCE, db::MISSING_HINT.into(), None),
        }
        decision
    }

    /// Track (or stop tracking) an action's cron schedule.
    fn update_schedule(&mut self, a: &Action) {
        let key = Ref::new(&a.context, &a.name);
        let cron =
            a.schedule.as_deref().filter(|_| !a.process).and_then(|s| hero_proc_spec::schema::parse_cron(s).ok());
        match cron {
            Some(cron) => {
                let next = cron.find_next_occurrence(&chrono::Local::now(), false).ok();
                let running = self.schedules.get(&key).and_then(|s| s.running);
                self.schedules.insert(key, Schedule { cron, next, running });
            }
            None => {
                self.schedules.remove(&key);
            }
        }
    }

    /// One timer for the earliest next tick; nothing at all when nothing is scheduled.
    fn arm_cron(&mut self) {
        self.cron_generation += 1;
        let Some(next) = self.schedules.values().filter_map(|s| s.next).min() else { return };
        let wait = (next - chrono::Local::now()).to_std().unwrap_or(Duration::ZERO);
        let generation = self.cron_generation;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(Msg::CronTick { generation });
        });
    }

    /// Start a run for every schedule that is due, unless its previous run still goes.
    fn fire_due(&mut self) {
        let now = chrono::Local::now();
        let due: Vec<Ref> =
            self.schedules.iter().filter(|(_, s)| s.next.is_some_and(|n| n <= now)).map(|(k, _)| k.clone()).collect();
        for key in due {
            let busy = self.schedules[&key].running.is_some_and(|r| self.runs.contains_key(&r));
            if busy {
                self.event(
                    Level::Warn,
                    "hero_proc.schedule",
                    format!("{key}: skipped a tick, the previous run is still going"),
                    None,
                );
            } else {
                match self.submit(vec![key.clone()], format!("schedule {key}")) {
                    Ok(run) => {
                        if let Some(s) = self.schedules.get_mut(&key) {
                            s.running = Some(run);
                        }
                    }
                    Err(e) => self.event(Level::Error, "hero_proc.schedule", format!("{key}: cannot start: {e}"), None),
                }
            }
            if let Some(s) = self.schedules.get_mut(&key) {
                s.next = s.cron.find_next_occurrence(&now, false).ok();
            }
        }
    }

    fn submit(&mut self, actions: Vec<Ref>, label: String) -> Result<RunId, EngineError> {
        if actions.is_empty() {
            return Err(EngineError::Invalid("a run needs at least one action".into()));
        }
        // A run may name one action many times: read each once.
        let mut specs = Vec::with_capacity(actions.len());
        let mut seen: HashMap<&Ref, Action> = HashMap::new();
        for r in &actions {
            if !seen.contains_key(r) {
                match self.store.get_action(&r.context, &r.name)? {
                    Some(a) => seen.insert(r, a.value),
                    None => {
                        return Err(EngineError::NotFound(format!(
                            "no action {r}; `hero_proc action list` shows what exists"
                        )));
                    }
                };
            }
            specs.push(seen[r].clone());
        }
        let run = self.store.create_run(&label, now_ms())?;
        self.store.set_run_phase(run, Phase::Running, now_ms())?;
        // depends_on between actions of this run order its jobs; others are ignored.
        let mut live = LiveRun { pending: Vec::new(), running: HashSet::new(), done: HashMap::new(), cancelled: false };
        // One transaction for all rows: a 1,000-job run costs one commit, not 1,000.
        let created = now_ms();
        let ids: Vec<(Ref, JobId)> = self.store.transaction(|tx| {
            specs
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
                .collect()
        })?;
        for (a, (_, id)) in specs.into_iter().zip(ids.clone()) {
            let deps = a
                .depends_on
                .iter()
                .filter_map(|d| {
                    let r = resolve_ref(&d.name, &a.context, |x| ids.iter().any(|(k, _)| k == x));
                    ids.iter().find(|(k, _)| *k == r).map(|(_, j)| *j)
                })
                .collect();
            live.pending.push((id, a, deps));
        }
        self.runs.insert(run, live);
        self.advance_run(run);
        Ok(run)
    }

    fn advance_run(&mut self, run: RunId) {
        let Some(live) = self.runs.get_mut(&run) else { return };
        let mut ready = Vec::new();
        let mut doomed = Vec::new();
        live.pending.retain(|(id, a, deps)| {
            if live.cancelled || deps.iter().any(|d| live.done.get(d) == Some(&false)) {
                doomed.push(*id);
                return false;
            }
            if deps.iter().all(|d| live.done.get(d) == Some(&true)) {
                ready.push((*id, a.clone()));
                return false;
            }
            true
        });
        for id in doomed {
            live.done.insert(id, false);
            let _ = self.store.finish_job(
                id,
                &JobExit {
                    phase: Phase::Cancelled,
                    exit_code: None,
                    signal: None,
                    error: Some("a job it depends on did not succeed, or the run was cancelled".into()),
                    finished_at_ms: now_ms(),
                },
            );
        }
        let mut started = Vec::with_capacity(ready.len());
        let mut start_failed = false;
        for (id, a) in ready {
            match self.start_run_job(run, id, &a) {
                Some(s) => started.push(s),
                None => start_failed = true,
            }
        }
        // One transaction for all the jobs started in this step.
        if !started.is_empty() {
            let now = now_ms();
            let r = self.store.transaction(|tx| {
                for (job, pid, ticks) in &started {
                    tx.mark_job_running(*job, *pid, Some(*ticks), now)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                self.event(
                    Level::Error,
                    "hero_proc.job",
                    format!("cannot record {} job starts: {e}", started.len()),
                    None,
                );
            }
        }
        if start_failed {
            // Jobs that depend on one that could not start are cancelled now.
            return self.advance_run(run);
        }
        let live = &self.runs[&run];
        if live.pending.is_empty() && live.running.is_empty() {
            let ok = live.done.values().all(|v| *v) && !live.cancelled;
            let phase = if live.cancelled {
                Phase::Cancelled
            } else if ok {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            let _ = self.store.set_run_phase(run, phase, now_ms());
            self.runs.remove(&run);
        }
    }

    /// Start a run's pending job (its row exists already). Returns what to record as
    /// started, or None when it could not start (already recorded as failed).
    fn start_run_job(&mut self, run: RunId, job: JobId, action: &Action) -> Option<(JobId, u32, u64)> {
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

    fn on_run_job_exit(&mut self, run: RunId, job: JobId, ok: bool) {
        if let Some(live) = self.runs.get_mut(&run) {
            live.running.remove(&job);
            live.done.insert(job, ok);
            self.advance_run(run);
        }
    }

    fn cancel_run(&mut self, run: RunId) -> Result<bool, EngineError> {
        let Some(live) = self.runs.get_mut(&run) else {
            return match self.store.get_run(run)? {
                Some(_) => Ok(false),
                None => Err(EngineError::NotFound(format!("no run {run}"))),
            };
        };
        live.cancelled = true;
        let running: Vec<JobId> = live.running.iter().copied().collect();
        for j in running {
            if let Some(lj) = self.jobs.get_mut(&j)
                && let Some(stop) = lj.stop.take()
            {
                let _ = stop.send((Signal::Term, Duration::from_secs(10)));
            }
        }
        self.advance_run(run);
        Ok(true)
    }
}

/// Where and as whom `action` runs: its account (`user:`), its unit's cgroup and marker.
fn placement(action: &Action, unit: Option<&Unit>) -> Result<process::Placement, String> {
    let account = match &action.user {
        Some(u) => Some(process::Account::resolve(u, action.group.as_deref()).map_err(|e| e.to_string())?),
        None => None,
    };
    let cgroup_procs = match unit {
        Some(u) => u.prepare().map_err(|e| process::SpawnError::Contain(e).to_string())?,
        None => None,
    };
    Ok(process::Placement { account, cgroup_procs, marker: unit.map(|u| u.marker.clone()) })
}

fn split(h: &Health) -> (bool, Option<String>) {
    match h {
        Health::Healthy => (true, None),
        Health::Unhealthy(why) => (false, Some(why.clone())),
    }
}

fn describe(hc: &hero_proc_spec::HealthCheck) -> String {
    use hero_proc_spec::HealthCheck as H;
    match hc {
        H::UnixSocket(p) => format!("unix_socket {p}"),
        H::Http(h) => format!("http {}{}", h.socket.clone().or(h.url.clone()).unwrap_or_default(), h.path),
        H::Tcp(a) => format!("tcp {a}"),
        H::Exec(c) => format!("exec {c}"),
        H::HeroSockets(_) => "hero_sockets".into(),
    }
}

fn humantime_short(d: Duration) -> String {
    if d.as_millis() < 1000 { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs()) }
}
