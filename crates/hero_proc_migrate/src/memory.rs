//! `ProcOps` over plain maps: [`InMemoryProc`] (a small working system, for tests) and
//! [`RecordingProc`] (the dry-run: what would each migration do?).
//!
//! Both share one model of the system, so a dry-run fails where the real thing would
//! (starting a service that does not exist, submitting an unknown action).

use std::collections::BTreeMap;
use std::fmt;

use hero_proc_spec::{Action, Service};
use serde::{Deserialize, Serialize};

use crate::ops::{LogLevel, ProcOps, ServiceRow};

/// Service state words used by the in-memory model.
pub const STATE_INACTIVE: &str = "inactive";
pub const STATE_RUNNING: &str = "running";
pub const STATE_STOPPED: &str = "stopped";

/// A read-only picture of a system: what a migration can see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub actions: Vec<Action>,
    pub services: Vec<Service>,
    /// Live state by `context/name`; a service missing here is `inactive`.
    pub service_states: BTreeMap<String, String>,
    /// Secret names by context (never values).
    pub secret_names: BTreeMap<String, Vec<String>>,
}

/// One `proc.log` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub migration: String,
    pub level: LogLevel,
    pub message: String,
}

type Key = (String, String);

/// The shared model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct World {
    actions: BTreeMap<Key, Action>,
    services: BTreeMap<Key, Service>,
    states: BTreeMap<Key, String>,
    secrets: BTreeMap<String, Vec<String>>,
    runs: Vec<Vec<String>>,
}

fn key(context: &str, name: &str) -> Key {
    (context.to_owned(), name.to_owned())
}

impl World {
    fn from_snapshot(s: Snapshot) -> World {
        let mut w = World::default();
        for a in s.actions {
            w.actions.insert(key(&a.context, &a.name), a);
        }
        for svc in s.services {
            let k = key(&svc.context, &svc.name);
            let state = s.service_states.get(&format!("{}/{}", k.0, k.1)).cloned();
            w.states.insert(k.clone(), state.unwrap_or_else(|| STATE_INACTIVE.to_owned()));
            w.services.insert(k, svc);
        }
        for (ctx, mut names) in s.secret_names {
            names.sort();
            names.dedup();
            w.secrets.insert(ctx, names);
        }
        w
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            actions: self.actions.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            service_states: self.states.iter().map(|((c, n), s)| (format!("{c}/{n}"), s.clone())).collect(),
            secret_names: self.secrets.clone(),
        }
    }

    /// Returns whether the action was new, changed or the same.
    fn action_set(&mut self, a: Action) -> Change {
        let change = match self.actions.get(&key(&a.context, &a.name)) {
            None => Change::New,
            Some(old) if *old == a => Change::Unchanged,
            Some(_) => Change::Changed,
        };
        self.actions.insert(key(&a.context, &a.name), a);
        change
    }

    fn service_set(&mut self, s: Service) -> Change {
        let k = key(&s.context, &s.name);
        let change = match self.services.get(&k) {
            None => Change::New,
            Some(old) if *old == s => Change::Unchanged,
            Some(_) => Change::Changed,
        };
        self.states.entry(k.clone()).or_insert_with(|| STATE_INACTIVE.to_owned());
        self.services.insert(k, s);
        change
    }

    fn set_state(&mut self, context: &str, name: &str, state: &str) -> Result<(), String> {
        match self.states.get_mut(&key(context, name)) {
            Some(s) if self.services.contains_key(&key(context, name)) => {
                *s = state.to_owned();
                Ok(())
            }
            _ => Err(format!("no service {context}/{name}; create it first with proc.service_set")),
        }
    }

    fn service_list(&self) -> Vec<ServiceRow> {
        self.services
            .keys()
            .map(|k| {
                let state = self.states.get(k).cloned().unwrap_or_else(|| STATE_INACTIVE.to_owned());
                (k.0.clone(), k.1.clone(), state)
            })
            .collect()
    }

    fn run_submit(&mut self, actions: Vec<String>) -> Result<i64, String> {
        for r in &actions {
            let hero_proc_spec::Ref { context: c, name: n } =
                hero_proc_spec::Ref::parse(r).map_err(|e| e.to_string())?;
            if !self.actions.contains_key(&key(&c, &n)) {
                return Err(format!("no action {c}/{n}; create it first with proc.action_set"));
            }
        }
        self.runs.push(actions);
        Ok(self.runs.len() as i64)
    }

    fn secret_names(&self, context: &str) -> Vec<String> {
        self.secrets.get(context).cloned().unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    New,
    Changed,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        })
    }
}

/// A working `ProcOps` over maps: actions, services with a state, secret names, runs
/// and log lines. Not a mock: it keeps state and refuses what the daemon would refuse
/// (unknown service or action).
#[derive(Clone, Debug, Default)]
pub struct InMemoryProc {
    world: World,
    logs: Vec<LogLine>,
}

impl InMemoryProc {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        InMemoryProc { world: World::from_snapshot(snapshot), logs: Vec::new() }
    }
    /// The current state, comparable across systems.
    pub fn snapshot(&self) -> Snapshot {
        self.world.snapshot()
    }
    /// Every run submitted, in order; run ids are positions plus one.
    pub fn runs(&self) -> &[Vec<String>] {
        &self.world.runs
    }
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }
    /// Add secret names (values never reach migrations, so none are kept).
    pub fn add_secret(&mut self, context: &str, name: &str) {
        let names = self.world.secrets.entry(context.to_owned()).or_default();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
            names.sort();
        }
    }
}

impl ProcOps for InMemoryProc {
    fn action_set(&mut self, action: Action) -> Result<(), String> {
        self.world.action_set(action);
        Ok(())
    }
    fn action_get(&mut self, context: &str, name: &str) -> Result<Option<Action>, String> {
        Ok(self.world.actions.get(&key(context, name)).cloned())
    }
    fn action_list(&mut self) -> Result<Vec<Action>, String> {
        Ok(self.world.actions.values().cloned().collect())
    }
    fn service_set(&mut self, service: Service) -> Result<(), String> {
        self.world.service_set(service);
        Ok(())
    }
    fn service_start(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_RUNNING)
    }
    fn service_stop(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_STOPPED)
    }
    fn service_restart(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_RUNNING)
    }
    fn service_list(&mut self) -> Result<Vec<ServiceRow>, String> {
        Ok(self.world.service_list())
    }
    fn run_submit(&mut self, actions: Vec<String>) -> Result<i64, String> {
        self.world.run_submit(actions)
    }
    fn secret_names(&mut self, context: &str) -> Result<Vec<String>, String> {
        Ok(self.world.secret_names(context))
    }
    fn log(&mut self, migration: &str, level: LogLevel, message: &str) -> Result<(), String> {
        self.logs.push(LogLine { migration: migration.to_owned(), level, message: message.to_owned() });
        Ok(())
    }
}

/// One thing a migration would do, for the PR preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EffectKind {
    ActionSet { context: String, name: String, change: Change },
    ServiceSet { context: String, name: String, change: Change },
    ServiceStart { context: String, name: String },
    ServiceStop { context: String, name: String },
    ServiceRestart { context: String, name: String },
    RunSubmit { actions: Vec<String> },
    Log { level: LogLevel, message: String },
}

impl fmt::Display for EffectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EffectKind::ActionSet { context, name, change } => write!(f, "action_set {context}/{name} ({change})"),
            EffectKind::ServiceSet { context, name, change } => write!(f, "service_set {context}/{name} ({change})"),
            EffectKind::ServiceStart { context, name } => write!(f, "service_start {context}/{name}"),
            EffectKind::ServiceStop { context, name } => write!(f, "service_stop {context}/{name}"),
            EffectKind::ServiceRestart { context, name } => write!(f, "service_restart {context}/{name}"),
            EffectKind::RunSubmit { actions } => write!(f, "run_submit [{}]", actions.join(", ")),
            EffectKind::Log { level, message } => write!(f, "log {level}: {message}"),
        }
    }
}

/// An effect and the migration that would cause it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub migration: String,
    #[serde(flatten)]
    pub kind: EffectKind,
}

/// The dry-run `ProcOps`: starts from a snapshot of the live system, applies nothing to
/// it, and records each effect. Writes land in a private copy, so a later migration in
/// the same dry-run sees what an earlier one would have created (as it will for real).
/// Errors are those of [`InMemoryProc`], so a migration that would fail, fails here.
/// `run_submit` answers ids 1, 2, ... which are not real run ids.
#[derive(Clone, Debug, Default)]
pub struct RecordingProc {
    world: World,
    current: String,
    effects: Vec<Effect>,
}

impl RecordingProc {
    pub fn new(snapshot: Snapshot) -> Self {
        RecordingProc { world: World::from_snapshot(snapshot), current: String::new(), effects: Vec::new() }
    }
    /// Every effect, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }
    /// The effects of one migration, as preview lines (`service_start core/x`, ...).
    pub fn effects_of(&self, migration: &str) -> Vec<String> {
        self.effects.iter().filter(|e| e.migration == migration).map(|e| e.kind.to_string()).collect()
    }
    fn record(&mut self, kind: EffectKind) {
        self.effects.push(Effect { migration: self.current.clone(), kind });
    }
}

impl ProcOps for RecordingProc {
    fn begin_migration(&mut self, name: &str) {
        self.current = name.to_owned();
    }
    fn action_set(&mut self, action: Action) -> Result<(), String> {
        let (context, name) = (action.context.clone(), action.name.clone());
        let change = self.world.action_set(action);
        self.record(EffectKind::ActionSet { context, name, change });
        Ok(())
    }
    fn action_get(&mut self, context: &str, name: &str) -> Result<Option<Action>, String> {
        Ok(self.world.actions.get(&key(context, name)).cloned())
    }
    fn action_list(&mut self) -> Result<Vec<Action>, String> {
        Ok(self.world.actions.values().cloned().collect())
    }
    fn service_set(&mut self, service: Service) -> Result<(), String> {
        let (context, name) = (service.context.clone(), service.name.clone());
        let change = self.world.service_set(service);
        self.record(EffectKind::ServiceSet { context, name, change });
        Ok(())
    }
    fn service_start(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_RUNNING)?;
        self.record(EffectKind::ServiceStart { context: context.to_owned(), name: name.to_owned() });
        Ok(())
    }
    fn service_stop(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_STOPPED)?;
        self.record(EffectKind::ServiceStop { context: context.to_owned(), name: name.to_owned() });
        Ok(())
    }
    fn service_restart(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.world.set_state(context, name, STATE_RUNNING)?;
        self.record(EffectKind::ServiceRestart { context: context.to_owned(), name: name.to_owned() });
        Ok(())
    }
    fn service_list(&mut self) -> Result<Vec<ServiceRow>, String> {
        Ok(self.world.service_list())
    }
    fn run_submit(&mut self, actions: Vec<String>) -> Result<i64, String> {
        let id = self.world.run_submit(actions.clone())?;
        self.record(EffectKind::RunSubmit { actions });
        Ok(id)
    }
    fn secret_names(&mut self, context: &str) -> Result<Vec<String>, String> {
        Ok(self.world.secret_names(context))
    }
    fn log(&mut self, _migration: &str, level: LogLevel, message: &str) -> Result<(), String> {
        self.record(EffectKind::Log { level, message: message.to_owned() });
        Ok(())
    }
}
