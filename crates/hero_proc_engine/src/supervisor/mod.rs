//! The supervisor: one actor that owns all runtime state and reacts to messages.
//!
//! Commands (from RPC) and events (a process exited, a health check passed, a backoff
//! elapsed, a cron tick) arrive on one channel and are handled one at a time, so there
//! is no lock and no race between, say, a restart and a crash: fifty concurrent
//! `service.restart` calls leave exactly one process. Every wait is an event (child exit
//! via SIGCHLD/pidfd, timers via tokio), so an idle daemon does not wake up.
//!
//! Layout: the service lifecycle is a pure state machine (`services.rs`: `step(svc,
//! event, now) -> effects`); `executor.rs` performs its effects (spawn, signal, store
//! writes, log lines, timers) and feeds their results back as events; `launch.rs` spawns
//! and watches processes and records their exits; `runs.rs` and `cron.rs` drive runs of
//! jobs and schedules; `reattach.rs` adopts what a previous daemon left running;
//! `commands.rs` answers the RPC-facing commands.
//!
//! The actor runs on its own OS thread with a current-thread tokio runtime: fork/exec,
//! account lookups and SQLite writes are synchronous and take the thread they run on, so
//! they must not run on the daemon's tokio workers, where they would stall RPC and other
//! async work. One thread keeps the actor's ordering (one writer, one decision at a time)
//! and its watchers, timers and health probes run on the same runtime.
//!
//! Jobs and runs are written to the store as they change; the store is the record, this
//! actor's maps are the live view.

mod commands;
mod cron;
mod deps;
mod executor;
mod launch;
mod reattach;
mod runs;
pub mod services;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hero_proc_logstore::{Level, LogStore};
use hero_proc_spec::{Action, Service, Signal};
use hero_proc_store::{JobExit, JobId, Origin, Ref, RunId, Store};
use tokio::sync::{mpsc, oneshot};

use crate::contain::Containment;
use crate::paths::Expand;
use crate::process::Exit;
pub use runs::Submitted;
pub use services::Reason;
use services::Svc;
pub use view::{CheckResult, ServiceSnapshot, ServiceState};

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
    Status(Option<Ref>, Reply<Vec<ServiceSnapshot>>),
    Submit(Vec<Ref>, String, Reply<runs::Submitted>),
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
        checks: Vec<Vec<CheckResult>>,
        healthy: bool,
    },
    /// A periodic probe of one check (see `executor::monitor`).
    Probed {
        key: Ref,
        generation: u64,
        index: usize,
        label: String,
        results: Vec<CheckResult>,
        liveness: Option<hero_proc_spec::Liveness>,
        restart: hero_proc_spec::Restart,
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
        let subreaper = contain.mode == crate::contain::Mode::Subreaper;
        let sup = Supervisor {
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
            unrecorded_starts: Vec::new(),
            unrecorded_runs: Vec::new(),
            write_due: None,
            ended_outputs: Vec::new(),
            flush_delay: None,
            contain,
            monitors: HashMap::new(),
            actions: Default::default(),
        };
        // The actor's own thread (see the module comment). Boot finishes before this
        // returns, as callers expect services loaded and re-attached once it has.
        let (booted_tx, booted) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("hero_proc-sup".into()).spawn(move || {
            favour_this_thread();
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("cannot start the supervisor runtime: {e}"),
            };
            rt.block_on(async move {
                let mut sup = sup;
                if subreaper {
                    reap_orphans_on_sigchld();
                }
                sup.batched(|sup| {
                    sup.boot();
                    if ensure_db {
                        sup.ensure_hero_db();
                    }
                });
                let _ = booted_tx.send(());
                sup.run(rx).await;
            });
        });
        match thread {
            Ok(_) => {
                let _ = booted.recv();
            }
            Err(e) => tracing::error!("cannot start the supervisor thread: {e}"),
        }
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
    pub async fn status(&self, r: Option<Ref>) -> Result<Vec<ServiceSnapshot>, EngineError> {
        ask!(self, Status, r)
    }
    pub async fn submit(&self, actions: Vec<Ref>, label: String) -> Result<runs::Submitted, EngineError> {
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

/// The supervisor's thread runs ahead of the processes it supervises: at nice
/// [`SUPERVISOR_NICE`], so a machine busy with its services (or with fifty of them
/// starting) still gets its starts, stops and health checks done on time.
/// `SCHED_RESET_ON_FORK` makes every process
/// and thread this one creates start at nice 0 again, at no cost per spawn, so no job
/// inherits the favour. Unprivileged (a daemon not run as root), the nice value cannot go
/// below 0 and the thread stays as it is.
fn favour_this_thread() {
    // SAFETY: plain system calls on the calling thread with a valid parameter.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &param) != 0 {
            return;
        }
        // Per thread on Linux: the thread's own id, not the process's.
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SUPERVISOR_NICE);
    }
}

/// The supervisor thread's nice value (see [`favour_this_thread`]).
const SUPERVISOR_NICE: libc::c_int = -10;

/// Orphans of any job reparent to the daemon (it is their subreaper): reap them as
/// they exit.
fn reap_orphans_on_sigchld() {
    if let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                let _ = tokio::task::spawn_blocking(crate::contain::reap_orphans).await;
            }
        });
    }
}

/// Why a job runs.
#[derive(Clone)]
enum Purpose {
    Service { key: Ref },
    Run { run: RunId },
}

/// A job's process, as the supervisor sees it until its exit is reported.
enum JobLife {
    /// Running; the sender asks its watcher to stop it (signal, then SIGKILL after the
    /// timeout).
    Running(oneshot::Sender<(Signal, Duration)>),
    /// Asked to stop: its exit is a cancellation, not a failure.
    Stopping,
}

struct LiveJob {
    purpose: Purpose,
    life: JobLife,
}

impl LiveJob {
    fn running(purpose: Purpose, stop: oneshot::Sender<(Signal, Duration)>) -> LiveJob {
        LiveJob { purpose, life: JobLife::Running(stop) }
    }

    /// Ask its watcher to stop it; a job already stopping is left alone.
    fn stop(&mut self, signal: Signal, timeout: Duration) {
        if let JobLife::Running(tx) = std::mem::replace(&mut self.life, JobLife::Stopping) {
            let _ = tx.send((signal, timeout));
        }
    }
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
    runs: HashMap<RunId, runs::LiveRun>,
    /// Scheduled actions and when each fires next.
    schedules: BTreeMap<Ref, cron::Schedule>,
    /// Bumped whenever the timer is re-armed: older ticks are stale.
    cron_generation: u64,
    /// Exits not yet written: kept in memory until the next write of this thread takes
    /// them along, an answer is sent, or [`WRITE_DELAY`] has passed (see
    /// `unrecorded_starts`); and, after a failed write (disk full), until the retry
    /// timer writes them. (job, exit)
    unrecorded: Vec<(JobId, JobExit)>,
    /// Jobs started and not yet marked running in the store: written together with the
    /// exits, in one transaction, before an answer, with the next write, or
    /// [`WRITE_DELAY`] after the turn, instead of one commit each (a boot starting fifty
    /// services writes once; a one-call client's next `run.submit` carries the start and
    /// the exit of its previous job). A daemon that dies before that write leaves pending
    /// or running rows, which the next one re-attaches by their output file
    /// (`reattach.rs`). (job, pid, start ticks, started at ms)
    unrecorded_starts: Vec<(JobId, u32, crate::process::StartTicks, i64)>,
    /// Final phases of runs not yet written, written after their jobs' exits. (run,
    /// phase, finished at ms)
    unrecorded_runs: Vec<(RunId, hero_proc_store::Phase, i64)>,
    /// When what is unrecorded is written at the latest (a deadline on the wait for the
    /// next message, not a task and a message per turn, so a turn whose writes went with
    /// a later one costs no wake-up); cleared by each write of it.
    write_due: Option<tokio::time::Instant>,
    /// Jobs whose exit is written but maybe not yet committed (inside a batch): once it
    /// is, their output files go back to the spare pool if they are empty and unused
    /// (`recycle_outputs`).
    ended_outputs: Vec<JobId>,
    /// The retry timer's current delay while it is armed (it runs only while exits are
    /// unrecorded, so an idle daemon does not wake up).
    flush_delay: Option<Duration>,
    contain: Arc<Containment>,
    /// The periodic health probing of each running service that has checks: the
    /// generation it probes for, and its task.
    monitors: HashMap<Ref, (u64, tokio::task::AbortHandle)>,
    /// Actions decoded from the store, with the store's actions generation they are
    /// current for (`executor::stored_action`).
    actions: std::cell::RefCell<(u64, HashMap<Ref, Option<Action>>)>,
}

/// How long the starts and exits of a turn that answered nobody may wait for another
/// write to take them along. A daemon that dies meanwhile leaves those jobs pending or
/// running in the store, which the next one re-attaches by their output files (an exit
/// it did not see is recorded as unknown).
const WRITE_DELAY: Duration = Duration::from_millis(2);
/// How long after a burst of starts the supervisor looks again for children that have
/// exec'd (see `clone_into::release_started`).
const SLOT_RELEASE_DELAY: Duration = Duration::from_millis(20);

/// Whether a restart can record its new job (before its old process is stopped).
fn recordable(store: &Store) -> Result<(), String> {
    store.check_file().and_then(|()| store.check_space()).map_err(|e| e.to_string())
}

fn key_of(s: &Service) -> Ref {
    Ref::new(&s.context, &s.name)
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut shutting: Option<Reply<()>> = None;
        let mut deadline = tokio::time::Instant::now();
        // When to look again for children that have exec'd (their stacks can go back):
        // set only while some have not, so an idle daemon has no timer.
        let mut release_at: Option<tokio::time::Instant> = None;
        loop {
            if rx.is_empty() {
                // Going idle: give back the stacks of a burst's children that have exec'd.
                release_at =
                    crate::clone_into::release_started().then(|| tokio::time::Instant::now() + SLOT_RELEASE_DELAY);
            }
            let wake = [self.write_due, release_at, shutting.is_some().then_some(deadline)].into_iter().flatten().min();
            let next = match wake {
                Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            };
            let msg = match next {
                Some(Some(m)) => m,
                Some(None) => break,
                None if shutting.is_some() && tokio::time::Instant::now() >= deadline => break,
                None => {
                    if self.write_due.is_some_and(|at| at <= tokio::time::Instant::now()) {
                        self.write_due = None;
                        self.flush_exits();
                    }
                    continue;
                }
            };
            match msg {
                Msg::Shutdown(reply) if !self.stop_on_exit => {
                    self.flush_exits();
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
                Msg::Exited { job, exit, timed_out } => self.exits_burst((job, exit, timed_out), &mut rx),
                other => self.handle(other),
            }
            // Output files of ended jobs whose exits a run's record took along: after the
            // answer, not before it.
            if !self.ended_outputs.is_empty() && !self.store.in_batch() {
                self.recycle_outputs();
            }
            // Starts and exits no answer has written yet go with the next write, or after a
            // short delay at the latest (after a failed write, the retry timer has them).
            if !self.has_unrecorded() || self.flush_delay.is_some() {
                self.write_due = None;
            } else if self.write_due.is_none() {
                self.write_due = Some(tokio::time::Instant::now() + WRITE_DELAY);
            }
            if shutting.is_some() && self.jobs.values().all(|j| matches!(j.purpose, Purpose::Run { .. })) {
                break;
            }
        }
        // Nothing started is left unrecorded when the daemon exits.
        self.flush_exits();
        if let Some(reply) = shutting {
            let _ = reply.send(Ok(()));
        }
    }

    /// Runs `f` with the store writes of this thread in one transaction, the starts it
    /// made included: a boot or a reconcile that starts fifty services commits once, not
    /// fifty times. RPC readers see the rows at the commit, before anyone is answered.
    /// When the store refuses a batch (a replaced or read-only database), `f` runs
    /// unbatched and its own writes say why they fail.
    fn batched(&mut self, f: impl FnOnce(&mut Self)) {
        let store = self.store.clone();
        let batch = store.begin_batch().ok();
        f(self);
        self.flush_exits();
        match batch.map(hero_proc_store::Batch::commit) {
            Some(Err(e)) => {
                // The rows of this turn are lost; its processes run, and a later daemon
                // stops any it finds without a record (`end_unknown_processes`).
                self.ended_outputs.clear();
                self.event(Level::Error, "hero_proc.engine", format!("cannot record the jobs started: {e}"), None);
            }
            // A batch inside a batch commits with the outer one.
            _ if !self.store.in_batch() => self.recycle_outputs(),
            _ => {}
        }
    }

    /// Exits come in bursts (a run of many short jobs): record every exit already queued
    /// in one transaction, then react to each.
    fn exits_burst(&mut self, first: (JobId, Exit, bool), rx: &mut mpsc::UnboundedReceiver<Msg>) {
        let mut batch = vec![first];
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
        match next {
            // Rare: handle it on the next turn of the loop.
            Some(Msg::Shutdown(reply)) => {
                let _ = self.tx.send(Msg::Shutdown(reply));
            }
            Some(other) => self.handle(other),
            None => {}
        }
    }

    fn handle(&mut self, msg: Msg) {
        // Starts of this turn are written before the caller hears back, so what it reads
        // from the store next agrees with the answer.
        macro_rules! answer {
            ($sup:expr, $reply:expr, $value:expr) => {{
                let value = $value;
                $sup.flush_exits();
                let _ = $reply.send(value);
            }};
        }
        match msg {
            Msg::SetAction(a, origin, reply) => {
                answer!(self, reply, self.set_action(*a, origin));
            }
            Msg::DeleteAction(r, reply) => {
                answer!(self, reply, self.delete_action(r));
            }
            Msg::SetService(s, origin, reply) => {
                answer!(self, reply, self.set_service(*s, origin));
            }
            Msg::DeleteService(r, reply) => {
                answer!(self, reply, self.delete_service(r));
            }
            Msg::Start(r, reply) => {
                answer!(self, reply, self.start_by_hand(r));
            }
            Msg::Stop(r, reply) => {
                answer!(self, reply, self.stop_by_hand(r));
            }
            Msg::Restart(r, reply) => {
                answer!(self, reply, self.restart_by_hand(r));
            }
            Msg::Status(r, reply) => {
                answer!(self, reply, self.status(r));
            }
            Msg::Submit(actions, label, reply) => {
                // Answer once the run is recorded, then spawn: the caller's next request
                // is read while this one's processes start.
                let recorded = self.record_run(actions, label);
                let run = recorded.as_ref().ok().map(|s| s.run);
                let _ = reply.send(recorded);
                if let Some(run) = run {
                    self.advance_run(run);
                }
            }
            Msg::CancelRun(id, reply) => {
                answer!(self, reply, self.cancel_run(id));
            }
            Msg::Shutdown(_) => unreachable!("handled in run"),
            Msg::Exited { job, exit, timed_out } => self.on_exits(vec![(job, exit, timed_out)]),
            Msg::Probed { key, generation, index, label, results, liveness, restart } => {
                self.feed(&key, services::Event::Probed { generation, index, label, results, liveness, restart });
            }
            Msg::Healthy { key, generation, checks, healthy } => {
                self.feed(&key, services::Event::Health { generation, checks, healthy });
            }
            Msg::SecretChanged(secret, reply) => {
                answer!(self, reply, Ok(self.secret_changed(secret)));
            }
            Msg::ConfigApplied(change, reply) => {
                self.batched(|sup| sup.config_applied(*change));
                let _ = reply.send(Ok(()));
            }
            Msg::EnsureHeroDb(reply) => {
                answer!(self, reply, Ok(self.ensure_hero_db()));
            }
            Msg::CronTick { generation } => {
                if generation == self.cron_generation {
                    self.fire_due();
                    self.arm_cron();
                }
            }
            Msg::FlushExits => {
                // A write since may have flushed them already; then the timer just ends.
                if !self.has_unrecorded() {
                    self.flush_delay = None;
                } else {
                    self.flush_exits();
                }
            }
            Msg::BackoffDone { key, generation } => {
                self.feed(&key, services::Event::BackoffDone { generation });
            }
        }
    }
}
