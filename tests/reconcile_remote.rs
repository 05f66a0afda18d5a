//! A daemon following a remote repository (file:// URL, fetched into its mirror):
//! force-pushes, a deleted branch, a vanished remote, and the signed push webhook.

use crate::support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::config_repo::*;
use support::{Daemon, wait_for};

/// A bare "forge" repository and a work clone that pushes to it.
struct Forge {
    bare: tempfile::TempDir,
    work: ConfigRepo,
}

impl Forge {
    fn new() -> Forge {
        let bare = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(bare.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        // A forge lets a maintainer delete the default branch; plain git refuses by default.
        let out = std::process::Command::new("git")
            .args(["config", "receive.denyDeleteCurrent", "ignore"])
            .current_dir(bare.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let work = ConfigRepo::new();
        work.git(&["remote", "add", "origin", &bare.path().display().to_string()]);
        Forge { bare, work }
    }
    fn url(&self) -> String {
        format!("file://{}", self.bare.path().display())
    }
    fn push(&self, args: &[&str]) {
        let mut a = vec!["push", "-q"];
        a.extend_from_slice(args);
        self.work.git(&a);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn remote_force_push_deleted_branch_and_vanished_remote() {
    let forge = Forge::new();
    forge.work.write("actions/web.yaml", &service("web", "one"));
    let one = forge.work.commit("one");
    forge.push(&["origin", "main"]);
    let d = Daemon::start_with(&["--repo", &forge.url(), "--branch", "main", "--interval", "1s"], false);
    wait_applied(&d, &one);
    wait_greeting(&d, "web", "one");

    // A force-push replaces history: the new tip is applied.
    forge.work.write("actions/web.yaml", &service("web", "two"));
    forge.work.commit("two");
    forge.work.git(&["reset", "-q", "--hard", &one]);
    forge.work.write("actions/web.yaml", &service("web", "rewritten"));
    let rewritten = forge.work.commit("rewritten history");
    forge.push(&["-f", "origin", "main"]);
    wait_applied(&d, &rewritten);
    wait_greeting(&d, "web", "rewritten");
    let web_pid = pid(&d, "web");

    // The branch is deleted: a clear error, the last revision keeps running.
    forge.push(&["origin", ":main"]);
    wait_for("the deleted branch to be reported", Duration::from_secs(20), || {
        status(&d)["last_error"].as_str().is_some_and(|e| e.contains("branch `main` not found"))
    });
    assert_eq!(status(&d)["applied_revision"].as_str(), Some(rewritten.as_str()));
    assert_eq!(pid(&d, "web"), web_pid);

    // It comes back with a new commit: converges.
    forge.work.write("actions/web.yaml", &service("web", "back"));
    let back = forge.work.commit("back");
    forge.push(&["origin", "main"]);
    wait_applied(&d, &back);
    wait_greeting(&d, "web", "back");

    // The remote vanishes: a fetch error, retried with backoff; the service keeps running.
    let moved: PathBuf = forge.bare.path().with_extension("moved");
    std::fs::rename(forge.bare.path(), &moved).unwrap();
    wait_for("the fetch error", Duration::from_secs(20), || {
        status(&d)["last_error"].as_str().is_some_and(|e| e.contains("cannot fetch"))
    });
    let s = status(&d);
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(state(&d, "web").as_deref(), Some("running"));
    std::fs::rename(&moved, forge.bare.path()).unwrap();
    forge.work.write("actions/web.yaml", &service("web", "again"));
    let again = forge.work.commit("again");
    forge.push(&["origin", "main"]);
    wait_applied(&d, &again);
    wait_greeting(&d, "web", "again");
    assert!(status(&d)["last_error"].is_null());
}

fn post(port: u16, body: &str, headers: &[(&str, String)]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req =
        format!("POST /hook HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_webhook_needs_a_valid_signature() {
    let forge = Forge::new();
    forge.work.write("actions/web.yaml", &service("web", "one"));
    let one = forge.work.commit("one");
    forge.push(&["origin", "main"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_env(
        &["--repo", &forge.url(), "--branch", "main", "--interval", "1h", "--webhook-addr", &addr],
        false,
        &[("HERO_PROC_WEBHOOK_SECRET", "hook-secret")],
    );
    wait_applied(&d, &one);

    forge.work.write("actions/web.yaml", &service("web", "two"));
    let two = forge.work.commit("two");
    forge.push(&["origin", "main"]);
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{two}"}}"#);

    assert_eq!(post(port, &body, &[]), 401, "unsigned");
    assert_eq!(post(port, &body, &[("X-Forgejo-Signature", "00".repeat(32))]), 401, "wrong signature");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"wrong-secret").unwrap();
    mac.update(body.as_bytes());
    let wrong = hex::encode(mac.finalize().into_bytes());
    assert_eq!(post(port, &body, &[("X-Gitea-Signature", wrong)]), 401, "signed with another secret");
    // The webhook's own record of its three decisions, and no sync since: every sync
    // fetches first, so the head in status would be `two`.
    let said =
        |what: &str| std::fs::read_to_string(d.root().join("daemon.log")).unwrap_or_default().matches(what).count();
    wait_for("the three refusals in the daemon's log", Duration::from_secs(10), || {
        said("webhook: refused an unsigned request") == 1
            && said("webhook: refused a request with a wrong signature") == 2
    });
    assert_eq!(said("webhook: push received"), 0);
    let s = status(&d);
    assert_eq!(s["head_revision"].as_str(), Some(one.as_str()), "no sync fetched: {s}");
    assert_eq!(s["applied_revision"].as_str(), Some(one.as_str()), "nothing triggered");

    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body.as_bytes());
    let good = hex::encode(mac.finalize().into_bytes());
    assert_eq!(post(port, &body, &[("X-Forgejo-Signature", good)]), 202);
    wait_applied(&d, &two);
    wait_greeting(&d, "web", "two");
    assert_eq!(said("webhook: push received"), 1);
}

#[test]
fn a_webhook_without_a_secret_is_refused_at_start() {
    let forge = Forge::new();
    forge.work.commit("empty");
    forge.push(&["origin", "main"]);
    let root = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--repo", &forge.url(), "--webhook-addr", &addr])
        .env("HERO_ROOTDIR", root.path())
        .env("HERO_PROC_NO_AUTOSTART_DB", "1")
        .env_remove("HERO_PROC_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = support::text(&out.stderr);
    assert!(err.contains("HERO_PROC_WEBHOOK_SECRET"), "{err}");
}

#[test]
fn a_fleet_of_three_hosts_converges_to_its_own_overlays() {
    let forge = Forge::new();
    let w = &forge.work;
    w.write("actions/web.yaml", &service("web", "base"));
    w.write("hosts/edge-01/actions/web.yaml", &service("web", "edge-01"));
    w.write("hosts/edge-02/actions/extra.yaml", &service("extra", "only-on-edge-02"));
    let first = w.commit("fleet");
    forge.push(&["origin", "main"]);
    let hosts = ["edge-01", "edge-02", "edge-03"];
    let fleet: Vec<Daemon> = hosts
        .iter()
        .map(|h| {
            Daemon::start_with(&["--repo", &forge.url(), "--branch", "main", "--host", h, "--interval", "1s"], false)
        })
        .collect();
    for d in &fleet {
        wait_applied(d, &first);
    }
    wait_greeting(&fleet[0], "web", "edge-01");
    wait_greeting(&fleet[1], "web", "base");
    wait_greeting(&fleet[1], "extra", "only-on-edge-02");
    wait_greeting(&fleet[2], "web", "base");
    assert_eq!(state(&fleet[0], "extra"), None);
    assert_eq!(state(&fleet[2], "extra"), None);

    // A change to the base reaches every host that does not override it.
    w.write("actions/web.yaml", &service("web", "base-v2"));
    let second = w.commit("base v2");
    forge.push(&["origin", "main"]);
    for d in &fleet {
        wait_applied(d, &second);
    }
    wait_greeting(&fleet[1], "web", "base-v2");
    wait_greeting(&fleet[2], "web", "base-v2");
    assert_eq!(greeting(&fleet[0], "web").as_deref(), Some("edge-01"));
    for (d, h) in fleet.iter().zip(hosts) {
        let s = status(d);
        assert_eq!(s["host"], h);
        let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(0), "{h}: {}", support::text(&out.stdout));
    }
}

#[test]
fn a_local_repo_that_is_not_a_git_repository_is_refused_at_start() {
    let plain = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(plain.path().join("actions")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--repo"])
        .arg(plain.path())
        .env("HERO_ROOTDIR", root.path())
        .env("HERO_PROC_NO_AUTOSTART_DB", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "it must not start and retry forever");
    let err = support::text(&out.stderr);
    assert!(err.contains("is not a git repository") && err.contains("git init"), "{err}");
    assert!(!root.path().join("var/sockets/hero_proc.sock").exists(), "nothing was served");
}
