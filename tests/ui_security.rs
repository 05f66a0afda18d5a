//! The admin UI over TCP, attacked as a local user would: `hero_proc ui --addr` in front
//! of a real daemon. Without the login token nothing is served (also to uid 65534), a
//! foreign `Host` gets 421, a write from another origin 403, and no client-chosen
//! repository, branch or host reaches the daemon (a recording relay on the UI's path to
//! the daemon socket proves what the daemon was sent).

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::config_repo::*;
use support::{Daemon, bin, text, wait_for};

/// These tests play a second local account (uid 65534) against a root UI.
fn require_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("HERO_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIP: not root (HERO_TEST_ALLOW_SKIP=1)");
        return false;
    }
    panic!(
        "this test must run as root (it plays an unprivileged user against a root UI); set HERO_TEST_ALLOW_SKIP=1 to skip it"
    );
}

struct Ui {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
    token: String,
    token_file: PathBuf,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ui(root: &Path, daemon_socket: Option<&Path>, extra: &[&str]) -> Ui {
    let mut cmd = Command::new(bin());
    let addr = if extra.contains(&"--addr") { &[][..] } else { &["--addr", "127.0.0.1:0"][..] };
    cmd.arg("ui").args(addr).args(extra).env("HERO_ROOTDIR", root).env_remove("HERO_PROC_SOCKET");
    if let Some(s) = daemon_socket {
        cmd.arg("--socket").arg(s);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("hero_proc ui: ").unwrap_or_else(|| panic!("no login URL printed: {line:?}"));
    let (base, token) = url.split_once("/?token=").unwrap_or_else(|| panic!("not a login URL: {url}"));
    let addr = base.strip_prefix("http://").unwrap().to_owned();
    Ui { child, addr, token: token.to_owned(), token_file: root.join("var/hero_proc/ui.token") }
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request; `headers` are full lines (`Host: ...`).
fn http(addr: &str, method: &str, target: &str, headers: &[String]) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    parse(&raw)
}

fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Resp { status, head: head.to_owned(), body: body.to_owned() }
}

fn host(ui: &Ui) -> String {
    format!("Host: {}", ui.addr)
}

fn bearer(ui: &Ui) -> String {
    format!("Authorization: Bearer {}", ui.token)
}

/// The same request as uid/gid 65534 (bash's /dev/tcp: no client the test controls).
fn http_as_nobody(addr: &str, target: &str) -> Resp {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET {target} HTTP/1.1\\r\\nHost: {addr}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", &script])
        .current_dir("/")
        .output()
        .expect("setpriv (util-linux) runs a command as uid 65534");
    assert!(out.status.success(), "as uid 65534: {}", text(&out.stderr));
    parse(&text(&out.stdout))
}

#[test]
fn tcp_needs_the_login_token() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let ui = start_ui(d.root(), None, &[]);
    assert_eq!(ui.token.len(), 64, "32 random bytes, hex");

    // The token file: owner-only, ours, the printed token.
    let m = std::fs::symlink_metadata(&ui.token_file).unwrap();
    assert!(m.is_file());
    assert_eq!(m.mode() & 0o7777, 0o600, "ui.token mode");
    assert_eq!(m.uid(), 0);
    assert_eq!(std::fs::read_to_string(&ui.token_file).unwrap().trim(), ui.token);

    // No token: nothing but /health.
    let r = http(&ui.addr, "GET", "/api/service.list", &[host(&ui)]);
    assert_eq!(r.status, 401, "{}", r.head);
    assert!(r.body.contains("login URL"), "the refusal says what to do: {}", r.body);
    for page in ["/", "/index.html", "/app.js", "/api/job.logs?id=1", "/api/secret.list"] {
        assert_eq!(http(&ui.addr, "GET", page, &[host(&ui)]).status, 401, "{page}");
    }
    let r = http(&ui.addr, "POST", "/api/reconcile.suspend", &[host(&ui), format!("Origin: http://{}", ui.addr)]);
    assert_eq!(r.status, 401);
    assert_eq!(http(&ui.addr, "GET", "/health", &[host(&ui)]).status, 200);

    // Another local account: refused the same way.
    let r = http_as_nobody(&ui.addr, "/api/job.list");
    assert_eq!(r.status, 401, "uid 65534 got: {}\n{}", r.head, r.body);
    assert_eq!(http_as_nobody(&ui.addr, "/health").status, 200, "the relay as uid 65534 works");

    // A wrong token, however close, is refused.
    let mut wrong = ui.token.clone().into_bytes();
    wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    for h in [
        format!("Authorization: Bearer {wrong}"),
        format!("Cookie: hero_proc_ui={wrong}"),
        format!("Authorization: Bearer {}", &ui.token[..63]),
        format!("Authorization: Basic {}", ui.token),
        format!("Cookie: other={}", ui.token),
    ] {
        assert_eq!(http(&ui.addr, "GET", "/api/service.list", &[host(&ui), h.clone()]).status, 401, "{h}");
    }
    assert_eq!(http(&ui.addr, "GET", &format!("/?token={wrong}"), &[host(&ui)]).status, 401);

    // Bearer works.
    let r = http(&ui.addr, "GET", "/api/service.list", &[host(&ui), bearer(&ui)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with('['), "{}", r.body);

    // The login URL sets the cookie and drops the token from the address.
    let r = http(&ui.addr, "GET", &format!("/?token={}", ui.token), &[host(&ui)]);
    assert_eq!(r.status, 303, "{}", r.head);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("the login sets a cookie");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attrs[0], format!("hero_proc_ui={}", ui.token));
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "cookie lacks {a}: {cookie}");
    }
    let c = format!("Cookie: {}", attrs[0]);
    assert_eq!(http(&ui.addr, "GET", "/", &[host(&ui), c.clone()]).status, 200);
    let r = http(&ui.addr, "GET", "/api/system.info", &[host(&ui), c]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"version\""), "{}", r.body);

    // A stopped UI takes its token file with it.
    // SAFETY: signalling the UI process this test started.
    unsafe { libc::kill(ui.child.id() as i32, libc::SIGTERM) };
    wait_for("the token file to go with the UI", Duration::from_secs(10), || !ui.token_file.exists());
}

/// A daemon following a repository of one service, applied (the repository must outlive
/// the daemon).
fn following_one_service() -> (ConfigRepo, Daemon, String) {
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "one"));
    let first = repo.commit("web");
    let d = follow(&repo);
    wait_applied(&d, &first);
    (repo, d, first)
}

#[test]
fn a_foreign_host_is_misdirected_and_writes_need_this_origin() {
    if !require_root() {
        return;
    }
    let (_repo, d, _) = following_one_service();
    let ui = start_ui(d.root(), None, &["--allow-host", "hero.example"]);
    let port = ui.addr.rsplit_once(':').unwrap().1;

    // DNS rebinding: the right token is no help under another name.
    for h in ["Host: evil.example", &format!("Host: evil.example:{port}"), &format!("Host: 10.0.0.1:{port}")] {
        let r = http(&ui.addr, "GET", "/api/service.list", &[h.to_owned(), bearer(&ui)]);
        assert_eq!(r.status, 421, "{h}: {}", r.head);
        assert!(r.body.contains("--allow-host"), "{}", r.body);
    }
    assert_eq!(http(&ui.addr, "GET", "/api/service.list", &[bearer(&ui)]).status, 421, "no Host at all");
    for h in [host(&ui), format!("Host: localhost:{port}"), format!("Host: hero.example:{port}")] {
        assert_eq!(http(&ui.addr, "GET", "/api/service.list", &[h.clone(), bearer(&ui)]).status, 200, "{h}");
    }

    // Writes: missing or foreign Origin is refused and changes nothing.
    for origin in
        [None, Some("http://evil.example"), Some("null"), Some(&format!("http://evil.example:{port}") as &str)]
    {
        let mut h = vec![host(&ui), bearer(&ui)];
        h.extend(origin.map(|o| format!("Origin: {o}")));
        let r = http(&ui.addr, "POST", "/api/reconcile.suspend", &h);
        assert_eq!(r.status, 403, "Origin {origin:?}: {}", r.head);
        assert!(r.body.contains("Origin"), "{}", r.body);
    }
    assert_eq!(status(&d)["suspended"], false, "a refused write reached the daemon");
    let r = http(
        &ui.addr,
        "POST",
        "/api/reconcile.suspend",
        &[host(&ui), bearer(&ui), format!("Origin: http://{}", ui.addr)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(&d)["suspended"], true);
}

/// Relays the UI's connections to the daemon socket and keeps every byte the UI sent.
struct Relay {
    socket: PathBuf,
    sent: Arc<Mutex<Vec<u8>>>,
}

fn relay(dir: &Path, daemon: PathBuf) -> Relay {
    let socket = dir.join("relay.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut upstream = UnixStream::connect(&daemon).unwrap();
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if upstream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    Relay { socket, sent }
}

#[test]
fn the_ui_forwards_no_repository_branch_or_host_and_bounds_reads() {
    if !require_root() {
        return;
    }
    let (_repo, d, first) = following_one_service();
    // Root's private repository, which the local attacker wants the daemon to read.
    let private = ConfigRepo::new();
    private.write("actions/stolen.yaml", &service("stolen", "PRIVATE-7f3e"));
    private.commit("private");
    let tmp = tempfile::tempdir().unwrap();
    let relay = relay(tmp.path(), d.socket());
    let ui = start_ui(d.root(), Some(&relay.socket), &[]);
    let get = |target: &str| http(&ui.addr, "GET", target, &[host(&ui), bearer(&ui)]);

    let loc = private.location();
    for (target, names) in [
        (format!("/api/reconcile.plan?repo={loc}"), "`repo`"),
        (format!("/api/reconcile.plan?rev=main&repo=file://{loc}"), "`repo`"),
        ("/api/reconcile.plan?branch=other".to_owned(), "`branch`"),
        ("/api/reconcile.plan?host=other-host".to_owned(), "`host`"),
        ("/api/reconcile.plan?rev=ssh://root@example.org/x".to_owned(), "`rev`"),
        ("/api/reconcile.plan?rev=--upload-pack=x".to_owned(), "`rev`"),
        ("/api/job.logs?id=1&tail=100000000".to_owned(), "`tail`"),
        ("/api/job.list?service=../../etc".to_owned(), "`service`"),
        ("/api/job.list?limit=1000000".to_owned(), "`limit`"),
        ("/api/service.list?context=x".to_owned(), "`context`"),
    ] {
        let r = get(&target);
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert!(r.body.contains(names), "{target}: the refusal names the parameter: {}", r.body);
    }
    let r = http(
        &ui.addr,
        "POST",
        &format!("/api/reconcile.apply?repo={loc}"),
        &[host(&ui), bearer(&ui), format!("Origin: http://{}", ui.addr)],
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // The daemon's own repository still plans, at a revision of it too (and proves the
    // relay is on the UI's path).
    let r = get("/api/reconcile.plan");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("stolen"), "{}", r.body);
    let r = get(&format!("/api/reconcile.plan?rev={}", &first[..12]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&first), "{}", r.body);
    wait_for("the relay to see the plans", Duration::from_secs(10), || {
        text(&relay.sent.lock().unwrap()).matches("reconcile.plan").count() >= 2
    });

    let sent = text(&relay.sent.lock().unwrap());
    for never in [loc.as_str(), "\"repo\"", "\"branch\"", "\"host\"", "other-host", "ssh://", "upload-pack", "../"] {
        assert!(!sent.contains(never), "the daemon was sent {never:?}:\n{sent}");
    }
    assert!(!sent.contains("100000000"), "an unbounded tail reached the daemon");
}

#[test]
fn a_wildcard_bind_needs_an_allowed_host_and_a_planted_token_symlink_is_not_followed() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["ui", "--addr", "0.0.0.0:0"])
        .env("HERO_ROOTDIR", root.path())
        .env_remove("HERO_PROC_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while exited.is_none() && std::time::Instant::now() < deadline {
        exited = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(exited.is_some_and(|s| !s.success()), "a UI that would refuse every Host started");
    assert!(text(&out.stderr).contains("--allow-host NAME"), "{}", text(&out.stderr));

    // A file someone planted where the token goes is replaced, never written through.
    let victim = root.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let token_file = root.path().join("var/hero_proc/ui.token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &token_file).unwrap();
    let ui = start_ui(root.path(), None, &["--addr", "0.0.0.0:0", "--allow-host", "hero.example"]);
    assert!(ui.addr.starts_with("hero.example:"), "the login URL names the allowed host: {}", ui.addr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let m = std::fs::symlink_metadata(&token_file).unwrap();
    assert!(m.is_file() && m.mode() & 0o7777 == 0o600, "{m:?}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), ui.token);
    let port = ui.addr.rsplit_once(':').unwrap().1;
    let r = http(&format!("127.0.0.1:{port}"), "GET", "/", &[format!("Host: {}", ui.addr), bearer(&ui)]);
    assert_eq!(r.status, 200, "{}", r.head);
    let r = http(&format!("127.0.0.1:{port}"), "GET", "/", &[format!("Host: 127.0.0.1:{port}"), bearer(&ui)]);
    assert_eq!(r.status, 421, "{}", r.head);
}
