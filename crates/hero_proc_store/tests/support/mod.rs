//! Shared helpers: every test works on its own database file in its own temp folder.
#![allow(dead_code)]

use std::path::PathBuf;

use hero_proc_spec::{Action, Service};
use hero_proc_store::{JobExit, JobId, NewJob, Phase, Ref, RunId, Store};
use serde_json::json;

pub struct Tmp {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// A fresh database path inside a nested, not yet existing folder.
pub fn tmp() -> Tmp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/hero_proc/hero_proc.db");
    Tmp { dir, path }
}

pub fn open() -> (Tmp, Store) {
    let t = tmp();
    let s = Store::open(&t.path).unwrap();
    (t, s)
}

/// A realistic action, as the loader would produce it.
pub fn action(context: &str, name: &str) -> Action {
    serde_json::from_value(json!({
        "name": name,
        "context": context,
        "description": "AI agent RPC server",
        "interpreter": "exec",
        "script": "~/hero/bin/hero_agent_server --socket ~/hero/var/sockets/hero_agent.sock",
        "env": {"HERO_AGENT_ROUTING_MODE": "smart", "FORGEJO_TOKEN": {"secret": "forgejo_token"}},
        "cwd": "~/hero",
        "process": true,
        "restart": {"policy": "on-failure", "delay": "1s", "max_delay": "1m", "max_retries": 0},
        "stop": {"signal": "SIGTERM", "timeout": "10s"},
        "health": [{"unix_socket": "~/hero/var/sockets/hero_agent.sock"}, {"hero_sockets": true}],
        "depends_on": ["build_agent"],
        "tags": ["ai"]
    }))
    .unwrap()
}

pub fn service(context: &str, name: &str, status: &str) -> Service {
    serde_json::from_value(json!({
        "name": name,
        "context": context,
        "description": "AI agent",
        "status": status,
        "actions": [name],
        "requires": ["hero_db"],
        "after": ["hero_embedder"]
    }))
    .unwrap()
}

pub fn new_job<'a>(action: &'a Action, run_id: Option<RunId>, created_at_ms: i64) -> NewJob<'a> {
    NewJob { run_id, action, service: Some(Ref::new(&action.context, &action.name)), attempt: 1, created_at_ms }
}

pub fn exit(phase: Phase, finished_at_ms: i64) -> JobExit {
    JobExit {
        phase,
        exit_code: (phase == Phase::Succeeded).then_some(0),
        signal: (phase == Phase::Cancelled).then_some(15),
        error: (phase == Phase::Failed).then(|| "exit status 1".to_owned()),
        finished_at_ms,
    }
}

/// Creates `n` jobs outside any run, finished at `t0`, `t0 + 1`, ... with `phase`.
pub fn finished_jobs(store: &Store, n: usize, t0: i64, phase: Phase) -> Vec<JobId> {
    let a = action("core", "job");
    store
        .transaction(|tx| {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n as i64 {
                let id = tx.create_job(&NewJob { service: None, ..new_job(&a, None, t0 + i) })?;
                tx.mark_job_running(id, 1000, Some(1), t0 + i)?;
                tx.finish_job(id, &exit(phase, t0 + i))?;
                ids.push(id);
            }
            Ok(ids)
        })
        .unwrap()
}

pub const DAY_MS: i64 = 86_400_000;
