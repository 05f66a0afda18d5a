//! The RPC server: JSON-RPC 2.0 (jsonrpsee) over HTTP on the owner-only Unix socket,
//! plus `GET /health`, `GET /openrpc.json` and `POST /rpc` (any POST is JSON-RPC).
//! One module of methods per object group, all registered from the method table's names.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hero_proc_engine::{Engine, EngineError};
use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods::{METHODS, openrpc_document};
use hero_proc_rpc::wire::*;
use hero_proc_store::{JobFilter, JobId, Origin, Phase, Ref, RunId, StoreError};
use jsonrpsee::server::{
    HttpBody, HttpRequest, HttpResponse, RpcModule, Server, ServerHandle, StopHandle, TowerService,
    TowerServiceBuilder, stop_channel,
};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use tokio::net::UnixListener;

use crate::{DaemonError, Paths};

/// What every method handler shares.
pub struct Ctx {
    pub engine: Engine,
    pub paths: Paths,
    pub compactor: crate::compactor::Compactor,
    pub vault: Arc<crate::secrets::Vault>,
    pub reconciler: Arc<crate::reconciler::Reconciler>,
    pub started_at_ms: i64,
}

impl Ctx {
    pub fn new(
        engine: Engine,
        paths: Paths,
        compactor: crate::compactor::Compactor,
        vault: Arc<crate::secrets::Vault>,
        reconciler: Arc<crate::reconciler::Reconciler>,
    ) -> Self {
        Ctx { engine, paths, compactor, vault, reconciler, started_at_ms: hero_proc_engine::supervisor::now_ms() }
    }
}

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
            format!("no route {path}; try POST /rpc, GET /health, GET /metrics, GET /openrpc.json\n"),
        ),
    };
    http::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(HttpBody::from(body))
        .unwrap_or_else(|_| http::Response::new(HttpBody::from("internal error")))
}

fn _assert_infallible(_: Infallible) {}

// ---- errors --------------------------------------------------------------------------

fn rpc_err(code: ErrorCode, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code.code(), msg.into(), None::<()>)
}

fn engine_err(e: EngineError) -> ErrorObjectOwned {
    match e {
        EngineError::NotFound(m) => rpc_err(ErrorCode::NotFound, m),
        EngineError::Conflict(m) => rpc_err(ErrorCode::Conflict, m),
        EngineError::Invalid(m) => rpc_err(ErrorCode::Invalid, m),
        EngineError::Store(e) => store_err(e),
        EngineError::Unavailable => {
            rpc_err(ErrorCode::Unavailable, "hero_proc is shutting down; retry when it is back")
        }
    }
}

/// Names reach paths (sockets, health checks) and logs: only `[a-z0-9][a-z0-9_.-]{0,63}`
/// gets in, whatever a raw RPC client sends (the CLI's decoder checks the same).
fn check_names(what: &str, context: &str, name: &str) -> Result<(), ErrorObjectOwned> {
    use hero_proc_spec::schema::{NAME_HINT, is_valid_name};
    if is_valid_name(context) && is_valid_name(name) {
        Ok(())
    } else {
        Err(rpc_err(ErrorCode::Invalid, format!("invalid {what} name `{context}/{name}`: {NAME_HINT}")))
    }
}

fn reconcile_err(e: crate::reconciler::ReconcileError) -> ErrorObjectOwned {
    use crate::reconciler::ReconcileError as E;
    let code = match &e {
        E::Load(hero_proc_reconcile::LoadError::Refused { .. }) => ErrorCode::Refused,
        E::NoRepo | E::Load(_) | E::Baseline(_) => ErrorCode::Invalid,
        E::Repo(_) => ErrorCode::Unavailable,
        E::Refused { .. } => ErrorCode::Refused,
        E::Store(s) if s.is_replaced() => ErrorCode::DatabaseReplaced,
        E::Apply(_) | E::Store(_) => ErrorCode::Store,
        E::Engine(_) | E::Internal(_) => ErrorCode::Internal,
    };
    rpc_err(code, e.to_string())
}

fn store_err(e: StoreError) -> ErrorObjectOwned {
    let code = if e.is_replaced() { ErrorCode::DatabaseReplaced } else { ErrorCode::Store };
    rpc_err(code, e.to_string())
}

/// Decode a method's params; a type error names the field (`action.schedule: invalid
/// type: integer `5`, expected a string`), not just "invalid params".
fn parse<T: serde::de::DeserializeOwned>(p: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    let raw = p.as_str().unwrap_or("null");
    let de = &mut serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json appends where in the request text it stopped; the path says more.
        let inner = inner.rsplit_once(" at line ").map_or(inner.as_str(), |(m, _)| m);
        let at = if path == "." { "params".to_owned() } else { path.clone() };
        ErrorObjectOwned::owned(
            ErrorCode::Invalid.code(),
            format!("invalid parameters: {at}: {inner}"),
            Some(serde_json::json!({ "path": at })),
        )
    })
}

/// A reference written as `name` or `context/name` in a string parameter.
fn parse_ref(s: &str) -> Result<Ref, ErrorObjectOwned> {
    Ref::parse(s).map_err(|e| ErrorObjectOwned::owned(ErrorCode::Invalid.code(), e.to_string(), None::<()>))
}

/// Check `params.<key>` with the decoder `hero_proc validate` uses on files, so the RPC
/// refuses what `validate` refuses, with the same codes and messages, and names each
/// field (`action.schedule: ... [cron.invalid]`). Problems go in the error's `data`.
fn validate_object<T>(
    p: &Params<'_>,
    key: &str,
    check: fn(&str) -> hero_proc_spec::object::ObjectCheck<T>,
) -> Result<(), ErrorObjectOwned> {
    let raw = p.as_str().unwrap_or("null");
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| rpc_err(ErrorCode::Invalid, format!("invalid parameters: params: {e}")))?;
    let Some(object) = value.get(key) else {
        return Err(rpc_err(ErrorCode::Invalid, format!("invalid parameters: params: missing field `{key}`")));
    };
    let text = serde_json::to_string_pretty(object).map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
    let checked = check(&text);
    let errors: Vec<serde_json::Value> = checked
        .errors()
        .map(|p| {
            let path = if p.path.is_empty() { key.to_owned() } else { format!("{key}.{}", p.path) };
            serde_json::json!({ "path": path, "code": p.code, "message": p.message, "hint": p.hint })
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let mut message = format!("invalid {key} ({} error(s)); nothing was changed:", errors.len());
    for p in checked.errors() {
        let path = if p.path.is_empty() { key.to_owned() } else { format!("{key}.{}", p.path) };
        message.push_str(&format!("\n{path}: {} [{}]", p.message, p.code));
        if let Some(h) = &p.hint {
            message.push_str(&format!("\n  hint: {h}"));
        }
    }
    Err(ErrorObjectOwned::owned(ErrorCode::Invalid.code(), message, Some(serde_json::json!({ "problems": errors }))))
}

fn done(changed: bool) -> Done {
    Done { changed, message: None }
}

fn phase_to_wire(p: Phase) -> JobPhase {
    match p {
        Phase::Pending => JobPhase::Pending,
        Phase::Running => JobPhase::Running,
        Phase::Succeeded => JobPhase::Succeeded,
        Phase::Failed => JobPhase::Failed,
        Phase::Cancelled => JobPhase::Cancelled,
    }
}

fn phase_from_wire(p: JobPhase) -> Phase {
    match p {
        JobPhase::Pending => Phase::Pending,
        JobPhase::Running => Phase::Running,
        JobPhase::Succeeded => Phase::Succeeded,
        JobPhase::Failed => Phase::Failed,
        JobPhase::Cancelled => Phase::Cancelled,
    }
}

fn job_view(j: hero_proc_store::Job) -> JobView {
    JobView {
        id: j.id.0,
        run_id: j.run_id.map(|r| r.0),
        action: j.action.to_string(),
        service: j.service.map(|s| s.to_string()),
        phase: phase_to_wire(j.phase),
        attempt: j.attempt,
        pid: j.pid,
        exit_code: j.exit_code,
        signal: j.signal,
        error: j.error,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
    }
}

fn run_view(ctx: &Ctx, r: hero_proc_store::Run) -> Result<RunView, ErrorObjectOwned> {
    run_view_jobs(ctx, r, 10_000)
}

/// A run with at most `max_jobs` of its jobs (the first ones); `jobs_more` says if
/// there are more.
fn run_view_jobs(ctx: &Ctx, r: hero_proc_store::Run, max_jobs: u32) -> Result<RunView, ErrorObjectOwned> {
    let jobs = ctx
        .engine
        .store
        .list_jobs(&JobFilter { run_id: Some(r.id), limit: max_jobs + 1, ..Default::default() })
        .map_err(store_err)?;
    let jobs_more = jobs.len() > max_jobs as usize;
    let mut jobs: Vec<JobView> = jobs.into_iter().take(max_jobs as usize).map(job_view).collect();
    jobs.sort_by_key(|j| j.id);
    Ok(RunView {
        id: r.id.0,
        label: r.label,
        phase: phase_to_wire(r.phase),
        created_at_ms: r.created_at_ms,
        finished_at_ms: r.finished_at_ms,
        jobs,
        jobs_more,
    })
}

/// A listing's `limit`: `default` when absent; over `max` is refused (an answer that
/// large could pass the RPC response limit), saying how to page instead.
fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    method: &str,
    limit: Option<T>,
    default: T,
    max: T,
    cursor: &str,
) -> Result<T, ErrorObjectOwned> {
    match limit {
        Some(l) if l > max => Err(rpc_err(
            ErrorCode::Invalid,
            format!(
                "{method}: limit {l} is over the maximum of {max}; ask for at most {max} and page on with {cursor}"
            ),
        )),
        Some(l) => Ok(l),
        None => Ok(default),
    }
}

// ---- methods -------------------------------------------------------------------------

type Res<T> = Result<T, ErrorObjectOwned>;

/// Pins a handler body's result type so `?` inside it infers.
async fn typed<T>(f: impl Future<Output = Res<T>>) -> Res<T> {
    f.await
}

/// Register every method of the table. Registering a name twice, or one the table does
/// not list, panics at start-up (and in the test that boots the daemon).
pub fn methods(ctx: Arc<Ctx>) -> RpcModule<Arc<Ctx>> {
    let mut m = RpcModule::new(ctx);
    macro_rules! method {
        ($name:literal, |$p:ident, $c:ident| -> $t:ty $body:block) => {{
            assert!(METHODS.iter().any(|d| d.name == $name), "{} is not in the method table", $name);
            m.register_async_method($name, |$p, $c, _| async move { typed::<$t>(async move $body).await })
                .expect("method names are unique");
        }};
    }

    // action.*
    method!("action.set", |p, c| -> Done {
        // The file rules first (codes, hints); then the wire type, stricter on JSON types.
        validate_object(&p, "action", hero_proc_spec::object::check_action)?;
        let a: ActionSet = parse(&p)?;
        check_names("action", &a.action.context, &a.action.name)?;
        let r = c.engine.set_action(a.action, Origin::manual()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        r
    });
    method!("action.get", |p, c| -> ActionView {
        let r: Ref = parse(&p)?;
        match c.engine.store.get_action(&r.context, &r.name).map_err(store_err)? {
            Some(s) => Ok(ActionView {
                action: s.value,
                managed: s.managed,
                revision: s.revision,
                updated_at_ms: s.updated_at_ms,
            }),
            None => {
                Err(rpc_err(ErrorCode::NotFound, format!("no action {r}; `hero_proc action list` shows what exists")))
            }
        }
    });
    method!("action.list", |_p, c| -> Vec<ActionView> {
        let list = c.engine.store.list_actions().map_err(store_err)?;
        Ok(list
            .into_iter()
            .map(|s| ActionView {
                action: s.value,
                managed: s.managed,
                revision: s.revision,
                updated_at_ms: s.updated_at_ms,
            })
            .collect())
    });
    method!("action.delete", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        let res = c.engine.delete_action(r.clone()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });

    // service.*
    method!("service.set", |p, c| -> Done {
        validate_object(&p, "service", hero_proc_spec::object::check_service)?;
        let s: ServiceSet = parse(&p)?;
        check_names("service", &s.service.context, &s.service.name)?;
        for r in s.service.actions.iter().chain(&s.service.requires).chain(&s.service.after) {
            let (ctx, name) = r.split();
            check_names("reference", ctx.unwrap_or(&s.service.context), name)?;
        }
        let r = c.engine.set_service(s.service, Origin::manual()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        r
    });
    method!("service.get", |p, c| -> hero_proc_spec::Service {
        let r: Ref = parse(&p)?;
        match c.engine.store.get_service(&r.context, &r.name).map_err(store_err)? {
            Some(s) => Ok(s.value),
            None => {
                Err(rpc_err(ErrorCode::NotFound, format!("no service {r}; `hero_proc service list` shows what exists")))
            }
        }
    });
    method!("service.list", |_p, c| -> Vec<ServiceView> {
        c.engine.status(None).await.map(crate::views::services).map_err(engine_err)
    });
    method!("service.delete", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        let res = c.engine.delete_service(r.clone()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.start", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        let res = c.engine.start_service(r.clone()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.stop", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        let res = c.engine.stop_service(r.clone()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.restart", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        c.engine.restart_service(r.clone()).await.map(done).map_err(engine_err)
    });
    method!("service.status", |p, c| -> ServiceView {
        let r: Ref = parse(&p)?;
        let mut v = c.engine.status(Some(r.clone())).await.map(crate::views::services).map_err(engine_err)?;
        v.pop().ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no service {r}")))
    });
    method!("service.domains", |p, c| -> Vec<CheckView> {
        let r: Ref = parse(&p)?;
        let expand = c.paths.expand();
        let tree = hero_proc_engine::health::hero_sockets(&r.name, &expand).await;
        Ok(tree
            .into_iter()
            .filter(|s| s.role.contains('/'))
            .map(|s| CheckView { check: s.role, healthy: s.health.is_healthy(), detail: unhealthy_detail(&s.health) })
            .collect())
    });
    method!("service.domain_health", |p, c| -> CheckView {
        #[derive(serde::Deserialize)]
        struct P {
            name: String,
            domain_context: String,
            domain: String,
        }
        let q: P = parse(&p)?;
        let path = c.paths.root.join(format!("var/sockets/{}_server/{}/{}.sock", q.name, q.domain_context, q.domain));
        if !path.exists() {
            return Err(rpc_err(ErrorCode::NotFound, format!("no domain socket {}", path.display())));
        }
        let h = hero_proc_engine::health::check(
            &hero_proc_spec::HealthCheck::UnixSocket(path.display().to_string()),
            &q.name,
            &c.paths.expand(),
        )
        .await;
        Ok(CheckView {
            check: format!("{}/{}", q.domain_context, q.domain),
            healthy: h.is_healthy(),
            detail: unhealthy_detail(&h),
        })
    });

    // secret.* (values go in, never come out)
    method!("secret.set", |p, c| -> Done {
        let q: SecretSet = parse(&p)?;
        for (field, value) in [("context", &q.context), ("name", &q.name)] {
            if !hero_proc_spec::schema::is_valid_name(value) {
                return Err(rpc_err(
                    ErrorCode::Invalid,
                    format!(
                        "invalid parameters: {field}: invalid secret {field} `{value}` [name.invalid]\n  hint: {}",
                        hero_proc_spec::schema::NAME_HINT
                    ),
                ));
            }
        }
        let changed = c
            .vault
            .set(&q.context, &q.name, q.value.expose(), "rpc", &Origin::manual())
            .map_err(|e| rpc_err(ErrorCode::Store, e.to_string()))?;
        let mut message = None;
        c.reconciler.changed_by_hand();
        if changed {
            let restarted = c.engine.secret_changed(Ref::new(&q.context, &q.name)).await.map_err(engine_err)?;
            if !restarted.is_empty() {
                let names: Vec<String> = restarted.iter().map(|r| r.to_string()).collect();
                message = Some(format!("restarting {}", names.join(", ")));
            }
        }
        Ok(Done { changed, message })
    });
    method!("secret.list", |_p, c| -> Vec<SecretMetaView> {
        let list = c.engine.store.list_secrets().map_err(store_err)?;
        Ok(list
            .into_iter()
            .map(|s| SecretMetaView {
                context: s.value.context,
                name: s.value.name,
                source: s.value.source,
                fingerprint: s.value.fingerprint.chars().take(12).collect(),
                managed: s.managed,
                revision: s.revision,
                updated_at_ms: s.updated_at_ms,
            })
            .collect())
    });
    method!("secret.delete", |p, c| -> Done {
        let r: Ref = parse(&p)?;
        c.engine.store.delete_secret(&r.context, &r.name).map(done).map_err(store_err)
    });

    // job.*
    method!("job.list", |p, c| -> Vec<JobView> {
        let q: JobQuery = parse(&p)?;
        let filter = JobFilter {
            phase: q.phase.map(phase_from_wire),
            service: q.service.as_deref().map(parse_ref).transpose()?,
            run_id: q.run_id.map(RunId),
            limit: bounded("job.list", q.limit, 100, JOB_LIST_MAX, "`before_id` (the smallest id returned)")?,
            before_id: q.before_id.map(JobId),
        };
        Ok(c.engine.store.list_jobs(&filter).map_err(store_err)?.into_iter().map(job_view).collect())
    });
    method!("job.get", |p, c| -> JobView {
        let q: IdRef = parse(&p)?;
        match c.engine.store.get_job(JobId(q.id)).map_err(store_err)? {
            Some(j) => Ok(job_view(j)),
            None => Err(rpc_err(ErrorCode::NotFound, format!("no job {}", q.id))),
        }
    });
    method!("job.logs", |p, c| -> LogLines {
        let q: JobLogs = parse(&p)?;
        if c.engine.store.get_job(JobId(q.id)).map_err(store_err)?.is_none() {
            return Err(rpc_err(ErrorCode::NotFound, format!("no job {}", q.id)));
        }
        let max_bytes = bounded(
            "job.logs",
            q.max_bytes,
            LOG_PAGE_MAX_BYTES,
            LOG_PAGE_MAX_BYTES,
            "`offset` (the answer's `next_offset`)",
        )?;
        if let Some(t) = q.tail
            && t > LOG_PAGE_MAX_LINES
        {
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!(
                    "job.logs: tail {t} is over the maximum of {LOG_PAGE_MAX_LINES} lines; read the whole output \
                     forward instead, page by page with `offset` (`hero_proc job logs {}` does)",
                    q.id
                ),
            ));
        }
        let opts = hero_proc_logstore::ReadOpts {
            tail_lines: q.tail,
            max_bytes: Some(max_bytes.max(1)),
            offset: q.offset,
            include_rotated: true,
            max_lines: Some(LOG_PAGE_MAX_LINES),
            max_line_bytes: q.tail.map(|_| LOG_LINE_MAX_BYTES),
        };
        let logs = c.engine.logs.clone();
        // File reads off the async workers: a page is at most 1 MiB, but the disk may be slow.
        let out = tokio::task::spawn_blocking(move || logs.read_job_output(q.id, opts))
            .await
            .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| match e {
                hero_proc_logstore::Error::NoOutput { .. } => rpc_err(ErrorCode::NotFound, e.to_string()),
                e => rpc_err(ErrorCode::Internal, e.to_string()),
            })?;
        Ok(LogLines {
            lines: out.lines,
            next_offset: out.next_offset,
            has_more: out.has_more,
            ends_mid_line: out.ends_mid_line,
            reset: out.reset,
        })
    });

    // run.*
    method!("run.submit", |p, c| -> RunView {
        let q: RunSubmit = parse(&p)?;
        let refs = q.actions.iter().map(|a| parse_ref(a)).collect::<Result<Vec<Ref>, _>>()?;
        let label = q.label.unwrap_or_else(|| q.actions.join(" "));
        let id = c.engine.submit(refs, label).await.map_err(engine_err)?;
        let run = c
            .engine
            .store
            .get_run(id)
            .map_err(store_err)?
            .ok_or_else(|| rpc_err(ErrorCode::Internal, "run vanished"))?;
        run_view(&c, run)
    });
    method!("run.list", |p, c| -> Vec<RunView> {
        let q: RunList = if p.as_str().is_some() { parse(&p)? } else { RunList::default() };
        let limit = bounded("run.list", q.limit, 50, RUN_LIST_MAX, "`before_id` (the smallest id returned)")?;
        // One snapshot, two queries (not one per run).
        let runs =
            c.engine.store.list_runs_with_jobs(limit, q.before_id.map(RunId), RUN_LIST_JOBS).map_err(store_err)?;
        Ok(runs
            .into_iter()
            .map(|r| RunView {
                id: r.run.id.0,
                label: r.run.label,
                phase: phase_to_wire(r.run.phase),
                created_at_ms: r.run.created_at_ms,
                finished_at_ms: r.run.finished_at_ms,
                jobs: r.jobs.into_iter().map(job_view).collect(),
                jobs_more: r.jobs_more,
            })
            .collect())
    });
    method!("run.get", |p, c| -> RunView {
        let q: RunGet = parse(&p)?;
        match c.engine.store.get_run(RunId(q.id)).map_err(store_err)? {
            Some(r) if !q.jobs => Ok(RunView {
                id: r.id.0,
                label: r.label,
                phase: phase_to_wire(r.phase),
                created_at_ms: r.created_at_ms,
                finished_at_ms: r.finished_at_ms,
                jobs: Vec::new(),
                jobs_more: false,
            }),
            Some(r) => run_view(&c, r),
            None => Err(rpc_err(ErrorCode::NotFound, format!("no run {}", q.id))),
        }
    });
    method!("run.cancel", |p, c| -> Done {
        let q: IdRef = parse(&p)?;
        c.engine.cancel_run(RunId(q.id)).await.map(done).map_err(engine_err)
    });

    // log.*
    method!("log.query", |p, c| -> Vec<LogEventView> {
        let q: LogQuery = if p.as_str().is_some() { parse(&p)? } else { LogQuery::default() };
        let min_level = match q.min_level.as_deref() {
            None => None,
            Some(l) => {
                Some(l.parse::<hero_proc_logstore::Level>().map_err(|e| rpc_err(ErrorCode::Invalid, e.to_string()))?)
            }
        };
        let query = hero_proc_logstore::LogQuery {
            source_prefix: q.source,
            min_level,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            contains: q.contains,
            limit: bounded("log.query", q.limit, 100, LOG_QUERY_MAX, "`until_ms` (the oldest ts_ms returned)")?,
            ..Default::default()
        };
        let logs = c.engine.logs.clone();
        let events = tokio::task::spawn_blocking(move || logs.query(&query))
            .await
            .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
        Ok(events
            .into_iter()
            .map(|e| LogEventView {
                ts_ms: e.ts_ms,
                source: e.source,
                level: e.level.as_str().to_owned(),
                message: e.message,
                job_id: e.job_id,
            })
            .collect())
    });

    // system.*
    method!("system.info", |_p, c| -> SystemInfo {
        let stats = c.engine.store.db_stats().map_err(store_err)?;
        let services = c.engine.status(None).await.map(crate::views::services).map_err(engine_err)?;
        let counts = c.engine.store.job_counts_by_phase().map_err(store_err)?;
        Ok(SystemInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at_ms: c.started_at_ms,
            root: c.paths.root.display().to_string(),
            socket: c.paths.socket.display().to_string(),
            db_path: c.paths.db.display().to_string(),
            db_size_bytes: stats.size_bytes,
            db_free_pages: stats.freelist_count,
            log_dir: c.paths.logs.display().to_string(),
            log_bytes: c.engine.logs.total_bytes().unwrap_or(0),
            services: services.len(),
            services_running: services.iter().filter(|s| s.state == ServiceState::Running).count(),
            actions: c.engine.store.list_actions().map_err(store_err)?.len(),
            jobs_running: counts.running as usize,
            containment: c.engine.containment.describe(),
            containment_fallback: c.engine.containment.fallback_reason.clone(),
        })
    });

    method!("system.compact", |_p, c| -> CompactView {
        c.compactor.compact_now().await.map_err(|e| rpc_err(ErrorCode::Store, e))
    });
    method!("system.compactor_status", |_p, c| -> CompactorStatusView {
        c.compactor.status().map_err(|e| rpc_err(ErrorCode::Store, e))
    });

    // reconcile.*
    method!("reconcile.plan", |p, c| -> hero_proc_reconcile::Plan {
        let q: crate::reconciler::PlanRequest = if p.as_str().is_some() { parse(&p)? } else { Default::default() };
        c.reconciler.plan(q).await.map_err(reconcile_err)
    });
    method!("reconcile.apply", |p, c| -> hero_proc_reconcile::ApplyOutcome {
        let q: crate::reconciler::PlanRequest = if p.as_str().is_some() { parse(&p)? } else { Default::default() };
        c.reconciler.apply(q).await.map_err(reconcile_err)
    });
    method!("reconcile.status", |_p, c| -> hero_proc_reconcile::SyncStatus {
        c.reconciler.status().await.map_err(reconcile_err)
    });
    method!("reconcile.suspend", |_p, c| -> hero_proc_reconcile::SyncStatus {
        c.reconciler.suspend().await.map_err(reconcile_err)
    });
    method!("reconcile.resume", |_p, c| -> hero_proc_reconcile::SyncStatus {
        c.reconciler.resume().await.map_err(reconcile_err)
    });
    method!("reconcile.history", |p, c| -> Vec<hero_proc_store::SyncEntry> {
        #[derive(serde::Deserialize, Default)]
        struct P {
            #[serde(default)]
            limit: Option<u32>,
        }
        let q: P = if p.as_str().is_some() { parse(&p)? } else { P::default() };
        let limit = bounded("reconcile.history", q.limit, 50, HISTORY_MAX, "a smaller limit")?;
        c.engine.store.history(limit).map_err(store_err)
    });

    // migrate.*
    method!("migrate.status", |_p, c| -> hero_proc_reconcile::MigrateStatus {
        c.reconciler.migrate_status().await.map_err(reconcile_err)
    });
    method!("migrate.baseline", |p, c| -> hero_proc_reconcile::MigrateStatus {
        #[derive(serde::Deserialize)]
        struct P {
            name: String,
        }
        let q: P = parse(&p)?;
        c.reconciler.migrate_baseline(&q.name).await.map_err(reconcile_err)
    });

    // Discovery.
    m.register_method("rpc.discover", |_, _, _| openrpc_document(env!("CARGO_PKG_VERSION"))).expect("unique");
    m
}

fn unhealthy_detail(h: &hero_proc_engine::health::Health) -> Option<String> {
    match h {
        hero_proc_engine::health::Health::Healthy => None,
        hero_proc_engine::health::Health::Unhealthy(w) => Some(w.clone()),
    }
}

/// Names registered by [`methods`], for the test that holds the table and the server
/// to each other.
pub fn registered_names(module: &RpcModule<Arc<Ctx>>) -> Vec<String> {
    module.method_names().map(str::to_owned).collect()
}

#[allow(dead_code)]
fn _unused(_: StopHandle) {}
