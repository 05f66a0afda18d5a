//! Real processes: spawn, output through files, process groups, stop escalation,
//! re-attach with PID-reuse guard, health checks against real sockets.

use std::time::{Duration, Instant};

use hero_proc_engine::health::{self, Health};
use hero_proc_engine::paths::Expand;
use hero_proc_engine::process::{self, Exit, SpawnError};
use hero_proc_spec::{Action, HttpCheck, Interpreter, Probe, Restart, Signal, Stop};

fn action(interpreter: Interpreter, script: &str) -> Action {
    Action {
        name: "t".into(),
        context: "core".into(),
        description: None,
        interpreter,
        script: script.into(),
        env: Default::default(),
        cwd: None,
        process: false,
        restart: Restart::default(),
        stop: Stop::default(),
        timeout: None,
        health: vec![],
        metrics: None,
        depends_on: vec![],
        schedule: None,
        tags: vec![],
        user: None,
        group: None,
        pos: Default::default(),
    }
}

struct Env {
    dir: tempfile::TempDir,
    expand: Expand,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let expand = Expand::new(dir.path().join("home"), dir.path().join("root"));
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    std::fs::create_dir_all(dir.path().join("root/var/sockets")).unwrap();
    Env { dir, expand }
}

impl Env {
    fn out(&self) -> (std::fs::File, std::path::PathBuf) {
        let p = self.dir.path().join(format!("out-{}.log", rand_suffix()));
        (std::fs::File::create(&p).unwrap(), p)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
        state != 'Z'
    })
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exec_runs_argv_without_a_shell_and_captures_output() {
    let e = env();
    let (out, path) = e.out();
    let a = action(Interpreter::Exec, "echo 'a  b' $HOME && ~/x $HERO_ROOTDIR/y");
    let mut p = process::spawn(&a, &[], &e.expand, &out).unwrap();
    assert_eq!(p.wait().await.unwrap(), Exit::Code(0));
    let text = std::fs::read_to_string(path).unwrap();
    let home = e.dir.path().join("home");
    let root = e.dir.path().join("root");
    // Quotes grouped, `$HOME` and `&&` passed literally, `~` and $HERO_ROOTDIR expanded.
    assert_eq!(text, format!("a  b $HOME && {}/x {}/y\n", home.display(), root.display()));
}

#[tokio::test]
async fn shells_get_env_and_cwd_and_both_streams() {
    let e = env();
    std::fs::create_dir_all(e.dir.path().join("home/work")).unwrap();
    let (out, path) = e.out();
    let mut a = action(Interpreter::Bash, "echo \"$GREETING from $(pwd)\"; echo oops >&2; exit 3");
    a.cwd = Some("~/work".into());
    let mut p = process::spawn(&a, &[("GREETING".into(), "hi".into())], &e.expand, &out).unwrap();
    assert_eq!(p.wait().await.unwrap(), Exit::Code(3));
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text, format!("hi from {}\noops\n", e.dir.path().join("home/work").display()));
}

#[tokio::test]
async fn spawn_failures_are_clear() {
    let e = env();
    let (out, _) = e.out();
    let err =
        process::spawn(&action(Interpreter::Exec, "/nonexistent/binary --flag"), &[], &e.expand, &out).unwrap_err();
    assert!(matches!(err, SpawnError::Spawn { .. }));
    assert!(err.to_string().starts_with("cannot start `/nonexistent/binary`: No such file"), "{err}");
    let mut a = action(Interpreter::Exec, "true");
    a.cwd = Some("/nonexistent/dir".into());
    let err = process::spawn(&a, &[], &e.expand, &out).unwrap_err();
    assert_eq!(err.to_string(), "working directory `/nonexistent/dir` does not exist or is not a directory");
    let err = process::spawn(&action(Interpreter::Exec, "''"), &[], &e.expand, &out).unwrap_err();
    assert!(matches!(err, SpawnError::EmptyCommand));
}

#[tokio::test]
async fn stop_kills_the_whole_group_and_escalates_after_timeout() {
    let e = env();
    let (out, path) = e.out();
    // The leader ignores SIGTERM and forks a grandchild that also ignores it.
    let script = "trap '' TERM; sh -c \"trap '' TERM; echo grandchild \\$\\$; sleep 60\" & echo ready; wait";
    let mut p = process::spawn(&action(Interpreter::Sh, script), &[], &e.expand, &out).unwrap();
    wait_until("grandchild", Duration::from_secs(5), || std::fs::read_to_string(&path).unwrap().contains("grandchild"))
        .await;
    let text = std::fs::read_to_string(&path).unwrap();
    let grandchild: u32 = text.lines().find_map(|l| l.strip_prefix("grandchild ")).unwrap().trim().parse().unwrap();
    assert!(alive(grandchild));
    let t = Instant::now();
    let exit = p.stop(Signal::Term, Duration::from_millis(300)).await.unwrap();
    let took = t.elapsed();
    assert_eq!(exit, Exit::Signal(libc_sigkill()));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    wait_until("grandchild to die", Duration::from_secs(3), || !alive(grandchild)).await;
    let pgid = p.pid;
    wait_until("the group to be gone", Duration::from_secs(3), || !process::group_alive(pgid)).await;
}

fn libc_sigkill() -> i32 {
    9
}

#[tokio::test]
async fn polite_process_stops_on_the_stop_signal() {
    let e = env();
    let (out, _) = e.out();
    let mut p = process::spawn(&action(Interpreter::Exec, "sleep 60"), &[], &e.expand, &out).unwrap();
    let t = Instant::now();
    let exit = p.stop(Signal::Int, Duration::from_secs(10)).await.unwrap();
    assert_eq!(exit, Exit::Signal(2));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn reattach_guards_against_pid_reuse_and_sees_the_exit() {
    let e = env();
    let (out, _) = e.out();
    // Started "by a previous daemon": we keep only its pid and start time.
    let mut original = process::spawn(&action(Interpreter::Exec, "sleep 60"), &[], &e.expand, &out).unwrap();
    let (pid, ticks) = (original.pid, original.start_ticks.get_or_read(original.pid).unwrap());
    assert!(ticks > 0);
    assert!(process::reattach(pid, ticks + 1).is_none(), "a different start time means another process");
    let mut attached = process::reattach(pid, ticks).expect("same process");
    // It ends (killed from outside): the re-attached watcher sees it without polling.
    process::signal_group(pid, 9).unwrap();
    original.wait().await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), attached.wait()).await.unwrap().unwrap();
    assert_eq!(exit, Exit::Unknown);
    assert!(process::reattach(pid, ticks).is_none());
}

#[tokio::test]
async fn health_checks_against_real_sockets() {
    let e = env();
    let sock = e.dir.path().join("root/var/sockets/svc.sock");
    let check = Probe::UnixSocket("$HERO_ROOTDIR/var/sockets/svc.sock".into());
    assert!(!health::check(&check, "svc", &e.expand).await.is_healthy());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    assert_eq!(health::check(&check, "svc", &e.expand).await, Health::Healthy);

    // HTTP over the Unix socket: a tiny server answering 200 on /health, 503 elsewhere.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let code = if req.starts_with("GET /health ") { "200 OK" } else { "503 Unavailable" };
            let _ = s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
        }
    });
    let http =
        |path: &str| Probe::Http(HttpCheck { socket: Some(sock.display().to_string()), url: None, path: path.into() });
    assert_eq!(health::check(&http("/health"), "svc", &e.expand).await, Health::Healthy);
    assert!(
        matches!(health::check(&http("/other"), "svc", &e.expand).await, Health::Unhealthy(m) if m.contains("503"))
    );

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    assert!(health::check(&Probe::Tcp(addr.clone()), "svc", &e.expand).await.is_healthy());
    drop(tcp);
    // A bound socket that does not listen refuses connections and keeps its port
    // reserved (a freed port could be taken by a parallel test).
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    assert!(!health::check(&Probe::Tcp(closed_addr), "svc", &e.expand).await.is_healthy());

    assert!(health::check(&Probe::Exec("test -d $HERO_ROOTDIR".into()), "svc", &e.expand).await.is_healthy());
    assert!(!health::check(&Probe::Exec("false".into()), "svc", &e.expand).await.is_healthy());
}

#[tokio::test]
async fn hero_socket_tree() {
    let e = env();
    let dir = e.dir.path().join("root/var/sockets");
    let svc = tokio::net::UnixListener::bind(dir.join("food.sock")).unwrap();
    let ui = tokio::net::UnixListener::bind(dir.join("food_ui.sock")).unwrap();
    std::fs::create_dir_all(dir.join("food_server/root")).unwrap();
    let d1 = tokio::net::UnixListener::bind(dir.join("food_server/root/delivery.sock")).unwrap();
    std::fs::write(dir.join("food_server/root/stale.sock"), "").unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            let (mut s, _) = ui.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        }
    });
    let tree = health::hero_sockets("food", &e.expand).await;
    let summary: Vec<(String, bool)> = tree.iter().map(|s| (s.role.clone(), s.health.is_healthy())).collect();
    assert_eq!(
        summary,
        [("service".into(), true), ("ui".into(), true), ("root/delivery".into(), true), ("root/stale".into(), false)]
    );
    let overall = health::check(&Probe::HeroSockets(true), "food", &e.expand).await;
    assert!(matches!(overall, Health::Unhealthy(m) if m.starts_with("root/stale")));
    drop((svc, d1));
}
