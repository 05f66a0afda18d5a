//! One rule for a tool or capability a test needs: missing means FAIL, with what to
//! install, unless `HERO_TEST_ALLOW_SKIP=1` (a local run only; CI never sets it).

/// True when skipping is allowed; the caller then returns early.
pub fn skip_allowed() -> bool {
    std::env::var_os("HERO_TEST_ALLOW_SKIP").is_some_and(|v| v == "1")
}

/// Called when `what` is missing: panics with `fix`, or prints SKIP and returns when
/// `HERO_TEST_ALLOW_SKIP=1`. Use as `if !have { missing(..); return; }`.
#[track_caller]
pub fn missing(what: &str, fix: &str) {
    if skip_allowed() {
        eprintln!("SKIP (HERO_TEST_ALLOW_SKIP=1): {what} is missing; {fix}");
        return;
    }
    panic!("{what} is missing: {fix}; or set HERO_TEST_ALLOW_SKIP=1 to skip on a local machine (CI never does)");
}

/// True when `cmd --version` runs and succeeds.
pub fn runs(cmd: &str) -> bool {
    std::process::Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}
