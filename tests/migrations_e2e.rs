//! Migrations (`migrations/*.rhai`) run by the daemon after the config of their revision:
//! once each, in order, recorded with their SHA-256; edits refused; a runaway script
//! stopped by the sandbox while the daemon keeps answering.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::config_repo::*;
use support::{Daemon, text, wait_for};

const SEED: &str = r#"// Create and start a service that git does not declare.
if proc.action_get("seeded") == () {
    proc.action_set(#{
        name: "seeded",
        interpreter: "bash",
        script: "echo $GREETING > \"$HERO_ROOTDIR/seeded.out\"; exec sleep 600",
        process: true,
        env: #{ GREETING: "from-migration" },
    });
    proc.service_set(#{ name: "seeded", actions: ["seeded"] });
}
proc.service_start("seeded");
proc.log("seeded service started");
"#;

const SECOND: &str = r#"// Counts its own runs in an action's description.
let a = proc.action_get("counter");
let n = if a == () { 1 } else { parse_int(a.description) + 1 };
proc.action_set(#{ name: "counter", script: "true", description: `${n}` });
"#;

fn migrations(d: &Daemon) -> Vec<(String, String)> {
    // Exits 1 when a migration failed; the JSON is there either way.
    let out = d.cli(&["--format", "json", "migrate", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_owned(), m["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn counter(d: &Daemon) -> Option<String> {
    let out = d.cli(&["--format", "json", "action", "get", "counter"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["action"]["description"].as_str().map(str::to_owned)
}

#[test]
fn migrations_run_once_in_order_and_edits_are_refused() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "w"));
    repo.write("migrations/2026-01-01-001_seed.rhai", SEED);
    let first = repo.commit("seed");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "seeded", "from-migration");
    assert_eq!(state(&d, "web").as_deref(), Some("running"));
    let logs = d.json(&["log", "query", "--source", "hero_proc.migration.2026-01-01-001_seed"]);
    assert!(logs.as_array().unwrap().iter().any(|e| e["message"] == "seeded service started"), "{logs}");

    // Objects a migration made are not git's: listed as unmanaged, never pruned.
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["unmanaged"].as_array().unwrap().iter().any(|u| u == "service core/seeded"), "{plan}");
    assert!(plan["migrations"].as_array().unwrap().is_empty());

    // A second migration added later runs once; repeated syncs run nothing again.
    repo.write("migrations/2026-01-02-001_count.rhai", SECOND);
    let second = repo.commit("count");
    wait_applied(&d, &second);
    wait_for("the second migration", Duration::from_secs(20), || counter(&d).as_deref() == Some("1"));
    for _ in 0..3 {
        assert!(d.cli(&["reconcile", "now"]).status.success());
    }
    repo.write("actions/other.yaml", &service("other", "o"));
    let third = repo.commit("unrelated change");
    wait_applied(&d, &third);
    assert_eq!(counter(&d).as_deref(), Some("1"), "ran exactly once");
    let seeded_pid = pid(&d, "seeded");
    assert_eq!(
        migrations(&d),
        vec![
            ("2026-01-01-001_seed.rhai".to_owned(), "applied".to_owned()),
            ("2026-01-02-001_count.rhai".to_owned(), "applied".to_owned())
        ]
    );

    // Editing an applied migration refuses the revision, naming the file.
    repo.write("migrations/2026-01-01-001_seed.rhai", &format!("{SEED}\n// edited\n"));
    let edited = repo.commit("edit an applied migration");
    wait_for("the edit to be refused", Duration::from_secs(20), || {
        status(&d)["attempted_revision"].as_str() == Some(edited.as_str())
    });
    let err = status(&d)["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("migrations/2026-01-01-001_seed.rhai") && err.contains("must never change"), "{err}");
    assert_eq!(pid(&d, "seeded"), seeded_pid);
    // `validate --db` says the same before anything is pushed.
    let db = d.root().join("var/hero_proc/hero_proc.db");
    let out = d.cli(&["validate", repo.path().to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("2026-01-01-001_seed.rhai"), "{}", text(&out.stdout));
}

#[test]
fn a_runaway_migration_is_stopped_and_the_daemon_keeps_answering() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "w"));
    repo.write("migrations/2026-01-01-001_spin.rhai", "loop { }\n");
    repo.write("migrations/2026-01-01-002_after.rhai", SECOND);
    repo.commit("spin");
    // `loop {}` is stopped by the sandbox (here in the CI preview, which runs it).
    let ci = std::process::Command::new(support::bin())
        .args(["reconcile", "--dry-run", "--empty"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(ci.status.code(), Some(1), "{}", text(&ci.stdout));
    assert!(text(&ci.stdout).contains("migrations/2026-01-01-001_spin.rhai"), "{}", text(&ci.stdout));

    // A runaway that calls into the engine keeps running until the wall-clock limit (10 s);
    // meanwhile the daemon answers, through the same engine.
    repo.write("migrations/2026-01-01-001_spin.rhai", "loop { proc.service_list(); }\n");
    let first = repo.commit("spin through the engine");
    let d = follow(&repo);
    wait_for("the migration to start", Duration::from_secs(20), || {
        status(&d)["applied_revision"].as_str() == Some(first.as_str())
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        assert!(d.cli(&["service", "status", "web"]).status.success());
        assert!(t.elapsed() < Duration::from_secs(1), "answered slowly while a migration spins: {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        status(&d)["last_error"].as_str().is_none_or(|e| !e.contains("001_spin")),
        "the script was still running while the daemon answered"
    );
    wait_for("the runaway migration to be stopped", Duration::from_secs(60), || {
        status(&d)["last_error"].as_str().is_some_and(|e| e.contains("2026-01-01-001_spin.rhai"))
    });
    let s = status(&d);
    assert_eq!(s["applied_revision"].as_str(), Some(first.as_str()), "the config of the revision is applied: {s}");
    assert_eq!(state(&d, "web").as_deref(), Some("running"));
    assert_eq!(counter(&d), None, "later migrations wait");
    let m = migrations(&d);
    assert_eq!(m[0].1, "failed");
    assert_eq!(m[1].1, "pending");
    // Held at this revision: not retried on every sync, and the preview says why.
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["migrations"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(plan["held_migrations"].as_array().unwrap().len(), 2, "{plan}");

    // The fix is a new revision: the failed one is retried, then the next runs.
    repo.write("migrations/2026-01-01-001_spin.rhai", "proc.log(\"fixed\");\n");
    let fixed = repo.commit("fix the runaway migration");
    wait_applied(&d, &fixed);
    wait_for("the later migration", Duration::from_secs(20), || counter(&d).as_deref() == Some("1"));
    assert!(status(&d)["last_error"].is_null(), "{}", status(&d));
}

#[test]
fn a_fresh_system_and_an_upgraded_one_end_in_the_same_state() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "w"));
    repo.write("migrations/2026-01-01-001_seed.rhai", SEED);
    let first = repo.commit("one");
    // Upgraded: follows each revision.
    let up = follow(&repo);
    wait_applied(&up, &first);
    repo.write("migrations/2026-01-02-001_count.rhai", SECOND);
    let second = repo.commit("two");
    wait_applied(&up, &second);
    wait_for("upgraded counter", Duration::from_secs(20), || counter(&up).as_deref() == Some("1"));
    // Fresh: starts at the last revision.
    let fresh = follow(&repo);
    wait_applied(&fresh, &second);
    wait_for("fresh counter", Duration::from_secs(20), || counter(&fresh).as_deref() == Some("1"));
    wait_greeting(&fresh, "seeded", "from-migration");
    let shape = |d: &Daemon| {
        let mut services: Vec<(String, String)> = d
            .json(&["service", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (format!("{}/{}", s["context"].as_str().unwrap(), s["name"].as_str().unwrap()), s["status"].to_string())
            })
            .collect();
        services.sort();
        let mut actions: Vec<Value> =
            d.json(&["action", "list"]).as_array().unwrap().iter().map(|a| a["action"].clone()).collect();
        actions.sort_by_key(|a| a["name"].as_str().unwrap().to_owned());
        (services, actions, migrations(d))
    };
    assert_eq!(shape(&up), shape(&fresh));
}

#[test]
fn the_preview_shows_what_each_migration_would_do_and_catches_unknown_calls() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "w"));
    let first = repo.commit("web");
    let d = follow(&repo);
    wait_applied(&d, &first);
    d.json(&["reconcile", "suspend"]);
    repo.write("migrations/2026-01-01-001_seed.rhai", SEED);
    repo.commit("seed migration");
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}{}", text(&out.stderr));
    for effect in ["action_set core/seeded (new)", "service_set core/seeded (new)", "service_start core/seeded"] {
        assert!(shown.contains(effect), "{effect} in {shown}");
    }
    assert_eq!(state(&d, "seeded"), None, "the preview applied nothing");

    // `validate` compiles this fine; only running it shows the function does not exist.
    repo.write("migrations/2026-01-01-001_seed.rhai", "proc.log(\"x\");\nproc.service_reload(\"web\");\n");
    repo.commit("a call to a function that does not exist");
    assert!(d.cli(&["validate", repo.path().to_str().unwrap()]).status.success());
    let out = d.cli(&["reconcile", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("2026-01-01-001_seed.rhai") && err.contains("service_reload"), "{err}");
    // The same in CI, without a daemon.
    let ci = std::process::Command::new(support::bin())
        .args(["reconcile", "--dry-run", "--empty"])
        .current_dir(repo.path())
        .env("HERO_ROOTDIR", d.root())
        .output()
        .unwrap();
    assert_eq!(ci.status.code(), Some(1));
    assert!(text(&ci.stdout).contains("migrations/2026-01-01-001_seed.rhai:2:"), "{}", text(&ci.stdout));
}

#[test]
fn baseline_records_without_running() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "w"));
    let first = repo.commit("before migrations");
    let d = follow(&repo);
    wait_applied(&d, &first);
    d.json(&["reconcile", "suspend"]);
    // This machine already has the first migration's effect: it must not run here.
    repo.write("migrations/2026-01-01-001_old.rhai", "throw \"must not run on a baselined machine\";\n");
    repo.write("migrations/2026-01-02-001_count.rhai", SECOND);
    let second = repo.commit("migrations");
    let out = d.cli(&["--format", "json", "migrate", "baseline", "2026-01-01-001_olt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did you mean `2026-01-01-001_old.rhai`"), "{}", text(&out.stderr));
    d.json(&["migrate", "baseline", "2026-01-01-001_old"]);
    assert_eq!(
        migrations(&d),
        vec![
            ("2026-01-01-001_old.rhai".to_owned(), "applied".to_owned()),
            ("2026-01-02-001_count.rhai".to_owned(), "pending".to_owned())
        ]
    );
    d.json(&["reconcile", "resume"]);
    wait_applied(&d, &second);
    wait_for("the later migration", Duration::from_secs(20), || counter(&d).as_deref() == Some("1"));
    assert!(status(&d)["last_error"].is_null(), "the baselined one never ran: {}", status(&d));
}

/// An old install script's calls, as a migration: previewed like any other effect, then
/// run by the daemon, which creates the services and starts, stops and restarts them.
#[test]
fn an_install_script_with_quick_service_calls_creates_and_starts_services() {
    let repo = ConfigRepo::new();
    let first = repo.commit("empty");
    let d = follow(&repo);
    wait_applied(&d, &first);

    let script = r#"// install_and_run.rhai, as the old hero_proc ran it
let run = |name| `echo started > "$HERO_ROOTDIR/${name}.out"; exec sleep 600`;
proc.quick_service_set_full("qs_server", run.call("qs_server"), "bash", "");
proc.quick_service_set_full("tools/qs_ui", run.call("qs_ui"), "bash", "exec:true");
proc.quick_service_set_full("qs_old", "sleep 600", "exec", "");
proc.quick_service_start("qs_server");
proc.quick_service_start("tools/qs_ui");
proc.quick_service_start("qs_old");
proc.quick_service_stop("qs_old");
proc.quick_service_restart("qs_server");
"#;
    repo.write("migrations/2026-05-20-001_install.rhai", script);
    let plan = d.json(&["reconcile", "--dry-run", "--worktree"]);
    let preview = &plan["migration_preview"][0];
    assert_eq!(preview["error"], Value::Null, "{plan}");
    let effects: Vec<&str> = preview["effects"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(
        effects,
        [
            "action_set core/qs_server (new)",
            "service_set core/qs_server (new)",
            "action_set tools/qs_ui (new)",
            "service_set tools/qs_ui (new)",
            "action_set core/qs_old (new)",
            "service_set core/qs_old (new)",
            "service_start core/qs_server",
            "service_start tools/qs_ui",
            "service_start core/qs_old",
            "service_stop core/qs_old",
            "service_restart core/qs_server",
        ]
    );
    assert!(state(&d, "qs_server").is_none(), "a preview applies nothing");

    let second = repo.commit("install");
    wait_applied(&d, &second);
    wait_for("the install migration", Duration::from_secs(20), || {
        migrations(&d) == [("2026-05-20-001_install.rhai".to_owned(), "applied".to_owned())]
    });
    wait_greeting(&d, "qs_server", "started");
    d.wait_status("tools/qs_ui", "running and healthy", |s| {
        s["state"] == "running" && s["health"][0]["healthy"] == true
    });
    assert_eq!(state(&d, "qs_old").as_deref(), Some("inactive"));
    let ui = d.json(&["action", "get", "tools/qs_ui"]);
    assert_eq!(ui["action"]["process"], true, "{ui}");
    assert_eq!(ui["action"]["interpreter"], "bash", "{ui}");
    assert_eq!(ui["action"]["health"], serde_json::json!([{ "exec": "true" }]), "{ui}");
    // Set by a migration: unmanaged, never pruned.
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["unmanaged"].as_array().unwrap().iter().any(|u| u == "service tools/qs_ui"), "{plan}");
}
