//! `hero_proc export [DIR]`: the daemon's live state written as a config repository.
//!
//! Everything comes over the RPC (`action.list`, `service.list` + `service.get`,
//! `secret.list` for names, `reconcile.status`, `migrate.status`); the text is
//! `hero_proc_spec::export` (canonical YAML, defaults left out), checked to read back as
//! the live objects before anything is written. Applied migrations are copied from the
//! followed repository at the revision that applied each (checked against the recorded
//! SHA-256), so a daemon pointed at the export finds its migration history intact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use hero_proc_reconcile::{MigrateStatus, Repo, RepoConfig, SyncStatus};
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::{ActionView, NoParams, SecretMetaView, ServiceView};
use hero_proc_spec::export::{Export, check_round_trip, render};
use hero_proc_spec::{DEFAULT_CONTEXT, Named, Ref, Service, Settings};
use sha2::Digest;

use crate::{Output, connect};

#[derive(clap::Args)]
pub struct Args {
    /// The folder to write the repository into (created if missing) [default: the
    /// current directory].
    dir: Option<PathBuf>,
    /// Export only the objects (and secret names) of this context.
    #[arg(long)]
    context: Option<String>,
    /// Export only this service (`name` in context core, or `context/name`), the services
    /// it requires or starts after, the actions they run and the actions those depend on
    /// (so the export validates on its own).
    #[arg(long)]
    service: Option<String>,
    /// Write into a folder that is not empty: replaces `actions/*.yaml`, `hero.yaml` and
    /// `secrets/*.sops.yaml.example`, adds migrations; leaves every other file.
    #[arg(long)]
    force: bool,
}

/// What was written, for `--format json` and the summary line.
#[derive(serde::Serialize)]
struct Written {
    dir: String,
    files: Vec<String>,
    actions: usize,
    services: usize,
    secret_names: usize,
    migrations: Vec<String>,
    warnings: Vec<String>,
}

pub async fn run(args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let service_ref = args.service.as_deref().map(Ref::parse).transpose().context("--service")?;
    if let Some(c) = &args.context
        && !hero_proc_spec::schema::is_valid_name(c)
    {
        bail!("--context {c}: {}", hero_proc_spec::schema::NAME_HINT);
    }
    refuse_unless_empty(&dir, args.force)?;

    let mut client = connect(out).await?;
    let views: Vec<ActionView> = client.call_typed::<m::ActionList>(&NoParams {}).await?;
    let listed: Vec<ServiceView> = client.call_typed::<m::ServiceList>(&NoParams {}).await?;
    let mut services = Vec::new();
    for v in &listed {
        let s: Service = client.call_typed::<m::ServiceGet>(&Ref::new(&v.context, &v.name)).await?;
        services.push(s);
    }
    let secrets: Vec<SecretMetaView> = client.call_typed::<m::SecretList>(&NoParams {}).await?;
    let status: SyncStatus = client.call_foreign::<m::ReconcileStatus, _>(&NoParams {}).await?;
    let recorded: MigrateStatus = client.call_foreign::<m::MigrateStatus, _>(&NoParams {}).await?;

    let mut actions: Vec<_> = views.into_iter().map(|v| v.action).collect();
    let mut warnings = Vec::new();

    // Narrowing.
    if let Some(c) = &args.context {
        actions.retain(|a| a.context == *c);
        services.retain(|s| s.context == *c);
    }
    if let Some(r) = &service_ref {
        if !services.iter().any(|s| s.context == r.context && s.name == r.name) {
            bail!("--service {r}: no such service");
        }
        let (keep_services, keep_actions) = closure(r, &services, &actions);
        services.retain(|s| keep_services.contains(&Ref::new(&s.context, &s.name)));
        actions.retain(|a| keep_actions.contains(&Ref::new(&a.context, &a.name)));
    }
    let contexts: BTreeSet<&str> =
        actions.iter().map(|a| a.context.as_str()).chain(services.iter().map(|s| s.context.as_str())).collect();
    let mut secret_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &secrets {
        let wanted = match (&args.context, &service_ref) {
            (Some(c), _) => s.context == *c,
            (None, Some(_)) => contexts.contains(s.context.as_str()),
            (None, None) => true,
        };
        if wanted {
            secret_names.entry(s.context.clone()).or_default().push(s.name.clone());
        }
    }

    // The followed repository, at the revision the daemon applied: its settings and the
    // migrations it ran.
    let repo = match &status.repo {
        Some(location) => match open_repo(location, status.branch.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                warnings.push(format!("cannot read the followed repository {location}: {e:#}"));
                None
            }
        },
        None => None,
    };
    let applied_settings = match (&repo, &status.applied_revision) {
        (Some((r, _)), Some(rev)) => read_settings(r, rev, &mut warnings),
        _ => None,
    };
    let settings = settings_for(applied_settings, &services, &mut warnings);

    let export = Export { actions, services, secret_names, settings };
    let files = render(&export);
    check_round_trip(&files, &export).map_err(|e| {
        anyhow::anyhow!("internal error: the export would not read back as the live state ({e}); nothing was written")
    })?;

    let mut migrations: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let applied: Vec<_> = recorded.migrations.iter().filter(|r| r.state != "pending" && r.state != "failed").collect();
    for row in applied {
        let (Some(sha), Some((r, _))) = (&row.sha256, &repo) else {
            warnings.push(format!(
                "migration {} was applied here but its file cannot be read; copy it into migrations/ before following this repository (its history must stay)",
                row.name
            ));
            continue;
        };
        let revs = [row.revision.clone(), status.applied_revision.clone()];
        let found = revs.iter().flatten().find_map(|rev| {
            let bytes = read_blob(r, rev, &format!("migrations/{}", row.name))?;
            (hex::encode(sha2::Sha256::digest(&bytes)) == *sha).then_some(bytes)
        });
        match found {
            Some(bytes) => {
                migrations.insert(row.name.clone(), bytes);
            }
            None => warnings.push(format!(
                "migration {} (SHA-256 {}) is not in the followed repository as it was applied; copy it into migrations/ before following this repository",
                row.name,
                &sha[..sha.len().min(12)]
            )),
        }
    }

    // Write.
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if args.force {
        remove_matching(&dir.join("actions"), |n| n.ends_with(".yaml"))?;
        remove_matching(&dir.join("secrets"), |n| n.ends_with(".sops.yaml.example"))?;
    }
    let mut written = Vec::new();
    for (path, text) in &files {
        write(&dir, path, text.as_bytes())?;
        written.push(path.clone());
    }
    for (name, bytes) in &migrations {
        let path = format!("migrations/{name}");
        write(&dir, &path, bytes)?;
        written.push(path);
    }
    let w = Written {
        dir: dir.display().to_string(),
        files: written,
        actions: export.actions.len(),
        services: export.services.len(),
        secret_names: export.secret_names.values().map(Vec::len).sum(),
        migrations: migrations.keys().cloned().collect(),
        warnings,
    };
    if out.json() {
        out.print_json(&w)?;
    } else {
        for warning in &w.warnings {
            eprintln!("warning: {warning}");
        }
        if !out.quiet {
            println!(
                "exported {} actions, {} services, {} secret names (no values) and {} migrations to {}",
                w.actions,
                w.services,
                w.secret_names,
                w.migrations.len(),
                w.dir
            );
            if w.secret_names > 0 {
                println!("  secrets/*.sops.yaml.example list the names; each says how to make the encrypted file");
            }
            println!("  next: hero_proc validate {}; git init; git add -A; git commit", w.dir);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A folder with anything in it is written into only with `--force`.
/// What `--service r` exports so that the result validates on its own: the service, the
/// services it `requires` or starts `after` (and theirs), the actions they run, and the
/// actions those depend on (and theirs). References resolve as everywhere (own context,
/// then core).
fn closure(r: &Ref, services: &[Service], actions: &[hero_proc_spec::Action]) -> (BTreeSet<Ref>, BTreeSet<Ref>) {
    let service_at = |x: &Ref| services.iter().find(|s| s.context == x.context && s.name == x.name);
    let action_at = |x: &Ref| actions.iter().find(|a| a.context == x.context && a.name == x.name);
    let mut keep_services = BTreeSet::new();
    let mut keep_actions = BTreeSet::new();
    let mut queue = vec![r.clone()];
    let mut action_queue = Vec::new();
    while let Some(x) = queue.pop() {
        let Some(s) = service_at(&x) else { continue };
        if !keep_services.insert(x) {
            continue;
        }
        for n in s.requires.iter().chain(&s.after) {
            queue.push(Ref::resolve(&n.name, &s.context, |c| service_at(c).is_some()));
        }
        for n in &s.actions {
            action_queue.push(Ref::resolve(&n.name, &s.context, |c| action_at(c).is_some()));
        }
    }
    while let Some(x) = action_queue.pop() {
        let Some(a) = action_at(&x) else { continue };
        if !keep_actions.insert(x) {
            continue;
        }
        for n in &a.depends_on {
            action_queue.push(Ref::resolve(&n.name, &a.context, |c| action_at(c).is_some()));
        }
    }
    (keep_services, keep_actions)
}

fn refuse_unless_empty(dir: &Path, force: bool) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() || force {
        return Ok(());
    }
    names.sort();
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    bail!(
        "{} is not empty ({}{}): refusing to overwrite it; pass --force to write into it anyway (replaces actions/*.yaml, hero.yaml and secrets/*.sops.yaml.example, adds migrations, keeps every other file), or give an empty or new folder",
        dir.display(),
        shown.join(", "),
        if names.len() > 5 { ", ..." } else { "" }
    )
}

fn remove_matching(dir: &Path, f: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if f(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path()).with_context(|| format!("cannot remove {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
}

/// The followed repository: a local one as it is, a remote one fetched into a
/// temporary mirror (kept alive with the repository).
fn open_repo(location: &str, branch: Option<String>) -> anyhow::Result<(Repo, tempfile::TempDir)> {
    let cache = tempfile::tempdir()?;
    let repo = Repo::open(&RepoConfig { location: location.to_owned(), branch }, cache.path())?;
    repo.fetch()?;
    Ok((repo, cache))
}

fn read_blob(repo: &Repo, rev: &str, path: &str) -> Option<Vec<u8>> {
    let obj = repo.repository().revparse_single(&format!("{rev}:{path}")).ok()?;
    let blob = obj.peel_to_blob().ok()?;
    Some(blob.content().to_vec())
}

/// `hero.yaml` of the applied revision, decoded (`given` says which keys it sets).
fn read_settings(repo: &Repo, rev: &str, warnings: &mut Vec<String>) -> Option<Settings> {
    let Some(raw) = read_blob(repo, rev, "hero.yaml") else {
        return Some(Settings::default());
    };
    let text = String::from_utf8_lossy(&raw);
    let docs = hero_proc_spec::yaml::parse(&text).ok()?;
    let doc = docs.first()?;
    let mut diags = hero_proc_spec::Diagnostics::new();
    let s = hero_proc_spec::schema::Decoder::new("hero.yaml".into(), &mut diags).settings(doc);
    if s.as_ref().is_some_and(|s| s.registry.is_some() || s.forgejo.is_some()) {
        warnings.push(
            "hero.yaml of the followed repository sets `registry` or `forgejo`: not exported (copy them from it)"
                .into(),
        );
    }
    s
}

/// The settings written: the applied revision's `required_services` (what the daemon
/// enforces; without a followed repository, `hero_db` when that service exists, as the
/// daemon's boot check keeps it running) limited to the services exported, and the
/// revision's own self_heal, prune, interval and retention when it set them.
fn settings_for(applied: Option<Settings>, services: &[Service], warnings: &mut Vec<String>) -> Settings {
    let exported = |n: &Named| {
        let r = Ref::parse(&n.name).unwrap_or_else(|_| Ref::new(DEFAULT_CONTEXT, &n.name));
        services.iter().any(|s| s.context == r.context && s.name == r.name)
    };
    let mut s = match applied {
        Some(mut s) => {
            s.given.retain(|k| matches!(k.as_str(), "self_heal" | "prune" | "interval") || k.starts_with("retention."));
            s
        }
        None => {
            let hero_db = Named::new("hero_db");
            let required = if exported(&hero_db) { vec![hero_db] } else { Vec::new() };
            Settings { required_services: required, ..Settings::default() }
        }
    };
    let (kept, dropped): (Vec<Named>, Vec<Named>) = s.required_services.drain(..).partition(|n| exported(n));
    for n in dropped {
        warnings.push(format!("required service {} is not in this export: left out of required_services", n.name));
    }
    s.required_services = kept;
    s.registry = None;
    s.forgejo = None;
    s
}
