//! Structured daemon events: append, query filters, concurrency, crash damage.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use hero_proc_logstore::{Level, LogEvent, LogQuery, LogStore, LogStoreConfig, Order};
use serde_json::Map;

/// 2026-11-23T00:00:00Z
const DAY0: i64 = 1_795_392_000_000;
const DAY: i64 = 86_400_000;

fn store(dir: &tempfile::TempDir) -> LogStore {
    LogStore::open(dir.path().join("logs"), LogStoreConfig::default()).unwrap()
}

fn ev(ts_ms: i64, source: &str, level: Level, message: &str, job_id: Option<i64>) -> LogEvent {
    LogEvent { ts_ms, source: source.into(), level, message: message.into(), job_id, fields: Map::new() }
}

fn messages(events: &[LogEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

/// Three days of events from several sources.
fn fixture(s: &LogStore) -> Vec<LogEvent> {
    let evs = vec![
        ev(DAY0 + 1000, "hero_proc.auto_start_db", Level::Error, "hero_db not registered", None),
        ev(DAY0 + 2000, "hero_proc.migration.0001_init", Level::Info, "applied 0001_init", None),
        ev(DAY0 + DAY + 10, "hero_proc.migrationx", Level::Warn, "not a migration", None),
        ev(DAY0 + DAY + 20, "hero_proc.migration.0002_users", Level::Warn, "slow migration 0002", Some(5)),
        ev(DAY0 + DAY + 30, "hero_proc.reconcile", Level::Debug, "diff computed", Some(5)),
        ev(DAY0 + 2 * DAY + 5, "hero_proc.reconcile", Level::Info, "applied 3 changes", None),
        ev(DAY0 + 2 * DAY + 6, "hero_proc.migration", Level::Trace, "migration runner idle", None),
    ];
    for e in &evs {
        s.append_event(e).unwrap();
    }
    evs
}

#[test]
fn day_files_hold_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    fixture(&s);
    let day1 = dir.path().join("logs/events/2026-11-24.jsonl");
    assert_eq!(s.event_file_path(DAY0 + DAY + 99), day1);
    let text = fs::read_to_string(&day1).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with('\n'));
    for l in text.lines() {
        serde_json::from_str::<LogEvent>(l).unwrap();
    }
    assert_eq!(fs::metadata(&day1).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(dir.path().join("logs/events/2026-11-23.jsonl").exists());
    assert!(dir.path().join("logs/events/2026-11-25.jsonl").exists());
}

#[test]
fn query_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let evs = fixture(&s);
    let q = |q: LogQuery| s.query(&q).unwrap();

    // Default: everything, newest first; events round-trip exactly.
    let mut newest = evs.clone();
    newest.reverse();
    assert_eq!(q(LogQuery::default()), newest);
    assert_eq!(q(LogQuery { order: Order::OldestFirst, ..Default::default() }), evs);

    // Dotted prefix.
    let mig = q(LogQuery { source_prefix: Some("hero_proc.migration".into()), ..Default::default() });
    assert_eq!(messages(&mig), ["migration runner idle", "slow migration 0002", "applied 0001_init"]);
    let below = q(LogQuery { source_prefix: Some("hero_proc.migration.".into()), ..Default::default() });
    assert_eq!(messages(&below), ["slow migration 0002", "applied 0001_init"]);

    // Level.
    let warn = q(LogQuery { min_level: Some(Level::Warn), ..Default::default() });
    assert_eq!(messages(&warn), ["slow migration 0002", "not a migration", "hero_db not registered"]);

    // Time: since inclusive, until exclusive.
    let day1 = q(LogQuery { since_ms: Some(DAY0 + DAY + 10), until_ms: Some(DAY0 + DAY + 30), ..Default::default() });
    assert_eq!(messages(&day1), ["slow migration 0002", "not a migration"]);
    let since = q(LogQuery { since_ms: Some(DAY0 + 2 * DAY + 6), ..Default::default() });
    assert_eq!(messages(&since), ["migration runner idle"]);

    // Substring, job id, combined.
    assert_eq!(messages(&q(LogQuery { contains: Some("applied".into()), ..Default::default() })).len(), 2);
    let job = q(LogQuery { job_id: Some(5), ..Default::default() });
    assert_eq!(messages(&job), ["diff computed", "slow migration 0002"]);
    let both = q(LogQuery {
        source_prefix: Some("hero_proc.reconcile".into()),
        min_level: Some(Level::Info),
        ..Default::default()
    });
    assert_eq!(messages(&both), ["applied 3 changes"]);

    // Limit, both orders, across day files.
    assert_eq!(
        messages(&q(LogQuery { limit: 4, ..Default::default() })),
        ["migration runner idle", "applied 3 changes", "diff computed", "slow migration 0002"]
    );
    assert_eq!(
        messages(&q(LogQuery { limit: 3, order: Order::OldestFirst, ..Default::default() })),
        ["hero_db not registered", "applied 0001_init", "not a migration"]
    );
    assert!(q(LogQuery { limit: 0, ..Default::default() }).is_empty());
}

#[test]
fn fields_and_builders_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let e = LogEvent::now("hero_proc.auto_start_db", Level::Error, "hero_db is not registered")
        .with_job(9)
        .with_field("remediation", "add actions/hero_db.yaml with status: start")
        .with_field("attempt", 2);
    s.append_event(&e).unwrap();
    assert_eq!(s.query(&LogQuery::default()).unwrap(), [e]);
}

#[test]
fn eight_concurrent_appenders_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(&dir));
    const PER_THREAD: usize = 2000;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Up to ~12 KiB messages: larger than a pipe buffer or a page.
                    let body = format!("t{t}-{i}-").repeat(1 + (i * 7 + t) % 1500);
                    let e = ev(DAY0 + 500, &format!("test.t{t}"), Level::Info, &body, Some(i as i64))
                        .with_field("thread", t);
                    s.append_event(&e).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    let text = fs::read_to_string(s.event_file_path(DAY0)).unwrap();
    let mut next: HashMap<u64, i64> = HashMap::new();
    let mut count = 0;
    for line in text.lines() {
        let e: LogEvent = serde_json::from_str(line).unwrap_or_else(|err| panic!("corrupt line ({err})"));
        let t = e.fields["thread"].as_u64().unwrap();
        let i = e.job_id.unwrap();
        // Each thread's events appear whole and in its own order.
        assert_eq!(next.insert(t, i + 1).unwrap_or(0), i);
        assert_eq!(e.message, format!("t{t}-{i}-").repeat(1 + (i as usize * 7 + t as usize) % 1500));
        count += 1;
    }
    assert_eq!(count, 8 * PER_THREAD);
    let all = s.query(&LogQuery { limit: usize::MAX, ..Default::default() }).unwrap();
    assert_eq!(all.len(), 8 * PER_THREAD);
}

#[test]
fn corrupt_and_truncated_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.append_event(&ev(DAY0 + 1, "a", Level::Info, "one", None)).unwrap();
    s.append_event(&ev(DAY0 + 2, "a", Level::Info, "two", None)).unwrap();
    let path = s.event_file_path(DAY0);
    drop(s);
    {
        // Garbage, then a crash in the middle of writing an event.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json at all\n{\"ts_ms\":3,\"source\":\"a\",\"lev").unwrap();
    }
    // Readers skip the damage...
    assert_eq!(messages(&store(&dir).query(&LogQuery::default()).unwrap()), ["two", "one"]);
    // ...and the next daemon ends the partial line before appending, so its first event
    // is not lost by fusing with the fragment.
    let s = store(&dir);
    s.append_event(&ev(DAY0 + 4, "a", Level::Info, "four", None)).unwrap();
    s.append_event(&ev(DAY0 + 5, "a", Level::Info, "five", None)).unwrap();
    assert_eq!(messages(&s.query(&LogQuery::default()).unwrap()), ["five", "four", "two", "one"]);
    assert_eq!(
        messages(&s.query(&LogQuery { order: Order::OldestFirst, ..Default::default() }).unwrap()),
        ["one", "two", "four", "five"]
    );
}

#[test]
fn many_days_newest_first_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    for d in 0..40 {
        for i in 0..50 {
            s.append_event(&ev(DAY0 + d * DAY + i, "bulk", Level::Info, &format!("d{d} i{i}"), None)).unwrap();
        }
    }
    let last = s.query(&LogQuery { limit: 3, ..Default::default() }).unwrap();
    assert_eq!(messages(&last), ["d39 i49", "d39 i48", "d39 i47"]);
    let window = s
        .query(&LogQuery {
            since_ms: Some(DAY0 + 10 * DAY + 48),
            until_ms: Some(DAY0 + 11 * DAY + 2),
            order: Order::OldestFirst,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(messages(&window), ["d10 i48", "d10 i49", "d11 i0", "d11 i1"]);
}
