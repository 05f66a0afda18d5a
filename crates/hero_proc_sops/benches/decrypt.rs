//! Benchmark: decrypt a 1,000-key file written by the real `sops`, in
//! process, against `sops -d` on the same file. Target: ours under 100 ms.
//! Run with `cargo bench -p hero_proc_sops`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hero_proc_sops::{LoadedIdentities, decrypt, key_names};

const KEYS: usize = 1_000;

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    f();
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

fn sops_cmd(dir: &Path) -> Command {
    let mut c = Command::new("sops");
    c.current_dir(dir).env("HOME", dir).env("XDG_CONFIG_HOME", dir.join("xdg"));
    for v in ["SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "SOPS_AGE_RECIPIENTS"] {
        c.env_remove(v);
    }
    c
}

fn main() {
    if !on_path("sops") || !on_path("age-keygen") {
        eprintln!("SKIP decrypt benchmark: `sops` and/or `age-keygen` not on PATH");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("keys.txt");
    let ok = Command::new("age-keygen").arg("-o").arg(&key_file).output().expect("age-keygen");
    assert!(ok.status.success());
    let recipient =
        String::from_utf8(Command::new("age-keygen").arg("-y").arg(&key_file).output().expect("age-keygen -y").stdout)
            .expect("utf8");

    let mut plain = String::new();
    for i in 0..KEYS {
        match i % 10 {
            0 => plain.push_str(&format!("key_{i:04}: {i}\n")),
            1 => plain.push_str(&format!("key_{i:04}: {}.25\n", i)),
            2 => plain.push_str(&format!("key_{i:04}: {}\n", i % 4 == 0)),
            _ => plain.push_str(&format!("key_{i:04}: secret-value-{i}-{}\n", "x".repeat(24))),
        }
    }
    let plain_path = dir.path().join("plain.yaml");
    std::fs::write(&plain_path, &plain).expect("write");
    let out =
        sops_cmd(dir.path()).args(["--encrypt", "--age", recipient.trim()]).arg(&plain_path).output().expect("sops");
    assert!(out.status.success(), "sops --encrypt: {}", String::from_utf8_lossy(&out.stderr));
    let enc = out.stdout;
    let enc_path = dir.path().join("secrets.sops.yaml");
    std::fs::write(&enc_path, &enc).expect("write enc");

    let keys = LoadedIdentities::parse(&std::fs::read_to_string(&key_file).expect("key"), "bench").expect("parse");
    let file = decrypt(&enc, &keys).expect("decrypt");
    assert_eq!(file.keys().len(), KEYS);

    let ours = time(21, || {
        let f = decrypt(&enc, &keys).expect("decrypt");
        std::hint::black_box(f);
    });
    let names = time(21, || {
        std::hint::black_box(key_names(&enc).expect("names"));
    });
    let theirs = time(7, || {
        let out = sops_cmd(dir.path())
            .env("SOPS_AGE_KEY_FILE", &key_file)
            .arg("-d")
            .arg(&enc_path)
            .output()
            .expect("sops -d");
        assert!(out.status.success());
    });

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("hero_proc_sops decrypt benchmark: {KEYS} keys, {} bytes (median of runs)", enc.len());
    println!("{:<44} {:>10} {:>8}", "what", "median", "vs sops");
    println!("{:<44} {:>8.2}ms {:>7.1}x", "hero_proc_sops::decrypt (in process)", ms(ours), ms(theirs) / ms(ours));
    println!("{:<44} {:>8.2}ms {:>7.1}x", "hero_proc_sops::key_names (no key)", ms(names), ms(theirs) / ms(names));
    println!("{:<44} {:>8.2}ms {:>7.1}x", "SOPS_AGE_KEY_FILE=... sops -d <file>", ms(theirs), 1.0);
    println!("target: decrypt < 100 ms -> {}", if ms(ours) < 100.0 { "met" } else { "MISSED" });
}
