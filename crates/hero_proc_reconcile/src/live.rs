//! The live state the plan compares against: config rows with their inventory marks,
//! stored secret fingerprints, applied migrations, and (from the engine) whether each
//! service is up.

use std::collections::BTreeMap;
use std::sync::Arc;

use hero_proc_migrate::{Applied, AppliedResult};
use hero_proc_spec::{Action, DesiredState, Service};
use hero_proc_store::{Changed, MigrationResult, Ref, Store, StoreError, Stored};
use serde::{Deserialize, Serialize};

/// Whether a service's process is up, as far as drift is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Running, starting, waiting for its requirements, or backing off to restart.
    Up,
    /// Not running and not wanted: stopped (by hand, or never started).
    Down,
    /// Failed, exited one-shot, stopping: not drift either way.
    Settled,
    /// Not known (a preview read from a database file, without the engine).
    Unknown,
}

/// A stored secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSecret {
    pub fingerprint: String,
    pub source: String,
    pub managed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Shared (`Arc`) so the daemon's [`LiveMirror`] hands out its rows without copying
    /// them, and a row equal to git's object can be git's object.
    pub actions: Arc<BTreeMap<Ref, Stored<Arc<Action>>>>,
    pub services: Arc<BTreeMap<Ref, Stored<Arc<Service>>>>,
    pub secrets: BTreeMap<Ref, LiveSecret>,
    /// Missing entries count as [`RunState::Unknown`].
    pub states: BTreeMap<Ref, RunState>,
    pub applied_migrations: Vec<Applied>,
    /// Migrations whose last run failed: name -> (SHA-256, revision it failed at, error).
    pub failed_migrations: BTreeMap<String, FailedMigration>,
    /// Digests (hex) in the daemon's artifact store; `None` when not known (a preview
    /// without the daemon).
    pub cached_artifacts: Option<std::collections::BTreeSet<String>>,
    /// Objects held out of sync by hand (`service core/web`): their drift is not
    /// reverted until released or changed in git.
    pub holds: std::collections::BTreeSet<String>,
}

/// A migration whose last run failed. It is retried on the next revision, not on every
/// sync of the revision it failed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedMigration {
    pub sha256: String,
    pub revision: Option<String>,
    pub error: Option<String>,
}

/// The store's record of a migration as the migrations runner reads it.
pub fn applied_of(m: &hero_proc_store::AppliedMigration) -> Applied {
    Applied {
        name: m.name.clone(),
        sha256: m.sha256.clone(),
        result: match m.result {
            MigrationResult::Ok => AppliedResult::Ok,
            MigrationResult::Failed => AppliedResult::Failed,
        },
    }
}

impl Live {
    /// Nothing live: the `--empty` preview (what a fresh machine would do).
    pub fn empty() -> Live {
        Live::default()
    }

    /// Config rows, secrets and migrations from the store; service states are the
    /// caller's to fill (the engine knows them).
    pub fn read(store: &Store) -> Result<Live, StoreError> {
        Live::read_mirrored(store, &mut LiveMirror::default())
    }

    /// [`Live::read`] through `mirror`, which decodes only the config rows changed since
    /// its last read.
    pub fn read_mirrored(store: &Store, mirror: &mut LiveMirror) -> Result<Live, StoreError> {
        mirror.refresh(store)?;
        Live::read_rest(store, mirror.actions.clone(), mirror.services.clone())
    }

    fn read_rest(
        store: &Store,
        actions: Arc<BTreeMap<Ref, Stored<Arc<Action>>>>,
        services: Arc<BTreeMap<Ref, Stored<Arc<Service>>>>,
    ) -> Result<Live, StoreError> {
        let secrets = store
            .list_secrets()?
            .into_iter()
            .map(|s| {
                (
                    Ref::new(&s.value.context, &s.value.name),
                    LiveSecret { fingerprint: s.value.fingerprint, source: s.value.source, managed: s.managed },
                )
            })
            .collect();
        let holds = store.list_holds()?.into_iter().map(|(o, _)| o).collect();
        let recorded = store.applied_migrations()?;
        let failed_migrations = recorded
            .iter()
            .filter(|m| m.result == MigrationResult::Failed)
            .map(|m| {
                (
                    m.name.clone(),
                    FailedMigration { sha256: m.sha256.clone(), revision: m.revision.clone(), error: m.error.clone() },
                )
            })
            .collect();
        let applied_migrations = recorded.iter().map(applied_of).collect();
        Ok(Live {
            actions,
            services,
            secrets,
            states: BTreeMap::new(),
            applied_migrations,
            failed_migrations,
            cached_artifacts: None,
            holds,
        })
    }

    pub fn state(&self, r: &Ref) -> RunState {
        self.states.get(r).copied().unwrap_or(RunState::Unknown)
    }

    /// The live state a fresh machine would have after applying `base`: every object
    /// managed at `base`'s revision, its secrets stored, its migrations run, its
    /// artifacts installed. The base side of a base..head preview (`--base`), so the plan
    /// shows what the merge changes and nothing else. Service states stay unknown: a
    /// preview calls nothing drift.
    pub fn as_applied(base: &crate::Desired) -> Live {
        let revision = Some(base.commit.id.clone());
        let stored = |value| Stored { value, managed: true, revision: revision.clone(), updated_at_ms: 0 };
        let actions = base
            .state
            .actions
            .iter()
            .map(|((c, n), a)| (Ref::new(c, n), stored(a.clone())))
            .collect::<BTreeMap<_, _>>();
        let services = base
            .state
            .services
            .iter()
            .map(|((c, n), s)| {
                (
                    Ref::new(c, n),
                    Stored { value: s.clone(), managed: true, revision: revision.clone(), updated_at_ms: 0 },
                )
            })
            .collect::<BTreeMap<_, _>>();
        let secrets = base
            .secrets
            .iter()
            .map(|(r, s)| {
                let fingerprint = s.fingerprint.clone().unwrap_or_default();
                (r.clone(), LiveSecret { fingerprint, source: s.source.clone(), managed: true })
            })
            .collect();
        Live {
            actions: Arc::new(actions),
            services: Arc::new(services),
            secrets,
            states: BTreeMap::new(),
            applied_migrations: base.migrations.iter().map(Applied::ok).collect(),
            failed_migrations: BTreeMap::new(),
            cached_artifacts: Some(base.artifacts.values().map(|(_, d)| d.hex().to_owned()).collect()),
            holds: Default::default(),
        }
    }
}

/// The store's action and service rows kept decoded between reads (the daemon keeps one
/// for its syncs). Every insert and update of a row takes a greater version (schema v5),
/// so a read decodes only the rows past the greatest version seen, and the row count
/// tells whether any row held was deleted (then the table is read whole once more).
/// After a plan, [`LiveMirror::share`] swaps each row equal to git's object for git's
/// object: the next plan compares pointers, and an unchanged object is held once. The
/// maps are shared with the [`Live`] views handed out (copied only when a view is still
/// alive at the next change).
#[derive(Debug, Default)]
pub struct LiveMirror {
    actions: Arc<BTreeMap<Ref, Stored<Arc<Action>>>>,
    services: Arc<BTreeMap<Ref, Stored<Arc<Service>>>>,
    /// The greatest version read from each table; `None` before the first read.
    seen_actions: Option<i64>,
    seen_services: Option<i64>,
}

impl LiveMirror {
    /// Bring the mirror up to the store's rows.
    pub fn refresh(&mut self, store: &Store) -> Result<(), StoreError> {
        refresh_table(&mut self.actions, &mut self.seen_actions, |since| store.actions_changed_since(since))?;
        refresh_table(&mut self.services, &mut self.seen_services, |since| store.services_changed_since(since))
    }

    /// Rows equal to the desired object become that object (pointer-equal from then on).
    /// Both maps are ordered by context then name, so this is one walk, no lookups.
    pub fn share(&mut self, desired: &DesiredState) {
        share(&mut self.actions, &desired.actions);
        share(&mut self.services, &desired.services);
    }

    /// The number of rows held (tests, metrics).
    pub fn len(&self) -> usize {
        self.actions.len() + self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refresh_table<T: HasKey>(
    map: &mut Arc<BTreeMap<Ref, Stored<Arc<T>>>>,
    seen: &mut Option<i64>,
    read: impl Fn(i64) -> Result<Changed<T>, StoreError>,
) -> Result<(), StoreError> {
    let since = seen.unwrap_or(-1);
    let ch = read(since)?;
    let new = ch.changed.iter().filter(|(_, s)| !map.contains_key(&s.value.key_ref())).count();
    let (ch, rebuild) = if seen.is_some() && map.len() + new != ch.rows {
        // A row held was deleted: which one, only a whole read says.
        (read(-1)?, true)
    } else {
        (ch, seen.is_none())
    };
    if ch.changed.is_empty() && !rebuild {
        return Ok(());
    }
    let rows = Arc::make_mut(map);
    if rebuild {
        rows.clear();
    }
    let mut top = if rebuild { -1 } else { since };
    for (version, s) in ch.changed {
        top = top.max(version);
        let Stored { value, managed, revision, updated_at_ms } = s;
        rows.insert(value.key_ref(), Stored { value: Arc::new(value), managed, revision, updated_at_ms });
    }
    *seen = Some(top);
    Ok(())
}

/// The row's key, from the decoded object.
trait HasKey {
    fn key_ref(&self) -> Ref;
}

impl HasKey for Action {
    fn key_ref(&self) -> Ref {
        Ref::new(&self.context, &self.name)
    }
}

impl HasKey for Service {
    fn key_ref(&self) -> Ref {
        Ref::new(&self.context, &self.name)
    }
}

fn share<T: Eq>(mirror: &mut Arc<BTreeMap<Ref, Stored<Arc<T>>>>, desired: &BTreeMap<(String, String), Arc<T>>) {
    // Which rows to swap first, so an unchanged mirror is not copied away from a view.
    let mut swaps: Vec<(Ref, Arc<T>)> = Vec::new();
    let mut want = desired.iter().peekable();
    for (r, s) in mirror.iter() {
        while want.next_if(|((c, n), _)| (c.as_str(), n.as_str()) < (r.context.as_str(), r.name.as_str())).is_some() {}
        if let Some(((c, n), d)) = want.peek()
            && c == &r.context
            && n == &r.name
            && !Arc::ptr_eq(&s.value, d)
            && *s.value == ***d
        {
            swaps.push((r.clone(), Arc::clone(d)));
        }
    }
    if swaps.is_empty() {
        return;
    }
    let rows = Arc::make_mut(mirror);
    for (r, d) in swaps {
        if let Some(s) = rows.get_mut(&r) {
            s.value = d;
        }
    }
}
