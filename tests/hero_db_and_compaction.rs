//! hero_db requirement (SPEC 5.3) and bounded history (SPEC 5.5), end to end.

use crate::support;

use std::time::Duration;

use support::*;

const HERO_DB: &str = "actions:\n  - name: hero_db\n    interpreter: sh\n    script: exec sleep 1000\n    process: true\nservices:\n  - name: hero_db\n";

fn auto_start_db_events(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["log", "query", "--source", "hero_proc.auto_start_db"]).as_array().unwrap().clone()
}

#[test]
fn missing_hero_db_is_a_prominent_error_and_the_daemon_keeps_serving() {
    let d = Daemon::start_with(&[], true);
    let events = auto_start_db_events(&d);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["level"], "error");
    let msg = events[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("hero_db (context core) is not registered") && msg.contains("HERO_PROC_NO_AUTOSTART_DB=1"),
        "{msg}"
    );
    assert!(
        std::fs::read_to_string(d.root().join("daemon.log")).unwrap().contains("is not registered"),
        "tracing log too"
    );
    assert!(d.cli(&["system", "info"]).status.success());
}

#[test]
fn the_check_can_be_skipped() {
    let d = Daemon::start_with(&[], false);
    assert!(auto_start_db_events(&d).is_empty());
}

#[test]
fn a_registered_dead_hero_db_is_started_at_boot() {
    let mut d = Daemon::start_with(&[], true);
    d.set(HERO_DB);
    let pid = d.wait_status("hero_db", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap();
    d.kill9();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("hero_db to die", Duration::from_secs(5), || !alive(pid as u32));
    d.spawn();
    let s = d.wait_status("hero_db", "running again", |s| s["state"] == "running");
    assert_ne!(s["pid"].as_u64().unwrap(), pid);
    // Only the first boot (without hero_db) logged an error.
    let events = auto_start_db_events(&d);
    assert_eq!(events.iter().filter(|e| e["level"] == "error").count(), 1, "{events:?}");
}

#[test]
fn hero_db_with_another_status_is_kept_with_a_warning() {
    let mut d = Daemon::start_with(&[], true);
    d.set(&HERO_DB.replace("  - name: hero_db\n", "  - name: hero_db\n    status: stop\n").replacen(
        "    status: stop\n",
        "",
        1,
    ));
    d.kill9();
    d.spawn();
    let warn = auto_start_db_events(&d).into_iter().find(|e| e["level"] == "warn").expect("a warning");
    assert!(warn["message"].as_str().unwrap().contains("status: stop"), "{warn}");
    assert_eq!(d.status("hero_db")["state"], "inactive");
}

#[test]
fn compaction_bounds_history_and_reports_what_it_deleted() {
    let d = Daemon::start_with(&["--max-rows-per-table", "100"], false);
    // Each job prints, so each keeps an output file (an empty one goes back to the pool).
    d.set("actions:\n  - name: t\n    script: echo out\n");
    // 600 finished jobs in 6 runs of 100.
    for _ in 0..6 {
        let names: Vec<&str> = std::iter::repeat_n("t", 100).collect();
        let mut args = vec!["run", "submit", "--wait"];
        args.extend(names);
        let out = d.cli(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let jobs_dir = d.root().join("var/hero_proc/logs/jobs");
    assert!(std::fs::read_dir(&jobs_dir).unwrap().count() >= 600);
    let report = d.json(&["system", "compact"]);
    let deleted = report["jobs_deleted"].as_u64().unwrap();
    assert!((490..=510).contains(&deleted), "{report}");
    assert_eq!(report["runs_deleted"], 5, "a run goes only with all its jobs: {report}");
    assert!(report["log_files_deleted"].as_u64().unwrap() >= deleted, "{report}");
    let left = d.json(&["job", "list", "--limit", "1000"]).as_array().unwrap().len();
    assert!((90..=110).contains(&left), "{left} jobs left");
    assert!(std::fs::read_dir(&jobs_dir).unwrap().count() <= 110);
    let status = d.json(&["system", "compactor-status"]);
    assert_eq!(status["runs"], 1);
    assert_eq!(status["last"]["jobs_deleted"], deleted);
    assert!(status["db_size_bytes"].as_u64().unwrap() > 0);
    assert!(status["next_run_ms"].as_i64().is_some());
}

#[test]
fn with_a_repository_the_check_runs_after_the_first_reconcile() {
    use support::config_repo::*;
    // Git defines hero_db: the first reconcile starts it, and the check finds it active.
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: [hero_db]\n");
    repo.write("actions/hero_db.yaml", HERO_DB);
    let rev = repo.commit("hero_db from git");
    let d = Daemon::start_with(&["--repo", &repo.location(), "--interval", "1h"], true);
    wait_applied(&d, &rev);
    d.wait_status("hero_db", "running", |s| s["state"] == "running");
    // The check ran (it says so) after the first reconcile: and it found hero_db.
    d.wait_event("hero_proc.auto_start_db", ": nothing to do");
    let errors: Vec<_> = auto_start_db_events(&d).into_iter().filter(|e| e["level"] == "error").collect();
    assert!(errors.is_empty(), "hero_db came from git before the check: {errors:?}");

    // Git does not define it (and does not require it): after the first reconcile the
    // check says so, with the remediation, and the daemon keeps serving.
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "x"));
    let rev = repo.commit("no hero_db");
    let d = Daemon::start_with(&["--repo", &repo.location(), "--interval", "1h"], true);
    wait_applied(&d, &rev);
    wait_for("the hero_db error", Duration::from_secs(10), || {
        auto_start_db_events(&d).iter().any(|e| e["level"] == "error")
    });
    let applied_at = d.json(&["reconcile", "status"])["applied_at_ms"].as_i64().unwrap();
    let event = auto_start_db_events(&d).into_iter().find(|e| e["level"] == "error").unwrap();
    assert!(event["ts_ms"].as_i64().unwrap() >= applied_at, "checked after the reconcile: {event}");
    assert!(d.cli(&["system", "info"]).status.success());
}
