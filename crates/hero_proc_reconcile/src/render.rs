//! The dry-run as text: a summary line, then per object its sign and a unified diff of
//! its canonical YAML, then restarts, starts, stops, migrations, drift and what is left
//! alone. Secret values never reach a plan, so they cannot reach this text.

use std::fmt::Write;

use crate::plan::{Op, Plan};

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";

struct Paint(bool);

impl Paint {
    fn p(&self, color: &str, text: &str) -> String {
        if self.0 { format!("{color}{text}{RESET}") } else { text.to_owned() }
    }
}

/// The one-line count: `+2 ~1 -1, 1 restart, 1 start, 0 stops, 1 migration`.
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    let n = |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
    format!(
        "{} to create, {} to update, {} to delete; {}, {}, {}; {}",
        s.create,
        s.update,
        s.delete,
        n(s.restart, "restart", "restarts"),
        n(s.start, "start", "starts"),
        n(s.stop, "stop", "stops"),
        n(s.migrations, "migration", "migrations"),
    )
}

/// The whole plan for a terminal (`color`) or a file.
pub fn render_text(plan: &Plan, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    let t = &plan.target;
    let _ = write!(out, "{}", paint.p(BOLD, &format!("Plan for {}", t.short())));
    if let Some(s) = &t.summary {
        let _ = write!(out, " \"{s}\"");
    }
    if let Some(h) = &plan.host {
        let _ = write!(out, " on host {h}");
    }
    out.push('\n');
    match &plan.applied_revision {
        Some(a) if *a == t.id => out.push_str("  live: the same revision\n"),
        Some(a) => {
            let _ = writeln!(out, "  live: {}", &a[..a.len().min(12)]);
        }
        None => out.push_str("  live: nothing applied from git yet\n"),
    }
    let _ = writeln!(out, "  {}", summary_line(plan));

    for c in &plan.changes {
        let sign = c.op.sign().to_string();
        let color = match c.op {
            Op::Create => GREEN,
            Op::Update => YELLOW,
            Op::Delete => RED,
        };
        let mut head = format!("{sign} {}", c.object());
        let mut notes = Vec::new();
        if c.drift {
            notes.push("drift: reverting a change made by hand");
        }
        if c.adopt {
            notes.push("adopting: it was set by hand, now managed from git");
        }
        if !notes.is_empty() {
            head.push_str(&format!(" ({})", notes.join("; ")));
        }
        let _ = writeln!(out, "\n{}", paint.p(color, &head));
        for line in c.diff.lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                paint.p(BOLD, line)
            } else if line.starts_with('+') {
                paint.p(GREEN, line)
            } else if line.starts_with('-') {
                paint.p(RED, line)
            } else if line.starts_with("@@") {
                paint.p(CYAN, line)
            } else {
                line.to_owned()
            };
            let _ = writeln!(out, "    {painted}");
        }
    }

    let section = |out: &mut String, title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title}:");
        for i in items {
            let _ = writeln!(out, "  {i}");
        }
    };
    section(
        &mut out,
        "Artifacts (installed before anything is applied)",
        plan.artifacts.iter().map(artifact_line).collect(),
    );
    section(&mut out, "Restarts", plan.restarts.iter().map(|r| format!("{} ({})", r.service, r.because)).collect());
    section(&mut out, "Starts", plan.starts.iter().map(|r| format!("{} ({})", r.service, r.because)).collect());
    section(&mut out, "Stops", plan.stops.iter().map(|r| format!("{} ({})", r.service, r.because)).collect());
    if plan.migration_preview.is_empty() {
        section(&mut out, "Migrations to run, in order", plan.migrations.clone());
    } else {
        let _ = writeln!(out, "\nMigrations to run, in order (previewed: nothing applied):");
        for m in &plan.migration_preview {
            let _ = writeln!(out, "  {}", m.name);
            for e in &m.effects {
                let _ = writeln!(out, "      {e}");
            }
            if let Some(err) = &m.error {
                let _ = writeln!(out, "      {}", paint.p(RED, err.lines().next().unwrap_or("")));
            }
        }
        for name in plan.migrations.iter().skip(plan.migration_preview.len()) {
            let _ = writeln!(out, "  {name} (not previewed: an earlier one failed)");
        }
    }
    section(
        &mut out,
        "Migrations held back",
        plan.held_migrations.iter().map(|h| format!("{}: {}", h.name, h.reason)).collect(),
    );
    let drift_title = if plan.self_heal {
        "Drift (reverted: self_heal is on)"
    } else {
        "Drift (reported only: self_heal is off in hero.yaml)"
    };
    section(&mut out, drift_title, plan.drift.iter().map(|d| format!("{}: {}", d.object, d.what)).collect());
    section(
        &mut out,
        "Held out of sync (their drift is left alone; `hero_proc reconcile release` or a git change ends it)",
        plan.held.clone(),
    );
    section(&mut out, "Released (git changed these held objects: the change applies)", plan.released.clone());
    section(&mut out, "Unmanaged (set by hand, not in git; left alone)", plan.unmanaged.clone());
    section(&mut out, "Not pruned (prune is off in hero.yaml)", plan.not_pruned.clone());
    section(
        &mut out,
        "Secrets not compared (this preview has no key to decrypt them)",
        plan.unverified_secrets.clone(),
    );
    if plan.is_refused() {
        let _ = writeln!(out, "\n{}", paint.p(RED, "Refused: nothing will be applied"));
        for r in &plan.refusals {
            let _ = writeln!(out, "  {r}");
        }
    } else if plan.is_empty() {
        out.push_str("\nNo changes: the live state matches the revision.\n");
    }
    out
}

/// `core/agent: hero_agent v1.2.2 -> v1.2.3, 14.2 MB to download` (or `cached`).
fn artifact_line(a: &crate::plan::ArtifactStep) -> String {
    let version = match &a.from {
        Some(f) => format!("{} {f} -> {}", a.name, a.to),
        None => format!("{} {} (new)", a.name, a.to),
    };
    let state = match (a.cached, a.size) {
        (Some(true), _) => "cached".to_owned(),
        (Some(false), Some(n)) => format!("{} to download", human_bytes(n)),
        (Some(false), None) => "to download".to_owned(),
        (None, _) => "downloaded if not cached".to_owned(),
    };
    format!("{}: {version}, {state}", a.action)
}

/// `14.2 MB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
