//! Event store benchmark: appends per second (one thread, eight threads) and query
//! times over 1M events spread across 10 day files, printed as a table.
//!
//! Run: `cargo bench -p hero_proc_logstore --bench append`

use std::sync::Arc;
use std::time::{Duration, Instant};

use hero_proc_logstore::{Level, LogEvent, LogQuery, LogStore, LogStoreConfig, Order};
use serde_json::Map;

const EVENTS: usize = 1_000_000;
const DAYS: i64 = 10;
const THREADS: usize = 8;
const RUNS: usize = 5;
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

/// A realistic event: ~100-200 bytes of JSON, some with a job id and fields.
fn event(i: usize) -> LogEvent {
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
        ts_ms: DAY0 + (i as i64) * (DAYS * DAY_MS) / EVENTS as i64,
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

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig::default();

    // Encode cost is part of an append; build the events first so only the store is timed.
    let events: Vec<LogEvent> = (0..EVENTS).map(event).collect();

    let single = LogStore::open(dir.path().join("single"), cfg.clone()).unwrap();
    let t = Instant::now();
    for e in &events {
        single.append_event(e).unwrap();
    }
    let single_t = t.elapsed();

    let multi = Arc::new(LogStore::open(dir.path().join("multi"), cfg).unwrap());
    let events = Arc::new(events);
    let t = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|th| {
            let (multi, events) = (Arc::clone(&multi), Arc::clone(&events));
            std::thread::spawn(move || {
                for e in events.iter().skip(th).step_by(THREADS) {
                    multi.append_event(e).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let multi_t = t.elapsed();
    let bytes = single.total_bytes().unwrap();

    println!("hero_proc_logstore append benchmark ({EVENTS} events, {DAYS} day files, {} MiB)", bytes >> 20);
    println!();
    println!("| append                 | time      | events/s   |");
    println!("| ---------------------- | --------- | ---------- |");
    for (name, d) in [("1 thread", single_t), (&format!("{THREADS} threads (shared Arc)"), multi_t)] {
        println!("| {name:<22} | {:>7.2} s | {:>10.0} |", d.as_secs_f64(), EVENTS as f64 / d.as_secs_f64());
    }
    println!();

    let queries: Vec<(&str, LogQuery)> = vec![
        ("newest 1000 (default)", LogQuery::default()),
        ("oldest 1000", LogQuery { order: Order::OldestFirst, ..Default::default() }),
        (
            "prefix hero_proc.migration, 1000",
            LogQuery { source_prefix: Some("hero_proc.migration".into()), ..Default::default() },
        ),
        (
            "level >= error, one day",
            LogQuery {
                min_level: Some(Level::Error),
                since_ms: Some(DAY0 + 4 * DAY_MS),
                until_ms: Some(DAY0 + 5 * DAY_MS),
                ..Default::default()
            },
        ),
        ("contains \"needle\" (full scan)", LogQuery { contains: Some("needle".into()), ..Default::default() }),
        ("job_id = 4242 (full scan)", LogQuery { job_id: Some(4242), ..Default::default() }),
        (
            "level >= error, all (limit 1M)",
            LogQuery { min_level: Some(Level::Error), limit: EVENTS, ..Default::default() },
        ),
    ];
    println!("| query (median of {RUNS})                  | matches | time       |");
    println!("| ----------------------------------- | ------- | ---------- |");
    for (name, q) in queries {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            n = single.query(&q).unwrap().len();
            times.push(t.elapsed());
        }
        let d = median(times);
        println!("| {name:<35} | {n:>7} | {:>7.1} ms |", d.as_secs_f64() * 1000.0);
    }
}
