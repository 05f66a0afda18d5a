//! The decrypted result: documents of ordered top-level keys, values as a
//! small tree whose scalars are all [`SecretValue`]s. Deriving `Debug` here is
//! safe because scalars print as `(sensitive)`; key names are not secret in
//! SOPS.

use crate::secret::SecretValue;

/// A value in a decrypted document.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string, number, boolean or timestamp, as text.
    Scalar(SecretValue),
    /// YAML `null` (sops leaves nulls untouched).
    Null,
    /// A list, in file order.
    List(Vec<Value>),
    /// A mapping, in file order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The scalar, if this is one.
    pub fn as_secret(&self) -> Option<&SecretValue> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One YAML document of a SOPS file, without its `sops:` block.
#[derive(Clone, Debug, Default)]
pub struct Document {
    pub(crate) entries: Vec<(String, Value)>,
}

impl Document {
    /// Top-level keys and values, in file order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Top-level key names, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The value of a top-level key, whatever its shape.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A top-level scalar (the usual secret lookup). `None` if the key is
    /// missing or holds a list, mapping or null.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.value(name).and_then(Value::as_secret)
    }
}

/// A decrypted, MAC-verified SOPS file.
#[derive(Clone, Debug)]
pub struct DecryptedFile {
    pub(crate) documents: Vec<Document>,
    pub(crate) recipients: Vec<String>,
}

impl DecryptedFile {
    /// The documents, in file order (most files have one).
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// The age recipients (`age1...`) the file is encrypted to.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// A top-level scalar from the first document that has `name`.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.documents.iter().find_map(|d| d.value(name)).and_then(Value::as_secret)
    }

    /// Top-level key names of all documents, in order, without duplicates.
    pub fn keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for k in self.documents.iter().flat_map(Document::keys) {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }
}
