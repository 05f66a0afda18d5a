//! `hero_proc man [--dir DIR]`: the manual pages, generated from the command line's own
//! definition (so they cannot drift from `--help`), with the sections clap does not
//! know: EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
Success (\fBstatus\fR: healthy; \fBreconcile \-\-detailed\-exitcode\fR: no changes).
.TP
1
An error, with one line \fIerror: ...\fR on stderr (JSON on stderr with \fB\-\-format json\fR); the daemon cannot be reached.
.TP
2
\fBreconcile \-\-dry\-run \-\-detailed\-exitcode\fR: there are changes.
.TP
3
\fBstatus\fR: something is degraded; each cause is named.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
HERO_ROOTDIR
The root every path lives under (default \fI~/hero\fR).
.TP
HERO_PROC_SOCKET
The daemon's RPC socket (default \fI$HERO_ROOTDIR/var/sockets/hero_proc.sock\fR).
.TP
HERO_PROC_AGE_KEY_FILE, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, SOPS_AGE_KEY_CMD
The host's age identity for SOPS files (never passed on to services).
.TP
HERO_PROC_WEBHOOK_SECRET
The push webhook's HMAC secret (\fBserve \-\-webhook\-addr\fR).
.TP
HERO_PROC_REPO
The repository URL for \fBserve\fR when it carries a credential (kept out of \fBps\fR).
.TP
HERO_PROC_REGISTRY_TOKEN
The artifact registry token for \fBartifact lock\fR.
.TP
HERO_PROC_NO_AUTOSTART_DB
Set to 1: skip the hero_db check.
.TP
NO_COLOR
No colour in output.
"#;

const FILES: &str = r#".SH FILES
.TP
$HERO_ROOTDIR/var/hero_proc/hero_proc.db
The SQLite store (jobs, runs, secrets sealed with age, history).
.TP
$HERO_ROOTDIR/var/hero_proc/logs/
Job output and the daemon's events.
.TP
$HERO_ROOTDIR/var/sockets/hero_proc.sock
The RPC socket (owner only).
.TP
$HERO_ROOTDIR/var/hero_proc/artifacts/, $HERO_ROOTDIR/bin/NAME@VERSION
Installed artifacts and their links.
.TP
actions/*.yaml, hero.yaml, secrets/*.sops.yaml, migrations/*.rhai, artifacts.lock
A config repository (docs/SPEC.md).
"#;

/// The page of `cmd` named `name`, with the extra sections and SEE ALSO.
fn page(cmd: clap::Command, name: &str, see_also: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // A page per command, once per run: the leaked names live as long as the process.
    let name: &'static str = name.to_owned().leak();
    clap_mangen::Man::new(cmd.name(name)).render(&mut buf)?;
    out.write_all(&buf)?;
    out.write_all(EXIT_STATUS.as_bytes())?;
    out.write_all(ENVIRONMENT.as_bytes())?;
    out.write_all(FILES.as_bytes())?;
    if !see_also.is_empty() {
        writeln!(out, ".SH \"SEE ALSO\"")?;
        writeln!(out, "{}", see_also.iter().map(|s| format!("\\fB{s}\\fR(1)")).collect::<Vec<_>>().join(", "))?;
    }
    Ok(())
}

pub fn write(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let root = super::Cli::command();
    let subs: Vec<clap::Command> = root.get_subcommands().filter(|c| c.get_name() != "help").cloned().collect();
    let names: Vec<String> = subs.iter().map(|c| format!("hero_proc-{}", c.get_name())).collect();
    let Some(dir) = dir else {
        page(root, "hero_proc", &names, &mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::File::create(dir.join("hero_proc.1"))?;
    page(root, "hero_proc", &names, &mut f)?;
    for (sub, name) in subs.into_iter().zip(&names) {
        let mut f = std::fs::File::create(dir.join(format!("{name}.1")))?;
        page(sub, name, &["hero_proc".to_owned()], &mut f)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// One page per command, each with the sections an operator looks for.
    #[test]
    fn every_command_has_a_page_with_exit_status_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        super::write(Some(dir.path())).unwrap();
        let main = std::fs::read_to_string(dir.path().join("hero_proc.1")).unwrap();
        for sub in ["service", "reconcile", "artifact", "status", "validate", "serve"] {
            let page = std::fs::read_to_string(dir.path().join(format!("hero_proc-{sub}.1")))
                .unwrap_or_else(|e| panic!("hero_proc-{sub}.1: {e}"));
            for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH \"SEE ALSO\""] {
                assert!(page.contains(section), "hero_proc-{sub}.1 lacks {section}");
            }
            assert!(page.contains(&format!("hero_proc\\-{sub}")), "named after its command");
            assert!(main.contains(&format!("\\fBhero_proc-{sub}\\fR(1)")), "the main page points to it");
        }
    }
}
