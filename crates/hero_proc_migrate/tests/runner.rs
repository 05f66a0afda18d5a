//! Ordering, checksums, failures and retries, baseline: the runner over a small
//! "daemon" made of the in-memory system plus a record of applied migrations.

use crate::common::*;
use hero_proc_migrate::{
    Applied, AppliedResult, BaselineError, HistoryError, InMemoryProc, ProcOps, RunOptions, RunReport, STATE_RUNNING,
    baseline, check_history, run_pending,
};
use hero_proc_spec::Migration;

/// A machine: its live system and its record of migrations (upserted by name, like the
/// store's `migrations_applied`).
#[derive(Default)]
struct Machine {
    ops: InMemoryProc,
    applied: Vec<Applied>,
}

impl Machine {
    fn reconcile(&mut self, migrations: &[Migration]) -> RunReport {
        let report = run_pending(migrations, &self.applied, &mut self.ops, &RunOptions::default())
            .unwrap_or_else(|e| panic!("history: {e}"));
        for r in &report.results {
            self.record(r.applied());
        }
        report
    }
    fn record(&mut self, a: Applied) {
        self.applied.retain(|x| x.name != a.name);
        self.applied.push(a);
    }
    fn ran(report: &RunReport) -> Vec<&str> {
        report.results.iter().map(|r| r.name.as_str()).collect()
    }
}

const CREATE_WEB: &str = r#"
proc.action_set(#{ name: "web", script: "/bin/web --port 8080", process: true });
proc.service_set(#{ name: "web" });
proc.service_start("web");
proc.log("web created");
"#;

const ADD_WORKER: &str = r#"
let web = proc.action_get("web");
web.script = "/bin/web --port 9090";
proc.action_set(web);
proc.action_set(#{ name: "worker", script: "/bin/worker", process: true });
proc.service_set(#{ name: "worker", requires: ["web"] });
proc.service_start("worker");
proc.action_set(#{ name: "reindex", script: "/bin/reindex" });
proc.run_submit(["reindex"]);
"#;

fn first() -> Migration {
    mig("2026-01-01-001_create_web.rhai", CREATE_WEB)
}
fn second() -> Migration {
    mig("2026-01-02-001_add_worker.rhai", ADD_WORKER)
}

#[test]
fn a_migration_creates_and_starts_a_service_once() {
    let mut m = Machine::default();
    let report = m.reconcile(&[first()]);
    assert!(report.is_ok());
    assert_eq!(Machine::ran(&report), ["2026-01-01-001_create_web.rhai"]);
    let r = &report.results[0];
    assert_eq!(r.sha256, first().sha256);
    assert_eq!(r.result, AppliedResult::Ok);
    assert!(r.error.is_none());
    assert_eq!(m.ops.snapshot().service_states["core/web"], STATE_RUNNING);

    // Nothing pending: nothing runs, however often the reconciler comes by.
    for _ in 0..3 {
        assert!(m.reconcile(&[first()]).results.is_empty());
    }
    assert_eq!(m.ops.logs().len(), 1, "ran exactly once");
}

#[test]
fn a_migration_added_later_runs_once_and_both_run_exactly_once() {
    let mut m = Machine::default();
    m.reconcile(&[first()]);
    let report = m.reconcile(&[first(), second()]);
    assert_eq!(Machine::ran(&report), ["2026-01-02-001_add_worker.rhai"]);
    for _ in 0..3 {
        assert!(m.reconcile(&[first(), second()]).results.is_empty());
    }
    assert_eq!(m.ops.logs().len(), 1);
    assert_eq!(m.ops.runs().len(), 1);
    assert_eq!(m.applied.len(), 2);
    assert!(m.applied.iter().all(|a| a.result == AppliedResult::Ok));
}

#[test]
fn a_fresh_machine_and_an_upgraded_one_end_in_the_same_state() {
    let mut fresh = Machine::default();
    let report = fresh.reconcile(&[second(), first()]);
    assert_eq!(
        Machine::ran(&report),
        ["2026-01-01-001_create_web.rhai", "2026-01-02-001_add_worker.rhai"],
        "file-name order, whatever the input order"
    );

    let mut upgraded = Machine::default();
    upgraded.reconcile(&[first()]);
    upgraded.reconcile(&[first(), second()]);

    assert_eq!(fresh.ops.snapshot(), upgraded.ops.snapshot());
    assert_eq!(fresh.ops.runs(), upgraded.ops.runs());
    assert_eq!(fresh.ops.logs(), upgraded.ops.logs());
    assert_eq!(fresh.applied, upgraded.applied);
    let web = fresh.ops.snapshot().actions.into_iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.script, "/bin/web --port 9090");
}

#[test]
fn an_edited_applied_migration_is_an_error_and_nothing_runs() {
    let mut m = Machine::default();
    m.reconcile(&[first()]);
    let edited = mig("2026-01-01-001_create_web.rhai", &format!("{CREATE_WEB}\nproc.log(\"again\");"));
    let before = m.ops.snapshot();
    let err = run_pending(&[edited.clone(), second()], &m.applied, &mut m.ops, &RunOptions::default()).unwrap_err();
    assert_eq!(
        err.0,
        vec![HistoryError::Edited {
            name: "2026-01-01-001_create_web.rhai".into(),
            applied_sha256: first().sha256,
            file_sha256: edited.sha256.clone(),
        }]
    );
    assert!(err.to_string().starts_with("migrations/2026-01-01-001_create_web.rhai: this migration was applied with"));
    assert_eq!(m.ops.snapshot(), before, "the later migration did not run either");
    assert_eq!(m.ops.runs().len(), 0);
}

#[test]
fn a_deleted_applied_migration_is_an_error() {
    let mut m = Machine::default();
    m.reconcile(&[first()]);
    let err = run_pending(&[second()], &m.applied, &mut m.ops, &RunOptions::default()).unwrap_err();
    assert_eq!(err.0, vec![HistoryError::Deleted { name: "2026-01-01-001_create_web.rhai".into() }]);
    assert_eq!(m.ops.runs().len(), 0);
}

#[test]
fn a_new_migration_sorting_before_the_newest_applied_is_an_error() {
    let mut m = Machine::default();
    m.reconcile(&[first(), second()]);
    let sneaky = mig("2026-01-01-002_sneaky.rhai", "proc.log(\"late\");");
    let err = run_pending(&[first(), sneaky, second()], &m.applied, &mut m.ops, &RunOptions::default()).unwrap_err();
    assert_eq!(
        err.0,
        vec![HistoryError::OutOfOrder {
            name: "2026-01-01-002_sneaky.rhai".into(),
            newest_applied: "2026-01-02-001_add_worker.rhai".into(),
        }]
    );
    assert!(err.to_string().contains("rename it to sort after `2026-01-02-001_add_worker.rhai`"));
}

#[test]
fn every_history_problem_is_reported_at_once() {
    let applied = vec![
        Applied { name: "1_a.rhai".into(), sha256: "x".repeat(64), result: AppliedResult::Ok },
        Applied { name: "3_c.rhai".into(), sha256: "y".repeat(64), result: AppliedResult::Ok },
        Applied { name: "4_d.rhai".into(), sha256: "z".repeat(64), result: AppliedResult::Ok },
    ];
    let files = [mig("1_a.rhai", "1;"), mig("2_b.rhai", "2;"), mig("4_d.rhai", "4;")];
    let err = check_history(&files, &applied).unwrap_err();
    let names: Vec<_> = err.0.iter().map(|e| (e.name(), std::mem::discriminant(e))).collect();
    assert_eq!(names.len(), 4, "{err}");
    assert!(matches!(err.0[0], HistoryError::Edited { ref name, .. } if name == "1_a.rhai"));
    assert!(matches!(err.0[1], HistoryError::OutOfOrder { ref name, .. } if name == "2_b.rhai"));
    assert!(matches!(err.0[2], HistoryError::Deleted { ref name } if name == "3_c.rhai"));
    assert!(matches!(err.0[3], HistoryError::Edited { ref name, .. } if name == "4_d.rhai"));
    assert_eq!(err.to_string().lines().count(), 4);
}

#[test]
fn a_failed_migration_stops_the_later_ones_and_is_retried() {
    let broken = mig("2026-01-01-001_create_web.rhai", "proc.log(\"trying\");\nproc.service_start(\"web\");\n");
    let mut m = Machine::default();
    let report = m.reconcile(&[broken.clone(), second()]);
    assert!(!report.is_ok());
    let failed = report.failed().unwrap();
    assert_eq!(failed.name, broken.name);
    assert_eq!(failed.sha256, broken.sha256);
    assert_eq!(failed.result, AppliedResult::Failed);
    let e = failed.error.as_ref().unwrap();
    assert_eq!(
        e.to_string(),
        "migrations/2026-01-01-001_create_web.rhai:2:6: error: no service core/web; create it first with proc.service_set"
    );
    assert_eq!(report.not_run, ["2026-01-02-001_add_worker.rhai"]);
    assert_eq!(report.results.len(), 1);
    assert_eq!(
        m.applied,
        vec![Applied { name: broken.name.clone(), sha256: broken.sha256.clone(), result: AppliedResult::Failed }]
    );

    // Still failing next time: retried, and still stops the later one.
    let report = m.reconcile(&[broken.clone(), second()]);
    assert_eq!(Machine::ran(&report), [broken.name.as_str()]);
    assert_eq!(m.ops.logs().len(), 2, "retried: the script ran again");

    // Fixed in the next revision (editing a failed migration is allowed): both run.
    let report = m.reconcile(&[first(), second()]);
    assert!(report.is_ok());
    assert_eq!(Machine::ran(&report), ["2026-01-01-001_create_web.rhai", "2026-01-02-001_add_worker.rhai"]);
    assert!(m.applied.iter().all(|a| a.result == AppliedResult::Ok));
    assert_eq!(m.applied.iter().find(|a| a.name == broken.name).unwrap().sha256, first().sha256);
}

#[test]
fn a_failed_migration_may_be_removed() {
    let broken = mig("2026-01-02-001_broken.rhai", "throw \"no\";");
    let mut m = Machine::default();
    m.reconcile(&[first(), broken]);
    assert_eq!(m.applied.iter().filter(|a| a.result == AppliedResult::Failed).count(), 1);
    let report = m.reconcile(&[first(), second()]);
    assert_eq!(Machine::ran(&report), ["2026-01-02-001_add_worker.rhai"]);
}

#[test]
fn outcomes_carry_duration_and_serialise() {
    const SLOW: &str = "for i in 0..3 { let s = \"x\"; s.pad(1000000, \"y\"); }";
    let mut m = Machine::default();
    let report = m.reconcile(&[mig("1_slow.rhai", SLOW)]);
    assert!(report.results[0].duration_ms > 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][0]["result"], "ok");
    assert!(json["results"][0].get("error").is_none());
    let report = m.reconcile(&[mig("1_slow.rhai", SLOW), mig("2_bad.rhai", "throw \"no\";")]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][0]["result"], "failed");
    assert_eq!(json["results"][0]["error"]["message"], "no");
    assert_eq!(json["results"][0]["error"]["line"], 1);
}

#[test]
fn baseline_records_without_running() {
    let files = [first(), second(), mig("2026-01-03-001_third.rhai", "proc.log(\"third\");")];
    let mut m = Machine::default();
    let recs = baseline(&files, &m.applied, "2026-01-02-001_add_worker.rhai").unwrap();
    assert_eq!(recs, vec![Applied::ok(&files[0]), Applied::ok(&files[1])]);
    for r in recs {
        m.record(r);
    }
    assert!(m.ops.snapshot().actions.is_empty(), "baseline runs nothing");
    let report = m.reconcile(&files);
    assert_eq!(Machine::ran(&report), ["2026-01-03-001_third.rhai"]);

    // Already applied ones are not repeated; `.rhai` may be left off.
    assert!(baseline(&files, &m.applied, "2026-01-03-001_third").unwrap().is_empty());

    // A failed one is overwritten by the baseline record.
    let failed = vec![Applied { name: files[0].name.clone(), sha256: "0".repeat(64), result: AppliedResult::Failed }];
    assert_eq!(baseline(&files, &failed, &files[0].name).unwrap(), vec![Applied::ok(&files[0])]);
}

#[test]
fn baseline_of_an_unknown_file_is_an_error() {
    let files = [first(), second()];
    let err = baseline(&files, &[], "2026-01-01-001_create_wbe.rhai").unwrap_err();
    assert_eq!(
        err,
        BaselineError {
            up_to: "2026-01-01-001_create_wbe.rhai".into(),
            closest: Some("2026-01-01-001_create_web.rhai".into())
        }
    );
    assert_eq!(
        err.to_string(),
        "no migration file `migrations/2026-01-01-001_create_wbe.rhai`; did you mean `2026-01-01-001_create_web.rhai`?"
    );
    assert!(baseline(&files, &[], "zzz").unwrap_err().closest.is_none());
}

#[test]
fn baseline_resolves_an_out_of_order_file_whose_effect_is_in_place() {
    let mut m = Machine::default();
    m.reconcile(&[first(), second()]);
    let early = mig("2026-01-01-002_early.rhai", "proc.log(\"early\");");
    let files = [first(), early.clone(), second()];
    assert!(check_history(&files, &m.applied).is_err());
    for r in baseline(&files, &m.applied, &early.name).unwrap() {
        m.record(r);
    }
    assert!(check_history(&files, &m.applied).unwrap().is_empty());
}

/// The daemon adapter is expected to announce each migration; the runner does.
#[test]
fn each_migration_is_announced_before_it_runs() {
    #[derive(Default)]
    struct Announced {
        inner: InMemoryProc,
        seen: Vec<String>,
    }
    impl ProcOps for Announced {
        fn begin_migration(&mut self, name: &str) {
            self.seen.push(name.to_owned());
        }
        fn action_set(&mut self, a: hero_proc_spec::Action) -> Result<(), String> {
            self.inner.action_set(a)
        }
        fn action_get(&mut self, c: &str, n: &str) -> Result<Option<hero_proc_spec::Action>, String> {
            self.inner.action_get(c, n)
        }
        fn action_list(&mut self) -> Result<Vec<hero_proc_spec::Action>, String> {
            self.inner.action_list()
        }
        fn service_set(&mut self, s: hero_proc_spec::Service) -> Result<(), String> {
            self.inner.service_set(s)
        }
        fn service_start(&mut self, c: &str, n: &str) -> Result<(), String> {
            self.inner.service_start(c, n)
        }
        fn service_stop(&mut self, c: &str, n: &str) -> Result<(), String> {
            self.inner.service_stop(c, n)
        }
        fn service_list(&mut self) -> Result<Vec<hero_proc_migrate::ServiceRow>, String> {
            self.inner.service_list()
        }
        fn run_submit(&mut self, a: Vec<String>) -> Result<i64, String> {
            self.inner.run_submit(a)
        }
        fn secret_names(&mut self, c: &str) -> Result<Vec<String>, String> {
            self.inner.secret_names(c)
        }
        fn log(&mut self, m: &str, l: hero_proc_migrate::LogLevel, msg: &str) -> Result<(), String> {
            self.inner.log(m, l, msg)
        }
    }
    let mut ops = Announced::default();
    run_pending(&[second(), first()], &[], &mut ops, &RunOptions::default()).unwrap();
    assert_eq!(ops.seen, ["2026-01-01-001_create_web.rhai", "2026-01-02-001_add_worker.rhai"]);
}
