//! Values between Rhai and the model.
//!
//! An object map passed to `proc.action_set` / `proc.service_set` is decoded by the very
//! decoder that reads `actions/*.yaml` (`hero_proc_spec::schema::Decoder`), so a script
//! obeys the same rules as a file: unknown fields are errors with a "did you mean",
//! defaults are the same, names, durations, cron, signals and health checks are checked
//! the same way. The decoder works on located YAML nodes, so the map is first written
//! as YAML flow text (JSON-like, every string double-quoted and escaped) and parsed back.
//! Quoting keeps Rhai's types honest: the string `"true"` stays a string, as `'true'`
//! would in a file, while the boolean `true` is a boolean.

use std::fmt::Write as _;
use std::sync::Arc;

use hero_proc_spec::diag::{Diagnostics, Severity};
use hero_proc_spec::schema::{Decoder, NAME_HINT, is_valid_name};
use hero_proc_spec::{Action, Pos, Service};
use rhai::{Array, Dynamic, Map};

/// Deepest nesting accepted in a map passed to `proc` (the YAML reader allows 64; real
/// actions nest three levels).
const MAX_DEPTH: usize = 32;

/// Decoded object plus the decoder's warnings (the runtime logs them).
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub value: T,
    pub warnings: Vec<String>,
}

/// Decode `#{ name: ..., script: ..., ... }` into an [`Action`].
pub(crate) fn action_from_map(map: &Map) -> Result<Decoded<Action>, String> {
    decode(map, "action", |d, node| d.action(node)).map(|mut d| {
        d.value.pos = Pos::default();
        d
    })
}

/// Decode `#{ name: ..., actions: [...], ... }` into a [`Service`].
pub(crate) fn service_from_map(map: &Map) -> Result<Decoded<Service>, String> {
    decode(map, "service", |d, node| d.service(node)).map(|mut d| {
        d.value.pos = Pos::default();
        d
    })
}

fn decode<T>(
    map: &Map,
    what: &str,
    f: impl FnOnce(&mut Decoder<'_>, &hero_proc_spec::yaml::Node) -> Option<T>,
) -> Result<Decoded<T>, String> {
    let mut text = String::new();
    write_map(map, &mut text, 0).map_err(|e| format!("invalid {what}: {e}"))?;
    let docs = hero_proc_spec::yaml::parse(&text).map_err(|e| format!("invalid {what}: {}", e.message))?;
    let node = docs.first().ok_or_else(|| format!("invalid {what}: empty"))?;
    let mut diags = Diagnostics::new();
    let file: Arc<str> = format!("proc.{what}_set").into();
    let value = f(&mut Decoder::new(file, &mut diags), node);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for d in diags.iter() {
        let mut line = d.message.clone();
        if let Some(hint) = &d.hint {
            let _ = write!(line, " ({hint})");
        }
        match d.severity {
            Severity::Error => errors.push(line),
            Severity::Warning => warnings.push(line),
        }
    }
    match value {
        Some(value) if errors.is_empty() => Ok(Decoded { value, warnings }),
        _ if errors.is_empty() => Err(format!("invalid {what}")),
        _ => Err(format!("invalid {what}: {}", errors.join("; "))),
    }
}

fn write_map(map: &Map, out: &mut String, depth: usize) -> Result<(), String> {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(k, out);
        out.push_str(": ");
        write_value(v, out, depth + 1).map_err(|e| format!("field `{k}`: {e}"))?;
    }
    out.push('}');
    Ok(())
}

fn write_array(items: &Array, out: &mut String, depth: usize) -> Result<(), String> {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(v, out, depth + 1).map_err(|e| format!("item {i}: {e}"))?;
    }
    out.push(']');
    Ok(())
}

fn write_value(v: &Dynamic, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    if v.is_unit() {
        out.push_str("null");
    } else if let Ok(b) = v.as_bool() {
        out.push_str(if b { "true" } else { "false" });
    } else if let Ok(n) = v.as_int() {
        let _ = write!(out, "{n}");
    } else if let Ok(x) = v.as_float() {
        if !x.is_finite() {
            return Err(format!("{x} is not a number a config can hold"));
        }
        let _ = write!(out, "{x}");
    } else if let Ok(c) = v.as_char() {
        write_str(c.encode_utf8(&mut [0; 4]), out);
    } else if v.is_string() {
        let s = v.clone().into_immutable_string().map_err(|t| format!("unexpected {t}"))?;
        write_str(&s, out);
    } else if v.is_array() {
        let items = v.read_lock::<Array>().ok_or("a shared array is locked")?;
        write_array(&items, out, depth)?;
    } else if v.is_map() {
        let map = v.read_lock::<Map>().ok_or("a shared map is locked")?;
        write_map(&map, out, depth)?;
    } else {
        return Err(format!("a value of type `{}` cannot be stored in a config", v.type_name()));
    }
    Ok(())
}

/// A YAML double-quoted scalar. Everything outside printable ASCII is escaped, so no
/// character YAML forbids in a document (control characters, DEL, BOM) can slip in.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
}

/// A model object (or any JSON) as a Rhai value: maps, arrays, strings, ints, floats.
pub(crate) fn to_dynamic(v: serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => b.into(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        serde_json::Value::String(s) => s.into(),
        serde_json::Value::Array(items) => items.into_iter().map(to_dynamic).collect::<Array>().into(),
        serde_json::Value::Object(entries) => {
            entries.into_iter().map(|(k, v)| (k.into(), to_dynamic(v))).collect::<Map>().into()
        }
    }
}

/// A model object as a Rhai map, in the canonical field order and spelling, so
/// `proc.action_set(proc.action_get("x"))` is a no-op.
pub(crate) fn object_to_dynamic<T: serde::Serialize>(value: &T) -> Dynamic {
    // The model types serialise to plain JSON objects; this cannot fail.
    to_dynamic(serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
}

/// The fourth argument of `proc.quick_service_set_full`: the service's health check in
/// one string, as the old install scripts passed it (they all pass `""`: no check).
/// Returns the check as the map `health:` takes, or `None` for `""`; the decoder then
/// checks its value like any `health:` entry.
pub(crate) fn quick_health(check: &str) -> Result<Option<Map>, String> {
    let check = check.trim();
    let one = |kind: &str, value: Dynamic| -> Option<Map> { Some([(kind.into(), value)].into_iter().collect()) };
    let (kind, rest) = check.split_once(':').unwrap_or((check, ""));
    Ok(match kind {
        "" if check.is_empty() => None,
        "hero_sockets" if rest.is_empty() => one("hero_sockets", true.into()),
        "tcp" | "unix_socket" | "exec" if !rest.trim().is_empty() => one(kind, rest.trim().into()),
        "http" | "https" if rest.starts_with("//") => one("http", check.into()),
        _ if check.starts_with('/') || check.starts_with("~/") => one("unix_socket", check.into()),
        _ => {
            return Err(format!(
                "the fourth argument is the service's health check: \"\" for none, \"tcp:HOST:PORT\", \"http://HOST:PORT/PATH\", \"unix_socket:PATH\" (or just the socket's path), \"exec:COMMAND\" or \"hero_sockets\"; got `{check}`"
            ));
        }
    })
}

/// `proc.quick_service_set_full(name, cmd, interpreter, check)`: the action and the
/// service the old install scripts registered, as maps for the usual decoders: an
/// action `name` running `cmd` with `interpreter` (`""`: exec) as a supervised process
/// (`process: true`), with the health check [`quick_health`] reads, and a service of the
/// same name running it. Everything else keeps its default.
pub(crate) fn quick_service(
    name: &str,
    cmd: &str,
    interpreter: &str,
    check: &str,
) -> Result<(Decoded<Action>, Decoded<Service>), String> {
    let (context, name) = parse_ref(name, "service")?;
    let mut action = Map::new();
    action.insert("name".into(), name.clone().into());
    action.insert("context".into(), context.clone().into());
    action.insert("script".into(), cmd.into());
    if !interpreter.is_empty() {
        action.insert("interpreter".into(), interpreter.into());
    }
    action.insert("process".into(), true.into());
    if let Some(h) = quick_health(check)? {
        action.insert("health".into(), vec![Dynamic::from_map(h)].into());
    }
    let mut service = Map::new();
    service.insert("name".into(), name.clone().into());
    service.insert("context".into(), context.into());
    service.insert("actions".into(), vec![Dynamic::from(name)].into());
    Ok((action_from_map(&action)?, service_from_map(&service)?))
}

/// Split `name` or `context/name` (context `core` when omitted), checking both parts.
pub(crate) fn parse_ref(s: &str, what: &str) -> Result<(String, String), String> {
    let r = hero_proc_spec::Ref::parse(s)
        .map_err(|_| format!("invalid {what} reference `{s}`: write `name` or `context/name`; {NAME_HINT}"))?;
    Ok((r.context, r.name))
}

/// Check a bare context name.
pub(crate) fn check_context(s: &str) -> Result<(), String> {
    if is_valid_name(s) { Ok(()) } else { Err(format!("invalid context `{s}`: {NAME_HINT}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs.iter().map(|(k, v)| ((*k).into(), v.clone())).collect()
    }

    #[test]
    fn defaults_match_the_yaml_decoder() {
        let m = map(&[("name", "web".into()), ("script", "/bin/web --port 1".into())]);
        let a = action_from_map(&m).unwrap().value;
        assert_eq!(a.context, "core");
        assert!(!a.process);
        assert_eq!(a.restart, hero_proc_spec::Restart::default());
        assert_eq!(a.stop, hero_proc_spec::Stop::default());
        assert_eq!(a.interpreter, hero_proc_spec::Interpreter::Exec);
    }

    #[test]
    fn unknown_fields_are_errors_with_a_hint() {
        let m = map(&[("name", "web".into()), ("scirpt", "x".into())]);
        let err = action_from_map(&m).err().unwrap();
        assert!(err.contains("unknown field `scirpt`"), "{err}");
        assert!(err.contains("did you mean `script`?"), "{err}");
    }

    #[test]
    fn strings_are_never_booleans_and_odd_characters_survive() {
        let m = map(&[("name", "web".into()), ("script", "x".into()), ("process", "true".into())]);
        let err = action_from_map(&m).err().unwrap();
        assert!(err.contains("expected true or false"), "{err}");

        let odd = "quote\" back\\ tab\t nl\n del\u{7f} bom\u{feff} emoji😀 nul\0";
        let m = map(&[
            ("name", "web".into()),
            ("interpreter", "bash".into()),
            ("script", odd.into()),
            ("process", true.into()),
        ]);
        let a = action_from_map(&m).unwrap().value;
        assert_eq!(a.script, odd);
        assert!(a.process);
    }

    #[test]
    fn quick_service_health_forms() {
        let kind = |s: &str| quick_health(s).unwrap().map(|m| m.keys().next().unwrap().to_string());
        assert_eq!(kind(""), None);
        assert_eq!(kind("  "), None);
        assert_eq!(kind("tcp:127.0.0.1:80").as_deref(), Some("tcp"));
        assert_eq!(kind("http://127.0.0.1:80/health").as_deref(), Some("http"));
        assert_eq!(kind("unix_socket:~/hero/var/sockets/x.sock").as_deref(), Some("unix_socket"));
        assert_eq!(kind("~/hero/var/sockets/x.sock").as_deref(), Some("unix_socket"));
        assert_eq!(kind("/run/x.sock").as_deref(), Some("unix_socket"));
        assert_eq!(kind("exec:test -e /tmp/ready").as_deref(), Some("exec"));
        assert_eq!(kind("hero_sockets").as_deref(), Some("hero_sockets"));
        for bad in ["tcp:", "ftp://x", "x.sock", "hero_sockets:1", "ready"] {
            let e = quick_health(bad).unwrap_err();
            assert!(e.contains("the fourth argument is the service's health check"), "{bad}: {e}");
        }
        let (a, s) = quick_service("geo/web", "/bin/web --port 1", "", "tcp:127.0.0.1:1").unwrap();
        assert_eq!((a.value.context.as_str(), a.value.name.as_str()), ("geo", "web"));
        assert!(a.value.process);
        assert_eq!(a.value.interpreter, hero_proc_spec::Interpreter::Exec);
        assert_eq!(a.value.health.len(), 1);
        assert_eq!(s.value.actions, vec![hero_proc_spec::Named::new("web")]);
        assert!(quick_service("Bad Name", "x", "exec", "").unwrap_err().contains("invalid service reference"));
        assert!(quick_service("web", "x", "perl", "").unwrap_err().contains("interpreter"));
        assert!(quick_service("web", "x", "exec", "tcp:nope").unwrap_err().starts_with("invalid action"));
    }

    #[test]
    fn refs() {
        assert_eq!(parse_ref("x", "service").unwrap(), ("core".into(), "x".into()));
        assert_eq!(parse_ref("geo/x", "service").unwrap(), ("geo".into(), "x".into()));
        assert!(parse_ref("../x", "service").is_err());
        assert!(parse_ref("a/b/c", "service").is_err());
        assert!(parse_ref("", "service").is_err());
    }
}
