//! Decoding located YAML nodes into the model, reporting every problem found.
//!
//! Hand-written rather than serde-derived so that one pass reports all errors, each at
//! the exact node, with a "did you mean" for misspelt fields and a hint for fixing it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diag::{Diagnostics, Pos, did_you_mean};
use crate::model::*;
use crate::yaml::{Node, NodeKind};

/// Object names: `[a-z0-9][a-z0-9_.-]{0,63}` (SPEC 3.1).
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

pub const NAME_HINT: &str = "names are 1-64 characters of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit";

/// Which field an HTTP endpoint is decoded for: they differ in default path and wording.
#[derive(Clone, Copy)]
enum Family {
    Health,
    Metrics,
}

impl Family {
    fn code(self) -> &'static str {
        match self {
            Family::Health => "health.http",
            Family::Metrics => "metrics.http",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Family::Health => "an http check",
            Family::Metrics => "`metrics`",
        }
    }
    fn default_path(self) -> String {
        match self {
            Family::Health => "/".into(),
            Family::Metrics => "/metrics".into(),
        }
    }
    fn example(self) -> &'static str {
        match self {
            Family::Health => {
                "e.g. `http: { socket: ~/hero/var/sockets/x.sock, path: /health }` or `http: http://127.0.0.1:8080/health`"
            }
            Family::Metrics => {
                "e.g. `metrics: { socket: ~/hero/var/sockets/x.sock, path: /metrics }` or `metrics: http://127.0.0.1:8080/metrics`"
            }
        }
    }
}

/// Decodes nodes of one file, collecting diagnostics.
pub struct Decoder<'d> {
    pub file: Arc<str>,
    pub diags: &'d mut Diagnostics,
}

pub(crate) const ACTION_FIELDS: [&str; 18] = [
    "name",
    "context",
    "description",
    "interpreter",
    "script",
    "env",
    "cwd",
    "process",
    "restart",
    "stop",
    "timeout",
    "health",
    "metrics",
    "depends_on",
    "schedule",
    "tags",
    "user",
    "group",
];
pub(crate) const SERVICE_FIELDS: [&str; 7] =
    ["name", "context", "description", "status", "actions", "requires", "after"];
pub(crate) const SETTINGS_FIELDS: [&str; 7] =
    ["required_services", "self_heal", "prune", "interval", "retention", "registry", "forgejo"];
pub(crate) const FILE_FIELDS: [&str; 2] = ["actions", "services"];
pub(crate) const RESTART_FIELDS: [&str; 4] = ["policy", "delay", "max_delay", "max_retries"];
pub(crate) const STOP_FIELDS: [&str; 2] = ["signal", "timeout"];
pub(crate) const HTTP_CHECK_FIELDS: [&str; 3] = ["socket", "url", "path"];
/// The keys of one health check: exactly one probe kind, and how it is repeated.
pub(crate) const HEALTH_FIELDS: [&str; 7] =
    ["unix_socket", "http", "tcp", "exec", "hero_sockets", "period", "liveness"];
pub(crate) const LIVENESS_FIELDS: [&str; 2] = ["period", "failures"];
pub(crate) const SECRET_REF_FIELDS: [&str; 1] = ["secret"];
pub(crate) const REGISTRY_FIELDS: [&str; 4] = ["url", "token", "keep", "timeout"];
pub(crate) const FORGEJO_FIELDS: [&str; 3] = ["url", "repo", "token"];
pub(crate) const RETENTION_FIELDS: [&str; 3] = ["max_age_days", "max_rows_per_table", "compact_every"];

impl<'d> Decoder<'d> {
    pub fn new(file: Arc<str>, diags: &'d mut Diagnostics) -> Self {
        Decoder { file, diags }
    }

    pub fn pos(&self, node: &Node) -> Pos {
        Pos::new(&self.file, node.mark())
    }

    fn expected(&mut self, node: &Node, what: &str) {
        let found = node.type_name();
        let pos = self.pos(node);
        self.diags.error(&pos, "schema.type", format!("expected {what}, found a {found}"));
    }

    /// The entries of a mapping, with unknown keys reported (and skipped).
    fn fields(&mut self, node: &Node, allowed: &[&str], what: &str) -> Option<Vec<(String, Node)>> {
        let Some(entries) = node.as_map() else {
            self.expected(node, &format!("a mapping ({what})"));
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default();
            if allowed.contains(&key) {
                out.push((key.to_owned(), v.clone()));
            } else {
                let pos = self.pos(k);
                let d = self.diags.error(&pos, "schema.unknown-field", format!("unknown field `{key}` in {what}"));
                match did_you_mean(key, allowed.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint(format!("allowed fields: {}", allowed.join(", "))),
                };
            }
        }
        Some(out)
    }

    /// A scalar as text. Numbers and booleans are accepted as their text; null is not.
    pub fn string(&mut self, node: &Node) -> Option<String> {
        if node.is_null() {
            let pos = self.pos(node);
            self.diags
                .error(&pos, "schema.type", "expected a string, found nothing")
                .hint("write '' for an empty string, or remove the field");
            return None;
        }
        match node.as_scalar() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.expected(node, "a string");
                None
            }
        }
    }

    fn name(&mut self, node: &Node, what: &str) -> Option<Named> {
        let s = self.string(node)?;
        if !is_valid_name(&s) {
            let pos = self.pos(node);
            self.diags.error(&pos, "name.invalid", format!("invalid {what} `{s}`")).hint(NAME_HINT);
            return None;
        }
        Some(Named { name: s, pos: self.pos(node) })
    }

    /// A reference: `name` or `context/name`.
    fn reference(&mut self, node: &Node, what: &str) -> Option<Named> {
        let s = self.string(node)?;
        if crate::Ref::parse(&s).is_err() {
            let pos = self.pos(node);
            self.diags
                .error(&pos, "name.invalid", format!("invalid {what} reference `{s}`"))
                .hint(format!("write `name` or `context/name`; {NAME_HINT}"));
            return None;
        }
        Some(Named { name: s, pos: self.pos(node) })
    }

    fn bool(&mut self, node: &Node) -> Option<bool> {
        let b = node.as_bool();
        if b.is_none() {
            let pos = self.pos(node);
            self.diags
                .error(&pos, "schema.type", "expected true or false")
                .hint("booleans are unquoted `true` or `false`");
        }
        b
    }

    fn u64(&mut self, node: &Node) -> Option<u64> {
        let n = node.as_u64();
        if n.is_none() {
            let pos = self.pos(node);
            self.diags.error(&pos, "schema.type", "expected a whole number ≥ 0");
        }
        n
    }

    pub fn duration(&mut self, node: &Node) -> Option<Dur> {
        let s = self.string(node)?;
        match parse_duration(&s) {
            Ok(d) => Some(Dur(d)),
            Err(e) => {
                let pos = self.pos(node);
                self.diags
                    .error(&pos, "duration.invalid", format!("invalid duration `{s}`: {e}"))
                    .hint("write a number and a unit: 500ms, 10s, 5m, 1h, 2d");
                None
            }
        }
    }

    fn list(&mut self, node: &Node) -> Vec<Node> {
        match node.kind() {
            NodeKind::Seq(items) => items.clone(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.expected(node, "a list");
                Vec::new()
            }
        }
    }

    fn references(&mut self, node: &Node, what: &str) -> Vec<Named> {
        let items = self.list(node);
        items.iter().filter_map(|n| self.reference(n, what)).collect()
    }

    /// A top-level `actions/*.yaml` document.
    pub fn action_file(&mut self, doc: &Node, set: &mut ObjectSet) {
        let Some(fields) = self.fields(doc, &FILE_FIELDS, "an actions file") else {
            return;
        };
        for (key, value) in fields {
            let items = self.list(&value);
            for item in &items {
                let (kind, ok) = if key == "actions" {
                    let action = self.action(item);
                    if let Some(a) = &action
                        && let Some(id) = crate::artifact::artifact_of(a)
                    {
                        let pos = item.get("script").map(|n| self.pos(n)).unwrap_or_else(|| a.pos.clone());
                        let action = format!("{}/{}", a.context, a.name);
                        set.artifacts.push(crate::artifact::ArtifactUse { id, action, pos });
                    }
                    (Kind::Action, action.map(|a| set.actions.push(std::sync::Arc::new(a))).is_some())
                } else {
                    (Kind::Service, self.service(item).map(|s| set.services.push(std::sync::Arc::new(s))).is_some())
                };
                if !ok && let Some(name) = item.get("name").and_then(Node::as_scalar) {
                    let context = item.get("context").and_then(Node::as_scalar).unwrap_or(DEFAULT_CONTEXT);
                    set.broken.push(ObjectKey { kind, context: context.to_owned(), name: name.to_owned() });
                }
            }
        }
    }

    fn context(&mut self, node: Option<&Node>) -> Option<String> {
        match node {
            None => Some(DEFAULT_CONTEXT.to_owned()),
            Some(n) => self.name(n, "context").map(|n| n.name),
        }
    }

    pub fn action(&mut self, node: &Node) -> Option<Action> {
        let fields = self.fields(node, &ACTION_FIELDS, "an action")?;
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
        let start = self.pos(node);
        let mut ok = true;

        let name = match get("name") {
            Some(n) => self.name(n, "action name"),
            None => {
                self.diags.error(&start, "schema.missing-field", "action has no `name`");
                None
            }
        };
        let script = match get("script") {
            Some(n) => self.string(n),
            None => {
                let what = name.as_ref().map(|n| format!("action `{}`", n.name)).unwrap_or("action".into());
                self.diags
                    .error(&start, "schema.missing-field", format!("{what} has no `script`"))
                    .hint("`script` is the command line (interpreter exec) or the script text");
                None
            }
        };
        let context = self.context(get("context"));
        let description = get("description").and_then(|n| self.string(n));
        let interpreter = match get("interpreter") {
            None => Some(Interpreter::Exec),
            Some(n) => {
                let s = self.string(n);
                let parsed = s.as_deref().and_then(Interpreter::parse);
                if let (Some(s), None) = (&s, parsed) {
                    self.unknown_word(n, "interpreter.unknown", "interpreter", s, &Interpreter::NAMES);
                }
                parsed
            }
        };
        let mut env = BTreeMap::new();
        if let Some(n) = get("env") {
            if let Some(entries) = n.as_map() {
                for (k, v) in entries {
                    let key = k.as_scalar().unwrap_or_default().to_owned();
                    if !is_valid_env_name(&key) {
                        let pos = self.pos(k);
                        self.diags
                            .error(&pos, "env.invalid-name", format!("invalid environment variable name `{key}`"))
                            .hint("use letters, digits and `_`, not starting with a digit");
                        ok = false;
                    }
                    if let Some(val) = self.env_value(v) {
                        env.insert(key, val);
                    } else {
                        ok = false;
                    }
                }
            } else if !n.is_null() {
                self.expected(n, "a mapping of variable names to values");
                ok = false;
            }
        }
        let cwd = get("cwd").and_then(|n| self.string(n));
        let process = get("process").map(|n| self.bool(n)).unwrap_or(Some(false));
        let restart = match get("restart") {
            None => Some(Restart::default()),
            Some(n) => self.restart(n),
        };
        let stop = match get("stop") {
            None => Some(Stop::default()),
            Some(n) => self.stop(n),
        };
        let timeout = get("timeout").map(|n| self.duration(n));
        let mut health = Vec::new();
        if let Some(n) = get("health") {
            for item in self.list(n) {
                match self.health(&item) {
                    Some(h) => health.push(h),
                    None => ok = false,
                }
            }
        }
        let metrics = match get("metrics") {
            None => None,
            Some(n) => {
                let m = self.metrics(n);
                ok &= m.is_some();
                m
            }
        };
        let depends_on = get("depends_on").map(|n| self.references(n, "action")).unwrap_or_default();
        let schedule = get("schedule").and_then(|n| {
            let s = self.string(n)?;
            if let Err(e) = check_cron(&s) {
                let pos = self.pos(n);
                self.diags
                    .error(&pos, "cron.invalid", format!("invalid cron expression `{s}`: {e}"))
                    .hint("use 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, e.g. \"*/15 * * * *\"");
                return None;
            }
            Some(s)
        });
        let tags = match get("tags") {
            None => Vec::new(),
            Some(n) => {
                let items = self.list(n);
                items.iter().filter_map(|t| self.name(t, "tag")).map(|n| n.name).collect()
            }
        };
        let user = get("user").and_then(|n| self.account(n, "user"));
        let group = get("group").and_then(|n| self.account(n, "group"));
        if let (None, Some(n)) = (get("user"), get("group")) {
            let pos = self.pos(n);
            self.diags
                .error(&pos, "action.group-without-user", "`group` is set but `user` is not")
                .hint("add `user:` (the account to run as); `group` only replaces that user's primary group");
            ok = false;
        }
        ok &= get("user").is_none() || user.is_some();
        ok &= get("group").is_none() || group.is_some();

        // Cross-field rules of one action.
        if let (Some(true), Some(n)) = (process, get("schedule")) {
            let pos = self.pos(n);
            self.diags
                .error(&pos, "action.schedule-on-process", "a scheduled action must be a one-shot job")
                .hint("set `process: false`, or remove `schedule` and run it as a service");
            ok = false;
        }
        if let (Some(true), Some(n)) = (process, get("timeout")) {
            let pos = self.pos(n);
            self.diags
                .warning(&pos, "action.timeout-on-process", "`timeout` is ignored for a long-running process")
                .hint("`timeout` bounds one-shot jobs; use `stop.timeout` for how long a stop may take");
        }
        if let (Some(false), Some(n)) = (process, get("health")) {
            let pos = self.pos(n);
            self.diags
                .warning(&pos, "action.health-on-oneshot", "health checks are ignored for a one-shot job")
                .hint("set `process: true` if this is a long-running service");
        }
        if let (Some(Interpreter::Exec), Some(s), Some(n)) = (interpreter, &script, get("script")) {
            ok &= self.check_exec_script(n, s);
        }

        let timeout = match timeout {
            Some(None) => return None,
            Some(Some(d)) => Some(d),
            None => None,
        };
        if !ok {
            return None;
        }
        Some(Action {
            name: name?.name,
            context: context?,
            description,
            interpreter: interpreter?,
            script: script?,
            env: env.into(),
            cwd,
            process: process?,
            restart: restart?,
            stop: stop?,
            timeout,
            health,
            metrics,
            depends_on,
            schedule: match get("schedule") {
                Some(_) => Some(schedule?),
                None => None,
            },
            tags,
            user,
            group,
            pos: start,
        })
    }

    /// A user or group name as `useradd` accepts it. Whether it exists is known only on
    /// the host that runs the action, so that is checked at start time.
    fn account(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node)?;
        let valid = !s.is_empty()
            && s.len() <= 32
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_lowercase() || c == '_' || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.'))
            });
        if !valid {
            let pos = self.pos(node);
            self.diags
                .error(&pos, "action.account-invalid", format!("`{s}` is not a valid {what} name"))
                .hint("an account name: up to 32 of a-z, 0-9, `_`, `-`, `.`, starting with a letter or `_` (not a numeric id)");
            return None;
        }
        Some(s)
    }

    /// `exec` runs no shell: an argv that cannot be split, or shell syntax that would be
    /// passed as literal arguments, is almost always a mistake.
    /// False when the command line cannot run as written (a malformed artifact).
    fn check_exec_script(&mut self, node: &Node, script: &str) -> bool {
        let pos = self.pos(node);
        if let Some(Err(why)) = shell_words::split(script)
            .ok()
            .and_then(|w| w.first().and_then(|p| crate::artifact::artifact_in_program(p)))
        {
            self.diags
                .error(&pos, "artifact.reference", format!("{why} (the program is an artifact reference)"))
                .hint(crate::artifact::ARTIFACT_HINT);
            return false;
        }
        match shell_words::split(script) {
            Err(_) => {
                self.diags
                    .error(&pos, "exec.unbalanced-quotes", "the command line has an unclosed quote")
                    .hint("close the quote, or use `interpreter: bash` for a script");
            }
            Ok(argv) if argv.is_empty() => {
                self.diags
                    .error(&pos, "exec.empty", "the command line is empty")
                    .hint("`script` names the program to run");
            }
            Ok(argv) => {
                const SHELL: [&str; 10] = ["&&", "||", "|", ";", ">", ">>", "<", "2>&1", "&", "$("];
                if let Some(op) = argv.iter().find(|a| SHELL.contains(&a.as_str()) || a.starts_with("$(")) {
                    self.diags
                        .warning(
                            &pos,
                            "exec.shell-syntax",
                            format!(
                                "`{op}` is passed to the program as an argument: `interpreter: exec` runs no shell"
                            ),
                        )
                        .hint("set `interpreter: bash` (or sh) to run this as a shell script");
                }
            }
        }
        true
    }

    fn env_value(&mut self, node: &Node) -> Option<EnvValue> {
        match node.kind() {
            NodeKind::Scalar { .. } if node.is_null() => {
                let pos = self.pos(node);
                self.diags
                    .error(&pos, "env.null", "environment value is empty")
                    .hint("write '' for an empty string, or `{ secret: name }` for a secret");
                None
            }
            NodeKind::Scalar { text, .. } => Some(EnvValue::Plain(text.clone())),
            NodeKind::Map(_) => {
                let fields = self.fields(node, &SECRET_REF_FIELDS, "a secret reference")?;
                match fields.first() {
                    Some((_, n)) => self.name(n, "secret name").map(EnvValue::Secret),
                    None => {
                        let pos = self.pos(node);
                        self.diags
                            .error(&pos, "env.secret", "secret reference has no `secret`")
                            .hint("write `{ secret: name }`");
                        None
                    }
                }
            }
            NodeKind::Seq(_) => {
                self.expected(node, "a string or `{ secret: name }`");
                None
            }
        }
    }

    fn restart(&mut self, node: &Node) -> Option<Restart> {
        let fields = self.fields(node, &RESTART_FIELDS, "restart")?;
        let mut r = Restart::default();
        let mut ok = true;
        for (k, v) in &fields {
            match k.as_str() {
                "policy" => match self.string(v) {
                    Some(s) => match RestartMode::parse(&s) {
                        Some(p) => r.policy = p,
                        None => {
                            self.unknown_word(v, "restart.policy", "restart policy", &s, &RestartMode::NAMES);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "delay" => match self.duration(v) {
                    Some(d) => r.delay = d,
                    None => ok = false,
                },
                "max_delay" => match self.duration(v) {
                    Some(d) => r.max_delay = d,
                    None => ok = false,
                },
                _ => match self.u64(v).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => r.max_retries = n,
                    None => ok = false,
                },
            }
        }
        if ok && r.max_delay < r.delay {
            let pos = self.pos(node);
            self.diags
                .error(
                    &pos,
                    "restart.delay",
                    format!("`max_delay` ({}) is shorter than `delay` ({})", r.max_delay, r.delay),
                )
                .hint("backoff grows from `delay` up to `max_delay`");
            ok = false;
        }
        ok.then_some(r)
    }

    fn stop(&mut self, node: &Node) -> Option<Stop> {
        let fields = self.fields(node, &STOP_FIELDS, "stop")?;
        let mut s = Stop::default();
        let mut ok = true;
        for (k, v) in &fields {
            if k == "signal" {
                let Some(text) = self.string(v) else {
                    ok = false;
                    continue;
                };
                match Signal::parse(&text) {
                    Some(sig) => s.signal = sig,
                    None => {
                        self.unknown_word(v, "signal.unknown", "signal", &text, &Signal::NAMES);
                        ok = false;
                    }
                }
            } else {
                match self.duration(v) {
                    Some(d) => s.timeout = d,
                    None => ok = false,
                }
            }
        }
        ok.then_some(s)
    }

    fn health(&mut self, node: &Node) -> Option<HealthCheck> {
        let fields = self.fields(node, &HEALTH_FIELDS, "a health check")?;
        let (kinds, rest): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(k, _)| Probe::KINDS.contains(&k.as_str()));
        if kinds.len() != 1 {
            let pos = self.pos(node);
            self.diags.error(&pos, "health.shape", "a health check names exactly one kind").hint(format!(
                "write one list item per check, e.g. `- tcp: 127.0.0.1:8080` (kinds: {})",
                Probe::KINDS.join(", ")
            ));
            return None;
        }
        let probe = self.probe(&kinds[0].0, &kinds[0].1);
        let mut check = HealthCheck { probe: probe?, period: None, liveness: None };
        let mut ok = true;
        for (k, v) in &rest {
            if k == "period" {
                match self.period(v) {
                    Some(d) => check.period = Some(d),
                    None => ok = false,
                }
            } else {
                match self.liveness(v) {
                    Some(l) => check.liveness = Some(l),
                    None => ok = false,
                }
            }
        }
        ok.then_some(check)
    }

    /// A probe interval: at least 100 ms, so a typo cannot make the daemon spin.
    fn period(&mut self, node: &Node) -> Option<Dur> {
        let d = self.duration(node)?;
        if d.0 < std::time::Duration::from_millis(100) {
            let pos = self.pos(node);
            self.diags
                .error(&pos, "health.period", format!("period `{d}` is shorter than 100ms"))
                .hint("probes repeat every period once the service is healthy: write e.g. 10s");
            return None;
        }
        Some(d)
    }

    fn liveness(&mut self, node: &Node) -> Option<Liveness> {
        let fields = self.fields(node, &LIVENESS_FIELDS, "liveness")?;
        let mut l = Liveness::default();
        let mut ok = true;
        for (k, v) in &fields {
            if k == "period" {
                match self.period(v) {
                    Some(d) => l.period = d,
                    None => ok = false,
                }
            } else {
                match self.u64(v).and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
                    Some(n) => l.failures = n,
                    None => {
                        let pos = self.pos(v);
                        self.diags
                            .error(&pos, "health.liveness", "`failures` must be a whole number ≥ 1")
                            .hint("how many failed probes in a row restart the service, e.g. 3");
                        ok = false;
                    }
                }
            }
        }
        ok.then_some(l)
    }

    /// Where a process serves its metrics: `{ socket: PATH, path: /metrics }` or
    /// `{ url: http://127.0.0.1:PORT/metrics }` (or that URL alone); the path defaults to
    /// `/metrics`.
    fn metrics(&mut self, node: &Node) -> Option<HttpCheck> {
        self.http_target(node, Family::Metrics)
    }

    fn probe(&mut self, kind: &str, v: &Node) -> Option<Probe> {
        let pos = self.pos(v);
        match kind {
            "unix_socket" => self.string(v).map(Probe::UnixSocket),
            "tcp" => {
                let s = self.string(v)?;
                let port_ok =
                    s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !port_ok {
                    self.diags
                        .error(&pos, "health.tcp", format!("invalid TCP address `{s}`"))
                        .hint("write host:port, e.g. 127.0.0.1:8080");
                    return None;
                }
                Some(Probe::Tcp(s))
            }
            "exec" => self.string(v).map(Probe::Exec),
            "hero_sockets" => {
                let b = self.bool(v)?;
                Some(Probe::HeroSockets(b))
            }
            _ => self.http_target(v, Family::Health).map(Probe::Http),
        }
    }

    /// An HTTP endpoint: a URL `http://host:port/path`, or `{ socket | url, path }`.
    fn http_target(&mut self, v: &Node, family: Family) -> Option<HttpCheck> {
        let code = family.code();
        let pos = self.pos(v);
        if let Some(url) = v.as_scalar().filter(|_| !v.is_null()) {
            let (url, path) = self.http_url(v, url, code)?;
            return Some(HttpCheck {
                socket: None,
                url: Some(url),
                path: path.unwrap_or_else(|| family.default_path()),
            });
        }
        let fields = self.fields(v, &HTTP_CHECK_FIELDS, family.what())?;
        let mut check = HttpCheck { socket: None, url: None, path: family.default_path() };
        for (k, n) in &fields {
            let s = self.string(n)?;
            match k.as_str() {
                "socket" => check.socket = Some(s),
                "url" => {
                    let (url, path) = self.http_url(n, &s, code)?;
                    check.url = Some(url);
                    if let Some(path) = path {
                        check.path = path;
                    }
                }
                _ => {
                    if !s.starts_with('/') {
                        let p = self.pos(n);
                        self.diags.error(&p, code, format!("HTTP path `{s}` must start with `/`"));
                        return None;
                    }
                    check.path = s;
                }
            }
        }
        if check.socket.is_some() == check.url.is_some() {
            self.diags
                .error(&pos, code, format!("{} needs exactly one of `socket` or `url`", family.what()))
                .hint(family.example());
            return None;
        }
        Some(check)
    }

    /// Split `http://host:port/path` into (`http://host:port`, `/path` if one is written).
    fn http_url(&mut self, node: &Node, url: &str, code: &'static str) -> Option<(String, Option<String>)> {
        let Some(rest) = url.strip_prefix("http://") else {
            let pos = self.pos(node);
            self.diags
                .error(&pos, code, format!("unsupported URL `{url}`"))
                .hint("the daemon speaks plain HTTP to local services: write http://host:port/path");
            return None;
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        };
        if authority.is_empty() {
            let pos = self.pos(node);
            self.diags.error(&pos, code, format!("URL `{url}` has no host"));
            return None;
        }
        Some((format!("http://{authority}"), path))
    }

    fn unknown_word(&mut self, node: &Node, code: &'static str, what: &str, word: &str, known: &[&str]) {
        let pos = self.pos(node);
        let d = self.diags.error(&pos, code, format!("unknown {what} `{word}`"));
        match did_you_mean(word, known.iter().copied()) {
            Some(s) => d.hint(format!("did you mean `{s}`? (one of: {})", known.join(", "))),
            None => d.hint(format!("one of: {}", known.join(", "))),
        };
    }

    pub fn service(&mut self, node: &Node) -> Option<Service> {
        let fields = self.fields(node, &SERVICE_FIELDS, "a service")?;
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
        let start = self.pos(node);
        let name = match get("name") {
            Some(n) => self.name(n, "service name"),
            None => {
                self.diags.error(&start, "schema.missing-field", "service has no `name`");
                None
            }
        };
        let context = self.context(get("context"));
        let description = get("description").and_then(|n| self.string(n));
        let status = match get("status") {
            None => Some(ServiceStatus::Start),
            Some(n) => {
                let s = self.string(n)?;
                let parsed = ServiceStatus::parse(&s);
                if parsed.is_none() {
                    self.unknown_word(n, "service.status", "status", &s, &ServiceStatus::NAMES);
                }
                parsed
            }
        };
        // A service with no `actions` runs the action of its own name: the common case.
        let actions = match get("actions") {
            Some(n) => {
                let list = self.references(n, "action");
                if list.is_empty() {
                    let pos = self.pos(n);
                    self.diags
                        .error(&pos, "service.no-actions", "a service needs at least one action")
                        .hint("list the actions to run; the last one is the supervised process");
                    return None;
                }
                list
            }
            None => vec![Named { name: name.as_ref()?.name.clone(), pos: start.clone() }],
        };
        let requires = get("requires").map(|n| self.references(n, "service")).unwrap_or_default();
        let after = get("after").map(|n| self.references(n, "service")).unwrap_or_default();
        Some(Service {
            name: name?.name,
            context: context?,
            description,
            status: status?,
            actions,
            requires,
            after,
            pos: start,
        })
    }

    /// `hero.yaml`.
    pub fn settings(&mut self, doc: &Node) -> Option<Settings> {
        let fields = self.fields(doc, &SETTINGS_FIELDS, "hero.yaml")?;
        let mut s = Settings::default();
        let mut ok = true;
        for (k, v) in &fields {
            match k.as_str() {
                "required_services" => s.required_services = self.references(v, "service"),
                "self_heal" => match self.bool(v) {
                    Some(b) => s.self_heal = b,
                    None => ok = false,
                },
                "prune" => match self.bool(v) {
                    Some(b) => s.prune = b,
                    None => ok = false,
                },
                "interval" => match self.duration(v) {
                    Some(d) if d.0.as_secs() >= 1 => s.interval = d,
                    Some(_) => {
                        let pos = self.pos(v);
                        self.diags.error(&pos, "settings.interval", "`interval` must be at least 1s").hint("local repositories are also watched for commits, so a long interval costs nothing in latency");
                        ok = false;
                    }
                    None => ok = false,
                },
                "registry" => match self.registry(v) {
                    Some(r) => s.registry = Some(r),
                    None => ok = false,
                },
                "forgejo" => match self.forgejo(v) {
                    Some(f) => s.forgejo = Some(f),
                    None => ok = false,
                },
                _ => match self.retention(v) {
                    Some((r, keys)) => {
                        s.retention = r;
                        s.given.extend(keys.into_iter().map(|k| format!("retention.{k}")));
                    }
                    None => ok = false,
                },
            }
            if ok {
                s.given.insert(k.clone());
            }
        }
        ok.then_some(s)
    }

    /// `token: { secret: NAME }`; `None` (reported under `code`) when it is not one.
    fn token_ref(&mut self, t: &Node, code: &'static str) -> Option<Named> {
        let f = self.fields(t, &SECRET_REF_FIELDS, "a secret reference")?;
        match f.first() {
            Some((_, n)) => self.name(n, "secret name"),
            None => {
                let pos = self.pos(t);
                self.diags
                    .error(&pos, code, "token has no `secret`")
                    .hint("write `token: { secret: NAME }`, NAME a key of secrets/core.sops.yaml");
                None
            }
        }
    }

    /// `forgejo: { url, repo, token: { secret } }` (SPEC 3.4): where the daemon posts
    /// commit statuses. `url` and `repo` may be left out when the daemon follows an
    /// https:// remote of that forge (they are derived from it).
    fn forgejo(&mut self, node: &Node) -> Option<Forgejo> {
        let fields = self.fields(node, &FORGEJO_FIELDS, "forgejo")?;
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
        let Some(token_node) = get("token") else {
            let pos = self.pos(node);
            self.diags.error(&pos, "schema.missing-field", "forgejo has no `token`").hint(
                "`token: { secret: NAME }`: a Forgejo access token with the `write:repository` scope, a key of secrets/core.sops.yaml",
            );
            return None;
        };
        let token = self.token_ref(token_node, "settings.forgejo");
        let url = match get("url") {
            None => Some(None),
            Some(u) => self.string(u).and_then(|text| {
                let pos = self.pos(u);
                match check_registry_url(&text, true) {
                    Ok(u) if !u.starts_with("file://") => Some(Some(u)),
                    Ok(_) => {
                        self.diags
                            .error(&pos, "settings.forgejo", "`url` must be the forge's API, not a folder")
                            .hint("`https://HOST/api/v1`");
                        None
                    }
                    Err((why, _)) => {
                        self.diags
                            .error(&pos, "settings.forgejo", why)
                            .hint("`https://HOST/api/v1` (http:// only for a forge on this machine)");
                        None
                    }
                }
            }),
        };
        let repo = match get("repo") {
            None => Some(None),
            Some(r) => self.string(r).and_then(|text| {
                let valid = |p: &str| {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                        && p != "."
                        && p != ".."
                };
                match text.split_once('/') {
                    Some((o, n)) if valid(o) && valid(n) => Some(Some(text)),
                    _ => {
                        let pos = self.pos(r);
                        self.diags
                            .error(&pos, "settings.forgejo", format!("`repo: {text}` is not OWNER/NAME"))
                            .hint("e.g. `repo: hero/hero-config`");
                        None
                    }
                }
            }),
        };
        Some(Forgejo { url: url?, repo: repo?, token: token? })
    }

    /// `registry: { url, token: { secret }, keep, timeout }` (SPEC 3.4, 3.6).
    fn registry(&mut self, node: &Node) -> Option<Registry> {
        let fields = self.fields(node, &REGISTRY_FIELDS, "registry")?;
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
        let Some(url_node) = get("url") else {
            let pos = self.pos(node);
            self.diags.error(&pos, "schema.missing-field", "registry has no `url`").hint(
                "`url: https://HOST/api/packages/OWNER/generic` (a Forgejo generic package registry) or `file:///dir`",
            );
            return None;
        };
        let mut ok = true;
        let token = get("token").and_then(|t| self.token_ref(t, "settings.registry"));
        if get("token").is_some() && token.is_none() {
            ok = false;
        }
        let url = self.string(url_node).and_then(|u| {
            let pos = self.pos(url_node);
            match check_registry_url(&u, token.is_some()) {
                Ok(u) => Some(u),
                Err((why, hint)) => {
                    self.diags.error(&pos, "settings.registry", why).hint(hint);
                    None
                }
            }
        });
        let keep = match get("keep") {
            None => Some(Registry::DEFAULT_KEEP),
            Some(n) => match self.u64(n) {
                Some(k) if (1..=1000).contains(&k) => Some(k as u32),
                Some(_) => {
                    let pos = self.pos(n);
                    self.diags
                        .error(&pos, "settings.registry", "`keep` must be between 1 and 1000")
                        .hint("the versions kept per artifact name: the running one and those a rollback may need");
                    None
                }
                None => None,
            },
        };
        let timeout = match get("timeout") {
            None => Some(Dur(Registry::DEFAULT_TIMEOUT)),
            Some(n) => match self.duration(n) {
                Some(d) if d.0 >= std::time::Duration::from_millis(100) => Some(d),
                Some(_) => {
                    let pos = self.pos(n);
                    self.diags.error(&pos, "settings.registry", "`timeout` must be at least 100ms");
                    None
                }
                None => None,
            },
        };
        if !ok {
            return None;
        }
        Some(Registry { url: url?, token, keep: keep?, timeout: timeout? })
    }

    /// The retention and the keys the file sets.
    fn retention(&mut self, node: &Node) -> Option<(Retention, Vec<String>)> {
        let fields = self.fields(node, &RETENTION_FIELDS, "retention")?;
        let keys = fields.iter().map(|(k, _)| k.clone()).collect();
        let mut r = Retention::default();
        let mut ok = true;
        for (k, v) in &fields {
            match k.as_str() {
                "compact_every" => match self.duration(v) {
                    Some(d) => r.compact_every = d,
                    None => ok = false,
                },
                _ => match self.u64(v) {
                    Some(0) => {
                        let pos = self.pos(v);
                        self.diags.error(&pos, "settings.retention", format!("`{k}` must be at least 1"));
                        ok = false;
                    }
                    Some(n) if k == "max_age_days" => r.max_age_days = n,
                    Some(n) => r.max_rows_per_table = n,
                    None => ok = false,
                },
            }
        }
        ok.then_some((r, keys))
    }
}

/// A registry URL as it will be used (no trailing `/`), or why not with a hint. Checked
/// here so a typo fails `validate`, not the first deploy.
pub fn check_registry_url(url: &str, with_token: bool) -> Result<String, (String, String)> {
    let base = url.trim_end_matches('/').to_owned();
    if let Some(path) = base.strip_prefix("file://") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err((
                format!("`{url}` is not an absolute `file:///` path"),
                "write `file:///srv/artifacts` (three slashes: an empty host, then the path)".into(),
            ));
        }
        if path.split('/').any(|seg| seg == "..") {
            return Err((format!("`{url}` has a `..`"), "name the folder directly".into()));
        }
        return Ok(base);
    }
    let (scheme, rest) = match base.split_once("://") {
        Some((s @ ("https" | "http"), rest)) => (s, rest),
        _ => {
            return Err((
                format!("`{url}` is not an https://, http:// or file:/// URL"),
                "a Forgejo generic package registry: `https://HOST/api/packages/OWNER/generic`".into(),
            ));
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err((
            "the registry URL carries credentials".into(),
            "remove them from the URL and give the token as `token: { secret: NAME }`: a URL is shown in status and logs".into(),
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err((
            format!("`{url}` is not a registry base URL"),
            "`https://HOST/api/packages/OWNER/generic`".into(),
        ));
    }
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if scheme == "http" && with_token && !loopback {
        return Err((
            format!("the token would travel in clear to {host} over http://"),
            "use https:// (http:// is accepted for a registry on this machine, or one without a token: digests are checked either way)".into(),
        ));
    }
    Ok(base)
}

/// A step (`*/N`, `a-b/N`) must fit its field: croner accepts `*/61` in the minutes and
/// fires at minute 0 only, which is never what was meant.
fn check_cron_steps(expr: &str) -> Result<(), String> {
    if expr.trim_start().starts_with('@') {
        return Ok(());
    }
    let words: Vec<&str> = expr.split_whitespace().collect();
    const FIVE: [(&str, u32, u32); 5] =
        [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];
    let ranges: Vec<(&str, u32, u32)> =
        if words.len() == 6 { std::iter::once(("second", 0, 59)).chain(FIVE).collect() } else { FIVE.to_vec() };
    for (word, (field, min, max)) in words.iter().zip(ranges) {
        for part in word.split(',') {
            let Some((_, step)) = part.split_once('/') else { continue };
            let Ok(n) = step.parse::<u32>() else { continue };
            let span = max - min + 1;
            if n == 0 {
                return Err(format!(
                    "step /0 in the {field} field `{part}` does not fit its range {min}-{max}: a step is at least 1"
                ));
            }
            if n >= span {
                return Err(format!(
                    "step /{n} in the {field} field `{part}` does not fit its range {min}-{max}: it would fire only at the range's first value"
                ));
            }
        }
    }
    Ok(())
}

/// Parse `500ms`, `10s`, `5m`, `1h`, `2d` (and combinations humantime accepts, like `1h 30m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        return Err("a unit is required".into());
    }
    humantime::parse_duration(t).map_err(|e| e.to_string())
}

/// Check a cron expression: 5 fields, or 6 with seconds first, or a `@nickname`.
pub fn check_cron(expr: &str) -> Result<(), String> {
    parse_cron(expr).map(|_| ())
}

/// Parse a cron expression with the rules `validate` enforces (the scheduler uses this
/// same function, so what validates is what fires).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(expr.trim_start().starts_with('@') || fields == 5 || fields == 6) {
        return Err(format!("{fields} fields; expected 5, or 6 with seconds"));
    }
    check_cron_steps(expr)?;
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("hero_db"));
        assert!(is_valid_name("a.b-c_9"));
        assert!(!is_valid_name("Hero"));
        assert!(!is_valid_name("_x"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert!(is_valid_name(&"a".repeat(64)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten seconds").is_err());
    }

    #[test]
    fn cron() {
        assert!(check_cron("*/15 * * * *").is_ok());
        assert!(check_cron("0 */15 * * * *").is_ok());
        assert!(check_cron("@hourly").is_ok());
        assert!(check_cron("* * * *").is_err());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_cron("* * * * * * 2030").is_err());
        // Steps beyond their field's range are errors, not a silent "once at 0".
        for bad in ["*/61 * * * *", "*/60 * * * *", "0 */24 * * *", "0 0 */32 * *", "*/0 * * * *", "*/75 * * * * *"] {
            let e = check_cron(bad).unwrap_err();
            assert!(e.contains("does not fit its range"), "{bad}: {e}");
        }
        for ok in ["*/59 * * * *", "0 */12 * * *", "0-30/15 * * * *", "0 0 1 */6 *", "*/30 * * * * *"] {
            assert!(check_cron(ok).is_ok(), "{ok}");
        }
    }
}
