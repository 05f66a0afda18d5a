//! Reading SOPS secrets files (`secrets/*.sops.yaml`) written by the `sops`
//! CLI 3.x with age recipients, without shelling out to sops.
//!
//! Why in-process: the reconciler must decrypt at apply time on every host,
//! refuse tampered files, and guarantee that no value reaches a log, an error
//! or an RPC answer. Doing it here lets every value live only in
//! [`SecretValue`] (prints `(sensitive)`, wiped on drop) and every failure be
//! a typed [`SopsError`] that names key paths and what to do, never values.
//!
//! What is checked, as `sops --decrypt` does:
//! - the data key is unwrapped from `sops.age[].enc` (or recombined from
//!   Shamir `key_groups`) with this host's X25519 identities;
//! - every leaf the file's rule marks as encrypted (`unencrypted_suffix`,
//!   default `_unencrypted`; or `encrypted_suffix`, `unencrypted_regex`,
//!   `encrypted_regex`) must be a valid `ENC[AES256_GCM,...]` string that
//!   authenticates under its own key path, so edited or swapped values fail;
//! - the SOPS MAC (SHA-512 over all leaves, or only encrypted ones with
//!   `mac_only_encrypted`) must match `sops.mac`, so removed, added, reordered
//!   or edited plaintext values fail too. It is **always** verified.
//!
//! Not supported (refused with [`SopsError::Unsupported`] or
//! [`SopsError::NoAgeRecipients`]): KMS/PGP/Vault-only files, and the
//! `*_comment_regex` rules. Only X25519 age identities are used (not SSH keys
//! or plugins). Files must be UTF-8 YAML.
//!
//! ```no_run
//! let keys = hero_proc_sops::load_identities(&hero_proc_sops::KeyEnv::from_process_env())?;
//! let bytes = std::fs::read("secrets/core.sops.yaml")?;
//! let file = hero_proc_sops::decrypt(&bytes, &keys)?;
//! if let Some(token) = file.get("forgejo_token") {
//!     let _env_value: &str = token.expose();
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod crypto;
mod decrypt;
mod document;
mod error;
mod keys;
mod metadata;
mod resolve;
mod secret;
mod yaml;

pub use decrypt::MAX_FILE_BYTES;
pub use document::{DecryptedFile, Document, Value};
pub use error::{KeyError, KeyPath, SopsError};
pub use keys::{KeyEnv, KeySource, LoadedIdentities, SourceStatus, load_identities};
pub use secret::{SecretValue, ValueKind};

/// Re-exported so callers can build identities without depending on `age`.
pub use age::x25519::Identity;

/// Decrypts a SOPS YAML file (one or more documents) and verifies its MAC.
///
/// `keys` comes from [`load_identities`] or
/// [`LoadedIdentities::from_identities`]; only X25519 age identities are
/// used. When none of them can open the file the error lists the file's
/// recipients, this host's recipients and every identity source tried.
pub fn decrypt(bytes: &[u8], keys: &LoadedIdentities) -> Result<DecryptedFile, SopsError> {
    decrypt::decrypt_file(bytes, keys)
}

/// What can be read from a SOPS file without any key.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Top-level key names of all documents, in order, without duplicates
    /// (`sops` excluded).
    pub keys: Vec<String>,
    /// The age recipients the file is encrypted to.
    pub recipients: Vec<String>,
}

/// Reads key names and recipients without decrypting, checking the file's
/// structure (YAML, `sops:` block, string keys, no duplicates) on the way.
/// Used by `hero_proc validate` to check secret references on machines that
/// have no key.
pub fn inspect(bytes: &[u8]) -> Result<FileInfo, SopsError> {
    let parsed = decrypt::parse_file(bytes)?;
    let mut keys: Vec<String> = Vec::new();
    for doc in &parsed.docs {
        for name in decrypt::map_keys(doc, &KeyPath::default())? {
            if !keys.contains(&name) {
                keys.push(name);
            }
        }
    }
    Ok(FileInfo { keys, recipients: parsed.metadata.recipients() })
}

/// Top-level key names (secret names) of a SOPS file, without decrypting;
/// `sops` is excluded. See [`inspect`].
pub fn key_names(bytes: &[u8]) -> Result<Vec<String>, SopsError> {
    inspect(bytes).map(|i| i.keys)
}
