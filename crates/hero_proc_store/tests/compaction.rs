//! Retention and compaction (SPEC 5.5, issue #131).

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use hero_proc_store::*;
use serde_json::json;

const NOW: i64 = 1_780_000_000_000;

fn cap(n: u64) -> Retention {
    Retention { max_age_days: None, max_rows_per_table: Some(n) }
}

fn age(days: u64) -> Retention {
    Retention { max_age_days: Some(days), max_rows_per_table: None }
}

fn all_jobs(store: &Store) -> Vec<Job> {
    store.list_jobs(&JobFilter { limit: u32::MAX, ..Default::default() }).unwrap()
}

/// Runs and their jobs: a run must keep all of its jobs or lose them all with itself.
fn runs_with_jobs(store: &Store) -> BTreeMap<RunId, BTreeSet<JobId>> {
    let mut m: BTreeMap<RunId, BTreeSet<JobId>> =
        store.list_runs(u32::MAX, None).unwrap().into_iter().map(|r| (r.id, BTreeSet::new())).collect();
    for j in all_jobs(store) {
        if let Some(r) = j.run_id {
            m.get_mut(&r).expect("a job whose run is gone").insert(j.id);
        }
    }
    m
}

fn assert_runs_whole(before: &BTreeMap<RunId, BTreeSet<JobId>>, after: &BTreeMap<RunId, BTreeSet<JobId>>) {
    for (run, jobs) in after {
        assert_eq!(jobs, &before[run], "run {run} kept only part of its jobs");
    }
}

#[test]
fn row_cap_keeps_the_newest_and_reports_deletions() {
    let (_t, store) = open();
    let ids = finished_jobs(&store, 600, NOW - 1000, Phase::Succeeded);
    let r = store.compact(&cap(100), NOW).unwrap();
    assert_eq!(r.jobs_deleted, 500);
    assert_eq!(r.runs_deleted, 0);
    let left: Vec<JobId> = all_jobs(&store).into_iter().map(|j| j.id).rev().collect();
    assert_eq!(left, ids[500..], "the 100 newest stay");
    let mut deleted = r.deleted_job_ids.clone();
    deleted.sort();
    assert_eq!(deleted, ids[..500], "deleted_job_ids names exactly the deleted jobs");
    assert_eq!(store.job_counts_by_phase().unwrap().total(), 100);
    // Idempotent: nothing more to do.
    let again = store.compact(&cap(100), NOW).unwrap();
    assert_eq!(again.rows_deleted(), 0);
    assert!(again.deleted_job_ids.is_empty());
}

#[test]
fn active_jobs_are_never_deleted_even_when_old_and_over_the_cap() {
    let (_t, store) = open();
    let a = action("core", "svc");
    // Very old pending and running jobs, before everything else.
    let mut active = Vec::new();
    for i in 0..40 {
        let id = store.create_job(&new_job(&a, None, i)).unwrap();
        if i % 2 == 0 {
            store.mark_job_running(id, 10_000 + i as u32, Some(5), i).unwrap();
        }
        active.push(id);
    }
    let run = store.create_run("long", 0).unwrap();
    store.set_run_phase(run, Phase::Running, 0).unwrap();
    let in_run = store.create_job(&new_job(&a, Some(run), 0)).unwrap();
    active.push(in_run);
    finished_jobs(&store, 300, 0, Phase::Failed);

    let r = store.compact(&Retention { max_age_days: Some(1), max_rows_per_table: Some(5) }, NOW).unwrap();
    assert_eq!(r.jobs_deleted, 300, "every finished job goes, no active one");
    assert_eq!(r.runs_deleted, 0);
    let left: Vec<JobId> = store.active_jobs().unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(left, active);
    assert_eq!(all_jobs(&store).len(), active.len(), "active rows stay even above the cap");
    assert!(store.get_run(run).unwrap().is_some());

    // Once they finish (long ago), they become candidates.
    for id in &active {
        store.finish_job(*id, &exit(Phase::Cancelled, 10)).unwrap();
    }
    store.set_run_phase(run, Phase::Cancelled, 10).unwrap();
    let r = store.compact(&age(1), NOW).unwrap();
    assert_eq!(r.jobs_deleted, active.len() as u64);
    assert_eq!(r.runs_deleted, 1);
    assert!(all_jobs(&store).is_empty());
}

#[test]
fn age_limit_deletes_only_old_finished_history() {
    let (_t, store) = open();
    let old = finished_jobs(&store, 100, NOW - 40 * DAY_MS, Phase::Succeeded);
    let recent = finished_jobs(&store, 50, NOW - 10 * DAY_MS, Phase::Failed);
    let r = store.compact(&age(30), NOW).unwrap();
    assert_eq!(r.jobs_deleted, 100);
    let mut deleted = r.deleted_job_ids;
    deleted.sort();
    assert_eq!(deleted, old);
    let left: Vec<JobId> = all_jobs(&store).into_iter().map(|j| j.id).rev().collect();
    assert_eq!(left, recent);
    // Age counts from the finish, not the creation: a long job created long ago but
    // finished yesterday stays.
    let a = action("core", "long");
    let id = store.create_job(&new_job(&a, None, NOW - 90 * DAY_MS)).unwrap();
    store.finish_job(id, &exit(Phase::Succeeded, NOW - DAY_MS)).unwrap();
    assert_eq!(store.compact(&age(30), NOW).unwrap().jobs_deleted, 0);
}

/// Builds runs covering every case of "a run goes only with all its jobs".
fn build_runs(store: &Store) -> (RunId, RunId, RunId, RunId) {
    let a = action("core", "step");
    store
        .transaction(|tx| {
            let t = NOW - 100 * DAY_MS;
            // Finished run, all jobs finished: may go (with all 3 jobs).
            let done = tx.create_run("done", t)?;
            for _ in 0..3 {
                let j = tx.create_job(&new_job(&a, Some(done), t))?;
                tx.finish_job(j, &exit(Phase::Succeeded, t))?;
            }
            tx.set_run_phase(done, Phase::Succeeded, t)?;
            // Still running, two old finished jobs and one running: stays whole.
            let running = tx.create_run("running", t)?;
            tx.set_run_phase(running, Phase::Running, t)?;
            for k in 0..3 {
                let j = tx.create_job(&new_job(&a, Some(running), t))?;
                tx.mark_job_running(j, 1, None, t)?;
                if k < 2 {
                    tx.finish_job(j, &exit(Phase::Succeeded, t))?;
                }
            }
            // Marked finished but one job still running (the engine has not reaped it yet):
            // stays whole.
            let lagging = tx.create_run("lagging", t)?;
            let j = tx.create_job(&new_job(&a, Some(lagging), t))?;
            tx.mark_job_running(j, 2, None, t)?;
            let j = tx.create_job(&new_job(&a, Some(lagging), t))?;
            tx.finish_job(j, &exit(Phase::Failed, t))?;
            tx.set_run_phase(lagging, Phase::Failed, t)?;
            // A finished run without jobs.
            let empty = tx.create_run("empty", t)?;
            tx.set_run_phase(empty, Phase::Cancelled, t)?;
            Ok((done, running, lagging, empty))
        })
        .unwrap()
}

#[test]
fn a_run_goes_only_with_all_its_jobs_by_age() {
    let (_t, store) = open();
    let (done, running, lagging, empty) = build_runs(&store);
    let before = runs_with_jobs(&store);
    let r = store.compact(&age(30), NOW).unwrap();
    assert_eq!(r.runs_deleted, 2, "{r:?}");
    assert_eq!(r.jobs_deleted, 3);
    let after = runs_with_jobs(&store);
    assert_runs_whole(&before, &after);
    assert!(!after.contains_key(&done) && !after.contains_key(&empty));
    assert!(after.contains_key(&running) && after.contains_key(&lagging));
    let mut deleted = r.deleted_job_ids;
    deleted.sort();
    assert_eq!(deleted, before[&done].iter().copied().collect::<Vec<_>>());
}

#[test]
fn a_run_goes_only_with_all_its_jobs_by_count() {
    let (_t, store) = open();
    build_runs(&store);
    // Many finished runs of 4 jobs each, then loose jobs: the job cap cuts through runs.
    let a = action("core", "step");
    store
        .transaction(|tx| {
            for i in 0..50 {
                let run = tx.create_run("batch", NOW - i)?;
                for _ in 0..4 {
                    let j = tx.create_job(&new_job(&a, Some(run), NOW))?;
                    tx.finish_job(j, &exit(Phase::Succeeded, NOW))?;
                }
                tx.set_run_phase(run, Phase::Succeeded, NOW)?;
            }
            Ok(())
        })
        .unwrap();
    finished_jobs(&store, 30, NOW, Phase::Succeeded);
    let before = runs_with_jobs(&store);
    let total = all_jobs(&store).len();
    // 239 jobs, cap 101: whole runs go from the oldest until at most ~101 jobs are left.
    let r = store.compact(&cap(101), NOW).unwrap();
    let after = runs_with_jobs(&store);
    assert_runs_whole(&before, &after);
    let left = all_jobs(&store).len();
    assert_eq!(left as u64, total as u64 - r.jobs_deleted);
    assert!((97..=101).contains(&left), "about the cap is left: {left}");
    // The run cap applies to runs the same way.
    let r = store.compact(&cap(10), NOW).unwrap();
    let after2 = runs_with_jobs(&store);
    assert_runs_whole(&after, &after2);
    assert!(after2.len() <= 10 + 2, "the two active runs may stay on top: {}", after2.len());
    assert!(r.runs_deleted > 0);
}

#[test]
fn file_shrinks_in_the_same_cycle() {
    let (t, store) = open();
    let mut a = action("core", "big");
    a.script = "x".repeat(2000); // ~2.5 KB snapshots, like real actions with long env
    store
        .transaction(|tx| {
            for i in 0..5000 {
                let j = tx.create_job(&NewJob { service: None, ..new_job(&a, None, i) })?;
                tx.finish_job(j, &exit(Phase::Succeeded, i))?;
            }
            Ok(())
        })
        .unwrap();
    let before = store.db_stats().unwrap();
    let r = store.compact(&cap(100), NOW).unwrap();
    let after = store.db_stats().unwrap();
    assert_eq!(r.jobs_deleted, 4900);
    assert!(r.batches >= 3, "deletion is batched: {r:?}");
    assert!(r.checkpoint_complete);
    assert_eq!(after.freelist_count, 0, "incremental_vacuum returned every free page");
    assert_eq!(after.wal_bytes, 0, "the WAL was truncated");
    assert!(r.bytes_after * 10 < r.bytes_before, "file must shrink by > 90%: {} -> {}", r.bytes_before, r.bytes_after);
    assert_eq!(r.bytes_reclaimed, r.bytes_before - r.bytes_after);
    assert!(after.size_bytes * 10 < before.size_bytes);
    let on_disk = std::fs::metadata(&t.path).unwrap().len();
    assert_eq!(on_disk, after.size_bytes, "the file itself is truncated");
}

#[test]
fn freed_pages_from_config_deletes_are_reclaimed_too() {
    // The burst of the issue: thousands of leaked actions deleted by hand.
    let (_t, store) = open();
    store
        .transaction(|tx| {
            for i in 0..3000 {
                tx.put_action(&action("core", &format!("sched-{i}")), &Origin::manual())?;
            }
            Ok(())
        })
        .unwrap();
    store
        .transaction(|tx| {
            for i in 0..3000 {
                tx.delete_action("core", &format!("sched-{i}"))?;
            }
            Ok(())
        })
        .unwrap();
    assert!(store.db_stats().unwrap().freelist_count > 100);
    let r = store.compact(&Retention::default(), NOW).unwrap();
    assert_eq!(r.rows_deleted(), 0);
    assert_eq!(r.freelist_after, 0);
    assert!(r.bytes_after * 3 < r.bytes_before, "{r:?}");
}

#[test]
fn large_compactions_analyze() {
    let (_t, store) = open();
    finished_jobs(&store, 10_100, 0, Phase::Succeeded);
    let r = store.compact(&cap(50), NOW).unwrap();
    assert_eq!(r.jobs_deleted, 10_050);
    assert!(r.analyzed);
    let small = finished_jobs(&store, 200, 0, Phase::Succeeded);
    let r = store.compact(&cap(50), NOW).unwrap();
    assert_eq!(r.jobs_deleted, small.len() as u64);
    assert!(!r.analyzed);
}

#[test]
fn sync_history_is_compacted_but_the_live_revision_stays() {
    let (_t, store) = open();
    let rec = |i: i64, result| SyncRecord {
        revision: format!("rev{i}"),
        author: None,
        committed_at_ms: None,
        applied_at_ms: NOW - 60 * DAY_MS + i,
        summary: json!({"n": i}),
        result,
        error: None,
    };
    store
        .transaction(|tx| {
            tx.record_sync(&rec(0, SyncResult::Applied))?;
            for i in 1..300 {
                tx.record_sync(&rec(i, SyncResult::Noop))?;
            }
            Ok(())
        })
        .unwrap();
    let r = store.compact(&cap(50), NOW).unwrap();
    assert_eq!(r.history_deleted, 250);
    let h = store.history(1000).unwrap();
    assert_eq!(h.len(), 50);
    assert!(h.iter().any(|e| e.record.revision == "rev0"), "the live revision's entry stays");
    // All of it is older than 30 days: everything but the live entry goes.
    let r = store.compact(&age(30), NOW).unwrap();
    assert_eq!(r.history_deleted, 49);
    let h = store.history(1000).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].record.revision, "rev0");
}

#[test]
fn writers_keep_working_during_a_compaction() {
    let (_t, store) = open();
    finished_jobs(&store, 8000, 0, Phase::Succeeded);
    let store = std::sync::Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let a = action("core", "live");
            let mut n = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while std::time::Instant::now() < deadline {
                let id = store.create_job(&new_job(&a, None, NOW)).unwrap();
                store.mark_job_running(id, 1, None, NOW).unwrap();
                n += 1;
            }
            n
        })
    };
    let r = store.compact(&cap(100), NOW).unwrap();
    let written = writer.join().unwrap();
    assert!(written > 0);
    assert!(r.jobs_deleted >= 7900 - 100, "{}", r.jobs_deleted);
    // Every job the writer created is still there and running.
    assert_eq!(store.job_counts_by_phase().unwrap().running, written);
}

/// The store's `None` (no limit) is what its API offers; what `hero.yaml` can say is
/// checked separately below, since the schema refuses `0` there.
#[test]
fn no_limits_means_no_deletion() {
    let (_t, store) = open();
    finished_jobs(&store, 100, 0, Phase::Succeeded);
    let r = store.compact(&Retention { max_age_days: None, max_rows_per_table: None }, NOW).unwrap();
    assert_eq!(r.rows_deleted(), 0);
    assert_eq!(all_jobs(&store).len(), 100);
    // The same rows under a limit do go, so the zero above is the limit being off.
    let r = store.compact(&cap(10), NOW).unwrap();
    assert_eq!(r.jobs_deleted, 90);
}

/// Loads `hero.yaml` with the real loader: the retention it yields and its diagnostics.
fn hero_yaml_retention(text: &str) -> (Retention, Vec<hero_proc_spec::Diagnostic>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hero.yaml"), text).unwrap();
    let mut diags = hero_proc_spec::Diagnostics::new();
    let tree = hero_proc_spec::load::load(&hero_proc_spec::DirSource::new(dir.path()), &mut diags);
    (Retention::from(&tree.settings.retention), diags.finish())
}

#[test]
fn hero_yaml_retention_reaches_the_store_and_refuses_zero() {
    let (r, diags) = hero_yaml_retention("retention: { max_age_days: 7, max_rows_per_table: 100 }\n");
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(r, Retention { max_age_days: Some(7), max_rows_per_table: Some(100) });
    // Unset keeps the built-in limits: never "no limit".
    let (r, _) = hero_yaml_retention("retention: { compact_every: 10m }\n");
    assert_eq!(r, Retention { max_age_days: Some(30), max_rows_per_table: Some(100_000) });
    // `0` cannot switch a limit off from git: it is refused, saying which field and why.
    for field in ["max_age_days", "max_rows_per_table"] {
        let (_, diags) = hero_yaml_retention(&format!("retention: {{ {field}: 0 }}\n"));
        let d = diags
            .iter()
            .find(|d| d.code == "settings.retention")
            .unwrap_or_else(|| panic!("{field}: 0 accepted: {diags:?}"));
        assert!(d.message.contains(field) && d.message.contains("at least 1"), "{}", d.message);
    }
}

fn counts_match(path: &std::path::Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    for table in ["jobs", "runs", "sync_history"] {
        let kept: i64 = c.query_row("SELECT n FROM row_counts WHERE tbl = ?1", [table], |r| r.get(0)).unwrap();
        let real: i64 = c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
        assert_eq!(kept, real, "row_counts for {table}");
    }
}

#[test]
fn row_counts_stay_exact_and_heal_after_outside_edits() {
    let (t, store) = open();
    build_runs(&store);
    finished_jobs(&store, 700, 0, Phase::Succeeded);
    store.compact(&Retention { max_age_days: Some(30), max_rows_per_table: Some(200) }, NOW).unwrap();
    counts_match(&t.path);
    drop(store);
    // An operator cleans up by hand, as in issue #126: the counts are off until reopened.
    let c = rusqlite::Connection::open(&t.path).unwrap();
    c.execute_batch("DELETE FROM jobs WHERE run_id IS NULL AND id % 2 = 0;").unwrap();
    drop(c);
    let store = Store::open(&t.path).unwrap();
    counts_match(&t.path);
    let left = all_jobs(&store).len() as u64;
    let r = store.compact(&cap(50), NOW).unwrap();
    assert!(all_jobs(&store).len() <= 50 + 5, "{r:?}");
    assert_eq!(r.jobs_deleted, left - all_jobs(&store).len() as u64);
    counts_match(&t.path);
}

/// Reads go to their own connections: a read made while a compaction step holds the
/// writer (inside its write transaction, before the commit) is answered then and there,
/// before that step and the compaction end. With reads behind the writer this would never
/// return (the observer would wait forever; the guard below turns that into a failure).
#[test]
fn reads_are_answered_while_a_compaction_holds_the_writer() {
    let (_t, store) = open();
    let a = action("core", "web");
    let run = store.create_run("kept", NOW).unwrap();
    let kept = store.create_job(&new_job(&a, Some(run), NOW)).unwrap();
    finished_jobs(&store, 3000, 0, Phase::Succeeded);
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (answer, answered) = std::sync::mpsc::channel::<(Option<Job>, usize, Vec<RunWithJobs>)>();
    let store = std::sync::Arc::new(store);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            while asked.recv().is_ok() {
                let job = store.get_job(kept).unwrap();
                let page = store.list_jobs(&JobFilter { limit: 50, ..Default::default() }).unwrap().len();
                let runs = store.list_runs_with_jobs(10, None, 10).unwrap();
                if answer.send((job, page, runs)).is_err() {
                    return;
                }
            }
        })
    };
    let mut seen = Vec::new();
    let r = store
        .compact_observed(&cap(100), NOW, &mut |step| {
            ask.send(()).unwrap();
            // A failure guard only: the answer comes at once unless reads wait for the writer.
            let (job, page, runs) = answered
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("a read made during the {step:?} step was not answered"));
            assert_eq!(job.map(|j| j.phase), Some(Phase::Pending));
            assert_eq!(page, 50);
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![kept]);
            seen.push(step);
        })
        .unwrap();
    drop(ask);
    reader.join().unwrap();
    assert!(r.jobs_deleted >= 2900, "{}", r.jobs_deleted);
    for step in [CompactStep::Batch, CompactStep::Vacuum, CompactStep::Checkpoint] {
        assert!(seen.contains(&step), "no read was made during a {step:?} step: {seen:?}");
    }
}

/// `list_runs_with_jobs` (what `run.list` shows) gives each run of the page its newest
/// jobs, in order, and says which runs have more: the same as one `list_jobs` per run.
#[test]
fn runs_with_jobs_match_one_query_per_run() {
    let (_t, store) = open();
    let a = action("core", "web");
    let mut runs = Vec::new();
    for i in 0..7 {
        let run = store.create_run(&format!("r{i}"), NOW).unwrap();
        for _ in 0..i {
            store.create_job(&new_job(&a, Some(run), NOW)).unwrap();
            // Loose jobs in between must not be counted in any run.
            store.create_job(&new_job(&a, None, NOW)).unwrap();
        }
        runs.push(run);
    }
    for (limit, before, max_jobs) in [(3, None, 2), (10, None, 3), (2, Some(runs[4]), 1), (5, Some(runs[0]), 4)] {
        let got = store.list_runs_with_jobs(limit, before, max_jobs).unwrap();
        let want: Vec<RunWithJobs> = store
            .list_runs(limit, before)
            .unwrap()
            .into_iter()
            .map(|run| {
                let mut jobs = store
                    .list_jobs(&JobFilter { run_id: Some(run.id), limit: max_jobs + 1, ..Default::default() })
                    .unwrap();
                let jobs_more = jobs.len() > max_jobs as usize;
                jobs.truncate(max_jobs as usize);
                jobs.reverse();
                RunWithJobs { run, jobs, jobs_more }
            })
            .collect();
        assert_eq!(got, want, "limit {limit}, before {before:?}, max_jobs {max_jobs}");
    }
}
