//! Commit-to-running latency: a daemon watches a local repository; each round commits a
//! new environment value for a service and times until the restarted process has
//! written it. Baselines measured in the same run: the `git commit` itself, and an
//! imperative `hero_proc service restart` until the new process runs.
//!
//! The repository holds, besides `web`, a number of other actions (50 per file, one-shot,
//! run by no service): commit-to-running must not grow with them, and neither must the
//! daemon's memory (its RSS after the rounds is printed, per repository size).
//!
//! Full size: `cargo bench --workspace --bench reconcile` (30 rounds, at 1,000 and 10,000
//! actions). Without `--bench` (what `cargo test` runs): 3 rounds at 100 actions.
//! HERO_BENCH_ROUNDS and HERO_BENCH_ACTIONS (one size) override.

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::Daemon;
use support::bench::Mode;
use support::config_repo::{ConfigRepo, follow, out_file};

fn web(greeting: &str) -> String {
    format!(
        "actions:\n  - name: web\n    interpreter: bash\n    script: 'echo \"$GREETING\" > \"$HERO_ROOTDIR/web.out\"; exec sleep 600'\n    process: true\n    env:\n      GREETING: \"{greeting}\"\n    stop: {{ signal: SIGKILL, timeout: 1s }}\nservices:\n  - name: web\n    actions: [web]\n"
    )
}

fn wait_content(path: &Path, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {} to say {want}", path.display());
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.9), v[0], v[v.len() - 1])
}

/// Actions files beside `web`: `n` one-shot actions, 50 per file, run by no service.
fn bulk(repo: &ConfigRepo, n: usize) {
    for f in 0..n.div_ceil(50) {
        let mut y = String::from("actions:\n");
        for i in f * 50..((f + 1) * 50).min(n) {
            y.push_str(&format!(
                "  - name: bulk{i:05}\n    context: c{}\n    description: bulk action {i}\n    interpreter: bash\n    script: echo {i}\n    env:\n      STEP: \"{i}\"\n    timeout: 30s\n    tags: [bench]\n",
                i % 10
            ));
        }
        repo.write(&format!("actions/bulk-{f:04}.yaml"), &y);
    }
}

/// The daemon's resident set, in MiB (`VmRSS`).
fn rss_mib(d: &Daemon) -> f64 {
    let pid = d.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn main() {
    let Some(mode) = Mode::from_args("reconcile") else { return };
    let rounds = mode.size("HERO_BENCH_ROUNDS", 30, 3);
    let sizes = match std::env::var("HERO_BENCH_ACTIONS").ok().and_then(|v| v.parse().ok()) {
        Some(n) => vec![n],
        None if mode.is_smoke() => vec![100],
        None => vec![1_000, 10_000],
    };
    println!("{}", mode.banner("reconcile"));
    for actions in sizes {
        run(rounds, actions);
    }
    println!("for scale: Flux polls every 1 min by default, Argo CD every 3 min");
}

fn run(rounds: usize, actions: usize) {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &web("v0"));
    bulk(&repo, actions);
    repo.commit("v0");
    let d: Daemon = follow(&repo);
    let out = out_file(&d, "web");
    wait_content(&out, "v0", Duration::from_secs(120));

    let mut commit_to_running = Vec::new();
    let mut git_commit = Vec::new();
    for i in 1..=rounds {
        let value = format!("v{i}");
        repo.write("actions/web.yaml", &web(&value));
        repo.git(&["add", "-A"]);
        let start = Instant::now();
        repo.git(&["commit", "-q", "-m", &value]);
        git_commit.push(start.elapsed().as_secs_f64() * 1e3);
        wait_content(&out, &value, Duration::from_secs(30));
        commit_to_running.push(start.elapsed().as_secs_f64() * 1e3);
    }

    // Baseline: an imperative restart through the RPC, until the new process has run.
    let mut restart = Vec::new();
    for _ in 0..rounds {
        std::fs::remove_file(&out).unwrap();
        let start = Instant::now();
        let o = d.cli(&["service", "restart", "web"]);
        assert!(o.status.success(), "hero_proc service restart web: {}", support::text(&o.stderr));
        wait_content(&out, &format!("v{rounds}"), Duration::from_secs(30));
        restart.push(start.elapsed().as_secs_f64() * 1e3);
    }

    let rss = rss_mib(&d);
    let (c50, c90, cmin, cmax) = stats(commit_to_running);
    let (g50, ..) = stats(git_commit);
    let (r50, r90, rmin, rmax) = stats(restart);
    println!();
    println!(
        "commit-to-running latency, local repository of {} actions watched by the daemon ({rounds} rounds)",
        actions + 1
    );
    println!("{:<44} {:>9} {:>9} {:>9} {:>9}", "", "median", "p90", "min", "max");
    println!(
        "{:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
        "git commit -> new process running", c50, c90, cmin, cmax
    );
    println!("{:<44} {:>7.1}ms {:>9} {:>9} {:>9}", "  of which `git commit` itself", g50, "", "", "");
    println!(
        "{:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
        "baseline: `hero_proc service restart`", r50, r90, rmin, rmax
    );
    println!("ratio commit-to-running / imperative restart (median): {:.2}x", c50 / r50);
    println!("daemon RSS after the rounds: {rss:.1} MiB");
    if actions >= 10_000 {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("target at 10,000 actions: commit-to-running < 60 ms: {c50:.1} ms ({})", verdict(c50 < 60.0));
        println!("target at 10,000 actions: RSS < 40 MiB: {rss:.1} MiB ({})", verdict(rss < 40.0));
    }
}
