//! The daemon's paths (SPEC 2), all under one root so tests run in parallel.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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

    /// The state and socket folders, owner-only (0700).
    pub fn create_folders(&self) -> Result<(), DaemonError> {
        for dir in [Some(self.state.as_path()), self.socket.parent(), self.db.parent(), Some(self.logs.as_path())]
            .into_iter()
            .flatten()
        {
            make_private_dir(dir)?;
        }
        Ok(())
    }
}

fn make_private_dir(dir: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::Folder { path: dir.display().to_string(), source };
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}
