//! `hero_proc job|run|log|system ...`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use crate::{Output, connect};

#[derive(Subcommand)]
pub enum JobCmd {
    /// Jobs, newest first.
    List {
        /// Only jobs in this phase: pending, running, succeeded, failed or cancelled.
        #[arg(long)]
        phase: Option<String>,
        /// `name` or `context/name` of a service.
        #[arg(long)]
        service: Option<String>,
        /// Only the jobs of this run (its id).
        #[arg(long)]
        run: Option<i64>,
        /// At most 1000.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// One job: action, service, run, phase, exit code or signal, pid, times, attempt.
    Get {
        /// The job's id (`job list` shows them).
        id: i64,
    },
    /// A job's output (stdout and stderr), all of it, read page by page.
    Logs {
        /// The job's id (`job list` shows them).
        id: i64,
        /// Only the last N lines (at most 20000).
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing new output as it comes (within 50 ms), until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
pub enum RunCmd {
    /// Create a run with one job per action (`name` or `context/name`).
    Submit {
        /// The actions, one job each (`name` or `context/name`), ordered by their depends_on.
        #[arg(required = true)]
        actions: Vec<String>,
        /// A label to find the run by in `run list` (default: the actions' names).
        #[arg(long)]
        label: Option<String>,
        /// Wait for the run to finish; exit 1 if it did not succeed.
        #[arg(long)]
        wait: bool,
    },
    /// Runs, newest first, with their phase and jobs.
    List {
        /// At most 100.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only runs older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// One run and its jobs.
    Get {
        /// The run's id (`run list` shows them).
        id: i64,
    },
    /// Cancel a run: its running jobs are stopped, its pending ones never start.
    Cancel {
        /// The run's id (`run list` shows them).
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// The daemon's structured events, newest first.
    Query {
        /// Dotted source prefix, e.g. hero_proc.auto_start_db.
        #[arg(long)]
        source: Option<String>,
        /// Only events at this level or more severe: debug, info, warn or error.
        #[arg(long)]
        level: Option<String>,
        /// Only events whose message contains this text (case-sensitive).
        #[arg(long)]
        contains: Option<String>,
        /// At most 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only events before this time (ms since the epoch; the oldest of the previous page).
        #[arg(long)]
        until_ms: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Version, paths, database size and counts.
    Info,
    /// Run the compactor now.
    Compact,
    /// The compactor's last results, next run, DB size and free pages.
    CompactorStatus,
}

fn exit_of(j: &JobView) -> String {
    match (j.exit_code, j.signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "-".into(),
    }
}

fn print_jobs(jobs: &[JobView]) {
    println!(
        "{:>7} {:>5} {:<10} {:<24} {:<20} {:<20} {:>8} {:<10} ERROR",
        "JOB", "RUN", "PHASE", "ACTION", "SERVICE", "STARTED", "PID", "EXIT"
    );
    for j in jobs {
        println!(
            "{:>7} {:>5} {:<10} {:<24} {:<20} {:<20} {:>8} {:<10} {}",
            j.id,
            j.run_id.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            j.phase.as_str(),
            j.action,
            j.service.as_deref().unwrap_or("-"),
            j.started_at_ms.map(crate::reconcile::utc).unwrap_or_else(|| "-".into()),
            j.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            exit_of(j),
            j.error.clone().unwrap_or_default()
        );
    }
}

/// `job get`: every field the JSON has, one per line.
fn print_job(j: &JobView) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let time = |t: Option<i64>| opt(t.map(crate::reconcile::utc));
    println!("job {}", j.id);
    println!("  action:    {}", j.action);
    println!("  service:   {}", j.service.as_deref().unwrap_or("-"));
    println!("  run:       {}", opt(j.run_id.map(|r| r.to_string())));
    println!("  phase:     {}", j.phase.as_str());
    println!("  attempt:   {}", j.attempt);
    println!("  pid:       {}", opt(j.pid.map(|p| p.to_string())));
    println!("  exit:      {}", exit_of(j));
    println!("  error:     {}", j.error.as_deref().unwrap_or("-"));
    println!("  created:   {}", crate::reconcile::utc(j.created_at_ms));
    println!("  started:   {}", time(j.started_at_ms));
    println!("  finished:  {}", time(j.finished_at_ms));
    if let (Some(s), Some(f)) = (j.started_at_ms, j.finished_at_ms) {
        println!("  took:      {} ms", f - s);
    }
}

pub async fn job(cmd: JobCmd, out: &Output) -> anyhow::Result<ExitCode> {
    let mut c = connect(out).await?;
    match cmd {
        JobCmd::List { phase, service, run, limit, before } => {
            let phase = match phase.as_deref() {
                None => None,
                Some(p) => Some(JobPhase::parse(p).ok_or_else(|| {
                    anyhow::anyhow!("unknown phase `{p}`: one of pending, running, succeeded, failed, cancelled")
                })?),
            };
            let jobs: Vec<JobView> = c
                .call_typed::<m::JobList>(&JobQuery {
                    phase,
                    service,
                    run_id: run,
                    limit: Some(limit),
                    before_id: before,
                })
                .await?;
            if out.json() { out.print_json(&jobs)? } else { print_jobs(&jobs) }
        }
        JobCmd::Get { id } => {
            let j: JobView = c.call_typed::<m::JobGet>(&IdRef { id }).await?;
            if out.json() { out.print_json(&j)? } else { print_job(&j) }
        }
        JobCmd::Logs { id, tail, follow } => return crate::logs::job(&mut c, id, tail, follow, out).await,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(cmd: RunCmd, out: &Output) -> anyhow::Result<ExitCode> {
    let mut c = connect(out).await?;
    match cmd {
        RunCmd::Submit { actions, label, wait } => {
            let mut r: RunView = c.call_typed::<m::RunSubmit>(&RunSubmit { actions, label }).await?;
            if wait {
                // The run's jobs report through the store; poll the run, gently.
                let mut delay = Duration::from_millis(5);
                while !r.phase.is_terminal() {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                    r = c.call_typed::<m::RunGet>(&RunGet { id: r.id, jobs: false }).await?;
                }
                r = c.call_typed::<m::RunGet>(&RunGet { id: r.id, jobs: true }).await?;
            }
            if out.json() {
                out.print_json(&r)?;
            } else if !out.quiet {
                println!("run {} ({}): {}", r.id, r.label, r.phase.as_str());
                print_jobs(&r.jobs);
            }
            if wait && r.phase != JobPhase::Succeeded {
                eprintln!(
                    "error: run {} {}; see `hero_proc job logs <id>` for each job's output",
                    r.id,
                    r.phase.as_str()
                );
                return Ok(ExitCode::from(1));
            }
        }
        RunCmd::List { limit, before } => {
            let runs: Vec<RunView> =
                c.call_typed::<m::RunList>(&RunList { limit: Some(limit), before_id: before }).await?;
            if out.json() {
                out.print_json(&runs)?
            } else {
                println!("{:>6} {:<10} {:>5}  LABEL", "RUN", "PHASE", "JOBS");
                for r in runs {
                    let more = if r.jobs_more { "+" } else { "" };
                    println!("{:>6} {:<10} {:>4}{more:<1}  {}", r.id, r.phase.as_str(), r.jobs.len(), r.label);
                }
            }
        }
        RunCmd::Get { id } => {
            let r: RunView = c.call_typed::<m::RunGet>(&RunGet { id, jobs: true }).await?;
            if out.json() {
                out.print_json(&r)?
            } else {
                println!("run {} ({}): {}", r.id, r.label, r.phase.as_str());
                print_jobs(&r.jobs);
            }
        }
        RunCmd::Cancel { id } => {
            let d: Done = c.call_typed::<m::RunCancel>(&IdRef { id }).await?;
            if out.json() {
                out.print_json(&d)?
            } else {
                println!("run {id}: {}", if d.changed { "cancelling" } else { "already finished" })
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn log(cmd: LogCmd, out: &Output) -> anyhow::Result<ExitCode> {
    let LogCmd::Query { source, level, contains, limit, until_ms } = cmd;
    let q = LogQuery { source, min_level: level, since_ms: None, contains, limit: Some(limit), until_ms };
    let events: Vec<LogEventView> = connect(out).await?.call_typed::<m::LogQuery>(&q).await?;
    if out.json() {
        out.print_json(&events)?;
    } else if events.is_empty() {
        if !out.quiet {
            println!("no events");
        }
    } else {
        for e in events {
            println!("{} {:<5} {} {}", fmt_ms(e.ts_ms), e.level, e.source, e.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_compact(c: &CompactView) {
    println!(
        "deleted {} jobs, {} runs, {} history rows; {} -> {} bytes ({} reclaimed) in {} ms{}; {} log files ({} bytes)",
        c.jobs_deleted,
        c.runs_deleted,
        c.history_deleted,
        c.bytes_before,
        c.bytes_after,
        c.bytes_reclaimed,
        c.duration_ms,
        if c.analyzed { ", ANALYZE ran" } else { "" },
        c.log_files_deleted,
        c.log_bytes_reclaimed
    );
}

pub async fn system(cmd: SystemCmd, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCmd::Info => {}
        SystemCmd::Compact => {
            let c: CompactView = connect(out).await?.call_typed::<m::SystemCompact>(&NoParams {}).await?;
            if out.json() {
                out.print_json(&c)?
            } else {
                print_compact(&c)
            }
            return Ok(ExitCode::SUCCESS);
        }
        SystemCmd::CompactorStatus => {
            let s: CompactorStatusView =
                connect(out).await?.call_typed::<m::SystemCompactorStatus>(&NoParams {}).await?;
            if out.json() {
                out.print_json(&s)?;
            } else {
                println!(
                    "compactor: every {}s, keep {} days / {} rows per table; {} runs",
                    s.every_secs, s.max_age_days, s.max_rows_per_table, s.runs
                );
                let src = &s.sources;
                println!(
                    "  from: every {}, max_age_days {}, max_rows_per_table {}",
                    src.every, src.max_age_days, src.max_rows_per_table
                );
                println!("  last run: {}", s.last_run_ms.map(fmt_ms).unwrap_or_else(|| "never".into()));
                println!("  next run: {}", s.next_run_ms.map(fmt_ms).unwrap_or_else(|| "-".into()));
                if let Some(c) = &s.last {
                    print!("  last result: ");
                    print_compact(c);
                }
                if let Some(e) = &s.last_error {
                    println!("  last error: {e}");
                }
                println!(
                    "  database: {} bytes ({} pages of {}; {} free), {} bytes on disk",
                    s.db_size_bytes, s.page_count, s.page_size, s.free_pages, s.db_file_bytes
                );
                println!("  log store: {} bytes", s.log_bytes);
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    let i: SystemInfo = connect(out).await?.call_typed::<m::SystemInfo>(&NoParams {}).await?;
    if out.json() {
        out.print_json(&i)?;
    } else {
        println!("hero_proc {} (pid {})", i.version, i.pid);
        println!("  root:      {}", i.root);
        println!("  socket:    {}", i.socket);
        println!("  database:  {} ({} bytes, {} free pages)", i.db_path, i.db_size_bytes, i.db_free_pages);
        println!("  logs:      {} ({} bytes)", i.log_dir, i.log_bytes);
        println!("  services:  {} ({} running)", i.services, i.services_running);
        println!("  actions:   {}", i.actions);
        println!("  jobs running: {}", i.jobs_running);
        match &i.containment_fallback {
            None => println!("  containment: {}", i.containment),
            Some(why) => println!("  containment: {} ({why})", i.containment),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, without a date crate.
fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}
