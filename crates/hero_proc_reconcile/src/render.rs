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
    let adopt = if s.adopt > 0 { format!(" ({} more adopted unchanged)", s.adopt) } else { String::new() };
    format!(
        "{} to create, {} to update{adopt}, {} to delete; {}, {}, {}; {}",
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
    if let Some(sig) = &plan.signature {
        let _ = writeln!(out, "  {sig}");
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
        if c.is_identical_adoption() {
            notes.push("adopting unchanged: it was set by hand as git declares it, now managed from git");
        } else if c.adopt {
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

/// The base..head preview of every host as a pull-request comment: a heading naming
/// both revisions, a table with one row per host, then per host with changes a
/// collapsible section holding its plan as fenced `diff` and list blocks. Nothing in it
/// depends on the time or the machine, so a comment updated on every push changes only
/// when the plan does. Secret values never reach a plan, so they cannot reach this.
pub fn render_markdown(base: &crate::repo::CommitInfo, plans: &[Plan]) -> String {
    let mut out = String::new();
    let head = plans.first().map(|p| p.target.short()).unwrap_or_default();
    // The first line finds the comment again, to update it instead of adding another.
    out.push_str("<!-- hero_proc plan -->\n");
    let _ = writeln!(out, "### hero_proc plan: `{}` → `{head}`\n", base.short());
    if plans.iter().any(Plan::is_refused) {
        out.push_str("**Refused on at least one host: merging this applies nothing there** (see below).\n\n");
    }
    out.push_str("| host | create | update | delete | restart | start | stop | migrations |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in plans {
        let s = &p.summary;
        let host = host_label(p);
        if p.is_refused() {
            let _ = writeln!(out, "| {host} | refused | | | | | | |");
        } else if p.is_empty() {
            let _ = writeln!(out, "| {host} | no changes | | | | | | |");
        } else {
            let _ = writeln!(
                out,
                "| {host} | {} | {} | {} | {} | {} | {} | {} |",
                s.create, s.update, s.delete, s.restart, s.start, s.stop, s.migrations
            );
        }
    }
    for p in plans.iter().filter(|p| !p.is_empty() || p.is_refused()) {
        let name = match &p.host {
            Some(h) => html_escape(h),
            None => "base set".to_owned(),
        };
        let _ = writeln!(out, "\n<details><summary><b>{name}</b>: {}</summary>\n", summary_line(p));
        if !p.changes.is_empty() {
            let mut body = String::new();
            for c in &p.changes {
                let _ = writeln!(body, "{} {}", c.op.sign(), c.object());
                for line in c.diff.lines() {
                    let _ = writeln!(body, "{line}");
                }
            }
            // A fence longer than any run of backticks in the YAML, so a script holding
            // one cannot close the block.
            let fence = "`".repeat(longest_run(&body, '`').max(2) + 1);
            let _ = write!(out, "{fence}diff\n{body}{fence}\n");
        }
        let list = |out: &mut String, title: &str, items: Vec<String>| {
            if items.is_empty() {
                return;
            }
            let _ = writeln!(out, "\n{title}:\n");
            for i in items {
                let _ = writeln!(out, "- {}", md_escape(&i));
            }
        };
        list(&mut out, "Artifacts", p.artifacts.iter().map(artifact_line).collect());
        list(&mut out, "Restarts", p.restarts.iter().map(|r| format!("`{}` ({})", r.service, r.because)).collect());
        list(&mut out, "Starts", p.starts.iter().map(|r| format!("`{}` ({})", r.service, r.because)).collect());
        list(&mut out, "Stops", p.stops.iter().map(|r| format!("`{}` ({})", r.service, r.because)).collect());
        list(&mut out, "Migrations to run, in order", p.migrations.iter().map(|m| format!("`{m}`")).collect());
        list(&mut out, "Secrets not compared (no key here)", p.unverified_secrets.clone());
        list(&mut out, "Refused", p.refusals.clone());
        out.push_str("\n</details>\n");
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in s.chars() {
        run = if ch == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// `base set` for the plan without a host overlay, else the host's name.
fn host_label(p: &Plan) -> String {
    match &p.host {
        Some(h) => format!("`{h}`"),
        None => "base set (no `hosts/` overlay)".to_owned(),
    }
}

/// Markdown-significant characters of free text escaped, so a name or a reason cannot
/// open a link, a table cell or an HTML tag in the comment.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_code = false;
    for ch in s.chars() {
        if ch == '`' {
            in_code = !in_code;
            out.push(ch);
            continue;
        }
        if !in_code && matches!(ch, '<' | '>' | '[' | ']' | '|' | '*' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
