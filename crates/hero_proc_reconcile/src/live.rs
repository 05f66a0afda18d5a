//! The live state the plan compares against: config rows with their inventory marks,
//! stored secret fingerprints, applied migrations, and (from the engine) whether each
//! service is up.

use std::collections::BTreeMap;

use hero_proc_migrate::{Applied, AppliedResult};
use hero_proc_spec::{Action, Service};
use hero_proc_store::{MigrationResult, Ref, Store, StoreError, Stored};
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
    pub actions: BTreeMap<Ref, Stored<Action>>,
    pub services: BTreeMap<Ref, Stored<Service>>,
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
        let actions =
            store.list_actions()?.into_iter().map(|s| (Ref::new(&s.value.context, &s.value.name), s)).collect();
        let services =
            store.list_services()?.into_iter().map(|s| (Ref::new(&s.value.context, &s.value.name), s)).collect();
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
}
