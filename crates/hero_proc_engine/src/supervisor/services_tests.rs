//! Transition tests of the service machine: no process, no store, no clock.

use super::*;
use hero_proc_spec::{Dur, Liveness, Named, RestartMode, ServiceStatus};

const T0: i64 = 1_000_000;

/// A clock the tests move by hand.
struct Clock {
    base: Instant,
    ms: i64,
}

impl Clock {
    fn new() -> Clock {
        Clock { base: Instant::now(), ms: T0 }
    }
    fn now(&self) -> Now {
        Now { ms: self.ms, at: self.base + Duration::from_millis((self.ms - T0) as u64) }
    }
    fn advance(&mut self, d: Duration) {
        self.ms += d.as_millis() as i64;
    }
}

/// The sentence status shows for the reason, if any.
fn reason(svc: &Svc) -> Option<String> {
    svc.reason.as_ref().map(Reason::to_string)
}

fn service(steps: usize) -> Svc {
    let spec = Service {
        name: "web".into(),
        context: "core".into(),
        description: None,
        status: ServiceStatus::Start,
        actions: (0..steps).map(|i| Named::new(format!("a{i}"))).collect(),
        requires: Vec::new(),
        after: Vec::new(),
        pos: Default::default(),
    };
    Svc::new(spec, true, T0)
}

fn policy(mode: RestartMode, max_retries: u32) -> Restart {
    Restart { policy: mode, delay: Dur::secs(1), max_delay: Dur::secs(60), max_retries }
}

fn process(mode: RestartMode) -> MainFacts {
    MainFacts { process: true, restart: policy(mode, 0) }
}

fn go(svc: &mut Svc, ev: Event, clock: &Clock) -> Vec<Effect> {
    step(svc, ev, clock.now()).effects
}

fn exit(job: u64, success: bool, main: Option<MainFacts>) -> Event {
    Event::Exited {
        job: JobId(job as i64),
        success,
        text: if success { "exit 0".into() } else { "exit 1".into() },
        main: main.map(Ok),
    }
}

/// Start a one-step service and bring it up with job `job` (no health checks).
fn running(job: u64, clock: &Clock) -> Svc {
    let mut svc = service(1);
    assert_eq!(go(&mut svc, Event::Start, clock), vec![Effect::Begin]);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, clock);
    let fx = go(&mut svc, Event::Spawned { job: JobId(job as i64), pid: 100 + job as u32, probe: true }, clock);
    assert_eq!(fx, vec![Effect::ProbeHealth { generation: svc.generation }]);
    let g = svc.generation;
    go(&mut svc, Event::Health { generation: g, checks: vec![], healthy: true }, clock);
    assert_eq!(svc.state(), ServiceState::Running);
    svc
}

fn count(fx: &[Effect], pred: impl Fn(&Effect) -> bool) -> usize {
    fx.iter().filter(|e| pred(e)).count()
}

#[test]
fn start_begins_then_spawns_the_first_step() {
    let clock = Clock::new();
    let mut svc = service(2);
    let s = step(&mut svc, Event::Start, clock.now());
    assert!(s.acted);
    assert_eq!(s.effects, vec![Effect::Begin]);
    assert!(svc.wanted);
    let fx = go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    assert_eq!(fx, vec![Effect::KillUnknown, Effect::RunStep { step: 0, attempt: 1 }]);
    assert_eq!(svc.life, Life::Starting { step: 0, job: None, main_since: None });
    assert_eq!(svc.generation, 1);
}

#[test]
fn begin_with_missing_dependencies_waits_and_says_for_what() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    let fx = go(&mut svc, Event::Begin { waiting_for: vec!["core/db".into(), "core/x (not defined)".into()] }, &clock);
    assert!(fx.is_empty());
    assert_eq!(svc.state(), ServiceState::Waiting);
    assert_eq!(reason(&svc).as_deref(), Some("waiting for core/db, core/x (not defined)"));
    // A second start while waiting does nothing.
    assert!(!step(&mut svc, Event::Start, clock.now()).acted);
}

#[test]
fn pre_actions_run_in_order_then_the_main_process_is_probed() {
    let clock = Clock::new();
    let mut svc = service(2);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    // A pre-action is not probed even if it is a process.
    assert!(go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: true }, &clock).is_empty());
    let fx = go(&mut svc, exit(1, true, None), &clock);
    assert_eq!(fx, vec![Effect::RunStep { step: 1, attempt: 1 }]);
    let fx = go(&mut svc, Event::Spawned { job: JobId(2), pid: 12, probe: true }, &clock);
    assert_eq!(fx, vec![Effect::ProbeHealth { generation: 1 }]);
    let snap = svc.snapshot();
    assert_eq!((snap.pid, snap.job_id, snap.state), (Some(12), Some(2), ServiceState::Starting));
}

#[test]
fn a_failed_pre_action_fails_the_service() {
    let clock = Clock::new();
    let mut svc = service(2);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: false }, &clock);
    let fx = go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("pre-start action `a0` failed: exit 1"));
    assert_eq!(count(&fx, |e| matches!(e, Effect::Log { level: Level::Error, .. })), 1);
    assert!(fx.contains(&Effect::WakeWaiters));
    assert_eq!(svc.snapshot().pid, None);
}

#[test]
fn a_one_shot_main_that_succeeds_is_exited() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    assert!(go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: false }, &clock).is_empty());
    let fx = go(&mut svc, exit(1, true, Some(MainFacts { process: false, restart: Restart::default() })), &clock);
    assert_eq!(fx, vec![Effect::WakeWaiters]);
    assert_eq!(svc.state(), ServiceState::Exited);
    assert!(svc.state().is_active());
}

#[test]
fn start_is_a_no_op_while_it_runs_starts_or_backs_off() {
    let mut clock = Clock::new();
    let mut svc = running(1, &clock);
    assert!(!step(&mut svc, Event::Start, clock.now()).acted);
    go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert_eq!(svc.state(), ServiceState::Backoff);
    clock.advance(Duration::from_millis(10));
    let s = step(&mut svc, Event::Start, clock.now());
    assert!(!s.acted && s.effects.is_empty());
}

#[test]
fn stop_signals_the_job_and_settles_inactive_on_its_exit() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    let s = step(&mut svc, Event::Stop, clock.now());
    assert!(s.acted);
    assert_eq!(s.effects, vec![Effect::StopJob { job: JobId(1), step: 0 }]);
    assert_eq!(svc.life, Life::Stopping { job: JobId(1), pid: 101, step: 0, then: Then::Stop });
    assert_eq!(svc.snapshot().pid, Some(101));
    let fx = go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(fx, vec![Effect::WakeWaiters]);
    assert_eq!(svc.state(), ServiceState::Inactive);
    assert!(!svc.wanted);
    assert_eq!(svc.restarts, 0);
}

#[test]
fn stop_when_not_running_answers_false_except_from_waiting_or_backoff() {
    let mut clock = Clock::new();
    let mut svc = service(1);
    assert!(!step(&mut svc, Event::Stop, clock.now()).acted);
    svc.life = Life::Failed;
    svc.reason = Some(Reason::Exited { exit: "exit 1".into() });
    assert!(!step(&mut svc, Event::Stop, clock.now()).acted);
    assert_eq!(svc.state(), ServiceState::Inactive, "a stop clears a failure");
    assert_eq!(svc.reason, None);
    let mut svc = running(1, &clock);
    go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    let g = svc.generation;
    assert!(step(&mut svc, Event::Stop, clock.now()).acted);
    assert_eq!(svc.state(), ServiceState::Inactive);
    assert_eq!(svc.reason, None);
    // The backoff timer that was armed is now stale.
    clock.advance(Duration::from_secs(2));
    assert!(go(&mut svc, Event::BackoffDone { generation: g }, &clock).is_empty());
    assert_eq!(svc.state(), ServiceState::Inactive);
}

#[test]
fn a_stop_racing_a_crash_stays_stopped() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, Event::Stop, &clock);
    // The process crashed at the moment the stop was sent: its exit is a failure, but
    // the stop decides.
    let fx = go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert_eq!(fx, vec![Effect::WakeWaiters]);
    assert_eq!(svc.state(), ServiceState::Inactive);
    assert_eq!(svc.failures, 0);
    assert_eq!(svc.last_exit.as_deref(), Some("exit 1"));
}

#[test]
fn a_start_while_a_stop_is_under_way_starts_again_once_stopped() {
    // `service stop web; service start web` back to back: the start used to answer
    // "already running" and the service then stayed stopped although it was wanted.
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, Event::Stop, &clock);
    let out = step(&mut svc, Event::Start, clock.now());
    assert!(out.acted, "the start is taken, not answered as already running");
    assert!(out.effects.is_empty(), "no second process while the first is stopping: {:?}", out.effects);
    assert!(svc.wanted);
    let fx = go(&mut svc, exit(1, true, Some(process(RestartMode::Always))), &clock);
    assert!(fx.contains(&Effect::Begin), "started again once the old process ended: {fx:?}");
    // A second start while the restart is under way changes nothing more.
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(2), pid: 102, probe: true }, &clock);
    assert!(!step(&mut svc, Event::Start, clock.now()).acted);
}

#[test]
fn a_crash_before_a_stop_then_the_stop_cancels_the_backoff() {
    let mut clock = Clock::new();
    let mut svc = running(1, &clock);
    let fx = go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    let Some(Effect::ArmBackoff { generation, .. }) =
        fx.iter().find(|e| matches!(e, Effect::ArmBackoff { .. })).cloned()
    else {
        panic!("no backoff armed: {fx:?}")
    };
    go(&mut svc, Event::Stop, &clock);
    clock.advance(Duration::from_secs(1));
    assert!(go(&mut svc, Event::BackoffDone { generation }, &clock).is_empty());
    assert_eq!(svc.state(), ServiceState::Inactive);
}

#[test]
fn fifty_concurrent_restarts_make_one_stop_and_one_start() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    let mut stops = 0;
    for _ in 0..50 {
        let s = step(&mut svc, Event::Restart { recordable: Ok(()) }, clock.now());
        assert!(s.acted);
        assert!(s.refused.is_none());
        stops += count(&s.effects, |e| matches!(e, Effect::StopJob { .. }));
    }
    assert_eq!(stops, 1);
    let fx = go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(count(&fx, |e| *e == Effect::Begin), 1);
    assert_eq!(svc.restarts, 1);
    assert!(svc.wanted);
    let fx = go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    assert_eq!(count(&fx, |e| matches!(e, Effect::RunStep { .. })), 1);
    assert!(fx.contains(&Effect::RunStep { step: 0, attempt: 2 }));
}

#[test]
fn a_restart_racing_a_crash_restarts_once_without_backoff() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, Event::Restart { recordable: Ok(()) }, &clock);
    let fx = go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert_eq!(fx, vec![Effect::Begin, Effect::WakeWaiters]);
    assert_eq!(svc.failures, 0);
}

#[test]
fn a_restart_that_cannot_record_its_job_keeps_the_process() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    let s = step(&mut svc, Event::Restart { recordable: Err("disk full".into()) }, clock.now());
    assert!(s.effects.is_empty());
    assert_eq!(
        s.refused.as_deref(),
        Some("not restarting core/web: its new job could not be recorded (disk full); the running process is kept")
    );
    assert_eq!(svc.state(), ServiceState::Running);
    // One already under way absorbs it instead.
    go(&mut svc, Event::Restart { recordable: Ok(()) }, &clock);
    let s = step(&mut svc, Event::Restart { recordable: Err("disk full".into()) }, clock.now());
    assert!(s.acted && s.refused.is_none() && s.effects.is_empty());
}

#[test]
fn a_restart_after_a_stop_was_sent_turns_it_into_a_restart() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, Event::Stop, &clock);
    let s = step(&mut svc, Event::Restart { recordable: Ok(()) }, clock.now());
    assert!(s.acted);
    assert!(svc.restart_pending());
    assert!(svc.wanted);
    assert_eq!(go(&mut svc, exit(1, true, None), &clock), vec![Effect::Begin, Effect::WakeWaiters]);
}

#[test]
fn a_restart_during_backoff_happens_now() {
    let mut clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    let stale = svc.generation;
    assert_eq!(svc.state(), ServiceState::Backoff);
    let s = step(&mut svc, Event::Restart { recordable: Ok(()) }, clock.now());
    assert!(s.acted);
    assert_eq!(s.effects, vec![Effect::Begin]);
    assert_eq!(svc.failures, 0, "an operator's restart resets the crash count");
    assert!(!svc.crash_loop);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(2), pid: 102, probe: false }, &clock);
    // The timer of the backoff it cut short fires later: stale.
    clock.advance(Duration::from_secs(1));
    assert!(go(&mut svc, Event::BackoffDone { generation: stale }, &clock).is_empty());
    assert_eq!(svc.snapshot().job_id, Some(2));
}

#[test]
fn a_restart_of_an_idle_service_starts_it() {
    let clock = Clock::new();
    let mut svc = service(1);
    let s = step(&mut svc, Event::Restart { recordable: Err("ignored: nothing runs".into()) }, clock.now());
    assert!(s.acted && s.refused.is_none());
    assert_eq!(s.effects, vec![Effect::Begin]);
}

#[test]
fn crash_loop_backs_off_exponentially_then_restarts_on_the_timer() {
    let mut clock = Clock::new();
    let mut svc = running(1, &clock);
    let mut delays = Vec::new();
    for job in 1..=4u64 {
        clock.advance(Duration::from_millis(100));
        let fx = go(&mut svc, exit(job, false, Some(process(RestartMode::Always))), &clock);
        let (after, generation) = fx
            .iter()
            .find_map(|e| match e {
                Effect::ArmBackoff { after, generation } => Some((*after, *generation)),
                _ => None,
            })
            .expect("a backoff");
        delays.push(after.as_secs());
        assert_eq!(svc.snapshot().backoff_until_ms, Some(clock.ms + after.as_millis() as i64));
        assert_eq!(svc.crash_loop, job >= 3, "crash loop from the 3rd fast failure");
        if job >= 3 {
            assert!(matches!(svc.reason, Some(Reason::CrashLoop { .. })), "{:?}", svc.reason);
            assert!(reason(&svc).as_deref().is_some_and(|r| r.starts_with("crash loop: ")), "{:?}", svc.reason);
            assert!(fx.iter().any(|e| matches!(e, Effect::Log { level: Level::Error, .. })));
        }
        clock.advance(after);
        assert_eq!(go(&mut svc, Event::BackoffDone { generation }, &clock), vec![Effect::Begin]);
        assert_eq!(svc.restarts, job as u32);
        go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
        go(&mut svc, Event::Spawned { job: JobId(job as i64 + 1), pid: 200, probe: false }, &clock);
    }
    assert_eq!(delays, vec![1, 2, 4, 8]);
}

#[test]
fn a_long_run_resets_the_backoff() {
    let mut clock = Clock::new();
    let mut svc = running(1, &clock);
    svc.failures = 5;
    clock.advance(Duration::from_secs(11));
    let fx = go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert!(fx.contains(&Effect::ArmBackoff { after: Duration::from_secs(1), generation: svc.generation }));
    assert_eq!(svc.failures, 1);
}

#[test]
fn retries_used_up_fail_the_service() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    svc.failures = 2;
    let facts = MainFacts { process: true, restart: policy(RestartMode::Always, 2) };
    go(&mut svc, exit(1, false, Some(facts)), &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("gave up after 2 restarts; last: exit 1"));
}

#[test]
fn restart_policies_on_a_clean_or_failed_exit() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    go(&mut svc, exit(1, true, Some(process(RestartMode::OnFailure))), &clock);
    assert_eq!(svc.state(), ServiceState::Inactive);
    assert_eq!(reason(&svc).as_deref(), Some("exited (exit 0); restart policy does not restart a clean exit"));
    let mut svc = running(1, &clock);
    go(&mut svc, exit(1, false, Some(process(RestartMode::Never))), &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("exited (exit 1)"));
    // Not wanted any more (stopped meanwhile, without a job to signal): no backoff.
    let mut svc = running(1, &clock);
    svc.wanted = false;
    let fx = go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert_eq!(fx, vec![Effect::WakeWaiters]);
    assert_eq!(svc.state(), ServiceState::Inactive);
}

#[test]
fn the_main_action_gone_at_exit_fails_the_service() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    let ev = Event::Exited {
        job: JobId(1),
        success: false,
        text: "exit 1".into(),
        main: Some(Err("action core/a0 does not exist".into())),
    };
    go(&mut svc, ev, &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("action core/a0 does not exist"));
}

#[test]
fn a_spawn_failure_is_retried_like_a_crash_only_for_a_main_process() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    let fx = go(
        &mut svc,
        Event::SpawnFailed { why: "no such file".into(), retry: Some(process(RestartMode::OnFailure)) },
        &clock,
    );
    assert_eq!(svc.state(), ServiceState::Backoff);
    assert!(fx.iter().any(|e| matches!(e, Effect::ArmBackoff { .. })));
    assert_eq!(svc.last_exit.as_deref(), Some("no such file"));
    // A pre-action (or a replaced database: no retry) fails.
    let mut svc = service(2);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(
        &mut svc,
        Event::SpawnFailed { why: "no such file".into(), retry: Some(process(RestartMode::OnFailure)) },
        &clock,
    );
    assert_eq!(svc.state(), ServiceState::Failed);
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::SpawnFailed { why: "database replaced".into(), retry: None }, &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("database replaced"));
}

#[test]
fn health_failures_are_counted_until_a_success_makes_it_running() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: true }, &clock);
    let g = svc.generation;
    let bad = vec![vec![row("tcp 127.0.0.1:1", Err("refused"))]];
    assert!(go(&mut svc, Event::Health { generation: g, checks: bad.clone(), healthy: false }, &clock).is_empty());
    go(&mut svc, Event::Health { generation: g, checks: bad, healthy: false }, &clock);
    assert_eq!(svc.health_failures, 2);
    assert_eq!(svc.state(), ServiceState::Starting);
    assert_eq!(reason(&svc).as_deref(), Some("not healthy yet: tcp 127.0.0.1:1: refused"));
    let good = vec![vec![row("tcp 127.0.0.1:1", Ok(()))]];
    let fx = go(&mut svc, Event::Health { generation: g, checks: good.clone(), healthy: true }, &clock);
    // Healthy: dependents may go on, and its checks are probed periodically from now.
    assert_eq!(fx, vec![Effect::WakeWaiters, Effect::Monitor { generation: g }]);
    assert_eq!(svc.state(), ServiceState::Running);
    assert_eq!(svc.reason, None);
    assert_eq!(svc.health, good);
}

fn row(check: &str, r: Result<(), &str>) -> CheckResult {
    CheckResult::new(check.into(), r.map_err(str::to_owned), T0)
}

/// A one-step service made healthy by one check per label (so periodic probing runs).
fn monitored(job: u64, labels: &[&str], clock: &Clock) -> Svc {
    let mut svc = service(1);
    go(&mut svc, Event::Start, clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, clock);
    go(&mut svc, Event::Spawned { job: JobId(job as i64), pid: 100 + job as u32, probe: true }, clock);
    let g = svc.generation;
    let checks = labels.iter().map(|l| vec![row(l, Ok(()))]).collect();
    let fx = go(&mut svc, Event::Health { generation: g, checks, healthy: true }, clock);
    assert!(fx.contains(&Effect::Monitor { generation: g }));
    svc
}

/// Feed a periodic probe of check `index` of the current generation.
fn probe(
    svc: &mut Svc,
    clock: &Clock,
    index: usize,
    rows: Vec<CheckResult>,
    liveness: Option<Liveness>,
    restart: Restart,
) -> Vec<Effect> {
    let generation = svc.generation;
    let label = format!("check{index}");
    go(svc, Event::Probed { generation, index, label, results: rows, liveness, restart }, clock)
}

#[test]
fn a_periodic_probe_keeps_status_true_and_keeps_the_last_error_after_recovery() {
    let clock = Clock::new();
    let mut svc = monitored(1, &["tcp a:1", "tcp b:2"], &clock);
    let always = policy(RestartMode::Always, 0);
    let fx = probe(&mut svc, &clock, 1, vec![row("tcp b:2", Err("refused"))], None, always.clone());
    assert_eq!(count(&fx, |e| matches!(e, Effect::Log { level: Level::Warn, .. })), 1, "{fx:?}");
    assert_eq!(svc.state(), ServiceState::Running, "without liveness a failing probe restarts nothing");
    assert_eq!(reason(&svc).as_deref(), Some("unhealthy: tcp b:2: refused"));
    assert_eq!(svc.health_failures, 1);
    assert!(!svc.snapshot().health[1].healthy);
    // Recovers: the reason goes, the row keeps when and why it last failed.
    let mut ok = row("tcp b:2", Ok(()));
    ok.probed_ms = T0 + 10_000;
    let fx = probe(&mut svc, &clock, 1, vec![ok], None, always);
    assert!(fx.iter().any(|e| matches!(e, Effect::Log { message, .. } if message.contains("healthy again"))));
    assert_eq!(svc.reason, None);
    let snap = svc.snapshot();
    assert!(snap.health[1].healthy);
    assert_eq!(snap.health[1].probed_ms, T0 + 10_000);
    assert_eq!(snap.health[1].last_error, Some((T0, "refused".to_owned())));
}

#[test]
fn hero_sockets_that_appear_or_vanish_are_noticed() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: true }, &clock);
    let g = svc.generation;
    let tree = vec![row("service", Ok(())), row("ui", Ok(())), row("root/restaurant", Ok(()))];
    go(&mut svc, Event::Health { generation: g, checks: vec![tree], healthy: true }, &clock);
    let always = policy(RestartMode::Always, 0);
    let now = vec![row("service", Ok(())), row("ui", Ok(())), row("root/delivery", Ok(()))];
    let fx = probe(&mut svc, &clock, 0, now, None, always);
    let logs: Vec<&String> =
        fx.iter().filter_map(|e| if let Effect::Log { message, .. } = e { Some(message) } else { None }).collect();
    assert_eq!(logs, ["core/web: check0: gone: root/restaurant", "core/web: check0: appeared: root/delivery"]);
    let roles: Vec<String> = svc.snapshot().health.into_iter().map(|c| c.check).collect();
    assert_eq!(roles, ["service", "ui", "root/delivery"]);
}

#[test]
fn a_liveness_check_failing_n_times_in_a_row_restarts_it_with_the_policy_backoff() {
    let mut clock = Clock::new();
    let mut svc = monitored(1, &["tcp a:1"], &clock);
    let live = Some(Liveness { period: Dur::secs(1), failures: 3 });
    let always = policy(RestartMode::Always, 0);
    let bad = || vec![row("tcp a:1", Err("refused"))];
    // Two failures, a success (the count resets), then three failures in a row.
    probe(&mut svc, &clock, 0, bad(), live, always.clone());
    probe(&mut svc, &clock, 0, bad(), live, always.clone());
    probe(&mut svc, &clock, 0, vec![row("tcp a:1", Ok(()))], live, always.clone());
    assert_eq!(svc.state(), ServiceState::Running);
    probe(&mut svc, &clock, 0, bad(), live, always.clone());
    probe(&mut svc, &clock, 0, bad(), live, always.clone());
    assert_eq!(svc.state(), ServiceState::Running);
    clock.advance(Duration::from_secs(120));
    let fx = probe(&mut svc, &clock, 0, bad(), live, always.clone());
    assert!(fx.contains(&Effect::StopJob { job: JobId(1), step: 0 }), "{fx:?}");
    assert_eq!(svc.state(), ServiceState::Stopping);
    assert_eq!(svc.liveness_restarts, 1);
    assert_eq!(reason(&svc).as_deref(), Some("liveness check check0 failed 3 times; restarting in 1s"));
    // A probe still in flight for the stopping process changes nothing.
    assert!(probe(&mut svc, &clock, 0, bad(), live, always.clone()).is_empty());
    // The hung process ends (SIGTERM or SIGKILL): backoff, then a new start.
    let g = svc.generation;
    let fx = go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(svc.state(), ServiceState::Backoff);
    assert!(fx.contains(&Effect::ArmBackoff { after: Duration::from_secs(1), generation: g }), "{fx:?}");
    assert_eq!(reason(&svc).as_deref(), Some("liveness check check0 failed 3 times; restarting in 1s"));
    assert_eq!(go(&mut svc, Event::BackoffDone { generation: g }, &clock), vec![Effect::Begin]);
    assert_eq!(svc.restarts, 1);
}

#[test]
fn a_liveness_failure_of_a_never_restarted_service_fails_it() {
    let clock = Clock::new();
    let mut svc = monitored(1, &["tcp a:1"], &clock);
    let live = Some(Liveness { period: Dur::secs(1), failures: 1 });
    let never = policy(RestartMode::Never, 0);
    let fx = probe(&mut svc, &clock, 0, vec![row("tcp a:1", Err("refused"))], live, never);
    assert!(fx.contains(&Effect::StopJob { job: JobId(1), step: 0 }));
    go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(
        reason(&svc).as_deref(),
        Some("liveness check check0 failed 1 times; the restart policy does not restart it")
    );
}

#[test]
fn an_operator_stop_during_a_liveness_restart_wins() {
    let clock = Clock::new();
    let mut svc = monitored(1, &["tcp a:1"], &clock);
    let live = Some(Liveness { period: Dur::secs(1), failures: 1 });
    probe(&mut svc, &clock, 0, vec![row("tcp a:1", Err("x"))], live, policy(RestartMode::Always, 0));
    assert_eq!(svc.state(), ServiceState::Stopping);
    go(&mut svc, Event::Stop, &clock);
    let fx = go(&mut svc, exit(1, false, None), &clock);
    assert_eq!(svc.state(), ServiceState::Inactive);
    assert!(!fx.iter().any(|e| matches!(e, Effect::ArmBackoff { .. } | Effect::Begin)), "{fx:?}");
}

#[test]
fn probes_of_an_older_generation_or_a_crashed_process_are_ignored() {
    let clock = Clock::new();
    let mut svc = monitored(1, &["tcp a:1"], &clock);
    let g = svc.generation;
    let stale = Event::Probed {
        generation: g,
        index: 0,
        label: "check0".into(),
        results: vec![row("tcp a:1", Err("x"))],
        liveness: None,
        restart: policy(RestartMode::Always, 0),
    };
    // It crashes: backoff; the monitor's late probe must not touch it.
    go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock);
    assert_eq!(svc.state(), ServiceState::Backoff);
    assert!(go(&mut svc, stale, &clock).is_empty());
    assert_eq!(svc.health_failures, 0);
}

#[test]
fn health_of_an_older_generation_is_ignored() {
    let clock = Clock::new();
    let mut svc = running(1, &clock);
    let old = svc.generation;
    go(&mut svc, Event::Restart { recordable: Ok(()) }, &clock);
    go(&mut svc, exit(1, false, None), &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(2), pid: 12, probe: true }, &clock);
    assert!(go(&mut svc, Event::Health { generation: old, checks: vec![], healthy: true }, &clock).is_empty());
    assert_eq!(svc.state(), ServiceState::Starting);
    // Nor is a health result after a stop (the stop bumps the generation).
    let g = svc.generation;
    go(&mut svc, Event::Stop, &clock);
    go(&mut svc, Event::Health { generation: g, checks: vec![], healthy: false }, &clock);
    assert_eq!(svc.health_failures, 0);
    assert_eq!(svc.state(), ServiceState::Stopping);
}

#[test]
fn an_exit_of_an_older_job_is_ignored() {
    let clock = Clock::new();
    let mut svc = running(2, &clock);
    let before = svc.clone();
    assert!(go(&mut svc, exit(1, false, Some(process(RestartMode::Always))), &clock).is_empty());
    assert_eq!(svc.life, before.life);
    assert_eq!(svc.last_exit, before.last_exit);
    // And a spawn result when nothing waits for one.
    assert!(go(&mut svc, Event::Spawned { job: JobId(9), pid: 9, probe: true }, &clock).is_empty());
    assert_eq!(svc.snapshot().job_id, Some(2));
}

#[test]
fn adopting_a_process_probes_it_and_an_old_config_restarts_it() {
    let clock = Clock::new();
    let mut svc = service(2);
    let fx = go(&mut svc, Event::Adopt { job: JobId(7), pid: 77 }, &clock);
    assert_eq!(fx, vec![Effect::ProbeHealth { generation: 0 }]);
    assert!(svc.wanted);
    assert_eq!(svc.job_step(), Some(1), "adopted as the main step");
    // Re-attach of a process older than its config: restart it.
    let s = step(&mut svc, Event::RestartRunning, clock.now());
    assert!(s.acted);
    assert_eq!(s.effects, vec![Effect::StopJob { job: JobId(7), step: 1 }]);
    assert_eq!(go(&mut svc, exit(7, true, None), &clock), vec![Effect::Begin, Effect::WakeWaiters]);
    assert_eq!(svc.restarts, 1);
}

#[test]
fn a_config_change_during_a_start_restarts_from_the_first_step() {
    let clock = Clock::new();
    let mut svc = service(2);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: false }, &clock);
    // The apply lands while the pre-action runs.
    let s = step(&mut svc, Event::RestartRunning, clock.now());
    assert_eq!(s.effects, vec![Effect::StopJob { job: JobId(1), step: 0 }]);
    // A second change (or the stale check) is absorbed.
    assert!(!step(&mut svc, Event::RestartRunning, clock.now()).acted);
    // The pre-action was killed: its failure does not fail the service.
    assert_eq!(go(&mut svc, exit(1, false, None), &clock), vec![Effect::Begin, Effect::WakeWaiters]);
    let fx = go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    assert!(fx.contains(&Effect::RunStep { step: 0, attempt: 2 }));
}

#[test]
fn restart_running_does_nothing_without_a_process() {
    let clock = Clock::new();
    let mut svc = service(1);
    let s = step(&mut svc, Event::RestartRunning, clock.now());
    assert!(!s.acted && s.effects.is_empty());
    assert!(!svc.wanted);
}

#[test]
fn a_failed_dependency_fails_its_waiting_dependent() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec!["core/db".into()] }, &clock);
    let fx = go(&mut svc, Event::DepFailed { dep: Ref::new("core", "db") }, &clock);
    assert_eq!(svc.state(), ServiceState::Failed);
    assert_eq!(reason(&svc).as_deref(), Some("required service core/db failed"));
    assert!(fx.contains(&Effect::WakeWaiters));
}

#[test]
fn since_changes_only_when_the_state_does() {
    let mut clock = Clock::new();
    let mut svc = service(2);
    go(&mut svc, Event::Start, &clock);
    clock.advance(Duration::from_secs(1));
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    let started = svc.since_ms;
    assert_eq!(started, T0 + 1000);
    clock.advance(Duration::from_secs(1));
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: false }, &clock);
    go(&mut svc, exit(1, true, None), &clock);
    assert_eq!(svc.since_ms, started, "still starting through its steps");
}

#[test]
fn a_snapshot_shows_what_the_state_carries() {
    let clock = Clock::new();
    let svc = running(3, &clock);
    let s = svc.snapshot();
    assert_eq!((s.context.as_str(), s.name.as_str()), ("core", "web"));
    assert_eq!((s.state, s.pid, s.job_id, s.backoff_until_ms), (ServiceState::Running, Some(103), Some(3), None));
    assert!(s.managed);
    assert_eq!(s.status, ServiceStatus::Start);
}

#[test]
fn a_second_begin_while_it_starts_or_runs_is_ignored() {
    let clock = Clock::new();
    let mut svc = service(1);
    go(&mut svc, Event::Start, &clock);
    go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock);
    let g = svc.generation;
    assert!(go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock).is_empty());
    go(&mut svc, Event::Spawned { job: JobId(1), pid: 11, probe: false }, &clock);
    assert!(go(&mut svc, Event::Begin { waiting_for: vec![] }, &clock).is_empty());
    assert_eq!((svc.generation, svc.snapshot().job_id), (g, Some(1)));
}
