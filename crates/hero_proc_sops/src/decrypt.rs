//! The decryption walk, mirroring sops's `Tree.Decrypt` and
//! `common.DecryptTree`: recover the data key, visit every leaf in document
//! order, open the ones the file's rule says are encrypted (additional data =
//! map keys joined with `:` plus a trailing `:`, list positions excluded),
//! feed Go's canonical text of each leaf into SHA-512, and compare the result
//! with the decrypted `sops.mac`. Anything unexpected is an error: we never
//! return values from a file whose MAC does not verify.

use std::collections::HashSet;

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::crypto::{DataKey, Unwrap, age_unwrap, looks_encrypted, parse_enc, shamir_combine};
use crate::document::{DecryptedFile, Document, Value};
use crate::error::{KeyPath, SopsError};
use crate::keys::LoadedIdentities;
use crate::metadata::{Metadata, Rule, parse_metadata};
use crate::resolve::{
    Resolved, go_format_float_f, go_format_float_g, go_parse_bool, go_parse_float, go_parse_int, parse_rfc3339,
    resolve_scalar,
};
use crate::secret::{SecretValue, ValueKind};
use crate::yaml::{Node, parse_documents};

/// Largest file accepted.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// sops's `MACOnlyEncryptedInitialization` (SHA-256 of "sops"), hashed first
/// when `mac_only_encrypted` is on.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// A parsed, not yet decrypted SOPS file.
pub(crate) struct ParsedFile {
    /// Each document's top-level entries, `sops` removed.
    pub docs: Vec<Vec<(Node, Node)>>,
    pub metadata: Metadata,
}

/// Parses the YAML and the `sops:` block; checks the shape sops requires.
pub(crate) fn parse_file(bytes: &[u8]) -> Result<ParsedFile, SopsError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SopsError::TooLarge { size: bytes.len(), limit: MAX_FILE_BYTES });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SopsError::NotUtf8 { offset: e.valid_up_to() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    for (i, doc) in parse_documents(text)?.into_iter().enumerate() {
        let entries = match doc {
            None => Vec::new(),
            Some(Node::Map(entries)) => entries,
            Some(Node::Scalar(s))
                if !s.is_quoted() && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL") =>
            {
                Vec::new()
            }
            Some(_) => return Err(SopsError::NotAMapping { document: i + 1 }),
        };
        docs.push(entries);
    }
    let first = docs.first().ok_or(SopsError::NotSopsFile)?;
    let metadata = parse_metadata(first)?;
    for doc in &mut docs {
        doc.retain(|(k, _)| k.as_scalar().is_none_or(|s| s.text != "sops"));
    }
    Ok(ParsedFile { docs, metadata })
}

/// The string form of a mapping key; sops only accepts string keys.
pub(crate) fn key_text(key: &Node, path: &KeyPath) -> Result<String, SopsError> {
    let non_string = || SopsError::NonStringKey { path: path.clone() };
    let Node::Scalar(s) = key else { return Err(non_string()) };
    match resolve_scalar(s) {
        Ok(Resolved::Str(text)) => Ok(text),
        // yaml.v3 keeps timestamp-looking keys as their text.
        Ok(Resolved::Time(_)) => Ok(s.text.clone()),
        _ => Err(non_string()),
    }
}

/// Checks a mapping for duplicate keys and returns the key strings.
pub(crate) fn map_keys(entries: &[(Node, Node)], path: &KeyPath) -> Result<Vec<String>, SopsError> {
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (k, _) in entries {
        let text = key_text(k, path)?;
        if !seen.insert(text.clone()) {
            let mut p = path.clone();
            p.push_key(&text);
            return Err(SopsError::DuplicateKey { path: p });
        }
        out.push(text);
    }
    Ok(out)
}

/// Recovers the 32-byte data key from the age stanzas (and Shamir groups).
fn recover_data_key(meta: &Metadata, keys: &LoadedIdentities) -> Result<Zeroizing<[u8; 32]>, SopsError> {
    if meta.groups.iter().all(Vec::is_empty) {
        return Err(SopsError::NoAgeRecipients { other_kinds: meta.other_kinds.join(", ") });
    }
    let ours = keys.recipients();
    let mut parts = Vec::new();
    let mut malformed: Option<&'static str> = None;
    for group in &meta.groups {
        // Try stanzas addressed to us first; the recipient field is only a
        // hint, so the others are tried too.
        let mut order: Vec<_> = group.iter().collect();
        order.sort_by_key(|s| !ours.contains(&s.recipient));
        for stanza in order {
            match age_unwrap(&stanza.enc, keys.identities()) {
                Unwrap::Ok(part) => {
                    parts.push(part);
                    break;
                }
                Unwrap::NoMatch => {}
                Unwrap::Malformed(reason) => malformed = malformed.or(Some(reason)),
            }
        }
    }
    let no_match = || SopsError::NoMatchingIdentity {
        file_recipients: meta.recipients(),
        our_recipients: ours.clone(),
        sources: keys.sources().to_vec(),
    };
    let key = if meta.groups.len() == 1 {
        match parts.pop() {
            Some(k) => k,
            None => return Err(malformed.map_or_else(no_match, |r| SopsError::DataKey { reason: r.to_string() })),
        }
    } else {
        let needed = if meta.shamir_threshold == 0 { meta.groups.len() } else { meta.shamir_threshold };
        if parts.len() < needed {
            if parts.is_empty() {
                return Err(malformed.map_or_else(no_match, |r| SopsError::DataKey { reason: r.to_string() }));
            }
            return Err(SopsError::NotEnoughKeyGroups {
                recovered: parts.len(),
                required: needed,
                file_recipients: meta.recipients(),
                our_recipients: ours,
            });
        }
        shamir_combine(&parts).map_err(|r| SopsError::DataKey { reason: r.to_string() })?
    };
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| SopsError::DataKey { reason: "the unwrapped data key is not 32 bytes".to_string() })?;
    Ok(Zeroizing::new(key))
}

struct Walker<'a> {
    key: DataKey,
    rule: &'a Rule,
    mac_only_encrypted: bool,
    hasher: Sha512,
}

impl Walker<'_> {
    fn walk(&mut self, node: &Node, ad: &mut Vec<String>, path: &mut KeyPath) -> Result<Value, SopsError> {
        match node {
            Node::Scalar(s) => {
                let resolved =
                    resolve_scalar(s).map_err(|reason| SopsError::UnsupportedValue { path: path.clone(), reason })?;
                self.leaf(resolved, ad, path)
            }
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let mark = path.len();
                    path.push_index(i);
                    out.push(self.walk(item, ad, path)?);
                    path.truncate(mark);
                }
                Ok(Value::List(out))
            }
            Node::Map(entries) => Ok(Value::Map(self.walk_map(entries, ad, path)?)),
        }
    }

    fn walk_map(
        &mut self,
        entries: &[(Node, Node)],
        ad: &mut Vec<String>,
        path: &mut KeyPath,
    ) -> Result<Vec<(String, Value)>, SopsError> {
        let names = map_keys(entries, path)?;
        let mut out = Vec::with_capacity(entries.len());
        for (name, (_, v)) in names.into_iter().zip(entries) {
            let mark = path.len();
            path.push_key(&name);
            ad.push(name);
            let value = self.walk(v, ad, path)?;
            path.truncate(mark);
            let name = ad.pop().unwrap_or_default();
            out.push((name, value));
        }
        Ok(out)
    }

    fn leaf(&mut self, resolved: Resolved, ad: &[String], path: &KeyPath) -> Result<Value, SopsError> {
        if resolved == Resolved::Null {
            // sops skips nulls entirely: not decrypted, not in the MAC.
            return Ok(Value::Null);
        }
        let keys: Vec<&str> = ad.iter().map(String::as_str).collect();
        let encrypted = self.rule.should_encrypt(&keys);
        let (display, mac_text, kind, was_encrypted) = if encrypted {
            match resolved {
                Resolved::Str(s) if s.is_empty() => (Zeroizing::new(String::new()), None, ValueKind::Str, false),
                Resolved::Str(s) => self.open(&s, &keys, path)?,
                _ => {
                    return Err(SopsError::InvalidEncValue {
                        path: path.clone(),
                        reason: "found a plaintext value where sops expects an encrypted one",
                    });
                }
            }
        } else {
            let (display, mac, kind) = canonical_plaintext(resolved);
            (display, mac, kind, false)
        };
        if !self.mac_only_encrypted || encrypted {
            match &mac_text {
                Some(m) => self.hasher.update(m.as_bytes()),
                None => self.hasher.update(display.as_bytes()),
            }
        }
        Ok(Value::Scalar(SecretValue::new(display, kind, was_encrypted)))
    }

    /// Decrypts one `ENC[...]` leaf; returns (display text, MAC text if it
    /// differs from the display text, kind, encrypted).
    #[allow(clippy::type_complexity)]
    fn open(
        &self,
        s: &str,
        keys: &[&str],
        path: &KeyPath,
    ) -> Result<(Zeroizing<String>, Option<Zeroizing<String>>, ValueKind, bool), SopsError> {
        let enc = parse_enc(s).map_err(|reason| SopsError::InvalidEncValue {
            path: path.clone(),
            reason: if looks_encrypted(s) {
                reason
            } else {
                "found a plaintext value where sops expects an encrypted one"
            },
        })?;
        let mut additional = keys.join(":");
        additional.push(':');
        let plain = self
            .key
            .open(&enc, additional.as_bytes())
            .ok_or_else(|| SopsError::DecryptFailed { path: path.clone() })?;
        let kind = match enc.kind {
            "str" => ValueKind::Str,
            "bytes" => ValueKind::Bytes,
            "int" | "int64" => ValueKind::Int,
            "float" => ValueKind::Float,
            "bool" => ValueKind::Bool,
            "time" => ValueKind::Time,
            _ => return Err(SopsError::InvalidEncValue { path: path.clone(), reason: "unknown value type" }),
        };
        let invalid = || SopsError::InvalidPlaintext { path: path.clone(), kind: kind.name() };
        let text = std::str::from_utf8(&plain).map_err(|_| invalid())?;
        let (display, mac) = match kind {
            ValueKind::Str | ValueKind::Bytes => (Zeroizing::new(text.to_string()), None),
            ValueKind::Int => {
                let i = go_parse_int(text).ok_or_else(invalid)?;
                (Zeroizing::new(i.to_string()), None)
            }
            ValueKind::Float => {
                let f = go_parse_float(text).ok_or_else(invalid)?;
                (Zeroizing::new(go_format_float_g(f)), Some(Zeroizing::new(go_format_float_f(f))))
            }
            ValueKind::Bool => {
                let b = go_parse_bool(text).ok_or_else(invalid)?;
                let (d, m) = if b { ("true", "True") } else { ("false", "False") };
                (Zeroizing::new(d.to_string()), Some(Zeroizing::new(m.to_string())))
            }
            ValueKind::Time => {
                let t = parse_rfc3339(text).ok_or_else(invalid)?;
                (Zeroizing::new(t.rfc3339_nano()), None)
            }
        };
        Ok((display, mac, kind, true))
    }
}

/// Display text, MAC text (when different) and kind of a value stored in clear.
fn canonical_plaintext(resolved: Resolved) -> (Zeroizing<String>, Option<Zeroizing<String>>, ValueKind) {
    match resolved {
        Resolved::Str(s) => (Zeroizing::new(s), None, ValueKind::Str),
        Resolved::Null => (Zeroizing::new(String::new()), None, ValueKind::Str),
        Resolved::Bool(b) => {
            let (d, m) = if b { ("true", "True") } else { ("false", "False") };
            (Zeroizing::new(d.to_string()), Some(Zeroizing::new(m.to_string())), ValueKind::Bool)
        }
        Resolved::Int(i) => (Zeroizing::new(i.to_string()), None, ValueKind::Int),
        Resolved::Float(f) => {
            (Zeroizing::new(go_format_float_g(f)), Some(Zeroizing::new(go_format_float_f(f))), ValueKind::Float)
        }
        Resolved::Time(t) => (Zeroizing::new(t.rfc3339_nano()), None, ValueKind::Time),
    }
}

/// Constant-time comparison of the stored and computed MACs.
fn mac_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn decrypt_file(bytes: &[u8], keys: &LoadedIdentities) -> Result<DecryptedFile, SopsError> {
    let parsed = parse_file(bytes)?;
    let meta = &parsed.metadata;
    let data_key = recover_data_key(meta, keys)?;
    let mut walker = Walker {
        key: DataKey::new(&data_key),
        rule: &meta.rule,
        mac_only_encrypted: meta.mac_only_encrypted,
        hasher: Sha512::new(),
    };
    if meta.mac_only_encrypted {
        walker.hasher.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut documents = Vec::with_capacity(parsed.docs.len());
    for doc in &parsed.docs {
        let mut ad = Vec::new();
        let mut path = KeyPath::default();
        let entries = walker.walk_map(doc, &mut ad, &mut path)?;
        documents.push(Document { entries });
    }
    let computed = hex::encode_upper(walker.hasher.finalize());

    if meta.mac.is_empty() {
        return Err(SopsError::MacInvalid { reason: "is missing (sops.mac is empty)" });
    }
    let lastmodified = parse_rfc3339(&meta.lastmodified)
        .ok_or(SopsError::MacInvalid { reason: "cannot be checked: sops.lastmodified is not an RFC 3339 time" })?;
    let enc = parse_enc(&meta.mac).map_err(|_| SopsError::MacInvalid { reason: "is malformed" })?;
    let stored = walker.key.open(&enc, lastmodified.rfc3339().as_bytes()).ok_or(SopsError::MacInvalid {
        reason: "cannot be authenticated (sops.mac or sops.lastmodified was edited)",
    })?;
    if enc.kind != "str" || !mac_equal(&stored, computed.as_bytes()) {
        return Err(SopsError::MacMismatch);
    }
    Ok(DecryptedFile { documents, recipients: meta.recipients() })
}
