//! Event store benchmark: appends per second (one thread, eight threads) against a plain
//! buffered file write of the same bytes measured in the same run, and query times over
//! 1M events spread across 10 day files.
//!
//! Baselines (the same events, the same day files, no fsync: `append_event` does not
//! fsync either, it makes one `write(2)` per event under a mutex):
//! - `BufWriter` of the pre-encoded lines: the I/O floor;
//! - `BufWriter` + `serde_json::to_writer` per event: encoding included, as in ours;
//! - 8 threads sharing a `Mutex<BufWriter>`, each encoding outside the lock (ours' shape,
//!   buffered) for the 8-thread row.
//!
//! Checks (a panic, in both modes): each of our day files is byte-for-byte the baseline's;
//! the 8-thread store holds exactly the same lines per day; every query returns exactly
//! the events a filter over the input selects, in order.
//!
//! `cargo bench --workspace --bench append` runs 1M events; without `--bench` (what
//! `cargo test` runs) it is a 2,000-event smoke run. `HERO_BENCH_EVENTS=N` sets the size.

/// Full size or smoke: the convention the daemon-level benchmarks use.
#[path = "../../../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hero_proc_logstore::{Level, LogEvent, LogQuery, LogStore, LogStoreConfig, Order};
use serde_json::Map;

const DAYS: i64 = 10;
const THREADS: usize = 8;
/// 2026-11-23T00:00:00Z
const DAY0: i64 = 1_795_392_000_000;
const DAY_MS: i64 = 86_400_000;

const SOURCES: [&str; 8] = [
    "hero_proc.reconcile",
    "hero_proc.scheduler",
    "hero_proc.compactor",
    "hero_proc.migration.0001_init",
    "hero_proc.migration.0002_users",
    "hero_proc.auto_start_db",
    "hero_proc.engine.supervise",
    "hero_proc.rpc",
];

struct Size {
    events: usize,
    runs: usize,
}

fn size() -> Size {
    let full = bench::Mode::from_args("append") == Some(bench::Mode::Full);
    let events = std::env::var("HERO_BENCH_EVENTS").ok().and_then(|v| v.parse().ok());
    if full {
        Size { events: events.unwrap_or(1_000_000), runs: 5 }
    } else {
        Size { events: events.unwrap_or(2_000), runs: 1 }
    }
}

/// A realistic event: ~100-200 bytes of JSON, some with a job id and fields; event `i`
/// of `n`, spread evenly over [`DAYS`] days.
fn event(i: usize, n: usize) -> LogEvent {
    let level = match i % 100 {
        0 => Level::Error,
        1..=5 => Level::Warn,
        6..=40 => Level::Info,
        41..=80 => Level::Debug,
        _ => Level::Trace,
    };
    let mut fields = Map::new();
    if i.is_multiple_of(3) {
        fields.insert("pid".into(), (10_000 + i % 5000).into());
        fields.insert("attempt".into(), (i % 4).into());
    }
    let message = if i % 100_000 == 7 {
        format!("needle event {i}")
    } else {
        format!("service svc{} transitioned to running after {} ms", i % 97, i % 1000)
    };
    LogEvent {
        ts_ms: DAY0 + (i as i64) * (DAYS * DAY_MS) / n as i64,
        source: SOURCES[i % SOURCES.len()].into(),
        level,
        message,
        job_id: i.is_multiple_of(2).then_some((i / 10) as i64),
        fields,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A day file name as the store names it, in `dir`.
fn day_path(store: &LogStore, dir: &Path, ts_ms: i64) -> PathBuf {
    dir.join(store.event_file_path(ts_ms).file_name().expect("a file name"))
}

/// One buffered writer per day file, switched as the day changes (events come in time
/// order); the files are opened to append, as the store opens its own.
struct DayWriter {
    dir: PathBuf,
    day: i64,
    out: Option<BufWriter<File>>,
}

impl DayWriter {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        DayWriter { dir, day: i64::MIN, out: None }
    }

    fn writer(&mut self, store: &LogStore, ts_ms: i64) -> &mut BufWriter<File> {
        let day = ts_ms.div_euclid(DAY_MS);
        if self.out.is_none() || self.day != day {
            if let Some(mut w) = self.out.take() {
                w.flush().unwrap();
            }
            let path = day_path(store, &self.dir, ts_ms);
            self.out = Some(BufWriter::new(OpenOptions::new().create(true).append(true).open(path).unwrap()));
            self.day = day;
        }
        self.out.as_mut().expect("opened above")
    }

    fn finish(mut self) {
        if let Some(mut w) = self.out.take() {
            w.flush().unwrap();
        }
    }
}

/// The day files of `dir`, sorted, with their contents.
fn day_files(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn sorted_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    v.sort_unstable();
    v
}

/// A query, and the same filter written over the input events.
struct Q {
    name: &'static str,
    q: LogQuery,
    pick: Box<dyn Fn(&LogEvent) -> bool>,
}

fn queries(n: usize) -> Vec<Q> {
    let day4 = (DAY0 + 4 * DAY_MS, DAY0 + 5 * DAY_MS);
    vec![
        Q { name: "newest 1000 (default)", q: LogQuery::default(), pick: Box::new(|_| true) },
        Q {
            name: "oldest 1000",
            q: LogQuery { order: Order::OldestFirst, ..Default::default() },
            pick: Box::new(|_| true),
        },
        Q {
            name: "prefix hero_proc.migration, 1000",
            q: LogQuery { source_prefix: Some("hero_proc.migration".into()), ..Default::default() },
            pick: Box::new(|e| e.source.starts_with("hero_proc.migration.")),
        },
        Q {
            name: "level >= error, one day",
            q: LogQuery {
                min_level: Some(Level::Error),
                since_ms: Some(day4.0),
                until_ms: Some(day4.1),
                ..Default::default()
            },
            pick: Box::new(move |e| e.level >= Level::Error && (day4.0..day4.1).contains(&e.ts_ms)),
        },
        Q {
            name: "contains \"needle\" (full scan)",
            q: LogQuery { contains: Some("needle".into()), ..Default::default() },
            pick: Box::new(|e| e.message.contains("needle")),
        },
        Q {
            name: "job_id = 42 (full scan)",
            q: LogQuery { job_id: Some(42), ..Default::default() },
            pick: Box::new(|e| e.job_id == Some(42)),
        },
        Q {
            name: "level >= error, all (no limit)",
            q: LogQuery { min_level: Some(Level::Error), limit: n, ..Default::default() },
            pick: Box::new(|e| e.level >= Level::Error),
        },
    ]
}

fn main() {
    // `--list`, or a test-name filter that does not match: nothing to run.
    if bench::Mode::from_args("append").is_none() {
        return;
    }
    let Size { events: n, runs } = size();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig::default();

    // Build the events first so only the writes (and, where said, the encoding) are timed.
    let events: Vec<LogEvent> = (0..n).map(|i| event(i, n)).collect();
    let lines: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut l = serde_json::to_vec(e).unwrap();
            l.push(b'\n');
            l
        })
        .collect();
    let bytes: usize = lines.iter().map(Vec::len).sum();

    // Ours, one thread.
    let single = LogStore::open(dir.path().join("single"), cfg.clone()).unwrap();
    let t = Instant::now();
    for e in &events {
        single.append_event(e).unwrap();
    }
    let ours_1 = t.elapsed();

    // Baseline: BufWriter of the pre-encoded bytes.
    let mut w = DayWriter::new(dir.path().join("buf_bytes"));
    let t = Instant::now();
    for (e, l) in events.iter().zip(&lines) {
        w.writer(&single, e.ts_ms).write_all(l).unwrap();
    }
    w.finish();
    let buf_bytes = t.elapsed();

    // Baseline: BufWriter, encoding each event as it goes.
    let mut w = DayWriter::new(dir.path().join("buf_encode"));
    let t = Instant::now();
    for e in &events {
        let out = w.writer(&single, e.ts_ms);
        serde_json::to_writer(&mut *out, e).unwrap();
        out.write_all(b"\n").unwrap();
    }
    w.finish();
    let buf_encode = t.elapsed();

    // Ours, 8 threads sharing one store.
    let multi = Arc::new(LogStore::open(dir.path().join("multi"), cfg).unwrap());
    let events = Arc::new(events);
    let parallel = |append: Arc<dyn Fn(&LogEvent) + Send + Sync>| {
        let t = Instant::now();
        let handles: Vec<_> = (0..THREADS)
            .map(|th| {
                let (append, events) = (Arc::clone(&append), Arc::clone(&events));
                std::thread::spawn(move || {
                    for e in events.iter().skip(th).step_by(THREADS) {
                        append(e);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        t.elapsed()
    };
    let m = Arc::clone(&multi);
    let ours_8 = parallel(Arc::new(move |e| m.append_event(e).unwrap()));

    // Baseline: 8 threads, one Mutex<BufWriter>, encoding outside the lock.
    let shared = Arc::new(Mutex::new(DayWriter::new(dir.path().join("buf_threads"))));
    let (s, store) = (Arc::clone(&shared), Arc::clone(&multi));
    let buf_8 = parallel(Arc::new(move |e| {
        let mut l = serde_json::to_vec(e).unwrap();
        l.push(b'\n');
        s.lock().unwrap().writer(&store, e.ts_ms).write_all(&l).unwrap();
    }));
    match Arc::try_unwrap(shared) {
        Ok(w) => w.into_inner().unwrap().finish(),
        Err(_) => panic!("the threads are joined, the writer is ours alone"),
    }

    // Checks: the same bytes as the baselines, the same lines from 8 threads.
    let ours_files = day_files(&dir.path().join("single/events"));
    assert_eq!(ours_files.len() as i64, DAYS.min(n as i64), "one file per day");
    assert_eq!(ours_files, day_files(&dir.path().join("buf_bytes")), "append_event wrote other bytes");
    assert_eq!(ours_files, day_files(&dir.path().join("buf_encode")));
    assert_eq!(single.total_bytes().unwrap(), bytes as u64);
    for (files, what) in [
        (day_files(&dir.path().join("multi/events")), "ours"),
        (day_files(&dir.path().join("buf_threads")), "baseline"),
    ] {
        assert_eq!(files.len(), ours_files.len(), "{what}, 8 threads: day files");
        for ((name, a), (name_b, b)) in ours_files.iter().zip(&files) {
            assert_eq!(name, name_b);
            assert!(sorted_lines(a) == sorted_lines(b), "{what}, 8 threads: the lines of {name:?} differ");
        }
    }

    println!(
        "hero_proc_logstore append benchmark ({n} events, {DAYS} day files, {:.1} MiB, no fsync)",
        bytes as f64 / (1 << 20) as f64
    );
    println!("all day files checked equal to the baseline's (8 threads: the same lines per day)");
    println!();
    println!("| append | time | events/s | ours / baseline |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |name: &str, d: Duration, ours: Duration| {
        println!(
            "| {name} | {:.3} s | {:.0} | {:.2}x |",
            secs(d),
            n as f64 / secs(d).max(1e-9),
            secs(ours) / secs(d).max(1e-9)
        );
    };
    row("ours, 1 thread (encode + one write(2) per event)", ours_1, ours_1);
    row("baseline: BufWriter, pre-encoded bytes", buf_bytes, ours_1);
    row("baseline: BufWriter + serde_json::to_writer", buf_encode, ours_1);
    row(&format!("ours, {THREADS} threads (shared Arc)"), ours_8, ours_8);
    row(&format!("baseline: {THREADS} threads, Mutex<BufWriter>, encode outside"), buf_8, ours_8);
    println!();

    println!("| query (median of {runs}) | matches | time |");
    println!("| --- | ---: | ---: |");
    for Q { name, q, pick } in queries(n) {
        let mut want: Vec<&LogEvent> = events.iter().filter(|e| pick(e)).collect();
        if q.order == Order::NewestFirst {
            want.reverse();
        }
        want.truncate(q.limit);
        let mut times = Vec::new();
        let mut got = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            got = single.query(&q).unwrap();
            times.push(t.elapsed());
        }
        assert!(got.iter().eq(want.iter().copied()), "query {name:?}: {} events, expected {}", got.len(), want.len());
        assert!(!got.is_empty(), "query {name:?} matched nothing: a weak check");
        println!("| {name} | {} | {:.2} ms |", got.len(), secs(median(times)) * 1000.0);
    }
}
