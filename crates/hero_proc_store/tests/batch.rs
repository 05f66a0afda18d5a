//! Batches: one thread's writes share one transaction, read their own writes, and stay
//! invisible to other threads until the commit.

use std::sync::Arc;
use std::time::Duration;

use hero_proc_store::{Origin, Phase, StoreError};

use crate::support::*;

#[test]
fn a_batch_is_one_transaction_that_its_thread_reads_and_others_see_only_once_committed() {
    let (_t, store) = open();
    let store = Arc::new(store);
    let a = action("core", "a");
    let batch = store.begin_batch().unwrap();
    let run = store.create_run("r", 1).unwrap();
    let jobs: Vec<_> = (0..50).map(|i| store.create_job(&new_job(&a, Some(run), i)).unwrap()).collect();
    // This thread reads what its batch wrote (through the read methods, not a `Tx`).
    assert_eq!(store.get_job(jobs[49]).unwrap().expect("own write").run_id, Some(run));
    // Another thread reads the state before the batch.
    let other = store.clone();
    let seen = std::thread::spawn(move || other.get_run(run).unwrap()).join().unwrap();
    assert!(seen.is_none(), "a batch's writes are invisible until its commit: {seen:?}");
    // Another thread's write waits for the batch, then goes through.
    let other = store.clone();
    let waiting = std::thread::spawn(move || other.create_run("after", 2).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished(), "a write of another thread waits for the open batch");
    batch.commit().unwrap();
    let after = waiting.join().unwrap();
    assert!(after.0 > run.0);
    let other = store.clone();
    let n = std::thread::spawn(move || other.get_run(run).unwrap().map(|r| r.id)).join().unwrap();
    assert_eq!(n, Some(run));
    assert_eq!(store.list_jobs(&Default::default()).unwrap().len(), 50);
}

#[test]
fn a_failing_write_in_a_batch_undoes_only_itself_and_a_dropped_batch_undoes_all() {
    let (_t, store) = open();
    let a = action("core", "a");
    let batch = store.begin_batch().unwrap();
    store.put_action(&a, &Origin::manual()).unwrap();
    let r: Result<(), StoreError> = store.transaction(|tx| {
        tx.put_action(&action("core", "b"), &Origin::manual())?;
        Err(StoreError::InvalidState { path: "test".into(), what: "refused".into() })
    });
    assert!(r.is_err());
    // An inner batch joins the outer one: its commit does nothing on its own.
    let inner = store.begin_batch().unwrap();
    store.put_action(&action("core", "c"), &Origin::manual()).unwrap();
    inner.commit().unwrap();
    batch.commit().unwrap();
    let names: Vec<String> = store.list_actions().unwrap().into_iter().map(|s| s.value.name).collect();
    assert_eq!(names, ["a", "c"], "the failed write's row is gone, the others stay");

    let batch = store.begin_batch().unwrap();
    let run = store.create_run("dropped", 1).unwrap();
    store.set_run_phase(run, Phase::Running, 2).unwrap();
    drop(batch);
    assert!(store.get_run(run).unwrap().is_none(), "a batch dropped without commit rolls back");
    // The writer is back: writes go on as before.
    store.create_run("next", 3).unwrap();
}

#[test]
fn the_actions_generation_moves_with_every_committed_action_write_and_only_then() {
    let (_t, store) = open();
    let g0 = store.actions_generation();
    store.put_action(&action("core", "a"), &Origin::manual()).unwrap();
    let g1 = store.actions_generation();
    assert!(g1 > g0, "a put moves it");
    store.create_run("r", 1).unwrap();
    assert_eq!(store.actions_generation(), g1, "a write to another table does not");
    assert!(store.get_action("core", "a").unwrap().is_some());
    assert_eq!(store.actions_generation(), g1, "a read does not");
    store.delete_action("core", "a").unwrap();
    let g2 = store.actions_generation();
    assert!(g2 > g1, "a delete moves it");
    // Inside a batch: at the write (this thread reads it at once) and at the commit.
    let batch = store.begin_batch().unwrap();
    store.put_action(&action("core", "b"), &Origin::manual()).unwrap();
    let g3 = store.actions_generation();
    assert!(g3 > g2);
    batch.commit().unwrap();
    assert!(store.actions_generation() > g3, "the commit moves it again");
}
