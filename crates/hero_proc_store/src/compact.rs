//! Retention and compaction of job, run and sync history (issue #131).
//!
//! Readers never wait for it: they have their own connections (WAL), and the writer is
//! held only for one small step at a time (a batch of deletions, a few hundred pages of
//! `incremental_vacuum`, a checkpoint that gives up quickly when a reader is busy).

use std::collections::HashSet;
use std::time::Instant;

use rusqlite::{OptionalExtension, params};

use crate::db::{Db, R};
use crate::store::Store;
use crate::types::{CompactReport, JobId, Phase, Retention};

/// Rows deleted per write transaction: keeps each hold of the write lock short.
pub(crate) const BATCH_ROWS: usize = 2_000;
/// Pages `incremental_vacuum` frees per step (2 MiB at the default page size); the writer
/// is released in between, so a writer waits for one step at most.
const VACUUM_STEP_PAGES: u64 = 512;
/// How long the final `wal_checkpoint(TRUNCATE)` waits for readers to leave the WAL
/// (holding the write lock meanwhile); a busy checkpoint is left to a later one.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// `ANALYZE` after deleting more rows than this in one compaction.
pub const ANALYZE_AFTER_ROWS: u64 = 10_000;
const DAY_MS: i64 = 86_400_000;

// Every query the compactor runs, so a test can check each is served by an index
// (EXPLAIN QUERY PLAN): compaction cost follows the rows deleted, not total history.
pub(crate) const Q_LOOSE_JOBS_OLDER: &str =
    "SELECT id FROM jobs WHERE run_id IS NULL AND finished_at_ms < ?1 ORDER BY finished_at_ms LIMIT ?2";
pub(crate) const Q_RUNS_OLDER: &str = "SELECT id, finished_at_ms FROM runs
     WHERE finished_at_ms < ?1 AND (finished_at_ms, id) > (?2, ?3) ORDER BY finished_at_ms, id LIMIT ?4";
pub(crate) const Q_RUNS_AFTER: &str = "SELECT id FROM runs WHERE id > ?1 ORDER BY id LIMIT ?2";
pub(crate) const Q_JOBS_AFTER: &str = "SELECT id, run_id, phase FROM jobs WHERE id > ?1 ORDER BY id LIMIT ?2";
pub(crate) const Q_RUN_PHASE: &str = "SELECT phase FROM runs WHERE id = ?1";
pub(crate) const Q_RUN_ACTIVE_JOB: &str =
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE run_id = ?1 AND phase IN ('pending', 'running'))";
pub(crate) const Q_RUN_JOBS: &str = "SELECT id FROM jobs WHERE run_id = ?1";
pub(crate) const D_RUN_JOBS: &str = "DELETE FROM jobs WHERE run_id = ?1";
pub(crate) const D_RUN: &str = "DELETE FROM runs WHERE id = ?1";
pub(crate) const D_JOB: &str = "DELETE FROM jobs WHERE id = ?1";
pub(crate) const Q_HISTORY_KEEP: &str = "SELECT max(id) FROM sync_history WHERE result = 'applied'";
pub(crate) const Q_HISTORY_OLDER: &str =
    "SELECT id FROM sync_history WHERE applied_at_ms < ?1 AND id IS NOT ?2 ORDER BY applied_at_ms LIMIT ?3";
pub(crate) const Q_HISTORY_AFTER: &str = "SELECT id FROM sync_history WHERE id > ?1 ORDER BY id LIMIT ?2";
pub(crate) const D_HISTORY: &str = "DELETE FROM sync_history WHERE id = ?1";
pub(crate) const Q_COUNT: &str = "SELECT n FROM row_counts WHERE tbl = ?1";
pub(crate) const U_COUNT: &str = "UPDATE row_counts SET n = n - ?2 WHERE tbl = ?1";

/// A step of a compaction, reported to the observer of [`Store::compact_observed`] while
/// the step holds the writer (the write lock), before it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactStep {
    /// One transaction of deletions.
    Batch,
    /// One step of `incremental_vacuum`.
    Vacuum,
    /// The `ANALYZE` after a large compaction.
    Analyze,
    /// The final `wal_checkpoint(TRUNCATE)`.
    Checkpoint,
}

/// Progress of one compaction.
struct Work<'o> {
    observe: &'o mut dyn FnMut(CompactStep),
    report: CompactReport,
    /// Runs seen and found not deletable (still active or with active jobs).
    kept_runs: HashSet<i64>,
    /// Runs deleted (with their jobs) by this compaction.
    deleted_runs: HashSet<i64>,
}

impl Db<'_> {
    fn ids<P: rusqlite::Params>(&self, sql: &str, p: P) -> R<Vec<i64>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_map(p, |r| r.get(0))?.collect())
            .map_err(|e| self.fail(e))
    }

    fn exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> R<usize> {
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute(p)).map_err(|e| self.fail(e))
    }

    fn row_count(&self, table: &str) -> R<i64> {
        self.conn.prepare_cached(Q_COUNT).and_then(|mut s| s.query_row([table], |r| r.get(0))).map_err(|e| self.fail(e))
    }

    /// Deletes a finished run together with ALL its jobs, or nothing. `None` when the run
    /// is not finished or still has a pending/running job.
    fn try_delete_run(&self, run: i64) -> R<Option<Vec<i64>>> {
        let phase: Option<String> = self
            .conn
            .prepare_cached(Q_RUN_PHASE)
            .and_then(|mut s| s.query_row([run], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        let Some(phase) = phase else { return Ok(None) };
        if !Phase::parse(&phase).is_some_and(Phase::is_terminal) {
            return Ok(None);
        }
        let active: bool = self
            .conn
            .prepare_cached(Q_RUN_ACTIVE_JOB)
            .and_then(|mut s| s.query_row([run], |r| r.get(0)))
            .map_err(|e| self.fail(e))?;
        if active {
            return Ok(None);
        }
        let jobs = self.ids(Q_RUN_JOBS, [run])?;
        self.exec(D_RUN_JOBS, [run])?;
        self.exec(D_RUN, [run])?;
        Ok(Some(jobs))
    }
}

impl Work<'_> {
    fn job_deleted(&mut self, id: i64) {
        self.report.jobs_deleted += 1;
        self.report.deleted_job_ids.push(JobId(id));
    }
    fn run_deleted(&mut self, run: i64, jobs: Vec<i64>) {
        self.report.runs_deleted += 1;
        self.deleted_runs.insert(run);
        for j in jobs {
            self.job_deleted(j);
        }
    }
    /// Deletes `run` with its jobs if it may go; returns the rows deleted (0 if kept).
    fn run_unit(&mut self, db: &Db<'_>, run: i64) -> R<usize> {
        if self.kept_runs.contains(&run) || self.deleted_runs.contains(&run) {
            return Ok(0);
        }
        match db.try_delete_run(run)? {
            Some(jobs) => {
                let n = jobs.len() + 1;
                self.run_deleted(run, jobs);
                Ok(n)
            }
            None => {
                self.kept_runs.insert(run);
                Ok(0)
            }
        }
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Applies `retention` to job, run and sync history, then gives the freed space back
    /// to the file system.
    ///
    /// What goes: finished jobs and runs older than `max_age_days` (by finish time), then
    /// the oldest finished ones beyond `max_rows_per_table` per table; sync history by the
    /// same rules (by apply time), except the newest `applied` entry, which always stays.
    /// The cap is approximate: active rows and the jobs of kept runs stay on top of it, and
    /// a whole run may take a table a few rows below it.
    ///
    /// # Guarantees
    /// - Pending and running jobs and runs are never deleted, however old or many.
    /// - A run is deleted only together with all of its jobs, in one transaction, and only
    ///   when none of them is pending or running. Jobs of a kept run are kept, so no
    ///   reader ever sees a run with some of its jobs gone or jobs whose run is gone.
    /// - Deletion runs in transactions of about 2,000 rows; the write lock and the
    ///   store's mutex are released between them, so the engine keeps recording jobs.
    /// - Cost follows the rows deleted, not total history: every lookup goes through an
    ///   index, and table sizes come from a counter table (inserts counted by triggers,
    ///   deletions by the compactor in the same transaction, recounted at every open).
    /// - The file shrinks in the same call: `incremental_vacuum` (in steps), then
    ///   `wal_checkpoint(TRUNCATE)`. `ANALYZE` (bounded by `analysis_limit`) follows
    ///   compactions of more than [`ANALYZE_AFTER_ROWS`] rows.
    /// - `deleted_job_ids` lists every deleted job, for the caller to delete its logs.
    ///
    /// # Assumptions
    /// `now_ms` is the wall clock in Unix milliseconds. A database created without
    /// `auto_vacuum` (not by hero_proc) is converted once with a full `VACUUM`.
    ///
    /// # Errors
    /// [`crate::StoreError::Busy`] if another process holds the write lock past the busy
    /// timeout, [`crate::StoreError::OpenedReadOnly`] on a read-only handle, and the usual
    /// write errors. Batches committed before an error stay deleted (their log files are
    /// then left to the log store's own caps).
    pub fn compact(&self, retention: &Retention, now_ms: i64) -> R<CompactReport> {
        self.compact_observed(retention, now_ms, &mut |_| {})
    }

    /// [`Store::compact`], calling `observe` at each step while that step holds the writer
    /// (tests and benchmarks use it to read at exactly that moment).
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_observed(
        &self,
        retention: &Retention,
        now_ms: i64,
        observe: &mut dyn FnMut(CompactStep),
    ) -> R<CompactReport> {
        self.ensure_writable()?;
        let started = Instant::now();
        let before = self.db_stats()?;
        let mut w =
            Work { observe, report: CompactReport::default(), kept_runs: HashSet::new(), deleted_runs: HashSet::new() };
        if let Some(days) = retention.max_age_days {
            let cutoff = now_ms.saturating_sub(i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(DAY_MS));
            self.loose_jobs_older_than(cutoff, &mut w)?;
            self.runs_older_than(cutoff, &mut w)?;
            self.history_older_than(cutoff, &mut w)?;
        }
        if let Some(cap) = retention.max_rows_per_table {
            let cap = i64::try_from(cap).unwrap_or(i64::MAX);
            self.runs_over(cap, &mut w)?;
            self.jobs_over(cap, &mut w)?;
            self.history_over(cap, &mut w)?;
        }
        w.report.delete_ms = millis(started);
        let deleted = w.report.rows_deleted();
        if deleted > ANALYZE_AFTER_ROWS {
            let t = Instant::now();
            self.with_conn(|db| {
                db.conn.execute_batch("ANALYZE").map_err(|e| db.fail(e))?;
                (w.observe)(CompactStep::Analyze);
                Ok(())
            })?;
            w.report.analyzed = true;
            w.report.analyze_ms = millis(t);
        }
        let t = Instant::now();
        self.reclaim(&mut *w.observe)?;
        w.report.vacuum_ms = millis(t);
        let t = Instant::now();
        w.report.checkpoint_complete = self.checkpoint_truncate(&mut *w.observe)?;
        w.report.checkpoint_ms = millis(t);
        let after = self.db_stats()?;
        let r = &mut w.report;
        r.bytes_before = before.file_bytes;
        r.bytes_after = after.file_bytes;
        r.bytes_reclaimed = before.file_bytes.saturating_sub(after.file_bytes);
        r.freelist_before = before.freelist_count;
        r.freelist_after = after.freelist_count;
        r.duration_ms = millis(started);
        tracing::info!(
            path = %self.path().display(),
            jobs = r.jobs_deleted, runs = r.runs_deleted, history = r.history_deleted,
            bytes_before = r.bytes_before, bytes_after = r.bytes_after, duration_ms = r.duration_ms,
            "compacted history"
        );
        Ok(w.report)
    }

    /// One write transaction of the compactor; `f` says whether more work remains.
    fn batch<'o>(&self, w: &mut Work<'o>, f: impl FnOnce(&Db<'_>, &mut Work<'o>) -> R<bool>) -> R<bool> {
        let (more, held) = self.transaction(|tx| {
            let t = Instant::now();
            let db = tx.db();
            let before = [w.report.jobs_deleted, w.report.runs_deleted, w.report.history_deleted];
            let more = f(&db, w)?;
            let after = [w.report.jobs_deleted, w.report.runs_deleted, w.report.history_deleted];
            for ((table, b), a) in ["jobs", "runs", "sync_history"].into_iter().zip(before).zip(after) {
                if a > b {
                    db.exec(U_COUNT, params![table, i64::try_from(a - b).unwrap_or(i64::MAX)])?;
                }
            }
            (w.observe)(CompactStep::Batch);
            Ok((more, t))
        })?;
        w.report.batches += 1;
        w.report.longest_batch_ms = w.report.longest_batch_ms.max(millis(held));
        Ok(more)
    }

    fn loose_jobs_older_than(&self, cutoff: i64, w: &mut Work) -> R<()> {
        while self.batch(w, |db, w| {
            let ids = db.ids(Q_LOOSE_JOBS_OLDER, params![cutoff, limit(BATCH_ROWS)])?;
            for &id in &ids {
                db.exec(D_JOB, [id])?;
                w.job_deleted(id);
            }
            Ok(ids.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    fn runs_older_than(&self, cutoff: i64, w: &mut Work) -> R<()> {
        let mut cursor = (i64::MIN, i64::MIN);
        while self.batch(w, |db, w| {
            let rows: Vec<(i64, i64)> = db
                .conn
                .prepare_cached(Q_RUNS_OLDER)
                .and_then(|mut s| {
                    s.query_map(params![cutoff, cursor.0, cursor.1, limit(BATCH_ROWS)], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(|e| db.fail(e))?;
            let mut budget = BATCH_ROWS;
            for &(id, finished) in &rows {
                cursor = (finished, id);
                budget = budget.saturating_sub(w.run_unit(db, id)?);
                if budget == 0 {
                    return Ok(true);
                }
            }
            Ok(rows.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    fn runs_over(&self, cap: i64, w: &mut Work) -> R<()> {
        let mut cursor = 0;
        while self.batch(w, |db, w| {
            let mut excess = db.row_count("runs")? - cap;
            if excess <= 0 {
                return Ok(false);
            }
            let ids = db.ids(Q_RUNS_AFTER, params![cursor, limit(BATCH_ROWS)])?;
            let mut budget = BATCH_ROWS;
            for &id in &ids {
                cursor = id;
                let n = w.run_unit(db, id)?;
                if n > 0 {
                    excess -= 1;
                    if excess == 0 {
                        return Ok(false);
                    }
                }
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return Ok(true);
                }
            }
            Ok(ids.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    fn jobs_over(&self, cap: i64, w: &mut Work) -> R<()> {
        let mut cursor = 0;
        while self.batch(w, |db, w| {
            let mut excess = db.row_count("jobs")? - cap;
            if excess <= 0 {
                return Ok(false);
            }
            let rows: Vec<(i64, Option<i64>, String)> = db
                .conn
                .prepare_cached(Q_JOBS_AFTER)
                .and_then(|mut s| {
                    s.query_map(params![cursor, limit(BATCH_ROWS)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .map_err(|e| db.fail(e))?;
            let mut budget = BATCH_ROWS;
            for (id, run, phase) in &rows {
                cursor = *id;
                let n = match run {
                    None if Phase::parse(phase).is_some_and(Phase::is_terminal) => {
                        db.exec(D_JOB, [id])?;
                        w.job_deleted(*id);
                        1
                    }
                    None => 0,
                    Some(run) => w.run_unit(db, *run)?,
                };
                // A run counts its jobs towards the excess (its own row is in `runs`).
                let jobs = if run.is_some() { n.saturating_sub(1) } else { n };
                excess -= limit(jobs);
                if excess <= 0 {
                    return Ok(false);
                }
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return Ok(true);
                }
            }
            Ok(rows.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    fn history_keep(db: &Db<'_>) -> R<Option<i64>> {
        db.conn.query_row(Q_HISTORY_KEEP, [], |r| r.get(0)).map_err(|e| db.fail(e))
    }

    fn history_older_than(&self, cutoff: i64, w: &mut Work) -> R<()> {
        while self.batch(w, |db, w| {
            let keep = Store::history_keep(db)?;
            let ids = db.ids(Q_HISTORY_OLDER, params![cutoff, keep, limit(BATCH_ROWS)])?;
            for &id in &ids {
                db.exec(D_HISTORY, [id])?;
            }
            w.report.history_deleted += ids.len() as u64;
            Ok(ids.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    fn history_over(&self, cap: i64, w: &mut Work) -> R<()> {
        let mut cursor = 0;
        while self.batch(w, |db, w| {
            let mut excess = db.row_count("sync_history")? - cap;
            if excess <= 0 {
                return Ok(false);
            }
            let keep = Store::history_keep(db)?;
            let ids = db.ids(Q_HISTORY_AFTER, params![cursor, limit(BATCH_ROWS)])?;
            for &id in &ids {
                cursor = id;
                if Some(id) == keep {
                    continue;
                }
                db.exec(D_HISTORY, [id])?;
                w.report.history_deleted += 1;
                excess -= 1;
                if excess == 0 {
                    return Ok(false);
                }
            }
            Ok(ids.len() == BATCH_ROWS)
        })? {}
        Ok(())
    }

    /// Returns free pages to the file system.
    fn reclaim(&self, observe: &mut dyn FnMut(CompactStep)) -> R<()> {
        let (mode, mut free) =
            self.with_conn(|db| Ok((db.pragma_u64("auto_vacuum")?, db.pragma_u64("freelist_count")?)))?;
        if free == 0 {
            return Ok(());
        }
        match mode {
            2 => loop {
                let left = self.with_conn(|db| {
                    // The pragma yields a row per page freed: step it to the end, or only
                    // one page goes.
                    db.conn
                        .prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_STEP_PAGES})"))
                        .and_then(|mut s| s.query_map([], |_| Ok(()))?.collect::<Result<Vec<()>, _>>())
                        .map_err(|e| db.fail(e))?;
                    observe(CompactStep::Vacuum);
                    db.pragma_u64("freelist_count")
                })?;
                if left == 0 || left >= free {
                    return Ok(());
                }
                free = left;
            },
            0 => {
                tracing::warn!(path = %self.path().display(),
                    "database was created without auto_vacuum; converting it once with a full VACUUM");
                self.with_conn(|db| {
                    db.conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").map_err(|e| db.fail(e))
                })
            }
            // auto_vacuum=FULL already shrinks the file at every commit.
            _ => Ok(()),
        }
    }

    /// Copies the WAL into the database and truncates it; `false` if a reader kept part of
    /// it alive.
    fn checkpoint_truncate(&self, observe: &mut dyn FnMut(CompactStep)) -> R<bool> {
        // Not beside the checkpoint thread's: SQLite would refuse this one as busy. (In a
        // batch this thread holds the writer, which the checkpoint thread may be waiting
        // for: there it takes its chance.)
        let _one = self.wal_signal.as_ref().filter(|_| !self.in_batch()).map(|s| s.checkpointing());
        self.with_conn(|db| {
            // The checkpoint waits for readers with the write lock held: wait briefly,
            // not the full busy timeout, so writers are not stalled behind a reader.
            db.conn.busy_timeout(CHECKPOINT_WAIT).map_err(|e| db.fail(e))?;
            let busy = db.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
            db.conn.busy_timeout(db.busy_timeout).map_err(|e| db.fail(e))?;
            let busy = busy.map_err(|e| db.fail(e))?;
            observe(CompactStep::Checkpoint);
            Ok(busy == 0)
        })
    }
}

fn millis(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compaction query must SEARCH an index (or the primary key): a SCAN would make
    /// compaction cost grow with total history.
    #[test]
    fn compaction_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db")).unwrap();
        let queries: &[(&str, usize)] = &[
            (Q_LOOSE_JOBS_OLDER, 2),
            (Q_RUNS_OLDER, 4),
            (Q_RUNS_AFTER, 2),
            (Q_JOBS_AFTER, 2),
            (Q_RUN_PHASE, 1),
            (Q_RUN_ACTIVE_JOB, 1),
            (Q_RUN_JOBS, 1),
            (D_RUN_JOBS, 1),
            (D_RUN, 1),
            (D_JOB, 1),
            (Q_HISTORY_KEEP, 0),
            (Q_HISTORY_OLDER, 3),
            (Q_HISTORY_AFTER, 2),
            (D_HISTORY, 1),
            (Q_COUNT, 1),
            (U_COUNT, 2),
        ];
        let check = |when: &str| {
            store
                .read(|db| {
                    for (sql, n) in queries {
                        let args: Vec<i64> = vec![1; *n];
                        let mut st = db.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                        let plan: Vec<String> = st
                            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                            .unwrap()
                            .collect::<Result<_, _>>()
                            .unwrap();
                        for step in &plan {
                            let scan = step.starts_with("SCAN") && step != "SCAN CONSTANT ROW";
                            assert!(!scan, "{when}: {sql}\n uses a full scan: {plan:?}");
                            assert!(!step.contains("TEMP B-TREE"), "{when}: {sql}\n sorts: {plan:?}");
                        }
                    }
                    Ok(())
                })
                .unwrap()
        };
        check("empty database");
        // With data and statistics (ANALYZE runs after large compactions) the plans must hold.
        let action: hero_proc_spec::Action = serde_json::from_value(serde_json::json!({
            "name": "a", "context": "core", "interpreter": "exec", "script": "true", "process": false,
            "restart": {"policy": "never", "delay": "1s", "max_delay": "1s", "max_retries": 0},
            "stop": {"signal": "SIGTERM", "timeout": "1s"}
        }))
        .unwrap();
        store
            .transaction(|tx| {
                for i in 0..3000 {
                    let run_id = if i % 3 == 0 { Some(tx.create_run("r", i)?) } else { None };
                    let id = tx.create_job(&crate::NewJob {
                        run_id,
                        action: &action,
                        service: None,
                        attempt: 1,
                        created_at_ms: i,
                    })?;
                    if i % 10 != 0 {
                        let exit = crate::JobExit {
                            phase: Phase::Succeeded,
                            exit_code: Some(0),
                            signal: None,
                            error: None,
                            finished_at_ms: i,
                        };
                        tx.finish_job(id, &exit)?;
                        if let Some(r) = run_id {
                            tx.set_run_phase(r, Phase::Succeeded, i)?;
                        }
                    }
                    tx.record_sync(&crate::SyncRecord {
                        revision: "r".into(),
                        author: None,
                        committed_at_ms: None,
                        applied_at_ms: i,
                        summary: serde_json::json!({}),
                        result: crate::SyncResult::Noop,
                        error: None,
                    })?;
                }
                Ok(())
            })
            .unwrap();
        store.with_conn(|db| db.conn.execute_batch("ANALYZE").map_err(|e| db.fail(e))).unwrap();
        check("after ANALYZE");
    }
}
