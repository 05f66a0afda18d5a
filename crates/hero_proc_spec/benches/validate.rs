//! Validate benchmark: generated trees of 1k..10k actions (a fifth as many services),
//! timed against two floors measured in the same run on the same files:
//!   read  = reading every file's bytes (the I/O floor),
//!   parse = parsing every file with serde_yaml_ng into an untyped Value (what a
//!           validator that only checks syntax would cost).
//! Each size also runs in a fresh child process to report its peak RSS.
//!
//! Checks (a panic, in both modes): each generated tree validates with no error and
//! holds every action; the same tree with one dangling `depends_on` reports it.
//!
//! Run: `cargo bench --workspace --bench validate`. Without `--bench` (what `cargo test`
//! runs) it is a smoke run of 50 and 100 actions, one round each.
//! `HERO_BENCH_SIZES=1000,5000` sets the sizes.

/// Full size or smoke: the convention the daemon-level benchmarks use.
#[path = "../../../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;

use std::path::Path;
use std::time::{Duration, Instant};

use hero_proc_spec::{DirSource, load_tree};

const SIZES: [usize; 4] = [1_000, 2_000, 5_000, 10_000];
const SMOKE_SIZES: [usize; 2] = [50, 100];

/// One service per file with five actions: four one-shot steps and the supervised main
/// process, with env, health checks and dependencies, like a real hero service.
fn generate(root: &Path, actions: usize) {
    let services = actions / 5;
    std::fs::create_dir_all(root.join("actions")).unwrap();
    for s in 0..services {
        let mut y = String::from("actions:\n");
        for step in 0..4 {
            y.push_str(&format!(
                "  - name: svc{s}_step{step}\n    description: build step {step} of svc{s}\n    interpreter: bash\n    script: |\n      set -e\n      echo step {step}\n    timeout: 5m\n"
            ));
            if step > 0 {
                y.push_str(&format!("    depends_on: [svc{s}_step{}]\n", step - 1));
            }
        }
        y.push_str(&format!(
            "  - name: svc{s}\n    interpreter: exec\n    script: /usr/local/bin/svc{s} --socket /tmp/svc{s}.sock --port {port}\n    env:\n      RUST_LOG: info\n      SVC_ID: \"{s}\"\n    process: true\n    restart: {{ policy: on-failure, delay: 1s, max_delay: 60s }}\n    stop: {{ signal: SIGTERM, timeout: 10s }}\n    health:\n      - unix_socket: /tmp/svc{s}.sock\n      - tcp: 127.0.0.1:{port}\n    depends_on: [svc{s}_step3]\n    tags: [bench]\n",
            port = 10_000 + s
        ));
        y.push_str(&format!(
            "services:\n  - name: svc{s}\n    actions: [svc{s}_step0, svc{s}_step1, svc{s}_step2, svc{s}_step3, svc{s}]\n"
        ));
        if s > 0 {
            y.push_str(&format!("    requires: [svc{}]\n    after: [hero_db]\n", s / 2));
        }
        std::fs::write(root.join(format!("actions/svc{s}.yaml")), y).unwrap();
    }
    std::fs::write(
        root.join("actions/hero_db.yaml"),
        "actions:\n  - name: hero_db\n    script: /usr/local/bin/hero_db\n    process: true\nservices:\n  - name: hero_db\n",
    )
    .unwrap();
}

fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("actions")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, f: impl Fn()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `--list`, or a test-name filter that does not match: nothing to run.
    if bench::Mode::from_args("validate").is_none() {
        return;
    }
    // Child mode: validate once in a fresh process and report wall time and peak RSS.
    if let Ok(dir) = std::env::var("HERO_BENCH_VALIDATE_DIR") {
        let t = Instant::now();
        let c = load_tree(&DirSource::new(&dir));
        assert_eq!(c.errors(), 0);
        println!("{} {}", ms(t.elapsed()), peak_rss_kb());
        return;
    }

    let full = bench::Mode::from_args("validate") == Some(bench::Mode::Full);
    let runs = if full { 5 } else { 1 };
    let sizes: Vec<usize> = match std::env::var("HERO_BENCH_SIZES") {
        Ok(v) => v.split(',').map(|n| n.trim().parse().expect("HERO_BENCH_SIZES: numbers")).collect(),
        Err(_) if full => SIZES.to_vec(),
        Err(_) => SMOKE_SIZES.to_vec(),
    };
    println!("validate benchmark — `cargo bench --workspace --bench validate`, median of {runs} runs");
    println!(
        "{:>8} {:>8} {:>6} | {:>8} {:>9} {:>11} | {:>14} {:>11} | {:>13} {:>8}",
        "actions",
        "services",
        "files",
        "read ms",
        "parse ms",
        "validate ms",
        "validate/parse",
        "ms/1k acts",
        "cold-proc ms",
        "peak RSS"
    );
    for (k, &n) in sizes.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), n);
        let fs = files(dir.path());
        let read = time(runs, || {
            for f in &fs {
                std::hint::black_box(std::fs::read(f).unwrap());
            }
        });
        let parse = time(runs, || {
            for f in &fs {
                let text = std::fs::read_to_string(f).unwrap();
                std::hint::black_box(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap());
            }
        });
        let src = DirSource::new(dir.path());
        let checked = load_tree(&src);
        assert_eq!(checked.errors(), 0, "generated tree must be valid");
        assert_eq!(checked.tree.base.actions.len(), n + 1);
        let validate = time(runs, || {
            std::hint::black_box(load_tree(&src));
        });
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .env("HERO_BENCH_VALIDATE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(child.status.success(), "cold-process validate: {}", String::from_utf8_lossy(&child.stderr));
        let out = String::from_utf8_lossy(&child.stdout);
        let mut parts = out.split_whitespace();
        let cold: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        let rss_kb: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        println!(
            "{:>8} {:>8} {:>6} | {:>8.1} {:>9.1} {:>11.1} | {:>13.2}x {:>11.1} | {:>13.1} {:>5.1} MB",
            n,
            n / 5 + 1,
            fs.len(),
            ms(read),
            ms(parse),
            ms(validate),
            ms(validate) / ms(parse),
            ms(validate) / (n as f64 / 1000.0),
            cold,
            rss_kb / 1024.0
        );
        if k == 0 {
            // The validator must still catch a mistake in a tree this size.
            std::fs::write(
                dir.path().join("actions/broken.yaml"),
                "actions:\n  - name: broken\n    script: /bin/true\n    depends_on: [no_such_action]\n",
            )
            .unwrap();
            let broken = load_tree(&src);
            assert_eq!(broken.errors(), 1, "one dangling depends_on, one error");
        }
    }
}
