//! End to end: the real `hero_proc validate` binary on real trees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hero_proc(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hero_proc")).args(args).current_dir(cwd).env("NO_COLOR", "1").output().unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn this_repository_is_a_valid_config_repo() {
    let out = hero_proc(&["validate", "--strict", "."], &repo_root());
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("0 errors, 0 warnings"));
}

#[test]
fn the_starter_repo_validates_strictly() {
    let out = hero_proc(&["validate", "--strict", "hero-config-example"], &repo_root());
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("1 secrets files") && s.contains("2 migrations") && s.contains("1 host overlays"), "{s}");
}

#[test]
fn errors_print_compiler_style_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "actions/web.yaml", "actions:\n  - name: web\n    scirpt: x\n    script: x\n");
    let out = hero_proc(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "actions/web.yaml:3:5: error: unknown field `scirpt` in an action\n  hint: did you mean `script`?"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("actions:1:1: error: required service `hero_db` is not defined"), "{stdout}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: .: 2 errors found"), "{stderr}");
}

#[test]
fn json_output_is_structured() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "actions/web.yaml", "actions:\n  - name: web\n    script: x\n    schedule: nope\n");
    write(dir.path(), "hero.yaml", "required_services: []\n");
    let out = hero_proc(&["validate", "--format", "json", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "cron.invalid");
    assert_eq!(d["file"], "actions/web.yaml");
    assert_eq!((d["line"].as_u64(), d["col"].as_u64()), (Some(4), Some(15)));
    assert_eq!(d["severity"], "error");
    assert!(d["hint"].as_str().unwrap().contains("5 fields"));
}

#[test]
fn strict_fails_on_warnings_and_quiet_hides_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "hero.yaml", "required_services: []\n");
    write(dir.path(), "actions/web.yaml", "actions:\n  - name: web\n    script: make && make install\n");
    let out = hero_proc(&["validate", "."], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("warning: `&&` is passed to the program"));
    let out = hero_proc(&["validate", "--strict", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--strict"));
    let out = hero_proc(&["validate", "-q", "."], dir.path());
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn rev_checks_the_committed_tree() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    write(dir.path(), "hero.yaml", "required_services: []\n");
    write(dir.path(), "actions/web.yaml", "actions:\n  - name: web\n    script: x\n");
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "good"]);
    write(dir.path(), "actions/web.yaml", "broken: [\n");
    assert_eq!(hero_proc(&["validate", "."], dir.path()).status.code(), Some(1));
    let out = hero_proc(&["validate", "--rev", "main", "."], dir.path());
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("main@"));
    let out = hero_proc(&["validate", "--rev", "nope", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: cannot read revision `nope`"), "{}", text(&out.stderr));
}

#[test]
fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = hero_proc(&["validate", "does-not-exist"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(e.starts_with("error: does-not-exist: not a directory"), "{e}");
}
