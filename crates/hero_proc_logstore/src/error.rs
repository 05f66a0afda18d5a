//! Typed errors: every I/O failure names the operation and the path, and ends with what
//! an operator can do about it, because these messages end up in the daemon's log and
//! in RPC answers where nobody has a debugger.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What the store was doing when an I/O call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    CreateDir,
    SetPermissions,
    ListDir,
    Stat,
    OpenJobOutput,
    ReadJobOutput,
    Rotate,
    Truncate,
    Cap,
    Delete,
    AppendEvent,
    ReadEvents,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::CreateDir => "create directory",
            Op::SetPermissions => "set permissions on",
            Op::ListDir => "list directory",
            Op::Stat => "stat",
            Op::OpenJobOutput => "open job output",
            Op::ReadJobOutput => "read job output",
            Op::Rotate => "rotate job output",
            Op::Truncate => "truncate job output",
            Op::Cap => "cap (punch a hole in) job output",
            Op::Delete => "delete",
            Op::AppendEvent => "append event to",
            Op::ReadEvents => "read events from",
        })
    }
}

/// Errors of the log store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed.
    #[error("log store: cannot {op} {}: {source}; {}", path.display(), hint(*op, source))]
    Io {
        op: Op,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither a live output file nor a rotated generation exists for the job.
    #[error(
        "log store: no output recorded for job {job_id} (looked for {}); the job never started, wrote \
         nothing, or its output was removed by the log caps or by compaction",
        path.display()
    )]
    NoOutput { job_id: i64, path: PathBuf },
    /// An event could not be encoded as JSON (practically unreachable: the event's
    /// fields are already JSON values).
    #[error("log store: cannot encode event from source {source_name:?}: {err}; report this as a bug")]
    Encode { source_name: String, err: serde_json::Error },
}

/// Result alias of the log store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(op: Op, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

/// The remediation text for an I/O failure.
fn hint(op: Op, e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => {
            "free space or lower log caps (max_total_bytes, max_file_bytes, max_age)"
        }
        K::PermissionDenied => {
            "the log directory must be owned and writable by the user running hero_proc (mode 0700); fix its ownership"
        }
        K::ReadOnlyFilesystem => "the log directory is on a read-only filesystem; point HERO_ROOTDIR at a writable one",
        K::NotFound if matches!(op, Op::CreateDir | Op::SetPermissions) => {
            "a parent directory is missing; check HERO_ROOTDIR"
        }
        K::NotFound => "the file was removed meanwhile (log caps or compaction); retry",
        K::UnexpectedEof => "the file shrank while being read (copy-truncate rotation); retry",
        _ => "check the log directory and the disk it is on",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_says_what_to_do() {
        let e = Error::Io {
            op: Op::AppendEvent,
            path: "/x/events/2026-11-23.jsonl".into(),
            source: io::Error::from(io::ErrorKind::StorageFull),
        };
        let s = e.to_string();
        assert!(s.contains("append event to /x/events/2026-11-23.jsonl"), "{s}");
        assert!(s.contains("free space or lower log caps"), "{s}");
    }

    #[test]
    fn permission_denied_names_the_fix() {
        let e = io_err(Op::CreateDir, "/x")(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(e.to_string().contains("owned and writable"), "{e}");
    }
}
