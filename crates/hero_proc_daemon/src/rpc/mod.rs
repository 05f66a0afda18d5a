//! The RPC server: JSON-RPC 2.0 (jsonrpsee) over HTTP on the owner-only Unix socket,
//! plus `GET /health`, `GET /metrics`, `GET /metrics/services[/<context>/<name>]`,
//! `GET /openrpc.json` and `POST /rpc` (any POST is JSON-RPC).
//! One module of handlers per noun (`action`, `service`, `secret`, `job`, `run`, `log`,
//! `system`, `reconcile`, `migrate`), each registered by its method's type from
//! [`hero_proc_rpc::methods`]: the name and both types come from that one definition.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hero_proc_rpc::methods::{METHODS, Method, openrpc_document};
use jsonrpsee::server::{
    HttpBody, HttpRequest, HttpResponse, RpcModule, Server, ServerHandle, TowerService, TowerServiceBuilder,
    stop_channel,
};
use jsonrpsee::types::Params;
use tokio::net::UnixListener;

mod action;
mod artifact;
mod common;
mod job;
mod log;
mod migrate;
mod reconcile;
mod run;
mod secret;
mod service;
mod system;

use common::{FromParams, Res};

use crate::DaemonError;

pub use crate::context::Ctx;

/// Bind the socket owner-only (see [`hero_proc_rpc::listen`]: a live or foreign socket,
/// or a non-socket at the path, is refused; only a dead socket is replaced).
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    Ok(hero_proc_rpc::listen::bind_owner_only(path)?)
}

/// The bound socket for the async server.
pub fn into_tokio(path: &Path, l: Option<std::os::unix::net::UnixListener>) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket { path: path.display().to_string(), source };
    let l = l.ok_or_else(|| err(std::io::Error::other("the socket was already taken")))?;
    l.set_nonblocking(true).map_err(err)?;
    UnixListener::from_std(l).map_err(err)
}

pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>, shutdown: impl Future<Output = ()>) {
    let module = methods(ctx.clone());
    let (stop_handle, server_handle) = stop_channel();
    let builder = service_builder();
    // Owner-only socket: a larger cap, but a share of the fd limit so supervised processes'
    // pipes and the log files keep theirs; no request timeout (calls may wait on processes).
    let mut limits = hero_proc_net::Limits::public("rpc socket", hero_proc_net::fd_budget(256, 4));
    limits.request_timeout = None;
    limits.header_timeout = std::time::Duration::from_secs(60);
    limits.max_header_bytes = 64 * 1024;
    let make = |_peer| {
        let svc = Routes { rpc: builder.clone().build(module.clone(), stop_handle.clone()), ctx: ctx.clone() };
        hyper_util::service::TowerToHyperService::new(svc)
    };
    hero_proc_net::serve(listener, limits, make, shutdown).await;
    let _ = server_handle.stop();
}

/// The jsonrpsee service settings (body size, batches): the socket's and [`Router`]'s.
fn service_builder() -> TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity> {
    Server::builder().to_service_builder()
}

/// What the socket does with every request that is not a GET, without the socket: the
/// module of [`methods`] behind the same jsonrpsee service (content type, body limit,
/// parse errors, batches, notifications). The RPC fuzzer and its corpus replay test
/// (`fuzz/rpc_harness.rs`) feed it.
pub struct Router {
    svc: TowerService<tower::layer::util::Identity, tower::layer::util::Identity>,
    _server: ServerHandle,
}

impl Router {
    pub fn new(ctx: Arc<Ctx>) -> Router {
        let (stop_handle, server) = stop_channel();
        Router { svc: service_builder().build(methods(ctx), stop_handle), _server: server }
    }

    /// `POST /rpc` with `body` as `application/json`, as a client on the socket sends it:
    /// the HTTP status and the response body.
    pub async fn post(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
        use http_body_util::BodyExt;
        let req = http::Request::post("/rpc")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
        let resp = tower::Service::call(&mut self.svc.clone(), req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }
}

/// Plain HTTP routes in front of the JSON-RPC service.
#[derive(Clone)]
struct Routes<S> {
    rpc: S,
    ctx: Arc<Ctx>,
}

impl<S> tower::Service<HttpRequest<hyper::body::Incoming>> for Routes<S>
where
    S: tower::Service<
            HttpRequest<hyper::body::Incoming>,
            Response = HttpResponse,
            Error = Box<dyn std::error::Error + Send + Sync>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.rpc.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest<hyper::body::Incoming>) -> Self::Future {
        if req.method() == http::Method::GET {
            let ctx = self.ctx.clone();
            let path = req.uri().path().to_owned();
            let om = crate::metrics::wants_openmetrics(req.headers().get("accept").and_then(|v| v.to_str().ok()));
            return Box::pin(async move { Ok(get_route(&ctx, &path, om).await) });
        }
        Box::pin(self.rpc.call(req))
    }
}

async fn get_route(ctx: &Ctx, path: &str, openmetrics: bool) -> HttpResponse {
    if let Some((status, body)) = crate::metrics::services::route(ctx, path).await {
        let ctype = if status == 200 { crate::metrics::PROMETHEUS_CONTENT_TYPE } else { "text/plain" };
        return http::Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(HttpBody::from(body))
            .unwrap_or_else(|_| http::Response::new(HttpBody::from("internal error")));
    }
    let (status, ctype, body) = match path {
        // One stat per request: a daemon whose database was deleted or replaced is not
        // healthy (it refuses every write), and says why.
        "/health" => match ctx.engine.store.check_file() {
            Ok(()) => (200, "text/plain", "ok\n".to_owned()),
            Err(e) => (503, "text/plain", format!("{e}\n")),
        },
        "/metrics" if openmetrics => (200, crate::metrics::CONTENT_TYPE, crate::metrics::render(ctx, true).await),
        "/metrics" => (200, crate::metrics::PROMETHEUS_CONTENT_TYPE, crate::metrics::render(ctx, false).await),
        "/openrpc.json" => (200, "application/json", openrpc_document(env!("CARGO_PKG_VERSION")).to_string()),
        _ => (
            404,
            "text/plain",
            format!(
                "no route {path}; try POST /rpc, GET /health, GET /metrics, GET /metrics/services[/<context>/<name>], GET /openrpc.json\n"
            ),
        ),
    };
    http::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(HttpBody::from(body))
        .unwrap_or_else(|_| http::Response::new(HttpBody::from("internal error")))
}

// ---- registration --------------------------------------------------------------------

/// The module being built: handlers go in by their method's type.
pub(crate) struct Registry {
    module: RpcModule<Arc<Ctx>>,
}

impl Registry {
    /// `handler` answers `M` from its decoded params (see [`FromParams`]).
    fn add<M, F, Fut>(&mut self, handler: F)
    where
        M: Method,
        M::Params: FromParams,
        M::Result: Clone,
        F: Fn(M::Params, Arc<Ctx>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Res<M::Result>> + Send + 'static,
    {
        self.module
            .register_async_method(M::NAME, move |p, c, _| {
                let handler = handler.clone();
                async move { handler(M::Params::from_params(&p)?, Arc::clone(&c)).await }
            })
            .expect("method names are unique");
    }

    /// `handler` reads `M`'s raw params itself (the object setters check them with the
    /// file rules before decoding).
    fn add_raw<M, F, Fut>(&mut self, handler: F)
    where
        M: Method,
        M::Result: Clone,
        F: Fn(Params<'static>, Arc<Ctx>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Res<M::Result>> + Send + 'static,
    {
        self.module
            .register_async_method(M::NAME, move |p, c, _| {
                let handler = handler.clone();
                async move { handler(p, Arc::clone(&c)).await }
            })
            .expect("method names are unique");
    }
}

/// Every method's handler, and `rpc.discover`. A method of the list without a handler
/// panics here, at start-up (and in every test that boots the daemon).
pub fn methods(ctx: Arc<Ctx>) -> RpcModule<Arc<Ctx>> {
    let mut r = Registry { module: RpcModule::new(ctx) };
    action::register(&mut r);
    service::register(&mut r);
    secret::register(&mut r);
    job::register(&mut r);
    run::register(&mut r);
    log::register(&mut r);
    system::register(&mut r);
    reconcile::register(&mut r);
    migrate::register(&mut r);
    artifact::register(&mut r);
    let missing: Vec<&str> =
        METHODS.iter().map(|m| m.name).filter(|n| !r.module.method_names().any(|x| x == *n)).collect();
    assert!(missing.is_empty(), "methods without a handler: {missing:?}");
    r.module.register_method("rpc.discover", |_, _, _| openrpc_document(env!("CARGO_PKG_VERSION"))).expect("unique");
    r.module
}
