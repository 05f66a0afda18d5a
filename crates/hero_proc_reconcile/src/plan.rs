//! The plan: a pure function of (desired state at a revision, live state, the desired
//! state of the revision applied last). Dry-run and apply both call [`plan`]; apply then
//! writes exactly `plan.changes`, so the preview cannot disagree with what happens.
//!
//! - Only rows the inventory marks as managed from git are pruned; rows set by hand are
//!   listed as unmanaged and left alone. A desired object that exists unmanaged is
//!   adopted (it becomes managed).
//! - A change is *drift* when git did not change the object since the applied revision
//!   but the live object differs (edited, deleted or stopped by hand). With
//!   `self_heal: false` drift is reported and not reverted.
//! - A changed action (other than its description or tags) restarts the running
//!   services that run it; so does a changed secret value for services whose actions
//!   reference it; so does a change to a service's own action list.
//! - A plan that deletes or stops a required service (in `required_services` of the
//!   new or of the applied revision) is refused: dropping one takes two commits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use hero_proc_spec::{Action, DEFAULT_CONTEXT, Kind, Named, Service, ServiceStatus};
use hero_proc_store::Ref;
use serde::{Deserialize, Serialize};

use crate::desired::Desired;
use crate::live::{Live, RunState};
use crate::repo::CommitInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    pub fn sign(self) -> char {
        match self {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        }
    }
}

/// One object the apply writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub context: String,
    pub name: String,
    pub op: Op,
    /// Git did not change it: the live object was changed by hand.
    pub drift: bool,
    /// The live object was set by hand and becomes managed from git.
    pub adopt: bool,
    /// Unified diff of the canonical YAML (secrets: a note, never a value).
    pub diff: String,
}

impl Change {
    pub fn object(&self) -> String {
        format!("{} {}/{}", self.kind, self.context, self.name)
    }
    pub fn r(&self) -> Ref {
        Ref::new(&self.context, &self.name)
    }
    /// An object set by hand that git declares identically (an export of the live state,
    /// followed): applying marks it managed and changes nothing that runs or is stored.
    pub fn is_identical_adoption(&self) -> bool {
        self.adopt
            && self.op == Op::Update
            && (self.diff.is_empty() || self.diff.starts_with("(sensitive value unchanged;"))
    }
}

/// Why the plan starts, stops or restarts a service. On the wire (dry-run JSON, the RPC,
/// the UI) it is the sentence [`Cause`]'s `Display` writes, so the JSON did not change
/// when this became an enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    NewService,
    StatusSetToStart,
    StatusSetToStop,
    StoppedByHand,
    StartedByHand,
    Deleted,
    ActionListChanged,
    ActionChanged(Ref),
    SecretChanged(Ref),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NewService => f.write_str("new service"),
            Cause::StatusSetToStart => f.write_str("status set to start"),
            Cause::StatusSetToStop => f.write_str("status set to stop"),
            Cause::StoppedByHand => f.write_str("stopped by hand"),
            Cause::StartedByHand => f.write_str("started by hand"),
            Cause::Deleted => f.write_str("deleted"),
            Cause::ActionListChanged => f.write_str("its action list changed"),
            Cause::ActionChanged(r) => write!(f, "action {r} changed"),
            Cause::SecretChanged(r) => write!(f, "secret {r} changed"),
        }
    }
}

impl std::str::FromStr for Cause {
    type Err = String;
    fn from_str(s: &str) -> Result<Cause, String> {
        let fixed = [
            Cause::NewService,
            Cause::StatusSetToStart,
            Cause::StatusSetToStop,
            Cause::StoppedByHand,
            Cause::StartedByHand,
            Cause::Deleted,
            Cause::ActionListChanged,
        ];
        if let Some(c) = fixed.into_iter().find(|c| c.to_string() == s) {
            return Ok(c);
        }
        let object = |prefix: &str| {
            s.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(" changed")).and_then(|r| Ref::parse(r).ok())
        };
        match (object("action "), object("secret ")) {
            (Some(r), _) => Ok(Cause::ActionChanged(r)),
            (_, Some(r)) => Ok(Cause::SecretChanged(r)),
            _ => Err(format!("unknown cause `{s}`")),
        }
    }
}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A service restart the plan implies, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    pub service: String,
    pub because: Cause,
    #[serde(default)]
    pub drift: bool,
}

/// A start or stop the plan implies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub service: String,
    pub because: Cause,
    #[serde(default)]
    pub drift: bool,
}

/// The recorded effects of one pending migration, or where it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationPreview {
    pub name: String,
    pub effects: Vec<String>,
    /// `migrations/<name>:line:col: error: ...` when the recording run failed (e.g. a call
    /// to a `proc` function that does not exist): the live run would fail the same way.
    pub error: Option<String>,
}

/// A pending migration held back, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMigration {
    pub name: String,
    pub reason: String,
}

/// Live state that differs from git although git did not change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftItem {
    pub object: String,
    pub what: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    /// Updates that change something (identical adoptions are counted in `adopt`).
    pub update: usize,
    /// Objects set by hand that git declares identically: marked managed, nothing else.
    #[serde(default)]
    pub adopt: usize,
    pub delete: usize,
    pub restart: usize,
    pub start: usize,
    pub stop: usize,
    pub migrations: usize,
    pub drift: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The revision planned.
    pub target: CommitInfo,
    /// The revision live now (`None` on a fresh system or with `--empty`).
    pub applied_revision: Option<String>,
    pub host: Option<String>,
    pub self_heal: bool,
    pub prune: bool,
    pub summary: Summary,
    /// What apply writes, in order: creates and updates (secrets, actions, services),
    /// then deletes in reverse dependency order (services, actions, secrets).
    pub changes: Vec<Change>,
    pub restarts: Vec<Restart>,
    pub starts: Vec<StateChange>,
    pub stops: Vec<StateChange>,
    /// Pending `migrations/*.rhai` that apply runs, in order (after the config).
    pub migrations: Vec<String>,
    /// Pending migrations not run at this revision: one failed here (it is retried on the
    /// next revision) and the ones after it.
    #[serde(default)]
    pub held_migrations: Vec<HeldMigration>,
    /// What each pending migration would do, from a recording run that applies nothing
    /// (filled by previews: [`preview_migrations`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migration_preview: Vec<MigrationPreview>,
    /// Every drift found, reverted or not (`self_heal`).
    pub drift: Vec<DriftItem>,
    /// Live objects set by hand that git does not have: left alone.
    pub unmanaged: Vec<String>,
    /// Managed objects git no longer has, kept because `prune: false`.
    pub not_pruned: Vec<String>,
    /// Secrets whose value this preview could not compare (no key here).
    pub unverified_secrets: Vec<String>,
    /// Why this plan must not be applied. A refused plan applies nothing.
    pub refusals: Vec<String>,
    /// Artifacts whose version changes or which must be downloaded (SPEC 3.6); the
    /// apply installs them before it writes anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactStep>,
    /// Objects held out of sync by hand (`reconcile hold`): their drift is left alone.
    #[serde(default)]
    pub held: Vec<String>,
    /// Held objects git has changed since: the change applies and the hold ends.
    #[serde(default)]
    pub released: Vec<String>,
    /// Who signed the revision, when the daemon requires signed commits
    /// (`serve --allowed-signers`): `signed by KEY for EMAIL (FILE line N)`, or that it
    /// was applied unsigned by `--allow-unsigned`. Recorded in history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// An action's artifact in the plan: a version change, or a version to download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactStep {
    /// `context/name` of the action.
    pub action: String,
    pub name: String,
    /// The version live now (`None`: the action is new or ran no artifact).
    pub from: Option<String>,
    pub to: String,
    /// `sha256:HEX` pinned in artifacts.lock.
    pub digest: String,
    /// Whether the daemon has it already (`None`: not known, e.g. an offline preview).
    pub cached: Option<bool>,
    /// Bytes to download, as the registry announces them (filled by the daemon's
    /// preview for versions it does not have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Plan {
    /// True when applying would do nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.restarts.is_empty()
            && self.starts.is_empty()
            && self.stops.is_empty()
            && self.migrations.is_empty()
    }
    /// Whether applying changes anything but inventory marks: `--detailed-exitcode`
    /// exits 2 only then. Identical adoptions alone ([`Change::is_identical_adoption`])
    /// are nothing to do: no object changes value, nothing restarts.
    pub fn changes_anything(&self) -> bool {
        self.changes.iter().any(|c| !c.is_identical_adoption())
            || !self.restarts.is_empty()
            || !self.starts.is_empty()
            || !self.stops.is_empty()
            || !self.migrations.is_empty()
    }
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }
    /// A previewed migration failed: the dry-run exits 1 so CI catches it.
    pub fn preview_failed(&self) -> bool {
        self.migration_preview.iter().any(|m| m.error.is_some())
    }
}

/// Run the plan's pending migrations against a recording `proc` over the state the
/// config apply would leave (desired objects plus the unmanaged live ones) and fill
/// `plan.migration_preview`. Applies nothing; pure like [`plan`].
pub fn preview_migrations(plan: &mut Plan, desired: &Desired, live: &Live) {
    use hero_proc_migrate::{ProcOps, RecordingProc, RunOptions, Snapshot, run_migration};
    if plan.migrations.is_empty() {
        return;
    }
    let mut snap = Snapshot::default();
    snap.actions.extend(desired.state.actions.values().map(|a| Action::clone(a)));
    snap.services.extend(desired.state.services.values().map(|s| Service::clone(s)));
    for (r, a) in live.actions.iter() {
        if !a.managed && !desired.state.actions.contains_key(&key_of(r)) {
            snap.actions.push(Action::clone(&a.value));
        }
    }
    for (r, s) in live.services.iter() {
        if !s.managed && !desired.state.services.contains_key(&key_of(r)) {
            snap.services.push(Service::clone(&s.value));
        }
    }
    for (r, st) in &live.states {
        let word = match st {
            RunState::Up => "running",
            RunState::Down => "inactive",
            RunState::Settled | RunState::Unknown => continue,
        };
        snap.service_states.insert(r.to_string(), word.to_owned());
    }
    for r in desired.secrets.keys().chain(live.secrets.keys()) {
        let names = snap.secret_names.entry(r.context.clone()).or_default();
        if !names.contains(&r.name) {
            names.push(r.name.clone());
        }
    }
    let mut rec = RecordingProc::new(snap);
    let mut out = Vec::new();
    for name in &plan.migrations {
        let Some(m) = desired.migrations.iter().find(|m| m.name == *name) else { continue };
        rec.begin_migration(&m.name);
        let result = run_migration(m, &mut rec, &RunOptions::default());
        let failed = result.is_err();
        out.push(MigrationPreview {
            name: m.name.clone(),
            effects: rec.effects_of(&m.name),
            error: result.err().map(|e| e.to_string()),
        });
        if failed {
            break;
        }
    }
    plan.migration_preview = out;
}

/// Compute the plan. Pure: same inputs, same plan (everything is sorted).
pub fn plan(desired: &Desired, live: &Live, previous: Option<&Desired>, applied_revision: Option<&str>) -> Plan {
    let settings = &desired.settings;
    let mut changes: Vec<Change> = Vec::new();
    let mut deletes: Vec<Change> = Vec::new();
    let mut unmanaged = Vec::new();
    let mut not_pruned = Vec::new();
    let mut unverified = Vec::new();

    // ---- secrets ----------------------------------------------------------------------
    let mut secret_value_changed: BTreeMap<Ref, bool> = BTreeMap::new();
    for (r, ds) in &desired.secrets {
        let drift = previous.is_some_and(|p| p.secrets.get(r) == Some(ds));
        match live.secrets.get(r) {
            None => changes.push(change(Kind::Secret, r, Op::Create, drift, false, "(sensitive value)\n".into())),
            Some(ls) => {
                let differs = ds.fingerprint.as_ref().is_some_and(|f| *f != ls.fingerprint);
                if ds.fingerprint.is_none() {
                    unverified.push(format!("secret {r}"));
                }
                if differs || !ls.managed || ls.source != ds.source {
                    let note = if differs {
                        "(sensitive value changed)\n".to_owned()
                    } else if !ls.managed && ds.fingerprint.is_none() {
                        "(sensitive value not compared: no key here; set by hand, now managed from git)\n".to_owned()
                    } else if !ls.managed {
                        "(sensitive value unchanged; set by hand, now managed from git)\n".to_owned()
                    } else {
                        format!("(source changed: {} -> {})\n", ls.source, ds.source)
                    };
                    if differs {
                        secret_value_changed.insert(r.clone(), drift);
                    }
                    changes.push(change(Kind::Secret, r, Op::Update, drift, !ls.managed, note));
                }
            }
        }
    }
    for (r, ls) in &live.secrets {
        if desired.secrets.contains_key(r) {
            continue;
        }
        let gone_before = previous.is_some_and(|p| p.settings.prune && !p.secrets.contains_key(r));
        if let Some(drift) =
            leftover(Kind::Secret, r, ls.managed, settings.prune, gone_before, &mut unmanaged, &mut not_pruned)
        {
            deletes.push(change(Kind::Secret, r, Op::Delete, drift, false, "(sensitive value)\n".into()));
        }
    }

    // ---- actions ----------------------------------------------------------------------
    let mut action_changed: BTreeMap<Ref, bool> = BTreeMap::new();
    // Desired and live are both ordered by context then name: one walk, no lookups, and
    // no key built for an unchanged object (most objects of a sync).
    let mut live_actions = live.actions.iter().peekable();
    for (key, a) in &desired.state.actions {
        let stored = seek(&mut live_actions, key);
        if stored.is_some_and(|s| s.managed && same(&s.value, a)) {
            continue;
        }
        let r = Ref::new(&key.0, &key.1);
        let drift = || previous.is_some_and(|p| p.state.actions.get(key).is_some_and(|p| same(p, a)));
        match stored {
            None => changes.push(change(
                Kind::Action,
                &r,
                Op::Create,
                drift(),
                false,
                yaml_diff(&r, Kind::Action, "", &yaml(a)),
            )),
            Some(s) if !same(&s.value, a) => {
                if runs_differently(&s.value, a) {
                    action_changed.insert(r.clone(), drift());
                }
                let diff = yaml_diff(&r, Kind::Action, &yaml(&s.value), &yaml(a));
                changes.push(change(Kind::Action, &r, Op::Update, drift(), !s.managed, diff));
            }
            Some(s) if !s.managed => changes.push(change(Kind::Action, &r, Op::Update, drift(), true, String::new())),
            Some(_) => {}
        }
    }
    let mut action_deletes = Vec::new();
    for (r, s) in not_in(live.actions.iter(), &desired.state.actions) {
        let gone_before = previous.is_some_and(|p| p.settings.prune && !p.state.actions.contains_key(&key_of(r)));
        let Some(drift) =
            leftover(Kind::Action, r, s.managed, settings.prune, gone_before, &mut unmanaged, &mut not_pruned)
        else {
            continue;
        };
        let deps: Vec<Ref> =
            s.value.depends_on.iter().map(|d| resolve(d, &s.value.context, |x| live.actions.contains_key(x))).collect();
        let diff = yaml_diff(r, Kind::Action, &yaml(&s.value), "");
        action_deletes.push((r.clone(), deps, change(Kind::Action, r, Op::Delete, drift, false, diff)));
    }

    // ---- services ---------------------------------------------------------------------
    // The bare names of the changed actions: a service none of whose actions has one of
    // them is not looked at further (see `restart_cause`).
    let changed_names: BTreeSet<&str> = action_changed.keys().map(|r| r.name.as_str()).collect();
    let mut restarts = Vec::new();
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for (key, s) in &desired.state.services {
        let r = Ref::new(&key.0, &key.1);
        let prev = previous.map(|p| p.state.services.get(key));
        let drift = prev.is_some_and(|p| p.is_some_and(|p| same(p, s)));
        let state = live.state(&r);
        let Some(stored) = live.services.get(&r) else {
            changes.push(change(
                Kind::Service,
                &r,
                Op::Create,
                drift,
                false,
                yaml_diff(&r, Kind::Service, "", &yaml(s)),
            ));
            if s.status == ServiceStatus::Start {
                starts.push(StateChange { service: r.to_string(), because: Cause::NewService, drift });
            }
            continue;
        };
        let old = &stored.value;
        if !same(old, s) {
            let diff = yaml_diff(&r, Kind::Service, &yaml(old), &yaml(s));
            changes.push(change(Kind::Service, &r, Op::Update, drift, !stored.managed, diff));
        } else if !stored.managed {
            changes.push(change(Kind::Service, &r, Op::Update, drift, true, String::new()));
        }
        let up = matches!(state, RunState::Up | RunState::Unknown);
        match s.status {
            ServiceStatus::Start if old.status != ServiceStatus::Start => {
                starts.push(StateChange { service: r.to_string(), because: Cause::StatusSetToStart, drift });
            }
            ServiceStatus::Start if state == RunState::Down => {
                // Stopped by hand (git wants it running). Drift unless git just changed it.
                let drift = prev.is_some_and(|p| p.is_some_and(|p| p.status == ServiceStatus::Start));
                starts.push(StateChange { service: r.to_string(), because: Cause::StoppedByHand, drift });
            }
            ServiceStatus::Start if up => {
                if let Some((because, drift)) =
                    restart_cause(s, old, desired, &action_changed, &changed_names, &secret_value_changed, drift)
                {
                    restarts.push(Restart { service: r.to_string(), because, drift });
                }
            }
            ServiceStatus::Stop if old.status != ServiceStatus::Stop && up => {
                stops.push(StateChange { service: r.to_string(), because: Cause::StatusSetToStop, drift });
            }
            ServiceStatus::Stop if state == RunState::Up => {
                let drift = prev.is_some_and(|p| p.is_some_and(|p| p.status == ServiceStatus::Stop));
                stops.push(StateChange { service: r.to_string(), because: Cause::StartedByHand, drift });
            }
            _ => {}
        }
    }
    let mut service_deletes = Vec::new();
    for (r, s) in not_in(live.services.iter(), &desired.state.services) {
        let gone_before = previous.is_some_and(|p| p.settings.prune && !p.state.services.contains_key(&key_of(r)));
        let Some(drift) =
            leftover(Kind::Service, r, s.managed, settings.prune, gone_before, &mut unmanaged, &mut not_pruned)
        else {
            continue;
        };
        if matches!(live.state(r), RunState::Up | RunState::Unknown) {
            stops.push(StateChange { service: r.to_string(), because: Cause::Deleted, drift });
        }
        let deps: Vec<Ref> = s
            .value
            .requires
            .iter()
            .chain(&s.value.after)
            .map(|d| resolve(d, &s.value.context, |x| live.services.contains_key(x)))
            .collect();
        let diff = yaml_diff(r, Kind::Service, &yaml(&s.value), "");
        service_deletes.push((r.clone(), deps, change(Kind::Service, r, Op::Delete, drift, false, diff)));
    }
    // Deletes: dependents before what they depend on; services, then actions, then secrets.
    let mut ordered = reverse_dependency_order(service_deletes);
    ordered.extend(reverse_dependency_order(action_deletes));
    ordered.extend(deletes);

    // Creates and updates: secrets, actions, services (each sorted by key already).
    changes.sort_by_key(|c| match c.kind {
        Kind::Secret => 0,
        Kind::Action => 1,
        Kind::Service => 2,
    });
    changes.extend(ordered);

    // ---- migrations -------------------------------------------------------------------
    let mut refusals = Vec::new();
    let mut migrations: Vec<String> = Vec::new();
    let mut held_migrations: Vec<HeldMigration> = Vec::new();
    match hero_proc_migrate::check_history(&desired.migrations, &live.applied_migrations) {
        Ok(pending) => {
            for m in pending {
                // Failed at this very revision with this very file: retried on the next
                // revision, and the ones after it wait (order is the contract).
                let failed_here = live
                    .failed_migrations
                    .get(&m.name)
                    .filter(|f| f.sha256 == m.sha256 && f.revision.as_deref() == Some(desired.commit.id.as_str()));
                if let Some(f) = failed_here {
                    let why = f.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("failed");
                    held_migrations.push(HeldMigration {
                        name: m.name.clone(),
                        reason: format!("failed at this revision ({why}); retried on the next revision"),
                    });
                } else if let Some(first) = held_migrations.first() {
                    let reason = format!("waits for {}", first.name);
                    held_migrations.push(HeldMigration { name: m.name.clone(), reason });
                } else {
                    migrations.push(m.name.clone());
                }
            }
        }
        Err(errors) => refusals.extend(errors.0.iter().map(|e| e.to_string())),
    }

    // ---- drift and self_heal ----------------------------------------------------------
    let mut drift = Vec::new();
    for c in changes.iter().filter(|c| c.drift) {
        let what = match (c.op, c.adopt) {
            (Op::Create, _) => "deleted by hand",
            (Op::Update, true) => "set by hand",
            (Op::Update, false) => "changed by hand",
            (Op::Delete, _) => "not in git",
        };
        drift.push(DriftItem { object: c.object(), what: what.into() });
    }
    for s in starts.iter().chain(&stops).filter(|s| s.drift) {
        drift.push(DriftItem { object: format!("service {}", s.service), what: s.because.to_string() });
    }
    if !settings.self_heal {
        changes.retain(|c| !c.drift);
        restarts.retain(|c| !c.drift);
        starts.retain(|c| !c.drift);
        stops.retain(|c| !c.drift);
    }

    // ---- objects held out of sync (`reconcile hold`) ------------------------------------
    // A hold is self_heal off for one object: its drift stays. A change git made to it
    // (not drift) is newer intent than the hand change: it applies and ends the hold.
    let is_held = |o: &str| live.holds.contains(o);
    let mut released: Vec<String> =
        changes.iter().filter(|c| !c.drift && is_held(&c.object())).map(Change::object).collect();
    // A held service is released by a git change to one of its actions too: to whoever
    // wrote it, the action is part of the service.
    for svc in desired.state.services.values() {
        let object = format!("service {}/{}", svc.context, svc.name);
        if !is_held(&object) {
            continue;
        }
        let exists = |r: &Ref| desired.state.actions.contains_key(&key_of(r));
        if svc.actions.iter().any(|n| action_changed.get(&resolve(n, &svc.context, exists)) == Some(&false)) {
            released.push(object);
        }
    }
    released.sort();
    released.dedup();
    // A released object is managed again in this very plan: its drift is reverted too.
    let keeps = |o: &str| is_held(o) && !released.iter().any(|r| r == o);
    let held_service = |s: &str| keeps(&format!("service {s}"));
    changes.retain(|c| !(c.drift && keeps(&c.object())));
    restarts.retain(|r| !(r.drift && held_service(&r.service)));
    starts.retain(|s| !(s.drift && held_service(&s.service)));
    stops.retain(|s| !(s.drift && held_service(&s.service)));
    let held: Vec<String> = live.holds.iter().filter(|h| !released.contains(h)).cloned().collect();

    // ---- required services ------------------------------------------------------------
    let mut required: BTreeSet<Ref> = BTreeSet::new();
    for list in std::iter::once(&settings.required_services).chain(previous.map(|p| &p.settings.required_services)) {
        for n in list {
            required.insert(resolve(n, DEFAULT_CONTEXT, |_| false));
        }
    }
    for c in &changes {
        if c.kind == Kind::Service && c.op == Op::Delete && required.contains(&c.r()) {
            refusals.push(format!(
                "this revision deletes required service {}; a required service (hero.yaml `required_services`) must keep running: restore it, or first remove it from `required_services` in one commit and delete it in the next",
                c.r()
            ));
        }
    }
    for s in &stops {
        if s.because != Cause::Deleted && required.iter().any(|r| r.to_string() == s.service) {
            refusals.push(format!(
                "this revision stops required service {}; a required service (hero.yaml `required_services`) must keep running: set `status: start`, or first remove it from `required_services`",
                s.service
            ));
        }
    }

    // ---- artifacts ----------------------------------------------------------------------
    let mut artifacts = Vec::new();
    for (r, (id, digest)) in &desired.artifacts {
        let from = live.actions.get(r).and_then(|a| hero_proc_spec::artifact::artifact_of(&a.value));
        let cached = live.cached_artifacts.as_ref().map(|c| c.contains(digest.hex()));
        let same_version = from.as_ref() == Some(id);
        if same_version && cached != Some(false) {
            continue;
        }
        artifacts.push(ArtifactStep {
            action: r.to_string(),
            name: id.name.clone(),
            from: from.filter(|f| f.name == id.name).map(|f| f.version),
            to: id.version.clone(),
            digest: digest.to_string(),
            cached,
            size: None,
        });
    }

    unmanaged.sort();
    not_pruned.sort();
    unverified.sort();
    let summary = Summary {
        create: changes.iter().filter(|c| c.op == Op::Create).count(),
        update: changes.iter().filter(|c| c.op == Op::Update && !c.is_identical_adoption()).count(),
        adopt: changes.iter().filter(|c| c.is_identical_adoption()).count(),
        delete: changes.iter().filter(|c| c.op == Op::Delete).count(),
        restart: restarts.len(),
        start: starts.len(),
        stop: stops.len(),
        migrations: migrations.len(),
        drift: drift.len(),
    };
    Plan {
        target: desired.commit.clone(),
        applied_revision: applied_revision.map(str::to_owned),
        host: desired.host.clone(),
        self_heal: settings.self_heal,
        prune: settings.prune,
        summary,
        changes,
        restarts,
        starts,
        stops,
        migrations,
        held_migrations,
        migration_preview: Vec::new(),
        drift,
        unmanaged,
        not_pruned,
        unverified_secrets: unverified,
        refusals,
        artifacts,
        held,
        released,
        signature: None,
    }
}

/// A live row git does not have: listed as unmanaged (set by hand, never pruned) or as
/// not pruned (`prune: false`); otherwise it is deleted, and the deletion is drift when
/// the applied revision had already pruned it (`gone_before`). `None`: only listed.
fn leftover(
    kind: Kind,
    r: &Ref,
    managed: bool,
    prune: bool,
    gone_before: bool,
    unmanaged: &mut Vec<String>,
    not_pruned: &mut Vec<String>,
) -> Option<bool> {
    match (managed, prune) {
        (false, _) => unmanaged.push(format!("{kind} {r}")),
        (true, false) => not_pruned.push(format!("{kind} {r}")),
        (true, true) => return Some(gone_before),
    }
    None
}

/// The desired-state map key of a reference.
/// Advance `live` (ordered by context then name) to `key`: the row there, if any.
fn seek<'a, V: 'a>(
    live: &mut std::iter::Peekable<impl Iterator<Item = (&'a Ref, &'a V)>>,
    key: &(String, String),
) -> Option<&'a V> {
    let at = |r: &Ref| (r.context.as_str(), r.name.as_str()).cmp(&(key.0.as_str(), key.1.as_str()));
    while live.next_if(|(r, _)| at(r).is_lt()).is_some() {}
    live.next_if(|(r, _)| at(r).is_eq()).map(|(_, v)| v)
}

/// The live rows whose key `desired` lacks (both ordered by context then name).
fn not_in<'a, V: 'a, D>(
    live: impl Iterator<Item = (&'a Ref, &'a V)>,
    desired: &'a BTreeMap<(String, String), D>,
) -> impl Iterator<Item = (&'a Ref, &'a V)> {
    let mut keys = desired.keys().peekable();
    live.filter(move |(r, _)| {
        let at = |k: &&(String, String)| (k.0.as_str(), k.1.as_str()).cmp(&(r.context.as_str(), r.name.as_str()));
        while keys.next_if(|k| at(k).is_lt()).is_some() {}
        keys.next_if(|k| at(k).is_eq()).is_none()
    })
}

/// Equal objects; the same one (a row the mirror shares with git) without a compare.
fn same<T: Eq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

fn key_of(r: &Ref) -> (String, String) {
    (r.context.clone(), r.name.clone())
}

fn change(kind: Kind, r: &Ref, op: Op, drift: bool, adopt: bool, diff: String) -> Change {
    Change { kind, context: r.context.clone(), name: r.name.clone(), op, drift, adopt, diff }
}

/// Canonical YAML: the model's field order, so equal objects print the same text.
pub fn yaml<T: Serialize>(v: &T) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn yaml_diff(r: &Ref, kind: Kind, before: &str, after: &str) -> String {
    let from = if before.is_empty() { "/dev/null".to_owned() } else { format!("live/{kind}/{r}") };
    let to = if after.is_empty() { "/dev/null".to_owned() } else { format!("git/{kind}/{r}") };
    similar::TextDiff::from_lines(before, after).unified_diff().context_radius(3).header(&from, &to).to_string()
}

/// Whether a change to an action changes what runs (description and tags do not).
fn runs_differently(a: &Action, b: &Action) -> bool {
    let strip = |x: &Action| {
        let mut x = x.clone();
        x.description = None;
        x.tags.clear();
        x
    };
    strip(a) != strip(b)
}

/// The one reference rule ([`Ref::resolve`]), for a name written in a file.
fn resolve(n: &Named, context: &str, exists: impl Fn(&Ref) -> bool) -> Ref {
    Ref::resolve(&n.name, context, exists)
}

/// Why a running service must restart, if it must; and whether that is drift only.
fn restart_cause(
    s: &Service,
    old: &Service,
    desired: &Desired,
    action_changed: &BTreeMap<Ref, bool>,
    changed_names: &BTreeSet<&str>,
    secret_changed: &BTreeMap<Ref, bool>,
    service_drift: bool,
) -> Option<(Cause, bool)> {
    // Every cause, then the first one git made (a drift cause must not hide it: with
    // self_heal off drift restarts are dropped, git's must still happen).
    let mut causes: Vec<(Cause, bool)> = Vec::new();
    if s.actions != old.actions {
        causes.push((Cause::ActionListChanged, service_drift));
    }
    if action_changed.is_empty() && secret_changed.is_empty() {
        // Nothing any action could restart for: no lookups (every running service of
        // every sync comes through here).
        return causes.pop();
    }
    let exists = |r: &Ref| desired.state.actions.contains_key(&key_of(r));
    for n in &s.actions {
        if secret_changed.is_empty() && !changed_names.contains(Ref::split(&n.name).1) {
            continue;
        }
        let ar = resolve(n, &s.context, exists);
        if let Some(drift) = action_changed.get(&ar) {
            causes.push((Cause::ActionChanged(ar.clone()), *drift));
        }
        if let Some(a) = desired.state.actions.get(&key_of(&ar)) {
            for sec in a.secret_refs() {
                let sr = Ref::new(&a.context, &sec.name);
                if let Some(drift) = secret_changed.get(&sr) {
                    causes.push((Cause::SecretChanged(sr.clone()), *drift));
                }
            }
        }
    }
    let git = causes.iter().position(|(_, drift)| !drift);
    match git {
        Some(i) => Some(causes.swap_remove(i)),
        None => causes.into_iter().next(),
    }
}

/// Order deletions so that an object goes before the objects it depends on (a service
/// is stopped before what it requires). Ties and cycles fall back to key order.
fn reverse_dependency_order(mut items: Vec<(Ref, Vec<Ref>, Change)>) -> Vec<Change> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: BTreeSet<Ref> = items.iter().map(|i| i.0.clone()).collect();
    // How many remaining items depend on each key.
    let mut dependents: BTreeMap<Ref, usize> = keys.iter().map(|k| (k.clone(), 0)).collect();
    for (_, deps, _) in &items {
        for d in deps.iter().filter(|d| keys.contains(*d)) {
            *dependents.entry(d.clone()).or_default() += 1;
        }
    }
    let mut out = Vec::with_capacity(items.len());
    let mut remaining = items;
    while !remaining.is_empty() {
        let pos = remaining.iter().position(|i| dependents.get(&i.0).copied().unwrap_or(0) == 0).unwrap_or(0);
        let (_, deps, c) = remaining.remove(pos);
        for d in deps.iter().filter(|d| keys.contains(*d)) {
            if let Some(n) = dependents.get_mut(d) {
                *n = n.saturating_sub(1);
            }
        }
        out.push(c);
    }
    out
}
