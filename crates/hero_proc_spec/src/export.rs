//! The live state written back as a config repository (`hero_proc export`): canonical
//! YAML text for actions, services, `hero.yaml` and the secret-name templates.
//!
//! Pure like the rest of this crate: it returns file contents and never writes them. The
//! output is canonical, so exporting the same state twice gives the same bytes:
//!
//! - files are named and filled in a fixed way (see [`render`]), objects sorted by
//!   context and name, fields in the model's order, environment by name;
//! - a field equal to the decoder's default is left out (`context: core`, `interpreter:
//!   exec`, `process: false`, the default `restart` and `stop` fields, a service's
//!   `status: start` and `actions: [<name>]`, ...), so a file says only what was chosen;
//! - strings are written plain when YAML reads them back as the same string, else
//!   double-quoted with escapes (a multi-line script as a literal block when that is
//!   exact); there is no timestamp, host name or other varying text.
//!
//! [`check_round_trip`] reads the files back with the loader's decoder and compares each
//! object with the one exported: the CLI refuses to write an export that would not load
//! back as what runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::diag::Diagnostics;
use crate::model::{
    Action, DEFAULT_CONTEXT, EnvValue, HealthCheck, HttpCheck, Interpreter, Liveness, Named, Probe, Restart, Service,
    ServiceStatus, Settings, Stop,
};

/// What an export holds: the objects, the secret names by context (never values) and the
/// repository settings to write in `hero.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub actions: Vec<Action>,
    pub services: Vec<Service>,
    /// Context to secret names.
    pub secret_names: BTreeMap<String, Vec<String>>,
    /// `required_services` is always written (when it is not the default); of the other
    /// settings, the keys in `settings.given`.
    pub settings: Settings,
}

/// The header of every file written.
const HEADER: &str = "# Written by `hero_proc export` from the live state of a hero_proc daemon.\n";

/// The repository's files, by path relative to its root:
///
/// - `actions/<service>.yaml` per service of context `core` (`actions/<context>.<service>.yaml`
///   for another context): the service and the actions it names (an action named by
///   several services goes with the first of them, by context and name);
/// - `actions/<context>.yaml`: the actions no exported service names, per context;
/// - `hero.yaml`;
/// - `secrets/<context>.sops.yaml.example` per context with secrets: the names, with
///   empty values, and the `sops` commands that make the real file.
///
/// Two groups that land on one file name share the file (a file holds any number of
/// actions and services).
pub fn render(e: &Export) -> BTreeMap<String, String> {
    let mut actions: BTreeMap<(String, String), &Action> = BTreeMap::new();
    for a in &e.actions {
        actions.insert((a.context.clone(), a.name.clone()), a);
    }
    let mut services: BTreeMap<(String, String), &Service> = BTreeMap::new();
    for s in &e.services {
        services.insert((s.context.clone(), s.name.clone()), s);
    }
    // File name -> (actions, services) keys.
    type Group = (BTreeSet<(String, String)>, BTreeSet<(String, String)>);
    let mut files: BTreeMap<String, Group> = BTreeMap::new();
    let mut placed: BTreeSet<(String, String)> = BTreeSet::new();
    for (key, s) in &services {
        let file = if s.context == DEFAULT_CONTEXT {
            format!("actions/{}.yaml", s.name)
        } else {
            format!("actions/{}.{}.yaml", s.context, s.name)
        };
        let group = files.entry(file).or_default();
        group.1.insert(key.clone());
        for n in &s.actions {
            let Some(k) = resolve(n, &s.context, |k| actions.contains_key(k)) else { continue };
            if placed.insert(k.clone()) {
                group.0.insert(k);
            }
        }
    }
    for key in actions.keys() {
        if !placed.contains(key) {
            files.entry(format!("actions/{}.yaml", key.0)).or_default().0.insert(key.clone());
        }
    }

    let mut out = BTreeMap::new();
    for (file, (akeys, skeys)) in files {
        let mut text = String::from(HEADER);
        if !akeys.is_empty() {
            text.push_str("actions:\n");
            for k in &akeys {
                write_action(&mut text, actions[k]);
            }
        }
        if !skeys.is_empty() {
            text.push_str("services:\n");
            for k in &skeys {
                write_service(&mut text, services[k]);
            }
        }
        out.insert(file, text);
    }
    out.insert("hero.yaml".to_owned(), hero_yaml(&e.settings));
    for (context, names) in &e.secret_names {
        if names.is_empty() {
            continue;
        }
        out.insert(format!("secrets/{context}.sops.yaml.example"), secrets_example(context, names));
    }
    out
}

/// The action a service's reference names: in the service's context first, then `core`.
fn resolve(n: &Named, context: &str, exists: impl Fn(&(String, String)) -> bool) -> Option<(String, String)> {
    match n.split() {
        (Some(c), name) => Some((c.to_owned(), name.to_owned())),
        (None, name) => {
            let own = (context.to_owned(), name.to_owned());
            let core = (DEFAULT_CONTEXT.to_owned(), name.to_owned());
            if exists(&own) {
                Some(own)
            } else if exists(&core) {
                Some(core)
            } else {
                None
            }
        }
    }
}

/// One action as a list item of `actions:`, defaults left out.
pub fn write_action(out: &mut String, a: &Action) {
    let Action {
        name,
        context,
        description,
        interpreter,
        script,
        env,
        cwd,
        process,
        restart,
        stop,
        timeout,
        health,
        metrics,
        depends_on,
        schedule,
        tags,
        user,
        group,
        pos: _,
    } = a;
    let _ = writeln!(out, "  - name: {}", scalar(name));
    let f = "    ";
    if context != DEFAULT_CONTEXT {
        field(out, f, "context", context);
    }
    if let Some(d) = description {
        field(out, f, "description", d);
    }
    if *interpreter != Interpreter::Exec {
        let word = interpreter.name();
        field(out, f, "interpreter", word);
    }
    field(out, f, "script", script);
    if !env.is_empty() {
        let _ = writeln!(out, "{f}env:");
        for (k, v) in env.iter() {
            match v {
                EnvValue::Plain(s) => field(out, "      ", k, s),
                EnvValue::Secret(n) => {
                    let _ = writeln!(out, "      {}: {{ secret: {} }}", key(k), scalar(&n.name));
                }
            }
        }
    }
    if let Some(c) = cwd {
        field(out, f, "cwd", c);
    }
    if *process {
        let _ = writeln!(out, "{f}process: true");
    }
    if *restart != Restart::default() {
        let d = Restart::default();
        let _ = writeln!(out, "{f}restart:");
        if restart.policy != d.policy {
            let word = restart.policy.name();
            let _ = writeln!(out, "      policy: {word}");
        }
        if restart.delay != d.delay {
            let _ = writeln!(out, "      delay: {}", restart.delay);
        }
        if restart.max_delay != d.max_delay {
            let _ = writeln!(out, "      max_delay: {}", restart.max_delay);
        }
        if restart.max_retries != d.max_retries {
            let _ = writeln!(out, "      max_retries: {}", restart.max_retries);
        }
    }
    if *stop != Stop::default() {
        let d = Stop::default();
        let _ = writeln!(out, "{f}stop:");
        if stop.signal != d.signal {
            let _ = writeln!(out, "      signal: {}", stop.signal.name());
        }
        if stop.timeout != d.timeout {
            let _ = writeln!(out, "      timeout: {}", stop.timeout);
        }
    }
    if let Some(t) = timeout {
        let _ = writeln!(out, "{f}timeout: {t}");
    }
    if !health.is_empty() {
        let _ = writeln!(out, "{f}health:");
        for h in health {
            write_check(out, h);
        }
    }
    if let Some(m) = metrics {
        write_http(out, f, "metrics", m, "/metrics");
    }
    if !depends_on.is_empty() {
        let _ = writeln!(out, "{f}depends_on: {}", names(depends_on));
    }
    if let Some(s) = schedule {
        field(out, f, "schedule", s);
    }
    if !tags.is_empty() {
        let _ = writeln!(out, "{f}tags:");
        for t in tags {
            let _ = writeln!(out, "      - {}", quoted_unless_plain(t));
        }
    }
    if let Some(u) = user {
        field(out, f, "user", u);
    }
    if let Some(g) = group {
        field(out, f, "group", g);
    }
}

/// `- tcp: 127.0.0.1:80`, then `period:` and `liveness: { period: 10s, failures: 3 }`
/// when set.
fn write_check(out: &mut String, h: &HealthCheck) {
    let HealthCheck { probe, period, liveness } = h;
    let item = "      - ";
    let more = "        ";
    match probe {
        Probe::UnixSocket(p) => {
            let _ = writeln!(out, "{item}unix_socket: {}", quoted_unless_plain(p));
        }
        Probe::Tcp(a) => {
            let _ = writeln!(out, "{item}tcp: {}", quoted_unless_plain(a));
        }
        Probe::Exec(c) => {
            let _ = writeln!(out, "{item}exec: {}", quoted_unless_plain(c));
        }
        Probe::HeroSockets(b) => {
            let _ = writeln!(out, "{item}hero_sockets: {b}");
        }
        Probe::Http(c) => {
            out.push_str("      -");
            write_http(out, " ", "http", c, "/");
            // `write_http` wrote its continuation lines at the item's indentation.
        }
    }
    if let Some(p) = period {
        let _ = writeln!(out, "{more}period: {p}");
    }
    if let Some(Liveness { period, failures }) = liveness {
        let _ = writeln!(out, "{more}liveness: {{ period: {period}, failures: {failures} }}");
    }
}

/// An HTTP target: the URL alone when it is one (`http://host:port/path`, the path left
/// out when it is the default), else `{ socket: PATH, path: /p }` as a flow mapping.
fn write_http(out: &mut String, indent: &str, k: &str, c: &HttpCheck, default_path: &str) {
    let HttpCheck { socket, url, path } = c;
    match (socket, url) {
        (None, Some(u)) => {
            let full = if path == default_path { u.clone() } else { format!("{u}{path}") };
            let _ = writeln!(out, "{indent}{k}: {}", quoted_unless_plain(&full));
        }
        _ => {
            let mut parts = Vec::new();
            if let Some(s) = socket {
                parts.push(format!("socket: {}", quoted(s)));
            }
            if let Some(u) = url {
                parts.push(format!("url: {}", quoted(u)));
            }
            if path != default_path {
                parts.push(format!("path: {}", quoted(path)));
            }
            let _ = writeln!(out, "{indent}{k}: {{ {} }}", parts.join(", "));
        }
    }
}

/// One service as a list item of `services:`, defaults left out.
pub fn write_service(out: &mut String, s: &Service) {
    let Service { name, context, description, status, actions, requires, after, pos: _ } = s;
    let _ = writeln!(out, "  - name: {}", scalar(name));
    let f = "    ";
    if context != DEFAULT_CONTEXT {
        field(out, f, "context", context);
    }
    if let Some(d) = description {
        field(out, f, "description", d);
    }
    if *status != ServiceStatus::Start {
        let word = status.name();
        let _ = writeln!(out, "{f}status: {word}");
    }
    if actions.len() != 1 || actions[0].name != *name {
        let _ = writeln!(out, "{f}actions: {}", names(actions));
    }
    if !requires.is_empty() {
        let _ = writeln!(out, "{f}requires: {}", names(requires));
    }
    if !after.is_empty() {
        let _ = writeln!(out, "{f}after: {}", names(after));
    }
}

/// `hero.yaml`: `required_services` unless it is the default, and the other settings the
/// export was given (`settings.given`).
pub fn hero_yaml(s: &Settings) -> String {
    let mut out = String::from(HEADER);
    let d = Settings::default();
    if s.required_services != d.required_services {
        let _ = writeln!(out, "required_services: {}", names(&s.required_services));
    }
    if s.is_given("self_heal") {
        let _ = writeln!(out, "self_heal: {}", s.self_heal);
    }
    if s.is_given("prune") {
        let _ = writeln!(out, "prune: {}", s.prune);
    }
    if s.is_given("interval") {
        let _ = writeln!(out, "interval: {}", s.interval);
    }
    let r = &s.retention;
    let mut retention = Vec::new();
    if s.is_given("retention.max_age_days") {
        retention.push(format!("max_age_days: {}", r.max_age_days));
    }
    if s.is_given("retention.max_rows_per_table") {
        retention.push(format!("max_rows_per_table: {}", r.max_rows_per_table));
    }
    if s.is_given("retention.compact_every") {
        retention.push(format!("compact_every: {}", r.compact_every));
    }
    if !retention.is_empty() {
        let _ = writeln!(out, "retention: {{ {} }}", retention.join(", "));
    }
    out
}

/// A template listing the secret names of `context` with empty values: plain text that
/// holds no secret, and the commands that make the real, encrypted file from it.
pub fn secrets_example(context: &str, names: &[String]) -> String {
    let mut out = String::from(HEADER);
    let _ = write!(
        out,
        "# The secrets of context `{context}`, by name only: an export never writes a value.
# hero_proc reads secrets/{context}.sops.yaml, encrypted with sops to each host's age key
# (docs/SECRETS.md). Make it from this file, filling in each value, then delete this one:
#
#   umask 077; cp secrets/{context}.sops.yaml.example /tmp/{context}.yaml
#   $EDITOR /tmp/{context}.yaml                          # a value for each name
#   sops --encrypt --age AGE_RECIPIENT[,AGE_RECIPIENT...] --input-type yaml --output-type yaml \\
#     /tmp/{context}.yaml > secrets/{context}.sops.yaml
#   rm /tmp/{context}.yaml secrets/{context}.sops.yaml.example
#   hero_proc validate .                                # every {{ secret: NAME }} resolves
#
# (With creation rules in .sops.yaml: `sops edit secrets/{context}.sops.yaml` and add each name.)
"
    );
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    names.dedup();
    for n in names {
        let _ = writeln!(out, "{}: \"\"", key(n));
    }
    out
}

/// Read `files` back with the loader's decoder and compare every object with the one
/// exported. `Err` names the first object that differs or is missing, or the first
/// error the decoder reports: a bug in this module, caught before anything is written.
pub fn check_round_trip(files: &BTreeMap<String, String>, e: &Export) -> Result<(), String> {
    let mut actions = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (path, text) in files.iter().filter(|(p, _)| p.starts_with("actions/")) {
        let mut diags = Diagnostics::new();
        let set = crate::load::parse_objects(path, text, &mut diags);
        if let Some(d) = diags.iter().next() {
            return Err(format!("{path}: {}", d.message));
        }
        for a in set.actions {
            actions.insert((a.context.clone(), a.name.clone()), a);
        }
        for s in set.services {
            services.insert((s.context.clone(), s.name.clone()), s);
        }
    }
    for a in &e.actions {
        match actions.get(&(a.context.clone(), a.name.clone())) {
            Some(back) if **back == *a => {}
            Some(_) => return Err(format!("action {}/{} reads back differently", a.context, a.name)),
            None => return Err(format!("action {}/{} is missing", a.context, a.name)),
        }
    }
    for s in &e.services {
        match services.get(&(s.context.clone(), s.name.clone())) {
            Some(back) if **back == *s => {}
            Some(_) => return Err(format!("service {}/{} reads back differently", s.context, s.name)),
            None => return Err(format!("service {}/{} is missing", s.context, s.name)),
        }
    }
    if actions.len() != e.actions.len() || services.len() != e.services.len() {
        return Err("the files hold more objects than were exported".into());
    }
    Ok(())
}

// ---- scalars -------------------------------------------------------------------------

/// `key: value` at `indent`, the value as [`scalar`] writes it, or as a literal block when
/// it has several lines and one is exact.
fn field(out: &mut String, indent: &str, k: &str, v: &str) {
    match literal_block(v, indent) {
        Some(block) => {
            let _ = write!(out, "{indent}{}: {block}", key(k));
        }
        None => {
            let _ = writeln!(out, "{indent}{}: {}", key(k), scalar(v));
        }
    }
}

fn key(k: &str) -> String {
    scalar(k)
}

/// A flow list of references: `[a, core/b]` (names are plain-safe by their rules).
fn names(list: &[Named]) -> String {
    let items: Vec<String> = list.iter().map(|n| quoted_unless_plain(&n.name)).collect();
    format!("[{}]", items.join(", "))
}

/// A value in block context: plain when that reads back as the same string.
fn scalar(s: &str) -> String {
    quoted_unless_plain(s)
}

fn quoted_unless_plain(s: &str) -> String {
    if is_plain_safe(s) { s.to_owned() } else { quoted(s) }
}

/// A plain scalar that reads back as this very string in block and flow context, by a
/// conservative rule: a safe first character, no indicator sequences, nothing YAML would
/// read as null, a boolean or a number.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if !(first.is_ascii_alphanumeric() || matches!(first, '_' | '.' | '/' | '~' | '$')) {
        return false;
    }
    if s == "~" || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || " _./~$@+=%:-".contains(c)) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains("  ") {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    const WORDS: [&str; 13] =
        ["true", "false", "yes", "no", "on", "off", "y", "n", "null", ".inf", ".nan", "-.inf", "+.inf"];
    if WORDS.contains(&lower.as_str()) {
        return false;
    }
    !looks_numeric(s)
}

/// Whether YAML 1.1 or 1.2 could read `s` as a number: an integer in any base, a float
/// (`1.5`, `.5`, `1e3`), or a sexagesimal `1:30` / `1:30.5`.
fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if t.starts_with("0x") || t.starts_with("0o") || t.starts_with("0b") {
        return true;
    }
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '_');
    if t.contains(':') {
        let mut parts = t.split(':');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let (last, middle) = rest.split_last().map(|(l, m)| (*l, m)).unwrap_or(("", &[]));
        let last_int = last.split_once('.').map(|(i, _)| i).unwrap_or(last);
        return digits(first) && middle.iter().all(|p| digits(p)) && digits(last_int);
    }
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((i, f)) => (digits(i) || i.is_empty()) && (digits(f) || f.is_empty()) && !(i.is_empty() && f.is_empty()),
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(|x| digits(x.strip_prefix(['+', '-']).unwrap_or(x)))
}

/// A YAML double-quoted scalar. Control characters, DEL, the BOM, line and paragraph
/// separators and non-characters are escaped; other text is written as it is.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}') => {
                let n = c as u32;
                if n <= 0xFF {
                    let _ = write!(out, "\\x{n:02X}");
                } else {
                    let _ = write!(out, "\\u{n:04X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `|` or `|-` and the lines, indented two more than `indent`, when that reads back as
/// exactly `s`: several lines, printable characters and tabs only, no line that is only
/// white space, a first line that does not start with a space, and at most one final
/// newline. `None`: write it quoted.
fn literal_block(s: &str, indent: &str) -> Option<String> {
    if !s.contains('\n') {
        return None;
    }
    let (body, chomp) = match s.strip_suffix('\n') {
        Some(b) => (b, "|"),
        None => (s, "|-"),
    };
    if body.is_empty() || body.ends_with('\n') {
        return None;
    }
    // The first line with text sets the block's indentation: it must not start with blanks.
    if body.split('\n').find(|l| !l.is_empty()).is_none_or(|l| l.starts_with([' ', '\t'])) {
        return None;
    }
    let printable = |c: char| {
        c == '\t' || !(c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'))
    };
    if !body.chars().filter(|c| *c != '\n').all(printable) {
        return None;
    }
    if body.split('\n').any(|l| !l.is_empty() && l.trim_matches([' ', '\t']).is_empty()) {
        return None;
    }
    let inner = format!("{indent}  ");
    let mut out = format!("{chomp}\n");
    for line in body.split('\n') {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{inner}{line}");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_when_it_reads_back_the_same() {
        for s in ["web", "~/hero/bin/web --port 80", "127.0.0.1:80", "10s", "hero_db", "a.b-c", "$HOME/x"] {
            assert!(is_plain_safe(s), "{s}");
        }
        for s in [
            "",
            "~",
            "true",
            "No",
            "null",
            "1",
            "1.5",
            "0x1F",
            "1:30",
            "-1",
            "1e3",
            "*/5 * * * *",
            "@hourly",
            "a: b",
            "a #b",
            "a ",
            "-x",
            "[x]",
            "{x}",
            "a,b",
            "x\ny",
            "'q'",
            "\"q\"",
            "!tag",
            "&a",
            "%x",
            "é",
        ] {
            assert!(!is_plain_safe(s), "{s}");
        }
    }
}

#[cfg(test)]
mod round_trip {
    use std::time::Duration;

    use super::*;
    use crate::model::{Dur, EnvMap, Signal};

    fn action(name: &str) -> Action {
        let mut d = Diagnostics::new();
        let set = crate::load::parse_objects("t.yaml", &format!("actions:\n  - name: {name}\n    script: x\n"), &mut d);
        Action::clone(&set.actions[0])
    }

    fn service(name: &str) -> Service {
        let mut d = Diagnostics::new();
        let set = crate::load::parse_objects("t.yaml", &format!("services:\n  - name: {name}\n"), &mut d);
        Service::clone(&set.services[0])
    }

    #[test]
    fn every_field_and_awkward_text_reads_back_the_same() {
        let mut a = action("web");
        a.context = "geo".into();
        a.description = Some("two\nlines".into());
        a.interpreter = Interpreter::Bash;
        a.script = "set -e\n\necho \"$HOME\" # not a comment\n  indented: yes\n\ttab\n".into();
        let env: EnvMap = [
            ("A".to_owned(), EnvValue::Plain("true".into())),
            ("B".to_owned(), EnvValue::Plain(String::new())),
            ("C".to_owned(), EnvValue::Plain(" lead and trail ".into())),
            ("D".to_owned(), EnvValue::Plain("ünïcödé \u{7f} \u{feff} \u{2028} nul\0 ✓".into())),
            ("E".to_owned(), EnvValue::Secret(Named::new("tok"))),
            ("NO".to_owned(), EnvValue::Plain("010".into())),
            ("Y".to_owned(), EnvValue::Plain("a: b, [c] {d} #e".into())),
        ]
        .into_iter()
        .collect();
        a.env = env;
        a.cwd = Some("~/hero".into());
        a.process = true;
        a.restart = Restart {
            policy: crate::model::RestartMode::Always,
            delay: Dur(Duration::from_millis(500)),
            max_delay: Dur::secs(90),
            max_retries: 3,
        };
        a.stop = Stop { signal: Signal::Int, timeout: Dur::secs(5) };
        a.health = vec![
            Probe::Tcp("127.0.0.1:80".into()).into(),
            HealthCheck {
                probe: Probe::Http(HttpCheck {
                    socket: None,
                    url: Some("http://127.0.0.1:1".into()),
                    path: "/h".into(),
                }),
                period: Some(Dur::secs(5)),
                liveness: Some(Liveness { period: Dur::secs(10), failures: 3 }),
            },
            Probe::Http(HttpCheck { socket: None, url: Some("http://127.0.0.1:2".into()), path: "/".into() }).into(),
            Probe::Http(HttpCheck { socket: Some("~/s.sock".into()), url: None, path: "/health".into() }).into(),
            Probe::UnixSocket("/run/x y.sock".into()).into(),
            Probe::Exec("test -e /tmp/x && echo 'ok'".into()).into(),
            Probe::HeroSockets(true).into(),
        ];
        a.metrics = Some(HttpCheck { socket: Some("/m.sock".into()), url: None, path: "/metrics".into() });
        a.depends_on = vec![Named::new("prep"), Named::new("core/db")];
        a.tags = vec!["web".into(), "1".into()];
        a.user = Some("hero".into());
        a.group = Some("hero".into());
        let mut job = action("backup");
        job.schedule = Some("*/15 * * * *".into());
        job.timeout = Some(Dur::secs(600));
        job.stop.timeout = Dur(Duration::from_millis(1500));
        let mut hourly = action("hourly");
        hourly.schedule = Some("@hourly".into());
        hourly.metrics =
            Some(HttpCheck { socket: None, url: Some("http://127.0.0.1:9".into()), path: "/metrics".into() });
        let mut prep = action("prep");
        prep.context = "geo".into();
        let mut s = service("web");
        s.context = "geo".into();
        s.description = Some("the web".into());
        s.status = ServiceStatus::Stop;
        s.actions = vec![Named::new("prep"), Named::new("web")];
        s.requires = vec![Named::new("core/db")];
        s.after = vec![Named::new("db")];
        let db = service("db");
        let mut dba = action("db");
        dba.process = true;
        let e = Export {
            actions: vec![a, job, hourly, prep, dba],
            services: vec![s, db],
            secret_names: [("geo".to_owned(), vec!["tok".to_owned()])].into_iter().collect(),
            settings: Settings { required_services: vec![Named::new("db")], ..Settings::default() },
        };
        let files = render(&e);
        check_round_trip(&files, &e).unwrap_or_else(|err| panic!("{err}\n{files:#?}"));
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [
                "actions/core.yaml",
                "actions/db.yaml",
                "actions/geo.web.yaml",
                "hero.yaml",
                "secrets/geo.sops.yaml.example"
            ]
        );
        assert!(
            files["actions/geo.web.yaml"].contains("      - tcp: 127.0.0.1:80\n"),
            "{}",
            files["actions/geo.web.yaml"]
        );
        assert!(
            files["actions/geo.web.yaml"].contains(
                "      - http: http://127.0.0.1:1/h\n        period: 5s\n        liveness: { period: 10s, failures: 3 }\n"
            ),
            "{}",
            files["actions/geo.web.yaml"]
        );
        assert_eq!(
            files["actions/db.yaml"],
            format!("{HEADER}actions:\n  - name: db\n    script: x\n    process: true\nservices:\n  - name: db\n")
        );
        assert_eq!(files, render(&e), "the same state, the same bytes");

        // As a repository: only the secret reference is missing (the example is not the
        // secrets file), and an example that holds a value is refused.
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in &files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let codes = |dir: &std::path::Path| -> Vec<String> {
            let checked = crate::load_tree(&crate::DirSource::new(dir));
            checked.diagnostics.iter().map(|d| format!("{} {}", d.code, d.pos().file)).collect()
        };
        assert_eq!(codes(dir.path()), ["ref.secret actions/geo.web.yaml"]);
        std::fs::write(dir.path().join("secrets/geo.sops.yaml.example"), "tok: hunter2\n").unwrap();
        assert_eq!(
            codes(dir.path()),
            ["ref.secret actions/geo.web.yaml", "layout.secrets-example secrets/geo.sops.yaml.example"]
        );
    }
}
