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
pub mod supervisor;

pub use supervisor::{
    CheckResult, ConfigChange, Engine, EngineConfig, EngineError, NoSecrets, Reason, SecretSource, ServiceSnapshot,
    ServiceState,
};
