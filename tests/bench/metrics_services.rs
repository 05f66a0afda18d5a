//! `GET /metrics/services` with many services: N running services (each `sleep`, with a
//! `metrics:` socket) whose metrics are served by this benchmark itself, one thread per
//! Unix socket answering a fixed Prometheus page of S series (10 families shared by all
//! services, so every family is merged across all of them). Times R requests on the RPC
//! socket, each a full scrape of all N (read, parse, merge, write), after one warm-up.
//! Baseline in the same run: `GET /metrics` (the daemon's own families) on the same
//! daemon.
//!
//! Full size: `cargo bench --workspace --bench metrics_services` (50 services x 200
//! series, 30 requests; target: median under 50 ms). Without `--bench` (what `cargo
//! test` runs): 5 services x 20 series, 3 requests. HERO_BENCH_SERVICES,
//! HERO_BENCH_SERIES and HERO_BENCH_ROUNDS override.

#[path = "../support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::Daemon;
use support::bench::Mode;

const FAMILIES: usize = 10;

/// The page one service serves: `series` samples in [`FAMILIES`] counter families.
fn page(service: usize, series: usize) -> String {
    let mut s = String::new();
    let per = series.div_ceil(FAMILIES);
    for f in 0..FAMILIES {
        let n = per.min(series.saturating_sub(f * per));
        if n == 0 {
            break;
        }
        s.push_str(&format!("# HELP bench_requests_{f}_total Requests of kind {f}.\n"));
        s.push_str(&format!("# TYPE bench_requests_{f}_total counter\n"));
        for j in 0..n {
            s.push_str(&format!(
                "bench_requests_{f}_total{{route=\"/api/v1/route{j}\",method=\"GET\",code=\"200\"}} {}\n",
                service * 1000 + j
            ));
        }
    }
    s
}

/// Answer every connection on `l` with `body` (one request per connection).
fn serve(l: UnixListener, body: String) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let _ = c.write_all(head.as_bytes()).and_then(|_| c.write_all(body.as_bytes()));
    }
}

/// One GET on the daemon's socket: the body (de-chunked), timed.
fn get(sock: &Path, path: &str) -> (String, Duration) {
    let start = Instant::now();
    let mut s = UnixStream::connect(sock).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let took = start.elapsed();
    let out = String::from_utf8(out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (body.to_owned(), took);
    }
    let (mut rest, mut text) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        text.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    (text, took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, p95, max) in ms.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let p = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (p(0.5), p(0.95), ms(v[v.len() - 1]))
}

fn main() {
    let Some(mode) = Mode::from_args("metrics_services") else { return };
    let services = mode.size("HERO_BENCH_SERVICES", 50, 5);
    let series = mode.size("HERO_BENCH_SERIES", 200, 20);
    let rounds = mode.size("HERO_BENCH_ROUNDS", 30, 3);
    println!("{}", mode.banner("metrics_services"));

    let d = Daemon::start_env(&[], false, &[("RUST_LOG", "warn")]);
    let dir = d.root().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = String::from("actions:\n");
    let mut svcs = String::from("services:\n");
    let mut page_bytes = 0;
    for i in 0..services {
        let sock = dir.join(format!("s{i:03}.sock"));
        let l = UnixListener::bind(&sock).unwrap();
        let body = page(i, series);
        page_bytes = body.len();
        std::thread::spawn(move || serve(l, body));
        yaml.push_str(&format!(
            "  - name: s{i:03}\n    interpreter: exec\n    script: sleep 100000\n    process: true\n    metrics: {{ socket: {} }}\n",
            sock.display()
        ));
        svcs.push_str(&format!("  - name: s{i:03}\n"));
    }
    yaml.push_str(&svcs);
    d.set(&yaml);
    let start = Instant::now();
    loop {
        let list = d.json(&["service", "list"]);
        let running = list.as_array().unwrap().iter().filter(|s| s["state"] == "running").count();
        if running == services {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{running} of {services} services running after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Warm-up, and the answer checked: every service up, every sample there, promtool-valid shape.
    let (text, _) = get(&d.socket(), "/metrics/services");
    let up = text.lines().filter(|l| l.starts_with("hero_proc_service_scrape_up{") && l.ends_with(" 1")).count();
    assert_eq!(up, services, "every service scraped: {}", &text[..text.len().min(2000)]);
    let samples = text.lines().filter(|l| l.starts_with("bench_requests_")).count();
    assert_eq!(samples, services * series, "every sample federated");
    let headers = text.lines().filter(|l| l.starts_with("# TYPE bench_requests_")).count();
    assert_eq!(headers, FAMILIES.min(series), "one TYPE per family, merged across services");

    let mut fed = Vec::new();
    let mut own = Vec::new();
    for _ in 0..rounds {
        fed.push(get(&d.socket(), "/metrics/services").1);
        own.push(get(&d.socket(), "/metrics").1);
    }
    let (f50, f95, fmax) = stats(fed);
    let (o50, o95, omax) = stats(own);
    println!();
    println!(
        "GET /metrics/services on the RPC socket: {services} running services x {series} series ({} KiB each, over Unix sockets), {rounds} requests, answer {} KiB",
        page_bytes / 1024,
        text.len() / 1024
    );
    println!("{:<40} {:>9} {:>9} {:>9}", "", "median", "p95", "max");
    println!("{:<40} {:>7.1}ms {:>7.1}ms {:>7.1}ms", "/metrics/services (scrape all, merge)", f50, f95, fmax);
    println!("{:<40} {:>7.1}ms {:>7.1}ms {:>7.1}ms", "baseline: /metrics (the daemon's own)", o50, o95, omax);
    if !mode.is_smoke() && services >= 50 && series >= 200 {
        let verdict = if f50 < 50.0 { "met" } else { "MISSED" };
        println!("target at 50 services x 200 series: median < 50 ms: {f50:.1} ms ({verdict})");
    }
}
