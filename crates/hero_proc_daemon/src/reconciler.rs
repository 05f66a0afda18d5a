//! The reconciler inside the daemon: when to sync (poll interval, a watcher on a local
//! repository, the push webhook, `reconcile now`), one sync at a time, and handing what
//! was applied to the engine. Planning and applying are `hero_proc_reconcile`'s; this
//! module is scheduling, caching and bookkeeping.
//!
//! A failing revision (fetch, validation, decryption, refusal) applies nothing: the last
//! applied revision keeps running, status and history say why, and the next attempt
//! comes after an exponential backoff (1 s doubling up to the interval).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hero_proc_engine::ServiceState;
use hero_proc_engine::{ConfigChange, Engine, EngineError};
use hero_proc_reconcile::{
    ApplyError, ApplyOutcome, CommitInfo, Desired, Live, LoadError, Plan, Repo, RepoConfig, RepoError, RunState,
    SopsOpener, SyncStatus,
};
use hero_proc_sops::KeyEnv;
use hero_proc_store::{Ref, StoreError, SyncResult};

use crate::commit_status::{CommitStatus, State as CommitState};
use crate::secrets::Vault;
use hero_proc_reconcile::prepare::{Sides, Source, load_sides};

/// `serve --repo ...`: what the daemon follows.
#[derive(Clone, Debug)]
pub struct ReconcileOptions {
    pub repo: RepoConfig,
    /// Overrides hero.yaml `interval`.
    pub interval: Option<Duration>,
    /// Serve the push webhook here (needs `webhook_secret`).
    pub webhook_addr: Option<String>,
    pub webhook_secret: Option<String>,
    /// `--allowed-signers FILE`: apply only commits signed by a key FILE allows for the
    /// committer (read on every sync, so a rotation needs no restart).
    pub allowed_signers: Option<PathBuf>,
}

/// What to plan or apply: the parameters of `reconcile.plan` and `reconcile.apply`. All
/// absent: the daemon's repository at its branch head (or pinned revision).
pub use hero_proc_rpc::wire::ReconcileParams as PlanRequest;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "no repository: this daemon was started without --repo\n  hint: pass --repo PATH|URL to `hero_proc reconcile`, or restart the daemon with `hero_proc serve --repo ...`"
    )]
    NoRepo,
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the plan for {rev} is refused; nothing was applied:\n{}", .reasons.join("\n"))]
    Refused { rev: String, reasons: Vec<String> },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot read the live state: {0}")]
    Store(#[from] StoreError),
    #[error("the engine did not take the change: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot install the artifacts of revision {rev}; nothing was applied: {error}")]
    Artifacts { rev: String, error: hero_proc_artifacts::InstallError },
    /// Not signed by an allowed signer (`--allowed-signers`), or the file is unusable.
    #[error(
        "{0}; nothing was applied\n  hint: sign commits with an allowed key (`git -c gpg.format=ssh -c user.signingkey=KEY commit -S`), or apply this one revision anyway as root on the host: `hero_proc reconcile --rev REV --allow-unsigned`"
    )]
    Untrusted(String),
    #[error("{0}")]
    Baseline(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Reconcile metrics (rendered by `crate::metrics`).
#[derive(Clone, Debug, Default)]
pub struct SyncMetrics {
    /// By result: applied, noop, failed, refused.
    pub results: BTreeMap<SyncResult, u64>,
    /// Duration histogram: cumulative counts for [`DURATION_BUCKETS`], then +Inf.
    pub buckets: Vec<u64>,
    pub duration_sum_s: f64,
    pub duration_count: u64,
    pub drifted: usize,
    pub managed: BTreeMap<&'static str, usize>,
}

/// How long a change made by hand stands before a self-healing sync looks at it: long
/// enough for a stop-then-start by hand, short enough that drift does not linger.
pub const SELF_HEAL_GRACE: Duration = Duration::from_secs(2);

/// How long after an apply the services may take to run before the commit status says
/// `failure`.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

pub const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Runtime {
    head: Option<CommitInfo>,
    /// The last apply's config is live but a migration failed.
    degraded: bool,
    last_result: Option<SyncResult>,
    last_duration_ms: Option<u64>,
    next_sync_at_ms: Option<i64>,
    failures: u32,
    self_heal: Option<bool>,
    /// The settings of the revision last applied from the followed repository, and that
    /// revision: what the sync loop and the compactor obey.
    applied_settings: Option<(String, hero_proc_spec::Settings)>,
    drift: Vec<hero_proc_reconcile::DriftItem>,
    metrics: SyncMetrics,
}

/// Desired states already loaded, by (location, commit, host): a hit costs nothing. The
/// entries share their objects with each other and with the parse cache (`Arc`), so
/// keeping several revisions costs little more than one.
#[derive(Default)]
struct Cache {
    entries: Vec<(String, Arc<Desired>)>,
}

impl Cache {
    /// The revision synced, the one applied before it (drift is told apart from git
    /// changes against it), and one preview of another.
    const KEEP: usize = 3;
    fn key(location: &str, commit: &str, host: Option<&str>) -> String {
        format!("{location}\0{commit}\0{}", host.unwrap_or(""))
    }
    fn get(&self, key: &str) -> Option<Arc<Desired>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, d)| d.clone())
    }
    fn put(&mut self, key: String, d: Arc<Desired>) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.insert(0, (key, d));
        self.entries.truncate(Self::KEEP);
    }
}

pub struct Reconciler {
    engine: Engine,
    vault: Arc<Vault>,
    cache_root: PathBuf,
    keys: KeyEnv,
    host: Option<String>,
    options: Option<ReconcileOptions>,
    /// One sync at a time (plan and apply hold it).
    one_writer: tokio::sync::Mutex<()>,
    cache: Mutex<Cache>,
    /// Parsed actions files by blob id, across revisions: a new commit parses only the
    /// files it changed.
    parsed: Arc<Mutex<hero_proc_spec::load::ParseCache>>,
    /// The store's config rows, decoded once and re-read by version (see `LiveMirror`).
    mirror: Arc<Mutex<hero_proc_reconcile::live::LiveMirror>>,
    wake: tokio::sync::Notify,
    /// Set with a wake-up that must sync even if the branch has not moved (resume, a
    /// webhook); the watcher's wake-ups leave it unset.
    forced: std::sync::atomic::AtomicBool,
    /// A change made by hand through the RPC: sync after a grace period (self-heal).
    manual: tokio::sync::Notify,
    runtime: Mutex<Runtime>,
    check_hero_db: bool,
    /// hero.yaml `retention:` of each applied revision goes to the compactor.
    retention: Arc<crate::compactor::RetentionSettings>,
    /// Binaries by version, installed before a revision is applied.
    artifacts: Arc<crate::artifacts::Artifacts>,
    /// The (revision, error) of the last failure event (see `record_failure`).
    last_failure_event: Mutex<Option<(Option<String>, String)>>,
    /// Commit statuses to the forge (hero.yaml `forgejo:`), started on first use (on the
    /// runtime).
    statuses: std::sync::OnceLock<Arc<CommitStatus>>,
}

/// `--allowed-signers`: the target's signature, said as history records it; an error
/// refuses the revision. `--allow-unsigned` (with `--rev`) lets one through, recorded.
fn check_signature(
    file: &std::path::Path,
    repo: &Repo,
    target: &CommitInfo,
    allow_unsigned: bool,
) -> Result<String, ReconcileError> {
    use hero_proc_reconcile::trust::AllowedSigners;
    let signers = AllowedSigners::load(file).map_err(|e| ReconcileError::Untrusted(e.to_string()))?;
    match signers.verify_commit(repo.repository(), &target.id) {
        Ok(s) => Ok(format!("signed by {} for {} ({} line {})", s.fingerprint, s.principal, file.display(), s.line)),
        Err(why) if allow_unsigned => {
            tracing::warn!("{why}: applied anyway (--allow-unsigned)");
            Ok(format!("applied unsigned by --allow-unsigned: {why}"))
        }
        Err(why) => Err(ReconcileError::Untrusted(why.to_string())),
    }
}

/// The host name overlays are chosen by (`--host` overrides).
pub fn system_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn run_state(s: ServiceState) -> RunState {
    match s {
        ServiceState::Running | ServiceState::Starting | ServiceState::Waiting | ServiceState::Backoff => RunState::Up,
        ServiceState::Inactive => RunState::Down,
        _ => RunState::Settled,
    }
}

fn now_ms() -> i64 {
    hero_proc_store::now_ms()
}

/// A sync of a large repository allocates and frees tens of MiB (files parsed, every row
/// read from the store); glibc keeps freed memory in its arenas, so without this the
/// daemon's RSS would stay at that peak for its whole life.
/// At most this many glibc malloc arenas. glibc gives each thread that meets a locked
/// arena a new one (up to 8 per core), and each keeps its own freed pages: with the
/// tokio workers, the blocking pool and the supervisor thread, a 10,000-action sync left
/// 2.4 MB more resident than with one arena (`MALLOC_ARENA_MAX`, measured), and two keep
/// the worker and the supervisor from contending for one lock.
const MALLOC_ARENAS: i32 = 2;

/// Called by `serve` before any thread starts: see `MALLOC_ARENAS`. An operator's
/// `MALLOC_ARENA_MAX` wins.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; no thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

struct Prepared {
    desired: Arc<Desired>,
    plan: Plan,
    live: Arc<Live>,
}

impl Reconciler {
    pub fn new(
        engine: Engine,
        vault: Arc<Vault>,
        paths: &crate::Paths,
        keys: KeyEnv,
        host: Option<String>,
        options: Option<ReconcileOptions>,
        check_hero_db: bool,
    ) -> Reconciler {
        let cache_root = paths.state.join("source");
        Reconciler {
            artifacts: Arc::new(crate::artifacts::Artifacts::open(&paths.root, engine.store.clone())),
            last_failure_event: Mutex::new(None),
            statuses: std::sync::OnceLock::new(),
            engine,
            vault,
            cache_root,
            keys,
            host,
            options,
            one_writer: tokio::sync::Mutex::new(()),
            cache: Mutex::new(Cache::default()),
            parsed: Arc::default(),
            mirror: Arc::default(),
            wake: tokio::sync::Notify::new(),
            forced: std::sync::atomic::AtomicBool::new(false),
            manual: tokio::sync::Notify::new(),
            runtime: Mutex::new(Runtime::default()),
            check_hero_db,
            retention: crate::compactor::RetentionSettings::new(Default::default()),
        }
    }

    /// Where each applied revision's `retention:` goes (the compactor's settings).
    pub fn with_retention(mut self, retention: Arc<crate::compactor::RetentionSettings>) -> Reconciler {
        self.retention = retention;
        self
    }

    /// hero.yaml `registry.keep` of the applied revision, else the default.
    pub fn registry_keep(&self) -> u32 {
        let rt = self.runtime.lock().expect("runtime lock");
        rt.applied_settings
            .as_ref()
            .and_then(|(_, s)| s.registry.as_ref().map(|r| r.keep))
            .unwrap_or(hero_proc_spec::Registry::DEFAULT_KEEP)
    }

    /// A sync event in the daemon's event log (`hero_proc log query --source
    /// hero_proc.sync`). Messages hold no secret: they are made of revisions, object
    /// names and errors that are secret-free already.
    fn sync_event(&self, level: hero_proc_logstore::Level, message: String, revision: Option<&str>) {
        let mut ev = hero_proc_logstore::LogEvent::now("hero_proc.sync", level, message);
        if let Some(r) = revision {
            ev.fields.insert("revision".into(), serde_json::Value::String(r.to_owned()));
        }
        if let Err(e) = self.engine.logs.append_event(&ev) {
            tracing::warn!("cannot write to the log store: {e}");
        }
    }

    /// `artifact prune` by hand, between syncs (a sync may be installing a file no
    /// record names yet).
    pub async fn prune_artifacts(&self, keep: u32) -> Result<crate::artifacts::Pruned, ReconcileError> {
        let _guard = self.one_writer.lock().await;
        let a = self.artifacts.clone();
        tokio::task::spawn_blocking(move || a.prune_now(keep))
            .await
            .map_err(|e| ReconcileError::Internal(e.to_string()))?
            .map_err(ReconcileError::Store)
    }

    pub fn artifacts(&self) -> &Arc<crate::artifacts::Artifacts> {
        &self.artifacts
    }

    pub fn options(&self) -> Option<&ReconcileOptions> {
        self.options.as_ref()
    }

    /// Ask the background loop to sync now (webhook, resume).
    pub fn trigger(&self) {
        self.forced.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// A ref of the local repository moved (the watcher): sync, unless the branch is
    /// still where the last sync found it (one commit writes several files).
    fn ref_moved(&self) {
        self.wake.notify_one();
    }

    /// Something was changed by hand (RPC): with a repository, sync after
    /// [`SELF_HEAL_GRACE`], so drift on managed objects is reverted in seconds rather than
    /// at the next interval (with `self_heal: false` that sync only reports it).
    pub fn changed_by_hand(&self) {
        if self.options.is_some() {
            self.manual.notify_one();
        }
    }

    fn repo_config(&self, req: &PlanRequest) -> Result<RepoConfig, ReconcileError> {
        match (&req.repo, &self.options) {
            (Some(location), _) => Ok(RepoConfig { location: location.clone(), branch: req.branch.clone() }),
            (None, Some(o)) => Ok(RepoConfig {
                location: o.repo.location.clone(),
                branch: req.branch.clone().or(o.repo.branch.clone()),
            }),
            (None, None) => Err(ReconcileError::NoRepo),
        }
    }

    /// Plan against the live state (the dry-run). Holds the one-writer lock, so the
    /// answer is what an apply started now would do.
    pub async fn plan(&self, req: PlanRequest) -> Result<Plan, ReconcileError> {
        let _guard = self.one_writer.lock().await;
        let mut prepared = self.prepare(&req).await.map_err(|(e, _)| e)?;
        if prepared.plan.artifacts.iter().any(|a| a.cached == Some(false)) {
            self.artifacts.sizes(&prepared.desired, &mut prepared.plan.artifacts).await;
        }
        if !prepared.plan.migrations.is_empty() {
            // The preview runs each pending migration against a recording `proc`.
            let desired = prepared.desired.clone();
            let live = prepared.live.clone();
            let mut plan = prepared.plan;
            prepared.plan = tokio::task::spawn_blocking(move || {
                hero_proc_reconcile::preview_migrations(&mut plan, &desired, &live);
                plan
            })
            .await
            .map_err(|e| ReconcileError::Internal(e.to_string()))?;
        }
        Ok(prepared.plan)
    }

    async fn live_states(&self) -> Result<BTreeMap<Ref, RunState>, ReconcileError> {
        let views = self.engine.status(None).await?;
        Ok(views.into_iter().map(|v| (Ref::new(v.context, v.name), run_state(v.state))).collect())
    }

    /// Fetch, load the target revision (cached), read the live state, plan. On error the
    /// target commit, when it was resolved, comes back with it (status and history name it).
    async fn prepare(&self, req: &PlanRequest) -> Result<Prepared, (ReconcileError, Option<CommitInfo>)> {
        let config = self.repo_config(req).map_err(|e| (e, None))?;
        let states = self.live_states().await.map_err(|e| (e, None))?;
        let host = req.host.clone().or(self.host.clone());
        let store = self.engine.store.clone();
        let vault = self.vault.clone();
        let keys = self.keys.clone();
        let cache_root = self.cache_root.clone();
        let rev = req.rev.clone();
        let worktree = req.worktree;
        let signers = self.options.as_ref().and_then(|o| o.allowed_signers.clone());
        let allow_unsigned = req.allow_unsigned;
        let cache: Vec<(String, Arc<Desired>)> = self.cache.lock().expect("cache lock").entries.clone();
        let parsed = self.parsed.clone();
        let mirror = self.mirror.clone();
        let artifacts = self.artifacts.clone();
        // (target, head) as soon as they are known, for the error path too.
        let seen: Arc<Mutex<(Option<CommitInfo>, Option<CommitInfo>)>> = Arc::default();
        let seen_in = seen.clone();
        type Loaded = Vec<(String, Arc<Desired>)>;
        let job = tokio::task::spawn_blocking(move || -> Result<(Prepared, Loaded), ReconcileError> {
            let repo = Repo::open(&config, &cache_root)?;
            repo.fetch()?;
            let sync = store.sync_state()?;
            let head = repo.head();
            seen_in.lock().expect("seen lock").1 = head.as_ref().ok().cloned();
            // An explicit revision, else the pinned one, else the branch head.
            let target = match (&rev, &sync.pinned_revision) {
                (Some(r), _) => repo.resolve(r)?,
                (None, Some(pinned)) => repo.resolve(pinned)?,
                (None, None) => head?,
            };
            seen_in.lock().expect("seen lock").0 = Some(target.clone());
            // Signed commits only: checked before anything of the revision is read. The
            // revision already applied passed (or was let through) when it was applied.
            let signature = match &signers {
                Some(file) if !worktree && sync.applied_revision.as_deref() != Some(target.id.as_str()) => {
                    Some(check_signature(file, &repo, &target, allow_unsigned)?)
                }
                _ => None,
            };
            let mut loaded = Vec::new();
            let cache = Cache { entries: cache };
            // The host's keys and the vault's fingerprints: what a loaded tree is decrypted with.
            let opener = || {
                let identities = hero_proc_sops::load_identities(&keys).map_err(|e| e.to_string());
                let v = vault.clone();
                SopsOpener::new(identities, true, move |c: &str, n: &str, val: &str| v.fingerprint(c, n, val))
            };
            let mut load = |commit: CommitInfo| -> Result<Arc<Desired>, LoadError> {
                let key = Cache::key(&config.location, &commit.id, host.as_deref());
                if let Some(d) = cache.get(&key) {
                    return Ok(d);
                }
                let opener = opener();
                // Syncs are one at a time (`one_writer`): this lock is never contended.
                let mut parsed = parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let d =
                    Arc::new(Desired::load_cached(repo.repository(), commit, host.as_deref(), &opener, &mut parsed)?);
                loaded.push((key, d.clone()));
                Ok(d)
            };
            let source = if worktree {
                // A preview of the work tree as it is (never applied: see `apply`).
                if hero_proc_reconcile::repo::is_remote(&config.location) {
                    return Err(ReconcileError::Baseline(
                        "--worktree previews the work tree of a local repository; this one is a remote".into(),
                    ));
                }
                Source::Worktree(std::path::Path::new(&config.location))
            } else {
                Source::Commit(target)
            };
            // The same rule as every offline preview (`hero_proc_reconcile::prepare`).
            let Sides { desired, previous } =
                load_sides(&repo, source, sync.applied_revision.as_deref(), host.as_deref(), &opener(), &mut load)?;
            let mut mirror = mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut live = Live::read_mirrored(&store, &mut mirror)?;
            live.states = states;
            if !desired.artifacts.is_empty() {
                live.cached_artifacts = Some(artifacts.cached_digests());
            }
            let mut plan =
                hero_proc_reconcile::plan(&desired, &live, previous.as_deref(), sync.applied_revision.as_deref());
            plan.signature = signature;
            // Rows equal to git's objects become git's objects: the next plan compares
            // pointers, and an unchanged object is held once.
            mirror.share(&desired.state);
            drop(mirror);
            let out = (Prepared { desired, plan, live: Arc::new(live) }, loaded);
            give_back_freed_memory();
            Ok(out)
        });
        let result = job.await.map_err(|e| ReconcileError::Internal(e.to_string())).and_then(|r| r);
        let (target, head) = seen.lock().expect("seen lock").clone();
        if head.is_some() {
            self.runtime.lock().expect("runtime lock").head = head;
        }
        let (prepared, loaded) = result.map_err(|e| (e, target))?;
        {
            let mut cache = self.cache.lock().expect("cache lock");
            for (k, d) in loaded {
                cache.put(k, d);
            }
        }
        let mut rt = self.runtime.lock().expect("runtime lock");
        rt.self_heal = Some(prepared.desired.settings.self_heal);
        rt.drift = prepared.plan.drift.clone();
        Ok(prepared)
    }

    /// Plan and apply once. `req.rev` pins the revision (until `resume`).
    pub async fn apply(&self, req: PlanRequest) -> Result<ApplyOutcome, ReconcileError> {
        if req.worktree {
            return Err(ReconcileError::Baseline(
                "a work tree is previewed, never applied: commit the change, then apply".into(),
            ));
        }
        let _guard = self.one_writer.lock().await;
        self.apply_locked(req).await
    }

    async fn apply_locked(&self, req: PlanRequest) -> Result<ApplyOutcome, ReconcileError> {
        let started = Instant::now();
        let result = self.apply_inner(&req).await;
        let elapsed = started.elapsed();
        let degraded = std::mem::take(&mut self.runtime.lock().expect("runtime lock").degraded);
        let label = match &result {
            Ok(_) if degraded => SyncResult::Degraded,
            Ok(o) if o.plan.is_empty() => SyncResult::Noop,
            Ok(_) => SyncResult::Applied,
            Err(
                ReconcileError::Refused { .. }
                | ReconcileError::Load(LoadError::Refused { .. })
                | ReconcileError::Untrusted(_),
            ) => SyncResult::Refused,
            Err(_) => SyncResult::Failed,
        };
        {
            let mut rt = self.runtime.lock().expect("runtime lock");
            rt.last_result = Some(label);
            rt.last_duration_ms = Some(elapsed.as_millis() as u64);
            if result.is_ok() {
                rt.failures = 0;
            } else {
                rt.failures += 1;
            }
            let m = &mut rt.metrics;
            *m.results.entry(label).or_default() += 1;
            if m.buckets.is_empty() {
                m.buckets = vec![0; DURATION_BUCKETS.len()];
            }
            let secs = elapsed.as_secs_f64();
            for (i, b) in DURATION_BUCKETS.iter().enumerate() {
                if secs <= *b {
                    m.buckets[i] += 1;
                }
            }
            m.duration_sum_s += secs;
            m.duration_count += 1;
        }
        if let Err(e) = &result {
            tracing::warn!("reconcile failed: {e}");
        }
        result
    }

    async fn apply_inner(&self, req: &PlanRequest) -> Result<ApplyOutcome, ReconcileError> {
        let prepared = match self.prepare(req).await {
            Ok(p) => p,
            Err((e, target)) => {
                let result = match e {
                    ReconcileError::Load(LoadError::Refused { .. }) | ReconcileError::Untrusted(_) => {
                        SyncResult::Refused
                    }
                    _ => SyncResult::Failed,
                };
                self.record_failure(target, result, &e).await;
                return Err(e);
            }
        };
        let Prepared { desired, plan, .. } = prepared;
        // `--rev` pins, in the same transaction, when it names a revision of the repository
        // automatic sync follows (a one-off `--repo` elsewhere pins nothing).
        let follows = match (&req.repo, &self.options) {
            (None, _) => true,
            (Some(r), Some(o)) => *r == o.repo.location,
            (Some(_), None) => false,
        };
        if follows {
            self.configure_statuses(&desired);
            self.statuses().post(
                &desired.commit.id,
                CommitState::Pending,
                &format!("applying {}", desired.commit.short()),
            );
        }
        if plan.is_refused() {
            let e = ReconcileError::Refused { rev: desired.commit.short().to_owned(), reasons: plan.refusals.clone() };
            self.record_failure(Some(desired.commit.clone()), SyncResult::Refused, &e).await;
            return Err(e);
        }
        let pinned = req.rev.is_some() && follows;
        // Every artifact first: a revision whose binaries cannot all be installed applies
        // nothing, and the last good one keeps running.
        if let Err(error) = self.artifacts.install(&desired).await {
            let e = ReconcileError::Artifacts { rev: desired.commit.short().to_owned(), error };
            self.record_failure(Some(desired.commit.clone()), SyncResult::Failed, &e).await;
            return Err(e);
        }
        let store = self.engine.store.clone();
        let vault = self.vault.clone();
        let d = desired.clone();
        let p = plan.clone();
        let applied = tokio::task::spawn_blocking(move || {
            hero_proc_reconcile::apply(&store, &p, &d, vault.as_ref(), pinned, now_ms())
        })
        .await
        .map_err(|e| ReconcileError::Internal(e.to_string()))?;
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                let e = ReconcileError::Apply(e);
                self.record_failure(Some(desired.commit.clone()), SyncResult::Failed, &e).await;
                return Err(e);
            }
        };
        self.engine
            .config_applied(ConfigChange {
                actions_changed: applied.actions_changed,
                actions_deleted: applied.actions_deleted,
                services_changed: applied.services_changed,
                services_deleted: applied.services_deleted,
                restarts: applied.restarts,
                starts: applied.starts,
                stops: applied.stops,
            })
            .await?;
        // Which versions run now, and the cache beyond `registry.keep` pruned.
        if !desired.artifacts.is_empty() || desired.settings.registry.is_some() {
            let artifacts = self.artifacts.clone();
            let d = desired.clone();
            let recorded = tokio::task::spawn_blocking(move || artifacts.applied(&d, now_ms())).await;
            match recorded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("cannot record the artifacts in use: {e}"),
                Err(e) => tracing::warn!("cannot record the artifacts in use: {e}"),
            }
        }
        // The config of this revision is live: so are its settings (a one-off apply of
        // another repository sets none).
        if follows {
            self.retention.set_from_git(&desired.commit.id, &desired.settings);
            self.runtime.lock().expect("runtime lock").applied_settings =
                Some((desired.commit.id.clone(), desired.settings.clone()));
        }
        let migrations =
            if plan.migrations.is_empty() { Vec::new() } else { self.run_migrations(&desired, &plan).await? };
        *self.last_failure_event.lock().expect("event lock") = None;
        if follows {
            match migrations.iter().find(|m| m.contains(": failed: ")) {
                Some(m) => self.statuses().post(&desired.commit.id, CommitState::Failure, &format!("migration {m}")),
                None => self.report_when_healthy(&desired),
            }
        }
        if !plan.is_empty() {
            tracing::info!(
                revision = %desired.commit.short(),
                summary = %hero_proc_reconcile::render::summary_line(&plan),
                "applied"
            );
            let rev = desired.commit.short();
            let self_heal = plan.applied_revision.as_deref() == Some(desired.commit.id.as_str());
            let message = if self_heal {
                format!(
                    "self-heal at {rev}: reverted {}",
                    plan.drift.iter().map(|d| format!("{} ({})", d.object, d.what)).collect::<Vec<_>>().join(", ")
                )
            } else {
                let subject = desired.commit.summary.as_deref().map(|s| format!(" \"{s}\"")).unwrap_or_default();
                format!("applied {rev}{subject}: {}", hero_proc_reconcile::render::summary_line(&plan))
            };
            self.sync_event(hero_proc_logstore::Level::Info, message, Some(&desired.commit.id));
            if !self_heal && !plan.drift.is_empty() && plan.self_heal {
                let objects: Vec<&str> = plan.drift.iter().map(|d| d.object.as_str()).collect();
                self.sync_event(
                    hero_proc_logstore::Level::Info,
                    format!("drift reverted at {rev}: {}", objects.join(", ")),
                    Some(&desired.commit.id),
                );
            }
        }
        if pinned {
            self.sync_event(
                hero_proc_logstore::Level::Warn,
                format!(
                    "pinned at {}: automatic sync holds it until `hero_proc reconcile resume`",
                    desired.commit.short()
                ),
                Some(&desired.commit.id),
            );
        }
        {
            let mut rt = self.runtime.lock().expect("runtime lock");
            // Whatever was drift is now reverted (or reported only, without self_heal).
            if plan.self_heal {
                rt.drift.clear();
            }
            let kept = |kind: &str| plan.not_pruned.iter().filter(|k| k.starts_with(kind)).count();
            let managed = &mut rt.metrics.managed;
            managed.insert("action", desired.state.actions.len() + kept("action "));
            managed.insert("service", desired.state.services.len() + kept("service "));
            managed.insert("secret", desired.secrets.len() + kept("secret "));
        }
        Ok(ApplyOutcome { plan, pinned, migrations })
    }

    /// Run the plan's pending migrations, in order, after the config of the same revision
    /// is applied; record each (failed ones too). A failure stops the later ones and
    /// leaves the sync degraded until the next revision.
    async fn run_migrations(&self, desired: &Arc<Desired>, plan: &Plan) -> Result<Vec<String>, ReconcileError> {
        let to_run: Vec<hero_proc_spec::Migration> =
            plan.migrations.iter().filter_map(|n| desired.migrations.iter().find(|m| m.name == *n).cloned()).collect();
        let engine = self.engine.clone();
        let handle = tokio::runtime::Handle::current();
        let revision = desired.commit.id.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<(Vec<String>, Option<String>), StoreError> {
            let mut ops = crate::migrate_ops::EngineProc::new(engine.clone(), handle);
            let mut report = Vec::new();
            for m in &to_run {
                use hero_proc_migrate::ProcOps;
                ops.begin_migration(&m.name);
                let started = Instant::now();
                let result = hero_proc_migrate::run_migration(m, &mut ops, &hero_proc_migrate::RunOptions::default());
                let duration_ms = started.elapsed().as_millis() as i64;
                let error = result.as_ref().err().map(|e| e.to_string());
                engine.store.record_migration(&hero_proc_store::AppliedMigration {
                    name: m.name.clone(),
                    sha256: m.sha256.clone(),
                    revision: Some(revision.clone()),
                    applied_at_ms: now_ms(),
                    duration_ms,
                    result: if error.is_none() {
                        hero_proc_store::MigrationResult::Ok
                    } else {
                        hero_proc_store::MigrationResult::Failed
                    },
                    error: error.clone(),
                })?;
                match error {
                    None => {
                        tracing::info!(migration = %m.name, duration_ms, "migration applied");
                        report.push(format!("{}: ok ({duration_ms} ms)", m.name));
                    }
                    Some(e) => {
                        tracing::warn!(migration = %m.name, "migration failed: {e}");
                        report.push(format!("{}: failed: {e}", m.name));
                        let msg = format!(
                            "migration {} failed at this revision: {e}\n  hint: later migrations did not run; fix it in a new commit (it is retried on the next revision)",
                            m.name
                        );
                        return Ok((report, Some(msg)));
                    }
                }
            }
            Ok((report, None))
        })
        .await
        .map_err(|e| ReconcileError::Internal(e.to_string()))??;
        let (report, failure) = outcome;
        if let Some(msg) = failure {
            self.engine.store.update_sync_state(|s| s.last_error = Some(msg.clone()))?;
            self.runtime.lock().expect("runtime lock").degraded = true;
        }
        Ok(report)
    }

    async fn record_failure(&self, commit: Option<CommitInfo>, result: SyncResult, e: &ReconcileError) {
        let store = self.engine.store.clone();
        let msg = e.to_string();
        if let Some(c) = &commit {
            // One line for the forge: the headline, and when it ends in a colon its first
            // detail (`... nothing was applied: actions/x.yaml:3:5: error: ...`).
            let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
            let head = lines.next().unwrap_or_default();
            let line = match lines.next() {
                Some(detail) if head.ends_with(':') => format!("{head} {detail}"),
                _ => head.to_owned(),
            };
            self.statuses().post(&c.id, CommitState::Failure, &line);
        }
        {
            // One event per revision and error, as history has one line: a retry that
            // fails the same way again says nothing new.
            let key = (commit.as_ref().map(|c| c.id.clone()), msg.clone());
            let mut last = self.last_failure_event.lock().expect("event lock");
            if last.as_ref() != Some(&key) {
                *last = Some(key);
                let rev = commit.as_ref().map(|c| c.short().to_owned()).unwrap_or_else(|| "-".into());
                let first = msg.lines().next().unwrap_or("");
                self.sync_event(
                    hero_proc_logstore::Level::Error,
                    format!("revision {rev} {}: {first}", result.as_str()),
                    commit.as_ref().map(|c| c.id.as_str()),
                );
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(err) = hero_proc_reconcile::record_failure(&store, commit.as_ref(), result, &msg, now_ms()) {
                tracing::error!("cannot record the failed reconcile: {err}");
            }
        })
        .await;
    }

    fn statuses(&self) -> &Arc<CommitStatus> {
        self.statuses.get_or_init(|| CommitStatus::start(self.host.as_deref()))
    }

    /// The forge of the revision just loaded: hero.yaml `forgejo:` with its token.
    fn configure_statuses(&self, desired: &Desired) {
        let forge = desired.settings.forgejo.as_ref().map(|f| {
            let token = desired.values.get(&Ref::new(hero_proc_spec::DEFAULT_CONTEXT, &f.token.name));
            let location = self.options.as_ref().map(|o| o.repo.location.as_str());
            crate::commit_status::Forge::from_settings(f, token.map(|t| t.expose()), location)
        });
        match forge {
            None if self.statuses.get().is_none() => {}
            None => self.statuses().configure(Ok(None)),
            Some(Ok(f)) => self.statuses().configure(Ok(Some(f))),
            Some(Err(why)) => {
                tracing::warn!("commit statuses: {why}");
                self.statuses().configure(Err(why));
            }
        }
    }

    /// After an apply: `success` once every service the revision wants running runs,
    /// `failure` naming those that failed or are still not up after [`HEALTHY_WITHIN`].
    fn report_when_healthy(&self, desired: &Desired) {
        let Some(statuses) = self.statuses.get().cloned() else { return };
        let wanted: Vec<(String, String)> = desired
            .state
            .services
            .iter()
            .filter(|(_, s)| s.status == hero_proc_spec::ServiceStatus::Start)
            .map(|(k, _)| k.clone())
            .collect();
        let engine = self.engine.clone();
        let sha = desired.commit.id.clone();
        let short = desired.commit.short().to_owned();
        tokio::spawn(async move {
            let deadline = Instant::now() + HEALTHY_WITHIN;
            loop {
                let Ok(snaps) = engine.status(None).await else { return };
                let state_of = |c: &str, n: &str| snaps.iter().find(|s| s.context == c && s.name == n).map(|s| s.state);
                let mut failed = Vec::new();
                let mut waiting = Vec::new();
                for (c, n) in &wanted {
                    match state_of(c, n) {
                        Some(ServiceState::Running) => {}
                        Some(ServiceState::Failed) => failed.push(format!("{c}/{n}")),
                        _ => waiting.push(format!("{c}/{n}")),
                    }
                }
                if !failed.is_empty() {
                    statuses.post(
                        &sha,
                        CommitState::Failure,
                        &format!("{short} applied; failed: {}", failed.join(", ")),
                    );
                    return;
                }
                if waiting.is_empty() {
                    let n = wanted.len();
                    statuses.post(&sha, CommitState::Success, &format!("{short} applied; {n} service(s) running"));
                    return;
                }
                if Instant::now() >= deadline {
                    let why = format!(
                        "{short} applied; not running after {}s: {}",
                        HEALTHY_WITHIN.as_secs(),
                        waiting.join(", ")
                    );
                    statuses.post(&sha, CommitState::Failure, &why);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// `migrate status`: the target revision's `migrations/` against the record.
    pub async fn migrate_status(&self) -> Result<hero_proc_reconcile::MigrateStatus, ReconcileError> {
        let _guard = self.one_writer.lock().await;
        self.migrate_status_locked().await
    }

    async fn migrate_status_locked(&self) -> Result<hero_proc_reconcile::MigrateStatus, ReconcileError> {
        let recorded = self.engine.store.applied_migrations()?;
        let mut out = hero_proc_reconcile::MigrateStatus::default();
        let files = match &self.options {
            None => {
                out.problems.push("no repository configured: only the record is listed".into());
                Vec::new()
            }
            Some(_) => match self.prepare(&PlanRequest::default()).await {
                Ok(p) => {
                    out.revision = Some(p.desired.commit.id.clone());
                    p.desired.migrations.clone()
                }
                Err((e, _)) => {
                    out.problems.push(e.to_string());
                    Vec::new()
                }
            },
        };
        out.migrations = hero_proc_reconcile::migration_rows(&files, &recorded);
        Ok(out)
    }

    /// `migrate baseline NAME`: record every migration up to NAME as applied without
    /// running it (systems that predate migrations, or an effect already in place).
    pub async fn migrate_baseline(&self, name: &str) -> Result<hero_proc_reconcile::MigrateStatus, ReconcileError> {
        let _guard = self.one_writer.lock().await;
        let prepared = self.prepare(&PlanRequest::default()).await.map_err(|(e, _)| e)?;
        let recorded = self.engine.store.applied_migrations()?;
        let applied: Vec<hero_proc_migrate::Applied> =
            recorded.iter().map(hero_proc_reconcile::live::applied_of).collect();
        let records = hero_proc_migrate::baseline(&prepared.desired.migrations, &applied, name)
            .map_err(|e| ReconcileError::Baseline(e.to_string()))?;
        for r in &records {
            self.engine.store.record_migration(&hero_proc_store::AppliedMigration {
                name: r.name.clone(),
                sha256: r.sha256.clone(),
                revision: Some(prepared.desired.commit.id.clone()),
                applied_at_ms: now_ms(),
                duration_ms: 0,
                result: hero_proc_store::MigrationResult::Ok,
                error: None,
            })?;
            tracing::info!(migration = %r.name, "baselined: recorded as applied without running");
        }
        self.migrate_status_locked().await
    }

    pub async fn suspend(&self) -> Result<SyncStatus, ReconcileError> {
        self.engine.store.update_sync_state(|s| s.suspended = true)?;
        tracing::info!("automatic sync suspended");
        self.sync_event(
            hero_proc_logstore::Level::Warn,
            "automatic sync suspended: new commits are not applied until `hero_proc reconcile resume`".into(),
            None,
        );
        self.status().await
    }

    /// Resume automatic sync: clear the suspension and any pinned revision, sync now.
    pub async fn resume(&self) -> Result<SyncStatus, ReconcileError> {
        self.engine.store.update_sync_state(|s| {
            s.suspended = false;
            s.pinned_revision = None;
        })?;
        tracing::info!("automatic sync resumed");
        self.sync_event(hero_proc_logstore::Level::Info, "automatic sync resumed (and unpinned)".into(), None);
        self.trigger();
        self.status().await
    }

    /// Drift now: the live state against the applied revision (loaded and cached by the
    /// last sync). `None` before the first sync of this daemon.
    async fn drift_now(&self, applied: Option<&str>) -> Option<Vec<hero_proc_reconcile::DriftItem>> {
        let applied = applied?;
        let desired = {
            let cache = self.cache.lock().expect("cache lock");
            cache.entries.iter().find(|(_, d)| d.commit.id == applied).map(|(_, d)| d.clone())?
        };
        let states = self.live_states().await.ok()?;
        let store = self.engine.store.clone();
        let applied = applied.to_owned();
        let mirror = self.mirror.clone();
        tokio::task::spawn_blocking(move || {
            let mut mirror = mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut live = Live::read_mirrored(&store, &mut mirror).ok()?;
            drop(mirror);
            live.states = states;
            Some(hero_proc_reconcile::plan(&desired, &live, Some(&desired), Some(&applied)).drift)
        })
        .await
        .ok()?
    }

    pub async fn status(&self) -> Result<SyncStatus, ReconcileError> {
        let s = self.engine.store.sync_state()?;
        let held = self.engine.store.list_holds()?;
        // The newest history line that changed something (history holds no no-ops of
        // an already applied revision).
        let changed = self
            .engine
            .store
            .history(50)?
            .into_iter()
            .find(|e| matches!(e.record.result, SyncResult::Applied | SyncResult::Degraded));
        let drift = self.drift_now(s.applied_revision.as_deref()).await;
        let interval = self.options.as_ref().map(|_| self.interval_and_source());
        let mut rt = self.runtime.lock().expect("runtime lock");
        if let Some(d) = drift {
            rt.drift = d;
        }
        Ok(SyncStatus {
            // A token in the URL stays in memory: status goes to the CLI, the UI and scripts.
            repo: self.options.as_ref().map(|o| hero_proc_reconcile::repo::redact_url(&o.repo.location)),
            branch: self.options.as_ref().and_then(|o| o.repo.branch.clone()),
            host: self.host.clone(),
            applied_revision: s.applied_revision,
            applied_at_ms: s.applied_at_ms,
            attempted_revision: s.attempted_revision,
            attempted_at_ms: s.attempted_at_ms,
            last_error: s.last_error,
            suspended: s.suspended,
            pinned_revision: s.pinned_revision,
            head_revision: rt.head.as_ref().map(|h| h.id.clone()),
            last_result: rt.last_result,
            last_duration_ms: rt.last_duration_ms,
            next_sync_at_ms: rt.next_sync_at_ms,
            consecutive_failures: rt.failures,
            // The applied revision's, not that of the last preview of another revision.
            self_heal: rt.applied_settings.as_ref().map(|(_, s)| s.self_heal).or(rt.self_heal),
            interval_secs: interval.as_ref().map(|(d, _)| d.as_secs()),
            interval_source: interval.map(|(_, s)| s),
            drift: rt.drift.clone(),
            held,
            changed_at_ms: changed.as_ref().map(|e| e.record.applied_at_ms),
            changed_revision: changed.map(|e| e.record.revision),
            commit_status: self.statuses.get().and_then(|s| s.view()),
        })
    }

    /// Hold `object` (`service core/web`) out of sync: its drift is left alone until
    /// `release` or a git change to it. Only objects git manages can be held.
    pub async fn hold(&self, object: &str) -> Result<SyncStatus, ReconcileError> {
        let store = self.engine.store.clone();
        let managed = match object.split_once(' ').and_then(|(k, r)| Some((k, Ref::parse(r).ok()?))) {
            Some(("action", r)) => store.get_action(&r.context, &r.name)?.map(|a| a.managed),
            Some(("service", r)) => store.get_service(&r.context, &r.name)?.map(|a| a.managed),
            Some(("secret", r)) => store
                .list_secrets()?
                .into_iter()
                .find(|s| s.value.context == r.context && s.value.name == r.name)
                .map(|s| s.managed),
            _ => return Err(ReconcileError::Baseline(format!("`{object}` is not `action|service|secret NAME`"))),
        };
        match managed {
            None => return Err(ReconcileError::Baseline(format!("there is no {object}"))),
            Some(false) => {
                return Err(ReconcileError::Baseline(format!(
                    "{object} is not managed by git (it was set by hand): sync leaves it alone already"
                )));
            }
            Some(true) => {}
        }
        if store.put_hold(object, now_ms())? {
            self.sync_event(
                hero_proc_logstore::Level::Warn,
                format!("{object} held out of sync: its drift is left alone until `hero_proc reconcile release` or a git change to it"),
                None,
            );
        }
        self.status().await
    }

    /// End a hold; the next sync reverts the object's drift (with self_heal).
    pub async fn release(&self, object: &str) -> Result<SyncStatus, ReconcileError> {
        if !self.engine.store.delete_hold(object)? {
            return Err(ReconcileError::Baseline(format!(
                "{object} is not held (`hero_proc reconcile status` lists holds)"
            )));
        }
        self.sync_event(hero_proc_logstore::Level::Info, format!("{object} released: sync manages it again"), None);
        self.trigger();
        self.status().await
    }

    /// What a change by hand to `object` (`service core/web`) will meet: a warning when
    /// the daemon follows a repository that manages it with self_heal on (and neither
    /// sync nor the object is held), so the change will be reverted.
    pub fn hand_change_warning(&self, object: &str, managed_at: Option<&str>) -> Option<String> {
        self.options.as_ref()?;
        let rev = managed_at?;
        let self_heal = {
            let rt = self.runtime.lock().expect("runtime lock");
            rt.applied_settings.as_ref().map(|(_, s)| s.self_heal).or(rt.self_heal)
        };
        if self_heal != Some(true) {
            return None;
        }
        let state = self.engine.store.sync_state().ok()?;
        if state.suspended || self.engine.store.list_holds().ok()?.iter().any(|(o, _)| o == object) {
            return None;
        }
        Some(format!(
            "{object} is managed by git (rev {}) and self_heal is on: this will be reverted in about {} s; hold it out of sync with `hero_proc reconcile hold {object}`, or change it in git",
            &rev[..rev.len().min(12)],
            SELF_HEAL_GRACE.as_secs()
        ))
    }

    pub fn metrics(&self) -> SyncMetrics {
        let rt = self.runtime.lock().expect("runtime lock");
        let mut m = rt.metrics.clone();
        m.drifted = rt.drift.len();
        m
    }

    /// Suspended at start, nothing is applied, yet the applied revision's settings hold
    /// (retention, interval): read them from that revision.
    async fn load_applied_settings(&self) {
        let Ok(Some(applied)) = self.engine.store.sync_state().map(|s| s.applied_revision) else {
            return;
        };
        let _guard = self.one_writer.lock().await;
        match self.prepare(&PlanRequest { rev: Some(applied.clone()), ..PlanRequest::default() }).await {
            Ok(p) => {
                self.retention.set_from_git(&p.desired.commit.id, &p.desired.settings);
                self.runtime.lock().expect("runtime lock").applied_settings =
                    Some((p.desired.commit.id.clone(), p.desired.settings.clone()));
            }
            Err((e, _)) => tracing::warn!(
                "sync is suspended and the settings of the applied revision {applied} cannot be read ({e}); built-in defaults and flags hold until `hero_proc reconcile resume`"
            ),
        }
    }

    fn interval(&self) -> Duration {
        self.interval_and_source().0
    }

    /// `--interval`, else the applied revision's hero.yaml (before any, the last loaded
    /// one), else 1m.
    fn interval_and_source(&self) -> (Duration, String) {
        if let Some(i) = self.options.as_ref().and_then(|o| o.interval) {
            return (i, crate::compactor::SOURCE_FLAG.to_owned());
        }
        let applied = self.runtime.lock().expect("runtime lock").applied_settings.clone();
        let from = applied.or_else(|| {
            let cache = self.cache.lock().expect("cache lock");
            cache.entries.first().map(|(_, d)| (d.commit.id.clone(), d.settings.clone()))
        });
        match from {
            Some((rev, s)) if s.is_given("interval") => {
                (s.interval.0, format!("hero.yaml@{}", rev.get(..12).unwrap_or(&rev)))
            }
            _ => (hero_proc_spec::Settings::default().interval.0, crate::compactor::SOURCE_DEFAULT.to_owned()),
        }
    }

    /// The automatic sync loop: at start, on every trigger and every interval; after a
    /// failure, again after a backoff. Suspended: nothing is applied (status says so).
    pub async fn run(self: Arc<Self>) {
        if self.options.is_none() {
            return;
        }
        let mut first = true;
        let mut woken_by_ref = false;
        // The branch head before the last automatic sync that went through.
        let mut synced_head: Option<String> = None;
        loop {
            let suspended = self.engine.store.sync_state().map(|s| s.suspended).unwrap_or(false);
            // A commit moves several files under .git: the wake-ups after the first find
            // the branch where the last sync saw it, and have nothing to do. (Timer and
            // manual syncs always run: they also revert drift.)
            // Read before the sync: a commit landing during it wakes us with another head.
            let head = self.local_head().await;
            let nothing_new = woken_by_ref && synced_head.is_some() && head == synced_head;
            if !suspended && !nothing_new {
                let ok = self.apply(PlanRequest::default()).await.is_ok();
                synced_head = if ok { head } else { None };
            } else if first {
                self.load_applied_settings().await;
            }
            if first {
                first = false;
                if self.check_hero_db {
                    // SPEC 5.3: with a repository, hero_db is checked after the first reconcile.
                    let _ = self.engine.ensure_hero_db().await;
                }
            }
            let failures = self.runtime.lock().expect("runtime lock").failures;
            let interval = self.interval();
            let wait = if failures > 0 && !suspended {
                let backoff = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1).min(16));
                backoff.min(interval)
            } else {
                interval
            };
            self.runtime.lock().expect("runtime lock").next_sync_at_ms = Some(now_ms() + wait.as_millis() as i64);
            woken_by_ref = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    woken_by_ref = !self.forced.swap(false, std::sync::atomic::Ordering::SeqCst);
                    // Coalesce a burst (a fetch moves several refs). Lock files are not
                    // events, so the ref that woke us is already written; one that moves
                    // after this pause stores a wake-up and brings one more sync.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ = self.manual.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(SELF_HEAL_GRACE) => {}
                        _ = self.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// The branch head of a local repository (one ref read); `None` for a remote, whose
    /// head is known only after a fetch, so that every wake-up of one syncs.
    async fn local_head(&self) -> Option<String> {
        let options = self.options.clone()?;
        if hero_proc_reconcile::repo::is_remote(&options.repo.location) {
            return None;
        }
        let cache_root = self.cache_root.clone();
        tokio::task::spawn_blocking(move || Repo::open(&options.repo, &cache_root).and_then(|r| r.head()).ok())
            .await
            .ok()
            .flatten()
            .map(|h| h.id)
    }

    /// Watch a local repository's refs: a commit triggers a sync at once.
    pub fn watch_local(self: &Arc<Self>) -> Option<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        let o = self.options.as_ref()?;
        if hero_proc_reconcile::repo::is_remote(&o.repo.location) {
            return None;
        }
        let repo = Repo::open(&o.repo, &self.cache_root).ok()?;
        let git_dir = repo.git_dir();
        let me = Arc::downgrade(self);
        let handle = tokio::runtime::Handle::current();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            // Reads (ours included) raise access events; only writes move a ref.
            if !(ev.kind.is_create() || ev.kind.is_modify() || ev.kind.is_remove()) {
                return;
            }
            let relevant = ev.paths.iter().any(|p| {
                let s = p.to_string_lossy();
                !s.ends_with(".lock") && (s.contains("/refs/") || s.ends_with("HEAD") || s.ends_with("packed-refs"))
            });
            if relevant && let Some(me) = me.upgrade() {
                let _g = handle.enter();
                me.ref_moved();
            }
        })
        .ok()?;
        watcher.watch(&git_dir, RecursiveMode::NonRecursive).ok()?;
        let refs = git_dir.join("refs");
        if refs.exists() {
            watcher.watch(&refs, RecursiveMode::Recursive).ok()?;
        }
        tracing::info!(git_dir = %git_dir.display(), "watching the local repository for commits");
        Some(watcher)
    }
}
