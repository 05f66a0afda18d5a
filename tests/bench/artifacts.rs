//! Artifact installs (SPEC 3.6), each against a baseline measured in the same run:
//!
//! - Install of one SIZE MB artifact from the loopback registry (real HTTP) into an empty
//!   store: download, SHA-256 on the way, fsync, rename, link; against `curl -o` of the
//!   same URL followed by `sha256sum` of the file (what a script would do, without even
//!   the fsync). Best of ROUNDS, interleaved.
//! - What cached artifacts add to a sync: two daemons following two repositories of
//!   SERVICES services, one running a cached artifact each, the other the same programs
//!   by plain path; the median of ROUNDS `reconcile now` (no-op syncs) on each.
//!
//! Full size: `cargo bench --workspace --bench artifacts` (100 MB, 5 rounds; 20
//! services, 30 syncs). Without `--bench` (what `cargo test` runs) a smoke size.
//! HERO_BENCH_MB, HERO_BENCH_ROUNDS, HERO_BENCH_SERVICES override.

#[path = "../support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::bench::Mode;
use support::config_repo::{ConfigRepo, follow, wait_applied};
use support::registry::{self, Registry};
use support::{Daemon, text, wait_for};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let Some(mode) = Mode::from_args("artifacts") else { return };
    let mb = mode.size("HERO_BENCH_MB", 100, 2);
    let rounds = mode.size("HERO_BENCH_ROUNDS", 5, 1);
    let services = mode.size("HERO_BENCH_SERVICES", 20, 2);
    let syncs = mode.size("HERO_BENCH_ROUNDS", 30, 3);
    println!("{}", mode.banner("artifacts"));
    download(mb, rounds);
    cached_sync(services, syncs);
}

fn download(mb: usize, rounds: usize) {
    assert!(support::require::runs("curl"), "curl is needed for the baseline (apt-get install curl; .ci/run does)");
    let reg = Registry::start(None);
    let body = registry::program("big", "v1", mb << 20);
    assert_eq!(reg.upload("big", "v1", &body, None), 201);
    let digest = hero_proc_artifacts::Digest::parse(&registry::digest(&body)).unwrap();
    let id = hero_proc_artifacts::ArtifactId::parse("big@v1").unwrap();
    let url = format!("{}/big/v1/big", reg.url());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut ours, mut base, mut curl_alone) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big");
        let t = Instant::now();
        let c = Command::new("curl").args(["-sS", "--fail", "-o"]).arg(&out).arg(&url).output().unwrap();
        assert!(c.status.success(), "curl: {}", text(&c.stderr));
        curl_alone = curl_alone.min(t.elapsed());
        let s = Command::new("sha256sum").arg(&out).output().unwrap();
        base = base.min(t.elapsed());
        assert!(text(&s.stdout).starts_with(digest.hex()), "curl got other bytes");

        let root = tempfile::tempdir().unwrap();
        let cache = hero_proc_artifacts::Cache::new(root.path());
        let installer = hero_proc_artifacts::Installer::new(
            hero_proc_artifacts::Registry { url: reg.url(), token: None, timeout: Duration::from_secs(30) },
            cache.clone(),
            Default::default(),
        )
        .unwrap();
        let t = Instant::now();
        let done =
            rt.block_on(installer.install(&[(id.clone(), digest.clone())], &hero_proc_artifacts::Quiet)).unwrap();
        ours = ours.min(t.elapsed());
        assert_eq!(done.downloaded.len(), 1);
        assert!(cache.is_linked(&id, &digest));
    }
    println!();
    println!("install of one {mb} MB artifact over loopback HTTP, best of {rounds} interleaved rounds");
    println!("{:<64} {:>10} {:>8}", "", "ms", "ratio");
    println!("{:<64} {:>10.1} {:>7.2}x", "baseline: curl -o FILE URL && sha256sum FILE", ms(base), 1.0);
    println!(
        "{:<64} {:>10.1} {:>7.2}x",
        "  (of which curl -o alone)",
        ms(curl_alone),
        curl_alone.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "{:<64} {:>10.1} {:>7.2}x",
        "hero_proc: download + SHA-256 on the way + fsync + rename + link",
        ms(ours),
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

/// Services each running their own program: by artifact (`agent@v1`, cached after the
/// first sync) or by plain path.
fn repo_of(n: usize, reg: Option<&Registry>) -> ConfigRepo {
    let repo = ConfigRepo::new();
    let mut y = String::from("actions:\n");
    let mut s = String::from("services:\n");
    let mut lock = String::new();
    for i in 0..n {
        let name = format!("svc{i:03}");
        let script = match reg {
            Some(r) => {
                let body = registry::program(&name, "v1", 0);
                assert_eq!(r.upload(&name, "v1", &body, None), 201);
                lock.push_str(&format!("{name}@v1: {}\n", registry::digest(&body)));
                format!("~/hero/bin/{name}@v1")
            }
            None => "/bin/sleep 600".to_owned(),
        };
        y.push_str(&format!("  - name: {name}\n    script: {script}\n    process: true\n"));
        s.push_str(&format!("  - name: {name}\n"));
    }
    repo.write("actions/all.yaml", &format!("{y}{s}"));
    match reg {
        Some(r) => {
            repo.write("hero.yaml", &format!("required_services: []\nregistry:\n  url: {}\n", r.url()));
            repo.write("artifacts.lock", &lock);
        }
        None => repo.write("hero.yaml", "required_services: []\n"),
    }
    repo
}

fn cached_sync(n: usize, syncs: usize) {
    let reg = Registry::start(None);
    let with = repo_of(n, Some(&reg));
    let without = repo_of(n, None);
    let rev_with = with.commit("artifacts");
    let rev_without = without.commit("plain");
    let (dw, dp) = (follow(&with), follow(&without));
    wait_applied(&dw, &rev_with);
    wait_applied(&dp, &rev_without);
    wait_for("every artifact service to run", Duration::from_secs(60), || {
        (0..n).all(|i| dw.root().join(format!("svc{i:03}.out")).exists())
    });
    let time_sync = |d: &Daemon| {
        let t = Instant::now();
        let out = d.cli(&["reconcile", "now"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        t.elapsed()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..syncs {
        a.push(ms(time_sync(&dw)));
        b.push(ms(time_sync(&dp)));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let (ma, mb) = (median(a), median(b));
    println!();
    println!("a no-op sync (`reconcile now`, CLI process included), {n} services, median of {syncs}");
    println!("{:<64} {:>10}", "", "ms");
    println!("{:<64} {:>10.2}", "baseline: services by plain path", mb);
    println!("{:<64} {:>10.2}", format!("{n} services by cached artifact"), ma);
    println!("{:<64} {:>10.2}", "what the cached artifacts add", ma - mb);
    assert_eq!(reg.gets(), n, "each artifact downloaded once, none again on a no-op sync");
}
