//! hero_proc's file-based log store.
//!
//! The daemon keeps jobs and runs in SQLite, but log bytes live here, in plain files
//! under a directory the caller chooses (`$HERO_ROOTDIR/var/hero_proc/logs/`), because a
//! supervised child must be able to keep logging while the daemon restarts.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/                       0700
//!   jobs/                      0700
//!     <job_id>.log             0600  live output: the child's stdout and stderr, combined
//!     <job_id>.log.1 .. .N     0600  copy-truncate generations, .1 the newest (N default 2)
//!     <job_id>.log.1.tmp             a rotation in progress (removed by the next enforce_caps)
//!   events/                    0700
//!     YYYY-MM-DD.jsonl         0600  daemon events of that UTC day (by the event's ts_ms),
//!                                    one JSON object per line, in append order
//! ```
//!
//! # Guarantees
//!
//! - **Child output survives a daemon crash or restart.** The child writes to its own
//!   descriptor of `<job_id>.log` (opened `O_APPEND`); no byte passes through the
//!   daemon, so nothing is buffered there to lose. Nothing is fsynced: an OS crash or
//!   power loss can lose what was still in the page cache.
//! - **Copy-truncate rotation can lose a few bytes.** Rotation copies the live file to
//!   `.1` (repeating until the copy caught up with the writer), then truncates the
//!   original; whatever the child writes between the last copy pass and the truncate
//!   (microseconds) is lost. A line being written at that moment may be split between
//!   `.1` and the live file; reading with `include_rotated` reads the generations as one
//!   stream, so the halves join again. Because the child writes with `O_APPEND`, its
//!   next write lands at the new end: no hole of zeros. A crash between the copy and the
//!   truncate duplicates data (in `.1` and the live file) but never loses it.
//! - **Events survive a daemon crash.** Each event is one `write(2)` of one whole line,
//!   under an internal mutex; it is in the kernel when `append_event` returns (flushed,
//!   not fsynced). A crash in the middle of a write leaves a partial last line: queries
//!   skip lines that do not parse, and the next writer ends the partial line before
//!   appending, so the damage stays one line.
//! - **One writer process.** The store assumes only the daemon writes; any process may
//!   read. [`LogStore`] is `Send + Sync`; share it with an `Arc`.
//! - **A job's file is capped as it grows** ([`LogStore::cap_job_output`], called by
//!   the engine on every inotify write event): past three quarters of `max_file_bytes`
//!   on disk, the middle is deallocated with `fallocate(PUNCH_HOLE | KEEP_SIZE)`. The
//!   first eighth of the cap (the head) and the newest three eighths (the tail) stay;
//!   the last quarter is headroom for what a child writes before the next event. The
//!   child's descriptor and offsets are untouched, so unlike copy-truncate no byte is
//!   lost to a race; the logical size keeps growing, disk use does not. The file system
//!   records the dropped range (`SEEK_HOLE`/`SEEK_DATA`), and reads print
//!   `[... N bytes dropped ...]` in its place. Where holes cannot be punched (file
//!   system, or a cap under 512 KiB), `enforce_caps` copy-truncates instead.
//! - **Reads cost what they return**: forward pages bounded by bytes and lines, tails
//!   read backwards from the end with a byte budget and a per-line bound.
//! - **Caps** ([`LogStore::enforce_caps`]) never delete the live file of a job the
//!   caller says is running; they punch or rotate it, and as a last resort truncate it.
//!   Sizes are disk use (`st_blocks`), so a capped file counts its head and tail.
//!
//! # Example
//!
//! ```
//! use std::collections::HashSet;
//! use hero_proc_logstore::{Level, LogEvent, LogQuery, LogStore, LogStoreConfig, ReadOpts};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let store = LogStore::open(dir.path().join("logs"), LogStoreConfig::default())?;
//!
//! // The child writes its stdout and stderr straight into the store.
//! let out = store.open_job_output(42)?;
//! let status = std::process::Command::new("sh")
//!     .args(["-c", "echo hello; echo oops >&2"])
//!     .stdout(out.try_clone().unwrap())
//!     .stderr(out)
//!     .status()
//!     .unwrap();
//! assert!(status.success());
//! let tail = store.read_job_output(42, ReadOpts { tail_lines: Some(100), ..Default::default() })?;
//! assert_eq!(tail.lines, ["hello", "oops"]);
//!
//! store.append_event(&LogEvent::now("hero_proc.reconcile", Level::Info, "applied 2 changes"))?;
//! let q = LogQuery { source_prefix: Some("hero_proc".into()), ..Default::default() };
//! assert_eq!(store.query(&q)?.len(), 1);
//!
//! let report = store.enforce_caps(&HashSet::new())?;
//! assert_eq!(report.files_deleted, 0);
//! # Ok::<(), hero_proc_logstore::Error>(())
//! ```

mod caps;
mod day;
mod error;
mod events;
mod lines;
mod output;
mod punch;
mod spares;

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use caps::CapReport;
pub use error::{Error, Op, Result};
pub use events::{Level, LogEvent, LogQuery, Order, ParseLevelError};
pub use output::{JobOutput, ReadOpts, RotateReport};
pub use punch::{PunchReport, dropped_marker};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Size and age limits. The defaults bound the store to about 1 GiB on a busy host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Total size of all files; past it, the oldest files of finished jobs and old event
    /// days go first.
    pub max_total_bytes: u64,
    /// Files of finished jobs, rotated generations and event days older than this are
    /// deleted.
    pub max_age: Duration,
    /// A job's file is held to this many bytes on disk: past it, the middle is punched
    /// out as it grows ([`LogStore::cap_job_output`]); where the file system cannot punch
    /// holes, `enforce_caps` copy-truncates it instead.
    pub max_file_bytes: u64,
    /// Copy-truncate generations kept per job (`.1` ..= `.N`); 0 truncates without a copy.
    pub rotated_generations: u32,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            max_total_bytes: 1 << 30,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_file_bytes: 64 << 20,
            rotated_generations: 2,
        }
    }
}

/// The log store rooted at one directory. See the crate docs for layout and guarantees.
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    jobs_dir: PathBuf,
    events_dir: PathBuf,
    config: LogStoreConfig,
    /// The open event day file; one lock so concurrent appenders never interleave.
    events: Mutex<events::Writer>,
    /// Serialises rotation and cap enforcement (both move files around).
    maint: Mutex<()>,
    /// Empty files made ahead of need for [`LogStore::open_job_output`].
    spares: spares::Spares,
}

impl LogStore {
    /// Opens (creating if needed) the store in `dir`. Directories are created 0700, and
    /// existing ones are set to 0700: logs can hold secrets a child printed.
    pub fn open(dir: impl Into<PathBuf>, config: LogStoreConfig) -> Result<LogStore> {
        let root = dir.into();
        let jobs_dir = root.join("jobs");
        let events_dir = root.join("events");
        for d in [&root, &jobs_dir, &events_dir] {
            create_private_dir(d)?;
        }
        Ok(LogStore {
            spares: spares::Spares::new(&root),
            root,
            jobs_dir,
            events_dir,
            config,
            events: Mutex::new(events::Writer::default()),
            maint: Mutex::new(()),
        })
    }

    /// The directory the store was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits in force.
    pub fn config(&self) -> &LogStoreConfig {
        &self.config
    }

    /// From now on keep about `n` empty output files ready in `spare/` (made by a helper
    /// thread when the pool runs low), so [`LogStore::open_job_output`] renames one
    /// instead of creating a file: a job then starts without an inode allocation, which
    /// some file systems make slow. The daemon asks for this; a store that does not
    /// creates each file when it is opened.
    pub fn keep_spare_outputs(&self, n: usize) -> Result<()> {
        let dir = self.root.join("spare");
        self.spares.keep(n).map_err(error::io_err(Op::CreateDir, &dir))
    }
}

fn create_private_dir(d: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(d).map_err(error::io_err(Op::CreateDir, d))?;
    fs::set_permissions(d, Permissions::from_mode(DIR_MODE)).map_err(error::io_err(Op::SetPermissions, d))
}

/// Opens for appending, creating with 0600.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)
}

/// A poisoned lock only means another thread panicked mid-append; the state it guards
/// (an optional file handle) is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LogStore>();
    }
}
