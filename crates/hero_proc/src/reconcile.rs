//! `hero_proc reconcile` and `hero_proc history`.
//!
//! With a daemon: the plan and the apply happen inside it (`reconcile.plan` /
//! `reconcile.apply`), so the preview is computed by the same code, against the same
//! live state, as the apply. Without one (`--empty`, `--db FILE`): the plan is computed
//! here, read-only, for CI previews and post-mortems.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hero_proc_reconcile::prepare::{Sides, Source, load_sides};
use hero_proc_reconcile::{ApplyOutcome, Desired, Live, Plan, Repo, RepoConfig, SopsOpener, SyncStatus};
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::{HistoryQuery, HoldParams, MigrateBaseline, NoParams, ReconcileParams};
use hero_proc_store::{Store, SyncEntry};

use crate::{Output, connect};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<ReconcileCmd>,
    /// The config repository: a local path or a URL [default: the daemon's --repo and
    /// branch; with --empty or --db, the current directory]. A path given here is read at
    /// its HEAD (what is checked out, as committed) unless --branch or --rev says otherwise.
    #[arg(long)]
    repo: Option<String>,
    /// The branch to follow [default: the repository's HEAD; `main` for a URL].
    #[arg(long)]
    branch: Option<String>,
    /// Plan or apply this commit, tag or branch instead of the head. Applying pins it:
    /// automatic sync holds it until `hero_proc reconcile resume`.
    #[arg(long)]
    rev: Option<String>,
    /// Plan for this host's overlay (`hosts/<host>/`) [default: the daemon's host].
    #[arg(long)]
    host: Option<String>,
    /// Print the plan, apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Exit 0 when there is nothing to do (adopting objects set by hand that git declares
    /// identically changes nothing), 2 when there are changes, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Plan against an empty state (what a fresh machine would do); no daemon needed.
    /// Implies --dry-run.
    #[arg(long, conflicts_with = "db")]
    empty: bool,
    /// Plan against this database file, opened read-only; no daemon needed. Implies
    /// --dry-run.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Preview the work tree as it is, uncommitted edits included (local iteration; an
    /// apply never reads it). Needs --dry-run, --empty or --db.
    #[arg(long, conflicts_with = "rev")]
    worktree: bool,
    /// With --rev, on a daemon that applies only signed commits (`serve
    /// --allowed-signers`): apply this revision although no allowed signer signed it.
    /// Recorded in history.
    #[arg(long, requires = "rev")]
    allow_unsigned: bool,
    /// Preview what merging the head (or --rev, or with --worktree the work tree) into
    /// this revision changes: plan it against BASE as if BASE were applied on a fresh
    /// machine. Offline: no daemon, no database. Implies --dry-run.
    #[arg(long, value_name = "REV", conflicts_with_all = ["db", "empty"])]
    base: Option<String>,
    /// With --base: one plan per host, for the base set and every `hosts/<host>/`
    /// overlay of either revision.
    #[arg(long, requires = "base", conflicts_with = "host")]
    all_hosts: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `--wait [--timeout D]` of `reconcile`, `reconcile now` and `reconcile resume`.
#[derive(clap::Args, Clone, Copy)]
pub struct WaitArgs {
    /// Then wait until every service of the applied revision is running and healthy
    /// (whoever applied it); exit 1 naming those that are not when --timeout passes.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, requires = "wait", default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
}

impl Args {
    /// A `--base` preview (the one output `--format markdown` renders).
    pub fn previews_base(&self) -> bool {
        self.cmd.is_none() && self.base.is_some()
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    hero_proc_spec::schema::parse_duration(s)
}

#[derive(Subcommand)]
enum ReconcileCmd {
    /// Applied, attempted, head and pinned revisions; drift; last error; suspension.
    Status,
    /// Pause automatic sync (during an incident). Imperative changes stay as they are.
    Suspend,
    /// Resume automatic sync: unpin any pinned revision and sync now.
    Resume {
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Hold one git-managed object out of sync during an incident: its drift (a change
    /// by hand) is left alone until `release`, or until git changes that object.
    Hold {
        /// action, service or secret.
        kind: String,
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// End a hold: the next sync manages the object again (and reverts its drift).
    Release {
        /// action, service or secret.
        kind: String,
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// Sync now (fetch, plan, apply) and print what was applied.
    Now {
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// How many revisions to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub async fn run(args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    match args.cmd {
        Some(ReconcileCmd::Status) => {
            let s: SyncStatus = connect(out).await?.call_foreign::<m::ReconcileStatus, _>(&NoParams {}).await?;
            print_status(&s, out)
        }
        Some(ReconcileCmd::Suspend) => {
            let s: SyncStatus = connect(out).await?.call_foreign::<m::ReconcileSuspend, _>(&NoParams {}).await?;
            print_status(&s, out)
        }
        Some(ReconcileCmd::Hold { kind, name }) => {
            let s: SyncStatus =
                connect(out).await?.call_foreign::<m::ReconcileHold, _>(&HoldParams { kind, name }).await?;
            print_status(&s, out)
        }
        Some(ReconcileCmd::Release { kind, name }) => {
            let s: SyncStatus =
                connect(out).await?.call_foreign::<m::ReconcileRelease, _>(&HoldParams { kind, name }).await?;
            print_status(&s, out)
        }
        Some(ReconcileCmd::Resume { wait }) => {
            let since = hero_proc_store::now_ms();
            let s: SyncStatus = connect(out).await?.call_foreign::<m::ReconcileResume, _>(&NoParams {}).await?;
            let code = print_status(&s, out)?;
            if wait.wait {
                return crate::wait::until_healthy(out, wait.timeout, since, true, &[]).await;
            }
            Ok(code)
        }
        Some(ReconcileCmd::Now { wait }) => {
            let since = hero_proc_store::now_ms();
            let o: ApplyOutcome =
                connect(out).await?.call_foreign::<m::ReconcileApply, _>(&ReconcileParams::default()).await?;
            let code = print_applied(&o, out, false)?;
            if wait.wait {
                return crate::wait::until_healthy(out, wait.timeout, since, false, &started(&o)).await;
            }
            Ok(code)
        }
        None if args.worktree && !(args.dry_run || args.empty || args.db.is_some()) => {
            anyhow::bail!("--worktree previews only: add --dry-run (a work tree is never applied; commit it first)")
        }
        None if args.wait.wait && (args.dry_run || args.empty || args.db.is_some() || args.base.is_some()) => {
            anyhow::bail!("--wait waits for an apply: it cannot go with --dry-run, --empty, --db or --base")
        }
        None if args.base.is_some() => {
            let (base, plans) = base_plans(&args)?;
            print_base_plans(&base, &plans, out, args.detailed_exitcode, args.all_hosts)
        }
        None if args.empty || args.db.is_some() => {
            let plan = offline_plan(&args)?;
            print_plan(&plan, out, args.detailed_exitcode)
        }
        None => {
            let repo = match &args.repo {
                Some(r) => Some(
                    hero_proc_reconcile::repo::absolute_location(r)
                        .with_context(|| format!("--repo {r}: no such directory"))?,
                ),
                None => None,
            };
            let params = ReconcileParams {
                repo,
                branch: args.branch,
                rev: args.rev,
                host: args.host,
                worktree: args.worktree,
                allow_unsigned: args.allow_unsigned,
            };
            let mut client = connect(out).await?;
            if args.dry_run {
                let previewing_head = params.rev.is_none() && !params.worktree;
                let plan: Plan = client.call_foreign::<m::ReconcilePlan, _>(&params).await?;
                let code = print_plan(&plan, out, args.detailed_exitcode)?;
                // A preview reads commits only: say so when the work tree has config edits
                // it did not see (the usual "why does it say no changes?").
                if previewing_head && !out.quiet {
                    let local = match params.repo.clone() {
                        Some(r) => Some(r),
                        None => client
                            .call_foreign::<m::ReconcileStatus, _>(&NoParams {})
                            .await
                            .ok()
                            .and_then(|s: SyncStatus| s.repo),
                    };
                    if let Some(path) = local.filter(|p| std::path::Path::new(p).is_dir()) {
                        let files = uncommitted_config(std::path::Path::new(&path));
                        if !files.is_empty() {
                            let shown: Vec<&str> = files.iter().take(10).map(String::as_str).collect();
                            let more = if files.len() > 10 {
                                format!(" and {} more", files.len() - 10)
                            } else {
                                String::new()
                            };
                            eprintln!(
                                "note: {} config file(s) in {path} differ from the previewed commit and are not in this plan: {}{more}\n  hint: the daemon applies commits only; commit them, or preview them as they are with `hero_proc reconcile --dry-run --worktree`",
                                files.len(),
                                shown.join(", ")
                            );
                        }
                    }
                }
                Ok(code)
            } else {
                let since = hero_proc_store::now_ms();
                let o: ApplyOutcome = client.call_foreign::<m::ReconcileApply, _>(&params).await?;
                let code = print_applied(&o, out, args.detailed_exitcode)?;
                if args.wait.wait {
                    return crate::wait::until_healthy(out, args.wait.timeout, since, false, &started(&o)).await;
                }
                Ok(code)
            }
        }
    }
}

/// `--empty` / `--db`: plan here, touching nothing.
fn offline_plan(args: &Args) -> anyhow::Result<Plan> {
    let location = args.repo.clone().unwrap_or_else(|| ".".into());
    let location = hero_proc_reconcile::repo::absolute_location(&location)
        .with_context(|| format!("repository {location}: no such directory"))?;
    let cache = tempfile::tempdir()?;
    let dir = location.clone();
    let repo = Repo::open(&RepoConfig { location, branch: args.branch.clone() }, cache.path())?;
    repo.fetch()?;
    let target = match &args.rev {
        Some(r) => repo.resolve(r)?,
        None => repo.head()?,
    };
    let host = args.host.clone().or_else(hero_proc_daemon::reconciler::system_host_name);
    let (live, applied) = match &args.db {
        None => (Live::empty(), None),
        Some(db) => {
            let store = Store::open_read_only(db).with_context(|| format!("cannot open {} read-only", db.display()))?;
            let applied = store.sync_state()?.applied_revision;
            (Live::read(&store)?, applied)
        }
    };
    // Secret fingerprints are keyed by the daemon's at-rest key (next to its database);
    // without it a preview of a database cannot compare values, and says so.
    let key_path = args.db.as_deref().and_then(Path::parent).map(|d| d.join("at_rest.agekey"));
    let keys = hero_proc_sops::load_identities(&hero_proc_sops::KeyEnv::from_process_env()).map_err(|e| e.to_string());
    type Fingerprint = Box<dyn Fn(&str, &str, &str) -> String>;
    let (keys, fingerprint): (_, Fingerprint) =
        match key_path.as_deref().and_then(hero_proc_daemon::secrets::fingerprinter) {
            Some(f) => (keys, Box::new(f)),
            None if args.db.is_some() => {
                (Err("no at-rest key to compare values with".into()), Box::new(|_, _, _| String::new()))
            }
            None => (keys, Box::new(|_, _, _| String::new())),
        };
    let opener = SopsOpener::new(keys, false, fingerprint);
    let source = if args.worktree {
        if hero_proc_reconcile::repo::is_remote(&dir) {
            anyhow::bail!("--worktree previews the work tree of a local repository; {dir} is a remote");
        }
        Source::Worktree(Path::new(&dir))
    } else {
        Source::Commit(target)
    };
    // The daemon's rule for what is drift and what is a git change (one function).
    let mut load = |c| Desired::load(repo.repository(), c, host.as_deref(), &opener).map(std::sync::Arc::new);
    let Sides { desired, previous } =
        load_sides(&repo, source, applied.as_deref(), host.as_deref(), &opener, &mut load)?;
    let mut plan = hero_proc_reconcile::plan(&desired, &live, previous.as_deref(), applied.as_deref());
    hero_proc_reconcile::preview_migrations(&mut plan, &desired, &live);
    Ok(plan)
}

/// `--base REV`: the head (or `--rev`, or the work tree) planned against BASE as if
/// BASE were applied on a fresh machine, for one host or (`--all-hosts`) the base set and
/// every host overlay of either side. Offline: the repository is read, nothing else.
fn base_plans(args: &Args) -> anyhow::Result<(hero_proc_reconcile::CommitInfo, Vec<Plan>)> {
    let base_rev = args.base.as_deref().expect("--base");
    let location = args.repo.clone().unwrap_or_else(|| ".".into());
    let location = hero_proc_reconcile::repo::absolute_location(&location)
        .with_context(|| format!("repository {location}: no such directory"))?;
    if args.worktree && hero_proc_reconcile::repo::is_remote(&location) {
        anyhow::bail!("--worktree previews the work tree of a local repository; {location} is a remote");
    }
    let cache = tempfile::tempdir()?;
    let repo = Repo::open(&RepoConfig { location: location.clone(), branch: args.branch.clone() }, cache.path())?;
    repo.fetch()?;
    let base = repo.resolve(base_rev).with_context(|| format!("--base {base_rev}"))?;
    let head = match &args.rev {
        Some(r) => Some(repo.resolve(r).with_context(|| format!("--rev {r}"))?),
        None if args.worktree => None,
        None => Some(repo.head()?),
    };
    let hosts: Vec<Option<String>> = if args.all_hosts {
        let mut names = hosts_at(repo.repository(), &base.id);
        match &head {
            Some(h) => names.extend(hosts_at(repo.repository(), &h.id)),
            None => names.extend(hosts_in_dir(Path::new(&location))),
        }
        std::iter::once(None).chain(names.into_iter().map(Some)).collect()
    } else {
        vec![args.host.clone().or_else(hero_proc_daemon::reconciler::system_host_name)]
    };
    let opener = preview_opener();
    let mut plans = Vec::with_capacity(hosts.len());
    // One parse cache for both revisions and every host: a file the PR did not touch is
    // parsed once.
    let mut parsed = hero_proc_spec::load::ParseCache::new();
    for host in hosts {
        let on = |h: &Option<String>| h.as_deref().map(|h| format!(" for host {h}")).unwrap_or_default();
        let mut load = |c| {
            Desired::load_cached(repo.repository(), c, host.as_deref(), &opener, &mut parsed).map(std::sync::Arc::new)
        };
        let base_state =
            load(base.clone()).with_context(|| format!("the base {}{} does not load", base.short(), on(&host)))?;
        let source = match &head {
            Some(h) => Source::Commit(h.clone()),
            None => Source::Worktree(Path::new(&location)),
        };
        // As if the base were the applied revision: the same rule as the daemon's sync.
        let Sides { desired, previous } =
            load_sides(&repo, source, Some(&base.id), host.as_deref(), &opener, &mut |c| {
                if c.id == base.id { Ok(base_state.clone()) } else { load(c) }
            })?;
        let live = Live::as_applied(&base_state);
        let mut plan = hero_proc_reconcile::plan(&desired, &live, previous.as_deref(), Some(&base.id));
        hero_proc_reconcile::preview_migrations(&mut plan, &desired, &live);
        plans.push(plan);
    }
    Ok((base, plans))
}

/// Secrets of a base..head preview: decrypted when this machine has a key
/// (`SOPS_AGE_KEY_FILE`, ...) and compared by a keyed hash whose key lives only in this
/// process, so equal values compare equal and nothing about a value leaves it; without a
/// key they are listed as not compared.
fn preview_opener() -> SopsOpener<impl Fn(&str, &str, &str) -> String> {
    let keys = hero_proc_sops::load_identities(&hero_proc_sops::KeyEnv::from_process_env()).map_err(|e| e.to_string());
    let mut key = [0u8; 32];
    getrandom_fill(&mut key);
    SopsOpener::new(keys, false, move |context: &str, name: &str, value: &str| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&key[..], context.as_bytes(), &[0], name.as_bytes(), &[0], value.as_bytes()] {
            h.update(part);
        }
        hex::encode(h.finalize())
    })
}

/// The host overlays (`hosts/<host>/`) of a commit.
fn hosts_at(repo: &git2::Repository, commit: &str) -> std::collections::BTreeSet<String> {
    let tree = repo
        .revparse_single(commit)
        .and_then(|o| o.peel_to_commit())
        .and_then(|c| c.tree())
        .and_then(|t| t.get_path(Path::new("hosts")).and_then(|e| e.to_object(repo)))
        .and_then(|o| o.peel_to_tree());
    let Ok(tree) = tree else { return Default::default() };
    tree.iter()
        .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
        .filter_map(|e| e.name().ok().map(str::to_owned))
        .collect()
}

/// The host overlays of a work tree.
fn hosts_in_dir(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir.join("hosts"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

fn print_base_plans(
    base: &hero_proc_reconcile::CommitInfo,
    plans: &[Plan],
    out: &Output,
    detailed: bool,
    all_hosts: bool,
) -> anyhow::Result<ExitCode> {
    match out.format {
        crate::Format::Json if all_hosts => {
            out.print_json(&serde_json::json!({ "base": base, "hosts": plans }))?;
        }
        crate::Format::Json => out.print_json(&plans[0])?,
        crate::Format::Markdown => print!("{}", hero_proc_reconcile::render::render_markdown(base, plans)),
        crate::Format::Text => {
            for (i, plan) in plans.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                if all_hosts && plan.is_empty() && !plan.is_refused() {
                    let on = plan.host.as_deref().map(|h| format!("host {h}")).unwrap_or_else(|| "the base set".into());
                    println!("{on}: no changes from {} to {}", base.short(), plan.target.short());
                } else if !out.quiet || plan.is_refused() {
                    // The header's "live" revision is the base here, applied only in thought.
                    let text = hero_proc_reconcile::render::render_text(plan, out.color);
                    print!("{}", text.replacen("\n  live: ", "\n  base (as if applied): ", 1));
                }
            }
        }
    }
    let mut code = ExitCode::SUCCESS;
    for plan in plans {
        let on = plan.host.as_deref().map(|h| format!(" on host {h}")).unwrap_or_default();
        if plan.is_refused() {
            eprintln!(
                "error: the plan for {}{on} is refused (see above); nothing would be applied",
                plan.target.short()
            );
        } else if let Some(m) = plan.migration_preview.iter().find(|m| m.error.is_some()) {
            eprintln!(
                "error: migration {}{on} fails in the preview: {}",
                m.name,
                m.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("")
            );
        }
        let c = exit_for(plan, detailed);
        if c == ExitCode::from(1) || (c == ExitCode::from(2) && code == ExitCode::SUCCESS) {
            code = c;
        }
    }
    Ok(code)
}

/// Files of the config layout that differ from the commit checked out (edited, new or
/// deleted, not committed).
fn uncommitted_config(path: &std::path::Path) -> Vec<String> {
    let Ok(repo) = git2::Repository::open(path) else { return Vec::new() };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let Ok(statuses) = repo.statuses(Some(&mut opts)) else { return Vec::new() };
    let layout = |p: &str| {
        ["actions/", "hosts/", "secrets/", "migrations/"].iter().any(|d| p.starts_with(d))
            || p == "hero.yaml"
            || p == hero_proc_spec::artifact::LOCK_FILE
    };
    let mut out: Vec<String> =
        statuses.iter().filter_map(|e| e.path().ok().map(str::to_owned)).filter(|p| layout(p)).collect();
    out.sort();
    out
}

/// The services an apply (re)started: their process must be newer than the command.
fn started(o: &ApplyOutcome) -> Vec<String> {
    o.plan.restarts.iter().map(|r| r.service.clone()).chain(o.plan.starts.iter().map(|s| s.service.clone())).collect()
}

fn exit_for(plan: &Plan, detailed: bool) -> ExitCode {
    if plan.is_refused() || plan.preview_failed() {
        ExitCode::from(1)
    } else if detailed && plan.changes_anything() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_plan(plan: &Plan, out: &Output, detailed: bool) -> anyhow::Result<ExitCode> {
    if out.json() {
        out.print_json(plan)?;
    } else if !out.quiet || plan.is_refused() {
        print!("{}", hero_proc_reconcile::render::render_text(plan, out.color));
    }
    if plan.is_refused() {
        eprintln!("error: the plan for {} is refused (see above); nothing would be applied", plan.target.short());
    } else if let Some(m) = plan.migration_preview.iter().find(|m| m.error.is_some()) {
        eprintln!(
            "error: migration {} fails in the preview: {}",
            m.name,
            m.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("")
        );
    }
    Ok(exit_for(plan, detailed))
}

fn print_applied(o: &ApplyOutcome, out: &Output, detailed: bool) -> anyhow::Result<ExitCode> {
    let migration_failed = o.migrations.iter().any(|m| m.contains(": failed: "));
    if out.json() {
        out.print_json(o)?;
    } else if !out.quiet {
        if !o.plan.is_empty() {
            print!("{}", hero_proc_reconcile::render::render_text(&o.plan, out.color));
            println!();
        }
        println!(
            "Applied {}{}: {}",
            o.plan.target.short(),
            o.plan.target.summary.as_deref().map(|s| format!(" \"{s}\"")).unwrap_or_default(),
            if o.plan.is_empty() { "no changes".into() } else { hero_proc_reconcile::render::summary_line(&o.plan) }
        );
        for m in &o.migrations {
            println!("Migration {m}");
        }
        if let Some(failed) = o.migrations.iter().find(|m| m.contains(": failed: ")) {
            eprintln!(
                "error: migration {failed}\n  hint: the config of this revision is applied; later migrations did not run; fix it in a new commit"
            );
        }
        if o.pinned {
            println!("Pinned: automatic sync holds {} until `hero_proc reconcile resume`.", o.plan.target.short());
        }
    }
    if migration_failed {
        return Ok(ExitCode::from(1));
    }
    Ok(exit_for(&o.plan, detailed))
}

fn short(r: &Option<String>) -> String {
    r.as_deref().map(|r| r[..r.len().min(12)].to_owned()).unwrap_or_else(|| "-".into())
}

fn ago(ms: Option<i64>) -> String {
    match ms {
        None => String::new(),
        Some(t) => {
            let secs = ((hero_proc_store::now_ms() - t) / 1000).max(0) as u64;
            format!(" ({} ago)", humanize(secs))
        }
    }
}

pub(crate) fn humanize(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn print_status(s: &SyncStatus, out: &Output) -> anyhow::Result<ExitCode> {
    if out.json() {
        out.print_json(s)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &s.repo {
        Some(r) => println!(
            "repository: {}{}{}",
            hero_proc_reconcile::repo::redact_url(r),
            s.branch.as_deref().map(|b| format!(" (branch {b})")).unwrap_or_default(),
            s.host.as_deref().map(|h| format!(", host {h}")).unwrap_or_default()
        ),
        None => {
            println!("repository: none (the daemon runs without --repo; `hero_proc reconcile --repo` applies once)")
        }
    }
    println!("applied:    {}", short(&s.applied_revision));
    if s.repo.is_some() {
        match (&s.changed_revision, s.changed_at_ms) {
            (Some(r), Some(at)) => println!(
                "changed:    {}{} (the last sync that changed something)",
                &r[..r.len().min(12)],
                ago(Some(at))
            ),
            _ => println!("changed:    never"),
        }
        if let Some(at) = s.attempted_at_ms {
            let secs = ((hero_proc_store::now_ms() - at) / 1000).max(0) as u64;
            let result = s.last_result.map(|r| format!(" ({})", r.as_str())).unwrap_or_default();
            println!("synced:     {} ago{result}", humanize(secs));
        }
    }
    if let Some(h) = &s.head_revision {
        println!("head:       {}", &h[..h.len().min(12)]);
    }
    if let Some(p) = &s.pinned_revision {
        println!(
            "pinned:     {} (automatic sync holds it; `hero_proc reconcile resume` follows the branch again)",
            &p[..p.len().min(12)]
        );
    }
    if s.suspended {
        println!("sync:       SUSPENDED (`hero_proc reconcile resume` to resume)");
    } else if s.repo.is_some() {
        println!(
            "sync:       automatic{}",
            s.next_sync_at_ms
                .map(|t| format!(", next in {}", humanize(((t - hero_proc_store::now_ms()).max(0) / 1000) as u64)))
                .unwrap_or_default()
        );
    }
    if let Some(r) = &s.last_result {
        println!("last:       {}{}", r.as_str(), s.last_duration_ms.map(|d| format!(" in {d} ms")).unwrap_or_default());
    }
    if s.attempted_revision != s.applied_revision || s.last_error.is_some() {
        println!("attempted:  {}{}", short(&s.attempted_revision), ago(s.attempted_at_ms));
    }
    if let Some(e) = &s.last_error {
        println!("error:      {}", e.lines().next().unwrap_or(""));
        for l in e.lines().skip(1) {
            println!("            {l}");
        }
        if s.consecutive_failures > 0 {
            println!("            ({} failure(s) in a row; retrying with backoff)", s.consecutive_failures);
        }
    }
    if let (Some(i), Some(src)) = (s.interval_secs, &s.interval_source) {
        println!("interval:   {i}s (from {src})");
    }
    if s.drift.is_empty() {
        println!("drift:      none");
    } else {
        let mode =
            if s.self_heal == Some(false) { "reported only (self_heal: false)" } else { "reverted on the next sync" };
        println!("drift:      {} object(s), {mode}", s.drift.len());
        for d in &s.drift {
            println!("  {}: {}", d.object, d.what);
        }
    }
    if !s.held.is_empty() {
        println!("held:       {} object(s) out of sync (their drift is left alone)", s.held.len());
        for (o, at) in &s.held {
            println!("  {o} (since {}; `hero_proc reconcile release {o}`)", utc(*at));
        }
    }
    if let Some(cs) = &s.commit_status {
        println!("statuses:   {} as {}", cs.target.as_deref().unwrap_or("-"), cs.context);
        if let Some(d) = &cs.last_delivered {
            println!("            last delivered: {d} ({} delivered, {} failed tries)", cs.delivered, cs.failed);
        }
        if let Some(e) = &cs.last_error {
            println!("            last error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn history(args: HistoryArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let entries: Vec<SyncEntry> =
        connect(out).await?.call_foreign::<m::ReconcileHistory, _>(&HistoryQuery { limit: Some(args.limit) }).await?;
    if out.json() {
        out.print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no revisions applied yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:<12} {:<8} {:<24} SUMMARY", "TIME", "COMMIT", "RESULT", "AUTHOR");
    for e in entries {
        let r = &e.record;
        let s = &r.summary;
        let n = |k: &str| s.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let counts = format!("+{} ~{} -{}", n("create"), n("update"), n("delete"));
        let subject = s.get("commit").and_then(|v| v.as_str()).unwrap_or("");
        let mut summary = format!("{counts} {subject}");
        if s.get("self_heal").and_then(|v| v.as_bool()) == Some(true) {
            let what: Vec<&str> = s
                .get("changes")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            summary = format!(
                "self-heal: reverted {} drifted object(s) {}",
                n("drift").max(what.len() as u64),
                what.join(", ")
            );
        }
        if let Some(err) = &r.error {
            summary = format!("{subject}: {}", err.lines().next().unwrap_or(""));
        }
        let author = r.author.as_deref().unwrap_or("-");
        let author: String = author.split(" <").next().unwrap_or(author).chars().take(24).collect();
        println!(
            "{:<20} {:<12} {:<8} {:<24} {}",
            utc(r.applied_at_ms),
            &r.revision[..r.revision.len().min(12)],
            r.result.as_str(),
            author,
            summary.trim()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 in UTC, to the second.
pub(crate) fn utc(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
    }
}

#[derive(Subcommand)]
pub enum MigrateCmd {
    /// The migrations of the revision the daemon follows against its record.
    Status,
    /// Record every migration up to NAME (inclusive) as applied without running it: for
    /// systems whose state predates migrations, or an effect already in place.
    Baseline {
        /// The newest migration to record as applied (its file name without `.rhai`, or with).
        name: String,
    },
}

pub async fn migrate(cmd: MigrateCmd, out: &Output) -> anyhow::Result<ExitCode> {
    let mut client = connect(out).await?;
    let status: hero_proc_reconcile::MigrateStatus = match &cmd {
        MigrateCmd::Status => client.call_foreign::<m::MigrateStatus, _>(&NoParams {}).await?,
        MigrateCmd::Baseline { name } => {
            client.call_foreign::<m::MigrateBaseline, _>(&MigrateBaseline { name: name.clone() }).await?
        }
    };
    if out.json() {
        out.print_json(&status)?;
    } else {
        for p in &status.problems {
            eprintln!("warning: {p}");
        }
        if status.migrations.is_empty() {
            println!("no migrations");
        } else {
            println!("{:<48} {:<8} {:<12} {:>8} WHEN", "MIGRATION", "STATE", "REVISION", "TOOK");
            for m in &status.migrations {
                println!(
                    "{:<48} {:<8} {:<12} {:>8} {}",
                    m.name,
                    m.state,
                    short(&m.revision),
                    m.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                    m.applied_at_ms.map(utc).unwrap_or_default()
                );
                if let Some(e) = &m.error {
                    println!("    {}", e.lines().next().unwrap_or(""));
                }
            }
        }
    }
    let bad = status.migrations.iter().any(|m| matches!(m.state.as_str(), "failed" | "edited" | "deleted"));
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Fills `buf` from the kernel's random source.
fn getrandom_fill(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most `buf.len() - filled` bytes into the rest of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        assert!(n > 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted, "getrandom failed");
        filled += n.max(0) as usize;
    }
}
