//! The examples in docs/MIGRATIONS.md validate and run, and the preview it shows is the one
//! the dry-run produces.

use crate::common::*;
use hero_proc_migrate::{ProcOps, RecordingProc, RunOptions, run_migration};

const GUIDE: &str = include_str!("../../../docs/MIGRATIONS.md");

fn blocks(lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    GUIDE.split(fence.as_str()).skip(1).map(|rest| rest.split("```").next().unwrap().to_owned()).collect()
}

fn system() -> hero_proc_migrate::InMemoryProc {
    let mut ops = hero_proc_migrate::InMemoryProc::new();
    run_with(
        &mut ops,
        r#"
        proc.action_set(#{ name: "hero_db", script: "/bin/hero_db", process: true });
        proc.service_set(#{ name: "hero_db" });
        proc.action_set(#{ name: "web", script: "/bin/web", process: true });
    "#,
    )
    .unwrap();
    ops
}

#[test]
fn every_rhai_example_validates_and_runs() {
    let examples = blocks("rhai");
    assert!(examples.len() >= 5, "found {}", examples.len());
    for src in &examples {
        assert!(validates(src), "validate refuses:\n{src}");
        let mut ops = system();
        run_with(&mut ops, src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    }
}

#[test]
fn the_preview_shown_is_the_dry_run_output() {
    let full = blocks("rhai").into_iter().find(|b| b.contains("split_worker")).unwrap();
    let shown: Vec<String> = GUIDE
        .split("2026-05-02-001_split_worker.rhai\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut rec = RecordingProc::new(system().snapshot());
    rec.begin_migration("2026-05-02-001_split_worker.rhai");
    run_migration(&raw("2026-05-02-001_split_worker.rhai", &full), &mut rec, &RunOptions::default()).unwrap();
    assert_eq!(rec.effects_of("2026-05-02-001_split_worker.rhai"), shown);
}

#[test]
fn the_install_script_preview_shown_is_the_dry_run_output() {
    let name = "2026-05-20-001_install_hero_food.rhai";
    let full = blocks("rhai").into_iter().find(|b| b.contains("install_and_run") || b.contains("cmd_server")).unwrap();
    let shown: Vec<String> = GUIDE
        .split(&format!("{name}\n"))
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut rec = RecordingProc::new(system().snapshot());
    rec.begin_migration(name);
    run_migration(&raw(name, &full), &mut rec, &RunOptions::default()).unwrap();
    assert_eq!(rec.effects_of(name), shown);
}
