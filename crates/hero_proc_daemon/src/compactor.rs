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
use hero_proc_rpc::wire::{CompactView, CompactorStatusView};
use hero_proc_store::Retention;

/// Retention settings (hero.yaml `retention:` or `serve` flags).
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    pub max_age_days: u64,
    pub max_rows_per_table: u64,
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { max_age_days: 30, max_rows_per_table: 100_000, every: Duration::from_secs(3600) }
    }
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
    config: RetentionConfig,
    state: Arc<Mutex<State>>,
    /// One compaction at a time (scheduled and on-demand never overlap).
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Compactor {
    pub fn new(engine: Engine, config: RetentionConfig) -> Compactor {
        Compactor { engine, config, state: Arc::default(), running: Arc::default() }
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
            let next = tokio::time::Instant::now() + self.config.every;
            self.state.lock().expect("not poisoned").next_run_ms =
                Some(now_ms() + self.config.every.as_millis() as i64);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => break,
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
        let retention = Retention {
            max_age_days: Some(self.config.max_age_days),
            max_rows_per_table: Some(self.config.max_rows_per_table),
        };
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
        let st = self.state.lock().expect("not poisoned");
        Ok(CompactorStatusView {
            last_run_ms: st.last_run_ms,
            next_run_ms: st.next_run_ms,
            every_secs: self.config.every.as_secs(),
            runs: st.runs,
            max_age_days: self.config.max_age_days,
            max_rows_per_table: self.config.max_rows_per_table,
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
