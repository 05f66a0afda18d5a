//! One positive and one negative case per check of `hero_proc validate`, each asserting
//! the error's code and exact `file:line:col`.

use crate::support::*;

// ---- YAML ----------------------------------------------------------------------------

#[test]
fn yaml_syntax_error_is_located() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: [unclosed\n");
    let c = t.check();
    let msg = expect(&c, "yaml.syntax", "actions/web.yaml:4:1");
    assert!(msg.contains("YAML syntax error"), "{msg}");
}

#[test]
fn duplicate_yaml_keys_are_errors() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: a\n    script: b\n");
    expect(&t.check(), "yaml.syntax", "actions/web.yaml:4:5");
}

#[test]
fn one_document_per_actions_file() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions: []\n---\nservices: []\n");
    expect(&t.check(), "yaml.multi-document", "actions/web.yaml:3:1");
}

#[test]
fn empty_actions_file_is_a_warning_only() {
    let t = Tree::new();
    t.file("actions/empty.yaml", "# nothing yet\n");
    let c = t.check();
    clean(&c);
    expect(&c, "layout.empty-file", "actions/empty.yaml:1:1");
}

#[test]
fn merge_keys_are_supported() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "x-common: &common\n  interpreter: sh\n  process: true\nactions:\n  - <<: *common\n    name: web\n    script: exec sleep 100\n",
    );
    // `x-common` is not a known top-level field: still an error, but merging worked.
    let c = t.check();
    expect(&c, "schema.unknown-field", "actions/web.yaml:1:1");
    absent(&c, "schema.missing-field");
}

// ---- schema --------------------------------------------------------------------------

#[test]
fn unknown_field_suggests_the_right_one() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    scirpt: run\n    script: run\n");
    let msg = expect(&t.check(), "schema.unknown-field", "actions/web.yaml:3:5");
    assert!(msg.contains("did you mean `script`?"), "{msg}");
}

#[test]
fn unknown_nested_field_is_located() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: run\n    restart: { polcy: always }\n");
    let msg = expect(&t.check(), "schema.unknown-field", "actions/web.yaml:4:16");
    assert!(msg.contains("did you mean `policy`?"), "{msg}");
}

#[test]
fn missing_required_fields() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n  - script: run\n");
    let c = t.check();
    let msg = expect(&c, "schema.missing-field", "actions/web.yaml:2:5");
    assert!(msg.contains("action `web` has no `script`"), "{msg}");
    expect(&c, "schema.missing-field", "actions/web.yaml:3:5");
}

#[test]
fn wrong_types_are_reported() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "actions:\n  - name: web\n    script: [a, b]\n    process: 'yes'\n    env: [A]\n    tags: web\n",
    );
    let c = t.check();
    expect(&c, "schema.type", "actions/web.yaml:3:13");
    expect(&c, "schema.type", "actions/web.yaml:4:14");
    expect(&c, "schema.type", "actions/web.yaml:5:10");
    expect(&c, "schema.type", "actions/web.yaml:6:11");
}

#[test]
fn every_error_in_one_pass() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    interpreter: zsh\n");
    t.file("actions/b.yaml", "actions:\n  - name: B\n    script: x\n");
    t.file("actions/c.yaml", "actions:\n  - name: c\n    script: x\n    timeout: forever\n");
    let c = t.check();
    assert_eq!(c.errors(), 3, "{}", render(&c));
}

// ---- names ---------------------------------------------------------------------------

#[test]
fn names_follow_the_rule() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "actions:\n  - name: Web_Server\n    script: x\n  - name: ../../etc\n    script: x\n  - name: ok.name-1_2\n    script: x\n",
    );
    let c = t.check();
    expect(&c, "name.invalid", "actions/web.yaml:2:11");
    expect(&c, "name.invalid", "actions/web.yaml:4:11");
    assert_eq!(c.errors(), 2, "{}", render(&c));
}

#[test]
fn context_names_follow_the_rule() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    context: 'Bad Context'\n    script: x\n");
    expect(&t.check(), "name.invalid", "actions/web.yaml:3:14");
}

// ---- uniqueness ----------------------------------------------------------------------

#[test]
fn duplicate_keys_across_files() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: web\n    script: x\n");
    t.file("actions/b.yaml", "actions:\n  - name: web\n    script: y\n");
    let msg = expect(&t.check(), "object.duplicate", "actions/b.yaml:2:5");
    assert!(msg.contains("first at actions/a.yaml:2:5"), "{msg}");
}

#[test]
fn same_name_in_other_context_or_kind_is_fine() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: web\n    script: x\n    process: true\nservices:\n  - name: web\n");
    t.file("actions/b.yaml", "actions:\n  - name: web\n    context: shop\n    script: y\n");
    clean(&t.check());
}

// ---- references ----------------------------------------------------------------------

#[test]
fn service_refers_to_unknown_action() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "actions:\n  - name: web_server\n    script: x\nservices:\n  - name: web\n    actions: [web_srver]\n",
    );
    let msg = expect(&t.check(), "ref.action", "actions/web.yaml:6:15");
    assert!(msg.contains("did you mean `web_server`?"), "{msg}");
}

#[test]
fn service_defaults_to_the_action_of_its_name() {
    let t = Tree::new();
    t.file("actions/web.yaml", "services:\n  - name: web\n");
    expect(&t.check(), "ref.action", "actions/web.yaml:2:5");
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: x\n    process: true\nservices:\n  - name: web\n");
    clean(&t.check());
}

#[test]
fn requires_and_after_must_exist() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "actions:\n  - name: web\n    script: x\n    process: true\nservices:\n  - name: web\n    requires: [hero_db, cache]\n    after: [queue]\n",
    );
    let c = t.check();
    expect(&c, "ref.service", "actions/web.yaml:7:25");
    expect(&c, "ref.service", "actions/web.yaml:8:13");
    assert_eq!(c.errors(), 2, "{}", render(&c));
}

#[test]
fn references_resolve_own_context_then_core_then_explicit() {
    let t = Tree::new();
    t.file(
        "actions/shop.yaml",
        "actions:\n  - name: web\n    context: shop\n    script: x\n    process: true\n    depends_on: [prep, core/hero_db]\n  - name: prep\n    context: shop\n    script: x\nservices:\n  - name: web\n    context: shop\n    requires: [hero_db]\n",
    );
    clean(&t.check());
    // An explicit context that does not hold the object is an error.
    t.file(
        "actions/shop.yaml",
        "actions:\n  - name: web\n    context: shop\n    script: x\n    process: true\nservices:\n  - name: web\n    context: shop\n    requires: [other/hero_db]\n",
    );
    expect(&t.check(), "ref.service", "actions/shop.yaml:9:16");
}

#[test]
fn depends_on_must_exist() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    depends_on: [b]\n");
    expect(&t.check(), "ref.action", "actions/a.yaml:4:18");
    t.file("actions/b.yaml", "actions:\n  - name: b\n    script: x\n");
    clean(&t.check());
}

#[test]
fn reference_to_an_invalid_object_is_not_called_unknown() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    interpreter: zsh\nservices:\n  - name: a\n");
    let c = t.check();
    expect(&c, "interpreter.unknown", "actions/a.yaml:4:18");
    absent(&c, "ref.action");
}

#[test]
fn long_running_action_before_main_is_refused() {
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\n  - name: b\n    script: x\n    process: true\nservices:\n  - name: s\n    actions: [a, b]\n",
    );
    expect(&t.check(), "service.process-before-main", "actions/a.yaml:10:15");
}

// ---- cycles --------------------------------------------------------------------------

#[test]
fn service_cycle_is_reported_once_with_its_path() {
    let t = Tree::new();
    let svc = |n: &str, req: &str| {
        format!(
            "actions:\n  - name: {n}\n    script: x\n    process: true\nservices:\n  - name: {n}\n    requires: [{req}]\n"
        )
    };
    t.file("actions/a.yaml", &svc("a", "b"));
    t.file("actions/b.yaml", &svc("b", "c"));
    t.file("actions/c.yaml", &svc("c", "a"));
    let c = t.check();
    let cycles: Vec<_> = c.diagnostics.iter().filter(|d| d.code == "cycle").collect();
    assert_eq!(cycles.len(), 1, "{}", render(&c));
    assert!(cycles[0].message.contains("a -> b -> c -> a"), "{}", cycles[0]);
    expect(&c, "cycle", "actions/c.yaml:7:16");
}

#[test]
fn after_edges_count_for_cycles_and_dags_pass() {
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\nservices:\n  - name: a\n    after: [a]\n",
    );
    let msg = expect(&t.check(), "cycle", "actions/a.yaml:7:13");
    assert!(msg.contains("a -> a"), "{msg}");
    // A diamond is not a cycle.
    let t = Tree::new();
    for (n, deps) in [("top", "[l, r]"), ("l", "[bottom]"), ("r", "[bottom]"), ("bottom", "[]")] {
        t.file(
            &format!("actions/{n}.yaml"),
            &format!("actions:\n  - name: {n}\n    script: x\n    process: true\nservices:\n  - name: {n}\n    requires: {deps}\n"),
        );
    }
    clean(&t.check());
}

#[test]
fn action_depends_on_cycle() {
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    depends_on: [b]\n  - name: b\n    script: x\n    depends_on: [a]\n",
    );
    let c = t.check();
    let msg = expect(&c, "cycle", "actions/a.yaml:7:18");
    assert!(msg.contains("action dependency cycle: a -> b -> a"), "{msg}");
}

#[test]
fn long_chain_does_not_overflow() {
    let t = Tree::new();
    let mut s = String::from("actions:\n");
    for i in 0..5000 {
        s.push_str(&format!("  - name: a{i}\n    script: x\n    depends_on: [a{}]\n", i + 1));
    }
    s.push_str("  - name: a5000\n    script: x\n    depends_on: [a0]\n");
    t.file("actions/chain.yaml", &s);
    let c = t.check();
    assert_eq!(c.diagnostics.iter().filter(|d| d.code == "cycle").count(), 1);
}

// ---- cron, durations, signals, interpreters, health, env ------------------------------

#[test]
fn cron_expressions() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    schedule: '*/15 * * * *'\n  - name: b\n    script: x\n    schedule: '0 0 */2 * * *'\n");
    clean(&t.check());
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    schedule: '*/15 * * 13 *'\n");
    expect(&t.check(), "cron.invalid", "actions/a.yaml:4:15");
    // A step beyond its field's range used to validate and fire at minute 0 only.
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    schedule: '*/61 * * * *'\n");
    let msg = expect(&t.check(), "cron.invalid", "actions/a.yaml:4:15");
    assert!(msg.contains("step /61 in the minute field") && msg.contains("0-59"), "{msg}");
}

#[test]
fn schedule_on_a_process_is_refused() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    process: true\n    schedule: '@hourly'\n");
    expect(&t.check(), "action.schedule-on-process", "actions/a.yaml:5:15");
}

#[test]
fn durations() {
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    timeout: 2d\n    restart: { delay: 500ms, max_delay: 1h }\n    stop: { timeout: 10s }\n",
    );
    clean(&t.check());
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    timeout: 10\n    stop: { timeout: soon }\n");
    let c = t.check();
    expect(&c, "duration.invalid", "actions/a.yaml:4:14");
    expect(&c, "duration.invalid", "actions/a.yaml:5:22");
}

#[test]
fn backoff_bounds_are_ordered() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    restart: { delay: 1m, max_delay: 10s }\n");
    expect(&t.check(), "restart.delay", "actions/a.yaml:4:14");
}

#[test]
fn signals() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    stop: { signal: INT }\n  - name: b\n    script: x\n    stop: { signal: SIGQUIT }\n");
    clean(&t.check());
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    stop: { signal: SIGTREM }\n");
    let msg = expect(&t.check(), "signal.unknown", "actions/a.yaml:4:21");
    assert!(msg.contains("did you mean `SIGTERM`?"), "{msg}");
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    stop: { signal: 15 }\n");
    expect(&t.check(), "signal.unknown", "actions/a.yaml:4:21");
}

#[test]
fn interpreters() {
    let t = Tree::new();
    let mut s = String::from("actions:\n");
    for i in ["exec", "bash", "sh", "python3"] {
        s.push_str(&format!("  - name: a-{i}\n    interpreter: {i}\n    script: x\n"));
    }
    t.file("actions/a.yaml", &s);
    clean(&t.check());
    t.file("actions/a.yaml", "actions:\n  - name: a\n    interpreter: python\n    script: x\n");
    let msg = expect(&t.check(), "interpreter.unknown", "actions/a.yaml:3:18");
    assert!(msg.contains("python3"), "{msg}");
}

#[test]
fn exec_scripts_are_argv_not_shell() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: \"run --name 'unclosed\"\n");
    expect(&t.check(), "exec.unbalanced-quotes", "actions/a.yaml:3:13");
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: make && make install\n");
    let c = t.check();
    clean(&c);
    expect(&c, "exec.shell-syntax", "actions/a.yaml:3:13");
    t.file("actions/a.yaml", "actions:\n  - name: a\n    interpreter: bash\n    script: make && make install\n");
    absent(&t.check(), "exec.shell-syntax");
}

#[test]
fn health_check_kinds() {
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\n    health:\n      - unix_socket: /tmp/a.sock\n      - http: { socket: /tmp/a.sock, path: /health }\n      - http: http://127.0.0.1:8080/health\n      - tcp: 127.0.0.1:8080\n      - exec: test -S /tmp/a.sock\n      - hero_sockets: true\n",
    );
    clean(&t.check());
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\n    health:\n      - grpc: x\n      - tcp: 127.0.0.1:99999\n      - http: { path: /health }\n      - http: https://example.org/\n      - { tcp: 'a:1', exec: x }\n",
    );
    let c = t.check();
    let msg = expect(&c, "schema.unknown-field", "actions/a.yaml:6:9");
    assert!(msg.contains("unix_socket, http, tcp, exec, hero_sockets"), "{msg}");
    expect(&c, "health.tcp", "actions/a.yaml:7:14");
    expect(&c, "health.http", "actions/a.yaml:8:15");
    expect(&c, "health.http", "actions/a.yaml:9:15");
    expect(&c, "health.shape", "actions/a.yaml:10:9");
}

#[test]
fn health_period_liveness_and_metrics_decode_with_their_defaults() {
    use hero_proc_spec::{Dur, HttpCheck, Liveness, Probe};
    let t = Tree::new();
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\n    metrics: { socket: /tmp/a.sock }\n    health:\n      - tcp: 127.0.0.1:8080\n        period: 2s\n      - exec: 'true'\n        liveness: { failures: 5 }\n      - hero_sockets: true\n  - name: b\n    script: x\n    process: true\n    metrics: http://127.0.0.1:9100\n  - name: c\n    script: x\n    process: true\n    metrics: http://127.0.0.1:9100/stats\n",
    );
    let c = t.check();
    clean(&c);
    let a = &c.base_state.actions[&("core".to_owned(), "a".to_owned())];
    assert_eq!(a.health[0].probe, Probe::Tcp("127.0.0.1:8080".into()));
    assert_eq!(a.health[0].interval(), Dur::secs(2));
    assert_eq!(a.health[1].liveness, Some(Liveness { period: Dur::secs(10), failures: 5 }));
    assert_eq!(a.health[2].interval(), Dur::secs(10));
    assert_eq!(a.metrics, Some(HttpCheck { socket: Some("/tmp/a.sock".into()), url: None, path: "/metrics".into() }));
    let b = &c.base_state.actions[&("core".to_owned(), "b".to_owned())];
    assert_eq!(b.metrics.as_ref().map(|m| m.path.as_str()), Some("/metrics"));
    let cc = &c.base_state.actions[&("core".to_owned(), "c".to_owned())];
    assert_eq!(
        cc.metrics.as_ref().map(|m| (m.url.as_deref(), m.path.as_str())),
        Some((Some("http://127.0.0.1:9100"), "/stats"))
    );

    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    process: true\n    metrics: { socket: /a, url: http://127.0.0.1:1 }\n    health:\n      - tcp: 127.0.0.1:8080\n        period: 10ms\n      - exec: 'true'\n        liveness: { failures: 0 }\n      - { period: 1s }\n      - exec: 'true'\n        liveness: { every: 1s }\n",
    );
    let c = t.check();
    expect(&c, "metrics.http", "actions/a.yaml:5:14");
    let msg = expect(&c, "health.period", "actions/a.yaml:8:17");
    assert!(msg.contains("shorter than 100ms"), "{msg}");
    expect(&c, "health.liveness", "actions/a.yaml:10:31");
    expect(&c, "health.shape", "actions/a.yaml:11:9");
    expect(&c, "schema.unknown-field", "actions/a.yaml:13:21");
}

#[test]
fn env_names_and_values() {
    let t = Tree::new();
    t.file("actions/a.yaml", "actions:\n  - name: a\n    script: x\n    env: { PORT: 8080, _X: '', DEBUG: true }\n");
    clean(&t.check());
    t.file(
        "actions/a.yaml",
        "actions:\n  - name: a\n    script: x\n    env:\n      MY-VAR: x\n      EMPTY:\n      LIST: [a]\n",
    );
    let c = t.check();
    expect(&c, "env.invalid-name", "actions/a.yaml:5:7");
    expect(&c, "env.null", "actions/a.yaml:6:12");
    expect(&c, "schema.type", "actions/a.yaml:7:13");
}

// ---- required services ---------------------------------------------------------------

#[test]
fn hero_db_is_required_by_default() {
    let t = Tree::bare();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: x\n");
    // No hero.yaml: the error points where the service would be defined, and says the
    // requirement is the default.
    let msg = expect(&t.check(), "required.missing", "actions:1:1");
    assert!(msg.contains("required service `hero_db` is not defined (there is no hero.yaml"), "{msg}");
    // A hero.yaml that does not set it: the file, with the same explanation.
    t.file("hero.yaml", "self_heal: true\n");
    let msg = expect(&t.check(), "required.missing", "hero.yaml:1:1");
    assert!(msg.contains("does not set `required_services`"), "{msg}");
}

#[test]
fn required_services_from_hero_yaml() {
    let t = Tree::new();
    t.file("hero.yaml", "required_services: [hero_db, hero_router]\n");
    expect(&t.check(), "required.missing", "hero.yaml:1:30");
    t.file("hero.yaml", "required_services: []\n");
    t.remove("actions/hero_db.yaml");
    clean(&t.check());
}

#[test]
fn a_required_service_must_be_started() {
    let t = Tree::new();
    t.file(
        "actions/hero_db.yaml",
        "actions:\n  - name: hero_db\n    script: x\n    process: true\nservices:\n  - name: hero_db\n    status: stop\n",
    );
    let msg = expect(&t.check(), "required.not-started", "actions/hero_db.yaml:6:5");
    assert!(msg.contains("status: stop"), "{msg}");
}

#[test]
fn settings_schema() {
    let t = Tree::new();
    t.file("hero.yaml", "self_heal: false\nprune: true\ninterval: 30s\nretention: { max_age_days: 7, max_rows_per_table: 100, compact_every: 10m }\n");
    let c = t.check();
    clean(&c);
    assert!(!c.tree.settings.self_heal);
    assert_eq!(c.tree.settings.retention.max_rows_per_table, 100);
    t.file("hero.yaml", "self_heal: maybe\nretention: { max_rows: 5 }\ninterval: 10ms\n");
    let c = t.check();
    expect(&c, "schema.type", "hero.yaml:1:12");
    let msg = expect(&c, "schema.unknown-field", "hero.yaml:2:14");
    assert!(msg.contains("max_rows_per_table"), "{msg}");
    expect(&c, "settings.interval", "hero.yaml:3:11");
}

// ---- layout, overlays, hostile input -------------------------------------------------

#[test]
fn host_overlay_replaces_and_adds() {
    let t = Tree::new();
    t.file(
        "actions/web.yaml",
        "actions:\n  - name: web\n    script: web --port 1\n    process: true\nservices:\n  - name: web\n",
    );
    t.file(
        "hosts/edge-1/actions/web.yaml",
        "actions:\n  - name: web\n    script: web --port 2\n    process: true\n  - name: extra\n    script: x\n",
    );
    let c = t.check();
    clean(&c);
    let base = c.tree.desired_for(None);
    let edge = c.tree.desired_for(Some("edge-1"));
    let key = ("core".to_owned(), "web".to_owned());
    assert_eq!(base.actions[&key].script, "web --port 1");
    assert_eq!(edge.actions[&key].script, "web --port 2");
    assert_eq!(edge.actions.len(), base.actions.len() + 1);
    assert_eq!(c.tree.desired_for(Some("other")).actions.len(), base.actions.len());
}

#[test]
fn error_only_on_one_host_names_the_host() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: x\n    process: true\n    depends_on: [prep]\n  - name: prep\n    script: x\n");
    t.file("hosts/edge-1/actions/prep.yaml", "actions:\n  - name: prep\n    script: y\n    depends_on: [web]\n");
    let c = t.check();
    let cycles: Vec<_> = c.diagnostics.iter().filter(|d| d.code == "cycle").collect();
    assert_eq!(cycles.len(), 1, "{}", render(&c));
    assert!(cycles[0].message.ends_with("(on host `edge-1`)"), "{}", cycles[0]);
    // The base alone has no cycle.
    t.remove("hosts/edge-1/actions/prep.yaml");
    clean(&t.check());
}

#[test]
fn non_utf8_file_is_located() {
    let t = Tree::new();
    t.bytes("actions/a.yaml", b"actions:\n  - name: a\n    script: \xff\xfe\n");
    let msg = expect(&t.check(), "encoding.utf8", "actions/a.yaml:3:13");
    assert!(msg.contains("not valid UTF-8"), "{msg}");
}

#[test]
fn huge_file_is_refused_before_reading() {
    let t = Tree::new();
    let f = std::fs::File::create(t.path().join("actions/huge.yaml")).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    let start = std::time::Instant::now();
    let msg = expect(&t.check(), "io.read", "actions/huge.yaml:1:1");
    assert!(msg.contains("larger than"), "{msg}");
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn alias_bomb_is_refused() {
    let t = Tree::new();
    let mut s = String::from("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..30 {
        s.push_str(&format!(
            "x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n",
            p = i - 1
        ));
    }
    t.file("actions/bomb.yaml", &s);
    let start = std::time::Instant::now();
    let c = t.check();
    assert!(
        c.diagnostics.iter().any(|d| d.code == "yaml.syntax" && d.message.contains("expands to more than")),
        "{}",
        render(&c)
    );
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn deep_nesting_is_refused() {
    let t = Tree::new();
    t.file("actions/deep.yaml", &format!("a: {}", "[".repeat(100_000)));
    let c = t.check();
    assert!(
        c.diagnostics.iter().any(|d| d.file.as_ref() == "actions/deep.yaml"
            && (d.message.contains("nesting") || d.message.contains("recursion limit"))),
        "{}",
        render(&c)
    );
}

#[test]
fn symlinks_are_refused() {
    let t = Tree::new();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("actions/passwd.yaml")).unwrap();
    expect(&t.check(), "layout.symlink", "actions/passwd.yaml:1:1");
}

#[test]
fn plaintext_file_in_secrets_is_an_error() {
    let t = Tree::new();
    t.file("secrets/core.yaml", "token: hunter2\n");
    let msg = expect(&t.check(), "layout.secrets-name", "secrets/core.yaml:1:1");
    assert!(!msg.contains("hunter2"));
}

// ---- migrations ----------------------------------------------------------------------

#[test]
fn migration_names_order_and_syntax() {
    let t = Tree::new();
    t.file("migrations/2026-01-01-001_first.rhai", "proc.log(\"hello\");\n");
    t.file("migrations/2026-01-02-001_second.rhai", "let x = 1;\nif x > 0 { proc.log(`x is ${x}`); }\n");
    let c = t.check();
    clean(&c);
    let names: Vec<_> = c.tree.migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["2026-01-01-001_first.rhai", "2026-01-02-001_second.rhai"]);
    assert_eq!(c.tree.migrations[0].sha256.len(), 64);

    t.file("migrations/2026-01-03-001_broken.rhai", "let x = 1;\nlet y = ;\n");
    t.file("migrations/Seed.rhai", "proc.log(1);\n");
    t.file("migrations/2026-01-01-001_again.rhai", "proc.log(1);\n");
    let c = t.check();
    expect(&c, "migration.syntax", "migrations/2026-01-03-001_broken.rhai:2:9");
    expect(&c, "migration.name", "migrations/Seed.rhai:1:1");
    expect(&c, "migration.duplicate-version", "migrations/2026-01-01-001_first.rhai:1:1");
}

#[test]
fn migrations_cannot_eval_import_or_use_undefined_variables() {
    let t = Tree::new();
    t.file("migrations/1_eval.rhai", "eval(\"1\");\n");
    t.file("migrations/2_import.rhai", "import \"os\" as os;\n");
    t.file("migrations/3_strict.rhai", "proc.log(undefined_thing);\n");
    let c = t.check();
    expect(&c, "migration.syntax", "migrations/1_eval.rhai:1:1");
    expect(&c, "migration.syntax", "migrations/2_import.rhai:1:1");
    expect(&c, "migration.syntax", "migrations/3_strict.rhai:1:10");
}

/// Every part of the layout that is a link is refused where it is, whatever it points to
/// (on `main` these were read through, or silently skipped).
#[test]
fn symlinked_layout_parts_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("actions")).unwrap();
    std::fs::write(outside.path().join("core.sops.yaml"), "a: 1\n").unwrap();
    std::fs::write(outside.path().join("hero.yaml"), "required_services: []\n").unwrap();
    std::fs::write(outside.path().join("actions/x.yaml"), "actions:\n  - name: x\n    script: /bin/true\n").unwrap();
    let link = |t: &Tree, target: &str, at: &str| {
        let p = t.path().join(at);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path().join(target), p).unwrap();
    };
    for (target, at) in [
        ("", "secrets"),
        ("core.sops.yaml", "secrets/core.sops.yaml"),
        ("", "hosts/web1"),
        ("actions", "hosts/web1/actions"),
        ("hero.yaml", "hero.yaml"),
        ("actions", "actions"),
        ("", "migrations"),
    ] {
        let t = if at == "actions" { Tree::bare() } else { Tree::new() };
        link(&t, target, at);
        let c = t.check();
        let text = expect(&c, "layout.symlink", &format!("{at}:1:1"));
        assert!(text.contains("symbolic links are not allowed"), "{text}");
        // Nothing behind the link was read.
        assert!(c.tree.base.actions.iter().all(|a| a.name != "x"), "{at}: read through the link");
        assert!(c.tree.hosts.values().all(|s| s.actions.is_empty()), "{at}: read through the link");
        assert!(c.tree.secrets.is_empty(), "{at}: read through the link");
    }
}

#[test]
fn submodule_checkouts_are_refused() {
    for at in ["actions/vendor", "hosts/web1", "hosts/web1/actions", "secrets", "migrations/lib"] {
        let t = Tree::new();
        t.file(&format!("{at}/.git"), "gitdir: ../.git/modules/x\n");
        t.file(&format!("{at}/x.yaml"), "actions:\n  - name: x\n    script: /bin/true\n");
        let c = t.check();
        let text = expect(&c, "layout.submodule", &format!("{at}:1:1"));
        assert!(text.contains("git submodules are not allowed"), "{text}");
    }
    // A plain directory is not a submodule.
    let t = Tree::new();
    t.file("hosts/web1/actions/x.yaml", "actions:\n  - name: x\n    script: /bin/true\n");
    absent(&t.check(), "layout.submodule");
}

// ---- user / group (issue 13) ---------------------------------------------------------

#[test]
fn user_and_group_are_account_names() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: run\n    user: hero\n    group: hero-ops\n");
    let c = t.check();
    absent(&c, "schema.unknown-field");
    absent(&c, "action.account-invalid");
    let a = c.tree.base.actions.iter().find(|a| a.name == "web").expect("the action");
    assert_eq!((a.user.as_deref(), a.group.as_deref()), (Some("hero"), Some("hero-ops")));

    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: run\n    user: \"0\"\n");
    let msg = expect(&t.check(), "action.account-invalid", "actions/web.yaml:4:11");
    assert!(msg.contains("`0` is not a valid user name"), "{msg}");
}

#[test]
fn group_needs_user() {
    let t = Tree::new();
    t.file("actions/web.yaml", "actions:\n  - name: web\n    script: run\n    group: hero\n");
    let msg = expect(&t.check(), "action.group-without-user", "actions/web.yaml:4:12");
    assert!(msg.contains("`group` is set but `user` is not"), "{msg}");
}

// ---- artifacts (SPEC 3.6) --------------------------------------------------------------

const REGISTRY: &str = "registry:\n  url: https://forge.example.com/api/packages/hero/generic\n";
const AGENT: &str = "actions:\n  - name: agent\n    script: ~/hero/bin/hero_agent@v1.2.3 --port 1\n    process: true\n";
const AGENT_PIN: &str = "hero_agent@v1.2.3: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n";

#[test]
fn a_pinned_artifact_with_a_registry_is_clean() {
    let t = Tree::new();
    t.file("hero.yaml", REGISTRY).file("actions/agent.yaml", AGENT).file("artifacts.lock", AGENT_PIN);
    let c = t.check();
    clean(&c);
    absent(&c, "artifact.unused");
    let pinned = c.tree.lock.entries.keys().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(pinned, ["hero_agent@v1.2.3"]);
    assert_eq!(c.tree.base.artifacts.len(), 1);
}

#[test]
fn an_artifact_without_a_pin_is_an_error_at_its_script() {
    let t = Tree::new();
    t.file("hero.yaml", REGISTRY).file("actions/agent.yaml", AGENT);
    let msg = expect(&t.check(), "artifact.unlocked", "actions/agent.yaml:3:13");
    assert!(msg.contains("hero_agent@v1.2.3") && msg.contains("no artifacts.lock"), "{msg}");
    assert!(msg.contains("hero_proc artifact lock"), "the hint says what to do: {msg}");
    // A lock that pins another version is no better.
    t.file("artifacts.lock", &AGENT_PIN.replace("v1.2.3", "v1.2.2"));
    let c = t.check();
    let msg = expect(&c, "artifact.unlocked", "actions/agent.yaml:3:13");
    assert!(msg.contains("is not pinned in artifacts.lock"), "{msg}");
    expect(&c, "artifact.unused", "artifacts.lock:1:1");
}

#[test]
fn an_artifact_in_a_host_overlay_needs_a_pin_too() {
    let t = Tree::new();
    t.file("hero.yaml", REGISTRY).file("hosts/edge/actions/agent.yaml", AGENT);
    expect(&t.check(), "artifact.unlocked", "hosts/edge/actions/agent.yaml:3:13");
}

#[test]
fn artifacts_need_a_registry() {
    let t = Tree::new();
    t.file("actions/agent.yaml", AGENT).file("artifacts.lock", AGENT_PIN);
    let msg = expect(&t.check(), "artifact.no-registry", "actions/agent.yaml:3:13");
    assert!(msg.contains("registry"), "{msg}");
}

#[test]
fn a_malformed_artifact_reference_is_refused_where_it_is_written() {
    let t = Tree::new();
    t.file("hero.yaml", REGISTRY)
        .file("actions/agent.yaml", "actions:\n  - name: agent\n    script: ~/hero/bin/hero_agent@../../etc/passwd\n");
    let c = t.check();
    expect(&c, "artifact.reference", "actions/agent.yaml:3:13");
    // Not an artifact: a plain binary in ~/hero/bin, or a shell script's words.
    let t = Tree::new();
    t.file(
        "actions/x.yaml",
        "actions:\n  - name: x\n    script: ~/hero/bin/plain --v\n  - name: y\n    interpreter: bash\n    script: ~/hero/bin/a@1\n",
    );
    let c = t.check();
    clean(&c);
    assert!(c.tree.base.artifacts.is_empty());
}

#[test]
fn a_bad_lock_file_is_located() {
    let t = Tree::new();
    t.file("hero.yaml", REGISTRY)
        .file("actions/agent.yaml", AGENT)
        .file("artifacts.lock", &format!("{AGENT_PIN}other@1: sha1:abc\n"));
    expect(&t.check(), "lock.digest", "artifacts.lock:2:10");
}

#[test]
fn registry_settings_are_checked() {
    let cases = [
        ("registry:\n  url: ftp://x/y\n", "settings.registry", "hero.yaml:2:8"),
        ("registry:\n  url: https://user:pw@forge/api/packages/o/generic\n", "settings.registry", "hero.yaml:2:8"),
        ("registry:\n  url: file://relative/dir\n", "settings.registry", "hero.yaml:2:8"),
        (
            "registry:\n  url: http://forge.example.com/p\n  token: { secret: tok }\n",
            "settings.registry",
            "hero.yaml:2:8",
        ),
        ("registry:\n  url: https://forge/p\n  keep: 0\n", "settings.registry", "hero.yaml:3:9"),
        ("registry:\n  url: https://forge/p\n  timeout: 10\n", "duration.invalid", "hero.yaml:3:12"),
        ("registry:\n  url: https://forge/p\n  tokn: x\n", "schema.unknown-field", "hero.yaml:3:3"),
        ("registry:\n  keep: 2\n", "schema.missing-field", "hero.yaml:2:3"),
        ("registry:\n  url: https://forge/p\n  token: { secret: tok }\n", "ref.secret", "hero.yaml:3:20"),
    ];
    for (yaml, code, at) in cases {
        let t = Tree::new();
        t.file("hero.yaml", yaml);
        expect(&t.check(), code, at);
    }
    // http:// to this machine with a token, and file:/// are fine.
    for ok in [
        "registry:\n  url: http://127.0.0.1:8080/p/\n  keep: 5\n  timeout: 2s\n",
        "registry:\n  url: file:///srv/artifacts\n",
    ] {
        let t = Tree::new();
        t.file("hero.yaml", ok);
        clean(&t.check());
    }
    let t = Tree::new();
    t.file("hero.yaml", "registry:\n  url: http://127.0.0.1:8080/p/\n  keep: 5\n  timeout: 2s\n");
    let r = t.check().tree.settings.registry.expect("registry decoded");
    assert_eq!(
        (r.url.as_str(), r.keep, r.timeout.0),
        ("http://127.0.0.1:8080/p", 5, std::time::Duration::from_secs(2))
    );
}
