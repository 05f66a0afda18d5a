//! Forward-only Rhai migrations for hero_proc (SPEC 3.3).
//!
//! - [`ProcOps`]: what a migration may do (the `proc` API), as a trait the daemon
//!   implements, so this crate does not depend on the daemon.
//! - [`run_migration`]: one script in the sandbox `hero_proc validate` compiles with,
//!   plus a wall-clock limit; errors are [`MigrationError`]s with file, line and column.
//! - [`check_history`] / [`run_pending`]: Flyway-style ordering and checksums.
//! - [`RecordingProc`]: the dry-run that lists what each pending migration would do.
//! - [`baseline`]: mark migrations applied without running them.
//! - [`InMemoryProc`]: a working `ProcOps` over maps, for tests.
//!
//! The operator's guide is `docs/MIGRATIONS.md` at the root of the repository.

mod convert;
mod memory;
mod ops;
mod runner;
mod runtime;

pub use memory::{
    Change, Effect, EffectKind, InMemoryProc, LogLine, RecordingProc, STATE_INACTIVE, STATE_RUNNING, STATE_STOPPED,
    Snapshot,
};
pub use ops::{LogLevel, ProcOps, ServiceRow, log_source};
pub use runner::{
    Applied, AppliedResult, BaselineError, HistoryError, HistoryErrors, MigrationOutcome, RunReport, baseline,
    check_history, run_pending,
};
pub use runtime::{DEFAULT_WALL_LIMIT, MigrationError, PROGRESS_CHECK_EVERY, RunOptions, run_migration};
