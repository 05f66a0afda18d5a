//! Where a config tree is read from: a directory, or a git tree object at a revision.
//!
//! The loader only sees [`TreeSource`], so `validate` on a checkout and the reconciler on
//! a committed tree run the very same code. The git source never touches the work tree.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Largest file the loader reads. Config files are small; a huge one is a mistake or an
/// attack, and is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Symlinks are refused: they could point outside the tree.
    Symlink,
    /// A git submodule (a gitlink in a tree, or a directory holding a `.git` on disk):
    /// its content is another repository's, at a commit this tree does not carry.
    Submodule,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// The content id, when the source has one at hand (git's listing carries each blob
    /// id: asking [`TreeSource::content_id`] per file would walk the tree again).
    pub id: Option<ContentId>,
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is {size} bytes, larger than the {limit}-byte limit for config files")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("git: cannot read {path}: {message}")]
    Git { path: String, message: String },
}

/// A read-only view of a config tree. Paths are `/`-separated and relative to the root.
pub trait TreeSource {
    /// Entries directly under `dir` (`""` is the root), sorted by name. A missing
    /// directory is empty, not an error: every part of the layout is optional.
    fn list(&self, dir: &str) -> Result<Vec<Entry>, SourceError>;
    /// A file's bytes; refuses files over [`MAX_FILE_BYTES`].
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError>;
    /// What to call this tree in messages (a path, or `repo@rev`).
    fn describe(&self) -> String;
    /// An id of the file's content that changes whenever the content does (git's blob
    /// id), or `None` when the source has none (a directory): files with an id can be
    /// parsed once and reused from a [`crate::load::ParseCache`].
    fn content_id(&self, _path: &str) -> Option<ContentId> {
        None
    }
}

/// A file's content id: git's blob id (SHA-1 or SHA-256 object ids, as raw bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentId(pub Box<[u8]>);

/// A tree on disk.
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource { root: root.into() }
    }
    fn full(&self, rel: &str) -> PathBuf {
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
    }
}

impl TreeSource for DirSource {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        let path = self.full(dir);
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(source) => {
                return Err(SourceError::Io { path: display(&path), source });
            }
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| SourceError::Io { path: display(&path), source })?;
            let ft = entry.file_type().map_err(|source| SourceError::Io { path: display(&entry.path()), source })?;
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() && entry.path().join(".git").symlink_metadata().is_ok() {
                EntryKind::Submodule
            } else if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            out.push(Entry { name: entry.file_name().to_string_lossy().into_owned(), kind, id: None });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, SourceError> {
        use std::io::Read;
        let path = self.full(rel);
        let file = std::fs::File::open(&path).map_err(|source| SourceError::Io { path: rel.into(), source })?;
        let size = file.metadata().map_err(|source| SourceError::Io { path: rel.into(), source })?.len();
        if size > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge { path: rel.into(), size, limit: MAX_FILE_BYTES });
        }
        let mut buf = Vec::with_capacity(size as usize);
        // `take` guards against a file that grows while we read it.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|source| SourceError::Io { path: rel.into(), source })?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge { path: rel.into(), size: buf.len() as u64, limit: MAX_FILE_BYTES });
        }
        Ok(buf)
    }

    fn describe(&self) -> String {
        display(&self.root)
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A committed tree in a git repository.
pub struct GitSource<'r> {
    repo: &'r git2::Repository,
    tree: git2::Tree<'r>,
    label: String,
}

impl<'r> GitSource<'r> {
    /// The tree of the commit `rev` resolves to (a branch, tag, sha, or `HEAD`).
    pub fn at_rev(repo: &'r git2::Repository, rev: &str) -> Result<Self, SourceError> {
        let git_err = |e: git2::Error| SourceError::Git { path: rev.into(), message: e.message().to_owned() };
        let commit = repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(git_err)?;
        let tree = commit.tree().map_err(git_err)?;
        let short = commit.id().to_string()[..12].to_owned();
        Ok(GitSource { repo, tree, label: format!("{rev}@{short}") })
    }

    fn subtree(&self, dir: &str) -> Result<Option<git2::Tree<'r>>, SourceError> {
        if dir.is_empty() {
            return Ok(Some(self.tree.clone()));
        }
        let entry = match self.tree.get_path(Path::new(dir)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(SourceError::Git { path: dir.into(), message: e.message().into() });
            }
        };
        if entry.kind() != Some(git2::ObjectType::Tree) {
            return Ok(None);
        }
        let obj = entry
            .to_object(self.repo)
            .map_err(|e| SourceError::Git { path: dir.into(), message: e.message().into() })?;
        Ok(obj.into_tree().ok())
    }
}

impl TreeSource for GitSource<'_> {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        let Some(tree) = self.subtree(dir)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Entry> = tree
            .iter()
            .map(|e| {
                let kind = match (e.kind(), e.filemode()) {
                    (_, 0o120000) => EntryKind::Symlink,
                    (Some(git2::ObjectType::Commit), _) | (_, 0o160000) => EntryKind::Submodule,
                    (Some(git2::ObjectType::Tree), _) => EntryKind::Dir,
                    (Some(git2::ObjectType::Blob), _) => EntryKind::File,
                    _ => EntryKind::Other,
                };
                let id = (kind == EntryKind::File).then(|| ContentId(e.id().as_bytes().into()));
                Entry { name: String::from_utf8_lossy(e.name_bytes()).into_owned(), kind, id }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        let git_err = |e: git2::Error| SourceError::Git { path: path.into(), message: e.message().to_owned() };
        let entry = self.tree.get_path(Path::new(path)).map_err(git_err)?;
        // Check the size from the object header before inflating the blob.
        let (size, _) = self.repo.odb().and_then(|odb| odb.read_header(entry.id())).map_err(git_err)?;
        let size = size as u64;
        if size > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge { path: path.into(), size, limit: MAX_FILE_BYTES });
        }
        let blob = self.repo.find_blob(entry.id()).map_err(git_err)?;
        Ok(blob.content().to_vec())
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn content_id(&self, path: &str) -> Option<ContentId> {
        let entry = self.tree.get_path(Path::new(path)).ok()?;
        (entry.kind() == Some(git2::ObjectType::Blob)).then(|| ContentId(entry.id().as_bytes().into()))
    }
}
