//! Size and age caps, and file permissions.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hero_proc_logstore::{Level, LogEvent, LogQuery, LogStore, LogStoreConfig, ReadOpts};
use serde_json::Map;

const HOUR: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn set_age(path: &Path, age: Duration) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

/// A job output file of `len` bytes, last written `age` ago.
fn job_file(s: &LogStore, job: i64, len: usize, age: Duration) {
    let mut f = s.open_job_output(job).unwrap();
    f.write_all(&vec![b'x'; len]).unwrap();
    drop(f);
    set_age(&s.job_output_path(job), age);
}

fn ev(ts_ms: i64, message: &str) -> LogEvent {
    LogEvent {
        ts_ms,
        source: "test".into(),
        level: Level::Info,
        message: message.into(),
        job_id: None,
        fields: Map::new(),
    }
}

fn live(ids: &[i64]) -> HashSet<i64> {
    ids.iter().copied().collect()
}

#[test]
fn age_cap_deletes_old_files_of_finished_jobs_and_old_event_days() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap();
    let old = Duration::from_secs(40 * 24 * 3600);
    job_file(&s, 1, 100, old); // finished, old: goes
    job_file(&s, 2, 100, HOUR); // finished, recent: stays
    job_file(&s, 3, 100, old); // running, silent for long: stays
    s.append_event(&ev(now_ms() - 40 * DAY_MS, "old")).unwrap();
    s.append_event(&ev(now_ms(), "new")).unwrap();
    let old_day = s.event_file_path(now_ms() - 40 * DAY_MS);
    let old_day_len = fs::metadata(&old_day).unwrap().len();

    let rep = s.enforce_caps(&live(&[3])).unwrap();
    assert_eq!(rep.files_deleted, 2);
    assert_eq!(rep.bytes_reclaimed, 100 + old_day_len);
    assert!(!s.job_output_path(1).exists());
    assert!(s.job_output_path(2).exists() && s.job_output_path(3).exists());
    assert!(!old_day.exists());
    let msgs: Vec<_> = s.query(&LogQuery::default()).unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(msgs, ["new"]);
    assert_eq!(rep.total_bytes_after, s.total_bytes().unwrap());

    // The writer had the deleted day open; appending to that day again recreates it.
    s.append_event(&ev(now_ms() - 40 * DAY_MS, "late")).unwrap();
    let text = fs::read_to_string(&old_day).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("late"));
}

#[test]
fn size_cap_evicts_least_recently_written_first_and_never_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { max_total_bytes: 4500, ..LogStoreConfig::default() };
    let s = LogStore::open(dir.path(), cfg).unwrap();
    // Finished jobs 1..=5, job 1 the least recently written.
    for job in 1..=5 {
        job_file(&s, job, 1000, HOUR * (6 - job as u32));
    }
    // Running job 9, the oldest file of all: still not a candidate.
    job_file(&s, 9, 3000, HOUR * 10);
    assert_eq!(s.total_bytes().unwrap(), 8000);

    let rep = s.enforce_caps(&live(&[9])).unwrap();
    // 8000 -> 7000 -> 6000 -> 5000 -> 4000.
    assert_eq!(rep.files_deleted, 4);
    assert_eq!(rep.bytes_reclaimed, 4000);
    assert_eq!(rep.total_bytes_after, 4000);
    assert_eq!(rep.files_rotated, 0);
    for job in 1..=4 {
        assert!(!s.job_output_path(job).exists(), "job {job}");
    }
    assert!(s.job_output_path(5).exists());
    assert!(s.job_output_path(9).exists());
}

#[test]
fn size_cap_truncates_a_running_job_only_as_a_last_resort() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { max_total_bytes: 100, ..LogStoreConfig::default() };
    let s = LogStore::open(dir.path(), cfg).unwrap();
    job_file(&s, 1, 1000, HOUR);
    job_file(&s, 2, 3000, HOUR * 2);
    let mut writer = s.open_job_output(2).unwrap();

    let rep = s.enforce_caps(&live(&[2])).unwrap();
    assert_eq!(rep.files_deleted, 1);
    assert_eq!(rep.files_rotated, 1);
    assert_eq!(rep.bytes_reclaimed, 4000);
    assert_eq!(rep.total_bytes_after, 0);
    // Still there, still the file the child writes to.
    writer.write_all(b"still here\n").unwrap();
    assert_eq!(s.read_job_output(2, ReadOpts::default()).unwrap().lines, ["still here"]);
}

#[test]
fn size_cap_keeps_the_newest_event_day() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { max_total_bytes: 10, ..LogStoreConfig::default() };
    let s = LogStore::open(dir.path(), cfg).unwrap();
    s.append_event(&ev(now_ms() - 2 * DAY_MS, "older")).unwrap();
    s.append_event(&ev(now_ms(), "today")).unwrap();
    let rep = s.enforce_caps(&HashSet::new()).unwrap();
    assert_eq!(rep.files_deleted, 1);
    let msgs: Vec<_> = s.query(&LogQuery::default()).unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(msgs, ["today"]);
}

#[test]
fn running_jobs_over_max_file_bytes_are_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { max_file_bytes: 1000, ..LogStoreConfig::default() };
    let s = LogStore::open(dir.path(), cfg).unwrap();
    job_file(&s, 1, 2000, HOUR); // running, too big
    job_file(&s, 2, 2000, HOUR); // finished: will not grow, left alone
    job_file(&s, 3, 500, HOUR); // running, small

    let rep = s.enforce_caps(&live(&[1, 3])).unwrap();
    assert_eq!(rep.files_rotated, 1);
    assert_eq!(rep.files_deleted, 0);
    assert_eq!(fs::metadata(s.job_output_path(1)).unwrap().len(), 0);
    assert_eq!(fs::metadata(s.rotated_output_path(1, 1)).unwrap().len(), 2000);
    assert_eq!(fs::metadata(s.job_output_path(2)).unwrap().len(), 2000);
    assert!(!s.rotated_output_path(2, 1).exists() && !s.rotated_output_path(3, 1).exists());
    assert_eq!(rep.total_bytes_after, 4500);
}

#[test]
fn old_rotated_generations_of_running_jobs_expire() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap();
    job_file(&s, 1, 100, HOUR);
    s.rotate_job_output(1).unwrap();
    set_age(&s.rotated_output_path(1, 1), Duration::from_secs(31 * 24 * 3600));
    set_age(&s.job_output_path(1), Duration::from_secs(31 * 24 * 3600));
    // An interrupted rotation's leftover.
    fs::write(dir.path().join("jobs/1.log.1.tmp"), b"partial").unwrap();
    let rep = s.enforce_caps(&live(&[1])).unwrap();
    assert_eq!(rep.files_deleted, 2);
    assert!(s.job_output_path(1).exists());
    assert!(!s.rotated_output_path(1, 1).exists());
}

#[test]
fn permissions_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("var/hero_proc/logs");
    fs::create_dir_all(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let s = LogStore::open(&root, LogStoreConfig::default()).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in [root.clone(), root.join("jobs"), root.join("events")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    job_file(&s, 1, 10, HOUR);
    s.rotate_job_output(1).unwrap();
    s.append_event(&ev(now_ms(), "x")).unwrap();
    for f in [s.job_output_path(1), s.rotated_output_path(1, 1), s.event_file_path(now_ms())] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }

    // A fresh tree is created 0700 all the way down from the first missing directory.
    let fresh = dir.path().join("a/b/logs");
    LogStore::open(&fresh, LogStoreConfig::default()).unwrap();
    assert_eq!(mode(&dir.path().join("a")), 0o700);
}

#[test]
fn total_bytes_counts_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap();
    assert_eq!(s.total_bytes().unwrap(), 0);
    job_file(&s, 1, 123, HOUR);
    s.rotate_job_output(1).unwrap();
    job_file(&s, 1, 7, HOUR);
    s.append_event(&ev(now_ms(), "x")).unwrap();
    let ev_len = fs::metadata(s.event_file_path(now_ms())).unwrap().len();
    assert_eq!(s.total_bytes().unwrap(), 130 + ev_len);
}
