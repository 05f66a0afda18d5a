//! Every RPC method, defined once: one zero-sized type per method implementing
//! [`Method`] (name, summary, params type, result type, schemas). From that one list come
//! the daemon's registration (it registers handlers by type), the typed client
//! ([`crate::Client::call_typed`]), the UI's allowlist (by type) and the OpenRPC document
//! (`rpc.discover`, `GET /openrpc.json`) with each method's params and result schemas.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
/// The schema types of [`Method`], for callers that generate a schema themselves.
pub use schemars::{Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::schema;
use crate::wire as w;

/// One RPC method: its JSON-RPC name, what it does, and the types of its by-name params
/// (a JSON object) and of its result.
pub trait Method: Send + Sync + 'static {
    const NAME: &'static str;
    const SUMMARY: &'static str;
    type Params: Serialize + DeserializeOwned + Send + 'static;
    type Result: Serialize + DeserializeOwned + Send + 'static;
    /// The schema of the params object (its properties are the OpenRPC params).
    fn params_schema(g: &mut SchemaGenerator) -> Schema;
    fn result_schema(g: &mut SchemaGenerator) -> Schema;
}

/// A method as the OpenRPC document lists it.
pub struct MethodDoc {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: fn(&mut SchemaGenerator) -> Schema,
    pub result: fn(&mut SchemaGenerator) -> Schema,
}

impl MethodDoc {
    const fn of<M: Method>() -> MethodDoc {
        MethodDoc { name: M::NAME, summary: M::SUMMARY, params: M::params_schema, result: M::result_schema }
    }
}

/// The params' schema inline (an object with properties), or a hand-written one.
macro_rules! params_schema {
    ($g:ident, $t:ty) => {
        <$t as JsonSchema>::json_schema($g)
    };
    ($g:ident, $t:ty, $f:path) => {
        $f($g)
    };
}

/// The result's schema (a `$ref` into the components for a named type), or a hand-written one.
macro_rules! result_schema {
    ($g:ident, $t:ty) => {
        $g.subschema_for::<$t>()
    };
    ($g:ident, $t:ty, $f:path) => {
        $f($g)
    };
}

macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $ty:ident = $name:literal, $summary:literal,
        ($params:ty $(, $ps:path)?) -> ($result:ty $(, $rs:path)?);
    )*) => {
        $(
            $(#[$doc])*
            #[doc = concat!("`", $name, "`: ", $summary)]
            // Summaries name paths like `<context>/<name>`, for people, not HTML.
            #[allow(rustdoc::invalid_html_tags)]
            pub struct $ty;
            impl Method for $ty {
                const NAME: &'static str = $name;
                const SUMMARY: &'static str = $summary;
                type Params = $params;
                type Result = $result;
                fn params_schema(g: &mut SchemaGenerator) -> Schema {
                    params_schema!(g, $params $(, $ps)?)
                }
                fn result_schema(g: &mut SchemaGenerator) -> Schema {
                    result_schema!(g, $result $(, $rs)?)
                }
            }
        )*
        /// Every method, in the order the OpenRPC document lists them.
        pub const METHODS: &[MethodDoc] = &[$(MethodDoc::of::<$ty>()),*];
    };
}

methods! {
    ActionSet = "action.set", "Create or replace an action (set by hand: not managed from git).",
        (w::ActionSet) -> (w::Done);
    ActionGet = "action.get", "One action with where it came from.",
        (w::Ref, schema::ref_params) -> (w::ActionView);
    ActionList = "action.list", "All actions.",
        (w::NoParams) -> (Vec<w::ActionView>);
    ActionDelete = "action.delete", "Delete an action no service uses.",
        (w::Ref, schema::ref_params) -> (w::Done);

    ServiceSet = "service.set", "Create or replace a service; applies its status (start/stop) at once.",
        (w::ServiceSet) -> (w::Done);
    ServiceGet = "service.get", "A service's spec.",
        (w::Ref, schema::ref_params) -> (hero_proc_spec::Service, schema::service);
    ServiceList = "service.list", "Every service with its runtime state.",
        (w::NoParams) -> (Vec<w::ServiceView>);
    ServiceDelete = "service.delete", "Stop and delete a service.",
        (w::Ref, schema::ref_params) -> (w::Done);
    ServiceStart = "service.start", "Start a service (and wait for nothing: poll service.status).",
        (w::Ref, schema::ref_params) -> (w::Done);
    ServiceStop = "service.stop", "Stop a service: stop signal to its process group, SIGKILL after the timeout.",
        (w::Ref, schema::ref_params) -> (w::Done);
    ServiceRestart = "service.restart", "Stop then start a service; concurrent restarts coalesce into one.",
        (w::Ref, schema::ref_params) -> (w::Done);
    ServiceStatus = "service.status", "A service's runtime state, pid, restarts and health tree.",
        (w::Ref, schema::ref_params) -> (w::ServiceView);
    ServiceDomains = "service.domains", "The domain sockets of a hero service (S_server/<context>/<domain>.sock).",
        (w::Ref, schema::ref_params) -> (Vec<w::CheckView>);
    ServiceDomainHealth = "service.domain_health", "Health of one domain socket of a hero service.",
        (w::DomainHealth) -> (w::CheckView);

    SecretSet = "secret.set", "Set a secret (sealed at rest); restarts the running services that use it. The value is never returned.",
        (w::SecretSet) -> (w::Done);
    SecretList = "secret.list", "Secrets by name: context, source, fingerprint, age. Never values.",
        (w::NoParams) -> (Vec<w::SecretMetaView>);
    SecretDelete = "secret.delete", "Delete a secret.",
        (w::Ref, schema::ref_params) -> (w::Done);

    JobList = "job.list", "Jobs, newest first, filtered by phase, service or run; at most 1000 (default 100), page on with `before_id`.",
        (w::JobQuery) -> (Vec<w::JobView>);
    JobGet = "job.get", "One job.",
        (w::IdRef) -> (w::JobView);
    JobLogs = "job.logs", "One page of a job's output (stdout and stderr): forward from `offset` (follow `next_offset` while `has_more`), or the last `tail` lines; at most 1 MiB and 20000 lines per answer.",
        (w::JobLogs) -> (w::LogLines);

    RunSubmit = "run.submit", "Create a run with one job per action, ordered by depends_on.",
        (w::RunSubmit) -> (w::RunView);
    RunList = "run.list", "Runs, newest first, each with up to 100 jobs (`jobs_more` says there are more); at most 100 runs (default 50), page on with `before_id`.",
        (w::RunList) -> (Vec<w::RunView>);
    RunGet = "run.get", "One run with its jobs (`jobs: false` leaves them out).",
        (w::RunGet) -> (w::RunView);
    RunCancel = "run.cancel", "Cancel a run: pending jobs are cancelled, running ones stopped.",
        (w::IdRef) -> (w::Done);

    LogQuery = "log.query", "The daemon's structured events, newest first (e.g. source hero_proc.auto_start_db); at most 1000 (default 100), page on with `until_ms`.",
        (w::LogQuery) -> (Vec<w::LogEventView>);

    SystemCompact = "system.compact", "Run the compactor now: delete finished history past retention, shrink the file, cap the logs.",
        (w::NoParams) -> (w::CompactView);
    SystemCompactorStatus = "system.compactor_status", "The compactor's last and next run, rows deleted, bytes reclaimed, DB size and free pages.",
        (w::NoParams) -> (w::CompactorStatusView);
    SystemInfo = "system.info", "Version, paths, DB size and counts, and how service process trees are contained (`cgroup v2 at PATH` or `subreaper`).",
        (w::NoParams) -> (w::SystemInfo);

    ReconcilePlan = "reconcile.plan", "The plan (dry-run) of a revision against the live state; applies nothing.",
        (w::ReconcileParams) -> (w::Foreign, schema::plan);
    ReconcileApply = "reconcile.apply", "Plan and apply once; with `rev`, pin that revision until reconcile.resume.",
        (w::ReconcileParams) -> (w::Foreign, schema::apply_outcome);
    ReconcileStatus = "reconcile.status", "Applied, attempted, head and pinned revisions, drift, last error, suspension.",
        (w::NoParams) -> (w::Foreign, schema::sync_status);
    ReconcileSuspend = "reconcile.suspend", "Pause automatic sync (an incident); status says so.",
        (w::NoParams) -> (w::Foreign, schema::sync_status);
    ReconcileResume = "reconcile.resume", "Resume automatic sync, unpin any pinned revision, and sync now.",
        (w::NoParams) -> (w::Foreign, schema::sync_status);
    ReconcileHold = "reconcile.hold", "Hold one git-managed object (action, service or secret) out of sync: its drift is left alone until reconcile.release or a git change to it.",
        (w::HoldParams) -> (w::Foreign, schema::sync_status);
    ReconcileRelease = "reconcile.release", "End a hold: the next sync manages the object again (and reverts its drift with self_heal).",
        (w::HoldParams) -> (w::Foreign, schema::sync_status);
    ReconcileHistory = "reconcile.history", "Revisions tried, newest first: commit, author, time, summary, result; at most 1000 (default 50).",
        (w::HistoryQuery) -> (w::Foreign, schema::sync_entries);

    MigrateStatus = "migrate.status", "Migrations of the target revision against the record: applied, pending, failed, edited, deleted.",
        (w::NoParams) -> (w::Foreign, schema::migrate_status);
    MigrateBaseline = "migrate.baseline", "Record every migration up to `name` as applied without running it.",
        (w::MigrateBaseline) -> (w::Foreign, schema::migrate_status);

    ArtifactList = "artifact.list", "Artifact versions the applied revisions used: name, version, digest, size, used by, last used, whether the file is in the store.",
        (w::NoParams) -> (Vec<w::ArtifactView>);
    ArtifactPrune = "artifact.prune", "Remove artifact versions beyond `keep` per name (default: hero.yaml registry.keep, else 3) that the applied revision does not use, and files no kept version points at.",
        (w::ArtifactPrune) -> (w::ArtifactPruned);
}

/// The schema generator of the OpenRPC document: named types go to `components.schemas`.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The OpenRPC document for the methods the daemon serves.
pub fn openrpc_document(version: &str) -> Value {
    let mut g = generator();
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let params = (m.params)(&mut g);
            let required: Vec<&str> = params
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let params: Vec<Value> = params
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(name, schema)| {
                            json!({ "name": name, "required": required.contains(&name.as_str()), "schema": schema })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": { "name": "result", "schema": (m.result)(&mut g) },
            })
        })
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "hero_proc",
            "version": version,
            "description": "A process supervisor whose configuration lives in git. JSON-RPC 2.0 over HTTP (POST /rpc) on a Unix socket.",
        },
        "methods": methods,
        "components": { "schemas": g.take_definitions(true) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_nouns_and_verbs() {
        let mut seen = std::collections::HashSet::new();
        for m in METHODS {
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            let (noun, verb) = m.name.split_once('.').unwrap();
            assert!(!noun.is_empty() && !verb.is_empty());
        }
        let doc = openrpc_document("0");
        assert_eq!(doc["methods"].as_array().unwrap().len(), METHODS.len());
    }

    /// Resolve a `$ref` into the document's components.
    fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("ref {r}"));
                let target = &doc["components"]["schemas"][name];
                assert!(target.is_object(), "dangling {r}");
                resolve(doc, target)
            }
            None => s,
        }
    }

    /// Every `$ref` anywhere in the document points at a schema it carries.
    fn refs_resolve(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("$ref") {
                    resolve(doc, v);
                }
                m.values().for_each(|x| refs_resolve(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x)),
            _ => {}
        }
    }

    #[test]
    fn every_method_has_real_param_and_result_schemas() {
        let doc = openrpc_document("0");
        refs_resolve(&doc, &doc);
        for m in doc["methods"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            for p in m["params"].as_array().unwrap() {
                let s = resolve(&doc, &p["schema"]);
                assert!(s.is_object() && !s.as_object().unwrap().is_empty(), "{name}.{}: {s}", p["name"]);
            }
            let r = resolve(&doc, &m["result"]["schema"]);
            let ty = r["type"].as_str().unwrap_or_else(|| panic!("{name}: result has no type: {r}"));
            // A result is described, not just named: an object has properties, an array
            // says what it holds.
            match ty {
                "object" => assert!(r["properties"].as_object().is_some_and(|p| !p.is_empty()), "{name}: {r}"),
                "array" => {
                    let items = resolve(&doc, &r["items"]);
                    assert!(items["properties"].as_object().is_some_and(|p| !p.is_empty()), "{name}: {items}");
                }
                other => panic!("{name}: result type {other}"),
            }
        }
        // Methods with parameters list them, with their types.
        let get = doc["methods"].as_array().unwrap().iter().find(|m| m["name"] == "job.logs").unwrap();
        let names: Vec<&str> = get["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["id", "max_bytes", "offset", "tail"]);
        assert_eq!(get["params"][0]["required"], true);
    }

    /// The typed params write what the server always read.
    #[test]
    fn params_keep_their_wire_shape() {
        let r = serde_json::to_value(w::Ref::new("core", "web")).unwrap();
        assert_eq!(r, json!({ "context": "core", "name": "web" }));
        assert_eq!(serde_json::to_value(w::NoParams {}).unwrap(), json!({}));
        assert_eq!(serde_json::to_value(w::RunGet { id: 3, jobs: false }).unwrap(), json!({ "id": 3, "jobs": false }));
    }
}
