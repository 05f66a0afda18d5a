//! Issue 13, processes: actions run as their `user:`, a service's whole process tree is
//! contained (cgroup v2, or the subreaper fallback) so a stop leaves nothing behind and
//! restarts do not pile up, a database that lost its records never leads to a second
//! copy, and a stop by hand stays a stop across a daemon restart.
//!
//! These tests need root (the daemon runs as root in production and in CI). Not root is
//! a failure, unless `HERO_TEST_ALLOW_SKIP=1`.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::config_repo::{self, ConfigRepo};
use support::*;

/// Force the fallback containment in a daemon (documented in `contain.rs`).
const SUBREAPER: (&str, &str) = ("HERO_PROC_CONTAINMENT", "subreaper");

fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("HERO_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("skipped: needs root (HERO_TEST_ALLOW_SKIP=1)");
        return false;
    }
    panic!(
        "this test needs root (the daemon switches users and creates cgroups): run it as root, or set HERO_TEST_ALLOW_SKIP=1 to skip"
    );
}

/// A daemon on a fresh root; dropping it also kills what is left in its cgroups.
fn daemon(env: &[(&str, &str)]) -> Daemon {
    Daemon::start_env(&[], false, env)
}

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("has a pid") as u32
}

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_owned()
}

fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live processes of this root whose command line starts with `cmd`.
fn count(d: &Daemon, cmd: &str) -> usize {
    d.children().into_iter().filter(|&p| cmdline(p).starts_with(cmd)).count()
}

const AS_NOBODY: &str = r#"actions:
  - name: who
    interpreter: exec
    script: sh -c 'id -u; sleep 1000; :' ~/tilde
    process: true
    user: nobody
    health:
      - exec: test "$(id -u)" = 65534 && test "$HOME" = /nonexistent
services:
  - name: who
"#;

#[test]
fn a_service_with_user_nobody_runs_as_nobody_with_its_home_and_without_the_daemons_env() {
    if !need_root() {
        return;
    }
    let d = daemon(&[("HERO_TEST_DAEMON_ONLY", "planted-daemon-env"), ("SOPS_AGE_KEY", "AGE-SECRET-KEY-PLANTED")]);
    d.set(AS_NOBODY);
    // Running means the exec health check passed, and it passes only as nobody.
    let s = d.wait_status("who", "running (healthy as nobody)", |s| s["state"] == "running");
    let pid = pid_of(&s);
    assert_eq!(status_field(pid, "Uid").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
    assert_eq!(status_field(pid, "Gid").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
    assert_eq!(status_field(pid, "Groups"), "65534", "supplementary groups are nobody's, not root's");
    let env = environ(pid);
    for want in ["HOME=/nonexistent", "USER=nobody", "LOGNAME=nobody", "SHELL=/usr/sbin/nologin"] {
        assert!(env.iter().any(|e| e == want), "{want} missing from {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.contains("planted") || e.contains("PLANTED")),
        "the daemon's environment leaked into a process of another account: {env:?}"
    );
    assert!(cmdline(pid).contains("/nonexistent/tilde"), "~ is nobody's home: {}", cmdline(pid));
    // Its output still reaches the root-owned log file through the inherited descriptor.
    wait_for("the output `65534`", Duration::from_secs(10), || {
        let job = d.status("who")["job_id"].as_u64().unwrap();
        text(&d.cli(&["job", "logs", &job.to_string()]).stdout).contains("65534")
    });
}

#[test]
fn an_unknown_user_fails_the_start_with_a_clear_reason() {
    if !need_root() {
        return;
    }
    let d = daemon(&[]);
    d.set(&AS_NOBODY.replace("user: nobody", "user: no_such_user_h13"));
    let s = d.wait_status("who", "failed to start", |s| {
        s["last_exit"].as_str().is_some_and(|e| e.contains("no_such_user_h13"))
    });
    let why = s["last_exit"].as_str().unwrap();
    assert!(why.contains("`user: no_such_user_h13`: no such account on this host"), "{why}");
    assert!(why.contains("create it") && why.contains("fix the action's `user:`"), "{why}");
    assert!(count(&d, "sleep 1000") == 0, "nothing ran");
}

#[test]
fn user_is_refused_when_the_daemon_is_not_root() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(root.path(), Some(65534), Some(65534)).unwrap();
    let log = std::fs::File::create(root.path().join("daemon.log")).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "serve"])
        .env("HERO_ROOTDIR", root.path())
        .env("HERO_PROC_NO_AUTOSTART_DB", "1")
        .env_remove("HERO_PROC_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        Command::new(bin()).args(args).env("HERO_ROOTDIR", root.path()).env_remove("HERO_PROC_SOCKET").output().unwrap()
    };
    let start = Instant::now();
    while !cli(&["system", "info"]).status.success() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(root.path().join("daemon.log")).unwrap()
        );
        assert!(start.elapsed() < Duration::from_secs(20), "the unprivileged daemon did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = root.path().join("who.yaml");
    std::fs::write(&f, AS_NOBODY).unwrap();
    assert!(cli(&["service", "set", f.to_str().unwrap()]).status.success());
    let mut why = String::new();
    wait_for("the refusal", Duration::from_secs(20), || {
        let out = cli(&["--format", "json", "service", "status", "who"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        why = v["last_exit"].as_str().unwrap_or_default().to_owned();
        !why.is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(why.contains("`user: nobody`") && why.contains("runs as uid 65534, not root"), "{why}");
    assert!(why.contains("run the daemon as root or remove `user:`"), "{why}");
}

/// A main process whose descendant leaves the process group and the session: the
/// `setsid sh -c "sleep 7777 &"` of the issue.
const FORKER: &str = r#"actions:
  - name: forker
    interpreter: sh
    script: setsid sh -c 'sleep 7777 &'; exec sleep 1000
    process: true
    stop: { signal: SIGTERM, timeout: 2s }
services:
  - name: forker
"#;

fn escaped_processes_die_with_the_service(env: &[(&str, &str)], mode: &str) {
    let mut d = daemon(env);
    let info = d.json(&["system", "info"]);
    let containment = info["containment"].as_str().unwrap().to_owned();
    assert!(containment.starts_with(mode), "system info: {info}");
    let text_info = text(&d.cli(&["system", "info"]).stdout);
    assert!(text_info.contains(&format!("containment: {containment}")), "{text_info}");

    d.set(FORKER);
    let mut pid = pid_of(&d.wait_status("forker", "running", |s| s["state"] == "running"));
    wait_for("the escaped sleep", Duration::from_secs(10), || count(&d, "sleep 7777") == 1);
    let escaped: Vec<u32> = d.children().into_iter().filter(|&p| cmdline(p).starts_with("sleep 7777")).collect();
    assert_ne!(status_field(escaped[0], "NSsid"), pid.to_string(), "it really left the session");
    if let Some(base) = containment.strip_prefix("cgroup v2 at ") {
        let procs = std::fs::read_to_string(Path::new(base).join("core.forker/cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == pid.to_string()), "main in its cgroup: {procs}");
        assert!(procs.lines().any(|l| l == escaped[0].to_string()), "escaped one in the cgroup: {procs}");
    }

    for i in 0..5 {
        assert!(d.cli(&["service", "restart", "forker"]).status.success());
        let old = pid;
        pid = pid_of(&d.wait_status("forker", "restarted", |s| {
            s["state"] == "running" && s["pid"].as_u64().is_some_and(|p| p != old as u64)
        }));
        // The old tree is gone before the new one starts: never two.
        let n = count(&d, "sleep 7777");
        assert!(n <= 1, "restart {i}: piled up: {n}");
        wait_for("the new escaped sleep", Duration::from_secs(10), || count(&d, "sleep 7777") == 1);
    }

    // Re-attach keeps containment: after a daemon crash, a stop still reaches everything.
    d.kill9();
    d.spawn();
    assert_eq!(pid_of(&d.wait_status("forker", "re-attached", |s| s["state"] == "running")), pid);
    assert!(d.cli(&["service", "stop", "forker"]).status.success());
    d.wait_status("forker", "inactive", |s| s["state"] == "inactive");
    // Inactive is reported only once the whole tree is gone.
    assert_eq!(d.children(), Vec::<u32>::new(), "left behind after stop: {:?}", d.children());
    if let Some(base) = containment.strip_prefix("cgroup v2 at ") {
        assert!(!Path::new(base).join("core.forker").exists(), "an empty cgroup is removed");
    }
}

#[test]
fn a_double_forking_service_leaves_nothing_after_stop_and_does_not_pile_up_cgroup() {
    if !need_root() {
        return;
    }
    escaped_processes_die_with_the_service(&[], "cgroup v2 at ");
}

#[test]
fn a_double_forking_service_leaves_nothing_after_stop_and_does_not_pile_up_subreaper() {
    if !need_root() {
        return;
    }
    escaped_processes_die_with_the_service(&[SUBREAPER], "subreaper");
}

fn db_files(d: &Daemon) -> Vec<PathBuf> {
    let db = d.root().join("var/hero_proc/hero_proc.db");
    vec![db.clone(), db.with_extension("db-wal"), db.with_extension("db-shm")]
}

fn no_second_copy_after_the_database_is_lost(env: &[(&str, &str)]) {
    let mut d = daemon(env);
    d.set(FORKER);
    let old = pid_of(&d.wait_status("forker", "running", |s| s["state"] == "running"));
    wait_for("the escaped sleep", Duration::from_secs(10), || count(&d, "sleep 7777") == 1);
    d.kill9();
    for f in db_files(&d) {
        let _ = std::fs::remove_file(f);
    }
    d.spawn();
    // The new daemon knows nothing; setting the service again must not run it twice.
    d.set(FORKER);
    let new = pid_of(&d.wait_status("forker", "running", |s| s["state"] == "running"));
    assert_ne!(new, old);
    assert!(!alive(old), "the unknown old copy was stopped before the new one started");
    wait_for("one main and one escaped process", Duration::from_secs(10), || {
        count(&d, "sleep 1000") == 1 && count(&d, "sleep 7777") == 1
    });
    assert_eq!(d.children().len(), 2, "one copy only: {:?}", d.children());
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    assert!(log.contains("that no job of this daemon records"), "said so in the log:\n{log}");
}

#[test]
fn a_lost_database_does_not_start_a_second_copy_cgroup() {
    if !need_root() {
        return;
    }
    no_second_copy_after_the_database_is_lost(&[]);
}

#[test]
fn a_lost_database_does_not_start_a_second_copy_subreaper() {
    if !need_root() {
        return;
    }
    no_second_copy_after_the_database_is_lost(&[SUBREAPER]);
}

#[test]
fn a_stop_by_hand_stays_a_stop_across_a_daemon_restart_with_sync_suspended() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &config_repo::service("web", "hello"));
    repo.write("actions/api.yaml", &config_repo::service("api", "hello"));
    let first = repo.commit("two services");
    let mut d = config_repo::follow(&repo);
    config_repo::wait_applied(&d, &first);
    config_repo::wait_greeting(&d, "web", "hello");
    config_repo::wait_greeting(&d, "api", "hello");

    d.json(&["reconcile", "suspend"]);
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    d.wait_status("web", "inactive", |s| s["state"] == "inactive");

    d.kill9();
    d.spawn();
    // The engine boots before the daemon answers: its decision is already visible.
    let s = d.status("web");
    assert_eq!(s["state"], "inactive", "a stop by hand was forgotten by a restart: {s}");
    assert!(s["reason"].as_str().unwrap_or_default().contains("stopped by hand"), "{s}");
    assert_eq!(d.status("api")["state"], "running", "the other service was re-attached");
    assert_eq!(d.json(&["reconcile", "status"])["suspended"], true);

    // Someone starts it: the stop no longer holds, a restart keeps it running.
    assert!(d.cli(&["service", "start", "web"]).status.success());
    let pid = pid_of(&d.wait_status("web", "running", |s| s["state"] == "running"));
    d.kill9();
    d.spawn();
    assert_eq!(pid_of(&d.wait_status("web", "running", |s| s["state"] == "running")), pid);

    // Git changes the service: that ends a stop by hand too.
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    d.wait_status("web", "inactive", |s| s["state"] == "inactive");
    d.json(&["reconcile", "resume"]);
    repo.write("actions/web.yaml", &config_repo::service("web", "changed"));
    let second = repo.commit("web changed");
    assert!(d.cli(&["reconcile", "now"]).status.success());
    config_repo::wait_applied(&d, &second);
    config_repo::wait_greeting(&d, "web", "changed");
}

/// The database replaced by an older copy that knows the service but not its process
/// (restored from a backup): the process is not left running unknown, and a start does
/// not run a second copy.
#[test]
fn a_database_replaced_by_an_older_copy_does_not_start_a_second_copy() {
    if !need_root() {
        return;
    }
    let mut d = daemon(&[]);
    d.set(&FORKER.replace("services:\n  - name: forker\n", "services:\n  - name: forker\n    status: stop\n"));
    d.wait_status("forker", "defined, stopped", |s| s["state"] == "inactive");
    d.kill9();
    let backup = d.root().join("backup");
    std::fs::create_dir(&backup).unwrap();
    for f in db_files(&d).iter().filter(|f| f.exists()) {
        std::fs::copy(f, backup.join(f.file_name().unwrap())).unwrap();
    }
    d.spawn();
    assert!(d.cli(&["service", "start", "forker"]).status.success());
    let old = pid_of(&d.wait_status("forker", "running", |s| s["state"] == "running"));
    wait_for("the escaped sleep", Duration::from_secs(10), || count(&d, "sleep 7777") == 1);
    d.kill9();
    for f in db_files(&d) {
        let _ = std::fs::remove_file(&f);
        let saved = backup.join(f.file_name().unwrap());
        if saved.exists() {
            std::fs::copy(saved, f).unwrap();
        }
    }
    d.spawn();
    assert!(!alive(old), "the process no job records was stopped at boot");
    assert!(d.cli(&["service", "start", "forker"]).status.success());
    d.wait_status("forker", "running", |s| s["state"] == "running");
    wait_for("one main and one escaped process", Duration::from_secs(10), || {
        count(&d, "sleep 1000") == 1 && count(&d, "sleep 7777") == 1
    });
    assert_eq!(d.children().len(), 2, "one copy only: {:?}", d.children());
}

/// The nice value (field 19 of `/proc/PID/stat`, after the command's closing paren).
fn nice_of(stat: &str) -> i32 {
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after.split_whitespace().nth(16).expect("a nice field").parse().expect("a number")
}

const NICE_PROBES: &str = r#"actions:
  - name: svc
    interpreter: exec
    script: sleep 1000
    process: true
    health:
      - exec: test "$(nice)" = 0
  - name: once
    interpreter: exec
    script: nice
services:
  - name: svc
"#;

/// The supervisor's thread runs at a favoured nice value (so a machine busy with its
/// services still gets its starts, stops and checks done), and nothing it starts
/// inherits it: a service's process (born in its cgroup), a job of a run, and a health
/// probe all run at nice 0.
#[test]
fn the_supervisor_is_favoured_and_what_it_starts_runs_at_nice_zero() {
    if !need_root() {
        return;
    }
    let d = daemon(&[]);
    let pid = d.child.as_ref().expect("the daemon runs").id();
    let sup = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| t.ok())
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "hero_proc-sup"))
        .expect("the supervisor's thread");
    let sup_nice = nice_of(&std::fs::read_to_string(sup.path().join("stat")).unwrap());
    assert_eq!(sup_nice, -10, "the supervisor's thread is favoured");
    let main_nice = nice_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    assert_eq!(main_nice, 0, "only the supervisor's thread is: the RPC side keeps nice 0");

    d.set(NICE_PROBES);
    // Running means its health probe passed, and the probe passes only at nice 0.
    let s = d.wait_status("svc", "running (probe at nice 0)", |s| s["state"] == "running");
    let svc = pid_of(&s);
    assert_eq!(nice_of(&std::fs::read_to_string(format!("/proc/{svc}/stat")).unwrap()), 0, "the service's process");

    let out = d.cli(&["run", "submit", "once", "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let job = d.json(&["run", "list"])[0]["jobs"][0]["id"].as_i64().expect("the run's job");
    let out = d.json(&["job", "logs", &job.to_string()]);
    assert_eq!(out["lines"], serde_json::json!(["0"]), "a run's job prints its nice value");
}
