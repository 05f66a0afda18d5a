//! Ensuring the canonical store service `hero_db` runs (SPEC 5.3).
//!
//! Nearly every hero service depends on hero_db, so a daemon that boots without it must
//! say so loudly instead of letting dependents fail one by one later. The decision is a
//! pure function; the supervisor carries it out.

use crate::supervisor::ServiceState;
use hero_proc_spec::ServiceStatus;

/// The service this module is about: `core/hero_db`.
pub const CONTEXT: &str = "core";
pub const NAME: &str = "hero_db";
/// Where its messages go in the log store.
pub const SOURCE: &str = "hero_proc.auto_start_db";

pub const MISSING_HINT: &str = "hero_db (context core) is not registered, and nearly every hero service depends on it. \
Fix: define service `hero_db` in your config repository (actions/hero_db.yaml, see hero-config-example/) and commit it, \
or register it by hand with `hero_proc service set hero_db.yaml`. Set HERO_PROC_NO_AUTOSTART_DB=1 to skip this check.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `HERO_PROC_NO_AUTOSTART_DB=1`.
    Skip,
    /// Running (or a one-shot that finished): nothing to do.
    AlreadyActive,
    /// On its way up (starting, waiting, in backoff): nothing to do either.
    InProgress,
    /// Registered with `status: start` but idle: start it.
    Start,
    /// Registered with another status: warn, and keep the operator's intent.
    KeepStatus(ServiceStatus),
    /// Not registered: a prominent error; the daemon keeps serving.
    Missing,
}

/// What to do about hero_db, given whether it is registered (its wanted status and
/// runtime state) and whether the check is disabled.
pub fn decide(registered: Option<(ServiceStatus, ServiceState)>, skip: bool) -> Decision {
    if skip {
        return Decision::Skip;
    }
    match registered {
        None => Decision::Missing,
        Some((ServiceStatus::Start, state)) if state.is_active() => Decision::AlreadyActive,
        Some((
            ServiceStatus::Start,
            ServiceState::Starting | ServiceState::Waiting | ServiceState::Backoff | ServiceState::Stopping,
        )) => Decision::InProgress,
        Some((ServiceStatus::Start, _)) => Decision::Start,
        Some((other, _)) => Decision::KeepStatus(other),
    }
}

/// `HERO_PROC_NO_AUTOSTART_DB` set to `1` (or `true`/`yes`) skips the check.
pub fn skip_from_env(value: Option<&str>) -> bool {
    matches!(value.map(str::trim), Some("1" | "true" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_branch() {
        use ServiceState as S;
        use ServiceStatus as W;
        assert_eq!(decide(Some((W::Start, S::Running)), true), Decision::Skip);
        assert_eq!(decide(None, true), Decision::Skip);
        assert_eq!(decide(None, false), Decision::Missing);
        assert_eq!(decide(Some((W::Start, S::Running)), false), Decision::AlreadyActive);
        assert_eq!(decide(Some((W::Start, S::Exited)), false), Decision::AlreadyActive);
        for s in [S::Starting, S::Waiting, S::Backoff, S::Stopping] {
            assert_eq!(decide(Some((W::Start, s)), false), Decision::InProgress, "{s:?}");
        }
        for s in [S::Inactive, S::Failed] {
            assert_eq!(decide(Some((W::Start, s)), false), Decision::Start, "{s:?}");
        }
        assert_eq!(decide(Some((W::Stop, S::Inactive)), false), Decision::KeepStatus(W::Stop));
        assert_eq!(decide(Some((W::Ignore, S::Running)), false), Decision::KeepStatus(W::Ignore));
    }

    #[test]
    fn env_switch() {
        assert!(skip_from_env(Some("1")));
        assert!(skip_from_env(Some("true")));
        assert!(!skip_from_env(Some("0")));
        assert!(!skip_from_env(Some("")));
        assert!(!skip_from_env(None));
    }
}
