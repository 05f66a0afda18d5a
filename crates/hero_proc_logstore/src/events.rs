//! Structured events from the daemon itself, as JSON lines in one file per UTC day.

use std::borrow::Cow;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Op, Result, io_err};
use crate::lines::RevLines;
use crate::{FILE_MODE, LogStore, day, lock};

/// Severity, ordered `Trace < Debug < Info < Warn < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is not one of trace, debug, info, warn (warning), error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}; use one of trace, debug, info, warn, error")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => return Err(ParseLevelError(s.to_owned())),
        })
    }
}

/// One event, stored as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// Unix time in milliseconds; also picks the day file.
    pub ts_ms: i64,
    /// Dotted origin, e.g. `hero_proc.migration.0003_users`.
    pub source: String,
    pub level: Level,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

impl LogEvent {
    /// An event stamped with the current time.
    pub fn now(source: impl Into<String>, level: Level, message: impl Into<String>) -> LogEvent {
        let ts_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        LogEvent { ts_ms, source: source.into(), level, message: message.into(), job_id: None, fields: Map::new() }
    }

    pub fn with_job(mut self, job_id: i64) -> LogEvent {
        self.job_id = Some(job_id);
        self
    }

    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> LogEvent {
        self.fields.insert(key.into(), value.into());
        self
    }
}

/// Which end of the log a query starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The default: "the last N events" is what an operator asks for first.
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Filters of [`LogStore::query`]; every set filter must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    /// Dotted prefix: `hero_proc.migration` matches itself and `hero_proc.migration.x`,
    /// not `hero_proc.migrationx`. A prefix ending in `.` matches only below it.
    pub source_prefix: Option<String>,
    /// Events at this level or more severe.
    pub min_level: Option<Level>,
    /// Inclusive lower bound on `ts_ms`.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound on `ts_ms`.
    pub until_ms: Option<i64>,
    /// Case-sensitive substring of the message.
    pub contains: Option<String>,
    pub job_id: Option<i64>,
    /// At most this many events (default 1000); 0 returns none.
    pub limit: usize,
    /// Default newest first. Order is by day file, then append order within the day,
    /// which is `ts_ms` order as long as callers stamp events when they append them.
    pub order: Order,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery {
            source_prefix: None,
            min_level: None,
            since_ms: None,
            until_ms: None,
            contains: None,
            job_id: None,
            limit: 1000,
            order: Order::NewestFirst,
        }
    }
}

/// The fields filters look at, borrowed from the line: most lines of a selective query
/// are rejected without building their `fields` map.
#[derive(Deserialize)]
struct EventView<'a> {
    ts_ms: i64,
    #[serde(borrow)]
    source: Cow<'a, str>,
    level: Level,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default)]
    job_id: Option<i64>,
}

pub(crate) fn source_matches(source: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    if prefix.ends_with('.') {
        return source.starts_with(prefix);
    }
    source.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl LogQuery {
    fn matches(&self, e: &EventView<'_>) -> bool {
        self.since_ms.is_none_or(|s| e.ts_ms >= s)
            && self.until_ms.is_none_or(|u| e.ts_ms < u)
            && self.min_level.is_none_or(|l| e.level >= l)
            && self.job_id.is_none_or(|j| e.job_id == Some(j))
            && self.source_prefix.as_deref().is_none_or(|p| source_matches(&e.source, p))
            && self.contains.as_deref().is_none_or(|c| e.message.contains(c))
    }

    /// Whether a day file can hold matching events (files are named by the events' day).
    fn day_in_range(&self, d: i64) -> bool {
        self.since_ms.is_none_or(|s| d >= day::day_of_ms(s))
            && self.until_ms.is_none_or(|u| d <= day::day_of_ms(u.saturating_sub(1)))
    }
}

/// The event file currently open for appending.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    day: i64,
    file: Option<File>,
}

impl Writer {
    /// Forgets the handle if it is the file of `day` (which caps are about to delete), so
    /// the next append recreates the file instead of writing to an unlinked inode.
    pub(crate) fn forget(&mut self, day: i64) {
        if self.day == day {
            self.file = None;
        }
    }
}

/// Opens a day file for appending and ends a partial last line (left by a crash
/// mid-write) so the next event does not fuse with it.
fn open_day_file(path: &Path) -> io::Result<File> {
    // Readable too: the last byte is checked below.
    let mut f = OpenOptions::new().read(true).create(true).append(true).mode(FILE_MODE).open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        crate::lines::read_exact_at(&f, &mut last, len - 1)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    Ok(f)
}

impl LogStore {
    /// The file holding events of the UTC day of `ts_ms`.
    pub fn event_file_path(&self, ts_ms: i64) -> PathBuf {
        self.events_dir.join(day::file_name(day::day_of_ms(ts_ms)))
    }

    /// Appends one event as one JSON line. Safe from many threads: the line is encoded
    /// outside the lock and written with a single `write(2)` inside it.
    pub fn append_event(&self, event: &LogEvent) -> Result<()> {
        let mut line =
            serde_json::to_vec(event).map_err(|err| Error::Encode { source_name: event.source.clone(), err })?;
        line.push(b'\n');
        let day = day::day_of_ms(event.ts_ms);
        let mut w = lock(&self.events);
        if w.file.is_none() || w.day != day {
            w.file = None;
            let path = self.events_dir.join(day::file_name(day));
            w.file = Some(open_day_file(&path).map_err(io_err(Op::AppendEvent, path))?);
            w.day = day;
        }
        let file = w.file.as_mut().expect("opened above");
        if let Err(e) = file.write_all(&line) {
            // Reopen next time: the file may have been removed or the disk fixed.
            w.file = None;
            return Err(io_err(Op::AppendEvent, self.events_dir.join(day::file_name(day)))(e));
        }
        Ok(())
    }

    /// Event day files as (day, path), ascending.
    pub(crate) fn event_days(&self) -> Result<Vec<(i64, PathBuf)>> {
        let rd = std::fs::read_dir(&self.events_dir).map_err(io_err(Op::ListDir, &self.events_dir))?;
        let mut days = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err(Op::ListDir, &self.events_dir))?;
            if let Some(d) = entry.file_name().to_str().and_then(day::parse_file_name) {
                days.push((d, entry.path()));
            }
        }
        days.sort();
        Ok(days)
    }

    /// Events matching `q`, streamed file by file (newest first: each day file is read
    /// backwards), stopping at `q.limit`; memory is bounded by the result, not the store.
    /// Lines that do not parse (a crash mid-write) are skipped with a warning.
    pub fn query(&self, q: &LogQuery) -> Result<Vec<LogEvent>> {
        let mut out = Vec::new();
        if q.limit == 0 {
            return Ok(out);
        }
        let mut days: Vec<_> = self.event_days()?.into_iter().filter(|(d, _)| q.day_in_range(*d)).collect();
        if q.order == Order::NewestFirst {
            days.reverse();
        }
        for (_, path) in days {
            let file = match File::open(&path) {
                Ok(f) => f,
                // Deleted by the caps since we listed the directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(Op::ReadEvents, path)(e)),
            };
            let mut scan = Scan { q, out: &mut out, corrupt: 0 };
            let r = match q.order {
                Order::NewestFirst => scan.backwards(&file),
                Order::OldestFirst => scan.forwards(&file),
            };
            if scan.corrupt > 0 {
                tracing::warn!(path = %path.display(), lines = scan.corrupt, "skipped unreadable event lines");
            }
            r.map_err(io_err(Op::ReadEvents, &path))?;
            if out.len() >= q.limit {
                break;
            }
        }
        Ok(out)
    }
}

struct Scan<'q, 'o> {
    q: &'q LogQuery,
    out: &'o mut Vec<LogEvent>,
    corrupt: usize,
}

impl Scan<'_, '_> {
    /// Adds the line's event if it matches; false once the limit is reached.
    fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.is_empty() {
            return true;
        }
        match serde_json::from_slice::<EventView<'_>>(line) {
            Ok(v) if self.q.matches(&v) => match serde_json::from_slice::<LogEvent>(line) {
                Ok(e) => self.out.push(e),
                Err(_) => self.corrupt += 1,
            },
            Ok(_) => {}
            Err(_) => self.corrupt += 1,
        }
        self.out.len() < self.q.limit
    }

    fn backwards(&mut self, file: &File) -> io::Result<()> {
        let end = file.metadata()?.len();
        let mut lines = RevLines::new(file, 0, end)?;
        while let Some(l) = lines.next_line()? {
            if !self.line(&l) {
                break;
            }
        }
        Ok(())
    }

    fn forwards(&mut self, file: &File) -> io::Result<()> {
        let mut r = BufReader::with_capacity(256 * 1024, file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 || !self.line(&buf) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_prefix() {
        assert!(source_matches("hero_proc.migration", "hero_proc.migration"));
        assert!(source_matches("hero_proc.migration.x", "hero_proc.migration"));
        assert!(!source_matches("hero_proc.migrationx", "hero_proc.migration"));
        assert!(!source_matches("hero_proc", "hero_proc.migration"));
        assert!(source_matches("hero_proc.migration.x", "hero_proc.migration."));
        assert!(!source_matches("hero_proc.migration", "hero_proc.migration."));
        assert!(source_matches("anything", ""));
    }

    #[test]
    fn level_order_and_names() {
        assert!(Level::Trace < Level::Debug && Level::Debug < Level::Info);
        assert!(Level::Info < Level::Warn && Level::Warn < Level::Error);
        assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().unwrap_err().to_string().contains("use one of"));
        assert_eq!(serde_json::to_string(&Level::Error).unwrap(), "\"error\"");
    }

    #[test]
    fn event_json_is_compact_and_round_trips() {
        let e = LogEvent::now("hero_proc.reconcile", Level::Info, "applied\nplan").with_job(7).with_field("n", 3);
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(serde_json::from_str::<LogEvent>(&s).unwrap(), e);
        let bare = LogEvent { job_id: None, fields: Map::new(), ..e };
        let s = serde_json::to_string(&bare).unwrap();
        assert!(!s.contains("job_id") && !s.contains("fields"), "{s}");
    }

    #[test]
    fn query_deserialises_with_defaults() {
        let q: LogQuery = serde_json::from_str(r#"{"source_prefix":"hero_proc","min_level":"warn"}"#).unwrap();
        assert_eq!(q.limit, 1000);
        assert_eq!(q.order, Order::NewestFirst);
        assert_eq!(q.min_level, Some(Level::Warn));
    }
}
