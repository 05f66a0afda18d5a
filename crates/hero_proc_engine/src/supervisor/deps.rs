//! Dependencies between services (`requires`, `after`), read from the live states. Pure:
//! the executor acts on the answers.

use std::collections::BTreeMap;

use hero_proc_store::Ref;

use super::services::Svc;
use super::view::ServiceState;

/// What a service about to start must wait for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deps {
    /// What it waits for, as status shows it (`ctx/name`, or `ctx/name (not defined)`).
    pub waiting_for: Vec<String>,
    /// What it requires and nothing asked to run yet: the executor starts these, as
    /// systemd's Requires= does.
    pub pull_in: Vec<Ref>,
}

/// `requires` must be active (running, or a one-shot that finished) or defined later;
/// `after` orders only against services that are on their way up.
pub fn deps(services: &BTreeMap<Ref, Svc>, key: &Ref) -> Deps {
    let Some(svc) = services.get(key) else { return Deps::default() };
    let resolve = |name: &str| Ref::resolve(name, &svc.spec.context, |k| services.contains_key(k));
    let state = |r: &Ref| services.get(r).map(Svc::state);
    let requires: Vec<Ref> = svc.spec.requires.iter().map(|r| resolve(&r.name)).collect();
    let mut waiting: Vec<&Ref> = requires.iter().filter(|r| !state(r).is_some_and(ServiceState::is_active)).collect();
    let after: Vec<Ref> = svc.spec.after.iter().map(|r| resolve(&r.name)).collect();
    waiting.extend(after.iter().filter(|r| matches!(state(r), Some(ServiceState::Waiting | ServiceState::Starting))));
    if waiting.is_empty() {
        return Deps::default();
    }
    let waiting_for = waiting
        .iter()
        .map(|r| if services.contains_key(r) { r.to_string() } else { format!("{r} (not defined)") })
        .collect();
    let pull_in = requires.iter().filter(|r| services.get(r).is_some_and(|s| !s.wanted)).cloned().collect();
    Deps { waiting_for, pull_in }
}

/// A service it requires that failed (it then fails too, instead of waiting forever).
pub fn failed_dependency(services: &BTreeMap<Ref, Svc>, key: &Ref) -> Option<Ref> {
    let svc = services.get(key)?;
    svc.spec.requires.iter().find_map(|r| {
        let rr = Ref::resolve(&r.name, &svc.spec.context, |x| services.contains_key(x));
        services.get(&rr).filter(|s| s.state() == ServiceState::Failed).map(|_| rr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::services::Life;
    use hero_proc_spec::{Named, Service, ServiceStatus};

    fn svc(context: &str, name: &str, requires: &[&str], after: &[&str], life: Life, wanted: bool) -> Svc {
        let spec = Service {
            name: name.into(),
            context: context.into(),
            description: None,
            status: ServiceStatus::Start,
            actions: vec![Named::new(name)],
            requires: requires.iter().map(|r| Named::new(*r)).collect(),
            after: after.iter().map(|r| Named::new(*r)).collect(),
            pos: Default::default(),
        };
        let mut s = Svc::new(spec, false, 0);
        s.life = life;
        s.wanted = wanted;
        s
    }

    fn map(list: Vec<Svc>) -> BTreeMap<Ref, Svc> {
        list.into_iter().map(|s| (s.key(), s)).collect()
    }

    #[test]
    fn requires_waits_for_what_is_not_active_and_pulls_it_in() {
        let m = map(vec![
            svc("app", "web", &["db", "cache", "ghost"], &[], Life::Inactive, true),
            svc("core", "db", &[], &[], Life::Inactive, false),
            svc("app", "cache", &[], &[], Life::Exited, true),
        ]);
        let d = deps(&m, &Ref::new("app", "web"));
        // db resolves to core (no app/db); ghost stays in its own context, undefined.
        assert_eq!(d.waiting_for, vec!["core/db".to_string(), "app/ghost (not defined)".to_string()]);
        assert_eq!(d.pull_in, vec![Ref::new("core", "db")]);
    }

    #[test]
    fn nothing_to_wait_for_pulls_nothing_in() {
        let m = map(vec![
            svc("core", "web", &["db"], &["log"], Life::Inactive, true),
            svc("core", "db", &[], &[], Life::Inactive, false),
            svc("core", "log", &[], &[], Life::Inactive, false),
        ]);
        let mut m = m;
        m.get_mut(&Ref::new("core", "db")).unwrap().life =
            Life::Running { job: hero_proc_store::JobId(1), pid: 1, main_since: std::time::Instant::now() };
        assert_eq!(deps(&m, &Ref::new("core", "web")), Deps::default());
    }

    #[test]
    fn after_orders_only_against_services_on_their_way_up() {
        let m = map(vec![
            svc("core", "web", &[], &["a", "b", "c", "d"], Life::Inactive, true),
            svc("core", "a", &[], &[], Life::Waiting, true),
            svc("core", "b", &[], &[], Life::Starting { step: 0, job: None, main_since: None }, true),
            svc("core", "c", &[], &[], Life::Failed, true),
        ]);
        let d = deps(&m, &Ref::new("core", "web"));
        assert_eq!(d.waiting_for, vec!["core/a".to_string(), "core/b".to_string()]);
        assert!(d.pull_in.is_empty(), "after does not pull anything in");
    }

    #[test]
    fn a_failed_requirement_is_found() {
        let m = map(vec![
            svc("core", "web", &["db", "cache"], &[], Life::Waiting, true),
            svc("core", "db", &[], &[], Life::Inactive, true),
            svc("core", "cache", &[], &[], Life::Failed, true),
        ]);
        assert_eq!(failed_dependency(&m, &Ref::new("core", "web")), Some(Ref::new("core", "cache")));
        assert_eq!(failed_dependency(&m, &Ref::new("core", "db")), None);
    }
}
