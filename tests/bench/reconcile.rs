//! Commit-to-running latency: a daemon watches a local repository; each round commits a
//! new environment value for a service and times until the restarted process has
//! written it. Baselines measured in the same run: the `git commit` itself, and an
//! imperative `hero_proc service restart` until the new process runs.
//!
//! Full size: `cargo bench --workspace --bench reconcile` (30 rounds). Without `--bench`
//! (what `cargo test` runs): 3 rounds. HERO_BENCH_ROUNDS overrides.

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

fn main() {
    let Some(mode) = Mode::from_args("reconcile") else { return };
    let rounds = mode.size("HERO_BENCH_ROUNDS", 30, 3);
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &web("v0"));
    repo.commit("v0");
    let d: Daemon = follow(&repo);
    let out = out_file(&d, "web");
    wait_content(&out, "v0", Duration::from_secs(30));

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

    let (c50, c90, cmin, cmax) = stats(commit_to_running);
    let (g50, ..) = stats(git_commit);
    let (r50, r90, rmin, rmax) = stats(restart);
    println!("{}", mode.banner("reconcile"));
    println!("commit-to-running latency, local repository watched by the daemon ({rounds} rounds)");
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
    println!("for scale: Flux polls every 1 min by default, Argo CD every 3 min");
}
