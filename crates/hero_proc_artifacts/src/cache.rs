//! The content-addressed store and the `bin/NAME@VERSION` links.
//!
//! Layout under the root (`$HERO_ROOTDIR`):
//! - `var/hero_proc/artifacts/sha256/HEX`: checked files, 0755, written only by rename
//!   from `tmp/` after the digest matched; their name is their content.
//! - `var/hero_proc/artifacts/tmp/`: downloads in progress (0700), emptied at start.
//! - `bin/NAME@VERSION`: a symlink to the checked file, swapped by rename.
//!
//! Services may run as another account (`user:`), which must reach the file: the store's
//! folders are 0755 and `var/hero_proc` gets the others' search bit (0711: no listing,
//! and everything else in it is owner-only).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{ArtifactId, Digest};

/// A checked file in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub digest: Digest,
    pub size: u64,
}

/// The store of one daemon root.
#[derive(Clone, Debug)]
pub struct Cache {
    state: PathBuf,
    dir: PathBuf,
    bin: PathBuf,
}

impl Cache {
    /// The store of `root` (`$HERO_ROOTDIR`). Nothing is created until needed.
    pub fn new(root: &Path) -> Cache {
        let state = root.join("var/hero_proc");
        Cache { dir: state.join("artifacts"), state, bin: root.join("bin") }
    }

    pub fn file_of(&self, d: &Digest) -> PathBuf {
        self.dir.join("sha256").join(d.hex())
    }

    /// `$HERO_ROOTDIR/bin/NAME@VERSION`.
    pub fn link_of(&self, id: &ArtifactId) -> PathBuf {
        self.bin.join(id.to_string())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Whether the checked file of `d` is present.
    pub fn has(&self, d: &Digest) -> bool {
        std::fs::symlink_metadata(self.file_of(d)).is_ok_and(|m| m.is_file())
    }

    /// Whether `bin/NAME@VERSION` points at the checked file of `d`, which is present.
    pub fn is_linked(&self, id: &ArtifactId, d: &Digest) -> bool {
        self.has(d) && std::fs::read_link(self.link_of(id)).is_ok_and(|t| t == self.file_of(d))
    }

    /// The checked files present, by digest.
    pub fn files(&self) -> io::Result<BTreeMap<Digest, CachedFile>> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(self.dir.join("sha256")) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries.flatten() {
            let Some(digest) = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) else { continue };
            if let Ok(m) = e.metadata()
                && m.is_file()
            {
                out.insert(digest.clone(), CachedFile { digest, size: m.len() });
            }
        }
        Ok(out)
    }

    /// Make the store's folders (and check `bin/`): see the module comment for modes.
    pub(crate) fn prepare(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.state)?;
        // Others may search (not list) the state folder and its parent (`var`), to
        // reach the store. Folders of another owner are left as they are.
        for dir in [self.state.parent(), Some(self.state.as_path())].into_iter().flatten() {
            let m = std::fs::metadata(dir)?;
            if m.uid() == unsafe_geteuid() && m.permissions().mode() & 0o001 == 0 {
                let mode = m.permissions().mode() | 0o011;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
        }
        for (dir, mode) in [(&self.dir, 0o755), (&self.dir.join("sha256"), 0o755), (&self.tmp_dir(), 0o700)] {
            make_dir(dir, mode)?;
        }
        make_dir(&self.bin, 0o755)?;
        check_not_shared(&self.bin)?;
        Ok(())
    }

    /// Point `bin/NAME@VERSION` at the checked file of `d`, atomically (a new link
    /// renamed over the old one: a start never sees no link or half a link).
    pub fn link(&self, id: &ArtifactId, d: &Digest) -> io::Result<bool> {
        if self.is_linked(id, d) {
            return Ok(false);
        }
        if !self.has(d) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{d} is not in the store")));
        }
        self.prepare()?;
        let link = self.link_of(id);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_dir()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is a folder; artifact links are made there", link.display()),
            ));
        }
        let tmp = self.bin.join(format!(".{id}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(self.file_of(d), &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, &link) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }

    /// Remove `bin/NAME@VERSION` if it is a link into this store (never anything else).
    pub fn unlink(&self, id: &ArtifactId) -> io::Result<bool> {
        let link = self.link_of(id);
        match std::fs::read_link(&link) {
            Ok(t) if t.starts_with(self.dir.join("sha256")) => {
                std::fs::remove_file(&link)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Remove the checked file of `d` (the caller knows no kept link points at it).
    pub fn remove(&self, d: &Digest) -> io::Result<bool> {
        match std::fs::remove_file(self.file_of(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete what an interrupted download left (at daemon start: no download runs).
    pub fn clean_partial(&self) -> io::Result<usize> {
        let mut n = 0;
        let entries = match std::fs::read_dir(self.tmp_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for e in entries.flatten() {
            if std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Bytes free for unprivileged writes where downloads land.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.tmp_dir().as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs fills the struct it is given; the path is NUL-terminated.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn make_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is not a folder", dir.display())))
            }
        }
        Err(e) => Err(e),
    }
}

/// A folder the links live in must not be writable by another account: it could swap a
/// link for its own program, which the daemon would then start (as root).
fn check_not_shared(dir: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    let mode = m.permissions().mode();
    let me = unsafe_geteuid();
    if !m.is_dir() || (m.uid() != me && m.uid() != 0) || mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by others or owned by another account (mode {:o}, uid {}): artifact links are not made there; `chmod go-w` it",
                dir.display(),
                mode & 0o7777,
                m.uid()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn links_point_into_the_store_and_are_swapped_whole() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        cache.prepare().unwrap();
        let id = ArtifactId::parse("tool@1").unwrap();
        let (a, b) = (digest('a'), digest('b'));
        // No file: no link.
        assert!(cache.link(&id, &a).is_err());
        for d in [&a, &b] {
            std::fs::write(cache.file_of(d), d.hex()).unwrap();
        }
        assert!(cache.link(&id, &a).unwrap());
        assert!(cache.is_linked(&id, &a));
        assert!(!cache.link(&id, &a).unwrap(), "already linked: nothing to do");
        assert!(cache.link(&id, &b).unwrap());
        assert!(cache.is_linked(&id, &b) && !cache.is_linked(&id, &a));
        assert_eq!(std::fs::read_to_string(cache.link_of(&id)).unwrap(), b.hex());
        // Only our own links are removed.
        let other = ArtifactId::parse("mine@1").unwrap();
        std::fs::write(cache.link_of(&other), "operator's file").unwrap();
        assert!(!cache.unlink(&other).unwrap());
        assert!(cache.link_of(&other).exists());
        assert!(cache.unlink(&id).unwrap());
        assert_eq!(cache.files().unwrap().len(), 2);
    }

    #[test]
    fn a_bin_folder_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::set_permissions(root.path().join("bin"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = cache.prepare().unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
    }
}
