//! The hero_proc config model and its validation.
//!
//! Pure: reads files through a [`source::TreeSource`] (a directory or a git tree) and
//! never writes, spawns or connects. The reconciler loads committed trees through the
//! same [`load_tree`] that `hero_proc validate` uses, so what CI accepts is what runs.

pub mod diag;
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
    validate::check_tree(&tree, &mut diags);
    Checked { tree, diagnostics: diags.finish() }
}
