//! The process engine: how hero_proc starts, watches, stops and re-attaches processes,
//! and how it decides a service is healthy.
//!
//! This crate knows nothing of SQLite, git or RPC: it turns an action into a running
//! process group and tells its caller when it ends. The supervisor (which records jobs
//! and applies restart policies) is built on it.

pub mod backoff;
mod clone_into;
pub mod contain;
pub mod health;
pub mod hero_db;
pub mod output_cap;
pub mod paths;
pub mod process;
pub mod resources;
pub mod supervisor;

pub use supervisor::{
    CheckResult, ConfigChange, Engine, EngineConfig, EngineError, NoSecrets, Reason, SecretSource, ServiceSnapshot,
    ServiceState, now_ms,
};

/// An action with every optional field empty, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn test_action(
    name: &str,
    interpreter: hero_proc_spec::Interpreter,
    script: &str,
) -> hero_proc_spec::Action {
    hero_proc_spec::Action {
        name: name.into(),
        context: "core".into(),
        description: None,
        interpreter,
        script: script.into(),
        env: Default::default(),
        cwd: None,
        process: false,
        restart: Default::default(),
        stop: Default::default(),
        timeout: None,
        health: vec![],
        metrics: None,
        depends_on: vec![],
        schedule: None,
        tags: vec![],
        user: None,
        group: None,
        pos: Default::default(),
    }
}
