//! `hero_proc export`: from a running machine to git. A generated live state (contexts,
//! services with every field, cron actions, health checks, requires/after, env, a
//! secret, services an install-script migration made) is exported, validated, previewed
//! against the same daemon (nothing to do), followed (every object adopted, no process
//! restarted) and then changed in git (exactly the changed service restarts).

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::config_repo::*;
use support::rng::Rng;
use support::{Daemon, leaks, text, wait_for};

const MARKER: &str = "exp0rt-MARKER-3c9d1f";

fn set_secret(d: &Daemon, r: &str, value: &str) {
    let out = d.set_secret(r, value);
    assert!(out.status.success(), "secret set: {}", text(&out.stderr));
}

fn export(d: &Daemon, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["export", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    d.cli(&args)
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A generated state: `n` services over three contexts, each with a main process (env,
/// restart, stop, health with period and liveness, metrics, tags, cwd), some with a
/// one-shot pre-action, `requires`/`after` on earlier running services; cron actions and
/// one-shot actions with `depends_on`; returns the running services (`context/name`).
fn generate(d: &Daemon, rng: &mut Rng, n: usize) -> Vec<String> {
    let contexts = ["core", "geo", "tools"];
    let words = ["plain", "two words", "with: colon", "\"quoted\"", "#hash", "true", "010", "ünï", "a,b [c]"];
    let mut running: Vec<String> = Vec::new();
    for i in 0..n {
        let ctx = if i == 0 { "core" } else { contexts[rng.below(3)] };
        let name = format!("svc{i}");
        let mut y = String::from("actions:\n");
        let pre = rng.below(3) == 0;
        if pre {
            y += &format!("  - name: {name}_prep\n    context: {ctx}\n    interpreter: sh\n    script: 'true'\n");
        }
        y += &format!(
            "  - name: {name}\n    context: {ctx}\n    interpreter: bash\n    script: |\n      echo start\n      exec sleep 600\n    process: true\n    env:\n      SEED_ENV: v{i}\n      W: {:?}\n",
            words[rng.below(words.len())]
        );
        if ctx == "geo" && i % 2 == 1 {
            y += "      TOKEN: { secret: tok }\n";
        }
        if rng.below(2) == 0 {
            y += &format!("    description: {:?}\n", format!("service {i}: generated"));
        }
        if rng.below(2) == 0 {
            y += "    cwd: /tmp\n";
        }
        match rng.below(3) {
            0 => y += "    restart: { policy: always, delay: 500ms, max_delay: 90s, max_retries: 5 }\n",
            1 => y += "    restart: { policy: never }\n",
            _ => {}
        }
        if rng.below(2) == 0 {
            y += "    stop: { signal: SIGINT, timeout: 3s }\n";
        }
        y += "    health:\n      - exec: 'true'\n";
        if rng.below(2) == 0 {
            y += "        period: 5s\n";
        }
        if rng.below(2) == 0 {
            y += "        liveness: { period: 10s, failures: 4 }\n";
        }
        if rng.below(2) == 0 {
            y += &format!("    metrics: http://127.0.0.1:{}/metrics\n", 9100 + i);
        }
        if rng.below(2) == 0 {
            y += "    tags: [generated, web]\n";
        }
        y += &format!("services:\n  - name: {name}\n    context: {ctx}\n");
        if pre {
            y += &format!("    actions: [{name}_prep, {name}]\n");
        }
        let stopped = i > 0 && rng.below(5) == 0;
        if stopped {
            y += "    status: stop\n";
        }
        if !running.is_empty() && rng.below(2) == 0 {
            let dep = &running[rng.below(running.len())];
            y += &format!("    requires: [{dep}]\n");
        }
        if !running.is_empty() && rng.below(2) == 0 {
            let dep = &running[rng.below(running.len())];
            y += &format!("    after: [{dep}]\n");
        }
        d.set(&y);
        if !stopped {
            running.push(format!("{ctx}/{name}"));
        }
    }
    // Stand-alone actions: cron jobs (a time that does not come during a test), one-shot
    // jobs with depends_on, per context.
    for (i, ctx) in contexts.iter().enumerate() {
        let y = format!(
            "actions:\n  - name: nightly{i}\n    context: {ctx}\n    interpreter: sh\n    script: echo nightly\n    schedule: \"0 3 29 2 *\"\n    timeout: 10m\n  - name: oneoff{i}\n    context: {ctx}\n    script: /bin/true\n    depends_on: [nightly{i}]\n    tags: [once]\n"
        );
        d.set(&y);
    }
    running
}

fn pids(d: &Daemon, services: &[String]) -> Vec<(String, u64)> {
    services.iter().map(|s| (s.clone(), pid(d, s).unwrap_or_else(|| panic!("{s} has no pid")))).collect()
}

#[test]
fn export_writes_names_never_values_refuses_a_non_empty_folder_and_is_stable() {
    let d = Daemon::start();
    set_secret(&d, "geo/tok", MARKER);
    set_secret(&d, "db_password", MARKER);
    let mut rng = Rng(0x5eed_e4f0);
    let running = generate(&d, &mut rng, 6);
    assert!(!running.is_empty());

    let out_dir = tempfile::tempdir().unwrap();
    let a = out_dir.path().join("a");
    let out = export(&d, &a, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let example = std::fs::read_to_string(a.join("secrets/geo.sops.yaml.example")).unwrap();
    assert!(example.contains("\ntok: \"\"\n") && example.contains("sops --encrypt --age"), "{example}");
    assert!(a.join("secrets/core.sops.yaml.example").exists());
    assert_eq!(leaks(out_dir.path(), MARKER, &[]), Vec::<String>::new(), "a secret value was exported");
    assert!(!text(&out.stdout).contains(MARKER) && !text(&out.stderr).contains(MARKER));

    // Twice: the same bytes.
    let b = out_dir.path().join("b");
    assert!(export(&d, &b, &[]).status.success());
    assert_eq!(files(&a), files(&b), "exporting twice gives byte-identical files");

    // A folder with something in it needs --force, and says so.
    let out = export(&d, &a, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not empty") && text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(a.join("actions/stale.yaml"), "actions: []\n").unwrap();
    std::fs::write(a.join("README.md"), "mine\n").unwrap();
    assert!(export(&d, &a, &["--force"]).status.success());
    assert!(!a.join("actions/stale.yaml").exists(), "--force replaces actions/");
    assert!(a.join("README.md").exists(), "--force keeps other files");

    // Narrowed: one context, one service.
    let geo = out_dir.path().join("geo");
    assert!(export(&d, &geo, &["--context", "geo"]).status.success());
    for (path, body) in files(&geo) {
        if path.starts_with("actions/") {
            assert!(text(&body).contains("context: geo"), "{path}");
            assert!(!text(&body).contains("context: tools"), "{path}");
        }
    }
    let one = out_dir.path().join("one");
    assert!(export(&d, &one, &["--service", "svc0"]).status.success());
    let names: Vec<String> = files(&one).into_iter().map(|(p, _)| p).filter(|p| p.starts_with("actions/")).collect();
    assert_eq!(names, ["actions/svc0.yaml"]);
    let out = export(&d, &out_dir.path().join("none"), &["--service", "nope"]);
    assert!(text(&out.stderr).contains("--service core/nope: no such service"), "{}", text(&out.stderr));
}

/// `--service` exports what that service needs to validate on its own: the services it
/// requires or starts after, their actions, and the actions those depend on; nothing else.
#[test]
fn a_narrowed_export_carries_what_the_service_needs_and_validates() {
    let d = Daemon::start();
    d.set(
        "actions:\n  - name: base\n    script: /bin/sleep 1000\n    process: true\n  - name: prep\n    script: /bin/true\n  - name: web_pre\n    script: /bin/true\n    depends_on: [prep]\n  - name: web\n    script: /bin/sleep 1000\n    process: true\n  - name: api\n    context: geo\n    script: /bin/sleep 1000\n    process: true\n  - name: other\n    script: /bin/sleep 1000\n    process: true\nservices:\n  - name: base\n  - name: api\n    context: geo\n  - name: web\n    actions: [web_pre, web]\n    requires: [base]\n    after: [geo/api]\n  - name: other\n",
    );
    d.wait_status("web", "running", |s| s["state"] == "running");
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("web");
    let out = export(&d, &one, &["--service", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: String = files(&one).into_iter().map(|(p, b)| format!("{p}:\n{}", text(&b))).collect();
    for name in ["name: web\n", "name: web_pre\n", "name: prep\n", "name: base\n", "name: api\n"] {
        assert!(all.contains(name), "{name} missing from the narrowed export:\n{all}");
    }
    assert!(!all.contains("name: other\n"), "a service web does not need was exported:\n{all}");
    let v = d.cli(&["validate", one.to_str().unwrap()]);
    assert!(v.status.success(), "the narrowed export validates on its own: {}{}", text(&v.stdout), text(&v.stderr));
}

/// The property: for a generated live state, export -> validate -> a dry-run against
/// the same daemon has nothing to do -> following the export adopts every object with
/// no restart -> a change in git restarts exactly the service it changes.
#[test]
fn a_generated_live_state_round_trips_through_git_without_a_restart() {
    if !crate::reconcile_secrets::tools() {
        return;
    }
    let seed: u64 = std::env::var("HERO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xE2E0_2020);
    eprintln!("seed {seed} (HERO_TEST_SEED={seed} repeats this run)");
    let keys = tempfile::tempdir().unwrap();
    let (key_file, recipient) = crate::reconcile_secrets::keygen(keys.path(), "host");

    // A first repository runs an old install script as a migration.
    let first = ConfigRepo::new();
    first.write(
        "migrations/2026-05-20-001_install.rhai",
        r#"proc.quick_service_set_full("qs_server", "sleep 600", "exec", "");
proc.quick_service_set_full("tools/qs_ui", "sleep 600", "exec", "exec:true");
proc.quick_service_start("qs_server");
proc.quick_service_start("tools/qs_ui");
"#,
    );
    let rev = first.commit("install");
    let key = key_file.to_str().unwrap();
    let mut d = Daemon::start_env(
        &["--repo", &first.location(), "--branch", "main", "--interval", "1h"],
        false,
        &[("HERO_PROC_AGE_KEY_FILE", key)],
    );
    wait_applied(&d, &rev);
    set_secret(&d, "geo/tok", MARKER);
    let mut rng = Rng(seed);
    let n = 6 + rng.below(5);
    let mut running = generate(&d, &mut rng, n);
    running.extend(["core/qs_server".to_owned(), "tools/qs_ui".to_owned()]);
    for s in &running {
        d.wait_status(s, "running", |v| v["state"] == "running");
    }
    let before = pids(&d, &running);

    // Export; make the secrets file the example describes; validate; commit.
    let repo = ConfigRepo { dir: tempfile::tempdir().unwrap() };
    std::fs::remove_dir(repo.path()).unwrap();
    let out = export(&d, repo.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(repo.path().join("migrations/2026-05-20-001_install.rhai").exists(), "applied migrations are carried");
    assert_eq!(leaks(repo.path(), MARKER, &[]), Vec::<String>::new());
    let example = std::fs::read_to_string(repo.path().join("secrets/geo.sops.yaml.example")).unwrap();
    let plain = example.replace("tok: \"\"", &format!("tok: {MARKER}"));
    let sops = crate::reconcile_secrets::sops_encrypt(keys.path(), &plain, &recipient);
    repo.write("secrets/geo.sops.yaml", &sops);
    std::fs::remove_file(repo.path().join("secrets/geo.sops.yaml.example")).unwrap();
    let v = d.cli(&["validate", repo.path().to_str().unwrap()]);
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    repo.git(&["init", "-q", "-b", "main"]);
    let exported = repo.commit("export");

    // A preview against the same daemon: nothing to do (adopting identical objects).
    let out = d.cli(&["reconcile", "--dry-run", "--repo", &repo.location(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let plan = d.json(&["reconcile", "--dry-run", "--repo", &repo.location()]);
    assert!(plan["restarts"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["starts"].as_array().unwrap().is_empty() && plan["stops"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["unmanaged"].as_array().unwrap().is_empty(), "every live object is in the export: {plan}");

    // Follow it: every object adopted, no process restarted.
    d.kill9();
    d.args =
        ["--repo", &repo.location(), "--branch", "main", "--interval", "1h"].iter().map(|s| s.to_string()).collect();
    d.spawn();
    wait_applied(&d, &exported);
    for s in &running {
        d.wait_status(s, "running", |v| v["state"] == "running");
    }
    assert_eq!(pids(&d, &running), before, "following the export restarted nothing");
    for v in d.json(&["service", "list"]).as_array().unwrap() {
        assert_eq!(v["managed"], true, "{v}");
    }
    for v in d.json(&["action", "list"]).as_array().unwrap() {
        assert_eq!(v["managed"], true, "{v}");
    }
    let out = d.cli(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // A daemon restart after the adoption re-attaches to every process: adopting a secret
    // with the same value is no change to it (its processes are not older than it).
    d.kill9();
    d.spawn();
    for s in &running {
        d.wait_status(s, "running", |v| v["state"] == "running");
    }
    assert_eq!(pids(&d, &running), before, "a daemon restart after the adoption restarted something");

    // The next change in git: one env of one service restarts exactly that service.
    let file = repo.path().join("actions/svc0.yaml");
    let body = std::fs::read_to_string(&file).unwrap();
    assert!(body.contains("SEED_ENV: v0\n"), "{body}");
    std::fs::write(&file, body.replace("SEED_ENV: v0\n", "SEED_ENV: changed\n")).unwrap();
    let changed = repo.commit("svc0: new env");
    wait_applied(&d, &changed);
    let old0 = before.iter().find(|(s, _)| s == "core/svc0").unwrap().1;
    wait_for("svc0 to run again", Duration::from_secs(20), || {
        pid(&d, "core/svc0").is_some_and(|p| p != old0) && state(&d, "core/svc0").as_deref() == Some("running")
    });
    let after = pids(&d, &running);
    for ((s, p0), (_, p1)) in before.iter().zip(&after) {
        if s == "core/svc0" {
            assert_ne!(p0, p1);
        } else {
            assert_eq!(p0, p1, "{s} was restarted by a change to svc0");
        }
    }
}
