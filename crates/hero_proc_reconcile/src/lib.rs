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
pub mod render;
pub mod repo;

pub use apply::{AppliedChange, ApplyError, SecretSealer, apply, record_failure};
pub use desired::{Desired, DesiredSecret, LoadError, SecretOpener, SopsOpener};
pub use live::{Live, LiveSecret, RunState};
pub use plan::{Change, DriftItem, Op, Plan, Restart, StateChange, Summary, plan};
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
    /// `applied`, `noop`, `failed` or `refused`.
    pub last_result: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub next_sync_at_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub self_heal: Option<bool>,
    /// Live objects that differ from the applied revision.
    pub drift: Vec<DriftItem>,
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
