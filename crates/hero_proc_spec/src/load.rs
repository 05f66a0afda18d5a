//! Reading a whole config tree from a [`TreeSource`].
//!
//! Layout (SPEC 3): `hero.yaml`, `actions/*.yaml`, `secrets/<context>.sops.yaml`,
//! `migrations/*.rhai`, `hosts/<host>/actions/*.yaml`. Anything else at the root (README,
//! `.sops.yaml`, `.forgejo/`) is not ours and is ignored.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diag::{Diagnostics, Pos};
use crate::migrations::{check_migration, check_order};
use crate::model::{ConfigTree, ObjectSet};
use crate::schema::{Decoder, NAME_HINT, is_valid_name};
use crate::sops_meta::check_secrets_file;
use crate::source::{ContentId, EntryKind, TreeSource};
use crate::yaml::{self, Mark, Node};

/// The root names the loader reads.
const LAYOUT: [&str; 6] = ["hero.yaml", "actions", "hosts", "secrets", "migrations", crate::artifact::LOCK_FILE];

/// Files beside config files that are documentation, not config.
/// `secrets/<context>.sops.yaml.example` (what `hero_proc export` writes): a template
/// of secret names for people, never read as secrets. It is plaintext in git, so it may
/// hold names only: a value here is an error (`layout.secrets-example`).
fn check_secrets_example(source: &dyn TreeSource, file: &Arc<str>, context: &str, diags: &mut Diagnostics) {
    if !is_valid_name(context) {
        diags
            .error(&Pos::file(file), "name.invalid", format!("invalid context `{context}` in file name"))
            .hint(NAME_HINT);
        return;
    }
    let Some(raw) = read(source, file, diags) else { return };
    let Some(docs) = parse_yaml(file, &raw, diags) else { return };
    let Some(doc) = docs.first().filter(|d| !d.is_null()) else { return };
    let Some(entries) = doc.as_map() else {
        diags
            .error(
                &Pos::file(file),
                "layout.secrets-example",
                "an example secrets file is a mapping of names to empty values",
            )
            .hint("write `NAME: \"\"` per secret; values belong in the encrypted secrets/<context>.sops.yaml");
        return;
    };
    for (k, v) in entries {
        let empty = v.is_null() || v.as_scalar().is_some_and(str::is_empty);
        if !empty {
            let name = k.as_scalar().unwrap_or("?");
            diags
                .error(
                    &Pos { file: file.clone(), line: v.mark().line, col: v.mark().col },
                    "layout.secrets-example",
                    format!("`{name}` has a value in an example secrets file: a plaintext secret must never reach git"),
                )
                .hint("leave the value empty (`\"\"`) here and put it in the encrypted secrets/<context>.sops.yaml");
        }
    }
}

fn is_doc_file(name: &str) -> bool {
    name.ends_with(".md") || name == ".gitkeep" || name == ".keep"
}

/// Actions files already parsed, by path and content id (git's blob id), with what
/// parsing them reported: a revision that changes 1% of the files parses those 1%.
///
/// What a file decodes to depends only on its path and its bytes, so reusing it is exact:
/// a load through the cache returns the same tree and, once the cross-object checks have
/// run again on it, the same diagnostics as a load without. The objects are shared
/// (`Arc`) with every tree loaded through the cache, so they are held once. Files unused
/// by the last [`ParseCache::KEEP_LOADS`] loads are dropped.
#[derive(Debug, Default)]
pub struct ParseCache {
    files: HashMap<(Arc<str>, ContentId), CachedFile>,
    /// Loads made through this cache (the clock of `CachedFile::used`).
    loads: u64,
    stats: ParseStats,
}

#[derive(Debug)]
struct CachedFile {
    set: ObjectSet,
    diags: Diagnostics,
    /// The last load that used it.
    used: u64,
}

/// What a [`ParseCache`] did, counted over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Files parsed (not found in the cache).
    pub parsed: u64,
    /// Files reused without parsing.
    pub reused: u64,
}

impl ParseCache {
    /// A file stays while one of this many most recent loads used it: the revisions a
    /// daemon compares (target, applied) and a few before.
    pub const KEEP_LOADS: u64 = 4;

    pub fn new() -> ParseCache {
        ParseCache::default()
    }
    pub fn stats(&self) -> ParseStats {
        self.stats
    }
    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// [`crate::load_tree`] through a [`ParseCache`]: the same result, parsing only the
/// actions files the cache has not seen at their content id.
pub fn load_tree_cached(source: &dyn TreeSource, cache: &mut ParseCache) -> crate::Checked {
    let mut diags = Diagnostics::new();
    let tree = load_with(source, Some(cache), &mut diags);
    let base_state = crate::validate::check_tree(&tree, &mut diags);
    crate::Checked { tree, diagnostics: diags.finish(), base_state }
}

/// Read and parse every file of the tree. Problems go to `diags`; what could be read is
/// returned so later checks can still run and report more.
pub fn load(source: &dyn TreeSource, diags: &mut Diagnostics) -> ConfigTree {
    load_with(source, None, diags)
}

/// [`load`], reusing (and filling) `cache` for actions files when given.
pub fn load_with(source: &dyn TreeSource, mut cache: Option<&mut ParseCache>, diags: &mut Diagnostics) -> ConfigTree {
    if let Some(c) = cache.as_deref_mut() {
        c.loads += 1;
    }
    let tree = load_inner(source, cache.as_deref_mut(), diags);
    if let Some(c) = cache {
        let now = c.loads;
        c.files.retain(|_, f| f.used + ParseCache::KEEP_LOADS > now);
    }
    tree
}

fn load_inner(source: &dyn TreeSource, mut cache: Option<&mut ParseCache>, diags: &mut Diagnostics) -> ConfigTree {
    let mut tree = ConfigTree::default();
    let root = list(source, "", diags);

    for entry in &root {
        if entry.name == "hero.yml" {
            let file: Arc<str> = "hero.yml".into();
            diags
                .warning(&Pos::file(&file), "layout.settings-name", "`hero.yml` is ignored")
                .hint("rename it to `hero.yaml`");
        }
    }
    // The layout's own names must be what they look like: a link or a submodule there
    // would bring in files from outside this tree (or silently nothing, from git).
    let usable = |name: &str, diags: &mut Diagnostics| match root.iter().find(|e| e.name == name).map(|e| e.kind) {
        Some(EntryKind::Symlink) => {
            refuse_symlink(&name.into(), diags);
            false
        }
        Some(EntryKind::Submodule) => {
            refuse_submodule(&name.into(), diags);
            false
        }
        _ => true,
    };
    let layout_ok: Vec<bool> = LAYOUT.iter().map(|name| usable(name, diags)).collect();
    let ok = |name: &str| LAYOUT.iter().position(|n| *n == name).is_none_or(|i| layout_ok[i]);
    if root.iter().any(|e| e.name == "hero.yaml" && e.kind == EntryKind::File) {
        tree.has_settings_file = true;
        let file: Arc<str> = "hero.yaml".into();
        if let Some(docs) = read_yaml(source, &file, diags) {
            match docs.as_slice() {
                [] => {}
                [doc] => {
                    let mut dec = Decoder::new(file.clone(), diags);
                    if let Some(s) = dec.settings(doc) {
                        tree.settings = s;
                    }
                }
                [_, second, ..] => {
                    diags.error(
                        &Pos::new(&file, second.mark()),
                        "yaml.multi-document",
                        "hero.yaml must hold one YAML document",
                    );
                }
            }
        }
    }

    let lock_file = crate::artifact::LOCK_FILE;
    if ok(lock_file) && root.iter().any(|e| e.name == lock_file && e.kind == EntryKind::File) {
        let file: Arc<str> = lock_file.into();
        if let Some(docs) = read_yaml(source, &file, diags) {
            if let Some(second) = docs.get(1) {
                diags.error(
                    &Pos::new(&file, second.mark()),
                    "yaml.multi-document",
                    "artifacts.lock must hold one YAML document",
                );
            }
            tree.lock = crate::artifact::decode_lock(&file, docs.first(), diags);
        }
    }

    if ok("actions") {
        load_actions_dir(source, "actions", &mut tree.base, cache.as_deref_mut(), diags);
    }

    let hosts = if ok("hosts") { list(source, "hosts", diags) } else { Vec::new() };
    for host in hosts {
        let dir = format!("hosts/{}", host.name);
        match host.kind {
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                refuse_symlink(&dir.as_str().into(), diags);
                continue;
            }
            EntryKind::Submodule => {
                refuse_submodule(&dir.as_str().into(), diags);
                continue;
            }
            _ => continue,
        }
        if !is_valid_host(&host.name) {
            let file: Arc<str> = dir.as_str().into();
            diags
                .error(&Pos::file(&file), "layout.host-name", format!("`{}` is not a valid host name", host.name))
                .hint("host directories are named after the machine's host name: letters, digits, `-` and `.`");
            continue;
        }
        let mut actions_ok = true;
        for sub in list(source, &dir, diags) {
            let file: Arc<str> = format!("{dir}/{}", sub.name).into();
            match sub.kind {
                EntryKind::Symlink => {
                    refuse_symlink(&file, diags);
                    actions_ok &= sub.name != "actions";
                    continue;
                }
                EntryKind::Submodule => {
                    refuse_submodule(&file, diags);
                    actions_ok &= sub.name != "actions";
                    continue;
                }
                _ => {}
            }
            if sub.name != "actions" && !is_doc_file(&sub.name) {
                let file: Arc<str> = format!("{dir}/{}", sub.name).into();
                diags
                    .warning(&Pos::file(&file), "layout.unknown", format!("`{file}` is ignored"))
                    .hint("a host overlay holds only `actions/`");
            }
        }
        let set = tree.hosts.entry(host.name.clone()).or_default();
        if actions_ok {
            load_actions_dir(source, &format!("{dir}/actions"), set, cache.as_deref_mut(), diags);
        }
    }

    let secrets = if ok("secrets") { list(source, "secrets", diags) } else { Vec::new() };
    for entry in secrets {
        let path = format!("secrets/{}", entry.name);
        let file: Arc<str> = path.as_str().into();
        match entry.kind {
            EntryKind::Symlink => {
                refuse_symlink(&file, diags);
                continue;
            }
            EntryKind::Submodule => {
                refuse_submodule(&file, diags);
                continue;
            }
            _ => {}
        }
        if entry.kind != EntryKind::File || is_doc_file(&entry.name) {
            continue;
        }
        if let Some(context) = entry.name.strip_suffix(".sops.yaml.example") {
            check_secrets_example(source, &file, context, diags);
            continue;
        }
        let Some(context) = entry.name.strip_suffix(".sops.yaml") else {
            diags
                .error(&Pos::file(&file), "layout.secrets-name", format!("`{path}` is not a SOPS file name"))
                .hint("secrets files are named `secrets/<context>.sops.yaml` and written with sops; never commit plaintext secrets");
            continue;
        };
        if !is_valid_name(context) {
            diags
                .error(&Pos::file(&file), "name.invalid", format!("invalid context `{context}` in file name"))
                .hint(NAME_HINT);
            continue;
        }
        let Some(raw) = read(source, &file, diags) else {
            continue;
        };
        let Some(docs) = parse_yaml(&file, &raw, diags) else {
            continue;
        };
        if let Some(sf) = check_secrets_file(&file, context, &docs, raw, diags) {
            tree.secrets.insert(context.to_owned(), sf);
        }
    }

    let migrations = if ok("migrations") { list(source, "migrations", diags) } else { Vec::new() };
    for entry in migrations {
        let path = format!("migrations/{}", entry.name);
        let file: Arc<str> = path.as_str().into();
        match entry.kind {
            EntryKind::Symlink => refuse_symlink(&file, diags),
            EntryKind::Submodule => refuse_submodule(&file, diags),
            EntryKind::File if entry.name.ends_with(".rhai") => {
                let Some(raw) = read(source, &file, diags) else {
                    continue;
                };
                let Some(text) = utf8(&file, raw, diags) else {
                    continue;
                };
                if let Some(m) = check_migration(&file, &entry.name, text, diags) {
                    tree.migrations.push(m);
                }
            }
            _ if is_doc_file(&entry.name) => {}
            _ => {
                diags
                    .warning(&Pos::file(&file), "layout.unknown", format!("`{path}` is ignored"))
                    .hint("migrations are `migrations/<version>_<description>.rhai`");
            }
        }
    }
    // `list` sorts by name: that is the application order.
    check_order(&tree.migrations, diags);
    tree
}

fn is_valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

fn load_actions_dir(
    source: &dyn TreeSource,
    dir: &str,
    set: &mut ObjectSet,
    mut cache: Option<&mut ParseCache>,
    diags: &mut Diagnostics,
) {
    for entry in list(source, dir, diags) {
        let path = format!("{dir}/{}", entry.name);
        let file: Arc<str> = path.as_str().into();
        match entry.kind {
            EntryKind::Symlink => refuse_symlink(&file, diags),
            EntryKind::Submodule => refuse_submodule(&file, diags),
            EntryKind::File if entry.name.ends_with(".yaml") || entry.name.ends_with(".yml") => {
                let Some(cache) = cache.as_deref_mut() else {
                    actions_file(source, &file, set, diags);
                    continue;
                };
                let Some(id) = entry.id.clone().or_else(|| source.content_id(&file)) else {
                    actions_file(source, &file, set, diags);
                    continue;
                };
                let key = (file.clone(), id);
                let now = cache.loads;
                let cached = match cache.files.get_mut(&key) {
                    Some(f) => {
                        cache.stats.reused += 1;
                        f.used = now;
                        f
                    }
                    None => {
                        cache.stats.parsed += 1;
                        let mut own = ObjectSet::default();
                        let mut reported = Diagnostics::new();
                        actions_file(source, &file, &mut own, &mut reported);
                        cache.files.entry(key).or_insert(CachedFile { set: own, diags: reported, used: now })
                    }
                };
                set.actions.extend(cached.set.actions.iter().cloned());
                set.services.extend(cached.set.services.iter().cloned());
                set.broken.extend(cached.set.broken.iter().cloned());
                set.artifacts.extend(cached.set.artifacts.iter().cloned());
                diags.extend(cached.diags.clone());
            }
            _ if is_doc_file(&entry.name) => {}
            _ => {
                diags
                    .warning(&Pos::file(&file), "layout.unknown", format!("`{path}` is ignored"))
                    .hint(format!("only `{dir}/*.yaml` files are read"));
            }
        }
    }
}

/// Reads and decodes one actions file into `set`.
fn actions_file(source: &dyn TreeSource, file: &Arc<str>, set: &mut ObjectSet, diags: &mut Diagnostics) {
    let Some(docs) = read_yaml(source, file, diags) else {
        return;
    };
    match docs.as_slice() {
        [] => {
            diags
                .warning(&Pos::file(file), "layout.empty-file", "file is empty")
                .hint("delete it, or add `actions:` / `services:`");
        }
        [doc] => Decoder::new(file.clone(), diags).action_file(doc, set),
        [_, second, ..] => {
            diags
                .error(&Pos::new(file, second.mark()), "yaml.multi-document", "an actions file holds one YAML document")
                .hint("put the objects of both documents in one mapping, or split the file");
        }
    }
}

fn refuse_symlink(file: &Arc<str>, diags: &mut Diagnostics) {
    diags
        .error(&Pos::file(file), "layout.symlink", "symbolic links are not allowed in a config tree")
        .hint("a link could point outside the repository; commit the file itself");
}

fn refuse_submodule(file: &Arc<str>, diags: &mut Diagnostics) {
    diags
        .error(&Pos::file(file), "layout.submodule", "git submodules are not allowed in a config tree")
        .hint("a submodule's files are another repository's, at a commit this tree does not carry; commit the files themselves");
}

fn list(source: &dyn TreeSource, dir: &str, diags: &mut Diagnostics) -> Vec<crate::source::Entry> {
    match source.list(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let file: Arc<str> = if dir.is_empty() { ".".into() } else { dir.into() };
            diags.error(&Pos::file(&file), "io.read", e.to_string());
            Vec::new()
        }
    }
}

fn read(source: &dyn TreeSource, file: &Arc<str>, diags: &mut Diagnostics) -> Option<Vec<u8>> {
    match source.read(file) {
        Ok(b) => Some(b),
        Err(e) => {
            let d = diags.error(&Pos::file(file), "io.read", e.to_string());
            if matches!(e, crate::source::SourceError::TooLarge { .. }) {
                d.hint("config files are small; split the file or remove what does not belong in it");
            }
            None
        }
    }
}

fn utf8(file: &Arc<str>, raw: Vec<u8>, diags: &mut Diagnostics) -> Option<String> {
    match String::from_utf8(raw) {
        Ok(mut s) => {
            if s.starts_with('\u{feff}') {
                s.drain(..3);
            }
            Some(s)
        }
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = &bytes[..at];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
            let mark = Mark { line: line as u32, col: col as u32 };
            diags
                .error(&Pos::new(file, mark), "encoding.utf8", "file is not valid UTF-8")
                .hint("save the file as UTF-8");
            None
        }
    }
}

fn parse_yaml(file: &Arc<str>, raw: &[u8], diags: &mut Diagnostics) -> Option<Vec<Node>> {
    let text = utf8(file, raw.to_vec(), diags)?;
    match yaml::parse(&text) {
        Ok(docs) => Some(docs),
        Err(e) => {
            let d = diags.error(&Pos::new(file, e.mark), "yaml.syntax", e.message);
            if let Some(h) = e.hint {
                d.hint(h);
            }
            None
        }
    }
}

fn read_yaml(source: &dyn TreeSource, file: &Arc<str>, diags: &mut Diagnostics) -> Option<Vec<Node>> {
    let raw = read(source, file, diags)?;
    parse_yaml(file, &raw, diags)
}

/// Decode one actions file given as text (for `hero_proc action set FILE`): the same
/// rules and messages as a tree, without cross-file checks.
pub fn parse_objects(file: &str, text: &str, diags: &mut Diagnostics) -> ObjectSet {
    let file: Arc<str> = file.into();
    let mut set = ObjectSet::default();
    match yaml::parse(text) {
        Ok(docs) => {
            for doc in &docs {
                Decoder::new(file.clone(), diags).action_file(doc, &mut set);
            }
        }
        Err(e) => {
            let d = diags.error(&Pos::new(&file, e.mark), "yaml.syntax", e.message);
            if let Some(h) = e.hint {
                d.hint(h);
            }
        }
    }
    set
}
