//! `/metrics`: Prometheus text by default (checked with the real `promtool`), OpenMetrics
//! when asked, on the RPC socket and on `--metrics-addr` (where nothing else is served).

use crate::support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn http_get_unix(sock: &std::path::Path, path: &str, accept: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn http_tcp(addr: &str, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// Strip chunked transfer framing if present.
fn dechunk(resp: &str) -> String {
    if !resp.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body(resp).to_owned();
    }
    let mut rest = body(resp);
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The real promtool must accept it (CI installs Debian's `prometheus`).
fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reconcile_metrics_show_results_revision_drift_and_inventory() {
    use support::config_repo::*;
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "m"));
    let rev = repo.commit("web");
    let d = follow(&repo);
    wait_applied(&d, &rev);
    wait_greeting(&d, "web", "m");
    // Suspended, so self-heal does not revert the drift while the metrics are read.
    d.json(&["reconcile", "suspend"]);
    assert!(d.cli(&["service", "stop", "web"]).status.success());
    wait_for("web to stop", Duration::from_secs(10), || state(&d, "web").as_deref() == Some("inactive"));
    let _ = d.json(&["reconcile", "status"]);
    let text = dechunk(&http_get_unix(&d.socket(), "/metrics", "text/plain"));
    assert!(text.contains("hero_proc_reconcile_total{result=\"applied\"} 1"), "{text}");
    assert!(text.contains(&format!("hero_proc_reconcile_applied_revision_info{{revision=\"{rev}\"")), "{text}");
    assert!(text.contains("hero_proc_drifted_objects 1"), "{text}");
    assert!(text.contains("hero_proc_managed_objects{kind=\"service\"} 1"), "{text}");
    assert!(text.contains("hero_proc_reconcile_duration_seconds_count 1"), "{text}");
    assert!(text.contains("hero_proc_reconcile_suspended 1"), "{text}");
    promtool_check(&text);
    let om = dechunk(&http_get_unix(&d.socket(), "/metrics", "application/openmetrics-text; version=1.0.0"));
    assert!(om.contains("# TYPE hero_proc_reconcile_duration_seconds histogram"), "{om}");
}

#[test]
fn metrics_pass_promtool_and_expose_the_fleet_view() {
    let d = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0"], false);
    d.set("actions:\n  - name: web\n    interpreter: sh\n    script: exec sleep 1000\n    process: true\n    restart: { policy: always, delay: 50ms }\nservices:\n  - name: web\n");
    let pid = d.wait_status("web", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.wait_status("web", "restarted", |s| s["restarts"] == 1 && s["state"] == "running");

    let text = dechunk(&http_get_unix(&d.socket(), "/metrics", "text/plain"));
    assert!(text.contains("hero_proc_service_up{service=\"core/web\"} 1"), "{text}");
    assert!(text.contains("hero_proc_service_restarts_total{service=\"core/web\"} 1"), "{text}");
    assert!(text.contains("hero_proc_services{state=\"running\"} 1"), "{text}");
    assert!(text.contains("hero_proc_db_size_bytes "), "{text}");
    assert!(!text.contains("# EOF"));

    promtool_check(&text);

    let om = dechunk(&http_get_unix(&d.socket(), "/metrics", "application/openmetrics-text; version=1.0.0"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE hero_proc_service_restarts counter"), "{om}");

    // TCP for Prometheus: metrics only.
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    let addr = log
        .lines()
        .find_map(|l| l.split("addr=").nth(1))
        .expect("the daemon logs its metrics address")
        .trim()
        .to_owned();
    let resp = http_tcp(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(dechunk(&resp).contains("hero_proc_service_up{service=\"core/web\"} 1"));
    let rpc = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"service.list\",\"params\":{}}";
    let resp = http_tcp(
        &addr,
        &format!("POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rpc}", rpc.len()),
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "the RPC must not be reachable over TCP: {resp}");
    std::thread::sleep(Duration::from_millis(10));
}

/// The value of `name{service="core/<svc>"}` in a Prometheus text exposition.
fn value_of(text: &str, name: &str, svc: &str) -> Option<f64> {
    let prefix = format!("{name}{{service=\"core/{svc}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[test]
fn each_services_process_tree_is_measured_at_scrape_time() {
    let d = Daemon::start();
    // A tree of three processes: the shell holds 2 extra descriptors and ~24 MB, after
    // burning some CPU in children it reaped; two `sleep`s run beside it.
    d.set(
        "actions:\n  - name: fat\n    interpreter: bash\n    script: |\n      exec 3</dev/null 4</dev/null\n      i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done\n      big=$(head -c 24000000 /dev/zero | tr '\\0' a)\n      sleep 1000 & sleep 1000 &\n      touch \"$HERO_ROOTDIR/fat.ready\"\n      wait\n    process: true\nservices:\n  - name: fat\n",
    );
    d.set("actions:\n  - name: bad\n    interpreter: sh\n    script: exit 3\n    process: true\n    restart: { policy: never }\nservices:\n  - name: bad\n");
    let pid = d.wait_status("fat", "running", |s| s["state"] == "running")["pid"].as_u64().unwrap();
    wait_for("the tree to be built", Duration::from_secs(30), || d.root().join("fat.ready").exists());
    d.wait_status("bad", "failed", |s| s["state"] == "failed");
    let text = dechunk(&http_get_unix(&d.socket(), "/metrics", "text/plain"));
    let v = |name: &str| value_of(&text, name, "fat").unwrap_or_else(|| panic!("no {name} for core/fat: {text}"));
    assert!(v("hero_proc_service_memory_bytes") > 24e6, "the tree's RSS holds the 24 MB string: {text}");
    assert!(v("hero_proc_service_threads") >= 3.0, "three processes, one thread each: {text}");
    assert!(v("hero_proc_service_open_fds") >= 3.0 * 3.0 + 2.0, "stdio of three, and fds 3 and 4: {text}");
    assert!(v("hero_proc_service_cpu_seconds_total") > 0.0, "the loop and the reaped head|tr: {text}");
    let started = v("hero_proc_service_start_time_seconds");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.starts_with(&format!("{pid} ")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started <= now && now - started < 60.0, "started {started}, now {now}");
    assert_eq!(value_of(&text, "hero_proc_service_last_exit_code", "bad"), Some(3.0), "{text}");
    // Only running services have a tree.
    assert_eq!(value_of(&text, "hero_proc_service_memory_bytes", "bad"), None, "{text}");
    promtool_check(&text);
}
