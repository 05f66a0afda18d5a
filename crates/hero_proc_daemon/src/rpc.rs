//! The RPC server: JSON-RPC 2.0 (jsonrpsee) over HTTP on the owner-only Unix socket,
//! plus `GET /health`, `GET /openrpc.json` and `POST /rpc` (any POST is JSON-RPC).
//! One module of methods per object group, all registered from the method table's names.

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hero_proc_engine::{Engine, EngineError};
use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods::{METHODS, openrpc_document};
use hero_proc_rpc::wire::*;
use hero_proc_store::{JobFilter, JobId, Origin, Phase, Ref, RunId, StoreError};
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse, RpcModule, Server, StopHandle, stop_channel};
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

/// Bind the socket owner-only. A stale socket file (no daemon behind it: we hold the
/// root lock) is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket { path: path.display().to_string(), source };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>, shutdown: impl Future<Output = ()>) {
    let module = methods(ctx.clone());
    let (stop_handle, server_handle) = stop_channel();
    let builder = Server::builder().to_service_builder();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let svc = Routes { rpc: builder.clone().build(module.clone(), stop_handle.clone()), ctx: ctx.clone() };
        let stopped = stop_handle.clone().shutdown();
        tokio::spawn(async move {
            if let Err(e) = jsonrpsee::server::serve_with_graceful_shutdown(stream, svc, stopped).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    let _ = server_handle.stop();
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
        "/health" => (200, "text/plain", "ok\n".to_owned()),
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
        E::Apply(_) | E::Store(_) => ErrorCode::Store,
        E::Engine(_) | E::Internal(_) => ErrorCode::Internal,
    };
    rpc_err(code, e.to_string())
}

fn store_err(e: StoreError) -> ErrorObjectOwned {
    rpc_err(ErrorCode::Store, e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(p: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    p.parse::<T>().map_err(|e| rpc_err(ErrorCode::Invalid, format!("invalid parameters: {}", e.message())))
}

fn to_ref(r: &ObjectRef) -> Ref {
    Ref::new(&r.context, &r.name)
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
    let jobs = ctx
        .engine
        .store
        .list_jobs(&JobFilter { run_id: Some(r.id), limit: 10_000, ..Default::default() })
        .map_err(store_err)?;
    let mut jobs: Vec<JobView> = jobs.into_iter().map(job_view).collect();
    jobs.sort_by_key(|j| j.id);
    Ok(RunView {
        id: r.id.0,
        label: r.label,
        phase: phase_to_wire(r.phase),
        created_at_ms: r.created_at_ms,
        finished_at_ms: r.finished_at_ms,
        jobs,
    })
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
        let a: ActionSet = parse(&p)?;
        check_names("action", &a.action.context, &a.action.name)?;
        let r = c.engine.set_action(a.action, Origin::manual()).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        r
    });
    method!("action.get", |p, c| -> ActionView {
        let r: ObjectRef = parse(&p)?;
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
        let r: ObjectRef = parse(&p)?;
        let res = c.engine.delete_action(to_ref(&r)).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });

    // service.*
    method!("service.set", |p, c| -> Done {
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
        let r: ObjectRef = parse(&p)?;
        match c.engine.store.get_service(&r.context, &r.name).map_err(store_err)? {
            Some(s) => Ok(s.value),
            None => {
                Err(rpc_err(ErrorCode::NotFound, format!("no service {r}; `hero_proc service list` shows what exists")))
            }
        }
    });
    method!("service.list", |_p, c| -> Vec<ServiceView> { c.engine.status(None).await.map_err(engine_err) });
    method!("service.delete", |p, c| -> Done {
        let r: ObjectRef = parse(&p)?;
        let res = c.engine.delete_service(to_ref(&r)).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.start", |p, c| -> Done {
        let r: ObjectRef = parse(&p)?;
        let res = c.engine.start_service(to_ref(&r)).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.stop", |p, c| -> Done {
        let r: ObjectRef = parse(&p)?;
        let res = c.engine.stop_service(to_ref(&r)).await.map(done).map_err(engine_err);
        c.reconciler.changed_by_hand();
        res
    });
    method!("service.restart", |p, c| -> Done {
        let r: ObjectRef = parse(&p)?;
        c.engine.restart_service(to_ref(&r)).await.map(done).map_err(engine_err)
    });
    method!("service.status", |p, c| -> ServiceView {
        let r: ObjectRef = parse(&p)?;
        let mut v = c.engine.status(Some(to_ref(&r))).await.map_err(engine_err)?;
        v.pop().ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no service {r}")))
    });
    method!("service.domains", |p, c| -> Vec<CheckView> {
        let r: ObjectRef = parse(&p)?;
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
        if !hero_proc_spec::schema::is_valid_name(&q.name) || !hero_proc_spec::schema::is_valid_name(&q.context) {
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!("invalid secret name `{}/{}`: {}", q.context, q.name, hero_proc_spec::schema::NAME_HINT),
            ));
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
        let r: ObjectRef = parse(&p)?;
        c.engine.store.delete_secret(&r.context, &r.name).map(done).map_err(store_err)
    });

    // job.*
    method!("job.list", |p, c| -> Vec<JobView> {
        let q: JobQuery = parse(&p)?;
        let filter = JobFilter {
            phase: q.phase.map(phase_from_wire),
            service: q.service.as_deref().map(|s| {
                let r = ObjectRef::parse(s);
                Ref::new(r.context, r.name)
            }),
            run_id: q.run_id.map(RunId),
            limit: q.limit.unwrap_or(100),
            before_id: None,
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
        let opts = hero_proc_logstore::ReadOpts { tail_lines: q.tail, include_rotated: true, ..Default::default() };
        let out = c.engine.logs.read_job_output(q.id, opts).map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
        Ok(LogLines { lines: out.lines })
    });

    // run.*
    method!("run.submit", |p, c| -> RunView {
        let q: RunSubmit = parse(&p)?;
        let refs: Vec<Ref> = q
            .actions
            .iter()
            .map(|a| {
                let r = ObjectRef::parse(a);
                Ref::new(r.context, r.name)
            })
            .collect();
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
        #[derive(serde::Deserialize, Default)]
        struct P {
            #[serde(default)]
            limit: Option<u32>,
        }
        let q: P = if p.as_str().is_some() { parse(&p)? } else { P::default() };
        let runs = c.engine.store.list_runs(q.limit.unwrap_or(50), None).map_err(store_err)?;
        runs.into_iter().map(|r| run_view(&c, r)).collect()
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
            contains: q.contains,
            limit: q.limit.unwrap_or(100),
            ..Default::default()
        };
        let events = c.engine.logs.query(&query).map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
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
        let services = c.engine.status(None).await.map_err(engine_err)?;
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
        c.engine.store.history(q.limit.unwrap_or(50)).map_err(store_err)
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
