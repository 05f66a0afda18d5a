//! The compactor (SPEC 5.5): on a schedule and on demand, delete finished history past
//! its retention, shrink the file in the same cycle, delete the log files of deleted
//! jobs, and hold the log store to its caps. Its last result is kept for
//! `system.compactor_status`.
//!
//! One timer per cycle (default hourly): the only periodic wake-up of an idle daemon.
//! Between cycles the log store's caps follow its growth: the engine's output watcher
//! holds each job file to its cap as it is written and, when the store passes its total
//! cap, wakes this task to enforce the log caps at once (not the database compaction).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hero_proc_engine::Engine;
use hero_proc_engine::output_cap::OutputCap;
use hero_proc_engine::supervisor::now_ms;
use hero_proc_rpc::wire::{CompactView, CompactorStatusView, RetentionSources};
use hero_proc_store::Retention;

/// Retention values the operator gave as `serve` flags: each one given wins over
/// hero.yaml; `None` was not given.
#[derive(Clone, Debug, Default)]
pub struct RetentionFlags {
    pub max_age_days: Option<u64>,
    pub max_rows_per_table: Option<u64>,
    pub every: Option<Duration>,
}

/// The retention in force, with where each value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    pub max_age_days: u64,
    pub max_rows_per_table: u64,
    pub every: Duration,
    pub sources: RetentionSources,
}

/// Flags over the applied revision's hero.yaml over the built-in defaults; the revision
/// that last set them, fed by the reconciler after each apply.
pub struct RetentionSettings {
    flags: RetentionFlags,
    git: Mutex<Option<(String, hero_proc_spec::Settings)>>,
    /// The compactor sleeps on this: a new `compact_every` reschedules the next cycle.
    changed: tokio::sync::Notify,
}

pub const SOURCE_DEFAULT: &str = "default";
pub const SOURCE_FLAG: &str = "flag";

impl RetentionSettings {
    pub fn new(flags: RetentionFlags) -> Arc<RetentionSettings> {
        Arc::new(RetentionSettings { flags, git: Mutex::new(None), changed: tokio::sync::Notify::new() })
    }

    /// The retention of hero.yaml at `rev` (the revision just applied).
    pub fn set_from_git(&self, rev: &str, settings: &hero_proc_spec::Settings) {
        let before = self.effective();
        *self.git.lock().expect("not poisoned") = Some((rev.to_owned(), settings.clone()));
        let after = self.effective();
        if before != after {
            tracing::info!(
                max_age_days = after.max_age_days,
                max_rows_per_table = after.max_rows_per_table,
                compact_every_secs = after.every.as_secs(),
                revision = rev,
                "retention changed"
            );
            self.changed.notify_one();
        }
    }

    pub fn effective(&self) -> RetentionConfig {
        let git = self.git.lock().expect("not poisoned").clone();
        let base = git.as_ref().map(|(_, s)| s.retention.clone()).unwrap_or_default();
        // A flag wins; else hero.yaml if it sets the key; else the built-in default.
        let source = |flag: bool, key: &str| match &git {
            _ if flag => SOURCE_FLAG.to_owned(),
            Some((rev, s)) if s.is_given(key) => format!("hero.yaml@{}", short(rev)),
            _ => SOURCE_DEFAULT.to_owned(),
        };
        let max_age_days = self.flags.max_age_days.unwrap_or(base.max_age_days);
        let age_src = source(self.flags.max_age_days.is_some(), "retention.max_age_days");
        let max_rows_per_table = self.flags.max_rows_per_table.unwrap_or(base.max_rows_per_table);
        let rows_src = source(self.flags.max_rows_per_table.is_some(), "retention.max_rows_per_table");
        let every = self.flags.every.unwrap_or(base.compact_every.0);
        let every_src = source(self.flags.every.is_some(), "retention.compact_every");
        RetentionConfig {
            max_age_days,
            max_rows_per_table,
            every,
            sources: RetentionSources { max_age_days: age_src, max_rows_per_table: rows_src, every: every_src },
        }
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

#[derive(Default)]
struct State {
    last_run_ms: Option<i64>,
    next_run_ms: Option<i64>,
    runs: u64,
    last: Option<CompactView>,
    last_error: Option<String>,
}

#[derive(Clone)]
pub struct Compactor {
    engine: Engine,
    settings: Arc<RetentionSettings>,
    state: Arc<Mutex<State>>,
    /// One compaction at a time (scheduled and on-demand never overlap).
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Compactor {
    pub fn new(engine: Engine, settings: Arc<RetentionSettings>) -> Compactor {
        Compactor { engine, settings, state: Arc::default(), running: Arc::default() }
    }

    pub async fn run_on_schedule(self) {
        let over_total = Arc::new(tokio::sync::Notify::new());
        let wake = over_total.clone();
        let _watch = match OutputCap::start(self.engine.logs.clone(), move || wake.notify_one()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        loop {
            // A new `compact_every` moves the next run to this cycle's start plus it (at
            // once when that is past), without waiting out the old period.
            let started = tokio::time::Instant::now();
            let started_ms = now_ms();
            loop {
                let every = self.settings.effective().every;
                let next = started + every;
                self.state.lock().expect("not poisoned").next_run_ms = Some(started_ms + every.as_millis() as i64);
                tokio::select! {
                    () = tokio::time::sleep_until(next) => break,
                    () = self.settings.changed.notified() => {}
                    () = over_total.notified() => {
                        if let Err(e) = self.enforce_log_caps().await {
                            tracing::warn!("log caps failed: {e}");
                        }
                    }
                }
            }
            if let Err(e) = self.compact_now().await {
                tracing::warn!("compaction failed: {e}");
            }
        }
    }

    /// The log store's caps alone (the output watcher's trigger when the store grows
    /// past its total cap).
    pub async fn enforce_log_caps(&self) -> Result<hero_proc_logstore::CapReport, String> {
        let store = self.engine.store.clone();
        let logs = self.engine.logs.clone();
        let rep = tokio::task::spawn_blocking(move || {
            let live: HashSet<i64> = store.active_jobs().map_err(|e| e.to_string())?.iter().map(|j| j.id.0).collect();
            logs.enforce_caps(&live).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        tracing::info!(
            files_deleted = rep.files_deleted,
            bytes_reclaimed = rep.bytes_reclaimed,
            total_after = rep.total_bytes_after,
            "log store over its total cap: caps enforced"
        );
        Ok(rep)
    }

    /// Compact now; returns what was done.
    pub async fn compact_now(&self) -> Result<CompactView, String> {
        let _one = self.running.lock().await;
        let store = self.engine.store.clone();
        let logs = self.engine.logs.clone();
        let config = self.settings.effective();
        let retention =
            Retention { max_age_days: Some(config.max_age_days), max_rows_per_table: Some(config.max_rows_per_table) };
        let result = tokio::task::spawn_blocking(move || -> Result<CompactView, String> {
            let report = store.compact(&retention, now_ms()).map_err(|e| e.to_string())?;
            let mut log_files = 0u64;
            let mut log_bytes = 0u64;
            for id in &report.deleted_job_ids {
                if let Ok(b) = logs.delete_job_output(id.0) {
                    log_files += 1;
                    log_bytes += b;
                }
            }
            let live: HashSet<i64> = store.active_jobs().map_err(|e| e.to_string())?.iter().map(|j| j.id.0).collect();
            let caps = logs.enforce_caps(&live).map_err(|e| e.to_string())?;
            Ok(CompactView {
                jobs_deleted: report.jobs_deleted,
                runs_deleted: report.runs_deleted,
                history_deleted: report.history_deleted,
                bytes_before: report.bytes_before,
                bytes_after: report.bytes_after,
                bytes_reclaimed: report.bytes_reclaimed,
                duration_ms: report.duration_ms,
                analyzed: report.analyzed,
                log_files_deleted: log_files + caps.files_deleted,
                log_bytes_reclaimed: log_bytes + caps.bytes_reclaimed,
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut st = self.state.lock().expect("not poisoned");
        st.last_run_ms = Some(now_ms());
        st.runs += 1;
        match &result {
            Ok(view) => {
                st.last = Some(view.clone());
                st.last_error = None;
            }
            Err(e) => st.last_error = Some(e.clone()),
        }
        result
    }

    pub fn status(&self) -> Result<CompactorStatusView, String> {
        let stats = self.engine.store.db_stats().map_err(|e| e.to_string())?;
        let config = self.settings.effective();
        let st = self.state.lock().expect("not poisoned");
        Ok(CompactorStatusView {
            last_run_ms: st.last_run_ms,
            next_run_ms: st.next_run_ms,
            every_secs: config.every.as_secs(),
            runs: st.runs,
            max_age_days: config.max_age_days,
            max_rows_per_table: config.max_rows_per_table,
            sources: config.sources,
            last: st.last.clone(),
            last_error: st.last_error.clone(),
            db_size_bytes: stats.size_bytes,
            db_file_bytes: stats.file_bytes,
            page_size: stats.page_size,
            page_count: stats.page_count,
            free_pages: stats.freelist_count,
            log_bytes: self.engine.logs.total_bytes().unwrap_or(0),
        })
    }
}
