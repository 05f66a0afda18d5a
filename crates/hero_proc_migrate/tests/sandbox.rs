//! Escapes and resource limits: a migration can only reach the system through `proc`,
//! and cannot hold the daemon hostage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use hero_proc_migrate::{DEFAULT_WALL_LIMIT, InMemoryProc, RunOptions, run_migration};

fn fails_with(opts: &RunOptions, source: &str) -> (hero_proc_migrate::MigrationError, Duration) {
    let mut ops = InMemoryProc::new();
    let started = Instant::now();
    let e = run_migration(&raw("1_t.rhai", source), &mut ops, opts).expect_err("script should fail");
    (e, started.elapsed())
}

#[test]
fn no_file_network_or_process_functions() {
    let marker = std::env::temp_dir().join(format!("hero_proc_migrate_escape_{}", std::process::id()));
    let path = marker.display().to_string();
    let attempts = [
        format!("open(\"{path}\");"),
        format!("open_file(\"{path}\");"),
        format!("read_file(\"{path}\");"),
        format!("write_file(\"{path}\", \"x\");"),
        format!("File(\"{path}\");"),
        format!("fs::write(\"{path}\", \"x\");"),
        "system(\"touch /tmp/x\");".to_owned(),
        "exec(\"sh\");".to_owned(),
        "spawn(\"sh\");".to_owned(),
        "command(\"sh\");".to_owned(),
        "http_get(\"http://127.0.0.1:1\");".to_owned(),
        "tcp_connect(\"127.0.0.1:1\");".to_owned(),
        "env(\"HOME\");".to_owned(),
        "getenv(\"HOME\");".to_owned(),
        "proc.exec(\"sh\");".to_owned(),
        "proc.read_file(\"/etc/passwd\");".to_owned(),
    ];
    for src in &attempts {
        // Most compile (Rhai resolves functions at run time, which is why the dry-run
        // matters) and fail when called; module paths and reserved words fail to compile.
        let e = fails(src);
        assert!(
            e.message.starts_with("no function") || e.message.starts_with("Rhai syntax error"),
            "{src}: {}",
            e.message
        );
    }
    assert!(!marker.exists(), "a script wrote a file");
}

#[test]
fn import_and_eval_are_refused_at_compile_time_and_at_run_time() {
    for src in ["import \"os\" as os;", "eval(\"1\");", "let f = Fn(\"eval\"); f.call(\"1\");"] {
        let e = fails(src);
        assert!(
            e.message.contains("reserved keyword") || e.message.contains("Rhai syntax error"),
            "{src}: {}",
            e.message
        );
    }
    assert!(!validates("import \"os\" as os;"));
    assert!(!validates("eval(\"1\");"));
    let e = fails("call(\"eval\", \"1\");");
    assert!(e.message.contains("expecting Fn"), "{}", e.message);
}

#[test]
fn undefined_variables_are_errors() {
    assert!(!validates("proc.log(undefined_thing);"));
    let e = fails("proc.log(undefined_thing);");
    assert_eq!((e.line, e.col), (1, 10));
}

#[test]
fn sleep_cannot_outlast_the_wall_clock() {
    for src in ["sleep(3600);", "sleep(1e9);", "let f = Fn(\"sleep\"); f.call(3600);"] {
        let started = Instant::now();
        let e = fails(src);
        assert!(started.elapsed() < Duration::from_secs(2), "{src} blocked");
        assert!(e.message.contains("`sleep` is not available"), "{src}: {}", e.message);
    }
}

#[test]
fn huge_strings_arrays_and_maps_are_refused() {
    let cases = [
        ("let s = \"x\"; loop { s += s; }", "Length of string too large"),
        ("let s = \"x\"; s.pad(2000000, \"y\");", "Length of string too large"),
        ("let a = []; a.pad(1000000, 0);", "Size of array/BLOB too large"),
        // Growing one element at a time up to the limit costs O(n²) in Rhai's size checks
        // (seconds on a loaded machine, past the wall-clock limit): start just below it.
        ("let a = []; a.pad(99990, 0); loop { a.push(1); }", "Size of array/BLOB too large"),
        ("let a = [1]; loop { a += a; }", "Size of array/BLOB too large"),
        ("let b = blob(10000000);", "Size of array/BLOB too large"),
        // Limits are on a value's total: many medium strings in one array add up.
        (
            "let a = []; for i in 0..200 { let s = `${i}`; s.pad(10000, \"y\"); a.push(s); }",
            "Length of string too large",
        ),
        ("let m = #{}; for i in 0..200000 { m[`k${i}`] = i; } proc.log(m.len());", "Size of object map too large"),
    ];
    for (src, want) in cases {
        let e = fails(src);
        assert!(e.message.starts_with(want), "{src}: {}", e.message);
        assert!(e.message.contains("migrations may build strings up to 1048576 bytes"), "{}", e.message);
    }
}

#[test]
fn deep_recursion_and_nesting_are_refused() {
    let e = fails("fn f(x) { f(x + 1) }\nf(0);");
    assert!(e.message.starts_with("calls nested too deeply (the limit is 32 levels)"), "{}", e.message);
    let e = fails("let f = |x| x; fn g(n) { g(n) }\ng(1);");
    assert!(e.message.starts_with("calls nested too deeply"), "{}", e.message);

    let deep = format!("let x = {}1{};", "(".repeat(200), ")".repeat(200));
    assert!(!validates(&deep));
    let e = fails(&deep);
    assert!(e.message.starts_with("Rhai syntax error"), "{}", e.message);
}

/// A loop whose every operation is slow (here: building a 100 kB string) spends few
/// operations, so only the clock can stop it.
const SLOW_LOOP: &str = "let n = 0;\nloop {\n  let s = \"x\"; s.pad(100000, \"y\");\n  n += 1;\n}\n";

#[test]
fn endless_loop_is_stopped_within_the_default_limits() {
    assert_eq!(RunOptions::default().wall_limit, DEFAULT_WALL_LIMIT);
    assert_eq!(DEFAULT_WALL_LIMIT, Duration::from_secs(10));
    // A tight `loop {}` burns operations fast: the operation limit or the clock stops
    // it, whichever comes first, always within the wall-clock limit.
    for src in ["loop {}", "let x = 0;\nwhile true { x += 1; }"] {
        let (e, took) = fails_with(&RunOptions::default(), src);
        println!("{src}: stopped after {took:?}: {e}");
        assert!(took < DEFAULT_WALL_LIMIT + Duration::from_secs(2), "{src}: stopped late: {took:?}");
        assert!(
            e.message.starts_with("too many operations (the limit is 50000000)")
                || e.message.starts_with("stopped after the wall-clock limit of 10s"),
            "{src}: {}",
            e.message
        );
    }
}

#[test]
fn endless_loop_is_stopped_at_the_wall_clock_limit() {
    let opts = RunOptions::with_wall_limit(Duration::from_millis(300));
    let (e, took) = fails_with(&opts, SLOW_LOOP);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    assert!(e.message.starts_with("stopped after the wall-clock limit of 300ms"), "{}", e.message);
    assert!((2..=4).contains(&e.line), "points into the loop: {e}");

    // The slowest single operations (1 MiB strings) overshoot the limit only a little.
    let (e, took) = fails_with(&opts, "loop { let s = \"x\"; s.pad(1000000, \"y\"); }");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    assert!(e.message.contains("wall-clock limit"), "{}", e.message);

    // An endless loop of `proc` calls is stopped too.
    let (e, took) = fails_with(&opts, "loop { proc.action_list(); }");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    assert!(e.message.contains("wall-clock limit"), "{}", e.message);
}

#[test]
fn cancel_stops_a_running_script() {
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { wall_limit: Duration::from_secs(60), cancel: Some(cancel.clone()) };
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.store(true, Ordering::Relaxed);
    });
    // Slow operations, so the operation budget cannot run out before the cancel, however
    // starved the setter thread is on a loaded machine.
    let (e, took) = fails_with(&opts, "loop { let s = \"x\"; s.pad(100000, \"y\"); }");
    setter.join().unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(e.message.starts_with("cancelled"), "{}", e.message);
}

/// Records when, and on which thread, each `proc.log` call is served.
struct Served(Vec<(Instant, std::thread::ThreadId)>);

impl hero_proc_migrate::ProcOps for Served {
    fn action_set(&mut self, _: hero_proc_spec::Action) -> Result<(), String> {
        Err("unused".into())
    }
    fn action_get(&mut self, _: &str, _: &str) -> Result<Option<hero_proc_spec::Action>, String> {
        Err("unused".into())
    }
    fn action_list(&mut self) -> Result<Vec<hero_proc_spec::Action>, String> {
        Err("unused".into())
    }
    fn service_set(&mut self, _: hero_proc_spec::Service) -> Result<(), String> {
        Err("unused".into())
    }
    fn service_start(&mut self, _: &str, _: &str) -> Result<(), String> {
        Err("unused".into())
    }
    fn service_stop(&mut self, _: &str, _: &str) -> Result<(), String> {
        Err("unused".into())
    }
    fn service_list(&mut self) -> Result<Vec<hero_proc_migrate::ServiceRow>, String> {
        Err("unused".into())
    }
    fn run_submit(&mut self, _: Vec<String>) -> Result<i64, String> {
        Err("unused".into())
    }
    fn secret_names(&mut self, _: &str) -> Result<Vec<String>, String> {
        Err("unused".into())
    }
    fn log(&mut self, _: &str, _: hero_proc_migrate::LogLevel, _: &str) -> Result<(), String> {
        self.0.push((Instant::now(), std::thread::current().id()));
        Ok(())
    }
}

/// A spinning script runs off the caller's thread: the caller keeps serving its `proc`
/// calls the whole time (the script is not stuck behind the caller, nor the caller
/// behind the script), and gets its thread back at the wall-clock limit.
#[test]
fn a_spinning_script_is_served_by_its_caller_throughout_and_stopped_at_the_wall_limit() {
    let wall = Duration::from_millis(1200);
    let (tx, rx) = std::sync::mpsc::channel();
    let caller = std::thread::spawn(move || {
        let mut ops = Served(Vec::new());
        let started = Instant::now();
        let source = "loop {\n  proc.log(\"info\", \"tick\");\n  let s = \"x\"; s.pad(100000, \"y\");\n}\n";
        let r = run_migration(&raw("1_spin.rhai", source), &mut ops, &RunOptions::with_wall_limit(wall));
        let _ = tx.send((r, started, Instant::now(), ops.0, std::thread::current().id()));
    });
    let (r, started, ended, served, caller_id) = rx
        .recv_timeout(wall + Duration::from_secs(10))
        .expect("the spinning script was not stopped: no wall-clock limit");
    caller.join().unwrap();
    let e = r.expect_err("an endless loop cannot succeed");
    assert!(e.message.contains("wall-clock limit"), "{}", e.message);
    let took = ended - started;
    assert!(took >= wall && took < wall + Duration::from_secs(3), "stopped at {took:?}, limit {wall:?}");
    assert!(served.len() >= 5, "only {} proc calls served in {took:?}", served.len());
    assert!(served.iter().all(|(_, t)| *t == caller_id), "proc calls must run on the caller's thread");
    // Served all along: from the start, without long gaps, up to the stop.
    let times: Vec<Instant> = std::iter::once(started).chain(served.iter().map(|(t, _)| *t)).chain([ended]).collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < wall / 2, "a {gap:?} stretch with no proc call served ({} calls in {took:?})", served.len());
}

#[test]
fn values_that_hold_proc_do_not_outlive_the_script() {
    // `proc` ends up inside the error value; the run must still end (no hang) and the
    // message must be plain text.
    let e = fails("throw proc;");
    assert_eq!(e.message, "thrown: proc");
    let (_, r) = run("let keep = [proc, #{ p: proc }]; exit(keep);");
    r.unwrap();
}
