//! The field reference (`docs/REFERENCE.md`), kept beside the decoder: every key the
//! decoder accepts has one entry here, and the document is rendered from these entries.
//! A test fails when a key is added to the decoder without an entry, when an entry names
//! a key the decoder refuses, and when the committed document differs from the render
//! (`HERO_REGEN_REFERENCE=1 cargo test -p hero_proc_spec field_docs` rewrites it).

use crate::schema::{
    ACTION_FIELDS, FILE_FIELDS, FORGEJO_FIELDS, HEALTH_FIELDS, HTTP_CHECK_FIELDS, LIVENESS_FIELDS, REGISTRY_FIELDS,
    RESTART_FIELDS, RETENTION_FIELDS, SECRET_REF_FIELDS, SERVICE_FIELDS, SETTINGS_FIELDS, STOP_FIELDS,
};

/// One key: its type, its default (`required` when it has none), what it means.
pub struct Field {
    pub key: &'static str,
    pub kind: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// A mapping the decoder reads, its keys as the decoder allows them, and their entries.
pub struct Section {
    pub title: &'static str,
    pub path: &'static str,
    pub allowed: &'static [&'static str],
    pub fields: &'static [Field],
}

const fn f(key: &'static str, kind: &'static str, default: &'static str, meaning: &'static str) -> Field {
    Field { key, kind, default, meaning }
}

const DURATION: &str = "duration (`500ms`, `10s`, `5m`, `1h`, `2d`)";

pub const SECTIONS: &[Section] = &[
    Section {
        title: "An actions file",
        path: "actions/*.yaml, hosts/<host>/actions/*.yaml",
        allowed: &FILE_FIELDS,
        fields: &[
            f("actions", "list of actions", "[]", "What can be run: each one an action (below)."),
            f("services", "list of services", "[]", "What is supervised: each one a service (below)."),
        ],
    },
    Section {
        title: "An action",
        path: "actions[]",
        allowed: &ACTION_FIELDS,
        fields: &[
            f("name", "name", "required", "1-64 of a-z, 0-9, `_`, `.`, `-`; unique with `context`."),
            f("context", "name", "`core`", "The namespace; references resolve in it first, then in `core`."),
            f("description", "string", "none", "For people; changing it restarts nothing."),
            f(
                "interpreter",
                "`exec`, `bash`, `sh`, `python3`",
                "`exec`",
                "`exec` splits `script` like a shell but runs no shell (no expansion, no injection).",
            ),
            f(
                "script",
                "string",
                "required",
                "The command line (`exec`) or the script text. An `exec` program `~/hero/bin/NAME@VERSION` is an artifact (SPEC 3.6).",
            ),
            f(
                "env",
                "map of name to string or `{ secret: NAME }`",
                "{}",
                "Environment of the process; a secret is a key of `secrets/<context>.sops.yaml`.",
            ),
            f("cwd", "path", "`$HERO_ROOTDIR`", "Working directory; `~` and `$HERO_ROOTDIR` expand."),
            f(
                "process",
                "bool",
                "`false`",
                "`true`: a long-running process (a service's main action); `false`: a one-shot job.",
            ),
            f("restart", "mapping (restart)", "on-failure, 1s, 60s, unlimited", "When and how a process is restarted."),
            f("stop", "mapping (stop)", "SIGTERM, 10s", "How a process is stopped before SIGKILL."),
            f("timeout", DURATION, "none", "A one-shot job running longer is stopped and fails."),
            f(
                "health",
                "list of checks",
                "[]",
                "What must pass before a process counts as running (and its dependents start); probed again every `period` after that.",
            ),
            f(
                "metrics",
                "mapping (metrics), or a URL `http://host:port/path`",
                "a `hero_sockets` service: its socket's `/metrics`",
                "Where the process serves its own Prometheus metrics; `GET /metrics/services` federates them.",
            ),
            f(
                "depends_on",
                "list of action references",
                "[]",
                "In a run, the actions that must succeed before this one.",
            ),
            f(
                "schedule",
                "cron (5 fields, or 6 with seconds first, or `@hourly`...)",
                "none",
                "Run this one-shot action on a schedule; a tick is skipped while the last run goes.",
            ),
            f("tags", "list of strings", "[]", "Free labels for people and tools."),
            f(
                "user",
                "account name",
                "the daemon's",
                "Run as this account (the daemon must be root), with its clean environment.",
            ),
            f("group", "group name", "the user's", "Primary group instead of the user's own (needs `user`)."),
        ],
    },
    Section {
        title: "restart",
        path: "actions[].restart",
        allowed: &RESTART_FIELDS,
        fields: &[
            f("policy", "`always`, `on-failure`, `never`", "`on-failure`", "When an exited process is started again."),
            f("delay", DURATION, "`1s`", "The first backoff; it doubles with each fast failure."),
            f("max_delay", DURATION, "`60s`", "The longest backoff (at least `delay`)."),
            f("max_retries", "whole number", "`0` (unlimited)", "Restarts before the service is failed for good."),
        ],
    },
    Section {
        title: "stop",
        path: "actions[].stop",
        allowed: &STOP_FIELDS,
        fields: &[
            f(
                "signal",
                "`SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`, `SIGKILL`, `SIGUSR1`, `SIGUSR2` (or without `SIG`)",
                "`SIGTERM`",
                "Sent to the process group (and the service's cgroup) first.",
            ),
            f("timeout", DURATION, "`10s`", "Then SIGKILL."),
        ],
    },
    Section {
        title: "A health check",
        path: "actions[].health[] (one kind each)",
        allowed: &HEALTH_FIELDS,
        fields: &[
            f("unix_socket", "path", "-", "The socket exists and accepts a connection."),
            f(
                "http",
                "mapping (http), or a URL `http://host:port/path`",
                "-",
                "An HTTP GET answers 2xx, over a Unix socket or TCP.",
            ),
            f("tcp", "`host:port`", "-", "The port accepts a TCP connection."),
            f("exec", "command line", "-", "The command exits 0 (run by `sh -c`)."),
            f("hero_sockets", "bool", "-", "The hero socket convention of the service (SPEC 5.4)."),
            f(
                "period",
                DURATION,
                "`10s`",
                "Once the service was healthy, the check is probed again this often (at least 100ms); status, `service list` and `hero_proc_service_up` show the last result.",
            ),
            f(
                "liveness",
                "mapping (liveness)",
                "none",
                "Restart the service when this check fails `failures` times in a row after it was healthy.",
            ),
        ],
    },
    Section {
        title: "liveness",
        path: "actions[].health[].liveness",
        allowed: &LIVENESS_FIELDS,
        fields: &[
            f("period", DURATION, "`10s`", "How often the check is probed (replaces the check's `period`)."),
            f(
                "failures",
                "whole number ≥ 1",
                "`3`",
                "Failed probes in a row that restart the service, with its restart backoff.",
            ),
        ],
    },
    Section {
        title: "http",
        path: "actions[].health[].http",
        allowed: &HTTP_CHECK_FIELDS,
        fields: &[
            f("socket", "path", "none", "Ask over this Unix socket (one of `socket`, `url`)."),
            f(
                "url",
                "`http://host:port[/path]`",
                "none",
                "Ask over TCP (one of `socket`, `url`); a path here sets `path`.",
            ),
            f("path", "string starting with `/`", "`/`", "The path asked for."),
        ],
    },
    Section {
        title: "metrics",
        path: "actions[].metrics",
        allowed: &HTTP_CHECK_FIELDS,
        fields: &[
            f("socket", "path", "none", "Scrape over this Unix socket (one of `socket`, `url`)."),
            f(
                "url",
                "`http://host:port[/path]`",
                "none",
                "Scrape over TCP (one of `socket`, `url`); a path here sets `path`.",
            ),
            f("path", "string starting with `/`", "`/metrics`", "The path scraped."),
        ],
    },
    Section {
        title: "A secret reference",
        path: "actions[].env.NAME, registry.token",
        allowed: &SECRET_REF_FIELDS,
        fields: &[f("secret", "name", "required", "A key of the SOPS file of the context (`core` for hero.yaml).")],
    },
    Section {
        title: "A service",
        path: "services[]",
        allowed: &SERVICE_FIELDS,
        fields: &[
            f("name", "name", "required", "Unique with `context`."),
            f("context", "name", "`core`", "The namespace."),
            f("description", "string", "none", "For people."),
            f(
                "status",
                "`start`, `stop`, `ignore`",
                "`start`",
                "What the daemon keeps it at; `ignore` leaves it alone.",
            ),
            f(
                "actions",
                "list of action references",
                "`[<name>]`",
                "Run in order; the last one is the supervised process.",
            ),
            f("requires", "list of service references", "[]", "Started first, and healthy, before this one starts."),
            f("after", "list of service references", "[]", "Ordering only: started first when both start."),
        ],
    },
    Section {
        title: "hero.yaml",
        path: "hero.yaml",
        allowed: &SETTINGS_FIELDS,
        fields: &[
            f(
                "required_services",
                "list of service references",
                "`[hero_db]`",
                "A plan that deletes or stops one is refused.",
            ),
            f(
                "self_heal",
                "bool",
                "`true`",
                "Revert changes made by hand on every sync (`reconcile hold` exempts one object).",
            ),
            f("prune", "bool", "`true`", "Delete objects removed from git (only ones git created)."),
            f("interval", DURATION, "`1m`", "How often a remote repository is fetched (at least `1s`)."),
            f("retention", "mapping (retention)", "30 days, 100000 rows, 1h", "How much job and run history is kept."),
            f("registry", "mapping (registry)", "none", "Where artifacts come from (SPEC 3.6)."),
            f("forgejo", "mapping (forgejo)", "none", "Where the daemon posts a commit status after each sync."),
        ],
    },
    Section {
        title: "retention",
        path: "hero.yaml retention",
        allowed: &RETENTION_FIELDS,
        fields: &[
            f("max_age_days", "whole number ≥ 1", "`30`", "Finished jobs and runs older than this are deleted."),
            f("max_rows_per_table", "whole number ≥ 1", "`100000`", "And the oldest beyond this many."),
            f("compact_every", DURATION, "`1h`", "How often the compactor runs."),
        ],
    },
    Section {
        title: "registry",
        path: "hero.yaml registry",
        allowed: &REGISTRY_FIELDS,
        fields: &[
            f(
                "url",
                "`https://HOST/api/packages/OWNER/generic` or `file:///dir`",
                "required",
                "A Forgejo generic package registry; no credentials in it (`http://` with a token only to this machine).",
            ),
            f("token", "secret reference", "none", "Sent as `Authorization: token ...`; never shown."),
            f("keep", "1 to 1000", "`3`", "Versions kept per artifact name for offline rollback."),
            f(
                "timeout",
                DURATION,
                "`30s`",
                "A download that receives nothing this long fails (and connecting may take no longer).",
            ),
        ],
    },
    Section {
        title: "forgejo",
        path: "hero.yaml forgejo",
        allowed: &FORGEJO_FIELDS,
        fields: &[
            f(
                "url",
                "`https://HOST/api/v1`",
                "from an https:// `--repo`",
                "The forge's API; no credentials in it (`http://` only to this machine).",
            ),
            f("repo", "`OWNER/NAME`", "from an https:// `--repo`", "The repository the statuses belong to."),
            f(
                "token",
                "secret reference",
                "required",
                "A token with `write:repository`, sent as `Authorization: token ...`; never shown.",
            ),
        ],
    },
];

/// `docs/REFERENCE.md`.
pub fn render() -> String {
    let mut out = String::from(
        "# Field reference\n\n\
         Every key `hero_proc validate` accepts, generated from the decoder's own lists\n\
         (`crates/hero_proc_spec/src/field_docs.rs`; a test fails when this file and the\n\
         decoder disagree). A key not listed here is an error (`schema.unknown-field`, with\n\
         \"did you mean\"). Secrets files are SOPS files whose top-level keys are secret names\n\
         (`secrets/<context>.sops.yaml`, see `docs/SPEC.md` 3.2); `artifacts.lock` maps\n\
         `NAME@VERSION` to `sha256:HEX` (3.6).\n",
    );
    for s in SECTIONS {
        out.push_str(&format!(
            "\n## {}\n\n`{}`\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n",
            s.title, s.path
        ));
        for f in s.fields {
            out.push_str(&format!("| `{}` | {} | {} | {} |\n", f.key, f.kind, f.default, f.meaning));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_the_decoder_accepts_has_one_entry() {
        for s in SECTIONS {
            let mut documented: Vec<&str> = s.fields.iter().map(|f| f.key).collect();
            let mut allowed: Vec<&str> = s.allowed.to_vec();
            documented.sort();
            allowed.sort();
            assert_eq!(documented, allowed, "section `{}`: the reference and the decoder disagree", s.title);
        }
    }

    #[test]
    fn docs_reference_md_is_the_render() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/REFERENCE.md");
        let want = render();
        if std::env::var_os("HERO_REGEN_REFERENCE").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/REFERENCE.md is stale: run `HERO_REGEN_REFERENCE=1 cargo test -p hero_proc_spec field_docs` and commit it"
        );
    }
}
