//! A throwaway config tree in a temp dir, and assertions on what `load_tree` reports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hero_proc_spec::{Checked, DirSource, Severity, load_tree};

pub struct Tree {
    pub dir: tempfile::TempDir,
}

/// A minimal valid base: hero_db, which `required_services` demands by default.
pub const HERO_DB: &str =
    "actions:\n  - name: hero_db\n    script: /bin/sleep 1000\n    process: true\nservices:\n  - name: hero_db\n";

impl Tree {
    /// An empty tree plus hero_db, so each test only adds what it checks.
    pub fn new() -> Tree {
        let t = Tree { dir: tempfile::tempdir().expect("tempdir") };
        t.file("actions/hero_db.yaml", HERO_DB);
        t
    }
    pub fn bare() -> Tree {
        Tree { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn file(&self, rel: &str, content: &str) -> &Self {
        self.bytes(rel, content.as_bytes())
    }
    pub fn bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }
    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
        self
    }
    pub fn check(&self) -> Checked {
        load_tree(&DirSource::new(self.dir.path()))
    }
}

pub fn render(c: &Checked) -> String {
    c.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
}

/// Assert a diagnostic with this code exists at `file:line:col`, and return its text.
#[track_caller]
pub fn expect(c: &Checked, code: &str, at: &str) -> String {
    let found = c.diagnostics.iter().find(|d| d.code == code && format!("{}:{}:{}", d.file, d.line, d.col) == at);
    match found {
        Some(d) => d.to_string(),
        None => panic!("expected `{code}` at {at}; got:\n{}", render(c)),
    }
}

/// Assert there are no errors (warnings allowed).
#[track_caller]
pub fn clean(c: &Checked) {
    assert_eq!(c.errors(), 0, "expected no errors; got:\n{}", render(c));
}

/// Assert no diagnostic of this code at all.
#[track_caller]
pub fn absent(c: &Checked, code: &str) {
    assert!(!c.diagnostics.iter().any(|d| d.code == code), "unexpected `{code}`:\n{}", render(c));
}

pub fn warnings(c: &Checked) -> Vec<String> {
    c.diagnostics.iter().filter(|d| d.severity == Severity::Warning).map(|d| d.to_string()).collect()
}

/// The real CLIs the interop tests need. CI installs them (see .ci/run).
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Generate an age key with the real `age-keygen`; returns (key file, recipient).
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("host.agekey");
    let out = Command::new("age-keygen").arg("-o").arg(&key).output().expect("age-keygen runs");
    assert!(out.status.success(), "age-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&key).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_owned();
    (key, recipient)
}

/// Encrypt `plain` YAML with the real `sops` to `recipient`, with extra sops flags.
pub fn sops_encrypt(plain: &str, recipient: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.yaml");
    std::fs::write(&src, plain).unwrap();
    let out = Command::new("sops")
        .args(["--encrypt", "--age", recipient])
        .args(extra)
        .arg(&src)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .expect("sops runs");
    assert!(out.status.success(), "sops failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
