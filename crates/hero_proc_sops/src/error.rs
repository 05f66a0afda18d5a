//! Typed errors. They name *where* (key paths such as `db:password`, key
//! sources, recipients) and *what to do*, but never carry a decrypted value,
//! a ciphertext, a MAC or key material: they end up in logs, RPC answers and
//! CI output.

use std::fmt;

use crate::keys::KeySource;

/// Location of a value inside a SOPS document, printed like `db:password` or
/// `servers[1]:token` (map keys joined with `:`, list positions in brackets).
///
/// Key names are not secret in SOPS (they are stored in clear), so they may be
/// shown; values never are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(String);

impl KeyPath {
    pub(crate) fn push_key(&mut self, key: &str) {
        if !self.0.is_empty() {
            self.0.push(':');
        }
        self.0.push_str(key);
    }

    pub(crate) fn push_index(&mut self, index: usize) {
        use fmt::Write;
        let _ = write!(self.0, "[{index}]");
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The path as text (`db:password`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(document root)") } else { f.write_str(&self.0) }
    }
}

/// Why a file could not be read or decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SopsError {
    /// The input is larger than [`crate::MAX_FILE_BYTES`].
    #[error("SOPS file is {size} bytes, more than the {limit}-byte limit; secrets files should be small")]
    TooLarge { size: usize, limit: usize },

    /// The input is not UTF-8 text.
    #[error("SOPS file is not UTF-8 text (byte offset {offset}); re-encrypt it with `sops --encrypt`")]
    NotUtf8 { offset: usize },

    /// The YAML itself is malformed.
    #[error("invalid YAML at line {line}, column {col}: {message}")]
    Yaml { line: usize, col: usize, message: String },

    /// The YAML nests deeper than the parser accepts, or expands (through
    /// aliases) to more nodes than it accepts.
    #[error("YAML structure too large: {reason}")]
    YamlTooComplex { reason: &'static str },

    /// A document is not a mapping (sops only writes mappings).
    #[error("document {document} is not a mapping of secret names to values")]
    NotAMapping { document: usize },

    /// A mapping key is not a plain string (sops refuses those too).
    #[error("key at {path} is not a string; SOPS only supports string keys")]
    NonStringKey { path: KeyPath },

    /// The same key appears twice in one mapping.
    #[error("duplicate key {path}; remove one of them")]
    DuplicateKey { path: KeyPath },

    /// There is no `sops:` metadata block: the file was never encrypted.
    #[error(
        "no `sops:` metadata block found: this file is not encrypted; encrypt it with `sops --encrypt --in-place <file>`"
    )]
    NotSopsFile,

    /// The `sops:` block is malformed.
    #[error("invalid `sops.{field}` metadata: {reason}")]
    InvalidMetadata { field: &'static str, reason: &'static str },

    /// More than one of the encrypt/unencrypt suffix/regex rules is set; sops
    /// refuses this as well.
    #[error(
        "the `sops:` block sets more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, unencrypted_comment_regex; sops refuses such files, re-create it with one rule"
    )]
    ConflictingRules,

    /// A feature of the file that this crate deliberately does not support.
    #[error("unsupported SOPS feature: {feature}; {hint}")]
    Unsupported { feature: &'static str, hint: &'static str },

    /// The file has no age recipient at all (only KMS/PGP/Vault keys).
    #[error(
        "the file has no age recipients (it uses: {other_kinds}); hero_proc decrypts with age only: add this host's age recipient to .sops.yaml and run `sops updatekeys <file>`"
    )]
    NoAgeRecipients { other_kinds: String },

    /// None of the loaded identities can unwrap the data key.
    #[error("{}", no_match_message(.file_recipients, .our_recipients, .sources))]
    NoMatchingIdentity {
        /// Age recipients listed in the file.
        file_recipients: Vec<String>,
        /// Public recipients of the identities that were tried.
        our_recipients: Vec<String>,
        /// Where identities were looked for, with what was found there.
        sources: Vec<KeySource>,
    },

    /// Shamir key groups: fewer groups could be opened than the threshold.
    #[error(
        "this host could open {recovered} of the {required} key groups the file's shamir_threshold requires; file recipients: {}; this host's recipients: {}; add this host's recipient to more key groups in .sops.yaml and run `sops updatekeys <file>`",
        join_or(.file_recipients, "(none)"),
        join_or(.our_recipients, "(none)")
    )]
    NotEnoughKeyGroups { recovered: usize, required: usize, file_recipients: Vec<String>, our_recipients: Vec<String> },

    /// An age stanza matched but could not be unwrapped into a usable data key.
    #[error(
        "could not recover the SOPS data key: {reason}; the `sops:` block may be corrupted, restore the file from git"
    )]
    DataKey { reason: String },

    /// A value that must be an `ENC[...]` string is not one, or is malformed.
    #[error(
        "value at {path} is not a valid SOPS encrypted value ({reason}); the file was edited by hand, re-create the value with `sops edit`"
    )]
    InvalidEncValue { path: KeyPath, reason: &'static str },

    /// AES-GCM authentication failed: the value was modified or moved from
    /// another key.
    #[error(
        "value at {path} failed authentication: it was modified or moved from another key; restore the file from git or set the value again with `sops edit`"
    )]
    DecryptFailed { path: KeyPath },

    /// The decrypted text does not parse as the type recorded in the ENC
    /// string, or is not UTF-8.
    #[error("value at {path} decrypted to something that is not a valid {kind}; re-create it with `sops edit`")]
    InvalidPlaintext { path: KeyPath, kind: &'static str },

    /// A plaintext value the crate cannot represent exactly as sops does.
    #[error("value at {path} is {reason}; quote it or encrypt it with `sops edit`")]
    UnsupportedValue { path: KeyPath, reason: &'static str },

    /// The `sops.mac` entry is missing or cannot be decrypted (for instance
    /// because `sops.lastmodified` was edited).
    #[error(
        "the SOPS MAC {reason}: the file's metadata was changed outside sops; restore the file from git or re-encrypt it with sops"
    )]
    MacInvalid { reason: &'static str },

    /// The MAC computed over the values does not match the stored one: values
    /// were changed, reordered, added or removed outside sops.
    #[error(
        "SOPS MAC mismatch: values were changed, reordered, added or removed without sops; restore the file from git, or re-create the change with `sops edit`"
    )]
    MacMismatch,
}

fn no_match_message(file_recipients: &[String], ours: &[String], sources: &[KeySource]) -> String {
    let mut msg = String::from("none of this host's age identities can decrypt the file");
    msg.push_str("; file recipients: ");
    msg.push_str(&join_or(file_recipients, "(none)"));
    msg.push_str("; identity sources tried: ");
    let tried: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    msg.push_str(&join_or(&tried, "(none)"));
    match ours.first() {
        Some(first) => {
            msg.push_str("; identities loaded for recipients: ");
            msg.push_str(&ours.join(", "));
            msg.push_str(&format!(
                "; add this host's recipient {first} to .sops.yaml and run `sops updatekeys <file>` on a machine that can already decrypt it"
            ));
        }
        None => msg.push_str(
            "; no identity was loaded: create one with `age-keygen -o $HERO_ROOTDIR/cfg/age/keys.txt`, add its recipient (`age-keygen -y` on that file) to .sops.yaml and run `sops updatekeys <file>`",
        ),
    }
    msg
}

fn join_or(items: &[String], empty: &str) -> String {
    if items.is_empty() { empty.to_string() } else { items.join(", ") }
}

/// Why age identities could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No source yielded an identity.
    #[error("{}", no_identity_message(.sources))]
    NoIdentities { sources: Vec<KeySource> },

    /// A key text does not parse (never includes the text itself).
    #[error("{source_name}: line {line} is not an age X25519 identity (expected `age-keygen` output)")]
    Parse { source_name: String, line: usize },
}

fn no_identity_message(sources: &[KeySource]) -> String {
    let tried: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    format!(
        "no age identity found; tried: {}; create one with `age-keygen -o $HERO_ROOTDIR/cfg/age/keys.txt` or point HERO_PROC_AGE_KEY_FILE at an existing key file",
        join_or(&tried, "(nothing)")
    )
}
