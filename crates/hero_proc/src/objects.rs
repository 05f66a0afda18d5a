//! `hero_proc action ...` and `hero_proc service ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hero_proc_rpc::methods::{self as m, Method};
use hero_proc_rpc::wire::*;
use hero_proc_spec::{Diagnostics, ObjectSet, Service};
use serde_json::json;

use crate::{Output, connect};

#[derive(Subcommand)]
pub enum ActionCmd {
    /// Create or replace the actions (and services) of a YAML file in the actions/*.yaml format.
    Set {
        /// The YAML file (checked with `validate`'s rules before anything is sent).
        file: PathBuf,
    },
    /// Show one action: `name` or `context/name`.
    Get {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// List actions.
    List,
    /// Delete an action no service uses (exit 1 if there is none).
    Delete {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Create or replace the services (and actions) of a YAML file in the actions/*.yaml format.
    Set {
        /// The YAML file (checked with `validate`'s rules before anything is sent).
        file: PathBuf,
    },
    /// Show one service's spec.
    Get {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// List services with their state.
    List,
    /// Stop and delete a service (exit 1 if there is none).
    Delete {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// Start a service (its `requires` first); returns at once: `status` shows progress.
    /// On a service git manages with self_heal, a sync may undo it.
    Start {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// Stop a service: its stop signal to the process group, SIGKILL after its stop
    /// timeout. It stays stopped across daemon restarts until started or changed.
    Stop {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// Stop, then start a service; concurrent restarts coalesce into one.
    Restart {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// State, pid, restarts and health tree of one service.
    Status {
        /// `name` (in context core) or `context/name`.
        name: String,
    },
    /// The output of the service's current process (or, stopped, its last one).
    Logs {
        /// `name` (in context core) or `context/name`.
        name: String,
        /// Keep printing new output as it comes (within 50 ms), across restarts, until
        /// interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each process shown (at most 20000).
        #[arg(long)]
        tail: Option<usize>,
        /// The processes that ran in this window (e.g. 10m, 2h), oldest first; lines
        /// carry no time of their own, so whole processes are shown.
        #[arg(long, value_parser = parse_since)]
        since: Option<std::time::Duration>,
        /// The process before the current one (why did it restart?).
        #[arg(long, conflicts_with_all = ["since", "follow"])]
        previous: bool,
    },
}

fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    hero_proc_spec::schema::parse_duration(s)
}

/// Read and check a YAML file with the validator's rules; print its problems.
fn load_file(file: &PathBuf) -> anyhow::Result<ObjectSet> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut diags = Diagnostics::new();
    let set = hero_proc_spec::load::parse_objects(&file.display().to_string(), &text, &mut diags);
    let errors = diags.errors();
    for d in diags.finish() {
        eprintln!("{d}");
    }
    if errors > 0 {
        bail!("{}: {errors} error(s); nothing was sent", file.display());
    }
    Ok(set)
}

/// Actions first, so services never refer to an action that is not there yet.
async fn send_set(set: ObjectSet, out: &Output) -> anyhow::Result<ExitCode> {
    let mut client = connect(out).await?;
    let mut results = Vec::new();
    for a in set.actions {
        let key = format!("action {}/{}", a.context, a.name);
        let d: Done = client
            .call_typed::<m::ActionSet>(&ActionSet { action: std::sync::Arc::unwrap_or_clone(a) })
            .await
            .with_context(|| key.clone())?;
        if let Some(w) = &d.warning {
            eprintln!("warning: {w}");
        }
        results.push((key, d.changed));
    }
    for s in set.services {
        let key = format!("service {}/{}", s.context, s.name);
        let d: Done = client
            .call_typed::<m::ServiceSet>(&ServiceSet { service: std::sync::Arc::unwrap_or_clone(s) })
            .await
            .with_context(|| key.clone())?;
        if let Some(w) = &d.warning {
            eprintln!("warning: {w}");
        }
        results.push((key, d.changed));
    }
    if out.json() {
        let v: Vec<_> = results.iter().map(|(k, c)| json!({ "object": k, "changed": c })).collect();
        out.print_json(&v)?;
    } else if !out.quiet {
        for (k, changed) in results {
            println!("{k}: {}", if changed { "set" } else { "unchanged" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn action(cmd: ActionCmd, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ActionCmd::Set { file } => send_set(load_file(&file)?, out).await,
        ActionCmd::Get { name } => {
            let v: ActionView = connect(out).await?.call_typed::<m::ActionGet>(&Ref::parse(&name)?).await?;
            if out.json() {
                out.print_json(&v)?;
            } else {
                let origin = if v.managed {
                    format!("managed from git at {}", v.revision.as_deref().unwrap_or("?"))
                } else {
                    "set by hand".into()
                };
                println!("# {}/{} ({origin})", v.action.context, v.action.name);
                print!("{}", serde_yaml_ng::to_string(&v.action)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ActionCmd::List => {
            let list: Vec<ActionView> = connect(out).await?.call_typed::<m::ActionList>(&NoParams {}).await?;
            if out.json() {
                out.print_json(&list)?;
            } else {
                println!("{:<32} {:<9} {:<8} SCRIPT", "ACTION", "KIND", "ORIGIN");
                for v in list {
                    let kind = if v.action.process {
                        "process"
                    } else if v.action.schedule.is_some() {
                        "cron"
                    } else {
                        "one-shot"
                    };
                    let script: String = v.action.script.lines().next().unwrap_or("").chars().take(60).collect();
                    println!(
                        "{:<32} {:<9} {:<8} {script}",
                        format!("{}/{}", v.action.context, v.action.name),
                        kind,
                        if v.managed { "git" } else { "manual" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ActionCmd::Delete { name } => delete::<m::ActionDelete>(out, "action", &name).await,
    }
}

/// `delete` of something that does not exist fails (exit 1), as `get` does.
async fn delete<M: Method<Params = Ref, Result = Done>>(
    out: &Output,
    kind: &str,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let r = Ref::parse(name)?;
    let d: Done = connect(out).await?.call_typed::<M>(&r).await?;
    if let Some(w) = &d.warning {
        eprintln!("warning: {w}");
    }
    if !d.changed {
        anyhow::bail!("{kind} {r} not found; nothing was deleted (`hero_proc {kind} list` shows what exists)");
    }
    if out.json() {
        out.print_json(&d)?;
    } else if !out.quiet {
        println!("{r}: deleted");
    }
    Ok(ExitCode::SUCCESS)
}

async fn simple<M: Method<Params = Ref, Result = Done>>(
    out: &Output,
    name: &str,
    yes: &str,
    no: &str,
) -> anyhow::Result<ExitCode> {
    let d: Done = connect(out).await?.call_typed::<M>(&Ref::parse(name)?).await?;
    if let Some(w) = &d.warning {
        eprintln!("warning: {w}");
    }
    if out.json() {
        out.print_json(&d)?;
    } else if !out.quiet {
        let r = Ref::parse(name)?;
        println!("{r}: {}", if d.changed { yes } else { no });
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn service(cmd: ServiceCmd, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCmd::Set { file } => send_set(load_file(&file)?, out).await,
        ServiceCmd::Get { name } => {
            let s: Service = connect(out).await?.call_typed::<m::ServiceGet>(&Ref::parse(&name)?).await?;
            if out.json() {
                out.print_json(&s)?;
            } else {
                print!("{}", serde_yaml_ng::to_string(&s)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::List => {
            let list: Vec<ServiceView> = connect(out).await?.call_typed::<m::ServiceList>(&NoParams {}).await?;
            if out.json() {
                out.print_json(&list)?;
            } else {
                println!("{:<32} {:<7} {:<9} {:>8} {:>8}  REASON", "SERVICE", "WANT", "STATE", "PID", "RESTARTS");
                for s in list {
                    println!(
                        "{:<32} {:<7} {:<9} {:>8} {:>8}  {}",
                        format!("{}/{}", s.context, s.name),
                        s.status.name(),
                        s.state.as_str(),
                        s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        s.restarts,
                        s.reason.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Delete { name } => delete::<m::ServiceDelete>(out, "service", &name).await,
        ServiceCmd::Start { name } => simple::<m::ServiceStart>(out, &name, "starting", "already running").await,
        ServiceCmd::Stop { name } => simple::<m::ServiceStop>(out, &name, "stopping", "not running").await,
        ServiceCmd::Restart { name } => simple::<m::ServiceRestart>(out, &name, "restarting", "restarting").await,
        ServiceCmd::Logs { name, follow, tail, since, previous } => {
            let mut c = connect(out).await?;
            crate::logs::service(&mut c, crate::logs::ServiceLogs { name, follow, tail, since, previous }, out).await
        }
        ServiceCmd::Status { name } => {
            let mut c = connect(out).await?;
            let s: ServiceView = c.call_typed::<m::ServiceStatus>(&Ref::parse(&name)?).await?;
            if out.json() {
                out.print_json(&s)?;
            } else {
                print_status(&s);
                // As `systemctl status`: the last lines of output.
                if let Some(job) = s.job_id {
                    println!();
                    crate::logs::print_job(&mut c, job, Some(10), out).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The SPEC 5.4 tree: `S: running (pid N)` then one line per check.
fn print_status(s: &ServiceView) {
    let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let crash = if s.crash_loop { ", crash loop" } else { "" };
    println!("{}: {}{pid}{crash}", s.name, s.state.as_str());
    println!("  context:  {}", s.context);
    println!("  wanted:   {}", s.status.name());
    if s.state == ServiceState::Running {
        let secs = ((hero_proc_store::now_ms() - s.since_ms) / 1000).max(0) as u64;
        println!("  up:       {} (since {})", crate::reconcile::humanize(secs), crate::reconcile::utc(s.since_ms));
    }
    if s.liveness_restarts > 0 {
        println!("  restarts: {} ({} by liveness checks)", s.restarts, s.liveness_restarts);
    } else {
        println!("  restarts: {}", s.restarts);
    }
    if let Some(e) = &s.last_exit {
        println!("  last exit: {e}");
    }
    if let Some(r) = &s.reason {
        println!("  reason:   {r}");
    }
    let (domains, checks): (Vec<_>, Vec<_>) =
        s.health.iter().partition(|c| c.check.contains('/') && !c.check.contains(' '));
    for c in checks {
        println!("  {}: {}", c.check, health_word(c));
    }
    if !domains.is_empty() {
        println!("  domains:");
        for c in domains {
            println!("    {}: {}", c.check, health_word(c));
        }
    }
}

/// `healthy`/`unhealthy (why)`, how long ago it was probed, and the last error of a
/// check that recovered.
fn health_word(c: &CheckView) -> String {
    let now = hero_proc_store::now_ms();
    let ago = |ms: i64| crate::reconcile::humanize(((now - ms) / 1000).max(0) as u64);
    let mut w = match (&c.healthy, &c.detail) {
        (true, _) => "healthy".to_owned(),
        (false, Some(d)) => format!("unhealthy ({d})"),
        (false, None) => "unhealthy".to_owned(),
    };
    if c.probed_ms > 0 {
        w.push_str(&format!(", probed {} ago", ago(c.probed_ms)));
    }
    if let (true, Some(e), Some(at)) = (c.healthy, &c.last_error, c.last_error_ms) {
        w.push_str(&format!("; last error {} ago: {e}", ago(at)));
    }
    w
}
