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
