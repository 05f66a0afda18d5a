//! What the engine tells about a service: its state tag and a snapshot of its runtime.
//!
//! These are the engine's own types, so the engine does not depend on the RPC contract;
//! the daemon converts them to the wire types at its edge (`hero_proc_daemon::views`).

/// The runtime state of a service, as a tag (the data of each state lives in
/// [`super::services::Life`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceState {
    /// Not running and not wanted (or never started).
    Inactive,
    /// Waiting for the services it `requires` to become healthy.
    Waiting,
    /// Running its pre-actions, or its main process is up but not yet healthy.
    Starting,
    /// The main process is up and its health checks passed (or it has none).
    Running,
    /// It exited and a restart is scheduled.
    Backoff,
    /// A stop is in progress.
    Stopping,
    /// Its main action is a one-shot that finished successfully.
    Exited,
    /// It failed and will not be restarted (policy, retries used up, or a start error).
    Failed,
}

impl ServiceState {
    pub const ALL: [ServiceState; 8] = [
        ServiceState::Inactive,
        ServiceState::Waiting,
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Backoff,
        ServiceState::Stopping,
        ServiceState::Exited,
        ServiceState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Inactive => "inactive",
            ServiceState::Waiting => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopping => "stopping",
            ServiceState::Exited => "exited",
            ServiceState::Failed => "failed",
        }
    }

    /// Counts as "up" for `requires`.
    pub fn is_active(self) -> bool {
        matches!(self, ServiceState::Running | ServiceState::Exited)
    }
}

/// One health check's last result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// e.g. `tcp 127.0.0.1:8080`, or a hero socket role (`service`, `ui`, `root/delivery`).
    pub check: String,
    pub healthy: bool,
    /// Why it failed, when it did.
    pub detail: Option<String>,
    /// When it was probed (ms since the epoch).
    pub probed_ms: i64,
    /// The last failure (when, why), kept after the check recovers.
    pub last_error: Option<(i64, String)>,
}

impl CheckResult {
    /// A result probed at `probed_ms`: a failure is also the last error.
    pub fn new(check: String, detail: Result<(), String>, probed_ms: i64) -> CheckResult {
        match detail {
            Ok(()) => CheckResult { check, healthy: true, detail: None, probed_ms, last_error: None },
            Err(why) => CheckResult {
                check,
                healthy: false,
                last_error: Some((probed_ms, why.clone())),
                detail: Some(why),
                probed_ms,
            },
        }
    }
}

/// A service's runtime, as `service.status` shows it.
#[derive(Clone, Debug)]
pub struct ServiceSnapshot {
    pub context: String,
    pub name: String,
    /// The wanted status from the spec: start | stop | ignore.
    pub status: hero_proc_spec::ServiceStatus,
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub job_id: Option<i64>,
    /// Restarts since the daemon started supervising it.
    pub restarts: u32,
    pub crash_loop: bool,
    /// When the next restart happens, in a backoff.
    pub backoff_until_ms: Option<i64>,
    pub since_ms: i64,
    pub last_exit: Option<String>,
    /// Why it failed, is waiting or restarting (the wire carries its sentence).
    pub reason: Option<super::services::Reason>,
    pub health: Vec<CheckResult>,
    /// Failed health probes since the daemon started supervising it.
    pub health_failures: u64,
    /// Restarts a failed liveness check caused.
    pub liveness_restarts: u64,
    pub managed: bool,
}
