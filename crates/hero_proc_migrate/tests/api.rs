//! The `proc` API as scripts see it, over the in-memory system.

use crate::common::*;
use hero_proc_migrate::{InMemoryProc, LogLevel, LogLine, STATE_RUNNING, STATE_STOPPED, log_source};
use hero_proc_spec::{EnvValue, Interpreter, Probe, ServiceStatus, Signal};

fn logs(ops: &InMemoryProc) -> Vec<(LogLevel, String)> {
    ops.logs().iter().map(|l| (l.level, l.message.clone())).collect()
}

#[test]
fn the_example_repository_migration_runs() {
    let src = include_str!("../../../hero-config-example/migrations/2026-04-24-001_seed_geomind.rhai");
    assert!(validates(src));
    let (ops, r) = run(src);
    r.unwrap();
    let snap = ops.snapshot();
    assert_eq!(snap.actions.len(), 1);
    let a = &snap.actions[0];
    assert_eq!((a.context.as_str(), a.name.as_str()), ("geomind", "geomind_import"));
    assert_eq!(ops.runs(), &[vec!["geomind/geomind_import".to_owned()]]);
    assert_eq!(
        ops.logs(),
        &[LogLine {
            migration: "1_t.rhai".into(),
            level: LogLevel::Info,
            message: "queued the one-off geomind import".into()
        }]
    );
}

#[test]
fn actions_decode_like_yaml_and_round_trip() {
    let (ops, r) = run(r#"
        proc.action_set(#{
            name: "web",
            description: "the web server",
            interpreter: "bash",
            script: "exec web --port 8080",
            env: #{ MODE: "prod", TOKEN: #{ secret: "web_token" } },
            process: true,
            restart: #{ policy: "always", delay: "500ms", max_delay: "90s", max_retries: 3 },
            stop: #{ signal: "INT", timeout: "5s" },
            health: [ #{ tcp: "127.0.0.1:8080" }, #{ http: "http://127.0.0.1:8080/health" } ],
            depends_on: ["build"],
            tags: ["web"],
        });
        // What comes back is the canonical form, and it goes back in unchanged.
        let a = proc.action_get("web");
        if a.restart.delay != "500ms" || a.stop.signal != "SIGINT" { throw `unexpected ${a}`; }
        proc.action_set(a);
        let b = proc.action_get("core", "web");
        b.description = "changed";
        proc.action_set(b);
        if proc.action_list().len() != 1 { throw "one action expected"; }
        if proc.action_get("nope") != () { throw "unknown action should be ()"; }
    "#);
    r.unwrap();
    let a = &ops.snapshot().actions[0];
    assert_eq!(a.description.as_deref(), Some("changed"));
    assert_eq!(a.interpreter, Interpreter::Bash);
    assert!(a.process);
    assert_eq!(a.restart.max_retries, 3);
    assert_eq!(a.stop.signal, Signal::Int);
    assert_eq!(a.env["TOKEN"], EnvValue::Secret(hero_proc_spec::Named::new("web_token")));
    assert!(matches!(&a.health[1].probe, Probe::Http(h) if h.path == "/health"));
    assert_eq!(a.depends_on[0].name, "build");
}

#[test]
fn decoding_errors_are_the_yaml_errors() {
    let cases = [
        (
            r#"proc.action_set(#{ name: "web", scirpt: "x" });"#,
            "unknown field `scirpt` in an action (did you mean `script`?)",
        ),
        (r#"proc.action_set(#{ name: "Web", script: "x" });"#, "invalid action name `Web`"),
        (r#"proc.action_set(#{ name: "w", script: "x", timeout: "10" });"#, "invalid duration `10`"),
        (r#"proc.action_set(#{ name: "w", script: "x", schedule: "* * *" });"#, "invalid cron expression"),
        (r#"proc.action_set(#{ name: "w", script: "x", process: "yes" });"#, "expected true or false"),
        (r#"proc.action_set(#{ name: "w", script: "x", interpreter: "bsah" });"#, "did you mean `bash`?"),
        (r#"proc.action_set(#{ name: "w", script: "x", restart: #{ max_retries: -1 } });"#, "expected a whole number"),
        (r#"proc.action_set(#{ name: "w", script: "x", env: #{ A: || 1 } });"#, "field `env`"),
        (r#"proc.service_set(#{ name: "w", status: "started" });"#, "unknown status `started`"),
        (r#"proc.service_set(#{ name: "w", actions: [] });"#, "a service needs at least one action"),
        (r#"proc.service_set(#{ name: "w", requires: ["a/b/c"] });"#, "invalid service reference `a/b/c`"),
    ];
    for (src, want) in cases {
        let e = fails(src);
        assert!(e.message.contains(want), "{src}\n  got: {}\n  want: {want}", e.message);
        assert_eq!((e.line, e.col), (1, 6), "{src}: the error points at the call");
    }
}

#[test]
fn decoder_warnings_become_log_lines() {
    let (ops, r) = run(r#"proc.action_set(#{ name: "w", script: "a && b" });"#);
    r.unwrap();
    let l = logs(&ops);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0, LogLevel::Warn);
    assert!(l[0].1.starts_with("action core/w: `&&` is passed to the program"), "{}", l[0].1);
}

#[test]
fn a_service_is_created_started_listed_and_stopped() {
    let (ops, r) = run(r#"
        proc.action_set(#{ name: "web", script: "/bin/web", process: true });
        proc.service_set(#{ name: "web", description: "web", after: ["core/hero_db"] });
        proc.service_start("web");
        let l = proc.service_list();
        if l.len() != 1 || l[0].state != "running" || l[0].context != "core" || l[0].name != "web" {
            throw `unexpected ${l}`;
        }
        proc.service_set(#{ name: "geo", context: "geomind", actions: ["core/web"], status: "stop" });
        proc.service_start("geomind/geo");
        proc.service_stop("geomind/geo");
    "#);
    r.unwrap();
    let snap = ops.snapshot();
    assert_eq!(snap.service_states["core/web"], STATE_RUNNING);
    assert_eq!(snap.service_states["geomind/geo"], STATE_STOPPED);
    let web = snap.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.status, ServiceStatus::Start);
    assert_eq!(web.actions[0].name, "web", "a service with no `actions` runs the action of its own name");
}

#[test]
fn references_are_checked() {
    let e = fails(r#"proc.service_start("../etc");"#);
    assert!(e.message.contains("invalid service reference `../etc`"), "{}", e.message);
    let e = fails(r#"proc.service_start("web");"#);
    assert_eq!(e.message, "no service core/web; create it first with proc.service_set");
    let e = fails(r#"proc.secret_names("Bad Context");"#);
    assert!(e.message.contains("invalid context"), "{}", e.message);
}

#[test]
fn runs_are_submitted_by_reference() {
    let (ops, r) = run(r#"
        proc.action_set(#{ name: "a", script: "true" });
        proc.action_set(#{ name: "b", context: "geo", script: "true" });
        let one = proc.run_submit(["a", "geo/b"]);
        let two = proc.run_submit("core/a");
        if one != 1 || two != 2 { throw `ids ${one} ${two}`; }
    "#);
    r.unwrap();
    assert_eq!(ops.runs(), &[vec!["core/a".to_owned(), "geo/b".to_owned()], vec!["core/a".to_owned()]]);

    assert_eq!(fails(r#"proc.run_submit([]);"#).message, "run_submit needs at least one action");
    assert!(fails(r#"proc.run_submit([1]);"#).message.contains("item 0 is a i64"));
    assert!(fails(r#"proc.run_submit(["nope"]);"#).message.contains("no action core/nope"));
}

#[test]
fn secret_names_but_never_values() {
    let mut ops = InMemoryProc::new();
    ops.add_secret("core", "forgejo_token");
    ops.add_secret("core", "db_password");
    ops.add_secret("geo", "api_key");
    run_with(
        &mut ops,
        r#"
        let core = proc.secret_names();
        let geo = proc.secret_names("geo");
        let none = proc.secret_names("empty");
        proc.log(`${core} ${geo} ${none.len()}`);
        if !core.contains("db_password") { throw "missing"; }
    "#,
    )
    .unwrap();
    assert_eq!(logs(&ops)[0].1, r#"["db_password", "forgejo_token"] ["api_key"] 0"#);
}

#[test]
fn log_levels_print_and_debug() {
    let (ops, r) = run(r#"
        proc.log("plain");
        proc.log(42);
        proc.log("warn", "careful");
        proc.log("ERROR", "bad");
        print("printed");
        debug("debugged");
    "#);
    r.unwrap();
    assert_eq!(
        logs(&ops),
        vec![
            (LogLevel::Info, "plain".into()),
            (LogLevel::Info, "42".into()),
            (LogLevel::Warn, "careful".into()),
            (LogLevel::Error, "bad".into()),
            (LogLevel::Info, "printed".into()),
            (LogLevel::Debug, "\"debugged\"".into()),
        ]
    );
    assert!(ops.logs().iter().all(|l| l.migration == "1_t.rhai"), "each line names its migration");
    let e = fails(r#"proc.log("loud", "x");"#);
    assert_eq!(e.message, "unknown log level `loud`; one of: debug, info, warn, error");
    assert_eq!(log_source("2026-04-24-001_seed.rhai"), "hero_proc.migration.2026-04-24-001_seed");
}

#[test]
fn errors_carry_file_line_and_column() {
    let e = fails("let x = 1;\n\n    proc.service_start(\"web\");\n");
    assert_eq!((e.name.as_str(), e.line, e.col), ("1_t.rhai", 3, 10));
    assert_eq!(
        e.to_string(),
        "migrations/1_t.rhai:3:10: error: no service core/web; create it first with proc.service_set"
    );

    // Inside a function: the line inside it, and the function named.
    let e = fails("fn setup(p) {\n  p.service_start(\"web\");\n}\nsetup(proc);\n");
    assert_eq!((e.line, e.col), (2, 5));
    assert!(e.message.ends_with("(in function `setup`)"), "{}", e.message);

    // `throw` is an error the operator wrote.
    let e = fails("let x = 1;\nthrow \"not ready\";");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 1, "not ready"));

    // A syntax error (validate refuses it too) still reports a place at run time.
    let e = fails("let x = ;");
    assert_eq!((e.line, e.col), (1, 9));
    assert!(e.message.starts_with("Rhai syntax error"), "{}", e.message);
}

#[test]
fn scripts_can_catch_proc_errors_and_use_proc_in_functions_and_closures() {
    let (ops, r) = run(r#"
        fn ensure(p, name) {
            if p.action_get(name) == () { p.action_set(#{ name: name, script: "true" }); }
        }
        ensure(proc, "a");
        ensure(proc, "a");
        let start = |name| proc.service_start(name);
        try { start.call("missing"); } catch (e) { proc.log("warn", `skipped: ${e}`); }
    "#);
    r.unwrap();
    assert_eq!(ops.snapshot().actions.len(), 1);
    assert_eq!(logs(&ops)[0].1, "skipped: no service core/missing; create it first with proc.service_set");

    // `proc` is a script-level constant: functions do not see it (pass it as above).
    assert!(validates("fn f() { proc.log(1) }\nf();"));
    let e = fails("fn f() { proc.log(1) }\nf();");
    assert!(e.message.contains("Variable not found: proc"), "{}", e.message);
}

#[test]
fn proc_is_a_constant() {
    let e = fails("proc = 1;");
    assert!(e.message.contains("constant"), "{}", e.message);
}

/// `quick_service_set_full` is an action (`process: true`, the fourth argument its health
/// check) and a service of the same name; the start, stop and restart calls act on it; bad
/// names and checks fail at the line, as strictly as a file.
#[test]
fn quick_service_calls_set_an_action_and_a_service() {
    let (ops, r) = run(r#"
        proc.quick_service_set_full("hero_food", "~/hero/bin/hero_food --port 9", "exec", "tcp:127.0.0.1:9");
        proc.quick_service_set_full("geo/importer", "echo $HOME", "bash", "");
        proc.quick_service_start("hero_food");
        proc.quick_service_start("geo/importer");
        proc.quick_service_stop("geo/importer");
        proc.quick_service_restart("geo/importer");
        proc.quick_service_stop("hero_food");
    "#);
    r.unwrap();
    let snap = ops.snapshot();
    let food = snap.actions.iter().find(|a| a.name == "hero_food").unwrap();
    assert!(food.process);
    assert_eq!(food.script, "~/hero/bin/hero_food --port 9");
    assert_eq!(food.interpreter, Interpreter::Exec);
    assert_eq!(food.health.len(), 1);
    assert!(matches!(&food.health[0].probe, Probe::Tcp(a) if a == "127.0.0.1:9"));
    let imp = snap.actions.iter().find(|a| a.name == "importer").unwrap();
    assert_eq!((imp.context.as_str(), imp.interpreter), ("geo", Interpreter::Bash));
    assert!(imp.health.is_empty(), "\"\" is no check");
    let svc = snap.services.iter().find(|s| s.name == "importer").unwrap();
    assert_eq!(svc.context, "geo");
    assert_eq!(svc.status, ServiceStatus::Start);
    assert_eq!(svc.actions, vec![hero_proc_spec::Named::new("importer")]);
    assert_eq!(snap.service_states["geo/importer"], STATE_RUNNING);
    assert_eq!(snap.service_states["core/hero_food"], STATE_STOPPED);

    let cases = [
        (r#"proc.quick_service_set_full("Hero Food", "x", "exec", "");"#, "invalid service reference `Hero Food`"),
        (r#"proc.quick_service_set_full("a/b/c", "x", "exec", "");"#, "invalid service reference `a/b/c`"),
        (r#"proc.quick_service_set_full("web", "x", "perl", "");"#, "invalid action"),
        (
            r#"proc.quick_service_set_full("web", "x", "exec", "ready");"#,
            "the fourth argument is the service's health check",
        ),
        (
            r#"proc.quick_service_set_full("web", "x", "exec", "tcp:");"#,
            "the fourth argument is the service's health check",
        ),
        (r#"proc.quick_service_start("../etc");"#, "invalid service reference `../etc`"),
        (r#"proc.quick_service_restart("nope");"#, "no service core/nope"),
        (r#"proc.quick_service_set_full("web", "x", "exec");"#, "no function `quick_service_set_full (Proc, "),
    ];
    for (src, want) in cases {
        let e = fails(&format!("proc.log(\"x\");\n{src}"));
        assert!(e.message.contains(want), "{src}: {}", e.message);
        assert_eq!(e.line, 2, "{e}");
    }
}
