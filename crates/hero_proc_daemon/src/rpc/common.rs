//! What every handler shares: the error mapping (stable codes, messages that say what
//! to do), params decoding that names the bad field, and the listing bounds.

use hero_proc_engine::EngineError;
use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::wire::*;
use hero_proc_store::{Ref, StoreError};
use jsonrpsee::types::{ErrorObjectOwned, Params};

pub(super) type Res<T> = Result<T, ErrorObjectOwned>;

/// How a method's params are read from the request.
pub(super) trait FromParams: Sized {
    fn from_params(p: &Params<'_>) -> Res<Self>;
}

/// Params the method needs: absent params are an error naming them.
macro_rules! required {
    ($($t:ty),*) => {$(
        impl FromParams for $t {
            fn from_params(p: &Params<'_>) -> Res<Self> {
                parse(p)
            }
        }
    )*};
}

/// Params that may all be left out: absent params read as the defaults.
macro_rules! optional {
    ($($t:ty),*) => {$(
        impl FromParams for $t {
            fn from_params(p: &Params<'_>) -> Res<Self> {
                if p.as_str().is_some() { parse(p) } else { Ok(Self::default()) }
            }
        }
    )*};
}

required!(Ref, IdRef, JobQuery, JobLogs, RunSubmit, RunGet, SecretSet, DomainHealth, MigrateBaseline, HoldParams);
optional!(RunList, LogQuery, ReconcileParams, HistoryQuery, ArtifactPrune);

/// Methods without parameters ignore whatever is sent.
impl FromParams for NoParams {
    fn from_params(_: &Params<'_>) -> Res<Self> {
        Ok(NoParams {})
    }
}

pub(super) fn rpc_err(code: ErrorCode, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code.code(), msg.into(), None::<()>)
}

pub(super) fn engine_err(e: EngineError) -> ErrorObjectOwned {
    match e {
        EngineError::NotFound(m) => rpc_err(ErrorCode::NotFound, m),
        EngineError::Conflict(m) => rpc_err(ErrorCode::Conflict, m),
        EngineError::Invalid(m) => rpc_err(ErrorCode::Invalid, m),
        EngineError::Store(e) => store_err(e),
        EngineError::Unavailable => {
            rpc_err(ErrorCode::Unavailable, "hero_proc is shutting down; retry when it is back")
        }
    }
}

/// Names reach paths (sockets, health checks) and logs: only `[a-z0-9][a-z0-9_.-]{0,63}`
/// gets in, whatever a raw RPC client sends (the CLI's decoder checks the same).
pub(super) fn check_names(what: &str, context: &str, name: &str) -> Result<(), ErrorObjectOwned> {
    use hero_proc_spec::schema::{NAME_HINT, is_valid_name};
    if is_valid_name(context) && is_valid_name(name) {
        Ok(())
    } else {
        Err(rpc_err(ErrorCode::Invalid, format!("invalid {what} name `{context}/{name}`: {NAME_HINT}")))
    }
}

pub(super) fn reconcile_err(e: crate::reconciler::ReconcileError) -> ErrorObjectOwned {
    use crate::reconciler::ReconcileError as E;
    let code = match &e {
        E::Load(hero_proc_reconcile::LoadError::Refused { .. }) => ErrorCode::Refused,
        E::NoRepo | E::Load(_) | E::Baseline(_) => ErrorCode::Invalid,
        E::Repo(_) | E::Artifacts { .. } => ErrorCode::Unavailable,
        E::Refused { .. } | E::Untrusted(_) => ErrorCode::Refused,
        E::Store(s) if s.is_replaced() => ErrorCode::DatabaseReplaced,
        E::Apply(_) | E::Store(_) => ErrorCode::Store,
        E::Engine(_) | E::Internal(_) => ErrorCode::Internal,
    };
    rpc_err(code, e.to_string())
}

pub(super) fn store_err(e: StoreError) -> ErrorObjectOwned {
    let code = if e.is_replaced() { ErrorCode::DatabaseReplaced } else { ErrorCode::Store };
    rpc_err(code, e.to_string())
}

/// Decode a method's params; a type error names the field (`action.schedule: invalid
/// type: integer `5`, expected a string`), not just "invalid params".
pub(super) fn parse<T: serde::de::DeserializeOwned>(p: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    let raw = p.as_str().unwrap_or("null");
    let de = &mut serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json appends where in the request text it stopped; the path says more.
        let inner = inner.rsplit_once(" at line ").map_or(inner.as_str(), |(m, _)| m);
        let at = if path == "." { "params".to_owned() } else { path.clone() };
        ErrorObjectOwned::owned(
            ErrorCode::Invalid.code(),
            format!("invalid parameters: {at}: {inner}"),
            Some(serde_json::json!({ "path": at })),
        )
    })
}

/// A reference written as `name` or `context/name` in a string parameter.
pub(super) fn parse_ref(s: &str) -> Result<Ref, ErrorObjectOwned> {
    Ref::parse(s).map_err(|e| ErrorObjectOwned::owned(ErrorCode::Invalid.code(), e.to_string(), None::<()>))
}

/// Check `params.<key>` with the decoder `hero_proc validate` uses on files, so the RPC
/// refuses what `validate` refuses, with the same codes and messages, and names each
/// field (`action.schedule: ... [cron.invalid]`). Problems go in the error's `data`.
pub(super) fn validate_object<T>(
    p: &Params<'_>,
    key: &str,
    check: fn(&str) -> hero_proc_spec::object::ObjectCheck<T>,
) -> Result<(), ErrorObjectOwned> {
    let raw = p.as_str().unwrap_or("null");
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| rpc_err(ErrorCode::Invalid, format!("invalid parameters: params: {e}")))?;
    let Some(object) = value.get(key) else {
        return Err(rpc_err(ErrorCode::Invalid, format!("invalid parameters: params: missing field `{key}`")));
    };
    let text = serde_json::to_string_pretty(object).map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?;
    let checked = check(&text);
    let errors: Vec<serde_json::Value> = checked
        .errors()
        .map(|p| {
            let path = if p.path.is_empty() { key.to_owned() } else { format!("{key}.{}", p.path) };
            serde_json::json!({ "path": path, "code": p.code, "message": p.message, "hint": p.hint })
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let mut message = format!("invalid {key} ({} error(s)); nothing was changed:", errors.len());
    for p in checked.errors() {
        let path = if p.path.is_empty() { key.to_owned() } else { format!("{key}.{}", p.path) };
        message.push_str(&format!("\n{path}: {} [{}]", p.message, p.code));
        if let Some(h) = &p.hint {
            message.push_str(&format!("\n  hint: {h}"));
        }
    }
    Err(ErrorObjectOwned::owned(ErrorCode::Invalid.code(), message, Some(serde_json::json!({ "problems": errors }))))
}

/// Before a change by hand to a `kind` (`action`, `service`, `secret`): the warning that
/// it will be reverted, when git manages it and self_heal is on.
pub(super) fn hand_warning(c: &super::Ctx, kind: &str, r: &Ref) -> Option<String> {
    let store = &c.engine.store;
    let rev = match kind {
        "action" => store.get_action(&r.context, &r.name).ok()?.filter(|s| s.managed)?.revision,
        "service" => store.get_service(&r.context, &r.name).ok()?.filter(|s| s.managed)?.revision,
        _ => store.get_secret(&r.context, &r.name).ok()?.filter(|s| s.managed)?.revision,
    };
    c.reconciler.hand_change_warning(&format!("{kind} {r}"), rev.as_deref())
}

/// A `Done` that carries `warning`.
pub(super) fn warned(mut d: Done, warning: Option<String>) -> Done {
    if d.changed {
        d.warning = warning;
    }
    d
}

pub(super) fn done(changed: bool) -> Done {
    Done { changed, message: None, warning: None }
}

/// A listing's `limit`: `default` when absent; over `max` is refused (an answer that
/// large could pass the RPC response limit), saying how to page instead.
pub(super) fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    method: &str,
    limit: Option<T>,
    default: T,
    max: T,
    cursor: &str,
) -> Result<T, ErrorObjectOwned> {
    match limit {
        Some(l) if l > max => Err(rpc_err(
            ErrorCode::Invalid,
            format!(
                "{method}: limit {l} is over the maximum of {max}; ask for at most {max} and page on with {cursor}"
            ),
        )),
        Some(l) => Ok(l),
        None => Ok(default),
    }
}
