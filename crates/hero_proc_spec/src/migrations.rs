//! Migration files: names, order and Rhai syntax.
//!
//! Names are `<version>_<description>.rhai`, with a version that sorts lexically in the
//! order the files must run (a date and a counter is the convention:
//! `2026-04-24-001_add_geomind.rhai`). Two files with one version would have an
//! ambiguous order, so that is an error.

use std::sync::{Arc, OnceLock};

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostics, Pos};
use crate::model::Migration;

fn name_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([0-9][0-9.-]*)_([a-z0-9][a-z0-9_-]*)\.rhai$").expect("static regex"))
}

/// The version prefix of a migration file name, if the name is well formed.
pub fn version_of(name: &str) -> Option<&str> {
    name_re().captures(name).and_then(|c| c.get(1)).map(|m| m.as_str())
}

/// The engine every migration is compiled with: sandboxed and bounded. The runtime
/// (which adds the `proc` module) starts from this same engine, so `validate` refuses
/// exactly what the reconciler would.
pub fn sandboxed_engine() -> rhai::Engine {
    let mut engine = rhai::Engine::new();
    // No module loading from the file system (the default resolver reads the cwd).
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.set_strict_variables(true);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_call_levels(32);
    engine.set_max_operations(50_000_000);
    engine.set_max_string_size(1 << 20);
    engine.set_max_array_size(100_000);
    engine.set_max_map_size(100_000);
    engine
}

/// The scope a migration runs in: only `proc` is predefined (strict variables needs to
/// know it at compile time).
pub fn migration_scope() -> rhai::Scope<'static> {
    let mut scope = rhai::Scope::new();
    scope.push_constant("proc", ());
    scope
}

/// Check one migration file and build its model.
pub fn check_migration(file: &Arc<str>, name: &str, source: String, diags: &mut Diagnostics) -> Option<Migration> {
    let at_file = Pos::file(file);
    if version_of(name).is_none() {
        diags
            .error(&at_file, "migration.name", format!("invalid migration file name `{name}`"))
            .hint("name migrations `<version>_<description>.rhai`, e.g. `2026-04-24-001_add_geomind.rhai` (lowercase description)");
        return None;
    }
    static ENGINE: OnceLock<rhai::Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(sandboxed_engine);
    if let Err(err) = engine.compile_with_scope(&migration_scope(), &source) {
        let p = err.position();
        let pos = Pos { file: file.clone(), line: p.line().unwrap_or(1) as u32, col: p.position().unwrap_or(1) as u32 };
        diags
            .error(&pos, "migration.syntax", format!("Rhai syntax error: {}", err.err_type()))
            .hint("migrations are Rhai scripts run with a `proc` module; see docs/MIGRATIONS.md");
        return None;
    }
    let sha256 = hex::encode(Sha256::digest(source.as_bytes()));
    Some(Migration { name: name.to_owned(), path: file.to_string(), sha256, source })
}

/// Versions must be unique, so the order is never ambiguous.
pub fn check_order(migrations: &[Migration], diags: &mut Diagnostics) {
    for pair in migrations.windows(2) {
        if version_of(&pair[0].name) == version_of(&pair[1].name) {
            let file: Arc<str> = pair[1].path.as_str().into();
            diags
                .error(
                    &Pos::file(&file),
                    "migration.duplicate-version",
                    format!("migrations `{}` and `{}` share a version", pair[0].name, pair[1].name),
                )
                .hint("give each migration its own version prefix so the order is clear");
        }
    }
}
