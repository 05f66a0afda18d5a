//! The GitOps half of hero_proc (SPEC 1, 3, 4): git in, plan out, apply through the
//! engine.
//!
//! - [`repo`]: open a local repository or mirror a remote one; resolve branches and
//!   revisions; never read a work tree.
//! - [`desired`]: the validated, host-merged, decrypted state of one commit.
//! - [`live`]: the store's rows, inventory marks and service states.
//! - [`plan()`]: the pure function from (desired, live, previous) to an ordered plan;
//!   dry-run and apply share it.
//! - [`render`]: the plan as text (what `reconcile --dry-run` prints).
//! - [`apply()`]: the plan's rows, inventory and history in one transaction.
//!
//! The daemon owns scheduling (poll, watch, webhook, suspend) and hands the
//! [`AppliedChange`] to its engine.

pub mod apply;
pub mod desired;
pub mod live;
pub mod plan;
pub mod prepare;
pub mod render;
pub mod repo;
pub mod trust;

pub use apply::{AppliedChange, ApplyError, SecretSealer, apply, record_failure};
pub use desired::{Desired, DesiredSecret, LoadError, SecretOpener, SopsOpener, WORKTREE, artifacts_of};
pub use live::{FailedMigration, Live, LiveSecret, RunState};
pub use plan::{
    ArtifactStep, Cause, Change, DriftItem, HeldMigration, MigrationPreview, Op, Plan, Restart, StateChange, Summary,
    plan, preview_migrations,
};
pub use repo::{CommitInfo, Repo, RepoConfig, RepoError};

/// What `reconcile status` shows (RPC `reconcile.status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncStatus {
    /// The repository the daemon follows (`None`: no `--repo`, a plain supervisor).
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub host: Option<String>,
    pub applied_revision: Option<String>,
    pub applied_at_ms: Option<i64>,
    pub attempted_revision: Option<String>,
    pub attempted_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Automatic sync is paused (`reconcile suspend`).
    pub suspended: bool,
    /// Sync holds this revision instead of the branch head (`reconcile --rev`).
    pub pinned_revision: Option<String>,
    /// The branch head seen at the last fetch.
    pub head_revision: Option<String>,
    /// How the last attempt ended (`applied`, `noop`, `degraded`, `failed`, `refused`).
    pub last_result: Option<hero_proc_store::SyncResult>,
    pub last_duration_ms: Option<u64>,
    pub next_sync_at_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub self_heal: Option<bool>,
    /// How often the followed repository is fetched and reconciled.
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// Where `interval_secs` came from: `default`, `hero.yaml@<rev>` or `flag` (`--interval`).
    #[serde(default)]
    pub interval_source: Option<String>,
    /// Live objects that differ from the applied revision.
    pub drift: Vec<DriftItem>,
    /// Objects held out of sync by hand (`reconcile hold`), with since when (ms).
    #[serde(default)]
    pub held: Vec<(String, i64)>,
    /// When a sync last changed something (a revision applied, drift reverted), and
    /// which revision; `applied_at_ms` moves with every sync, no-ops included.
    #[serde(default)]
    pub changed_at_ms: Option<i64>,
    #[serde(default)]
    pub changed_revision: Option<String>,
    /// Commit statuses posted to the forge (hero.yaml `forgejo:`); `None` when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status: Option<CommitStatusView>,
}

/// What `reconcile status` shows of the commit statuses posted to the forge.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitStatusView {
    /// `OWNER/NAME at https://HOST/api/v1`, or why statuses cannot be posted.
    pub target: Option<String>,
    /// The context statuses are posted under: `hero_proc/<host>`.
    pub context: String,
    /// The last status delivered: `success for abc123def456`.
    pub last_delivered: Option<String>,
    /// The last delivery failure, while no delivery came after it.
    pub last_error: Option<String>,
    pub delivered: u64,
    pub failed: u64,
}

/// What `reconcile.apply` returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyOutcome {
    pub plan: Plan,
    /// The revision is now pinned (`--rev`): automatic sync holds it until `resume`.
    pub pinned: bool,
    /// Migrations that ran, with their result (`ok` or `failed: ...`).
    #[serde(default)]
    pub migrations: Vec<String>,
}

/// One migration file or record, for `hero_proc migrate status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationRow {
    pub name: String,
    /// `applied`, `pending`, `failed`, `edited` (applied, file changed since) or
    /// `deleted` (applied, file gone).
    pub state: String,
    pub sha256: Option<String>,
    pub revision: Option<String>,
    pub applied_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// What `migrate.status` and `migrate.baseline` return.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrateStatus {
    /// The revision whose `migrations/` was compared (the target of the next sync).
    pub revision: Option<String>,
    pub migrations: Vec<MigrationRow>,
    /// Why the files could not be read (the record is still listed).
    pub problems: Vec<String>,
}

/// Files of `migrations` (sorted) against the store's record.
pub fn migration_rows(
    migrations: &[hero_proc_spec::Migration],
    recorded: &[hero_proc_store::AppliedMigration],
) -> Vec<MigrationRow> {
    use hero_proc_store::MigrationResult;
    let mut rows: Vec<MigrationRow> = Vec::new();
    let mut files: Vec<&hero_proc_spec::Migration> = migrations.iter().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    for m in files {
        let rec = recorded.iter().find(|r| r.name == m.name);
        let state = match rec {
            None => "pending",
            Some(r) if r.result == MigrationResult::Failed => "failed",
            Some(r) if r.sha256 != m.sha256 => "edited",
            Some(_) => "applied",
        };
        rows.push(MigrationRow {
            name: m.name.clone(),
            state: state.into(),
            sha256: Some(m.sha256.clone()),
            revision: rec.and_then(|r| r.revision.clone()),
            applied_at_ms: rec.map(|r| r.applied_at_ms),
            duration_ms: rec.map(|r| r.duration_ms),
            error: rec.and_then(|r| r.error.clone()),
        });
    }
    for r in recorded {
        if !migrations.iter().any(|m| m.name == r.name) {
            rows.push(MigrationRow {
                name: r.name.clone(),
                state: if r.result == MigrationResult::Ok { "deleted".into() } else { "failed".into() },
                sha256: Some(r.sha256.clone()),
                revision: r.revision.clone(),
                applied_at_ms: Some(r.applied_at_ms),
                duration_ms: Some(r.duration_ms),
                error: r.error.clone(),
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}
