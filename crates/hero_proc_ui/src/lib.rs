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
use std::os::unix::fs::PermissionsExt;
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
            let l = hero_proc_net::bind_tcp(a).await.map_err(|source| UiError::Listen { what: a.clone(), source })?;
            if let Ok(local) = l.local_addr() {
                tracing::info!(addr = %local, "admin UI serving over TCP");
                println!("hero_proc ui: http://{local}/");
            }
            Some(l)
        }
        None => None,
    };
    // Both listeners stop when `shutdown` resolves; each has its own connection cap (a
    // share of the fd limit) and timeouts. Page loads are quick; a "sync now" waits on the
    // daemon, hence the long request timeout.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = |name| {
        let mut l = hero_proc_net::Limits::public(name, hero_proc_net::fd_budget(64, 8));
        l.request_timeout = Some(std::time::Duration::from_secs(120));
        l
    };
    let on_unix = hero_proc_net::serve(
        unix,
        limits("ui socket"),
        |_peer| service(shared.clone(), false),
        until_stopped(stopped.clone()),
    );
    let on_tcp = async {
        if let Some(l) = tcp {
            hero_proc_net::serve(l, limits("ui tcp"), |_peer| service(shared.clone(), true), until_stopped(stopped))
                .await;
        }
    };
    let _ = tokio::join!(on_unix, on_tcp, async {
        shutdown.await;
        let _ = stop.send(true);
    });
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, UiError> {
    let err = |source| UiError::Listen { what: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

fn service(
    shared: Arc<Shared>,
    over_tcp: bool,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, &shared, over_tcp).await) }
    })
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
