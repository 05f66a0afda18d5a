//! Issue 13, "Paths the daemon does not own" and "Full disk": the daemon as root with
//! folders and files it does not own, a second daemon on the same database or socket,
//! the database deleted under it, and a full disk.

use crate::support;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, alive, text, wait_for};

const SLEEPER: &str = "actions:\n  - name: sleeper\n    interpreter: sh\n    script: exec sleep 1000\n    process: true\n    restart: { policy: always, delay: 100ms, max_delay: 1s }\nservices:\n  - name: sleeper\n";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// These tests need root (a nobody-owned socket, tmpfs mounts). Not root: fail loudly
/// unless skipping was asked for.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("HERO_TEST_ALLOW_SKIP").as_deref() == Ok("1"),
        "this test needs root (run as root, or set HERO_TEST_ALLOW_SKIP=1 to skip it)"
    );
    eprintln!("SKIP: not root and HERO_TEST_ALLOW_SKIP=1");
    false
}

/// `hero_proc serve` on `root` with `args`, expected to refuse to start: its output, or a
/// panic if it is still running after 15 s (it then started, which is the bug).
fn serve_refused(root: &Path, args: &[&str]) -> Output {
    let mut child = serve_cmd(root, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("`serve {args:?}` was expected to refuse to start but is running; stderr: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(support::bin());
    c.arg("serve")
        .args(args)
        .env("HERO_ROOTDIR", root)
        .env("HERO_PROC_NO_AUTOSTART_DB", "1")
        .env_remove("HERO_PROC_SOCKET")
        .stdin(Stdio::null());
    c
}

/// A daemon started by hand (custom `--socket`), killed on drop.
struct Raw(Child);
impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_answering(socket: &Path) {
    wait_for("the daemon to answer on its socket", Duration::from_secs(20), || {
        http(socket, "GET", "/health", "").is_some_and(|(s, _)| s == 200)
    });
}

/// One HTTP/1.1 request over a Unix socket: (status, body).
fn http(socket: &Path, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn an_existing_socket_folder_keeps_its_mode_and_an_open_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    // A /tmp-like folder: world-writable and sticky. It is used as it is.
    let shared = root.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = shared.join("hp.sock");
    let d = Raw(serve_cmd(root.path(), &["--socket", sock.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap());
    wait_answering(&sock);
    assert_eq!(mode(&shared), 0o1777, "the daemon changed the mode of a folder it did not create");
    assert_eq!(mode(&sock), 0o600);
    // Folders it creates are owner-only.
    assert_eq!(mode(&root.path().join("var/hero_proc")), 0o700);
    drop(d);

    // World-writable without the sticky bit: anyone could swap the socket. Refused.
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let root2 = tempfile::tempdir().unwrap();
    let out = serve_refused(root2.path(), &["--socket", open.join("hp.sock").to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&open.display().to_string()) && err.contains("0777") && err.contains("hint"), "{err}");
    assert_eq!(mode(&open), 0o777);
    // The same for the database's folder (others could plant its -wal and -shm files).
    let out = serve_refused(root2.path(), &["--db", open.join("hp.db").to_str().unwrap()]);
    assert!(text(&out.stderr).contains("0777"), "{}", text(&out.stderr));
}

#[test]
fn a_file_at_the_socket_path_is_never_deleted() {
    let root = tempfile::tempdir().unwrap();
    let precious = root.path().join("precious.txt");
    std::fs::write(&precious, "do not delete").unwrap();
    let out = serve_refused(root.path(), &["--socket", precious.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("not a socket") && err.contains(&precious.display().to_string()), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "do not delete");
}

#[test]
fn a_socket_of_another_user_is_refused() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let sock = root.path().join("theirs.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).unwrap();
    let out = serve_refused(root.path(), &["--socket", sock.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("uid 65534"), "{err}");
    assert_eq!(std::fs::symlink_metadata(&sock).unwrap().uid(), 65534, "their socket is left alone");
}

#[test]
fn a_second_daemon_does_not_take_over_a_live_socket() {
    let first = Daemon::start();
    let pid = first.child.as_ref().unwrap().id();
    let other = tempfile::tempdir().unwrap();
    let out = serve_refused(other.path(), &["--socket", first.socket().to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {pid}")), "the error names the daemon serving there: {err}");
    // The first daemon still owns its socket.
    assert!(first.cli(&["system", "info"]).status.success());
    assert_eq!(http(&first.socket(), "GET", "/health", "").map(|r| r.0), Some(200));
}

#[test]
fn a_stale_socket_is_replaced_after_a_crash() {
    let mut d = Daemon::start();
    d.kill9(); // leaves its socket file behind, with no one listening
    assert!(d.socket().exists());
    d.spawn();
    assert!(d.cli(&["system", "info"]).status.success());
}

#[test]
fn one_database_has_one_daemon() {
    let first = Daemon::start();
    let pid = first.child.as_ref().unwrap().id();
    let db = first.root().join("var/hero_proc/hero_proc.db");
    // Another root (so another root lock and socket), the same database.
    let other = tempfile::tempdir().unwrap();
    let out = serve_refused(other.path(), &["--db", db.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {pid}")) && err.contains("hero_proc.db"), "{err}");
    // Through a symlink it is the same file, and the same refusal.
    let link = other.path().join("link.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let out = serve_refused(other.path(), &["--db", link.to_str().unwrap()]);
    assert!(text(&out.stderr).contains(&format!("pid {pid}")), "{}", text(&out.stderr));
    // Nothing was started by the refused daemons.
    assert!(!other.path().join("var/sockets/hero_proc.sock").exists());
}

#[test]
fn a_deleted_database_fences_writes_and_starts() {
    let d = Daemon::start();
    d.set(SLEEPER);
    d.set(&SLEEPER.replace("sleeper", "keeper"));
    let s = d.wait_status("sleeper", "running", |s| s["state"] == "running");
    let sleeper = s["pid"].as_u64().unwrap() as u32;
    let keeper = d.wait_status("keeper", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap() as u32;
    let db = d.root().join("var/hero_proc/hero_proc.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }

    // A write is refused with a stable code and a message saying what to do.
    let (_, body) = http(
        &d.socket(),
        "POST",
        "/rpc",
        r#"{"jsonrpc":"2.0","id":1,"method":"action.delete","params":{"name":"nope"}}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 1007, "{body}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("was deleted") && msg.contains("restart the daemon"), "{msg}");
    let yaml = d.root().join("more.yaml");
    std::fs::write(&yaml, "actions:\n  - name: more\n    script: 'true'\n").unwrap();
    let out = d.cli(&["action", "set", yaml.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out.stderr).contains("was deleted"), "{}", text(&out.stderr));

    // /health says so.
    let (status, body) = http(&d.socket(), "GET", "/health", "").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("was deleted"), "{body}");

    // A crashed service is not started again; the others keep running.
    unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
    d.wait_status("sleeper", "refused a restart", |s| {
        s["last_exit"].as_str().is_some_and(|e| e.contains("was deleted")) || s["state"] == "failed"
    });
    let s = d.status("sleeper");
    assert!(s["pid"].is_null(), "no new process: {s}");
    assert!(alive(keeper), "a supervised process keeps running");
    assert_eq!(d.children(), vec![keeper], "only the process that was running is left");
    // Logged once, not once per refused write.
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    let store_lines = log.lines().filter(|l| l.contains("hero_proc_store") && l.contains("was deleted")).count();
    assert_eq!(store_lines, 1, "{log}");
}

/// Unmounts a tmpfs when dropped (after the daemon that used it).
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A daemon whose root is a small tmpfs, and a file that fills it.
fn daemon_on_tmpfs() -> Option<(Daemon, Mount)> {
    if !require_root() {
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"]).arg(root.path()).output();
    assert!(out.as_ref().is_ok_and(|o| o.status.success()), "cannot mount a tmpfs: {out:?}");
    let mount = Mount(root.path().to_owned());
    let mut d = Daemon { root, child: None, args: Vec::new(), check_hero_db: false, env: Vec::new() };
    d.spawn();
    Some((d, mount))
}

/// Fill the file system, then write until the database refuses: the disk is full for it.
fn fill(d: &Daemon) -> PathBuf {
    let fill = d.root().join("fill");
    let mut f = std::fs::File::create(&fill).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let mut refused = false;
    // The YAML goes elsewhere: on the full disk it would be written empty.
    let yaml_dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        let p = yaml_dir.path().join("a.yaml");
        std::fs::write(&p, format!("actions:\n  - name: f{i}\n    script: 'true'\n")).unwrap();
        if !d.cli(&["action", "set", p.to_str().unwrap()]).status.success() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the database never ran out of space");
    fill
}

fn job_phase(d: &Daemon, job: i64) -> Option<String> {
    d.json(&["job", "list", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job)
        .map(|j| j["phase"].as_str().unwrap().to_owned())
}

#[test]
fn an_exit_that_could_not_be_written_is_written_when_space_returns() {
    let Some((d, _mount)) = daemon_on_tmpfs() else { return };
    // A run's job: nothing else writes after its exit, so only the retry timer can.
    d.set("actions:\n  - name: waiter\n    interpreter: sh\n    script: exec sleep 1000\n");
    assert!(d.cli(&["run", "submit", "waiter"]).status.success());
    let mut job = (0, 0);
    wait_for("the run's job to run", Duration::from_secs(20), || {
        let jobs = d.json(&["job", "list", "--limit", "100"]);
        let j = jobs.as_array().unwrap().iter().find(|j| j["phase"] == "running" && j["pid"].is_u64()).cloned();
        j.map(|j| job = (j["id"].as_i64().unwrap(), j["pid"].as_u64().unwrap() as u32)).is_some()
    });
    let (job, pid) = job;
    let filler = fill(&d);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the process to be gone", Duration::from_secs(10), || !alive(pid));
    // The engine has taken the exit in (the run is over for it) but could not write it.
    wait_for("the daemon to have tried to record the exit", Duration::from_secs(10), || {
        std::fs::read_to_string(d.root().join("daemon.log")).unwrap_or_default().contains("cannot record 1 job exits")
    });
    assert_eq!(job_phase(&d, job).as_deref(), Some("running"), "the exit could not be written on a full disk");
    std::fs::remove_file(&filler).unwrap();
    wait_for("the kept exit to be written once there is space", Duration::from_secs(20), || {
        job_phase(&d, job).is_some_and(|p| p != "running")
    });
}

#[test]
fn a_restart_on_a_full_disk_keeps_the_service_running() {
    let Some((d, _mount)) = daemon_on_tmpfs() else { return };
    d.set(SLEEPER);
    let pid = d.wait_status("sleeper", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap() as u32;
    let filler = fill(&d);
    let out = d.cli(&["service", "restart", "sleeper"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a restart that cannot record its new job is refused");
    assert!(err.contains("disk full") && err.contains("running process is kept"), "{err}");
    assert!(alive(pid), "the old process was not stopped");
    assert_eq!(d.status("sleeper")["state"], "running");
    std::fs::remove_file(&filler).unwrap();
    assert!(d.cli(&["service", "restart", "sleeper"]).status.success());
    d.wait_status("sleeper", "restarted", |s| s["state"] == "running" && s["pid"] != pid);
}

#[test]
fn a_database_of_another_user_is_refused() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("theirs.db");
    std::fs::write(&db, "").unwrap();
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    let out = serve_refused(root.path(), &["--db", db.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("uid 65534") && err.contains("theirs.db"), "{err}");
}
