//! The output watcher with a real child, real files and real inotify: a job file is held
//! to its cap by write events alone, and growth past the store's total cap asks for the
//! caps at once.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use hero_proc_engine::output_cap::OutputCap;
use hero_proc_logstore::{LogStore, LogStoreConfig, ReadOpts};

const CAP: u64 = 4 << 20;
const TOTAL: u64 = 8 << 20;

fn disk(s: &LogStore, job: i64) -> u64 {
    std::fs::metadata(s.job_output_path(job)).map(|m| m.blocks() * 512).unwrap_or(0)
}

#[test]
fn write_events_alone_hold_a_job_to_its_cap_and_trigger_the_total_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { max_file_bytes: CAP, max_total_bytes: TOTAL, ..LogStoreConfig::default() };
    let logs = Arc::new(LogStore::open(dir.path().join("logs"), cfg).unwrap());

    // Two finished jobs' 3.5 MB each (under the per-job cap), written before the watch:
    // history, not growth. Job 1 is the older.
    for (job, age) in [(1, 7200), (3, 3600)] {
        let mut old = logs.open_job_output(job).unwrap();
        old.write_all(&vec![b'o'; 3_500_000]).unwrap();
        drop(old);
        std::fs::File::options()
            .write(true)
            .open(logs.job_output_path(job))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
    }

    let (tx, over_total) = mpsc::channel();
    let _watch = OutputCap::start(logs.clone(), move || {
        let _ = tx.send(());
    })
    .unwrap();

    let out = logs.open_job_output(2).unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", "echo FIRST; head -c 30000000 /dev/zero | tr '\\0' x; echo; echo LAST"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert!(status.success());

    // The store went past its total: the watcher asks for the caps.
    over_total.recv_timeout(Duration::from_secs(20)).expect("the watcher reported growth past the total cap");
    // The last write events may still be in flight: wait for the watcher to catch up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while disk(&logs, 2) > CAP {
        assert!(std::time::Instant::now() < deadline, "job 2 holds {} bytes on disk, cap {CAP}", disk(&logs, 2));
        std::thread::sleep(Duration::from_millis(10));
    }
    let rep = logs.enforce_caps(&HashSet::from([2])).unwrap();
    assert_eq!(rep.files_deleted, 1, "the older finished job's file went first");
    assert!(!logs.job_output_path(1).exists() && logs.job_output_path(3).exists());
    assert!(rep.total_bytes_after <= TOTAL, "{} bytes after the caps", rep.total_bytes_after);

    let head = logs.read_job_output(2, ReadOpts { max_bytes: Some(1 << 20), ..Default::default() }).unwrap();
    assert_eq!(head.lines[0], "FIRST");
    let tail = logs.read_job_output(2, ReadOpts { tail_lines: Some(1), ..Default::default() }).unwrap();
    assert_eq!(tail.lines, ["LAST"]);
}

/// Threads of this process named `hero_proc-cap`.
fn watcher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "hero_proc-cap"))
        .count()
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dropping_the_watch_ends_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogStore::open(dir.path().join("logs"), LogStoreConfig::default()).unwrap());
    let before = watcher_threads();
    let watch = OutputCap::start(logs, || {}).unwrap();
    until("the watcher's thread", || watcher_threads() == before + 1);
    drop(watch);
    until("the watcher's thread to end", || watcher_threads() == before);
}
