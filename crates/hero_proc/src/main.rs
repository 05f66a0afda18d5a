//! `hero_proc`: the command-line interface. Parses flags and hands off to one module per
//! command group; the work itself lives in the library crates.

mod validate;

use std::io::IsTerminal;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config tree: YAML, schema, names, references, cycles, cron, durations,
    /// secrets, migrations and required services. Exit 1 on any error.
    Validate(validate::Args),
}

/// Settings every command shares.
pub struct Output {
    pub format: Format,
    pub quiet: bool,
    pub verbose: bool,
    /// Colour only on a terminal, and never when NO_COLOR is set.
    pub color: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output {
        format: cli.format,
        quiet: cli.quiet,
        verbose: cli.verbose,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(args, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
