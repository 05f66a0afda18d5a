//! What can be checked in a SOPS file without its key.
//!
//! Key names, the recipients and the shape of every value are readable in the clear, so
//! `validate` can prove in CI that (a) every secret an action references exists, and
//! (b) no plaintext value slipped into a file that should be encrypted: a plaintext
//! secret must never reach git unnoticed. Decryption is the reconciler's job.

use std::sync::{Arc, OnceLock};

use regex::Regex;

use crate::diag::{Diagnostics, Pos};
use crate::model::{Named, SecretsFile};
use crate::schema::{NAME_HINT, is_valid_name};
use crate::yaml::{Node, NodeKind};

const METADATA_FIELDS: [&str; 18] = [
    "kms",
    "gcp_kms",
    "azure_kv",
    "hc_vault",
    "age",
    "pgp",
    "lastmodified",
    "mac",
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
    "mac_only_encrypted",
    "version",
    "shamir_threshold",
    "key_groups",
];

fn enc_value() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:(str|int|float|bool|bytes|comment)\]$")
            .expect("static regex")
    })
}

/// Which keys sops encrypts, from the file's own metadata (sops allows one rule).
enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// Whether sops encrypts a value at this key path.
    fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// Check one `secrets/<context>.sops.yaml` file and read its key names.
pub fn check_secrets_file(
    file: &Arc<str>,
    context: &str,
    docs: &[Node],
    raw: Vec<u8>,
    diags: &mut Diagnostics,
) -> Option<SecretsFile> {
    let at_file = Pos::file(file);
    if docs.is_empty() {
        diags
            .error(&at_file, "sops.empty", "secrets file is empty")
            .hint("create it with `sops` (e.g. `sops edit secrets/<context>.sops.yaml`) or delete it");
        return None;
    }
    let mut out = SecretsFile {
        context: context.to_owned(),
        path: file.to_string(),
        keys: Vec::new(),
        age_recipients: Vec::new(),
        raw,
    };
    let mut ok = true;
    for doc in docs {
        let Some(entries) = doc.as_map() else {
            diags.error(
                &Pos::new(file, doc.mark()),
                "sops.shape",
                format!("expected a mapping of secret names, found a {}", doc.type_name()),
            );
            ok = false;
            continue;
        };
        let Some(meta) = doc.get("sops") else {
            diags
                .error(
                    &Pos::new(file, doc.mark()),
                    "sops.not-encrypted",
                    "file is not encrypted by sops (no `sops:` metadata)",
                )
                .hint(format!(
                    "encrypt it now with `sops -e -i {file}`; if plaintext values were ever pushed, rotate them"
                ));
            ok = false;
            continue;
        };
        let Some(rule) = check_metadata(file, meta, &mut out.age_recipients, diags) else {
            ok = false;
            continue;
        };
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default();
            if key == "sops" {
                continue;
            }
            let pos = Pos::new(file, k.mark());
            if !is_valid_name(key) {
                diags
                    .warning(&pos, "sops.key-name", format!("secret name `{key}` cannot be referenced"))
                    .hint(NAME_HINT);
            }
            if out.keys.iter().any(|n| n.name == key) {
                diags.error(&pos, "sops.duplicate-key", format!("secret `{key}` is defined in more than one document"));
                ok = false;
            }
            out.keys.push(Named { name: key.to_owned(), pos });
            check_values(file, &rule, &mut vec![key], v, diags, &mut ok);
        }
    }
    ok.then_some(out)
}

fn check_metadata(file: &Arc<str>, meta: &Node, recipients: &mut Vec<String>, diags: &mut Diagnostics) -> Option<Rule> {
    let pos = Pos::new(file, meta.mark());
    let Some(entries) = meta.as_map() else {
        diags.error(&pos, "sops.metadata", "`sops` metadata must be a mapping").hint("re-create the file with `sops`");
        return None;
    };
    let mut ok = true;
    for (k, _) in entries {
        let key = k.as_scalar().unwrap_or_default();
        if !METADATA_FIELDS.contains(&key) {
            diags.warning(&Pos::new(file, k.mark()), "sops.metadata", format!("unknown sops metadata field `{key}`"));
        }
    }
    for required in ["mac", "lastmodified"] {
        if meta.get(required).is_none() {
            diags
                .error(
                    &pos,
                    "sops.metadata",
                    format!("sops metadata has no `{required}`: the file was not written by sops or was damaged"),
                )
                .hint("re-encrypt the file with `sops`");
            ok = false;
        }
    }
    if let Some(mac) = meta.get("mac")
        && !mac.as_scalar().is_some_and(|m| enc_value().is_match(m))
    {
        diags
            .error(&Pos::new(file, mac.mark()), "sops.metadata", "sops `mac` is not an encrypted value")
            .hint("re-encrypt the file with `sops`");
        ok = false;
    }
    let mut stanzas = 0;
    if let Some(age) = meta.get("age").and_then(Node::as_seq) {
        for entry in age {
            match (entry.get("recipient").and_then(Node::as_scalar), entry.get("enc").and_then(Node::as_scalar)) {
                (Some(r), Some(enc)) if r.starts_with("age1") && enc.contains("BEGIN AGE ENCRYPTED FILE") => {
                    recipients.push(r.to_owned());
                    stanzas += 1;
                }
                _ => {
                    diags.error(
                        &Pos::new(file, entry.mark()),
                        "sops.metadata",
                        "malformed age stanza (needs `recipient: age1...` and an armored `enc`)",
                    );
                    ok = false;
                }
            }
        }
    }
    if meta.get("key_groups").is_some() {
        diags
            .warning(&pos, "sops.key-groups", "file uses sops key groups (Shamir secret sharing)")
            .hint("hero_proc decrypts files with plain age recipients; check the reconciler can open this file with `hero_proc reconcile --dry-run`");
    } else if stanzas == 0 {
        diags
            .error(&pos, "sops.no-age", "file is not encrypted to any age recipient")
            .hint("hero_proc decrypts with age: add the host's age recipient to .sops.yaml and run `sops updatekeys`");
        ok = false;
    }
    let text = |k: &str| meta.get(k).and_then(Node::as_scalar).filter(|s| !s.is_empty()).map(str::to_owned);
    let regex = |k: &str, diags: &mut Diagnostics| -> Option<Option<Regex>> {
        match text(k) {
            None => Some(None),
            Some(r) => match Regex::new(&r) {
                Ok(re) => Some(Some(re)),
                Err(e) => {
                    diags.error(&pos, "sops.metadata", format!("sops `{k}` is not a valid regular expression: {e}"));
                    None
                }
            },
        }
    };
    let rule = if let Some(s) = text("encrypted_suffix") {
        Rule::EncryptedSuffix(s)
    } else if let Some(re) = regex("unencrypted_regex", diags)? {
        Rule::UnencryptedRegex(re)
    } else if let Some(re) = regex("encrypted_regex", diags)? {
        Rule::EncryptedRegex(re)
    } else {
        Rule::UnencryptedSuffix(text("unencrypted_suffix").unwrap_or_else(|| "_unencrypted".into()))
    };
    ok.then_some(rule)
}

fn check_values<'a>(
    file: &Arc<str>,
    rule: &Rule,
    path: &mut Vec<&'a str>,
    node: &'a Node,
    diags: &mut Diagnostics,
    ok: &mut bool,
) {
    match node.kind() {
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                path.push(k.as_scalar().unwrap_or_default());
                check_values(file, rule, path, v, diags, ok);
                path.pop();
            }
        }
        NodeKind::Seq(items) => {
            for item in items {
                check_values(file, rule, path, item, diags, ok);
            }
        }
        NodeKind::Scalar { text, .. } => {
            let key = path.join(".");
            let pos = Pos::new(file, node.mark());
            let encrypted = enc_value().is_match(text);
            if text.starts_with("ENC[") && !encrypted {
                diags
                    .error(&pos, "sops.malformed-value", format!("value of `{key}` looks encrypted but is malformed"))
                    .hint("re-encrypt the file with `sops`");
                *ok = false;
            } else if !encrypted && !text.is_empty() && !node.is_null() {
                if rule.encrypts(path) {
                    // Never echo the value: it is a plaintext secret.
                    diags
                        .error(&pos, "sops.plaintext-value", format!("value of `{key}` is not encrypted"))
                        .hint(format!("a plaintext secret must never reach git: encrypt with `sops -e -i {file}` (or `sops edit`), and rotate the secret if it was pushed"));
                    *ok = false;
                } else if !matches!(rule, Rule::UnencryptedSuffix(_)) {
                    // The SOPS MAC covers values, not key names: a plain value moved under
                    // another plain key goes unnoticed. The suffix convention makes it visible.
                    diags.warning(&pos, "sops.plain-value", format!("value of `{key}` is stored in plaintext")).hint(
                        "name plaintext keys with the `_unencrypted` suffix so reviewers see they are not secret",
                    );
                }
            }
        }
    }
}
