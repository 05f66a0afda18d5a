//! Size and age caps, so a daemon with continuous job activity has a bounded log store.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Op, Result, io_err};
use crate::output::remove_file;
use crate::{LogStore, day, lock};

/// What one [`LogStore::enforce_caps`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapReport {
    pub files_deleted: u64,
    /// Bytes of deleted files plus bytes truncated away without a copy.
    pub bytes_reclaimed: u64,
    /// Live files copy-truncated (over `max_file_bytes`) or, as a last resort when the
    /// total cap cannot be met otherwise, truncated in place.
    pub files_rotated: u64,
    pub total_bytes_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `<id>.log`
    Live(i64),
    /// `<id>.log.<n>`
    Rotated,
    /// `<id>.log.1.tmp`: an interrupted rotation.
    Tmp,
    /// `YYYY-MM-DD.jsonl`, by day number.
    Event(i64),
    /// Anything else: counted, never deleted (it is not ours).
    Other,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    kind: Kind,
    len: u64,
    mtime: SystemTime,
}

fn job_kind(name: &str) -> Kind {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((id, rest)) = name.split_once(".log") else { return Kind::Other };
    let Ok(id) = id.parse::<i64>() else { return Kind::Other };
    match rest {
        "" => Kind::Live(id),
        ".1.tmp" => Kind::Tmp,
        r if r.strip_prefix('.').is_some_and(digits) => Kind::Rotated,
        _ => Kind::Other,
    }
}

fn scan_dir(dir: &Path, classify: impl Fn(&str) -> Kind, out: &mut Vec<Entry>) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(io_err(Op::ListDir, dir))?;
    for entry in rd {
        let entry = entry.map_err(io_err(Op::ListDir, dir))?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(Op::Stat, entry.path())(e)),
        };
        if !meta.is_file() {
            continue;
        }
        let kind = entry.file_name().to_str().map_or(Kind::Other, &classify);
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        out.push(Entry { path: entry.path(), kind, len: crate::punch::disk_bytes(&meta), mtime });
    }
    Ok(())
}

impl LogStore {
    fn inventory(&self) -> Result<Vec<Entry>> {
        let mut v = Vec::new();
        scan_dir(&self.jobs_dir, job_kind, &mut v)?;
        scan_dir(&self.events_dir, |n| day::parse_file_name(n).map_or(Kind::Other, Kind::Event), &mut v)?;
        Ok(v)
    }

    /// Bytes of all files in the store on disk (for metrics and `system.compactor_status`):
    /// a capped job file counts its head and tail, not the range punched out of it.
    pub fn total_bytes(&self) -> Result<u64> {
        Ok(self.inventory()?.iter().map(|e| e.len).sum())
    }

    fn delete(&self, e: &Entry, rep: &mut CapReport) -> Result<u64> {
        let freed = if let Kind::Event(d) = e.kind {
            // Hold the writer while the file goes, so no append lands in the unlinked inode.
            let mut w = lock(&self.events);
            w.forget(d);
            remove_file(&e.path, Op::Delete)?
        } else {
            remove_file(&e.path, Op::Delete)?
        };
        rep.files_deleted += 1;
        rep.bytes_reclaimed += freed;
        Ok(freed)
    }

    /// One pass of the caps, in this order:
    /// 1. leftovers of interrupted rotations are deleted;
    /// 2. live files over `max_file_bytes` on disk have their middle punched out
    ///    ([`LogStore::cap_job_output`]); where that cannot bring them under it (no hole
    ///    punching on this file system, or a cap under 64 KiB), those of running jobs
    ///    (`live_job_ids`) are copy-truncated instead;
    /// 3. files older than `max_age` are deleted: files of finished jobs and rotated
    ///    generations by modification time, event days once the whole day is older;
    /// 4. while the total exceeds `max_total_bytes`, the least recently modified files
    ///    are deleted, except the live files of running jobs and the newest event day;
    /// 5. if that is still not enough, live files of running jobs are truncated in place,
    ///    largest first (their history already went in step 4).
    ///
    /// A running job's live file is never deleted: the child holds it open and would
    /// keep writing to an invisible file.
    pub fn enforce_caps(&self, live_job_ids: &HashSet<i64>) -> Result<CapReport> {
        let _g = lock(&self.maint);
        let cfg = &self.config;
        let mut rep = CapReport::default();
        let is_running = |k: Kind| matches!(k, Kind::Live(id) if live_job_ids.contains(&id));

        for e in self.inventory()? {
            match e.kind {
                Kind::Tmp => {
                    self.delete(&e, &mut rep)?;
                }
                Kind::Live(id) if e.len > cfg.max_file_bytes => {
                    let p = self.cap_locked(id)?;
                    // Caps under the punch granularity (64 KiB) cannot be met by a hole.
                    if !p.unsupported && p.disk_bytes_after <= cfg.max_file_bytes {
                        rep.files_rotated += u64::from(p.disk_bytes_after < p.disk_bytes_before);
                        rep.bytes_reclaimed += p.disk_bytes_before.saturating_sub(p.disk_bytes_after);
                        continue;
                    }
                    if !is_running(e.kind) {
                        continue;
                    }
                    let r = self.rotate_locked(id)?;
                    rep.files_rotated += u64::from(r.rotated);
                    rep.files_deleted += r.files_deleted;
                    rep.bytes_reclaimed += r.bytes_dropped;
                }
                _ => {}
            }
        }

        let now = SystemTime::now();
        if let Some(cutoff) = now.checked_sub(cfg.max_age) {
            let cutoff_ms = cutoff.duration_since(UNIX_EPOCH).map_or(i64::MIN, |d| d.as_millis() as i64);
            for e in self.inventory()? {
                let old = match e.kind {
                    Kind::Other | Kind::Tmp => false,
                    k if is_running(k) => false,
                    Kind::Event(d) => (d + 1).saturating_mul(day::DAY_MS) <= cutoff_ms,
                    Kind::Live(_) | Kind::Rotated => e.mtime < cutoff,
                };
                if old {
                    self.delete(&e, &mut rep)?;
                }
            }
        }

        let inv = self.inventory()?;
        let mut total: u64 = inv.iter().map(|e| e.len).sum();
        if total > cfg.max_total_bytes {
            let newest_day = inv.iter().filter_map(|e| if let Kind::Event(d) = e.kind { Some(d) } else { None }).max();
            let mut candidates: Vec<&Entry> = inv
                .iter()
                .filter(|e| {
                    !is_running(e.kind) && e.kind != Kind::Other && newest_day.is_none_or(|d| e.kind != Kind::Event(d))
                })
                .collect();
            candidates.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
            for e in candidates {
                if total <= cfg.max_total_bytes {
                    break;
                }
                let freed = self.delete(e, &mut rep)?;
                total = total.saturating_sub(freed);
            }
            if total > cfg.max_total_bytes {
                let mut running: Vec<&Entry> = inv.iter().filter(|e| is_running(e.kind)).collect();
                running.sort_by_key(|e| std::cmp::Reverse(e.len));
                for e in running {
                    if total <= cfg.max_total_bytes {
                        break;
                    }
                    let f = match OpenOptions::new().write(true).open(&e.path) {
                        Ok(f) => f,
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io_err(Op::Truncate, &e.path)(err)),
                    };
                    let len = crate::punch::disk_bytes(&f.metadata().map_err(io_err(Op::Truncate, &e.path))?);
                    f.set_len(0).map_err(io_err(Op::Truncate, &e.path))?;
                    tracing::warn!(path = %e.path.display(), bytes = len, "log caps: truncated a running job's output");
                    rep.files_rotated += 1;
                    rep.bytes_reclaimed += len;
                    total = total.saturating_sub(len);
                }
            }
        }

        rep.total_bytes_after = self.total_bytes()?;
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_file_names() {
        assert_eq!(job_kind("42.log"), Kind::Live(42));
        assert_eq!(job_kind("42.log.1"), Kind::Rotated);
        assert_eq!(job_kind("42.log.12"), Kind::Rotated);
        assert_eq!(job_kind("42.log.1.tmp"), Kind::Tmp);
        for other in ["42.log.", "42.logx", "x.log", "42.log.a", "notes.txt", ".log"] {
            assert_eq!(job_kind(other), Kind::Other, "{other}");
        }
    }
}
