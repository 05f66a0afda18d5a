//! The Prometheus text exposition format (0.0.4): a strict parser for what a service
//! serves, and the merge of many services' families into one valid exposition, each
//! sample labelled with its service.
//!
//! Small crates parse this format, none well kept or strict enough to promise that what
//! comes out passes `promtool check metrics`; so this is a parser of its own, as strict
//! as Prometheus' `expfmt`: metric and label names, escapes, values, timestamps, one
//! `HELP` and one `TYPE` per family (the `TYPE` before its samples), the samples each
//! type allows (`_bucket` with `le`, a summary's quantiles with `quantile`), no label
//! twice, no series twice. A target with any error is dropped whole (the caller reports
//! it), never half emitted.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// A family's type; a family without a `TYPE` line is `untyped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    /// Whether a sample named `name` belongs to family `f` of this type.
    fn owns(self, f: &str, name: &str) -> bool {
        match name.strip_prefix(f) {
            Some("") => self != Kind::Histogram,
            Some("_sum" | "_count") => matches!(self, Kind::Histogram | Kind::Summary),
            Some("_bucket") => self == Kind::Histogram,
            _ => false,
        }
    }

    /// The names the samples of family `f` of this type may have.
    fn sample_names(self, f: &str) -> Vec<String> {
        match self {
            Kind::Histogram => vec![format!("{f}_bucket"), format!("{f}_sum"), format!("{f}_count")],
            Kind::Summary => vec![f.to_owned(), format!("{f}_sum"), format!("{f}_count")],
            _ => vec![f.to_owned()],
        }
    }
}

/// One metric family of one target, its samples already written out with the target's
/// label (see [`parse`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    /// The docstring, escaped as written.
    pub help: Option<String>,
    /// How many samples `lines` holds.
    pub samples: usize,
    /// The samples, one line each: `name{label="value",<its labels>} value [timestamp]`,
    /// label values, value and timestamp as written (checked).
    pub lines: String,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && is_name_start(b[0]) && b.iter().all(|c| is_name_char(*c))
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus).
pub fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !s.starts_with("__")
}

/// A float as Go's `ParseFloat` and OpenMetrics both read it: decimal with an optional
/// exponent, or `NaN`, `Inf`, `+Inf`, `-Inf` (any case, `Infinity` too).
pub fn valid_value(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return true;
    }
    if s.eq_ignore_ascii_case("nan") {
        return true;
    }
    let b = unsigned.as_bytes();
    let mut i = 0;
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac;
    }
    if int + frac == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Milliseconds: `-?[0-9]+` that fits an i64.
fn valid_timestamp(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) && s.parse::<i64>().is_ok()
}

/// The unescaped form of a label value (`\\`, `\"`, `\n`), for `le` and `quantile`.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A cursor over one line.
struct Line<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Line<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }
    fn blanks(&mut self) -> usize {
        let n = self.rest().len() - self.rest().trim_start_matches(is_blank).len();
        self.at += n;
        n
    }
    /// A run of name characters (metric names allow `:`; label names are checked after).
    fn name(&mut self) -> &'a str {
        let r = self.rest();
        let n = r.bytes().take_while(|c| is_name_char(*c)).count();
        self.at += n;
        &r[..n]
    }
    /// Up to the next blank or the end.
    fn token(&mut self) -> &'a str {
        let r = self.rest();
        let n = r.find(is_blank).unwrap_or(r.len());
        self.at += n;
        &r[..n]
    }
    /// A quoted label value; returns it escaped as written (the escapes checked).
    fn quoted(&mut self) -> Result<&'a str, String> {
        if self.peek() != Some(b'"') {
            return Err("expected '\"' to open a label value".into());
        }
        self.at += 1;
        let start = self.at;
        let b = self.s.as_bytes();
        while let Some(&c) = b.get(self.at) {
            match c {
                b'"' => {
                    let v = &self.s[start..self.at];
                    self.at += 1;
                    return Ok(v);
                }
                b'\\' => match b.get(self.at + 1) {
                    Some(b'\\' | b'"' | b'n') => self.at += 2,
                    _ => return Err("invalid escape in a label value (only \\\\, \\\" and \\n)".into()),
                },
                _ => self.at += 1,
            }
        }
        Err("unterminated label value".into())
    }
}

/// The labels of one sample, `{` already consumed.
fn parse_labels<'a>(l: &mut Line<'a>, out: &mut Vec<(&'a str, &'a str)>) -> Result<(), String> {
    loop {
        l.blanks();
        if l.peek() == Some(b'}') {
            l.at += 1;
            return Ok(());
        }
        let name = l.name();
        if !valid_label_name(name) {
            return Err(format!("invalid label name {:?}", if name.is_empty() { l.rest() } else { name }));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("label {name} twice"));
        }
        l.blanks();
        if l.peek() != Some(b'=') {
            return Err(format!("expected '=' after label {name}"));
        }
        l.at += 1;
        l.blanks();
        let v = l.quoted()?;
        out.push((name, v));
        l.blanks();
        match l.peek() {
            Some(b',') => l.at += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' after a label value".into()),
        }
    }
}

/// A HELP docstring: only `\\` and `\n` are escapes.
fn check_help(h: &str) -> Result<(), String> {
    let b = h.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if !matches!(b.get(i + 1), Some(b'\\' | b'n')) {
                return Err("invalid escape in HELP (only \\\\ and \\n)".into());
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// What parsing keeps per family name and per sample name.
#[derive(Default)]
struct Book {
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    /// Which family a sample name belongs to.
    owner: HashMap<String, usize>,
    /// Families that had their `TYPE` line.
    typed: HashSet<usize>,
}

impl Book {
    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.families.len();
        self.families.push(Family {
            name: name.to_owned(),
            kind: Kind::Untyped,
            help: None,
            samples: 0,
            lines: String::new(),
        });
        self.by_name.insert(name.to_owned(), i);
        self.owner.entry(name.to_owned()).or_insert(i);
        i
    }
}

/// The label every sample of a target gets, and its value (unescaped).
#[derive(Clone, Copy, Debug)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Parse one target's exposition, writing each sample out with `label` added (a
/// sample's own label of that name becomes `exported_<name>`, as Prometheus does
/// without `honor_labels`). The error names the line.
pub fn parse(text: &str, label: Label) -> Result<Vec<Family>, String> {
    let mut book = Book::default();
    let mut seen: HashSet<String> = HashSet::new();
    let value = escape_label(label.value);
    let label = Label { name: label.name, value: &value };
    let mut scratch = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        parse_line(&mut book, &mut seen, raw, label, &mut scratch).map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    Ok(book.families)
}

fn parse_line<'a>(
    book: &mut Book,
    seen: &mut HashSet<String>,
    raw: &'a str,
    label: Label,
    labels: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), String> {
    let line = raw.trim_start_matches(is_blank).trim_end_matches(is_blank);
    if line.is_empty() {
        return Ok(());
    }
    if let Some(comment) = line.strip_prefix('#') {
        let mut l = Line { s: comment, at: 0 };
        l.blanks();
        let word = l.token();
        if word != "HELP" && word != "TYPE" {
            return Ok(()); // a comment
        }
        if l.blanks() == 0 {
            return Err(format!("{word} without a metric name"));
        }
        let name = l.token();
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?} in {word}"));
        }
        let i = book.family(name);
        if word == "HELP" {
            let help = if l.blanks() > 0 { l.rest() } else { "" };
            if !l.rest().is_empty() && help.is_empty() {
                return Err("expected a blank after the metric name".into());
            }
            check_help(help)?;
            let f = &mut book.families[i];
            if f.help.is_some() {
                return Err(format!("second HELP for {name}"));
            }
            f.help = Some(help.to_owned());
        } else {
            l.blanks();
            let t = l.token();
            l.blanks();
            let kind = Kind::parse(t).ok_or_else(|| format!("unknown type {t:?} for {name}"))?;
            if !l.rest().is_empty() {
                return Err(format!("extra text after TYPE {name} {t}"));
            }
            if !book.typed.insert(i) || book.families[i].samples > 0 {
                return Err(format!("second TYPE for {name}, or TYPE after its samples"));
            }
            // A typed family owns the names of its samples.
            for s in kind.sample_names(name) {
                match book.owner.get(&s) {
                    Some(&o) if o != i => {
                        return Err(format!("{s} belongs to family {} and to {name}", book.families[o].name));
                    }
                    _ => {
                        book.owner.insert(s, i);
                    }
                }
            }
            book.families[i].kind = kind;
        }
        return Ok(());
    }

    let mut l = Line { s: line, at: 0 };
    let name = l.name();
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name at {:?}", l.rest().chars().take(40).collect::<String>()));
    }
    let before = l.at;
    l.blanks();
    if l.peek() != Some(b'{') {
        l.at = before;
    }
    labels.clear();
    if l.peek() == Some(b'{') {
        l.at += 1;
        parse_labels(&mut l, labels)?;
    }
    if l.blanks() == 0 && !l.rest().is_empty() {
        return Err(format!("expected a blank before the value of {name}"));
    }
    let value = l.token();
    if !valid_value(value) {
        return Err(format!("invalid value {value:?} for {name}"));
    }
    l.blanks();
    let ts = l.token();
    if !ts.is_empty() && !valid_timestamp(ts) {
        return Err(format!("invalid timestamp {ts:?} for {name}"));
    }
    l.blanks();
    if !l.rest().is_empty() {
        return Err(format!("extra text after the sample of {name}"));
    }

    let i = match book.owner.get(name) {
        Some(&i) => i,
        None => book.family(name),
    };
    let f = &book.families[i];
    let needs = match f.kind {
        Kind::Histogram if name.ends_with("_bucket") => Some("le"),
        Kind::Summary if name == f.name => Some("quantile"),
        _ => None,
    };
    if !f.kind.owns(&f.name, name) {
        return Err(format!("sample {name} does not belong to {} {}", f.kind.as_str(), f.name));
    }
    if let Some(label) = needs {
        let v = labels.iter().find(|(n, _)| *n == label).map(|(_, v)| unescape(v));
        if !v.is_some_and(|v| valid_value(&v)) {
            return Err(format!("{name} needs a {label} label holding a number"));
        }
    }
    let mut key = String::with_capacity(name.len() + 32);
    key.push_str(name);
    let mut sorted;
    let canonical: &[(&str, &str)] = if labels.is_sorted() {
        labels
    } else {
        sorted = labels.clone();
        sorted.sort_unstable();
        &sorted
    };
    for (n, v) in canonical {
        key.push('\u{0}');
        key.push_str(n);
        key.push('\u{0}');
        key.push_str(v);
    }
    if !seen.insert(key) {
        return Err(format!("series {name} twice with the same labels"));
    }
    let f = &mut book.families[i];
    f.samples += 1;
    render_sample(&mut f.lines, name, labels, label, value, ts);
    Ok(())
}

/// Label values escaped for the text format.
pub fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    write_label_value(&mut out, s);
    out
}

/// Write a label value escaped (backslash, quote, newline) onto `out`; most need no
/// escape and are copied as they are.
pub fn write_label_value(out: &mut String, s: &str) {
    if !s.contains(['\\', '"', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Why a family of a target was left out of the merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub family: String,
    pub why: String,
}

/// Many targets' families in one exposition: a family's `HELP` and `TYPE` once, then
/// all its samples, target after target.
pub struct Merge {
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    owner: HashMap<String, usize>,
    reserved: &'static str,
}

impl Merge {
    /// Family and sample names starting with `reserved` are refused (they are the
    /// merger's own).
    pub fn new(reserved: &'static str) -> Merge {
        Merge { families: Vec::new(), by_name: HashMap::new(), owner: HashMap::new(), reserved }
    }

    /// Add one target's families (from [`parse`]); returns the samples added and the
    /// families dropped because their type or sample names conflict with a family
    /// already merged (the first target keeps it).
    pub fn add(&mut self, families: Vec<Family>) -> (usize, Vec<Dropped>) {
        let mut added = 0;
        let mut dropped = Vec::new();
        for f in families.into_iter().filter(|f| f.samples > 0) {
            let names = f.kind.sample_names(&f.name);
            if f.name.starts_with(self.reserved) || names.iter().any(|n| n.starts_with(self.reserved)) {
                dropped.push(Dropped { family: f.name, why: "a name hero_proc uses itself".into() });
                continue;
            }
            let i = match self.by_name.get(&f.name) {
                Some(&i) if self.families[i].kind != f.kind => {
                    let why = format!(
                        "type {} differs from {} of an earlier service",
                        f.kind.as_str(),
                        self.families[i].kind.as_str()
                    );
                    dropped.push(Dropped { family: f.name, why });
                    continue;
                }
                Some(&i) => i,
                None => {
                    let clash = names.iter().chain(std::iter::once(&f.name)).find_map(|n| self.owner.get(n));
                    if let Some(&o) = clash {
                        let why =
                            format!("its sample names overlap family {} of an earlier service", self.families[o].name);
                        dropped.push(Dropped { family: f.name, why });
                        continue;
                    }
                    let i = self.families.len();
                    self.by_name.insert(f.name.clone(), i);
                    for n in names.into_iter().chain(std::iter::once(f.name.clone())) {
                        self.owner.insert(n, i);
                    }
                    added += f.samples;
                    self.families.push(f);
                    continue;
                }
            };
            let mf = &mut self.families[i];
            if mf.help.is_none() {
                mf.help = f.help;
            }
            mf.samples += f.samples;
            mf.lines.push_str(&f.lines);
            added += f.samples;
        }
        (added, dropped)
    }

    /// The merged families, in the order they first appeared.
    pub fn write_to(&self, out: &mut String) {
        for f in &self.families {
            if let Some(h) = &f.help {
                let _ = writeln!(out, "# HELP {} {h}", f.name);
            }
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.lines);
        }
    }
}

/// `name{label="value",<its labels>} value [timestamp]`
fn render_sample(out: &mut String, name: &str, labels: &[(&str, &str)], label: Label, value: &str, ts: &str) {
    out.push_str(name);
    out.push('{');
    out.push_str(label.name);
    out.push_str("=\"");
    out.push_str(label.value);
    out.push('"');
    for (n, v) in labels {
        out.push(',');
        if *n == label.name {
            // `service` -> `exported_service`, or further `exported_` prefixes while
            // the sample has that name already (Prometheus' rule).
            let mut cand = format!("exported_{n}");
            while labels.iter().any(|(m, _)| *m == cand) {
                cand.insert_str(0, "exported_");
            }
            out.push_str(&cand);
        } else {
            out.push_str(n);
        }
        out.push_str("=\"");
        out.push_str(v);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(value);
    if !ts.is_empty() {
        out.push(' ');
        out.push_str(ts);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Label = Label { name: "s", value: "x" };

    fn merged(targets: &[(&str, &str)]) -> (String, Vec<(String, usize, Vec<Dropped>)>) {
        let mut m = Merge::new("hero_proc_service_scrape_");
        let mut report = Vec::new();
        for (svc, text) in targets {
            let fams = parse(text, Label { name: "service", value: svc }).unwrap_or_else(|e| panic!("{svc}: {e}"));
            let (n, d) = m.add(fams);
            report.push((svc.to_string(), n, d));
        }
        let mut out = String::new();
        m.write_to(&mut out);
        (out, report)
    }

    #[test]
    fn names_and_values() {
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9a") && !valid_metric_name("") && !valid_metric_name("a-b"));
        assert!(valid_label_name("_a1") && !valid_label_name("__name__") && !valid_label_name("a:b"));
        for v in ["1", "-1.5", "+.5", "1.", "1e5", "1.5E-3", "NaN", "+Inf", "-Inf", "inf", "Infinity"] {
            assert!(valid_value(v), "{v}");
        }
        for v in ["", ".", "e5", "1e", "1.2.3", "0x10", "1_000", "--1", "+nan", "1,5", "one"] {
            assert!(!valid_value(v), "{v}");
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let text = "# HELP http_requests_total The total number of HTTP requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
\n\
# Escaping in label values:\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
metric_without_timestamp_and_labels 12.47\n\
something_weird{problem=\"division by zero\"} +Inf -3982045\n\
# TYPE rpc_duration_seconds summary\n\
rpc_duration_seconds{quantile=\"0.01\"} 3102\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
rpc_duration_seconds_sum 1.7560473e+07\n\
rpc_duration_seconds_count 2693\n\
# HELP h A histogram.\n\
# TYPE h histogram\n\
h_bucket{le=\"0.05\"} 24054\n\
h_bucket{le=\"+Inf\"} 144320\n\
h_sum 53423\n\
h_count 144320\n";
        let f = parse(text, L).unwrap();
        let names: Vec<(&str, Kind, usize)> = f.iter().map(|f| (f.name.as_str(), f.kind, f.samples)).collect();
        assert_eq!(
            names,
            [
                ("http_requests_total", Kind::Counter, 2),
                ("msdos_file_access_time_seconds", Kind::Untyped, 1),
                ("metric_without_timestamp_and_labels", Kind::Untyped, 1),
                ("something_weird", Kind::Untyped, 1),
                ("rpc_duration_seconds", Kind::Summary, 4),
                ("h", Kind::Histogram, 4),
            ]
        );
        assert_eq!(
            f[0].lines,
            "http_requests_total{s=\"x\",method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{s=\"x\",method=\"post\",code=\"400\"} 3 1395066363000\n"
        );
        assert_eq!(
            f[1].lines,
            "msdos_file_access_time_seconds{s=\"x\",path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n"
        );
        assert_eq!(f[3].lines, "something_weird{s=\"x\",problem=\"division by zero\"} +Inf -3982045\n");
    }

    #[test]
    fn refuses_what_promtool_refuses() {
        for (text, why) in [
            ("a{b=\"1\"} x\n", "invalid value"),
            ("a{b=\"1\",b=\"2\"} 1\n", "twice"),
            ("a{__b=\"1\"} 1\n", "invalid label name"),
            ("a{b=\"\\x\"} 1\n", "invalid escape"),
            ("a{b=\"1} 1\n", "unterminated"),
            ("a{b=1} 1\n", "expected '\"'"),
            ("a 1 2 3\n", "extra text"),
            ("a 1 1.5\n", "invalid timestamp"),
            ("a\n", "invalid value"),
            ("1a 1\n", "invalid metric name"),
            ("a-b 1\n", "expected a blank"),
            ("# TYPE a counter\n# TYPE a gauge\na 1\n", "second TYPE"),
            ("# TYPE a untyped\n# TYPE a untyped\n", "second TYPE"),
            ("a 1\n# TYPE a counter\n", "TYPE after its samples"),
            ("# HELP a x\n# HELP a y\n", "second HELP"),
            ("# HELP a bad \\t escape\n", "invalid escape in HELP"),
            ("# TYPE a widget\n", "unknown type"),
            ("# TYPE h histogram\nh_bucket 1\n", "needs a le label"),
            ("# TYPE s summary\ns 1\n", "needs a quantile label"),
            ("# TYPE h histogram\nh 1\n", "does not belong"),
            ("a{b=\"1\"} 1\na{b=\"1\"} 2\n", "twice with the same labels"),
            ("a 1\r\n", "invalid value"),
            ("a_sum 1\n# TYPE a summary\n", "belongs to family"),
        ] {
            let e = parse(text, L).expect_err(text);
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // Blanks, a trailing comma and an empty label set are fine.
        let f = parse("  a { b = \"1\" , } 1  \nc{} 2\n# just a comment\n#\n", L).unwrap();
        assert_eq!(f[0].lines, "a{s=\"x\",b=\"1\"} 1\n");
        assert_eq!(f[1].lines, "c{s=\"x\"} 2\n");
    }

    #[test]
    fn merges_families_across_services_with_one_header() {
        let a = "# HELP up_things Things.\n# TYPE up_things gauge\nup_things{k=\"1\"} 1\nonly_a 3\n";
        let b = "# HELP up_things Things (b's words).\n# TYPE up_things gauge\nup_things{k=\"1\"} 2\n";
        let (out, report) = merged(&[("core/a", a), ("core/b", b)]);
        assert_eq!(
            out,
            "# HELP up_things Things.\n# TYPE up_things gauge\nup_things{service=\"core/a\",k=\"1\"} 1\n\
up_things{service=\"core/b\",k=\"1\"} 2\n# TYPE only_a untyped\nonly_a{service=\"core/a\"} 3\n"
        );
        assert_eq!(report[0].1, 2);
        assert_eq!(report[1].1, 1);
    }

    #[test]
    fn conflicting_types_keep_the_first() {
        let a = "# TYPE x counter\nx 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
        let b = "# TYPE x gauge\nx 2\nh_sum 5\nok 1\nhero_proc_service_scrape_up 1\n";
        let (out, report) = merged(&[("c/a", a), ("c/b", b)]);
        assert!(out.contains("x{service=\"c/a\"} 1\n") && !out.contains("x{service=\"c/b\"}"), "{out}");
        assert!(!out.contains("h_sum{service=\"c/b\"}"), "{out}");
        assert!(out.contains("ok{service=\"c/b\"} 1\n"), "{out}");
        let dropped: Vec<&str> = report[1].2.iter().map(|d| d.family.as_str()).collect();
        assert_eq!(dropped, ["x", "h_sum", "hero_proc_service_scrape_up"]);
        assert_eq!(report[1].1, 1);
    }

    #[test]
    fn a_service_label_of_its_own_is_kept_as_exported_service() {
        let a =
            "m{service=\"inner\",x=\"1\"} 1\nn{service=\"s\",exported_service=\"e\"} 2\no{exported_service=\"e\"} 3\n";
        let (out, _) = merged(&[("c/a", a)]);
        assert!(out.contains("m{service=\"c/a\",exported_service=\"inner\",x=\"1\"} 1\n"), "{out}");
        assert!(out.contains("n{service=\"c/a\",exported_exported_service=\"s\",exported_service=\"e\"} 2\n"), "{out}");
        assert!(out.contains("o{service=\"c/a\",exported_service=\"e\"} 3\n"), "{out}");
    }
}
