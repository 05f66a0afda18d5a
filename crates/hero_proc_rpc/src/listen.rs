//! Binding an owner-only Unix socket in a folder we may not own (`--socket /tmp/x.sock`),
//! shared by the daemon and the UI.
//!
//! - A missing folder is created 0700; an existing one is never chmod-ed. One that others
//!   can write without the sticky bit is refused: anyone could rename our socket away
//!   and put theirs in its place. A sticky folder (`/tmp`) is fine: others cannot unlink
//!   or rename our entry.
//! - A non-socket at the path is refused and never deleted; a socket of another uid is
//!   refused; a socket someone answers on is refused naming the pid (SO_PEERCRED); only a
//!   socket that refuses connections (no listener) is replaced.
//! - The socket is bound in a fresh 0700 folder, made 0600, then renamed into place with
//!   `RENAME_NOREPLACE`: it never exists at the path with a wider mode, and a socket that
//!   appeared meanwhile is never replaced.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot create the folder {dir} (for {path}): {source}")]
    CreateFolder { dir: PathBuf, path: PathBuf, source: std::io::Error },
    #[error(
        "refusing to use {dir} for {path}: the folder is writable by group or others (mode {mode:04o}) and not \
         sticky, so another user could replace what hero_proc puts there\n  hint: use a folder only this user \
         can write (`chmod go-w {dir}`), or a sticky one like /tmp"
    )]
    UnsafeFolder { dir: PathBuf, path: PathBuf, mode: u32 },
    #[error(
        "refusing to use {path}: it is a {kind}, not a socket (hero_proc never deletes it)\n  hint: move it \
         away, or choose another socket path"
    )]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error(
        "refusing to replace the socket {path}: it belongs to uid {owner}, not to this process (uid {ours})\n  \
         hint: remove it as its owner if it is stale, or choose another socket path"
    )]
    ForeignSocket { path: PathBuf, owner: u32, ours: u32 },
    #[error(
        "{path} is in use: a process (pid {pid}) answers on it\n  hint: stop it first (`kill {pid}`), or choose \
         another socket path"
    )]
    InUse { path: PathBuf, pid: String },
    #[error("cannot check the existing socket {path}: {source}")]
    Probe { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

/// Binds `path` as an owner-only (0600) listening socket. See the module docs for what is
/// refused.
pub fn bind_owner_only(path: &Path) -> Result<UnixListener, ListenError> {
    let dir = parent_of(path);
    ensure_folder(&dir, path, true)?;
    remove_stale(path)?;
    bind_then_move(&dir, path)
}

/// Creates `dir` (0700, with any missing ancestors) if missing; otherwise checks that no
/// one else can swap entries in it. `sticky_ok`: a sticky folder is acceptable (sockets);
/// a database wants a folder no one else can create files in (its -wal and -shm files).
pub fn ensure_folder(dir: &Path, path: &Path, sticky_ok: bool) -> Result<(), ListenError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ListenError::CreateFolder { dir: dir.into(), path: path.into(), source }),
        Err(source) => Err(ListenError::CreateFolder { dir: dir.into(), path: path.into(), source }),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            let sticky = mode & 0o1000 != 0;
            if mode & 0o022 != 0 && !(sticky_ok && sticky) {
                return Err(ListenError::UnsafeFolder { dir: dir.into(), path: path.into(), mode });
            }
            Ok(())
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes the socket at `path` only when it is ours and nothing listens on it.
fn remove_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ListenError::Probe { path: path.into(), source }),
        Ok(m) => m,
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let kind = if ft.is_dir() {
            "folder"
        } else if ft.is_symlink() {
            "symbolic link"
        } else if ft.is_file() {
            "regular file"
        } else {
            "special file"
        };
        return Err(ListenError::NotASocket { path: path.into(), kind });
    }
    // SAFETY: geteuid cannot fail.
    let ours = unsafe { libc::geteuid() };
    if meta.uid() != ours {
        return Err(ListenError::ForeignSocket { path: path.into(), owner: meta.uid(), ours });
    }
    match UnixStream::connect(path) {
        Ok(s) => Err(ListenError::InUse { path: path.into(), pid: peer_pid(&s) }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(ListenError::Probe { path: path.into(), source: e }),
            _ => Ok(()),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ListenError::Probe { path: path.into(), source }),
    }
}

/// The pid of the process that listens on the other end (SO_PEERCRED).
fn peer_pid(s: &UnixStream) -> String {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if r == 0 && cred.pid > 0 { cred.pid.to_string() } else { "unknown".into() }
}

fn bind_then_move(dir: &Path, path: &Path) -> Result<UnixListener, ListenError> {
    let bind_err = |source| ListenError::Bind { path: path.into(), source };
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp_dir = dir.join(format!(".hp{:x}.{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&tmp_dir).map_err(bind_err)?;
    let tmp = tmp_dir.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        rename_noreplace(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&tmp_dir);
    result.map_err(|e: std::io::Error| {
        if e.kind() == ErrorKind::AlreadyExists {
            ListenError::InUse { path: path.into(), pid: "unknown, it appeared while this one started".into() }
        } else {
            bind_err(e)
        }
    })
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_at_the_path_is_refused_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.sock");
        std::fs::write(&p, "keep me").unwrap();
        let e = bind_owner_only(&p).unwrap_err();
        assert!(matches!(e, ListenError::NotASocket { kind: "regular file", .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "keep me");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.sock");
        drop(UnixListener::bind(&p).unwrap()); // bound, then closed: stale
        let live = bind_owner_only(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let e = bind_owner_only(&p).unwrap_err();
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        drop(live);
        // No temporary folder is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_existing_folder_keeps_its_mode_and_an_open_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _l = bind_owner_only(&shared.join("a.sock")).unwrap();
        assert_eq!(std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777, 0o1777);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind_owner_only(&shared.join("b.sock")).unwrap_err();
        assert!(matches!(e, ListenError::UnsafeFolder { mode: 0o777, .. }), "{e}");
        let fresh = d.path().join("new/deeper");
        let _m = bind_owner_only(&fresh.join("c.sock")).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
