//! `GET /metrics/services[/<context>/<name>]`: the services' own Prometheus metrics,
//! read over their Unix sockets (which Prometheus cannot scrape) or URLs, in one
//! exposition with a `service="context/name"` label on every sample.
//!
//! - A service's target is its main action's `metrics:`; else, when that action has a
//!   `hero_sockets: true` health check, `$HERO_ROOTDIR/var/sockets/<name>.sock` path
//!   `/metrics`; else it has none and is not listed.
//! - Only services in state `running` are scraped. A stopped, failed or starting service
//!   is not listed at all (no `scrape_up 0`): stopping a service is not a scrape failure.
//! - All targets at once (up to 128 connections), each within [`TIMEOUT`] (the wait for
//!   a connection included) and [`MAX_BYTES`]; a target that is slow, dead, answers
//!   non-2xx, too much, or anything [`exposition::parse`] refuses costs only its own
//!   series: `hero_proc_service_scrape_up{service} 0`, and a comment line saying why.
//! - A family two services export is written once (the first service's HELP), with
//!   every service's samples. When their types differ, the first service (in
//!   `context/name` order) keeps it and the other's family is dropped, counted in
//!   `hero_proc_service_scrape_dropped_families{service}` and named in a comment.
//! - Always the Prometheus text format 0.0.4, whatever `Accept` asks (Prometheus reads
//!   it; converting the services' families to OpenMetrics would rename their counters).

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hero_proc_engine::ServiceState;
use hero_proc_engine::paths::Expand;
use hero_proc_spec::{Action, Probe, Ref, Service};

use super::exposition::{self, Family, Label, Merge};
use crate::context::Ctx;

/// The longest one target may take (connect, request, whole body).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The most one target may answer; more fails the target.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Targets read at the same time (each holds a connection, so a file descriptor).
const MAX_CONCURRENT: usize = 128;
/// Families the daemon writes itself here; a service's family of such a name is dropped.
const OWN_PREFIX: &str = "hero_proc_service_scrape_";

/// Where a target answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

/// One service to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `context/name`
    pub service: String,
    pub endpoint: Endpoint,
    pub path: String,
}

/// The target of a service whose main action is `main` (see the module doc).
pub fn target_of(service: &str, main: &Action, expand: &Expand) -> Option<(Endpoint, String)> {
    if let Some(m) = &main.metrics {
        let endpoint = match (&m.socket, &m.url) {
            (Some(sock), _) => Endpoint::Unix(expand.path(sock)),
            (None, Some(url)) => {
                let authority = url.trim_start_matches("http://");
                Endpoint::Tcp(authority.split('/').next().unwrap_or(authority).to_owned())
            }
            (None, None) => return None,
        };
        return Some((endpoint, m.path.clone()));
    }
    main.health.iter().any(|h| h.probe == Probe::HeroSockets(true)).then(|| {
        let sock = expand.root().join("var/sockets").join(format!("{service}.sock"));
        (Endpoint::Unix(sock), "/metrics".to_owned())
    })
}

/// Why `/metrics/services/<context>/<name>` has nothing to scrape.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// No such service (404).
    Unknown(String),
    /// The service has no `metrics:` and no hero sockets (404).
    Untargeted(String),
    /// It has a target but is not running (503).
    NotRunning(String, &'static str),
}

impl NoTarget {
    pub fn status(&self) -> u16 {
        match self {
            NoTarget::NotRunning(..) => 503,
            _ => 404,
        }
    }
}

impl std::fmt::Display for NoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoTarget::Unknown(s) => write!(f, "no service {s}; `hero_proc service list` shows what exists"),
            NoTarget::Untargeted(s) => write!(
                f,
                "service {s} has no metrics target: its main action sets no `metrics:` and has no `hero_sockets: true` health check"
            ),
            NoTarget::NotRunning(s, state) => write!(f, "service {s} is {state}, not running: nothing to scrape"),
        }
    }
}

/// The targets of the running services (`only`: one service, which must exist and have
/// a target), sorted by service. Reads the store for the running services only (a
/// service and its main action each), not every action of the configuration.
pub async fn targets(ctx: &Ctx, only: Option<&Ref>) -> Result<Vec<Target>, NoTarget> {
    let snapshots = ctx.engine.status(None).await.unwrap_or_default();
    let expand = ctx.paths.expand();
    let store = &ctx.engine.store;
    // The main action is the last, resolved as the supervisor resolves it.
    let main_action = |s: &Service| -> Option<Action> {
        let written = &s.actions.last()?.name;
        let found = std::cell::Cell::new(None);
        let r = Ref::resolve(written, &s.context, |r| match store.get_action(&r.context, &r.name) {
            Ok(Some(a)) => {
                found.set(Some(a.value));
                true
            }
            _ => false,
        });
        found.into_inner().or_else(|| store.get_action(&r.context, &r.name).ok().flatten().map(|a| a.value))
    };
    let state_of = |context: &str, name: &str| {
        snapshots
            .iter()
            .find(|x| x.context == context && x.name == name)
            .map(|x| x.state)
            .unwrap_or(ServiceState::Inactive)
    };
    if let Some(r) = only {
        let key = r.to_string();
        let s = match store.get_service(&r.context, &r.name) {
            Ok(Some(s)) => s.value,
            _ => return Err(NoTarget::Unknown(key)),
        };
        let (endpoint, path) =
            main_action(&s).and_then(|a| target_of(&s.name, &a, &expand)).ok_or(NoTarget::Untargeted(key.clone()))?;
        return match state_of(&s.context, &s.name) {
            ServiceState::Running => Ok(vec![Target { service: key, endpoint, path }]),
            state => Err(NoTarget::NotRunning(key, state.as_str())),
        };
    }
    let mut out = Vec::new();
    for snap in snapshots.iter().filter(|x| x.state == ServiceState::Running) {
        let Ok(Some(s)) = store.get_service(&snap.context, &snap.name) else { continue };
        if let Some((endpoint, path)) = main_action(&s.value).and_then(|a| target_of(&s.value.name, &a, &expand)) {
            out.push(Target { service: format!("{}/{}", snap.context, snap.name), endpoint, path });
        }
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

/// The answer to `GET path` when `path` is `/metrics/services` or
/// `/metrics/services/<context>/<name>`: status and body (Prometheus text, or a
/// sentence); `None` for any other path.
pub async fn route(ctx: &Ctx, path: &str) -> Option<(u16, String)> {
    let rest = path.strip_prefix("/metrics/services")?;
    let only = match rest.trim_start_matches('/') {
        "" => None,
        one => match one.trim_end_matches('/').split_once('/') {
            Some((c, n)) if !c.is_empty() && !n.is_empty() && !n.contains('/') => Some(Ref::new(c, n)),
            _ if rest.starts_with('/') => {
                return Some((404, format!("no route {path}; try GET /metrics/services/<context>/<name>\n")));
            }
            _ => return None,
        },
    };
    Some(match targets(ctx, only.as_ref()).await {
        Ok(t) => (200, scrape_all(t).await),
        Err(e) => (e.status(), format!("{e}\n")),
    })
}

/// What one scrape brought.
struct Scraped {
    target: Target,
    took: Duration,
    result: Result<Vec<Family>, String>,
}

/// Scrape `targets` concurrently and write the merged exposition.
pub async fn scrape_all(targets: Vec<Target>) -> String {
    let mut set = tokio::task::JoinSet::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    for (i, t) in targets.into_iter().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let start = Instant::now();
            // The wait for a connection slot counts against the target's time: the whole
            // request stays within TIMEOUT however many targets there are.
            let read = async {
                let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
                fetch(&t.endpoint, &t.path).await
            };
            let result = match tokio::time::timeout(TIMEOUT, read).await {
                Ok(Ok(body)) => exposition::parse(&body, Label { name: "service", value: &t.service }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no complete answer within {}s", TIMEOUT.as_secs())),
            };
            (i, Scraped { target: t, took: start.elapsed(), result })
        });
    }
    let mut done: Vec<(usize, Scraped)> = set.join_all().await;
    done.sort_by_key(|(i, _)| *i);
    render(done.into_iter().map(|(_, s)| s).collect())
}

/// One exposition: the daemon's own families about each scrape, then the services'.
fn render(scraped: Vec<Scraped>) -> String {
    let mut merge = Merge::new(OWN_PREFIX);
    let mut notes = String::new();
    // (service, up, seconds, samples, dropped families)
    let mut rows: Vec<(String, bool, f64, usize, usize)> = Vec::with_capacity(scraped.len());
    for s in scraped {
        let key = s.target.service;
        let secs = s.took.as_secs_f64();
        match s.result {
            Ok(families) => {
                let (samples, dropped) = merge.add(families);
                for d in &dropped {
                    let _ = writeln!(notes, "# hero_proc: {key}: family {} dropped: {}", d.family, one_line(&d.why));
                }
                rows.push((key, true, secs, samples, dropped.len()));
            }
            Err(e) => {
                let _ = writeln!(notes, "# hero_proc: {key}: not scraped: {}", one_line(&e));
                rows.push((key, false, secs, 0, 0));
            }
        }
    }
    let mut out = String::with_capacity(4096);
    out.push_str(&notes);
    let esc = exposition::escape_label;
    type Pick = fn(&(String, bool, f64, usize, usize)) -> String;
    let own: [(&str, &str, Pick); 4] = [
        ("up", "1 when the service's metrics were read and parsed, 0 when not (the comment above says why).", |r| {
            u8::from(r.1).to_string()
        }),
        ("duration_seconds", "How long reading the service's metrics took.", |r| format!("{:.6}", r.2)),
        ("samples", "Samples of the service in this exposition.", |r| r.3.to_string()),
        (
            "dropped_families",
            "Families of the service left out: their type or names conflict with an earlier service's, or with hero_proc's own.",
            |r| r.4.to_string(),
        ),
    ];
    for (suffix, help, pick) in own {
        let _ = writeln!(out, "# HELP {OWN_PREFIX}{suffix} {help}");
        let _ = writeln!(out, "# TYPE {OWN_PREFIX}{suffix} gauge");
        for r in &rows {
            let _ = writeln!(out, "{OWN_PREFIX}{suffix}{{service=\"{}\"}} {}", esc(&r.0), pick(r));
        }
    }
    merge.write_to(&mut out);
    out
}

/// A reason fit for one comment line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect()
}

/// `GET path` over the endpoint: the body of a 2xx answer, at most [`MAX_BYTES`], UTF-8.
async fn fetch(endpoint: &Endpoint, path: &str) -> Result<String, String> {
    use hyper_util::rt::TokioIo;
    match endpoint {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.map_err(|e| format!("connect {}: {e}", p.display()))?;
            get(TokioIo::new(s), "localhost", path).await
        }
        Endpoint::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a.as_str()).await.map_err(|e| format!("connect {a}: {e}"))?;
            get(TokioIo::new(s), a, path).await
        }
    }
}

async fn get<I>(io: I, host: &str, path: &str) -> Result<String, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("http: {e}"))?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .header(hyper::header::USER_AGENT, concat!("hero_proc/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let work = async move {
        let resp = sender.send_request(req).await.map_err(|e| format!("GET {path}: {e}"))?;
        drop(sender);
        if !resp.status().is_success() {
            return Err(format!("GET {path} answered {}", resp.status()));
        }
        let too_big = || format!("GET {path}: the answer is over {} MiB", MAX_BYTES / (1024 * 1024));
        let declared = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(too_big());
        }
        let body = Limited::new(resp.into_body(), MAX_BYTES).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_big()
            } else {
                format!("GET {path}: {e}")
            }
        })?;
        String::from_utf8(body.to_bytes().to_vec()).map_err(|_| format!("GET {path}: the answer is not UTF-8"))
    };
    // The connection is driven beside the request; it ends once the answer is read.
    let (result, _) = tokio::join!(work, conn);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_proc_spec::{HealthCheck, HttpCheck};

    fn action(metrics: Option<HttpCheck>, health: Vec<HealthCheck>) -> Action {
        let mut a = hero_proc_spec::object::check_action("{name: a, script: 'true'}").value.expect("an action");
        a.metrics = metrics;
        a.health = health;
        a
    }

    #[test]
    fn the_target_is_metrics_else_the_hero_socket_else_none() {
        let e = Expand::new("/home/u", "/r");
        let m = HttpCheck { socket: Some("$HERO_ROOTDIR/m.sock".into()), url: None, path: "/m".into() };
        assert_eq!(
            target_of("web", &action(Some(m), vec![]), &e),
            Some((Endpoint::Unix("/r/m.sock".into()), "/m".into()))
        );
        let m = HttpCheck { socket: None, url: Some("http://127.0.0.1:9100".into()), path: "/metrics".into() };
        assert_eq!(
            target_of("web", &action(Some(m), vec![]), &e),
            Some((Endpoint::Tcp("127.0.0.1:9100".into()), "/metrics".into()))
        );
        let hero = vec![Probe::HeroSockets(true).into()];
        assert_eq!(
            target_of("web", &action(None, hero), &e),
            Some((Endpoint::Unix("/r/var/sockets/web.sock".into()), "/metrics".into()))
        );
        assert_eq!(target_of("web", &action(None, vec![Probe::HeroSockets(false).into()]), &e), None);
        assert_eq!(target_of("web", &action(None, vec![]), &e), None);
    }
}
