//! JSON Schemas written by hand, for the types on the wire whose Rust definition is not in
//! this crate: the spec model (`Action`, `Service`, `Ref`, with their own serde impls, in
//! `hero_proc_spec`) and the reconciler's results (in `hero_proc_reconcile` and
//! `hero_proc_store`, which this crate does not depend on). Everything else derives
//! `JsonSchema` in [`crate::wire`]. Each schema says what the serde impls write and read.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::json;

fn name() -> serde_json::Value {
    json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$" })
}

/// `name` or `context/name`.
fn reference() -> serde_json::Value {
    json!({ "type": "string", "description": "`name` or `context/name`" })
}

/// A duration as humantime writes it (`10s`, `1m 30s`).
fn duration() -> serde_json::Value {
    json!({ "type": "string", "description": "a duration: `500ms`, `10s`, `1m 30s`, `2h`" })
}

fn strings() -> serde_json::Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn nullable(v: serde_json::Value) -> serde_json::Value {
    json!({ "anyOf": [v, { "type": "null" }] })
}

/// `{ "context": "core", "name": "web" }`: one object; `context` defaults to `core`.
pub fn ref_params(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "title": "Ref",
        "properties": { "context": name(), "name": name() },
        "required": ["name"],
    })
}

/// `hero_proc_spec::Action`.
pub fn action(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "title": "Action",
        "properties": {
            "name": name(),
            "context": name(),
            "description": { "type": "string" },
            "interpreter": { "type": "string", "enum": hero_proc_spec::Interpreter::NAMES },
            "script": { "type": "string" },
            "env": {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [
                        { "type": "string" },
                        { "type": "object", "properties": { "secret": { "type": "string" } }, "required": ["secret"] },
                    ],
                },
            },
            "cwd": { "type": "string" },
            "process": { "type": "boolean" },
            "restart": {
                "type": "object",
                "properties": {
                    "policy": { "type": "string", "enum": hero_proc_spec::RestartMode::NAMES },
                    "delay": duration(),
                    "max_delay": duration(),
                    "max_retries": { "type": "integer", "minimum": 0 },
                },
            },
            "stop": {
                "type": "object",
                "properties": {
                    "signal": { "type": "string", "enum": hero_proc_spec::Signal::NAMES },
                    "timeout": duration(),
                },
            },
            "timeout": duration(),
            "health": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "one key of unix_socket, http, tcp, exec, hero_sockets; with optional period and liveness",
                    "minProperties": 1,
                    "maxProperties": 3,
                    "properties": {
                        "unix_socket": { "type": "string" },
                        "http": {
                            "type": "object",
                            "properties": {
                                "socket": { "type": "string" },
                                "url": { "type": "string" },
                                "path": { "type": "string" },
                            },
                            "required": ["path"],
                        },
                        "tcp": { "type": "string" },
                        "exec": { "type": "string" },
                        "hero_sockets": { "type": "boolean" },
                        "period": duration(),
                        "liveness": {
                            "type": "object",
                            "properties": {
                                "period": duration(),
                                "failures": { "type": "integer", "minimum": 1 },
                            },
                        },
                    },
                },
            },
            "metrics": {
                "type": "object",
                "description": "where the process serves its own metrics: one of socket or url, and path",
                "properties": {
                    "socket": { "type": "string" },
                    "url": { "type": "string" },
                    "path": { "type": "string" },
                },
                "required": ["path"],
            },
            "depends_on": { "type": "array", "items": reference() },
            "schedule": { "type": "string", "description": "a cron expression" },
            "tags": strings(),
            "user": { "type": "string" },
            "group": { "type": "string" },
        },
        "required": ["name", "script"],
    })
}

/// `hero_proc_spec::ServiceStatus`.
pub fn service_status(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": hero_proc_spec::ServiceStatus::NAMES })
}

/// `hero_proc_spec::Service`.
pub fn service(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "title": "Service",
        "properties": {
            "name": name(),
            "context": name(),
            "description": { "type": "string" },
            "status": service_status(g),
            "actions": { "type": "array", "items": reference() },
            "requires": { "type": "array", "items": reference() },
            "after": { "type": "array", "items": reference() },
        },
        "required": ["name", "actions"],
    })
}

fn drift() -> serde_json::Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": { "object": { "type": "string" }, "what": { "type": "string" } },
            "required": ["object", "what"],
        },
    })
}

fn because() -> serde_json::Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "service": { "type": "string" },
                "because": { "type": "string" },
                "drift": { "type": "boolean" },
            },
            "required": ["service", "because"],
        },
    })
}

fn plan_value() -> serde_json::Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    json!({
        "type": "object",
        "title": "Plan",
        "properties": {
            "target": {
                "type": "object",
                "description": "the revision planned",
                "properties": {
                    "id": { "type": "string" },
                    "author": nullable(json!({ "type": "string" })),
                    "committed_at_ms": nullable(json!({ "type": "integer" })),
                    "summary": nullable(json!({ "type": "string" })),
                },
                "required": ["id"],
            },
            "applied_revision": nullable(json!({ "type": "string" })),
            "host": nullable(json!({ "type": "string" })),
            "self_heal": { "type": "boolean" },
            "prune": { "type": "boolean" },
            "summary": {
                "type": "object",
                "properties": {
                    "create": count, "update": count, "adopt": count, "delete": count, "restart": count,
                    "start": count, "stop": count, "migrations": count, "drift": count,
                },
            },
            "changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "kind": { "type": "string", "enum": ["action", "service", "secret"] },
                        "context": { "type": "string" },
                        "name": { "type": "string" },
                        "op": { "type": "string", "enum": ["create", "update", "delete"] },
                        "drift": { "type": "boolean" },
                        "adopt": { "type": "boolean" },
                        "diff": { "type": "string", "description": "unified diff of the canonical YAML" },
                    },
                    "required": ["kind", "context", "name", "op"],
                },
            },
            "restarts": because(),
            "starts": because(),
            "stops": because(),
            "migrations": strings(),
            "held_migrations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "name": { "type": "string" }, "reason": { "type": "string" } },
                },
            },
            "migration_preview": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "effects": strings(),
                        "error": nullable(json!({ "type": "string" })),
                    },
                },
            },
            "drift": drift(),
            "unmanaged": strings(),
            "not_pruned": strings(),
            "unverified_secrets": strings(),
            "refusals": strings(),
            "artifacts": {
                "type": "array",
                "description": "artifact version changes and downloads (installed before the apply)",
                "items": {
                    "type": "object",
                    "properties": {
                        "action": { "type": "string" },
                        "name": { "type": "string" },
                        "from": nullable(json!({ "type": "string" })),
                        "to": { "type": "string" },
                        "digest": { "type": "string", "description": "sha256:HEX pinned in artifacts.lock" },
                        "cached": nullable(json!({ "type": "boolean" })),
                        "size": nullable(json!({ "type": "integer", "minimum": 0 })),
                    },
                    "required": ["action", "name", "to", "digest"],
                },
            },
            "held": strings(),
            "released": strings(),
            "signature": { "type": "string", "description": "who signed the revision (serve --allowed-signers), or that it was applied unsigned by --allow-unsigned" },
        },
        "required": ["target", "summary", "changes", "restarts", "starts", "stops", "migrations", "refusals"],
    })
}

/// `hero_proc_reconcile::Plan` (`reconcile.plan`).
pub fn plan(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(plan_value()).expect("an object")
}

/// `hero_proc_reconcile::ApplyOutcome` (`reconcile.apply`).
pub fn apply_outcome(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "title": "ApplyOutcome",
        "properties": {
            "plan": plan_value(),
            "pinned": { "type": "boolean" },
            "migrations": strings(),
        },
        "required": ["plan", "pinned"],
    })
}

/// `hero_proc_reconcile::SyncStatus` (`reconcile.status`, `.suspend`, `.resume`).
pub fn sync_status(_: &mut SchemaGenerator) -> Schema {
    let s = || nullable(json!({ "type": "string" }));
    let i = || nullable(json!({ "type": "integer" }));
    json_schema!({
        "type": "object",
        "title": "SyncStatus",
        "properties": {
            "repo": s(), "branch": s(), "host": s(),
            "applied_revision": s(), "applied_at_ms": i(),
            "attempted_revision": s(), "attempted_at_ms": i(),
            "last_error": s(),
            "suspended": { "type": "boolean" },
            "pinned_revision": s(),
            "head_revision": s(),
            "last_result": nullable(json!({ "type": "string", "enum": ["applied", "noop", "degraded", "failed", "refused"] })),
            "last_duration_ms": i(),
            "next_sync_at_ms": i(),
            "commit_status": {
                "type": "object",
                "description": "commit statuses posted to the forge (hero.yaml forgejo); absent when off",
                "properties": {
                    "target": nullable(json!({ "type": "string" })),
                    "context": { "type": "string" },
                    "last_delivered": nullable(json!({ "type": "string" })),
                    "last_error": nullable(json!({ "type": "string" })),
                    "delivered": { "type": "integer", "minimum": 0 },
                    "failed": { "type": "integer", "minimum": 0 },
                },
            },
            "consecutive_failures": { "type": "integer", "minimum": 0 },
            "self_heal": nullable(json!({ "type": "boolean" })),
            "interval_secs": i(),
            "interval_source": s(),
            "drift": drift(),
            "held": {
                "type": "array",
                "description": "objects held out of sync (`reconcile hold`): [object, since_ms]",
                "items": { "type": "array", "prefixItems": [{ "type": "string" }, { "type": "integer" }] },
            },
            "changed_at_ms": i(),
            "changed_revision": s(),
        },
        "required": ["suspended", "consecutive_failures", "drift"],
    })
}

/// `Vec<hero_proc_store::SyncEntry>` (`reconcile.history`).
pub fn sync_entries(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "title": "SyncEntry",
            "properties": {
                "id": { "type": "integer" },
                "record": {
                    "type": "object",
                    "properties": {
                        "revision": { "type": "string" },
                        "author": nullable(json!({ "type": "string" })),
                        "committed_at_ms": nullable(json!({ "type": "integer" })),
                        "applied_at_ms": { "type": "integer" },
                        "summary": { "description": "the plan's summary (counts, changed keys)" },
                        "result": { "type": "string", "enum": ["applied", "noop", "degraded", "failed", "refused"] },
                        "error": nullable(json!({ "type": "string" })),
                    },
                    "required": ["revision", "applied_at_ms", "result"],
                },
            },
            "required": ["id", "record"],
        },
    })
}

/// `hero_proc_reconcile::MigrateStatus` (`migrate.status`, `migrate.baseline`).
pub fn migrate_status(_: &mut SchemaGenerator) -> Schema {
    let s = || nullable(json!({ "type": "string" }));
    let i = || nullable(json!({ "type": "integer" }));
    json_schema!({
        "type": "object",
        "title": "MigrateStatus",
        "properties": {
            "revision": s(),
            "migrations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "state": { "type": "string", "enum": ["applied", "pending", "failed", "edited", "deleted"] },
                        "sha256": s(),
                        "revision": s(),
                        "applied_at_ms": i(),
                        "duration_ms": i(),
                        "error": s(),
                    },
                    "required": ["name", "state"],
                },
            },
            "problems": strings(),
        },
        "required": ["migrations", "problems"],
    })
}
