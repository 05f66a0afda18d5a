//! `hero-config-example/monitoring/`: the alert rules and the scrape config pass the real
//! `promtool` (check and unit tests), every alert is unit-tested firing and not firing,
//! every runbook link is a file of `docs/runbooks/`, and every metric the rules and the
//! dashboard read is one the daemon exports (or a named example of a service's own).
//! promtool missing fails these tests (CI installs Debian's `prometheus`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

/// Metric names of the services' own metrics (federated on `/metrics/services`) that
/// `services.rules.yml` uses as examples; nothing in this repository exports them.
const SERVICE_EXAMPLE_METRICS: &[&str] = &[
    "hero_osis_write_failures_total",
    "hero_embedder_query_duration_seconds_bucket",
    "hero_agent_rpc_duration_seconds_bucket",
    "hero_aibroker_requests_total",
];

/// Set by Prometheus itself for every target.
const PROMETHEUS_METRICS: &[&str] = &["up"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn dir() -> PathBuf {
    repo_root().join("hero-config-example/monitoring")
}

/// The files of the monitoring folder whose name ends with `suffix`, sorted.
fn files(suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *{suffix} in {}", dir().display());
    v
}

fn yaml(p: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Run promtool in the monitoring folder; a promtool that does not run fails the test.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool").args(args).current_dir(dir()).output().unwrap_or_else(|e| {
        panic!("promtool does not run ({e}): install it (Debian/Ubuntu: apt-get install prometheus); these tests never skip")
    });
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// Every alerting rule of every rules file: (file, rule).
fn alerts() -> Vec<(String, Value)> {
    let mut v = Vec::new();
    for f in files(".rules.yml") {
        for g in yaml(&f)["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                if r.get("alert").is_some() {
                    v.push((name(&f).to_owned(), r.clone()));
                }
            }
        }
    }
    v
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

#[test]
fn promtool_checks_every_rules_file() {
    for f in files(".rules.yml") {
        promtool(&["check", "rules", name(&f)]);
    }
}

#[test]
fn promtool_unit_tests_pass() {
    for f in files(".test.yml") {
        promtool(&["test", "rules", name(&f)]);
    }
}

#[test]
fn promtool_checks_the_scrape_config_and_it_loads_every_rules_file() {
    // rule_files are relative to prometheus.yml; promtool checks that they load too, and
    // that the token file the jobs send exists: check a copy whose token path is real.
    let tmp = tempfile::tempdir().unwrap();
    for f in files(".rules.yml") {
        std::fs::copy(&f, tmp.path().join(name(&f))).unwrap();
    }
    let token = tmp.path().join("hero_proc.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let text = std::fs::read_to_string(dir().join("prometheus.yml")).unwrap();
    assert_eq!(
        text.matches("credentials_file: /etc/prometheus/hero_proc.token").count(),
        2,
        "both jobs send the daemons' --metrics-token-file token"
    );
    let text = text.replace("/etc/prometheus/hero_proc.token", token.to_str().unwrap());
    std::fs::write(tmp.path().join("prometheus.yml"), text).unwrap();
    let cfg_path = tmp.path().join("prometheus.yml");
    promtool(&["check", "config", cfg_path.to_str().unwrap()]);
    let cfg = yaml(&dir().join("prometheus.yml"));
    let listed: BTreeSet<String> =
        cfg["rule_files"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let present: BTreeSet<String> = files(".rules.yml").iter().map(|p| name(p).to_owned()).collect();
    assert_eq!(listed, present, "prometheus.yml rule_files must list every *.rules.yml beside it");
    // The rules name these two jobs; the scrape config must define them with their paths.
    let jobs: BTreeMap<&str, &str> = cfg["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|j| (s(j, "job_name"), j.get("metrics_path").and_then(Value::as_str).unwrap_or("/metrics")))
        .collect();
    assert_eq!(jobs.get("hero_proc"), Some(&"/metrics"), "{jobs:?}");
    assert_eq!(jobs.get("hero_proc_services"), Some(&"/metrics/services"), "{jobs:?}");
}

/// The (host, service) labels of a series or alert, as far as they are given.
fn who(labels: &BTreeMap<String, String>) -> (String, String) {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    (get("host"), get("service"))
}

/// `metric{a="x", b="y"}` -> its labels.
fn series_labels(series: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let Some(inner) = series.split_once('{').map(|(_, r)| r.trim_end().trim_end_matches('}')) else {
        return m;
    };
    for kv in inner.split(',') {
        if let Some((k, v)) = kv.split_once('=') {
            m.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
        }
    }
    m
}

#[test]
fn every_alert_is_tested_firing_and_silent_on_a_healthy_series() {
    // alert -> did a check expect it firing; did that check's input hold a host or
    // service the exact list of expected alerts leaves out (a healthy one, not firing)?
    let mut fires: BTreeMap<String, bool> = BTreeMap::new();
    for f in files(".test.yml") {
        for t in yaml(&f)["tests"].as_sequence().unwrap() {
            let inputs: Vec<(String, String)> =
                t["input_series"].as_sequence().unwrap().iter().map(|i| who(&series_labels(s(i, "series")))).collect();
            for c in t["alert_rule_test"].as_sequence().unwrap() {
                let exp = c["exp_alerts"].as_sequence().cloned().unwrap_or_default();
                if exp.is_empty() {
                    continue;
                }
                let fired: BTreeSet<(String, String)> = exp
                    .iter()
                    .map(|a| {
                        let l: BTreeMap<String, String> = serde_yaml_ng::from_value(a["exp_labels"].clone()).unwrap();
                        who(&l)
                    })
                    .collect();
                let healthy_left_out = inputs.iter().any(|i| !fired.contains(i));
                let e = fires.entry(s(c, "alertname").to_owned()).or_default();
                *e |= healthy_left_out;
            }
        }
    }
    let mut missing = Vec::new();
    for (file, a) in alerts() {
        let alert = s(&a, "alert");
        match fires.get(alert) {
            None => missing.push(format!("{file}: {alert}: no test expects it to fire")),
            Some(false) => {
                missing.push(format!("{file}: {alert}: no test holds a healthy series beside the firing one"))
            }
            Some(true) => {}
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_that_exists() {
    let runbooks = repo_root().join("docs/runbooks");
    let mut bad = Vec::new();
    for (file, a) in alerts() {
        let alert = s(&a, "alert");
        if !["critical", "warning", "info"].contains(&s(&a["labels"], "severity")) {
            bad.push(format!("{file}: {alert}: labels.severity must be critical, warning or info"));
        }
        for k in ["summary", "description"] {
            if s(&a["annotations"], k).trim().is_empty() {
                bad.push(format!("{file}: {alert}: no annotations.{k}"));
            }
        }
        let url = s(&a["annotations"], "runbook_url");
        match url.split_once("/docs/runbooks/") {
            Some((_, page)) => {
                let page = page.split('#').next().unwrap();
                if page.is_empty() || page.contains("..") || !runbooks.join(page).is_file() {
                    bad.push(format!("{file}: {alert}: runbook_url {url}: no docs/runbooks/{page}"));
                }
            }
            None => bad.push(format!("{file}: {alert}: runbook_url `{url}` does not point into docs/runbooks/")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The metric names a PromQL expression reads: identifiers outside label matchers,
/// ranges and strings that are not functions, keywords or grouping label lists.
fn metric_names(expr: &str) -> Vec<String> {
    // Aggregations too: `sum by (x) (...)` puts its grouping before the parenthesis.
    #[rustfmt::skip]
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
        "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
        "topk", "quantile",
    ];
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: u8| -> usize {
        let mut j = i + 1;
        while j < b.len() && b[j] != close {
            if b[j] == b'"' {
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            i = skip_to(i, b'}');
        } else if c == b'[' {
            i = skip_to(i, b']');
        } else if c == b'"' || c == b'\'' || c == b'`' {
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == b'$' {
            // A Grafana variable: $host, ${host}, $__rate_interval.
            i += 1;
            while i < b.len() && (ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let lower = word.to_ascii_lowercase();
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&lower.as_str())
                && b.get(j) == Some(&b'(')
            {
                i = skip_to(j, b')'); // a list of label names
            } else if b.get(j) == Some(&b'(') || KEYWORDS.contains(&lower.as_str()) {
                // a function or aggregation, or a keyword
            } else {
                names.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_expression_scanner_finds_metrics_only() {
    let got = metric_names(
        r#"histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{x="b{c}", le!="1"}[5m]))) > 0.5 * 1e3
           and on(instance) label_replace(b == 1, "reason", "x", "", "") or vector(0) unless c offset 5m
           / ignoring(x) group_left(y) d{host=~"$host"}[$__rate_interval] - time()"#,
    );
    assert_eq!(got, ["a_bucket", "b", "c", "d"]);
}

/// Every metric name the daemon's source can export: the `hero_proc_*` string literals
/// (a family, or a sample), counters with `_total`, histograms with their suffixes, and
/// names made of a literal prefix ending in `_` and a literal suffix (the federation's
/// own `hero_proc_service_scrape_*`).
fn exported(name: &str, literals: &BTreeSet<String>, source: &str) -> bool {
    if literals.contains(name) {
        return true;
    }
    for suffix in ["_total", "_bucket", "_sum", "_count"] {
        if name.strip_suffix(suffix).is_some_and(|base| literals.contains(base)) {
            return true;
        }
    }
    literals.iter().any(|p| {
        p.ends_with('_') && name.strip_prefix(p.as_str()).is_some_and(|rest| source.contains(&format!("\"{rest}\"")))
    })
}

fn daemon_source() -> (BTreeSet<String>, String) {
    fn walk(d: &Path, out: &mut String) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
                out.push('\n');
            }
        }
    }
    let mut source = String::new();
    walk(&repo_root().join("crates/hero_proc_daemon/src"), &mut source);
    // Every string literal `"hero_proc_..."` that is a whole metric name. Found by its
    // opening quote, not by pairing quotes: a `'"'` char literal or an escaped quote
    // would shift the pairs (and files are read in directory order).
    let mut literals = BTreeSet::new();
    for (i, _) in source.match_indices("\"hero_proc_") {
        let rest = &source[i + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if rest[end..].starts_with('"') {
            literals.insert(rest[..end].to_owned());
        }
    }
    assert!(literals.contains("hero_proc_service_up"), "the daemon's metrics are not where this test looks");
    (literals, source)
}

#[test]
fn every_metric_in_the_rules_and_the_dashboard_is_exported() {
    let (literals, source) = daemon_source();
    let allowed = |n: &str| {
        SERVICE_EXAMPLE_METRICS.contains(&n) || PROMETHEUS_METRICS.contains(&n) || exported(n, &literals, &source)
    };
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for f in files(".rules.yml") {
        for g in yaml(&f)["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                for m in metric_names(s(r, "expr")) {
                    if !allowed(&m) {
                        unknown.push(format!("{}: {}: {m}", name(&f), s(r, "alert")));
                    }
                    used.insert(m);
                }
            }
        }
    }
    // The dashboard: well-formed JSON, its datasource an input, and its queries.
    let path = dir().join("grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let vars: Vec<&str> =
        dash["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    for v in ["host", "service"] {
        assert!(vars.contains(&v), "the dashboard has no `{v}` variable: {vars:?}");
    }
    let mut queries: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(p["type"] == "row" || p["datasource"]["uid"] == "${DS_PROMETHEUS}", "panel {}", p["title"]);
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        // label_values(METRIC{...}, label): the metric only.
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(m, _)| m);
            queries.push(inner.unwrap_or(q).to_owned());
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    for q in &queries {
        for m in metric_names(q) {
            if !allowed(&m) {
                unknown.push(format!("grafana-dashboard.json: {m} (in {q})"));
            }
        }
    }
    assert!(unknown.is_empty(), "metrics the daemon does not export:\n{}", unknown.join("\n"));
    for m in SERVICE_EXAMPLE_METRICS {
        assert!(used.contains(*m), "SERVICE_EXAMPLE_METRICS lists {m}, which no rule uses any more: drop it");
    }
}

#[test]
fn the_dashboard_queries_parse() {
    // promtool has no query parser of its own: the dashboard's queries, with Grafana's
    // variables given values, go through `check rules` as recording rules.
    let path = dir().join("grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let q = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$host", ".*")
                .replace("$service", ".*");
            assert!(!q.contains('$'), "an unknown variable in {q}");
            rules.push_str(&format!(
                "      - record: dashboard_query_{n}\n        expr: {}\n",
                serde_json::to_string(&q).unwrap()
            ));
            n += 1;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard.rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool does not run: install it (Debian/Ubuntu: apt-get install prometheus)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
