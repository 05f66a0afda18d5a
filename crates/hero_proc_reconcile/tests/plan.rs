//! Unit tests of the pure [`plan`] function (and of the text it renders to), built from
//! in-memory values: a `Desired` parsed from YAML text, a `Live` made of `Stored` rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use hero_proc_migrate::{Applied, AppliedResult};
use hero_proc_reconcile::desired::SecretValues;
use hero_proc_reconcile::render::render_text;
use hero_proc_reconcile::{CommitInfo, Desired, DesiredSecret, DriftItem, Live, LiveSecret, Op, Plan, RunState, plan};
use hero_proc_spec::load::parse_objects;
use hero_proc_spec::{ConfigTree, Diagnostics, Kind, Migration, Named, ServiceStatus, Settings};
use hero_proc_store::{Ref, Stored};

const REV1: &str = "1111111111111111111111111111111111111111";
const REV2: &str = "2222222222222222222222222222222222222222";
const SOURCE: &str = "secrets/core.sops.yaml";

// ---- building blocks ------------------------------------------------------------------

fn commit(id: &str) -> CommitInfo {
    CommitInfo {
        id: id.to_owned(),
        author: Some("Dev <dev@example.org>".into()),
        committed_at_ms: Some(1_700_000_000_000),
        summary: Some(format!("commit {}", &id[..4])),
    }
}

/// Settings with no required services (the default requires `hero_db`).
fn settings() -> Settings {
    Settings { required_services: Vec::new(), ..Settings::default() }
}

/// The desired state of `yaml` (one actions file) at commit `rev`, without secrets.
fn desired_at(rev: &str, yaml: &str) -> Desired {
    let mut diags = Diagnostics::new();
    let base = parse_objects("actions/test.yaml", yaml, &mut diags);
    let errors: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(!diags.has_errors(), "test YAML does not parse:\n{}", errors.join("\n"));
    let tree = ConfigTree { base, ..ConfigTree::default() };
    Desired {
        commit: commit(rev),
        host: None,
        state: tree.desired_for(None),
        settings: settings(),
        secrets: BTreeMap::new(),
        migrations: Vec::new(),
        values: SecretValues::default(),
        artifacts: BTreeMap::new(),
    }
}

fn desired(yaml: &str) -> Desired {
    desired_at(REV2, yaml)
}

fn r(s: &str) -> Ref {
    let (c, n) = s.split_once('/').expect("ctx/name");
    Ref::new(c, n)
}

/// A desired-state map key.
fn key(s: &str) -> (String, String) {
    let r = r(s);
    (r.context, r.name)
}

fn secret(fp: &str) -> DesiredSecret {
    DesiredSecret { source: SOURCE.into(), fingerprint: Some(fp.into()) }
}

/// A store row holding its own copy of `value` (the desired state shares its objects).
/// A live row holding a copy of `value` (as decoded from the store: not git's object).
fn stored<T: Clone>(value: impl AsRef<T>, managed: bool) -> Stored<Arc<T>> {
    Stored {
        value: Arc::new(value.as_ref().clone()),
        managed,
        revision: managed.then(|| REV1.to_owned()),
        updated_at_ms: 1,
    }
}

/// The live state an apply of `d` leaves behind: every row managed, every secret with its
/// fingerprint, services with `status: start` up and the others down.
fn live_of(d: &Desired) -> Live {
    let mut live = Live::default();
    for ((c, n), a) in &d.state.actions {
        Arc::make_mut(&mut live.actions).insert(Ref::new(c, n), stored(a.clone(), true));
    }
    for ((c, n), s) in &d.state.services {
        let r = Ref::new(c, n);
        let state = if s.status == ServiceStatus::Start { RunState::Up } else { RunState::Down };
        live.states.insert(r.clone(), state);
        Arc::make_mut(&mut live.services).insert(r, stored(s.clone(), true));
    }
    for (r, s) in &d.secrets {
        let fingerprint = s.fingerprint.clone().expect("test secrets have fingerprints");
        live.secrets.insert(r.clone(), LiveSecret { fingerprint, source: s.source.clone(), managed: true });
    }
    live
}

/// The live state of `yaml` (as [`live_of`]).
fn live_yaml(yaml: &str) -> Live {
    live_of(&desired_at(REV1, yaml))
}

/// `+ action core/x` lines, in plan order.
fn ops(p: &Plan) -> Vec<String> {
    p.changes.iter().map(|c| format!("{} {}", c.op.sign(), c.object())).collect()
}

fn change<'p>(p: &'p Plan, kind: Kind, object: &str) -> &'p hero_proc_reconcile::Change {
    let rr = r(object);
    p.changes
        .iter()
        .find(|c| c.kind == kind && c.context == rr.context && c.name == rr.name)
        .unwrap_or_else(|| panic!("no change for {kind} {object} in {:#?}", ops(p)))
}

/// `(service, because, drift)` of a list of restarts/starts/stops.
fn restarts(p: &Plan) -> Vec<(String, String, bool)> {
    p.restarts.iter().map(|x| (x.service.clone(), x.because.to_string(), x.drift)).collect()
}
fn starts(p: &Plan) -> Vec<(String, String, bool)> {
    p.starts.iter().map(|x| (x.service.clone(), x.because.to_string(), x.drift)).collect()
}
fn stops(p: &Plan) -> Vec<(String, String, bool)> {
    p.stops.iter().map(|x| (x.service.clone(), x.because.to_string(), x.drift)).collect()
}
fn t(service: &str, because: &str, drift: bool) -> (String, String, bool) {
    (service.to_owned(), because.to_owned(), drift)
}
fn drift_item(object: &str, what: &str) -> DriftItem {
    DriftItem { object: object.to_owned(), what: what.to_owned() }
}

fn migration(name: &str, sha: &str) -> Migration {
    Migration {
        name: name.to_owned(),
        path: format!("migrations/{name}"),
        sha256: sha.to_owned(),
        source: "let x = 1;".to_owned(),
    }
}

/// Two services over two actions and a secret: `web` requires `db`, its action reads the
/// secret `tok`.
const BASE: &str = "
actions:
  - name: db
    script: db-server --port 7000
    process: true
  - name: web
    description: the web front
    script: web-server --port 8080
    process: true
    env:
      MODE: prod
      TOKEN: { secret: tok }
    depends_on: [db]
    tags: [front]
services:
  - name: db
  - name: web
    requires: [db]
";

fn base_with_secret(rev: &str, fp: &str) -> Desired {
    let mut d = desired_at(rev, BASE);
    d.secrets.insert(r("core/tok"), secret(fp));
    d
}

// ---- creates, updates, deletes ---------------------------------------------------------

#[test]
fn creates_are_secrets_then_actions_then_services_with_diffs() {
    let d = base_with_secret(REV2, "fp-1");
    let p = plan(&d, &Live::empty(), None, None);
    assert_eq!(
        ops(&p),
        ["+ secret core/tok", "+ action core/db", "+ action core/web", "+ service core/db", "+ service core/web"]
    );
    assert!(p.changes.iter().all(|c| c.op == Op::Create && !c.drift && !c.adopt));
    assert_eq!((p.summary.create, p.summary.update, p.summary.delete), (5, 0, 0));
    assert_eq!(starts(&p), [t("core/db", "new service", false), t("core/web", "new service", false)]);
    assert!(p.restarts.is_empty() && p.stops.is_empty() && p.refusals.is_empty());

    let web = change(&p, Kind::Action, "core/web");
    assert!(web.diff.starts_with("--- /dev/null\n+++ git/action/core/web\n"), "{}", web.diff);
    assert!(web.diff.contains("+name: web\n"), "{}", web.diff);
    assert!(web.diff.contains("+script: web-server --port 8080\n"), "{}", web.diff);
    assert!(!web.diff.lines().any(|l| l.starts_with('-') && !l.starts_with("---")), "a create removes nothing");
    assert_eq!(change(&p, Kind::Secret, "core/tok").diff, "(sensitive value)\n");
    assert_eq!(p.target, commit(REV2));
    assert_eq!(p.applied_revision, None);
    assert!(p.drift.is_empty() && p.unmanaged.is_empty() && p.not_pruned.is_empty());
}

#[test]
fn a_service_created_with_status_stop_is_not_started() {
    let d =
        desired("actions: [{ name: job, script: job-run, process: true }]\nservices: [{ name: job, status: stop }]\n");
    let p = plan(&d, &Live::empty(), None, None);
    assert_eq!(ops(&p), ["+ action core/job", "+ service core/job"]);
    assert!(p.starts.is_empty() && p.stops.is_empty());
}

#[test]
fn updates_are_secrets_then_actions_then_services_with_unified_diffs() {
    let old = "
actions:
  - { name: db, script: db-server --port 7000, process: true }
services:
  - { name: db, description: old words }
";
    let new = "
actions:
  - { name: db, script: db-server --port 7001, process: true }
services:
  - { name: db, description: new words }
";
    let mut live = live_yaml(old);
    live.secrets
        .insert(r("core/tok"), LiveSecret { fingerprint: "fp-old".into(), source: SOURCE.into(), managed: true });
    let mut d = desired(new);
    d.secrets.insert(r("core/tok"), secret("fp-new"));
    let p = plan(&d, &live, None, Some(REV1));

    assert_eq!(ops(&p), ["~ secret core/tok", "~ action core/db", "~ service core/db"]);
    assert_eq!((p.summary.create, p.summary.update, p.summary.delete), (0, 3, 0));
    let a = change(&p, Kind::Action, "core/db");
    assert!(a.diff.starts_with("--- live/action/core/db\n+++ git/action/core/db\n@@"), "{}", a.diff);
    assert!(a.diff.contains("\n-script: db-server --port 7000\n"), "{}", a.diff);
    assert!(a.diff.contains("\n+script: db-server --port 7001\n"), "{}", a.diff);
    assert!(a.diff.contains("\n name: db\n"), "unchanged lines are context: {}", a.diff);
    let s = change(&p, Kind::Service, "core/db");
    assert!(s.diff.contains("-description: old words\n+description: new words\n"), "{}", s.diff);
    assert_eq!(change(&p, Kind::Secret, "core/tok").diff, "(sensitive value changed)\n");
    assert!(p.changes.iter().all(|c| !c.drift && !c.adopt));
    assert_eq!(restarts(&p), [t("core/db", "action core/db changed", false)]);
}

#[test]
fn a_moved_secret_is_updated_with_a_note_naming_both_files() {
    let mut live = Live::default();
    live.secrets.insert(
        r("core/tok"),
        LiveSecret { fingerprint: "fp".into(), source: "secrets/old.sops.yaml".into(), managed: true },
    );
    let mut d = desired("actions: []\n");
    d.secrets.insert(r("core/tok"), secret("fp"));
    let p = plan(&d, &live, None, None);
    assert_eq!(ops(&p), ["~ secret core/tok"]);
    assert_eq!(p.changes[0].diff, format!("(source changed: secrets/old.sops.yaml -> {SOURCE})\n"));
}

#[test]
fn deletes_go_services_then_actions_then_secrets_dependents_first() {
    // Key order is the opposite of dependency order, so a plan sorted by name would be
    // wrong: `z_top` requires `m_mid`, which runs after `a_base`.
    let old = "
actions:
  - { name: a_lib, script: lib-init }
  - { name: m_tool, script: tool, depends_on: [a_lib] }
  - { name: z_app, script: app, process: true, depends_on: [m_tool] }
services:
  - { name: a_base, actions: [z_app] }
  - { name: m_mid, actions: [z_app], after: [a_base] }
  - { name: z_top, actions: [z_app], requires: [m_mid] }
";
    let mut live = live_yaml(old);
    live.secrets.insert(r("core/s1"), LiveSecret { fingerprint: "f".into(), source: SOURCE.into(), managed: true });
    // Something to create and update as well: deletes come after them.
    let mut prev_keep = live_yaml("actions: [{ name: keep, script: keep-v1 }]\n");
    Arc::make_mut(&mut live.actions).append(Arc::make_mut(&mut prev_keep.actions));
    let d = desired("actions: [{ name: keep, script: keep-v2 }, { name: fresh, script: fresh }]\n");
    let p = plan(&d, &live, None, Some(REV1));

    assert_eq!(
        ops(&p),
        [
            "+ action core/fresh",
            "~ action core/keep",
            "- service core/z_top",
            "- service core/m_mid",
            "- service core/a_base",
            "- action core/z_app",
            "- action core/m_tool",
            "- action core/a_lib",
            "- secret core/s1",
        ]
    );
    assert_eq!(p.summary.delete, 7);
    let del = change(&p, Kind::Action, "core/a_lib");
    assert!(del.diff.starts_with("--- live/action/core/a_lib\n+++ /dev/null\n"), "{}", del.diff);
    assert_eq!(change(&p, Kind::Secret, "core/s1").diff, "(sensitive value)\n");
    // Running services that go away are stopped (key order; the engine orders stops).
    assert_eq!(
        stops(&p),
        [t("core/a_base", "deleted", false), t("core/m_mid", "deleted", false), t("core/z_top", "deleted", false)]
    );
    assert!(p.refusals.is_empty() && p.drift.is_empty());
}

#[test]
fn deleted_services_that_are_not_running_are_not_stopped() {
    let mut live = live_yaml(
        "actions: [{ name: a, script: a, process: true }]\nservices: [{ name: a }, { name: b, actions: [a] }]\n",
    );
    live.states.insert(r("core/a"), RunState::Down);
    live.states.remove(&r("core/b")); // unknown: stopped to be safe
    let p = plan(&desired("actions: []\n"), &live, None, None);
    assert_eq!(ops(&p), ["- service core/a", "- service core/b", "- action core/a"]);
    assert_eq!(stops(&p), [t("core/b", "deleted", false)]);
}

#[test]
fn unmanaged_rows_are_listed_and_never_deleted() {
    let hand = live_yaml("actions: [{ name: hand, script: by-hand, process: true }]\nservices: [{ name: hand }]\n");
    let mut live = Live::default();
    for (k, mut v) in Arc::unwrap_or_clone(hand.actions) {
        v.managed = false;
        Arc::make_mut(&mut live.actions).insert(k, v);
    }
    for (k, mut v) in Arc::unwrap_or_clone(hand.services) {
        v.managed = false;
        live.states.insert(k.clone(), RunState::Up);
        Arc::make_mut(&mut live.services).insert(k, v);
    }
    live.secrets
        .insert(r("ops/hand_tok"), LiveSecret { fingerprint: "f".into(), source: "cli".into(), managed: false });
    let d = desired("actions: []\n");
    assert!(d.settings.prune);
    let p = plan(&d, &live, None, None);
    assert!(p.changes.is_empty(), "{:?}", ops(&p));
    assert!(p.stops.is_empty() && p.starts.is_empty() && p.restarts.is_empty());
    assert_eq!(p.unmanaged, ["action core/hand", "secret ops/hand_tok", "service core/hand"]);
    assert!(p.not_pruned.is_empty() && p.drift.is_empty());
    assert!(p.is_empty());
}

#[test]
fn prune_off_lists_managed_leftovers_and_deletes_nothing() {
    let mut live = live_yaml(BASE);
    live.secrets.insert(r("core/tok"), LiveSecret { fingerprint: "f".into(), source: SOURCE.into(), managed: true });
    let mut d = desired("actions: []\n");
    d.settings.prune = false;
    let p = plan(&d, &live, None, Some(REV1));
    assert!(!p.prune);
    assert!(p.changes.is_empty(), "{:?}", ops(&p));
    assert!(p.stops.is_empty(), "kept services keep running: {:?}", stops(&p));
    assert_eq!(
        p.not_pruned,
        ["action core/db", "action core/web", "secret core/tok", "service core/db", "service core/web"]
    );
    assert!(p.unmanaged.is_empty());
    assert_eq!(p.summary.delete, 0);
    assert!(p.is_empty());
}

// ---- adoption and drift ----------------------------------------------------------------

#[test]
fn identical_unmanaged_rows_are_adopted_with_an_empty_diff() {
    let mut d = desired(BASE);
    d.secrets.insert(r("core/tok"), secret("fp"));
    let mut live = live_of(&d);
    for v in Arc::make_mut(&mut live.actions).values_mut() {
        v.managed = false;
    }
    for v in Arc::make_mut(&mut live.services).values_mut() {
        v.managed = false;
    }
    for v in live.secrets.values_mut() {
        v.managed = false;
    }
    let p = plan(&d, &live, None, None);
    assert_eq!(
        ops(&p),
        ["~ secret core/tok", "~ action core/db", "~ action core/web", "~ service core/db", "~ service core/web"]
    );
    for c in &p.changes {
        assert!(c.adopt && !c.drift, "{c:?}");
        if c.kind != Kind::Secret {
            assert_eq!(c.diff, "", "identical rows adopt without a diff: {c:?}");
        }
    }
    assert_eq!(
        change(&p, Kind::Secret, "core/tok").diff,
        "(sensitive value unchanged; set by hand, now managed from git)\n"
    );
    // Adopting changes nothing that runs.
    assert!(p.restarts.is_empty() && p.starts.is_empty() && p.stops.is_empty());
    assert!(p.unmanaged.is_empty());
    // Nothing to do for `--detailed-exitcode`, though the apply marks them managed.
    assert!(p.changes.iter().all(|c| c.is_identical_adoption()));
    assert!(!p.changes_anything() && !p.is_empty());
    // Counted and said apart from updates.
    assert_eq!((p.summary.update, p.summary.adopt), (0, p.changes.len()));
    let text = render_text(&p, false);
    let line = format!("0 to create, 0 to update ({} more adopted unchanged), 0 to delete", p.changes.len());
    assert!(text.contains(&line), "{text}");
}

#[test]
fn a_different_unmanaged_row_is_adopted_with_its_diff() {
    let mut live = live_yaml("actions: [{ name: db, script: by-hand }]\n");
    Arc::make_mut(&mut live.actions).values_mut().for_each(|v| v.managed = false);
    let p = plan(&desired("actions: [{ name: db, script: from-git }]\n"), &live, None, None);
    assert_eq!(ops(&p), ["~ action core/db"]);
    assert!(p.changes[0].adopt);
    assert!(p.changes[0].diff.contains("-script: by-hand\n+script: from-git\n"), "{}", p.changes[0].diff);
    assert!(!p.changes[0].is_identical_adoption() && p.changes_anything());
}

#[test]
fn a_live_change_git_did_not_make_is_drift() {
    let prev = base_with_secret(REV1, "fp");
    let d = base_with_secret(REV2, "fp");
    let mut live = live_of(&prev);
    // Edited by hand.
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/db")).unwrap().value).script =
        "db-server --port 9999".into();
    // Deleted by hand.
    Arc::make_mut(&mut live.services).remove(&r("core/web"));
    live.states.remove(&r("core/web"));
    // Secret changed by hand.
    live.secrets.get_mut(&r("core/tok")).unwrap().fingerprint = "fp-hand".into();
    // Added by hand but marked managed (not in the applied revision, not in git).
    Arc::make_mut(&mut live.actions).insert(r("core/stray"), stored(d.state.actions[&key("core/db")].clone(), true));
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/stray")).unwrap().value).name = "stray".into();

    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(ops(&p), ["~ secret core/tok", "~ action core/db", "+ service core/web", "- action core/stray"]);
    assert!(p.changes.iter().all(|c| c.drift), "{:#?}", p.changes);
    assert_eq!(
        p.drift,
        [
            drift_item("secret core/tok", "changed by hand"),
            drift_item("action core/db", "changed by hand"),
            drift_item("service core/web", "deleted by hand"),
            drift_item("action core/stray", "not in git"),
            drift_item("service core/web", "new service"),
        ]
    );
    assert_eq!(p.summary.drift, 5);
    // self_heal is on: all of it is reverted, and the restarts it implies are made.
    assert!(p.self_heal);
    assert_eq!(starts(&p), [t("core/web", "new service", true)]);
    assert_eq!(restarts(&p), [t("core/db", "action core/db changed", true)]);
}

#[test]
fn a_change_made_in_git_is_not_drift_even_if_live_was_also_edited() {
    let prev = desired_at(REV1, "actions: [{ name: a, script: v1 }, { name: b, script: v1 }]\n");
    let d = desired_at(REV2, "actions: [{ name: a, script: v2 }, { name: b, script: v2 }]\n");
    let mut live = live_of(&prev);
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/b")).unwrap().value).script = "by-hand".into();
    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(ops(&p), ["~ action core/a", "~ action core/b"]);
    assert!(p.changes.iter().all(|c| !c.drift && !c.adopt));
    assert!(p.drift.is_empty());
    assert_eq!(p.summary.drift, 0);
    // Deleted in git: not drift either.
    let d3 = desired_at(REV2, "actions: [{ name: a, script: v1 }]\n");
    let p = plan(&d3, &live_of(&prev), Some(&prev), Some(REV1));
    assert_eq!(ops(&p), ["- action core/b"]);
    assert!(!p.changes[0].drift);
}

#[test]
fn without_a_previous_revision_nothing_is_drift() {
    let d = desired(BASE);
    let mut live = live_of(&d);
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/db")).unwrap().value).script =
        "db-server --port 1".into();
    live.states.insert(r("core/db"), RunState::Down);
    let p = plan(&d, &live, None, None);
    assert!(p.changes.iter().all(|c| !c.drift));
    assert!(p.drift.is_empty());
    assert_eq!(starts(&p), [t("core/db", "stopped by hand", false)]);
}

#[test]
fn self_heal_off_reports_drift_without_reverting_it() {
    let yaml = "
actions:
  - { name: a, script: a-v1, process: true }
  - { name: other, script: other-v1, process: true }
services:
  - { name: a }
  - { name: other }
  - { name: idle, actions: [a] }
";
    let prev = desired_at(REV1, yaml);
    let mut d = desired_at(REV2, &yaml.replace("other-v1", "other-v2"));
    d.settings.self_heal = false;
    let mut live = live_of(&prev);
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/a")).unwrap().value).script =
        "a-by-hand".into();
    live.states.insert(r("core/idle"), RunState::Down);

    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert!(!p.self_heal);
    // Only the change made in git is applied, with the restart it implies.
    assert_eq!(ops(&p), ["~ action core/other"]);
    assert!(!p.changes[0].drift);
    assert_eq!(restarts(&p), [t("core/other", "action core/other changed", false)]);
    // The hand edit and the hand stop are reported, not reverted (nor restarted for).
    assert!(p.starts.is_empty(), "{:?}", starts(&p));
    assert_eq!(
        p.drift,
        [drift_item("action core/a", "changed by hand"), drift_item("service core/idle", "stopped by hand")]
    );
    assert_eq!(p.summary.drift, 2);
    assert_eq!((p.summary.update, p.summary.restart, p.summary.start), (1, 1, 0));
    let text = render_text(&p, false);
    assert!(text.contains("Drift (reported only: self_heal is off in hero.yaml):\n"), "{text}");
    assert!(text.contains("  action core/a: changed by hand\n"), "{text}");
}

/// A service that runs an action edited by hand (drift) *and* an action changed in git
/// must restart for the git change when `self_heal` is off. `restart_cause` returns the
/// first cause it finds (the drift one, action `a`), so the restart is marked drift and
/// then dropped with the other drift: the new `b` is written to the store but the
/// running service keeps the old one. Listing the actions as `[b, a]` plans the restart.
#[test]
fn self_heal_off_still_restarts_for_a_git_change_when_another_action_drifted() {
    let yaml = "
actions:
  - { name: a, script: a-v1 }
  - { name: b, script: b-v1, process: true }
services:
  - { name: svc, actions: [a, b] }
";
    let prev = desired_at(REV1, yaml);
    let mut d = desired_at(REV2, &yaml.replace("b-v1", "b-v2"));
    d.settings.self_heal = false;
    let mut live = live_of(&prev);
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/a")).unwrap().value).script =
        "a-by-hand".into();

    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(ops(&p), ["~ action core/b"]);
    assert_eq!(restarts(&p), [t("core/svc", "action core/b changed", false)]);
}

// ---- restarts, starts, stops -----------------------------------------------------------

const RUNNERS: &str = "
actions:
  - { name: prep, script: prep-v1 }
  - { name: web, script: web-v1, process: true, description: serves, tags: [front] }
  - { name: other, script: other-v1, process: true }
services:
  - { name: web }
  - { name: web2, actions: [prep, web] }
  - { name: stopped, actions: [web] }
  - { name: failed, actions: [web] }
  - { name: other }
  - { name: ops_web, context: ops, actions: [core/web] }
";

fn runners_live() -> Live {
    let mut live = live_yaml(RUNNERS);
    live.states.insert(r("core/stopped"), RunState::Down);
    live.states.insert(r("core/failed"), RunState::Settled);
    live
}

#[test]
fn a_changed_action_restarts_the_running_services_that_run_it() {
    let d = desired(&RUNNERS.replace("web-v1", "web-v2"));
    let p = plan(&d, &runners_live(), None, Some(REV1));
    assert_eq!(ops(&p), ["~ action core/web"]);
    assert_eq!(
        restarts(&p),
        [
            t("core/web", "action core/web changed", false),
            t("core/web2", "action core/web changed", false),
            t("ops/ops_web", "action core/web changed", false),
        ]
    );
    // A service stopped by hand is started (not restarted); a settled one is left alone.
    assert_eq!(starts(&p), [t("core/stopped", "stopped by hand", false)]);
    assert!(p.stops.is_empty());
    assert_eq!((p.summary.restart, p.summary.start), (3, 1));
}

#[test]
fn a_changed_first_action_restarts_the_service_too() {
    let d = desired(&RUNNERS.replace("prep-v1", "prep-v2"));
    let p = plan(&d, &runners_live(), None, Some(REV1));
    assert_eq!(restarts(&p), [t("core/web2", "action core/prep changed", false)]);
}

#[test]
fn a_description_or_tags_change_updates_without_restarting() {
    let yaml = RUNNERS.replace("description: serves, tags: [front]", "description: serves pages, tags: [front, edge]");
    let p = plan(&desired(&yaml), &runners_live(), None, Some(REV1));
    assert_eq!(ops(&p), ["~ action core/web"]);
    let diff = &p.changes[0].diff;
    assert!(diff.contains("+description: serves pages\n"), "{diff}");
    assert!(p.restarts.is_empty(), "{:?}", restarts(&p));
    // Only the service stopped by hand is acted on.
    assert_eq!(starts(&p), [t("core/stopped", "stopped by hand", false)]);
}

#[test]
fn a_changed_secret_restarts_the_services_whose_actions_read_it() {
    let old = base_with_secret(REV1, "fp-old");
    let mut d = base_with_secret(REV2, "fp-new");
    let mut live = live_of(&old);
    // A second service running `web`, stopped by hand: started, not restarted.
    let mut web3 = live.services[&r("core/web")].clone();
    Arc::make_mut(&mut web3.value).name = "web3".into();
    Arc::make_mut(&mut live.services).insert(r("core/web3"), web3.clone());
    live.states.insert(r("core/web3"), RunState::Down);
    d.state.services.insert(key("core/web3"), web3.value);

    let p = plan(&d, &live, None, Some(REV1));
    assert_eq!(ops(&p), ["~ secret core/tok"]);
    assert_eq!(p.changes[0].diff, "(sensitive value changed)\n");
    // `db` does not read the secret.
    assert_eq!(restarts(&p), [t("core/web", "secret core/tok changed", false)]);
    assert_eq!(starts(&p), [t("core/web3", "stopped by hand", false)]);
}

#[test]
fn an_unverified_secret_changes_nothing_and_is_listed() {
    let old = base_with_secret(REV1, "fp-old");
    let mut d = desired(BASE);
    d.secrets.insert(r("core/tok"), DesiredSecret { source: SOURCE.into(), fingerprint: None });
    let p = plan(&d, &live_of(&old), None, Some(REV1));
    assert!(p.is_empty(), "{:?}", ops(&p));
    assert_eq!(p.unverified_secrets, ["secret core/tok"]);
    let text = render_text(&p, false);
    assert!(text.contains("Secrets not compared (this preview has no key to decrypt them):\n  secret core/tok\n"));
}

/// A preview without the key (fingerprint `None`) cannot know whether a secret set by hand
/// holds the git value, yet the adoption note says "sensitive value unchanged".
#[test]
fn an_unverified_secret_set_by_hand_is_not_claimed_unchanged() {
    let mut live = Live::default();
    live.secrets
        .insert(r("core/tok"), LiveSecret { fingerprint: "fp-hand".into(), source: SOURCE.into(), managed: false });
    let mut d = desired("actions: []\n");
    d.secrets.insert(r("core/tok"), DesiredSecret { source: SOURCE.into(), fingerprint: None });
    let p = plan(&d, &live, None, None);
    assert_eq!(ops(&p), ["~ secret core/tok"]);
    assert!(p.changes[0].adopt);
    assert_eq!(p.unverified_secrets, ["secret core/tok"]);
    assert!(!p.changes[0].diff.contains("unchanged"), "{}", p.changes[0].diff);
}

#[test]
fn a_changed_action_list_restarts_the_service() {
    let d = desired(&RUNNERS.replace("{ name: web2, actions: [prep, web] }", "{ name: web2, actions: [web] }"));
    let p = plan(&d, &runners_live(), None, Some(REV1));
    assert_eq!(ops(&p), ["~ service core/web2"]);
    assert_eq!(restarts(&p), [t("core/web2", "its action list changed", false)]);
}

#[test]
fn status_changes_start_and_stop_services() {
    let applied = "
actions: [{ name: a, script: a, process: true }]
services:
  - { name: on, actions: [a] }
  - { name: off, status: stop, actions: [a] }
  - { name: hand, status: stop, actions: [a] }
";
    let prev = desired_at(REV1, applied);
    let mut live = live_of(&prev);
    live.states.insert(r("core/hand"), RunState::Up); // started by hand
    let d = desired(&applied.replace("{ name: on,", "{ name: on, status: stop,").replace("off, status: stop,", "off,"));
    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(ops(&p), ["~ service core/off", "~ service core/on"]);
    assert_eq!(starts(&p), [t("core/off", "status set to start", false)]);
    assert_eq!(stops(&p), [t("core/hand", "started by hand", true), t("core/on", "status set to stop", false)]);
    assert_eq!(p.drift, [drift_item("service core/hand", "started by hand")]);
}

// ---- required services -----------------------------------------------------------------

#[test]
fn deleting_a_required_service_is_refused() {
    let live = live_yaml(BASE);
    let gone = "actions: [{ name: db, script: db-server --port 7000, process: true }]\nservices: [{ name: db }]\n";

    // Required in the new revision.
    let mut d = desired(gone);
    d.settings.required_services = vec![Named::new("web")];
    let p = plan(&d, &live, None, Some(REV1));
    assert!(p.is_refused());
    assert_eq!(p.refusals.len(), 1, "{:?}", p.refusals);
    assert!(p.refusals[0].contains("deletes required service core/web"), "{}", p.refusals[0]);
    let text = render_text(&p, false);
    assert!(text.contains("Refused: nothing will be applied\n"), "{text}");
    assert!(!text.contains("No changes"), "{text}");

    // Required in the applied revision only: dropping it takes two commits.
    let mut prev = desired_at(REV1, BASE);
    prev.settings.required_services = vec![Named::new("core/web")];
    let d = desired(gone);
    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert!(p.is_refused());
    assert!(p.refusals[0].contains("deletes required service core/web"), "{}", p.refusals[0]);

    // Required nowhere: the delete is planned.
    let p = plan(&desired(gone), &live, Some(&desired_at(REV1, BASE)), Some(REV1));
    assert!(!p.is_refused(), "{:?}", p.refusals);
    assert_eq!(ops(&p), ["- service core/web", "- action core/web"]);
}

#[test]
fn stopping_a_required_service_is_refused() {
    let live = live_yaml(BASE);
    let mut prev = desired_at(REV1, BASE);
    prev.settings.required_services = vec![Named::new("db")];
    // One commit both drops `db` from `required_services` and stops it.
    let d = desired(&BASE.replace("  - name: db\n  - name: web", "  - name: db\n    status: stop\n  - name: web"));
    assert_eq!(d.state.services[&key("core/db")].status, ServiceStatus::Stop);
    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(stops(&p), [t("core/db", "status set to stop", false)]);
    assert!(p.is_refused());
    assert!(p.refusals.iter().any(|x| x.contains("stops required service core/db")), "{:?}", p.refusals);
    // The same stop of a service nobody requires is fine.
    let p = plan(&d, &live, Some(&desired_at(REV1, BASE)), Some(REV1));
    assert!(!p.is_refused(), "{:?}", p.refusals);
}

// ---- migrations ------------------------------------------------------------------------

#[test]
fn pending_migrations_are_listed_in_run_order() {
    let mut d = desired("actions: []\n");
    d.migrations = vec![
        migration("2026-01-03-001_c.rhai", "cc"),
        migration("2026-01-01-001_a.rhai", "aa"),
        migration("2026-01-02-001_b.rhai", "bb"),
    ];
    let p = plan(&d, &Live::empty(), None, None);
    assert_eq!(p.migrations, ["2026-01-01-001_a.rhai", "2026-01-02-001_b.rhai", "2026-01-03-001_c.rhai"]);

    let mut live = Live::empty();
    live.applied_migrations = vec![
        Applied { name: "2026-01-01-001_a.rhai".into(), sha256: "aa".into(), result: AppliedResult::Ok },
        // A failed run is not done: it is pending again.
        Applied { name: "2026-01-02-001_b.rhai".into(), sha256: "bb".into(), result: AppliedResult::Failed },
    ];
    let p = plan(&d, &live, None, None);
    assert_eq!(p.migrations, ["2026-01-02-001_b.rhai", "2026-01-03-001_c.rhai"]);
    assert_eq!(p.summary.migrations, 2);
    assert!(!p.is_empty(), "pending migrations are work");
    assert!(!p.is_refused());
    let text = render_text(&p, false);
    assert!(
        text.contains("Migrations to run, in order:\n  2026-01-02-001_b.rhai\n  2026-01-03-001_c.rhai\n"),
        "{text}"
    );
}

#[test]
fn an_edited_applied_migration_refuses_the_plan() {
    let mut d = desired("actions: []\n");
    d.migrations = vec![migration("2026-01-01-001_a.rhai", "edited"), migration("2026-01-02-001_b.rhai", "bb")];
    let mut live = Live::empty();
    live.applied_migrations =
        vec![Applied { name: "2026-01-01-001_a.rhai".into(), sha256: "original".into(), result: AppliedResult::Ok }];
    let p = plan(&d, &live, None, None);
    assert!(p.is_refused());
    assert_eq!(p.refusals.len(), 1, "{:?}", p.refusals);
    let why = &p.refusals[0];
    assert!(why.contains("migrations/2026-01-01-001_a.rhai"), "{why}");
    assert!(why.contains("original") && why.contains("edited"), "{why}");
    assert!(p.migrations.is_empty(), "nothing runs from a refused history");
}

// ---- whole-plan properties -------------------------------------------------------------

#[test]
fn the_plan_is_deterministic() {
    let build = || {
        let prev = base_with_secret(REV1, "fp-1");
        let mut d = base_with_secret(REV2, "fp-2");
        d.migrations = vec![migration("2026-01-01-001_a.rhai", "aa")];
        let mut live = live_of(&prev);
        Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/db")).unwrap().value).script =
            "edited".into();
        Arc::make_mut(&mut live.services)
            .insert(r("core/gone"), stored(prev.state.services[&key("core/db")].clone(), true));
        Arc::make_mut(&mut Arc::make_mut(&mut live.services).get_mut(&r("core/gone")).unwrap().value).name =
            "gone".into();
        Arc::make_mut(&mut live.actions)
            .insert(r("core/hand"), stored(prev.state.actions[&key("core/db")].clone(), false));
        (prev, d, live)
    };
    let (prev, d, live) = build();
    let p1 = plan(&d, &live, Some(&prev), Some(REV1));
    let p2 = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(p1, p2);
    // Built again from scratch: the same plan, the same JSON, the same text.
    let (prev, d, live) = build();
    let p3 = plan(&d, &live, Some(&prev), Some(REV1));
    assert_eq!(p1, p3);
    assert_eq!(serde_json::to_string(&p1).unwrap(), serde_json::to_string(&p3).unwrap());
    assert_eq!(render_text(&p1, false), render_text(&p3, false));
    assert!(!p1.changes.is_empty() && !p1.restarts.is_empty() && !p1.unmanaged.is_empty());
}

#[test]
fn secret_diffs_are_fixed_notes_never_values_or_fingerprints() {
    // Fingerprints only: no decrypted values anywhere in this Desired.
    let mut d = desired("actions: []\n");
    d.secrets.insert(r("core/created"), secret("FP-CREATED-7f3a"));
    d.secrets.insert(r("core/changed"), secret("FP-CHANGED-NEW-91c2"));
    d.secrets.insert(r("core/adopted"), secret("FP-ADOPTED-55d0"));
    let mut live = Live::default();
    let ls = |fp: &str, managed| LiveSecret { fingerprint: fp.into(), source: SOURCE.into(), managed };
    live.secrets.insert(r("core/changed"), ls("FP-CHANGED-OLD-0be4", true));
    live.secrets.insert(r("core/adopted"), ls("FP-ADOPTED-55d0", false));
    live.secrets.insert(r("core/deleted"), ls("FP-DELETED-e81d", true));
    let p = plan(&d, &live, None, None);

    let diffs: BTreeMap<String, (Op, String)> =
        p.changes.iter().map(|c| (c.object(), (c.op, c.diff.clone()))).collect();
    let expect = |op, note: &str| (op, note.to_owned());
    assert_eq!(diffs["secret core/created"], expect(Op::Create, "(sensitive value)\n"));
    assert_eq!(diffs["secret core/changed"], expect(Op::Update, "(sensitive value changed)\n"));
    assert_eq!(
        diffs["secret core/adopted"],
        expect(Op::Update, "(sensitive value unchanged; set by hand, now managed from git)\n")
    );
    assert_eq!(diffs["secret core/deleted"], expect(Op::Delete, "(sensitive value)\n"));
    assert_eq!(diffs.len(), 4);

    let json = serde_json::to_string(&p).unwrap();
    let text = render_text(&p, false);
    for fp in ["FP-CREATED", "FP-CHANGED", "FP-ADOPTED", "FP-DELETED"] {
        assert!(!json.contains(fp), "fingerprint {fp} in the plan JSON: {json}");
        assert!(!text.contains(fp), "fingerprint {fp} in the rendered plan: {text}");
    }
}

#[test]
fn planning_a_revision_against_its_own_live_state_is_empty() {
    let mut d = desired(&format!(
        "{RUNNERS}  - {{ name: parked, status: stop, actions: [other] }}\n  - {{ name: loose, status: ignore, actions: [other] }}\n"
    ));
    d.secrets.insert(r("core/tok"), secret("fp"));
    d.secrets.insert(r("ops/key"), secret("fp2"));
    d.migrations = vec![migration("2026-01-01-001_a.rhai", "aa")];
    let mut live = live_of(&d);
    live.applied_migrations = vec![Applied::ok(&d.migrations[0])];
    for (prev, applied) in [(None, None), (Some(&d), Some(REV2))] {
        let p = plan(&d, &live, prev, applied);
        assert!(p.is_empty(), "{:?} {:?} {:?} {:?}", ops(&p), restarts(&p), starts(&p), stops(&p));
        assert_eq!(p.summary, Default::default());
        assert!(p.drift.is_empty() && p.unmanaged.is_empty() && p.not_pruned.is_empty());
        assert!(p.refusals.is_empty() && p.unverified_secrets.is_empty() && p.migrations.is_empty());
    }
}

// ---- rendering -------------------------------------------------------------------------

#[test]
fn render_shows_signs_and_diffs_without_ansi_codes() {
    let live = live_yaml(
        "actions: [{ name: web, script: web-v1, process: true }, { name: old, script: old }]\nservices: [{ name: web }, { name: old, actions: [old] }]\n",
    );
    let d = desired(
        "actions: [{ name: web, script: web-v2, process: true }, { name: new, script: new-job }]\nservices: [{ name: web }]\n",
    );
    let p = plan(&d, &live, None, Some(REV1));
    let text = render_text(&p, false);
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.starts_with(&format!("Plan for {} \"commit 2222\"\n", &REV2[..12])), "{text}");
    assert!(text.contains(&format!("  live: {}\n", &REV1[..12])), "{text}");
    assert!(
        text.contains("1 to create, 1 to update, 2 to delete; 1 restart, 0 starts, 1 stop; 0 migrations"),
        "{text}"
    );
    assert!(text.contains("\n+ action core/new\n"), "{text}");
    assert!(text.contains("\n~ action core/web\n"), "{text}");
    assert!(text.contains("\n- service core/old\n"), "{text}");
    assert!(text.contains("\n- action core/old\n"), "{text}");
    assert!(text.contains("\n    -script: web-v1\n    +script: web-v2\n"), "{text}");
    assert!(text.contains("\n    +script: new-job\n"), "{text}");
    assert!(text.contains("\nRestarts:\n  core/web (action core/web changed)\n"), "{text}");
    assert!(text.contains("\nStops:\n  core/old (deleted)\n"), "{text}");
    assert!(!text.contains("No changes"), "{text}");

    let colored = render_text(&p, true);
    assert!(colored.contains("\x1b[32m+ action core/new\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[33m~ action core/web\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[31m- service core/old\x1b[0m"), "{colored}");
}

#[test]
fn render_marks_drift_and_adoption() {
    let prev = desired_at(REV1, "actions: [{ name: a, script: a }, { name: b, script: b }]\n");
    let d = desired_at(REV2, "actions: [{ name: a, script: a }, { name: b, script: b }]\n");
    let mut live = live_of(&prev);
    Arc::make_mut(&mut Arc::make_mut(&mut live.actions).get_mut(&r("core/a")).unwrap().value).script = "hand".into();
    Arc::make_mut(&mut live.actions).get_mut(&r("core/b")).unwrap().managed = false;
    let text = render_text(&plan(&d, &live, Some(&prev), Some(REV1)), false);
    assert!(text.contains("\n~ action core/a (drift: reverting a change made by hand)\n"), "{text}");
    assert!(
        text.contains(
            "\n~ action core/b (drift: reverting a change made by hand; adopting unchanged: it was set by hand as git declares it, now managed from git)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Drift (reverted: self_heal is on):\n  action core/a: changed by hand\n  action core/b: set by hand\n"
        ),
        "{text}"
    );
}

#[test]
fn render_of_an_empty_plan_says_no_changes() {
    let d = desired(BASE);
    let p = plan(&d, &live_of(&d), Some(&d), Some(REV2));
    assert!(p.is_empty());
    for color in [false, true] {
        let text = render_text(&p, color);
        assert!(text.contains("No changes: the live state matches the revision.\n"), "{text}");
        assert!(text.contains("  live: the same revision\n"), "{text}");
        assert!(!text.contains("\n+ ") && !text.contains("\n~ ") && !text.contains("\n- "), "{text}");
        assert_eq!(text.contains('\x1b'), color, "{text}");
    }
    let fresh = render_text(&plan(&desired("actions: []\n"), &Live::empty(), None, None), false);
    assert!(fresh.contains("  live: nothing applied from git yet\n"), "{fresh}");
    assert!(fresh.contains("No changes"), "{fresh}");
}

/// The dry-run JSON and the UI read a cause as its sentence: every variant must come
/// back as itself, and an unknown sentence is an error, not a guess.
#[test]
fn causes_round_trip_through_their_sentence() {
    use hero_proc_reconcile::Cause;
    use hero_proc_store::Ref;
    let all = [
        Cause::NewService,
        Cause::StatusSetToStart,
        Cause::StatusSetToStop,
        Cause::StoppedByHand,
        Cause::StartedByHand,
        Cause::Deleted,
        Cause::ActionListChanged,
        Cause::ActionChanged(Ref::new("shop", "web")),
        Cause::SecretChanged(Ref::new("core", "db_password")),
    ];
    for c in all {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Cause>(&json).unwrap(), c, "{json}");
    }
    assert_eq!(
        serde_json::to_string(&Cause::ActionChanged(Ref::new("shop", "web"))).unwrap(),
        r#""action shop/web changed""#
    );
    assert!(serde_json::from_str::<Cause>(r#""the moon is full""#).is_err());
}

// ---- artifacts ------------------------------------------------------------------------

/// `desired` of `yaml` with every artifact it runs pinned to a digest made of `fill`.
fn desired_pinned(rev: &str, yaml: &str, fill: char) -> Desired {
    let mut d = desired_at(rev, yaml);
    let mut lock = hero_proc_spec::artifact::ArtifactLock::default();
    for a in d.state.actions.values() {
        if let Some(id) = hero_proc_spec::artifact::artifact_of(a) {
            let digest = hero_proc_spec::artifact::Digest::from_hex(&fill.to_string().repeat(64)).unwrap();
            let pos = a.pos.clone();
            lock.entries.insert(id, hero_proc_spec::artifact::LockEntry { digest, pos });
        }
    }
    d.artifacts = hero_proc_reconcile::artifacts_of(&d.state, &lock);
    d
}

const AGENT_V1: &str = "actions:\n  - name: agent\n    script: ~/hero/bin/agent@v1 --port 1\n    process: true\nservices:\n  - name: agent\n";

#[test]
fn a_version_bump_is_an_artifact_step_and_restarts_only_its_service() {
    let v1 = desired_pinned(REV1, AGENT_V1, 'a');
    let v2 = desired_pinned(REV2, &AGENT_V1.replace("agent@v1", "agent@v2"), 'b');
    let mut live = live_of(&v1);
    live.cached_artifacts = Some(["a".repeat(64)].into_iter().collect());
    let p = plan(&v2, &live, Some(&v1), Some(REV1));
    assert_eq!(p.artifacts.len(), 1, "{:?}", p.artifacts);
    let step = &p.artifacts[0];
    assert_eq!(
        (step.action.as_str(), step.name.as_str(), step.from.as_deref(), step.to.as_str(), step.cached),
        ("core/agent", "agent", Some("v1"), "v2", Some(false))
    );
    assert_eq!(step.digest, format!("sha256:{}", "b".repeat(64)));
    assert_eq!(p.restarts.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(), ["core/agent"]);
    let text = render_text(&p, false);
    assert!(text.contains("core/agent: agent v1 -> v2, to download"), "{text}");
    // Cached already (a rollback to a version kept in the cache).
    live.cached_artifacts = Some(["b".repeat(64)].into_iter().collect());
    let p = plan(&v2, &live, Some(&v1), Some(REV1));
    assert_eq!(p.artifacts[0].cached, Some(true));
    assert!(render_text(&p, false).contains("agent v1 -> v2, cached"));
    // Nothing changes and it is cached: no step; not cached (store wiped): a step.
    let live2 = Live { cached_artifacts: Some(["b".repeat(64)].into_iter().collect()), ..live_of(&v2) };
    assert!(plan(&v2, &live2, Some(&v2), Some(REV2)).artifacts.is_empty());
    let wiped = Live { cached_artifacts: Some(Default::default()), ..live_of(&v2) };
    let p = plan(&v2, &wiped, Some(&v2), Some(REV2));
    assert_eq!(p.artifacts.len(), 1);
    assert_eq!((p.artifacts[0].from.as_deref(), p.artifacts[0].cached), (Some("v2"), Some(false)));
    // An offline preview does not know the cache.
    let p = plan(&v2, &live_of(&v1), Some(&v1), Some(REV1));
    assert_eq!(p.artifacts[0].cached, None);
}

// ---- holds (`reconcile hold`) ---------------------------------------------------------

#[test]
fn a_held_service_keeps_its_drift_until_git_changes_it() {
    let prev = desired_at(REV1, BASE);
    let d = desired_at(REV2, BASE);
    let mut live = live_of(&prev);
    live.states.insert(r("core/db"), RunState::Down);
    // Not held: the stop by hand is drift, reverted.
    assert_eq!(starts(&plan(&d, &live, Some(&prev), Some(REV1))), [t("core/db", "stopped by hand", true)]);
    // Held: reported as held, not reverted, not released.
    live.holds.insert("service core/db".into());
    let p = plan(&d, &live, Some(&prev), Some(REV1));
    assert!(p.starts.is_empty(), "{:?}", p.starts);
    assert_eq!((p.held.clone(), p.released.clone()), (vec!["service core/db".to_owned()], vec![]));
    assert!(p.drift.iter().any(|x| x.object == "service core/db"), "still reported as drift");
    assert!(render_text(&p, false).contains("Held out of sync"));
    // Git changes the service's action: released, and its drift is reverted with it.
    let changed = desired_at(REV2, &BASE.replace("db-server", "db-server --fast"));
    let p = plan(&changed, &live, Some(&prev), Some(REV1));
    assert_eq!(p.released, ["service core/db"]);
    assert!(p.held.is_empty());
    assert_eq!(starts(&p).len(), 1, "{:?}", p.starts);
}
