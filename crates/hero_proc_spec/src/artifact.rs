//! Artifacts: binaries by version (SPEC 3.6).
//!
//! The program of an `exec` script written `~/hero/bin/NAME@VERSION` or
//! `$HERO_ROOTDIR/bin/NAME@VERSION` is file NAME of package NAME at VERSION in the
//! registry of `hero.yaml`, pinned by its SHA-256 in `artifacts.lock`. This module is
//! the pure half: recognising a reference, the lock file's format, and its canonical
//! text. Fetching and installing live in `hero_proc_artifacts`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::diag::{Diagnostics, Pos};
use crate::model::{Action, Interpreter};
use crate::yaml::Node;

/// The lock file at the repository root.
pub const LOCK_FILE: &str = "artifacts.lock";

/// The prefixes that make a program an artifact (after them: `NAME@VERSION`).
const PREFIXES: [&str; 3] = ["~/hero/bin/", "$HERO_ROOTDIR/bin/", "${HERO_ROOTDIR}/bin/"];

/// Longest package name or version accepted (Forgejo allows more; a path element of
/// this size is already unusual).
const MAX_PART: usize = 128;

/// `NAME@VERSION`: one file of one package version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ArtifactId {
    pub name: String,
    pub version: String,
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What is wrong with a `NAME@VERSION`, as a sentence.
pub const ARTIFACT_HINT: &str = "write `NAME@VERSION`: the name starts with a letter or digit and has letters, digits, `.`, `_` and `-`; the version the same and `+` (at most 128 characters each)";

impl ArtifactId {
    /// Parse `NAME@VERSION`. Both parts become one path element of a URL and of a file
    /// name, so they are held to a safe alphabet: no `/`, no `..`, no spaces or `%`.
    pub fn parse(s: &str) -> Result<ArtifactId, String> {
        let Some((name, version)) = s.split_once('@') else {
            return Err(format!("`{s}` has no `@VERSION`"));
        };
        let part_ok = |p: &str, extra: &[u8]| {
            !p.is_empty()
                && p.len() <= MAX_PART
                && p.as_bytes()[0].is_ascii_alphanumeric()
                && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c) || extra.contains(&c))
                && !p.contains("..")
        };
        if !part_ok(name, b"") {
            return Err(format!("invalid artifact name `{name}`"));
        }
        if !part_ok(version, b"+") {
            return Err(format!("invalid artifact version `{version}`"));
        }
        Ok(ArtifactId { name: name.to_owned(), version: version.to_owned() })
    }

    /// The path of the file under the registry's base URL: `NAME/VERSION/NAME`.
    pub fn registry_path(&self) -> String {
        format!("{}/{}/{}", self.name, self.version, self.name)
    }
}

/// A SHA-256 digest, written `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// From `sha256:HEX`.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(format!("`{s}` is not `sha256:<64 hex digits>`"));
        };
        Digest::from_hex(hex)
    }
    /// From the 64 hex digits alone.
    pub fn from_hex(hex: &str) -> Result<Digest, String> {
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(format!("`sha256:{hex}` is not `sha256:<64 lowercase hex digits>`"));
        }
        Ok(Digest(hex.to_owned()))
    }
    /// The 64 hex digits (the content-addressed file's name).
    pub fn hex(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Whether a program word refers to an artifact, and which.
pub fn artifact_in_program(program: &str) -> Option<Result<ArtifactId, String>> {
    let rest = PREFIXES.iter().find_map(|p| program.strip_prefix(p))?;
    // A plain binary in ~/hero/bin (no `@`) is not an artifact: it is run as it is.
    if !rest.contains('@') {
        return None;
    }
    if rest.contains('/') {
        return Some(Err(format!("`{rest}` is not `NAME@VERSION`")));
    }
    Some(ArtifactId::parse(rest))
}

/// The artifact an action runs, if its program is one (only `interpreter: exec`: a shell
/// script's words are the shell's business). A malformed reference is `None` here;
/// the decoder reports it where it is written.
pub fn artifact_of(action: &Action) -> Option<ArtifactId> {
    if action.interpreter != Interpreter::Exec {
        return None;
    }
    let words = shell_words::split(&action.script).ok()?;
    artifact_in_program(words.first()?)?.ok()
}

/// Where an action uses an artifact (collected while decoding, so `validate` can point
/// at the script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactUse {
    pub id: ArtifactId,
    /// `context/name` of the action.
    pub action: String,
    pub pos: Pos,
}

/// One pinned version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    pub digest: Digest,
    pub pos: Pos,
}

/// `artifacts.lock`: `NAME@VERSION: sha256:HEX` per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactLock {
    /// Whether the file exists in the tree.
    pub present: bool,
    pub entries: BTreeMap<ArtifactId, LockEntry>,
}

impl ArtifactLock {
    pub fn digest(&self, id: &ArtifactId) -> Option<&Digest> {
        self.entries.get(id).map(|e| &e.digest)
    }
}

/// Decode the lock file's one YAML document (a mapping; an empty file is an empty lock).
pub fn decode_lock(file: &Arc<str>, doc: Option<&Node>, diags: &mut Diagnostics) -> ArtifactLock {
    let mut lock = ArtifactLock { present: true, entries: BTreeMap::new() };
    let Some(doc) = doc else { return lock };
    if doc.is_null() {
        return lock;
    }
    let Some(entries) = doc.as_map() else {
        diags
            .error(&Pos::new(file, doc.mark()), "lock.format", format!("{LOCK_FILE} must be a mapping"))
            .hint("one line per artifact: `NAME@VERSION: sha256:<hex>`; `hero_proc artifact lock` writes it");
        return lock;
    };
    for (k, v) in entries {
        let kpos = Pos::new(file, k.mark());
        let Some(key) = k.as_scalar() else {
            diags.error(&kpos, "lock.format", "expected `NAME@VERSION` as the key");
            continue;
        };
        let id = match ArtifactId::parse(key) {
            Ok(id) => id,
            Err(e) => {
                diags.error(&kpos, "lock.key", e).hint(ARTIFACT_HINT);
                continue;
            }
        };
        let vpos = Pos::new(file, v.mark());
        let digest = match v.as_scalar().map(Digest::parse) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                diags.error(&vpos, "lock.digest", e).hint("run `hero_proc artifact lock` to write the digest");
                continue;
            }
            None => {
                diags.error(&vpos, "lock.digest", "expected `sha256:<hex>`");
                continue;
            }
        };
        lock.entries.insert(id, LockEntry { digest, pos: kpos });
    }
    lock
}

/// The canonical text of a lock: a header, then one line per entry, sorted. The same
/// entries always give the same bytes, so the file only changes in a PR when a pin does.
pub fn render_lock(entries: &BTreeMap<ArtifactId, Digest>) -> String {
    let mut out = String::from(
        "# Written by `hero_proc artifact lock`: the digest each artifact version must have.\n\
         # Review changes like Cargo.lock; a version not listed here cannot run.\n",
    );
    for (id, d) in entries {
        out.push_str(&format!("{id}: {d}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_that_are_artifacts() {
        let id = |s: &str| artifact_in_program(s).map(|r| r.map(|a| a.to_string()));
        assert_eq!(id("~/hero/bin/hero_agent@v1.2.3"), Some(Ok("hero_agent@v1.2.3".into())));
        assert_eq!(id("$HERO_ROOTDIR/bin/db@0.9.0+build.1"), Some(Ok("db@0.9.0+build.1".into())));
        assert_eq!(id("${HERO_ROOTDIR}/bin/db@1"), Some(Ok("db@1".into())));
        // Not artifacts: plain binaries, other folders.
        assert_eq!(id("~/hero/bin/hero_agent"), None);
        assert_eq!(id("/usr/bin/x@1"), None);
        assert_eq!(id("~/bin/x@1"), None);
        // Written as one but malformed: an error, never a path outside the store.
        for bad in [
            "~/hero/bin/x@",
            "~/hero/bin/@1",
            "~/hero/bin/x@../../etc",
            "~/hero/bin/x@1/y",
            "~/hero/bin/../x@1",
            "~/hero/bin/x@1 2",
            "~/hero/bin/x@a@b",
            "~/hero/bin/x@%2e",
        ] {
            assert!(matches!(artifact_in_program(bad), Some(Err(_))), "{bad} must be refused");
        }
        assert!(ArtifactId::parse(&format!("a@{}", "1".repeat(129))).is_err());
    }

    #[test]
    fn digests_are_lowercase_sha256() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert!(Digest::parse(hex).is_err());
        assert!(Digest::parse(&format!("sha256:{}", hex.to_uppercase())).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha512:{hex}")).is_err());
    }

    #[test]
    fn the_lock_round_trips_through_its_canonical_text() {
        let mut entries = BTreeMap::new();
        let d = |c: char| Digest::from_hex(&c.to_string().repeat(64)).unwrap();
        entries.insert(ArtifactId::parse("b@2").unwrap(), d('b'));
        entries.insert(ArtifactId::parse("a@1").unwrap(), d('a'));
        let text = render_lock(&entries);
        assert!(text.find("a@1").unwrap() < text.find("b@2").unwrap(), "sorted:\n{text}");
        let docs = crate::yaml::parse(&text).unwrap();
        let mut diags = Diagnostics::new();
        let file: Arc<str> = LOCK_FILE.into();
        let lock = decode_lock(&file, docs.first(), &mut diags);
        assert!(diags.finish().is_empty());
        let back: BTreeMap<_, _> = lock.entries.into_iter().map(|(k, e)| (k, e.digest)).collect();
        assert_eq!(back, entries);
        assert_eq!(render_lock(&back), text);
    }

    #[test]
    fn a_bad_lock_line_is_reported_where_it_is() {
        let text = "ok@1: sha256:0000000000000000000000000000000000000000000000000000000000000000\nbad: sha256:00\nx@2: md5:1\n";
        let docs = crate::yaml::parse(text).unwrap();
        let mut diags = Diagnostics::new();
        let file: Arc<str> = LOCK_FILE.into();
        let lock = decode_lock(&file, docs.first(), &mut diags);
        assert_eq!(lock.entries.len(), 1);
        let found: Vec<String> = diags.finish().iter().map(|d| format!("{}:{} {}", d.line, d.col, d.code)).collect();
        assert_eq!(found, ["2:1 lock.key", "3:6 lock.digest"]);
    }
}
