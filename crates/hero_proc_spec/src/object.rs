//! Checking one object that did not come from a file (an RPC `action.set` or
//! `service.set`) with the very decoder `load_tree` uses, so the RPC and `validate`
//! accept and refuse the same things with the same codes and messages.
//!
//! The object arrives as JSON text; JSON is YAML, so it is parsed into the located tree
//! and decoded by [`Decoder`]. Each diagnostic's position is then named by its field path
//! (`schedule`, `env.DB.secret`, `health[0].tcp`), which means something to an RPC client
//! where a line of a document it never saw does not.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diag::{Diagnostic, Diagnostics, Pos, Severity};
use crate::model::{Action, Service};
use crate::schema::Decoder;
use crate::source::MAX_FILE_BYTES;
use crate::yaml::{self, Mark, Node};

/// One problem of an object, with the field it concerns (`""` for the object itself).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    pub path: String,
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for FieldProblem {
    /// `schedule: invalid cron expression ... [cron.invalid]`, then the hint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{} [{}]", self.message, self.code)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// What checking one object found: the decoded object when it has no errors, and every
/// problem (warnings included).
#[derive(Debug)]
pub struct ObjectCheck<T> {
    pub value: Option<T>,
    pub problems: Vec<FieldProblem>,
}

impl<T> ObjectCheck<T> {
    pub fn errors(&self) -> impl Iterator<Item = &FieldProblem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }
}

/// Check an action given as JSON (or YAML) text of its mapping.
pub fn check_action(text: &str) -> ObjectCheck<Action> {
    check(text, "action", |dec, node| dec.action(node))
}

/// Check a service given as JSON (or YAML) text of its mapping.
pub fn check_service(text: &str) -> ObjectCheck<Service> {
    check(text, "service", |dec, node| dec.service(node))
}

fn check<T>(text: &str, what: &str, decode: impl FnOnce(&mut Decoder<'_>, &Node) -> Option<T>) -> ObjectCheck<T> {
    let file: Arc<str> = what.into();
    let mut diags = Diagnostics::new();
    // The same bound as a config file: an object cannot be larger than the file that
    // would hold it.
    if text.len() as u64 > MAX_FILE_BYTES {
        let problem = FieldProblem {
            path: String::new(),
            code: "io.read",
            severity: Severity::Error,
            message: format!(
                "the {what} is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit for config files",
                text.len()
            ),
            hint: Some("config files are small; split the file or remove what does not belong in it".into()),
        };
        return ObjectCheck { value: None, problems: vec![problem] };
    }
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let d = diags.error(&Pos::new(&file, e.mark), "yaml.syntax", e.message);
            if let Some(h) = e.hint {
                d.hint(h);
            }
            return finish(None, diags, &HashMap::new());
        }
    };
    let Some(node) = docs.first() else {
        diags.error(&Pos::file(&file), "schema.type", format!("expected a mapping ({what}), found nothing"));
        return finish(None, diags, &HashMap::new());
    };
    let mut paths = HashMap::new();
    field_paths(node, String::new(), &mut paths);
    let value = decode(&mut Decoder::new(file, &mut diags), node);
    finish(value, diags, &paths)
}

fn finish<T>(value: Option<T>, diags: Diagnostics, paths: &HashMap<Mark, String>) -> ObjectCheck<T> {
    let problems: Vec<FieldProblem> = diags
        .finish()
        .into_iter()
        .map(|d: Diagnostic| FieldProblem {
            path: paths.get(&Mark { line: d.line, col: d.col }).cloned().unwrap_or_default(),
            code: d.code,
            severity: d.severity,
            message: d.message,
            hint: d.hint,
        })
        .collect();
    let failed = problems.iter().any(|p| p.severity == Severity::Error);
    ObjectCheck { value: if failed { None } else { value }, problems }
}

/// Map each node's (and each key's) position to its field path.
fn field_paths(node: &Node, path: String, out: &mut HashMap<Mark, String>) {
    out.entry(node.mark()).or_insert_with(|| path.clone());
    if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default();
            let sub = if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
            out.insert(k.mark(), sub.clone());
            field_paths(v, sub, out);
        }
    } else if let Some(items) = node.as_seq() {
        for (i, item) in items.iter().enumerate() {
            field_paths(item, format!("{path}[{i}]"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action_json(extra: &str) -> String {
        format!(
            r#"{{"name":"web","context":"core","interpreter":"exec","script":"/bin/true","process":false,
"restart":{{"policy":"on-failure","delay":"1s","max_delay":"1m","max_retries":0}},
"stop":{{"signal":"SIGTERM","timeout":"10s"}}{extra}}}"#
        )
    }

    #[test]
    fn canonical_json_round_trips() {
        let c = check_action(&action_json(r#","env":{"A":"1","B":{"secret":"db"}},"schedule":"*/5 * * * *""#));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let a = c.value.unwrap();
        let again = serde_json::to_string_pretty(&a).unwrap();
        assert_eq!(check_action(&again).value.unwrap(), a);
    }

    #[test]
    fn problems_name_their_field() {
        let c = check_action(&action_json(r#","env":{"A":{"secret":"../core/x"}},"schedule":"*/0 * * * *""#));
        let got: Vec<(String, &str)> = c.errors().map(|p| (p.path.clone(), p.code)).collect();
        assert!(got.contains(&("schedule".into(), "cron.invalid")), "{got:?}");
        assert!(got.contains(&("env.A.secret".into(), "name.invalid")), "{got:?}");
        assert!(c.value.is_none());
    }
}
