//! `hero_proc serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use hero_proc_daemon::{Paths, ServeOptions};

use crate::Output;

#[derive(clap::Args)]
pub struct Args {
    /// The database file [default: $HERO_ROOTDIR/var/hero_proc/hero_proc.db].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Stop supervised processes when the daemon exits (default: leave them running;
    /// the next daemon re-attaches to them).
    #[arg(long)]
    stop_on_exit: bool,
    /// Delete finished jobs and runs older than this many days; given, it wins over
    /// hero.yaml `retention.max_age_days` [default: hero.yaml, else 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_age_days: Option<u64>,
    /// Keep at most about this many finished rows per history table; given, it wins over
    /// hero.yaml `retention.max_rows_per_table` [default: hero.yaml, else 100000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows_per_table: Option<u64>,
    /// How often the compactor runs (e.g. 10m, 1h); given, it wins over hero.yaml
    /// `retention.compact_every` [default: hero.yaml, else 1h].
    #[arg(long, value_parser = parse_every)]
    compact_every: Option<std::time::Duration>,
    /// Also serve `/metrics` and `/metrics/services` on this TCP address (e.g.
    /// 127.0.0.1:9464) for Prometheus. `/metrics/services` is served there only with
    /// --metrics-token-file.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// A file (mode 600) holding the bearer token every request to --metrics-addr must
    /// carry (`openssl rand -hex 32 > FILE`; Prometheus: `authorization: {
    /// credentials_file: FILE }`).
    #[arg(long, value_name = "FILE")]
    metrics_token_file: Option<std::path::PathBuf>,
    /// Follow this config repository: a local path (watched: a commit applies at once)
    /// or a URL (file://, https://, ssh://, user@host:path; polled every --interval).
    /// A URL with a token belongs in HERO_PROC_REPO, not on the command line (`ps`
    /// shows that to every user); better still, a git credential helper.
    #[arg(long, env = "HERO_PROC_REPO", hide_env_values = true)]
    repo: Option<String>,
    /// The branch to follow [default: a local repository's checked-out branch at start;
    /// `main` for a URL].
    #[arg(long, requires = "repo")]
    branch: Option<String>,
    /// Which `hosts/<host>/` overlay applies [default: this machine's host name].
    #[arg(long)]
    host: Option<String>,
    /// How often to fetch and reconcile (also reverts drift) [default: hero.yaml `interval`, 1m].
    #[arg(long, requires = "repo", value_parser = parse_every)]
    interval: Option<std::time::Duration>,
    /// Serve the push webhook (Forgejo/Gitea/GitHub) on this TCP address; requests must be
    /// signed with HERO_PROC_WEBHOOK_SECRET.
    #[arg(long, requires = "repo")]
    webhook_addr: Option<String>,
    /// Apply only commits carrying an SSH signature that verifies against FILE (OpenSSH
    /// allowed_signers, as git's gpg.ssh.allowedSignersFile) for the committer's email.
    /// Keep FILE on this host, outside the repository it guards; it is read on every
    /// sync, so rotating a key needs no restart (docs/RECONCILE.md).
    #[arg(long, requires = "repo", value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--allowed-signers FILE` at start: readable and parseable (so a typo stops the daemon
/// now, not every sync later), and not inside the repository it guards (whoever can
/// push could then allow their own key).
fn check_allowed_signers(file: &std::path::Path, repo: &str) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(file).map_err(|e| anyhow::anyhow!("--allowed-signers {}: {e}", file.display()))?;
    if !hero_proc_reconcile::repo::is_remote(repo)
        && let Ok(r) = std::fs::canonicalize(repo)
        && abs.starts_with(&r)
    {
        anyhow::bail!(
            "--allowed-signers {} is inside the repository it guards ({}): anyone who can push could allow their own key\n  hint: keep it on the host, e.g. /etc/hero_proc/allowed_signers",
            abs.display(),
            r.display()
        );
    }
    let signers = hero_proc_reconcile::trust::AllowedSigners::load(&abs)?;
    if signers.is_empty() {
        anyhow::bail!("--allowed-signers {}: no key in it, so no commit could ever apply", abs.display());
    }
    tracing::info!(file = %abs.display(), keys = signers.len(), "applying only commits signed by an allowed signer");
    Ok(abs)
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        // Request bodies (which may carry a `secret.set` value) are logged by jsonrpsee
        // at trace level: never let them through.
        .add_directive("jsonrpsee=info".parse().expect("static directive"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let root = Paths::default_root();
    // Key material is read now, before the environment is scrubbed for the children.
    let age_keys = hero_proc_sops::KeyEnv::from_process_env();
    let webhook_secret = std::env::var("HERO_PROC_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty());
    let reconcile = match args.repo {
        None => None,
        Some(location) => {
            let redacted = hero_proc_reconcile::repo::redact_url(&location);
            let from_env = std::env::var("HERO_PROC_REPO").is_ok_and(|v| v == location);
            if redacted != location && !from_env {
                tracing::warn!(
                    repo = %redacted,
                    "the repository URL holds a credential on the command line, where every local user can read it (ps); pass it in HERO_PROC_REPO or use a git credential helper (docs/RECONCILE.md)"
                );
            }
            let location = hero_proc_reconcile::repo::absolute_location(&location)
                .map_err(|e| anyhow::anyhow!("--repo {location}: {e}"))?;
            hero_proc_reconcile::repo::check_local(&location).map_err(|e| anyhow::anyhow!("--repo {e}"))?;
            // A local repository without --branch follows the branch checked out now, not
            // whatever HEAD later points at.
            let branch = args.branch.or_else(|| hero_proc_reconcile::repo::checked_out_branch(&location));
            let allowed_signers = match args.allowed_signers {
                Some(file) => Some(check_allowed_signers(&file, &location)?),
                None => None,
            };
            Some(hero_proc_daemon::reconciler::ReconcileOptions {
                repo: hero_proc_reconcile::RepoConfig { location, branch },
                interval: args.interval,
                webhook_addr: args.webhook_addr,
                webhook_secret,
                allowed_signers,
            })
        }
    };
    // Children inherit the daemon's environment as it is (the fast spawn path), so make
    // it right once: HERO_ROOTDIR set, key material removed. (A reconciler that needs the
    // age key must read it before this point.)
    // SAFETY: no thread has been started yet (the runtime is built below).
    unsafe {
        // It may hold a token: read above, never inherited by a child.
        std::env::remove_var("HERO_PROC_REPO");
        hero_proc_engine::process::scrub_daemon_env(&root)
    };
    let mut paths = Paths::under(root);
    paths.socket = out.socket.clone();
    if let Some(db) = args.db {
        paths.db = db;
    }
    let opts = ServeOptions {
        paths,
        stop_on_exit: args.stop_on_exit,
        skip_hero_db_check: hero_proc_engine::hero_db::skip_from_env(
            std::env::var("HERO_PROC_NO_AUTOSTART_DB").ok().as_deref(),
        ),
        metrics_addr: args.metrics_addr,
        metrics_token_file: args.metrics_token_file,
        reconcile,
        host: args.host,
        age_keys,
        retention: hero_proc_daemon::compactor::RetentionFlags {
            max_age_days: args.max_age_days,
            max_rows_per_table: args.max_rows_per_table,
            every: args.compact_every,
        },
    };
    let stop_on_exit = opts.stop_on_exit;
    hero_proc_daemon::reconciler::tune_allocator();
    // One async worker: the daemon's async work is socket I/O and small handlers (the
    // supervisor has its own thread, slow work goes to the blocking pool), and each hand-off
    // between two workers was a context switch: a second worker cost 5 % more CPU a
    // `run.submit` (docs/PERFORMANCE.md, stop 35). A multi-thread runtime still, for its
    // blocking pool and `block_in_place`.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM while the engine boots (and starts services) must
        // take the orderly path below, not kill the daemon mid-start.
        let terminated = crate::on_termination();
        let shutdown = async {
            terminated.await;
            if stop_on_exit {
                tracing::info!("shutting down; stopping supervised processes (--stop-on-exit)");
            } else {
                tracing::info!("shutting down; supervised processes keep running");
            }
        };
        hero_proc_daemon::serve(opts, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let d = hero_proc_spec::schema::parse_duration(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}
