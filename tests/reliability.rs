//! Faults and races (issue 9), bounded to seconds: each ends in a clear status and the
//! daemon keeps serving.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;

const WEB: &str = "actions:\n  - name: web\n    interpreter: sh\n    script: exec sleep 1000\n    process: true\n    restart: { policy: always, delay: 20ms, max_delay: 100ms }\nservices:\n  - name: web\n";

#[test]
fn stop_racing_a_crash_leaves_no_process_and_start_racing_a_crash_leaves_one() {
    let d = Daemon::start();
    d.set(WEB);
    for round in 0..10 {
        let pid = d.wait_status("web", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap();
        // Crash and stop at the same moment.
        let root = d.root().to_owned();
        let stopper = std::thread::spawn(move || {
            std::process::Command::new(bin())
                .args(["service", "stop", "web"])
                .env("HERO_ROOTDIR", root)
                .output()
                .unwrap()
        });
        let before = d.jobs().len();
        let killed_at = support::config_repo::now_ms();
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(stopper.join().unwrap().status.success());
        // The CLI takes a few ms to connect, so the crash may be handled first and its
        // restart (20ms backoff) may start one job before the stop lands; the stop then
        // ends it. What must never happen is a job that starts after the stop answered.
        let jobs = d.jobs().len();
        assert!(jobs <= before + 1, "round {round}: more than one restart before the stop: {:?}", d.jobs());
        // A stop wins over the crash's restart: nothing may come back.
        d.wait_status("web", "inactive", |s| s["state"] == "inactive");
        // The crash's exit is recorded (no job left live) ...
        wait_for("the killed job to be recorded as ended", Duration::from_secs(10), || {
            d.jobs().iter().all(|(_, p)| p != "pending" && p != "running")
        });
        // ... and if the engine scheduled a restart for it, its own announced backoff
        // (at most max_delay, 100ms) has run out: a restart would be a new job by now.
        let restart_at = d
            .events("hero_proc.service")
            .iter()
            .filter(|e| e["ts_ms"].as_i64().unwrap_or(0) >= killed_at - 5)
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("restart in")))
            .map(|e| e["ts_ms"].as_i64().unwrap() + 100)
            .max();
        if let Some(t) = restart_at {
            wait_for("the announced backoff to run out", Duration::from_secs(5), || {
                support::config_repo::now_ms() > t + 50
            });
        }
        assert_eq!(d.jobs().len(), jobs, "round {round}: a job started after stop: {:?}", d.jobs());
        assert!(d.children().is_empty(), "round {round}: a process came back after stop: {:?}", d.children());
        assert!(d.cli(&["service", "start", "web"]).status.success());
    }
    let s = d.wait_status("web", "running", |s| s["state"] == "running");
    assert_eq!(d.children(), vec![s["pid"].as_u64().unwrap() as u32]);
}

#[test]
fn children_that_fork_grandchildren_are_cleaned_up_with_their_group() {
    let d = Daemon::start();
    d.set("actions:\n  - name: forky\n    interpreter: sh\n    script: for i in 1 2 3 4 5; do sleep 1000 & done; exec sleep 1000\n    process: true\n    restart: { policy: never }\nservices:\n  - name: forky\n");
    let s = d.wait_status("forky", "running", |s| s["state"] == "running");
    wait_for("six processes", Duration::from_secs(5), || d.children().len() == 6);
    // The main process dies: the rest of its group must not linger as orphans.
    unsafe { libc::kill(s["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    wait_for("the whole group to be gone", Duration::from_secs(5), || d.children().is_empty());
    // The group can be gone a moment before the engine records the exit: wait for the record.
    d.wait_status("forky", "failed", |s| s["state"] != "running");
    assert_eq!(d.status("forky")["state"], "failed");
}

#[test]
fn a_read_only_database_gives_a_clear_error_and_the_daemon_keeps_serving() {
    let d = Daemon::start();
    d.set("actions:\n  - name: t\n    script: 'true'\n");
    assert!(d.cli(&["run", "submit", "t", "--wait"]).status.success());
    let state = d.root().join("var/hero_proc");
    // Root ignores file modes, so make the database and its WAL immutable (as root) or
    // drop write permission (as any other user, where modes are enforced).
    let db = state.join("hero_proc.db");
    let wal = state.join("hero_proc.db-wal");
    let root = unsafe { libc::geteuid() } == 0;
    let chattr = |flag: &str| {
        [&db, &wal]
            .iter()
            .all(|f| std::process::Command::new("chattr").arg(flag).arg(f).status().is_ok_and(|s| s.success()))
    };
    if root && !chattr("+i") {
        chattr("-i");
        support::require::missing(
            "`chattr +i` on the state folder (as root, file modes do not stop writes)",
            "apt-get install e2fsprogs and run on a filesystem with the immutable flag (ext4, xfs, btrfs), with CAP_LINUX_IMMUTABLE",
        );
        return;
    }
    if !root {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let out = d.cli(&["run", "submit", "t", "--wait"]);
    let text_out = text(&out.stderr);
    if root {
        assert!(chattr("-i"), "chattr -i failed: {} and its WAL stay immutable", db.display());
    } else {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(!out.status.success());
    assert!(
        text_out.contains("read-only") || text_out.contains("readonly") || text_out.contains("permission"),
        "{text_out}"
    );
    // Still serving, and once writable again, working.
    assert!(d.cli(&["system", "info"]).status.success());
    assert!(d.cli(&["run", "submit", "t", "--wait"]).status.success());
    assert_eq!(d.json(&["job", "list", "--phase", "succeeded"]).as_array().unwrap().len(), 2, "no lost rows");
}

#[test]
fn many_rpc_clients_at_once_get_answers() {
    let d = Daemon::start();
    for i in 0..20 {
        d.set(&WEB.replace("web", &format!("svc{i}")));
    }
    wait_for("20 running", Duration::from_secs(20), || {
        d.json(&["service", "list"]).as_array().unwrap().iter().filter(|s| s["state"] == "running").count() == 20
    });
    let sock = d.socket();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let latencies = rt.block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let sock = sock.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = hero_proc_rpc::Client::connect(&sock).await.unwrap();
                let mut lat = Vec::new();
                for _ in 0..40 {
                    let t = std::time::Instant::now();
                    let v = c.call_value("service.list", serde_json::json!({})).await.expect("no errors under load");
                    assert_eq!(v.as_array().unwrap().len(), 20);
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let mut l = latencies;
    l.sort();
    let p99 = l[l.len() * 99 / 100];
    eprintln!("50 clients x 40 calls: p50 {:?}, p99 {:?}", l[l.len() / 2], p99);
    assert_eq!(l.len(), 2000);
    // About 5x the 100-120 ms measured on the 2-core machine with other builds running.
    assert!(p99 < Duration::from_millis(600), "p99 {p99:?} over 600 ms (p50 {:?})", l[l.len() / 2]);
}

/// Unmounts a tmpfs when dropped (after the daemon that used it).
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_the_daemon_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(root.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        support::require::missing(
            "`mount -t tmpfs` (a small filesystem to fill)",
            "run as root or with CAP_SYS_ADMIN (CI runs as root)",
        );
        return;
    }
    let _mount = Mount(root.path().to_owned());
    let mut d = Daemon { root, child: None, args: Vec::new(), check_hero_db: false, env: Vec::new() };
    d.spawn();
    d.set("actions:\n  - name: t\n    script: 'true'\n");
    assert!(d.cli(&["run", "submit", "t", "--wait"]).status.success());

    // Fill the filesystem the database, its WAL and the log store live on.
    let fill = d.root().join("fill");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&fill).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failures = Vec::new();
    for _ in 0..20 {
        let out = d.cli(&["run", "submit", "t", "--wait"]);
        if !out.status.success() {
            failures.push(text(&out.stderr));
            break;
        }
    }
    let err = failures.first().expect("some write fails on a full disk");
    eprintln!("on a full disk the client sees: {err}");
    assert!(err.contains("disk is full") || err.contains("No space") || err.contains("full"), "a clear error: {err}");
    assert!(d.cli(&["system", "info"]).status.success(), "still serving on a full disk");
    assert!(d.cli(&["service", "list"]).status.success());

    // Space again: works, and the earlier rows are all there.
    std::fs::remove_file(&fill).unwrap();
    assert!(d.cli(&["run", "submit", "t", "--wait"]).status.success());
    let ok = d.json(&["job", "list", "--phase", "succeeded"]).as_array().unwrap().len();
    assert!(ok >= 2, "the jobs that succeeded before are still recorded: {ok}");
    let out = d.cli(&["system", "info"]);
    assert!(out.status.success());
}

#[test]
fn names_with_path_traversal_are_refused_over_raw_rpc() {
    let d = Daemon::start();
    let sock = d.socket();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut c = hero_proc_rpc::Client::connect(&sock).await.unwrap();
        let action = |name: &str| {
            serde_json::json!({ "action": {
                "name": name, "context": "core", "interpreter": "exec", "script": "true", "process": false,
                "restart": { "policy": "on-failure", "delay": "1s", "max_delay": "1m", "max_retries": 0 },
                "stop": { "signal": "SIGTERM", "timeout": "10s" } } })
        };
        // The same request with a good name is accepted: the refusals below are the names.
        c.call_value("action.set", action("fine_name")).await.expect("a valid action");
        c.call_value("action.delete", serde_json::json!({ "name": "fine_name" })).await.unwrap();
        for name in ["../../etc/passwd", "a/b", "..", "UPPER", "x y", ""] {
            let e = c.call_value("action.set", action(name)).await.expect_err(name);
            assert_eq!(e.code(), Some(hero_proc_rpc::ErrorCode::Invalid), "{name}: {e}");
            let service = serde_json::json!({ "service": {
                "name": "ok", "context": name, "status": "stop", "actions": ["ok"] } });
            let e = c.call_value("service.set", service).await.expect_err(name);
            assert_eq!(e.code(), Some(hero_proc_rpc::ErrorCode::Invalid), "{name}: {e}");
        }
        let v = c.call_value("action.list", serde_json::json!({})).await.unwrap();
        assert!(v.as_array().unwrap().is_empty(), "nothing was stored: {v}");
    });
}

#[test]
fn a_service_crash_looping_for_a_long_time_is_reported_and_costs_little() {
    let secs: u64 = std::env::var("HERO_CRASH_LOOP_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let d = Daemon::start();
    d.set(
        "actions:\n  - name: flaky\n    interpreter: sh\n    script: 'echo boom >&2; exit 3'\n    process: true\n    restart: { policy: always, delay: 20ms, max_delay: 200ms }\nservices:\n  - name: flaky\n",
    );
    let pid = d.child.as_ref().unwrap().id();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap())
            })
            .unwrap()
    };
    d.wait_status("flaky", "crash-looping", |s| s["crash_loop"] == true);
    let rss_start = rss();
    let start = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(secs) {
        let t = std::time::Instant::now();
        let s = d.status("flaky");
        worst = worst.max(t.elapsed());
        assert_eq!(s["crash_loop"], true, "{s}");
        let reason = s["reason"].as_str().unwrap_or("");
        assert!(s["last_exit"].as_str().unwrap_or("").contains('3') || reason.contains('3'), "says why: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = d.status("flaky");
    let restarts = s["restarts"].as_u64().unwrap();
    let rss_end = rss();
    eprintln!(
        "crash loop for {secs} s: {restarts} restarts, slowest status answer {worst:?}, daemon RSS {rss_start} kB -> {rss_end} kB"
    );
    assert!(restarts >= secs * 3, "it kept restarting with its capped backoff: {restarts}");
    assert!(worst < Duration::from_secs(2), "the daemon kept answering: {worst:?}");
    assert!(rss_end < rss_start + 20 * 1024, "memory does not grow with restarts: {rss_start} -> {rss_end} kB");
    // Fixing it (a new spec) ends the loop.
    d.set("actions:\n  - name: flaky\n    interpreter: sh\n    script: 'exec sleep 600'\n    process: true\nservices:\n  - name: flaky\n");
    assert!(d.cli(&["service", "restart", "flaky"]).status.success());
    d.wait_status("flaky", "running", |s| s["state"] == "running");
}
