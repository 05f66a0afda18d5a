//! Load: 500 services from a config repository, 50 RPC clients at once for 20 s
//! (`HERO_LOAD_SECS=60` for the figure in docs/RELIABILITY.md): no errors, latency
//! percentiles reported, p99 bounded.

mod support;

use std::time::{Duration, Instant};

use support::config_repo::*;
use support::wait_for;

const SERVICES: usize = 500;
const CLIENTS: usize = 50;

#[test]
fn five_hundred_services_and_fifty_clients() {
    let secs: u64 = std::env::var("HERO_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let repo = ConfigRepo::new();
    // 50 files of 10 services each.
    for f in 0..SERVICES / 10 {
        let mut yaml = String::from("actions:\n");
        for i in 0..10 {
            let n = f * 10 + i;
            yaml.push_str(&format!("  - name: svc{n}\n    script: sleep 3600\n    process: true\n"));
        }
        yaml.push_str("services:\n");
        for i in 0..10 {
            yaml.push_str(&format!("  - name: svc{}\n", f * 10 + i));
        }
        repo.write(&format!("actions/batch{f:02}.yaml"), &yaml);
    }
    let rev = repo.commit("500 services");
    let d = follow(&repo);
    let started = Instant::now();
    wait_applied(&d, &rev);
    wait_for("500 services running", Duration::from_secs(120), || {
        let v = d.json(&["service", "list"]);
        v.as_array().unwrap().iter().filter(|s| s["state"] == "running").count() == SERVICES
    });
    let start_secs = started.elapsed().as_secs_f64();

    let sock = d.socket();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (latencies, errors) = rt.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let sock = sock.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = hero_proc_rpc::Client::connect(&sock).await.unwrap();
                let (mut lat, mut errors) = (Vec::new(), Vec::new());
                let mut i = c;
                while Instant::now() < deadline {
                    i += 1;
                    let (method, params) = match i % 5 {
                        0 => ("service.list", serde_json::json!({})),
                        1 => ("service.status", serde_json::json!({ "name": format!("svc{}", i % SERVICES) })),
                        2 => ("job.list", serde_json::json!({ "limit": 20 })),
                        3 => ("reconcile.status", serde_json::json!({})),
                        _ => ("system.info", serde_json::json!({})),
                    };
                    let t = Instant::now();
                    match client.call_value(method, params).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => errors.push(format!("{method}: {e}")),
                    }
                }
                (lat, errors)
            }));
        }
        let (mut all, mut errs) = (Vec::new(), Vec::new());
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errs.extend(e);
        }
        (all, errs)
    });
    assert!(errors.is_empty(), "{} errors, e.g. {:?}", errors.len(), &errors[..errors.len().min(3)]);
    let mut l = latencies;
    l.sort();
    let pct = |q: f64| l[((l.len() as f64 - 1.0) * q) as usize];
    println!(
        "{SERVICES} services (all running {start_secs:.1} s after start), {CLIENTS} clients for {secs} s: {} calls, {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
        l.len(),
        l.len() as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
        l[l.len() - 1]
    );
    // A generous bound (about 5x the 1.9 s measured on the 2-core machine with other builds
    // running), so a regression of an order of magnitude fails instead of printing.
    assert!(pct(0.99) < Duration::from_secs(10), "p99 {:?} over 10 s", pct(0.99));
    // Everything is still running and the daemon still answers.
    let v = d.json(&["service", "list"]);
    assert_eq!(v.as_array().unwrap().iter().filter(|s| s["state"] == "running").count(), SERVICES);
}
