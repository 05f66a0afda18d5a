//! The engine's runtime types as the RPC contract shows them.
//!
//! The engine has its own state and snapshot types (it does not depend on the RPC
//! contract); the wire types stay the JSON contract. This is the one place they meet.

use hero_proc_engine::{CheckResult, ServiceSnapshot, ServiceState};
use hero_proc_rpc::wire;

pub fn state(s: ServiceState) -> wire::ServiceState {
    match s {
        ServiceState::Inactive => wire::ServiceState::Inactive,
        ServiceState::Waiting => wire::ServiceState::Waiting,
        ServiceState::Starting => wire::ServiceState::Starting,
        ServiceState::Running => wire::ServiceState::Running,
        ServiceState::Backoff => wire::ServiceState::Backoff,
        ServiceState::Stopping => wire::ServiceState::Stopping,
        ServiceState::Exited => wire::ServiceState::Exited,
        ServiceState::Failed => wire::ServiceState::Failed,
    }
}

pub fn check(c: CheckResult) -> wire::CheckView {
    let (last_error_ms, last_error) = c.last_error.unzip();
    wire::CheckView {
        check: c.check,
        healthy: c.healthy,
        detail: c.detail,
        probed_ms: c.probed_ms,
        last_error,
        last_error_ms,
    }
}

pub fn service(s: ServiceSnapshot) -> wire::ServiceView {
    wire::ServiceView {
        context: s.context,
        name: s.name,
        status: s.status,
        state: state(s.state),
        pid: s.pid,
        job_id: s.job_id,
        restarts: s.restarts,
        crash_loop: s.crash_loop,
        backoff_until_ms: s.backoff_until_ms,
        since_ms: s.since_ms,
        last_exit: s.last_exit,
        reason: s.reason.map(|r| r.to_string()),
        health: s.health.into_iter().map(check).collect(),
        health_failures: s.health_failures,
        liveness_restarts: s.liveness_restarts,
        managed: s.managed,
    }
}

pub fn services(list: Vec<ServiceSnapshot>) -> Vec<wire::ServiceView> {
    list.into_iter().map(service).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_keeps_its_wire_name() {
        for s in ServiceState::ALL {
            assert_eq!(state(s).as_str(), s.as_str());
        }
    }
}
