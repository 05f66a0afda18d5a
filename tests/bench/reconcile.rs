//! Commit-to-running latency: a daemon watches a local repository; each round commits a
//! new environment value for a service and times until the restarted process has
//! written it. Baselines measured in the same run: the `git commit` itself, and an
//! imperative `hero_proc service restart` until the new process runs.
//!
//! cargo bench -p hero_proc --bench reconcile

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 30;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hero_proc")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn web(greeting: &str) -> String {
    format!(
        "actions:\n  - name: web\n    interpreter: bash\n    script: 'echo \"$GREETING\" > \"$HERO_ROOTDIR/web.out\"; exec sleep 600'\n    process: true\n    env:\n      GREETING: \"{greeting}\"\n    stop: {{ signal: SIGKILL, timeout: 1s }}\nservices:\n  - name: web\n    actions: [web]\n"
    )
}

struct Daemon {
    root: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).env("HERO_ROOTDIR", self.root.path()).output().unwrap()
    }
    fn out(&self) -> PathBuf {
        self.root.path().join("web.out")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.cli(&["service", "stop", "web"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_content(path: &Path, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out waiting for {want}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.9), v[0], v[v.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(r.join("actions")).unwrap();
    std::fs::write(r.join("hero.yaml"), "required_services: []\n").unwrap();
    std::fs::write(r.join("actions/web.yaml"), web("v0")).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "v0"]);

    let root = tempfile::tempdir().unwrap();
    let child = Command::new(bin())
        .args(["serve", "--repo", r.to_str().unwrap(), "--branch", "main", "--interval", "1h"])
        .env("HERO_ROOTDIR", root.path())
        .env("HERO_PROC_NO_AUTOSTART_DB", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon { root, child };
    wait_content(&d.out(), "v0", Duration::from_secs(30));

    let mut commit_to_running = Vec::new();
    let mut git_commit = Vec::new();
    for i in 1..=ROUNDS {
        let value = format!("v{i}");
        std::fs::write(r.join("actions/web.yaml"), web(&value)).unwrap();
        git(r, &["add", "-A"]);
        let start = Instant::now();
        git(r, &["commit", "-q", "-m", &value]);
        git_commit.push(start.elapsed().as_secs_f64() * 1e3);
        wait_content(&d.out(), &value, Duration::from_secs(30));
        commit_to_running.push(start.elapsed().as_secs_f64() * 1e3);
    }

    // Baseline: an imperative restart through the RPC, until the new process has run.
    let mut restart = Vec::new();
    for _ in 0..ROUNDS {
        std::fs::remove_file(d.out()).unwrap();
        let start = Instant::now();
        let out = d.cli(&["service", "restart", "web"]);
        assert!(out.status.success());
        wait_content(&d.out(), &format!("v{ROUNDS}"), Duration::from_secs(30));
        restart.push(start.elapsed().as_secs_f64() * 1e3);
    }

    let (c50, c90, cmin, cmax) = stats(commit_to_running);
    let (g50, ..) = stats(git_commit);
    let (r50, r90, rmin, rmax) = stats(restart);
    println!("commit-to-running latency, local repository watched by the daemon ({ROUNDS} rounds)");
    println!("command: cargo bench -p hero_proc --bench reconcile");
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
