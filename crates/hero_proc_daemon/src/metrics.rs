//! `/metrics` in OpenMetrics text (on the RPC socket, and on `--metrics-addr` for
//! Prometheus). Built on request from the live state: nothing is sampled in the
//! background, so an idle daemon stays idle.

pub mod exposition;
pub mod services;

use std::fmt::Write;

use hero_proc_engine::ServiceState;
use hero_proc_engine::supervisor::ServiceSnapshot;

use crate::context::Ctx;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for clients that do not ask for OpenMetrics
/// (promtool, curl).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition format a request asked for (its `Accept` header).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

struct Out(String, bool);

impl Out {
    /// OpenMetrics names a counter family without `_total`; the classic format names it
    /// as its samples are named.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let name = if kind == "counter" && !self.1 { format!("{name}_total") } else { name.to_owned() };
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        let _ = writeln!(self.0, "# HELP {name} {help}");
    }
    /// A family with one sample per service, labelled by its key (`keys[i]` is
    /// `services[i]`'s); a counter's samples carry `_total`.
    fn per_service<V: std::fmt::Display>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        services: &[ServiceSnapshot],
        keys: &[String],
        value: impl Fn(&ServiceSnapshot) -> V,
    ) {
        self.family(name, kind, help);
        let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        for (s, key) in services.iter().zip(keys) {
            self.sample(&sample, &[("service", key)], value(s));
        }
    }
    // Written in place: a scrape of 500 services writes ~10,000 samples.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                exposition::write_label_value(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Render every metric; `openmetrics` picks the exposition format.
pub async fn render(ctx: &Ctx, openmetrics: bool) -> String {
    // The log store's walk (in the compactor's status) runs on another thread while the
    // services' /proc files are read: on two cores a scrape takes the longer of the two.
    let compactor = ctx.compactor.clone();
    let compactor_status = tokio::task::spawn_blocking(move || compactor.status());
    let mut o = Out(String::with_capacity(64 * 1024), openmetrics);
    o.family("hero_proc_build_info", "gauge", "hero_proc version (always 1).");
    o.sample("hero_proc_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

    let services = ctx.engine.status(None).await.unwrap_or_default();
    // Each service's label, made once for the ~15 families that carry it.
    let keys: Vec<String> = services.iter().map(|s| format!("{}/{}", s.context, s.name)).collect();
    o.family("hero_proc_services", "gauge", "Services by state.");
    for st in ServiceState::ALL {
        let n = services.iter().filter(|s| s.state == st).count();
        o.sample("hero_proc_services", &[("state", st.as_str())], n);
    }
    let up = (
        "hero_proc_service_up",
        "gauge",
        "1 when the service is running and its health checks pass (probed every period, not only at start).",
    );
    o.per_service(up, &services, &keys, |s| {
        u8::from(s.state == ServiceState::Running && s.health.iter().all(|c| c.healthy))
    });
    let wanted = (
        "hero_proc_service_wanted",
        "gauge",
        "1 when the service's spec says `status: start` (alert on wanted == 1 and up == 0).",
    );
    o.per_service(wanted, &services, &keys, |s| u8::from(s.status == hero_proc_spec::ServiceStatus::Start));
    o.family("hero_proc_service_state", "gauge", "The service's state: one series, value 1, per service.");
    for (s, key) in services.iter().zip(&keys) {
        o.sample("hero_proc_service_state", &[("service", key), ("state", s.state.as_str())], 1);
    }
    let crash_loop = ("hero_proc_service_crash_loop", "gauge", "1 while the service is crash-looping.");
    o.per_service(crash_loop, &services, &keys, |s| u8::from(s.crash_loop));
    let restarts = ("hero_proc_service_restarts", "counter", "Process restarts per service since the daemon started.");
    o.per_service(restarts, &services, &keys, |s| s.restarts);
    service_resources(&mut o, ctx, &services).await;
    let failures =
        ("hero_proc_health_check_failures", "counter", "Failed health probes per service since the daemon started.");
    o.per_service(failures, &services, &keys, |s| s.health_failures);
    let liveness = (
        "hero_proc_service_liveness_restarts",
        "counter",
        "Restarts a failed liveness check caused, per service, since the daemon started.",
    );
    o.per_service(liveness, &services, &keys, |s| s.liveness_restarts);

    if let Ok(counts) = ctx.engine.store.job_counts_by_phase() {
        o.family("hero_proc_jobs", "gauge", "Jobs in the store by phase.");
        for (phase, n) in [
            ("pending", counts.pending),
            ("running", counts.running),
            ("succeeded", counts.succeeded),
            ("failed", counts.failed),
            ("cancelled", counts.cancelled),
        ] {
            o.sample("hero_proc_jobs", &[("phase", phase)], n);
        }
    }
    if let Ok(stats) = ctx.engine.store.db_stats() {
        o.family("hero_proc_db_size_bytes", "gauge", "Database size: page_count * page_size.");
        o.sample("hero_proc_db_size_bytes", &[], stats.size_bytes);
        o.family("hero_proc_db_file_bytes", "gauge", "Database file plus WAL on disk.");
        o.sample("hero_proc_db_file_bytes", &[], stats.file_bytes);
        o.family("hero_proc_db_free_pages", "gauge", "Free pages inside the database file.");
        o.sample("hero_proc_db_free_pages", &[], stats.freelist_count);
    }
    // The compactor's status measures the log store: one walk of it per scrape, not two.
    let compactor = compactor_status.await.unwrap_or_else(|e| Err(e.to_string()));
    let log_bytes = match &compactor {
        Ok(c) => c.log_bytes,
        Err(_) => ctx.engine.logs.total_bytes().unwrap_or(0),
    };
    o.family("hero_proc_log_store_bytes", "gauge", "Bytes in the log store.");
    o.sample("hero_proc_log_store_bytes", &[], log_bytes);
    o.family("hero_proc_log_store_max_bytes", "gauge", "The log store's total cap (the caps delete beyond it).");
    o.sample("hero_proc_log_store_max_bytes", &[], ctx.engine.logs.config().max_total_bytes);

    if let Ok(c) = compactor {
        o.family("hero_proc_compactions", "counter", "Compactor runs since the daemon started.");
        o.sample("hero_proc_compactions_total", &[], c.runs);
        o.family("hero_proc_compactor_last_run_timestamp_seconds", "gauge", "When the compactor last ran (0: never).");
        o.sample("hero_proc_compactor_last_run_timestamp_seconds", &[], c.last_run_ms.unwrap_or(0) as f64 / 1000.0);
        if let Some(last) = &c.last {
            o.family("hero_proc_compactor_last_deleted_rows", "gauge", "Rows the last compaction deleted, by table.");
            o.sample("hero_proc_compactor_last_deleted_rows", &[("table", "jobs")], last.jobs_deleted);
            o.sample("hero_proc_compactor_last_deleted_rows", &[("table", "runs")], last.runs_deleted);
            o.sample("hero_proc_compactor_last_deleted_rows", &[("table", "sync_history")], last.history_deleted);
            o.family("hero_proc_compactor_last_reclaimed_bytes", "gauge", "Bytes the last compaction reclaimed.");
            o.sample("hero_proc_compactor_last_reclaimed_bytes", &[], last.bytes_reclaimed);
        }
    }
    reconcile_metrics(&mut o, ctx).await;
    artifact_metrics(&mut o, ctx);
    if openmetrics {
        o.0.push_str("# EOF\n");
    }
    o.0
}

/// What each service's process tree uses, read from /proc at this scrape (one pass for
/// all services; the cgroup's members where containment has one).
async fn service_resources(o: &mut Out, ctx: &Ctx, services: &[ServiceSnapshot]) {
    use hero_proc_engine::resources::{ProcTable, Usage, exit_code_of};
    let running: Vec<(String, u32, hero_proc_engine::contain::Unit)> = services
        .iter()
        .filter_map(|s| {
            let pid = s.pid?;
            Some((format!("{}/{}", s.context, s.name), pid, ctx.engine.containment.unit(&s.context, &s.name)))
        })
        .collect();
    let usages: Vec<(String, Usage)> = tokio::task::spawn_blocking(move || {
        let mut table = ProcTable::new();
        running
            .into_iter()
            .map(|(key, pid, unit)| {
                let members = unit.cgroup.as_ref().map(|_| unit.pids()).filter(|m| !m.is_empty());
                (key, table.usage(pid, members.as_deref()))
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    type Pick = fn(&Usage) -> f64;
    let families: [(&str, &str, &str, Pick); 4] = [
        (
            "hero_proc_service_cpu_seconds",
            "counter",
            "CPU time of the service's process tree (live processes and the children they reaped).",
            |u| u.cpu_seconds,
        ),
        ("hero_proc_service_memory_bytes", "gauge", "Resident memory (RSS) of the service's process tree.", |u| {
            u.memory_bytes as f64
        }),
        ("hero_proc_service_open_fds", "gauge", "Open file descriptors of the service's process tree.", |u| {
            u.open_fds as f64
        }),
        ("hero_proc_service_threads", "gauge", "Threads of the service's process tree.", |u| u.threads as f64),
    ];
    for (name, kind, help, pick) in families {
        o.family(name, kind, help);
        let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        for (key, u) in &usages {
            o.sample(&sample, &[("service", key)], pick(u));
        }
    }
    o.family("hero_proc_service_start_time_seconds", "gauge", "When the service's main process started (Unix time).");
    for (key, u) in &usages {
        if let Some(t) = u.start_time_seconds {
            o.sample("hero_proc_service_start_time_seconds", &[("service", key)], t);
        }
    }
    o.family(
        "hero_proc_service_last_exit_code",
        "gauge",
        "Exit code of the service's last process that ended (128 + N when killed by signal N).",
    );
    for s in services {
        if let Some(code) = s.last_exit.as_deref().and_then(exit_code_of) {
            let key = format!("{}/{}", s.context, s.name);
            o.sample("hero_proc_service_last_exit_code", &[("service", &key)], code);
        }
    }
}

/// The GitOps half: sync results and durations, what is applied, drift, inventory.
async fn reconcile_metrics(o: &mut Out, ctx: &Ctx) {
    use crate::reconciler::DURATION_BUCKETS;
    let status = ctx.reconciler.status().await.ok();
    let m = ctx.reconciler.metrics();
    o.family(
        "hero_proc_reconcile",
        "counter",
        "Reconcile attempts by result (applied, noop, degraded, failed, refused).",
    );
    for result in hero_proc_store::SyncResult::ALL {
        let n = m.results.get(&result).copied().unwrap_or(0);
        o.sample("hero_proc_reconcile_total", &[("result", result.as_str())], n);
    }
    o.family("hero_proc_reconcile_duration_seconds", "histogram", "Time of one reconcile: fetch, load, plan, apply.");
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        let le = format!("{le}");
        o.sample("hero_proc_reconcile_duration_seconds_bucket", &[("le", &le)], m.buckets.get(i).copied().unwrap_or(0));
    }
    o.sample("hero_proc_reconcile_duration_seconds_bucket", &[("le", "+Inf")], m.duration_count);
    o.sample("hero_proc_reconcile_duration_seconds_sum", &[], m.duration_sum_s);
    o.sample("hero_proc_reconcile_duration_seconds_count", &[], m.duration_count);
    o.family("hero_proc_drifted_objects", "gauge", "Live objects that differ from the applied revision.");
    o.sample("hero_proc_drifted_objects", &[], m.drifted);
    o.family("hero_proc_managed_objects", "gauge", "Objects managed from git, by kind.");
    for kind in ["action", "service", "secret"] {
        o.sample("hero_proc_managed_objects", &[("kind", kind)], m.managed.get(kind).copied().unwrap_or(0));
    }
    if let Some(cs) = status.as_ref().and_then(|s| s.commit_status.as_ref()) {
        o.family(
            "hero_proc_commit_status_posts",
            "counter",
            "Commit statuses posted to the forge (hero.yaml forgejo), by result: delivered or failed (each failed try counts).",
        );
        o.sample("hero_proc_commit_status_posts_total", &[("result", "delivered")], cs.delivered);
        o.sample("hero_proc_commit_status_posts_total", &[("result", "failed")], cs.failed);
    }
    if let Some(s) = status {
        o.family("hero_proc_reconcile_applied_revision_info", "gauge", "The applied revision (always 1).");
        if let Some(rev) = &s.applied_revision {
            let host = s.host.clone().unwrap_or_default();
            o.sample("hero_proc_reconcile_applied_revision_info", &[("revision", rev), ("host", &host)], 1);
        }
        o.family("hero_proc_reconcile_suspended", "gauge", "1 while automatic sync is suspended.");
        o.sample("hero_proc_reconcile_suspended", &[], u8::from(s.suspended));
        o.family("hero_proc_reconcile_pinned", "gauge", "1 while a revision is pinned (reconcile --rev).");
        o.sample("hero_proc_reconcile_pinned", &[], u8::from(s.pinned_revision.is_some()));
        o.family("hero_proc_reconcile_consecutive_failures", "gauge", "Failed reconciles in a row.");
        o.sample("hero_proc_reconcile_consecutive_failures", &[], s.consecutive_failures);
        o.family(
            "hero_proc_reconcile_last_applied_timestamp_seconds",
            "gauge",
            "When a revision was last applied (0: never).",
        );
        o.sample(
            "hero_proc_reconcile_last_applied_timestamp_seconds",
            &[],
            s.applied_at_ms.unwrap_or(0) as f64 / 1000.0,
        );
    }
}

/// Artifacts (SPEC 3.6): downloads, bytes, failures by cause, the store's size.
fn artifact_metrics(o: &mut Out, ctx: &Ctx) {
    use std::sync::atomic::Ordering::Relaxed;
    let a = ctx.reconciler.artifacts();
    let c = a.counters();
    o.family("hero_proc_artifact_downloads", "counter", "Artifacts downloaded and checked since the daemon started.");
    o.sample("hero_proc_artifact_downloads_total", &[], c.downloads.load(Relaxed));
    o.family("hero_proc_artifact_download_bytes", "counter", "Bytes received from the artifact registry.");
    o.sample("hero_proc_artifact_download_bytes_total", &[], c.bytes.load(Relaxed));
    o.family("hero_proc_artifact_failures", "counter", "Artifact installs that failed, by cause.");
    for (cause, n) in c.failures() {
        o.sample("hero_proc_artifact_failures_total", &[("cause", cause.label())], n);
    }
    o.family("hero_proc_artifact_cache_bytes", "gauge", "Bytes of the checked files in the artifact store.");
    o.sample("hero_proc_artifact_cache_bytes", &[], a.cache_bytes());
}

/// Serve `GET /metrics` and `GET /metrics/services[/<context>/<name>]` (and nothing
/// else: the RPC stays on the owner-only socket) on a TCP listener. A scraper or two
/// connect here: a small cap, kept below the fd limit. With `token`, every request needs
/// it as `Authorization: Bearer`; without one, `/metrics/services` is refused here (see
/// `metrics_token`).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    ctx: std::sync::Arc<Ctx>,
    token: Option<crate::metrics_token::MetricsToken>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let limits = hero_proc_net::Limits::public("metrics", hero_proc_net::fd_budget(16, 16));
    let token = std::sync::Arc::new(token);
    let make = move |_peer| {
        let ctx = ctx.clone();
        let token = token.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let ctx = ctx.clone();
            let token = token.clone();
            async move {
                let get = req.method() == hyper::Method::GET;
                let path = req.uri().path();
                let text = |status: u16, body: &'static str| {
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                };
                let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok());
                let resp = if token.as_ref().as_ref().is_some_and(|t| !t.admits(authorization)) {
                    text(401, "a bearer token is required here (the one in serve --metrics-token-file)\n").map(
                        |mut r| {
                            r.headers_mut()
                                .insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer"));
                            r
                        },
                    )
                } else if get && path == "/metrics" {
                    let om = wants_openmetrics(req.headers().get("accept").and_then(|v| v.to_str().ok()));
                    let ctype = if om { CONTENT_TYPE } else { PROMETHEUS_CONTENT_TYPE };
                    hyper::Response::builder()
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(render(&ctx, om).await)))
                } else if get
                    && token.is_none()
                    && (path == "/metrics/services" || path.starts_with("/metrics/services/"))
                {
                    text(
                        403,
                        "/metrics/services relays what the services serve on their own sockets, which only the daemon's account can reach: over TCP it needs serve --metrics-token-file (on the RPC socket it needs nothing)\n",
                    )
                } else if let Some((status, body)) = if get { services::route(&ctx, path).await } else { None } {
                    let ctype = if status == 200 { PROMETHEUS_CONTENT_TYPE } else { "text/plain" };
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                } else {
                    text(404, "only GET /metrics and GET /metrics/services[/<context>/<name>] are served here\n")
                };
                Ok::<_, std::convert::Infallible>(resp.unwrap_or_default())
            }
        })
    };
    hero_proc_net::serve(listener, limits, make, std::future::pending()).await;
}
