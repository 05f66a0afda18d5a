//! The public operations. Writes are defined on [`Tx`]; the [`Store`] methods of the same
//! name run them in a transaction of their own. Reads exist on both.

use hero_proc_spec::{Action, Service, ServiceStatus};

use crate::db::R;
use crate::store::{Store, Tx};
use crate::types::*;

/// Writes (and the reads a planner needs) inside a transaction.
impl Tx<'_> {
    /// Creates or replaces the action `(a.context, a.name)`.
    pub fn put_action(&self, a: &Action, origin: &Origin) -> R<()> {
        self.actions_written();
        self.db().put_action(a, origin)
    }
    /// Deletes an action; `false` if there was none.
    pub fn delete_action(&self, context: &str, name: &str) -> R<bool> {
        self.actions_written();
        self.db().delete_action(context, name)
    }
    pub fn get_action(&self, context: &str, name: &str) -> R<Option<Stored<Action>>> {
        self.db().get_action(context, name)
    }
    pub fn list_actions(&self) -> R<Vec<Stored<Action>>> {
        self.db().list_actions()
    }

    /// Creates or replaces the service `(s.context, s.name)`.
    pub fn put_service(&self, s: &Service, origin: &Origin) -> R<()> {
        self.db().put_service(s, origin)
    }
    /// Deletes a service; `false` if there was none.
    pub fn delete_service(&self, context: &str, name: &str) -> R<bool> {
        self.db().delete_service(context, name)
    }
    pub fn get_service(&self, context: &str, name: &str) -> R<Option<Stored<Service>>> {
        self.db().get_service(context, name)
    }
    pub fn list_services(&self) -> R<Vec<Stored<Service>>> {
        self.db().list_services(None)
    }

    /// Creates or replaces a secret (ciphertext from the caller).
    pub fn put_secret(&self, s: &SecretRecord, origin: &Origin) -> R<()> {
        self.db().put_secret(s, origin)
    }
    /// Deletes a secret; `false` if there was none.
    pub fn delete_secret(&self, context: &str, name: &str) -> R<bool> {
        self.db().delete_secret(context, name)
    }
    pub fn get_secret(&self, context: &str, name: &str) -> R<Option<Stored<SecretRecord>>> {
        self.db().get_secret(context, name)
    }
    pub fn list_secrets(&self) -> R<Vec<Stored<SecretMeta>>> {
        self.db().list_secrets()
    }

    /// See [`Store::create_run`].
    pub fn create_run(&self, label: &str, created_at_ms: i64) -> R<RunId> {
        self.db().create_run(label, created_at_ms)
    }
    /// A run created already running (its jobs are recorded with it): one statement, not
    /// a `create_run` and a `set_run_phase`.
    pub fn create_running_run(&self, label: &str, created_at_ms: i64) -> R<RunId> {
        self.db().create_run_in(label, Phase::Running, created_at_ms)
    }
    /// See [`Store::set_run_phase`].
    pub fn set_run_phase(&self, id: RunId, phase: Phase, at_ms: i64) -> R<()> {
        self.db().set_run_phase(id, phase, at_ms)
    }
    /// See [`Store::create_job`].
    pub fn create_job(&self, job: &NewJob<'_>) -> R<JobId> {
        self.db().create_job(job)
    }
    /// See [`Store::mark_job_running`].
    pub fn mark_job_running(&self, id: JobId, pid: u32, pid_start_ticks: Option<u64>, started_at_ms: i64) -> R<()> {
        self.db().mark_job_running(id, pid, pid_start_ticks, started_at_ms)
    }
    /// See [`Store::finish_job`].
    pub fn finish_job(&self, id: JobId, exit: &JobExit) -> R<()> {
        self.db().finish_job(id, exit)
    }
    /// [`Tx::mark_job_running`] and [`Tx::finish_job`] in one statement, for a job that
    /// started and ended since the last write.
    ///
    /// # Errors
    /// [`crate::StoreError::NotFound`]; [`crate::StoreError::InvalidState`] unless pending,
    /// or if `exit.phase` is not final.
    pub fn finish_started_job(
        &self,
        id: JobId,
        pid: u32,
        pid_start_ticks: Option<u64>,
        started_at_ms: i64,
        exit: &JobExit,
    ) -> R<()> {
        self.db().finish_started_job(id, pid, pid_start_ticks, started_at_ms, exit)
    }

    pub fn get_run(&self, id: RunId) -> R<Option<Run>> {
        self.db().get_run(id)
    }
    pub fn get_job(&self, id: JobId) -> R<Option<Job>> {
        self.db().get_job(id)
    }

    /// See [`Store::record_sync`].
    pub fn record_sync(&self, rec: &SyncRecord) -> R<i64> {
        self.db().record_sync(rec)
    }
    pub fn sync_state(&self) -> R<SyncState> {
        self.db().sync_state()
    }
    pub fn set_sync_state(&self, s: &SyncState) -> R<()> {
        self.db().set_sync_state(s)
    }
    /// Release a hold (the apply does it when git changed the held object).
    pub fn delete_hold(&self, object: &str) -> R<bool> {
        self.db().delete_hold(object)
    }
    pub fn list_holds(&self) -> R<Vec<(String, i64)>> {
        self.db().list_holds()
    }
    /// See [`Store::record_migration`].
    pub fn record_migration(&self, m: &AppliedMigration) -> R<()> {
        self.db().record_migration(m)
    }
    pub fn applied_migrations(&self) -> R<Vec<AppliedMigration>> {
        self.db().applied_migrations()
    }
}

impl Store {
    // ---- actions and services ---------------------------------------------------------

    /// Creates or replaces the action `(a.context, a.name)`, stamping `updated_at_ms`.
    pub fn put_action(&self, a: &Action, origin: &Origin) -> R<()> {
        self.transaction(|tx| tx.put_action(a, origin))
    }
    pub fn get_action(&self, context: &str, name: &str) -> R<Option<Stored<Action>>> {
        self.read(|db| db.get_action(context, name))
    }
    /// All actions, by context then name.
    pub fn list_actions(&self) -> R<Vec<Stored<Action>>> {
        self.read(|db| db.list_actions())
    }
    /// `false` if there was no such action.
    pub fn delete_action(&self, context: &str, name: &str) -> R<bool> {
        self.transaction(|tx| tx.delete_action(context, name))
    }
    /// The actions inserted or updated since version `since` (`-1`: every one), with the
    /// number of rows the table holds, in one snapshot. A reader that keeps decoded rows
    /// knows from the count whether any row it holds was deleted (its rows plus the new
    /// ones would not add up), and otherwise needs only these.
    pub fn actions_changed_since(&self, since: i64) -> R<Changed<Action>> {
        self.read_snapshot(|db| db.changed_since("action", "actions", since))
    }
    /// [`Store::actions_changed_since`] for services.
    pub fn services_changed_since(&self, since: i64) -> R<Changed<Service>> {
        self.read_snapshot(|db| db.changed_since("service", "services", since))
    }

    /// Creates or replaces the service `(s.context, s.name)`.
    pub fn put_service(&self, s: &Service, origin: &Origin) -> R<()> {
        self.transaction(|tx| tx.put_service(s, origin))
    }
    pub fn get_service(&self, context: &str, name: &str) -> R<Option<Stored<Service>>> {
        self.read(|db| db.get_service(context, name))
    }
    /// All services, by context then name.
    pub fn list_services(&self) -> R<Vec<Stored<Service>>> {
        self.read(|db| db.list_services(None))
    }
    /// Services whose status is `status` (filtered in SQL through the `status` column).
    pub fn list_services_with_status(&self, status: ServiceStatus) -> R<Vec<Stored<Service>>> {
        self.read(|db| db.list_services(Some(status)))
    }
    /// `false` if there was no such service.
    pub fn delete_service(&self, context: &str, name: &str) -> R<bool> {
        self.transaction(|tx| tx.delete_service(context, name))
    }

    // ---- secrets ----------------------------------------------------------------------

    /// Creates or replaces a secret. The store never sees plaintext: `ciphertext` is
    /// encrypted by the caller.
    pub fn put_secret(&self, s: &SecretRecord, origin: &Origin) -> R<()> {
        self.transaction(|tx| tx.put_secret(s, origin))
    }
    /// The ciphertext and its metadata.
    pub fn get_secret(&self, context: &str, name: &str) -> R<Option<Stored<SecretRecord>>> {
        self.read(|db| db.get_secret(context, name))
    }
    /// Metadata only: the ciphertext column is not even read.
    pub fn list_secrets(&self) -> R<Vec<Stored<SecretMeta>>> {
        self.read(|db| db.list_secrets())
    }
    /// `false` if there was no such secret.
    pub fn delete_secret(&self, context: &str, name: &str) -> R<bool> {
        self.transaction(|tx| tx.delete_secret(context, name))
    }

    // ---- runs and jobs ----------------------------------------------------------------

    /// A new `pending` run.
    pub fn create_run(&self, label: &str, created_at_ms: i64) -> R<RunId> {
        self.transaction(|tx| tx.create_run(label, created_at_ms))
    }
    /// Moves a run to `phase`; a final phase records `at_ms` as its finish time.
    ///
    /// # Errors
    /// [`crate::StoreError::NotFound`]; [`crate::StoreError::InvalidState`] when the run has
    /// already finished with another phase (setting the same final phase again is a no-op).
    pub fn set_run_phase(&self, id: RunId, phase: Phase, at_ms: i64) -> R<()> {
        self.transaction(|tx| tx.set_run_phase(id, phase, at_ms))
    }
    pub fn get_run(&self, id: RunId) -> R<Option<Run>> {
        self.read(|db| db.get_run(id))
    }
    /// Newest first; `before_id` pages backwards.
    pub fn list_runs(&self, limit: u32, before_id: Option<RunId>) -> R<Vec<Run>> {
        self.read(|db| db.list_runs(limit, before_id))
    }
    /// [`Store::list_runs`] with each run's newest `max_jobs` jobs (ascending by id) and
    /// whether it has more, read in one snapshot with a fixed number of queries (not one
    /// per run).
    pub fn list_runs_with_jobs(&self, limit: u32, before_id: Option<RunId>, max_jobs: u32) -> R<Vec<RunWithJobs>> {
        self.read_snapshot(|db| db.list_runs_with_jobs(limit, before_id, max_jobs))
    }

    /// A new `pending` job with a snapshot of its action.
    ///
    /// # Errors
    /// [`crate::StoreError::NotFound`] when `run_id` names no run.
    pub fn create_job(&self, job: &NewJob<'_>) -> R<JobId> {
        self.transaction(|tx| tx.create_job(job))
    }
    /// `pending -> running`, with the PID and its start time (`/proc/<pid>/stat` field 22)
    /// for a later re-attach to tell the process from a PID reuse.
    ///
    /// # Errors
    /// [`crate::StoreError::NotFound`]; [`crate::StoreError::InvalidState`] unless pending.
    pub fn mark_job_running(&self, id: JobId, pid: u32, pid_start_ticks: Option<u64>, started_at_ms: i64) -> R<()> {
        self.transaction(|tx| tx.mark_job_running(id, pid, pid_start_ticks, started_at_ms))
    }
    /// `pending | running -> succeeded | failed | cancelled`.
    ///
    /// # Errors
    /// [`crate::StoreError::NotFound`]; [`crate::StoreError::InvalidState`] if the job has
    /// already finished (history is never rewritten) or `exit.phase` is not final.
    pub fn finish_job(&self, id: JobId, exit: &JobExit) -> R<()> {
        self.transaction(|tx| tx.finish_job(id, exit))
    }
    pub fn get_job(&self, id: JobId) -> R<Option<Job>> {
        self.read(|db| db.get_job(id))
    }
    /// Jobs matching `filter`, newest first (each filter is served by an index).
    pub fn list_jobs(&self, filter: &JobFilter) -> R<Vec<Job>> {
        self.read(|db| db.list_jobs(filter))
    }
    /// Pending and running jobs, oldest first: what a starting daemon re-attaches or
    /// re-queues.
    pub fn active_jobs(&self) -> R<Vec<Job>> {
        self.read(|db| db.active_jobs())
    }
    pub fn job_counts_by_phase(&self) -> R<PhaseCounts> {
        self.read(|db| db.job_counts_by_phase())
    }

    // ---- holds (`reconcile hold`) ------------------------------------------------------

    /// Hold an object out of sync; `false` if it already was.
    pub fn put_hold(&self, object: &str, at_ms: i64) -> R<bool> {
        self.transaction(|tx| tx.db().put_hold(object, at_ms))
    }
    /// `false` if it was not held.
    pub fn delete_hold(&self, object: &str) -> R<bool> {
        self.transaction(|tx| tx.db().delete_hold(object))
    }
    /// Held objects (`service core/web`) and since when.
    pub fn list_holds(&self) -> R<Vec<(String, i64)>> {
        self.read(|db| db.list_holds())
    }

    // ---- artifacts ----------------------------------------------------------------------

    /// Record the artifact versions an applied revision uses (one transaction).
    pub fn record_artifacts(&self, used: &[ArtifactRecord]) -> R<()> {
        self.transaction(|tx| {
            for a in used {
                tx.db().put_artifact(a)?;
            }
            Ok(())
        })
    }
    /// By name, most recently used first.
    pub fn list_artifacts(&self) -> R<Vec<ArtifactRecord>> {
        self.read(|db| db.list_artifacts())
    }
    /// `false` if there was no such record.
    pub fn delete_artifact(&self, name: &str, version: &str) -> R<bool> {
        self.transaction(|tx| tx.db().delete_artifact(name, version))
    }

    // ---- sync -------------------------------------------------------------------------

    /// Appends one line of reconcile history; returns its id.
    pub fn record_sync(&self, rec: &SyncRecord) -> R<i64> {
        self.transaction(|tx| tx.record_sync(rec))
    }
    /// Newest first.
    pub fn history(&self, limit: u32) -> R<Vec<SyncEntry>> {
        self.read(|db| db.history(limit))
    }
    pub fn sync_state(&self) -> R<SyncState> {
        self.read(|db| db.sync_state())
    }
    /// Replaces the whole state. For read-modify-write from several threads use
    /// [`Store::update_sync_state`], which cannot lose a concurrent change.
    pub fn set_sync_state(&self, s: &SyncState) -> R<()> {
        self.transaction(|tx| tx.set_sync_state(s))
    }
    /// Reads, changes and writes the sync state in one transaction.
    pub fn update_sync_state(&self, f: impl FnOnce(&mut SyncState)) -> R<SyncState> {
        self.transaction(|tx| {
            let mut s = tx.sync_state()?;
            f(&mut s);
            tx.set_sync_state(&s)?;
            Ok(s)
        })
    }

    // ---- config-repository migrations -------------------------------------------------

    /// Records a `migrations/*.rhai` outcome. A failed one may be recorded again (it is
    /// retried on the next revision).
    ///
    /// # Errors
    /// [`crate::StoreError::InvalidState`] if `m.name` is already recorded as `ok`.
    pub fn record_migration(&self, m: &AppliedMigration) -> R<()> {
        self.transaction(|tx| tx.record_migration(m))
    }
    /// By name, i.e. in application order.
    pub fn applied_migrations(&self) -> R<Vec<AppliedMigration>> {
        self.read(|db| db.applied_migrations())
    }

    // ---- stop intent ------------------------------------------------------------------

    /// Records that `service stop` was asked by hand: the service stays stopped across
    /// daemon restarts until it is started or its config changes.
    pub fn set_stop_intent(&self, context: &str, name: &str, at_ms: i64) -> R<()> {
        self.transaction(|tx| tx.db().set_stop_intent(context, name, at_ms))
    }
    /// `false` if there was none.
    pub fn clear_stop_intent(&self, context: &str, name: &str) -> R<bool> {
        self.transaction(|tx| tx.db().clear_stop_intent(context, name))
    }
    /// Services stopped by hand, with when.
    pub fn stop_intents(&self) -> R<Vec<(Ref, i64)>> {
        self.read(|db| db.stop_intents())
    }

    // ---- stats ------------------------------------------------------------------------

    /// Page counts and bytes on disk.
    pub fn db_stats(&self) -> R<DbStats> {
        self.read(|db| db.db_stats())
    }
}
