//! Job output caps enforced as the files grow, not on the compactor's hourly tick.
//!
//! One inotify watch on the log store's `jobs/` directory, for writes only (`IN_MODIFY`),
//! reports every write any child makes to its output file, including children re-attached
//! after a daemon restart, so the supervisor needs no hook. On each write event the file
//! is held to its per-job cap ([`LogStore::cap_job_output`]: the middle is punched out,
//! head and tail stay), and the growth seen since the last check is added up; once it
//! passes a sixteenth of the store's total cap, the store is measured and, if over,
//! `on_over_total` asks the compactor to enforce the total cap now. Only writes wake the
//! watcher: a job that writes nothing (and the rename, open and close of every job's
//! file) costs it nothing, and an idle store sends no events.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;

use hero_proc_logstore::LogStore;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

/// Keeps the watch alive; dropping it removes the watch, which ends the watcher's thread.
pub struct OutputCap {
    watches: Watches,
    wd: WatchDescriptor,
}

impl Drop for OutputCap {
    fn drop(&mut self) {
        // The kernel answers the removal with IN_IGNORED, which the thread reads and ends on.
        let _ = self.watches.remove(self.wd.clone());
    }
}

/// Why the watch could not be set up (e.g. `fs.inotify.max_user_instances` reached).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot watch job output in {dir} for the write-time cap: {source}; job files are then capped only by the \
     compactor (hourly or `hero_proc system compact`): raise fs.inotify.max_user_watches/instances"
)]
pub struct WatchError {
    dir: String,
    #[source]
    source: std::io::Error,
}

impl OutputCap {
    /// Starts watching. `on_over_total` runs on the watcher's thread; keep it short
    /// (signal a task).
    pub fn start(logs: Arc<LogStore>, on_over_total: impl Fn() + Send + 'static) -> Result<OutputCap, WatchError> {
        let dir = logs.root().join("jobs");
        let fail = |source| WatchError { dir: dir.display().to_string(), source };
        let mut inotify = Inotify::init().map_err(fail)?;
        let mut watches = inotify.watches();
        let wd = watches.add(&dir, WatchMask::MODIFY).map_err(fail)?;
        let mut state = State { logs, last: HashMap::new(), grown: 0, on_over_total: Box::new(on_over_total) };
        std::thread::Builder::new()
            .name("hero_proc-cap".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let events = match inotify.read_events_blocking(&mut buf) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return tracing::warn!("output cap: the watch failed: {e}"),
                    };
                    for ev in events {
                        if ev.mask.contains(EventMask::IGNORED) {
                            return; // the watch was removed (dropped) or the folder is gone
                        }
                        // A queue overflow loses names: the compactor's sweep catches up.
                        if let Some(name) = ev.name {
                            state.written(name);
                        }
                    }
                }
            })
            .map_err(fail)?;
        Ok(OutputCap { watches, wd })
    }
}

struct State {
    logs: Arc<LogStore>,
    /// Disk use last seen per job file, to add up growth.
    last: HashMap<i64, u64>,
    grown: u64,
    on_over_total: Box<dyn Fn() + Send>,
}

impl State {
    fn written(&mut self, name: &OsStr) {
        let Some(id) = job_of(name) else { return };
        let rep = match self.logs.cap_job_output(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("job {id}: {e}");
                return;
            }
        };
        if rep.disk_bytes_after < rep.disk_bytes_before {
            tracing::debug!(job = id, dropped = ?rep.dropped, "output cap: punched {} bytes", rep.disk_bytes_before - rep.disk_bytes_after);
        }
        let prev = self.last.insert(id, rep.disk_bytes_after).unwrap_or(0);
        self.grown += rep.disk_bytes_before.saturating_sub(prev);
        if self.last.len() > 4096 {
            // Finished jobs' entries; the growth they recorded is already counted.
            self.last.clear();
        }
        let total_cap = self.logs.config().max_total_bytes;
        if self.grown >= (total_cap / 16).max(1 << 20) {
            self.grown = 0;
            match self.logs.total_bytes() {
                Ok(t) if t > total_cap => (self.on_over_total)(),
                Ok(_) => {}
                Err(e) => tracing::warn!("output cap: {e}"),
            }
        }
    }
}

/// `<id>.log` (the live file) only: rotations and temporary files are the store's own.
fn job_of(name: &OsStr) -> Option<i64> {
    name.to_str()?.strip_suffix(".log")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_files_count() {
        assert_eq!(job_of(OsStr::new("42.log")), Some(42));
        for p in ["42.log.1", "42.log.1.tmp", "a.log", "42"] {
            assert_eq!(job_of(OsStr::new(p)), None, "{p}");
        }
    }
}
