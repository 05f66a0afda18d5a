//! Job output caps enforced as the files grow, not on the compactor's hourly tick.
//!
//! One inotify watch (through `notify`) on the log store's `jobs/` directory reports every
//! write any child makes to its output file, including children re-attached after a
//! daemon restart, so the supervisor needs no hook. On each write event the file is held
//! to its per-job cap ([`LogStore::cap_job_output`]: the middle is punched out, head and
//! tail stay), and the growth seen since the last check is added up; once it passes a
//! sixteenth of the store's total cap, the store is measured and, if over, `on_over_total`
//! asks the compactor to enforce the total cap now. An idle store sends no events, so
//! nothing wakes up.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hero_proc_logstore::LogStore;
use notify::{EventKind, RecursiveMode, Watcher};

/// Keeps the watch alive; dropping it stops watching.
pub struct OutputCap {
    _watcher: notify::RecommendedWatcher,
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
    source: notify::Error,
}

impl OutputCap {
    /// Starts watching. `on_over_total` runs on the watcher's thread; keep it short
    /// (signal a task).
    pub fn start(logs: Arc<LogStore>, on_over_total: impl Fn() + Send + 'static) -> Result<OutputCap, WatchError> {
        let dir = logs.root().join("jobs");
        let mut state = State { logs, last: HashMap::new(), grown: 0, on_over_total: Box::new(on_over_total) };
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            // Writes only: the daemon creates each file empty, so a create has nothing to
            // cap (and skipping it saves a stat per job).
            if matches!(ev.kind, EventKind::Modify(_) | EventKind::Any) {
                for p in &ev.paths {
                    state.written(p);
                }
            }
        })
        .map_err(|source| WatchError { dir: dir.display().to_string(), source })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError { dir: dir.display().to_string(), source })?;
        Ok(OutputCap { _watcher: watcher })
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
    fn written(&mut self, path: &Path) {
        let Some(id) = job_of(path) else { return };
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
fn job_of(path: &Path) -> Option<i64> {
    path.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_files_count() {
        assert_eq!(job_of(Path::new("/x/jobs/42.log")), Some(42));
        for p in ["/x/jobs/42.log.1", "/x/jobs/42.log.1.tmp", "/x/jobs/a.log", "/x/jobs/42"] {
            assert_eq!(job_of(Path::new(p)), None, "{p}");
        }
    }
}
