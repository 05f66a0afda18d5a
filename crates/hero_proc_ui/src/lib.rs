//! `hero_proc ui`: the admin UI as a separate process.
//!
//! It serves three embedded files (no build step for users) and a small JSON API that
//! forwards to the daemon's public RPC over its Unix socket, so the UI can do nothing a
//! CLI user cannot, and costs nothing when it is not running. The API is an allowlist:
//! reads, plus `reconcile.suspend|resume|apply` (sync now). Secret values cannot be set
//! or read through it (the daemon never returns them anyway).
//!
//! Listens on the UI socket (`$HERO_ROOTDIR/var/sockets/hero_proc_ui.sock`, 0600) and,
//! with `--addr`, on TCP. Writes over TCP need the `X-Hero-UI` header, which a
//! cross-site form cannot send.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// RPC methods the UI may read (GET /api/<method>).
const READS: &[&str] = &[
    "reconcile.status",
    "reconcile.history",
    "reconcile.plan",
    "service.list",
    "job.list",
    "job.logs",
    "run.list",
    "secret.list",
    "migrate.status",
    "system.info",
    "system.compactor_status",
];
/// RPC methods the UI may call to change something (POST /api/<method>).
const WRITES: &[&str] = &["reconcile.suspend", "reconcile.resume", "reconcile.apply"];

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("cannot listen on {what}: {source}")]
    Listen { what: String, source: std::io::Error },
}

pub struct UiOptions {
    /// The daemon's RPC socket.
    pub daemon_socket: PathBuf,
    /// The UI's own socket.
    pub socket: PathBuf,
    /// Also serve on this TCP address (e.g. 127.0.0.1:8470).
    pub addr: Option<String>,
}

struct Shared {
    daemon_socket: PathBuf,
}

/// Serve until `shutdown` resolves. Logs the TCP address it bound (port 0 picks one).
pub async fn serve(opts: UiOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<(), UiError> {
    let shared = Arc::new(Shared { daemon_socket: opts.daemon_socket.clone() });
    let unix = bind_unix(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "admin UI serving");
    let tcp = match &opts.addr {
        Some(a) => {
            let l =
                tokio::net::TcpListener::bind(a).await.map_err(|source| UiError::Listen { what: a.clone(), source })?;
            if let Ok(local) = l.local_addr() {
                tracing::info!(addr = %local, "admin UI serving over TCP");
                println!("hero_proc ui: http://{local}/");
            }
            Some(l)
        }
        None => None,
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = unix.accept() => if let Ok((s, _)) = r {
                spawn_conn(hyper_util::rt::TokioIo::new(s), shared.clone(), false);
            },
            r = async { match &tcp { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                if let Ok((s, _)) = r {
                    spawn_conn(hyper_util::rt::TokioIo::new(s), shared.clone(), true);
                }
            }
            () = &mut shutdown => break,
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, UiError> {
    let err = |source| UiError::Listen { what: path.display().to_string(), source };
    let l = hero_proc_rpc::listen::bind_owner_only(path).map_err(|e| err(std::io::Error::other(e)))?;
    l.set_nonblocking(true).map_err(err)?;
    tokio::net::UnixListener::from_std(l).map_err(err)
}

fn spawn_conn<I>(io: I, shared: Arc<Shared>, over_tcp: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(route(req, &shared, over_tcp).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
    });
}

fn reply(status: u16, ctype: &str, body: impl Into<Bytes>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn json_reply(status: u16, v: &Value) -> hyper::Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    shared: &Shared,
    over_tcp: bool,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => reply(200, "text/html; charset=utf-8", INDEX),
        ("GET", "/app.js") => reply(200, "text/javascript; charset=utf-8", APP_JS),
        ("GET", "/style.css") => reply(200, "text/css; charset=utf-8", STYLE),
        ("GET", "/health") => reply(200, "text/plain", "ok\n"),
        ("GET", p) if p.starts_with("/api/") => {
            let method = &p[5..];
            if !READS.contains(&method) {
                return json_reply(404, &json!({ "error": format!("the UI does not read `{method}`") }));
            }
            call(shared, method, params_from_query(&query)).await
        }
        ("POST", p) if p.starts_with("/api/") => {
            let method = &p[5..];
            if !WRITES.contains(&method) {
                return json_reply(404, &json!({ "error": format!("the UI does not call `{method}`") }));
            }
            if over_tcp && !req.headers().contains_key("x-hero-ui") {
                return json_reply(403, &json!({ "error": "missing X-Hero-UI header" }));
            }
            let _ = req.into_body().collect().await;
            call(shared, method, json!({})).await
        }
        _ => reply(404, "text/plain", format!("no route {path}\n")),
    }
}

/// `?limit=20&id=3` -> `{"limit": 20, "id": 3}` (numbers where they parse).
fn params_from_query(q: &str) -> Value {
    let mut m = serde_json::Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        let value = v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v));
        m.insert(k.to_owned(), value);
    }
    Value::Object(m)
}

async fn call(shared: &Shared, method: &str, params: Value) -> hyper::Response<Full<Bytes>> {
    let mut client = match hero_proc_rpc::Client::connect(&shared.daemon_socket).await {
        Ok(c) => c,
        Err(e) => return json_reply(502, &json!({ "error": e.to_string() })),
    };
    match client.call_value(method, params).await {
        Ok(v) => json_reply(200, &v),
        Err(e) => json_reply(200, &json!({ "error": e.to_string() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(params_from_query("limit=20&id=3&source=a+b"), json!({"limit": 20, "id": 3, "source": "a b"}));
        assert_eq!(params_from_query(""), json!({}));
    }

    #[test]
    fn the_api_never_exposes_secret_writes() {
        assert!(!READS.iter().chain(WRITES).any(|m| m.starts_with("secret.") && *m != "secret.list"));
        assert!(!WRITES.iter().any(|m| m.starts_with("service.") || m.starts_with("action.")));
    }
}
