//! The hero_proc config model and its validation.
//!
//! Pure: reads files through a [`source::TreeSource`] (a directory or a git tree) and
//! never writes, spawns or connects. The reconciler loads committed trees through the
//! same [`load_tree`] that `hero_proc validate` uses, so what CI accepts is what runs.

pub mod artifact;
pub mod diag;
pub mod export;
pub mod field_docs;
pub mod load;
pub mod migrations;
pub mod model;
pub mod object;
pub mod reference;
pub mod schema;
pub mod sops_meta;
pub mod source;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
pub use model::*;
pub use reference::{Ref, RefError};
pub use source::{DirSource, GitSource, TreeSource};

/// The outcome of loading and checking a tree.
#[derive(Debug)]
pub struct Checked {
    pub tree: ConfigTree,
    /// Sorted by file and position, without repeats.
    pub diagnostics: Vec<Diagnostic>,
    /// `tree.desired_for(None)`, which the checks built: a host without an overlay of
    /// its own needs no second merge.
    pub base_state: DesiredState,
}

impl Checked {
    /// The merged state for `host` ([`ConfigTree::desired_for`]), reusing the base one.
    pub fn into_state_for(self, host: Option<&str>) -> (ConfigTree, DesiredState) {
        match host {
            Some(h) if self.tree.hosts.contains_key(h) => {
                let state = self.tree.desired_for(Some(h));
                (self.tree, state)
            }
            _ => (self.tree, self.base_state),
        }
    }
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count()
    }
}

/// Load a tree and run every check: the whole of `hero_proc validate` minus output.
pub fn load_tree(source: &dyn TreeSource) -> Checked {
    let mut diags = Diagnostics::new();
    let tree = load::load(source, &mut diags);
    let base_state = validate::check_tree(&tree, &mut diags);
    Checked { tree, diagnostics: diags.finish(), base_state }
}

#[cfg(test)]
mod spec_citations {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Comments cite the product contract as `SPEC N` or `SPEC §N`: each cited section
    /// must be a heading of docs/SPEC.md, so a citation never points nowhere.
    #[test]
    fn every_cited_spec_section_exists_in_docs_spec_md() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = std::fs::read_to_string(root.join("docs/SPEC.md")).expect("docs/SPEC.md is in the repository");
        let sections: Vec<String> = spec
            .lines()
            .filter(|l| l.starts_with('#'))
            .filter_map(|l| {
                l.trim_start_matches('#').split_whitespace().next().map(|s| s.trim_end_matches('.').to_owned())
            })
            .collect();
        let cite = regex::Regex::new(r"SPEC §?(\d+(?:\.\d+)?)").unwrap();
        let mut files = Vec::new();
        for d in ["crates", "tests"] {
            rust_files(&root.join(d), &mut files);
        }
        let mut bad = Vec::new();
        let mut seen = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, line) in text.lines().enumerate() {
                for c in cite.captures_iter(line) {
                    seen += 1;
                    if !sections.iter().any(|s| s == &c[1]) {
                        bad.push(format!("{}:{}: SPEC {}", f.display(), i + 1, &c[1]));
                    }
                }
            }
        }
        assert!(seen > 0 && sections.len() > 10, "the check found nothing to check");
        assert!(bad.is_empty(), "citations of sections docs/SPEC.md does not have:\n{}", bad.join("\n"));
    }
}
