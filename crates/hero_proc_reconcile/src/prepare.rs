//! The one preparation rule shared by the daemon's sync and every offline preview: which
//! desired state is planned, and which earlier desired state tells a change made in git
//! from a change made by hand (drift). Keeping it in one place is what makes a preview
//! say what the daemon would do.

use std::sync::Arc;

use crate::desired::{Desired, LoadError, SecretOpener};
use crate::repo::{CommitInfo, Repo};

/// What to plan: a commit, or a local work tree as it is (previews only).
pub enum Source<'a> {
    Commit(CommitInfo),
    Worktree(&'a std::path::Path),
}

/// The two desired states a plan needs.
pub struct Sides {
    /// The revision planned.
    pub desired: Arc<Desired>,
    /// The applied revision's desired state: an object that differs from live but not
    /// from this is drift. `None` when nothing was applied from git, or the applied
    /// revision is gone from the repository (a force-push): then nothing is called drift.
    pub previous: Option<Arc<Desired>>,
}

/// Loads the target and the applied revision's desired state. `load` loads one commit
/// for `host` (the daemon's goes through its caches; a preview's straight to git).
pub fn load_sides(
    repo: &Repo,
    source: Source<'_>,
    applied: Option<&str>,
    host: Option<&str>,
    opener: &dyn SecretOpener,
    load: &mut dyn FnMut(CommitInfo) -> Result<Arc<Desired>, LoadError>,
) -> Result<Sides, LoadError> {
    let desired = match source {
        Source::Commit(c) => load(c)?,
        Source::Worktree(dir) => Arc::new(Desired::load_worktree(dir, host, opener)?),
    };
    let previous = match applied {
        Some(a) if *a == desired.commit.id => Some(desired.clone()),
        Some(a) => repo.resolve(a).ok().and_then(|c| load(c).ok()),
        None => None,
    };
    Ok(Sides { desired, previous })
}
