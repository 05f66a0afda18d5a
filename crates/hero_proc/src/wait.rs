//! `reconcile [now|resume] --wait`: return once every service of the applied revision is
//! running and healthy, like `argocd app wait --health`; name the ones that are not when
//! the timeout passes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hero_proc_reconcile::SyncStatus;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::{NoParams, ServiceState, ServiceView};
use hero_proc_spec::ServiceStatus;

use crate::{Output, connect};

/// How often the states are read.
const POLL: Duration = Duration::from_millis(100);

/// Why a service of the applied revision is not ready yet (`None`: ready). `fresh`:
/// the apply (re)started it, so its process must be newer than `since_ms`.
fn not_ready(s: &ServiceView, since_ms: i64, fresh: bool) -> Option<String> {
    if !s.managed || s.status != ServiceStatus::Start {
        return None;
    }
    let why = s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    match s.state {
        ServiceState::Exited => None,
        ServiceState::Running if fresh && s.since_ms < since_ms => Some("still the old process".to_owned()),
        ServiceState::Running => None,
        ServiceState::Starting => {
            let failing: Vec<String> = s
                .health
                .iter()
                .filter(|h| !h.healthy)
                .map(|h| format!("{}{}", h.check, h.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()))
                .collect();
            Some(if failing.is_empty() {
                format!("starting{why}")
            } else {
                format!("not healthy: {}", failing.join(", "))
            })
        }
        st => Some(format!("{}{why}", st.as_str())),
    }
}

/// Wait until healthy. `after_sync`: first wait for a sync that started after `since_ms`
/// (`resume` triggers one and returns before it runs).
pub async fn until_healthy(
    out: &Output,
    timeout: Duration,
    since_ms: i64,
    after_sync: bool,
    restarted: &[String],
) -> anyhow::Result<ExitCode> {
    let mut c = connect(out).await?;
    let start = Instant::now();
    let terminal = !out.quiet && !out.json() && std::io::stderr().is_terminal();
    loop {
        let sync: SyncStatus = c.call_foreign::<m::ReconcileStatus, _>(&NoParams {}).await?;
        let synced = !after_sync || sync.attempted_at_ms.is_some_and(|t| t >= since_ms);
        let services: Vec<ServiceView> = c.call_typed::<m::ServiceList>(&NoParams {}).await?;
        let pending: Vec<(String, String)> = services
            .iter()
            .filter_map(|s| {
                let key = format!("{}/{}", s.context, s.name);
                let fresh = restarted.contains(&key);
                not_ready(s, since_ms, fresh).map(|why| (key, why))
            })
            .collect();
        let managed = services.iter().filter(|s| s.managed && s.status == ServiceStatus::Start).count();
        let rev = sync.applied_revision.as_deref().map_or("-", |r| &r[..r.len().min(12)]);
        if synced && pending.is_empty() {
            if terminal {
                eprint!("\r\x1b[2K");
            }
            if !out.quiet && !out.json() {
                println!("ready: the {managed} service(s) of {rev} are running and healthy");
            }
            return Ok(ExitCode::SUCCESS);
        }
        if start.elapsed() >= timeout {
            if terminal {
                eprint!("\r\x1b[2K");
            }
            let mut lines = Vec::new();
            if !synced {
                lines.push("no sync has run since the command".to_owned());
            }
            if let Some(e) = sync.last_error.as_deref().filter(|_| sync.consecutive_failures > 0) {
                lines.push(format!("the last sync failed: {}", e.lines().next().unwrap_or("")));
            }
            lines.extend(pending.iter().map(|(k, why)| format!("{k}: {why}")));
            anyhow::bail!(
                "not ready after {}: {} of {managed} service(s) of {rev} are not running and healthy\n  {}",
                humantime::format_duration(timeout),
                pending.len(),
                lines.join("\n  ")
            );
        }
        if terminal {
            let names: Vec<String> = pending.iter().take(3).map(|(k, why)| format!("{k} ({why})")).collect();
            let more = if pending.len() > 3 { format!(", +{}", pending.len() - 3) } else { String::new() };
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Kwaiting {}s: {} of {managed} not ready: {}{more}",
                start.elapsed().as_secs(),
                pending.len(),
                names.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
