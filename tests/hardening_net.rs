//! Bounded listeners (issue 13, "Webhook port"): a flood of idle TCP connections to the
//! webhook under a low fd limit must not make the daemon spin, flood its log or stop
//! answering on the RPC socket; slow and idle clients are timed out.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::Daemon;
use support::config_repo::ConfigRepo;

const SECRET: &str = "hook-secret";
/// The webhook's header timeout (`hero_proc_daemon::webhook`), plus slack for a loaded CI.
const HEADER_TIMEOUT_AND_SLACK: Duration = Duration::from_secs(10 + 8);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A daemon following a local repository with the webhook on `port`.
fn daemon_with_webhook(repo: &ConfigRepo, port: u16) -> Daemon {
    repo.commit("empty");
    let addr = format!("127.0.0.1:{port}");
    Daemon::start_env(
        &["--repo", &repo.location(), "--branch", "main", "--interval", "1h", "--webhook-addr", &addr],
        false,
        &[("HERO_PROC_WEBHOOK_SECRET", SECRET)],
    )
}

fn pid(d: &Daemon) -> u32 {
    d.child.as_ref().expect("the daemon runs").id()
}

/// Lower the running daemon's fd limit (the limit `accept` checks against).
fn lower_nofile(pid: u32, n: u32) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{n}"))
        .output()
        .expect("prlimit (util-linux) is needed to lower the daemon's fd limit");
    assert!(out.status.success(), "prlimit failed: {}", support::text(&out.stderr));
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn log_bytes(d: &Daemon) -> u64 {
    std::fs::metadata(d.root().join("daemon.log")).map(|m| m.len()).unwrap_or(0)
}

/// One HTTP/1.1 request on the daemon's Unix socket; `None` if it does not answer in 3 s.
fn over_socket(sock: &Path, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, resp))
}

/// `GET /health` and the `system.info` RPC both answer.
fn socket_answers(d: &Daemon) -> Result<(), String> {
    match over_socket(&d.socket(), "GET", "/health", "") {
        Some((200, _)) => {}
        other => return Err(format!("GET /health: {other:?}")),
    }
    let rpc = r#"{"jsonrpc":"2.0","id":1,"method":"system.info","params":{}}"#;
    match over_socket(&d.socket(), "POST", "/rpc", rpc) {
        Some((200, r)) if r.contains("\"result\"") => Ok(()),
        other => Err(format!("system.info: {other:?}")),
    }
}

fn signed_post(port: u16, body: &str) -> Option<u16> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "POST /hook HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nx-forgejo-signature: {sig}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the server closed this connection (EOF or reset), waiting at most `wait`.
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 before the close is fine
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn an_idle_connection_flood_on_the_webhook_does_not_starve_the_daemon() {
    let repo = ConfigRepo::new();
    let port = free_port();
    let d = daemon_with_webhook(&repo, port);
    let pid = pid(&d);
    lower_nofile(pid, 256);
    socket_answers(&d).expect("the daemon answers before the flood");
    let fds_before = open_fds(pid);

    // 320 idle connections: more than the fd limit allows the daemon to hold. Those over
    // the cap wait in the listen backlog, so every connect completes at once.
    let t = Instant::now();
    let mut idle: Vec<TcpStream> = (0..320)
        .map(|i| TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    assert!(t.elapsed() < Duration::from_secs(5), "320 connects took {:?}: the backlog is too short", t.elapsed());

    let cpu0 = cpu_seconds(pid);
    let log0 = log_bytes(&d);
    let window = Instant::now();
    let mut checks = 0;
    let mut unanswered = None;
    while window.elapsed() < Duration::from_secs(4) {
        match socket_answers(&d) {
            Ok(()) => checks += 1,
            Err(e) => {
                unanswered.get_or_insert(format!("after {:?}: {e}", window.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let logged = log_bytes(&d) - log0;
    let fds = open_fds(pid);
    eprintln!(
        "flood of 320 idle connections under nofile 256: daemon CPU {cpu:.2} s and log +{logged} bytes in {:.1} s; \
         fds {fds_before} -> {fds}; {checks} health+rpc checks answered; first unanswered: {unanswered:?}",
        window.elapsed().as_secs_f64()
    );
    assert!(unanswered.is_none(), "the RPC socket stopped answering during the flood {}", unanswered.unwrap());
    assert!(cpu < 1.0, "the daemon spun: {cpu:.2} s of CPU in 4 s with idle connections open");
    assert!(logged < 64 * 1024, "the daemon's log grew by {logged} bytes in 4 s");
    assert!(fds < 200, "the daemon holds {fds} fds for 320 idle connections (limit 256)");
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    assert!(log.contains("webhook: 32 connections open, at the cap"), "the cap is not reported in the log:\n{log}");

    // The connections the daemon took are closed after the header timeout.
    let deadline = Instant::now() + HEADER_TIMEOUT_AND_SLACK;
    let mut closed = 0;
    for s in idle.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if closed_by_server(s, left) {
            closed += 1;
        } else {
            break;
        }
    }
    eprintln!("{closed} idle connections closed by the daemon after {:?}", window.elapsed());
    assert!(closed >= 1, "no idle connection was closed by the daemon within {HEADER_TIMEOUT_AND_SLACK:?}");
    socket_answers(&d).expect("the daemon answers after the idle timeout");

    // The flood goes away; a signed push is accepted.
    drop(idle);
    let body = r#"{"ref":"refs/heads/main"}"#;
    support::wait_for("a signed push to be accepted (202)", Duration::from_secs(20), || {
        signed_post(port, body) == Some(202)
    });
    eprintln!("signed push accepted {:?} after the flood began", window.elapsed());
    let cpu_total = cpu_seconds(pid);
    eprintln!("daemon CPU over the whole test: {cpu_total:.2} s; log {} bytes", log_bytes(&d));
}

#[test]
fn accept_failing_for_lack_of_fds_backs_off_instead_of_spinning() {
    let repo = ConfigRepo::new();
    let port = free_port();
    let d = daemon_with_webhook(&repo, port);
    let pid = pid(&d);
    // Fewer fds than the webhook's cap needs: accept itself fails with EMFILE.
    let limit = open_fds(pid) as u32 + 8;
    lower_nofile(pid, limit);
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    support::wait_for("the daemon to run out of fds", Duration::from_secs(10), || open_fds(pid) >= limit as usize);

    let cpu0 = cpu_seconds(pid);
    let log0 = log_bytes(&d);
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let logged = log_bytes(&d) - log0;
    eprintln!("out of fds (nofile {limit}) with 40 connections: daemon CPU {cpu:.2} s and log +{logged} bytes in 4 s");
    assert!(cpu < 1.0, "the daemon spun on accept errors: {cpu:.2} s of CPU in 4 s");
    assert!(logged < 16 * 1024, "the daemon's log grew by {logged} bytes in 4 s of accept errors");
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    assert!(log.contains("accept failed") && log.contains("LimitNOFILE"), "the accept error is not explained:\n{log}");

    // The clients leave: fds come back and the RPC socket answers again.
    drop(idle);
    support::wait_for("the RPC socket to answer again", Duration::from_secs(20), || socket_answers(&d).is_ok());
}

#[test]
fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let repo = ConfigRepo::new();
    let port = free_port();
    let d = daemon_with_webhook(&repo, port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let head = b"POST /hook HTTP/1.1\r\nhost: localhost\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let start = Instant::now();
    let mut sent = 0;
    // One byte every 250 ms, never finishing the head: closed after the header timeout.
    let closed_after = loop {
        if start.elapsed() > HEADER_TIMEOUT_AND_SLACK {
            panic!("a slowloris connection is still open after {:?} ({sent} header bytes sent)", start.elapsed());
        }
        let byte = head[sent % head.len()];
        if s.write_all(&[byte]).is_err() {
            break start.elapsed();
        }
        sent += 1;
        if closed_by_server(&mut s, Duration::from_millis(250)) {
            break start.elapsed();
        }
    };
    eprintln!("slowloris closed after {closed_after:?} ({sent} bytes sent one at a time)");
    assert!(
        closed_after >= Duration::from_secs(5),
        "closed too early ({closed_after:?}): the timeout is not the cause"
    );
    socket_answers(&d).expect("the daemon answers");
    assert_eq!(signed_post(port, "{}"), Some(202), "a signed push after the slowloris");
}

#[test]
fn a_webhook_body_sent_too_slowly_gets_408() {
    let repo = ConfigRepo::new();
    let port = free_port();
    let _d = daemon_with_webhook(&repo, port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4096\r\n\r\n").unwrap();
    let start = Instant::now();
    // One body byte every 250 ms (4 B/s), far below the webhook's 1 KiB/s after 5 s.
    let mut resp = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    while start.elapsed() < Duration::from_secs(20) {
        if s.write_all(b"x").is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if resp.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let resp = String::from_utf8_lossy(&resp);
    eprintln!("slow body answered after {:?}: {}", start.elapsed(), resp.lines().next().unwrap_or(""));
    assert!(resp.starts_with("HTTP/1.1 408"), "a 4 B/s body was not refused with 408 in 20 s: {resp:?}");
    assert!(start.elapsed() >= Duration::from_secs(4), "refused before the grace period: {:?}", start.elapsed());
}
