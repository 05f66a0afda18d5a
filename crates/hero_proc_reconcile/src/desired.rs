//! The desired state at one commit: the validated tree merged for this host, plus the
//! secrets decrypted from their SOPS files (values held apart, redacted, never planned
//! on directly: the plan compares keyed fingerprints).

use std::collections::BTreeMap;
use std::fmt;

use hero_proc_sops::SecretValue;
use hero_proc_spec::artifact::{ArtifactId, ArtifactLock, Digest, artifact_of};
use hero_proc_spec::load::ParseCache;
use hero_proc_spec::{DesiredState, GitSource, Migration, SecretsFile, Settings, Severity};
use hero_proc_store::Ref;
use serde::{Deserialize, Serialize};

use crate::repo::CommitInfo;

/// Opens SOPS files and fingerprints values. The daemon's opener uses the host's age
/// identities and the at-rest fingerprint key; a preview without keys returns `None`.
pub trait SecretOpener {
    /// The file's top-level secrets, or `None` when this opener has no way to decrypt
    /// (a preview on a machine without the key). An error refuses the whole revision.
    fn open(&self, file: &SecretsFile) -> Result<Option<Vec<(String, SecretValue)>>, String>;
    /// The keyed fingerprint of a value, comparable with the stored one.
    fn fingerprint(&self, context: &str, name: &str, value: &str) -> String;
}

/// A secret as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSecret {
    /// The file it comes from (`secrets/core.sops.yaml`).
    pub source: String,
    /// `None` when the file could not be opened here (preview without the key).
    pub fingerprint: Option<String>,
}

/// Decrypted values, by `(context, name)`. Debug never prints a value.
#[derive(Default)]
pub struct SecretValues(BTreeMap<Ref, SecretValue>);

impl SecretValues {
    pub fn get(&self, r: &Ref) -> Option<&SecretValue> {
        self.0.get(r)
    }
    pub fn insert(&mut self, r: Ref, value: SecretValue) {
        self.0.insert(r, value);
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValues({} values, redacted)", self.0.len())
    }
}

/// The name a work-tree preview gives its "commit".
pub const WORKTREE: &str = "worktree";

/// Everything a revision asks for on this host.
#[derive(Debug)]
pub struct Desired {
    pub commit: CommitInfo,
    pub host: Option<String>,
    pub state: DesiredState,
    pub settings: Settings,
    pub secrets: BTreeMap<Ref, DesiredSecret>,
    pub migrations: Vec<Migration>,
    pub values: SecretValues,
    /// The artifact each action of this host runs (SPEC 3.6), with its pinned digest.
    pub artifacts: BTreeMap<Ref, (ArtifactId, Digest)>,
}

impl Desired {
    /// The artifacts this revision needs on this host, each once.
    pub fn needed_artifacts(&self) -> Vec<(ArtifactId, Digest)> {
        let set: std::collections::BTreeSet<(ArtifactId, Digest)> = self.artifacts.values().cloned().collect();
        set.into_iter().collect()
    }

    /// The registry token's value, when `registry.token` is set and its secret was
    /// decrypted here.
    pub fn registry_token(&self) -> Option<&SecretValue> {
        let token = self.settings.registry.as_ref()?.token.as_ref()?;
        self.values.get(&Ref::new(hero_proc_spec::DEFAULT_CONTEXT, &token.name))
    }
}

/// The artifact of every action in `state`, with the digest `lock` pins (validation has
/// made sure every one is pinned).
pub fn artifacts_of(state: &DesiredState, lock: &ArtifactLock) -> BTreeMap<Ref, (ArtifactId, Digest)> {
    state
        .actions
        .values()
        .filter_map(|a| {
            let id = artifact_of(a)?;
            let digest = lock.digest(&id)?.clone();
            Some((Ref::new(&a.context, &a.name), (id, digest)))
        })
        .collect()
}

/// Why a revision cannot be applied. Nothing of it is applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read revision {rev}: {message}")]
    Source { rev: String, message: String },
    #[error("revision {rev} fails validation ({count} error(s)); nothing was applied:\n{report}")]
    Invalid { rev: String, count: usize, report: String },
    /// Validation found that the revision deletes or stops a required service: a refusal
    /// (history says `refused`), not a broken file.
    #[error(
        "revision {rev} is refused: a required service (hero.yaml `required_services`) is missing or not set to start; nothing was applied:\n{report}"
    )]
    Refused { rev: String, report: String },
    #[error("cannot decrypt {file} at revision {rev}; nothing was applied:\n{message}")]
    Decrypt { rev: String, file: String, message: String },
}

impl Desired {
    /// Load, validate and (with the opener) decrypt the tree of `commit`. The same
    /// loader as `hero_proc validate`, so what CI accepts is what is applied.
    pub fn load(
        repo: &git2::Repository,
        commit: CommitInfo,
        host: Option<&str>,
        opener: &dyn SecretOpener,
    ) -> Result<Desired, LoadError> {
        Desired::load_cached(repo, commit, host, opener, &mut ParseCache::new())
    }

    /// [`Desired::load`] through `cache`: only the actions files whose blob the cache has
    /// not seen are parsed, the objects of the others are shared with the revisions
    /// loaded before (one copy in memory). The result, diagnostics included, is that of
    /// [`Desired::load`]: the cross-object checks run on the whole tree every time.
    pub fn load_cached(
        repo: &git2::Repository,
        commit: CommitInfo,
        host: Option<&str>,
        opener: &dyn SecretOpener,
        cache: &mut ParseCache,
    ) -> Result<Desired, LoadError> {
        let short = commit.short().to_owned();
        let source = GitSource::at_rev(repo, &commit.id)
            .map_err(|e| LoadError::Source { rev: short.clone(), message: e.to_string() })?;
        Desired::from_source(&source, commit, host, opener, cache)
    }

    /// The work tree at `dir` as it is, uncommitted edits included: for a preview
    /// (`reconcile --dry-run --worktree`), never for an apply. Its commit is named
    /// `worktree`.
    pub fn load_worktree(
        dir: &std::path::Path,
        host: Option<&str>,
        opener: &dyn SecretOpener,
    ) -> Result<Desired, LoadError> {
        let commit = CommitInfo {
            id: WORKTREE.to_owned(),
            author: None,
            committed_at_ms: None,
            summary: Some(format!("the work tree of {}, uncommitted edits included", dir.display())),
        };
        Desired::from_source(&hero_proc_spec::DirSource::new(dir), commit, host, opener, &mut ParseCache::new())
    }

    fn from_source(
        source: &dyn hero_proc_spec::TreeSource,
        commit: CommitInfo,
        host: Option<&str>,
        opener: &dyn SecretOpener,
        cache: &mut ParseCache,
    ) -> Result<Desired, LoadError> {
        let short = commit.short().to_owned();
        let checked = hero_proc_spec::load::load_tree_cached(source, cache);
        let errors: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string().trim_end().to_owned())
            .collect();
        let only_required = checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .all(|d| d.code.starts_with("required."));
        if !errors.is_empty() {
            const SHOWN: usize = 20;
            let mut report = errors.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("\n");
            if errors.len() > SHOWN {
                report.push_str(&format!(
                    "\n... and {} more (`hero_proc validate` lists them all)",
                    errors.len() - SHOWN
                ));
            }
            if only_required {
                return Err(LoadError::Refused { rev: short, report });
            }
            return Err(LoadError::Invalid { rev: short, count: errors.len(), report });
        }
        let (tree, state) = checked.into_state_for(host);
        let artifacts = artifacts_of(&state, &tree.lock);
        let mut secrets = BTreeMap::new();
        let mut values = BTreeMap::new();
        for file in tree.secrets.values() {
            match opener.open(file) {
                Err(message) => return Err(LoadError::Decrypt { rev: short, file: file.path.clone(), message }),
                Ok(None) => {
                    for k in &file.keys {
                        secrets.insert(
                            Ref::new(&file.context, &k.name),
                            DesiredSecret { source: file.path.clone(), fingerprint: None },
                        );
                    }
                }
                Ok(Some(list)) => {
                    for (name, value) in list {
                        let fingerprint = opener.fingerprint(&file.context, &name, value.expose());
                        let r = Ref::new(&file.context, &name);
                        secrets.insert(
                            r.clone(),
                            DesiredSecret { source: file.path.clone(), fingerprint: Some(fingerprint) },
                        );
                        values.insert(r, value);
                    }
                }
            }
        }
        Ok(Desired {
            commit,
            host: host.map(str::to_owned),
            state,
            settings: tree.settings,
            secrets,
            migrations: tree.migrations,
            values: SecretValues(values),
            artifacts,
        })
    }
}

/// The opener the daemon and the CLI use: SOPS with the host's age identities.
pub struct SopsOpener<F: Fn(&str, &str, &str) -> String> {
    keys: Option<hero_proc_sops::LoadedIdentities>,
    /// Why there are no keys (named in the error when a file must be opened).
    no_keys: Option<String>,
    /// `false` for a preview: a file that cannot be opened gives unknown fingerprints.
    required: bool,
    fingerprint: F,
}

impl<F: Fn(&str, &str, &str) -> String> SopsOpener<F> {
    pub fn new(keys: Result<hero_proc_sops::LoadedIdentities, String>, required: bool, fingerprint: F) -> Self {
        match keys {
            Ok(k) => SopsOpener { keys: Some(k), no_keys: None, required, fingerprint },
            Err(e) => SopsOpener { keys: None, no_keys: Some(e), required, fingerprint },
        }
    }
}

impl<F: Fn(&str, &str, &str) -> String> SecretOpener for SopsOpener<F> {
    fn open(&self, file: &SecretsFile) -> Result<Option<Vec<(String, SecretValue)>>, String> {
        let Some(keys) = &self.keys else {
            return if self.required { Err(self.no_keys.clone().unwrap_or_default()) } else { Ok(None) };
        };
        let decrypted = match hero_proc_sops::decrypt(&file.raw, keys) {
            Ok(d) => d,
            Err(e) if !self.required => {
                tracing::debug!(file = %file.path, "preview cannot decrypt: {e}");
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut out = Vec::new();
        for name in decrypted.keys() {
            match decrypted.get(name) {
                Some(v) => out.push((name.to_owned(), v.clone())),
                None => {
                    return Err(format!(
                        "{}: `{name}` is not a scalar; each top-level key of a secrets file is one secret (a string, number or bool)",
                        file.path
                    ));
                }
            }
        }
        Ok(Some(out))
    }

    fn fingerprint(&self, context: &str, name: &str, value: &str) -> String {
        (self.fingerprint)(context, name, value)
    }
}
