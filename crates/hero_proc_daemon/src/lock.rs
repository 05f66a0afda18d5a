//! One daemon per root: an exclusive `flock` on a file that also names the holder's PID,
//! so a second daemon can say who holds it. The kernel drops the lock when the holder
//! dies, so a crash never leaves a stale lock behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another hero_proc daemon (pid {pid}) is already running on {root}\n  hint: stop it first (`kill {pid}`), or give this one another HERO_ROOTDIR"
    )]
    Held { pid: String, root: String },
    #[error("cannot open the lock file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Whether the PID recorded in the lock file is a live (not zombie) process.
fn holder_alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|state| state != 'Z')
}

pub struct RootLock {
    _file: File,
}

impl RootLock {
    pub fn acquire(path: &Path, root: &Path) -> Result<RootLock, LockError> {
        let io = |source| LockError::Io { path: path.display().to_string(), source };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // A daemon killed a moment ago can leave its lock held for a few milliseconds by a
        // child it was forking (the descriptor is closed only at that child's exec). When
        // the recorded holder is dead, wait for that to pass instead of refusing.
        let started = std::time::Instant::now();
        // SAFETY: flock on a descriptor we own.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            file.rewind().map_err(io)?;
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim().to_owned();
            if holder_alive(&pid) || started.elapsed() > std::time::Duration::from_secs(5) {
                return Err(LockError::Held {
                    pid: if pid.is_empty() { "unknown".into() } else { pid },
                    root: root.display().to_string(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RootLock { _file: file })
    }
}
