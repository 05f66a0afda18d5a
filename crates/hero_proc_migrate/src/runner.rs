//! Which migrations run, in what order, and what is recorded.
//!
//! The rules are those of Flyway, refinery and sqlx: files run in file-name order, each
//! once; the record of an applied file (its SHA-256) is a promise that the file never
//! changes. So, before anything runs, these are errors naming the file:
//!
//! - an applied file was edited (its SHA-256 differs from the record);
//! - an applied file was deleted;
//! - a new file sorts before the newest applied one (it would run out of order on
//!   machines that are already past it, and in order on fresh ones: two histories).
//!
//! A migration that fails is recorded as failed and stops the later ones; it is not
//! "applied", so it is pending again next time (fixed or not) and its file may be edited
//! or removed. Nothing is rolled back: a migration that failed halfway ran halfway.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use hero_proc_spec::Migration;
use serde::{Deserialize, Serialize};

use crate::ops::ProcOps;
use crate::runtime::{MigrationError, RunOptions, run_migration};

/// The outcome of a migration as recorded (the store's `migrations_applied.result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliedResult {
    Ok,
    Failed,
}

impl AppliedResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AppliedResult::Ok => "ok",
            AppliedResult::Failed => "failed",
        }
    }
}

/// What the daemon recorded about one migration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub name: String,
    pub sha256: String,
    pub result: AppliedResult,
}

impl Applied {
    pub fn ok(m: &Migration) -> Applied {
        Applied { name: m.name.clone(), sha256: m.sha256.clone(), result: AppliedResult::Ok }
    }
}

/// A history problem: the files and the record disagree in a way that running cannot fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryError {
    #[error(
        "migrations/{name}: this migration was applied with SHA-256 {applied_sha256}, but the file now has {file_sha256}; applied migrations must never change: restore the file and add a new migration for the change"
    )]
    Edited { name: String, applied_sha256: String, file_sha256: String },
    #[error(
        "migrations/{name}: this migration was applied but the file is gone; applied migrations must stay in the repository: restore the file"
    )]
    Deleted { name: String },
    #[error(
        "migrations/{name}: this new migration sorts before `{newest_applied}`, which is already applied, so it would run out of order here and in order on a fresh machine; rename it to sort after `{newest_applied}` (or baseline it if its effect is already in place)"
    )]
    OutOfOrder { name: String, newest_applied: String },
}

impl HistoryError {
    /// The migration file the problem is about.
    pub fn name(&self) -> &str {
        match self {
            HistoryError::Edited { name, .. }
            | HistoryError::Deleted { name }
            | HistoryError::OutOfOrder { name, .. } => name,
        }
    }
}

/// Every history problem found, in file-name order. Nothing ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct HistoryErrors(pub Vec<HistoryError>);

impl fmt::Display for HistoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Check the files against the record and list the pending migrations in run order.
/// `validate --db` and the PR preview call this alone; [`run_pending`] calls it first.
pub fn check_history<'m>(
    migrations: &'m [Migration],
    applied: &[Applied],
) -> Result<Vec<&'m Migration>, HistoryErrors> {
    let mut files: Vec<&Migration> = migrations.iter().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let by_name: BTreeMap<&str, &Migration> = files.iter().map(|m| (m.name.as_str(), *m)).collect();
    let done: BTreeMap<&str, &Applied> =
        applied.iter().filter(|a| a.result == AppliedResult::Ok).map(|a| (a.name.as_str(), a)).collect();

    let mut errors = Vec::new();
    for (name, rec) in &done {
        match by_name.get(name) {
            None => errors.push(HistoryError::Deleted { name: name.to_string() }),
            Some(m) if m.sha256 != rec.sha256 => errors.push(HistoryError::Edited {
                name: name.to_string(),
                applied_sha256: rec.sha256.clone(),
                file_sha256: m.sha256.clone(),
            }),
            Some(_) => {}
        }
    }
    let newest = done.keys().next_back().copied();
    let pending: Vec<&Migration> = files.into_iter().filter(|m| !done.contains_key(m.name.as_str())).collect();
    if let Some(newest) = newest {
        for m in &pending {
            if m.name.as_str() < newest {
                errors.push(HistoryError::OutOfOrder { name: m.name.clone(), newest_applied: newest.to_owned() });
            }
        }
    }
    if errors.is_empty() {
        Ok(pending)
    } else {
        errors.sort_by(|a, b| a.name().cmp(b.name()));
        Err(HistoryErrors(errors))
    }
}

/// What happened to one migration in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationOutcome {
    pub name: String,
    pub sha256: String,
    pub duration_ms: u64,
    pub result: AppliedResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MigrationError>,
}

impl MigrationOutcome {
    /// The record to store.
    pub fn applied(&self) -> Applied {
        Applied { name: self.name.clone(), sha256: self.sha256.clone(), result: self.result }
    }
}

/// The migrations that ran, in order, and the ones a failure kept from running.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub results: Vec<MigrationOutcome>,
    /// Pending migrations after a failed one: not run, still pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<String>,
}

impl RunReport {
    /// True when every pending migration ran and succeeded.
    pub fn is_ok(&self) -> bool {
        self.failed().is_none()
    }
    /// The failed migration, if any (there is at most one: a failure stops the run).
    pub fn failed(&self) -> Option<&MigrationOutcome> {
        self.results.iter().find(|r| r.result == AppliedResult::Failed)
    }
}

/// Check the history, then run each pending migration in file-name order until one
/// fails. The caller records every [`MigrationOutcome`] (failed ones too, so they show
/// in history; they are retried next time). A history problem runs nothing.
pub fn run_pending(
    migrations: &[Migration],
    applied: &[Applied],
    ops: &mut dyn ProcOps,
    opts: &RunOptions,
) -> Result<RunReport, HistoryErrors> {
    let pending = check_history(migrations, applied)?;
    let mut report = RunReport::default();
    for (i, m) in pending.iter().enumerate() {
        ops.begin_migration(&m.name);
        let started = Instant::now();
        let outcome = run_migration(m, ops, opts);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (result, error) = match outcome {
            Ok(()) => {
                tracing::info!(migration = %m.name, duration_ms, "migration applied");
                (AppliedResult::Ok, None)
            }
            Err(e) => {
                tracing::warn!(migration = %m.name, duration_ms, error = %e, "migration failed");
                (AppliedResult::Failed, Some(e))
            }
        };
        report.results.push(MigrationOutcome {
            name: m.name.clone(),
            sha256: m.sha256.clone(),
            duration_ms,
            result,
            error,
        });
        if result == AppliedResult::Failed {
            report.not_run = pending[i + 1..].iter().map(|m| m.name.clone()).collect();
            break;
        }
    }
    Ok(report)
}

/// `up_to` is not one of the migration files.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no migration file `migrations/{up_to}`{}", .closest.as_ref().map(|c| format!("; did you mean `{c}`?")).unwrap_or_default())]
pub struct BaselineError {
    pub up_to: String,
    pub closest: Option<String>,
}

/// Mark every migration up to and including `up_to` as applied, without running it:
/// for a machine whose state already has their effect (set up by hand, or restored from
/// a backup), and to resolve an out-of-order file whose effect is in place. Returns the
/// records to write (upsert by name): the files not yet recorded as ok, with their
/// current SHA-256. `up_to` is a file name; the `.rhai` may be left off.
pub fn baseline(migrations: &[Migration], applied: &[Applied], up_to: &str) -> Result<Vec<Applied>, BaselineError> {
    let target = migrations.iter().find(|m| m.name == up_to || m.name.strip_suffix(".rhai") == Some(up_to));
    let Some(target) = target else {
        let closest = hero_proc_spec::diag::did_you_mean(up_to, migrations.iter().map(|m| m.name.as_str()));
        return Err(BaselineError { up_to: up_to.to_owned(), closest: closest.map(str::to_owned) });
    };
    let mut out: Vec<Applied> = migrations
        .iter()
        .filter(|m| m.name <= target.name)
        .filter(|m| !applied.iter().any(|a| a.name == m.name && a.result == AppliedResult::Ok))
        .map(Applied::ok)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
