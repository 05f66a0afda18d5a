//! Compaction benchmark for issue #131 ("hero_proc.db grows unboundedly").
//!
//! `cargo bench -p hero_proc_store` prints three tables and exits 1 if a target is missed:
//! 1. DB size every 10,000 jobs over 100,000 jobs, retention ON (cap 10,000, compacting
//!    every 10,000 inserts) vs OFF, in the same run.
//! 2. One compaction of 90,000 rows: must take < 2 s and shrink the file >= 80%.
//! 3. Deleting the same 5,000 rows from 10,000 vs 100,000 rows of history: about equal.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use hero_proc_spec::Action;
use hero_proc_store::{CompactReport, NewJob, Phase, Retention, Store};
use support::{action, exit, new_job};

const NOW: i64 = 1_780_000_000_000;
const DAY_MS: i64 = 86_400_000;

fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

fn file_bytes(store: &Store) -> u64 {
    store.db_stats().unwrap().file_bytes
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

fn growth(a: &Action) {
    println!("## 1. DB size over time: 100,000 jobs, retention ON (max_rows 10,000, compact every 10,000) vs OFF\n");
    println!(
        "| jobs inserted | OFF: file MB | ON: file MB | ON: rows deleted | ON: compaction ms | ON: freelist after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let off_dir = tempfile::tempdir().unwrap();
    let on_dir = tempfile::tempdir().unwrap();
    let off = Store::open(off_dir.path().join("off.db")).unwrap();
    let on = Store::open(on_dir.path().join("on.db")).unwrap();
    let retention = Retention { max_age_days: Some(30), max_rows_per_table: Some(10_000) };
    let started = Instant::now();
    for step in 1..=10 {
        for i in 0..10_000 {
            let t = NOW - 10 * DAY_MS + (step * 10_000 + i) as i64;
            run_one_job(&off, a, t);
            run_one_job(&on, a, t);
        }
        let r = on.compact(&retention, NOW).unwrap();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            step * 10_000,
            mb(file_bytes(&off)),
            mb(file_bytes(&on)),
            r.rows_deleted(),
            r.duration_ms,
            r.freelist_after
        );
    }
    let counts = on.job_counts_by_phase().unwrap();
    println!(
        "\nON keeps {} jobs; OFF keeps {}. ({} s for 2 x 100,000 jobs x 3 transactions)\n",
        counts.total(),
        off.job_counts_by_phase().unwrap().total(),
        started.elapsed().as_secs()
    );
}

fn big_compaction(a: &Action) -> bool {
    println!("## 2. One compaction of 90,000 rows (100,000 finished jobs, max_rows 10,000)\n");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("big.db")).unwrap();
    bulk_jobs(&store, a, 100_000, NOW - DAY_MS);
    let before = store.db_stats().unwrap();
    let t = Instant::now();
    let r = store.compact(&Retention { max_age_days: None, max_rows_per_table: Some(10_000) }, NOW).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = store.db_stats().unwrap();
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
    let ok = secs < 2.0 && shrink_db >= 80.0 && shrink_disk >= 80.0;
    println!("\ntarget: < 2 s and >= 80% smaller in one cycle: {}\n", if ok { "PASS" } else { "FAIL" });
    ok
}

/// Median over `reps` fresh databases of the time to delete `delete` rows out of `history`.
fn timed(a: &Action, history: usize, delete: usize, by_age: bool, reps: usize) -> (f64, CompactReport) {
    let mut times = Vec::new();
    let mut last = CompactReport::default();
    for _ in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("scale.db")).unwrap();
        // The oldest `delete` jobs finished 60 days ago, the rest yesterday.
        bulk_jobs(&store, a, delete, NOW - 60 * DAY_MS);
        bulk_jobs(&store, a, history - delete, NOW - DAY_MS);
        let retention = if by_age {
            Retention { max_age_days: Some(30), max_rows_per_table: None }
        } else {
            Retention { max_age_days: None, max_rows_per_table: Some((history - delete) as u64) }
        };
        let t = Instant::now();
        last = store.compact(&retention, NOW).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(last.rows_deleted() as usize, delete);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], last)
}

fn scaling(a: &Action) -> bool {
    println!("## 3. Cost follows rows deleted, not history: delete 5,000 rows out of 10,000 vs 100,000\n");
    println!("| limit | history rows | deleted | median ms (3 runs) | ratio 100k / 10k |");
    println!("|---|---:|---:|---:|---:|");
    let mut ok = true;
    for (by_age, name) in [(false, "max_rows_per_table"), (true, "max_age_days")] {
        let (small, _) = timed(a, 10_000, 5_000, by_age, 3);
        let (large, _) = timed(a, 100_000, 5_000, by_age, 3);
        let ratio = large / small;
        println!("| {name} | 10,000 | 5,000 | {small:.1} | |");
        println!("| {name} | 100,000 | 5,000 | {large:.1} | {ratio:.2} |");
        // "About equal": generous bound for noisy machines; a scan of history would be ~10x.
        ok &= ratio < 2.0;
    }
    println!("\ntarget: about equal (ratio < 2): {}\n", if ok { "PASS" } else { "FAIL" });
    ok
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep quiet
    // and fast unless benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let a = action("core", "hero_agent_server");
    println!("# hero_proc_store compaction benchmark\n");
    println!(
        "job row: action snapshot of {} bytes of JSON, 3 transactions per job (create, start, finish)\n",
        serde_json::to_string(&a).unwrap().len()
    );
    // HERO_BENCH_ONLY=growth|big|scaling runs one part.
    let only = std::env::var("HERO_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("growth") {
        growth(&a);
    }
    let mut ok = true;
    if run("big") {
        ok &= big_compaction(&a);
    }
    if run("scaling") {
        ok &= scaling(&a);
    }
    if !ok {
        std::process::exit(1);
    }
}
