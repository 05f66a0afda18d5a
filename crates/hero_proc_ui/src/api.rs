//! What the UI forwards to the daemon: a fixed list of methods, each with the only
//! parameters it may carry and their types. A repository URL, path, branch or host is no
//! parameter of any of them: the UI works on the daemon's own repository only.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A commit-ish of the daemon's repository: a hex id or a ref name, `~N`/`^N` after it.
    Rev,
    /// A service: `context/name` or `name`.
    ServiceRef,
    OneOf(&'static [&'static str]),
}

#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Sent when the client gives none (keeps reads bounded).
    pub default: Option<i64>,
}

pub struct Method {
    pub name: &'static str,
    pub write: bool,
    pub params: &'static [Param],
}

const fn opt(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, required: false, default: None }
}

const LIMIT: Param = Param { name: "limit", kind: Kind::Int { min: 1, max: 500 }, required: false, default: Some(50) };
const PHASES: &[&str] = &["pending", "running", "succeeded", "failed", "cancelled"];

pub const METHODS: &[Method] = &[
    Method { name: "reconcile.status", write: false, params: &[] },
    Method { name: "reconcile.history", write: false, params: &[LIMIT] },
    Method { name: "reconcile.plan", write: false, params: &[opt("rev", Kind::Rev)] },
    Method { name: "service.list", write: false, params: &[] },
    Method {
        name: "job.list",
        write: false,
        params: &[
            LIMIT,
            opt("phase", Kind::OneOf(PHASES)),
            opt("service", Kind::ServiceRef),
            opt("run_id", Kind::Int { min: 1, max: i64::MAX }),
        ],
    },
    Method {
        name: "job.logs",
        write: false,
        params: &[
            Param { name: "id", kind: Kind::Int { min: 1, max: i64::MAX }, required: true, default: None },
            Param { name: "tail", kind: Kind::Int { min: 1, max: 5000 }, required: false, default: Some(1000) },
        ],
    },
    Method { name: "run.list", write: false, params: &[LIMIT] },
    Method { name: "secret.list", write: false, params: &[] },
    Method { name: "migrate.status", write: false, params: &[] },
    Method { name: "system.info", write: false, params: &[] },
    Method { name: "system.compactor_status", write: false, params: &[] },
    Method { name: "reconcile.suspend", write: true, params: &[] },
    Method { name: "reconcile.resume", write: true, params: &[] },
    Method { name: "reconcile.apply", write: true, params: &[] },
];

pub fn method(name: &str, write: bool) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name && m.write == write)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error(
        "`{name}` is not a parameter the UI forwards to {method} (it takes: {allowed}); the UI works on the daemon's own repository only; for anything else use the `hero_proc` CLI on the host"
    )]
    Unknown { method: &'static str, name: String, allowed: String },
    #[error("`{name}` of {method}: {value:?} is not {expected}")]
    Invalid { method: &'static str, name: &'static str, value: String, expected: String },
    #[error("{method} needs `{name}`")]
    Missing { method: &'static str, name: &'static str },
    #[error("`{name}` is given twice")]
    Duplicate { name: String },
}

/// The daemon's parameters for `m` from a query string, or the first thing wrong with it.
pub fn params(m: &Method, query: &str) -> Result<Value, ParamError> {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let Some(p) = m.params.iter().find(|p| p.name == k) else {
            let allowed = if m.params.is_empty() {
                "nothing".to_owned()
            } else {
                m.params.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            };
            return Err(ParamError::Unknown { method: m.name, name: k.into_owned(), allowed });
        };
        if out.contains_key(p.name) {
            return Err(ParamError::Duplicate { name: k.into_owned() });
        }
        let value = typed(m, p, &v)?;
        out.insert(p.name.to_owned(), value);
    }
    for p in m.params {
        if out.contains_key(p.name) {
            continue;
        }
        if p.required {
            return Err(ParamError::Missing { method: m.name, name: p.name });
        }
        if let Some(d) = p.default {
            out.insert(p.name.to_owned(), Value::from(d));
        }
    }
    Ok(Value::Object(out))
}

fn typed(m: &Method, p: &Param, v: &str) -> Result<Value, ParamError> {
    let bad = |expected: String| ParamError::Invalid { method: m.name, name: p.name, value: v.to_owned(), expected };
    match p.kind {
        Kind::Int { min, max } => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
            _ if max == i64::MAX => Err(bad(format!("an integer >= {min}"))),
            _ => Err(bad(format!("an integer from {min} to {max}"))),
        },
        Kind::Rev if is_rev(v) => Ok(Value::from(v)),
        Kind::Rev => {
            Err(bad("a commit id or ref name of the daemon's repository (e.g. 3f2a9c1, main, v1.2, HEAD~1)".into()))
        }
        Kind::ServiceRef if is_service_ref(v) => Ok(Value::from(v)),
        Kind::ServiceRef => {
            Err(bad(format!("a service as context/name or name ({})", hero_proc_spec::schema::NAME_HINT)))
        }
        Kind::OneOf(set) if set.contains(&v) => Ok(Value::from(v)),
        Kind::OneOf(set) => Err(bad(format!("one of {}", set.join(", ")))),
    }
}

fn is_service_ref(v: &str) -> bool {
    hero_proc_spec::Ref::parse(v).is_ok()
}

/// A ref name in git's safe subset (no `..`, `@{`, `:`, spaces, leading `-`), then any
/// `~N` / `^N` steps. Nothing that git could read as a URL, a path outside refs, or an option.
fn is_rev(v: &str) -> bool {
    let (base, steps) = v.split_at(v.find(['~', '^']).unwrap_or(v.len()));
    let base_ok = (1..=200).contains(&base.len())
        && base.as_bytes()[0].is_ascii_alphanumeric()
        && base.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/'))
        && !base.contains("..")
        && !base.contains("//")
        && !base.ends_with('/')
        && !base.ends_with('.')
        && !base.ends_with(".lock")
        && !base.split('/').any(|part| part.starts_with('.'));
    let steps_ok = steps.len() <= 20
        && steps.split(['~', '^']).skip(1).all(|n| n.len() <= 4 && n.bytes().all(|c| c.is_ascii_digit()));
    base_ok && steps_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(name: &str) -> &'static Method {
        METHODS.iter().find(|x| x.name == name).unwrap()
    }

    #[test]
    fn plan_takes_only_a_rev() {
        assert_eq!(params(m("reconcile.plan"), ""), Ok(json!({})));
        assert_eq!(params(m("reconcile.plan"), "rev=HEAD~1"), Ok(json!({"rev": "HEAD~1"})));
        for q in ["repo=/root/x", "branch=main", "host=h", "rev=main&repo=x"] {
            assert!(matches!(params(m("reconcile.plan"), q), Err(ParamError::Unknown { .. })), "{q}");
        }
        for rev in
            ["", "-x", "a..b", "file:///etc", "ssh://h/x", "a b", "main@{1}", ".hidden", "x.lock", "a//b", "HEAD~x"]
        {
            let q = format!("rev={}", form_urlencoded::byte_serialize(rev.as_bytes()).collect::<String>());
            assert!(matches!(params(m("reconcile.plan"), &q), Err(ParamError::Invalid { .. })), "{rev}");
        }
        for rev in ["3f2a9c1", "main", "v1.2.0", "refs/tags/v1", "HEAD^", "HEAD~12^2", "feature/x-y_z"] {
            assert!(is_rev(rev), "{rev}");
        }
    }

    #[test]
    fn reads_are_bounded_and_typed() {
        assert_eq!(params(m("job.logs"), "id=3"), Ok(json!({"id": 3, "tail": 1000})));
        assert!(matches!(params(m("job.logs"), "id=3&tail=100000"), Err(ParamError::Invalid { name: "tail", .. })));
        assert!(matches!(params(m("job.logs"), "tail=5"), Err(ParamError::Missing { name: "id", .. })));
        assert_eq!(
            params(m("job.list"), "limit=20&service=core%2Fweb"),
            Ok(json!({"limit": 20, "service": "core/web"}))
        );
        assert!(matches!(params(m("job.list"), "service=..%2Fx"), Err(ParamError::Invalid { .. })));
        assert!(matches!(params(m("job.list"), "phase=dead"), Err(ParamError::Invalid { .. })));
        assert!(matches!(params(m("job.list"), "limit=1&limit=2"), Err(ParamError::Duplicate { .. })));
        assert!(matches!(params(m("reconcile.apply"), "rev=main"), Err(ParamError::Unknown { .. })));
    }

    #[test]
    fn the_api_never_exposes_secret_or_object_writes() {
        assert!(!METHODS.iter().any(|m| m.name.starts_with("secret.") && m.name != "secret.list"));
        assert!(!METHODS.iter().any(|m| m.write && (m.name.starts_with("service.") || m.name.starts_with("action."))));
    }

    #[test]
    fn no_method_takes_a_location() {
        for m in METHODS {
            for p in m.params {
                assert!(!["repo", "branch", "host", "path", "url"].contains(&p.name), "{}.{}", m.name, p.name);
            }
        }
    }
}
