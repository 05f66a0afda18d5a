//! Checks across objects: unique keys, references, cycles, secrets, required services.
//!
//! Run once on the base set and once per host on its merged set, since an overlay can
//! replace an object another one refers to. A problem that exists only on some host is
//! reported with that host's name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::diag::{Diagnostics, Pos, did_you_mean};
use crate::model::*;
use crate::reference::Ref;

/// All cross-object checks of a loaded tree. Returns the base set's merged state
/// (`tree.desired_for(None)`), which the checks build anyway.
pub fn check_tree(tree: &ConfigTree, diags: &mut Diagnostics) -> DesiredState {
    check_artifacts(tree, diags);
    check_unique(&tree.base, diags);
    for set in tree.hosts.values() {
        check_unique(set, diags);
    }

    let mut base = Diagnostics::new();
    let base_state = tree.desired_for(None);
    check_state(tree, &base_state, &mut base);
    let seen: HashSet<(Pos, String)> = base.iter().map(|d| (d.pos(), d.message.clone())).collect();
    diags.extend(base);
    for host in tree.hosts.keys() {
        let mut per_host = Diagnostics::new();
        check_state(tree, &tree.desired_for(Some(host)), &mut per_host);
        for d in per_host.iter() {
            if !seen.contains(&(d.pos(), d.message.clone())) {
                let mut d = d.clone();
                d.message = format!("{} (on host `{host}`)", d.message);
                let at = d.pos();
                let new = match d.severity {
                    crate::diag::Severity::Error => diags.error(&at, d.code, d.message),
                    crate::diag::Severity::Warning => diags.warning(&at, d.code, d.message),
                };
                new.hint = d.hint;
            }
        }
    }
    base_state
}

/// Every artifact an action of the tree runs (base or any host) is pinned in
/// `artifacts.lock` and there is a registry to fetch it from; a pin nothing uses is
/// reported (it keeps nothing alive: the daemon's cache has its own `keep`). The token,
/// when given, is a key of `secrets/core.sops.yaml`.
fn check_artifacts(tree: &ConfigTree, diags: &mut Diagnostics) {
    use crate::artifact::LOCK_FILE;
    let uses: Vec<&crate::artifact::ArtifactUse> =
        std::iter::once(&tree.base).chain(tree.hosts.values()).flat_map(|s| s.artifacts.iter()).collect();
    let mut no_registry_reported = false;
    for u in &uses {
        if !tree.lock.entries.contains_key(&u.id) {
            let why = if tree.lock.present {
                format!("is not pinned in {LOCK_FILE}")
            } else {
                format!("is not pinned: there is no {LOCK_FILE}")
            };
            diags.error(&u.pos, "artifact.unlocked", format!("artifact {} of action {} {why}", u.id, u.action)).hint(
                "run `hero_proc artifact lock` and commit artifacts.lock: it records the digest this version must have",
            );
        }
        if tree.settings.registry.is_none() && !no_registry_reported {
            no_registry_reported = true;
            diags
                .error(
                    &u.pos,
                    "artifact.no-registry",
                    format!("action {} runs artifact {} but hero.yaml has no `registry`", u.action, u.id),
                )
                .hint(
                    "add `registry: { url: https://HOST/api/packages/OWNER/generic }` to hero.yaml (or `file:///dir`)",
                );
        }
    }
    for (id, entry) in &tree.lock.entries {
        if !uses.iter().any(|u| u.id == *id) {
            diags
                .warning(&entry.pos, "artifact.unused", format!("{id} is pinned but no action runs it"))
                .hint("`hero_proc artifact lock` drops unused pins; installed versions are kept by the daemon's `registry.keep`, not by the lock");
        }
    }
    let registry_token = tree.settings.registry.as_ref().and_then(|r| r.token.as_ref()).map(|t| ("registry", t));
    let forgejo_token = tree.settings.forgejo.as_ref().map(|f| ("forgejo", &f.token));
    for (what, token) in registry_token.into_iter().chain(forgejo_token) {
        let path = format!("secrets/{DEFAULT_CONTEXT}.sops.yaml");
        match tree.secrets.get(DEFAULT_CONTEXT) {
            Some(f) if f.keys.iter().any(|k| k.name == token.name) => {}
            Some(_) => {
                diags
                    .error(
                        &token.pos,
                        "ref.secret",
                        format!("the {what} token `{}` is not a key of {path}", token.name),
                    )
                    .hint(format!("add it with `sops edit {path}`"));
            }
            None => {
                diags
                    .error(
                        &token.pos,
                        "ref.secret",
                        format!("the {what} token `{}` is referenced but {path} does not exist", token.name),
                    )
                    .hint(format!("create it with `sops edit {path}` and add the key `{}`", token.name));
            }
        }
    }
}

/// Within one layer, `(kind, context, name)` is unique.
fn check_unique(set: &ObjectSet, diags: &mut Diagnostics) {
    // Borrowed keys: this runs over every object of every load.
    let mut seen: HashMap<(Kind, &str, &str), &Pos> = HashMap::with_capacity(set.actions.len() + set.services.len());
    let items = set
        .actions
        .iter()
        .map(|a| ((Kind::Action, a.context.as_str(), a.name.as_str()), &a.pos))
        .chain(set.services.iter().map(|s| ((Kind::Service, s.context.as_str(), s.name.as_str()), &s.pos)));
    for (key, pos) in items {
        if let Some(first) = seen.get(&key) {
            let (kind, context, name) = key;
            let key = ObjectKey { kind, context: context.to_owned(), name: name.to_owned() };
            diags
                .error(pos, "object.duplicate", format!("{key} is defined twice (first at {first})"))
                .hint("each (kind, context, name) may be defined once; rename one or set another `context`");
        } else {
            seen.insert(key, pos);
        }
    }
}

type Key = (String, String);

/// The objects of one kind, looked up by borrowed `(context, name)`: every reference of
/// every load is resolved, and a lookup must not allocate.
struct Index<'m, T> {
    /// `(context, name)` -> the object's position in the map's order, key and value.
    by: HashMap<(&'m str, &'m str), (usize, &'m Key, &'m T)>,
}

impl<'m, T> Index<'m, T> {
    fn new(map: &'m BTreeMap<Key, T>) -> Self {
        Index { by: map.iter().enumerate().map(|(i, (k, v))| ((k.0.as_str(), k.1.as_str()), (i, k, v))).collect() }
    }

    /// Resolve `name` or `context/name` from an object in `context` ([`Ref::resolve`]'s rule).
    fn resolve(&self, context: &str, r: &Named) -> Option<(&'m Key, &'m T)> {
        self.position(context, r).map(|(_, k, v)| (k, v))
    }

    fn position(&self, context: &str, r: &Named) -> Option<(usize, &'m Key, &'m T)> {
        Ref::resolve_found(&r.name, context, |c, n| self.by.get(&(c, n)).copied())
    }
}

fn suggest<T>(map: &BTreeMap<(String, String), T>, context: &str, r: &Named) -> Option<String> {
    let names = map.keys().filter(|(c, _)| c == context || c == DEFAULT_CONTEXT).map(|(_, n)| n.as_str());
    did_you_mean(r.split().1, names).map(|s| format!("did you mean `{s}`?"))
}

/// Whether a failed reference names an object that exists but had errors of its own
/// (already reported; saying "unknown" too would mislead).
fn is_broken(state: &DesiredState, kind: Kind, context: &str, r: &Named) -> bool {
    let (ctx, name) = r.split();
    let key = |c: &str| ObjectKey { kind, context: c.to_owned(), name: name.to_owned() };
    match ctx {
        Some(c) => state.broken.contains(&key(c)),
        None => state.broken.contains(&key(context)) || state.broken.contains(&key(DEFAULT_CONTEXT)),
    }
}

fn check_state(tree: &ConfigTree, state: &DesiredState, diags: &mut Diagnostics) {
    let actions = Index::new(&state.actions);
    let services = Index::new(&state.services);
    // Actions: depends_on and secret references.
    for action in state.actions.values() {
        for dep in &action.depends_on {
            if actions.resolve(&action.context, dep).is_none() && !is_broken(state, Kind::Action, &action.context, dep)
            {
                let d = diags.error(
                    &dep.pos,
                    "ref.action",
                    format!("action `{}` depends on unknown action `{}`", action.name, dep.name),
                );
                if let Some(h) = suggest(&state.actions, &action.context, dep) {
                    d.hint(h);
                }
            }
        }
        for secret in action.secret_refs() {
            check_secret_ref(tree, action, secret, diags);
        }
    }

    // Services: actions, requires, after.
    for svc in state.services.values() {
        let n = svc.actions.len();
        for (i, a) in svc.actions.iter().enumerate() {
            match actions.resolve(&svc.context, a) {
                None if is_broken(state, Kind::Action, &svc.context, a) => {}
                None => {
                    let d = diags.error(
                        &a.pos,
                        "ref.action",
                        format!("service `{}` runs unknown action `{}`", svc.name, a.name),
                    );
                    match suggest(&state.actions, &svc.context, a) {
                        Some(h) => d.hint(h),
                        None => d.hint(format!("define action `{}` under `actions:`", a.split().1)),
                    };
                }
                Some((_, action)) if i + 1 < n && action.process => {
                    diags
                        .error(&a.pos, "service.process-before-main", format!("action `{}` is a long-running process but is not the last action of service `{}`", a.name, svc.name))
                        .hint("a service runs its actions in order and supervises the last one; earlier actions must be one-shots (`process: false`)");
                }
                Some(_) => {}
            }
        }
        for (field, list) in [("requires", &svc.requires), ("after", &svc.after)] {
            for r in list {
                if services.resolve(&svc.context, r).is_none() && !is_broken(state, Kind::Service, &svc.context, r) {
                    let d = diags.error(
                        &r.pos,
                        "ref.service",
                        format!("service `{}` {field} unknown service `{}`", svc.name, r.name),
                    );
                    if let Some(h) = suggest(&state.services, &svc.context, r) {
                        d.hint(h);
                    }
                }
            }
        }
    }

    check_cycles(
        "service",
        state.services.iter().map(|(k, s)| (k, &s.context, s.requires.iter().chain(&s.after).collect::<Vec<_>>())),
        &services,
        diags,
    );
    check_cycles(
        "action",
        state.actions.iter().map(|(k, a)| (k, &a.context, a.depends_on.iter().collect::<Vec<_>>())),
        &actions,
        diags,
    );

    // Required services: present and wanted running.
    let hero_yaml: Arc<str> = "hero.yaml".into();
    let actions_dir: Arc<str> = "actions".into();
    for req in &tree.settings.required_services {
        // A default requirement has no place of its own: point where the fix goes, and
        // say where the requirement comes from.
        let (at, from) = match (req.pos.file.is_empty(), tree.has_settings_file) {
            (false, _) => (req.pos.clone(), String::new()),
            (true, true) => (
                Pos::file(&hero_yaml),
                " (hero.yaml does not set `required_services`, so the default [hero_db] applies)".to_owned(),
            ),
            (true, false) => (
                Pos::file(&actions_dir),
                " (there is no hero.yaml, so the default `required_services: [hero_db]` applies)".to_owned(),
            ),
        };
        match services.resolve(DEFAULT_CONTEXT, req) {
            None if is_broken(state, Kind::Service, DEFAULT_CONTEXT, req) => {}
            None => {
                diags
                    .error(&at, "required.missing", format!("required service `{}` is not defined{from}", req.name))
                    .hint(format!(
                        "define service `{}` in actions/{}.yaml, or list the services this repository must keep running in `required_services` in hero.yaml",
                        req.split().1,
                        req.split().1
                    ));
            }
            Some((_, svc)) if svc.status != ServiceStatus::Start => {
                diags
                    .error(&svc.pos, "required.not-started", format!("required service `{}` has `status: {}`", req.name, status_name(svc.status)))
                    .hint("required services must have `status: start`; to stop one, first remove it from `required_services` in hero.yaml");
            }
            Some(_) => {}
        }
    }
}

fn status_name(s: ServiceStatus) -> &'static str {
    match s {
        ServiceStatus::Start => "start",
        ServiceStatus::Stop => "stop",
        ServiceStatus::Ignore => "ignore",
    }
}

fn check_secret_ref(tree: &ConfigTree, action: &Action, secret: &Named, diags: &mut Diagnostics) {
    let path = format!("secrets/{}.sops.yaml", action.context);
    match tree.secrets.get(&action.context) {
        None => {
            diags
                .error(
                    &secret.pos,
                    "ref.secret",
                    format!("secret `{}` is referenced but {path} does not exist (or could not be read)", secret.name),
                )
                .hint(format!("create it with `sops edit {path}` and add the key `{}`", secret.name));
        }
        Some(file) if !file.keys.iter().any(|k| k.name == secret.name) => {
            let d = diags.error(&secret.pos, "ref.secret", format!("secret `{}` is not a key of {path}", secret.name));
            match did_you_mean(&secret.name, file.keys.iter().map(|k| k.name.as_str())) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint(format!("add it with `sops edit {path}`")),
            };
        }
        Some(_) => {}
    }
}

/// Find dependency cycles (iteratively: a long chain must not overflow the stack) and
/// report each once, with its path, at the edge that closes it. `nodes` come in the
/// map's order, so a node's position is its index there: the search runs on positions
/// (every object of every load goes through it).
fn check_cycles<'a, T>(
    kind: &str,
    nodes: impl Iterator<Item = (&'a (String, String), &'a String, Vec<&'a Named>)>,
    map: &Index<'a, T>,
    diags: &mut Diagnostics,
) {
    let mut keys: Vec<&Key> = Vec::new();
    let mut edges: Vec<Vec<(usize, &Named)>> = Vec::new();
    for (key, ctx, refs) in nodes {
        keys.push(key);
        edges.push(refs.into_iter().filter_map(|r| map.position(ctx, r).map(|(i, _, _)| (i, r))).collect());
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    // A node with no edge out is on no cycle: finished from the start.
    let mut color: Vec<Color> =
        edges.iter().map(|out| if out.is_empty() { Color::Black } else { Color::White }).collect();
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    // Stack of (node, next edge index); it is the path for reporting.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..edges.len() {
        if color[start] != Color::White {
            continue;
        }
        stack.clear();
        stack.push((start, 0));
        color[start] = Color::Grey;
        while let Some((node, idx)) = stack.last().copied() {
            let out = &edges[node];
            if idx == out.len() {
                color[node] = Color::Black;
                stack.pop();
                continue;
            }
            stack.last_mut().expect("non-empty").1 += 1;
            let (target, named) = out[idx];
            match color.get(target).copied().unwrap_or(Color::Black) {
                Color::White => {
                    color[target] = Color::Grey;
                    stack.push((target, 0));
                }
                Color::Grey => {
                    let from = stack.iter().position(|(n, _)| *n == target).expect("grey node is on the stack");
                    let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                    // Report a cycle once, whichever node it was entered from.
                    let mut canon = cycle.clone();
                    let min = canon.iter().enumerate().min_by_key(|(_, n)| keys[**n]).map(|(i, _)| i).unwrap_or(0);
                    canon.rotate_left(min);
                    if reported.insert(canon) {
                        cycle.push(target);
                        let path: Vec<String> = cycle
                            .iter()
                            .map(|n| {
                                let (c, n) = keys[*n];
                                if c == DEFAULT_CONTEXT { n.clone() } else { format!("{c}/{n}") }
                            })
                            .collect();
                        diags
                            .error(&named.pos, "cycle", format!("{kind} dependency cycle: {}", path.join(" -> ")))
                            .hint("break the cycle by removing one of these dependencies");
                    }
                }
                Color::Black => {}
            }
        }
    }
}
