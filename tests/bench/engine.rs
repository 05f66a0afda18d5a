//! Engine benchmark: the supervisor in the shapes users drive it, each against a baseline
//! measured in the same run.
//!
//! Jobs (one daemon, one RPC connection, the action `t` = exec `true`):
//!   - one call each: N `run.submit` calls of one action, each waiting for its answer,
//!     then until every job has finished;
//!   - one batch: one `run.submit` of N actions, until the run has finished;
//!   - baseline: a bare fork/exec of `true` N times (spawn all, wait all).
//!
//!   The three are interleaved round by round (best of each) so load elsewhere on the
//!   machine hits them alike.
//!   - one CLI process per job: `hero_proc run submit t` N times, until all have
//!     finished; baselines `hero_proc --version` N times (the CLI process alone) and
//!     `pueue add -- true` N times when pueue is installed.
//!
//! Services, the same for every supervisor (hero_proc, supervisord, pueue): S programs
//! `sleep MARK`, each added by one CLI call, then idle cost, a cold start of the daemon
//! with the S programs configured (not pueue: it does not restart tasks at boot), and S
//! stops of one CLI call each. Every CLI moment is observed twice: by the supervisor's
//! own status CLI (a new process every 10 ms after the previous one returned), and by a
//! thread that scans /proc every 5 ms for live `sleep MARK` processes. For hero_proc
//! also S starts and S stops of one RPC call each on one connection: the daemon's side,
//! without a CLI process per call, timed by the /proc scan alone.
//!
//! Full size: `cargo bench --workspace --bench engine`. Without `--bench` (what `cargo
//! test` runs) a smoke size. HERO_BENCH_JOBS / HERO_BENCH_SERVICES override the sizes;
//! HERO_BENCH_BINARY=PATH measures another build (A/B: alternate runs with and without).

#[path = "../support/mod.rs"]
mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bench::Mode;
use support::{Daemon, text};

/// Interval between two status polls through a supervisor's CLI.
const POLL: Duration = Duration::from_millis(10);
/// Interval between two /proc scans.
const SCAN: Duration = Duration::from_millis(5);
/// Longest any wait may take before the benchmark fails.
const LIMIT: Duration = Duration::from_secs(120);

struct Sizes {
    jobs: usize,
    rounds: usize,
    tasks: usize,
    services: usize,
    idle: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (CPU ticks, context switches, RSS kB) of a process.
fn proc_cost(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks, field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"), field("VmRSS:"))
}

/// CPU time all threads of a process have run, in ns (`/proc/PID/task/*/schedstat`):
/// precise enough for a per-job figure, where `/proc/PID/stat` counts 10 ms ticks.
fn threads_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Wait until `f` holds, polling every `every`; panics with `what` after [`LIMIT`].
fn wait(what: &str, every: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {what}");
        std::thread::sleep(every);
    }
}

fn main() {
    let Some(mode) = Mode::from_args("engine") else { return };
    let sizes = Sizes {
        jobs: mode.size("HERO_BENCH_JOBS", 1000, 20),
        rounds: if mode.is_smoke() { 1 } else { 5 },
        tasks: mode.size("HERO_BENCH_JOBS", 500, 10),
        services: mode.size("HERO_BENCH_SERVICES", 50, 2),
        idle: if mode.is_smoke() { Duration::from_millis(200) } else { Duration::from_secs(5) },
    };
    println!("{}", mode.banner("engine"));
    println!("binary: {}", support::measure_binary_from_env(mode));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(jobs(&sizes));
    rt.block_on(cli_jobs(&sizes));
    services(&sizes);
}

// ---- jobs ---------------------------------------------------------------------------

const TRUE_ACTION: &str = "actions:\n  - name: t\n    interpreter: exec\n    script: 'true'\n";

fn daemon(args: &[&str]) -> Daemon {
    Daemon::start_env(args, false, &[("RUST_LOG", "warn")])
}

/// A daemon with the action `t` (exec `true`) and an RPC connection to it.
async fn jobs_daemon() -> (Daemon, hero_proc_rpc::Client) {
    let d = daemon(&[]);
    let file = d.root().join("t.yaml");
    std::fs::write(&file, TRUE_ACTION).unwrap();
    let out = d.cli(&["action", "set", file.to_str().unwrap()]);
    assert!(out.status.success(), "action set: {}", text(&out.stderr));
    let c = hero_proc_rpc::Client::connect(&d.socket()).await.expect("connect to the daemon's socket");
    (d, c)
}

/// CPU time of this process's reaped children so far (`getrusage(RUSAGE_CHILDREN)`), ns.
fn reaped_children_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut u) }, 0);
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(u.ru_utime) + ns(u.ru_stime)
}

/// Spawn `true` N times, then wait for all: how long that took, and the CPU the N
/// `true`s used (what any supervisor's jobs cost at least).
fn bare_spawn(n: usize) -> (Duration, u64) {
    let cpu = reaped_children_cpu_ns();
    let t = Instant::now();
    let children: Vec<Child> = (0..n).map(|_| Command::new("true").spawn().expect("spawn `true`")).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    (t.elapsed(), reaped_children_cpu_ns() - cpu)
}

async fn call(c: &mut hero_proc_rpc::Client, method: &str, params: Value) -> Value {
    c.call_value(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// Until no job is pending or running. Panics after [`LIMIT`].
async fn until_idle(c: &mut hero_proc_rpc::Client, what: &str) {
    let start = Instant::now();
    loop {
        let mut busy = false;
        for phase in ["pending", "running"] {
            let v = call(c, "job.list", json!({ "phase": phase, "limit": 1 })).await;
            busy |= !v.as_array().expect("job.list answers a list").is_empty();
        }
        if !busy {
            return;
        }
        assert!(start.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {what} to finish");
        // Poll gently: the poller must not compete with the daemon for the CPU.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn assert_succeeded(c: &mut hero_proc_rpc::Client, id: i64) {
    let r = call(c, "run.get", json!({ "id": id, "jobs": false })).await;
    assert_eq!(r["phase"], "succeeded", "run {id} did not succeed: {r}");
}

/// What one round of "one call each" took.
struct EachRound {
    took: Duration,
    daemon_cpu: u64,
    client_cpu: u64,
    /// Each `run.submit` call's round trip, sorted.
    calls: Vec<Duration>,
}

/// N runs of one job, one `run.submit` call each, until all have finished; and the CPU
/// that took, the daemon's (`pid`, all its threads) and this client's, before the check
/// that every run succeeded (N more calls, not counted).
async fn one_call_each(c: &mut hero_proc_rpc::Client, n: usize, pid: u32) -> EachRound {
    let me = std::process::id();
    let (daemon, client) = (threads_cpu_ns(pid), threads_cpu_ns(me));
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let run = call(c, "run.submit", json!({ "actions": ["t"] })).await;
        calls.push(started.elapsed());
        ids.push(run["id"].as_i64().expect("run.submit answers the run's id"));
    }
    until_idle(c, &format!("{n} runs submitted one call each")).await;
    let took = t.elapsed();
    let cpu = (threads_cpu_ns(pid) - daemon, threads_cpu_ns(me) - client);
    for id in ids {
        assert_succeeded(c, id).await;
    }
    calls.sort();
    EachRound { took, daemon_cpu: cpu.0, client_cpu: cpu.1, calls }
}

/// The `p`th percentile of sorted durations, in ms.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(sorted[i])
}

/// N calls that read one row and start nothing (`run.get` of run 1), one after the
/// other: the RPC round trip alone, the floor under "one call each".
async fn rpc_calls(c: &mut hero_proc_rpc::Client, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        call(c, "run.get", json!({ "id": 1, "jobs": false })).await;
    }
    t.elapsed()
}

/// One run of N jobs, until it has finished.
async fn one_batch(c: &mut hero_proc_rpc::Client, n: usize) -> Duration {
    let t = Instant::now();
    let run = call(c, "run.submit", json!({ "actions": vec!["t"; n] })).await;
    let id = run["id"].as_i64().expect("run.submit answers the run's id");
    loop {
        let r = call(c, "run.get", json!({ "id": id, "jobs": false })).await;
        if r["phase"] == "succeeded" {
            return t.elapsed();
        }
        assert!(r["phase"] == "running" || r["phase"] == "pending", "run of {n} jobs failed: {r}");
        assert!(t.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for a run of {n} jobs: {r}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn jobs(s: &Sizes) {
    let n = s.jobs;
    let (d, mut c) = jobs_daemon().await;
    let pid = d.child.as_ref().expect("the daemon runs").id();
    // Warm the page cache and the daemon.
    let _ = bare_spawn(50.min(n));
    one_batch(&mut c, 50.min(n)).await;
    let (mut bare, mut each, mut batch, mut calls) = (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    // The daemon's CPU per job in each shape (least over the rounds): what its own work
    // costs, apart from how it overlaps with the jobs' processes on this machine's cores.
    let (mut each_cpu, mut batch_cpu, mut client_cpu, mut true_cpu) = (u64::MAX, u64::MAX, u64::MAX, u64::MAX);
    // Every call's round trip over all rounds: a stall of the daemon shows in the tail.
    let mut latencies = Vec::new();
    for _ in 0..s.rounds {
        let (took, cpu) = bare_spawn(n);
        bare = bare.min(took);
        true_cpu = true_cpu.min(cpu);
        let round = one_call_each(&mut c, n, pid).await;
        each = each.min(round.took);
        each_cpu = each_cpu.min(round.daemon_cpu);
        client_cpu = client_cpu.min(round.client_cpu);
        latencies.extend(round.calls);
        let cpu = threads_cpu_ns(pid);
        batch = batch.min(one_batch(&mut c, n).await);
        batch_cpu = batch_cpu.min(threads_cpu_ns(pid) - cpu);
        calls = calls.min(rpc_calls(&mut c, n).await);
    }
    println!();
    println!(
        "{n} one-shot `true` jobs through the daemon (RPC, SQLite rows, an output file each), best of {} interleaved rounds",
        s.rounds
    );
    println!("{:<58} {:>10} {:>10} {:>8}", "shape", "ms", "ms/job", "ratio");
    for (what, d) in [
        (format!("baseline: bare fork/exec of `true` {n} times"), bare),
        (format!("{n} runs, one `run.submit` call each (one connection)"), each),
        (format!("1 run of {n} jobs, one `run.submit` call"), batch),
        (format!("for scale: {n} `run.get` calls (RPC round trip alone)"), calls),
    ] {
        println!(
            "{:<58} {:>10.1} {:>10.3} {:>7.2}x",
            what,
            ms(d),
            ms(d) / n as f64,
            d.as_secs_f64() / bare.as_secs_f64()
        );
    }
    println!(
        "per-job overhead ratio vs bare fork/exec: one call each {:.2}x, one batch {:.2}x",
        each.as_secs_f64() / bare.as_secs_f64(),
        batch.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "the daemon's CPU per job (all its threads): one call each {:.3} ms, one batch {:.3} ms; this client's, one call each {:.3} ms",
        each_cpu as f64 / 1e6 / n as f64,
        batch_cpu as f64 / 1e6 / n as f64,
        client_cpu as f64 / 1e6 / n as f64
    );
    // The least time one call each can take on this machine: every job's CPU (its `true`,
    // the daemon's share, this client's) spread over all cores with none idle.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let per_job = |ns: u64| ns as f64 / 1e6 / n as f64;
    let floor = (per_job(true_cpu) + per_job(each_cpu) + per_job(client_cpu)) / cores as f64;
    println!(
        "one call each, the CPU a job: `true` {:.3} + the daemon {:.3} + this client {:.3} ms; on {cores} cores with none idle at least {:.3} ms a job, {:.2}x of bare",
        per_job(true_cpu),
        per_job(each_cpu),
        per_job(client_cpu),
        floor,
        floor / (ms(bare) / n as f64)
    );
    latencies.sort();
    println!(
        "one `run.submit` call's round trip over {} calls (one call each): median {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        ms(*latencies.last().expect("at least one call"))
    );
}

/// `hero_proc run submit t` (a CLI process each) N times, until every job has finished;
/// against the CLI process alone and pueue.
async fn cli_jobs(s: &Sizes) {
    let n = s.tasks;
    let (d, mut c) = jobs_daemon().await;
    let t = Instant::now();
    for _ in 0..n {
        let out = d.cli(&["--version"]);
        assert!(out.status.success(), "hero_proc --version: {}", text(&out.stderr));
    }
    let floor = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let out = d.cli(&["run", "submit", "t"]);
        assert!(out.status.success(), "hero_proc run submit t: {}", text(&out.stderr));
    }
    until_idle(&mut c, &format!("{n} runs submitted by the CLI")).await;
    let ours = t.elapsed();
    let failed = call(&mut c, "job.list", json!({ "phase": "failed", "limit": 1 })).await;
    assert_eq!(failed, json!([]), "a job submitted by the CLI failed");
    let pueue = Pueue::start().map(|p| p.throughput(n));

    println!();
    println!("{n} short `true` tasks, one CLI process each, until all are done");
    println!("{:<58} {:>10} {:>10}", "", "ms", "ratio");
    println!("{:<58} {:>10.1}", "hero_proc: `hero_proc run submit t`", ms(ours));
    println!(
        "{:<58} {:>10.1} {:>9.2}x",
        "baseline: `hero_proc --version` (the CLI process alone)",
        ms(floor),
        ours.as_secs_f64() / floor.as_secs_f64()
    );
    match pueue {
        Some(p) => println!(
            "{:<58} {:>10.1} {:>9.2}x",
            "baseline: pueue, `pueue add -- true` (parallel 64)",
            ms(p),
            ours.as_secs_f64() / p.as_secs_f64()
        ),
        None => println!("{}", Pueue::MISSING),
    }
}

// ---- services -----------------------------------------------------------------------

/// Live, non-zombie processes whose command line is exactly `sleep MARK`.
fn sleepers(mark: &str) -> usize {
    let want = format!("sleep\0{mark}\0");
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
        {
            n += 1;
        }
    }
    n
}

/// A thread scanning /proc every [`SCAN`] from now until the `sleep MARK` count is `want`.
struct ProcWatch {
    thread: std::thread::JoinHandle<Option<Duration>>,
}

impl ProcWatch {
    fn start(t0: Instant, mark: &str, want: usize) -> ProcWatch {
        let mark = mark.to_owned();
        let thread = std::thread::spawn(move || {
            while t0.elapsed() < LIMIT {
                if sleepers(&mark) == want {
                    return Some(t0.elapsed());
                }
                std::thread::sleep(SCAN);
            }
            None
        });
        ProcWatch { thread }
    }

    fn finish(self, what: &str) -> Duration {
        self.thread.join().unwrap().unwrap_or_else(|| panic!("timed out after {LIMIT:?} waiting for {what} in /proc"))
    }
}

/// One observation: when the processes were there (or gone) in /proc, and when the
/// supervisor's CLI said so.
#[derive(Clone, Copy)]
struct Seen {
    procs: Duration,
    cli: Duration,
}

/// Poll `says` through the CLI every [`POLL`] until true, then the /proc watch.
fn observe(t0: Instant, watch: ProcWatch, what: &str, mut says: impl FnMut() -> bool) -> Seen {
    wait(&format!("the CLI to say {what}"), POLL, &mut says);
    let cli = t0.elapsed();
    Seen { procs: watch.finish(what), cli }
}

#[derive(Default)]
struct PeerResult {
    add: Option<Seen>,
    idle: (u64, u64, u64),
    cold: Option<Seen>,
    stop: Option<Seen>,
    /// hero_proc only: the same stops and starts as one RPC call each over one
    /// connection (the daemon's side, without a CLI process per call), until /proc
    /// shows them all gone or all running.
    rpc_stop: Option<Duration>,
    rpc_start: Option<Duration>,
}

fn idle_cost(pid: u32, idle: Duration) -> (u64, u64, u64) {
    // Let the last status poll's work settle, then measure a quiet window.
    std::thread::sleep(Duration::from_millis(300));
    let (t0, s0, _) = proc_cost(pid);
    std::thread::sleep(idle);
    let (t1, s1, rss) = proc_cost(pid);
    (t1 - t0, s1 - s0, rss)
}

fn services(s: &Sizes) {
    let mark = format!("{}", 7_000_000 + std::process::id());
    assert_eq!(sleepers(&mark), 0, "`sleep {mark}` processes are already running");
    let ours = hero_proc_services(s, &mark);
    let sup = Supervisord::installed().then(|| supervisord_services(s, &mark));
    let pq = Pueue::start().map(|p| pueue_services(p, s, &mark));

    let n = s.services;
    println!();
    println!(
        "{n} long-running programs (`sleep {mark}`) per supervisor, each added and stopped by one CLI call; idle {:?}",
        s.idle
    );
    println!(
        "polling client: each supervisor's own status CLI (`hero_proc --format json service list`, `supervisorctl status`, `pueue status --json`), one process every {} ms after the previous returned; in brackets: a thread scanning /proc every {} ms for the live `sleep` processes",
        POLL.as_millis(),
        SCAN.as_millis()
    );
    let mut peers: Vec<(&str, &PeerResult)> = Vec::new();
    if let Some(r) = &sup {
        peers.push(("supervisord", r));
    }
    if let Some(r) = &pq {
        peers.push(("pueue", r));
    }
    let mut head = format!("{:<40} {:>22}", "measure", "hero_proc");
    for (name, _) in &peers {
        head.push_str(&format!(" {:>22} {:>8}", name, "ratio"));
    }
    println!("{head}");
    // Each row: its label, and from a result the cell and the number its ratio uses.
    type Cell = fn(&PeerResult) -> (String, Option<f64>);
    fn seen(o: Option<Seen>) -> (String, Option<f64>) {
        match o {
            Some(o) => (format!("{:.1} ({:.1}) ms", ms(o.cli), ms(o.procs)), Some(o.cli.as_secs_f64())),
            None => ("n/a".to_owned(), None),
        }
    }
    fn alone(o: Option<Duration>) -> (String, Option<f64>) {
        match o {
            Some(d) => (format!("({:.1}) ms", ms(d)), Some(d.as_secs_f64())),
            None => ("n/a".to_owned(), None),
        }
    }
    let rows: [(String, Cell); 8] = [
        (format!("add {n}, one CLI call each, to running"), |r| seen(r.add)),
        (format!("cold start to {n} running"), |r| seen(r.cold)),
        (format!("stop {n}, one CLI call each, to stopped"), |r| seen(r.stop)),
        (format!("start {n}, one RPC call each, to running"), |r| alone(r.rpc_start)),
        (format!("stop {n}, one RPC call each, to gone"), |r| alone(r.rpc_stop)),
        (format!("idle {:?}: CPU ticks", s.idle), |r| (r.idle.0.to_string(), Some(r.idle.0 as f64))),
        (format!("idle {:?}: context switches", s.idle), |r| (r.idle.1.to_string(), Some(r.idle.1 as f64))),
        (format!("RSS with {n} running"), |r| (format!("{:.1} MB", r.idle.2 as f64 / 1024.0), Some(r.idle.2 as f64))),
    ];
    for (what, cell) in rows {
        let (mine, a) = cell(&ours);
        let mut line = format!("{what:<40} {mine:>22}");
        for (_, r) in &peers {
            let (theirs, b) = cell(r);
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => String::new(),
            };
            line.push_str(&format!(" {theirs:>22} {ratio:>8}"));
        }
        println!("{line}");
    }
    println!(
        "(ratio: hero_proc / that supervisor, on what the CLI said; pueue does not restart tasks at boot: no cold start)"
    );
    println!("{}", layout_line());
    if sup.is_none() {
        println!("{}", Supervisord::MISSING);
    }
    if pq.is_none() {
        println!("{}", Pueue::MISSING);
    }
}

fn service_yaml(name: &str, mark: &str) -> String {
    format!(
        "actions:\n  - name: {name}\n    interpreter: exec\n    script: sleep {mark}\n    process: true\n    stop: {{ signal: SIGTERM, timeout: 10s }}\nservices:\n  - name: {name}\n    status: start\n    actions: [{name}]\n"
    )
}

/// (running, inactive) as `hero_proc service list` says; (0, 0) while it cannot answer.
fn hero_proc_states(d: &Daemon) -> (usize, usize) {
    let out = d.cli(&["--format", "json", "service", "list"]);
    if !out.status.success() {
        return (0, 0);
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("service list --format json is JSON");
    let list = v.as_array().expect("service list answers a list");
    let count = |state: &str| list.iter().filter(|s| s["state"] == state).count();
    (count("running"), count("inactive"))
}

fn hero_proc_services(s: &Sizes, mark: &str) -> PeerResult {
    let n = s.services;
    let mut d = daemon(&["--stop-on-exit"]);
    let files: Vec<String> = (0..n)
        .map(|i| {
            let f = d.root().join(format!("s{i}.yaml"));
            std::fs::write(&f, service_yaml(&format!("s{i}"), mark)).unwrap();
            f.display().to_string()
        })
        .collect();
    let mut r = PeerResult::default();

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    for f in &files {
        let out = d.cli(&["service", "set", f]);
        assert!(out.status.success(), "hero_proc service set: {}", text(&out.stderr));
    }
    r.add = Some(observe(t0, watch, &format!("{n} hero_proc services running"), || hero_proc_states(&d).0 == n));
    r.idle = idle_cost(d.child.as_ref().unwrap().id(), s.idle);

    // A daemon stop with --stop-on-exit stops every service without recording a stop by
    // hand, so the next start starts them all again from the store: a cold start.
    let mut child = d.child.take().unwrap();
    // SAFETY: signalling the daemon this benchmark started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "the daemon did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait("the --stop-on-exit daemon's services to be gone", SCAN, || sleepers(mark) == 0);

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    // The same command as the first start (flags, RUST_LOG=warn), timed from the launch.
    d.launch();
    r.cold = Some(observe(t0, watch, &format!("{n} hero_proc services running after a cold start"), || {
        hero_proc_states(&d).0 == n
    }));

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, 0);
    for i in 0..n {
        let out = d.cli(&["service", "stop", &format!("s{i}")]);
        assert!(out.status.success(), "hero_proc service stop: {}", text(&out.stderr));
    }
    r.stop = Some(observe(t0, watch, &format!("{n} hero_proc services inactive"), || hero_proc_states(&d).1 == n));

    // The daemon's side: one RPC call each on one connection, no CLI process per call.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut c = rt.block_on(hero_proc_rpc::Client::connect(&d.socket())).expect("connect to the daemon's socket");
    let mut each = |method: &str| {
        for i in 0..n {
            rt.block_on(call(&mut c, method, json!({ "name": format!("s{i}") })));
        }
    };
    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    each("service.start");
    r.rpc_start = Some(watch.finish(&format!("{n} services started by RPC")));
    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, 0);
    each("service.stop");
    r.rpc_stop = Some(watch.finish(&format!("{n} services stopped by RPC")));
    r
}

/// How much of `crates/hero_proc/hot-symbols.txt` the measured binary still defines: the
/// RSS above holds only when it is about all of it (a dependency change renames many
/// functions; `python3 tests/bench/hot_symbols.py` regenerates the list).
fn layout_line() -> String {
    if cfg!(debug_assertions) {
        return "code layout: not checked in a debug build (hot-symbols.txt names release-build functions)".into();
    }
    let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    let listed: Vec<String> = std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("{}: {e}", list.display()))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let out = Command::new("nm")
        .args(["--defined-only", support::bin()])
        .output()
        .expect("`nm` (binutils) runs: the bench reads the binary's symbols with it");
    assert!(out.status.success(), "nm {}: {}", support::bin(), text(&out.stderr));
    let have: std::collections::HashSet<&str> =
        std::str::from_utf8(&out.stdout).unwrap().lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let hits = listed.iter().filter(|s| have.contains(s.as_str())).count();
    format!(
        "code layout: {hits} of the {} functions in hot-symbols.txt are in this binary ({:.0}%); below ~95% the RSS grows by megabytes: regenerate it",
        listed.len(),
        100.0 * hits as f64 / listed.len().max(1) as f64
    )
}

// ---- supervisord --------------------------------------------------------------------

struct Supervisord {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Supervisord {
    const MISSING: &str = "supervisord: missing, not measured (install it with `apt-get install supervisor`)";

    fn installed() -> bool {
        // (`supervisorctl` has no --version; `-h` answers 0.)
        support::require::runs("supervisord")
            && Command::new("supervisorctl").arg("-h").output().is_ok_and(|o| o.status.success())
    }

    fn new() -> Supervisord {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("supervisord.conf"),
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n[supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\nnodaemon=true\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n[include]\nfiles = {d}/conf.d/*.conf\n"
            ),
        )
        .unwrap();
        Supervisord { dir, child: None }
    }

    fn spawn(&mut self) {
        let child = Command::new("supervisord")
            .arg("-c")
            .arg(self.dir.path().join("supervisord.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisord");
        self.child = Some(child);
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(self.dir.path().join("supervisord.conf"))
            .args(args)
            .output()
            .expect("run supervisorctl")
    }

    /// How many programs `supervisorctl status` shows in `state`.
    fn count(&self, state: &str) -> usize {
        text(&self.ctl(&["status"]).stdout).lines().filter(|l| l.split_whitespace().nth(1) == Some(state)).count()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM: supervisord stops its programs, then exits.
    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the supervisord this benchmark started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > LIMIT {
                    let _ = c.kill();
                    panic!("supervisord did not exit after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.ctl(&["stop", "all"]);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn supervisord_services(s: &Sizes, mark: &str) -> PeerResult {
    let n = s.services;
    let mut sv = Supervisord::new();
    sv.spawn();
    wait("supervisord to answer", POLL, || sv.ctl(&["pid"]).status.success());
    let mut r = PeerResult::default();

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    for i in 0..n {
        // startsecs=0: RUNNING as soon as spawned, like ours without health checks.
        std::fs::write(
            sv.dir.path().join(format!("conf.d/s{i}.conf")),
            format!("[program:s{i}]\ncommand=sleep {mark}\nautostart=true\nautorestart=unexpected\nstartsecs=0\nstopwaitsecs=10\n"),
        )
        .unwrap();
        let out = sv.ctl(&["update", &format!("s{i}")]);
        assert!(out.status.success(), "supervisorctl update s{i}: {}", text(&out.stdout));
    }
    r.add = Some(observe(t0, watch, &format!("{n} supervisord programs RUNNING"), || sv.count("RUNNING") == n));
    r.idle = idle_cost(sv.pid(), s.idle);

    sv.terminate();
    wait("supervisord's programs to be gone", SCAN, || sleepers(mark) == 0);

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    sv.spawn();
    r.cold = Some(observe(t0, watch, &format!("{n} supervisord programs RUNNING after a cold start"), || {
        sv.count("RUNNING") == n
    }));

    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, 0);
    for i in 0..n {
        let out = sv.ctl(&["stop", &format!("s{i}")]);
        assert!(out.status.success(), "supervisorctl stop s{i}: {}", text(&out.stdout));
    }
    r.stop = Some(observe(t0, watch, &format!("{n} supervisord programs STOPPED"), || sv.count("STOPPED") == n));
    r
}

// ---- pueue --------------------------------------------------------------------------

/// A private pueued (its own HOME and XDG folders), found on PATH or in $PUEUE_BIN_DIR;
/// shut down and killed on drop.
struct Pueue {
    _dir: tempfile::TempDir,
    envs: Vec<(&'static str, std::path::PathBuf)>,
    bin_dir: Option<String>,
    child: Child,
}

impl Pueue {
    const MISSING: &str = "pueue: missing, not measured (install it with `cargo install pueue --locked`, then put it on PATH or set PUEUE_BIN_DIR)";

    fn tool(bin_dir: &Option<String>, name: &str) -> String {
        bin_dir.as_ref().map(|d| format!("{d}/{name}")).unwrap_or_else(|| name.to_owned())
    }

    /// `None` when pueue is not installed. Panics when it is but its daemon does not answer.
    fn start() -> Option<Pueue> {
        let bin_dir = std::env::var("PUEUE_BIN_DIR").ok();
        if !support::require::runs(&Self::tool(&bin_dir, "pueue"))
            || !support::require::runs(&Self::tool(&bin_dir, "pueued"))
        {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let envs = vec![
            ("HOME", dir.path().to_owned()),
            ("XDG_CONFIG_HOME", dir.path().join("config")),
            ("XDG_DATA_HOME", dir.path().join("data")),
            ("XDG_RUNTIME_DIR", dir.path().join("run")),
        ];
        for (_, p) in &envs {
            std::fs::create_dir_all(p).unwrap();
        }
        let child = Command::new(Self::tool(&bin_dir, "pueued"))
            .envs(envs.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pueued");
        let p = Pueue { _dir: dir, envs, bin_dir, child };
        wait("pueued to answer", POLL, || p.client(&["status"]).status.success());
        Some(p)
    }

    fn client(&self, args: &[&str]) -> Output {
        Command::new(Self::tool(&self.bin_dir, "pueue"))
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (*k, v)))
            .output()
            .expect("run pueue")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.client(args);
        assert!(out.status.success(), "pueue {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    }

    /// How many tasks `pueue status --json` shows with status `state` (a task's status is
    /// `{"Running":{...}}`, a group's is `"Running"`: only tasks are counted).
    fn count(&self, state: &str) -> usize {
        text(&self.client(&["status", "--json"]).stdout).matches(&format!("\"{state}\":{{")).count()
    }

    /// `pueue add -- true` N times (64 in parallel), until all are done.
    fn throughput(&self, n: usize) -> Duration {
        self.ok(&["parallel", "64"]);
        let t = Instant::now();
        for _ in 0..n {
            self.ok(&["add", "--", "true"]);
        }
        wait(&format!("{n} pueue tasks done"), Duration::from_millis(5), || self.count("Done") == n);
        t.elapsed()
    }
}

impl Drop for Pueue {
    fn drop(&mut self) {
        let _ = self.client(&["kill", "--all"]);
        let _ = self.client(&["shutdown"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pueue is a task queue, not a supervisor: N long tasks added (`pueue add`) and killed
/// (`pueue kill ID`) one CLI call each; it does not restart tasks at boot, so no cold start.
fn pueue_services(p: Pueue, s: &Sizes, mark: &str) -> PeerResult {
    let n = s.services;
    p.ok(&["parallel", &n.to_string()]);
    let mut r = PeerResult::default();
    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, n);
    for _ in 0..n {
        p.ok(&["add", "--", "sleep", mark]);
    }
    r.add = Some(observe(t0, watch, &format!("{n} pueue tasks Running"), || p.count("Running") == n));
    r.idle = idle_cost(p.child.id(), s.idle);
    let t0 = Instant::now();
    let watch = ProcWatch::start(t0, mark, 0);
    for i in 0..n {
        p.ok(&["kill", &i.to_string()]);
    }
    r.stop = Some(observe(t0, watch, &format!("{n} pueue tasks Done"), || p.count("Done") == n));
    r
}
