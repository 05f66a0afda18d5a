//! Issue 13, "input the daemon receives": the RPC refuses what `validate` refuses, with
//! the same codes and messages and the field named; type errors name their field; a
//! token in a repository URL is never shown, logged or stored; links and submodules in
//! a committed tree refuse the revision.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// One JSON-RPC call over the daemon's socket, as any local client could make it.
fn rpc(d: &Daemon, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string();
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (_, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP body: {out}"));
    let start = body.find('{').unwrap_or_else(|| panic!("no JSON in {body}"));
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The error of a call that must fail: (code, message, data).
#[track_caller]
fn refused(reply: &Value) -> (i64, String, Value) {
    let e = reply.get("error").unwrap_or_else(|| panic!("expected an error, got {reply}"));
    (e["code"].as_i64().unwrap(), e["message"].as_str().unwrap().to_owned(), e["data"].clone())
}

fn action(name: &str) -> Value {
    json!({
        "name": name, "context": "core", "interpreter": "exec", "script": "/bin/true", "process": false,
        "restart": { "policy": "on-failure", "delay": "1s", "max_delay": "1m", "max_retries": 0 },
        "stop": { "signal": "SIGTERM", "timeout": "10s" }
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// What `hero_proc validate` (load_tree) says about the same object written in a file.
fn validate_says(kind: &str, object: &Value, code: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("actions")).unwrap();
    std::fs::write(dir.path().join("hero.yaml"), "required_services: []\n").unwrap();
    let yaml = serde_yaml_ng::to_string(&json!({ kind: [object] })).unwrap();
    std::fs::write(dir.path().join("actions/x.yaml"), yaml).unwrap();
    let c = hero_proc_spec::load_tree(&hero_proc_spec::DirSource::new(dir.path()));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == code)
        .unwrap_or_else(|| panic!("validate does not report {code}: {:?}", c.diagnostics));
    d.message.clone()
}

#[test]
fn action_set_refuses_what_validate_refuses_with_the_same_code_and_message() {
    let d = Daemon::start();
    let big = "x".repeat(5 * 1024 * 1024);
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(action("a1"), "schedule", json!("*/0 * * * *")), "action.schedule", "cron.invalid"),
        (with(action("a2"), "schedule", json!("nonsense every minute")), "action.schedule", "cron.invalid"),
        (with(action("a3"), "env", json!({ "K": { "secret": "../core/x" } })), "action.env.K.secret", "name.invalid"),
        (with(action("a4"), "health", json!([{ "tcp": "nohost" }])), "action.health[0].tcp", "health.tcp"),
        (
            with(
                action("a5"),
                "restart",
                json!({ "policy": "always", "delay": "1m", "max_delay": "1s", "max_retries": 0 }),
            ),
            "action.restart",
            "restart.delay",
        ),
        (with(action("a6"), "script", json!("'unclosed")), "action.script", "exec.unbalanced-quotes"),
        (with(action("a7"), "scirpt", json!("/bin/true")), "action.scirpt", "schema.unknown-field"),
        (
            with(action("a8"), "stop", json!({ "signal": "SIGWHAT", "timeout": "1s" })),
            "action.stop.signal",
            "signal.unknown",
        ),
        (
            with(with(action("a9"), "process", json!(true)), "schedule", json!("* * * * *")),
            "action.schedule",
            "action.schedule-on-process",
        ),
        (with(action("a10"), "timeout", json!("soon")), "action.timeout", "duration.invalid"),
        (with(action("a11"), "tags", json!(["Bad Tag"])), "action.tags[0]", "name.invalid"),
    ];
    for (object, path, code) in &cases {
        let (rc, message, data) = refused(&rpc(&d, "action.set", json!({ "action": object })));
        assert_eq!(rc, 1004, "{message}");
        let same = validate_says("actions", object, code);
        assert!(message.contains(&format!("{path}: {same} [{code}]")), "{code}: `{message}` lacks `{path}: {same}`");
        let problems = data["problems"].as_array().unwrap_or_else(|| panic!("no problems in {data}"));
        assert!(problems.iter().any(|p| p["path"] == *path && p["code"] == *code), "{data}");
    }
    // Sizes are bounded as for a file.
    let (rc, message, _) =
        refused(&rpc(&d, "action.set", json!({ "action": with(action("big"), "script", json!(big)) })));
    assert_eq!(rc, 1004);
    assert!(message.contains("limit for config files") && message.contains("[io.read]"), "{message}");

    // Nothing of it was stored; a valid action still is.
    let reply = rpc(&d, "action.set", json!({ "action": with(action("ok"), "schedule", json!("*/5 * * * *")) }));
    assert!(reply.get("error").is_none(), "{reply}");
    let names: Vec<String> = d
        .json(&["action", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, vec!["ok".to_owned()], "only the valid action is stored");
}

#[test]
fn service_set_refuses_what_validate_refuses() {
    let d = Daemon::start();
    let svc = json!({ "name": "web", "context": "core", "status": "start", "actions": ["web"], "require": ["db"] });
    let (rc, message, _) = refused(&rpc(&d, "service.set", json!({ "service": svc })));
    assert_eq!(rc, 1004);
    let same = validate_says("services", &svc, "schema.unknown-field");
    assert!(message.contains(&format!("service.require: {same} [schema.unknown-field]")), "{message}");
    assert!(message.contains("did you mean `requires`?"), "{message}");
}

#[test]
fn type_errors_name_the_field() {
    let d = Daemon::start();
    let (rc, message, data) =
        refused(&rpc(&d, "action.set", json!({ "action": with(action("t"), "script", json!(5)) })));
    assert_eq!(rc, 1004);
    assert!(message.contains("action.script: invalid type: integer `5`, expected a string"), "{message}");
    assert_eq!(data["path"], "action.script");
    // What the file decoder already calls a type error keeps its code.
    let (_, message, _) =
        refused(&rpc(&d, "action.set", json!({ "action": with(action("t"), "schedule", json!({ "every": 1 })) })));
    assert!(message.contains("action.schedule: expected a string, found a mapping [schema.type]"), "{message}");
    let (_, message, _) = refused(&rpc(&d, "action.set", json!({ "action": "web" })));
    assert!(message.contains("action: expected a mapping (an action), found a scalar [schema.type]"), "{message}");
    let svc = json!({ "name": "web", "context": "core", "status": "start", "actions": "web" });
    let (_, message, _) = refused(&rpc(&d, "service.set", json!({ "service": svc })));
    assert!(message.contains("service.actions: expected a list, found a scalar [schema.type]"), "{message}");
    let svc = json!({ "name": "web", "context": "core", "status": "start", "actions": ["web"], "description": 5 });
    let (_, message, _) = refused(&rpc(&d, "service.set", json!({ "service": svc })));
    assert!(message.contains("service.description: invalid type: integer `5`, expected a string"), "{message}");
    let (_, message, _) = refused(&rpc(&d, "secret.set", json!({ "name": "k", "value": 7 })));
    assert!(message.contains("value: invalid type"), "{message}");
    let (_, message, _) = refused(&rpc(&d, "job.get", json!({ "id": "seven" })));
    assert!(message.contains("id: invalid type: string \"seven\""), "{message}");
}
