//! Expansion of `~` and `$HERO_ROOTDIR` in paths and command words.
//!
//! Only these two, deliberately: an `exec` command runs no shell, so no other
//! expansion happens and nothing in a spec field can inject shell syntax.

use std::path::{Path, PathBuf};

/// What paths expand against: the daemon user's home and the hero root.
#[derive(Clone, Debug)]
pub struct Expand {
    pub home: PathBuf,
    pub root: PathBuf,
}

impl Expand {
    pub fn new(home: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Expand { home: home.into(), root: root.into() }
    }

    /// `~` or `~/x` at the start of a word becomes the home; `$HERO_ROOTDIR` and
    /// `${HERO_ROOTDIR}` anywhere become the root.
    pub fn word(&self, word: &str) -> String {
        let root = self.root.to_string_lossy();
        let w = word.replace("${HERO_ROOTDIR}", &root).replace("$HERO_ROOTDIR", &root);
        if w == "~" {
            return self.home.to_string_lossy().into_owned();
        }
        match w.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", self.home.to_string_lossy()),
            None => w,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(self.word(p))
    }

    /// Paths for the current user from the process environment (`HOME`, `HERO_ROOTDIR`).
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let root = std::env::var_os("HERO_ROOTDIR").map(PathBuf::from).unwrap_or_else(|| home.join("hero"));
        Expand { home, root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_home_and_root_only() {
        let e = Expand::new("/home/u", "/srv/hero");
        assert_eq!(e.word("~/bin/x"), "/home/u/bin/x");
        assert_eq!(e.word("~"), "/home/u");
        assert_eq!(e.word("a~/b"), "a~/b");
        assert_eq!(e.word("$HERO_ROOTDIR/var/x.sock"), "/srv/hero/var/x.sock");
        assert_eq!(e.word("--sock=${HERO_ROOTDIR}/s"), "--sock=/srv/hero/s");
        assert_eq!(e.word("$HOME/x"), "$HOME/x");
        assert_eq!(e.word("$(rm -rf /)"), "$(rm -rf /)");
    }
}
