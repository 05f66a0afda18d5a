//! Artifacts: binaries by version from a registry (SPEC 3.6).
//!
//! - [`Registry`]: where versions come from: a Forgejo generic package registry
//!   (`GET <base>/NAME/VERSION/NAME`, token as `Authorization: token ...`) or a
//!   `file:///dir` with the same layout for hosts without network.
//! - [`Cache`]: the content-addressed store under `var/hero_proc/artifacts/sha256/HEX`
//!   and the links `$HERO_ROOTDIR/bin/NAME@VERSION` that point into it.
//! - [`Installer`]: makes a set of pinned artifacts present: each missing digest is
//!   streamed once (however many versions or services share it) into a private temp
//!   file, hashed on the way, fsynced, and renamed into the store only when the digest is
//!   the pinned one; then the links are swapped atomically. A partial or wrong file is
//!   never under a name anything runs.
//!
//! No credentials in anything this crate returns: errors carry the URL, which never
//! holds the token (it travels in a header).

mod cache;
mod fetch;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use cache::{Cache, CachedFile};
pub use fetch::{Installer, Progress, Quiet};
pub use hero_proc_spec::artifact::{ArtifactId, Digest};

/// The largest artifact accepted (a service binary; a larger file is a mistake or an
/// attack on the disk).
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

/// A registry token. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Token {
        Token(value.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// Where artifacts come from, as `hero.yaml` `registry:` says (URL already checked by
/// the spec: no credentials in it, no trailing `/`).
#[derive(Clone, Debug)]
pub struct Registry {
    pub url: String,
    pub token: Option<Token>,
    /// No byte for this long fails a download; connecting takes at most this long.
    pub timeout: Duration,
}

impl Registry {
    /// Where `id` is fetched from (no credentials in it: safe to show).
    pub fn url_of(&self, id: &ArtifactId) -> String {
        format!("{}/{}", self.url, id.registry_path())
    }
}

/// Why an artifact could not be installed: the label of the failure metric and the
/// start of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// 404, or no such file under `file://`.
    NotFound,
    /// 401 or 403: the token is missing, wrong or lacks access.
    Unauthorized,
    /// 5xx.
    Server,
    /// Another unexpected status.
    Http,
    /// Connecting, or receiving, stalled longer than the registry's `timeout`.
    Timeout,
    /// No connection (refused, DNS, TLS).
    Connect,
    /// The body ended before its announced length.
    Truncated,
    /// The bytes are not the pinned digest.
    Digest,
    /// Larger than [`MAX_ARTIFACT_BYTES`].
    TooLarge,
    /// No space left (or the folder is not writable).
    Disk,
    /// Another local I/O error.
    Io,
}

impl Cause {
    pub const ALL: [Cause; 11] = [
        Cause::NotFound,
        Cause::Unauthorized,
        Cause::Server,
        Cause::Http,
        Cause::Timeout,
        Cause::Connect,
        Cause::Truncated,
        Cause::Digest,
        Cause::TooLarge,
        Cause::Disk,
        Cause::Io,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::NotFound => "not_found",
            Cause::Unauthorized => "unauthorized",
            Cause::Server => "server_error",
            Cause::Http => "http_status",
            Cause::Timeout => "timeout",
            Cause::Connect => "connect",
            Cause::Truncated => "truncated",
            Cause::Digest => "digest_mismatch",
            Cause::TooLarge => "too_large",
            Cause::Disk => "disk",
            Cause::Io => "io",
        }
    }
}

/// One artifact that could not be installed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("artifact {id}: {message}")]
pub struct ArtifactError {
    pub id: ArtifactId,
    pub cause: Cause,
    /// What happened and where (the URL without credentials) and what to do.
    pub message: String,
}

/// Why a set of artifacts is not installed: every artifact that failed (the revision
/// applies nothing).
#[derive(Clone, Debug, thiserror::Error)]
pub struct InstallError {
    pub failed: Vec<ArtifactError>,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.failed {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Counters since the daemon started (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub downloads: AtomicU64,
    pub bytes: AtomicU64,
    failures: [AtomicU64; Cause::ALL.len()],
}

impl Counters {
    pub(crate) fn failed(&self, cause: Cause) {
        let i = Cause::ALL.iter().position(|c| *c == cause).expect("every cause is listed");
        self.failures[i].fetch_add(1, Ordering::Relaxed);
    }
    /// Failures by cause, every cause listed (zeros included, so series exist).
    pub fn failures(&self) -> Vec<(Cause, u64)> {
        Cause::ALL.iter().zip(&self.failures).map(|(c, n)| (*c, n.load(Ordering::Relaxed))).collect()
    }
}

/// What an install did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Digests downloaded (each once), with their sizes.
    pub downloaded: Vec<(ArtifactId, u64)>,
    /// Links made or re-pointed.
    pub linked: Vec<ArtifactId>,
}

/// Shared by the daemon and its metrics.
pub type SharedCounters = Arc<Counters>;
