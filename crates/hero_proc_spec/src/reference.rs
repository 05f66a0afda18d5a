//! `Ref`: the one identity of an action, service or secret (`context/name`), with the
//! one way to parse it and the one rule for resolving a name written in a file or a
//! command. Store, engine, reconciler, RPC and CLI all use this type.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::DEFAULT_CONTEXT;
use crate::schema::{NAME_HINT, is_valid_name};

fn default_context() -> String {
    DEFAULT_CONTEXT.to_owned()
}

/// `(context, name)`. On the wire `{ "name": "web" }` means `core/web`; decoding checks
/// both names, so an RPC parameter is held to the rules a file is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireRef")]
pub struct Ref {
    pub context: String,
    pub name: String,
}

#[derive(Deserialize)]
struct WireRef {
    #[serde(default = "default_context")]
    context: String,
    name: String,
}

impl TryFrom<WireRef> for Ref {
    type Error = RefError;
    fn try_from(w: WireRef) -> Result<Ref, RefError> {
        if is_valid_name(&w.context) && is_valid_name(&w.name) {
            Ok(Ref::new(w.context, w.name))
        } else {
            Err(RefError { written: format!("{}/{}", w.context, w.name) })
        }
    }
}

/// A reference that is not `name` or `context/name` with valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference `{written}`: write `name` or `context/name`; {NAME_HINT}")]
pub struct RefError {
    pub written: String,
}

impl Ref {
    pub fn new(context: impl Into<String>, name: impl Into<String>) -> Ref {
        Ref { context: context.into(), name: name.into() }
    }

    /// Split a written reference into its explicit context, if any, and its name:
    /// `core/hero_db` -> (Some("core"), "hero_db"); `web` -> (None, "web").
    pub fn split(written: &str) -> (Option<&str>, &str) {
        match written.split_once('/') {
            Some((context, name)) => (Some(context), name),
            None => (None, written),
        }
    }

    /// Parse `name` (in `core`) or `context/name`, checking both parts.
    pub fn parse(written: &str) -> Result<Ref, RefError> {
        Ref::parse_in(written, DEFAULT_CONTEXT)
    }

    /// Parse `name` (in `context`) or `other/name`, checking both parts.
    pub fn parse_in(written: &str, context: &str) -> Result<Ref, RefError> {
        let (explicit, name) = Ref::split(written);
        let context = explicit.unwrap_or(context);
        if is_valid_name(context) && is_valid_name(name) {
            Ok(Ref::new(context, name))
        } else {
            Err(RefError { written: written.to_owned() })
        }
    }

    /// The resolution rule for a name written by an object in `context`: `ctx/name` is
    /// explicit; a bare name is the object's own context when that exists, else `core`
    /// (shared infrastructure) when that exists, else its own context (so the error
    /// names the place the author most likely meant).
    pub fn resolve(written: &str, context: &str, exists: impl Fn(&Ref) -> bool) -> Ref {
        let (explicit, name) = Ref::split(written);
        Ref::resolve_found(written, context, |c, n| {
            let r = Ref::new(c, n);
            exists(&r).then_some(r)
        })
        .unwrap_or_else(|| Ref::new(explicit.unwrap_or(context), name))
    }

    /// The same rule as [`Ref::resolve`], without allocating: `find(context, name)` looks
    /// an object up, and the first one the rule finds is returned (`None`: none exists).
    /// Validation resolves every reference of every load through this.
    pub fn resolve_found<T>(written: &str, context: &str, find: impl Fn(&str, &str) -> Option<T>) -> Option<T> {
        match Ref::split(written) {
            (Some(c), name) => find(c, name),
            (None, name) => find(context, name).or_else(|| find(DEFAULT_CONTEXT, name)),
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.context, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_to_core_and_checks_both_parts() {
        assert_eq!(Ref::parse("web").unwrap(), Ref::new("core", "web"));
        assert_eq!(Ref::parse("shop/web").unwrap(), Ref::new("shop", "web"));
        assert_eq!(Ref::parse_in("web", "shop").unwrap(), Ref::new("shop", "web"));
        assert_eq!(Ref::parse_in("core/db", "shop").unwrap(), Ref::new("core", "db"));
        for bad in ["", "/web", "shop/", "a/b/c", "Web", "../x", "-x"] {
            let e = Ref::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn resolve_prefers_own_context_then_core_then_own() {
        let have = [Ref::new("shop", "web"), Ref::new("core", "db")];
        let exists = |r: &Ref| have.contains(r);
        assert_eq!(Ref::resolve("web", "shop", exists), Ref::new("shop", "web"));
        assert_eq!(Ref::resolve("db", "shop", exists), Ref::new("core", "db"));
        assert_eq!(Ref::resolve("nope", "shop", exists), Ref::new("shop", "nope"));
        assert_eq!(Ref::resolve("core/web", "shop", exists), Ref::new("core", "web"));
    }

    #[test]
    fn wire_form_defaults_context() {
        let r: Ref = serde_json::from_str(r#"{"name":"web"}"#).unwrap();
        assert_eq!(r, Ref::new("core", "web"));
        assert_eq!(r.to_string(), "core/web");
        let e = serde_json::from_str::<Ref>(r#"{"context":"a b","name":"web"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid reference `a b/web`"), "{e}");
    }
}
