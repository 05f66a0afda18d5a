//! `hero_proc secret ...`. A value is read from stdin or an environment variable, never
//! from the command line (where `ps` would show it), and is never printed back.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use crate::{Output, connect};

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Set a secret. The value comes from stdin (a trailing newline is removed) or --from-env.
    Set {
        /// The secret's name (actions reference it as `{ secret: NAME }`).
        name: String,
        /// The context the secret belongs to (actions of that context can use it).
        #[arg(long, default_value = "core")]
        context: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long)]
        from_env: Option<String>,
    },
    /// A secret's metadata (source, fingerprint, age), never its value.
    Get {
        /// The secret's name.
        name: String,
        /// The context the secret belongs to.
        #[arg(long, default_value = "core")]
        context: String,
    },
    /// Secrets by name.
    List,
    /// Delete a secret (exit 1 if there is none). Services already running keep the value
    /// they were started with.
    Delete {
        /// The secret's name.
        name: String,
        /// The context the secret belongs to.
        #[arg(long, default_value = "core")]
        context: String,
    },
}

pub async fn secret(cmd: SecretCmd, out: &Output) -> anyhow::Result<ExitCode> {
    let mut c = connect(out).await?;
    match cmd {
        SecretCmd::Set { name, context, from_env } => {
            let value = match from_env {
                Some(var) => std::env::var(&var).with_context(|| format!("environment variable {var} is not set"))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("cannot read the value from stdin")?;
                    if s.ends_with('\n') {
                        s.pop();
                        if s.ends_with('\r') {
                            s.pop();
                        }
                    }
                    s
                }
            };
            let d: Done = c
                .call_typed::<m::SecretSet>(&SecretSet {
                    context: context.clone(),
                    name: name.clone(),
                    value: SecretText::new(value),
                })
                .await?;
            if let Some(w) = &d.warning {
                eprintln!("warning: {w}");
            }
            if out.json() {
                out.print_json(&d)?;
            } else if !out.quiet {
                let what = if d.changed { "set" } else { "unchanged" };
                match d.message {
                    Some(m) => println!("secret {context}/{name}: {what}; {m}"),
                    None => println!("secret {context}/{name}: {what}"),
                }
            }
        }
        SecretCmd::Get { name, context } => {
            let list: Vec<SecretMetaView> = c.call_typed::<m::SecretList>(&NoParams {}).await?;
            let Some(s) = list.into_iter().find(|s| s.name == name && s.context == context) else {
                bail!("no secret {context}/{name}; `hero_proc secret list` shows what exists");
            };
            if out.json() { out.print_json(&s)? } else { print_list(&[s]) }
        }
        SecretCmd::List => {
            let list: Vec<SecretMetaView> = c.call_typed::<m::SecretList>(&NoParams {}).await?;
            if out.json() { out.print_json(&list)? } else { print_list(&list) }
        }
        SecretCmd::Delete { name, context } => {
            let d: Done = c.call_typed::<m::SecretDelete>(&Ref::new(&context, &name)).await?;
            if let Some(w) = &d.warning {
                eprintln!("warning: {w}");
            }
            if !d.changed {
                anyhow::bail!(
                    "secret {context}/{name} not found; nothing was deleted (`hero_proc secret list` shows what exists)"
                );
            }
            if out.json() {
                out.print_json(&d)?
            } else if !out.quiet {
                println!("secret {context}/{name}: deleted")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(list: &[SecretMetaView]) {
    println!("{:<32} {:<28} {:<13} {:<8} UPDATED", "SECRET", "SOURCE", "FINGERPRINT", "ORIGIN");
    let now = hero_proc_engine::supervisor::now_ms();
    for s in list {
        let age = (now - s.updated_at_ms).max(0) / 1000;
        let age = if age < 120 {
            format!("{age}s ago")
        } else if age < 7200 {
            format!("{}m ago", age / 60)
        } else {
            format!("{}h ago", age / 3600)
        };
        println!(
            "{:<32} {:<28} {:<13} {:<8} {age}",
            format!("{}/{}", s.context, s.name),
            s.source,
            s.fingerprint,
            if s.managed { "git" } else { "manual" }
        );
    }
}
