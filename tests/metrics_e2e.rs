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

// ---- /metrics/services: the services' own metrics, federated ----------------------------

/// The helper that plays a service's metrics endpoint (see its docstring).
fn metrics_server() -> String {
    format!("{}/../../tests/support/metrics_server.py", env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on loopback (the listener is dropped; the caller binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A bearer token file as `--metrics-token-file` wants it (mode 600), and the token.
fn token_file() -> (tempfile::TempDir, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.token");
    let token = format!("{:032x}", nanos());
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = path.display().to_string();
    (dir, path, token)
}

/// A daemon on `--metrics-addr` with a token; (daemon, its token file's dir, token).
fn with_token() -> (Daemon, tempfile::TempDir, String, String) {
    let (dir, path, token) = token_file();
    let d = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0", "--metrics-token-file", &path], false);
    (d, dir, path, token)
}

/// The `--metrics-addr` the daemon bound (it logs it).
fn metrics_addr(d: &Daemon) -> String {
    let mut addr = None;
    wait_for("the daemon to log its metrics address", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap_or_default();
        addr = log.lines().find_map(|l| l.split("addr=").nth(1)).map(|a| a.trim().to_owned());
        addr.is_some()
    });
    addr.unwrap()
}

/// An action serving `body` with the helper; `serve` are its listening flags, `extra`
/// its more YAML lines (health, metrics), each indented for an action.
fn served(name: &str, root: &std::path::Path, body: &str, serve: &str, extra: &str) -> String {
    let file = root.join(format!("{name}.prom"));
    std::fs::write(&file, body).unwrap();
    format!(
        "  - name: {name}\n    interpreter: exec\n    script: python3 {} --body {} {serve}\n    process: true\n{extra}",
        metrics_server(),
        file.display()
    )
}

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn metrics_services_federates_running_services_and_isolates_bad_targets() {
    let (d, _token_dir, _, token) = with_token();
    let root = d.root().to_path_buf();
    let m = root.join("m");
    std::fs::create_dir_all(&m).unwrap();
    let sock = |n: &str| m.join(format!("{n}.sock")).display().to_string();
    let port = free_port();
    let a_body = "# HELP shared_requests_total Requests served.\n# TYPE shared_requests_total counter\n\
shared_requests_total{code=\"200\"} 5\nshared_requests_total{code=\"500\"} 1\n\
# HELP a_widgets Widgets of a.\n# TYPE a_widgets gauge\na_widgets{service=\"inner\"} 3\n\
# HELP kind_clash A family the two services type differently.\n# TYPE kind_clash gauge\nkind_clash 1\n";
    let b_body = "# HELP shared_requests_total Requests served (b).\n# TYPE shared_requests_total counter\n\
shared_requests_total{code=\"200\"} 7 1700000000000\n\
# HELP kind_clash A family the two services type differently.\n# TYPE kind_clash counter\nkind_clash 2\n\
# HELP b_latency_seconds Latency of b.\n# TYPE b_latency_seconds histogram\n\
b_latency_seconds_bucket{le=\"0.1\"} 1\nb_latency_seconds_bucket{le=\"+Inf\"} 2\nb_latency_seconds_sum 0.3\nb_latency_seconds_count 2\n";
    let hero_sock = root.join("var/sockets/herosvc.sock").display().to_string();
    let hero_ui = root.join("var/sockets/herosvc_ui.sock").display().to_string();
    let huge: String = (0..200_000).map(|i| format!("huge_series{{i=\"{i:08}\"}} 1\n")).collect();
    assert!(huge.len() > 4 * 1024 * 1024);
    let health = |s: &str| format!("    health:\n      - unix_socket: {s}\n");
    let yaml = [
        "actions:\n".to_owned(),
        // Over a Unix socket named with $HERO_ROOTDIR.
        served(
            "a",
            &root,
            a_body,
            &format!("--unix {}", sock("a")),
            &format!("{}    metrics: {{ socket: $HERO_ROOTDIR/m/a.sock }}\n", health(&sock("a"))),
        ),
        // Over TCP, given as a URL.
        served(
            "b",
            &root,
            b_body,
            &format!("--tcp {port}"),
            &format!("    health:\n      - tcp: 127.0.0.1:{port}\n    metrics: http://127.0.0.1:{port}/metrics\n"),
        ),
        // The hero socket convention: its service socket's /metrics.
        served(
            "herosvc",
            &root,
            "# HELP hero_things Things.\n# TYPE hero_things gauge\nhero_things 9\n",
            &format!("--unix {hero_sock} --unix {hero_ui}"),
            "    health:\n      - hero_sockets: true\n",
        ),
        served(
            "slow",
            &root,
            "slow_up 1\n",
            &format!("--unix {} --delay 30", sock("slow")),
            &format!("{}    metrics: {{ socket: {} }}\n", health(&sock("slow")), sock("slow")),
        ),
        served(
            "malformed",
            &root,
            "# HELP ok_before Fine.\n# TYPE ok_before gauge\nok_before 1\nthis is not a sample\n",
            &format!("--unix {}", sock("malformed")),
            &format!("{}    metrics: {{ socket: {} }}\n", health(&sock("malformed")), sock("malformed")),
        ),
        served(
            "huge",
            &root,
            &huge,
            &format!("--unix {} --no-length", sock("huge")),
            &format!("{}    metrics: {{ socket: {} }}\n", health(&sock("huge")), sock("huge")),
        ),
        format!(
            "  - name: dead\n    interpreter: exec\n    script: sleep 1000\n    process: true\n    metrics: {{ socket: {} }}\n",
            sock("nobody")
        ),
        format!(
            "  - name: off\n    interpreter: exec\n    script: sleep 1000\n    process: true\n    metrics: {{ socket: {} }}\n",
            sock("a")
        ),
        "  - name: plain\n    interpreter: exec\n    script: sleep 1000\n    process: true\n".to_owned(),
        "services:\n".to_owned(),
        ["a", "b", "herosvc", "slow", "malformed", "huge", "dead", "plain"].map(|n| format!("  - name: {n}\n")).concat(),
        "  - name: off\n    status: stop\n".to_owned(),
    ]
    .concat();
    d.set(&yaml);
    for n in ["a", "b", "herosvc", "slow", "malformed", "huge", "dead", "plain"] {
        d.wait_status(n, "running", |s| s["state"] == "running");
    }

    let started = std::time::Instant::now();
    let resp = http_get_unix(&d.socket(), "/metrics/services", "text/plain");
    let took = started.elapsed();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    let text = dechunk(&resp);
    // The slow target costs its own 2 s, not the request's 30.
    assert!(took < Duration::from_secs(8), "took {took:?}");

    let up = |svc: &str| value_of(&text, "hero_proc_service_scrape_up", svc);
    for (svc, want) in
        [("a", 1.0), ("b", 1.0), ("herosvc", 1.0), ("slow", 0.0), ("malformed", 0.0), ("huge", 0.0), ("dead", 0.0)]
    {
        assert_eq!(up(svc), Some(want), "scrape_up of {svc}: {text}");
    }
    // Stopped or without a target: not listed at all.
    assert!(!text.contains("core/off") && !text.contains("core/plain"), "{text}");
    let slow = value_of(&text, "hero_proc_service_scrape_duration_seconds", "slow").unwrap();
    assert!((1.9..4.0).contains(&slow), "the slow target took its timeout: {slow}");
    assert!(text.contains("# hero_proc: core/huge: not scraped: GET /metrics: the answer is over 4 MiB"), "{text}");
    assert!(text.contains("# hero_proc: core/malformed: not scraped: line 4:"), "{text}");
    assert!(text.contains("# hero_proc: core/dead: not scraped: connect "), "{text}");
    assert!(text.contains("# hero_proc: core/slow: not scraped: no complete answer within 2s"), "{text}");
    // Nothing of a failed target, not even what parsed before its bad line.
    assert!(!text.contains("ok_before") && !text.contains("huge_series") && !text.contains("slow_up"), "{text}");

    // One family, one HELP and one TYPE, both services' samples together, in service order.
    assert_eq!(lines_of(&text, "# TYPE shared_requests_total ").len(), 1, "{text}");
    assert_eq!(lines_of(&text, "# HELP shared_requests_total ").len(), 1, "{text}");
    let at = |l: &str| text.find(l).unwrap_or_else(|| panic!("no {l:?} in {text}"));
    let head = at("# TYPE shared_requests_total counter\n");
    let a200 = at("shared_requests_total{service=\"core/a\",code=\"200\"} 5\n");
    let a500 = at("shared_requests_total{service=\"core/a\",code=\"500\"} 1\n");
    let b200 = at("shared_requests_total{service=\"core/b\",code=\"200\"} 7 1700000000000\n");
    assert!(head < a200 && a200 < a500 && a500 < b200, "{text}");
    let next_family = text[head + 1..].find("# ").map(|i| i + head + 1).unwrap_or(text.len());
    assert!(b200 < next_family, "the family's samples are together: {text}");
    // A label `service` of the service's own is kept as exported_service.
    assert!(text.contains("a_widgets{service=\"core/a\",exported_service=\"inner\"} 3\n"), "{text}");
    assert!(text.contains("hero_things{service=\"core/herosvc\"} 9\n"), "{text}");
    assert!(text.contains("b_latency_seconds_bucket{service=\"core/b\",le=\"+Inf\"} 2\n"), "{text}");
    // Conflicting types: the first service (core/a) keeps the family; b's is dropped and said.
    assert!(text.contains("# TYPE kind_clash gauge\nkind_clash{service=\"core/a\"} 1\n"), "{text}");
    assert!(!text.contains("kind_clash{service=\"core/b\"}"), "{text}");
    assert_eq!(value_of(&text, "hero_proc_service_scrape_dropped_families", "b"), Some(1.0), "{text}");
    assert!(text.contains("# hero_proc: core/b: family kind_clash dropped: type counter differs from gauge"), "{text}");
    assert_eq!(value_of(&text, "hero_proc_service_scrape_samples", "a"), Some(4.0), "{text}");
    promtool_check(&text);

    // One service, on the socket and on --metrics-addr.
    let one = dechunk(&http_get_unix(&d.socket(), "/metrics/services/core/a", "text/plain"));
    assert_eq!(value_of(&one, "hero_proc_service_scrape_up", "a"), Some(1.0), "{one}");
    assert!(!one.contains("core/b") && one.contains("a_widgets{service=\"core/a\""), "{one}");
    promtool_check(&one);
    let addr = metrics_addr(&d);
    let get = |path: &str| {
        http_tcp(
            &addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        )
    };
    let tcp = get("/metrics/services");
    assert!(tcp.starts_with("HTTP/1.1 200"), "{tcp}");
    let tcp = dechunk(&tcp);
    assert!(tcp.contains("shared_requests_total{service=\"core/b\",code=\"200\"} 7"), "{tcp}");
    promtool_check(&tcp);
    let b = get("/metrics/services/core/b");
    assert!(b.starts_with("HTTP/1.1 200") && dechunk(&b).contains("b_latency_seconds_count{service=\"core/b\"} 2"));
    for (path, status, says) in [
        ("/metrics/services/core/nope", "404", "no service core/nope"),
        ("/metrics/services/core/plain", "404", "service core/plain has no metrics target"),
        ("/metrics/services/core/off", "503", "service core/off is inactive, not running"),
        ("/metrics/services/core", "404", "/metrics/services/<context>/<name>"),
    ] {
        for resp in [get(path), http_get_unix(&d.socket(), path, "text/plain")] {
            assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {resp}");
            assert!(dechunk(&resp).contains(says), "{path}: {resp}");
        }
    }
    let other = http_get_unix(&d.socket(), "/nowhere", "text/plain");
    assert!(other.contains("GET /metrics/services[/<context>/<name>]"), "the 404 lists the route: {other}");
}

/// A Prometheus server for one test, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The real `prometheus` (Debian's package; CI installs it), scraping the daemon's
    /// `--metrics-addr` every second on both paths. A missing binary fails the test.
    fn scraping(target: &str, token_file: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = [
            "global:".to_owned(),
            "  scrape_interval: 1s".to_owned(),
            "  scrape_timeout: 1s".to_owned(),
            "scrape_configs:".to_owned(),
            "  - job_name: hero_proc".to_owned(),
            format!("    authorization: {{ credentials_file: '{token_file}' }}"),
            format!("    static_configs: [{{ targets: ['{target}'] }}]"),
            "  - job_name: hero_proc_services".to_owned(),
            "    metrics_path: /metrics/services".to_owned(),
            format!("    authorization: {{ credentials_file: '{token_file}' }}"),
            format!("    static_configs: [{{ targets: ['{target}'] }}]"),
        ]
        .join("\n");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (apt-get install prometheus): this test needs the real server");
        let mut p = Prometheus { child, addr, _dir: dir };
        wait_for("prometheus to be ready", Duration::from_secs(60), || {
            if let Ok(Some(exit)) = p.child.try_wait() {
                panic!("prometheus exited with {exit}: {}", p.log());
            }
            std::net::TcpStream::connect(&p.addr).is_ok()
                && http_tcp(&p.addr, "GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .starts_with("HTTP/1.1 200")
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query`: the result vector as (labels, value).
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let resp = http_tcp(
            &self.addr,
            &format!("GET /api/v1/query?query={q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let v: serde_json::Value = serde_json::from_str(&dechunk(&resp)).unwrap_or_else(|e| panic!("{e}: {resp}"));
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
            .collect()
    }

    /// Wait until `promql` has a result; returns it.
    fn wait(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let mut last = Vec::new();
        let start = std::time::Instant::now();
        while last.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no result for {promql} after 60 s; prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
            last = self.query(promql);
        }
        last
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_the_services_it_federates() {
    let (d, _token_dir, token_path, _) = with_token();
    let root = d.root().to_path_buf();
    let sock = root.join("web-metrics.sock").display().to_string();
    let body = "# HELP web_widgets_total Widgets made.\n# TYPE web_widgets_total counter\nweb_widgets_total{color=\"red\"} 42\n";
    let yaml = format!(
        "actions:\n{}services:\n  - name: web\n",
        served(
            "web",
            &root,
            body,
            &format!("--unix {sock}"),
            &format!("    health:\n      - unix_socket: {sock}\n    metrics: {{ socket: {sock} }}\n")
        )
    );
    d.set(&yaml);
    d.wait_status("web", "running", |s| s["state"] == "running");
    let prom = Prometheus::scraping(&metrics_addr(&d), &token_path);

    // The daemon's own view (/metrics) ...
    let up = prom.wait("hero_proc_service_up{job=\"hero_proc\",service=\"core/web\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0, "{up:?}");
    let mem = prom.wait("hero_proc_service_memory_bytes{service=\"core/web\"}");
    assert!(mem[0].1 > 1e6, "a python process holds more than a megabyte: {mem:?}");
    // ... and the service's own metric, read over its Unix socket (/metrics/services).
    let widgets = prom.wait("web_widgets_total");
    assert_eq!(widgets.len(), 1, "{widgets:?}");
    let (labels, value) = &widgets[0];
    assert_eq!(value, &42.0);
    assert_eq!(labels["service"], "core/web", "{labels}");
    assert_eq!(labels["color"], "red", "{labels}");
    assert_eq!(labels["job"], "hero_proc_services", "{labels}");
    let scrape = prom.wait("hero_proc_service_scrape_up{service=\"core/web\"}");
    assert_eq!(scrape[0].1, 1.0, "{scrape:?}");
    // Prometheus found both pages valid.
    let targets = prom.wait("up");
    assert!(targets.iter().all(|(_, v)| *v == 1.0) && targets.len() == 2, "{targets:?}");
}

/// `--metrics-addr` and its token: without one, `/metrics/services` (which relays what
/// only the daemon's account can reach) is refused there; with one, every page needs it;
/// a token file other accounts can read, or one without the port, starts nothing.
#[test]
fn the_metrics_port_relays_service_metrics_only_with_a_bearer_token() {
    let req = |addr: &str, path: &str, auth: &str| {
        http_tcp(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"))
    };
    // No token: the daemon's own page as before, the services' page refused with why.
    let open = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0"], false);
    let addr = metrics_addr(&open);
    assert!(req(&addr, "/metrics", "").starts_with("HTTP/1.1 200"));
    for path in ["/metrics/services", "/metrics/services/core/web"] {
        let r = req(&addr, path, "");
        assert!(r.starts_with("HTTP/1.1 403"), "{path}: {r}");
        assert!(r.contains("needs serve --metrics-token-file"), "{r}");
    }
    // On the owner-only RPC socket it needs nothing.
    assert!(http_get_unix(&open.socket(), "/metrics/services", "text/plain").starts_with("HTTP/1.1 200"));

    // A token: every page needs it, in constant time, as a Bearer.
    let (d, _dir, _, token) = with_token();
    let addr = metrics_addr(&d);
    for path in ["/metrics", "/metrics/services"] {
        for auth in [
            "".to_owned(),
            "Authorization: Bearer wrong-token-wrong-token\r\n".to_owned(),
            format!("Authorization: Basic {token}\r\n"),
        ] {
            let r = req(&addr, path, &auth);
            assert!(r.starts_with("HTTP/1.1 401"), "{path} {auth:?}: {r}");
            assert!(r.to_ascii_lowercase().contains("www-authenticate: bearer"), "{r}");
            assert!(!r.contains(&token), "the answer never echoes the token");
        }
        let r = req(&addr, path, &format!("Authorization: Bearer {token}\r\n"));
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    }
    let log = std::fs::read_to_string(d.root().join("daemon.log")).unwrap();
    assert!(!log.contains(&token), "the token is never logged");

    // Refused at start, with the fix named: a file others can read, a token without the port.
    use std::os::unix::fs::PermissionsExt;
    let (dir, path, token) = token_file();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        Command::new(bin())
            .arg("serve")
            .args(args)
            .env("HERO_ROOTDIR", root.path())
            .env("HERO_PROC_NO_AUTOSTART_DB", "1")
            .output()
            .unwrap()
    };
    let out = serve(&["--metrics-addr", "127.0.0.1:0", "--metrics-token-file", &path]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("chmod 600") && !err.contains(&token), "{err}");
    assert!(!root.path().join("var").exists(), "a refused start creates nothing");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = serve(&["--metrics-token-file", &path]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("without --metrics-addr"), "{}", text(&out.stderr));
    drop(dir);
}
