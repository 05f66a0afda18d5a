//! `hero_proc`: the command-line interface. Parses flags and hands off to one module per
//! command group; the work itself lives in the library crates.

mod artifact;
mod export;
mod logs;
mod man;
mod math;
mod objects;
mod ops;
mod reconcile;
mod secrets;
mod serve;
mod status;
mod validate;
mod wait;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "hero_proc", version, about = "A process supervisor whose configuration lives in git")]
struct Cli {
    /// Output format for results.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The daemon's RPC socket [default: $HERO_PROC_SOCKET, else $HERO_ROOTDIR/var/sockets/hero_proc.sock].
    #[arg(long, global = true, env = "HERO_PROC_SOCKET")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// A pull-request comment: `reconcile --dry-run --base REV` only.
    Markdown,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config tree: YAML, schema, names, references, cycles, cron, durations,
    /// secrets, migrations and required services. Exit 1 on any error.
    Validate(validate::Args),
    /// Run the daemon: supervise processes and serve the RPC socket.
    Serve(serve::Args),
    /// Plan and apply the config repository once through the daemon (`--dry-run` to
    /// preview); `status`, `suspend`, `resume`, `now`.
    Reconcile(reconcile::Args),
    /// The machine at a glance: sync, services, health, crash loops, compactor, disk.
    /// Exit 0 healthy, 3 degraded (each cause named), 1 when the daemon cannot be reached.
    Status,
    /// Revisions applied (or refused), newest first: time, commit, result, author, summary.
    History(reconcile::HistoryArgs),
    /// Write the daemon's live state as a config repository in DIR: actions/*.yaml
    /// (a file per service with its actions, stand-alone actions per context), hero.yaml,
    /// secrets/CONTEXT.sops.yaml.example (names only, never values) and the applied
    /// migrations. Canonical: the same state gives the same bytes. Refuses a non-empty
    /// DIR without --force.
    Export(export::Args),
    /// Artifacts, binaries by version (`~/hero/bin/NAME@VERSION`): lock, list, prune.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCmd),
    /// Migrations (`migrations/*.rhai`): status, baseline.
    #[command(subcommand)]
    Migrate(reconcile::MigrateCmd),
    /// Actions: what to run (set, get, list, delete).
    #[command(subcommand)]
    Action(objects::ActionCmd),
    /// Services: supervised actions (set, get, list, delete, start, stop, restart, status).
    #[command(subcommand)]
    Service(objects::ServiceCmd),
    /// Secrets: set (value from stdin), get (metadata), list, delete. Values are never shown.
    #[command(subcommand)]
    Secret(secrets::SecretCmd),
    /// Jobs: single executions of an action (list, get, logs).
    #[command(subcommand)]
    Job(ops::JobCmd),
    /// Runs: groups of jobs ordered by depends_on (submit, list, get, cancel).
    #[command(subcommand)]
    Run(ops::RunCmd),
    /// The daemon's own event log (query).
    #[command(subcommand)]
    Log(ops::LogCmd),
    /// The daemon itself (info, compact, compactor-status).
    #[command(subcommand)]
    System(ops::SystemCmd),
    /// Serve the admin UI (a separate process that talks to the daemon through its RPC):
    /// on $HERO_ROOTDIR/var/sockets/hero_proc_ui.sock (owner only), and on --addr over TCP,
    /// where it needs the token of the login URL it prints (also written owner-only to
    /// $HERO_ROOTDIR/var/hero_proc/ui.token, new at every start).
    Ui {
        /// Also serve over TCP, e.g. 127.0.0.1:8470 (port 0 picks one and prints it).
        #[arg(long)]
        addr: Option<String>,
        /// Another Host name (or IP) browsers use to reach --addr, e.g. behind a proxy or
        /// on a 0.0.0.0 bind; repeatable. Requests naming any other Host get 421.
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `hero_proc man | man -l -`; with --dir, write
    /// hero_proc.1 and one page per command (hero_proc-service.1, ...) there.
    Man {
        /// Write every page into this folder instead of printing the main one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Settings every command shares.
pub struct Output {
    pub format: Format,
    pub quiet: bool,
    pub verbose: bool,
    /// Colour only on a terminal, and never when NO_COLOR is set.
    pub color: bool,
    pub socket: PathBuf,
}

impl Output {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
    /// Print a value as JSON (for `--format json`).
    pub fn print_json<T: serde::Serialize>(&self, v: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A client piped into `head` should end quietly, as Unix tools do. (Not the
        // daemon: a closed client socket must never kill it.)
        // SAFETY: resetting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let socket = cli.socket.unwrap_or_else(|| hero_proc_rpc::default_socket(&hero_proc_daemon::Paths::default_root()));
    let out = Output {
        format: cli.format,
        quiet: cli.quiet,
        verbose: cli.verbose,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        socket,
    };
    if cli.format == Format::Markdown && !matches!(&cli.command, Command::Reconcile(a) if a.previews_base()) {
        eprintln!(
            "error: --format markdown renders a base..head preview only: `hero_proc reconcile --dry-run --base REV --format markdown`"
        );
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Validate(args) => validate::run(args, &out),
        Command::Serve(args) => serve::run(args, &out),
        Command::Reconcile(args) => block_on(reconcile::run(args, &out)),
        Command::History(args) => block_on(reconcile::history(args, &out)),
        Command::Export(args) => block_on(export::run(args, &out)),
        Command::Status => block_on(status::run(&out)),
        Command::Migrate(cmd) => block_on(reconcile::migrate(cmd, &out)),
        Command::Artifact(cmd) => block_on(artifact::artifact(cmd, &out)),
        Command::Action(cmd) => block_on(objects::action(cmd, &out)),
        Command::Service(cmd) => block_on(objects::service(cmd, &out)),
        Command::Secret(cmd) => block_on(secrets::secret(cmd, &out)),
        Command::Job(cmd) => block_on(ops::job(cmd, &out)),
        Command::Run(cmd) => block_on(ops::run(cmd, &out)),
        Command::Log(cmd) => block_on(ops::log(cmd, &out)),
        Command::System(cmd) => block_on(ops::system(cmd, &out)),
        Command::Ui { addr, allow_hosts } => ui(addr, allow_hosts, &out),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hero_proc", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man::write(dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) if cli.format == Format::Json => {
            // A script reading JSON gets its error as JSON too (on stderr, exit 1).
            eprintln!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ui(addr: Option<String>, allow_hosts: Vec<String>, out: &Output) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let paths = hero_proc_daemon::Paths::under(hero_proc_daemon::Paths::default_root());
    let opts = hero_proc_ui::UiOptions {
        daemon_socket: out.socket.clone(),
        socket: paths.root.join("var/sockets/hero_proc_ui.sock"),
        addr,
        allow_hosts,
        token_file: paths.state.join("ui.token"),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let terminated = on_termination();
        hero_proc_ui::serve(opts, terminated).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon and the UI stop on SIGTERM or SIGINT. This installs both handlers now and
/// returns a future that ends at the first signal. Call it before starting anything a
/// signal must not cut short: until a handler is installed, SIGTERM's default action
/// kills the process outright (a daemon booting with `--stop-on-exit` would leave the
/// services it just started running). Must be called inside a tokio runtime.
pub fn on_termination() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Client commands are short: a current-thread runtime is enough.
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(f: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// Connect to the daemon named by `--socket`.
pub async fn connect(out: &Output) -> anyhow::Result<hero_proc_rpc::Client> {
    Ok(hero_proc_rpc::Client::connect(&out.socket).await?)
}

#[cfg(test)]
mod tests {
    /// The handlers are installed when `on_termination` returns, not when its future is
    /// first polled: a SIGTERM that arrives before the future is awaited (the daemon is
    /// still booting) must be caught, not kill the process. Before the fix this test
    /// process died of the signal.
    #[test]
    fn termination_handlers_are_installed_before_the_future_is_polled() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let terminated = super::on_termination();
            // SAFETY: raise sends a signal to this process; no memory is involved.
            assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
            // Still alive here; the signal is waiting for the future.
            tokio::time::timeout(std::time::Duration::from_secs(10), terminated)
                .await
                .expect("the SIGTERM sent before the first poll ends the future");
        });
    }
}

#[cfg(test)]
mod help_tests {
    /// clap's own consistency checks (conflicts and requirements name real arguments) on
    /// every subcommand; they run otherwise only when that subcommand is parsed.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every argument of every command says what it is: `--help` never shows a bare name.
    #[test]
    fn every_argument_has_help_text() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hero_proc", &mut missing);
        assert!(missing.is_empty(), "arguments without help text:\n{}", missing.join("\n"));
    }
}
