//! Job output with real child processes writing to the store's files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hero_proc_logstore::{Error, LogStore, LogStoreConfig, ReadOpts};

fn store(dir: &tempfile::TempDir) -> LogStore {
    LogStore::open(dir.path().join("logs"), LogStoreConfig::default()).unwrap()
}

/// Spawns `sh -c script` with stdout and stderr on the job's output file.
fn spawn(store: &LogStore, job_id: i64, script: &str) -> KillOnDrop {
    let f = store.open_job_output(job_id).unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Kills and reaps the child even when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn all(store: &LogStore, job: i64) -> Vec<String> {
    store.read_job_output(job, ReadOpts { include_rotated: true, ..ReadOpts::default() }).unwrap().lines
}

#[test]
fn child_stdout_and_stderr_land_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut child = spawn(&s, 1, "echo out; echo err >&2");
    assert!(child.0.wait().unwrap().success());
    let out = s.read_job_output(1, ReadOpts::default()).unwrap();
    assert_eq!(out.lines, ["out", "err"]);
    assert!(!out.has_more);
    assert_eq!(out.next_offset, 8);
    let mode = fs::metadata(s.job_output_path(1)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn output_outlives_the_store_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut child = spawn(&s, 2, "echo before; sleep 0.3; echo after");
    // The "daemon" goes away while the child runs.
    drop(s);
    assert!(child.0.wait().unwrap().success());
    let s = store(&dir);
    assert_eq!(s.read_job_output(2, ReadOpts::default()).unwrap().lines, ["before", "after"]);
    // A restarted job with the same id appends.
    let mut again = spawn(&s, 2, "echo third");
    again.0.wait().unwrap();
    assert_eq!(all(&s, 2), ["before", "after", "third"]);
}

#[test]
fn copy_truncate_while_a_child_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    // Bounded: at most 20000 lines, and killed at the end of the test.
    let child = spawn(&s, 3, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"line $i\"; sleep 0.002; done");
    let len = |s: &LogStore| fs::metadata(s.job_output_path(3)).map(|m| m.len()).unwrap_or(0);

    for round in 0..3 {
        wait_for("output", || len(&s) > 400);
        let r = s.rotate_job_output(3).unwrap();
        assert!(r.rotated, "round {round}");
        assert!(r.copied_bytes > 400);
        // With 2 generations kept, the third rotation drops the oldest.
        assert_eq!(r.files_deleted, u64::from(round == 2));
    }
    wait_for("output after the last rotation", || len(&s) > 200);
    drop(child);

    assert!(s.rotated_output_path(3, 1).exists() && s.rotated_output_path(3, 2).exists());
    assert!(!s.rotated_output_path(3, 3).exists());
    for p in [s.job_output_path(3), s.rotated_output_path(3, 1), s.rotated_output_path(3, 2)] {
        let bytes = fs::read(&p).unwrap();
        // O_APPEND: after the truncate the child writes at the new end, never past a hole.
        assert!(!bytes.contains(&0), "{} has a hole of zeros", p.display());
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Generations and the live file read as one stream: numbers increase, and at most a
    // few lines went missing at each rotation (written between last copy and truncate).
    let lines = all(&s, 3);
    let nums: Vec<u64> = lines
        .iter()
        .map(|l| l.strip_prefix("line ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad line {l:?}")))
        .collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "not increasing: {nums:?}");
    let missing = (nums.last().unwrap() - nums[0] + 1) as usize - nums.len();
    assert!(missing <= 3 * 5, "{missing} lines lost across 3 rotations");
    // The live file alone continues where .1 ends.
    let live = s.read_job_output(3, ReadOpts::default()).unwrap().lines;
    assert!(!live.is_empty() && live.len() < lines.len());
}

#[test]
fn a_line_split_by_rotation_joins_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut f = s.open_job_output(4).unwrap();
    f.write_all(b"first\nhalf-").unwrap();
    s.rotate_job_output(4).unwrap();
    f.write_all(b"line\nlast\n").unwrap();
    assert_eq!(all(&s, 4), ["first", "half-line", "last"]);
    let tail = s.read_job_output(4, ReadOpts { tail_lines: Some(2), include_rotated: true, ..Default::default() });
    assert_eq!(tail.unwrap().lines, ["half-line", "last"]);
    // Without the rotated generations, only the live part.
    assert_eq!(s.read_job_output(4, ReadOpts::default()).unwrap().lines, ["line", "last"]);
}

/// Bytes this thread has read through read(2)/pread(2) so far (Linux).
fn thread_rchar() -> Option<u64> {
    let io = fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok())
}

#[test]
fn tail_of_a_huge_file_reads_only_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let path = s.job_output_path(5);
    {
        // 4 GiB of hole (sparse, costs no disk) then 100k real lines.
        let f = s.open_job_output(5).unwrap();
        f.set_len(4 << 30).unwrap();
        let mut w = std::io::BufWriter::new(f);
        for i in 0..100_000 {
            writeln!(w, "line {i}").unwrap();
        }
    }
    let size = fs::metadata(&path).unwrap().len();
    assert!(size > 4 << 30);

    let before = thread_rchar();
    let out = s.read_job_output(5, ReadOpts { tail_lines: Some(10), ..Default::default() }).unwrap();
    let after = thread_rchar();
    let expected: Vec<String> = (99_990..100_000).map(|i| format!("line {i}")).collect();
    assert_eq!(out.lines, expected);
    assert!(out.has_more);
    assert_eq!(out.next_offset, size);
    if cfg!(target_os = "linux") {
        assert!(before.is_some(), "/proc/thread-self/io is needed to count the bytes read");
    }
    if let (Some(b), Some(a)) = (before, after) {
        // Opening and reading a handful of /proc and metadata bytes aside, only the end.
        assert!(a - b < 1 << 20, "tail of {size} bytes read {} bytes", a - b);
    }

    // A tail larger than one backwards chunk is still exact.
    let out = s.read_job_output(5, ReadOpts { tail_lines: Some(20_000), ..Default::default() }).unwrap();
    let expected: Vec<String> = (80_000..100_000).map(|i| format!("line {i}")).collect();
    assert_eq!(out.lines, expected);

    // max_bytes bounds the read; the line cut by the budget is dropped.
    let out = s.read_job_output(5, ReadOpts { tail_lines: Some(1000), max_bytes: Some(100), ..Default::default() });
    let out = out.unwrap();
    assert!(out.has_more);
    assert!(!out.lines.is_empty() && out.lines.len() < 10);
    assert_eq!(out.lines.last().unwrap(), "line 99999");
    assert!(out.lines.iter().all(|l| l.starts_with("line ")), "{:?}", out.lines);
}

#[test]
fn forward_pages_and_following_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut f = s.open_job_output(6).unwrap();
    let lines: Vec<String> = (0..1000).map(|i| format!("entry {i} {}", "x".repeat(i % 37))).collect();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }

    // Pages of at most 1000 bytes end on line boundaries and stitch back exactly.
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let page = s.read_job_output(6, ReadOpts { max_bytes: Some(1000), offset: Some(offset), ..Default::default() });
        let page = page.unwrap();
        assert!(page.next_offset - offset <= 1000);
        got.extend(page.lines);
        offset = page.next_offset;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(got, lines);

    // Following: only what was appended since.
    writeln!(f, "new one").unwrap();
    let next = s.read_job_output(6, ReadOpts { offset: Some(offset), ..Default::default() }).unwrap();
    assert_eq!(next.lines, ["new one"]);
    assert!(!next.reset);

    // After a rotation the old offset is past the end: the reader is told and restarts.
    s.rotate_job_output(6).unwrap();
    writeln!(f, "after rotation").unwrap();
    let next = s.read_job_output(6, ReadOpts { offset: Some(next.next_offset), ..Default::default() }).unwrap();
    assert!(next.reset);
    assert_eq!(next.lines, ["after rotation"]);
}

#[test]
fn missing_output_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let err = s.read_job_output(7, ReadOpts::default()).unwrap_err();
    assert!(matches!(err, Error::NoOutput { job_id: 7, .. }), "{err}");
    assert!(err.to_string().contains("log caps"), "{err}");

    let mut f = s.open_job_output(7).unwrap();
    f.write_all(b"one\n").unwrap();
    s.rotate_job_output(7).unwrap();
    f.write_all(b"two\n").unwrap();
    s.rotate_job_output(7).unwrap();
    f.write_all(b"three\n").unwrap();
    assert_eq!(all(&s, 7), ["one", "two", "three"]);
    assert_eq!(s.delete_job_output(7).unwrap(), 14);
    assert!(!s.job_output_path(7).exists() && !s.rotated_output_path(7, 1).exists());
    assert!(!s.rotated_output_path(7, 2).exists());
    assert_eq!(s.delete_job_output(7).unwrap(), 0);
}

#[test]
fn zero_generations_truncates_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig { rotated_generations: 0, ..LogStoreConfig::default() };
    let s = LogStore::open(dir.path(), cfg).unwrap();
    let mut f = s.open_job_output(8).unwrap();
    f.write_all(b"gone\n").unwrap();
    let r = s.rotate_job_output(8).unwrap();
    assert!(r.rotated);
    assert_eq!(r.bytes_dropped, 5);
    assert!(!s.rotated_output_path(8, 1).exists());
    f.write_all(b"kept\n").unwrap();
    assert_eq!(all(&s, 8), ["kept"]);
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
}

fn no_output(s: &LogStore, job: i64) -> bool {
    matches!(s.read_job_output(job, ReadOpts::default()), Err(Error::NoOutput { .. }))
}

#[test]
fn an_empty_file_nobody_holds_becomes_the_next_jobs_and_a_held_one_stays_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.keep_spare_outputs(8).unwrap();
    let spares = dir.path().join("logs/spare");
    wait_for("the spare pool to fill", || fs::read_dir(&spares).unwrap().count() == 8);

    // Job 1 printed nothing and its process is gone: its file goes back to the pool, and
    // the next job's file is the same inode (no allocation).
    let mut quiet = spawn(&s, 1, "true");
    assert!(quiet.0.wait().unwrap().success());
    let quiet_inode = inode(&s.job_output_path(1));
    // Job 2 printed nothing and ended, but left a child in the background holding its
    // stdout: its file stays, and what that child writes later stays job 2's.
    let go = dir.path().join("go");
    let waits = format!("i=0; while [ ! -e {} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done", go.display());
    let mut leaver = spawn(&s, 2, &format!("({waits}; echo late) &"));
    assert!(leaver.0.wait().unwrap().success());
    drop(leaver);
    assert!(s.recycle_job_output(1));
    assert!(!s.job_output_path(1).exists());
    assert!(no_output(&s, 1), "a recycled job reads as having no output");
    assert!(!s.recycle_job_output(2), "a file a process still holds must stay where it is");
    let mut next = spawn(&s, 3, "true");
    assert!(next.0.wait().unwrap().success());
    assert_eq!(inode(&s.job_output_path(3)), quiet_inode, "job 3 took job 1's recycled file");

    // Job 4 printed: its file stays.
    let mut loud = spawn(&s, 4, "echo said");
    assert!(loud.0.wait().unwrap().success());
    assert!(!s.recycle_job_output(4));
    assert_eq!(all(&s, 4), ["said"]);

    // Job 6 printed nothing but preallocated space past its end: it stays (the space
    // would count against the next job's file).
    let f = s.open_job_output(6).unwrap();
    // SAFETY: fallocate on a descriptor the test owns.
    let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
    drop(f);
    assert_eq!(fs::metadata(s.job_output_path(6)).unwrap().len(), 0);
    assert!(!s.recycle_job_output(6));

    // Job 7 printed nothing but changed its file's mode (a root job can): it stays.
    let f = s.open_job_output(7).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o644)).unwrap();
    drop(f);
    assert!(!s.recycle_job_output(7));

    // A rotated job's live file is empty, but its output is in `.1`: it stays.
    let mut rotated = spawn(&s, 5, "echo before");
    assert!(rotated.0.wait().unwrap().success());
    assert!(s.rotate_job_output(5).unwrap().rotated);
    assert!(!s.recycle_job_output(5));
    assert_eq!(all(&s, 5), ["before"]);
    drop(s);
    // The background child of job 2 still writes where it should.
    let s = store(&dir);
    assert!(no_output(&s, 1));
    assert_eq!(all(&s, 3), Vec::<String>::new());
    fs::write(&go, "").unwrap();
    wait_for("job 2's background child to write", || all(&s, 2) == ["late"]);
    assert_eq!(all(&s, 3), Vec::<String>::new());
}

#[test]
fn a_store_without_spares_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut quiet = spawn(&s, 1, "true");
    assert!(quiet.0.wait().unwrap().success());
    assert!(!s.recycle_job_output(1));
    assert_eq!(all(&s, 1), Vec::<String>::new());
}

/// A reader that opened a quiet job's file just before it went back to the pool, and read
/// it after the next job had written into it, must not answer that job's bytes as this
/// one's. A race: each round gives it one chance, many rounds make it likely.
#[test]
fn a_recycled_file_read_mid_reuse_never_shows_the_next_jobs_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(store(&dir));
    s.keep_spare_outputs(8).unwrap();
    let current = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, current, done) = (s.clone(), current.clone(), done.clone());
        std::thread::spawn(move || {
            let mut wrong = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let quiet = current.load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(out) = s.read_job_output(quiet, ReadOpts::default())
                    && !out.lines.is_empty()
                {
                    wrong.push((quiet, out.lines));
                }
            }
            wrong
        })
    };
    for round in 0..3000i64 {
        let (quiet, loud) = (2 * round + 1, 2 * round + 2);
        drop(s.open_job_output(quiet).unwrap());
        current.store(quiet, std::sync::atomic::Ordering::Relaxed);
        if s.recycle_job_output(quiet) {
            let mut f = s.open_job_output(loud).unwrap();
            writeln!(f, "job {loud}").unwrap();
            drop(f);
            s.delete_job_output(loud).unwrap();
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let wrong = reader.join().unwrap();
    assert!(wrong.is_empty(), "quiet jobs read other jobs' output: {:?}", &wrong[..wrong.len().min(5)]);
}
