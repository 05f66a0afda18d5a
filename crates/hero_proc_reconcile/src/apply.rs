//! Apply a plan: every config row of the plan, its inventory mark (`Origin::git`), the
//! sync state and the history line are written in **one** SQLite transaction. Either
//! all of the revision is recorded or none of it, so nothing applied can be missing from
//! the inventory (the Flux orphan bug) and a failure leaves the last revision intact.
//! The engine then acts on the returned [`AppliedChange`].

use hero_proc_spec::Kind;
use hero_proc_store::{Origin, Ref, SecretRecord, Store, StoreError, SyncRecord, SyncResult};
use serde::{Deserialize, Serialize};

use crate::desired::Desired;
use crate::plan::{Op, Plan};

/// Seals a secret value for the database (the daemon's at-rest key).
pub trait SecretSealer {
    fn seal(&self, context: &str, name: &str, value: &str, source: &str) -> Result<SecretRecord, String>;
}

/// What changed, for the engine (reload, stop, restart, start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChange {
    pub actions_changed: Vec<Ref>,
    pub actions_deleted: Vec<Ref>,
    pub services_changed: Vec<Ref>,
    pub services_deleted: Vec<Ref>,
    pub secrets_changed: Vec<Ref>,
    pub restarts: Vec<Ref>,
    pub starts: Vec<Ref>,
    pub stops: Vec<Ref>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan is refused; nothing was applied:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error(
        "secret {0} has no decrypted value; nothing was applied: a preview plan (made without the key) cannot be applied; apply through the daemon, which decrypts with the host key"
    )]
    MissingValue(Ref),
    #[error("cannot seal secret {secret} for the database; nothing was applied: {message}")]
    Seal { secret: Ref, message: String },
    #[error(
        "{0} is in the plan but not in the desired state: the plan is stale; nothing was applied: plan again (`hero_proc reconcile`) and apply that plan"
    )]
    Stale(Ref),
    #[error("cannot write the revision to the database; nothing was applied: {0}")]
    Store(#[from] StoreError),
}

/// The JSON kept in `sync_history.summary`.
pub fn history_summary(plan: &Plan) -> serde_json::Value {
    const LISTED: usize = 100;
    let changes: Vec<String> =
        plan.changes.iter().take(LISTED).map(|c| format!("{} {}", c.op.sign(), c.object())).collect();
    serde_json::json!({
        "create": plan.summary.create,
        "update": plan.summary.update,
        "adopt": plan.summary.adopt,
        "delete": plan.summary.delete,
        "restart": plan.summary.restart,
        "start": plan.summary.start,
        "stop": plan.summary.stop,
        "migrations": plan.migrations,
        "drift": plan.summary.drift,
        "changes": changes,
        "more_changes": plan.changes.len().saturating_sub(LISTED),
        "commit": plan.target.summary,
        "host": plan.host,
        // The revision was already applied: this sync only put back what was changed by
        // hand (history says so instead of repeating the commit's subject).
        "self_heal": plan.applied_revision.as_deref() == Some(plan.target.id.as_str()) && !plan.is_empty(),
        "signature": plan.signature,
    })
}

/// The plan names services as `context/name` it printed from a [`Ref`] of a validated
/// spec, so the parse cannot fail; a bare name would be in `core`.
fn parse_ref(s: &str) -> Ref {
    Ref::parse(s).unwrap_or_else(|_| Ref::new(hero_proc_spec::DEFAULT_CONTEXT, s))
}

/// Write the plan's changes for `desired` in one transaction and record the revision as
/// applied (and, with `pin`, as the revision automatic sync holds until resumed).
/// `plan` must have been computed from `desired`.
pub fn apply(
    store: &Store,
    plan: &Plan,
    desired: &Desired,
    sealer: &dyn SecretSealer,
    pin: bool,
    now_ms: i64,
) -> Result<AppliedChange, ApplyError> {
    if plan.is_refused() {
        return Err(ApplyError::Refused(plan.refusals.clone()));
    }
    let origin = Origin::git(&desired.commit.id);
    // Seal before the transaction: age encryption needs no lock.
    let mut sealed: Vec<SecretRecord> = Vec::new();
    for c in plan.changes.iter().filter(|c| c.kind == Kind::Secret && c.op != Op::Delete) {
        let r = c.r();
        let value = desired.values.get(&r).ok_or_else(|| ApplyError::MissingValue(r.clone()))?;
        let source = desired.secrets.get(&r).map(|s| s.source.as_str()).unwrap_or("git");
        let rec = sealer
            .seal(&r.context, &r.name, value.expose(), source)
            .map_err(|message| ApplyError::Seal { secret: r.clone(), message })?;
        sealed.push(rec);
    }
    let mut out = AppliedChange::default();
    let target = desired.commit.clone();
    store.transaction_with(|tx| -> Result<(), ApplyError> {
        // Holds on objects git changed end with the change (see `Plan::released`).
        for object in &plan.released {
            tx.delete_hold(object)?;
        }
        for rec in &sealed {
            tx.put_secret(rec, &origin)?;
        }
        for c in &plan.changes {
            let r = c.r();
            let key = (r.context.clone(), r.name.clone());
            match (c.kind, c.op) {
                (Kind::Secret, Op::Delete) => {
                    tx.delete_secret(&r.context, &r.name)?;
                    out.secrets_changed.push(r);
                }
                (Kind::Secret, _) => out.secrets_changed.push(r),
                (Kind::Action, Op::Delete) => {
                    tx.delete_action(&r.context, &r.name)?;
                    out.actions_deleted.push(r);
                }
                (Kind::Action, _) => {
                    let a = desired.state.actions.get(&key).ok_or_else(|| missing(&r))?;
                    tx.put_action(a, &origin)?;
                    out.actions_changed.push(r);
                }
                (Kind::Service, Op::Delete) => {
                    tx.delete_service(&r.context, &r.name)?;
                    out.services_deleted.push(r);
                }
                (Kind::Service, _) => {
                    let s = desired.state.services.get(&key).ok_or_else(|| missing(&r))?;
                    tx.put_service(s, &origin)?;
                    out.services_changed.push(r);
                }
            }
        }
        let mut state = tx.sync_state()?;
        state.applied_revision = Some(target.id.clone());
        state.applied_at_ms = Some(now_ms);
        state.attempted_revision = Some(target.id.clone());
        state.attempted_at_ms = Some(now_ms);
        if pin {
            state.pinned_revision = Some(target.id.clone());
        }
        // A migration that failed at this revision keeps the sync degraded until the next.
        state.last_error = plan.held_migrations.first().map(|h| format!("migration {}: {}", h.name, h.reason));
        tx.set_sync_state(&state)?;
        let new_revision = plan.applied_revision.as_deref() != Some(target.id.as_str());
        if new_revision || !plan.is_empty() {
            tx.record_sync(&SyncRecord {
                revision: target.id.clone(),
                author: target.author.clone(),
                committed_at_ms: target.committed_at_ms,
                applied_at_ms: now_ms,
                summary: history_summary(plan),
                result: if plan.is_empty() { SyncResult::Noop } else { SyncResult::Applied },
                error: None,
            })?;
        }
        Ok(())
    })?;
    out.restarts = plan.restarts.iter().map(|r| parse_ref(&r.service)).collect();
    out.starts = plan.starts.iter().map(|r| parse_ref(&r.service)).collect();
    out.stops = plan.stops.iter().map(|r| parse_ref(&r.service)).collect();
    Ok(out)
}

fn missing(r: &Ref) -> ApplyError {
    ApplyError::Stale(r.clone())
}

/// Record a revision that could not be applied (load, validation, decryption, refusal
/// or a store error): sync state says so and history gets one line per new failure.
pub fn record_failure(
    store: &Store,
    commit: Option<&crate::repo::CommitInfo>,
    result: SyncResult,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    store.transaction(|tx| {
        let mut state = tx.sync_state()?;
        let revision = commit.map(|c| c.id.clone());
        let repeat = state.attempted_revision == revision && state.last_error.as_deref() == Some(error);
        state.attempted_revision = revision.clone().or(state.attempted_revision.take());
        state.attempted_at_ms = Some(now_ms);
        state.last_error = Some(error.to_owned());
        tx.set_sync_state(&state)?;
        if !repeat && let Some(c) = commit {
            tx.record_sync(&SyncRecord {
                revision: c.id.clone(),
                author: c.author.clone(),
                committed_at_ms: c.committed_at_ms,
                applied_at_ms: now_ms,
                summary: serde_json::json!({ "commit": c.summary }),
                result,
                error: Some(error.to_owned()),
            })?;
        }
        Ok(())
    })
}
