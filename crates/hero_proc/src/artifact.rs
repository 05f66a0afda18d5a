//! `hero_proc artifact`: pin the artifacts a config tree runs (`lock`), and the daemon's
//! cache of them (`list`, `prune`). SPEC 3.6.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, bail};
use hero_proc_artifacts::{ArtifactId, Cache, Counters, Digest, Installer, Progress, Quiet, Registry, Token};
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::{ArtifactPrune, ArtifactPruned, ArtifactView, NoParams};
use hero_proc_spec::artifact::{LOCK_FILE, render_lock};
use hero_proc_spec::{DirSource, load_tree};

use crate::{Output, connect};
use hero_proc_reconcile::render::human_bytes;

/// The environment variable that gives `artifact lock` a registry token directly.
const TOKEN_ENV: &str = "HERO_PROC_REGISTRY_TOKEN";

#[derive(clap::Subcommand)]
pub enum ArtifactCmd {
    /// Pin every artifact the tree's actions run in artifacts.lock: fetch the versions
    /// not pinned yet, write their SHA-256 (sorted, stable), drop pins nothing uses, and
    /// print what changed. The registry is hero.yaml's; its token comes from
    /// HERO_PROC_REGISTRY_TOKEN, else from secrets/core.sops.yaml when this machine's age
    /// key opens it.
    Lock {
        /// The config tree (its work tree: the lock is written before the commit).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Fetch nothing, write nothing: exit 1 when a run artifact is not pinned or a
        /// pin is unused (for CI).
        #[arg(long)]
        check: bool,
    },
    /// Artifact versions in the daemon's cache: name, version, digest, size, used by, last used.
    List,
    /// Remove cached versions beyond the newest `keep` per name that the applied revision
    /// does not use (default: hero.yaml registry.keep, else 3).
    Prune {
        /// Versions kept per name, 1 to 1000 (what the applied revision runs is always kept).
        #[arg(long)]
        keep: Option<u32>,
    },
}

pub async fn artifact(cmd: ArtifactCmd, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCmd::Lock { dir, check } => lock(dir, check, out).await,
        ArtifactCmd::List => {
            let rows: Vec<ArtifactView> = connect(out).await?.call_typed::<m::ArtifactList>(&NoParams {}).await?;
            if out.json() {
                out.print_json(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            if rows.is_empty() {
                if !out.quiet {
                    println!("no artifacts: no applied revision runs one");
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<24} {:<14} {:<14} {:>10} {:<7} {:<20} USED BY",
                "NAME", "VERSION", "DIGEST", "SIZE", "CACHED", "LAST USED"
            );
            for r in rows {
                let digest = r.digest.strip_prefix("sha256:").unwrap_or(&r.digest);
                println!(
                    "{:<24} {:<14} {:<14} {:>10} {:<7} {:<20} {}",
                    r.name,
                    r.version,
                    &digest[..digest.len().min(12)],
                    human_bytes(r.size),
                    if r.cached { "yes" } else { "no" },
                    format!(
                        "{} ago",
                        crate::reconcile::humanize(((hero_proc_store::now_ms() - r.last_used_ms) / 1000).max(0) as u64)
                    ),
                    r.used_by.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ArtifactCmd::Prune { keep } => {
            let p: ArtifactPruned = connect(out).await?.call_typed::<m::ArtifactPrune>(&ArtifactPrune { keep }).await?;
            if out.json() {
                out.print_json(&p)?;
            } else if !out.quiet {
                if p.versions.is_empty() && p.files == 0 {
                    println!("nothing to prune");
                }
                for v in &p.versions {
                    println!("removed {v}");
                }
                if p.files > 0 {
                    println!("{} file(s), {} freed", p.files, human_bytes(p.bytes));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(serde::Serialize)]
struct LockReport {
    lock: String,
    added: Vec<(String, String, u64)>,
    removed: Vec<String>,
    unchanged: usize,
    /// `--check`: run artifacts without a pin.
    missing: Vec<String>,
}

async fn lock(dir: PathBuf, check: bool, out: &Output) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{}: not a directory; pass the root of a config repository", dir.display());
    }
    let checked = load_tree(&DirSource::new(&dir));
    let tree = &checked.tree;
    let used: BTreeSet<ArtifactId> = std::iter::once(&tree.base)
        .chain(tree.hosts.values())
        .flat_map(|s| s.artifacts.iter().map(|u| u.id.clone()))
        .collect();
    let pinned: BTreeMap<ArtifactId, Digest> =
        tree.lock.entries.iter().map(|(k, e)| (k.clone(), e.digest.clone())).collect();
    let missing: Vec<ArtifactId> = used.iter().filter(|id| !pinned.contains_key(id)).cloned().collect();
    let unused: Vec<ArtifactId> = pinned.keys().filter(|id| !used.contains(id)).cloned().collect();
    let lock_path = dir.join(LOCK_FILE);
    if check {
        let stale = !missing.is_empty() || !unused.is_empty();
        if out.json() {
            out.print_json(&LockReport {
                lock: lock_path.display().to_string(),
                added: Vec::new(),
                removed: unused.iter().map(ToString::to_string).collect(),
                unchanged: pinned.len() - unused.len(),
                missing: missing.iter().map(ToString::to_string).collect(),
            })?;
        } else {
            for id in &missing {
                eprintln!("{}: {id} is run but not pinned", lock_path.display());
            }
            for id in &unused {
                eprintln!("{}: {id} is pinned but nothing runs it", lock_path.display());
            }
            if stale {
                eprintln!("error: {LOCK_FILE} is stale; run `hero_proc artifact lock` and commit it");
            } else if !out.quiet {
                println!("{LOCK_FILE} is up to date ({} pinned)", pinned.len());
            }
        }
        return Ok(if stale { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let mut added = Vec::new();
    let mut next: BTreeMap<ArtifactId, Digest> = pinned.into_iter().filter(|(k, _)| used.contains(k)).collect();
    if !missing.is_empty() {
        let Some(reg) = &tree.settings.registry else {
            bail!(
                "{}: hero.yaml has no `registry`; add `registry: {{ url: https://HOST/api/packages/OWNER/generic }}` so the versions can be fetched",
                dir.display()
            );
        };
        let token = registry_token(&dir, tree, reg)?;
        if token.is_some()
            && let Err((why, hint)) = hero_proc_spec::schema::check_registry_url(&reg.url, true)
        {
            bail!("{why}\n  hint: {hint}");
        }
        let registry = Registry { url: reg.url.clone(), token, timeout: reg.timeout.0 };
        let installer =
            Installer::new(registry, Cache::new(&std::env::temp_dir()), std::sync::Arc::new(Counters::default()))
                .map_err(anyhow::Error::msg)?;
        let bar = Bar::new(!out.quiet && std::io::stderr().is_terminal());
        let progress: &dyn Progress = if bar.on { &bar } else { &Quiet };
        let mut failed = Vec::new();
        for (id, r) in missing.iter().zip(installer.digests_of(&missing, progress).await) {
            match r {
                Ok((d, size)) => {
                    added.push((id.to_string(), d.to_string(), size));
                    next.insert(id.clone(), d);
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        bar.clear();
        if !failed.is_empty() {
            bail!("{LOCK_FILE} not written:\n  {}", failed.join("\n  "));
        }
    }
    let text = render_lock(&next);
    let old = std::fs::read_to_string(&lock_path).ok();
    if old.as_deref() != Some(text.as_str()) && !(next.is_empty() && old.is_none()) {
        let tmp = dir.join(format!(".{LOCK_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &lock_path).with_context(|| format!("cannot write {}", lock_path.display()))?;
    }
    let report = LockReport {
        lock: lock_path.display().to_string(),
        added,
        removed: unused.iter().map(ToString::to_string).collect(),
        unchanged: next.len() - missing.len(),
        missing: Vec::new(),
    };
    if out.json() {
        out.print_json(&report)?;
    } else if !out.quiet {
        for (id, d, size) in &report.added {
            println!("+ {id}: {d} ({})", human_bytes(*size));
        }
        for id in &report.removed {
            println!("- {id} (no action runs it)");
        }
        if report.added.is_empty() && report.removed.is_empty() {
            println!("{LOCK_FILE} is up to date ({} pinned)", report.unchanged);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The token for `artifact lock`: the environment, else the SOPS secret if this
/// machine's key opens it. Never printed.
fn registry_token(
    dir: &std::path::Path,
    tree: &hero_proc_spec::ConfigTree,
    reg: &hero_proc_spec::Registry,
) -> anyhow::Result<Option<Token>> {
    if let Some(v) = std::env::var_os(TOKEN_ENV) {
        return Ok(Some(Token::new(v.to_string_lossy().into_owned())));
    }
    let Some(name) = reg.token.as_ref().map(|t| t.name.clone()) else { return Ok(None) };
    let Some(file) = tree.secrets.get(hero_proc_spec::DEFAULT_CONTEXT) else { return Ok(None) };
    let keys = match hero_proc_sops::load_identities(&hero_proc_sops::KeyEnv::from_process_env()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!(
                "note: no registry token ({TOKEN_ENV} is unset and {}/{} cannot be opened here: {e})",
                dir.display(),
                file.path
            );
            return Ok(None);
        }
    };
    match hero_proc_sops::decrypt(&file.raw, &keys) {
        Ok(d) => Ok(d.get(&name).map(|v| Token::new(v.expose()))),
        Err(e) => {
            eprintln!("note: no registry token ({TOKEN_ENV} is unset and {} cannot be decrypted here: {e})", file.path);
            Ok(None)
        }
    }
}

/// One progress line on stderr, redrawn in place (a terminal only).
struct Bar {
    on: bool,
    state: Mutex<BTreeMap<String, (u64, Option<u64>)>>,
    /// Redrawn at most every 100 ms.
    drawn: Mutex<Option<std::time::Instant>>,
}

impl Bar {
    fn new(on: bool) -> Bar {
        Bar { on, state: Mutex::default(), drawn: Mutex::default() }
    }
    fn draw(&self, s: &BTreeMap<String, (u64, Option<u64>)>) {
        let parts: Vec<String> = s
            .iter()
            .map(|(id, (got, total))| match total {
                Some(t) if *t > 0 => format!("{id} {}%", got * 100 / t),
                _ => format!("{id} {}", human_bytes(*got)),
            })
            .collect();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2Kfetching {}", parts.join(", "));
        let _ = e.flush();
    }
    fn clear(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

impl Progress for Bar {
    fn started(&self, id: &ArtifactId, total: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(id.to_string(), (0, total));
        self.draw(&s);
    }
    fn advanced(&self, id: &ArtifactId, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = s.get_mut(&id.to_string()) {
            e.0 += bytes;
        }
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if drawn.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100)) {
            *drawn = Some(std::time::Instant::now());
            self.draw(&s);
        }
    }
    fn finished(&self, id: &ArtifactId) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.remove(&id.to_string());
        self.draw(&s);
    }
}
