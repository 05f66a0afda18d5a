//! Secrets end to end: a value set through the CLI reaches the process that references
//! it, and nothing else: not the database, WAL, log store, daemon log, CLI output or
//! any RPC answer. A changed value restarts the services that use it.

use crate::support;

use std::time::Duration;

use support::*;

const MARKER: &str = "s3cr3t-MARKER-7f4e2a";
const MARKER2: &str = "r0tated-MARKER-91bc55";

#[test]
fn a_secret_reaches_its_process_and_nothing_else() {
    let d = Daemon::start();
    let saw = d.root().join("child_saw.txt");
    let out = d.set_secret("token", MARKER);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(MARKER));
    d.set(&format!(
        "actions:\n  - name: app\n    interpreter: sh\n    script: printf '%s' \"$TOKEN\" > {}; echo started; exec sleep 1000\n    process: true\n    env:\n      TOKEN: {{ secret: token }}\nservices:\n  - name: app\n",
        saw.display()
    ));
    d.wait_status("app", "running", |s| s["state"] == "running");
    wait_for("the child to write what it saw", Duration::from_secs(5), || {
        std::fs::read_to_string(&saw).is_ok_and(|s| s == MARKER)
    });

    // Every command, both formats: no value anywhere.
    let mut outputs = String::new();
    for args in [
        vec!["secret", "list"],
        vec!["secret", "get", "token"],
        vec!["service", "list"],
        vec!["service", "status", "app"],
        vec!["service", "get", "app"],
        vec!["action", "get", "app"],
        vec!["action", "list"],
        vec!["job", "list"],
        vec!["log", "query"],
        vec!["system", "info"],
    ] {
        for fmt in ["text", "json"] {
            let mut a = vec!["--format", fmt];
            a.extend(args.iter().copied());
            let o = d.cli(&a);
            assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
            outputs.push_str(&text(&o.stdout));
            outputs.push_str(&text(&o.stderr));
        }
    }
    let found = leaks_in(&outputs, MARKER);
    assert!(found.is_empty(), "a CLI answer leaked the value, encoded as {found:?}");
    assert!(outputs.contains("token"), "the name is shown");

    // Raw RPC answers to every documented method.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = hero_proc_rpc::Client::connect(&d.socket()).await.unwrap();
        let (_, doc) = c.get("/openrpc.json").await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for m in doc["methods"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            // Read-only methods only: this loop must not change what the rest checks.
            let verb = name.rsplit('.').next().unwrap();
            if ["set", "delete", "start", "stop", "restart", "submit", "cancel", "compact"].contains(&verb) {
                continue;
            }
            for params in [
                serde_json::json!({}),
                serde_json::json!({ "name": "token" }),
                serde_json::json!({ "name": "app" }),
                serde_json::json!({ "id": 1 }),
            ] {
                let answer = match c.call_value(name, params).await {
                    Ok(v) => v.to_string(),
                    Err(e) => e.to_string(),
                };
                let found = leaks_in(&answer, MARKER);
                assert!(found.is_empty(), "{name} leaked the value, encoded as {found:?}");
            }
        }
    });

    // At rest: not in the database, WAL, log store or daemon log. (The child's own file is
    // the one place the value should be.)
    // Raw, hex or base64 (any alphabet, padding and offset).
    let hits = leaks(d.root(), MARKER, &[&saw]);
    assert!(hits.is_empty(), "value found in {hits:?}");
    // And what the database holds instead is an age file.
    assert_secrets_are_age_files(d.root());

    // Rotate: the service restarts with the new value, the fingerprint changes.
    let fp1 = d.json(&["secret", "get", "token"])["fingerprint"].as_str().unwrap().to_owned();
    let pid1 = d.status("app")["pid"].as_u64().unwrap();
    let out = d.set_secret("token", MARKER2);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("restarting core/app"), "{}", text(&out.stdout));
    d.wait_status("app", "restarted", |s| s["state"] == "running" && s["pid"].as_u64() != Some(pid1));
    wait_for("the new value", Duration::from_secs(5), || std::fs::read_to_string(&saw).is_ok_and(|s| s == MARKER2));
    let fp2 = d.json(&["secret", "get", "token"])["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(fp1, fp2);
    // Setting the same value again changes nothing and restarts nothing.
    let out = d.set_secret("token", MARKER2);
    assert!(text(&out.stdout).contains("unchanged"), "{}", text(&out.stdout));
    let hits = leaks(d.root(), MARKER2, &[&saw]);
    assert!(hits.is_empty(), "value found in {hits:?}");
    assert_secrets_are_age_files(d.root());
}

#[test]
fn a_missing_secret_fails_the_job_with_a_clear_reason() {
    let d = Daemon::start();
    d.set("actions:\n  - name: needs\n    interpreter: sh\n    script: echo hi\n    env:\n      T: { secret: nope }\n");
    let out = d.cli(&["run", "submit", "needs", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let job = &d.json(&["job", "list"])[0];
    let err = job["error"].as_str().unwrap();
    assert!(err.contains("secret `nope` is not set in context `core`"), "{err}");
}
