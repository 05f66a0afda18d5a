//! The reconciler end to end: real git repositories (made here), the real daemon
//! following them, real processes whose environment shows which revision they run.

use crate::support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::config_repo::*;
use support::{Daemon, bin, text, wait_for};

#[test]
fn pr_preview_apply_drift_and_revert() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "hello"));
    repo.write("actions/old.yaml", &service("old", "legacy"));
    let first = repo.commit("web and old");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "hello");
    wait_greeting(&d, "old", "legacy");

    // A pull request on a branch: env change, a service added, a service removed.
    repo.git(&["checkout", "-q", "-b", "pr"]);
    repo.write("actions/web.yaml", &service("web", "bye"));
    repo.write("actions/new.yaml", &service("new", "fresh"));
    repo.rm("actions/old.yaml");
    let pr = repo.commit("PR: bye, add new, drop old");
    let web_pid = pid(&d, "web");

    let out = d.cli(&["reconcile", "--dry-run", "--rev", "pr", "--detailed-exitcode"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "changes present: {shown}{}", text(&out.stderr));
    assert!(shown.contains("-  GREETING: hello") && shown.contains("+  GREETING: bye"), "{shown}");
    assert!(shown.contains("+ service core/new") && shown.contains("- service core/old"), "{shown}");
    assert!(shown.contains("core/web (action core/web changed)"), "restart shown: {shown}");
    // The preview touched nothing.
    assert_eq!(greeting(&d, "web").as_deref(), Some("hello"));
    assert_eq!(pid(&d, "web"), web_pid);
    assert_eq!(state(&d, "old").as_deref(), Some("running"));
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(first.as_str()));

    // The same preview as JSON is the same plan twice.
    let a = d.json(&["reconcile", "--dry-run", "--rev", "pr"]);
    let b = d.json(&["reconcile", "--dry-run", "--rev", "pr"]);
    assert_eq!(a, b);
    assert_eq!(a["summary"]["create"], 2);
    assert_eq!(a["summary"]["delete"], 2);

    // Merge: the watcher applies it.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "pr"]);
    wait_applied(&d, &pr);
    wait_greeting(&d, "web", "bye");
    wait_greeting(&d, "new", "fresh");
    wait_for("old to be pruned", Duration::from_secs(10), || state(&d, "old").is_none());
    assert_ne!(pid(&d, "web"), web_pid, "web restarted");

    // Right after an apply the dry-run is empty.
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Stopped by hand (sync suspended, so it stays stopped while we look): status and the
    // dry-run show the drift; a sync brings it back.
    d.json(&["reconcile", "suspend"]);
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    wait_for("web to stop", Duration::from_secs(10), || state(&d, "web").as_deref() == Some("inactive"));
    let s = status(&d);
    let drift = s["drift"].as_array().unwrap();
    assert!(
        drift.iter().any(|x| x["object"] == "service core/web" && x["what"] == "stopped by hand"),
        "drift in status: {s}"
    );
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("core/web (stopped by hand)"));
    assert!(d.cli(&["reconcile", "now"]).status.success());
    wait_for("web to be back", Duration::from_secs(10), || state(&d, "web").as_deref() == Some("running"));
    assert!(status(&d)["drift"].as_array().unwrap().is_empty());
    d.json(&["reconcile", "resume"]);

    // With automatic sync on, a stop by hand is reverted by itself within seconds.
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    let stopped = std::time::Instant::now();
    wait_for("web to stop", Duration::from_secs(10), || state(&d, "web").as_deref() != Some("running"));
    wait_for("self-heal to restart web", Duration::from_secs(20), || state(&d, "web").as_deref() == Some("running"));
    println!("stopped by hand, running again after {:?}", stopped.elapsed());

    // A revert is a new revision that restores the previous state.
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let reverted = repo.git(&["rev-parse", "HEAD"]);
    wait_applied(&d, &reverted);
    wait_greeting(&d, "web", "hello");
    wait_greeting(&d, "old", "legacy");
    wait_for("new to be pruned", Duration::from_secs(10), || state(&d, "new").is_none());

    // History has each revision with author and summary.
    let h = d.json(&["history"]);
    let revs: Vec<&str> = h.as_array().unwrap().iter().map(|e| e["record"]["revision"].as_str().unwrap()).collect();
    assert!(revs.contains(&first.as_str()) && revs.contains(&pr.as_str()) && revs.contains(&reverted.as_str()));
    let pr_entry = h
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["record"]["revision"] == pr.as_str() && e["record"]["summary"]["create"] == 2)
        .unwrap_or_else(|| panic!("the PR's apply in history: {h}"));
    assert_eq!(pr_entry["record"]["author"], "Ada Operator <ada@example.org>");
    assert_eq!(pr_entry["record"]["result"], "applied");
    assert_eq!(pr_entry["record"]["summary"]["create"], 2);
}

#[test]
fn a_bad_commit_keeps_the_last_good_revision_running() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "v1"));
    let good = repo.commit("good");
    let d = follow(&repo);
    wait_applied(&d, &good);
    wait_greeting(&d, "web", "v1");
    let web_pid = pid(&d, "web");

    // Changes web and adds a typo elsewhere: nothing of it may be applied.
    repo.write("actions/web.yaml", &service("web", "v2"));
    repo.write("actions/typo.yaml", "actions:\n  - name: x\n    scirpt: true\n");
    let bad = repo.commit("typo");
    wait_for("the bad revision to be attempted", Duration::from_secs(20), || {
        status(&d)["attempted_revision"].as_str() == Some(bad.as_str())
    });
    let s = status(&d);
    assert_eq!(s["applied_revision"].as_str(), Some(good.as_str()));
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("actions/typo.yaml:3:5") && err.contains("did you mean `script`"), "{err}");
    assert_eq!(greeting(&d, "web").as_deref(), Some("v1"));
    assert_eq!(pid(&d, "web"), web_pid, "web untouched");
    let h = d.json(&["history"]);
    let failed = h.as_array().unwrap().iter().filter(|e| e["record"]["revision"] == bad.as_str()).count();
    assert_eq!(failed, 1, "one history line per failed revision, not one per retry: {h}");
    // The CLI apply says the same, with exit 1.
    let out = d.cli(&["reconcile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("actions/typo.yaml:3:5"), "{}", text(&out.stderr));

    // The next good commit converges.
    repo.rm("actions/typo.yaml");
    let fixed = repo.commit("fix typo");
    wait_applied(&d, &fixed);
    wait_greeting(&d, "web", "v2");
    assert!(status(&d)["last_error"].is_null());
}

#[test]
fn deleting_a_required_service_is_refused() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: [hero_db]\n");
    repo.write("actions/hero_db.yaml", &service("hero_db", "db"));
    repo.write("actions/web.yaml", &service("web", "w"));
    let first = repo.commit("db and web");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "hero_db", "db");

    // Deleting it while it is required: refused (not "broken"), named, nothing applied.
    repo.rm("actions/hero_db.yaml");
    let gone = repo.commit("delete hero_db");
    wait_for("the refusal", Duration::from_secs(20), || status(&d)["attempted_revision"].as_str() == Some(&gone));
    let err = status(&d)["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("is refused") && err.contains("hero_db"), "{err}");
    let out = d.cli(&["reconcile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("required service"), "{}", text(&out.stderr));
    let h = d.json(&["history"]);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["record"]["revision"] == gone.as_str() && e["record"]["result"] == "refused"),
        "{h}"
    );
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let restored = repo.git(&["rev-parse", "HEAD"]);
    wait_applied(&d, &restored);

    // Dropping it from required_services and deleting it in one commit is refused: the
    // applied revision still requires it.
    repo.write("hero.yaml", "required_services: []\n");
    repo.rm("actions/hero_db.yaml");
    repo.write("actions/web.yaml", &service("web", "w2"));
    let web_pid = pid(&d, "web");
    let both = repo.commit("drop hero_db");
    let out = d.cli(&["reconcile", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("deletes required service core/hero_db"), "{}", text(&out.stdout));
    wait_for("the refusal", Duration::from_secs(20), || status(&d)["attempted_revision"].as_str() == Some(&both));
    let s = status(&d);
    assert!(s["last_error"].as_str().unwrap().contains("required service core/hero_db"), "{s}");
    assert_eq!(s["applied_revision"].as_str(), Some(restored.as_str()));
    // The sync that refused is over once a dry-run (same one-writer lock) answers; then
    // nothing of the plan may be in the store or the processes.
    let _ = d.cli(&["reconcile", "--dry-run"]);
    assert_eq!(state(&d, "hero_db").as_deref(), Some("running"));
    let web_def = text(&d.cli(&["--format", "json", "action", "get", "web"]).stdout);
    assert!(web_def.contains("\"w\"") && !web_def.contains("w2"), "a refused plan stores nothing: {web_def}");
    assert_eq!(pid(&d, "web"), web_pid, "a refused plan restarts nothing");
    assert_eq!(greeting(&d, "web").as_deref(), Some("w"), "a refused plan applies nothing");
    let h = d.json(&["history"]);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["record"]["revision"] == both.as_str() && e["record"]["result"] == "refused")
    );
}

#[test]
fn objects_set_by_hand_are_left_alone_and_self_heal_off_only_reports() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\nself_heal: false\n");
    repo.write("actions/web.yaml", &service("web", "git"));
    let first = repo.commit("web");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "git");

    // A service set by hand is not in git: listed as unmanaged, never pruned.
    let manual = d.root().join("manual.yaml");
    std::fs::write(&manual, service("manual", "by-hand")).unwrap();
    assert!(d.cli(&["service", "set", manual.to_str().unwrap()]).status.success());
    wait_greeting(&d, "manual", "by-hand");

    // Stopped by hand with self_heal off: reported, not reverted.
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    wait_for("web to stop", Duration::from_secs(10), || state(&d, "web").as_deref() == Some("inactive"));
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["unmanaged"].as_array().unwrap().iter().any(|u| u == "service core/manual"), "{plan}");
    assert!(plan["changes"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["drift"].as_array().unwrap().iter().any(|x| x["object"] == "service core/web"), "{plan}");
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "drift is reported only: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("reported only"), "{}", text(&out.stdout));
    // `reconcile now` returns once its sync applied: what it did is in its answer.
    let now = d.json(&["reconcile", "now"]);
    assert!(now["plan"]["starts"].as_array().unwrap().is_empty(), "self_heal off starts nothing: {now}");
    assert!(now["plan"]["changes"].as_array().unwrap().is_empty(), "{now}");
    assert_eq!(state(&d, "web").as_deref(), Some("inactive"));
    assert_eq!(state(&d, "manual").as_deref(), Some("running"));
    let s = status(&d);
    assert_eq!(s["self_heal"], false);
    assert!(s["drift"].as_array().unwrap().iter().any(|x| x["what"] == "stopped by hand"), "{s}");

    // A new commit applies its own change but still not the drift.
    repo.write("actions/other.yaml", &service("other", "o"));
    let second = repo.commit("other");
    wait_applied(&d, &second);
    wait_greeting(&d, "other", "o");
    assert_eq!(state(&d, "web").as_deref(), Some("inactive"));
    assert_eq!(state(&d, "manual").as_deref(), Some("running"));
}

#[test]
fn rev_pins_until_resume_and_suspend_freezes_sync() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "one"));
    let one = repo.commit("one");
    let d = follow(&repo);
    wait_applied(&d, &one);
    repo.write("actions/web.yaml", &service("web", "two"));
    let two = repo.commit("two");
    wait_applied(&d, &two);
    wait_greeting(&d, "web", "two");

    // Emergency rollback without a revert: pinned.
    let out = d.cli(&["reconcile", "--rev", &one]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Pinned"), "{}", text(&out.stdout));
    wait_greeting(&d, "web", "one");
    // New commits do not fight the pin.
    repo.write("actions/web.yaml", &service("web", "three"));
    let three = repo.commit("three");
    // The sync that fetched three has finished: its plan (the pin) changes nothing.
    let plan = wait_seen(&d, &three);
    assert!(plan["changes"].as_array().unwrap().is_empty(), "pinned: {plan}");
    let s = status(&d);
    assert_eq!(s["pinned_revision"].as_str(), Some(one.as_str()));
    assert_eq!(s["head_revision"].as_str(), Some(three.as_str()), "status names the head too: {s}");
    assert_eq!(s["applied_revision"].as_str(), Some(one.as_str()));
    assert_eq!(greeting(&d, "web").as_deref(), Some("one"));
    let shown = text(&d.cli(&["reconcile", "status"]).stdout);
    assert!(shown.contains("pinned:") && shown.contains(&three[..12]), "{shown}");

    // Resume: follows the branch again.
    d.json(&["reconcile", "resume"]);
    wait_applied(&d, &three);
    wait_greeting(&d, "web", "three");

    // Suspend: commits wait until resume.
    let s = d.json(&["reconcile", "suspend"]);
    assert_eq!(s["suspended"], true);
    repo.write("actions/web.yaml", &service("web", "four"));
    let committed = now_ms();
    let four = repo.commit("four");
    wait_loop_pass(&d, committed);
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(three.as_str()));
    assert_ne!(status(&d)["head_revision"].as_str(), Some(four.as_str()), "suspended: not even fetched");
    assert_eq!(greeting(&d, "web").as_deref(), Some("three"));
    assert!(text(&d.cli(&["reconcile", "status"]).stdout).contains("SUSPENDED"));
    d.json(&["reconcile", "resume"]);
    wait_applied(&d, &four);
    wait_greeting(&d, "web", "four");
}

#[test]
fn offline_previews_need_no_daemon_and_write_nothing() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "x"));
    repo.commit("web");
    let root = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("HERO_ROOTDIR", root.path())
            .env("NO_COLOR", "1")
            .current_dir(repo.path())
            .output()
            .unwrap()
    };
    // --empty: what a fresh machine would do; from the repository in the current folder.
    let out = run(&["reconcile", "--dry-run", "--empty", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("+ service core/web"));
    // A commit that fails validation fails the preview with file:line:col.
    repo.write("actions/bad.yaml", "services:\n  - name: y\n    actions: [nope]\n");
    repo.commit("bad ref");
    let out = run(&["reconcile", "--dry-run", "--empty"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("actions/bad.yaml:3:15"), "{}", text(&out.stderr));
    repo.rm("actions/bad.yaml");
    let head = repo.commit("fix");

    // --db: against a real daemon's database, read-only.
    let mut d = follow(&repo);
    wait_applied(&d, &head);
    wait_greeting(&d, "web", "x");
    d.kill9();
    let db = d.root().join("var/hero_proc/hero_proc.db");
    let snapshot = || ["", "-wal"].map(|s| std::fs::read(format!("{}{s}", db.display())).unwrap_or_default());
    let before = snapshot();
    let out = run(&["reconcile", "--dry-run", "--db", db.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    repo.write("actions/web.yaml", &service("web", "y"));
    repo.commit("y");
    let out = run(&["--format", "json", "reconcile", "--dry-run", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["update"], 1, "{plan}");
    assert_eq!(plan["restarts"][0]["service"], "core/web", "{plan}");
    assert_eq!(snapshot(), before, "a preview never writes the database");
}

#[test]
fn removing_many_files_and_contexts_in_one_commit_prunes_cleanly() {
    let repo = ConfigRepo::new();
    // A context with services that depend on each other, and a job action.
    repo.write(
        "actions/team_api.yaml",
        r#"actions:
  - name: prep
    context: team
    script: "true"
  - name: api
    context: team
    interpreter: bash
    script: 'exec sleep 600'
    process: true
services:
  - name: api
    context: team
    actions: [api]
"#,
    );
    repo.write(
        "actions/team_worker.yaml",
        r#"actions:
  - name: worker
    context: team
    interpreter: bash
    script: 'exec sleep 600'
    process: true
    depends_on: [prep]
services:
  - name: worker
    context: team
    actions: [worker]
    requires: [api]
"#,
    );
    repo.write("actions/web.yaml", &service("web", "stay"));
    let first = repo.commit("stack");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_for("the stack to run", Duration::from_secs(20), || state(&d, "team/worker").as_deref() == Some("running"));
    let worker_pid = pid(&d, "team/worker").unwrap();
    let api_pid = pid(&d, "team/api").unwrap();

    // Suspended while we preview, or the watcher applies the commit first.
    d.json(&["reconcile", "suspend"]);
    repo.rm("actions/team_api.yaml");
    repo.rm("actions/team_worker.yaml");
    let second = repo.commit("remove both files of the team at once");
    let plan = d.json(&["reconcile", "--dry-run"]);
    let order: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}/{}",
                c["kind"].as_str().unwrap(),
                c["context"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    let pos = |k: &str| order.iter().position(|o| o == k).unwrap_or_else(|| panic!("{k} not in {order:?}"));
    assert!(pos("service team/worker") < pos("service team/api"), "dependents first: {order:?}");
    assert!(pos("service team/api") < pos("action team/api"), "services before actions: {order:?}");
    assert!(pos("action team/worker") < pos("action team/prep"), "{order:?}");
    d.json(&["reconcile", "resume"]);
    wait_applied(&d, &second);
    wait_for("the stack to be gone", Duration::from_secs(20), || {
        state(&d, "team/api").is_none() && state(&d, "team/worker").is_none()
    });
    wait_for("the processes to exit", Duration::from_secs(20), || {
        !support::alive(worker_pid as u32) && !support::alive(api_pid as u32)
    });
    let actions = d.json(&["action", "list"]);
    assert!(actions.as_array().unwrap().iter().all(|a| a["action"]["context"] != "team"), "{actions}");
    assert_eq!(state(&d, "web").as_deref(), Some("running"));
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn dry_run_and_apply_agree() {
    let repo = ConfigRepo::new();
    repo.write("actions/a.yaml", &service("a", "1"));
    repo.write("actions/b.yaml", &service("b", "1"));
    let first = repo.commit("a b");
    let d = Daemon::start_with(&["--repo", &repo.location(), "--branch", "main", "--interval", "1h"], false);
    wait_applied(&d, &first);
    d.json(&["reconcile", "suspend"]);
    repo.write("actions/a.yaml", &service("a", "2"));
    repo.rm("actions/b.yaml");
    repo.write("actions/c.yaml", &service("c", "1"));
    repo.commit("change a, drop b, add c");
    let preview = d.json(&["reconcile", "--dry-run"]);
    let applied = d.json(&["reconcile"]);
    assert_eq!(preview, applied["plan"], "the preview is exactly what was applied");
    let after = d.json(&["reconcile", "--dry-run"]);
    assert!(after["changes"].as_array().unwrap().is_empty(), "{after}");
}

#[test]
fn a_corrupt_object_is_a_clear_error_and_the_last_revision_keeps_running() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "good"));
    let good = repo.commit("good");
    let d = follow(&repo);
    wait_applied(&d, &good);
    wait_greeting(&d, "web", "good");
    d.json(&["reconcile", "suspend"]);
    repo.write("actions/web.yaml", &service("web", "never"));
    let bad = repo.commit("its blob gets corrupted");
    // Corrupt the loose object of the new file's content.
    let blob = repo.git(&["rev-parse", "HEAD:actions/web.yaml"]);
    let path = repo.path().join(".git/objects").join(&blob[..2]).join(&blob[2..]);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"not a zlib stream").unwrap();
    d.json(&["reconcile", "resume"]);
    wait_for("the corrupt revision to be reported", Duration::from_secs(20), || {
        status(&d)["attempted_revision"].as_str() == Some(bad.as_str())
    });
    let s = status(&d);
    assert!(s["last_error"].as_str().unwrap().contains("actions/web.yaml"), "names the file: {s}");
    assert_eq!(s["applied_revision"].as_str(), Some(good.as_str()));
    assert_eq!(greeting(&d, "web").as_deref(), Some("good"));
}

#[test]
fn restarts_racing_a_reconcile_leave_exactly_one_process() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "before"));
    let first = repo.commit("before");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "before");
    d.json(&["reconcile", "suspend"]);
    repo.write("actions/web.yaml", &service("web", "after"));
    let second = repo.commit("after");
    let root = d.root().to_owned();
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let args: &[&str] = if i == 10 { &["reconcile", "resume"] } else { &["service", "restart", "web"] };
                Command::new(bin())
                    .args(args)
                    .env("HERO_ROOTDIR", &root)
                    .env_remove("HERO_PROC_SOCKET")
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap().status.success());
    }
    wait_applied(&d, &second);
    wait_greeting(&d, "web", "after");
    let pid = pid(&d, "web").unwrap() as u32;
    wait_for("exactly one web process", Duration::from_secs(20), || d.children() == vec![pid]);
}

#[test]
fn checking_out_a_branch_in_the_followed_work_tree_does_not_deploy_it() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "main"));
    let first = repo.commit("main");
    // No --branch: the daemon follows the branch checked out now (main).
    let d = Daemon::start_with(&["--repo", &repo.location(), "--interval", "1h"], false);
    wait_applied(&d, &first);
    assert_eq!(status(&d)["branch"], "main");
    // The watcher fires on the checkout and on the commit; each sync fetches main, not pr.
    let checkout = now_ms();
    repo.git(&["checkout", "-q", "-b", "pr"]);
    wait_loop_pass(&d, checkout);
    repo.write("actions/web.yaml", &service("web", "pr"));
    let committed = now_ms();
    let pr = repo.commit("a pull request");
    wait_loop_pass(&d, committed);
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["changes"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(status(&d)["head_revision"].as_str(), Some(first.as_str()));
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(first.as_str()), "the checkout deployed nothing");
    assert_eq!(greeting(&d, "web").as_deref(), Some("main"));
    // A preview of the checkout: --repo PATH reads its HEAD.
    let out = d.cli(&["reconcile", "--dry-run", "--repo", &repo.location(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("+  GREETING: pr"));
    // Merged: deployed.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "pr"]);
    wait_applied(&d, &pr);
    wait_greeting(&d, "web", "pr");
}

/// Sync events go into the event log (`log query --source hero_proc.sync`): applied,
/// failed (once per revision and error, however often it is retried), self-heal with the
/// objects it reverted, suspended, resumed, pinned; history marks a self-heal as such.
#[test]
fn sync_events_are_in_the_event_log_and_history_names_a_self_heal() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\n");
    repo.write("actions/web.yaml", &service("web", "one"));
    let first = repo.commit("web one");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "one");
    let events = |d: &Daemon| -> Vec<String> {
        let v = d.json(&["log", "query", "--source", "hero_proc.sync"]);
        let mut m: Vec<String> =
            v.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect();
        m.reverse(); // oldest first
        m
    };
    let e = events(&d);
    assert!(e.iter().any(|m| m.starts_with(&format!("applied {} \"web one\": 2 to create", &first[..12]))), "{e:?}");

    // A broken commit: one event, though the sync retries it.
    repo.write("actions/web.yaml", "actions: [\n");
    let bad = repo.commit("broken");
    for _ in 0..3 {
        let _ = d.cli(&["reconcile", "now"]);
    }
    let e = events(&d);
    let failed: Vec<&String> = e.iter().filter(|m| m.starts_with(&format!("revision {} failed", &bad[..12]))).collect();
    assert_eq!(failed.len(), 1, "{e:?}");

    // Back to good, then a change by hand that self_heal reverts.
    repo.write("actions/web.yaml", &service("web", "two"));
    let good = repo.commit("web two");
    let _ = d.cli(&["reconcile", "now"]);
    wait_applied(&d, &good);
    wait_greeting(&d, "web", "two");
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    wait_for("self-heal to start web again", Duration::from_secs(20), || {
        events(&d).iter().any(|m| m.starts_with(&format!("self-heal at {}: reverted service core/web", &good[..12])))
    });
    let history = text(&d.cli(&["history"]).stdout);
    assert!(history.contains("self-heal: reverted"), "{history}");
    // `reconcile status` tells the last change from the last (no-op) sync.
    assert!(d.cli(&["reconcile", "now"]).status.success());
    let s = status(&d);
    assert_eq!(s["changed_revision"].as_str(), Some(good.as_str()), "{s}");
    assert!(s["changed_at_ms"].as_i64().unwrap() < s["attempted_at_ms"].as_i64().unwrap(), "{s}");
    let shown = text(&d.cli(&["reconcile", "status"]).stdout);
    assert!(shown.contains(&format!("changed:    {}", &good[..12])) && shown.contains("(noop)"), "{shown}");
    assert!(
        history.lines().any(|l| l.contains(&bad[..12]) && l.contains("failed") && l.contains("broken:")),
        "a failed line shows its error: {history}"
    );

    assert!(d.cli(&["reconcile", "suspend"]).status.success());
    assert!(d.cli(&["reconcile", "--rev", &first[..12]]).status.success());
    assert!(d.cli(&["reconcile", "resume"]).status.success());
    let e = events(&d);
    let from = e.iter().rposition(|m| m.starts_with("self-heal at")).unwrap();
    let tail: Vec<&str> = e[from..].iter().map(String::as_str).collect();
    assert!(tail.iter().any(|m| m.starts_with("automatic sync suspended")), "{tail:?}");
    assert!(tail.iter().any(|m| m.starts_with(&format!("pinned at {}", &first[..12]))), "{tail:?}");
    assert!(tail.iter().any(|m| m.starts_with("automatic sync resumed")), "{tail:?}");
}

/// `reconcile now --wait` returns once the applied revision's services are running and
/// healthy; on timeout it exits 1 and names each one that is not, with why.
#[test]
fn reconcile_wait_returns_on_health_and_names_what_is_not_ready() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\n");
    repo.write(
        "actions/web.yaml",
        "actions:\n  - name: web\n    script: /bin/sleep 600\n    process: true\n    health:\n      - exec: test -f \"$HERO_ROOTDIR/ready\"\nservices:\n  - name: web\n",
    );
    let first = repo.commit("web waits for a file");
    let d = follow(&repo);
    wait_applied(&d, &first);
    let late = d.cli(&["reconcile", "now", "--wait", "--timeout", "1s"]);
    assert_eq!(late.status.code(), Some(1), "{}", text(&late.stdout));
    let err = text(&late.stderr);
    assert!(err.contains("not ready after 1s") && err.contains("core/web: not healthy: exec"), "{err}");
    // The file appears while it waits: it returns, ready.
    let flag = d.root().join("ready");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(flag, "").unwrap();
    });
    let ok = d.cli(&["reconcile", "now", "--wait", "--timeout", "30s"]);
    writer.join().unwrap();
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    assert!(text(&ok.stdout).contains("ready: the 1 service(s) of"), "{}", text(&ok.stdout));
    // `resume --wait` waits for the sync it triggers.
    assert!(d.cli(&["reconcile", "suspend"]).status.success());
    let r = d.cli(&["reconcile", "resume", "--wait", "--timeout", "30s"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
}

/// A change by hand to an object git manages says it will be reverted; `reconcile hold`
/// keeps one object's hand change during an incident (not the whole repository) until
/// `release` or a git change to that object.
#[test]
fn hand_changes_warn_and_a_hold_keeps_one_object_out_of_sync() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\n");
    repo.write("actions/web.yaml", &service("web", "one"));
    repo.write("actions/api.yaml", &service("api", "one"));
    let first = repo.commit("web and api");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "one");
    let stop = d.cli(&["service", "stop", "web"]);
    assert!(stop.status.success());
    let warn = text(&stop.stderr);
    assert!(
        warn.contains(&format!("warning: service core/web is managed by git (rev {})", &first[..12]))
            && warn.contains("this will be reverted")
            && warn.contains("hero_proc reconcile hold service core/web"),
        "{warn}"
    );
    wait_for("self-heal to start web again", Duration::from_secs(20), || {
        state(&d, "web").as_deref() == Some("running")
    });

    // Held: the stop stands through syncs; the other service is still managed.
    let held = d.json(&["reconcile", "hold", "service", "web"]);
    assert_eq!(held["held"][0][0], "service core/web");
    let stop = d.cli(&["service", "stop", "web"]);
    assert!(!text(&stop.stderr).contains("warning"), "a held object's change sticks: {}", text(&stop.stderr));
    d.wait_status("web", "stopped", |s| s["state"] == "inactive");
    assert!(d.cli(&["service", "stop", "api"]).status.success());
    let plan = text(&d.cli(&["reconcile", "--dry-run"]).stdout);
    assert!(plan.contains("Held out of sync") && plan.contains("service core/web"), "{plan}");
    assert!(d.cli(&["reconcile", "now"]).status.success());
    assert_eq!(state(&d, "web").as_deref(), Some("inactive"), "the held stop stands");
    wait_for("api (not held) to be started again", Duration::from_secs(20), || {
        state(&d, "api").as_deref() == Some("running")
    });
    let shown = text(&d.cli(&["reconcile", "status"]).stdout);
    assert!(shown.contains("held:") && shown.contains("service core/web"), "{shown}");

    // A git change to the held object is newer intent: it applies and ends the hold.
    repo.write(
        "actions/web.yaml",
        &service("web", "two").replace("  - name: web\n    actions", "  - name: web\n    status: start\n    actions"),
    );
    let second = repo.commit("web two");
    assert!(d.cli(&["reconcile", "now"]).status.success());
    wait_applied(&d, &second);
    let s = status(&d);
    assert_eq!(s["held"], serde_json::json!([]), "released by the git change: {s}");
    wait_greeting(&d, "web", "two");

    // Hold, then release by command: the next sync reverts the drift.
    d.json(&["reconcile", "hold", "service", "web"]);
    wait_for("web to run", Duration::from_secs(20), || state(&d, "web").as_deref() == Some("running"));
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    d.wait_status("web", "stopped", |s| s["state"] == "inactive");
    d.json(&["reconcile", "release", "service", "web"]);
    wait_for("web started again after the release", Duration::from_secs(20), || {
        state(&d, "web").as_deref() == Some("running")
    });
    let log = d.json(&["log", "query", "--source", "hero_proc.sync"]);
    let messages: Vec<&str> = log.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.starts_with("service core/web held out of sync")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("service core/web released")), "{messages:?}");

    // Only what git manages can be held.
    d.set("actions:\n  - name: mine\n    script: /bin/sleep 600\n    process: true\nservices:\n  - name: mine\n");
    let no = d.cli(&["reconcile", "hold", "service", "mine"]);
    assert_eq!(no.status.code(), Some(1));
    assert!(text(&no.stderr).contains("not managed by git"), "{}", text(&no.stderr));
}

/// A dry-run reads commits only: uncommitted config edits are named, not silently absent.
#[test]
fn a_dry_run_names_uncommitted_config_edits() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\n");
    repo.write("actions/web.yaml", &service("web", "one"));
    let first = repo.commit("web");
    let d = follow(&repo);
    wait_applied(&d, &first);
    let clean = d.cli(&["reconcile", "--dry-run"]);
    assert!(!text(&clean.stderr).contains("note:"), "{}", text(&clean.stderr));
    repo.write("actions/web.yaml", &service("web", "edited"));
    repo.write("actions/new.yaml", &service("new", "x"));
    repo.write("README.md", "not config\n");
    let out = d.cli(&["reconcile", "--dry-run"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("No changes"), "{}", text(&out.stdout));
    let note = text(&out.stderr);
    assert!(
        note.contains("2 config file(s)")
            && note.contains("actions/new.yaml, actions/web.yaml")
            && note.contains("commit them"),
        "{note}"
    );
    assert!(!note.contains("README.md"), "only config files: {note}");
    assert!(note.contains("--worktree"), "the hint offers the work-tree preview: {note}");

    // --worktree: the work tree as it is, against this daemon's live state.
    let wt = d.cli(&["reconcile", "--dry-run", "--worktree"]);
    assert!(wt.status.success(), "{}", text(&wt.stderr));
    let shown = text(&wt.stdout);
    assert!(
        shown.contains("Plan for worktree")
            && shown.contains("+  GREETING: edited")
            && shown.contains("+ action core/new"),
        "{shown}"
    );
    // Offline too, against an empty machine.
    let offline = std::process::Command::new(support::bin())
        .args(["reconcile", "--empty", "--worktree", "--repo"])
        .arg(repo.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    assert!(text(&offline.stdout).contains("GREETING: edited"), "{}", text(&offline.stdout));
    // Never applied: the CLI refuses, and so does the daemon when asked directly.
    let apply = d.cli(&["reconcile", "--worktree"]);
    assert_eq!(apply.status.code(), Some(1));
    assert!(text(&apply.stderr).contains("previews only"), "{}", text(&apply.stderr));
    let answer = rpc(&d, r#"{"jsonrpc":"2.0","id":1,"method":"reconcile.apply","params":{"worktree":true}}"#);
    assert!(answer.contains("never applied"), "{answer}");
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(first.as_str()));
}

/// One raw JSON-RPC request over the daemon's socket; the response body.
fn rpc(d: &Daemon, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
