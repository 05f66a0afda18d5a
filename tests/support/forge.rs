//! Forgejo's commit status endpoint on loopback, as Forgejo documents it
//! (`POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`, JSON `{state, context,
//! description, target_url}`, 201 with the status; 401 without `Authorization: token
//! <it>`). Real HTTP over a real socket, so the daemon's client runs its whole path.
//! Faults (a status code for the next N posts, a stall) are switched on per test.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// One status the forge accepted (or refused, with `code`).
#[derive(Clone, Debug)]
pub struct Posted {
    pub repo: String,
    pub sha: String,
    pub body: Value,
    pub auth: Option<String>,
    pub code: u16,
}

#[derive(Default)]
struct State {
    token: String,
    /// Answer the next N posts with this status.
    fail: Option<(u16, usize)>,
    stall: bool,
    posts: Vec<Posted>,
}

pub struct Forge {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forge {
    pub fn start(token: &str) -> Forge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { token: token.to_owned(), ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &st);
                });
            }
        });
        Forge { addr, state, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/api/v1`.
    pub fn api(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn fail_next(&self, code: u16, n: usize) {
        self.state.lock().unwrap().fail = Some((code, n));
    }

    pub fn stall(&self, on: bool) {
        self.state.lock().unwrap().stall = on;
    }

    /// Every post so far, in arrival order.
    pub fn posts(&self) -> Vec<Posted> {
        self.state.lock().unwrap().posts.clone()
    }

    /// `(state, context, description)` of the accepted statuses of `sha`, in order.
    pub fn statuses(&self, sha: &str) -> Vec<(String, String, String)> {
        self.posts()
            .into_iter()
            .filter(|p| p.sha == sha && p.code == 201)
            .map(|p| {
                let s = |k: &str| p.body[k].as_str().unwrap_or_default().to_owned();
                (s("state"), s("context"), s("description"))
            })
            .collect()
    }
}

impl Drop for Forge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let super::http_head::Head { method, path, authorization: auth, content_length: length } =
        super::http_head::read(&mut reader)?;
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let respond = |out: &mut TcpStream, code: u16, body: &str| -> std::io::Result<()> {
        write!(
            out,
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // /api/v1/repos/{owner}/{repo}/statuses/{sha}
    let route = path.strip_prefix("/api/v1/repos/").and_then(|r| {
        let mut it = r.splitn(4, '/');
        let (o, n, kind, sha) = (it.next()?, it.next()?, it.next()?, it.next()?);
        (kind == "statuses").then(|| (format!("{o}/{n}"), sha.to_owned()))
    });
    let Some((repo, sha)) = route.filter(|_| method == "POST") else { return respond(&mut out, 404, "{}") };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = {
        let mut s = state.lock().unwrap();
        let code = if auth.as_deref() != Some(&format!("token {}", s.token)) {
            401
        } else if let Some((c, n)) = s.fail.filter(|(_, n)| *n > 0) {
            s.fail = Some((c, n - 1));
            c
        } else {
            201
        };
        s.posts.push(Posted { repo, sha, body: json.clone(), auth, code });
        code
    };
    while state.lock().unwrap().stall && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    respond(&mut out, code, &json.to_string())
}
