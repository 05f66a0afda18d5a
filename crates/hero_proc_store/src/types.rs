//! The values the store takes and returns.

use std::fmt;

use hero_proc_spec::Action;
use serde::{Deserialize, Serialize};

/// Where a config row came from: the reconciler's inventory. Only `managed` rows are ever
/// pruned by the reconciler; rows set by hand (RPC) are left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Set from git by the reconciler.
    pub managed: bool,
    /// The git commit that last set the row.
    pub revision: Option<String>,
}

impl Origin {
    /// A row set imperatively (RPC, CLI): not managed, no revision.
    pub fn manual() -> Origin {
        Origin::default()
    }
    /// A row set by the reconciler from `revision`.
    pub fn git(revision: impl Into<String>) -> Origin {
        Origin { managed: true, revision: Some(revision.into()) }
    }
}

/// A stored value with its inventory metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored<T> {
    pub value: T,
    pub managed: bool,
    pub revision: Option<String>,
    pub updated_at_ms: i64,
}

/// What changed in one table since a version, read in one snapshot (see
/// [`crate::Store::actions_changed_since`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed<T> {
    /// How many rows the table holds.
    pub rows: usize,
    /// The rows inserted or updated since, with their versions.
    pub changed: Vec<(i64, Stored<T>)>,
}

/// `(context, name)`: the address of an action or service (the spec crate's one identity type).
pub use hero_proc_spec::Ref;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A job id. Never reused, even after compaction (AUTOINCREMENT), because log files
    /// are named by it.
    JobId
);
id_type!(
    /// A run id. Never reused.
    RunId
);

/// The life cycle of a job or run: `pending -> running -> succeeded | failed | cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Pending, Phase::Running, Phase::Succeeded, Phase::Failed, Phase::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Finished: the row is history and a compaction candidate.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run: a group of jobs ordered by `depends_on`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub label: String,
    pub phase: Phase,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A run with its newest jobs, from [`crate::Store::list_runs_with_jobs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunWithJobs {
    pub run: Run,
    /// At most the `max_jobs` asked for, the newest ones, ascending by id.
    pub jobs: Vec<Job>,
    /// The run has older jobs than these.
    pub jobs_more: bool,
}

/// What [`crate::Store::create_job`] needs. The job starts `pending`.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    pub run_id: Option<RunId>,
    /// Snapshot at creation: later edits of the action do not rewrite history.
    pub action: &'a Action,
    /// The service this job runs for, if any.
    pub service: Option<Ref>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub created_at_ms: i64,
}

/// How a job ended; see [`crate::Store::finish_job`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobExit {
    /// Must be terminal.
    pub phase: Phase,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// A short reason, e.g. `spawn failed: No such file or directory (os error 2)`. Output
    /// belongs in the log store, never here.
    pub error: Option<String>,
    pub finished_at_ms: i64,
}

/// A job row. Output is not here: it lives in the file-based log store, keyed by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub run_id: Option<RunId>,
    pub action: Ref,
    pub service: Option<Ref>,
    pub phase: Phase,
    pub attempt: u32,
    pub pid: Option<u32>,
    /// Field 22 of `/proc/<pid>/stat` when the process started: a re-attach compares it to
    /// tell the job's process from an unrelated one that got the same PID.
    pub pid_start_ticks: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// The action as it was when the job was created (canonical JSON).
    pub spec_json: String,
}

impl Job {
    /// Decodes [`Job::spec_json`]. Kept lazy so old history with a spec the current model
    /// no longer reads still lists.
    pub fn spec(&self) -> Result<Action, serde_json::Error> {
        serde_json::from_str(&self.spec_json)
    }
}

/// Filters for [`crate::Store::list_jobs`]; all set fields must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFilter {
    pub phase: Option<Phase>,
    pub service: Option<Ref>,
    pub run_id: Option<RunId>,
    /// At most this many rows (newest first).
    pub limit: u32,
    /// Page: only jobs with a smaller id.
    pub before_id: Option<JobId>,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter { phase: None, service: None, run_id: None, limit: 100, before_id: None }
    }
}

/// Number of jobs in each phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl PhaseCounts {
    pub fn get(&self, p: Phase) -> u64 {
        match p {
            Phase::Pending => self.pending,
            Phase::Running => self.running,
            Phase::Succeeded => self.succeeded,
            Phase::Failed => self.failed,
            Phase::Cancelled => self.cancelled,
        }
    }
    pub(crate) fn slot(&mut self, p: Phase) -> &mut u64 {
        match p {
            Phase::Pending => &mut self.pending,
            Phase::Running => &mut self.running,
            Phase::Succeeded => &mut self.succeeded,
            Phase::Failed => &mut self.failed,
            Phase::Cancelled => &mut self.cancelled,
        }
    }
    pub fn total(&self) -> u64 {
        Phase::ALL.into_iter().map(|p| self.get(p)).sum()
    }
}

/// A secret as the store keeps it: already encrypted by the caller. The store never sees
/// plaintext, and `Debug` does not print the ciphertext either.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub context: String,
    pub name: String,
    pub ciphertext: Vec<u8>,
    /// A keyed fingerprint computed by the caller (tells "changed" without decrypting).
    pub fingerprint: String,
    /// Where it came from: `secrets/core.sops.yaml`, `rpc`, ...
    pub source: String,
}

impl fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRecord")
            .field("context", &self.context)
            .field("name", &self.name)
            .field("ciphertext", &format_args!("<{} bytes>", self.ciphertext.len()))
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish()
    }
}

/// What [`crate::Store::list_secrets`] returns: everything but the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub context: String,
    pub name: String,
    pub fingerprint: String,
    pub source: String,
}

/// The outcome of one reconcile attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncResult {
    Applied,
    Failed,
    /// The plan broke a rule (e.g. stops a required service) and nothing was applied.
    Refused,
    /// Nothing to do.
    Noop,
    /// Applied, but a migration of the revision failed: retried on the next sync.
    Degraded,
}

impl SyncResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncResult::Applied => "applied",
            SyncResult::Failed => "failed",
            SyncResult::Refused => "refused",
            SyncResult::Noop => "noop",
            SyncResult::Degraded => "degraded",
        }
    }
    pub const ALL: [SyncResult; 5] =
        [SyncResult::Applied, SyncResult::Noop, SyncResult::Degraded, SyncResult::Failed, SyncResult::Refused];
    pub fn parse(s: &str) -> Option<SyncResult> {
        SyncResult::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One line of `hero_proc history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub revision: String,
    pub author: Option<String>,
    pub committed_at_ms: Option<i64>,
    pub applied_at_ms: i64,
    /// The plan's summary (counts, changed keys): any JSON the reconciler chooses.
    pub summary: serde_json::Value,
    pub result: SyncResult,
    pub error: Option<String>,
}

/// A recorded [`SyncRecord`] with its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub id: i64,
    pub record: SyncRecord,
}

/// An artifact version in the cache, as the applied revisions used it (SPEC 3.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub version: String,
    /// `sha256:HEX`.
    pub digest: String,
    pub size: u64,
    /// The actions (`context/name`) of the last applied revision that used it.
    pub used_by: Vec<String>,
    pub installed_at_ms: i64,
    pub last_used_ms: i64,
}

/// The reconciler's state (`hero_proc reconcile status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The revision whose config is live.
    pub applied_revision: Option<String>,
    pub applied_at_ms: Option<i64>,
    /// The last revision tried (equal to `applied_revision` unless that try failed).
    pub attempted_revision: Option<String>,
    pub attempted_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Automatic sync paused (`reconcile suspend`).
    pub suspended: bool,
    /// Sync holds this revision instead of the branch head (`reconcile --rev`).
    pub pinned_revision: Option<String>,
}

/// Whether a config-repository migration (`migrations/*.rhai`) succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationResult {
    Ok,
    Failed,
}

impl MigrationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationResult::Ok => "ok",
            MigrationResult::Failed => "failed",
        }
    }
}

/// One applied (or failed) `migrations/*.rhai` script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub name: String,
    /// Hex SHA-256 of the file: an applied migration must never change.
    pub sha256: String,
    pub revision: Option<String>,
    pub applied_at_ms: i64,
    pub duration_ms: i64,
    pub result: MigrationResult,
    pub error: Option<String>,
}

/// Size of the database (`system info`, `system.compactor_status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStats {
    pub page_size: u64,
    pub page_count: u64,
    /// Pages inside the file that hold nothing.
    pub freelist_count: u64,
    /// `page_count * page_size`: the logical size.
    pub size_bytes: u64,
    /// Bytes on disk: the database file plus its WAL.
    pub file_bytes: u64,
    pub wal_bytes: u64,
    /// `none`, `full` or `incremental`; hero_proc creates `incremental`.
    pub auto_vacuum: String,
    pub schema_version: u32,
}

/// History retention (SPEC 5.5). `None` switches a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Finished jobs, runs and sync history older than this are deleted.
    pub max_age_days: Option<u64>,
    /// At most about this many rows are kept in each of `jobs`, `runs` and `sync_history`
    /// (the newest; rows that are still active are kept on top).
    pub max_rows_per_table: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::from(&hero_proc_spec::Retention::default())
    }
}

impl From<&hero_proc_spec::Retention> for Retention {
    /// `hero.yaml` always sets both limits: its schema refuses `0`, and an unset key keeps
    /// the built-in one. Only the store's own API can say "no limit" (`None`).
    fn from(r: &hero_proc_spec::Retention) -> Self {
        Retention { max_age_days: Some(r.max_age_days), max_rows_per_table: Some(r.max_rows_per_table) }
    }
}

/// What one [`crate::Store::compact`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReport {
    pub jobs_deleted: u64,
    pub runs_deleted: u64,
    pub history_deleted: u64,
    /// The caller deletes these jobs' log files.
    pub deleted_job_ids: Vec<JobId>,
    /// Database file plus WAL on disk, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bytes_reclaimed: u64,
    pub freelist_before: u64,
    pub freelist_after: u64,
    pub duration_ms: u64,
    /// Where `duration_ms` went: deleting rows, `ANALYZE`, `incremental_vacuum`, checkpoint.
    pub delete_ms: u64,
    pub analyze_ms: u64,
    pub vacuum_ms: u64,
    pub checkpoint_ms: u64,
    /// `ANALYZE` ran (after large compactions).
    pub analyzed: bool,
    /// Write transactions used for deletion; the lock is released between them.
    pub batches: u32,
    /// The longest time one batch held the write lock.
    pub longest_batch_ms: u64,
    /// The final `wal_checkpoint(TRUNCATE)` completed (false when another process was
    /// reading; the WAL then shrinks at a later checkpoint).
    pub checkpoint_complete: bool,
}

impl CompactReport {
    pub fn rows_deleted(&self) -> u64 {
        self.jobs_deleted + self.runs_deleted + self.history_deleted
    }
}

/// What [`crate::Store::open`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenInfo {
    /// The database was created by this open.
    pub created: bool,
    /// Schema version before and after the internal migrations.
    pub schema_from: u32,
    pub schema_to: u32,
}

impl OpenInfo {
    /// Internal schema migrations applied by this open.
    pub fn migrations_applied(&self) -> u32 {
        self.schema_to - self.schema_from
    }
}
