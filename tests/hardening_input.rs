//! Issue 13, "input the daemon receives": the RPC refuses what `validate` refuses, with
//! the same codes and messages and the field named; type errors name their field; a
//! token in a repository URL is never shown, logged or stored; links and submodules in
//! a committed tree refuse the revision.

use crate::support;

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
    let (_, message, _) = refused(&rpc(&d, "secret.set", json!({ "name": "../core/x", "value": "v" })));
    assert!(message.contains("name: invalid secret name `../core/x` [name.invalid]"), "{message}");
    let (_, message, _) = refused(&rpc(&d, "job.get", json!({ "id": "seven" })));
    assert!(message.contains("id: invalid type: string \"seven\""), "{message}");
}

// ---- a token in the repository URL ---------------------------------------------------

/// A forge stand-in on plain HTTP that demands Basic auth and records every request head,
/// so the test sees both that git was given the credential and that it went nowhere else.
fn forge() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let authed = head.to_ascii_lowercase().contains("authorization: basic");
            out.lock().unwrap().push(head);
            let reply = if authed {
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"forge\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (port, seen)
}

fn base64(s: &str) -> String {
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("coreutils base64");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    text(&child.wait_with_output().unwrap().stdout)
}

#[test]
fn a_token_in_the_repository_url_is_used_but_never_shown_logged_or_stored() {
    const TOKEN: &str = "glpat-PLANTED7x9Qk2";
    let (port, seen) = forge();
    let url = format!("http://ada:{TOKEN}@127.0.0.1:{port}/org/cfg.git");
    let shown = format!("http://ada:***@127.0.0.1:{port}/org/cfg.git");
    let d = Daemon::start_env(&["--interval", "1h"], false, &[("HERO_PROC_REPO", url.as_str())]);

    // git got the credential (through the helper): the forge saw it on the retry.
    let want = format!("authorization: basic {}", base64(&format!("ada:{TOKEN}"))).to_ascii_lowercase();
    wait_for("git to present the credential", Duration::from_secs(30), || {
        seen.lock().unwrap().iter().any(|h| h.to_ascii_lowercase().contains(&want))
    });
    // ... and the failed fetch is recorded.
    wait_for("the failed fetch in status", Duration::from_secs(30), || {
        d.json(&["reconcile", "status"])["last_error"].as_str().is_some()
    });
    // A job's environment does not carry it either (HERO_PROC_REPO is withheld).
    let probe =
        with(with(action("probe"), "interpreter", json!("bash")), "script", json!("env > \"$HERO_ROOTDIR/probe.env\""));
    let mut a = rpc(&d, "action.set", json!({ "action": probe }));
    assert!(a.get("error").is_none(), "{a}");
    a = rpc(&d, "run.submit", json!({ "actions": ["probe"] }));
    assert!(a.get("error").is_none(), "{a}");
    let env_file = d.root().join("probe.env");
    wait_for("the probe job to write its environment", Duration::from_secs(20), || {
        std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains("HERO_ROOTDIR="))
    });
    a = rpc(&d, "reconcile.apply", json!({}));
    let (_, message, _) = refused(&a);
    assert!(message.contains(&shown), "the error names the repository, redacted: {message}");

    let status_json = d.json(&["reconcile", "status"]);
    assert_eq!(status_json["repo"], shown.as_str(), "{status_json}");
    let mut outputs = vec![status_json.to_string(), message];
    for args in [
        &["reconcile", "status"][..],
        &["--format", "json", "reconcile", "status"],
        &["history"],
        &["--format", "json", "history"],
        &["log", "query"],
    ] {
        let out = d.cli(args);
        outputs.push(format!("{args:?}: {}{}", text(&out.stdout), text(&out.stderr)));
    }
    outputs.push(rpc(&d, "reconcile.history", json!({})).to_string());
    outputs.push(rpc(&d, "log.query", json!({ "limit": 1000 })).to_string());
    let all = outputs.join("\n");
    assert!(all.contains(&shown), "status shows the redacted URL:\n{all}");
    assert!(!all.contains(TOKEN), "the token leaked into an answer:\n{all}");
    // The mirror's config holds the URL without credentials.
    let root = d.root().to_path_buf();
    assert_eq!(leaks(&root, TOKEN, &[]), Vec::<String>::new(), "the token is stored in these files");
    assert!(!leaks(&root, &format!("127.0.0.1:{port}/org/cfg.git"), &[]).is_empty(), "the mirror was made");

    // A one-off `reconcile --repo URL` through the daemon leaks nothing either.
    let other = format!("http://bob:{TOKEN}@127.0.0.1:{port}/org/other.git");
    let out = d.cli(&["reconcile", "--repo", &other]);
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(&format!("http://bob:***@127.0.0.1:{port}/org/other.git")), "{said}");
    assert!(!said.contains(TOKEN), "{said}");
    assert_eq!(leaks(&root, TOKEN, &[]), Vec::<String>::new(), "the token is stored in these files");
}

// ---- links and submodules at a revision ----------------------------------------------

#[test]
fn a_revision_with_a_linked_layout_part_or_a_submodule_is_refused_and_nothing_applied() {
    let repo = support::config_repo::ConfigRepo::new();
    repo.write("actions/a.yaml", &support::config_repo::service("first", "one"));
    let good = repo.commit("good");
    let d = support::config_repo::follow(&repo);
    support::config_repo::wait_applied(&d, &good);

    // Secrets from outside the tree, through a link.
    repo.write("elsewhere/core.sops.yaml", "x: 1\n");
    std::os::unix::fs::symlink("elsewhere", repo.path().join("secrets")).unwrap();
    repo.write("actions/b.yaml", &support::config_repo::service("second", "two"));
    let linked = repo.commit("linked secrets");
    wait_for("the linked revision to be refused", Duration::from_secs(20), || {
        let s = support::config_repo::status(&d);
        s["attempted_revision"].as_str() == Some(linked.as_str()) && s["last_error"].as_str().is_some()
    });
    let s = support::config_repo::status(&d);
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("secrets:1:1") && err.contains("symbolic links are not allowed"), "{err}");
    assert_eq!(s["applied_revision"].as_str(), Some(good.as_str()), "nothing applied");
    assert!(support::config_repo::state(&d, "second").is_none(), "nothing of the revision ran");

    // A gitlink (submodule) in a host overlay.
    std::fs::remove_file(repo.path().join("secrets")).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["update-index", "--add", "--cacheinfo", &format!("160000,{good},actions/vendor")]);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    let sub = repo.git(&["rev-parse", "HEAD"]);
    wait_for("the submodule revision to be refused", Duration::from_secs(20), || {
        let s = support::config_repo::status(&d);
        s["attempted_revision"].as_str() == Some(sub.as_str())
            && s["last_error"].as_str().is_some_and(|e| e.contains("actions/vendor:1:1"))
    });
    let s = support::config_repo::status(&d);
    assert!(s["last_error"].as_str().unwrap().contains("git submodules are not allowed"), "{s}");
    assert_eq!(s["applied_revision"].as_str(), Some(good.as_str()), "nothing applied");
    assert!(support::config_repo::state(&d, "second").is_none(), "nothing of the revision ran");
}

/// A reference in an RPC parameter is held to the name rules of a file, whether it is an
/// object (`{context, name}`) or a string (`ctx/name`): a path, an upper-case or an empty
/// name is refused with the invalid-parameter code and the rule, never looked up.
#[test]
fn references_in_rpc_parameters_are_checked_like_names_in_files() {
    let d = Daemon::start();
    let invalid = 1004; // ErrorCode::Invalid, as for names in action.set.
    for (method, params) in [
        ("service.start", json!({ "context": "../etc", "name": "web" })),
        ("service.status", json!({ "name": "Web" })),
        ("action.get", json!({ "context": "core", "name": "" })),
        ("job.list", json!({ "service": "../../etc/passwd" })),
        ("run.submit", json!({ "actions": ["core/a b"] })),
        ("run.submit", json!({ "actions": ["a/b/c"] })),
    ] {
        let reply = rpc(&d, method, params.clone());
        let (code, message, _) = refused(&reply);
        assert_eq!(code, invalid, "{method} {params}: {reply}");
        assert!(message.contains("invalid reference"), "{method} {params}: {message}");
        assert!(message.contains("names are 1-64 characters"), "the rule is said: {message}");
    }
    // A valid reference to nothing is still "not found", not "invalid".
    let (code, message, _) = refused(&rpc(&d, "service.status", json!({ "name": "ghost" })));
    assert_ne!(code, invalid, "{message}");
    assert!(message.contains("core/ghost"), "{message}");
}
