//! Escapes and resource limits: a migration can only reach the system through `proc`,
//! and cannot hold the daemon hostage.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
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
        ("let a = []; loop { a.push(1); }", "Size of array/BLOB too large"),
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

/// The script runs on its own thread; a runaway one leaves the rest of the process
/// running (here: another thread keeps making progress the whole time).
#[test]
fn the_daemon_stays_responsive_while_a_script_spins() {
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                progress.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let runner = std::thread::spawn(|| {
        let mut ops = InMemoryProc::new();
        let opts = RunOptions::with_wall_limit(Duration::from_millis(800));
        run_migration(&raw("1_spin.rhai", SLOW_LOOP), &mut ops, &opts)
    });

    std::thread::sleep(Duration::from_millis(300));
    let mid = progress.load(Ordering::Relaxed);
    assert!(!runner.is_finished(), "the script should still be spinning");
    std::thread::sleep(Duration::from_millis(200));
    let later = progress.load(Ordering::Relaxed);
    assert!(!runner.is_finished(), "the script should still be spinning");
    assert!(later > mid, "another thread must progress while the script spins ({mid} -> {later})");

    let r = runner.join().unwrap();
    done.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(r.unwrap_err().message.contains("wall-clock limit"));
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
