//! One daemon per root, per database and per socket: exclusive `flock`s the kernel drops
//! when the holder dies, so a crash never leaves a stale lock behind.
//!
//! - The root lock and the socket lock are files that also name the holder's pid.
//! - The database lock is taken on the database file itself (its inode), so two daemons
//!   reaching one database through different roots, symlinks or hard links still
//!   exclude each other; its holder is found in `/proc/locks`. SQLite's own locks are
//!   POSIX locks, which `flock` does not interact with on Linux.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another hero_proc daemon (pid {pid}) is already running on {root}\n  hint: stop it first (`kill {pid}`), or give this one another HERO_ROOTDIR"
    )]
    Held { pid: String, root: String },
    #[error(
        "another hero_proc daemon (pid {pid}) already uses the database {db}\n  hint: one database has one daemon: stop it first (`kill {pid}`), or give this one another --db"
    )]
    DbHeld { pid: String, db: PathBuf },
    #[error(
        "another hero_proc daemon (pid {pid}) already serves on {socket}\n  hint: stop it first (`kill {pid}`), or give this one another --socket"
    )]
    SocketHeld { pid: String, socket: PathBuf },
    #[error(
        "refusing to use {path}: {what}\n  hint: move it aside, or run the daemon as its owner, or choose another path"
    )]
    Unsafe { path: PathBuf, what: String },
    #[error("cannot open the lock file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Whether `pid` is a live (not zombie) process.
fn holder_alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|state| state != 'Z')
}

/// Takes the exclusive flock on `file`, or returns who holds it. A daemon killed a moment
/// ago can leave its lock held for a few milliseconds by a child it was forking (the
/// descriptor is closed only at that child's exec): when the holder is dead, wait for
/// that to pass instead of refusing.
fn flock_or_holder(file: &File, holder: impl Fn() -> String) -> Result<(), String> {
    let started = Instant::now();
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = holder();
        if holder_alive(&pid) || started.elapsed() > Duration::from_secs(5) {
            return Err(if pid.is_empty() { "unknown".into() } else { pid });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Opens (creating 0600) a file we lock; refuses a non-file and another user's file (it
/// would let that user hold or tamper with our lock), and a symlink unless `follow` (the
/// database path is the operator's choice; the lock files beside it are ours).
fn open_own_file(path: &Path, follow: bool) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.display().to_string(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(if follow { libc::O_CLOEXEC } else { libc::O_NOFOLLOW | libc::O_CLOEXEC })
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => LockError::Unsafe { path: path.into(), what: "it is a symbolic link".into() },
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    // SAFETY: geteuid cannot fail.
    let ours = unsafe { libc::geteuid() };
    if !meta.is_file() {
        return Err(LockError::Unsafe { path: path.into(), what: "it is not a regular file".into() });
    }
    if meta.uid() != ours {
        return Err(LockError::Unsafe {
            path: path.into(),
            what: format!("it belongs to uid {}, not to this daemon's uid {ours}", meta.uid()),
        });
    }
    Ok(file)
}

/// A lock file that records the holder's pid.
fn pid_lock(path: &Path, held: impl FnOnce(String) -> LockError) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.display().to_string(), source };
    let mut file = open_own_file(path, false)?;
    let reader = file.try_clone().map_err(io)?;
    let read_pid = || {
        let mut pid = String::new();
        let mut r = &reader;
        let _ = r.rewind();
        let _ = r.read_to_string(&mut pid);
        pid.trim().to_owned()
    };
    flock_or_holder(&file, read_pid).map_err(held)?;
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}

pub struct RootLock {
    _file: File,
}

impl RootLock {
    pub fn acquire(path: &Path, root: &Path) -> Result<RootLock, LockError> {
        let file = pid_lock(path, |pid| LockError::Held { pid, root: root.display().to_string() })?;
        Ok(RootLock { _file: file })
    }
}

/// The lock on the database file itself. Keep it for the daemon's life: closing any
/// descriptor of the file would also drop SQLite's POSIX locks on it.
pub struct DbLock {
    _file: File,
}

impl DbLock {
    pub fn acquire(db: &Path) -> Result<DbLock, LockError> {
        let file = open_own_file(db, true)?;
        let meta = file.metadata().map_err(|source| LockError::Io { path: db.display().to_string(), source })?;
        let (dev, ino) = (meta.dev(), meta.ino());
        flock_or_holder(&file, || flock_holder(dev, ino).unwrap_or_default())
            .map_err(|pid| LockError::DbHeld { pid, db: db.into() })?;
        Ok(DbLock { _file: file })
    }
}

/// The lock beside the socket (`<socket>.lock`): a socket cannot be opened to be locked.
pub struct SocketLock {
    _file: File,
}

impl SocketLock {
    pub fn acquire(socket: &Path) -> Result<SocketLock, LockError> {
        let mut name = socket.as_os_str().to_owned();
        name.push(".lock");
        let file = pid_lock(Path::new(&name), |pid| LockError::SocketHeld { pid, socket: socket.into() })?;
        Ok(SocketLock { _file: file })
    }
}

/// The pid holding a flock on (dev, ino), from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, major and minor in hex).
fn flock_holder(dev: u64, ino: u64) -> Option<String> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f[4].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_locked_by_its_inode_and_the_holder_is_named() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let _held = DbLock::acquire(&db).unwrap();
        // Another name for the same file (as a second root would reach it).
        let other = d.path().join("b.db");
        std::fs::hard_link(&db, &other).unwrap();
        let e = DbLock::acquire(&other).err().expect("a second lock on the same file is refused");
        let me = std::process::id().to_string();
        assert!(matches!(&e, LockError::DbHeld { pid, .. } if *pid == me), "{e}");
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::write(&target, "x").unwrap();
        let link = d.path().join("s.sock.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = SocketLock::acquire(&d.path().join("s.sock")).err().expect("refused");
        assert!(matches!(e, LockError::Unsafe { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
    }
}
