//! Checks that need the real `sops` and `age` CLIs (secrets files are read without a
//! key), and loading a committed tree from git.

use std::process::Command;

use crate::support::*;
use hero_proc_spec::{GitSource, load_tree};

const ACTION_WITH_SECRET: &str =
    "actions:\n  - name: web\n    script: x\n    process: true\n    env:\n      TOKEN: { secret: forgejo_token }\n";

fn encrypted(plain: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_, recipient) = age_key(dir.path());
    sops_encrypt(plain, &recipient, extra)
}

#[test]
fn secret_references_resolve_against_sops_key_names() {
    let t = Tree::new();
    t.file("actions/web.yaml", ACTION_WITH_SECRET);
    t.file("secrets/core.sops.yaml", &encrypted("forgejo_token: s3cr3t-marker\ndb_password: other\n", &[]));
    let c = t.check();
    clean(&c);
    let keys: Vec<_> = c.tree.secrets["core"].keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(keys, ["forgejo_token", "db_password"]);
    assert_eq!(c.tree.secrets["core"].age_recipients.len(), 1);
}

#[test]
fn unknown_secret_key_is_located_and_suggested() {
    let t = Tree::new();
    t.file("actions/web.yaml", &ACTION_WITH_SECRET.replace("forgejo_token", "forgejo_tokn"));
    t.file("secrets/core.sops.yaml", &encrypted("forgejo_token: s3cr3t-marker\n", &[]));
    let c = t.check();
    let msg = expect(&c, "ref.secret", "actions/web.yaml:6:24");
    assert!(msg.contains("did you mean `forgejo_token`?"), "{msg}");
    assert!(!render(&c).contains("s3cr3t-marker"));
}

#[test]
fn missing_secrets_file_for_the_context() {
    let t = Tree::new();
    t.file("actions/web.yaml", ACTION_WITH_SECRET);
    let msg = expect(&t.check(), "ref.secret", "actions/web.yaml:6:24");
    assert!(msg.contains("secrets/core.sops.yaml does not exist"), "{msg}");
}

#[test]
fn secrets_are_looked_up_in_the_action_context() {
    let t = Tree::new();
    t.file("actions/web.yaml", &ACTION_WITH_SECRET.replace("  - name: web\n", "  - name: web\n    context: shop\n"));
    t.file("secrets/core.sops.yaml", &encrypted("forgejo_token: a\n", &[]));
    expect(&t.check(), "ref.secret", "actions/web.yaml:7:24");
    t.file("secrets/shop.sops.yaml", &encrypted("forgejo_token: b\n", &[]));
    clean(&t.check());
}

#[test]
fn unencrypted_secrets_file_is_refused_without_echoing_values() {
    let t = Tree::new();
    t.file("secrets/core.sops.yaml", "forgejo_token: s3cr3t-marker\n");
    let c = t.check();
    let msg = expect(&c, "sops.not-encrypted", "secrets/core.sops.yaml:1:1");
    assert!(msg.contains("sops -e -i secrets/core.sops.yaml"), "{msg}");
    assert!(!render(&c).contains("s3cr3t-marker"));
}

#[test]
fn plaintext_value_added_to_an_encrypted_file_is_refused() {
    let t = Tree::new();
    let mut text = encrypted("forgejo_token: a\n", &[]);
    text = text.replacen("sops:", "leaked: s3cr3t-marker\nsops:", 1);
    t.file("secrets/core.sops.yaml", &text);
    let c = t.check();
    let d = c.diagnostics.iter().find(|d| d.code == "sops.plaintext-value").unwrap_or_else(|| panic!("{}", render(&c)));
    assert!(d.message.contains("`leaked`"));
    assert!(!render(&c).contains("s3cr3t-marker"));
}

#[test]
fn unencrypted_suffix_values_are_fine_and_other_plain_values_warn() {
    let t = Tree::new();
    t.file("secrets/core.sops.yaml", &encrypted("token: a\nhost_unencrypted: db.local\n", &[]));
    let c = t.check();
    clean(&c);
    absent(&c, "sops.plain-value");

    // With encrypted_regex, keys that do not match stay plain: the MAC does not cover key
    // names, so a plain value without the suffix convention is flagged.
    t.file("secrets/core.sops.yaml", &encrypted("password: a\nhost: db.local\n", &["--encrypted-regex", "^password$"]));
    let c = t.check();
    clean(&c);
    let w = warnings(&c);
    assert!(w.iter().any(|w| w.contains("value of `host` is stored in plaintext")), "{w:?}");
}

#[test]
fn malformed_or_damaged_sops_metadata() {
    let t = Tree::new();
    let good = encrypted("token: a\n", &[]);
    let no_mac: String =
        good.lines().filter(|l| !l.trim_start().starts_with("mac:")).map(|l| format!("{l}\n")).collect();
    t.file("secrets/core.sops.yaml", &no_mac);
    let c = t.check();
    assert!(
        c.diagnostics.iter().any(|d| d.code == "sops.metadata" && d.message.contains("no `mac`")),
        "{}",
        render(&c)
    );

    let broken = good.replacen("ENC[AES256_GCM,data:", "ENC[AES256_GCM,dta:", 1);
    t.file("secrets/core.sops.yaml", &broken);
    let c = t.check();
    assert!(c.diagnostics.iter().any(|d| d.code == "sops.malformed-value"), "{}", render(&c));
}

#[test]
fn file_for_no_age_recipient_is_refused() {
    let t = Tree::new();
    t.file(
        "secrets/core.sops.yaml",
        "token: ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]\nsops:\n  pgp: []\n  lastmodified: '2026-01-01T00:00:00Z'\n  mac: ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]\n  version: 3.11.0\n",
    );
    expect(&t.check(), "sops.no-age", "secrets/core.sops.yaml:3:3");
}

#[test]
fn multi_document_secrets_files_are_read() {
    let t = Tree::new();
    let a = encrypted("first: a\n", &[]);
    let b = encrypted("second: b\n", &[]);
    t.file("secrets/core.sops.yaml", &format!("{a}---\n{b}"));
    let c = t.check();
    clean(&c);
    let keys: Vec<_> = c.tree.secrets["core"].keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(keys, ["first", "second"]);
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn git_tree_is_read_at_the_revision_not_the_work_tree() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: v1\n");
    git(t.path(), &["init", "-q", "-b", "main"]);
    git(t.path(), &["add", "."]);
    git(t.path(), &["commit", "-qm", "v1"]);
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: v2\n");
    git(t.path(), &["commit", "-qam", "v2"]);
    // Uncommitted garbage in the work tree must not matter.
    t.file("actions/web.yaml", "actions: [broken\n");
    t.file("actions/new.yaml", "also: broken\n");

    let repo = git2::Repository::open(t.path()).unwrap();
    let head = load_tree(&GitSource::at_rev(&repo, "HEAD").unwrap());
    clean(&head);
    let web =
        |c: &hero_proc_spec::Checked| c.tree.base.actions.iter().find(|a| a.name == "web").unwrap().script.clone();
    assert_eq!(web(&head), "v2");
    let prev = load_tree(&GitSource::at_rev(&repo, "HEAD~1").unwrap());
    assert_eq!(web(&prev), "v1");
    // The work tree, by contrast, is broken.
    assert!(t.check().errors() > 0);
}

#[test]
fn git_tree_errors_use_tree_paths() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    scrpt: x\n");
    git(t.path(), &["init", "-q", "-b", "main"]);
    git(t.path(), &["add", "."]);
    git(t.path(), &["commit", "-qm", "bad"]);
    let repo = git2::Repository::open(t.path()).unwrap();
    let c = load_tree(&GitSource::at_rev(&repo, "main").unwrap());
    expect(&c, "schema.unknown-field", "actions/web.yaml:3:5");
    assert!(GitSource::at_rev(&repo, "no-such-branch").is_err());
}

/// At a revision, links and gitlinks in the layout are the same errors as on disk (on
/// `main` a git tree silently skipped them).
#[test]
fn git_tree_links_and_submodules_are_refused() {
    let t = Tree::new();
    t.file("elsewhere/hero.yaml", "required_services: []\n");
    t.file("elsewhere/actions/x.yaml", "actions:\n  - name: x\n    script: /bin/true\n");
    std::os::unix::fs::symlink("elsewhere/hero.yaml", t.path().join("hero.yaml")).unwrap();
    std::os::unix::fs::symlink("elsewhere", t.path().join("secrets")).unwrap();
    std::fs::create_dir_all(t.path().join("hosts/web1")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", t.path().join("hosts/web2")).unwrap();
    std::os::unix::fs::symlink("../../elsewhere/actions", t.path().join("hosts/web1/actions")).unwrap();
    git(t.path(), &["init", "-q", "-b", "main"]);
    git(t.path(), &["add", "."]);
    git(t.path(), &["commit", "-qm", "links"]);
    let head = git2::Repository::open(t.path()).unwrap().head().unwrap().target().unwrap().to_string();
    // Gitlinks (what `git submodule add` records), without needing a second repository.
    for at in ["actions/vendor", "hosts/web3", "secrets2"] {
        git(t.path(), &["update-index", "--add", "--cacheinfo", &format!("160000,{head},{at}")]);
    }
    git(t.path(), &["update-index", "--add", "--cacheinfo", &format!("160000,{head},migrations")]);
    git(t.path(), &["commit", "-qm", "submodules"]);

    let repo = git2::Repository::open(t.path()).unwrap();
    let c = load_tree(&GitSource::at_rev(&repo, "main").unwrap());
    for at in ["hero.yaml", "secrets", "hosts/web2", "hosts/web1/actions"] {
        expect(&c, "layout.symlink", &format!("{at}:1:1"));
    }
    for at in ["actions/vendor", "hosts/web3", "migrations"] {
        expect(&c, "layout.submodule", &format!("{at}:1:1"));
    }
    assert!(c.tree.base.actions.iter().all(|a| a.name != "x"));
    assert!(c.tree.hosts.values().all(|s| s.actions.is_empty()));
}
