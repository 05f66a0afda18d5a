//! `hero_proc status`: the machine at a glance, and a health gate (SPEC 4): exit 0 when
//! all is well, 3 when something is degraded (each cause named), 1 when the daemon
//! cannot be reached.

use std::process::ExitCode;

use hero_proc_reconcile::SyncStatus;
use hero_proc_reconcile::render::human_bytes;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::{CompactorStatusView, NoParams, ServiceState, ServiceView, SystemInfo};
use hero_proc_spec::ServiceStatus;
use hero_proc_store::SyncResult;
use serde::Serialize;

use crate::{Output, connect};

/// Exit status of a degraded machine (1 is "could not ask").
const DEGRADED: u8 = 3;

#[derive(Serialize)]
struct Report {
    healthy: bool,
    /// Why it is not healthy, one sentence each.
    causes: Vec<String>,
    info: SystemInfo,
    sync: SyncStatus,
    services: Vec<ServiceView>,
    compactor: CompactorStatusView,
}

/// Why the machine is degraded (empty: healthy). Pure, so each rule is tested alone.
fn causes(sync: &SyncStatus, services: &[ServiceView], compactor: &CompactorStatusView) -> Vec<String> {
    let mut out = Vec::new();
    if sync.repo.is_some() {
        let first_line = |e: &Option<String>| e.as_deref().and_then(|e| e.lines().next()).unwrap_or("").to_owned();
        let attempted = sync.attempted_revision.as_deref().map_or("-", |r| &r[..r.len().min(12)]);
        match sync.last_result {
            Some(SyncResult::Failed) => {
                out.push(format!("sync: revision {attempted} failed: {}", first_line(&sync.last_error)))
            }
            Some(SyncResult::Refused) => {
                out.push(format!("sync: revision {attempted} was refused: {}", first_line(&sync.last_error)))
            }
            Some(SyncResult::Degraded) => out.push(format!(
                "sync: revision {attempted} is applied but a migration failed (`hero_proc migrate status`)"
            )),
            _ => {}
        }
        if sync.applied_revision.is_none() && sync.last_result.is_none() {
            out.push("sync: nothing applied from git yet".to_owned());
        }
        if !sync.drift.is_empty() && sync.self_heal == Some(false) {
            out.push(format!(
                "drift: {} live object(s) differ from git and self_heal is off ({})",
                sync.drift.len(),
                sync.drift.iter().map(|d| d.object.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let hero_db = services.iter().any(|s| s.context == "core" && s.name == "hero_db");
    if !hero_db {
        out.push("core/hero_db is not defined: the daemon needs its store service (SPEC 5.3)".to_owned());
    }
    for s in services {
        let key = format!("{}/{}", s.context, s.name);
        let why = s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        if s.crash_loop {
            out.push(format!("service {key}: crash loop{why}"));
            continue;
        }
        if s.status != ServiceStatus::Start {
            continue;
        }
        match s.state {
            // Running means healthy once; the periodic probes say whether it still is.
            ServiceState::Running | ServiceState::Starting if s.health.iter().any(|h| !h.healthy) => {
                let failing: Vec<&str> = s.health.iter().filter(|h| !h.healthy).map(|h| h.check.as_str()).collect();
                out.push(format!("service {key}: running but not healthy ({})", failing.join(", ")));
            }
            ServiceState::Running | ServiceState::Exited => {}
            st => out.push(format!("service {key}: wanted running, is {}{why}", st.as_str())),
        }
    }
    if let Some(e) = &compactor.last_error {
        out.push(format!("compactor: the last run failed: {}", e.lines().next().unwrap_or("")));
    }
    out
}

pub async fn run(out: &Output) -> anyhow::Result<ExitCode> {
    let mut c = connect(out).await?;
    let info: SystemInfo = c.call_typed::<m::SystemInfo>(&NoParams {}).await?;
    let sync: SyncStatus = c.call_foreign::<m::ReconcileStatus, _>(&NoParams {}).await?;
    let services: Vec<ServiceView> = c.call_typed::<m::ServiceList>(&NoParams {}).await?;
    let compactor: CompactorStatusView = c.call_typed::<m::SystemCompactorStatus>(&NoParams {}).await?;
    let causes = causes(&sync, &services, &compactor);
    let healthy = causes.is_empty();
    if out.json() {
        out.print_json(&Report { healthy, causes, info, sync, services, compactor })?;
    } else if !out.quiet || !healthy {
        print(&info, &sync, &services, &compactor, &causes, out.quiet);
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(DEGRADED) })
}

fn ago(ms: i64) -> String {
    crate::reconcile::humanize(((hero_proc_store::now_ms() - ms) / 1000).max(0) as u64)
}

fn short(r: &Option<String>) -> String {
    r.as_deref().map_or("-".to_owned(), |r| r[..r.len().min(12)].to_owned())
}

fn print(
    info: &SystemInfo,
    sync: &SyncStatus,
    services: &[ServiceView],
    compactor: &CompactorStatusView,
    causes: &[String],
    quiet: bool,
) {
    if !quiet {
        println!("hero_proc {} (pid {}, up {}), root {}", info.version, info.pid, ago(info.started_at_ms), info.root);
        match &sync.repo {
            None => println!("sync:      no repository (a plain supervisor)"),
            Some(repo) => {
                let mut line = format!("sync:      {repo}");
                if let Some(b) = &sync.branch {
                    line.push_str(&format!(" ({b})"));
                }
                println!("{line}");
                let applied = match (sync.applied_revision.as_ref(), sync.applied_at_ms) {
                    (Some(_), Some(at)) => format!("{} ({} ago)", short(&sync.applied_revision), ago(at)),
                    (Some(_), None) => short(&sync.applied_revision),
                    _ => "nothing yet".to_owned(),
                };
                let mode = if sync.suspended {
                    "SUSPENDED".to_owned()
                } else if let Some(p) = &sync.pinned_revision {
                    format!("pinned at {}", &p[..p.len().min(12)])
                } else {
                    "automatic".to_owned()
                };
                println!("           applied {applied}, head {}, {mode}", short(&sync.head_revision));
                if let Some(r) = sync.last_result {
                    println!("           last: {}", r.as_str());
                }
                for (o, _) in &sync.held {
                    println!("           held out of sync: {o}");
                }
            }
        }
        let count = |f: &dyn Fn(&ServiceView) -> bool| services.iter().filter(|s| f(s)).count();
        println!(
            "services:  {} running, {} stopped, {} failed or backing off, {} in total",
            count(&|s| s.state == ServiceState::Running),
            count(&|s| s.state == ServiceState::Inactive),
            count(&|s| matches!(s.state, ServiceState::Failed | ServiceState::Backoff)),
            services.len()
        );
        for s in services {
            let health = if s.health.is_empty() {
                String::new()
            } else if s.health.iter().all(|h| h.healthy) {
                "healthy".to_owned()
            } else {
                "UNHEALTHY".to_owned()
            };
            let up = if s.state == ServiceState::Running { format!("up {}", ago(s.since_ms)) } else { String::new() };
            println!(
                "  {:<30} {:<9} {:>8} {:<9} restarts {:<3} {health}",
                format!("{}/{}", s.context, s.name),
                s.state.as_str(),
                s.pid.map(|p| format!("pid {p}")).unwrap_or_default(),
                up,
                s.restarts
            );
        }
        let last = compactor.last_run_ms.map_or("never".to_owned(), |t| format!("{} ago", ago(t)));
        let next = compactor.next_run_ms.map_or("-".to_owned(), |t| {
            let secs = ((t - hero_proc_store::now_ms()) / 1000).max(0) as u64;
            format!("in {}", crate::reconcile::humanize(secs))
        });
        println!("compactor: last run {last}, next {next}");
        println!(
            "disk:      database {}, logs {}",
            human_bytes(compactor.db_file_bytes),
            human_bytes(compactor.log_bytes)
        );
    }
    if causes.is_empty() {
        println!("status:    healthy");
    } else {
        println!("status:    DEGRADED ({} cause{})", causes.len(), if causes.len() == 1 { "" } else { "s" });
        for c in causes {
            println!("  - {c}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_proc_rpc::wire::CheckView;

    fn svc(name: &str, status: ServiceStatus, state: ServiceState) -> ServiceView {
        ServiceView {
            context: "core".into(),
            name: name.into(),
            status,
            state,
            pid: None,
            job_id: None,
            restarts: 0,
            crash_loop: false,
            backoff_until_ms: None,
            since_ms: 0,
            last_exit: None,
            reason: None,
            health: Vec::new(),
            health_failures: 0,
            liveness_restarts: 0,
            managed: true,
        }
    }

    fn compactor() -> CompactorStatusView {
        serde_json::from_value(serde_json::json!({
            "last_run_ms": null, "next_run_ms": null, "every_secs": 3600, "runs": 0, "max_age_days": 30,
            "max_rows_per_table": 100000, "last": null, "last_error": null, "db_size_bytes": 0,
            "db_file_bytes": 0, "page_size": 4096, "page_count": 0, "free_pages": 0, "log_bytes": 0
        }))
        .unwrap()
    }

    fn followed() -> SyncStatus {
        let mut s: SyncStatus = serde_json::from_value(serde_json::json!({
            "repo": "/srv/config", "branch": "main", "host": "h", "applied_revision": "a".repeat(40),
            "applied_at_ms": 1, "attempted_revision": "a".repeat(40), "attempted_at_ms": 1, "last_error": null,
            "suspended": false, "pinned_revision": null, "head_revision": "a".repeat(40), "last_result": "applied",
            "last_duration_ms": 1, "next_sync_at_ms": null, "consecutive_failures": 0, "self_heal": true, "drift": []
        }))
        .unwrap();
        s.last_result = Some(SyncResult::Applied);
        s
    }

    #[test]
    fn each_rule_names_its_cause() {
        let db = svc("hero_db", ServiceStatus::Start, ServiceState::Running);
        let ok = [db.clone(), svc("off", ServiceStatus::Stop, ServiceState::Inactive)];
        assert!(causes(&followed(), &ok, &compactor()).is_empty(), "a stopped service that is not wanted is fine");

        let mut failed = followed();
        failed.last_result = Some(SyncResult::Failed);
        failed.last_error = Some("cannot install the artifacts\nmore".into());
        assert_eq!(
            causes(&failed, &ok, &compactor()),
            [format!("sync: revision {} failed: cannot install the artifacts", "a".repeat(12))]
        );

        let mut loop_ = svc("web", ServiceStatus::Start, ServiceState::Backoff);
        loop_.crash_loop = true;
        loop_.reason = Some("crash loop: 5 fast failures".into());
        let c = causes(&followed(), &[db.clone(), loop_], &compactor());
        assert_eq!(c, ["service core/web: crash loop: crash loop: 5 fast failures"]);

        let c =
            causes(&followed(), &[db.clone(), svc("web", ServiceStatus::Start, ServiceState::Inactive)], &compactor());
        assert_eq!(c, ["service core/web: wanted running, is inactive"]);

        let mut sick = svc("web", ServiceStatus::Start, ServiceState::Starting);
        let failing = CheckView {
            check: "tcp 127.0.0.1:1".into(),
            healthy: false,
            detail: None,
            probed_ms: 0,
            last_error: None,
            last_error_ms: None,
        };
        sick.health = vec![failing.clone()];
        assert_eq!(
            causes(&followed(), &[db.clone(), sick.clone()], &compactor()),
            ["service core/web: running but not healthy (tcp 127.0.0.1:1)"]
        );
        // Healthy once and failing a periodic probe now: degraded too.
        sick.state = ServiceState::Running;
        assert_eq!(
            causes(&followed(), &[db.clone(), sick], &compactor()),
            ["service core/web: running but not healthy (tcp 127.0.0.1:1)"]
        );

        let c = causes(&followed(), &[], &compactor());
        assert!(c[0].starts_with("core/hero_db is not defined"), "{c:?}");

        let mut drift = followed();
        drift.self_heal = Some(false);
        drift.drift =
            serde_json::from_value(serde_json::json!([{ "object": "service core/web", "what": "stopped by hand" }]))
                .unwrap();
        assert_eq!(
            causes(&drift, &ok, &compactor()),
            ["drift: 1 live object(s) differ from git and self_heal is off (service core/web)"]
        );
        drift.self_heal = Some(true);
        assert!(causes(&drift, &ok, &compactor()).is_empty(), "self_heal reverts it");

        let mut comp = compactor();
        comp.last_error = Some("disk full".into());
        assert_eq!(causes(&followed(), &ok, &comp), ["compactor: the last run failed: disk full"]);
    }
}
