//! Issue 13, resource exhaustion through job output: a job writing at full speed is held
//! to its cap while it writes (head and tail kept, the dropped bytes said), and logs of
//! any size are read in pages with bounded daemon memory. Real daemon, real children,
//! real files.

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, bin, text};

/// The daemon's default per-job cap (`LogStoreConfig::max_file_bytes`).
const CAP: u64 = 64 << 20;

fn job_file(d: &Daemon, id: i64) -> PathBuf {
    d.root().join(format!("var/hero_proc/logs/jobs/{id}.log"))
}

fn disk(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// Submits a run of one action without waiting; returns its job id.
fn submit(d: &Daemon, action: &str) -> i64 {
    let run = d.json(&["run", "submit", action]);
    run["jobs"][0]["id"].as_i64().unwrap_or_else(|| panic!("no job in {run}"))
}

fn phase(d: &Daemon, id: i64) -> String {
    d.json(&["job", "get", &id.to_string()])["phase"].as_str().unwrap().to_owned()
}

fn wait_done(d: &Daemon, id: i64, limit: Duration) {
    let start = Instant::now();
    loop {
        let p = phase(d, id);
        if p != "running" && p != "pending" {
            assert_eq!(p, "succeeded", "job {id}");
            return;
        }
        assert!(start.elapsed() < limit, "job {id} still {p} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_job_writing_200_mb_at_full_speed_is_held_to_its_cap_while_it_writes() {
    let d = Daemon::start();
    d.set(
        "actions:\n  - name: flood\n    interpreter: sh\n    script: |\n      echo START-OF-OUTPUT\n      yes 0123456789abcdef | head -n 12000000\n      echo END-OF-OUTPUT\n",
    );
    let daemon_pid = d.child.as_ref().unwrap().id();
    let cpu_before = cpu_ticks(daemon_pid);
    let id = submit(&d, "flood");
    let file = job_file(&d, id);
    // Sample the file's disk use as fast as we can while the job writes.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (done, file) = (done.clone(), file.clone());
        std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(disk(&file));
                samples += 1;
            }
            (peak, samples)
        })
    };
    let start = Instant::now();
    loop {
        let p = phase(&d, id);
        if p != "running" && p != "pending" {
            assert_eq!(p, "succeeded");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the flood did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut peak, samples) = sampler.join().unwrap();
    peak = peak.max(disk(&file));
    let logical = std::fs::metadata(&file).unwrap().len();
    let after = disk(&file);
    let cpu = cpu_ticks(daemon_pid) - cpu_before;
    eprintln!(
        "flood: {logical} bytes written in {:?}, peak disk use {peak} bytes ({samples} samples), {after} after; \
         cap {CAP}; daemon CPU {cpu} ticks",
        start.elapsed()
    );
    assert!(logical > 204_000_000, "the job wrote {logical} bytes");
    // The cap keeps a quarter of itself as headroom for the watcher's latency.
    assert!(peak <= CAP, "disk use peaked at {peak} bytes while the job wrote; the cap is {CAP}");
    assert!(after <= CAP, "{after} bytes on disk after the job; the cap is {CAP}");

    // Read back with the CLI, page by page: head, the dropped marker, the tail.
    let out = Command::new(bin())
        .args(["job", "logs", &id.to_string()])
        .env("HERO_ROOTDIR", d.root())
        .env_remove("HERO_PROC_SOCKET")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "job logs failed: {}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "START-OF-OUTPUT");
    assert_eq!(lines[1], "0123456789abcdef");
    let markers: Vec<&&str> = lines.iter().filter(|l| l.starts_with("[... ")).collect();
    assert_eq!(markers.len(), 1, "one dropped range");
    let dropped: u64 = markers[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert!(markers[0].ends_with(" bytes dropped ...]"));
    assert!(dropped > 200_000_000 - CAP, "dropped {dropped}");
    assert_eq!(*lines.last().unwrap(), "END-OF-OUTPUT");
    let tail = d.json(&["job", "logs", &id.to_string(), "--tail", "2"]);
    assert_eq!(tail["lines"], serde_json::json!(["0123456789abcdef", "END-OF-OUTPUT"]));
}

#[test]
fn the_cli_reads_a_log_larger_than_the_response_limit_whole() {
    let d = Daemon::start();
    // 30 MB of numbered lines: three times the RPC response limit, under the cap.
    d.set("actions:\n  - name: big\n    interpreter: sh\n    script: seq 1 3500000\n");
    let id = submit(&d, "big");
    wait_done(&d, id, Duration::from_secs(60));
    let want = std::fs::read(job_file(&d, id)).unwrap();
    assert!(want.len() > 20 << 20, "{} bytes", want.len());
    let out = d.cli(&["job", "logs", &id.to_string()]);
    assert!(out.status.success(), "job logs failed: {}", text(&out.stderr));
    assert!(out.stdout == want, "the CLI printed {} bytes, the file has {}", out.stdout.len(), want.len());

    // One answer never passes a page: 1 MiB.
    let page = d.json(&["job", "logs", &id.to_string(), "--tail", "20000"]);
    assert_eq!(page["lines"].as_array().unwrap().len(), 20000);
    assert_eq!(page["lines"][19999], "3500000");
    let err = d.cli(&["job", "logs", &id.to_string(), "--tail", "1000000"]);
    assert!(!err.status.success());
    assert!(text(&err.stderr).contains("over the maximum of 20000 lines"), "{}", text(&err.stderr));
}

#[test]
fn six_concurrent_readers_of_a_big_log_keep_the_daemon_small() {
    let d = Daemon::start();
    // 45 MB, under the point where the cap punches (three quarters of 64 MiB): nothing is
    // dropped, every read is the whole file.
    d.set("actions:\n  - name: big\n    interpreter: sh\n    script: yes 'a line of job output' | head -n 2250000\n");
    let id = submit(&d, "big");
    wait_done(&d, id, Duration::from_secs(60));
    let size = std::fs::metadata(job_file(&d, id)).unwrap().len();
    let pid = d.child.as_ref().unwrap().id();
    let before = vm_hwm_kb(pid);
    let readers: Vec<_> = (0..6)
        .map(|_| {
            Command::new(bin())
                .args(["job", "logs", &id.to_string()])
                .env("HERO_ROOTDIR", d.root())
                .env_remove("HERO_PROC_SOCKET")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = readers.into_iter().map(|r| r.wait_with_output().unwrap()).collect();
    let after = vm_hwm_kb(pid);
    eprintln!("six readers of a {size}-byte log: daemon VmHWM {before} kB -> {after} kB");
    for out in outs {
        assert!(out.status.success(), "a reader failed: {}", text(&out.stderr));
        assert_eq!(out.stdout.len() as u64, size, "a reader got part of the log");
    }
    assert!(after - before < 64 * 1024, "the daemon's peak RSS grew by {} kB", after - before);
}

#[test]
fn listings_are_bounded_and_page_with_a_cursor() {
    let d = Daemon::start();
    d.set("actions:\n  - name: one\n    interpreter: sh\n    script: 'true'\n");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&d, "one"));
    }
    for &id in &ids {
        wait_done(&d, id, Duration::from_secs(20));
    }
    let page1 = d.json(&["job", "list", "--limit", "3"]);
    let page1: Vec<i64> = page1.as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(page1.len(), 3);
    let last = page1.last().unwrap().to_string();
    let page2 = d.json(&["job", "list", "--limit", "3", "--before", &last]);
    let page2: Vec<i64> = page2.as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect();
    let mut all: Vec<i64> = page1.iter().chain(&page2).copied().collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "two pages hold every job once");

    let runs = d.json(&["run", "list", "--limit", "2"]);
    let before = runs[1]["id"].as_i64().unwrap().to_string();
    let older = d.json(&["run", "list", "--limit", "10", "--before", &before]);
    assert_eq!(older.as_array().unwrap().len(), 3);

    for (args, what) in [
        (vec!["job", "list", "--limit", "5000"], "job.list: limit 5000 is over the maximum of 1000"),
        (vec!["run", "list", "--limit", "5000"], "run.list: limit 5000 is over the maximum of 100"),
        (vec!["log", "query", "--limit", "5000"], "log.query: limit 5000 is over the maximum of 1000"),
        (vec!["history", "--limit", "5000"], "reconcile.history: limit 5000 is over the maximum of 1000"),
    ] {
        let out = d.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out.stderr).contains(what), "{args:?}: {}", text(&out.stderr));
    }
}
