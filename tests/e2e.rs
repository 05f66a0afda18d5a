//! The end-to-end tests: each module is one area, run against the real `hero_proc`
//! binary in its own temporary `HERO_ROOTDIR` (see `support`), so they run in parallel.
//! Run one area with `cargo test -p hero_proc --test e2e reliability::`.

mod support;

#[path = "artifacts_e2e.rs"]
mod artifacts_e2e;
#[path = "crash_consistency.rs"]
mod crash_consistency;
#[path = "daemon_e2e.rs"]
mod daemon_e2e;
#[path = "export_e2e.rs"]
mod export_e2e;
#[path = "hardening_input.rs"]
mod hardening_input;
#[path = "hardening_logs.rs"]
mod hardening_logs;
#[path = "hardening_net.rs"]
mod hardening_net;
#[path = "hardening_paths.rs"]
mod hardening_paths;
#[path = "hardening_procs.rs"]
mod hardening_procs;
#[path = "hero_db_and_compaction.rs"]
mod hero_db_and_compaction;
#[path = "metrics_e2e.rs"]
mod metrics_e2e;
#[path = "migrations_e2e.rs"]
mod migrations_e2e;
#[path = "monitoring.rs"]
mod monitoring;
#[path = "pr_review.rs"]
mod pr_review;
#[path = "reconcile_e2e.rs"]
mod reconcile_e2e;
#[path = "reconcile_remote.rs"]
mod reconcile_remote;
#[path = "reconcile_secrets.rs"]
mod reconcile_secrets;
#[path = "reliability.rs"]
mod reliability;
#[path = "secrets_e2e.rs"]
mod secrets_e2e;
#[path = "settings_e2e.rs"]
mod settings_e2e;
#[path = "ui_e2e.rs"]
mod ui_e2e;
#[path = "ui_security.rs"]
mod ui_security;
#[path = "validate_cli.rs"]
mod validate_cli;
