//! The PR preview: what each pending migration would do, against a snapshot of the
//! live system, applying nothing.

use std::collections::BTreeMap;

use crate::common::*;
use hero_proc_migrate::{
    Applied, Change, EffectKind, InMemoryProc, ProcOps, RecordingProc, RunOptions, Snapshot, run_pending,
};

fn live() -> InMemoryProc {
    let mut ops = InMemoryProc::new();
    run_with(
        &mut ops,
        r#"
        proc.action_set(#{ name: "hero_db", script: "/bin/hero_db", process: true });
        proc.service_set(#{ name: "hero_db" });
        proc.service_start("hero_db");
    "#,
    )
    .unwrap();
    ops.add_secret("core", "db_password");
    ops
}

#[test]
fn each_pending_migration_lists_its_effects_and_nothing_is_applied() {
    let live = live();
    let before = live.snapshot();
    let applied = vec![Applied::ok(&mig("2026-01-01-001_done.rhai", "proc.log(\"old\");"))];
    let files = [
        mig("2026-01-01-001_done.rhai", "proc.log(\"old\");"),
        mig(
            "2026-01-02-001_web.rhai",
            r#"
            proc.action_set(#{ name: "web", script: "/bin/web", process: true });
            proc.action_set(proc.action_get("hero_db"));
            proc.service_set(#{ name: "web", requires: ["hero_db"] });
            proc.service_start("web");
            proc.log("web is up");
        "#,
        ),
        mig(
            "2026-01-03-001_jobs.rhai",
            r#"
            // Sees what the previous migration would have created.
            let web = proc.action_get("web");
            web.description = "web server";
            proc.action_set(web);
            proc.action_set(#{ name: "seed", script: "/bin/seed" });
            proc.run_submit(["seed", "core/web"]);
            proc.service_stop("hero_db");
            if !proc.secret_names().contains("db_password") { throw "secret names come from the snapshot"; }
        "#,
        ),
    ];

    let mut rec = RecordingProc::new(live.snapshot());
    let report = run_pending(&files, &applied, &mut rec, &RunOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.failed());
    assert_eq!(report.results.len(), 2);

    assert!(rec.effects_of("2026-01-01-001_done.rhai").is_empty(), "applied ones do not run");
    assert_eq!(
        rec.effects_of("2026-01-02-001_web.rhai"),
        [
            "action_set core/web (new)",
            "action_set core/hero_db (unchanged)",
            "service_set core/web (new)",
            "service_start core/web",
            "log info: web is up",
        ]
    );
    assert_eq!(
        rec.effects_of("2026-01-03-001_jobs.rhai"),
        [
            "action_set core/web (changed)",
            "action_set core/seed (new)",
            "run_submit [core/seed, core/web]",
            "service_stop core/hero_db",
        ]
    );
    assert_eq!(
        rec.effects()[3].kind,
        EffectKind::ServiceStart { context: "core".into(), name: "web".into() },
        "structured effects for the JSON preview"
    );
    assert!(matches!(rec.effects()[0].kind, EffectKind::ActionSet { change: Change::New, .. }));
    let json = serde_json::to_value(&rec.effects()[0]).unwrap();
    assert_eq!(json["op"], "action_set");
    assert_eq!(json["migration"], "2026-01-02-001_web.rhai");

    assert_eq!(live.snapshot(), before, "the live system is untouched");
    assert!(live.runs().is_empty());
}

#[test]
fn unknown_functions_and_wrong_argument_types_fail_the_dry_run() {
    // All of these compile, so `validate` accepts them; only running finds the mistake.
    let cases = [
        ("proc.service_reload(\"hero_db\");", "no function `service_reload (Proc, "),
        ("proc.action_set(\"web\");", "no function `action_set (Proc, "),
        ("proc.service_start(42);", "no function `service_start (Proc, i64)`"),
        ("proc.run_submit(#{ a: 1 });", "no function `run_submit (Proc, map)`"),
        ("proc.secret_names(1, 2);", "no function `secret_names (Proc, i64, i64)`"),
        ("proc.service_start(\"nope\");", "no service core/nope"),
    ];
    for (src, want) in cases {
        let file = mig("2026-01-01-001_x.rhai", &format!("proc.log(\"before\");\n{src}\n"));
        let mut rec = RecordingProc::new(live().snapshot());
        let report = run_pending(std::slice::from_ref(&file), &[], &mut rec, &RunOptions::default());
        let report = match report {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let failed = report.failed().unwrap_or_else(|| panic!("dry-run of `{src}` should fail"));
        let e = failed.error.as_ref().unwrap();
        assert!(e.message.starts_with(want), "{src}: {}", e.message);
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(rec.effects_of(&file.name), ["log info: before"], "effects up to the failure");
    }
}

#[test]
fn validate_accepts_what_only_the_dry_run_refuses() {
    assert!(validates("proc.service_reload(\"hero_db\");"));
    assert!(validates("proc.action_set(\"web\");"));
    // Strict variables: a misspelt `proc` is caught by validate already.
    assert!(!validates("procs.log(\"x\");"));
}

#[test]
fn a_snapshot_feeds_reads() {
    let mut states = BTreeMap::new();
    states.insert("core/hero_db".to_owned(), "failed".to_owned());
    let snap = Snapshot {
        actions: live().snapshot().actions,
        services: live().snapshot().services,
        service_states: states,
        secret_names: [("geo".to_owned(), vec!["b".to_owned(), "a".to_owned()])].into(),
    };
    let mut rec = RecordingProc::new(snap.clone());
    rec.begin_migration("1_t.rhai");
    hero_proc_migrate::run_migration(
        &raw(
            "1_t.rhai",
            r#"
            let l = proc.service_list();
            proc.log(`${l[0].name} ${l[0].state} ${proc.secret_names("geo")} ${proc.action_list().len()}`);
        "#,
        ),
        &mut rec,
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(rec.effects_of("1_t.rhai"), [r#"log info: hero_db failed ["a", "b"] 1"#]);

    // An in-memory system built from a snapshot gives it back.
    let back = InMemoryProc::from_snapshot(snap.clone()).snapshot();
    assert_eq!(back.actions, snap.actions);
    assert_eq!(back.services, snap.services);
    assert_eq!(back.service_states["core/hero_db"], "failed");
}

/// The old install scripts' calls are the ordinary operations: the preview lists an
/// action and a service per `quick_service_set_full`, and the start, stop and restart.
#[test]
fn quick_service_calls_are_listed_like_any_other_effect() {
    let name = "2026-05-20-001_install_hero_food.rhai";
    let src = include_str!("../../../hero-config-example/migrations/2026-05-20-001_install_hero_food.rhai");
    let mut rec = RecordingProc::new(live().snapshot());
    let again = format!(
        "{src}\nproc.quick_service_set_full(\"hero_food_ui\", \"~/hero/bin/hero_food_ui\", \"exec\", \"\");\nproc.quick_service_restart(\"hero_food_ui\");\nproc.quick_service_stop(\"geo/hero_food_ui\");\n"
    );
    let report = run_pending(&[mig(name, &again)], &[], &mut rec, &RunOptions::default()).unwrap();
    let failed = report.failed().expect("stopping a service that does not exist fails");
    assert_eq!(
        failed.error.as_ref().unwrap().message,
        "no service geo/hero_food_ui; create it first with proc.service_set"
    );
    assert_eq!(
        rec.effects_of(name),
        [
            "action_set core/hero_food_server (new)",
            "service_set core/hero_food_server (new)",
            "action_set core/hero_food_ui (new)",
            "service_set core/hero_food_ui (new)",
            "service_start core/hero_food_server",
            "service_start core/hero_food_ui",
            "action_set core/hero_food_ui (unchanged)",
            "service_set core/hero_food_ui (unchanged)",
            "service_restart core/hero_food_ui",
        ]
    );
    assert_eq!(
        rec.effects()[8].kind,
        EffectKind::ServiceRestart { context: "core".into(), name: "hero_food_ui".into() }
    );
}
