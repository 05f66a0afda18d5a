//! Each `hero.yaml` setting proven on the running daemon (real repository, real daemon,
//! real SQLite file). Settings proven elsewhere:
//! - `required_services`: reconcile_e2e::deleting_a_required_service_is_refused
//!   (a plan stopping or deleting one is refused).
//! - `self_heal: true`: reconcile_e2e::pr_preview_apply_drift_and_revert (a stop by hand is
//!   reverted); `self_heal: false`: reconcile_e2e::objects_set_by_hand_are_left_alone_and_self_heal_off_only_reports.
//! - `prune: true`: reconcile_e2e::pr_preview_apply_drift_and_revert (a removed service is deleted).
//!
//! Here: `retention` (each field, flags over git, where each value came from), `prune:
//! false`, and `interval` from hero.yaml polling a remote.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::config_repo::*;
use support::{Daemon, text, wait_for};

const DAY_MS: i64 = 86_400_000;
const ACTION: &str = "actions:\n  - name: t\n    script: 'true'\n";

fn settings_repo(hero_yaml: &str) -> (ConfigRepo, String) {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", hero_yaml);
    repo.write("actions/t.yaml", ACTION);
    let rev = repo.commit("settings");
    (repo, rev)
}

/// `runs` runs of `per_run` finished jobs of action `t`.
fn make_history(d: &Daemon, runs: usize, per_run: usize) {
    for _ in 0..runs {
        let mut args = vec!["run", "submit", "--wait"];
        args.extend(std::iter::repeat_n("t", per_run));
        let out = d.cli(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

fn jobs(d: &Daemon) -> usize {
    d.json(&["job", "list", "--limit", "1000"]).as_array().unwrap().len()
}

/// Move every finished job and run `days` into the past, straight in the daemon's
/// database file (another connection, as an operator's sqlite3 would be).
fn age_history(d: &Daemon, days: i64) {
    let db = rusqlite::Connection::open(d.root().join("var/hero_proc/hero_proc.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let shift = days * DAY_MS;
    let n = db
        .execute(
            "UPDATE jobs SET created_at_ms = created_at_ms - ?1, started_at_ms = started_at_ms - ?1,
             finished_at_ms = finished_at_ms - ?1 WHERE finished_at_ms IS NOT NULL",
            [shift],
        )
        .unwrap();
    assert!(n > 0, "no finished job to age");
    db.execute(
        "UPDATE runs SET created_at_ms = created_at_ms - ?1, finished_at_ms = finished_at_ms - ?1
         WHERE finished_at_ms IS NOT NULL",
        [shift],
    )
    .unwrap();
}

fn compactor(d: &Daemon) -> Value {
    d.json(&["system", "compactor-status"])
}

fn from_git(rev: &str) -> String {
    format!("hero.yaml@{}", &rev[..12])
}

#[test]
fn retention_in_git_reaches_the_compactor_and_a_new_commit_applies_it_without_a_restart() {
    let (repo, rev) = settings_repo(
        "required_services: []\nretention: { max_age_days: 7, max_rows_per_table: 20, compact_every: 1h }\n",
    );
    let d = follow(&repo);
    wait_applied(&d, &rev);
    let s = compactor(&d);
    assert_eq!((s["max_age_days"].as_u64(), s["max_rows_per_table"].as_u64()), (Some(7), Some(20)), "{s}");
    assert_eq!(s["every_secs"], 3600, "{s}");
    for field in ["max_age_days", "max_rows_per_table", "every"] {
        assert_eq!(s["sources"][field], from_git(&rev).as_str(), "{field}: {s}");
    }
    let shown = text(&d.cli(&["system", "compactor-status"]).stdout);
    assert!(shown.contains(&format!("max_rows_per_table {}", from_git(&rev))), "{shown}");

    // max_rows_per_table: 100 jobs, a cap of 20.
    make_history(&d, 5, 20);
    assert_eq!(jobs(&d), 100);
    let report = d.json(&["system", "compact"]);
    assert!(report["jobs_deleted"].as_u64().unwrap() >= 70, "hero.yaml's cap of 20 applied: {report}");
    let left = jobs(&d);
    assert!((10..=30).contains(&left), "{left} jobs left under a cap of 20");

    // max_age_days: history 10 days old goes with hero.yaml's 7 (the default keeps 30).
    age_history(&d, 10);
    let report = d.json(&["system", "compact"]);
    assert_eq!(report["jobs_deleted"].as_u64(), Some(left as u64), "{report}");
    assert_eq!(jobs(&d), 0);

    // A new commit: its compact_every reschedules the running compactor (the old period
    // was an hour) and its cap applies at that scheduled run, without a restart.
    make_history(&d, 5, 20);
    let runs = compactor(&d)["runs"].as_u64().unwrap();
    repo.write(
        "hero.yaml",
        "required_services: []\nretention: { max_age_days: 7, max_rows_per_table: 5, compact_every: 2s }\n",
    );
    let second = repo.commit("compact every 2s, keep 5");
    wait_applied(&d, &second);
    let s = compactor(&d);
    assert_eq!(s["every_secs"], 2, "{s}");
    assert_eq!(s["sources"]["every"], from_git(&second).as_str(), "{s}");
    wait_for("a scheduled compaction under the new settings", Duration::from_secs(15), || {
        compactor(&d)["runs"].as_u64().unwrap() > runs
    });
    let left = jobs(&d);
    assert!(left <= 15, "{left} jobs left under a cap of 5");
    let next = compactor(&d)["next_run_ms"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(next - now <= 3_000, "next run within the new 2s period, not an hour: {}", next - now);
}

#[test]
fn an_explicit_serve_flag_wins_over_git_and_says_so() {
    let (repo, rev) = settings_repo(
        "required_services: []\nretention: { max_age_days: 7, max_rows_per_table: 20, compact_every: 1h }\n",
    );
    let d = Daemon::start_with(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h", "--max-age-days", "20"],
        false,
    );
    wait_applied(&d, &rev);
    let s = compactor(&d);
    assert_eq!(s["max_age_days"], 20, "{s}");
    assert_eq!(s["sources"]["max_age_days"], "flag", "{s}");
    assert_eq!(s["max_rows_per_table"], 20, "{s}");
    assert_eq!(s["sources"]["max_rows_per_table"], from_git(&rev).as_str(), "{s}");
    // History 10 days old stays: the flag's 20 days, not git's 7.
    make_history(&d, 1, 10);
    age_history(&d, 10);
    let report = d.json(&["system", "compact"]);
    assert_eq!(report["jobs_deleted"], 0, "{report}");
    assert_eq!(jobs(&d), 10);
    // The sync interval says where it came from too.
    let st = status(&d);
    assert_eq!((st["interval_secs"].as_u64(), st["interval_source"].as_str()), (Some(3600), Some("flag")), "{st}");
}

#[test]
fn a_key_hero_yaml_leaves_out_is_a_default_not_the_revision() {
    let (repo, rev) = settings_repo("required_services: []\nretention: { max_rows_per_table: 20 }\n");
    // No `--interval` flag: the interval must come from hero.yaml or the default.
    let d = Daemon::start_with(&["--repo", &repo.location(), "--branch", "main"], false);
    wait_applied(&d, &rev);
    let s = compactor(&d);
    assert_eq!((s["max_age_days"].as_u64(), s["max_rows_per_table"].as_u64()), (Some(30), Some(20)), "{s}");
    assert_eq!(s["sources"]["max_rows_per_table"], from_git(&rev).as_str(), "{s}");
    assert_eq!(s["sources"]["max_age_days"], "default", "{s}");
    assert_eq!(s["sources"]["every"], "default", "{s}");
    // hero.yaml has no `interval`: the sync interval is the default one, and says so.
    let st = status(&d);
    assert_eq!((st["interval_secs"].as_u64(), st["interval_source"].as_str()), (Some(60), Some("default")), "{st}");
}

#[test]
fn without_a_repository_every_value_is_a_default() {
    let d = Daemon::start_with(&["--compact-every", "10m"], false);
    let s = compactor(&d);
    assert_eq!((s["max_age_days"].as_u64(), s["max_rows_per_table"].as_u64()), (Some(30), Some(100_000)), "{s}");
    assert_eq!(s["every_secs"], 600, "{s}");
    assert_eq!(s["sources"]["max_age_days"], "default", "{s}");
    assert_eq!(s["sources"]["max_rows_per_table"], "default", "{s}");
    assert_eq!(s["sources"]["every"], "flag", "{s}");
}

#[test]
fn prune_off_keeps_objects_removed_from_git_and_prune_on_deletes_them() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\nprune: false\n");
    repo.write("actions/web.yaml", &service("web", "w"));
    repo.write("actions/old.yaml", &service("old", "o"));
    let first = repo.commit("web and old");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "old", "o");

    repo.rm("actions/old.yaml");
    let second = repo.commit("drop old, prune off");
    wait_applied(&d, &second);
    assert_eq!(state(&d, "old").as_deref(), Some("running"), "kept: prune is off");
    let plan = d.json(&["reconcile", "--dry-run"]);
    assert!(plan["not_pruned"].as_array().unwrap().iter().any(|k| k == "service core/old"), "{plan}");

    repo.write("hero.yaml", "required_services: []\nprune: true\n");
    let third = repo.commit("prune on");
    wait_applied(&d, &third);
    wait_for("old to be pruned", Duration::from_secs(10), || state(&d, "old").is_none());
    assert_eq!(state(&d, "web").as_deref(), Some("running"));
}

#[test]
fn interval_in_hero_yaml_polls_a_remote_repository() {
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\ninterval: 1s\n");
    repo.write("actions/web.yaml", &service("web", "one"));
    let one = repo.commit("poll every second");
    // A file:// URL is fetched, not watched; no --interval and no webhook: only the
    // setting in git can make a new commit apply within seconds (the default is 1m).
    let url = format!("file://{}", repo.location());
    let d = Daemon::start_with(&["--repo", &url, "--branch", "main"], false);
    wait_applied(&d, &one);
    let st = status(&d);
    assert_eq!(st["interval_secs"], 1, "{st}");
    assert_eq!(st["interval_source"], from_git(&one).as_str(), "{st}");

    repo.write("actions/web.yaml", &service("web", "two"));
    let two = repo.commit("two");
    let started = std::time::Instant::now();
    wait_greeting(&d, "web", "two");
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(two.as_str()));
    assert!(started.elapsed() < Duration::from_secs(15), "polled at hero.yaml's 1s: {:?}", started.elapsed());
}

#[test]
fn settings_follow_the_applied_revision_not_a_preview_nor_a_restart() {
    let (repo, rev) = settings_repo(
        "required_services: []\nself_heal: true\nretention: { max_age_days: 7, max_rows_per_table: 20, compact_every: 1h }\n",
    );
    // The PR exists before the daemon starts: no commit later wakes a sync that would
    // hide what the preview did.
    repo.git(&["checkout", "-q", "-b", "pr"]);
    repo.write("hero.yaml", "required_services: []\nself_heal: false\n");
    repo.commit("PR: self_heal off");
    repo.git(&["checkout", "-q", "main"]);
    let mut d = follow(&repo);
    wait_applied(&d, &rev);

    // A preview of another revision changes nothing the daemon obeys.
    assert!(d.cli(&["reconcile", "--dry-run", "--rev", "pr"]).status.success());
    assert_eq!(status(&d)["self_heal"], true, "the applied revision's self_heal");

    // Suspended, then restarted: nothing is applied, and git's retention still holds.
    assert!(d.cli(&["reconcile", "suspend"]).status.success());
    d.kill9();
    d.spawn();
    wait_for("git's retention after a restart with sync suspended", Duration::from_secs(20), || {
        compactor(&d)["sources"]["max_rows_per_table"] == from_git(&rev).as_str()
    });
    let s = compactor(&d);
    assert_eq!((s["max_age_days"].as_u64(), s["max_rows_per_table"].as_u64()), (Some(7), Some(20)), "{s}");
    assert!(status(&d)["suspended"].as_bool().unwrap());
}
