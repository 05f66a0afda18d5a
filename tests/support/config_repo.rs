//! A config repository made in a temporary folder, and helpers to watch what the daemon
//! runs from it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Daemon, text, wait_for};

/// A config repository in a temporary folder, committed with a fixed author.
pub struct ConfigRepo {
    pub dir: tempfile::TempDir,
}

impl ConfigRepo {
    pub fn new() -> ConfigRepo {
        let r = ConfigRepo { dir: tempfile::tempdir().unwrap() };
        r.git(&["init", "-q", "-b", "main"]);
        r.write("hero.yaml", "required_services: []\n");
        r
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "Ada Operator")
            .env("GIT_AUTHOR_EMAIL", "ada@example.org")
            .env("GIT_COMMITTER_NAME", "Ada Operator")
            .env("GIT_COMMITTER_EMAIL", "ada@example.org")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    pub fn rm(&self, rel: &str) {
        self.git(&["rm", "-q", "-r", rel]);
    }
    /// Commit everything; returns the new commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
    pub fn location(&self) -> String {
        self.path().display().to_string()
    }
}

/// A long-running service that writes `$GREETING` to `<root>/<name>.out` at start.
pub fn service(name: &str, greeting: &str) -> String {
    format!(
        r#"actions:
  - name: {name}
    interpreter: bash
    script: 'echo "$GREETING" > "$HERO_ROOTDIR/{name}.out"; exec sleep 600'
    process: true
    env:
      GREETING: {greeting}
    stop: {{ signal: SIGTERM, timeout: 2s }}
services:
  - name: {name}
    actions: [{name}]
"#
    )
}

pub fn out_file(d: &Daemon, name: &str) -> PathBuf {
    d.root().join(format!("{name}.out"))
}

pub fn greeting(d: &Daemon, name: &str) -> Option<String> {
    std::fs::read_to_string(out_file(d, name)).ok().map(|s| s.trim().to_owned())
}

pub fn wait_greeting(d: &Daemon, name: &str, want: &str) {
    wait_for(&format!("{name} to run with GREETING={want}"), Duration::from_secs(20), || {
        greeting(d, name).as_deref() == Some(want) && state(d, name).as_deref() == Some("running")
    });
}

/// `running`, `inactive`, ... or None when the service does not exist.
pub fn state(d: &Daemon, name: &str) -> Option<String> {
    let out = d.cli(&["--format", "json", "service", "status", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["state"].as_str().map(str::to_owned)
}

pub fn pid(d: &Daemon, name: &str) -> Option<u64> {
    d.status(name)["pid"].as_u64()
}

pub fn follow(repo: &ConfigRepo) -> Daemon {
    Daemon::start_with(&["--repo", &repo.location(), "--branch", "main", "--interval", "1h"], false)
}

/// [`follow`] with the daemon's root in `root` (a folder the test prepared: a small
/// tmpfs, other permissions).
pub fn follow_in(repo: &ConfigRepo, root: tempfile::TempDir) -> Daemon {
    let mut d = Daemon {
        root,
        child: None,
        args: ["--repo", &repo.location(), "--branch", "main", "--interval", "1h"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        check_hero_db: false,
        env: Vec::new(),
    };
    d.spawn();
    d
}

pub fn status(d: &Daemon) -> Value {
    d.json(&["reconcile", "status"])
}

pub fn wait_applied(d: &Daemon, rev: &str) {
    wait_for(&format!("revision {rev} to be applied"), Duration::from_secs(20), || {
        status(d)["applied_revision"].as_str() == Some(rev)
    });
}

/// Wait until the daemon's sync has fetched `rev` as the branch head (the proof that a
/// sync saw the commit), then until that sync has finished: a dry-run takes the same
/// one-writer lock as a sync, so it answers only after the sync that saw `rev` is done.
/// Returns that dry-run's plan.
pub fn wait_seen(d: &Daemon, rev: &str) -> Value {
    wait_for(&format!("a sync to see {rev} as the head"), Duration::from_secs(20), || {
        status(d)["head_revision"].as_str() == Some(rev)
    });
    d.json(&["reconcile", "--dry-run"])
}

/// While suspended a sync applies nothing and fetches nothing; the one mark a pass of the
/// sync loop leaves is its next wake-up time. Wait for a pass that started after
/// `after_ms` (interval 1h, as [`follow`] sets), so the commit made before it was seen
/// by the loop and passed over.
pub fn wait_loop_pass(d: &Daemon, after_ms: i64) {
    wait_for("the sync loop to pass after the commit", Duration::from_secs(20), || {
        status(d)["next_sync_at_ms"].as_i64().is_some_and(|n| n - 3_600_000 >= after_ms)
    });
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
