//! A Forgejo generic package registry on loopback, as Forgejo documents its endpoints
//! (`/api/packages/{owner}/generic/{name}/{version}/{file}`): `PUT` uploads (201, 409
//! when the file exists), `GET`/`HEAD` download (200, 404), and with a token every
//! request without `Authorization: token <it>` gets 401. Real HTTP over a real socket, so
//! the daemon's client runs its whole path; faults (a status, a body cut short, a stall)
//! are switched on per test.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const OWNER: &str = "hero";

/// What the next downloads do instead of a clean 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answer this status with an empty body.
    Status(u16),
    /// Announce the whole length, send this many bytes, close.
    Truncate(usize),
    /// Announce the whole length, send this many bytes, then nothing until stopped.
    Stall(usize),
    /// Send the body at this many bytes per 10 ms (a slow but moving download).
    Slow(usize),
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    token: Option<String>,
    fault: Option<Fault>,
    /// Answer downloads with `302 Found` to this base URL (object storage elsewhere).
    redirect: Option<String>,
    /// The `Authorization` header of each request, for leak checks (what was sent).
    seen_auth: Vec<Option<String>>,
}

pub struct Registry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    gets: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Registry {
    /// A registry on 127.0.0.1 (a free port); with `token`, requests must carry it.
    pub fn start(token: Option<&str>) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { token: token.map(str::to_owned), ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(AtomicUsize::new(0));
        let (s, st, g) = (state.clone(), stop.clone(), gets.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, st, g) = (s.clone(), st.clone(), g.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &st, &g);
                });
            }
        });
        Registry { addr, state, stop, gets, thread: Some(thread) }
    }

    /// The `registry.url` of hero.yaml.
    pub fn url(&self) -> String {
        format!("http://{}/api/packages/{OWNER}/generic", self.addr)
    }

    /// Upload through the API, as a CI job does (`PUT`); the HTTP status.
    pub fn upload(&self, name: &str, version: &str, body: &[u8], token: Option<&str>) -> u16 {
        let path = format!("/api/packages/{OWNER}/generic/{name}/{version}/{name}");
        let mut conn = TcpStream::connect(self.addr).unwrap();
        let auth = token.map(|t| format!("Authorization: token {t}\r\n")).unwrap_or_default();
        write!(
            conn,
            "PUT {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// Send downloads to `other` (its `url()`), as a forge that keeps files elsewhere.
    pub fn redirect_to(&self, other: &Registry) {
        self.state.lock().unwrap().redirect = Some(other.url());
    }

    pub fn set_fault(&self, f: Fault) {
        self.state.lock().unwrap().fault = Some(f);
    }

    /// Downloads answered so far (GET requests).
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Every `Authorization` header received, in order.
    pub fn auth_headers(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().seen_auth.clone()
    }

    /// Stop listening: connections are refused from now on, stalled answers end.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool, gets: &AtomicUsize) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let super::http_head::Head { method, path, authorization: auth, content_length: length } =
        super::http_head::read(&mut reader)?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let respond = |out: &mut TcpStream, status: &str, body: &[u8]| -> std::io::Result<()> {
        write!(out, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
        out.write_all(body)
    };
    let (token, fault, redirect) = {
        let mut s = state.lock().unwrap();
        s.seen_auth.push(auth.clone());
        (s.token.clone(), s.fault, s.redirect.clone())
    };
    let prefix = format!("/api/packages/{OWNER}/generic/");
    let Some(key) = path.strip_prefix(&prefix).map(str::to_owned) else {
        return respond(&mut out, "404 Not Found", b"");
    };
    if let Some(t) = token
        && auth.as_deref() != Some(&format!("token {t}"))
    {
        return respond(&mut out, "401 Unauthorized", b"");
    }
    match method.as_str() {
        "PUT" => {
            let mut s = state.lock().unwrap();
            if s.files.contains_key(&key) {
                drop(s);
                return respond(&mut out, "409 Conflict", b"");
            }
            s.files.insert(key, body);
            drop(s);
            respond(&mut out, "201 Created", b"")
        }
        "GET" | "HEAD" => {
            if method == "GET" {
                gets.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(to) = redirect {
                write!(
                    out,
                    "HTTP/1.1 302 Found\r\nLocation: {to}/{key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                return Ok(());
            }
            let file = state.lock().unwrap().files.get(&key).cloned();
            let Some(file) = file else { return respond(&mut out, "404 Not Found", b"") };
            match fault.unwrap_or(Fault::None) {
                Fault::Status(code) => respond(&mut out, &format!("{code} Fault"), b""),
                f => {
                    write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", file.len())?;
                    if method == "HEAD" {
                        return Ok(());
                    }
                    match f {
                        Fault::Truncate(n) => out.write_all(&file[..n.min(file.len())]),
                        Fault::Stall(n) => {
                            out.write_all(&file[..n.min(file.len())])?;
                            out.flush()?;
                            for _ in 0..600 {
                                if stop.load(Ordering::SeqCst) {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Ok(())
                        }
                        Fault::Slow(per_10ms) => {
                            for chunk in file.chunks(per_10ms.max(1)) {
                                out.write_all(chunk)?;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Ok(())
                        }
                        _ => out.write_all(&file),
                    }
                }
            }
        }
        _ => respond(&mut out, "405 Method Not Allowed", b""),
    }
}

/// A program to publish as an artifact: prints `<tag> <args>` into
/// `$HERO_ROOTDIR/<name>.out`, then stays up (a service). `pad` bytes of comment make it
/// as large as a test needs.
pub fn program(name: &str, tag: &str, pad: usize) -> Vec<u8> {
    let mut p = format!("#!/bin/sh\necho \"{tag} $*\" > \"$HERO_ROOTDIR/{name}.out\"\nexec sleep 600\n").into_bytes();
    if pad > 0 {
        p.extend_from_slice(b"# ");
        p.extend(std::iter::repeat_n(b'x', pad));
        p.push(b'\n');
    }
    p
}

/// `sha256:HEX` of bytes, as artifacts.lock writes it.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
