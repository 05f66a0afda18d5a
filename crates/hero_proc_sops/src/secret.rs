//! [`SecretValue`]: the only type that holds decrypted text. It exists so that
//! a secret cannot reach a log line, an error or a JSON answer by accident:
//! `Debug`/`Display` print `(sensitive)`, it is not `Serialize`, and its
//! memory is wiped when dropped.

use std::fmt;

use zeroize::Zeroizing;

/// The SOPS type of a scalar, as recorded in its `ENC[...,type:...]` string
/// (or, for values stored in clear, as resolved by sops's YAML reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `type:str`, and any plaintext string.
    Str,
    /// `type:int` (and the legacy `int64`).
    Int,
    /// `type:float`.
    Float,
    /// `type:bool`.
    Bool,
    /// `type:time` (YAML timestamps, sops 3.10+).
    Time,
    /// `type:bytes`.
    Bytes,
}

impl ValueKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ValueKind::Str => "string",
            ValueKind::Int => "integer",
            ValueKind::Float => "float",
            ValueKind::Bool => "boolean",
            ValueKind::Time => "timestamp",
            ValueKind::Bytes => "byte string",
        }
    }
}

/// A scalar value from a SOPS file, as text.
///
/// The text is what `sops -d --extract '["name"]'` prints for the scalar:
/// strings as-is, integers in decimal, booleans as `true`/`false`, floats in
/// Go's shortest `%g` form (`0.1`, `3`, `1e+21`, `1.5e-07`) and timestamps in
/// RFC 3339 (`2001-12-14T21:59:43.1-05:00`).
///
/// It prints as `(sensitive)` and is wiped from memory on drop. Read it with
/// [`SecretValue::expose`], only where the value is actually consumed.
#[derive(Clone)]
pub struct SecretValue {
    text: Zeroizing<String>,
    kind: ValueKind,
    encrypted: bool,
}

impl SecretValue {
    pub(crate) fn new(text: Zeroizing<String>, kind: ValueKind, encrypted: bool) -> Self {
        SecretValue { text, kind, encrypted }
    }

    /// The plaintext. Call it only where the value is used (e.g. when setting
    /// a child's environment), never to log or format it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The SOPS type of the value.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// `false` when the value was stored in clear in the file (for example a
    /// key ending in `_unencrypted`, or an empty string, which sops never
    /// encrypts). Callers may want to warn about such "secrets".
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }
}

impl From<String> for SecretValue {
    /// Wraps caller-provided sensitive text (for example `SOPS_AGE_KEY`).
    fn from(text: String) -> Self {
        SecretValue::new(Zeroizing::new(text), ValueKind::Str, false)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = SecretValue::from("hunter2".to_string());
        assert_eq!(format!("{s}"), "(sensitive)");
        assert_eq!(format!("{s:?}"), "(sensitive)");
        assert_eq!(format!("{s:#?}"), "(sensitive)");
        assert_eq!(s.expose(), "hunter2");
        assert!(!s.is_encrypted());
    }
}
