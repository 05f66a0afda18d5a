//! `hero_proc serve` as a library function: the binary only parses flags, and tests
//! boot the real daemon in-process (or as a process) against a temporary root.
//!
//! Start-up order (SPEC 5.1): state folders (0700 when created), the locks (one daemon
//! per root, per database file and per socket), the RPC socket (0600, bound before any
//! process starts), the store (schema migrations), the log store, the engine (re-attach,
//! then autostart), then serving. A stop leaves supervised processes running
//! unless `stop_on_exit`; the next daemon re-attaches to them.

pub mod artifacts;
pub mod commit_status;
pub mod compactor;
pub mod context;
pub mod lock;
pub mod metrics;
pub mod metrics_token;
pub mod migrate_ops;
pub mod paths;
pub mod reconciler;
pub mod rpc;
pub mod secrets;
pub mod views;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use hero_proc_engine::{Engine, EngineConfig};
use hero_proc_logstore::{LogStore, LogStoreConfig};
use hero_proc_store::Store;
use thiserror::Error;

pub use paths::Paths;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot create {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error(transparent)]
    Path(#[from] hero_proc_rpc::listen::ListenError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("cannot open the database: {0}")]
    Store(#[from] hero_proc_store::StoreError),
    #[error("cannot open the log store: {0}")]
    Logs(#[from] hero_proc_logstore::Error),
    #[error(transparent)]
    Vault(#[from] secrets::VaultError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics { addr: String, source: std::io::Error },
    #[error(transparent)]
    MetricsToken(#[from] metrics_token::TokenError),
    #[error(
        "--metrics-token-file is set without --metrics-addr: the token guards that TCP port (the RPC socket needs none)"
    )]
    MetricsTokenWithoutAddr,
    #[error("cannot serve the webhook on {addr}: {message}")]
    Webhook { addr: String, message: String },
    #[error("cannot listen on {path}: {source}")]
    Socket { path: String, source: std::io::Error },
}

/// Everything `serve` needs besides a shutdown signal.
pub struct ServeOptions {
    pub paths: Paths,
    pub stop_on_exit: bool,
    /// `HERO_PROC_NO_AUTOSTART_DB=1`: do not check that hero_db runs (SPEC 5.3).
    pub skip_hero_db_check: bool,
    /// History retention and the compactor's schedule given as `serve` flags (SPEC 5.5):
    /// each one given wins over hero.yaml `retention:`.
    pub retention: compactor::RetentionFlags,
    /// Also serve `/metrics` and `/metrics/services` on this TCP address, for Prometheus.
    pub metrics_addr: Option<String>,
    /// `--metrics-token-file`: the bearer token `metrics_addr` asks for (needed there for
    /// `/metrics/services`).
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// `--repo` and friends: follow a config repository (SPEC 1, 3).
    pub reconcile: Option<reconciler::ReconcileOptions>,
    /// `--host`: which `hosts/<host>/` overlay applies (default: the system host name).
    pub host: Option<String>,
    /// Where the age identities are, read before the daemon's environment is scrubbed.
    pub age_keys: hero_proc_sops::KeyEnv,
}

/// A running daemon: the engine handle and what the RPC server shares.
pub struct Daemon {
    pub engine: Engine,
    pub vault: Arc<secrets::Vault>,
    pub paths: Paths,
    /// Flags, else the applied hero.yaml, else defaults (the reconciler updates it).
    pub retention: Arc<compactor::RetentionSettings>,
    pub metrics_addr: Option<String>,
    pub metrics_token: Option<metrics_token::MetricsToken>,
    pub reconciler: Arc<reconciler::Reconciler>,
    /// Bound before the engine starts, so a daemon that cannot have its socket starts
    /// nothing.
    listener: Option<std::os::unix::net::UnixListener>,
    _socket_lock: lock::SocketLock,
    _db_lock: lock::DbLock,
    _lock: lock::RootLock,
}

/// Run the daemon until `shutdown` resolves. Returns once the socket is closed and the
/// engine has stopped (supervised processes keep running unless `stop_on_exit`).
pub async fn serve(opts: ServeOptions, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let mut daemon = start(opts)?;
    let listener = rpc::into_tokio(&daemon.paths.socket, daemon.listener.take())?;
    let metrics_listener = match &daemon.metrics_addr {
        Some(addr) => Some(
            hero_proc_net::bind_tcp(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr: addr.clone(), source })?,
        ),
        None => None,
    };
    let compactor = compactor::Compactor::new(daemon.engine.clone(), daemon.retention.clone());
    let compactor_task = tokio::spawn(compactor.clone().run_on_schedule());
    let webhook_task = match daemon.reconciler.options().and_then(|o| o.webhook_addr.clone()) {
        Some(addr) => {
            let secret = daemon.reconciler.options().and_then(|o| o.webhook_secret.clone()).ok_or_else(|| {
                DaemonError::Webhook {
                    addr: addr.clone(),
                    message: "no secret: set HERO_PROC_WEBHOOK_SECRET (the secret configured in the forge's webhook); unsigned pushes are never accepted".into(),
                }
            })?;
            let l = hero_proc_net::bind_tcp(&addr)
                .await
                .map_err(|e| DaemonError::Webhook { addr: addr.clone(), message: e.to_string() })?;
            Some(tokio::spawn(webhook::serve(l, secret, daemon.reconciler.clone())))
        }
        None => None,
    };
    let _watcher = daemon.reconciler.watch_local();
    let sync_task = tokio::spawn(daemon.reconciler.clone().run());
    let ctx = Arc::new(context::Ctx::new(
        daemon.engine.clone(),
        daemon.paths.clone(),
        compactor,
        daemon.vault.clone(),
        daemon.reconciler.clone(),
    ));
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving /metrics over TCP");
        }
        tokio::spawn(metrics::serve_tcp(l, ctx.clone(), daemon.metrics_token.clone()))
    });
    tracing::info!(socket = %daemon.paths.socket.display(), root = %daemon.paths.root.display(), "hero_proc serving");
    rpc::serve(listener, ctx, shutdown).await;
    compactor_task.abort();
    sync_task.abort();
    if let Some(t) = webhook_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = daemon.engine.shutdown().await;
    let _ = std::fs::remove_file(&daemon.paths.socket);
    Ok(())
}

/// Empty job output files kept ready (see [`LogStore::keep_spare_outputs`]): a cold
/// start of 50 services takes most of them. Jobs that print nothing give theirs back.
const SPARE_OUTPUTS: usize = 64;

/// Set up state, lock, store, logs and engine (no socket yet).
pub fn start(opts: ServeOptions) -> Result<Daemon, DaemonError> {
    // A bad token file starts nothing (checked before any folder, lock or process).
    let metrics_token = match (&opts.metrics_token_file, &opts.metrics_addr) {
        (Some(_), None) => return Err(DaemonError::MetricsTokenWithoutAddr),
        (Some(f), Some(_)) => Some(metrics_token::MetricsToken::read(f)?),
        (None, _) => None,
    };
    let paths = opts.paths;
    paths.create_folders()?;
    let lock = lock::RootLock::acquire(&paths.lock_file(), &paths.root)?;
    let db_lock = lock::DbLock::acquire(&paths.db)?;
    let socket_lock = lock::SocketLock::acquire(&paths.socket)?;
    let listener = rpc::bind(&paths.socket)?;
    let store = Arc::new(Store::open(&paths.db)?);
    let logs = Arc::new(LogStore::open(&paths.logs, LogStoreConfig::default())?);
    // Job files made ahead of need: a start renames one instead of allocating an inode.
    if let Err(e) = logs.keep_spare_outputs(SPARE_OUTPUTS) {
        tracing::warn!("{e}; job output files are created as jobs start");
    }
    let vault = Arc::new(secrets::Vault::open(store.clone(), &paths.state.join("at_rest.agekey"))?);
    let engine = Engine::start(
        store,
        logs,
        EngineConfig {
            expand: paths.expand(),
            secrets: vault.clone(),
            stop_on_exit: opts.stop_on_exit,
            // With a repository, hero_db is checked after the first reconcile instead.
            ensure_hero_db_at_boot: !opts.skip_hero_db_check && opts.reconcile.is_none(),
        },
    );
    let host = opts.host.or_else(reconciler::system_host_name);
    let retention = compactor::RetentionSettings::new(opts.retention);
    let reconciler = Arc::new(
        reconciler::Reconciler::new(
            engine.clone(),
            vault.clone(),
            &paths,
            opts.age_keys,
            host,
            opts.reconcile,
            !opts.skip_hero_db_check,
        )
        .with_retention(retention.clone()),
    );
    Ok(Daemon {
        engine,
        vault,
        paths,
        retention,
        metrics_addr: opts.metrics_addr,
        metrics_token,
        reconciler,
        listener: Some(listener),
        _socket_lock: socket_lock,
        _db_lock: db_lock,
        _lock: lock,
    })
}
