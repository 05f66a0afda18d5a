//! Running one migration script: the sandboxed engine, the `proc` object, and errors
//! with file, line and column.
//!
//! # How a script runs
//!
//! The script runs on its own short-lived thread; the caller's thread serves the script's
//! `proc` calls from a channel, one at a time, against the caller's `&mut dyn ProcOps`.
//! Rhai wants `'static` values for everything it holds, and the caller's `ProcOps` is a
//! borrow: the channel hands each call to the borrow's owner instead, with no `unsafe`.
//! A dedicated thread also gives the interpreter a known stack size, and keeps a
//! runaway script off the caller's thread.
//!
//! # Sandbox
//!
//! The engine is `hero_proc_spec::migrations::sandboxed_engine()`, the one
//! `hero_proc validate` compiles with, plus the `proc` API and these runtime guards:
//!
//! - Wall-clock limit ([`RunOptions::wall_limit`], 10 s by default): Rhai calls
//!   `Engine::on_progress` before every operation; every [`PROGRESS_CHECK_EVERY`]
//!   operations the callback compares `Instant::now()` with the deadline (and the
//!   optional cancel flag) and returns a termination token, which aborts the script with
//!   `ErrorTerminated` at the current position. `loop {}` is stopped this way (or by the
//!   operation limit, whichever comes first). Time spent inside a `proc` call counts,
//!   but is noticed when the call returns.
//! - `sleep` (a Rhai built-in that blocks the thread, where `on_progress` cannot see) is
//!   replaced by a function that fails.
//! - `print` and `debug` go to `proc.log` (info, debug) instead of the daemon's stdout.
//!
//! From the spec engine: no module resolver that reads the disk, `eval` and `import`
//! disabled, strict variables, 50M operations, 32 call levels, expression depth 64/32,
//! strings 1 MiB, arrays and maps 100k items. Rhai's standard library has no file,
//! network or process functions; the only way out is `proc`.
//!
//! Rhai checks sizes per value (an array counts all the strings in it) when a value is
//! built, returned or mutated by a call. Inserting into a map by index (`m[k] = v`) is
//! only checked when the map is next used, so such a loop is bounded by the operation
//! and time limits instead (about 2M entries, ~200 MB, in 10 s on a fast machine).
//!
//! `proc` is a script-level constant; Rhai functions do not see those, so scripts pass
//! it as a parameter (closures capture it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hero_proc_spec::migrations::sandboxed_engine;
use hero_proc_spec::{Dur, Migration};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, ImmutableString, Map, Position, Scope};
use serde::{Deserialize, Serialize};

use crate::convert::{self, check_context, parse_ref};
use crate::ops::{LogLevel, ProcOps};

/// Default for [`RunOptions::wall_limit`].
pub const DEFAULT_WALL_LIMIT: Duration = Duration::from_secs(10);

/// How many operations pass between two deadline checks. Reading the clock (~20 ns)
/// on every operation (~3 ns in a tight loop) would dominate; but most operations are
/// fast and a few are slow (building a 1 MiB string takes ~20 ms), and the limit may be
/// overshot by this many of the slowest. 64 keeps the cost near 10% of an empty loop
/// and the worst overshoot near a second.
pub const PROGRESS_CHECK_EVERY: u64 = 64;

/// The name scripts call the API by (see `migration_scope()`).
pub(crate) const PROC_VAR: &str = "proc";

/// The script thread's stack. The spec engine bounds nesting and call depth; this makes
/// sure those bounds, not the stack, are what a deep script hits.
const SCRIPT_STACK: usize = 16 << 20;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// Knobs for running migrations.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Longest a single migration may run, including its `proc` calls.
    pub wall_limit: Duration,
    /// Set by the daemon when it shuts down: the running script stops at its next
    /// progress check and fails (so it is retried on the next start).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { wall_limit: DEFAULT_WALL_LIMIT, cancel: None }
    }
}

impl RunOptions {
    pub fn with_wall_limit(wall_limit: Duration) -> Self {
        RunOptions { wall_limit, ..RunOptions::default() }
    }
}

/// Why a migration failed, and where: prints as
/// `migrations/<name>:<line>:<col>: error: <message>`, like `validate`'s diagnostics.
/// Problems that have no place in the script (a runtime panic, a thread that cannot
/// start) point at `1:1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("migrations/{name}:{line}:{col}: error: {message}")]
pub struct MigrationError {
    /// The file name, e.g. `2026-04-24-001_add_geomind.rhai`.
    pub name: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl MigrationError {
    fn at(name: &str, pos: Position, message: String) -> Self {
        let n = |v: Option<usize>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(1);
        MigrationError { name: name.to_owned(), line: n(pos.line()), col: n(pos.position()), message }
    }
}

/// Run one migration's script against `ops`, bounded by `opts`.
pub fn run_migration(migration: &Migration, ops: &mut dyn ProcOps, opts: &RunOptions) -> Result<(), MigrationError> {
    let name: Arc<str> = migration.name.as_str().into();
    let (tx, rx) = mpsc::channel::<Job>();
    let proc = Proc { tx, migration: name.clone() };
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("hero_proc-migration".into())
            .stack_size(SCRIPT_STACK)
            .spawn_scoped(s, || execute(&migration.source, proc, opts));
        let worker = match worker {
            Ok(w) => w,
            Err(e) => {
                let msg = format!("cannot start the script thread: {e}");
                return Err(MigrationError::at(&name, Position::NONE, msg));
            }
        };
        // Serve the script's `proc` calls until it finishes and drops every sender.
        for job in rx {
            job(ops);
        }
        match worker.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err((pos, message))) => Err(MigrationError::at(&name, pos, message)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(MigrationError::at(
                    &name,
                    Position::NONE,
                    format!("internal error: the script runtime panicked: {what}"),
                ))
            }
        }
    })
}

/// Compile and run on the script thread. Everything holding a `Proc` (engine, scope,
/// AST, error values) is dropped before this returns, which ends the caller's loop.
fn execute(source: &str, proc: Proc, opts: &RunOptions) -> Result<(), (Position, String)> {
    let deadline = Instant::now() + opts.wall_limit;
    let engine = build_engine(proc.clone(), deadline, opts);
    // The same scope `validate` compiles with (`migration_scope()`: one constant,
    // `proc`), with the real value; a test pins that the two agree.
    let mut scope = Scope::new();
    scope.push_constant(PROC_VAR, proc);
    let ast = engine
        .compile_with_scope(&scope, source)
        .map_err(|e| (e.position(), format!("Rhai syntax error: {}", e.err_type())))?;
    engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| describe(*e))
}

/// The spec's sandboxed engine plus the `proc` API and the runtime guards (module docs).
fn build_engine(proc: Proc, deadline: Instant, opts: &RunOptions) -> Engine {
    let mut engine = sandboxed_engine();
    register_api(&mut engine);

    let limit = opts.wall_limit;
    let cancel = opts.cancel.clone();
    engine.on_progress(move |ops| {
        if ops % PROGRESS_CHECK_EVERY != 0 {
            return None;
        }
        if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some("cancelled: hero_proc is shutting down; the migration will be retried".into());
        }
        if Instant::now() >= deadline {
            return Some(
                format!(
                    "stopped after the wall-clock limit of {}: a migration must finish quickly (is there an endless loop?)",
                    Dur(limit)
                )
                .into(),
            );
        }
        None
    });

    let p = proc.clone();
    engine.on_print(move |s| {
        let _ = p.log(LogLevel::Info, s.to_owned());
    });
    engine.on_debug(move |s, _, _| {
        let _ = proc.log(LogLevel::Debug, s.to_owned());
    });

    let no_sleep = || -> RhaiResult<()> {
        Err("`sleep` is not available in migrations: they must finish quickly; submit a run instead".into())
    };
    engine.register_fn("sleep", move |_: INT| no_sleep());
    engine.register_fn("sleep", move |_: FLOAT| no_sleep());
    engine
}

/// A call to make on the caller's thread.
type Job = Box<dyn FnOnce(&mut dyn ProcOps) + Send>;

/// The `proc` constant. Methods take it by value (it is a cheap handle), which makes
/// them pure in Rhai's sense, so they may be called on a constant.
#[derive(Clone)]
struct Proc {
    tx: mpsc::Sender<Job>,
    migration: Arc<str>,
}

impl Proc {
    /// Run `f` on the caller's thread and wait for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn ProcOps) -> Result<R, String> + Send + 'static,
    ) -> RhaiResult<R> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |ops| {
            let _ = rtx.send(f(ops));
        });
        self.tx.send(job).map_err(|_| "hero_proc stopped serving the migration")?;
        match rrx.recv() {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err("the `proc` call failed inside hero_proc (see the daemon log)".into()),
        }
    }

    fn log(&self, level: LogLevel, message: String) -> RhaiResult<()> {
        let m = self.migration.clone();
        self.call(move |ops| ops.log(&m, level, &message))
    }

    fn action_set(&self, map: &Map) -> RhaiResult<()> {
        let decoded = convert::action_from_map(map)?;
        let m = self.migration.clone();
        self.call(move |ops| {
            let key = format!("{}/{}", decoded.value.context, decoded.value.name);
            ops.action_set(decoded.value)?;
            for w in decoded.warnings {
                ops.log(&m, LogLevel::Warn, &format!("action {key}: {w}"))?;
            }
            Ok(())
        })
    }

    fn service_set(&self, map: &Map) -> RhaiResult<()> {
        let decoded = convert::service_from_map(map)?;
        let m = self.migration.clone();
        self.call(move |ops| {
            let key = format!("{}/{}", decoded.value.context, decoded.value.name);
            ops.service_set(decoded.value)?;
            for w in decoded.warnings {
                ops.log(&m, LogLevel::Warn, &format!("service {key}: {w}"))?;
            }
            Ok(())
        })
    }

    /// `quick_service_set_full`: an action and a service, decoded like `action_set` and
    /// `service_set` (and set through them: the dry-run lists both).
    fn quick_service_set(&self, name: &str, cmd: &str, interpreter: &str, check: &str) -> RhaiResult<()> {
        let (action, service) = convert::quick_service(name, cmd, interpreter, check)
            .map_err(|e| format!("quick_service_set_full(\"{name}\", ...): {e}"))?;
        let m = self.migration.clone();
        self.call(move |ops| {
            let key = format!("{}/{}", action.value.context, action.value.name);
            ops.action_set(action.value)?;
            ops.service_set(service.value)?;
            for w in action.warnings.into_iter().chain(service.warnings) {
                ops.log(&m, LogLevel::Warn, &format!("quick service {key}: {w}"))?;
            }
            Ok(())
        })
    }

    fn action_get(&self, context: String, name: String) -> RhaiResult<Dynamic> {
        let found = self.call(move |ops| ops.action_get(&context, &name))?;
        Ok(found.map(|a| convert::object_to_dynamic(&a)).unwrap_or(Dynamic::UNIT))
    }

    fn run_submit(&self, refs: Vec<String>) -> RhaiResult<INT> {
        if refs.is_empty() {
            return Err("run_submit needs at least one action".into());
        }
        self.call(move |ops| ops.run_submit(refs))
    }
}

fn action_ref(s: &str) -> RhaiResult<String> {
    let (c, n) = parse_ref(s, "action")?;
    Ok(format!("{c}/{n}"))
}

fn register_api(engine: &mut Engine) {
    engine.register_type_with_name::<Proc>("Proc");
    engine.register_fn("to_string", |_: Proc| "proc");
    engine.register_fn("to_debug", |_: Proc| "proc");

    engine.register_fn("action_set", |p: Proc, map: Map| p.action_set(&map));
    engine.register_fn("action_get", |p: Proc, r: &str| {
        let (c, n) = parse_ref(r, "action")?;
        p.action_get(c, n)
    });
    engine.register_fn("action_get", |p: Proc, context: &str, name: &str| {
        let (c, n) = parse_ref(&format!("{context}/{name}"), "action")?;
        p.action_get(c, n)
    });
    engine.register_fn("action_list", |p: Proc| -> RhaiResult<Array> {
        let all = p.call(|ops| ops.action_list())?;
        Ok(all.iter().map(convert::object_to_dynamic).collect())
    });

    engine.register_fn("service_set", |p: Proc, map: Map| p.service_set(&map));
    engine.register_fn("service_start", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_start(&c, &n))
    });
    engine.register_fn("service_stop", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_stop(&c, &n))
    });
    engine.register_fn("service_restart", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_restart(&c, &n))
    });

    // The calls of the old install scripts (`install_and_run.rhai`), on the same
    // operations: see "Porting an install script" in docs/MIGRATIONS.md.
    engine.register_fn("quick_service_set_full", |p: Proc, name: &str, cmd: &str, interpreter: &str, check: &str| {
        p.quick_service_set(name, cmd, interpreter, check)
    });
    engine.register_fn("quick_service_start", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_start(&c, &n))
    });
    engine.register_fn("quick_service_stop", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_stop(&c, &n))
    });
    engine.register_fn("quick_service_restart", |p: Proc, r: &str| -> RhaiResult<()> {
        let (c, n) = parse_ref(r, "service")?;
        p.call(move |ops| ops.service_restart(&c, &n))
    });

    engine.register_fn("service_list", |p: Proc| -> RhaiResult<Array> {
        let rows = p.call(|ops| ops.service_list())?;
        Ok(rows
            .into_iter()
            .map(|(context, name, state)| {
                let mut m = Map::new();
                m.insert("context".into(), context.into());
                m.insert("name".into(), name.into());
                m.insert("state".into(), state.into());
                Dynamic::from_map(m)
            })
            .collect())
    });

    engine.register_fn("run_submit", |p: Proc, refs: Array| -> RhaiResult<INT> {
        let mut out = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let Some(s) = r.read_lock::<ImmutableString>() else {
                return Err(format!("run_submit: item {i} is a {}, expected an action name", r.type_name()).into());
            };
            out.push(action_ref(&s)?);
        }
        p.run_submit(out)
    });
    engine.register_fn("run_submit", |p: Proc, r: &str| -> RhaiResult<INT> { p.run_submit(vec![action_ref(r)?]) });

    engine.register_fn("secret_names", |p: Proc| -> RhaiResult<Array> {
        let names = p.call(|ops| ops.secret_names(hero_proc_spec::DEFAULT_CONTEXT))?;
        Ok(names.into_iter().map(Dynamic::from).collect())
    });
    engine.register_fn("secret_names", |p: Proc, context: &str| -> RhaiResult<Array> {
        check_context(context)?;
        let context = context.to_owned();
        let names = p.call(move |ops| ops.secret_names(&context))?;
        Ok(names.into_iter().map(Dynamic::from).collect())
    });

    engine.register_fn("log", |p: Proc, message: Dynamic| p.log(LogLevel::Info, show(&message)));
    engine.register_fn("log", |p: Proc, level: &str, message: Dynamic| -> RhaiResult<()> {
        let Some(level) = LogLevel::parse(level) else {
            return Err(format!("unknown log level `{level}`; one of: {}", LogLevel::NAMES.join(", ")).into());
        };
        p.log(level, show(&message))
    });
}

/// A value as text for a log line or message. Rhai prints custom types by their Rust
/// path; `proc` reads better.
fn show(d: &Dynamic) -> String {
    if d.is::<Proc>() { PROC_VAR.to_owned() } else { d.to_string() }
}

/// Turn a Rhai error into a place and a message for the operator. Errors inside a
/// script-defined function point at the failing line inside it, and name the function.
fn describe(err: EvalAltResult) -> (Position, String) {
    let mut calls = Vec::new();
    let mut outer = Position::NONE;
    let mut e = err;
    while let EvalAltResult::ErrorInFunctionCall(f, _, inner, pos) = e {
        if outer.is_none() {
            outer = pos;
        }
        calls.push(f);
        e = *inner;
    }
    let pos = if e.position().is_none() { outer } else { e.position() };
    let mut message = match e {
        EvalAltResult::ErrorRuntime(d, _) if d.is_string() => d.to_string(),
        EvalAltResult::ErrorRuntime(d, _) => format!("thrown: {}", show(&d)),
        EvalAltResult::ErrorTerminated(token, _) => token.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "too many operations (the limit is {}): a migration must finish quickly (is there an endless loop?)",
            sandboxed_engine().max_operations()
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "calls nested too deeply (the limit is {} levels): is there endless recursion?",
            sandboxed_engine().max_call_levels()
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let engine = sandboxed_engine();
            format!(
                "{what} too large: migrations may build strings up to {} bytes and arrays and maps up to {} items",
                engine.max_string_size(),
                engine.max_array_size()
            )
        }
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            format!(
                "no function `{sig}` (unknown name, or wrong argument types); see docs/MIGRATIONS.md for the `proc` API"
            )
        }
        mut other => {
            other.clear_position();
            other.to_string()
        }
    };
    for f in calls {
        message.push_str(&format!(" (in function `{f}`)"));
    }
    (pos, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate` compiles with `migration_scope()`; the runtime must bind exactly the
    /// same names, or a script could compile and then miss a variable (or the reverse).
    #[test]
    fn binds_what_validate_compiles_with() {
        let names: Vec<(String, bool)> =
            hero_proc_spec::migrations::migration_scope().iter().map(|(n, c, _)| (n.to_owned(), c)).collect();
        assert_eq!(names, vec![(PROC_VAR.to_owned(), true)]);
    }
}
