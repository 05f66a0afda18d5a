//! Parameters and results of the RPC methods. Field names are the JSON names.
//!
//! Params are JSON objects (by-name). `context` defaults to `core` everywhere.

use hero_proc_spec::{Action, Service};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn core() -> String {
    hero_proc_spec::DEFAULT_CONTEXT.to_owned()
}

/// Names one object: `{ "name": "web" }` or `{ "context": "shop", "name": "web" }`.
pub use hero_proc_spec::Ref;

/// `action.set`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ActionSet {
    #[schemars(schema_with = "crate::schema::action")]
    pub action: Action,
}

/// `service.set`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ServiceSet {
    #[schemars(schema_with = "crate::schema::service")]
    pub service: Service,
}

/// An action as stored, with where it came from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ActionView {
    #[schemars(schema_with = "crate::schema::action")]
    pub action: Action,
    /// Managed from git (the reconciler owns it) or set by hand.
    pub managed: bool,
    pub revision: Option<String>,
    pub updated_at_ms: i64,
}

/// The runtime state of a service: one explicit state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Not running and not wanted (or never started).
    Inactive,
    /// Waiting for the services it `requires` to become healthy.
    Waiting,
    /// Running its pre-actions, or its main process is up but not yet healthy.
    Starting,
    /// The main process is up and its health checks passed (or it has none).
    Running,
    /// It exited and a restart is scheduled (`crash_loop` says if it keeps failing fast).
    Backoff,
    /// A stop is in progress.
    Stopping,
    /// Its main action is a one-shot that finished successfully.
    Exited,
    /// It failed and will not be restarted (policy, retries used up, or a start error).
    Failed,
}

impl ServiceState {
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckView {
    /// e.g. `tcp 127.0.0.1:8080`, or a hero socket role (`service`, `ui`, `root/delivery`).
    pub check: String,
    pub healthy: bool,
    /// Why it fails now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it was last probed (ms since the epoch; 0 from an older daemon).
    #[serde(default)]
    pub probed_ms: i64,
    /// The last failure, kept after the check recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ServiceView {
    pub context: String,
    pub name: String,
    /// The wanted status from the spec: start | stop | ignore.
    #[schemars(schema_with = "crate::schema::service_status")]
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
    /// Why it failed or is waiting.
    pub reason: Option<String>,
    pub health: Vec<CheckView>,
    /// Failed health probes since the daemon started supervising it.
    pub health_failures: u64,
    /// Restarts a failed liveness check caused.
    #[serde(default)]
    pub liveness_restarts: u64,
    pub managed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "pending",
            JobPhase::Running => "running",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<JobPhase> {
        Some(match s {
            "pending" => JobPhase::Pending,
            "running" => JobPhase::Running,
            "succeeded" => JobPhase::Succeeded,
            "failed" => JobPhase::Failed,
            "cancelled" => JobPhase::Cancelled,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct JobView {
    pub id: i64,
    pub run_id: Option<i64>,
    /// `context/name` of the action.
    pub action: String,
    /// `context/name` of the service it runs for, if any.
    pub service: Option<String>,
    pub phase: JobPhase,
    pub attempt: u32,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    pub id: i64,
    pub label: String,
    pub phase: JobPhase,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub jobs: Vec<JobView>,
    /// The run has more jobs than `jobs` holds (`run.list` carries at most
    /// [`RUN_LIST_JOBS`] per run): page them with `job.list` and its `run_id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jobs_more: bool,
}

// ---- bounds: no answer comes near the RPC response limit (10 MiB) --------------------

/// Bytes of output in one `job.logs` answer (default and maximum). JSON escaping at most
/// sextuples a byte, so a page stays far below the response limit.
pub const LOG_PAGE_MAX_BYTES: u64 = 1 << 20;
/// Lines in one `job.logs` answer (default and maximum for a forward page and a tail).
pub const LOG_PAGE_MAX_LINES: usize = 20_000;
/// A line longer than this is cut in a tail (`[... N bytes cut ...]`); forward pages
/// split it instead (`ends_mid_line`), so paging still returns every byte.
pub const LOG_LINE_MAX_BYTES: usize = 64 * 1024;
/// `job.list` rows per answer (maximum; default 100).
pub const JOB_LIST_MAX: u32 = 1000;
/// `run.list` runs per answer (maximum; default 50).
pub const RUN_LIST_MAX: u32 = 100;
/// Jobs carried per run by `run.list`.
pub const RUN_LIST_JOBS: u32 = 100;
/// `log.query` events per answer (maximum; default 100).
pub const LOG_QUERY_MAX: usize = 1000;
/// `reconcile.history` entries per answer (maximum; default 50).
pub const HISTORY_MAX: u32 = 1000;

/// `run.list`: newest first; `before_id` (the smallest id of the previous page) pages on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub before_id: Option<i64>,
}

/// `run.submit`: one job per action; `depends_on` between them orders the jobs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunSubmit {
    /// `name` or `context/name` of each action.
    pub actions: Vec<String>,
    #[serde(default)]
    pub label: Option<String>,
}

/// `job.list`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct JobQuery {
    #[serde(default)]
    pub phase: Option<JobPhase>,
    /// `context/name` of a service.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub run_id: Option<i64>,
    /// At most [`JOB_LIST_MAX`]; default 100.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only jobs with a smaller id: the smallest id of the previous page, to page on.
    #[serde(default)]
    pub before_id: Option<i64>,
}

/// `job.get`, `run.cancel`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct IdRef {
    pub id: i64,
}

/// `run.get`: `jobs: false` leaves the job list out (cheap polling of a big run).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunGet {
    pub id: i64,
    #[serde(default = "yes")]
    pub jobs: bool,
}

fn yes() -> bool {
    true
}

/// `job.logs`: one page of a job's output.
///
/// - `tail: N`: the last N lines (at most [`LOG_PAGE_MAX_LINES`]), read backwards from
///   the end, at most `max_bytes` back; lines over [`LOG_LINE_MAX_BYTES`] are cut.
/// - otherwise a forward page from `offset` (absent: the start, rotated generations
///   first) of at most `max_bytes` and [`LOG_PAGE_MAX_LINES`] lines; pass the answer's
///   `next_offset` as `offset` while `has_more` to read the whole output.
///
/// `max_bytes` defaults to, and may not exceed, [`LOG_PAGE_MAX_BYTES`]. A range the
/// write-time cap dropped reads as one line `[... N bytes dropped ...]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct JobLogs {
    pub id: i64,
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct LogLines {
    pub lines: Vec<String>,
    /// Where the next forward page starts (an offset in the live file).
    #[serde(default)]
    pub next_offset: u64,
    /// More output after this page (forward) or before it (tail).
    #[serde(default)]
    pub has_more: bool,
    /// The page stopped inside a line; the next page's first line continues it.
    #[serde(default)]
    pub ends_mid_line: bool,
    /// `offset` was past the end (the file was rotated or truncated): read from its start.
    #[serde(default)]
    pub reset: bool,
}

/// `log.query`: the daemon's structured events.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct LogQuery {
    /// Dotted prefix: `hero_proc.migration` matches `hero_proc.migration.x`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub min_level: Option<String>,
    #[serde(default)]
    pub since_ms: Option<i64>,
    #[serde(default)]
    pub contains: Option<String>,
    /// At most [`LOG_QUERY_MAX`]; default 100.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only events before this time (exclusive): the oldest `ts_ms` of the previous page,
    /// to page on (events sharing that millisecond with the page's last one may repeat
    /// or, past `limit` of them, be skipped).
    #[serde(default)]
    pub until_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct LogEventView {
    pub ts_ms: i64,
    pub source: String,
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
}

/// `system.info`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    pub version: String,
    pub pid: u32,
    pub started_at_ms: i64,
    pub root: String,
    pub socket: String,
    pub db_path: String,
    pub db_size_bytes: u64,
    pub db_free_pages: u64,
    pub log_dir: String,
    pub log_bytes: u64,
    pub services: usize,
    pub services_running: usize,
    pub actions: usize,
    pub jobs_running: usize,
    /// How service process trees are contained: `cgroup v2 at PATH` or `subreaper`.
    #[serde(default)]
    pub containment: String,
    /// Why the subreaper fallback is active, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment_fallback: Option<String>,
}

/// What a mutating call did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    /// False when nothing had to change (e.g. starting a running service).
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The change will not stick: git manages the object and self_heal reverts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `reconcile.hold` and `reconcile.release`: one object, `KIND NAME`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldParams {
    /// `action`, `service` or `secret`.
    pub kind: String,
    /// `name` (in context core) or `context/name`.
    pub name: String,
}

/// An artifact version in the daemon's cache (`artifact.list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactView {
    pub name: String,
    pub version: String,
    /// `sha256:HEX`.
    pub digest: String,
    pub size: u64,
    /// Actions (`context/name`) of the last applied revision that used it.
    pub used_by: Vec<String>,
    pub installed_at_ms: i64,
    pub last_used_ms: i64,
    /// Whether the checked file is in the store (a rollback to it needs no registry).
    pub cached: bool,
}

/// `artifact.prune`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactPrune {
    /// Versions kept per name (1 to 1000); default hero.yaml `registry.keep`, else 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

/// What `artifact.prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactPruned {
    /// `NAME@VERSION` removed (record and link).
    pub versions: Vec<String>,
    /// Files removed from the store, and their bytes.
    pub files: usize,
    pub bytes: u64,
}

/// What one compaction did (`system.compact`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CompactView {
    pub jobs_deleted: u64,
    pub runs_deleted: u64,
    pub history_deleted: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bytes_reclaimed: u64,
    pub duration_ms: u64,
    pub analyzed: bool,
    pub log_files_deleted: u64,
    pub log_bytes_reclaimed: u64,
}

/// Where each retention value came from: `default`, `hero.yaml@<rev>` (the applied
/// revision) or `flag` (a `serve` flag, which wins over git).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetentionSources {
    pub max_age_days: String,
    pub max_rows_per_table: String,
    pub every: String,
}

/// `system.compactor_status`: last and next run, what it deleted, DB size and free pages.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CompactorStatusView {
    pub last_run_ms: Option<i64>,
    pub next_run_ms: Option<i64>,
    pub every_secs: u64,
    pub runs: u64,
    pub max_age_days: u64,
    pub max_rows_per_table: u64,
    /// Where each value came from.
    #[serde(default)]
    pub sources: RetentionSources,
    pub last: Option<CompactView>,
    pub last_error: Option<String>,
    /// `page_count * page_size`.
    pub db_size_bytes: u64,
    /// On disk, with the WAL.
    pub db_file_bytes: u64,
    pub page_size: u64,
    pub page_count: u64,
    pub free_pages: u64,
    pub log_bytes: u64,
}

/// A secret value on the wire: it travels only into the daemon (over the owner-only
/// socket) and never prints itself.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(s: impl Into<String>) -> Self {
        SecretText(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(sensitive)")
    }
}

/// `secret.set`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SecretSet {
    #[serde(default = "core")]
    pub context: String,
    pub name: String,
    pub value: SecretText,
}

/// `secret.list`: metadata only, never a value.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SecretMetaView {
    pub context: String,
    pub name: String,
    /// `secrets/<context>.sops.yaml` or `rpc`.
    pub source: String,
    /// The first 12 hex digits of the keyed fingerprint: changes when the value changes.
    pub fingerprint: String,
    pub managed: bool,
    pub revision: Option<String>,
    pub updated_at_ms: i64,
}

/// Methods that take no parameters: `{}` on the wire (the server ignores what is sent).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct NoParams {}

/// `reconcile.plan` and `reconcile.apply`. All absent: the daemon's repository at its
/// branch head (or pinned revision).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReconcileParams {
    /// A path or URL (default: the daemon's `--repo`).
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// A commit, tag or branch; on apply it pins the revision until `reconcile.resume`.
    #[serde(default)]
    pub rev: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// `reconcile.plan` only: plan the local repository's work tree as it is,
    /// uncommitted edits included (an apply refuses it: only commits are applied).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// With `rev`, on a daemon that requires signed commits (`serve --allowed-signers`):
    /// apply this revision even though it is not signed by an allowed signer. Recorded
    /// in history. Only an operator on the host can send it (the RPC socket is root's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

/// `reconcile.history`: at most [`HISTORY_MAX`]; default 50.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `migrate.baseline`: record every migration up to `name` as applied.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct MigrateBaseline {
    pub name: String,
}

/// `service.domain_health`: one domain socket `<name>_server/<domain_context>/<domain>.sock`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct DomainHealth {
    #[serde(default = "core")]
    pub context: String,
    pub name: String,
    pub domain_context: String,
    pub domain: String,
}

/// A result whose Rust type lives beside the code that makes it (the reconciler's plan,
/// status and history, which this crate does not depend on): its JSON text as the daemon
/// wrote it, decoded by the caller with [`Foreign::decode`]. The method table carries
/// its schema.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Foreign(Box<serde_json::value::RawValue>);

impl Foreign {
    pub fn encode<T: Serialize>(value: &T) -> Result<Foreign, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Foreign)
    }
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}
