//! Plan benchmark: what a sync of a large config repository costs.
//!
//! Builds a real git repository (git2, in a temp dir) holding 10,000 actions and 2,000
//! services over 200 files in `actions/` (and the same at 1,000 / 200 over 20 files),
//! commits it, and measures, as medians over several rounds:
//!
//! - `Desired::load` of the commit (read, parse, validate, merge; no secrets);
//! - a no-op sync of that commit, in two parts. The first commit is applied with
//!   `apply()` to a real SQLite store (`hero_proc_store`, a file in the temp dir), then:
//!   * store read + plan: what the daemon's reconciler does for a revision whose desired
//!     state it has cached (`sync_state`, the live rows through its `LiveMirror`, which
//!     decodes only rows changed since its last read, the engine's service states,
//!     `plan()`); the no-op target applies to this;
//!   * plan only: `plan()` against that live state read once beforehand.
//!
//!   Both plans are checked to be empty;
//! - a second commit changing 1% of the actions (one env value each): load + plan, the
//!   cost of syncing a new commit, with the plan checked to hold exactly those updates.
//!
//! - a third commit changing 1% of the files (every 100th file; each changed file holds
//!   one changed action when its index is even): load through a `ParseCache` warmed by
//!   the first commit (as the daemon's reconciler does), then the store read through a
//!   mirror that shares the first commit's objects, and the plan (the "plan" column holds
//!   both). Only the changed files are parsed (checked), the cross-object checks run on
//!   the whole tree.
//!
//! Targets at 10k actions / 2k services: 1% changed, load + plan under 1 s; a no-op
//! (store read + plan) under 300 ms; 1% of the files changed, cached load + plan under
//! 60 ms.
//!
//! Run: `cargo bench --workspace --bench plan` (about 30 s on 2 cores);
//! `HERO_BENCH_ROUNDS=3` for a quicker run. Without `--bench` (what `cargo test` runs) it
//! is a smoke run of 200 actions / 40 services, one round, with the same checks.

/// Full size or smoke: the convention the daemon-level benchmarks use.
#[path = "../../../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hero_proc_reconcile::live::LiveMirror;
use hero_proc_reconcile::{
    CommitInfo, Desired, Live, Repo, RepoConfig, RunState, SecretSealer, SopsOpener, apply, plan,
};
use hero_proc_spec::ServiceStatus;
use hero_proc_spec::load::ParseCache;
use hero_proc_store::{Ref, SecretRecord, Store};

const COMMAND: &str = "cargo bench --workspace --bench plan";
const ACTIONS_PER_FILE: usize = 50;
const SERVICES_PER_FILE: usize = 10;
/// Actions per service: four one-shot steps, then the supervised process.
const ACTIONS_PER_SERVICE: usize = ACTIONS_PER_FILE / SERVICES_PER_FILE;
const CONTEXTS: usize = 10;
/// One action in this many has its env value changed by the second commit (1%).
const CHANGE_EVERY: usize = 100;

const TARGET_CHANGE_MS: f64 = 1000.0;
const TARGET_NOOP_MS: f64 = 300.0;
const TARGET_CACHED_MS: f64 = 60.0;
/// The third commit changes one file in this many (1%).
const CHANGE_FILE_EVERY: usize = 100;

#[derive(Clone, Copy)]
struct Scale {
    actions: usize,
    services: usize,
    rounds: usize,
}

impl Scale {
    fn files(&self) -> usize {
        self.actions / ACTIONS_PER_FILE
    }
    fn label(&self) -> String {
        format!("{} / {} / {}", thousands(self.actions), thousands(self.services), self.files())
    }
}

/// One `actions/*.yaml` file: 50 actions and the 10 services that run them. Actions
/// whose index is a multiple of [`CHANGE_EVERY`] get `LEVEL: <level>`.
fn file_yaml(f: usize, changed_level: &str) -> String {
    let ctx = format!("c{}", f % CONTEXTS);
    let mut y = format!("# bench file {f}: services s{:05}..s{:05}\nactions:\n", f * 10, f * 10 + 9);
    for k in 0..ACTIONS_PER_FILE {
        let i = f * ACTIONS_PER_FILE + k;
        let j = i / ACTIONS_PER_SERVICE;
        let step = i % ACTIONS_PER_SERVICE;
        let level = if i.is_multiple_of(CHANGE_EVERY) { changed_level } else { "v1" };
        if step + 1 < ACTIONS_PER_SERVICE {
            let _ = write!(
                y,
                "  - name: a{i:05}
    context: {ctx}
    description: step {step} of service s{j:05}
    interpreter: bash
    script: |
      echo preparing {i}
      mkdir -p \"$HOME/bench/{i}\"
    env:
      STEP: \"{step}\"
      LEVEL: {level}
    timeout: 30s
    tags: [bench, prep]
"
            );
            if step > 0 {
                let _ = writeln!(y, "    depends_on: [a{:05}]", i - 1);
            }
        } else {
            let port = 20_000 + i % 40_000;
            let first = i + 1 - ACTIONS_PER_SERVICE;
            let _ = write!(
                y,
                "  - name: a{i:05}
    context: {ctx}
    description: worker of service s{j:05}
    script: /usr/local/bin/worker --id {i} --listen 127.0.0.1:{port}
    process: true
    env:
      PORT: \"{port}\"
      LEVEL: {level}
      TOKEN_FILE: /run/bench/{j}.token
    restart: {{ policy: always, delay: 500ms, max_delay: 30s }}
    stop: {{ signal: SIGTERM, timeout: 5s }}
    health:
      - tcp: 127.0.0.1:{port}
    depends_on: [a{first:05}, a{:05}]
    tags: [bench, worker]
",
                i - 1
            );
        }
    }
    y.push_str("services:\n");
    for s in 0..SERVICES_PER_FILE {
        let j = f * SERVICES_PER_FILE + s;
        let list: Vec<String> =
            (0..ACTIONS_PER_SERVICE).map(|k| format!("a{:05}", j * ACTIONS_PER_SERVICE + k)).collect();
        let _ = write!(
            y,
            "  - name: s{j:05}\n    context: {ctx}\n    description: bench service {j}\n    actions: [{}]\n",
            list.join(", ")
        );
        if s > 0 {
            let _ = writeln!(y, "    requires: [s{:05}]", j - 1);
        }
    }
    y
}

/// Commit the tree for `scale` (with `LEVEL: level` on the changing actions) on HEAD.
fn commit_tree(repo: &git2::Repository, scale: Scale, level: &str) -> (git2::Oid, usize) {
    commit_files(repo, scale, |_| level)
}

/// Commit the tree for `scale`, file `f` with `LEVEL: level(f)` on its changing actions.
fn commit_files<'l>(repo: &git2::Repository, scale: Scale, level: impl Fn(usize) -> &'l str) -> (git2::Oid, usize) {
    let mut bytes = 0;
    let mut actions = repo.treebuilder(None).unwrap();
    for f in 0..scale.files() {
        let text = file_yaml(f, level(f));
        bytes += text.len();
        let blob = repo.blob(text.as_bytes()).unwrap();
        actions.insert(format!("svc-{f:03}.yaml"), blob, 0o100644).unwrap();
    }
    let actions = actions.write().unwrap();
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("hero.yaml", repo.blob(b"required_services: []\nself_heal: true\nprune: true\n").unwrap(), 0o100644)
        .unwrap();
    root.insert("actions", actions, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("bench", "bench@example.org").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let msg = format!("bench: LEVEL {}", level(0));
    (repo.commit(Some("HEAD"), &sig, &sig, &msg, &tree, &parents).unwrap(), bytes)
}

fn load_cached(repo: &Repo, commit: &CommitInfo, cache: &mut ParseCache) -> Desired {
    let opener = SopsOpener::new(Err("no key".into()), false, |_: &str, _: &str, _: &str| String::new());
    match Desired::load_cached(repo.repository(), commit.clone(), None, &opener, cache) {
        Ok(d) => d,
        Err(e) => panic!("the bench repository does not load: {e}"),
    }
}

fn load(repo: &Repo, commit: &CommitInfo) -> Desired {
    let opener = SopsOpener::new(Err("no key".into()), false, |_: &str, _: &str, _: &str| String::new());
    match Desired::load(repo.repository(), commit.clone(), None, &opener) {
        Ok(d) => d,
        Err(e) => panic!("the bench repository does not load: {e}"),
    }
}

/// The bench trees hold no secrets: nothing is ever sealed.
struct NoSecrets;

impl SecretSealer for NoSecrets {
    fn seal(&self, _: &str, _: &str, _: &str, _: &str) -> Result<SecretRecord, String> {
        Err("the bench trees hold no secrets".into())
    }
}

/// What the engine reports after an apply of `d`: services with `status: start` up.
fn states_of(d: &Desired) -> BTreeMap<Ref, RunState> {
    d.state
        .services
        .iter()
        .map(|((c, n), s)| {
            (Ref::new(c, n), if s.status == ServiceStatus::Start { RunState::Up } else { RunState::Down })
        })
        .collect()
}

/// A no-op sync of a cached revision as the daemon's reconciler does it: the sync state
/// and every row from the store, the engine's states, then the plan.
/// What the daemon's sync does once the revision is loaded: the sync state, the live rows
/// through its mirror (only rows changed since the last read are decoded), the plan, and
/// the mirror sharing git's objects for the next one.
fn read_and_plan(
    store: &Store,
    mirror: &mut LiveMirror,
    d: &Desired,
    states: &BTreeMap<Ref, RunState>,
) -> hero_proc_reconcile::Plan {
    let sync = store.sync_state().unwrap();
    let mut live = Live::read_mirrored(store, mirror).unwrap();
    live.states = states.clone();
    let p = plan(d, &live, Some(d), sync.applied_revision.as_deref());
    mirror.share(&d.state);
    p
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Row {
    scale: Scale,
    setup: Duration,
    yaml_bytes: usize,
    load: Duration,
    apply: Duration,
    noop_read_plan: Duration,
    noop_plan: Duration,
    change_load: Duration,
    change_plan: Duration,
    change_total: Duration,
    updates: usize,
    restarts: usize,
    /// The third commit (1% of the files): cached load, plan, both.
    files_load: Duration,
    files_plan: Duration,
    files_total: Duration,
    files_parsed: u64,
}

fn run(scale: Scale) -> Row {
    let t = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let git = git2::Repository::init_bare(dir.path()).unwrap();
    let (first, yaml_bytes) = commit_tree(&git, scale, "v1");
    let (third, _) = commit_files(&git, scale, |f| if f.is_multiple_of(CHANGE_FILE_EVERY) { "v3" } else { "v1" });
    let (second, _) = commit_tree(&git, scale, "v2");
    drop(git);
    let repo = Repo::open(
        &RepoConfig { location: dir.path().to_string_lossy().into_owned(), branch: None },
        Path::new("/nonexistent-cache"),
    )
    .unwrap();
    let c1 = repo.resolve(&first.to_string()).unwrap();
    let c2 = repo.head().unwrap();
    assert_eq!(c2.id, second.to_string());
    let setup = t.elapsed();

    // (a) load the first commit.
    let mut loads = Vec::new();
    let mut d1 = None;
    for _ in 0..scale.rounds {
        let t = Instant::now();
        let d = black_box(load(&repo, &c1));
        loads.push(t.elapsed());
        d1 = Some(d);
    }
    let d1 = d1.unwrap();
    assert_eq!((d1.state.actions.len(), d1.state.services.len()), (scale.actions, scale.services));

    // (b) apply the first commit to a real store, then a no-op sync of it: store read +
    // plan, and plan alone against the live state read once.
    let store = Store::open(dir.path().join("hero_proc.db")).unwrap();
    let t = Instant::now();
    let first_plan = plan(&d1, &Live::read(&store).unwrap(), None, None);
    assert_eq!(first_plan.summary.create, scale.actions + scale.services, "{:?}", first_plan.summary);
    apply(&store, &first_plan, &d1, &NoSecrets, false, 1_795_392_000_000).unwrap();
    let applied = t.elapsed();
    assert_eq!(store.sync_state().unwrap().applied_revision.as_deref(), Some(c1.id.as_str()));
    let states = states_of(&d1);
    let (mut noop_reads, mut noops) = (Vec::new(), Vec::new());
    // The daemon's mirror, after its first read (every row decoded once, at start).
    let mut mirror = LiveMirror::default();
    mirror.refresh(&store).unwrap();
    for _ in 0..scale.rounds {
        let t = Instant::now();
        let p = black_box(read_and_plan(&store, &mut mirror, &d1, &states));
        noop_reads.push(t.elapsed());
        assert!(p.is_empty(), "the no-op plan after a store read is not empty: {:?}", p.summary);
    }
    let mut live = Live::read(&store).unwrap();
    live.states = states;
    assert_eq!((live.actions.len(), live.services.len()), (scale.actions, scale.services));
    assert!(live.actions.values().all(|s| s.managed) && live.services.values().all(|s| s.managed));
    for _ in 0..scale.rounds {
        let t = Instant::now();
        let p = black_box(plan(&d1, &live, Some(&d1), Some(&c1.id)));
        noops.push(t.elapsed());
        assert!(p.is_empty(), "the no-op plan is not empty: {:?}", p.summary);
    }

    // (c) the second commit: 1% of the actions changed.
    let want = scale.actions / CHANGE_EVERY;
    let (mut change_loads, mut change_plans, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let (mut updates, mut restarts) = (0, 0);
    for _ in 0..scale.rounds {
        let t = Instant::now();
        let d2 = load(&repo, &c2);
        let loaded = t.elapsed();
        let p = black_box(plan(&d2, &live, Some(&d1), Some(&c1.id)));
        let total = t.elapsed();
        change_loads.push(loaded);
        change_plans.push(total - loaded);
        totals.push(total);
        assert_eq!(p.summary.update, want, "{:?}", p.summary);
        assert_eq!(p.changes.len(), want);
        assert!(p.changes.iter().all(|c| c.diff.contains("-  LEVEL: v1\n+  LEVEL: v2\n")), "unexpected diff");
        assert!(!p.is_refused() && p.drift.is_empty());
        (updates, restarts) = (p.summary.update, p.summary.restart);
    }
    assert_eq!(restarts, want, "each changed action restarts the one service running it");

    // (d) the third commit: 1% of the files changed, loaded through a parse cache that
    // holds the first commit's files, as the daemon's reconciler has it.
    let c3 = repo.resolve(&third.to_string()).unwrap();
    let changed_files = scale.files().div_ceil(CHANGE_FILE_EVERY);
    let want = (0..scale.files()).step_by(CHANGE_FILE_EVERY).filter(|f| f % 2 == 0).count();
    let (mut files_loads, mut files_plans, mut files_totals) = (Vec::new(), Vec::new(), Vec::new());
    let mut files_parsed = 0;
    for _ in 0..scale.rounds {
        // As the daemon holds it after syncing the first commit: its files parsed once,
        // and the mirror's rows sharing those objects.
        let mut cache = ParseCache::new();
        let d1 = load_cached(&repo, &c1, &mut cache);
        let mut mirror = LiveMirror::default();
        mirror.refresh(&store).unwrap();
        mirror.share(&d1.state);
        let before = cache.stats().parsed;
        let t = Instant::now();
        let d3 = load_cached(&repo, &c3, &mut cache);
        let loaded = t.elapsed();
        let mut live = Live::read_mirrored(&store, &mut mirror).unwrap();
        live.states = states_of(&d1);
        let p = black_box(plan(&d3, &live, Some(&d1), Some(&c1.id)));
        let total = t.elapsed();
        files_loads.push(loaded);
        files_plans.push(total - loaded);
        files_totals.push(total);
        files_parsed = cache.stats().parsed - before;
        assert_eq!(files_parsed, changed_files as u64, "only the changed files are parsed");
        assert_eq!(p.summary.update, want, "{:?}", p.summary);
        assert!(p.changes.iter().all(|c| c.diff.contains("-  LEVEL: v1\n+  LEVEL: v3\n")), "unexpected diff");
    }
    Row {
        scale,
        setup,
        yaml_bytes,
        load: median(loads),
        apply: applied,
        noop_read_plan: median(noop_reads),
        noop_plan: median(noops),
        change_load: median(change_loads),
        change_plan: median(change_plans),
        change_total: median(totals),
        updates,
        restarts,
        files_load: median(files_loads),
        files_plan: median(files_plans),
        files_total: median(files_totals),
        files_parsed,
    }
}

fn main() {
    // `--list`, or a test-name filter that does not match: nothing to run.
    if bench::Mode::from_args("plan").is_none() {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test` does not: then a smoke run, one small
    // round through every path and check.
    let quick = bench::Mode::from_args("plan") != Some(bench::Mode::Full);
    let rounds = std::env::var("HERO_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok());
    let scales = if quick {
        vec![Scale { actions: 200, services: 40, rounds: rounds.unwrap_or(1) }]
    } else {
        vec![
            Scale { actions: 1_000, services: 200, rounds: rounds.unwrap_or(21) },
            Scale { actions: 10_000, services: 2_000, rounds: rounds.unwrap_or(11) },
        ]
    };
    let started = Instant::now();
    let rows: Vec<Row> = scales.into_iter().map(run).collect();

    println!();
    println!("hero_proc_reconcile plan benchmark: `{COMMAND}`");
    println!(
        "{} cores; medians in ms; `1% commit` = a new commit changing one env value in 1 of {CHANGE_EVERY} actions",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!();
    println!(
        "| actions / services / files | rounds | YAML KiB | load commit | no-op: store read + plan | no-op: plan only, cold rows | 1% commit: load | plan | load + plan | updates | restarts |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {} | {} |",
            r.scale.label(),
            r.scale.rounds,
            r.yaml_bytes / 1024,
            ms(r.load),
            ms(r.noop_read_plan),
            ms(r.noop_plan),
            ms(r.change_load),
            ms(r.change_plan),
            ms(r.change_total),
            r.updates,
            r.restarts,
        );
    }
    if let [small, big] = rows.as_slice() {
        let x = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "| ratio 10k / 1k (objects x{:.0}) | | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | | |",
            big.scale.actions as f64 / small.scale.actions as f64,
            big.yaml_bytes as f64 / small.yaml_bytes as f64,
            x(big.load, small.load),
            x(big.noop_read_plan, small.noop_read_plan),
            x(big.noop_plan, small.noop_plan),
            x(big.change_load, small.change_load),
            x(big.change_plan, small.change_plan),
            x(big.change_total, small.change_total),
        );
        println!();
        let verdict = |v: f64, target: f64| if v < target { "met" } else { "MISSED" };
        let change = ms(big.change_total);
        let noop = ms(big.noop_read_plan);
        println!(
            "target: 10k/2k, 1% changed, load + plan < {TARGET_CHANGE_MS:.0} ms: {change:.1} ms ({})",
            verdict(change, TARGET_CHANGE_MS)
        );
        println!(
            "target: 10k/2k no-op (store read + plan) < {TARGET_NOOP_MS:.0} ms: {noop:.2} ms ({})",
            verdict(noop, TARGET_NOOP_MS)
        );
        println!(
            "        for comparison: the plan alone against rows decoded apart from git's objects (what a cold mirror holds): {:.2} ms; a no-op that also loads the commit (no cache): {:.1} ms",
            ms(big.noop_plan),
            ms(big.load) + ms(big.noop_read_plan)
        );
    }
    println!();
    println!(
        "1% of the files changed (1 in {CHANGE_FILE_EVERY}), loaded through the parse cache holding the first commit:"
    );
    println!("| actions / services / files | files parsed | cached load | plan | load + plan |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.1} |",
            r.scale.label(),
            r.files_parsed,
            ms(r.files_load),
            ms(r.files_plan),
            ms(r.files_total)
        );
    }
    if let Some(big) = rows.last().filter(|_| !quick) {
        let v = ms(big.files_total);
        println!(
            "target: 10k/2k, 1% of the files changed, cached load + plan < {TARGET_CACHED_MS:.0} ms: {v:.1} ms ({})",
            if v < TARGET_CACHED_MS { "met" } else { "MISSED" }
        );
    }
    for r in &rows {
        println!(
            "setup at {} actions: generate + 3 commits {:.0} ms; first apply to the empty store {:.0} ms",
            thousands(r.scale.actions),
            ms(r.setup),
            ms(r.apply)
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
