//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use hero_proc_migrate::{InMemoryProc, MigrationError, RunOptions, run_migration};
use hero_proc_spec::Migration;
use hero_proc_spec::diag::Diagnostics;
use hero_proc_spec::migrations::check_migration;

/// A migration built by the loader's own function (name rules, Rhai syntax, SHA-256):
/// what the reconciler hands the runner. Panics if `validate` would refuse it.
pub fn mig(name: &str, source: &str) -> Migration {
    let file: Arc<str> = format!("migrations/{name}").into();
    let mut diags = Diagnostics::new();
    let m = check_migration(&file, name, source.to_owned(), &mut diags);
    assert!(!diags.has_errors(), "validate refuses {name}: {:?}", diags.iter().collect::<Vec<_>>());
    m.expect("valid migration")
}

/// A migration `validate` would refuse, for proving the runtime refuses it too.
pub fn raw(name: &str, source: &str) -> Migration {
    Migration { name: name.into(), path: format!("migrations/{name}"), sha256: "0".repeat(64), source: source.into() }
}

/// Does `validate` accept this script?
pub fn validates(source: &str) -> bool {
    let file: Arc<str> = "migrations/1_t.rhai".into();
    let mut diags = Diagnostics::new();
    check_migration(&file, "1_t.rhai", source.to_owned(), &mut diags).is_some()
}

pub fn run(source: &str) -> (InMemoryProc, Result<(), MigrationError>) {
    let mut ops = InMemoryProc::new();
    let r = run_with(&mut ops, source);
    (ops, r)
}

pub fn run_with(ops: &mut InMemoryProc, source: &str) -> Result<(), MigrationError> {
    run_migration(&raw("1_t.rhai", source), ops, &RunOptions::default())
}

/// Run a script that must fail; returns the error.
pub fn fails(source: &str) -> MigrationError {
    match run(source).1 {
        Ok(()) => panic!("script should fail:\n{source}"),
        Err(e) => e,
    }
}
