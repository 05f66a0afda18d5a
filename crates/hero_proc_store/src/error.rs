//! Typed store errors. Each message names the database file and says what to do, because
//! the operator reading `error: ...` on stderr has nothing else to go on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ffi;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another connection (usually another process) held the lock for longer than the
    /// busy timeout.
    #[error(
        "database {path} is busy: another connection held its lock for more than {waited_ms} ms; \
         retry, and if it persists find the other writer with `fuser {path}`"
    )]
    Busy { path: PathBuf, waited_ms: u64 },

    /// The file, its folder or the file system refuses writes.
    #[error(
        "cannot write {path}: the database file or its folder is read-only: check permissions of {path} \
         and its folder, that neither is immutable (`lsattr`), and that the file system is mounted read-write"
    )]
    ReadOnly { path: PathBuf },

    /// A write was attempted through a handle from [`crate::Store::open_read_only`].
    #[error("database {path} was opened read-only (--db); this operation writes: run it through the daemon")]
    OpenedReadOnly { path: PathBuf },

    /// The file system (or the process's file-size limit) is full.
    #[error("cannot write {path}: disk full: free space on the filesystem holding {path}")]
    DiskFull { path: PathBuf },

    /// The database file was deleted or replaced while this handle had it open: a write
    /// would go to a file no one will read again.
    #[error(
        "database {path} was {how} while hero_proc had it open; writes are refused so nothing is \
         acknowledged into a file that is gone (supervised processes keep running, none is started): \
         restore the file at {path} (or keep the new one), then restart the daemon"
    )]
    Replaced { path: PathBuf, how: &'static str },

    /// The file is not a (usable) hero_proc database.
    #[error(
        "database {path} is corrupt or not a hero_proc database ({detail}): restore from backup or move the \
         file aside; hero_proc will create a new one"
    )]
    Corrupt { path: PathBuf, detail: String },

    /// Written by a newer hero_proc: opening it could misread or damage it.
    #[error(
        "database {path}: database schema v{found} is newer than this hero_proc (knows v{known}); upgrade hero_proc"
    )]
    SchemaTooNew { path: PathBuf, found: u32, known: u32 },

    /// A read-only open met a database that has not been migrated yet.
    #[error(
        "database {path}: database schema v{found} is older than this hero_proc (knows v{known}); \
         start `hero_proc serve` once to migrate it, then retry"
    )]
    SchemaTooOld { path: PathBuf, found: u32, known: u32 },

    /// A read-only open of a file that does not exist.
    #[error("no database at {path}: check the path, or start `hero_proc serve` to create it")]
    NoDatabase { path: PathBuf },

    /// File-system errors outside SQLite (creating folders, reading sizes).
    #[error("database {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A stored JSON document does not decode (or a value does not encode).
    #[error("database {path}: {what}: {source}")]
    Serde {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The object addressed does not exist.
    #[error("database {path}: {kind} {key} not found")]
    NotFound { path: PathBuf, kind: &'static str, key: String },

    /// The object exists but is not in a state that allows the change (e.g. finishing a
    /// job twice). A bug in the caller, reported instead of silently overwriting history.
    #[error("database {path}: {what}")]
    InvalidState { path: PathBuf, what: String },

    /// Any other SQLite error (constraint violations, I/O errors that are not disk-full).
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// True for errors that go away by themselves (retrying later may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The database was deleted or replaced under the daemon: no write will succeed until
    /// a restart.
    pub fn is_replaced(&self) -> bool {
        matches!(self, StoreError::Replaced { .. })
    }

    /// The database file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Busy { path, .. }
            | StoreError::ReadOnly { path }
            | StoreError::OpenedReadOnly { path }
            | StoreError::DiskFull { path }
            | StoreError::Replaced { path, .. }
            | StoreError::Corrupt { path, .. }
            | StoreError::SchemaTooNew { path, .. }
            | StoreError::SchemaTooOld { path, .. }
            | StoreError::NoDatabase { path }
            | StoreError::Io { path, .. }
            | StoreError::Serde { path, .. }
            | StoreError::NotFound { path, .. }
            | StoreError::InvalidState { path, .. }
            | StoreError::Sqlite { path, .. } => path,
        }
    }
}

/// Maps a SQLite error to a [`StoreError`]. `sys_errno` is `sqlite3_system_errno` of the
/// connection, which tells a full disk (ENOSPC, EFBIG, EDQUOT) from other I/O failures
/// when SQLite only says `SQLITE_IOERR_WRITE`.
pub(crate) fn classify(path: &Path, busy_timeout: Duration, sys_errno: i32, err: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    let code = match &err {
        rusqlite::Error::SqliteFailure(e, _) => *e,
        _ => return StoreError::Sqlite { path, source: err },
    };
    let primary = code.extended_code & 0xff;
    match primary {
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => {
            StoreError::Busy { path, waited_ms: u64::try_from(busy_timeout.as_millis()).unwrap_or(u64::MAX) }
        }
        ffi::SQLITE_READONLY | ffi::SQLITE_PERM => StoreError::ReadOnly { path },
        ffi::SQLITE_FULL => StoreError::DiskFull { path },
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => StoreError::Corrupt { path, detail: err.to_string() },
        ffi::SQLITE_IOERR if is_disk_full_errno(sys_errno) => StoreError::DiskFull { path },
        // A write refused by the OS (immutable file, read-only mount, lost permission).
        ffi::SQLITE_IOERR if matches!(sys_errno, libc::EPERM | libc::EACCES | libc::EROFS) => {
            StoreError::ReadOnly { path }
        }
        ffi::SQLITE_CANTOPEN if sys_errno == libc::EACCES || sys_errno == libc::EROFS => StoreError::ReadOnly { path },
        _ => StoreError::Sqlite { path, source: err },
    }
}

fn is_disk_full_errno(errno: i32) -> bool {
    errno == libc::ENOSPC || errno == libc::EFBIG || errno == libc::EDQUOT
}

/// Maps an I/O error met outside SQLite (creating the folder or file).
pub(crate) fn classify_io(path: &Path, op: &'static str, err: std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    match err.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly { path },
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge => StoreError::DiskFull { path },
        _ if err.raw_os_error().is_some_and(is_disk_full_errno) => StoreError::DiskFull { path },
        _ => StoreError::Io { path, op, source: err },
    }
}
