//! Every table: what goes in comes back; the transaction API is all or nothing.

use crate::support::*;
use hero_proc_spec::ServiceStatus;
use hero_proc_store::*;
use serde_json::json;

#[test]
fn actions_round_trip() {
    let (_t, store) = open();
    let a = action("core", "web");
    assert!(store.get_action("core", "web").unwrap().is_none());
    store.put_action(&a, &Origin::git("c0ffee")).unwrap();
    let got = store.get_action("core", "web").unwrap().unwrap();
    assert_eq!(got.value, a);
    assert!(got.managed);
    assert_eq!(got.revision.as_deref(), Some("c0ffee"));
    assert!(got.updated_at_ms > 0);

    // Replace: same key, new spec and origin.
    let mut b = a.clone();
    b.script = "true".into();
    store.put_action(&b, &Origin::manual()).unwrap();
    let got = store.get_action("core", "web").unwrap().unwrap();
    assert_eq!(got.value.script, "true");
    assert!(!got.managed);
    assert_eq!(got.revision, None);

    store.put_action(&action("other", "web"), &Origin::manual()).unwrap();
    store.put_action(&action("core", "api"), &Origin::manual()).unwrap();
    let keys: Vec<_> = store.list_actions().unwrap().into_iter().map(|s| (s.value.context, s.value.name)).collect();
    assert_eq!(keys, [("core".into(), "api".into()), ("core".into(), "web".into()), ("other".into(), "web".into())]);
    assert!(store.delete_action("core", "web").unwrap());
    assert!(!store.delete_action("core", "web").unwrap());
    assert_eq!(store.list_actions().unwrap().len(), 2);
}

/// A reader keeping decoded rows re-reads exactly what changed: every insert and update
/// (of the spec or only of the origin) takes a greater version, the row count comes with
/// the changed rows (a delete shows in it), and versions keep growing across a reopen.
#[test]
fn config_rows_carry_versions_that_name_what_changed() {
    let keys = |c: &Changed<hero_proc_spec::Action>| {
        c.changed.iter().map(|(_, s)| format!("{}/{}", s.value.context, s.value.name)).collect::<Vec<_>>()
    };
    let (t, store) = open();
    store.put_action(&action("core", "a"), &Origin::git("r1")).unwrap();
    store.put_action(&action("core", "b"), &Origin::git("r1")).unwrap();
    store.put_service(&service("core", "s", "start"), &Origin::git("r1")).unwrap();
    let all = store.actions_changed_since(-1).unwrap();
    assert_eq!(all.rows, 2);
    let mut names = keys(&all);
    names.sort();
    assert_eq!(names, ["core/a", "core/b"]);
    let seen = all.changed.iter().map(|(v, _)| *v).max().unwrap();
    assert!(all.changed.iter().all(|(v, _)| *v > 0));

    // Nothing changed: the count only.
    let again = store.actions_changed_since(seen).unwrap();
    assert_eq!((again.rows, again.changed.len()), (2, 0));

    // A spec change, an origin-only change and a new row are past `seen`.
    let mut b = action("core", "b");
    b.script = "changed".into();
    store.put_action(&b, &Origin::git("r1")).unwrap();
    store.put_action(&action("core", "a"), &Origin::manual()).unwrap();
    store.put_action(&action("core", "c"), &Origin::manual()).unwrap();
    let changed = store.actions_changed_since(seen).unwrap();
    let mut names = keys(&changed);
    names.sort();
    assert_eq!((changed.rows, names), (3, vec!["core/a".to_owned(), "core/b".into(), "core/c".into()]));
    assert!(changed.changed.iter().all(|(v, _)| *v > seen), "{changed:?}");
    assert!(changed.changed.iter().any(|(_, s)| s.value.script == "changed"));
    assert!(changed.changed.iter().any(|(_, s)| s.value.name == "a" && !s.managed));
    let seen = changed.changed.iter().map(|(v, _)| *v).max().unwrap();

    // A delete changes no row: only the count says it.
    store.delete_action("core", "b").unwrap();
    let after = store.actions_changed_since(seen).unwrap();
    assert_eq!((after.rows, after.changed.len()), (2, 0));

    // Services share the counter.
    let svc = store.services_changed_since(-1).unwrap();
    assert_eq!((svc.rows, svc.changed.len()), (1, 1));
    assert!(svc.changed[0].0 > 0 && svc.changed[0].1.value.status == ServiceStatus::Start);
    store.put_service(&service("core", "s", "stop"), &Origin::git("r2")).unwrap();
    let svc = store.services_changed_since(seen).unwrap();
    assert_eq!(svc.changed.len(), 1);
    let top = svc.changed[0].0;
    assert!(top > seen);

    // Across a reopen, versions keep growing.
    drop(store);
    let store = Store::open(&t.path).unwrap();
    store.put_action(&action("core", "d"), &Origin::manual()).unwrap();
    let d = store.actions_changed_since(top).unwrap();
    assert_eq!((d.rows, keys(&d)), (3, vec!["core/d".to_owned()]));
}

#[test]
fn services_round_trip_with_status_column() {
    let (_t, store) = open();
    let s1 = service("core", "hero_db", "start");
    let s2 = service("core", "agent", "stop");
    let s3 = service("ai", "embedder", "ignore");
    for s in [&s1, &s2, &s3] {
        store.put_service(s, &Origin::git("r1")).unwrap();
    }
    assert_eq!(store.get_service("core", "hero_db").unwrap().unwrap().value, s1);
    assert_eq!(store.list_services().unwrap().len(), 3);
    let started = store.list_services_with_status(ServiceStatus::Start).unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].value, s1);
    // The status column follows updates.
    let mut s2b = s2.clone();
    s2b.status = ServiceStatus::Start;
    store.put_service(&s2b, &Origin::git("r2")).unwrap();
    assert_eq!(store.list_services_with_status(ServiceStatus::Start).unwrap().len(), 2);
    assert!(store.list_services_with_status(ServiceStatus::Stop).unwrap().is_empty());
    assert!(store.delete_service("ai", "embedder").unwrap());
    assert!(store.get_service("ai", "embedder").unwrap().is_none());
}

#[test]
fn secrets_round_trip_and_listing_has_no_ciphertext() {
    let (_t, store) = open();
    let rec = SecretRecord {
        context: "core".into(),
        name: "forgejo_token".into(),
        ciphertext: vec![0, 1, 2, 255, 254, 7],
        fingerprint: "hmac:abcd".into(),
        source: "secrets/core.sops.yaml".into(),
    };
    store.put_secret(&rec, &Origin::git("r1")).unwrap();
    let got = store.get_secret("core", "forgejo_token").unwrap().unwrap();
    assert_eq!(got.value, rec);
    assert!(got.managed);
    let list = store.list_secrets().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].value,
        SecretMeta {
            context: "core".into(),
            name: "forgejo_token".into(),
            fingerprint: "hmac:abcd".into(),
            source: "secrets/core.sops.yaml".into()
        }
    );
    // Debug output never shows the bytes.
    let dbg = format!("{rec:?}");
    assert!(dbg.contains("<6 bytes>") && !dbg.contains("254"), "{dbg}");
    let rpc = SecretRecord { ciphertext: vec![9; 100], fingerprint: "hmac:ef".into(), source: "rpc".into(), ..rec };
    store.put_secret(&rpc, &Origin::manual()).unwrap();
    let got = store.get_secret("core", "forgejo_token").unwrap().unwrap();
    assert_eq!(got.value, rpc);
    assert!(!got.managed);
    assert!(store.delete_secret("core", "forgejo_token").unwrap());
    assert!(store.list_secrets().unwrap().is_empty());
}

/// `updated_at_ms` is when the value changed: re-sealing the same value (same keyed
/// fingerprint, new ciphertext) keeps it; a new value moves it.
#[test]
fn a_secret_re_sealed_with_the_same_value_keeps_its_update_time() {
    let (_t, store) = open();
    let rec = SecretRecord {
        context: "geo".into(),
        name: "tok".into(),
        ciphertext: vec![1; 8],
        fingerprint: "hmac:same".into(),
        source: "rpc".into(),
    };
    store.put_secret(&rec, &Origin::manual()).unwrap();
    let first = store.get_secret("geo", "tok").unwrap().unwrap().updated_at_ms;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let adopted = SecretRecord { ciphertext: vec![2; 8], source: "secrets/geo.sops.yaml".into(), ..rec.clone() };
    store.put_secret(&adopted, &Origin::git("r2")).unwrap();
    let got = store.get_secret("geo", "tok").unwrap().unwrap();
    assert_eq!(got.updated_at_ms, first, "same value: not an update");
    assert_eq!(got.value.ciphertext, vec![2; 8]);
    assert!(got.managed);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let changed = SecretRecord { fingerprint: "hmac:new".into(), ..adopted };
    store.put_secret(&changed, &Origin::git("r3")).unwrap();
    assert!(store.get_secret("geo", "tok").unwrap().unwrap().updated_at_ms > first, "a new value is an update");
}

#[test]
fn sync_history_and_state_round_trip() {
    let (_t, store) = open();
    assert_eq!(store.sync_state().unwrap(), SyncState::default());
    let rec = SyncRecord {
        revision: "3f2c1a0".into(),
        author: Some("Ann <ann@example.org>".into()),
        committed_at_ms: Some(1_700_000_000_000),
        applied_at_ms: 1_700_000_001_000,
        summary: json!({"create": 2, "update": 1, "delete": 0, "keys": ["action core/web"]}),
        result: SyncResult::Applied,
        error: None,
    };
    let id1 = store.record_sync(&rec).unwrap();
    let rec2 = SyncRecord {
        revision: "9e9e9e9".into(),
        result: SyncResult::Failed,
        error: Some("migration 001 failed".into()),
        ..rec.clone()
    };
    let id2 = store.record_sync(&rec2).unwrap();
    assert!(id2 > id1);
    let h = store.history(10).unwrap();
    assert_eq!(h, vec![SyncEntry { id: id2, record: rec2 }, SyncEntry { id: id1, record: rec }]);
    assert_eq!(store.history(1).unwrap().len(), 1);

    let st = SyncState {
        applied_revision: Some("3f2c1a0".into()),
        applied_at_ms: Some(5),
        attempted_revision: Some("9e9e9e9".into()),
        attempted_at_ms: Some(6),
        last_error: Some("boom".into()),
        suspended: true,
        pinned_revision: Some("3f2c1a0".into()),
    };
    store.set_sync_state(&st).unwrap();
    assert_eq!(store.sync_state().unwrap(), st);
    let resumed = store.update_sync_state(|s| s.suspended = false).unwrap();
    assert!(!resumed.suspended);
    assert_eq!(store.sync_state().unwrap(), SyncState { suspended: false, ..st });
}

#[test]
fn applied_migrations_round_trip_and_ok_is_final() {
    let (_t, store) = open();
    let failed = AppliedMigration {
        name: "2026-04-24-001_add_x.rhai".into(),
        sha256: "a".repeat(64),
        revision: Some("r1".into()),
        applied_at_ms: 10,
        duration_ms: 3,
        result: MigrationResult::Failed,
        error: Some("proc.service_start: unknown service".into()),
    };
    store.record_migration(&failed).unwrap();
    assert_eq!(store.applied_migrations().unwrap(), vec![failed.clone()]);
    // Retried on a later revision: the failed record is replaced.
    let ok = AppliedMigration { revision: Some("r2".into()), result: MigrationResult::Ok, error: None, ..failed };
    store.record_migration(&ok).unwrap();
    let earlier = AppliedMigration { name: "2026-04-01-001_a.rhai".into(), ..ok.clone() };
    store.record_migration(&earlier).unwrap();
    assert_eq!(store.applied_migrations().unwrap(), vec![earlier, ok.clone()], "ordered by name");
    // An applied migration is never rewritten.
    let err = store.record_migration(&ok).unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
}

#[test]
fn runs_and_jobs_round_trip() {
    let (_t, store) = open();
    let a = action("core", "build");
    let run = store.create_run("deploy", 100).unwrap();
    assert_eq!(
        store.get_run(run).unwrap().unwrap(),
        Run { id: run, label: "deploy".into(), phase: Phase::Pending, created_at_ms: 100, finished_at_ms: None }
    );
    store.set_run_phase(run, Phase::Running, 101).unwrap();
    let job = store.create_job(&new_job(&a, Some(run), 102)).unwrap();
    let j = store.get_job(job).unwrap().unwrap();
    assert_eq!(j.phase, Phase::Pending);
    assert_eq!(j.run_id, Some(run));
    assert_eq!(j.action, Ref::new("core", "build"));
    assert_eq!(j.service, Some(Ref::new("core", "build")));
    assert_eq!(j.spec().unwrap(), a, "the action snapshot round-trips");
    assert_eq!((j.attempt, j.created_at_ms, j.pid), (1, 102, None));

    store.mark_job_running(job, 4242, Some(987_654_321), 103).unwrap();
    let j = store.get_job(job).unwrap().unwrap();
    assert_eq!(
        (j.phase, j.pid, j.pid_start_ticks, j.started_at_ms),
        (Phase::Running, Some(4242), Some(987_654_321), Some(103))
    );

    let e = JobExit {
        phase: Phase::Failed,
        exit_code: None,
        signal: Some(9),
        error: Some("spawn failed: No such file or directory (os error 2)".into()),
        finished_at_ms: 104,
    };
    store.finish_job(job, &e).unwrap();
    let j = store.get_job(job).unwrap().unwrap();
    assert_eq!((j.phase, j.exit_code, j.signal, j.finished_at_ms), (Phase::Failed, None, Some(9), Some(104)));
    assert_eq!(j.error.as_deref(), e.error.as_deref());

    store.set_run_phase(run, Phase::Failed, 105).unwrap();
    let r = store.get_run(run).unwrap().unwrap();
    assert_eq!((r.phase, r.finished_at_ms), (Phase::Failed, Some(105)));
    // Same final phase again: no-op. Another one: refused.
    store.set_run_phase(run, Phase::Failed, 106).unwrap();
    assert!(matches!(store.set_run_phase(run, Phase::Succeeded, 107), Err(StoreError::InvalidState { .. })));
    assert!(matches!(store.set_run_phase(RunId(9999), Phase::Running, 1), Err(StoreError::NotFound { .. })));

    // A run recorded with its jobs is created running, in one statement; never finished.
    let running = store.transaction(|tx| tx.create_running_run("submitted", 200)).unwrap();
    assert_eq!(
        store.get_run(running).unwrap().unwrap(),
        Run { id: running, label: "submitted".into(), phase: Phase::Running, created_at_ms: 200, finished_at_ms: None }
    );
}

#[test]
fn job_transitions_are_checked() {
    let (_t, store) = open();
    let a = action("core", "x");
    let id = store.create_job(&new_job(&a, None, 1)).unwrap();
    // Not final.
    let err = store.finish_job(id, &JobExit { phase: Phase::Running, ..exit(Phase::Succeeded, 2) }).unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    // A pending job can be cancelled directly.
    store.finish_job(id, &exit(Phase::Cancelled, 2)).unwrap();
    let err = store.finish_job(id, &exit(Phase::Succeeded, 3)).unwrap_err();
    assert!(err.to_string().contains("already cancelled"), "{err}");
    assert!(matches!(store.mark_job_running(id, 1, None, 4), Err(StoreError::InvalidState { .. })));
    assert!(matches!(store.mark_job_running(JobId(777), 1, None, 4), Err(StoreError::NotFound { .. })));
    assert!(matches!(store.finish_job(JobId(777), &exit(Phase::Failed, 4)), Err(StoreError::NotFound { .. })));
    // History stays as it was.
    assert_eq!(store.get_job(id).unwrap().unwrap().finished_at_ms, Some(2));

    // Started and finished in one statement: only from pending, only to a final phase.
    let quick = store.create_job(&new_job(&a, None, 10)).unwrap();
    let err = store
        .transaction(|tx| {
            tx.finish_started_job(
                quick,
                9,
                Some(77),
                11,
                &JobExit { phase: Phase::Running, ..exit(Phase::Succeeded, 12) },
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    let ended = JobExit { exit_code: Some(3), ..exit(Phase::Failed, 12) };
    store.transaction(|tx| tx.finish_started_job(quick, 9, Some(77), 11, &ended)).unwrap();
    let j = store.get_job(quick).unwrap().unwrap();
    assert_eq!(
        (j.phase, j.pid, j.pid_start_ticks, j.started_at_ms, j.exit_code, j.finished_at_ms),
        (Phase::Failed, Some(9), Some(77), Some(11), Some(3), Some(12))
    );
    let err = store.transaction(|tx| tx.finish_started_job(quick, 9, None, 13, &ended)).unwrap_err();
    assert!(err.to_string().contains("already failed"), "{err}");
    let err = store.transaction(|tx| tx.finish_started_job(JobId(777), 9, None, 13, &ended)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

#[test]
fn list_jobs_filters_and_pages_newest_first() {
    let (_t, store) = open();
    let web = action("core", "web");
    let api = action("core", "api");
    let run = store.create_run("r", 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        let a = if i % 2 == 0 { &web } else { &api };
        let id = store.create_job(&new_job(a, (i % 3 == 0).then_some(run), i)).unwrap();
        if i % 5 != 0 {
            store.mark_job_running(id, 100 + i as u32, None, i).unwrap();
        }
        if i % 5 == 1 {
            store.finish_job(id, &exit(Phase::Succeeded, i)).unwrap();
        }
        ids.push(id);
    }
    let all = store.list_jobs(&JobFilter { limit: 100, ..Default::default() }).unwrap();
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");

    let page1 = store.list_jobs(&JobFilter { limit: 10, ..Default::default() }).unwrap();
    let page2 = store.list_jobs(&JobFilter { limit: 10, before_id: Some(page1[9].id), ..Default::default() }).unwrap();
    assert_eq!(page2[0].id.0, page1[9].id.0 - 1);

    let pending = store.list_jobs(&JobFilter { phase: Some(Phase::Pending), ..Default::default() }).unwrap();
    assert_eq!(pending.len(), 6);
    assert!(pending.iter().all(|j| j.phase == Phase::Pending));

    let web_jobs =
        store.list_jobs(&JobFilter { service: Some(Ref::new("core", "web")), ..Default::default() }).unwrap();
    assert_eq!(web_jobs.len(), 15);
    let in_run = store.list_jobs(&JobFilter { run_id: Some(run), ..Default::default() }).unwrap();
    assert_eq!(in_run.len(), 10);
    let combo = store
        .list_jobs(&JobFilter {
            phase: Some(Phase::Running),
            service: Some(Ref::new("core", "api")),
            run_id: Some(run),
            limit: 100,
            before_id: None,
        })
        .unwrap();
    assert!(combo.iter().all(|j| j.phase == Phase::Running && j.action.name == "api" && j.run_id == Some(run)));
    assert_eq!(combo.len(), 3); // i = 3, 9, 27 (15 and 21 are pending or succeeded)

    let active = store.active_jobs().unwrap();
    assert!(active.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(active.iter().all(|j| !j.phase.is_terminal()));
    let counts = store.job_counts_by_phase().unwrap();
    assert_eq!(counts.pending, 6);
    assert_eq!(counts.succeeded, 6);
    assert_eq!(counts.running, 18);
    assert_eq!(counts.total(), 30);
    assert_eq!(active.len() as u64, counts.pending + counts.running);
}

#[test]
fn transaction_rolls_back_everything_on_error() {
    let (_t, store) = open();
    store.put_action(&action("core", "keep"), &Origin::git("r0")).unwrap();
    let secret = SecretRecord {
        context: "core".into(),
        name: "tok".into(),
        ciphertext: vec![1],
        fingerprint: "f".into(),
        source: "rpc".into(),
    };
    let err = store
        .transaction(|tx| {
            tx.put_action(&action("core", "new"), &Origin::git("r1"))?;
            tx.put_service(&service("core", "new", "start"), &Origin::git("r1"))?;
            assert!(tx.delete_action("core", "keep")?);
            tx.put_secret(&secret, &Origin::git("r1"))?;
            tx.set_sync_state(&SyncState { applied_revision: Some("r1".into()), ..Default::default() })?;
            // Reads inside the transaction see its writes.
            assert!(tx.get_action("core", "new")?.is_some());
            assert!(tx.get_action("core", "keep")?.is_none());
            // The reconciler's check fails half-way: nothing may stay applied.
            tx.finish_job(JobId(12345), &exit(Phase::Failed, 0))?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(store.get_action("core", "new").unwrap().is_none());
    assert!(store.get_service("core", "new").unwrap().is_none());
    assert!(store.get_action("core", "keep").unwrap().is_some());
    assert!(store.list_secrets().unwrap().is_empty());
    assert_eq!(store.sync_state().unwrap(), SyncState::default());
}

#[test]
fn transaction_with_own_error_type_and_panic_roll_back() {
    let (_t, store) = open();
    #[derive(Debug)]
    #[allow(dead_code)] // fields are read through Debug
    enum PlanError {
        Store(StoreError),
        Refused(&'static str),
    }
    impl From<StoreError> for PlanError {
        fn from(e: StoreError) -> Self {
            PlanError::Store(e)
        }
    }
    let r: Result<(), PlanError> = store.transaction_with(|tx| {
        tx.put_action(&action("core", "a"), &Origin::git("r1"))?;
        Err(PlanError::Refused("stops required service hero_db"))
    });
    assert!(matches!(r, Err(PlanError::Refused(_))));
    assert!(store.list_actions().unwrap().is_empty());

    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.transaction(|tx| {
            tx.put_action(&action("core", "b"), &Origin::manual())?;
            panic!("bug in the reconciler");
            #[allow(unreachable_code)]
            Ok(())
        });
    }));
    assert!(caught.is_err());
    // The store is usable after the panic and the write was rolled back.
    assert!(store.list_actions().unwrap().is_empty());
    store.put_action(&action("core", "c"), &Origin::manual()).unwrap();
    assert_eq!(store.list_actions().unwrap().len(), 1);
}

#[test]
fn store_is_shared_across_threads() {
    let (_t, store) = open();
    let store = std::sync::Arc::new(store);
    let a = action("core", "t");
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let id = store.create_job(&new_job(&a, None, t * 1000 + i)).unwrap();
                    store.finish_job(id, &exit(Phase::Succeeded, t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.job_counts_by_phase().unwrap().succeeded, 400);
}
