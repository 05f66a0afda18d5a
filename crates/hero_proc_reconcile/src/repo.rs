//! The git side: open a local repository or keep a bare mirror of a remote one, fetch,
//! and resolve a branch or revision to a commit. Only committed trees are ever read.
//!
//! Local paths are read in place (no copy: a local commit is visible at once).
//! `file://` remotes are fetched with git2's own transport; `https://`, `ssh://` and
//! `user@host:path` remotes are fetched with the `git` command, so the operator's SSH
//! config, known_hosts, credential helpers and proxies apply exactly as for `git fetch`
//! (and the daemon needs no TLS or SSH stack of its own).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the desired state comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// A local path, or a URL (`file://`, `https://`, `ssh://`, `user@host:path`).
    pub location: String,
    /// The branch to follow. Local default: the repository's `HEAD`; remote: `main`.
    pub branch: Option<String>,
}

/// A commit the reconciler can apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub id: String,
    pub author: Option<String>,
    pub committed_at_ms: Option<i64>,
    pub summary: Option<String>,
}

impl CommitInfo {
    pub fn short(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("cannot open repository {location}: {message}\n  hint: {hint}")]
    Open { location: String, message: String, hint: String },
    #[error(
        "cannot fetch {location}: {message}\n  hint: the last applied revision keeps running; the fetch is retried with backoff"
    )]
    Fetch { location: String, message: String },
    #[error(
        "branch `{branch}` not found in {location}\n  hint: was it deleted or renamed? the last applied revision keeps running; pass --branch to follow another one"
    )]
    BranchMissing { location: String, branch: String },
    #[error(
        "revision `{rev}` not found in {location}: {message}\n  hint: give a commit id, tag or branch that exists in the repository (`git log` shows them)"
    )]
    Revision { location: String, rev: String, message: String },
    #[error(
        "cannot read commit {rev} in {location}: {message}\n  hint: the repository may be corrupt; `git fsck` checks it"
    )]
    Corrupt { location: String, rev: String, message: String },
}

/// An opened source repository.
pub struct Repo {
    config: RepoConfig,
    /// The location as messages show it: any credential in the URL replaced by `***`.
    shown: String,
    /// The repository git2 reads: the local one, or the bare mirror of a remote.
    path: PathBuf,
    /// The remote's URL without credentials (what the mirror's config holds).
    remote: Option<String>,
    /// `user:token` taken out of an `https://user:token@host/...` URL; handed to `git`
    /// through a credential helper in its environment, never on a command line or disk.
    credentials: Option<Credentials>,
    repo: git2::Repository,
}

#[derive(Clone)]
struct Credentials {
    username: String,
    password: String,
}

/// Where the userinfo of a `scheme://userinfo@host/...` URL is, as a byte range.
fn userinfo(location: &str) -> Option<(usize, usize)> {
    let start = location.find("://")? + 3;
    let authority_end = location[start..].find(['/', '?', '#']).map_or(location.len(), |i| start + i);
    let at = location[start..authority_end].rfind('@')? + start;
    Some((start, at))
}

fn is_http(location: &str) -> bool {
    let l = location.to_ascii_lowercase();
    l.starts_with("https://") || l.starts_with("http://")
}

/// A location fit to show, log or store: a password in the URL becomes `***`, and so
/// does a lone user name of an http(s) URL (forges take a token there too). `ssh://git@`
/// and `git@host:path` keep their user, which is not a secret.
pub fn redact_url(location: &str) -> String {
    let Some((start, at)) = userinfo(location) else {
        return location.to_owned();
    };
    let info = &location[start..at];
    let shown = match info.split_once(':') {
        Some((user, _)) if is_http(location) && !user.is_empty() => format!("{user}:***"),
        Some(_) => "***".to_owned(),
        None if is_http(location) => "***".to_owned(),
        None => return location.to_owned(),
    };
    format!("{}{shown}{}", &location[..start], &location[at..])
}

/// Replace every credential of `location` found in `text` (e.g. `git`'s stderr, which
/// can echo a URL) by `***`.
pub fn redact_in(text: &str, location: &str) -> String {
    let mut out = text.replace(location, &redact_url(location));
    if let Some((start, at)) = userinfo(location) {
        let info = &location[start..at];
        let secret = info.split_once(':').map_or(info, |(_, p)| p);
        if secret.len() >= 4 {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// An http(s) URL without its userinfo, and the credentials it held.
fn split_credentials(location: &str) -> (String, Option<Credentials>) {
    match userinfo(location) {
        Some((start, at)) if is_http(location) => {
            let info = &location[start..at];
            let (username, password) = match info.split_once(':') {
                Some((u, p)) => (u.to_owned(), p.to_owned()),
                // `https://TOKEN@host`: the token is the user name (GitHub's convention).
                None => (info.to_owned(), String::new()),
            };
            let bare = format!("{}{}", &location[..start], &location[at + 1..]);
            (bare, Some(Credentials { username, password }))
        }
        _ => (location.to_owned(), None),
    }
}

/// Whether a location is a URL (fetched into a mirror) rather than a local path.
pub fn is_remote(location: &str) -> bool {
    if location.contains("://") {
        return true;
    }
    // scp-like `user@host:path`, but not a local path that happens to hold a colon.
    match location.split_once(':') {
        Some((host, _)) => host.contains('@') && !host.contains('/'),
        None => false,
    }
}

impl Repo {
    /// Open a local repository, or create (once) the bare mirror of a remote under
    /// `cache_root` (SPEC 2: `var/hero_proc/source/`). Does not fetch.
    pub fn open(config: &RepoConfig, cache_root: &Path) -> Result<Repo, RepoError> {
        let location = redact_url(&config.location);
        if is_remote(&config.location) {
            let (url, credentials) = split_credentials(&config.location);
            // Keyed by the URL without credentials: a rotated token keeps the mirror.
            let digest = hex::encode(Sha256::digest(url.as_bytes()));
            let path = cache_root.join(&digest[..16]);
            let open_err = |e: git2::Error| RepoError::Open {
                location: location.clone(),
                message: e.message().to_owned(),
                hint: format!("the mirror lives in {}; delete it to start afresh", path.display()),
            };
            let repo = match git2::Repository::open_bare(&path) {
                Ok(r) => r,
                Err(_) => {
                    std::fs::create_dir_all(&path).map_err(|e| RepoError::Open {
                        location: location.clone(),
                        message: e.to_string(),
                        hint: format!("check that {} is writable", cache_root.display()),
                    })?;
                    git2::Repository::init_bare(&path).map_err(open_err)?
                }
            };
            // The mirror's config never holds a credential (an older one may: replaced).
            match repo.find_remote("origin") {
                Ok(r) if r.url().ok() == Some(url.as_str()) => {}
                Ok(_) => repo.remote_set_url("origin", &url).map_err(open_err)?,
                Err(_) => {
                    repo.remote("origin", &url).map_err(open_err)?;
                }
            }
            Ok(Repo { config: config.clone(), shown: location, path, remote: Some(url), credentials, repo })
        } else {
            let path = PathBuf::from(&config.location);
            let repo = git2::Repository::open(&path).map_err(|e| RepoError::Open {
                location: location.clone(),
                message: e.message().to_owned(),
                hint: "give the path of a git repository (a work tree or a bare one), or a URL".into(),
            })?;
            Ok(Repo { config: config.clone(), shown: location, path, remote: None, credentials: None, repo })
        }
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn repository(&self) -> &git2::Repository {
        &self.repo
    }

    pub fn is_local(&self) -> bool {
        self.remote.is_none()
    }

    /// The git directory, for a file watcher on a local repository.
    pub fn git_dir(&self) -> PathBuf {
        self.repo.path().to_path_buf()
    }

    /// Fetch every branch of a remote (forced and pruned, so a force-push or a deleted
    /// branch is seen as such). A local repository needs no fetch.
    pub fn fetch(&self) -> Result<(), RepoError> {
        let Some(url) = &self.remote else { return Ok(()) };
        let refspec = "+refs/heads/*:refs/remotes/origin/*";
        let fetch_err = |message: String| RepoError::Fetch {
            location: self.shown.clone(),
            message: redact_in(&message, &self.config.location),
        };
        if url.starts_with("file://") {
            let mut remote = self.repo.find_remote("origin").map_err(|e| fetch_err(e.message().to_owned()))?;
            let mut opts = git2::FetchOptions::new();
            opts.prune(git2::FetchPrune::On);
            remote.fetch(&[refspec], Some(&mut opts), None).map_err(|e| fetch_err(e.message().to_owned()))?;
            return Ok(());
        }
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.path)
            .args(["fetch", "--prune", "--force", "--quiet", "origin", refspec])
            .env("GIT_TERMINAL_PROMPT", "0");
        if let Some(c) = &self.credentials {
            // A helper after the operator's own (config from the environment comes last),
            // reading the token from this child's environment: only root can read that,
            // unlike a command line (`ps`) or a URL in the mirror's config.
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "credential.helper")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$HERO_PROC_GIT_USERNAME\" \"$HERO_PROC_GIT_PASSWORD\"; }; f",
                )
                .env("HERO_PROC_GIT_USERNAME", &c.username)
                .env("HERO_PROC_GIT_PASSWORD", &c.password);
        }
        let out = cmd.output().map_err(|e| fetch_err(format!("cannot run `git fetch`: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fetch_err(stderr.trim().lines().last().unwrap_or("git fetch failed").to_owned()));
        }
        Ok(())
    }

    /// The branch's tip (after [`Repo::fetch`] for a remote).
    pub fn head(&self) -> Result<CommitInfo, RepoError> {
        let (refname, branch) = match (&self.remote, &self.config.branch) {
            (None, None) => ("HEAD".to_owned(), "HEAD".to_owned()),
            (None, Some(b)) => (format!("refs/heads/{b}"), b.clone()),
            (Some(_), b) => {
                let b = b.clone().unwrap_or_else(|| "main".into());
                (format!("refs/remotes/origin/{b}"), b)
            }
        };
        let oid = match self.repo.refname_to_id(&refname) {
            Ok(oid) => oid,
            Err(e) if e.code() == git2::ErrorCode::NotFound || e.code() == git2::ErrorCode::UnbornBranch => {
                return Err(RepoError::BranchMissing { location: self.shown.clone(), branch });
            }
            Err(e) => {
                return Err(RepoError::Corrupt {
                    location: self.shown.clone(),
                    rev: refname,
                    message: e.message().to_owned(),
                });
            }
        };
        self.commit(oid, &branch)
    }

    /// Resolve a revision (commit id, tag, branch; for a remote also `origin/<branch>`).
    pub fn resolve(&self, rev: &str) -> Result<CommitInfo, RepoError> {
        let obj = self
            .repo
            .revparse_single(rev)
            .or_else(|e| match &self.remote {
                Some(_) => self.repo.revparse_single(&format!("refs/remotes/origin/{rev}")),
                None => Err(e),
            })
            .map_err(|e| RepoError::Revision {
                location: self.shown.clone(),
                rev: rev.into(),
                message: e.message().to_owned(),
            })?;
        let commit = obj.peel_to_commit().map_err(|e| RepoError::Revision {
            location: self.shown.clone(),
            rev: rev.into(),
            message: e.message().to_owned(),
        })?;
        self.commit(commit.id(), rev)
    }

    fn commit(&self, oid: git2::Oid, rev: &str) -> Result<CommitInfo, RepoError> {
        let commit = self.repo.find_commit(oid).map_err(|e| RepoError::Corrupt {
            location: self.shown.clone(),
            rev: rev.into(),
            message: e.message().to_owned(),
        })?;
        // Reading the tree proves the objects are there before anything is planned.
        commit.tree().map_err(|e| RepoError::Corrupt {
            location: self.shown.clone(),
            rev: rev.into(),
            message: e.message().to_owned(),
        })?;
        let author = commit.author();
        let who = match (author.name().ok(), author.email().ok()) {
            (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
            (Some(n), None) => Some(n.to_owned()),
            (None, Some(e)) => Some(e.to_owned()),
            (None, None) => None,
        };
        Ok(CommitInfo {
            id: oid.to_string(),
            author: who,
            committed_at_ms: Some(commit.time().seconds() * 1000),
            summary: commit.summary().ok().flatten().map(str::to_owned),
        })
    }
}

/// A location as the daemon and its clients agree on it: a URL as given, a local path
/// made absolute (a client's relative path means nothing to the daemon).
pub fn absolute_location(location: &str) -> std::io::Result<String> {
    if is_remote(location) {
        return Ok(location.to_owned());
    }
    Ok(std::fs::canonicalize(location)?.display().to_string())
}

/// Whether a local `--repo` is a git repository a daemon can follow: a path that is not
/// one is refused at start (it would only ever fail to sync). Remotes are checked by
/// their first fetch.
pub fn check_local(location: &str) -> Result<(), String> {
    if is_remote(location) {
        return Ok(());
    }
    match git2::Repository::open(location) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{location} is not a git repository ({})\n  hint: the daemon follows commits: `git init` it and commit the config, or pass the repository's root",
            e.message()
        )),
    }
}

/// The branch a local repository's `HEAD` names right now (`None` when detached or not
/// a repository). `serve --repo PATH` follows this branch, fixed at start: checking out
/// a feature branch in that work tree must not deploy it.
pub fn checked_out_branch(location: &str) -> Option<String> {
    if is_remote(location) {
        return None;
    }
    let repo = git2::Repository::open(location).ok()?;
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok().flatten()?;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_or_local() {
        assert!(is_remote("https://forge.example/org/cfg.git"));
        assert!(is_remote("file:///srv/cfg.git"));
        assert!(is_remote("git@forge.example:org/cfg.git"));
        assert!(!is_remote("/srv/cfg"));
        assert!(!is_remote("./cfg"));
        assert!(!is_remote("dir:with/colon"));
    }

    #[test]
    fn credentials_are_redacted_and_split_off() {
        let r = redact_url;
        assert_eq!(r("https://ada:tok3n@forge.example/o/c.git"), "https://ada:***@forge.example/o/c.git");
        assert_eq!(r("https://tok3n@forge.example/o/c.git"), "https://***@forge.example/o/c.git");
        assert_eq!(r("HTTP://ada:tok3n@forge.example"), "HTTP://ada:***@forge.example");
        assert_eq!(r("ssh://git@forge.example/o/c.git"), "ssh://git@forge.example/o/c.git");
        assert_eq!(r("ssh://git:pw@forge.example/o/c.git"), "ssh://***@forge.example/o/c.git");
        assert_eq!(r("git@forge.example:o/c.git"), "git@forge.example:o/c.git");
        assert_eq!(r("/srv/cfg@2"), "/srv/cfg@2");
        // An `@` after the host is part of the path, not userinfo.
        assert_eq!(r("https://forge.example/o/c@v1.git"), "https://forge.example/o/c@v1.git");
        let (bare, c) = split_credentials("https://ada:tok3n@forge.example/o/c.git");
        assert_eq!(bare, "https://forge.example/o/c.git");
        let c = c.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("ada", "tok3n"));
        assert!(split_credentials("ssh://git@forge.example/o").1.is_none());
        assert_eq!(
            redact_in("fatal: 'https://ada:tok3n@forge.example/o' and tok3n", "https://ada:tok3n@forge.example/o"),
            "fatal: 'https://ada:***@forge.example/o' and ***"
        );
    }
}
