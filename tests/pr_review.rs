//! Pull-request review (issue 18): `reconcile --dry-run --base REV` shows what a merge
//! changes, per host, as text, JSON and a markdown PR comment, offline.

use crate::support;

use std::process::{Command, Output};

use serde_json::Value;
use support::config_repo::*;
use support::text;

use crate::reconcile_secrets::{keygen, sops_encrypt, tools};

const MARKER: &str = "MARKER-base-5e1d-do-not-leak";
const ROTATED: &str = "MARKER-head-93ab-do-not-leak";

/// `hero_proc ARGS` in the repository's folder, with no daemon anywhere.
fn run(repo: &ConfigRepo, args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let root = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::bin());
    cmd.args(args).env("HERO_ROOTDIR", root.path()).env("NO_COLOR", "1").current_dir(repo.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    // Offline: nothing was written under the root (no database, no socket).
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "a preview wrote {left:?}");
    out
}

fn api(greeting: &str) -> String {
    service("api", greeting)
}

/// A base with two host overlays and a third whose overlay already has what the PR
/// adds to the base set; the PR adds `api` to the base set and changes the overlay of
/// `h1`.
fn fleet_repo() -> (ConfigRepo, String, String) {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "base"));
    repo.write("hosts/h1/actions/web.yaml", &service("web", "h1-old"));
    repo.write("hosts/h2/actions/cache.yaml", &service("cache", "h2"));
    repo.write("hosts/h3/actions/api.yaml", &api("v1"));
    repo.write("migrations/2026-01-01-001_first.rhai", "proc.log(\"first\");\n");
    let base = repo.commit("base");
    repo.git(&["checkout", "-q", "-b", "pr"]);
    repo.write("actions/api.yaml", &api("v1"));
    repo.write("hosts/h1/actions/web.yaml", &service("web", "h1-new"));
    let head = repo.commit("add api, change h1's web");
    (repo, base, head)
}

fn summary(plan: &Value) -> (u64, u64, u64, u64) {
    let s = &plan["summary"];
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("create"), n("update"), n("delete"), n("restart"))
}

#[test]
fn a_base_preview_shows_per_host_only_what_the_merge_changes() {
    let (repo, base, head) = fleet_repo();
    let out = run(&repo, &["--format", "json", "reconcile", "--dry-run", "--base", &base, "--all-hosts"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["base"]["id"], base.as_str());
    let plans = v["hosts"].as_array().unwrap();
    let hosts: Vec<Value> = plans.iter().map(|p| p["host"].clone()).collect();
    assert_eq!(hosts, vec![Value::Null, "h1".into(), "h2".into(), "h3".into()], "the base set, then each overlay");
    for p in plans {
        assert_eq!(p["target"]["id"], head.as_str(), "the head by default");
        assert_eq!(p["applied_revision"], base.as_str());
    }
    let objects = |p: &Value| -> Vec<String> {
        p["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!("{} {}/{}", c["op"].as_str().unwrap(), c["kind"].as_str().unwrap(), c["name"].as_str().unwrap())
            })
            .collect()
    };
    // The base set and h2 get api (action and service); web is untouched there.
    for p in [&plans[0], &plans[2]] {
        assert_eq!(summary(p), (2, 0, 0, 0), "{}", p["host"]);
        assert!(objects(p).iter().all(|o| o.contains("api")), "{:?}", objects(p));
    }
    // h1 also gets its overlay's change to web, which restarts it.
    assert_eq!(summary(&plans[1]), (2, 1, 0, 1), "{:?}", objects(&plans[1]));
    assert!(
        objects(&plans[1]).iter().any(|o| o.starts_with("update") && o.contains("web")),
        "{:?}",
        objects(&plans[1])
    );
    // h3's overlay already had api as the PR writes it: nothing changes there.
    assert_eq!(summary(&plans[3]), (0, 0, 0, 0), "{:?}", objects(&plans[3]));
    for p in plans {
        assert_eq!(p["migrations"], serde_json::json!([]), "the base's migration ran on the base: {}", p["host"]);
    }

    // Text: one section per host, the unchanged host said to be unchanged.
    let out = run(&repo, &["reconcile", "--dry-run", "--base", &base, "--all-hosts", "--detailed-exitcode"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("host h3: no changes"), "{shown}");
    assert!(
        shown.contains(&format!("\n  base (as if applied): {}", &base[..12])) && !shown.contains("  live: "),
        "{shown}"
    );
    assert!(shown.contains("-  GREETING: h1-old") && shown.contains("+  GREETING: h1-new"), "{shown}");
    assert_eq!(shown.matches("GREETING: h1-new").count(), 1, "only h1's section shows its overlay: {shown}");

    // One host: that plan alone, with --host.
    let out = run(&repo, &["--format", "json", "reconcile", "--dry-run", "--base", &base, "--host", "h3"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["host"], "h3");
    assert_eq!(summary(&v), (0, 0, 0, 0));

    // A base equal to the head: nothing to do anywhere, exit 0.
    let out = run(&repo, &["reconcile", "--dry-run", "--base", &head, "--all-hosts", "--detailed-exitcode"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));

    // A migration the PR adds runs on every host, previewed; the base's does not.
    repo.write("migrations/2026-01-02-001_second.rhai", "proc.log(\"second\");\n");
    repo.commit("a migration");
    let out = run(&repo, &["--format", "json", "reconcile", "--dry-run", "--base", &head, "--all-hosts"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in v["hosts"].as_array().unwrap() {
        assert_eq!(p["migrations"], serde_json::json!(["2026-01-02-001_second.rhai"]), "{}", p["host"]);
        assert_eq!(summary(p), (0, 0, 0, 0));
    }
    let shown = text(&run(&repo, &["reconcile", "--dry-run", "--base", &head, "--host", "h3"], &[]).stdout);
    assert!(shown.contains("log info: second"), "the recording run previews its effects: {shown}");
}

#[test]
fn the_markdown_comment_is_stable_and_escapes_what_it_quotes() {
    let (repo, base, _) = fleet_repo();
    let args = ["--format", "markdown", "reconcile", "--dry-run", "--base", &base, "--all-hosts"];
    let first = run(&repo, &args, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let md = text(&first.stdout);
    assert!(md.starts_with(&format!("<!-- hero_proc plan -->\n### hero_proc plan: `{}`", &base[..12])), "{md}");
    assert!(md.contains("| host | create | update | delete | restart |"), "{md}");
    assert!(md.contains("| `h1` | 2 | 1 | 0 | 1 |"), "{md}");
    assert!(md.contains("| `h3` | no changes |"), "{md}");
    assert_eq!(md.matches("<details>").count(), 3, "a section per host with changes: {md}");
    assert!(md.contains("```diff\n") && md.contains("+  GREETING: h1-new"), "{md}");
    // The same plan renders the same comment (a comment updated on each push changes
    // only when the plan does).
    assert_eq!(text(&run(&repo, &args, &[]).stdout), md);

    // A script holding a fence cannot close the diff block early.
    repo.write("actions/api.yaml", &api("'```'"));
    repo.commit("a fence in a value");
    let md = text(&run(&repo, &args, &[]).stdout);
    assert!(md.contains("````diff\n"), "a longer fence: {md}");

    // markdown is for base previews only.
    let out = run(&repo, &["--format", "markdown", "reconcile", "--dry-run", "--empty"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--base"), "{}", text(&out.stderr));
}

#[test]
fn a_base_preview_compares_secrets_without_showing_them() {
    if !tools() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (key_file, recipient) = keygen(keys.path(), "ci");
    let repo = ConfigRepo::new();
    let uses_token = "actions:\n  - name: api\n    script: exec sleep 600\n    process: true\n    env:\n      TOKEN: { secret: api_token }\nservices:\n  - name: api\n    actions: [api]\n";
    repo.write("actions/api.yaml", uses_token);
    repo.write("secrets/core.sops.yaml", &sops_encrypt(keys.path(), &format!("api_token: {MARKER}\n"), &recipient));
    let base = repo.commit("base");
    // Re-encrypted with the same value: every ciphertext differs, the value does not.
    repo.write("secrets/core.sops.yaml", &sops_encrypt(keys.path(), &format!("api_token: {MARKER}\n"), &recipient));
    let same = repo.commit("re-encrypted");
    repo.write("secrets/core.sops.yaml", &sops_encrypt(keys.path(), &format!("api_token: {ROTATED}\n"), &recipient));
    let rotated = repo.commit("rotated");
    let with_key = [("SOPS_AGE_KEY_FILE", key_file.as_path())];

    let preview = |rev: &str, format: &str, env: &[(&str, &std::path::Path)]| {
        let out = run(
            &repo,
            &["--format", format, "reconcile", "--dry-run", "--base", &base, "--rev", rev, "--detailed-exitcode"],
            env,
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains(MARKER) && !all.contains(ROTATED), "a secret value leaked: {all}");
        (out.status.code(), text(&out.stdout))
    };
    // With the key: a re-encryption is no change; a new value is one, masked, and
    // restarts the service that uses it.
    let (code, shown) = preview(&same, "text", &with_key);
    assert_eq!(code, Some(0), "{shown}");
    let (code, shown) = preview(&rotated, "text", &with_key);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("(sensitive value changed)") && shown.contains("core/api"), "{shown}");
    for format in ["json", "markdown"] {
        let (code, _) = preview(&rotated, format, &with_key);
        assert_eq!(code, Some(2));
    }
    // Without a key: listed as not compared, never guessed.
    let (_, shown) = preview(&rotated, "text", &[]);
    assert!(shown.contains("Secrets not compared") && shown.contains("secret core/api_token"), "{shown}");
}

/// An ed25519 key made by the real `ssh-keygen`: (private key file, public key line).
fn ssh_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let file = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&file)
        .output()
        .expect("ssh-keygen runs (openssh-client; .ci/run installs it)");
    assert!(out.status.success(), "ssh-keygen: {}", text(&out.stderr));
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    (file, public.trim().to_owned())
}

/// `SHA256:...` of a key, as `ssh-keygen -lf` prints it.
fn fingerprint(key: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(key).output().unwrap();
    text(&out.stdout).split_whitespace().nth(1).unwrap().to_owned()
}

/// Commit everything, signed by the real git with `key` (`gpg.format=ssh`).
fn signed_commit(repo: &ConfigRepo, key: &std::path::Path, msg: &str) -> String {
    repo.git(&["add", "-A"]);
    let signing = format!("user.signingkey={}", key.display());
    repo.git(&["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "--allow-empty", "-m", msg]);
    repo.git(&["rev-parse", "HEAD"])
}

fn history_of<'a>(h: &'a Value, rev: &str) -> Vec<&'a Value> {
    h.as_array().unwrap().iter().filter(|e| e["record"]["revision"] == rev).collect()
}

#[test]
fn only_commits_signed_by_an_allowed_key_apply() {
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = ssh_key(keys.path(), "alice");
    let (mallory, mallory_pub) = ssh_key(keys.path(), "mallory");
    // Kept on the host, outside the repository; the committer is ada@example.org.
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("# deployers\nada@example.org namespaces=\"git\" {alice_pub}\n")).unwrap();

    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "one"));
    let one = signed_commit(&repo, &alice, "one");
    let d = support::Daemon::start_with(
        &[
            "--repo",
            &repo.location(),
            "--branch",
            "main",
            "--interval",
            "1h",
            "--allowed-signers",
            signers.to_str().unwrap(),
        ],
        false,
    );
    wait_applied(&d, &one);
    wait_greeting(&d, "web", "one");
    let web = pid(&d, "web");
    let h = d.json(&["history"]);
    let sig = history_of(&h, &one)[0]["record"]["summary"]["signature"].as_str().unwrap().to_owned();
    assert!(sig.contains(&fingerprint(&alice)) && sig.contains("ada@example.org") && sig.contains("line 2"), "{sig}");

    // Signed, but by a key the file does not allow: refused, named, nothing applied.
    repo.write("actions/web.yaml", &service("web", "two"));
    let two = signed_commit(&repo, &mallory, "two");
    let refused = |rev: &str, why: &str, live: &str, greets: &str| {
        support::wait_for(&format!("{rev} to be refused"), std::time::Duration::from_secs(20), || {
            status(&d)["attempted_revision"].as_str() == Some(rev)
        });
        let s = status(&d);
        let err = s["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(err.contains("is not signed by an allowed signer") && err.contains(why), "{err}");
        assert_eq!(s["last_result"], "refused", "{s}");
        assert_eq!(s["applied_revision"].as_str(), Some(live), "{s}");
        assert_eq!(greeting(&d, "web").as_deref(), Some(greets), "the last good revision keeps running");
        let h = d.json(&["history"]);
        let lines = history_of(&h, rev);
        assert_eq!(lines.len(), 1, "{h}");
        assert_eq!(lines[0]["record"]["result"], "refused");
    };
    refused(&two, &fingerprint(&mallory), &one, "one");
    // Not signed at all.
    repo.write("actions/web.yaml", &service("web", "three"));
    let three = repo.commit("three");
    refused(&three, "carries no signature", &one, "one");
    assert_eq!(pid(&d, "web"), web, "nothing restarted");

    // An operator on the host may let one revision through, and history says so.
    let out = d.cli(&["reconcile", "--rev", &three]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--allow-unsigned"), "the refusal says how: {}", text(&out.stderr));
    let out = d.cli(&["reconcile", "--rev", &three, "--allow-unsigned"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_greeting(&d, "web", "three");
    let h = d.json(&["history"]);
    let applied = history_of(&h, &three).into_iter().find(|e| e["record"]["result"] == "applied").expect("applied");
    let sig = applied["record"]["summary"]["signature"].as_str().unwrap();
    assert!(sig.starts_with("applied unsigned by --allow-unsigned") && sig.contains("carries no signature"), "{sig}");
    d.json(&["reconcile", "resume"]);

    // Key rotation: the file is read on every sync, no restart. Mallory is allowed now,
    // alice no longer.
    std::fs::write(&signers, format!("ada@example.org {mallory_pub}\n")).unwrap();
    repo.write("actions/web.yaml", &service("web", "five"));
    let five = signed_commit(&repo, &mallory, "five");
    wait_applied(&d, &five);
    wait_greeting(&d, "web", "five");
    repo.write("actions/web.yaml", &service("web", "six"));
    let six = signed_commit(&repo, &alice, "six");
    refused(&six, &fingerprint(&alice), &five, "five");

    // An allowed key's signature moved onto other content: the bytes do not verify.
    let raw = repo.git(&["cat-file", "commit", &five]);
    assert!(raw.contains("-----BEGIN SSH SIGNATURE-----"), "{raw}");
    let forged_text = format!(
        "{}\n",
        raw.replace(&format!("parent {three}"), &format!("parent {six}")).replace("\n\nfive", "\n\nforged")
    );
    let tmp = keys.path().join("forged");
    std::fs::write(&tmp, forged_text).unwrap();
    let forged = repo.git(&["hash-object", "-t", "commit", "-w", tmp.to_str().unwrap()]);
    repo.git(&["update-ref", "refs/heads/main", &forged]);
    refused(&forged, "does not verify", &five, "five");
}

#[test]
fn an_allowed_signers_file_in_the_repository_or_unreadable_stops_the_daemon() {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "one"));
    repo.write(
        "allowed_signers",
        "ada@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDGIB/T1LRt2gd4oQ5Sn1oWxgdLbRNqU2Aw5hkBcLsb5\n",
    );
    repo.commit("one");
    let root = tempfile::tempdir().unwrap();
    let serve = |file: &str| {
        Command::new(support::bin())
            .args(["serve", "--repo", &repo.location(), "--allowed-signers", file])
            .env("HERO_ROOTDIR", root.path())
            .env("HERO_PROC_NO_AUTOSTART_DB", "1")
            .output()
            .unwrap()
    };
    let inside = repo.path().join("allowed_signers");
    let out = serve(inside.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is inside the repository it guards"), "{}", text(&out.stderr));
    let elsewhere = root.path().join("signers");
    std::fs::write(&elsewhere, "ada@example.org ssh-ed25519 AAAAnot-a-key\n").unwrap();
    let out = serve(elsewhere.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:1:17: error: not an OpenSSH public key", elsewhere.display())), "{err}");
}

const FORGE_TOKEN: &str = "MARKER-forge-token-71c2-do-not-leak";

#[test]
fn commit_statuses_say_per_host_how_each_revision_fared() {
    if !tools() {
        return;
    }
    let forge = support::forge::Forge::start(FORGE_TOKEN);
    let keys = tempfile::tempdir().unwrap();
    let (host_key, recipient) = keygen(keys.path(), "host");
    let repo = ConfigRepo::new();
    let settings = format!(
        "required_services: []\nforgejo:\n  url: {}\n  repo: hero/hero-config\n  token: {{ secret: forgejo_token }}\n",
        forge.api()
    );
    repo.write("hero.yaml", &settings);
    repo.write(
        "secrets/core.sops.yaml",
        &sops_encrypt(keys.path(), &format!("forgejo_token: {FORGE_TOKEN}\n"), &recipient),
    );
    repo.write("actions/web.yaml", &service("web", "one"));
    let one = repo.commit("one");
    let d = support::Daemon::start_env(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h", "--host", "h1"],
        false,
        &[("SOPS_AGE_KEY_FILE", host_key.to_str().unwrap())],
    );
    let until = |sha: &str, n: usize| {
        support::wait_for(&format!("{n} statuses of {sha}"), std::time::Duration::from_secs(20), || {
            forge.statuses(sha).len() >= n
        });
        forge.statuses(sha)
    };
    // pending, then success once web runs; under the host's context.
    let s = until(&one, 2);
    assert_eq!(s[0].0, "pending", "{s:?}");
    assert_eq!(s[1].0, "success", "{s:?}");
    assert!(s.iter().all(|(_, c, _)| c == "hero_proc/h1"), "{s:?}");
    assert!(s[1].2.contains("1 service(s) running"), "{s:?}");
    assert!(forge.posts().iter().all(|p| p.repo == "hero/hero-config"));

    // A revision that does not validate: failure, with the reason's first line.
    repo.write("actions/bad.yaml", "actions:\n  - name: bad\n    scrpt: x\n");
    let bad = repo.commit("bad");
    let s = until(&bad, 1);
    assert_eq!(s.last().unwrap().0, "failure", "{s:?}");
    assert!(s.last().unwrap().2.contains("nothing was applied: actions/bad.yaml:"), "{s:?}");

    // The forge fails twice: the sync is not held up, the post is retried and lands,
    // and status counts the failed tries.
    forge.fail_next(500, 2);
    repo.rm("actions/bad.yaml");
    repo.write("actions/web.yaml", &service("web", "three"));
    let three = repo.commit("three");
    wait_applied(&d, &three);
    wait_greeting(&d, "web", "three");
    support::wait_for("three's success to land", std::time::Duration::from_secs(20), || {
        forge.statuses(&three).last().is_some_and(|s| s.0 == "success")
    });
    // (a pending still being retried when the success came was dropped: it says less)
    let cs = status(&d)["commit_status"].clone();
    assert_eq!(cs["context"], "hero_proc/h1");
    assert!(cs["failed"].as_u64().unwrap() >= 2, "{cs}");
    assert!(cs["last_delivered"].as_str().unwrap().starts_with("success for"), "{cs}");

    // A forge that does not answer never holds up a sync.
    forge.stall(true);
    repo.write("actions/web.yaml", &service("web", "four"));
    let four = repo.commit("four");
    let started = std::time::Instant::now();
    wait_applied(&d, &four);
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "the sync waited for the forge");
    forge.stall(false);
    support::wait_for("four's success to land", std::time::Duration::from_secs(30), || {
        forge.statuses(&four).last().is_some_and(|s| s.0 == "success")
    });

    // The token went to the forge in the header only: nowhere else.
    assert!(forge.posts().iter().all(|p| p.auth.as_deref() == Some(&format!("token {FORGE_TOKEN}"))));
    let said = format!(
        "{}{}{}",
        d.json(&["reconcile", "status"]),
        d.json(&["history"]),
        std::fs::read_to_string(d.root().join("daemon.log")).unwrap_or_default()
    );
    assert!(!said.contains(FORGE_TOKEN), "the forge token leaked");
    assert!(forge.posts().iter().all(|p| !p.body.to_string().contains(FORGE_TOKEN)));
}
