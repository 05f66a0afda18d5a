//! A located YAML tree.
//!
//! serde-based YAML loaders stop at the first error and forget where values came from;
//! `validate` must report every problem with `file:line:col`. So we build our own small
//! tree from saphyr-parser's events, keeping the position of every node, and decode the
//! schema by hand (see `schema.rs`).
//!
//! Hostile input is bounded here: nesting deeper than [`MAX_DEPTH`] and alias expansion
//! past [`MAX_NODES`] nodes are refused (aliases share their target through `Rc`, so a
//! "billion laughs" document costs memory proportional to its text, and the node budget
//! caps the work any later walk can do). Duplicate keys are errors, as in serde_yaml.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deepest nesting accepted. Real config files nest a handful of levels.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a file may expand to, counting every alias use in full.
pub const MAX_NODES: usize = 2_000_000;

/// A position in a file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mark {
    pub line: u32,
    pub col: u32,
}

/// One YAML node and where it starts. Cloning is cheap (shared).
#[derive(Clone, Debug)]
pub struct Node(Rc<NodeData>);

#[derive(Debug)]
pub struct NodeData {
    pub mark: Mark,
    pub kind: NodeKind,
    /// Nodes in this subtree, alias uses counted in full.
    weight: usize,
}

#[derive(Debug)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order. Keys are scalars (complex keys are refused).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax or structure error at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
    pub hint: Option<String>,
}

impl Node {
    pub fn mark(&self) -> Mark {
        self.0.mark
    }
    pub fn kind(&self) -> &NodeKind {
        &self.0.kind
    }
    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.0.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
    /// True for `~`, `null`, `Null`, `NULL` and the empty plain scalar (YAML 1.2 core schema).
    pub fn is_null(&self) -> bool {
        matches!(&self.0.kind, NodeKind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }
    /// A boolean in the YAML 1.2 core schema; quoted text is never a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.0.kind {
            NodeKind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
    /// An unsigned integer written plainly.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.0.kind {
            NodeKind::Scalar { text, plain: true } => text.replace('_', "").parse().ok(),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.0.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.0.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }
    /// Look a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.as_scalar() == Some(key)).map(|(_, v)| v)
    }
    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.0.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => "scalar",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "mapping",
        }
    }
    fn new(mark: Mark, kind: NodeKind) -> Node {
        let weight = 1 + match &kind {
            NodeKind::Scalar { .. } => 0,
            NodeKind::Seq(items) => items.iter().map(|n| n.0.weight).sum(),
            NodeKind::Map(entries) => entries.iter().map(|(k, v)| k.0.weight + v.0.weight).sum(),
        };
        Node(Rc::new(NodeData { mark, kind, weight }))
    }
}

fn mark_of(m: saphyr_parser::Marker) -> Mark {
    Mark { line: u32::try_from(m.line()).unwrap_or(u32::MAX), col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX) }
}

/// A collection being built: its start, anchor, items and (for maps) the keys seen.
struct Frame {
    mark: Mark,
    anchor: usize,
    is_map: bool,
    items: Vec<Node>,
    seen: HashSet<String>,
}

/// Parse every document in `text`. An empty stream gives no documents.
pub fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut budget: usize = 0;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            mark: mark_of(*e.marker()),
            message: format!("YAML syntax error: {}", e.info()),
            hint: None,
        })?;
        let mark = mark_of(span.start);
        let node = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError {
                        mark,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        hint: Some("config files never need this much nesting; flatten the structure".into()),
                    });
                }
                let is_map = matches!(event, Event::MappingStart(..));
                stack.push(Frame { mark, anchor, is_map, items: Vec::new(), seen: HashSet::new() });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = stack.pop().expect("parser balances collection events");
                let node = if frame.is_map {
                    Node::new(frame.mark, NodeKind::Map(merge_keys(pair_up(frame.items))?))
                } else {
                    Node::new(frame.mark, NodeKind::Seq(frame.items))
                };
                if frame.anchor != 0 {
                    anchors.insert(frame.anchor, node.clone());
                }
                node
            }
            Event::Scalar(text, style, anchor, tag) => {
                // A tagged scalar (`!!str 1`) is taken as text, like a quoted one.
                let plain = style == ScalarStyle::Plain && tag.is_none();
                let node = Node::new(mark, NodeKind::Scalar { text: text.into_owned(), plain });
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Alias(id) => {
                let target = anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    mark,
                    message: "alias refers to an unknown anchor".into(),
                    hint: None,
                })?;
                // Every use counts in full: this is what bounds alias bombs.
                budget = budget.saturating_add(target.0.weight);
                target
            }
            Event::DocumentStart(_) => {
                anchors.clear();
                continue;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        budget = budget.saturating_add(1);
        if budget > MAX_NODES {
            return Err(YamlError {
                mark,
                message: format!("document expands to more than {MAX_NODES} nodes"),
                hint: Some("this looks like an alias bomb; remove the nested anchors and aliases".into()),
            });
        }
        match stack.last_mut() {
            Some(frame) => {
                if frame.is_map && frame.items.len() % 2 == 0 {
                    let Some(key) = node.as_scalar() else {
                        return Err(YamlError {
                            mark: node.mark(),
                            message: format!("a mapping key must be a scalar, found a {}", node.type_name()),
                            hint: None,
                        });
                    };
                    if key != "<<" && !frame.seen.insert(key.to_owned()) {
                        return Err(YamlError {
                            mark: node.mark(),
                            message: format!("duplicate key `{key}`"),
                            hint: Some(
                                "each key may appear once in a mapping; remove or merge the repeated entry".into(),
                            ),
                        });
                    }
                }
                frame.items.push(node);
            }
            None => docs.push(node),
        }
    }
    Ok(docs)
}

fn pair_up(items: Vec<Node>) -> Vec<(Node, Node)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

/// Apply YAML merge keys (`<<: *base` or `<<: [*a, *b]`): merged entries never
/// override keys written in the mapping itself.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if !is_merge_key(&k) {
            own.push((k, v));
            continue;
        }
        let sources: Vec<Node> = match v.kind() {
            NodeKind::Map(_) => vec![v.clone()],
            NodeKind::Seq(items) => items.clone(),
            _ => {
                return Err(YamlError {
                    mark: v.mark(),
                    message: "`<<` must merge a mapping or a list of mappings".into(),
                    hint: None,
                });
            }
        };
        for src in sources {
            let Some(pairs) = src.as_map() else {
                return Err(YamlError {
                    mark: src.mark(),
                    message: "`<<` must merge a mapping or a list of mappings".into(),
                    hint: None,
                });
            };
            for (mk, mv) in pairs {
                let name = mk.as_scalar();
                if !merged.iter().any(|(k, _)| k.as_scalar() == name) {
                    merged.push((mk.clone(), mv.clone()));
                }
            }
        }
    }
    for (mk, mv) in merged {
        if !own.iter().any(|(k, _)| k.as_scalar() == mk.as_scalar()) {
            own.push((mk, mv));
        }
    }
    Ok(own)
}

fn is_merge_key(k: &Node) -> bool {
    matches!(k.kind(), NodeKind::Scalar { text, plain: true } if text == "<<")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse("a: 1\nb:\n  - x\n").unwrap();
        let b = docs[0].get("b").unwrap();
        assert_eq!(b.as_seq().unwrap()[0].mark(), Mark { line: 3, col: 5 });
        assert_eq!(docs[0].get("a").unwrap().mark(), Mark { line: 1, col: 4 });
    }

    #[test]
    fn duplicate_keys_are_refused_with_position() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.mark, Mark { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn quoted_scalars_are_not_booleans() {
        let docs = parse("a: true\nb: 'true'\nc: ~\n").unwrap();
        assert_eq!(docs[0].get("a").unwrap().as_bool(), Some(true));
        assert_eq!(docs[0].get("b").unwrap().as_bool(), None);
        assert!(docs[0].get("c").unwrap().is_null());
    }

    #[test]
    fn merge_keys_do_not_override_own_entries() {
        let docs = parse("base: &b {x: 1, y: 2}\nthis:\n  <<: *b\n  y: 3\n").unwrap();
        let this = docs[0].get("this").unwrap();
        assert_eq!(this.get("x").unwrap().as_scalar(), Some("1"));
        assert_eq!(this.get("y").unwrap().as_scalar(), Some("3"));
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..20 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let t = std::time::Instant::now();
        let err = parse(&s).unwrap_err();
        assert!(err.message.contains("more than"), "{}", err.message);
        assert!(t.elapsed().as_secs() < 2);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let s = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse(&s).unwrap_err();
        assert!(err.message.contains("nesting") || err.message.contains("recursion limit"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("YAML syntax error"));
        assert!(err.mark.line >= 1);
    }

    #[test]
    fn multiple_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(parse("").unwrap().is_empty());
    }
}
