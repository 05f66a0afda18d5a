//! The `sops:` block: recipients, the encryption rule, the MAC and its
//! timestamp. Read from the first document only, as sops does
//! (`yaml.Unmarshal` into its metadata struct reads the first document).

use regex::Regex;

use crate::error::SopsError;
use crate::resolve::{Resolved, resolve_scalar};
use crate::yaml::Node;

/// One age stanza: a recipient and the data key (or Shamir part) wrapped for it.
#[derive(Clone, Debug)]
pub(crate) struct AgeStanza {
    pub recipient: String,
    pub enc: String,
}

/// Which leaves are encrypted. sops allows exactly one rule per file; with
/// none, `unencrypted_suffix: _unencrypted` applies.
#[derive(Debug)]
pub(crate) enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// sops's `shouldBeEncrypted` for a path of map keys.
    pub(crate) fn should_encrypt(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Metadata {
    /// Key groups; a file without `key_groups` has one group.
    pub groups: Vec<Vec<AgeStanza>>,
    /// Non-age key kinds present (for error messages).
    pub other_kinds: Vec<&'static str>,
    pub shamir_threshold: usize,
    pub lastmodified: String,
    pub mac: String,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
}

impl Metadata {
    /// All age recipients in the file, in order, without duplicates.
    pub(crate) fn recipients(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for stanza in self.groups.iter().flatten() {
            if !out.contains(&stanza.recipient) {
                out.push(stanza.recipient.clone());
            }
        }
        out
    }
}

const OTHER_KINDS: [(&str, &str); 5] =
    [("pgp", "pgp"), ("kms", "kms"), ("gcp_kms", "gcp_kms"), ("azure_kv", "azure_kv"), ("hc_vault", "hc_vault")];

fn get<'a>(entries: &'a [(Node, Node)], name: &str) -> Option<&'a Node> {
    entries.iter().find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == name)).map(|(_, v)| v)
}

fn is_null(node: &Node) -> bool {
    node.as_scalar().is_some_and(|s| !s.is_quoted() && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
}

/// A string field: absent/null is "", scalars give their text.
fn string_field(entries: &[(Node, Node)], field: &'static str) -> Result<String, SopsError> {
    match get(entries, field) {
        None => Ok(String::new()),
        Some(n) if is_null(n) => Ok(String::new()),
        Some(Node::Scalar(s)) => Ok(s.text.clone()),
        Some(_) => Err(SopsError::InvalidMetadata { field, reason: "must be a string" }),
    }
}

fn list_field<'a>(entries: &'a [(Node, Node)], field: &'static str) -> Result<&'a [Node], SopsError> {
    match get(entries, field) {
        None => Ok(&[]),
        Some(n) if is_null(n) => Ok(&[]),
        Some(Node::Seq(items)) => Ok(items),
        Some(_) => Err(SopsError::InvalidMetadata { field, reason: "must be a list" }),
    }
}

fn age_stanzas(entries: &[(Node, Node)]) -> Result<Vec<AgeStanza>, SopsError> {
    let mut out = Vec::new();
    for item in list_field(entries, "age")? {
        let Node::Map(fields) = item else {
            return Err(SopsError::InvalidMetadata { field: "age", reason: "entries must be mappings" });
        };
        let recipient = string_field(fields, "recipient")?;
        let enc = string_field(fields, "enc")?;
        if enc.is_empty() {
            return Err(SopsError::InvalidMetadata { field: "age", reason: "an entry has no `enc` data key" });
        }
        out.push(AgeStanza { recipient, enc });
    }
    Ok(out)
}

fn other_kinds_in(entries: &[(Node, Node)], into: &mut Vec<&'static str>) -> Result<bool, SopsError> {
    let mut any = false;
    for (field, name) in OTHER_KINDS {
        if !list_field(entries, field)?.is_empty() {
            any = true;
            if !into.contains(&name) {
                into.push(name);
            }
        }
    }
    Ok(any)
}

fn compile(field: &'static str, pattern: &str) -> Result<Regex, SopsError> {
    Regex::new(pattern).map_err(|_| SopsError::InvalidMetadata {
        field,
        reason: "is not a regular expression this reader understands (RE2 syntax)",
    })
}

/// Reads the `sops:` mapping of the first document.
pub(crate) fn parse_metadata(first_doc: &[(Node, Node)]) -> Result<Metadata, SopsError> {
    let Some(sops) = get(first_doc, "sops") else {
        return Err(SopsError::NotSopsFile);
    };
    let Node::Map(m) = sops else {
        return Err(SopsError::InvalidMetadata { field: "sops", reason: "must be a mapping" });
    };

    let mut other_kinds = Vec::new();
    let flat_age = age_stanzas(m)?;
    let flat_other = other_kinds_in(m, &mut other_kinds)?;
    let mut groups = Vec::new();
    if !flat_age.is_empty() || flat_other {
        groups.push(flat_age);
    } else {
        for group in list_field(m, "key_groups")? {
            let Node::Map(g) = group else {
                return Err(SopsError::InvalidMetadata { field: "key_groups", reason: "entries must be mappings" });
            };
            other_kinds_in(g, &mut other_kinds)?;
            groups.push(age_stanzas(g)?);
        }
    }
    if groups.is_empty() {
        return Err(SopsError::InvalidMetadata { field: "age", reason: "the file lists no keys at all" });
    }

    let shamir_threshold = match get(m, "shamir_threshold") {
        None => 0,
        Some(n) if is_null(n) => 0,
        Some(Node::Scalar(s)) => match resolve_scalar(s) {
            Ok(Resolved::Int(i)) if (0..=255).contains(&i) => i as usize,
            _ => {
                return Err(SopsError::InvalidMetadata {
                    field: "shamir_threshold",
                    reason: "must be an integer 0-255",
                });
            }
        },
        Some(_) => return Err(SopsError::InvalidMetadata { field: "shamir_threshold", reason: "must be an integer" }),
    };

    let mac_only_encrypted = match get(m, "mac_only_encrypted") {
        None => false,
        Some(n) if is_null(n) => false,
        Some(Node::Scalar(s)) => match resolve_scalar(s) {
            Ok(Resolved::Bool(b)) => b,
            _ => return Err(SopsError::InvalidMetadata { field: "mac_only_encrypted", reason: "must be a boolean" }),
        },
        Some(_) => return Err(SopsError::InvalidMetadata { field: "mac_only_encrypted", reason: "must be a boolean" }),
    };

    let unencrypted_suffix = string_field(m, "unencrypted_suffix")?;
    let encrypted_suffix = string_field(m, "encrypted_suffix")?;
    let unencrypted_regex = string_field(m, "unencrypted_regex")?;
    let encrypted_regex = string_field(m, "encrypted_regex")?;
    let unencrypted_comment_regex = string_field(m, "unencrypted_comment_regex")?;
    let encrypted_comment_regex = string_field(m, "encrypted_comment_regex")?;
    let set = [
        &unencrypted_suffix,
        &encrypted_suffix,
        &unencrypted_regex,
        &encrypted_regex,
        &unencrypted_comment_regex,
        &encrypted_comment_regex,
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .count();
    if set > 1 {
        return Err(SopsError::ConflictingRules);
    }
    if !unencrypted_comment_regex.is_empty() || !encrypted_comment_regex.is_empty() {
        return Err(SopsError::Unsupported {
            feature: "encrypted_comment_regex / unencrypted_comment_regex",
            hint: "use encrypted_regex or unencrypted_suffix in .sops.yaml and re-create the file",
        });
    }
    let rule = if !encrypted_suffix.is_empty() {
        Rule::EncryptedSuffix(encrypted_suffix)
    } else if !unencrypted_regex.is_empty() {
        Rule::UnencryptedRegex(compile("unencrypted_regex", &unencrypted_regex)?)
    } else if !encrypted_regex.is_empty() {
        Rule::EncryptedRegex(compile("encrypted_regex", &encrypted_regex)?)
    } else if !unencrypted_suffix.is_empty() {
        Rule::UnencryptedSuffix(unencrypted_suffix)
    } else {
        Rule::UnencryptedSuffix("_unencrypted".to_string())
    };

    let lastmodified = string_field(m, "lastmodified")?;
    let mac = string_field(m, "mac")?;

    Ok(Metadata { groups, other_kinds, shamir_threshold, lastmodified, mac, rule, mac_only_encrypted })
}
