//! History benchmark (SPEC 5.5): N one-shot jobs as N runs (one `run.submit` call of one
//! action each, the shape users produce) through two real daemons in the same run, each
//! following its own config repository (a git repo in a temp dir, `serve --repo`):
//!   - retention ON: hero.yaml `retention: { max_rows_per_table: N/10, ... }`, compacted
//!     (`system.compact`) after every N/10 jobs;
//!   - retention OFF: hero.yaml sets a cap no history reaches, never compacted.
//!
//! The effective values and where they came from are checked with `hero_proc system
//! compactor-status` (they must say hero.yaml@<revision>).
//!
//! Reports the database size over time, each compaction, the submission rate per segment,
//! a one-job run's latency with an empty vs a full history, and one compaction of the
//! retention-OFF database after a commit lowers its cap to N/10 (the one-cycle shrink).
//!
//! Full size: `cargo bench --workspace --bench history` (100,000 jobs). Without `--bench`
//! (what `cargo test` runs): 400 jobs. HERO_BENCH_JOBS overrides N.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Daemon;
use support::bench::Mode;
use support::config_repo::{ConfigRepo, wait_applied};

/// Longest any wait may take before the benchmark fails.
const LIMIT: Duration = Duration::from_secs(300);
/// A cap no history in this benchmark reaches: retention off.
const NO_CAP: u64 = 1_000_000_000;

const TRUE_ACTION: &str = "actions:\n  - name: t\n    interpreter: exec\n    script: 'true'\n";

/// One `job.list` of 20 rows, timed.
async fn timed_read(c: &mut hero_proc_rpc::Client) -> Duration {
    let t = Instant::now();
    let v = c.call_value("job.list", json!({ "limit": 20 })).await.unwrap_or_else(|e| panic!("job.list: {e}"));
    assert!(v.is_array(), "job.list answers a list: {v}");
    t.elapsed()
}

/// `N reads, p50 X ms, p99 Y ms, max Z ms`.
fn percentiles(mut v: Vec<Duration>) -> String {
    assert!(!v.is_empty(), "no read was timed");
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    format!("{} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", v.len(), at(0.5), at(0.99), ms(v[v.len() - 1]))
}

fn hero_yaml(max_rows: u64) -> String {
    format!(
        "required_services: []\nretention: {{ max_age_days: 3650, max_rows_per_table: {max_rows}, compact_every: 24h }}\n"
    )
}

struct Follower {
    repo: ConfigRepo,
    d: Daemon,
    c: hero_proc_rpc::Client,
}

impl Follower {
    /// A config repository with `t` and a retention cap, and a daemon following it.
    async fn start(max_rows: u64) -> Follower {
        let repo = ConfigRepo::new();
        repo.write("hero.yaml", &hero_yaml(max_rows));
        repo.write("actions/t.yaml", TRUE_ACTION);
        let rev = repo.commit("t, retention");
        let d = Daemon::start_env(
            &["--repo", &repo.location(), "--branch", "main", "--interval", "1h"],
            false,
            &[("RUST_LOG", "warn")],
        );
        wait_applied(&d, &rev);
        let c = hero_proc_rpc::Client::connect(&d.socket()).await.expect("connect to the daemon's socket");
        let f = Follower { repo, d, c };
        f.check_retention(&rev, max_rows);
        f
    }

    /// `hero_proc system compactor-status` says the cap is `max_rows`, from hero.yaml at `rev`.
    fn check_retention(&self, rev: &str, max_rows: u64) {
        let s = self.d.json(&["system", "compactor-status"]);
        let from = format!("hero.yaml@{}", &rev[..12]);
        assert_eq!(s["max_rows_per_table"].as_u64(), Some(max_rows), "compactor-status: {s}");
        for field in ["max_rows_per_table", "max_age_days", "every"] {
            assert_eq!(s["sources"][field], from.as_str(), "{field} does not come from {from}: {s}");
        }
        assert_eq!(s["every_secs"], 86_400, "{s}");
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.c.call_value(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// (database pages `page_count * page_size`, the files on disk with the WAL), bytes.
    async fn db_bytes(&mut self) -> (u64, u64) {
        let s = self.call("system.compactor_status", json!({})).await;
        let field = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("compactor_status has no {k}: {s}"));
        (field("db_size_bytes"), field("db_file_bytes"))
    }

    /// N runs of one job, one call each, then until none is pending or running; checks
    /// that every job succeeded. Returns the time from the first call to all done.
    async fn jobs(&mut self, n: usize) -> Duration {
        let t = Instant::now();
        let mut first = None;
        for _ in 0..n {
            let run = self.call("run.submit", json!({ "actions": ["t"] })).await;
            first.get_or_insert(run["id"].as_i64().expect("run.submit answers the run's id"));
        }
        loop {
            let mut busy = false;
            for phase in ["pending", "running"] {
                busy |= self.call("job.list", json!({ "phase": phase, "limit": 1 })).await != json!([]);
            }
            if !busy {
                break;
            }
            assert!(t.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {n} runs to finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t.elapsed();
        let failed = self.call("job.list", json!({ "phase": "failed", "limit": 1 })).await;
        assert_eq!(failed, json!([]), "a job failed");
        let runs = self.call("run.list", json!({ "limit": 1 })).await;
        let last = runs[0]["id"].as_i64().expect("run.list answers the newest run");
        assert_eq!(last - first.unwrap() + 1, n as i64, "{n} calls made {} runs", last - first.unwrap() + 1);
        took
    }

    /// Median time of a one-job run, submit to finished (polled every 1 ms).
    async fn one_job_latency(&mut self, samples: usize) -> Duration {
        let mut v: Vec<Duration> = Vec::new();
        for _ in 0..samples {
            let t = Instant::now();
            let run = self.call("run.submit", json!({ "actions": ["t"] })).await;
            let id = run["id"].as_i64().expect("run.submit answers the run's id");
            loop {
                let r = self.call("run.get", json!({ "id": id, "jobs": false })).await;
                if r["phase"] == "succeeded" {
                    break;
                }
                assert!(r["phase"] == "running" || r["phase"] == "pending", "one-job run failed: {r}");
                assert!(t.elapsed() < LIMIT, "timed out waiting for a one-job run: {r}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            v.push(t.elapsed());
        }
        v.sort();
        v[v.len() / 2]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let Some(mode) = Mode::from_args("history") else { return };
    let total = mode.size("HERO_BENCH_JOBS", 100_000, 400);
    let every = (total / 10).max(1);
    let chunk = every.min(1000);
    let samples = if mode.is_smoke() { 3 } else { 15 };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run(mode, total, every, chunk, samples));
}

async fn run(mode: Mode, total: usize, every: usize, chunk: usize, samples: usize) {
    let started = Instant::now();
    let cap = every as u64;
    let mut on = Follower::start(cap).await;
    let mut off = Follower::start(NO_CAP).await;
    println!("{}", mode.banner("history"));
    println!(
        "{total} jobs as {total} runs (one `run.submit` call of one action each, in chunks of {chunk}, alternating daemons)"
    );
    println!(
        "retention from each daemon's config repo (hero.yaml), checked with `hero_proc system compactor-status`: ON max_rows_per_table {cap}, OFF {NO_CAP} (never reached)"
    );
    println!("{}", String::from_utf8_lossy(&on.d.cli(&["system", "compactor-status"]).stdout).trim_end());
    let empty_on = on.one_job_latency(samples).await;
    let empty_off = off.one_job_latency(samples).await;

    println!();
    println!("DB = pages in use (page_count * page_size); disk = the database file and its WAL");
    println!(
        "{:>8} | {:>9} {:>9} | {:>10} {:>10} | {:>8} {:>10} {:>7} | {:>9} {:>10}",
        "jobs",
        "DB ON MB",
        "disk MB",
        "DB OFF MB",
        "disk MB",
        "deleted",
        "compact ms",
        "shrunk",
        "ON jobs/s",
        "OFF jobs/s"
    );
    let mut done = 0;
    while done < total {
        let (mut t_on, mut t_off, mut seg) = (Duration::ZERO, Duration::ZERO, 0);
        while seg < every && done + seg < total {
            let n = chunk.min(every - seg).min(total - done - seg);
            t_on += on.jobs(n).await;
            t_off += off.jobs(n).await;
            seg += n;
        }
        done += seg;
        let (before, _) = on.db_bytes().await;
        let report = on.call("system.compact", json!({})).await;
        let (after, on_disk) = on.db_bytes().await;
        let (off_db, off_disk) = off.db_bytes().await;
        println!(
            "{:>8} | {:>9.2} {:>9.2} | {:>10.2} {:>10.2} | {:>8} {:>10} {:>6.0}% | {:>9.0} {:>10.0}",
            done,
            mb(after),
            mb(on_disk),
            mb(off_db),
            mb(off_disk),
            report["jobs_deleted"].as_u64().expect("compact reports jobs_deleted"),
            report["duration_ms"].as_u64().expect("compact reports duration_ms"),
            100.0 * before.saturating_sub(after) as f64 / before.max(1) as f64,
            seg as f64 / t_on.as_secs_f64(),
            seg as f64 / t_off.as_secs_f64(),
        );
    }
    let full_off = off.one_job_latency(samples).await;
    let full_on = on.one_job_latency(samples).await;

    // The retention-OFF history, compacted once after a commit lowers its cap: the big
    // one-cycle shrink.
    off.repo.write("hero.yaml", &hero_yaml(cap));
    let rev = off.repo.commit(&format!("retention: keep {cap}"));
    wait_applied(&off.d, &rev);
    off.check_retention(&rev, cap);
    let (before, before_disk) = off.db_bytes().await;
    // Reads on a second connection while it compacts, against the same reads idle: the
    // compactor must not stall RPC reads.
    let mut probe = hero_proc_rpc::Client::connect(&off.d.socket()).await.expect("a second connection");
    let idle_reads = {
        let until = Instant::now() + Duration::from_millis(500);
        let mut v = Vec::new();
        while Instant::now() < until {
            v.push(timed_read(&mut probe).await);
        }
        v
    };
    let compacting = std::cell::Cell::new(true);
    let t = Instant::now();
    let (report, busy_reads) = tokio::join!(
        async {
            let r = off.call("system.compact", json!({})).await;
            compacting.set(false);
            r
        },
        async {
            let mut v = Vec::new();
            while compacting.get() {
                v.push(timed_read(&mut probe).await);
            }
            v
        }
    );
    let took = t.elapsed();
    let (after, after_disk) = off.db_bytes().await;
    let kept = off.call("job.list", json!({ "phase": "succeeded", "limit": 1000 })).await;
    assert!(!kept.as_array().unwrap().is_empty(), "compaction deleted every job");
    let deleted = report["jobs_deleted"].as_u64().unwrap_or(0);
    assert!(
        deleted as usize + every >= total,
        "the compaction down to {cap} rows deleted only {deleted} of {total} jobs: {report}"
    );

    println!();
    println!(
        "one compaction of the retention-OFF database after a commit set its cap to {cap}: {deleted} jobs deleted in {} ms of database work (RPC round trip {:.0} ms, with deleting their output files); DB {:.1} MB -> {:.1} MB ({:.0}% smaller), on disk {:.1} MB -> {:.1} MB",
        report["duration_ms"],
        ms(took),
        mb(before),
        mb(after),
        100.0 * before.saturating_sub(after) as f64 / before.max(1) as f64,
        mb(before_disk),
        mb(after_disk),
    );
    println!(
        "reads during that compaction (`job.list` of 20, back to back on a second connection): {}; the same reads idle: {}",
        percentiles(busy_reads),
        percentiles(idle_reads),
    );
    println!(
        "one-job run (median of {samples}), submit to finished: empty history {:.2} ms (ON) / {:.2} ms (OFF); after {total} jobs: {:.2} ms with {cap} kept (ON, ratio {:.2}), {:.2} ms with {total} kept (OFF, ratio {:.2})",
        ms(empty_on),
        ms(empty_off),
        ms(full_on),
        full_on.as_secs_f64() / empty_on.as_secs_f64(),
        ms(full_off),
        full_off.as_secs_f64() / empty_off.as_secs_f64(),
    );
    println!("total time: {:.0} s", started.elapsed().as_secs_f64());
}
