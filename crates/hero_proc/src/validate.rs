//! `hero_proc validate`: the CI gate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hero_proc_spec::{Checked, DirSource, GitSource, Severity, load_tree};
use serde::Serialize;

use crate::{Format, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The config tree (a directory; with --rev, a git repository).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Check the tree committed at this revision instead of the files on disk.
    #[arg(long)]
    rev: Option<String>,
    /// Fail on warnings too.
    #[arg(long)]
    strict: bool,
    /// Also check the migrations against this database's record (opened read-only):
    /// edited or deleted applied files and new files that sort before applied ones.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    tree: String,
    errors: usize,
    warnings: usize,
    objects: Counts,
    diagnostics: &'a [hero_proc_spec::Diagnostic],
}

#[derive(Serialize)]
struct Counts {
    actions: usize,
    services: usize,
    secrets_files: usize,
    migrations: usize,
    hosts: usize,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!(
            "{}: not a directory; pass the root of a config repository (it holds actions/, secrets/, migrations/)",
            args.dir.display()
        );
    }
    let (checked, label) = match &args.rev {
        None => {
            let src = DirSource::new(&args.dir);
            (load_tree(&src), args.dir.display().to_string())
        }
        Some(rev) => {
            let repo = git2::Repository::open(&args.dir)
                .with_context(|| format!("{}: not a git repository (needed for --rev)", args.dir.display()))?;
            let src = GitSource::at_rev(&repo, rev).with_context(|| format!("cannot read revision `{rev}`"))?;
            let label = hero_proc_spec::TreeSource::describe(&src);
            (load_tree(&src), label)
        }
    };
    let mut checked = checked;
    if let Some(db) = &args.db {
        check_against_db(&mut checked, db)?;
    }
    let failed = checked.errors() > 0 || (args.strict && checked.warnings() > 0);
    match out.format {
        Format::Json => {
            let report = report(&checked, &label, failed);
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        // (markdown is refused before any command runs but a base preview)
        Format::Text | Format::Markdown => print_text(&checked, &label, out),
    }
    if failed {
        let (e, w) = (checked.errors(), checked.warnings());
        if e > 0 {
            eprintln!("error: {label}: {e} error{} found; fix them and run `hero_proc validate` again", plural(e));
        } else {
            eprintln!("error: {label}: {w} warning{} found and --strict is set", plural(w));
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// SPEC 3.3: applied migrations are checked by SHA-256 against the database's record.
fn check_against_db(checked: &mut Checked, db: &std::path::Path) -> anyhow::Result<()> {
    let store = hero_proc_store::Store::open_read_only(db)
        .with_context(|| format!("--db {}: cannot open the database read-only", db.display()))?;
    let applied: Vec<hero_proc_migrate::Applied> =
        store.applied_migrations()?.iter().map(hero_proc_reconcile::live::applied_of).collect();
    if let Err(errors) = hero_proc_migrate::check_history(&checked.tree.migrations, &applied) {
        for e in errors.0 {
            let file = format!("migrations/{}", e.name());
            let text = e.to_string();
            let message = text.strip_prefix(&format!("{file}: ")).unwrap_or(&text).to_owned();
            checked.diagnostics.push(hero_proc_spec::Diagnostic {
                severity: Severity::Error,
                code: "migration.history",
                file: file.into(),
                line: 1,
                col: 1,
                message,
                hint: Some(format!("checked against {}", db.display())),
            });
        }
    }
    Ok(())
}

fn report<'a>(c: &'a Checked, label: &str, failed: bool) -> Report<'a> {
    Report {
        ok: !failed,
        tree: label.to_owned(),
        errors: c.errors(),
        warnings: c.warnings(),
        objects: counts(c),
        diagnostics: &c.diagnostics,
    }
}

fn counts(c: &Checked) -> Counts {
    let t = &c.tree;
    Counts {
        actions: t.base.actions.len() + t.hosts.values().map(|h| h.actions.len()).sum::<usize>(),
        services: t.base.services.len() + t.hosts.values().map(|h| h.services.len()).sum::<usize>(),
        secrets_files: t.secrets.len(),
        migrations: t.migrations.len(),
        hosts: t.hosts.len(),
    }
}

fn print_text(c: &Checked, label: &str, out: &Output) {
    for d in &c.diagnostics {
        if out.quiet && d.severity == Severity::Warning {
            continue;
        }
        if out.color {
            let (color, word) = match d.severity {
                Severity::Error => ("\x1b[1;31m", "error"),
                Severity::Warning => ("\x1b[1;33m", "warning"),
            };
            println!("\x1b[1m{}:{}:{}:\x1b[0m {color}{word}:\x1b[0m {}", d.file, d.line, d.col, d.message);
            if let Some(h) = &d.hint {
                println!("  \x1b[36mhint:\x1b[0m {h}");
            }
        } else {
            println!("{d}");
        }
    }
    if !out.quiet {
        let n = counts(c);
        println!(
            "{label}: {} error{}, {} warning{} ({} actions, {} services, {} secrets files, {} migrations, {} host overlays)",
            c.errors(),
            plural(c.errors()),
            c.warnings(),
            plural(c.warnings()),
            n.actions,
            n.services,
            n.secrets_files,
            n.migrations,
            n.hosts
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
