//! Secrets at rest: values sealed with age to the daemon's own key, fingerprints keyed.
//!
//! The database never holds a plaintext value: `secrets.ciphertext` is an age file
//! encrypted to a recipient whose identity lives in `var/hero_proc/at_rest.agekey`
//! (0600, created on first start). A stolen database alone reveals nothing; a stolen
//! database and key file reveal what the processes already see. Values are decrypted in
//! memory only when a process that references them starts ([`SecretSource::reveal`]).
//!
//! Changes are detected with a keyed fingerprint (HMAC-SHA256 under a key derived from
//! the at-rest identity), never by comparing plaintext, and a low-entropy value cannot
//! be guessed from its fingerprint without the key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use hero_proc_engine::SecretSource;
use hero_proc_store::{Origin, SecretRecord, Store};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "cannot read or create the at-rest key {path}: {message}\n  hint: check the permissions of the state folder; the key must be readable only by the daemon user"
    )]
    Key { path: String, message: String },
    #[error(transparent)]
    Store(#[from] hero_proc_store::StoreError),
    #[error(
        "secret {context}/{name} cannot be decrypted with this daemon's at-rest key: {message}\n  hint: was the database copied from another machine? set the secret again (`hero_proc secret set`) or reconcile"
    )]
    Open { context: String, name: String, message: String },
}

pub struct Vault {
    store: Arc<Store>,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    fingerprint_key: [u8; 32],
}

impl Vault {
    /// Load the at-rest key, creating it (0600) on first use.
    pub fn open(store: Arc<Store>, key_path: &Path) -> Result<Vault, VaultError> {
        let err = |message: String| VaultError::Key { path: key_path.display().to_string(), message };
        let identity = match std::fs::read_to_string(key_path) {
            Ok(text) => {
                let line = text
                    .lines()
                    .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                    .ok_or_else(|| err("no AGE-SECRET-KEY line".into()))?;
                age::x25519::Identity::from_str(line.trim()).map_err(|e| err(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = age::x25519::Identity::generate();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(key_path)
                    .map_err(|e| err(e.to_string()))?;
                writeln!(f, "# hero_proc at-rest key: seals secret values in the database. Keep it with the database, never in git.")
                    .and_then(|_| writeln!(f, "# public key: {}", id.to_public()))
                    .and_then(|_| writeln!(f, "{}", id.to_string().expose_secret()))
                    .map_err(|e| err(e.to_string()))?;
                id
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let recipient = identity.to_public();
        let fingerprint_key = fingerprint_key(&identity);
        Ok(Vault { store, identity, recipient, fingerprint_key })
    }

    /// The keyed fingerprint of a value (hex).
    pub fn fingerprint(&self, context: &str, name: &str, value: &str) -> String {
        keyed_fingerprint(&self.fingerprint_key, context, name, value)
    }

    /// Store a value sealed; returns false when the stored value was the same.
    pub fn set(
        &self,
        context: &str,
        name: &str,
        value: &str,
        source: &str,
        origin: &Origin,
    ) -> Result<bool, VaultError> {
        let fingerprint = self.fingerprint(context, name, value);
        if let Some(old) = self.store.get_secret(context, name)?
            && old.value.fingerprint == fingerprint
            && old.value.source == source
        {
            return Ok(false);
        }
        let ciphertext = age::encrypt(&self.recipient, value.as_bytes()).map_err(|e| VaultError::Open {
            context: context.into(),
            name: name.into(),
            message: e.to_string(),
        })?;
        let rec =
            SecretRecord { context: context.into(), name: name.into(), ciphertext, fingerprint, source: source.into() };
        self.store.put_secret(&rec, origin)?;
        Ok(true)
    }

    fn reveal_value(&self, context: &str, name: &str) -> Result<Option<String>, VaultError> {
        let Some(rec) = self.store.get_secret(context, name)? else { return Ok(None) };
        let open_err = |message: String| VaultError::Open { context: context.into(), name: name.into(), message };
        let plain = age::decrypt(&self.identity, &rec.value.ciphertext).map_err(|e| open_err(e.to_string()))?;
        String::from_utf8(plain).map(Some).map_err(|_| open_err("not UTF-8".into()))
    }
}

impl hero_proc_reconcile::SecretSealer for Vault {
    fn seal(&self, context: &str, name: &str, value: &str, source: &str) -> Result<SecretRecord, String> {
        let fingerprint = self.fingerprint(context, name, value);
        let ciphertext = age::encrypt(&self.recipient, value.as_bytes()).map_err(|e| e.to_string())?;
        Ok(SecretRecord { context: context.into(), name: name.into(), ciphertext, fingerprint, source: source.into() })
    }
}

/// The keyed fingerprint function of the daemon whose at-rest key is `key_path`, for a
/// preview that reads the database file directly (`reconcile --dry-run --db`).
pub fn fingerprinter(key_path: &Path) -> Option<impl Fn(&str, &str, &str) -> String + use<>> {
    let text = std::fs::read_to_string(key_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-"))?;
    let identity = age::x25519::Identity::from_str(line.trim()).ok()?;
    let key = fingerprint_key(&identity);
    Some(move |c: &str, n: &str, v: &str| keyed_fingerprint(&key, c, n, v))
}

fn fingerprint_key(identity: &age::x25519::Identity) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hero_proc secret fingerprint v1\0");
    h.update(identity.to_string().expose_secret().as_bytes());
    h.finalize().into()
}

fn keyed_fingerprint(key: &[u8; 32], context: &str, name: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(context.as_bytes());
    mac.update(&[0]);
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl SecretSource for Vault {
    fn reveal(&self, context: &str, name: &str) -> Result<String, String> {
        match self.reveal_value(context, name) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(format!(
                "secret `{name}` is not set in context `{context}`: add it to secrets/{context}.sops.yaml, or `hero_proc secret set {name} --context {context}`"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}
