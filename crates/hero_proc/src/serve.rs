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
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let mut paths = Paths::under(Paths::default_root());
    paths.socket = out.socket.clone();
    if let Some(db) = args.db {
        paths.db = db;
    }
    let opts = ServeOptions { paths, stop_on_exit: args.stop_on_exit, secrets: None };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down; supervised processes keep running");
        };
        hero_proc_daemon::serve(opts, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
