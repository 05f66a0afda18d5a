//! Artifacts in the daemon (SPEC 3.6): install what a revision needs before it is
//! applied, remember which versions the applied revisions used, keep the last `keep`
//! per name for offline rollback and remove the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use hero_proc_artifacts::{ArtifactId, Cache, Counters, Digest, InstallError, Installed, Installer, Quiet, Token};
use hero_proc_reconcile::Desired;
use hero_proc_store::{ArtifactRecord, Store, StoreError};

/// What `artifact prune` (or the prune after an apply) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pruned {
    /// `NAME@VERSION` whose record and link were removed.
    pub versions: Vec<String>,
    /// Files removed from the store, and their bytes.
    pub files: usize,
    pub bytes: u64,
}

/// Versions in use: digest and the actions that run each.
type InUse = BTreeMap<ArtifactId, (Digest, Vec<String>)>;

pub struct Artifacts {
    cache: Cache,
    store: Arc<Store>,
    counters: Arc<Counters>,
    /// The installer of the last registry setting (its HTTP client keeps connections).
    installer: Mutex<Option<(hero_proc_spec::Registry, Installer)>>,
    /// What the last record wrote: a no-op sync writes nothing.
    recorded: Mutex<Option<InUse>>,
}

impl Artifacts {
    /// The artifacts of the daemon rooted at `root`; what an interrupted download left
    /// is removed (no download runs yet).
    pub fn open(root: &Path, store: Arc<Store>) -> Artifacts {
        let cache = Cache::new(root);
        match cache.clean_partial() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} partial artifact download(s) left by an earlier run"),
            Err(e) => tracing::warn!("cannot clean partial artifact downloads: {e}"),
        }
        Artifacts { cache, store, counters: Arc::default(), installer: Mutex::new(None), recorded: Mutex::new(None) }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Digests (hex) present in the store.
    pub fn cached_digests(&self) -> BTreeSet<String> {
        self.cache.files().map(|f| f.keys().map(|d| d.hex().to_owned()).collect()).unwrap_or_default()
    }

    /// Bytes of the files in the store.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.files().map(|f| f.values().map(|c| c.size).sum()).unwrap_or(0)
    }

    /// Make every artifact `desired` runs present and linked. Nothing to do (all cached
    /// and linked) costs a stat and a readlink per artifact.
    pub async fn install(&self, desired: &Desired) -> Result<Installed, InstallError> {
        let needed = desired.needed_artifacts();
        if needed.is_empty() || needed.iter().all(|(id, d)| self.cache.is_linked(id, d)) {
            return Ok(Installed::default());
        }
        let Some(registry) = desired.settings.registry.clone() else {
            // `validate` refuses artifacts without a registry; cached ones need none.
            let mut failed = Vec::new();
            for (id, d) in &needed {
                if let Err(e) = self.cache.link(id, d) {
                    failed.push(hero_proc_artifacts::ArtifactError {
                        id: id.clone(),
                        cause: hero_proc_artifacts::Cause::NotFound,
                        message: format!("not in the cache ({e}) and hero.yaml has no `registry` to fetch it from"),
                    });
                }
            }
            return if failed.is_empty() { Ok(Installed::default()) } else { Err(InstallError { failed }) };
        };
        let token = desired.registry_token().map(|v| Token::new(v.expose()));
        let installer = self.installer_for(&registry, token)?;
        let started = std::time::Instant::now();
        let result = installer.install(&needed, &Quiet).await;
        if let Ok(done) = &result
            && !done.downloaded.is_empty()
        {
            let bytes: u64 = done.downloaded.iter().map(|(_, n)| n).sum();
            tracing::info!(
                count = done.downloaded.len(),
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "artifacts downloaded"
            );
        }
        result
    }

    /// Fill the download size of the plan's steps that are not cached (a preview).
    pub async fn sizes(&self, desired: &Desired, steps: &mut [hero_proc_reconcile::ArtifactStep]) {
        let Some(registry) = desired.settings.registry.clone() else { return };
        let token = desired.registry_token().map(|v| Token::new(v.expose()));
        let Ok(installer) = self.installer_for(&registry, token) else { return };
        let ids: Vec<ArtifactId> = steps
            .iter()
            .filter(|s| s.cached == Some(false))
            .map(|s| ArtifactId { name: s.name.clone(), version: s.to.clone() })
            .collect();
        let sizes = installer.sizes_of(&ids).await;
        for (step, size) in steps.iter_mut().filter(|s| s.cached == Some(false)).zip(sizes) {
            step.size = size;
        }
    }

    fn installer_for(
        &self,
        registry: &hero_proc_spec::Registry,
        token: Option<Token>,
    ) -> Result<Installer, InstallError> {
        let mut slot = self.installer.lock().unwrap_or_else(|e| e.into_inner());
        // The token's value may change with a revision; the client is cheap to rebuild
        // then, and is kept while the setting and token stay.
        let want = hero_proc_artifacts::Registry { url: registry.url.clone(), token, timeout: registry.timeout.0 };
        if let Some((r, i)) = slot.as_ref()
            && r == registry
            && i.registry().token == want.token
        {
            return Ok(i.clone());
        }
        let made = match slot.as_ref() {
            Some((_, i)) => i.with_registry(want),
            None => Installer::new(want, self.cache.clone(), self.counters.clone()),
        };
        let installer = made.map_err(|message| InstallError {
            failed: vec![hero_proc_artifacts::ArtifactError {
                id: ArtifactId { name: "-".into(), version: "-".into() },
                cause: hero_proc_artifacts::Cause::Io,
                message,
            }],
        })?;
        *slot = Some((registry.clone(), installer.clone()));
        Ok(installer)
    }

    /// After `desired` was applied: record the versions it uses (only when that set
    /// changed) and prune beyond `registry.keep` per name.
    pub fn applied(&self, desired: &Desired, now_ms: i64) -> Result<Pruned, StoreError> {
        let mut used: InUse = BTreeMap::new();
        for (r, (id, d)) in &desired.artifacts {
            used.entry(id.clone()).or_insert_with(|| (d.clone(), Vec::new())).1.push(r.to_string());
        }
        let keep = desired.settings.registry.as_ref().map_or(hero_proc_spec::Registry::DEFAULT_KEEP, |r| r.keep);
        {
            let mut last = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_ref() == Some(&used) {
                return Ok(Pruned::default());
            }
            let files = self.cache.files().unwrap_or_default();
            let records: Vec<ArtifactRecord> = used
                .iter()
                .map(|(id, (d, by))| ArtifactRecord {
                    name: id.name.clone(),
                    version: id.version.clone(),
                    digest: d.to_string(),
                    size: files.get(d).map_or(0, |f| f.size),
                    used_by: by.clone(),
                    installed_at_ms: now_ms,
                    last_used_ms: now_ms,
                })
                .collect();
            self.store.record_artifacts(&records)?;
            *last = Some(used.clone());
        }
        let in_use: BTreeSet<ArtifactId> = used.into_keys().collect();
        self.prune(keep, &in_use)
    }

    /// Remove versions beyond the `keep` most recently used per name (never one in
    /// `in_use`), then store files no kept version points at, and their links.
    pub fn prune(&self, keep: u32, in_use: &BTreeSet<ArtifactId>) -> Result<Pruned, StoreError> {
        let records = self.store.list_artifacts()?;
        let mut out = Pruned::default();
        let mut by_name: BTreeMap<&str, Vec<&ArtifactRecord>> = BTreeMap::new();
        for r in &records {
            by_name.entry(&r.name).or_default().push(r);
        }
        let mut kept_digests: BTreeSet<String> = BTreeSet::new();
        for versions in by_name.values_mut() {
            // The store lists them most recently used first.
            for (i, r) in versions.iter().enumerate() {
                let id = ArtifactId { name: r.name.clone(), version: r.version.clone() };
                if i < keep as usize || in_use.contains(&id) {
                    kept_digests.insert(r.digest.clone());
                    continue;
                }
                if let Err(e) = self.cache.unlink(&id) {
                    tracing::warn!("cannot remove the link of {id}: {e}");
                    kept_digests.insert(r.digest.clone());
                    continue;
                }
                self.store.delete_artifact(&r.name, &r.version)?;
                out.versions.push(id.to_string());
            }
        }
        for (d, f) in self.cache.files().unwrap_or_default() {
            if kept_digests.contains(&d.to_string()) {
                continue;
            }
            match self.cache.remove(&d) {
                Ok(true) => {
                    out.files += 1;
                    out.bytes += f.size;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot remove {d} from the artifact store: {e}"),
            }
        }
        if !out.versions.is_empty() || out.files > 0 {
            tracing::info!(versions = ?out.versions, files = out.files, bytes = out.bytes, "artifacts pruned");
        }
        Ok(out)
    }

    /// `artifact prune` by hand: what the last applied revision uses (the records written
    /// last) is kept, with the `keep` most recent per name.
    pub fn prune_now(&self, keep: u32) -> Result<Pruned, StoreError> {
        let records = self.store.list_artifacts()?;
        let newest = records.iter().map(|r| r.last_used_ms).max();
        let in_use = records
            .iter()
            .filter(|r| Some(r.last_used_ms) == newest)
            .map(|r| ArtifactId { name: r.name.clone(), version: r.version.clone() })
            .collect();
        self.prune(keep, &in_use)
    }

    /// Every recorded version, with whether its file is present.
    pub fn list(&self) -> Result<Vec<(ArtifactRecord, bool)>, StoreError> {
        let files = self.cache.files().unwrap_or_default();
        Ok(self
            .store
            .list_artifacts()?
            .into_iter()
            .map(|r| {
                let present = Digest::parse(&r.digest).is_ok_and(|d| files.contains_key(&d));
                (r, present)
            })
            .collect())
    }
}
