//! Output of jobs and services: `job logs ID [-f]` and `service logs NAME [-f] [--tail N]
//! [--since D] [--previous]`. Everything is read through `job.logs` pages, so neither the
//! daemon nor this process holds more than a page; following polls every
//! [`FOLLOW_EVERY`], so a new line shows within that time.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_spec::Ref;

use crate::Output;

/// How often a follower asks for new output (a new line shows within this time).
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// How often `service logs -f` checks whether the service's process changed.
const RESTART_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Print one page; returns the offset after it.
fn print_page(w: &mut impl Write, page: &LogLines, out: &Output) -> anyhow::Result<()> {
    if out.json() {
        serde_json::to_writer(&mut *w, page)?;
        writeln!(w)?;
        return Ok(());
    }
    let n = page.lines.len();
    for (i, line) in page.lines.iter().enumerate() {
        w.write_all(line.as_bytes())?;
        // A line cut by the page continues on the next page: no newline yet.
        if i + 1 < n || !page.ends_mid_line || !page.has_more {
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Print a job's output (all of it page by page, or its last `tail` lines); the offset
/// where a follower continues.
pub async fn print_job(
    c: &mut hero_proc_rpc::Client,
    id: i64,
    tail: Option<usize>,
    out: &Output,
) -> anyhow::Result<u64> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut offset: Option<u64> = None;
    let end = loop {
        let page: LogLines = match c.call_typed::<m::JobLogs>(&JobLogs { id, tail, offset, max_bytes: None }).await {
            Ok(p) => p,
            // A job that has not written anything yet has no file: nothing to show.
            Err(e) if is_not_found(&e) && offset.is_none() => break 0,
            Err(e) => return Err(e.into()),
        };
        print_page(&mut w, &page, out)?;
        if tail.is_some() || !page.has_more || page.reset {
            break page.next_offset;
        }
        offset = Some(page.next_offset);
    };
    w.flush()?;
    Ok(end)
}

fn is_not_found(e: &hero_proc_rpc::ClientError) -> bool {
    e.code() == Some(hero_proc_rpc::ErrorCode::NotFound)
}

/// Print what job `id` writes after `offset`, until `until` says stop. Returns the
/// offset reached.
async fn follow_job(
    c: &mut hero_proc_rpc::Client,
    id: i64,
    mut offset: u64,
    out: &Output,
    mut until: impl AsyncFnMut(&mut hero_proc_rpc::Client) -> anyhow::Result<bool>,
) -> anyhow::Result<u64> {
    let mut since_check = Duration::ZERO;
    loop {
        let q = JobLogs { id, tail: None, offset: Some(offset), max_bytes: None };
        let got = match c.call_typed::<m::JobLogs>(&q).await {
            Ok(page) => {
                let mut w = std::io::stdout().lock();
                print_page(&mut w, &page, out)?;
                w.flush()?;
                let more = page.has_more;
                offset = page.next_offset;
                more
            }
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if got {
            continue;
        }
        since_check += FOLLOW_EVERY;
        if since_check >= RESTART_CHECK_EVERY {
            since_check = Duration::ZERO;
            if until(c).await? {
                // One last read: what was written between the last page and the end.
                let q = JobLogs { id, tail: None, offset: Some(offset), max_bytes: None };
                if let Ok(page) = c.call_typed::<m::JobLogs>(&q).await {
                    let mut w = std::io::stdout().lock();
                    print_page(&mut w, &page, out)?;
                    offset = page.next_offset;
                }
                return Ok(offset);
            }
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `job logs ID [-f] [--tail N]`: with `-f`, new output as it comes, until the job ends.
pub async fn job(
    c: &mut hero_proc_rpc::Client,
    id: i64,
    tail: Option<usize>,
    follow: bool,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let offset = print_job(c, id, tail, out).await?;
    if follow {
        follow_job(c, id, offset, out, async |c: &mut hero_proc_rpc::Client| {
            let j: JobView = c.call_typed::<m::JobGet>(&IdRef { id }).await?;
            Ok(!matches!(j.phase, JobPhase::Pending | JobPhase::Running))
        })
        .await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `service logs` shows.
pub struct ServiceLogs {
    pub name: String,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<Duration>,
    pub previous: bool,
}

/// The service's jobs, newest first (its processes, one job each).
async fn jobs_of(c: &mut hero_proc_rpc::Client, service: &str, limit: u32) -> anyhow::Result<Vec<JobView>> {
    let q =
        JobQuery { phase: None, service: Some(service.to_owned()), run_id: None, limit: Some(limit), before_id: None };
    Ok(c.call_typed::<m::JobList>(&q).await?)
}

fn header(j: &JobView, out: &Output) {
    if out.json() || out.quiet {
        return;
    }
    let pid = j.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    let ended = match (j.exit_code, j.signal) {
        (Some(code), _) => format!(", exit code {code}"),
        (None, Some(s)) => format!(", killed by signal {s}"),
        _ => String::new(),
    };
    eprintln!("-- job {} ({}{pid}{ended}) --", j.id, j.phase.as_str());
}

pub async fn service(c: &mut hero_proc_rpc::Client, q: ServiceLogs, out: &Output) -> anyhow::Result<ExitCode> {
    let r = Ref::parse(&q.name)?;
    let key = r.to_string();
    let status: ServiceView = c.call_typed::<m::ServiceStatus>(&r).await?;
    let jobs = jobs_of(c, &key, 100).await?;
    // The current process's job, else the newest one (a stopped service).
    let current = status.job_id.or_else(|| jobs.first().map(|j| j.id));
    let Some(current) = current else {
        if !out.quiet {
            eprintln!("{key} has not run yet: no output");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let shown: Vec<&JobView> = if q.previous {
        match jobs.iter().find(|j| j.id < current) {
            Some(p) => vec![p],
            None => bail!("{key} has no previous process (job {current} is its first)"),
        }
    } else if let Some(since) = q.since {
        // Lines carry no time of their own: `--since` picks the processes that ran in
        // the window, oldest first.
        let from = hero_proc_store::now_ms() - since.as_millis() as i64;
        let mut v: Vec<&JobView> = jobs.iter().filter(|j| j.finished_at_ms.is_none_or(|f| f >= from)).collect();
        v.reverse();
        v
    } else {
        jobs.iter().filter(|j| j.id == current).collect()
    };
    let mut last = (current, 0u64);
    for j in &shown {
        if shown.len() > 1 {
            header(j, out);
        }
        last = (j.id, print_job(c, j.id, q.tail, out).await?);
    }
    if !q.follow || q.previous {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow across restarts, until interrupted.
    let (mut job, mut offset) =
        if last.0 == current { last } else { (current, print_job(c, current, Some(0), out).await?) };
    loop {
        let mut next = None;
        let k = r.clone();
        offset = follow_job(c, job, offset, out, async |c: &mut hero_proc_rpc::Client| {
            let s: ServiceView = c.call_typed::<m::ServiceStatus>(&k).await?;
            match s.job_id {
                Some(id) if id != job => {
                    next = Some(id);
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await?;
        let Some(id) = next else { continue };
        if !out.json() && !out.quiet {
            let j: JobView = c.call_typed::<m::JobGet>(&IdRef { id }).await?;
            eprintln!("-- {key} restarted: job {id}{} --", j.pid.map(|p| format!(", pid {p}")).unwrap_or_default());
        }
        job = id;
        offset = 0;
    }
}
