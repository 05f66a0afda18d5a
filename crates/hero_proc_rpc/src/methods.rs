//! The method table: one entry per RPC method, from which `rpc.discover` and
//! `GET /openrpc.json` are generated. The daemon registers exactly these names.

use serde_json::{Value, json};

/// One parameter: name, JSON type (as OpenRPC/JSON Schema says it), required.
pub type Param = (&'static str, &'static str, bool);

pub struct MethodDoc {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// The JSON Schema type of the result, or the wire type's name.
    pub result: &'static str,
}

const OBJ: &[Param] = &[("context", "string", false), ("name", "string", true)];
const ID: &[Param] = &[("id", "integer", true)];

pub const METHODS: &[MethodDoc] = &[
    MethodDoc {
        name: "action.set",
        summary: "Create or replace an action (set by hand: not managed from git).",
        params: &[("action", "Action", true)],
        result: "Done",
    },
    MethodDoc { name: "action.get", summary: "One action with where it came from.", params: OBJ, result: "ActionView" },
    MethodDoc { name: "action.list", summary: "All actions.", params: &[], result: "ActionView[]" },
    MethodDoc { name: "action.delete", summary: "Delete an action no service uses.", params: OBJ, result: "Done" },
    MethodDoc {
        name: "service.set",
        summary: "Create or replace a service; applies its status (start/stop) at once.",
        params: &[("service", "Service", true)],
        result: "Done",
    },
    MethodDoc { name: "service.get", summary: "A service's spec.", params: OBJ, result: "Service" },
    MethodDoc {
        name: "service.list",
        summary: "Every service with its runtime state.",
        params: &[],
        result: "ServiceView[]",
    },
    MethodDoc { name: "service.delete", summary: "Stop and delete a service.", params: OBJ, result: "Done" },
    MethodDoc {
        name: "service.start",
        summary: "Start a service (and wait for nothing: poll service.status).",
        params: OBJ,
        result: "Done",
    },
    MethodDoc {
        name: "service.stop",
        summary: "Stop a service: stop signal to its process group, SIGKILL after the timeout.",
        params: OBJ,
        result: "Done",
    },
    MethodDoc {
        name: "service.restart",
        summary: "Stop then start a service; concurrent restarts coalesce into one.",
        params: OBJ,
        result: "Done",
    },
    MethodDoc {
        name: "service.status",
        summary: "A service's runtime state, pid, restarts and health tree.",
        params: OBJ,
        result: "ServiceView",
    },
    MethodDoc {
        name: "service.domains",
        summary: "The domain sockets of a hero service (S_server/<context>/<domain>.sock).",
        params: OBJ,
        result: "CheckView[]",
    },
    MethodDoc {
        name: "service.domain_health",
        summary: "Health of one domain socket of a hero service.",
        params: &[
            ("context", "string", false),
            ("name", "string", true),
            ("domain_context", "string", true),
            ("domain", "string", true),
        ],
        result: "CheckView",
    },
    MethodDoc {
        name: "secret.set",
        summary: "Set a secret (sealed at rest); restarts the running services that use it. The value is never returned.",
        params: &[("context", "string", false), ("name", "string", true), ("value", "string", true)],
        result: "Done",
    },
    MethodDoc {
        name: "secret.list",
        summary: "Secrets by name: context, source, fingerprint, age. Never values.",
        params: &[],
        result: "SecretMetaView[]",
    },
    MethodDoc { name: "secret.delete", summary: "Delete a secret.", params: OBJ, result: "Done" },
    MethodDoc {
        name: "job.list",
        summary: "Jobs, newest first, filtered by phase, service or run; at most 1000 (default 100), page on with `before_id`.",
        params: &[
            ("phase", "string", false),
            ("service", "string", false),
            ("run_id", "integer", false),
            ("limit", "integer", false),
            ("before_id", "integer", false),
        ],
        result: "JobView[]",
    },
    MethodDoc { name: "job.get", summary: "One job.", params: ID, result: "JobView" },
    MethodDoc {
        name: "job.logs",
        summary: "One page of a job's output (stdout and stderr): forward from `offset` (follow `next_offset` while `has_more`), or the last `tail` lines; at most 1 MiB and 20000 lines per answer.",
        params: &[
            ("id", "integer", true),
            ("tail", "integer", false),
            ("offset", "integer", false),
            ("max_bytes", "integer", false),
        ],
        result: "LogLines",
    },
    MethodDoc {
        name: "run.submit",
        summary: "Create a run with one job per action, ordered by depends_on.",
        params: &[("actions", "string[]", true), ("label", "string", false)],
        result: "RunView",
    },
    MethodDoc {
        name: "run.list",
        summary: "Runs, newest first, each with up to 100 jobs (`jobs_more` says there are more); at most 100 runs (default 50), page on with `before_id`.",
        params: &[("limit", "integer", false), ("before_id", "integer", false)],
        result: "RunView[]",
    },
    MethodDoc {
        name: "run.get",
        summary: "One run with its jobs (`jobs: false` leaves them out).",
        params: &[("id", "integer", true), ("jobs", "boolean", false)],
        result: "RunView",
    },
    MethodDoc {
        name: "run.cancel",
        summary: "Cancel a run: pending jobs are cancelled, running ones stopped.",
        params: ID,
        result: "Done",
    },
    MethodDoc {
        name: "log.query",
        summary: "The daemon's structured events, newest first (e.g. source hero_proc.auto_start_db); at most 1000 (default 100), page on with `until_ms`.",
        params: &[
            ("source", "string", false),
            ("min_level", "string", false),
            ("since_ms", "integer", false),
            ("contains", "string", false),
            ("limit", "integer", false),
            ("until_ms", "integer", false),
        ],
        result: "LogEventView[]",
    },
    MethodDoc {
        name: "system.compact",
        summary: "Run the compactor now: delete finished history past retention, shrink the file, cap the logs.",
        params: &[],
        result: "CompactView",
    },
    MethodDoc {
        name: "system.compactor_status",
        summary: "The compactor's last and next run, rows deleted, bytes reclaimed, DB size and free pages.",
        params: &[],
        result: "CompactorStatusView",
    },
    MethodDoc {
        name: "system.info",
        summary: "Version, paths, DB size and counts, and how service process trees are contained (`cgroup v2 at PATH` or `subreaper`).",
        params: &[],
        result: "SystemInfo",
    },
    MethodDoc {
        name: "reconcile.plan",
        summary: "The plan (dry-run) of a revision against the live state; applies nothing.",
        params: RECONCILE,
        result: "Plan",
    },
    MethodDoc {
        name: "reconcile.apply",
        summary: "Plan and apply once; with `rev`, pin that revision until reconcile.resume.",
        params: RECONCILE,
        result: "ApplyOutcome",
    },
    MethodDoc {
        name: "reconcile.status",
        summary: "Applied, attempted, head and pinned revisions, drift, last error, suspension.",
        params: &[],
        result: "SyncStatus",
    },
    MethodDoc {
        name: "reconcile.suspend",
        summary: "Pause automatic sync (an incident); status says so.",
        params: &[],
        result: "SyncStatus",
    },
    MethodDoc {
        name: "reconcile.resume",
        summary: "Resume automatic sync, unpin any pinned revision, and sync now.",
        params: &[],
        result: "SyncStatus",
    },
    MethodDoc {
        name: "reconcile.history",
        summary: "Revisions tried, newest first: commit, author, time, summary, result; at most 1000 (default 50).",
        params: &[("limit", "integer", false)],
        result: "SyncEntry[]",
    },
    MethodDoc {
        name: "migrate.status",
        summary: "Migrations of the target revision against the record: applied, pending, failed, edited, deleted.",
        params: &[],
        result: "MigrateStatus",
    },
    MethodDoc {
        name: "migrate.baseline",
        summary: "Record every migration up to `name` as applied without running it.",
        params: &[("name", "string", true)],
        result: "MigrateStatus",
    },
];

const RECONCILE: &[Param] =
    &[("repo", "string", false), ("branch", "string", false), ("rev", "string", false), ("host", "string", false)];

/// The OpenRPC document for the methods the daemon serves.
pub fn openrpc_document(version: &str) -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let params: Vec<Value> = m
                .params
                .iter()
                .map(|(name, ty, required)| json!({ "name": name, "required": required, "schema": schema(ty) }))
                .collect();
            json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": { "name": "result", "schema": schema(m.result) },
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
    })
}

fn schema(ty: &str) -> Value {
    match ty.strip_suffix("[]") {
        Some(inner) => json!({ "type": "array", "items": schema(inner) }),
        None => match ty {
            "string" | "integer" | "boolean" | "number" => json!({ "type": ty }),
            other => json!({ "type": "object", "title": other }),
        },
    }
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
}
