//! Restart backoff: exponential from `delay` to `max_delay`, reset after a run that
//! lasted long enough to count as healthy. Pure, so it is tested without a clock.

use std::time::Duration;

use hero_proc_spec::{Restart, RestartMode};

/// A run at least this long resets the backoff: the process was not crash-looping.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// This many quick failures in a row is a crash loop, shown as such in status.
pub const CRASH_LOOP_AFTER: u32 = 3;

/// What to do after a supervised process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay; `crash_loop` when it keeps failing fast.
    Restart { after: Duration, crash_loop: bool },
    /// Leave it stopped: the policy says so, or retries are used up.
    GiveUp { retries_exhausted: bool },
}

/// Decide on a restart. `failures` counts consecutive quick failures before this exit
/// (0 for the first); `success` is a zero exit; `ran_for` is how long it ran.
pub fn decide(policy: &Restart, success: bool, ran_for: Duration, failures: u32) -> (Decision, u32) {
    let wants = match policy.policy {
        RestartMode::Always => true,
        RestartMode::OnFailure => !success,
        RestartMode::Never => false,
    };
    if !wants {
        return (Decision::GiveUp { retries_exhausted: false }, 0);
    }
    // A long run wipes the slate: only consecutive fast exits count.
    let failures = if ran_for >= STABLE_AFTER { 0 } else { failures };
    if policy.max_retries != 0 && failures >= policy.max_retries {
        return (Decision::GiveUp { retries_exhausted: true }, failures);
    }
    let base = policy.delay.0;
    let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
    let after = base.saturating_mul(factor).min(policy.max_delay.0);
    (Decision::Restart { after, crash_loop: failures + 1 >= CRASH_LOOP_AFTER }, failures + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_proc_spec::Dur;

    fn policy(mode: RestartMode, max_retries: u32) -> Restart {
        Restart { policy: mode, delay: Dur::secs(1), max_delay: Dur::secs(60), max_retries }
    }

    #[test]
    fn exponential_and_capped() {
        let p = policy(RestartMode::Always, 0);
        let mut failures = 0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let (d, f) = decide(&p, false, Duration::from_millis(10), failures);
            failures = f;
            match d {
                Decision::Restart { after, .. } => delays.push(after.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn crash_loop_is_flagged_after_repeated_fast_failures() {
        let p = policy(RestartMode::OnFailure, 0);
        let (d1, f) = decide(&p, false, Duration::ZERO, 0);
        let (d2, f) = decide(&p, false, Duration::ZERO, f);
        let (d3, _) = decide(&p, false, Duration::ZERO, f);
        let flags: Vec<bool> =
            [d1, d2, d3].iter().map(|d| matches!(d, Decision::Restart { crash_loop: true, .. })).collect();
        assert_eq!(flags, [false, false, true]);
    }

    #[test]
    fn stable_run_resets_backoff() {
        let p = policy(RestartMode::Always, 0);
        let (d, f) = decide(&p, false, Duration::from_secs(3600), 7);
        assert_eq!(d, Decision::Restart { after: Duration::from_secs(1), crash_loop: false });
        assert_eq!(f, 1);
    }

    #[test]
    fn policies() {
        let ok = |mode| decide(&policy(mode, 0), true, Duration::ZERO, 0).0;
        assert!(matches!(ok(RestartMode::Always), Decision::Restart { .. }));
        assert_eq!(ok(RestartMode::OnFailure), Decision::GiveUp { retries_exhausted: false });
        assert_eq!(
            decide(&policy(RestartMode::Never, 0), false, Duration::ZERO, 0).0,
            Decision::GiveUp { retries_exhausted: false }
        );
    }

    #[test]
    fn max_retries_gives_up() {
        let p = policy(RestartMode::OnFailure, 2);
        let (_, f) = decide(&p, false, Duration::ZERO, 0);
        let (d, f) = decide(&p, false, Duration::ZERO, f);
        assert!(matches!(d, Decision::Restart { .. }));
        assert_eq!(decide(&p, false, Duration::ZERO, f).0, Decision::GiveUp { retries_exhausted: true });
    }
}
