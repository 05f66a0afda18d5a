//! A harness that boots the real `hero_proc serve` in a temporary HERO_ROOTDIR and
//! cleans up every process it started (found by the HERO_ROOTDIR the daemon gives each
//! child), so tests run in parallel and leave nothing behind.
#![allow(dead_code)]

pub mod bench;
pub mod config_repo;
pub mod forge;
pub mod http_head;
pub mod registry;
pub mod require;
pub mod rng;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `hero_proc` under test: the one this build made, unless a full benchmark run was
/// pointed at another build (see [`measure_binary_from_env`]).
pub fn bin() -> &'static str {
    BENCH_BINARY.get().map_or(env!("CARGO_BIN_EXE_hero_proc"), String::as_str)
}

static BENCH_BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// In a full benchmark run, `HERO_BENCH_BINARY=PATH` measures that build instead of this
/// one (an A/B of two builds: run the bench once with each, alternated). Tests and smoke
/// runs always use the binary this build made. Returns the binary measured.
pub fn measure_binary_from_env(mode: bench::Mode) -> &'static str {
    if mode == bench::Mode::Full
        && let Ok(other) = std::env::var("HERO_BENCH_BINARY")
    {
        assert!(Path::new(&other).is_file(), "HERO_BENCH_BINARY={other}: no such file");
        let _ = BENCH_BINARY.set(other);
    }
    bin()
}

pub struct Daemon {
    pub root: tempfile::TempDir,
    pub child: Option<Child>,
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Run the hero_db check (off by default: most tests do not define hero_db).
    pub check_hero_db: bool,
    /// Extra environment for the daemon (e.g. an age key file, a webhook secret).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// A fresh root and a daemon serving on it.
    pub fn start() -> Daemon {
        Daemon::start_with(&[], false)
    }

    pub fn start_with(args: &[&str], check_hero_db: bool) -> Daemon {
        Daemon::start_env(args, check_hero_db, &[])
    }

    pub fn start_env(args: &[&str], check_hero_db: bool, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon {
            root: tempfile::tempdir().unwrap(),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            check_hero_db,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        d.spawn();
        d
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.root().join("var/sockets/hero_proc.sock")
    }

    /// Start (or restart) the daemon process and wait until it answers.
    pub fn spawn(&mut self) {
        self.launch();
        let start = Instant::now();
        while !self.cli(&["system", "info"]).status.success() {
            if start.elapsed() > Duration::from_secs(20) {
                let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                let log = std::fs::read_to_string(self.root().join("daemon.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("the daemon did not answer (exit: {exited:?}); its log ends:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the daemon process without waiting for it (a benchmark times its start).
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root().join("daemon.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(&self.args);
        if self.check_hero_db {
            cmd.env_remove("HERO_PROC_NO_AUTOSTART_DB");
        } else {
            cmd.env("HERO_PROC_NO_AUTOSTART_DB", "1");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .env("HERO_ROOTDIR", self.root())
            .env_remove("HERO_PROC_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// `kill -9` the daemon (its children keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CLI, pointed at this daemon.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).env("HERO_ROOTDIR", self.root()).env_remove("HERO_PROC_SOCKET").env("NO_COLOR", "1");
        c
    }

    /// Run the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run the CLI against this daemon with `input` on its stdin (`secret set` reads the
    /// value there).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write as _;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `hero_proc secret set` of `context/name` (or a bare name in `core`) to `value`.
    pub fn set_secret(&self, r: &str, value: &str) -> Output {
        let (context, name) = r.split_once('/').unwrap_or(("core", r));
        self.cli_stdin(&["secret", "set", name, "--context", context], &format!("{value}\n"))
    }

    /// Run the CLI with `--format json` and parse its output; panics with stderr on failure.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--format", "json"];
        a.extend_from_slice(args);
        let out = self.cli(&a);
        assert!(out.status.success(), "hero_proc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Write a YAML file under the root and `service set` it.
    pub fn set(&self, yaml: &str) {
        let p = self.root().join(format!("set-{}.yaml", nanos()));
        std::fs::write(&p, yaml).unwrap();
        let out = self.cli(&["service", "set", p.to_str().unwrap()]);
        assert!(out.status.success(), "service set failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn status(&self, name: &str) -> serde_json::Value {
        self.json(&["service", "status", name])
    }

    /// Wait until `service status NAME` satisfies `f`; returns that status.
    pub fn wait_status(&self, name: &str, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.status(name);
            if f(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {name} to be {what}; last: {s}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// PIDs of live processes started for this root (the daemon sets HERO_ROOTDIR).
    pub fn children(&self) -> Vec<u32> {
        let marker = format!("HERO_ROOTDIR={}", self.root().display());
        let daemon = self.child.as_ref().map(|c| c.id());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if Some(pid) == daemon || is_zombie(pid) {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            if env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) && !is_hero_proc(pid) {
                out.push(pid);
            }
        }
        out.sort();
        out
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()) == Some('Z'))
        .unwrap_or(true)
}

fn is_hero_proc(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("hero_proc"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        for pid in self.children() {
            // SAFETY: signalling a process we started (it carries our unique root).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        // And whatever is left in this root's service cgroups, which go too.
        hero_proc_engine::contain::remove_tree(self.root());
    }
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn alive(pid: u32) -> bool {
    !is_zombie(pid)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Daemon {
    /// Events the daemon recorded (`log query --source SOURCE`), oldest first.
    pub fn events(&self, source: &str) -> Vec<serde_json::Value> {
        let v = self.json(&["log", "query", "--source", source, "--limit", "1000"]);
        let mut v = v.as_array().cloned().unwrap_or_default();
        v.sort_by_key(|e| e["ts_ms"].as_i64().unwrap_or(0));
        v
    }

    /// Wait for an event of `source` whose message contains `needle`; returns it.
    pub fn wait_event(&self, source: &str, needle: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(e) =
                self.events(source).into_iter().find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
            {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for a {source} event containing {needle:?}; saw: {:?}",
                self.events(source)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Each way a value can sit in a file: raw, hex (both cases), base64 standard and URL-safe,
/// padded or not, at each of the 3 byte offsets (a value inside a longer encoded blob is
/// encoded from whatever offset it lands at; the stable middle of each is searched).
pub fn encodings(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![
        ("raw".to_owned(), value.to_vec()),
        ("hex".to_owned(), hex::encode(value).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(value).into_bytes()),
    ];
    for (name, engine) in [
        ("base64", &STANDARD),
        ("base64-nopad", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE),
        ("base64url-nopad", &URL_SAFE_NO_PAD),
    ] {
        for offset in 0..3usize {
            // Prefix `offset` bytes, encode, then keep only the characters that depend on
            // the value alone: drop the first group touched by the prefix and the last
            // (possibly partial) group.
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(value);
            let enc = engine.encode(&buf);
            let skip = if offset == 0 { 0 } else { 4 };
            let full = (offset + value.len()) / 3 * 4;
            if full > skip + 8 {
                out.push((format!("{name}@{offset}"), enc.as_bytes()[skip..full].to_vec()));
            }
            if offset == 0 {
                out.push((format!("{name}-whole"), enc.into_bytes()));
            }
        }
    }
    out
}

/// Every file under `dir` (recursively, `skip` excluded) holding `value` in any of its
/// [`encodings`], as "path (encoding)".
pub fn leaks(dir: &Path, value: &str, skip: &[&Path]) -> Vec<String> {
    let encs = encodings(value.as_bytes());
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if skip.iter().any(|s| p.starts_with(s)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                for (name, needle) in &encs {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                        hits.push(format!("{} ({name})", p.display()));
                    }
                }
            }
        }
    }
    hits
}

/// The same, for text the daemon said (CLI output, RPC answers).
pub fn leaks_in(said: &str, value: &str) -> Vec<String> {
    encodings(value.as_bytes())
        .into_iter()
        .filter(|(_, n)| said.as_bytes().windows(n.len()).any(|w| w == n.as_slice()))
        .map(|(name, _)| name)
        .collect()
}

/// The stored ciphertext of every secret in the root's database: each must be an age file.
pub fn assert_secrets_are_age_files(root: &Path) {
    let db = root.join("var/hero_proc/hero_proc.db");
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut stmt = conn.prepare("SELECT context, name, ciphertext FROM secrets").unwrap();
    let rows: Vec<(String, String, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    assert!(!rows.is_empty(), "no secret stored in {}", db.display());
    for (context, name, ct) in rows {
        assert!(
            ct.starts_with(b"age-encryption.org/v1\n"),
            "secret {context}/{name} is stored as {:?}..., not an age file",
            String::from_utf8_lossy(&ct[..ct.len().min(40)])
        );
    }
}

impl Daemon {
    /// Ids of every job the store records (newest first), with their phase.
    pub fn jobs(&self) -> Vec<(i64, String)> {
        self.json(&["job", "list", "--limit", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["id"].as_i64().unwrap(), j["phase"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}
