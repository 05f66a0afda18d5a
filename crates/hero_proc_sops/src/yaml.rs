//! A small YAML node tree built from `saphyr-parser` events.
//!
//! Why not a serde YAML value: to reproduce sops's MAC exactly we need each
//! scalar's raw text, quoting style and tag (sops resolves `1_000`, `0777`,
//! `2001-12-14` and `"5"` differently), and the order of keys. The builder is
//! iterative and bounded (depth, node count including alias expansion), so
//! hostile input gives an error instead of a stack overflow or a memory blow-up.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use crate::error::SopsError;

/// Deepest nesting accepted. sops files are shallow; this only stops abuse.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes accepted in one file, counting alias expansions.
pub(crate) const MAX_NODES: usize = 2_000_000;

/// How a scalar's tag reads, reduced to what resolution needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScalarTag {
    /// `!!name` from the YAML core schema (`str`, `int`, ...).
    Core(String),
    /// Any other tag (including the non-specific `!`).
    Other,
}

#[derive(Clone, Debug)]
pub(crate) struct Scalar {
    pub text: String,
    pub style: ScalarStyle,
    pub tag: Option<ScalarTag>,
}

impl Scalar {
    /// True for scalars that are written with quotes or as a block (`|`, `>`).
    pub fn is_quoted(&self) -> bool {
        !matches!(self.style, ScalarStyle::Plain)
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Number of nodes in this subtree (for the alias-expansion budget).
    fn count(&self) -> usize {
        match self {
            Node::Scalar(_) => 1,
            Node::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Node::Map(entries) => 1 + entries.iter().map(|(k, v)| k.count() + v.count()).sum::<usize>(),
        }
    }

    /// Depth of this subtree (1 for a scalar).
    fn depth(&self) -> usize {
        match self {
            Node::Scalar(_) => 1,
            Node::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Node::Map(entries) => 1 + entries.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0),
        }
    }

    /// The scalar text of this node if it is a scalar.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

enum Frame {
    Seq { anchor: usize, items: Vec<Node> },
    Map { anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node> },
}

fn convert_tag(tag: Option<std::borrow::Cow<'_, Tag>>) -> Option<ScalarTag> {
    let tag = tag?;
    if tag.is_yaml_core_schema() { Some(ScalarTag::Core(tag.suffix.clone())) } else { Some(ScalarTag::Other) }
}

/// Parses every document of `text`. An empty document (`---` alone) becomes
/// `None`.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Option<Node>>, SopsError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize, usize)> = HashMap::new();
    let mut budget = MAX_NODES;
    let mut root: Option<Node> = None;
    let mut in_doc = false;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SopsError::Yaml {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let mut completed: Option<(Node, usize)> = None;
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                in_doc = true;
                root = None;
                anchors.clear();
            }
            Event::DocumentEnd => {
                if in_doc {
                    docs.push(root.take());
                }
                in_doc = false;
            }
            Event::Alias(id) => {
                let (node, count, depth) = anchors.get(&id).ok_or_else(|| SopsError::Yaml {
                    line: span.start.line(),
                    col: span.start.col() + 1,
                    message: "alias refers to an unknown anchor".to_string(),
                })?;
                if stack.len() + depth > MAX_DEPTH {
                    return Err(SopsError::YamlTooComplex { reason: "nesting deeper than 64 levels" });
                }
                budget = budget
                    .checked_sub(*count)
                    .ok_or(SopsError::YamlTooComplex { reason: "more than 2,000,000 nodes after alias expansion" })?;
                completed = Some((node.clone(), 0));
            }
            Event::Scalar(value, style, anchor, tag) => {
                budget = budget
                    .checked_sub(1)
                    .ok_or(SopsError::YamlTooComplex { reason: "more than 2,000,000 nodes after alias expansion" })?;
                let node = Node::Scalar(Scalar { text: value.into_owned(), style, tag: convert_tag(tag) });
                completed = Some((node, anchor));
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SopsError::YamlTooComplex { reason: "nesting deeper than 64 levels" });
                }
                budget = budget
                    .checked_sub(1)
                    .ok_or(SopsError::YamlTooComplex { reason: "more than 2,000,000 nodes after alias expansion" })?;
                stack.push(Frame::Seq { anchor, items: Vec::new() });
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SopsError::YamlTooComplex { reason: "nesting deeper than 64 levels" });
                }
                budget = budget
                    .checked_sub(1)
                    .ok_or(SopsError::YamlTooComplex { reason: "more than 2,000,000 nodes after alias expansion" })?;
                stack.push(Frame::Map { anchor, entries: Vec::new(), key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { anchor, items }) => completed = Some((Node::Seq(items), anchor)),
                Some(Frame::Map { anchor, entries, key: None }) => completed = Some((Node::Map(entries), anchor)),
                Some(Frame::Map { key: Some(_), .. }) | None => {
                    return Err(SopsError::Yaml {
                        line: span.start.line(),
                        col: span.start.col() + 1,
                        message: "unbalanced collection".to_string(),
                    });
                }
            },
        }
        if let Some((node, anchor)) = completed {
            if anchor != 0 {
                let count = node.count();
                let depth = node.depth();
                anchors.insert(anchor, (node.clone(), count, depth));
            }
            match stack.last_mut() {
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                },
                None => root = Some(node),
            }
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_documents_and_aliases() {
        let docs = parse_documents("a: &x [1, 2]\nb: *x\n---\n---\nc: d\n").unwrap();
        assert_eq!(docs.len(), 3);
        let Some(Node::Map(entries)) = &docs[0] else { panic!("not a map") };
        assert_eq!(entries.len(), 2);
        assert!(matches!(&entries[1].1, Node::Seq(items) if items.len() == 2));
        assert!(docs[1].as_ref().is_none_or(|n| n.as_scalar().is_some_and(|s| s.text.is_empty())));
    }

    #[test]
    fn core_tags_are_recognised() {
        let docs = parse_documents("a: !!str 12\nb: !custom x\n").unwrap();
        let Some(Node::Map(entries)) = &docs[0] else { panic!("not a map") };
        assert_eq!(entries[0].1.as_scalar().unwrap().tag, Some(ScalarTag::Core("str".into())));
        assert_eq!(entries[1].1.as_scalar().unwrap().tag, Some(ScalarTag::Other));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(10_000);
        assert!(matches!(parse_documents(&deep), Err(SopsError::YamlTooComplex { .. } | SopsError::Yaml { .. })));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(matches!(parse_documents(&y), Err(SopsError::YamlTooComplex { .. })));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in ["a: [", "a: b: c", "- [}", "&a *a", "a: *nope", "\t- x:\n  y"] {
            match parse_documents(input) {
                Err(SopsError::Yaml { line, col, message }) => {
                    assert!(line >= 1 && col >= 1 && !message.is_empty(), "{input:?}: {line}:{col} {message:?}")
                }
                other => panic!("{input:?} must be a YAML error with a position, got {other:?}"),
            }
        }
    }
}
