//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! Every check reports into a [`Diagnostics`] list instead of returning early, so one
//! `validate` pass shows every problem. The text form is the compiler convention editors
//! and CI annotators understand: `path:line:col: error: message`, then `  hint: ...`.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::yaml::Mark;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the config tree: a tree-relative path (always `/`-separated) and a mark.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn new(file: &Arc<str>, mark: Mark) -> Pos {
        Pos { file: file.clone(), line: mark.line, col: mark.col }
    }
    /// The start of a file, for problems that concern the file as a whole.
    pub fn file(file: &Arc<str>) -> Pos {
        Pos { file: file.clone(), line: 1, col: 1 }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable identifier for scripts and docs, e.g. `schema.unknown-field`.
    pub code: &'static str,
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn pos(&self) -> Pos {
        Pos { file: self.file.clone(), line: self.line, col: self.col }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}: {}", self.file, self.line, self.col, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// An ordered collection of diagnostics.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, pos: &Pos, code: &'static str, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, pos, code, message.into())
    }

    pub fn warning(&mut self, pos: &Pos, code: &'static str, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, pos, code, message.into())
    }

    fn push(&mut self, severity: Severity, pos: &Pos, code: &'static str, message: String) -> &mut Diagnostic {
        self.items.push(Diagnostic {
            severity,
            code,
            file: pos.file.clone(),
            line: pos.line,
            col: pos.col,
            message,
            hint: None,
        });
        self.items.last_mut().expect("just pushed")
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn errors(&self) -> usize {
        self.items.iter().filter(|d| d.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.items.iter().filter(|d| d.severity == Severity::Warning).count()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sort by file and position and drop exact repeats (the same base object is checked
    /// once per host overlay, and would otherwise be reported once per host).
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (&a.file, a.line, a.col, a.severity, &a.message).cmp(&(&b.file, b.line, b.col, b.severity, &b.message))
        });
        self.items.dedup();
        self.items
    }
}

impl Diagnostic {
    /// Attach a hint: what the operator should do.
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

/// "did you mean" for a misspelt word among the known ones.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_compiler_style_with_hint() {
        let mut d = Diagnostics::new();
        let file: Arc<str> = "actions/web.yaml".into();
        d.error(&Pos { file, line: 3, col: 5 }, "schema.unknown-field", "unknown field `scirpt`")
            .hint("did you mean `script`?");
        let out = d.finish();
        assert_eq!(
            out[0].to_string(),
            "actions/web.yaml:3:5: error: unknown field `scirpt`\n  hint: did you mean `script`?"
        );
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("scirpt", ["script", "schedule", "cwd"]), Some("script"));
        assert_eq!(did_you_mean("zzz", ["script", "schedule"]), None);
    }
}
