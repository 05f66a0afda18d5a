//! `apply` against a real SQLite store: rows, inventory marks, sync state and history in
//! one transaction; any failure (sealing, a refused or stale plan) writes nothing.

use std::collections::BTreeMap;

use hero_proc_reconcile::desired::SecretValues;
use hero_proc_reconcile::{
    ApplyError, CommitInfo, Desired, DesiredSecret, Live, RunState, SecretSealer, apply, plan, record_failure,
};
use hero_proc_spec::load::parse_objects;
use hero_proc_spec::{ConfigTree, Diagnostics, Settings};
use hero_proc_store::{Origin, Ref, SecretRecord, Store, SyncResult};

const REV: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";

const YAML: &str = "
actions:
  - name: prep
    script: 'true'
  - name: web
    script: web --serve
    process: true
    env:
      TOKEN: { secret: tok }
services:
  - name: web
    actions: [prep, web]
";

fn desired(yaml: &str, secrets: &[(&str, &str)]) -> Desired {
    let mut diags = Diagnostics::new();
    let base = parse_objects("actions/t.yaml", yaml, &mut diags);
    assert!(!diags.has_errors());
    let tree = ConfigTree { base, ..ConfigTree::default() };
    let mut values = SecretValues::default();
    let mut map = BTreeMap::new();
    for (name, value) in secrets {
        let r = Ref::new("core", *name);
        map.insert(
            r.clone(),
            DesiredSecret { source: "secrets/core.sops.yaml".into(), fingerprint: Some(format!("fp:{value}")) },
        );
        values.insert(r, hero_proc_sops::SecretValue::from(value.to_string()));
    }
    Desired {
        commit: CommitInfo { id: REV.into(), author: Some("A <a@b>".into()), committed_at_ms: Some(1), summary: None },
        host: None,
        state: tree.desired_for(None),
        settings: Settings { required_services: Vec::new(), ..Settings::default() },
        secrets: map,
        migrations: Vec::new(),
        values,
        artifacts: BTreeMap::new(),
    }
}

/// Seals by reversing the bytes (never the plaintext), or fails for one name.
struct Sealer(Option<&'static str>);
impl SecretSealer for Sealer {
    fn seal(&self, context: &str, name: &str, value: &str, source: &str) -> Result<SecretRecord, String> {
        if self.0 == Some(name) {
            return Err("no key".into());
        }
        Ok(SecretRecord {
            context: context.into(),
            name: name.into(),
            ciphertext: value.bytes().rev().collect(),
            fingerprint: format!("fp:{value}"),
            source: source.into(),
        })
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("t.db")).unwrap();
    (dir, store)
}

fn live(store: &Store) -> Live {
    let mut l = Live::read(store).unwrap();
    for r in l.services.keys().cloned().collect::<Vec<_>>() {
        l.states.insert(r, RunState::Up);
    }
    l
}

fn counts(store: &Store) -> (usize, usize, usize, usize) {
    (
        store.list_actions().unwrap().len(),
        store.list_services().unwrap().len(),
        store.list_secrets().unwrap().len(),
        store.history(100).unwrap().len(),
    )
}

#[test]
fn rows_inventory_state_and_history_land_together() {
    let (_d, store) = store();
    let d = desired(YAML, &[("tok", "s3cret")]);
    let p = plan(&d, &live(&store), None, None);
    assert_eq!(p.summary.create, 4);
    let change = apply(&store, &p, &d, &Sealer(None), false, 42).unwrap();
    assert_eq!(change.actions_changed.len(), 2);
    assert_eq!(change.services_changed, vec![Ref::new("core", "web")]);
    for a in store.list_actions().unwrap() {
        assert!(a.managed && a.revision.as_deref() == Some(REV), "inventory mark on {}", a.value.name);
    }
    let sec = store.get_secret("core", "tok").unwrap().unwrap();
    assert!(sec.managed);
    assert_ne!(sec.value.ciphertext, b"s3cret".to_vec(), "sealed, not plaintext");
    let state = store.sync_state().unwrap();
    assert_eq!(state.applied_revision.as_deref(), Some(REV));
    assert_eq!(state.applied_at_ms, Some(42));
    assert!(state.last_error.is_none() && state.pinned_revision.is_none());
    let h = store.history(10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].record.result, SyncResult::Applied);
    assert_eq!(h[0].record.summary["create"], 4);
    // Planned again against what was written: nothing to do, and no new history line.
    let again = plan(&d, &live(&store), Some(&d), Some(REV));
    assert!(again.is_empty(), "{again:#?}");
    apply(&store, &again, &d, &Sealer(None), true, 43).unwrap();
    assert_eq!(store.history(10).unwrap().len(), 1, "an empty plan of the same revision is not history");
    assert_eq!(store.sync_state().unwrap().pinned_revision.as_deref(), Some(REV), "pinned in the same write");
}

#[test]
fn a_sealing_failure_writes_nothing() {
    let (_d, store) = store();
    let d = desired(YAML, &[("tok", "a"), ("zz_other", "VALUE-of-zz-other")]);
    let p = plan(&d, &live(&store), None, None);
    let e = apply(&store, &p, &d, &Sealer(Some("zz_other")), false, 1).unwrap_err();
    assert!(matches!(e, ApplyError::Seal { .. }), "{e}");
    assert!(e.to_string().contains("core/zz_other") && !e.to_string().contains("VALUE-of"), "{e}");
    assert_eq!(counts(&store), (0, 0, 0, 0));
    assert!(store.sync_state().unwrap().applied_revision.is_none());
}

#[test]
fn a_refused_or_stale_plan_writes_nothing() {
    let (_d, store) = store();
    let d = desired(YAML, &[("tok", "a")]);
    let mut p = plan(&d, &live(&store), None, None);
    p.refusals.push("this revision deletes required service core/hero_db".into());
    assert!(matches!(apply(&store, &p, &d, &Sealer(None), false, 1), Err(ApplyError::Refused(_))));
    assert_eq!(counts(&store), (0, 0, 0, 0));

    // A plan made for another desired state: the service is missing from `other`, so the
    // transaction fails after the actions were put, and rolls them back.
    let p = plan(&d, &live(&store), None, None);
    let other =
        desired("actions:\n  - name: prep\n    script: 'true'\n  - name: web\n    script: w\n", &[("tok", "a")]);
    let e = apply(&store, &p, &other, &Sealer(None), false, 1).unwrap_err();
    assert!(matches!(e, ApplyError::Stale(_)), "{e}");
    assert_eq!(counts(&store), (0, 0, 0, 0), "rolled back");
}

#[test]
fn pruning_removes_managed_rows_and_leaves_rows_set_by_hand() {
    let (_d, store) = store();
    let d = desired(YAML, &[("tok", "a")]);
    apply(&store, &plan(&d, &live(&store), None, None), &d, &Sealer(None), false, 1).unwrap();
    let manual = desired("actions:\n  - name: by_hand\n    script: 'true'\n", &[]);
    store.put_action(manual.state.actions.values().next().unwrap(), &Origin::manual()).unwrap();
    let empty = desired("actions: []\n", &[]);
    let p = plan(&empty, &live(&store), Some(&d), Some(REV));
    assert_eq!(p.unmanaged, vec!["action core/by_hand".to_owned()]);
    assert_eq!(p.summary.delete, 4);
    let change = apply(&store, &p, &empty, &Sealer(None), false, 2).unwrap();
    assert_eq!(change.services_deleted, vec![Ref::new("core", "web")]);
    let left: Vec<String> = store.list_actions().unwrap().into_iter().map(|a| a.value.name).collect();
    assert_eq!(left, vec!["by_hand".to_owned()]);
    assert!(store.list_secrets().unwrap().is_empty());
}

#[test]
fn a_failure_is_one_history_line_per_revision_and_error() {
    let (_d, store) = store();
    let d = desired(YAML, &[]);
    apply(&store, &plan(&d, &live(&store), None, None), &d, &Sealer(None), false, 1).unwrap();
    let bad = CommitInfo { id: "f".repeat(40), author: None, committed_at_ms: None, summary: Some("typo".into()) };
    for t in 0..3 {
        record_failure(&store, Some(&bad), SyncResult::Failed, "actions/x.yaml:3:5: error: unknown field", 10 + t)
            .unwrap();
    }
    let state = store.sync_state().unwrap();
    assert_eq!(state.applied_revision.as_deref(), Some(REV), "the last good revision stays applied");
    assert_eq!(state.attempted_revision.as_deref(), Some(bad.id.as_str()));
    assert_eq!(state.attempted_at_ms, Some(12));
    let h = store.history(10).unwrap();
    assert_eq!(h.iter().filter(|e| e.record.result == SyncResult::Failed).count(), 1, "retries add no lines");
    record_failure(&store, Some(&bad), SyncResult::Failed, "another error", 20).unwrap();
    assert_eq!(store.history(10).unwrap().len(), 3, "a new error is a new line");
}

/// The daemon's mirror of the config rows reads what a full read reads, across an apply,
/// a hand edit, a delete and a re-insert; after `share`, rows equal to git's objects are
/// git's objects, and a hand edit after that is still seen (as drift), because the edited
/// row's new version is decoded again.
#[test]
fn the_live_mirror_reads_what_a_full_read_reads_and_shares_git_objects() {
    use hero_proc_reconcile::live::LiveMirror;
    use std::sync::Arc;

    let (_d, store) = store();
    let mut mirror = LiveMirror::default();
    let same_rows = |mirror: &mut LiveMirror| {
        let full = Live::read(&store).unwrap();
        let mirrored = Live::read_mirrored(&store, mirror).unwrap();
        assert_eq!(mirrored.actions, full.actions);
        assert_eq!(mirrored.services, full.services);
        mirrored
    };
    assert!(same_rows(&mut mirror).actions.is_empty());

    let d = desired(YAML, &[]);
    let p = plan(&d, &same_rows(&mut mirror), None, None);
    apply(&store, &p, &d, &Sealer(None), false, 1).unwrap();
    let l = same_rows(&mut mirror);
    assert_eq!(l.actions.len(), 2);
    let web = Ref::new("core", "web");
    let key = ("core".to_owned(), "web".to_owned());
    assert!(!Arc::ptr_eq(&l.actions[&web].value, &d.state.actions[&key]), "decoded from the store");
    assert!(plan(&d, &l, Some(&d), Some(REV)).is_empty());

    mirror.share(&d.state);
    let l = same_rows(&mut mirror);
    assert!(Arc::ptr_eq(&l.actions[&web].value, &d.state.actions[&key]), "git's object after share");
    assert!(Arc::ptr_eq(&l.services[&web].value, &d.state.services[&key]));
    assert!(plan(&d, &l, Some(&d), Some(REV)).is_empty());

    // A hand edit: a new version, decoded again, no longer git's object: drift.
    let mut edited = hero_proc_spec::Action::clone(&d.state.actions[&key]);
    edited.script = "web --by-hand".into();
    store.put_action(&edited, &Origin::manual()).unwrap();
    let l = same_rows(&mut mirror);
    assert_eq!(l.actions[&web].value.script, "web --by-hand");
    let p = plan(&d, &l, Some(&d), Some(REV));
    assert_eq!(p.drift.iter().map(|d| d.object.as_str()).collect::<Vec<_>>(), ["action core/web"], "{p:?}");

    // Deleted, then put back: the mirror follows both.
    assert!(store.delete_action("core", "prep").unwrap());
    assert_eq!(same_rows(&mut mirror).actions.len(), 1);
    store.put_action(&d.state.actions[&("core".to_owned(), "prep".to_owned())], &Origin::manual()).unwrap();
    assert_eq!(same_rows(&mut mirror).actions.len(), 2);
    assert_eq!(mirror.len(), 3);

    // A delete and an insert between two reads leave the count equal: still seen.
    assert!(store.delete_action("core", "prep").unwrap());
    let mut other = hero_proc_spec::Action::clone(&d.state.actions[&key]);
    other.name = "other".into();
    store.put_action(&other, &Origin::manual()).unwrap();
    let l = same_rows(&mut mirror);
    assert_eq!(l.actions.keys().map(|r| r.to_string()).collect::<Vec<_>>(), ["core/other", "core/web"]);
}
