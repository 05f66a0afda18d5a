//! The pure part of runs: readiness by `depends_on`, cancellation, the outcome.

use super::*;

fn action(name: &str) -> Action {
    crate::test_action(name, Default::default(), "true")
}

/// a; b after a; c after b; d alone.
fn chain() -> LiveRun {
    let mut run = LiveRun::default();
    run.pending.push((JobId(1), action("a"), vec![]));
    run.pending.push((JobId(2), action("b"), vec![JobId(1)]));
    run.pending.push((JobId(3), action("c"), vec![JobId(2)]));
    run.pending.push((JobId(4), action("d"), vec![]));
    run
}

fn ids(ready: &[(JobId, Action)]) -> Vec<i64> {
    ready.iter().map(|(j, _)| j.0).collect()
}

/// The runner's part: start what is ready, then report each as done.
fn start(run: &mut LiveRun, a: &Advance) {
    for (j, _) in &a.ready {
        run.running.insert(*j);
    }
}

fn finish(run: &mut LiveRun, job: i64, ok: bool) {
    run.running.remove(&JobId(job));
    run.done.insert(JobId(job), ok);
}

#[test]
fn jobs_start_when_what_they_depend_on_succeeded() {
    let mut run = chain();
    let a = run.advance();
    assert_eq!(ids(&a.ready), vec![1, 4]);
    assert!(a.doomed.is_empty());
    start(&mut run, &a);
    assert!(run.advance().ready.is_empty(), "b waits for a");
    finish(&mut run, 1, true);
    let a = run.advance();
    assert_eq!(ids(&a.ready), vec![2]);
    start(&mut run, &a);
    finish(&mut run, 2, true);
    finish(&mut run, 4, true);
    let a = run.advance();
    assert_eq!(ids(&a.ready), vec![3]);
    start(&mut run, &a);
    assert_eq!(run.outcome(), None);
    finish(&mut run, 3, true);
    assert!(run.advance().ready.is_empty());
    assert_eq!(run.outcome(), Some(Phase::Succeeded));
}

#[test]
fn a_failure_dooms_what_depends_on_it_transitively() {
    let mut run = chain();
    let a = run.advance();
    start(&mut run, &a);
    finish(&mut run, 1, false);
    let a = run.advance();
    assert_eq!(a.doomed, vec![JobId(2)]);
    // c depended on b, now doomed too.
    let a = run.advance();
    assert_eq!(a.doomed, vec![JobId(3)]);
    assert_eq!(run.outcome(), None, "d still runs");
    finish(&mut run, 4, true);
    assert_eq!(run.outcome(), Some(Phase::Failed));
}

#[test]
fn cancel_dooms_every_pending_job_and_the_run_ends_cancelled() {
    let mut run = chain();
    let a = run.advance();
    start(&mut run, &a);
    run.cancelled = true;
    let a = run.advance();
    assert_eq!(a.doomed, vec![JobId(2), JobId(3)]);
    assert!(a.ready.is_empty());
    assert_eq!(run.outcome(), None, "the running jobs are being stopped");
    finish(&mut run, 1, false);
    finish(&mut run, 4, true);
    assert_eq!(run.outcome(), Some(Phase::Cancelled));
}

#[test]
fn an_empty_step_changes_nothing() {
    let mut run = LiveRun::default();
    let a = run.advance();
    assert!(a.ready.is_empty() && a.doomed.is_empty());
    assert_eq!(run.outcome(), Some(Phase::Succeeded));
}
