//! Compaction benchmark for issue #131 ("hero_proc.db grows unboundedly").
//!
//! `cargo bench --workspace --bench compaction` prints four tables (targets are printed,
//! never asserted):
//! 1. DB size every 10,000 jobs over 100,000 jobs, retention ON (cap 10,000, compacting
//!    every 10,000 inserts) vs OFF, in the same run.
//! 2. One compaction of 90,000 rows: target < 2 s and >= 80% smaller.
//! 3. The same rows deleted by a plain `DELETE ...; VACUUM` in rusqlite on an identical
//!    database (the baseline: one statement, one full rebuild, the write lock held
//!    throughout), against ours (batches of 2,000 rows, `incremental_vacuum`).
//! 4. Deleting the same 5,000 rows from 10,000 vs 100,000 rows of history: about equal.
//!
//! And (2b) the latency of reads made by another thread while a compaction of the same
//! 100,000 rows runs: target p99 < 5 ms (reads have their own connections).
//!
//! Checks (a panic, in both modes): the rows each compaction deletes are exactly the ones
//! retention selects (oldest finished first); pending and running jobs are never deleted;
//! the baseline and ours leave the same rows.
//!
//! Without `--bench` (what `cargo test` runs) every part runs at about 1/100 of the size.
//! `HERO_BENCH_ONLY=growth|big|reads|scaling` runs one part.

/// Full size or smoke: the convention the daemon-level benchmarks use.
#[path = "../../../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use hero_proc_spec::Action;
use hero_proc_store::{CompactReport, JobFilter, JobId, NewJob, Phase, Retention, Store};
use support::{action, exit, new_job};

/// The sizes of one run: full (`--bench`) or smoke.
struct Size {
    /// Jobs per growth step, and the growth run's row cap.
    step_jobs: usize,
    steps: usize,
    /// Finished jobs in the one big compaction, and how many it keeps.
    big_jobs: usize,
    big_keep: usize,
    /// History sizes of the scaling part, and the rows deleted out of each.
    history: [usize; 2],
    delete: usize,
    reps: usize,
}

impl Size {
    fn get() -> Size {
        if bench::Mode::from_args("compaction") == Some(bench::Mode::Full) {
            Size {
                step_jobs: 10_000,
                steps: 10,
                big_jobs: 100_000,
                big_keep: 10_000,
                history: [10_000, 100_000],
                delete: 5_000,
                reps: 3,
            }
        } else {
            Size {
                step_jobs: 100,
                steps: 3,
                big_jobs: 1_000,
                big_keep: 100,
                history: [200, 2_000],
                delete: 100,
                reps: 1,
            }
        }
    }
}

/// Jobs still pending or running when a compaction runs: never deleted.
const ACTIVE: usize = 5;

const NOW: i64 = 1_780_000_000_000;
const DAY_MS: i64 = 86_400_000;

fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

fn file_bytes(store: &Store) -> u64 {
    store.db_stats().unwrap().file_bytes
}

/// The database file plus its WAL, as `du` would see them.
fn on_disk(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    [db, wal.as_path()].iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
}

/// One job as the engine records it: three transactions (create, start, finish).
fn run_one_job(store: &Store, a: &Action, t: i64) {
    let id = store.create_job(&new_job(a, None, t)).unwrap();
    store.mark_job_running(id, 4242, Some(123_456), t).unwrap();
    store.finish_job(id, &exit(if t % 10 == 0 { Phase::Failed } else { Phase::Succeeded }, t)).unwrap();
}

/// `n` finished jobs in bulk (1,000 per transaction), finished at `t0 + i`.
fn bulk_jobs(store: &Store, a: &Action, n: usize, t0: i64) {
    for chunk in 0..n.div_ceil(1000) {
        store
            .transaction(|tx| {
                for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
                    let t = t0 + i as i64;
                    let id = tx.create_job(&NewJob { service: None, ..new_job(a, None, t) })?;
                    tx.mark_job_running(id, 4242, Some(123_456), t)?;
                    tx.finish_job(id, &exit(Phase::Succeeded, t))?;
                }
                Ok(())
            })
            .unwrap();
    }
}

/// [`ACTIVE`] jobs that have not finished (one pending, the rest running), created long
/// ago so that a compaction working oldest first meets them before anything else.
fn active_jobs(store: &Store, a: &Action, t: i64) -> Vec<JobId> {
    (0..ACTIVE)
        .map(|i| {
            let id = store.create_job(&NewJob { service: None, ..new_job(a, None, t) }).unwrap();
            if i > 0 {
                store.mark_job_running(id, 4242, Some(123_456), t).unwrap();
            }
            id
        })
        .collect()
}

/// Every job id in the database, ascending, read through a separate connection.
fn job_ids(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM jobs ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn growth(a: &Action, size: &Size) {
    let (step, steps) = (size.step_jobs, size.steps);
    println!(
        "## 1. DB size over time: {} jobs, retention ON (max_rows {step}, compact every {step}) vs OFF\n",
        step * steps
    );
    println!(
        "| jobs inserted | OFF: file MB | ON: file MB | ON: rows deleted | ON: compaction ms | ON: freelist after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let off_dir = tempfile::tempdir().unwrap();
    let on_dir = tempfile::tempdir().unwrap();
    let off = Store::open(off_dir.path().join("off.db")).unwrap();
    let on = Store::open(on_dir.path().join("on.db")).unwrap();
    let retention = Retention { max_age_days: Some(30), max_rows_per_table: Some(step as u64) };
    let started = Instant::now();
    for s in 1..=steps {
        for i in 0..step {
            let t = NOW - 10 * DAY_MS + (s * step + i) as i64;
            run_one_job(&off, a, t);
            run_one_job(&on, a, t);
        }
        let r = on.compact(&retention, NOW).unwrap();
        assert_eq!(r.rows_deleted() as usize, if s == 1 { 0 } else { step }, "step {s}");
        assert_eq!(on.job_counts_by_phase().unwrap().total() as usize, step, "ON keeps the cap");
        assert_eq!(off.job_counts_by_phase().unwrap().total() as usize, s * step, "OFF keeps all");
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s * step,
            mb(file_bytes(&off)),
            mb(file_bytes(&on)),
            r.rows_deleted(),
            r.duration_ms,
            r.freelist_after
        );
    }
    // The newest `step` jobs are the ones kept.
    let ids = job_ids(&on_dir.path().join("on.db"));
    let last = (steps * step) as i64;
    assert_eq!(ids, (last - step as i64 + 1..=last).collect::<Vec<_>>(), "ON kept other jobs than the newest");
    println!(
        "\nON keeps {} jobs; OFF keeps {}. ({} s for 2 x {} jobs x 3 transactions)\n",
        on.job_counts_by_phase().unwrap().total(),
        off.job_counts_by_phase().unwrap().total(),
        started.elapsed().as_secs(),
        steps * step
    );
}

/// A database of [`ACTIVE`] unfinished jobs and `n` finished ones; returns the active ids.
fn big_db(path: &Path, a: &Action, n: usize) -> Vec<i64> {
    let store = Store::open(path).unwrap();
    let active = active_jobs(&store, a, NOW - 90 * DAY_MS);
    bulk_jobs(&store, a, n, NOW - DAY_MS);
    active.into_iter().map(|id| id.0).collect()
}

fn big_compaction(a: &Action, size: &Size) {
    let (n, keep) = (size.big_jobs, size.big_keep);
    println!(
        "## 2. One compaction of {} rows ({n} finished jobs and {ACTIVE} unfinished, max_rows {keep})\n",
        n + ACTIVE - keep
    );
    let dir = tempfile::tempdir().unwrap();
    let (ours_db, base_db) = (dir.path().join("ours.db"), dir.path().join("baseline.db"));
    let active = big_db(&ours_db, a, n);
    assert_eq!(big_db(&base_db, a, n), active, "the two databases hold the same rows");
    let store = Store::open(&ours_db).unwrap();
    let before = store.db_stats().unwrap();
    let t = Instant::now();
    let r = store.compact(&Retention { max_age_days: None, max_rows_per_table: Some(keep as u64) }, NOW).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = store.db_stats().unwrap();

    // Exactly the oldest finished jobs went; the unfinished ones stayed.
    assert_eq!(r.rows_deleted() as usize, n + ACTIVE - keep);
    let ids = job_ids(&ours_db);
    let last = (ACTIVE + n) as i64;
    let want: Vec<i64> = active.iter().copied().chain(last - (keep - ACTIVE) as i64 + 1..=last).collect();
    assert_eq!(ids, want, "compaction kept other rows than the unfinished and the newest finished jobs");

    let shrink_db = 100.0 * (1.0 - after.size_bytes as f64 / before.size_bytes as f64);
    let shrink_disk = 100.0 * (1.0 - r.bytes_after as f64 / r.bytes_before as f64);
    println!("| metric | value |");
    println!("|---|---:|");
    println!("| rows deleted | {} |", r.rows_deleted());
    println!("| compaction time | {secs:.3} s |");
    println!(
        "| of which delete / ANALYZE / incremental_vacuum / checkpoint | {} / {} / {} / {} ms |",
        r.delete_ms, r.analyze_ms, r.vacuum_ms, r.checkpoint_ms
    );
    println!("| batches / longest write-lock hold | {} / {} ms |", r.batches, r.longest_batch_ms);
    println!(
        "| DB size (page_count x page_size) | {} MB -> {} MB ({shrink_db:.1}% smaller) |",
        mb(before.size_bytes),
        mb(after.size_bytes)
    );
    println!(
        "| on disk incl. WAL | {} MB -> {} MB ({shrink_disk:.1}% smaller) |",
        mb(r.bytes_before),
        mb(r.bytes_after)
    );
    println!("| freelist pages | {} -> {} |", r.freelist_before, r.freelist_after);
    println!("| ANALYZE ran | {} |", r.analyzed);
    let met = secs < 2.0 && shrink_db >= 80.0 && shrink_disk >= 80.0;
    println!("\ntarget: < 2 s and >= 80% smaller in one cycle: {}\n", if met { "met" } else { "MISSED" });
    drop(store);

    // 3. The baseline on the identical database: one DELETE of the same rows, VACUUM.
    println!("## 3. Baseline: the same rows deleted by a plain `DELETE ...; VACUUM` (rusqlite)\n");
    let conn = rusqlite::Connection::open(&base_db).unwrap();
    let bytes_before = on_disk(&base_db);
    let t = Instant::now();
    let deleted = conn
        .execute(
            "DELETE FROM jobs WHERE phase NOT IN ('pending', 'running') AND id NOT IN
               (SELECT id FROM jobs WHERE phase NOT IN ('pending', 'running') ORDER BY id DESC LIMIT ?1)",
            [(keep - ACTIVE) as i64],
        )
        .unwrap();
    let delete_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    conn.execute_batch("VACUUM").unwrap();
    let vacuum_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    let checkpoint_s = t.elapsed().as_secs_f64();
    let base_s = delete_s + vacuum_s + checkpoint_s;
    drop(conn);
    assert_eq!(deleted, r.rows_deleted() as usize);
    assert_eq!(job_ids(&base_db), ids, "the baseline and ours leave different rows");
    let bytes_after = on_disk(&base_db);
    println!("| | ours (`Store::compact`) | baseline (`DELETE; VACUUM`) | ours / baseline |");
    println!("|---|---:|---:|---:|");
    println!("| rows deleted | {} | {deleted} | |", r.rows_deleted());
    println!("| total time | {secs:.3} s | {base_s:.3} s | {:.2}x |", secs / base_s.max(1e-9));
    println!(
        "| delete / vacuum / checkpoint | {} / {} / {} ms | {:.0} / {:.0} / {:.0} ms | |",
        r.delete_ms,
        r.vacuum_ms,
        r.checkpoint_ms,
        delete_s * 1000.0,
        vacuum_s * 1000.0,
        checkpoint_s * 1000.0
    );
    println!("| longest write-lock hold | {} ms | {:.0} ms (all of it) | |", r.longest_batch_ms, base_s * 1000.0);
    println!(
        "| on disk incl. WAL | {} MB -> {} MB | {} MB -> {} MB | {:.2}x |",
        mb(r.bytes_before),
        mb(r.bytes_after),
        mb(bytes_before),
        mb(bytes_after),
        r.bytes_after as f64 / bytes_after.max(1) as f64
    );
    println!();
}

/// Median over `reps` fresh databases of the time to delete `delete` rows out of `history`.
fn timed(a: &Action, history: usize, delete: usize, by_age: bool, reps: usize) -> (f64, CompactReport) {
    let mut times = Vec::new();
    let mut last = CompactReport::default();
    for _ in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.db");
        let store = Store::open(&path).unwrap();
        // The oldest `delete` jobs finished 60 days ago, the rest yesterday; the active
        // ones were created 90 days ago.
        let active = active_jobs(&store, a, NOW - 90 * DAY_MS);
        bulk_jobs(&store, a, delete, NOW - 60 * DAY_MS);
        bulk_jobs(&store, a, history - delete, NOW - DAY_MS);
        let retention = if by_age {
            Retention { max_age_days: Some(30), max_rows_per_table: None }
        } else {
            Retention { max_age_days: None, max_rows_per_table: Some((history - delete + ACTIVE) as u64) }
        };
        let t = Instant::now();
        last = store.compact(&retention, NOW).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(last.rows_deleted() as usize, delete);
        let first_kept = (ACTIVE + delete + 1) as i64;
        let want: Vec<i64> =
            active.iter().map(|id| id.0).chain(first_kept..first_kept + (history - delete) as i64).collect();
        assert_eq!(job_ids(&path), want, "compaction kept other rows than the unfinished and the recent jobs");
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], last)
}

fn scaling(a: &Action, size: &Size) {
    let ([small_h, large_h], delete, reps) = (size.history, size.delete, size.reps);
    println!("## 4. Cost follows rows deleted, not history: delete {delete} rows out of {small_h} vs {large_h}\n");
    println!("| limit | history rows | deleted | median ms ({reps} runs) | ratio large / small |");
    println!("|---|---:|---:|---:|---:|");
    let mut met = true;
    for (by_age, name) in [(false, "max_rows_per_table"), (true, "max_age_days")] {
        let (small, _) = timed(a, small_h, delete, by_age, reps);
        let (large, _) = timed(a, large_h, delete, by_age, reps);
        let ratio = large / small.max(1e-9);
        println!("| {name} | {small_h} | {delete} | {small:.1} | |");
        println!("| {name} | {large_h} | {delete} | {large:.1} | {ratio:.2} |");
        // "About equal": generous bound for noisy machines; a scan of history would be ~10x.
        met &= ratio < 2.0;
    }
    println!("\ntarget: about equal (ratio < 2): {}\n", if met { "met" } else { "MISSED" });
}

fn main() {
    // `--list`, or a test-name filter that does not match: nothing to run.
    if bench::Mode::from_args("compaction").is_none() {
        return;
    }
    let size = Size::get();
    let a = action("core", "hero_agent_server");
    println!("# hero_proc_store compaction benchmark\n");
    println!(
        "job row: action snapshot of {} bytes of JSON, 3 transactions per job (create, start, finish)\n",
        serde_json::to_string(&a).unwrap().len()
    );
    let only = std::env::var("HERO_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("growth") {
        growth(&a, &size);
    }
    if run("big") {
        big_compaction(&a, &size);
    }
    if run("reads") {
        reads_during_compaction(&a, &size);
    }
    if run("scaling") {
        scaling(&a, &size);
    }
}

/// Reads by another thread, one after the other, for as long as a compaction of the big
/// database runs (the RPC reads of a daemon: one job, a page of jobs, a page of runs with
/// their jobs). Their latency must not follow the compaction's write steps.
fn reads_during_compaction(a: &Action, size: &Size) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (n, keep) = (size.big_jobs, size.big_keep);
    println!(
        "## 2b. Read latency while a compaction of {} rows runs
",
        n + ACTIVE - keep
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reads.db");
    let active = big_db(&db, a, n);
    let store = Arc::new(Store::open(&db).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::channel();
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                match i % 3 {
                    0 => assert!(store.get_job(JobId(active[(i as usize / 3) % active.len()])).unwrap().is_some()),
                    1 => assert!(!store.list_jobs(&JobFilter { limit: 50, ..Default::default() }).unwrap().is_empty()),
                    _ => drop(store.list_runs_with_jobs(50, None, 20).unwrap()),
                }
                lat.push(t.elapsed());
                if i == 0 {
                    started_tx.send(()).unwrap();
                }
                i += 1;
            }
            lat
        })
    };
    // The compaction starts once reads are flowing, so they overlap it from its first step.
    started.recv().unwrap();
    let t = Instant::now();
    let r = store.compact(&Retention { max_age_days: None, max_rows_per_table: Some(keep as u64) }, NOW).unwrap();
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let mut lat = reader.join().unwrap();
    assert_eq!(r.rows_deleted() as usize, n + ACTIVE - keep);
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    let p99 = at(0.99);
    println!("| metric | value |");
    println!("|---|---:|");
    println!("| compaction time (with the reader) | {secs:.3} s |");
    println!("| reads during it | {} |", lat.len());
    println!("| read latency p50 / p99 / max | {:.3} / {p99:.3} / {:.3} ms |", at(0.5), at(1.0));
    println!("\ntarget: read p99 during the compaction < 5 ms: {}\n", if p99 < 5.0 { "met" } else { "MISSED" });
}
