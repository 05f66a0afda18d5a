//! History benchmark (SPEC 5.5): 100,000 one-shot jobs through the real daemon, with
//! retention 10,000 (compacting after every 10,000 jobs) and without, in the same run.
//! Reports the database size over time, each compaction, and how long a one-job run
//! takes with an empty vs a full history (the engine's per-job work must not grow with
//! history).
//!
//! Run: `cargo bench -p hero_proc --bench history` (about 3 minutes on 2 cores).
//! `HERO_BENCH_JOBS=20000` for a shorter run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BATCH: usize = 1000;
const EVERY: usize = 10_000;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hero_proc")
}

struct Daemon {
    root: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start(max_rows: u64) -> Daemon {
        Daemon::start_in(tempfile::tempdir().unwrap(), max_rows)
    }
    /// Stop the daemon, keeping its root.
    fn into_root(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.root, tempfile::tempdir().unwrap())
    }
    fn start_in(root: tempfile::TempDir, max_rows: u64) -> Daemon {
        let child = Command::new(bin())
            .args(["serve", "--max-rows-per-table", &max_rows.to_string(), "--compact-every", "24h"])
            .env("HERO_ROOTDIR", root.path())
            .env("HERO_PROC_NO_AUTOSTART_DB", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { root, child }
    }
    fn socket(&self) -> PathBuf {
        self.root.path().join("var/sockets/hero_proc.sock")
    }
    fn db_bytes(&self) -> u64 {
        let dir = self.root.path().join("var/hero_proc");
        ["hero_proc.db", "hero_proc.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(d: &Daemon) -> hero_proc_rpc::Client {
    let t = Instant::now();
    loop {
        if let Ok(c) = hero_proc_rpc::Client::connect(&d.socket()).await {
            return c;
        }
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run_jobs(c: &mut hero_proc_rpc::Client, n: usize) -> Duration {
    let t = Instant::now();
    let run: Value = c.call_value("run.submit", json!({ "actions": vec!["t"; n] })).await.unwrap();
    let id = run["id"].as_i64().unwrap();
    loop {
        let r: Value = c.call_value("run.get", json!({ "id": id, "jobs": false })).await.unwrap();
        if r["phase"] != "running" && r["phase"] != "pending" {
            assert_eq!(r["phase"], "succeeded");
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Median time of a one-job run: the engine's per-run cost at the current history size.
async fn one_job_latency(c: &mut hero_proc_rpc::Client) -> Duration {
    let mut v: Vec<Duration> = Vec::new();
    for _ in 0..15 {
        v.push(run_jobs(c, 1).await);
    }
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let total: usize = std::env::var("HERO_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let action = json!({ "action": { "name": "t", "context": "core", "interpreter": "exec", "script": "true", "process": false,
        "restart": { "policy": "never", "delay": "1s", "max_delay": "1s", "max_retries": 0 }, "stop": { "signal": "SIGTERM", "timeout": "10s" } } });

    let on = Daemon::start(10_000);
    let off = Daemon::start(u64::MAX / 4);
    let mut con = connect(&on).await;
    let mut coff = connect(&off).await;
    con.call_value("action.set", action.clone()).await.unwrap();
    coff.call_value("action.set", action).await.unwrap();
    let empty_latency = one_job_latency(&mut con).await;

    println!("history benchmark — `cargo bench -p hero_proc --bench history`, {total} jobs in runs of {BATCH}");
    println!(
        "{:>8} | {:>14} {:>14} | {:>10} {:>12} {:>14}",
        "jobs", "DB ON (MB)", "DB OFF (MB)", "deleted", "compact ms", "shrunk by"
    );
    let mut done = 0;
    while done < total {
        for _ in 0..EVERY / BATCH {
            run_jobs(&mut con, BATCH).await;
            run_jobs(&mut coff, BATCH).await;
        }
        done += EVERY;
        let before = on.db_bytes();
        let report: Value = con.call_value("system.compact", json!({})).await.unwrap();
        let after = on.db_bytes();
        println!(
            "{:>8} | {:>14.2} {:>14.2} | {:>10} {:>12} {:>13.0}%",
            done,
            after as f64 / 1e6,
            off.db_bytes() as f64 / 1e6,
            report["jobs_deleted"],
            report["duration_ms"],
            if before > 0 { 100.0 * (before.saturating_sub(after)) as f64 / before as f64 } else { 0.0 }
        );
    }
    // The same history with retention off, compacted once down to 10,000 rows: the big
    // one-cycle shrink the issue asks for.
    let full_latency = one_job_latency(&mut coff).await;
    drop(coff);
    let root = off.into_root();
    let big = Daemon::start_in(root, 10_000);
    let mut cbig = connect(&big).await;
    let before = big.db_bytes();
    let t = Instant::now();
    let report: Value = cbig.call_value("system.compact", json!({})).await.unwrap();
    let took = t.elapsed();
    let after = big.db_bytes();
    println!();
    println!(
        "one compaction of the retention-OFF database down to 10,000 rows: {} jobs deleted in {} ms (RPC round trip {:.0} ms); {:.1} MB -> {:.1} MB ({:.0}% smaller)",
        report["jobs_deleted"],
        report["duration_ms"],
        took.as_secs_f64() * 1000.0,
        before as f64 / 1e6,
        after as f64 / 1e6,
        100.0 * before.saturating_sub(after) as f64 / before.max(1) as f64
    );
    println!(
        "one-job run with an empty history: {:.1} ms; with {total} jobs of history: {:.1} ms (ratio {:.2})",
        empty_latency.as_secs_f64() * 1000.0,
        full_latency.as_secs_f64() * 1000.0,
        full_latency.as_secs_f64() / empty_latency.as_secs_f64()
    );
}
