//! End to end: the real daemon and CLI, real processes, a real SQLite file, a real
//! Unix socket. Each test has its own HERO_ROOTDIR.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::*;

const WEB: &str = "actions:\n  - name: web\n    interpreter: sh\n    script: echo web up; exec sleep 1000\n    process: true\n    restart: { policy: always, delay: 100ms, max_delay: 1s }\nservices:\n  - name: web\n";

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("has a pid") as u32
}

#[test]
fn services_survive_a_daemon_kill_and_are_reattached_not_duplicated() {
    let mut d = Daemon::start();
    d.set(WEB);
    d.set(&WEB.replace("web", "api"));
    let web = pid_of(&d.wait_status("web", "running", |s| s["state"] == "running"));
    let api = pid_of(&d.wait_status("api", "running", |s| s["state"] == "running"));
    assert_eq!(d.children(), {
        let mut v = vec![web, api];
        v.sort();
        v
    });

    let jobs = d.jobs();
    d.kill9();
    assert!(alive(web) && alive(api), "a daemon crash must not take its services with it");
    d.spawn();
    let s = d.wait_status("web", "running", |s| s["state"] == "running");
    assert_eq!(pid_of(&s), web, "re-attached to the same process");
    assert_eq!(pid_of(&d.status("api")), api);
    // The engine re-attached both and answered after its boot pass (which starts what has
    // no process): a duplicate would be a job recorded since, so the job list is the proof.
    let reattached = |pid: u32| {
        d.events("hero_proc.engine").iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("re-attached to ") && m.ends_with(&format!("(pid {pid})")))
        })
    };
    wait_for("both re-attach events", Duration::from_secs(10), || reattached(web) && reattached(api));
    assert_eq!(d.jobs(), jobs, "no job started for a re-attached service");
    assert_eq!(d.children().len(), 2, "no duplicates: {:?}", d.children());

    // A re-attached process that dies is noticed (pidfd) and restarted.
    unsafe { libc::kill(web as i32, libc::SIGKILL) };
    let s = d.wait_status("web", "restarted", |s| s["state"] == "running" && s["pid"].as_u64() != Some(web as u64));
    assert_eq!(s["restarts"], 1);
    assert!(!alive(web));
}

#[test]
fn a_killed_service_is_restarted_with_backoff_and_a_crash_loop_is_visible() {
    let d = Daemon::start();
    d.set(WEB);
    let first = pid_of(&d.wait_status("web", "running", |s| s["state"] == "running"));
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let s = d.wait_status("web", "restarted", |s| s["state"] == "running" && s["pid"].as_u64() != Some(first as u64));
    assert_eq!(s["restarts"], 1);
    // /proc/PID/environ reads empty for a moment around exec: wait for the count to settle.
    wait_for("exactly one process of web", Duration::from_secs(5), || d.children().len() == 1);

    d.set("actions:\n  - name: crashy\n    interpreter: sh\n    script: exit 3\n    process: true\n    restart: { policy: on-failure, delay: 50ms, max_delay: 200ms }\nservices:\n  - name: crashy\n");
    let s = d.wait_status("crashy", "crash looping", |s| s["crash_loop"] == true);
    assert!(s["reason"].as_str().unwrap().contains("crash loop"), "{s}");
    assert!(s["last_exit"].as_str().unwrap().contains("exit code 3"), "{s}");
}

#[test]
fn a_term_ignoring_service_is_killed_after_its_stop_timeout_with_its_children() {
    let d = Daemon::start();
    d.set("actions:\n  - name: stubborn\n    interpreter: sh\n    script: trap '' TERM; sleep 1000 & wait\n    process: true\n    stop: { signal: SIGTERM, timeout: 500ms }\nservices:\n  - name: stubborn\n");
    d.wait_status("stubborn", "running", |s| s["state"] == "running");
    wait_for("the grandchild", Duration::from_secs(5), || d.children().len() == 2);
    let t = Instant::now();
    assert!(d.cli(&["service", "stop", "stubborn"]).status.success());
    d.wait_status("stubborn", "inactive", |s| s["state"] == "inactive");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(450), "stopped before the timeout: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    wait_for("the whole group to be gone", Duration::from_secs(3), || d.children().is_empty());
}

#[test]
fn a_start_right_after_a_stop_brings_the_service_back() {
    // A service that takes a while to stop (it ignores SIGTERM for 300 ms), stopped and
    // started again at once: the start is taken ("starting", not "already running") and
    // the service runs again, with a new process, once the old one is gone.
    let d = Daemon::start();
    d.set("actions:\n  - name: slow\n    interpreter: sh\n    script: trap 'sleep 0.3; exit 0' TERM; sleep 1000 & wait\n    process: true\n    stop: { signal: SIGTERM, timeout: 5s }\nservices:\n  - name: slow\n");
    let first = pid_of(&d.wait_status("slow", "running", |s| s["state"] == "running"));
    assert!(d.cli(&["service", "stop", "slow"]).status.success());
    let out = d.cli(&["service", "start", "slow"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "core/slow: starting");
    d.wait_status("slow", "running with a new process", |s| {
        s["state"] == "running" && s["pid"].as_u64() != Some(first as u64)
    });
    wait_for("only the new process", Duration::from_secs(5), || !d.children().contains(&first));
}

#[test]
fn concurrent_restarts_leave_exactly_one_process() {
    let d = Daemon::start();
    d.set(WEB);
    let first = pid_of(&d.wait_status("web", "running", |s| s["state"] == "running"));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let root = d.root().to_owned();
            std::thread::spawn(move || {
                std::process::Command::new(bin())
                    .args(["service", "restart", "web"])
                    .env("HERO_ROOTDIR", root)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    d.wait_status("web", "running again", |s| s["state"] == "running" && s["pid"].as_u64() != Some(first as u64));
    // Every restart call has returned: the jobs settle to exactly one live job of web (a
    // second copy never does, and fails this wait), then exactly its process.
    let live = || -> Vec<(i64, String)> {
        d.jobs().into_iter().filter(|(_, p)| matches!(p.as_str(), "pending" | "running")).collect()
    };
    wait_for("one live job of web after the restarts", Duration::from_secs(10), || live().len() == 1);
    let s = d.wait_status("web", "running", |s| s["state"] == "running");
    wait_for("exactly one process of web", Duration::from_secs(5), || d.children() == vec![pid_of(&s)]);
}

#[test]
fn a_second_daemon_on_the_same_root_refuses_and_names_the_holder() {
    let d = Daemon::start();
    let out = std::process::Command::new(bin()).arg("serve").env("HERO_ROOTDIR", d.root()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let pid = d.child.as_ref().unwrap().id();
    assert!(err.contains(&format!("another hero_proc daemon (pid {pid}) is already running")), "{err}");
    // The first one still serves.
    assert!(d.cli(&["system", "info"]).status.success());
}

#[test]
fn a_spec_that_cannot_run_fails_its_job_not_the_daemon() {
    let d = Daemon::start();
    d.set("actions:\n  - name: ghost\n    script: /nonexistent/bin/ghost --serve\n  - name: lost\n    script: 'true'\n    cwd: /nonexistent/dir\n");
    let out = d.cli(&["run", "submit", "ghost", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let jobs = d.json(&["job", "list"]);
    let job = &jobs[0];
    assert_eq!(job["phase"], "failed");
    assert!(job["error"].as_str().unwrap().contains("cannot start `/nonexistent/bin/ghost`: No such file"), "{job}");
    let out = d.cli(&["run", "submit", "lost", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let jobs = d.json(&["job", "list", "--limit", "1"]);
    assert!(
        jobs[0]["error"].as_str().unwrap().contains("working directory `/nonexistent/dir` does not exist"),
        "{}",
        jobs[0]
    );
    // The reason is in the log store too, and the daemon keeps serving.
    let events = d.json(&["log", "query", "--source", "hero_proc.job"]);
    assert!(
        events.as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap().contains("/nonexistent/bin/ghost"))
    );
    assert!(d.cli(&["system", "info"]).status.success());
}

/// A program the daemon finds but the kernel cannot run (its `#!` interpreter is
/// missing) fails in the child after the daemon moved on (it does not wait for a child's
/// exec): its job ends failed with why, no exit code; a service on it is retried like a
/// crash and says why.
#[test]
fn a_program_whose_exec_fails_in_the_child_fails_its_job_and_its_service_is_retried() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let script = d.root().join("halfway");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = script.display();
    d.set(&format!(
        "actions:\n  - name: halfway\n    script: {s}\n  - name: halfway_svc\n    script: {s}\n    process: true\n    restart: {{ policy: on-failure, delay: 50ms, max_delay: 200ms }}\nservices:\n  - name: halfway_svc\n"
    ));
    let out = d.cli(&["run", "submit", "halfway", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let run = d.json(&["run", "list", "--limit", "1"])[0].clone();
    let job = &run["jobs"][0];
    assert_eq!(job["phase"], "failed", "{job}");
    assert_eq!(job["exit_code"], serde_json::Value::Null, "{job}");
    let why = job["error"].as_str().unwrap();
    assert!(why.starts_with("cannot start: exec failed: No such file or directory"), "{job}");
    assert!(why.contains("`#!` interpreter"), "{job}");
    let st = d.wait_status("halfway_svc", "retried like a crash", |s| s["restarts"].as_u64().unwrap_or(0) >= 2);
    assert!(st["last_exit"].as_str().unwrap().contains("cannot start: exec failed"), "{st}");
    assert!(d.cli(&["system", "info"]).status.success());
}

#[test]
fn runs_order_jobs_by_depends_on_and_capture_output() {
    let d = Daemon::start();
    let marker = d.root().join("order.txt");
    let m = marker.display();
    d.set(&format!(
        "actions:\n  - name: build\n    interpreter: sh\n    script: sleep 0.2; echo build >> {m}\n  - name: test\n    interpreter: sh\n    script: echo test >> {m}; echo tested; echo warn >&2\n    depends_on: [build]\n  - name: broken\n    interpreter: sh\n    script: exit 7\n  - name: after_broken\n    interpreter: sh\n    script: echo never >> {m}\n    depends_on: [broken]\n"
    ));
    let out = d.cli(&["run", "submit", "test", "build", "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "build\ntest\n");
    let run = d.json(&["run", "list"])[0].clone();
    let test_job =
        run["jobs"].as_array().unwrap().iter().find(|j| j["action"] == "core/test").unwrap()["id"].as_i64().unwrap();
    let logs = d.json(&["job", "logs", &test_job.to_string()]);
    assert_eq!(logs["lines"], serde_json::json!(["tested", "warn"]));

    let out = d.cli(&["run", "submit", "after_broken", "broken", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let run = d.json(&["run", "list"])[0].clone();
    assert_eq!(run["phase"], "failed");
    let phases: Vec<_> = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["action"].as_str().unwrap().to_owned(), j["phase"].as_str().unwrap().to_owned()))
        .collect();
    assert!(phases.contains(&("core/broken".into(), "failed".into())), "{phases:?}");
    assert!(phases.contains(&("core/after_broken".into(), "cancelled".into())), "{phases:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "build\ntest\n");
}

/// A job that printed nothing gives its output file back to the spare pool when it ends,
/// so the next job's file is a rename, not a new inode, and its output reads as no lines.
/// A job whose background child (one that left the job's process group, which is killed
/// with the job) still holds its stdout keeps its file: what the child prints later is
/// that job's, never a later job's.
#[test]
fn a_quiet_jobs_file_is_reused_and_one_still_held_stays_with_its_job() {
    let d = Daemon::start();
    let go = d.root().join("go");
    d.set(&format!(
        "actions:\n  - name: quiet\n    interpreter: exec\n    script: 'true'\n  - name: leaver\n    interpreter: sh\n    script: |\n      setsid sh -c 'touch {ready}; i=0; while [ ! -e {go} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; echo late' &\n      while [ ! -e {ready} ]; do sleep 0.01; done\n",
        ready = d.root().join("ready").display(),
        go = go.display()
    ));
    let jobs_dir = d.root().join("var/hero_proc/logs/jobs");
    let job_of_last_run = || d.json(&["run", "list"])[0]["jobs"][0]["id"].as_i64().unwrap();
    let out = d.cli(&["run", "submit", "leaver", "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let leaver = job_of_last_run();
    let mut quiet = Vec::new();
    for _ in 0..3 {
        let out = d.cli(&["run", "submit", "quiet", "--wait"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let job = job_of_last_run();
        let file = jobs_dir.join(format!("{job}.log"));
        wait_for("a quiet job's empty file to go back to the pool", Duration::from_secs(10), || !file.exists());
        assert_eq!(d.json(&["job", "logs", &job.to_string()])["lines"], serde_json::json!([]));
        quiet.push(job);
    }
    assert!(jobs_dir.join(format!("{leaver}.log")).exists(), "a file a process still holds stays");
    std::fs::write(&go, "").unwrap();
    wait_for("the leaver's background child to print", Duration::from_secs(20), || {
        d.json(&["job", "logs", &leaver.to_string()])["lines"] == serde_json::json!(["late"])
    });
    for job in quiet {
        assert_eq!(d.json(&["job", "logs", &job.to_string()])["lines"], serde_json::json!([]), "job {job}");
    }
}

/// The supervisor keeps decoded actions between jobs: a changed action must be what the
/// very next run and the next start of a service use.
#[test]
fn a_changed_action_is_what_the_next_run_and_the_next_start_use() {
    let d = Daemon::start();
    let said = d.root().join("said.txt");
    let s = said.display();
    let last_output = |d: &Daemon| {
        let run = d.json(&["run", "list"])[0].clone();
        let job = run["jobs"][0]["id"].as_i64().unwrap();
        d.json(&["job", "logs", &job.to_string()])["lines"].clone()
    };
    for word in ["one", "two", "three"] {
        d.set(&format!("actions:\n  - name: say\n    interpreter: sh\n    script: echo {word}\n"));
        let out = d.cli(&["run", "submit", "say", "--wait"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(last_output(&d), serde_json::json!([word]), "the run used the action as last set");
    }
    for word in ["first", "second"] {
        d.set(&format!(
            "actions:\n  - name: srv\n    interpreter: sh\n    script: echo {word} > {s}; exec sleep 1000\n    process: true\nservices:\n  - name: srv\n"
        ));
        let out = d.cli(&["service", "restart", "srv"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(&said).map(|t| t.trim() != word).unwrap_or(true) {
            assert!(Instant::now() < deadline, "the service's new start did not run the changed action ({word})");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn requires_waits_for_health_and_one_shot_timeout_is_enforced() {
    let d = Daemon::start();
    let sock = d.root().join("db.sock");
    d.set(&format!(
        "actions:\n  - name: db\n    interpreter: python3\n    script: |\n      import socket, time\n      time.sleep(0.3)\n      s = socket.socket(socket.AF_UNIX)\n      s.bind('{s}')\n      s.listen()\n      time.sleep(1000)\n    process: true\n    health:\n      - unix_socket: {s}\n  - name: app\n    interpreter: sh\n    script: exec sleep 1000\n    process: true\nservices:\n  - name: app\n    requires: [db]\n  - name: db\n",
        s = sock.display()
    ));
    let app = d.wait_status("app", "running", |s| s["state"] == "running");
    let db = d.status("db");
    assert_eq!(db["state"], "running");
    assert!(
        db["since_ms"].as_i64() <= app["since_ms"].as_i64(),
        "app started before db was healthy: db {db} app {app}"
    );
    assert_eq!(db["health"][0]["healthy"], true);

    d.set("actions:\n  - name: slow\n    interpreter: sh\n    script: sleep 30\n    timeout: 300ms\n");
    let t = Instant::now();
    let out = d.cli(&["run", "submit", "slow", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(5));
    let job = &d.json(&["job", "list", "--limit", "1"])[0];
    assert_eq!(job["error"], "timed out");
}

#[test]
fn rpc_surface_discovery_health_and_permissions() {
    let d = Daemon::start();
    let sock = d.socket();
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    for dir in ["var/hero_proc", "var/sockets", "var/hero_proc/logs"] {
        let mode = std::fs::metadata(d.root().join(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
    let db_mode = std::fs::metadata(d.root().join("var/hero_proc/hero_proc.db")).unwrap().permissions().mode() & 0o777;
    assert_eq!(db_mode, 0o600);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = hero_proc_rpc::Client::connect(&sock).await.unwrap();
        let (code, body) = c.get("/health").await.unwrap();
        assert_eq!((code, body.trim()), (200, "ok"));
        let (code, body) = c.get("/openrpc.json").await.unwrap();
        assert_eq!(code, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let discovered: serde_json::Value = c.call_value("rpc.discover", serde_json::json!({})).await.unwrap();
        assert_eq!(doc, discovered);
        // Every documented method answers (possibly with a param error), none is "not found".
        for m in doc["methods"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            match c.call_value(name, serde_json::json!({})).await {
                Ok(_) => {}
                Err(hero_proc_rpc::ClientError::Rpc { code, message }) => {
                    assert_ne!(code, -32601, "{name} is documented but not served: {message}");
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        // Stable error codes with actionable messages.
        match c.call_value("service.start", serde_json::json!({ "name": "nope" })).await {
            Err(e @ hero_proc_rpc::ClientError::Rpc { .. }) => {
                assert_eq!(e.code(), Some(hero_proc_rpc::ErrorCode::NotFound));
                assert!(e.to_string().contains("core/nope"));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn cron_schedule_creates_a_job_per_tick() {
    let d = Daemon::start();
    // `clock` ticks on the same schedule: its runs prove the scheduler kept firing.
    d.set("actions:\n  - name: tick\n    interpreter: sh\n    script: echo tick\n    schedule: '* * * * * *'\n  - name: clock\n    interpreter: sh\n    script: echo clock\n    schedule: '* * * * * *'\n");
    let runs = |d: &Daemon, of: &str| {
        let label = format!("schedule core/{of}");
        d.json(&["run", "list", "--limit", "100"]).as_array().unwrap().iter().filter(|r| r["label"] == label).count()
    };
    let succeeded = |d: &Daemon, of: &str| {
        let label = format!("schedule core/{of}");
        d.json(&["run", "list", "--limit", "100"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["label"] == label && r["phase"] == "succeeded")
            .count()
    };
    wait_for("two scheduled runs", Duration::from_secs(10), || succeeded(&d, "tick") >= 2);
    // Deleting the action stops the schedule.
    assert!(d.cli(&["action", "delete", "tick"]).status.success());
    // One tick of the clock after the delete (a run of tick already under way is counted
    // by then), then two more ticks: tick may not have fired on either.
    let clock = runs(&d, "clock");
    wait_for("a clock tick after the delete", Duration::from_secs(10), || runs(&d, "clock") > clock);
    let before = runs(&d, "tick");
    let clock = runs(&d, "clock");
    wait_for("two more clock ticks", Duration::from_secs(10), || runs(&d, "clock") >= clock + 2);
    assert_eq!(runs(&d, "tick"), before, "no runs after the action is gone");
}

/// `run.submit` answers the run as it was recorded (built from what the engine wrote,
/// not read back): the same run and jobs `run get` reads from the store, with the jobs
/// still pending.
#[test]
fn run_submit_answers_the_run_as_recorded() {
    let d = Daemon::start();
    d.set(
        "actions:\n  - name: slow\n    interpreter: sh\n    script: exec sleep 30\n  - name: after\n    interpreter: sh\n    script: 'true'\n    depends_on: [slow]\n",
    );
    let answer = d.json(&["run", "submit", "slow", "after", "--label", "two steps"]);
    let id = answer["id"].as_i64().expect("an id");
    let stored = d.json(&["run", "get", &id.to_string()]);
    for field in ["id", "label", "created_at_ms", "finished_at_ms"] {
        assert_eq!(answer[field], stored[field], "{field}: answer {answer} stored {stored}");
    }
    assert_eq!(answer["label"], "two steps");
    assert_eq!(answer["phase"], "running");
    let (a, s) = (answer["jobs"].as_array().unwrap(), stored["jobs"].as_array().unwrap());
    assert_eq!(a.len(), 2, "{answer}");
    assert_eq!(a.len(), s.len());
    for (a, s) in a.iter().zip(s) {
        for field in ["id", "run_id", "action", "service", "attempt", "created_at_ms"] {
            assert_eq!(a[field], s[field], "job {field}: answer {a} stored {s}");
        }
        assert_eq!(a["phase"], "pending", "{a}");
    }
    assert_eq!(a[0]["action"], "core/slow");
    assert_eq!(a[1]["action"], "core/after");
    assert!(d.cli(&["run", "cancel", &id.to_string()]).status.success());
}

/// The same command shapes give the same exit codes: deleting what does not exist fails
/// like getting it; a JSON caller gets its error as JSON; an empty query says so.
#[test]
fn deletes_of_nothing_fail_and_errors_follow_the_output_format() {
    let d = Daemon::start();
    for args in [&["secret", "delete", "nosuch"][..], &["action", "delete", "nosuch"], &["service", "delete", "nosuch"]]
    {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains("nosuch"), "{args:?}: {err}");
        let get = d.cli(&[args[0], "get", "nosuch"]);
        assert_eq!(get.status.code(), Some(1), "get and delete agree: {args:?}");
    }
    let out = d.cli(&["--format", "json", "secret", "delete", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", text(&out.stderr)));
    assert!(v["error"].as_str().is_some_and(|e| e.contains("not found")), "{v}");
    let q = d.cli(&["log", "query", "--contains", "no-such-event-text-5e1f"]);
    assert!(q.status.success());
    assert_eq!(text(&q.stdout).trim(), "no events");
}

/// `hero_proc status` is a health gate: 0 when all is well, 3 naming each cause when
/// not, 1 when there is no daemon to ask.
#[test]
fn status_is_a_gate_that_names_its_causes() {
    let d = Daemon::start();
    d.set("actions:\n  - name: hero_db\n    script: /bin/sleep 600\n    process: true\n  - name: web\n    script: /bin/sleep 600\n    process: true\nservices:\n  - name: hero_db\n  - name: web\n");
    d.wait_status("web", "running", |s| s["state"] == "running");
    d.wait_status("hero_db", "running", |s| s["state"] == "running");
    let ok = d.cli(&["status"]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", text(&ok.stdout), text(&ok.stderr));
    let shown = text(&ok.stdout);
    assert!(
        shown.contains("status:    healthy") && shown.contains("core/web") && shown.contains("no repository"),
        "{shown}"
    );
    // A wanted service stopped by hand: degraded, and said why.
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    d.wait_status("web", "stopped", |s| s["state"] == "inactive");
    let bad = d.cli(&["status"]);
    assert_eq!(bad.status.code(), Some(3), "{}", text(&bad.stdout));
    assert!(text(&bad.stdout).contains("- service core/web: wanted running, is inactive"), "{}", text(&bad.stdout));
    let json = d.cli(&["--format", "json", "status"]);
    assert_eq!(json.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["causes"], serde_json::json!(["service core/web: wanted running, is inactive"]));
    // Quiet: only the verdict when degraded, nothing when healthy.
    assert!(d.cli(&["service", "start", "web"]).status.success());
    d.wait_status("web", "running", |s| s["state"] == "running");
    let q = d.cli(&["-q", "status"]);
    assert_eq!((q.status.code(), text(&q.stdout)), (Some(0), String::new()));
    // No daemon: exit 1.
    let none = std::process::Command::new(bin())
        .arg("status")
        .env("HERO_ROOTDIR", tempfile::tempdir().unwrap().path())
        .env_remove("HERO_PROC_SOCKET")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1), "{}", text(&none.stderr));
}

/// A follower process (`... logs -f`): its stdout and stderr lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str]) -> Follower {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin())
            .args(args)
            .env("HERO_ROOTDIR", d.root())
            .env_remove("HERO_PROC_SOCKET")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Follower { child, lines: rx, seen: Vec::new() }
    }

    /// Wait for a line containing `needle`; all lines seen so far are kept.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with `{needle}`; seen: {:?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn job_logs_follow_prints_new_output_until_the_job_ends() {
    let d = Daemon::start();
    d.set("actions:\n  - name: slow\n    interpreter: bash\n    script: 'for i in 1 2 3 4; do echo line$i; sleep 0.3; done'\n");
    let run = d.json(&["run", "submit", "slow"]);
    let job = run["jobs"][0]["id"].as_i64().unwrap().to_string();
    let mut f = Follower::start(&d, &["job", "logs", &job, "-f"]);
    f.wait_line("line1");
    f.wait_line("line4");
    // It ends by itself once the job has finished.
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "job logs -f did not end with the job");
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Ok(l) = f.lines.recv_timeout(Duration::from_millis(200)) {
        f.seen.push(l);
    }
    let lines: Vec<&str> = f.seen.iter().map(String::as_str).filter(|l| l.starts_with("line")).collect();
    assert_eq!(lines, ["line1", "line2", "line3", "line4"], "each line once, in order");
}

#[test]
fn service_logs_tail_follow_across_restarts_previous_and_since() {
    let d = Daemon::start();
    d.set(
        "actions:\n  - name: web\n    interpreter: bash\n    script: 'echo \"start $$\"; i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.1; done'\n    process: true\nservices:\n  - name: web\n",
    );
    let first = d.wait_status("web", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap();
    wait_for("a few ticks", Duration::from_secs(20), || {
        text(&d.cli(&["service", "logs", "web"]).stdout).contains("tick 3")
    });
    let tail = text(&d.cli(&["service", "logs", "web", "--tail", "2"]).stdout);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");

    let mut f = Follower::start(&d, &["service", "logs", "web", "-f", "--tail", "1"]);
    f.wait_line("tick");
    assert!(d.cli(&["service", "restart", "web"]).status.success());
    f.wait_line("restarted: job");
    let second = d.wait_status("web", "running again", |s| s["state"] == "running" && s["pid"].as_u64() != Some(first));
    let second = second["pid"].as_u64().unwrap();
    f.wait_line(&format!("start {second}"));
    drop(f);

    let prev = text(&d.cli(&["service", "logs", "web", "--previous"]).stdout);
    assert!(prev.starts_with(&format!("start {first}\n")), "the process before the current one: {prev}");
    let since = d.cli(&["service", "logs", "web", "--since", "1h", "--tail", "1"]);
    let err = text(&since.stderr);
    assert!(err.contains("-- job") && err.matches("-- job").count() == 2, "a header per process: {err}");
    assert_eq!(text(&since.stdout).lines().count(), 2, "one line of each process");
}

#[test]
fn service_status_ends_with_the_uptime_and_the_last_lines_of_output() {
    let d = Daemon::start();
    d.set("actions:\n  - name: web\n    interpreter: bash\n    script: 'for i in $(seq 1 30); do echo \"line $i\"; done; exec sleep 600'\n    process: true\nservices:\n  - name: web\n");
    d.wait_status("web", "running", |s| s["state"] == "running");
    wait_for("the output", Duration::from_secs(20), || {
        text(&d.cli(&["service", "logs", "web"]).stdout).contains("line 30")
    });
    let shown = text(&d.cli(&["service", "status", "web"]).stdout);
    assert!(shown.contains("  up:       "), "{shown}");
    let tail: Vec<&str> = shown.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(tail, (21..=30).map(|i| format!("line {i}")).collect::<Vec<_>>(), "{shown}");
}

#[test]
fn job_get_text_shows_every_field_and_job_list_the_service_and_start() {
    let d = Daemon::start();
    d.set("actions:\n  - name: web\n    script: /bin/sleep 600\n    process: true\nservices:\n  - name: web\n");
    let s = d.wait_status("web", "running", |s| s["state"] == "running");
    let id = s["job_id"].as_i64().unwrap().to_string();
    let shown = text(&d.cli(&["job", "get", &id]).stdout);
    let json = d.json(&["job", "get", &id]);
    for key in json.as_object().unwrap().keys() {
        let label = match key.as_str() {
            "id" => continue,
            "run_id" => "run",
            "exit_code" | "signal" => "exit",
            "created_at_ms" => "created",
            "started_at_ms" => "started",
            "finished_at_ms" => "finished",
            k => k,
        };
        assert!(shown.contains(&format!("  {label}:")), "`{key}` is missing from the text:\n{shown}");
    }
    let list = text(&d.cli(&["job", "list"]).stdout);
    let header = list.lines().next().unwrap();
    assert!(header.contains("SERVICE") && header.contains("STARTED"), "{header}");
    assert!(list.lines().nth(1).unwrap().contains("core/web"), "{list}");
}

/// A check keeps being probed after the service was healthy: status, `hero_proc status`
/// and `hero_proc_service_up` follow a socket that goes away and comes back, and the
/// last error stays visible after the recovery.
#[test]
fn health_is_probed_every_period_after_ready_and_status_follows_it() {
    let d = Daemon::start();
    let sock = d.root().join("web.sock");
    let close = d.root().join("close");
    // Listens; closes (and unlinks) its socket while `close` exists, listens again after.
    d.set(&format!(
        "actions:\n  - name: web\n    interpreter: python3\n    script: |\n      import os, socket, time\n      def up():\n          s = socket.socket(socket.AF_UNIX)\n          s.bind('{s}')\n          s.listen()\n          return s\n      s = up()\n      while True:\n          time.sleep(0.05)\n          if os.path.exists('{c}') and s:\n              s.close(); os.unlink('{s}'); s = None\n          elif not os.path.exists('{c}') and not s:\n              s = up()\n    process: true\n    health:\n      - unix_socket: {s}\n        period: 200ms\nservices:\n  - name: web\n",
        s = sock.display(),
        c = close.display()
    ));
    let first = d.wait_status("web", "running", |s| s["state"] == "running");
    let pid = first["pid"].as_u64().unwrap();
    assert_eq!(first["health"][0]["healthy"], true);
    let probed = first["health"][0]["probed_ms"].as_i64().unwrap();
    assert!(probed > 0, "{first}");
    // Probed again without anything happening.
    d.wait_status("web", "probed again", |s| s["health"][0]["probed_ms"].as_i64() > Some(probed));

    std::fs::write(&close, "").unwrap();
    let sick = d.wait_status("web", "unhealthy", |s| s["health"][0]["healthy"] == false);
    assert_eq!(sick["state"], "running", "without liveness a failing probe restarts nothing: {sick}");
    assert_eq!(sick["pid"].as_u64(), Some(pid));
    assert!(sick["reason"].as_str().unwrap().starts_with("unhealthy: unix_socket"), "{sick}");
    let out = d.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3), "a machine with an unhealthy service is degraded: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("service core/web: running but not healthy"), "{}", text(&out.stdout));
    let metrics = metrics_over_socket(&d);
    assert!(metrics.contains("hero_proc_service_up{service=\"core/web\"} 0"), "{metrics}");
    // What an alert needs to tell a service wanted running from one stopped on purpose.
    assert!(metrics.contains("hero_proc_service_wanted{service=\"core/web\"} 1"), "{metrics}");
    assert!(metrics.contains("hero_proc_service_state{service=\"core/web\",state=\"running\"} 1"), "{metrics}");
    assert!(metrics.contains("hero_proc_log_store_max_bytes 1073741824"), "{metrics}");
    d.wait_event("hero_proc.service", "core/web: unhealthy: unix_socket");

    std::fs::remove_file(&close).unwrap();
    let well = d.wait_status("web", "healthy again", |s| s["health"][0]["healthy"] == true);
    assert_eq!(well["reason"], serde_json::Value::Null, "{well}");
    assert!(well["health"][0]["last_error"].as_str().unwrap().contains("connect"), "{well}");
    assert!(well["health"][0]["last_error_ms"].as_i64().unwrap() > probed);
    assert_eq!(well["pid"].as_u64(), Some(pid));
    let out = text(&d.cli(&["status"]).stdout);
    assert!(!out.contains("not healthy"), "{out}");
}

fn metrics_over_socket(d: &Daemon) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A service that was healthy and then hangs (its socket gone, the process alive) is
/// restarted after `failures` failed liveness probes in a row, with its restart backoff,
/// and says why.
#[test]
fn a_failed_liveness_check_restarts_a_hung_service() {
    let d = Daemon::start();
    let sock = d.root().join("hung.sock");
    let ran = d.root().join("ran");
    // First run: healthy for a moment, then its socket goes and it hangs. Later runs stay up.
    d.set(&format!(
        "actions:\n  - name: hung\n    interpreter: python3\n    script: |\n      import os, socket, time\n      first = not os.path.exists('{r}')\n      open('{r}', 'a').write('x')\n      s = socket.socket(socket.AF_UNIX)\n      if os.path.exists('{s}'): os.unlink('{s}')\n      s.bind('{s}')\n      s.listen()\n      if first:\n          time.sleep(0.6)\n          s.close(); os.unlink('{s}')\n      time.sleep(1000)\n    process: true\n    restart: {{ policy: always, delay: 100ms }}\n    health:\n      - unix_socket: {s}\n        liveness: {{ period: 150ms, failures: 3 }}\nservices:\n  - name: hung\n",
        s = sock.display(),
        r = ran.display()
    ));
    let first = d.wait_status("hung", "running", |s| s["state"] == "running");
    let pid = first["pid"].as_u64().unwrap();
    let again = d.wait_status("hung", "restarted by liveness", |s| {
        s["state"] == "running" && s["liveness_restarts"] == 1 && s["pid"].as_u64() != Some(pid)
    });
    assert_eq!(again["restarts"], 1, "{again}");
    assert!(!alive(pid as u32), "the hung process was stopped");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "xx");
    let e = d.wait_event("hero_proc.service", "liveness check unix_socket");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&format!("failed 3 times; restarting in 100ms; stopping pid {pid}")), "{msg}");
    let metrics = metrics_over_socket(&d);
    assert!(metrics.contains("hero_proc_service_liveness_restarts_total{service=\"core/hung\"} 1"), "{metrics}");
}

/// The case: a hero_sockets service whose domain socket is removed. Status stops
/// listing the domain within a period, and the daemon says it went.
#[test]
fn hero_sockets_domains_that_go_away_leave_the_health_tree() {
    let d = Daemon::start();
    let dir = d.root().join("var/sockets");
    d.set(&format!(
        "actions:\n  - name: food\n    interpreter: python3\n    script: |\n      import os, socket, threading, time\n      d = '{d}'\n      def serve(path, http):\n          os.makedirs(os.path.dirname(path), exist_ok=True)\n          s = socket.socket(socket.AF_UNIX)\n          s.bind(path)\n          s.listen()\n          def loop():\n              while True:\n                  c, _ = s.accept()\n                  if http:\n                      c.recv(4096)\n                      c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n')\n                  c.close()\n          threading.Thread(target=loop, daemon=True).start()\n      serve(d + '/food.sock', False)\n      serve(d + '/food_ui.sock', True)\n      serve(d + '/food_server/root/restaurant.sock', False)\n      serve(d + '/food_server/root/delivery.sock', False)\n      time.sleep(1000)\n    process: true\n    health:\n      - hero_sockets: true\n        period: 200ms\nservices:\n  - name: food\n",
        d = dir.display()
    ));
    let up = d.wait_status("food", "running", |s| s["state"] == "running");
    let roles = |s: &serde_json::Value| -> Vec<String> {
        s["health"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(roles(&up), ["service", "ui", "root/delivery", "root/restaurant"]);
    std::fs::remove_file(dir.join("food_server/root/restaurant.sock")).unwrap();
    let after = d.wait_status("food", "without the removed domain", |s| !roles(s).contains(&"root/restaurant".into()));
    assert_eq!(roles(&after), ["service", "ui", "root/delivery"]);
    d.wait_event("hero_proc.service", "core/food: hero_sockets: gone: root/restaurant");
}
