//! What a migration may do to the system: the `proc` API as a trait.
//!
//! A trait, so this crate does not depend on the daemon: the daemon implements it over
//! its engine (bridging to async), tests use [`crate::InMemoryProc`], and the PR preview
//! uses [`crate::RecordingProc`]. Methods are synchronous because Rhai is.

use std::fmt;

use hero_proc_spec::{Action, Service};
use serde::{Deserialize, Serialize};

/// The severity of a `proc.log` line. Names match the daemon's log store levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub const NAMES: [&'static str; 4] = ["debug", "info", "warn", "error"];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Accepts the four names above, any case (`warning` too, since operators type it).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `proc.service_list()`: `(context, name, state)`. The state is the
/// daemon's own word for it (`running`, `stopped`, `failed`, ...), passed through.
pub type ServiceRow = (String, String, String);

/// The operations a migration can perform. Every error is a message for the operator;
/// the runtime turns it into a Rhai runtime error at the script position of the call,
/// so the migration fails with `migrations/<name>:<line>:<col>: error: <message>`
/// (scripts may also `try { } catch { }` it).
///
/// References are already split and checked when they arrive here: `context` and `name`
/// are valid object names, and a bare `name` in a script means context `core`.
pub trait ProcOps: Send {
    /// Called before each migration runs, so an implementation can attribute what
    /// follows (the recording dry-run groups effects by it). Default: nothing.
    fn begin_migration(&mut self, _name: &str) {}

    /// Create or replace an action. The action has passed the same decoder as
    /// `actions/*.yaml`.
    fn action_set(&mut self, action: Action) -> Result<(), String>;
    fn action_get(&mut self, context: &str, name: &str) -> Result<Option<Action>, String>;
    fn action_list(&mut self) -> Result<Vec<Action>, String>;

    /// Create or replace a service (decoded like `actions/*.yaml` `services:`).
    fn service_set(&mut self, service: Service) -> Result<(), String>;
    fn service_start(&mut self, context: &str, name: &str) -> Result<(), String>;
    fn service_stop(&mut self, context: &str, name: &str) -> Result<(), String>;
    /// Restart a service (start it when it is not running). Default: stop, then start;
    /// the daemon restarts through its engine (one stop and one start, coalesced).
    fn service_restart(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.service_stop(context, name)?;
        self.service_start(context, name)
    }
    fn service_list(&mut self) -> Result<Vec<ServiceRow>, String>;

    /// Submit one run of these actions, each `context/name`; returns the run id.
    fn run_submit(&mut self, actions: Vec<String>) -> Result<i64, String>;

    /// The names of the secrets of a context. Never values: a migration has no reason
    /// to see one, and anything it sees could end up in a log line.
    fn secret_names(&mut self, context: &str) -> Result<Vec<String>, String>;

    /// A log line from migration `migration` (the file name). The daemon writes it with
    /// source [`log_source`]`(migration)`; the name is passed here, rather than
    /// prefixed by this crate, so the adapter decides how sources are spelled.
    fn log(&mut self, migration: &str, level: LogLevel, message: &str) -> Result<(), String>;
}

/// The log-store source for a migration's log lines: `hero_proc.migration.<name>` with
/// the `.rhai` extension dropped (a dot there would read as one more level).
pub fn log_source(migration: &str) -> String {
    format!("hero_proc.migration.{}", migration.strip_suffix(".rhai").unwrap_or(migration))
}
