//! `hero_proc ui`: the admin UI as a separate process.
//!
//! It serves three embedded files (no build step for users) and a small JSON API that
//! forwards to the daemon's public RPC over its Unix socket, so the UI can do nothing a
//! CLI user cannot, and costs nothing when it is not running. The API is an allowlist of
//! methods and, per method, of typed parameters (`api`): reads, plus
//! `reconcile.suspend|resume|apply` (sync now). Secret values cannot be set or read
//! through it (the daemon never returns them anyway).
//!
//! Listens on the UI socket (`$HERO_ROOTDIR/var/sockets/hero_proc_ui.sock`, 0600) and,
//! with `--addr`, on TCP, where every request passes `auth::Gate` (Host, token, Origin).

pub mod api;
pub mod auth;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("cannot listen on {what}: {source}")]
    Listen { what: String, source: std::io::Error },
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error(
        "--addr {addr} names no host a browser can use, so every request would be refused (421)\n  hint: add --allow-host NAME (the host name or IP browsers use to reach this machine), or bind one address, e.g. --addr 127.0.0.1:8470"
    )]
    NoHost { addr: String },
}

pub struct UiOptions {
    /// The daemon's RPC socket.
    pub daemon_socket: PathBuf,
    /// The UI's own socket.
    pub socket: PathBuf,
    /// Also serve on this TCP address (e.g. 127.0.0.1:8470).
    pub addr: Option<String>,
    /// Extra `Host` names the TCP listener answers to (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// Where the TCP login token is written (`$HERO_ROOTDIR/var/hero_proc/ui.token`).
    pub token_file: PathBuf,
}

struct Shared {
    daemon_socket: PathBuf,
    /// Set when serving over TCP.
    gate: Option<auth::Gate>,
}

/// Serve until `shutdown` resolves. Prints the login URL of the TCP address it bound
/// (port 0 picks one).
pub async fn serve(opts: UiOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<(), UiError> {
    let unix = bind_unix(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "admin UI serving");
    let mut gate = None;
    let mut _token_file = None;
    let tcp = match &opts.addr {
        Some(a) => {
            let l = hero_proc_net::bind_tcp(a).await.map_err(|source| UiError::Listen { what: a.clone(), source })?;
            let local = l.local_addr().map_err(|source| UiError::Listen { what: a.clone(), source })?;
            let token = auth::generate_token()?;
            let g = auth::Gate::new(token.clone(), local, &opts.allow_hosts);
            // The printed URL's host is one the gate accepts: the bound address, else the
            // first --allow-host (a wildcard bind names no host a browser can use).
            let Some(first) = g.hosts().first() else {
                return Err(UiError::NoHost { addr: local.to_string() });
            };
            let file = auth::TokenFile::write(&opts.token_file, &token)?;
            tracing::info!(addr = %local, hosts = ?g.hosts(), token_file = %file.path().display(), "admin UI serving over TCP");
            println!("hero_proc ui: http://{first}/?token={token}");
            gate = Some(g);
            _token_file = Some(file);
            Some(l)
        }
        None => None,
    };
    let shared = Arc::new(Shared { daemon_socket: opts.daemon_socket.clone(), gate });
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
    let l = hero_proc_rpc::listen::bind_owner_only(path).map_err(|e| err(std::io::Error::other(e)))?;
    l.set_nonblocking(true).map_err(err)?;
    tokio::net::UnixListener::from_std(l).map_err(err)
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
    response(status, ctype).body(Full::new(body.into())).unwrap_or_default()
}

fn response(status: u16, ctype: &str) -> http::response::Builder {
    hyper::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
}

fn json_reply(status: u16, v: &Value) -> hyper::Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

const LOGIN_PAGE: &str = "<!doctype html><meta charset=\"utf-8\"><title>hero_proc: log in</title>\
<p>Not logged in. Open the login URL printed by <code>hero_proc ui</code> \
(its token is also in <code>$HERO_ROOTDIR/var/hero_proc/ui.token</code>, readable by its owner only).</p>\n";

async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    shared: &Shared,
    over_tcp: bool,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let is_api = path.starts_with("/api/");
    if over_tcp {
        let Some(gate) = &shared.gate else {
            return reply(503, "text/plain", "the TCP listener has no login token\n");
        };
        let view =
            auth::RequestView { method: req.method().as_str(), path: &path, query: &query, headers: req.headers() };
        match gate.check(&view) {
            auth::Decision::Pass => {}
            // Redirect so the token leaves the address bar and history.
            auth::Decision::Login { set_cookie } => {
                return response(303, "text/plain")
                    .header("location", "/")
                    .header("set-cookie", set_cookie)
                    .body(Full::new(Bytes::from_static(b"logged in\n")))
                    .unwrap_or_default();
            }
            auth::Decision::Refuse(r) if r.status == 401 && !is_api => {
                return reply(401, "text/html; charset=utf-8", LOGIN_PAGE);
            }
            auth::Decision::Refuse(r) => return json_reply(r.status, &json!({ "error": r.message })),
        }
    }
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => reply(200, "text/html; charset=utf-8", INDEX),
        ("GET", "/app.js") => reply(200, "text/javascript; charset=utf-8", APP_JS),
        ("GET", "/style.css") => reply(200, "text/css; charset=utf-8", STYLE),
        ("GET", "/health") => reply(200, "text/plain", "ok\n"),
        (verb @ ("GET" | "POST"), p) if is_api => {
            let name = &p[5..];
            let write = verb == "POST";
            let Some(m) = api::method(name, write) else {
                let what = if write { "call" } else { "read" };
                return json_reply(404, &json!({ "error": format!("the UI does not {what} `{name}`") }));
            };
            // The request body is never read: writes take no parameters.
            match api::params(m, &query) {
                Ok(params) => call(shared, m.name, params).await,
                Err(e) => json_reply(400, &json!({ "error": e.to_string() })),
            }
        }
        _ => reply(404, "text/plain", format!("no route {path}\n")),
    }
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
