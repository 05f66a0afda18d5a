//! The daemon's real RPC router over a temporary root: the store, log store, vault,
//! engine and reconciler that `hero_proc serve` starts (`hero_proc_daemon::start`), and
//! the request path the socket serves for a POST (`hero_proc_daemon::rpc::Router`). No
//! socket client, no mock. Shared, through `#[path]`, by the `rpc_request` fuzz target
//! and the corpus replay test `crates/hero_proc_daemon/tests/rpc_corpus.rs`.
//!
//! An input is one or more requests, one per line, sent in order on the same daemon
//! (state also carries over from one input to the next, as on a real socket).
//!
//! Side effects: inputs may set actions and services and start them (`run.submit`,
//! `service.start`, `status: start`). They run as this process's children (containment
//! is forced to the subreaper, so nothing lands in a cgroup), inside the temporary root
//! unless a script or `cwd` says otherwise. [`Harness::reap`] kills every descendant;
//! it runs every [`REAP_EVERY`] inputs, at exit and when the harness is dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hero_proc_daemon::compactor::{Compactor, RetentionFlags};
use hero_proc_daemon::{Daemon, Paths, ServeOptions, rpc};

/// At most this many requests of one input are sent (the rest is ignored).
pub const MAX_REQUESTS: usize = 8;
/// Kill the processes inputs started every this many inputs: they cannot pile up.
pub const REAP_EVERY: u64 = 256;
/// The product's "anything else" error: an error no request should be able to cause.
const INTERNAL: i64 = 1099;

pub struct Harness {
    rt: tokio::runtime::Runtime,
    router: rpc::Router,
    daemon: Option<Daemon>,
    root: PathBuf,
    fed: std::sync::atomic::AtomicU64,
}

impl Harness {
    /// A daemon over a fresh root under the temporary folder (as `serve` starts one:
    /// environment scrubbed, no repository, no hero_db check, stop on exit).
    ///
    /// # Safety
    /// Mutates the process environment (as `hero_proc serve` does before its runtime
    /// starts): no other thread may be reading it.
    pub unsafe fn boot() -> Harness {
        let root = std::env::temp_dir().join(format!("hero_proc_fuzz.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the fuzz root");
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe {
            std::env::set_var(hero_proc_engine::contain::FORCE_ENV, "subreaper");
            hero_proc_engine::process::scrub_daemon_env(&root);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let opts = ServeOptions {
            paths: Paths::under(&root),
            stop_on_exit: true,
            skip_hero_db_check: true,
            retention: RetentionFlags::default(),
            metrics_addr: None,
            metrics_token_file: None,
            reconcile: None,
            host: Some("fuzz".into()),
            age_keys: hero_proc_sops::KeyEnv::default(),
        };
        let daemon = rt.block_on(async { hero_proc_daemon::start(opts) }).expect("the daemon starts");
        // The context `serve` builds for its socket.
        let ctx = Arc::new(hero_proc_daemon::context::Ctx::new(
            daemon.engine.clone(),
            daemon.paths.clone(),
            Compactor::new(daemon.engine.clone(), daemon.retention.clone()),
            daemon.vault.clone(),
            daemon.reconciler.clone(),
        ));
        let router = rt.block_on(async { rpc::Router::new(ctx) });
        Harness { rt, router, daemon: Some(daemon), root, fed: 0.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Send each request of `input` (one per line) through the router and check each
    /// answer; `Err` says what is wrong with which one.
    pub fn feed(&self, input: &[u8]) -> Result<(), String> {
        let n = self.fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(REAP_EVERY) {
            reap_descendants();
        }
        for request in
            input.split(|b| *b == b'\n').filter(|r| !r.iter().all(u8::is_ascii_whitespace)).take(MAX_REQUESTS)
        {
            let (status, body) = self.post(request)?;
            check_answer(request, status, &body).map_err(|e| {
                format!(
                    "request {} answered {status} {}: {e}",
                    String::from_utf8_lossy(request),
                    String::from_utf8_lossy(&body)
                )
            })?;
        }
        Ok(())
    }

    /// One request body through the router: the HTTP status and the body.
    pub fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.rt
            .block_on(self.router.post(body.to_vec()))
            .map_err(|e| format!("the service failed on {}: {e}", String::from_utf8_lossy(body)))
    }

    /// Kill every process the inputs started (and their descendants).
    pub fn reap(&self) {
        reap_descendants();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        reap_descendants();
        if let Some(d) = self.daemon.take() {
            let engine = d.engine.clone();
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), engine.shutdown()).await });
            drop(d);
        }
        reap_descendants();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What every answer of the socket's POST path must be: HTTP 200 (400 for a body that is
/// not even an object or an array) and JSON-RPC 2.0
/// response objects (one, or an array for a batch), each with an id and exactly one of
/// `result` and `error`; an error has an integer code and a message, and is never the
/// product's internal error (a handler that panicked in a blocking task, a run that
/// vanished, ...). Only notifications are acknowledged with nothing (`null`); jsonrpsee
/// 0.26 takes a call it cannot decode for one (`"id": -1`, `"id": 1.5` or a key given
/// twice gets no answer, and the method does not run).
pub fn check_answer(request: &[u8], status: u16, body: &[u8]) -> Result<(), String> {
    if status == 400 {
        // jsonrpsee's answer to a body that is neither an object nor an array.
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        return if v["error"]["code"] == -32700 { check_response(&v) } else { Err("400 without a parse error".into()) };
    }
    if status != 200 {
        return Err(format!("HTTP status {status}, not 200 (or 400 for a parse error)"));
    }
    if body.is_empty() || body == b"null" {
        return if is_notification(request) { Ok(()) } else { Err("no answer to a call".into()) };
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match &v {
        serde_json::Value::Array(items) if !items.is_empty() => items.iter().try_for_each(check_response),
        serde_json::Value::Object(_) => check_response(&v),
        _ => Err("the answer is neither a response object nor a non-empty batch".into()),
    }
}

/// Not a call jsonrpsee answers: what does not decode as its `Request` (no id, an id that
/// is not a string, an unsigned integer or null, a duplicate key, ...) and does decode as
/// a notification is acknowledged with `null` and not run; a batch of only those.
fn is_notification(request: &[u8]) -> bool {
    use jsonrpsee::types::{Notification, Request};
    use serde_json::value::RawValue;
    // Decoded as jsonrpsee's server does: the first byte tells a batch, entries are text.
    let notif = |raw: &[u8]| {
        serde_json::from_slice::<Request>(raw).is_err()
            && serde_json::from_slice::<Notification<Option<&RawValue>>>(raw).is_ok()
    };
    match request.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(request)
            .is_ok_and(|items| !items.is_empty() && items.iter().all(|i| notif(i.get().as_bytes()))),
        _ => notif(request),
    }
}

fn check_response(v: &serde_json::Value) -> Result<(), String> {
    let o = v.as_object().ok_or("a response is not an object")?;
    if o.get("jsonrpc").and_then(|j| j.as_str()) != Some("2.0") {
        return Err("a response lacks \"jsonrpc\": \"2.0\"".into());
    }
    if !o.contains_key("id") {
        return Err("a response has no id".into());
    }
    match (o.get("result"), o.get("error")) {
        (Some(_), None) => Ok(()),
        (None, Some(e)) => {
            let code = e.get("code").and_then(|c| c.as_i64()).ok_or("an error without an integer code")?;
            e.get("message").and_then(|m| m.as_str()).ok_or("an error without a message")?;
            if code == INTERNAL {
                return Err("an internal error".into());
            }
            Ok(())
        }
        _ => Err("a response needs exactly one of result and error".into()),
    }
}

/// SIGKILL every descendant of this process, deepest first, until none is left (a
/// process that forks while we look is found on the next pass).
pub fn reap_descendants() {
    let me = std::process::id();
    for _ in 0..20 {
        let found = descendants(me);
        if found.is_empty() {
            return;
        }
        for pid in found.iter().rev() {
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        // The engine's watchers wait for its own children; this process is the subreaper
        // of the rest, collected as the engine does.
        hero_proc_engine::contain::reap_orphans();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Live descendants of `root`, parents before children (zombies excluded).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let Some(ppid) = f.next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        parent.push((pid, ppid, state == "Z"));
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid, zombie) in &parent {
            if ppid == p && !out.contains(&pid) {
                if !zombie {
                    out.push(pid);
                }
                frontier.push(pid);
            }
        }
    }
    out
}
