//! The daemon's paths (SPEC 2), all under one root so tests run in parallel.

use std::path::{Path, PathBuf};

use hero_proc_engine::paths::Expand;

use crate::DaemonError;

#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub home: PathBuf,
    pub db: PathBuf,
    pub logs: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    /// Defaults under `root`; `db` and `socket` may be overridden by flags.
    pub fn under(root: impl Into<PathBuf>) -> Paths {
        let root = root.into();
        let state = root.join("var/hero_proc");
        Paths {
            home: std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")),
            db: state.join("hero_proc.db"),
            logs: state.join("logs"),
            socket: root.join("var/sockets/hero_proc.sock"),
            state,
            root,
        }
    }

    /// `HERO_ROOTDIR`, else `~/hero`.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("HERO_ROOTDIR") {
            Some(r) => PathBuf::from(r),
            None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join("hero"),
        }
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state.join("hero_proc.lock")
    }

    pub fn expand(&self) -> Expand {
        Expand::new(&self.home, &self.root)
    }

    /// The state, log, database and socket folders. Missing ones are created owner-only
    /// (0700); existing ones keep their mode, but one that others can write (without the
    /// sticky bit, for the socket's) is refused: another user could swap our files there.
    pub fn create_folders(&self) -> Result<(), DaemonError> {
        use hero_proc_rpc::listen::ensure_folder;
        ensure_folder(&self.state, &self.lock_file(), false)?;
        ensure_folder(&self.logs, &self.logs, false)?;
        ensure_folder(&parent_of(&self.db), &self.db, false)?;
        ensure_folder(&parent_of(&self.socket), &self.socket, true)?;
        Ok(())
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
