//! Loading committed trees through a `ParseCache`: only files whose blob changed are
//! parsed, and the result (objects and every diagnostic) is exactly a full load's.

use std::process::Command;

use crate::support::*;
use hero_proc_spec::load::{ParseCache, load_tree_cached};
use hero_proc_spec::{Checked, GitSource, load_tree};

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn commit(t: &Tree, msg: &str) -> String {
    git(t.path(), &["add", "-A"]);
    git(t.path(), &["commit", "-qm", msg]);
    git(t.path(), &["rev-parse", "HEAD"])
}

/// One file of `n` actions (`f<file>a<k>`) and a service running them, each action
/// depending on the previous one; `extra` goes at the end of the first action.
fn file(f: usize, n: usize, extra: &str) -> String {
    let mut y = String::from("actions:\n");
    for k in 0..n {
        y.push_str(&format!("  - name: f{f}a{k}\n    script: echo {k}\n"));
        if k > 0 {
            y.push_str(&format!("    depends_on: [f{f}a{}]\n", k - 1));
        }
        if k == 0 {
            y.push_str(extra);
        }
    }
    let list: Vec<String> = (0..n).map(|k| format!("f{f}a{k}")).collect();
    y.push_str(&format!("services:\n  - name: s{f}\n    actions: [{}]\n", list.join(", ")));
    y
}

/// Same objects and same diagnostics, in the same order.
fn assert_same(cached: &Checked, full: &Checked, what: &str) {
    assert_eq!(render(cached), render(full), "{what}: diagnostics differ");
    assert_eq!(cached.diagnostics, full.diagnostics, "{what}");
    assert_eq!(cached.tree.base, full.tree.base, "{what}: base objects differ");
    assert_eq!(cached.tree.hosts, full.tree.hosts, "{what}: host overlays differ");
    assert_eq!(cached.tree.settings, full.tree.settings, "{what}");
}

#[test]
fn a_commit_parses_only_the_files_it_changed_and_loads_the_same() {
    let t = Tree::new();
    t.file("hero.yaml", "required_services: []\n");
    for f in 0..20 {
        t.file(&format!("actions/f{f:02}.yaml"), &file(f, 5, ""));
    }
    t.file("hosts/edge/actions/over.yaml", &file(3, 5, "    env: { SITE: edge }\n"));
    // A problem inside one file (unknown field) and one across files (an unknown reference).
    t.file("actions/f05.yaml", &file(5, 5, "    scirpt: typo\n"));
    t.file("actions/f06.yaml", &file(6, 5, "    depends_on: [f7a9]\n"));
    git(t.path(), &["init", "-q", "-b", "main"]);
    let c1 = commit(&t, "one");
    // The second commit changes 1 file of 21, and that change fixes the reference made
    // from another, unchanged file: the cross-file checks must see it.
    t.file("actions/f07.yaml", &file(7, 10, ""));
    let c2 = commit(&t, "two");
    // The third removes a file and brings the reference problem back.
    t.remove("actions/f07.yaml");
    let c3 = commit(&t, "three");

    let repo = git2::Repository::open(t.path()).unwrap();
    let mut cache = ParseCache::new();
    let mut parsed = 0;
    for (rev, want_parsed, errors) in [(&c1, 22, 2), (&c2, 1, 1), (&c1, 0, 2), (&c3, 0, 2)] {
        let source = GitSource::at_rev(&repo, rev).unwrap();
        let cached = load_tree_cached(&source, &mut cache);
        let full = load_tree(&source);
        assert_same(&cached, &full, rev);
        assert_eq!(cached.errors(), errors, "{}", render(&cached));
        let now = cache.stats().parsed;
        assert_eq!(now - parsed, want_parsed, "files parsed for {rev}");
        parsed = now;
    }
    // Objects of unchanged files are the very same allocations in both revisions.
    let one = load_tree_cached(&GitSource::at_rev(&repo, &c1).unwrap(), &mut cache).tree;
    let two = load_tree_cached(&GitSource::at_rev(&repo, &c2).unwrap(), &mut cache).tree;
    let find = |t: &hero_proc_spec::ConfigTree, n: &str| t.base.actions.iter().find(|a| a.name == n).unwrap().clone();
    assert!(std::sync::Arc::ptr_eq(&find(&one, "f0a0"), &find(&two, "f0a0")));
    assert!(!std::sync::Arc::ptr_eq(&find(&one, "f7a0"), &find(&two, "f7a0")));
}

#[test]
fn files_unused_by_recent_loads_are_dropped() {
    let t = Tree::new();
    git(t.path(), &["init", "-q", "-b", "main"]);
    let mut revs = Vec::new();
    for i in 0..6 {
        t.file("actions/a.yaml", &file(0, 2, &format!("    env: {{ N: \"{i}\" }}\n")));
        t.file("actions/b.yaml", &file(1, 2, ""));
        revs.push(commit(&t, &format!("c{i}")));
    }
    let repo = git2::Repository::open(t.path()).unwrap();
    let mut cache = ParseCache::new();
    for rev in &revs {
        clean(&load_tree_cached(&GitSource::at_rev(&repo, rev).unwrap(), &mut cache));
    }
    // hero_db.yaml and b.yaml once each, and a.yaml of the last KEEP_LOADS loads.
    assert_eq!(cache.len(), 2 + ParseCache::KEEP_LOADS as usize);
}
