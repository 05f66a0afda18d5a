//! Health checks: exec, tcp, http (over TCP or a Unix socket), unix_socket, and the hero
//! three-socket convention (SPEC 5.4).
//!
//! Each check is one bounded attempt; the supervisor decides how often to try. Checks
//! are readiness checks: they run after a start until they pass, so an idle daemon does
//! not wake up to poll healthy services.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hero_proc_spec::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::paths::Expand;
use crate::process::Account;

/// The longest one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    /// `Err(why)` when unhealthy (what a check result records).
    pub fn to_result(&self) -> Result<(), String> {
        match self {
            Health::Healthy => Ok(()),
            Health::Unhealthy(why) => Err(why.clone()),
        }
    }
}

/// One socket of a hero service and its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketHealth {
    /// `service`, `ui`, or `<context>/<domain>`.
    pub role: String,
    pub path: PathBuf,
    pub health: Health,
}

/// Run one check once.
pub async fn check(hc: &Probe, service: &str, expand: &Expand) -> Health {
    check_as(hc, service, expand, None).await
}

/// [`check`], with `exec` checks run as `account` (the action's `user:`), in the same
/// clean environment as the action itself.
pub async fn check_as(hc: &Probe, service: &str, expand: &Expand, account: Option<&Account>) -> Health {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, check_inner(hc, service, expand, account)).await {
        Ok(h) => h,
        Err(_) => Health::Unhealthy(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
    }
}

async fn check_inner(hc: &Probe, service: &str, expand: &Expand, account: Option<&Account>) -> Health {
    match hc {
        Probe::UnixSocket(p) => unix_connect(&expand.path(p)).await,
        Probe::Tcp(addr) => match TcpStream::connect(addr.as_str()).await {
            Ok(_) => Health::Healthy,
            Err(e) => Health::Unhealthy(format!("tcp {addr}: {e}")),
        },
        Probe::Exec(cmd) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .env("HERO_ROOTDIR", expand.root())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            if let Some(a) = account {
                crate::process::run_as(c.as_std_mut(), a, expand.root());
            }
            let status = c.status().await;
            match status {
                Ok(s) if s.success() => Health::Healthy,
                Ok(s) => Health::Unhealthy(format!("`{cmd}` exited with {s}")),
                Err(e) => Health::Unhealthy(format!("`{cmd}`: {e}")),
            }
        }
        Probe::Http(h) => {
            let result = match (&h.socket, &h.url) {
                (Some(sock), _) => match UnixStream::connect(expand.path(sock)).await {
                    Ok(s) => http_get(s, "localhost", &h.path).await,
                    Err(e) => Err(format!("connect {}: {e}", expand.word(sock))),
                },
                (None, Some(url)) => {
                    let authority = url.trim_start_matches("http://");
                    match TcpStream::connect(authority).await {
                        Ok(s) => http_get(s, authority, &h.path).await,
                        Err(e) => Err(format!("connect {authority}: {e}")),
                    }
                }
                (None, None) => Err("no socket or url".into()),
            };
            match result {
                Ok(code) if (200..300).contains(&code) => Health::Healthy,
                Ok(code) => Health::Unhealthy(format!("GET {} answered {code}", h.path)),
                Err(e) => Health::Unhealthy(e),
            }
        }
        Probe::HeroSockets(false) => Health::Healthy,
        Probe::HeroSockets(true) => {
            let tree = hero_sockets(service, expand).await;
            match tree.iter().find(|s| !s.health.is_healthy()) {
                None => Health::Healthy,
                Some(s) => Health::Unhealthy(format!("{}: {}", s.role, describe(&s.health))),
            }
        }
    }
}

fn describe(h: &Health) -> &str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy(why) => why,
    }
}

async fn unix_connect(path: &Path) -> Health {
    match UnixStream::connect(path).await {
        Ok(_) => Health::Healthy,
        Err(e) => Health::Unhealthy(format!("connect {}: {e}", path.display())),
    }
}

/// A minimal HTTP/1.1 GET: enough to read a status line, without pulling an HTTP client
/// into the daemon's hot path.
async fn http_get<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S, host: &str, path: &str) -> Result<u16, String> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hero_proc-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.map_err(|e| format!("read: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or("")))
}

/// The hero socket tree of service `s` (SPEC 5.4): `S.sock`, `S_ui.sock` (HTTP) and
/// every `S_server/<context>/<domain>.sock`.
pub async fn hero_sockets(service: &str, expand: &Expand) -> Vec<SocketHealth> {
    let dir = expand.root().join("var/sockets");
    let mut out = Vec::new();
    let main = dir.join(format!("{service}.sock"));
    out.push(SocketHealth { role: "service".into(), health: unix_connect(&main).await, path: main });
    let ui = dir.join(format!("{service}_ui.sock"));
    let ui_health = match UnixStream::connect(&ui).await {
        Ok(s) => match http_get(s, "localhost", "/").await {
            Ok(code) if code < 500 => Health::Healthy,
            Ok(code) => Health::Unhealthy(format!("GET / answered {code}")),
            Err(e) => Health::Unhealthy(e),
        },
        Err(e) => Health::Unhealthy(format!("connect {}: {e}", ui.display())),
    };
    out.push(SocketHealth { role: "ui".into(), path: ui, health: ui_health });
    for (role, path) in domain_sockets(&dir.join(format!("{service}_server"))) {
        let health = unix_connect(&path).await;
        out.push(SocketHealth { role, path, health });
    }
    out
}

/// `<context>/<domain>` and path of every domain socket, sorted.
pub fn domain_sockets(server_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(contexts) = std::fs::read_dir(server_dir) else {
        return out;
    };
    for ctx in contexts.flatten() {
        let Ok(domains) = std::fs::read_dir(ctx.path()) else { continue };
        for d in domains.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if let Some(domain) = name.strip_suffix(".sock") {
                out.push((format!("{}/{domain}", ctx.file_name().to_string_lossy()), d.path()));
            }
        }
    }
    out.sort();
    out
}
