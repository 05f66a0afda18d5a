//! The commands the RPC layer sends: set and delete actions and services, start, stop
//! and restart by hand, status, secret and config changes. Each checks and records, then
//! hands the lifecycle to the service machine.

use std::collections::HashSet;

use hero_proc_logstore::Level;
use hero_proc_spec::{Action, Service, ServiceStatus};
use hero_proc_store::{Origin, Ref};

use super::services::{Event, Svc};
use super::view::ServiceSnapshot;
use super::{ConfigChange, EngineError, Supervisor, key_of, now_ms, recordable};

impl Supervisor {
    pub(super) fn set_action(&mut self, a: Action, origin: Origin) -> Result<bool, EngineError> {
        self.store.put_action(&a, &origin)?;
        self.update_schedule(&a);
        self.arm_cron();
        Ok(true)
    }

    pub(super) fn delete_action(&mut self, r: Ref) -> Result<bool, EngineError> {
        let used = self.services.values().any(|s| {
            s.spec.actions.iter().any(|a| {
                Ref::resolve(&a.name, &s.spec.context, |_| true) == r
                    || (a.name == r.name && s.spec.context == r.context)
            })
        });
        if used {
            return Err(EngineError::Conflict(format!(
                "action {r} is used by a service; delete or change the service first"
            )));
        }
        let deleted = self.store.delete_action(&r.context, &r.name)?;
        if deleted && self.schedules.remove(&r).is_some() {
            self.arm_cron();
        }
        Ok(deleted)
    }

    pub(super) fn set_service(&mut self, spec: Service, origin: Origin) -> Result<bool, EngineError> {
        for a in &spec.actions {
            let r = Ref::resolve(&a.name, &spec.context, |r| self.stored_action(r).is_ok_and(|a| a.is_some()));
            if self.stored_action(&r)?.is_none() {
                return Err(EngineError::Invalid(format!(
                    "service {}/{} runs unknown action `{}`: set the action first",
                    spec.context, spec.name, a.name
                )));
            }
        }
        self.store.put_service(&spec, &origin)?;
        let key = key_of(&spec);
        let status = spec.status;
        match self.services.get_mut(&key) {
            Some(svc) => {
                let changed = svc.spec != spec;
                svc.spec = spec;
                svc.managed = origin.managed;
                if !changed {
                    return Ok(false);
                }
                self.set_stop_intent(&key, false);
            }
            None => {
                self.services.insert(key.clone(), Svc::new(spec, origin.managed, now_ms()));
                // Services waiting for this one being defined can go on.
                self.wake_waiters();
            }
        }
        match status {
            ServiceStatus::Start => {
                self.want_start(&key);
            }
            ServiceStatus::Stop => {
                self.want_stop(&key);
            }
            ServiceStatus::Ignore => {}
        }
        Ok(true)
    }

    fn known(&self, r: &Ref) -> Result<(), EngineError> {
        match self.services.contains_key(r) {
            true => Ok(()),
            false => Err(EngineError::NotFound(format!("no service {r}"))),
        }
    }

    pub(super) fn delete_service(&mut self, r: Ref) -> Result<bool, EngineError> {
        self.known(&r)?;
        self.want_stop(&r);
        self.services.remove(&r);
        self.set_stop_intent(&r, false);
        Ok(self.store.delete_service(&r.context, &r.name)?)
    }

    pub(super) fn start_by_hand(&mut self, r: Ref) -> Result<bool, EngineError> {
        self.known(&r)?;
        self.set_stop_intent(&r, false);
        Ok(self.want_start(&r))
    }

    pub(super) fn stop_by_hand(&mut self, r: Ref) -> Result<bool, EngineError> {
        self.known(&r)?;
        // A stop by hand stays a stop across daemon restarts.
        self.set_stop_intent(&r, true);
        Ok(self.want_stop(&r))
    }

    pub(super) fn restart_by_hand(&mut self, r: Ref) -> Result<bool, EngineError> {
        self.known(&r)?;
        self.set_stop_intent(&r, false);
        let step = self.feed(&r, Event::Restart { recordable: recordable(&self.store) });
        match step.refused {
            Some(why) => Err(EngineError::Conflict(why)),
            None => Ok(step.acted),
        }
    }

    pub(super) fn status(&self, r: Option<Ref>) -> Result<Vec<ServiceSnapshot>, EngineError> {
        match r {
            Some(r) => match self.services.get(&r) {
                Some(s) => Ok(vec![s.snapshot()]),
                None => Err(EngineError::NotFound(format!("no service {r}"))),
            },
            None => Ok(self.services.values().map(Svc::snapshot).collect()),
        }
    }

    /// A secret changed: restart the running services whose actions read it.
    pub(super) fn secret_changed(&mut self, secret: Ref) -> Vec<Ref> {
        let users: Vec<Ref> = self
            .services
            .iter()
            .filter(|(_, svc)| svc.life.job().is_some())
            .filter(|(k, svc)| {
                (0..svc.spec.actions.len()).any(|step| {
                    self.action_for(k, step)
                        .is_ok_and(|a| a.context == secret.context && a.secret_refs().any(|n| n.name == secret.name))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &users {
            self.restart_running(k);
        }
        users
    }

    pub(super) fn config_applied(&mut self, c: ConfigChange) {
        for r in &c.services_deleted {
            self.want_stop(r);
            self.services.remove(r);
            self.set_stop_intent(r, false);
        }
        for r in &c.actions_deleted {
            self.schedules.remove(r);
        }
        for r in &c.actions_changed {
            if let Ok(Some(a)) = self.stored_action(r) {
                self.update_schedule(&a);
            }
        }
        self.arm_cron();
        for r in &c.services_changed {
            self.reload_service(r);
        }
        for r in &c.stops {
            self.want_stop(r);
        }
        for r in &c.restarts {
            self.restart_running(r);
        }
        for r in &c.starts {
            // The plan decided to start it (git changed it, or self_heal): that ends a stop
            // by hand.
            self.set_stop_intent(r, false);
            self.want_start(r);
        }
        // The plan restarts services it saw running; one that a restart in flight started
        // while the new rows were being committed runs the old action: restart it too.
        let changed: HashSet<&Ref> = c.actions_changed.iter().collect();
        let running: Vec<Ref> =
            self.services.iter().filter(|(_, s)| s.life.job().is_some()).map(|(k, _)| k.clone()).collect();
        for r in running {
            self.restart_if_stale(&r, &changed);
        }
        let stopped: HashSet<Ref> =
            self.store.stop_intents().map(|l| l.into_iter().map(|(r, _)| r).collect()).unwrap_or_default();
        // Services whose status became start (or that are new) and are not running.
        for r in &c.services_changed {
            let Some((status, wanted)) = self.services.get(r).map(|s| (s.spec.status, s.wanted)) else { continue };
            if !stopped.contains(r) && status == ServiceStatus::Start && !wanted {
                self.want_start(r);
            }
            if status == ServiceStatus::Stop && self.services.get(r).is_some_and(|s| s.wanted) {
                self.want_stop(r);
            }
        }
        self.wake_waiters();
    }

    /// Read a service the reconciler wrote; git changing it ends a stop by hand.
    fn reload_service(&mut self, r: &Ref) {
        match self.store.get_service(&r.context, &r.name) {
            Ok(Some(stored)) => match self.services.get_mut(r) {
                Some(svc) => {
                    let changed = svc.spec != stored.value;
                    svc.spec = stored.value;
                    svc.managed = stored.managed;
                    if changed {
                        self.set_stop_intent(r, false);
                    }
                }
                None => {
                    self.services.insert(r.clone(), Svc::new(stored.value, stored.managed, now_ms()));
                }
            },
            Ok(None) => {}
            Err(e) => self.event(Level::Error, "hero_proc.reconcile", format!("cannot reload {r}: {e}"), None),
        }
    }

    /// Record (or forget) that a service was stopped by hand.
    fn set_stop_intent(&self, key: &Ref, stopped: bool) {
        let r = if stopped {
            self.store.set_stop_intent(&key.context, &key.name, now_ms())
        } else {
            self.store.clear_stop_intent(&key.context, &key.name).map(|_| ())
        };
        if let Err(e) = r {
            self.event(
                Level::Error,
                "hero_proc.engine",
                format!(
                    "{key}: cannot record that it was {}: {e}",
                    if stopped { "stopped by hand" } else { "started" }
                ),
                None,
            );
        }
    }

    /// SPEC 5.3: after autostart, hero_db must be active; say so loudly when it cannot be.
    pub(super) fn ensure_hero_db(&mut self) -> crate::hero_db::Decision {
        use crate::hero_db::{self as db, Decision};
        let key = Ref::new(db::CONTEXT, db::NAME);
        let registered = self.services.get(&key).map(|s| (s.spec.status, s.state()));
        let decision = db::decide(registered, false);
        match decision {
            Decision::Skip => {}
            // Said too, so the check leaves a mark that it ran (tests and operators wait on it).
            Decision::AlreadyActive => {
                self.event(Level::Info, db::SOURCE, "hero_db is active: nothing to do".into(), None)
            }
            Decision::InProgress => {
                self.event(Level::Info, db::SOURCE, "hero_db is starting: nothing to do".into(), None)
            }
            Decision::Start if self.store.stop_intents().is_ok_and(|l| l.iter().any(|(r, _)| *r == key)) => {
                self.event(
                    Level::Warn,
                    db::SOURCE,
                    "hero_db was stopped by hand; leaving it stopped. `hero_proc service start hero_db` starts it"
                        .into(),
                    None,
                );
            }
            Decision::Start => {
                self.event(
                    Level::Info,
                    db::SOURCE,
                    "hero_db is registered with status start but idle; starting it".into(),
                    None,
                );
                self.want_start(&key);
            }
            Decision::KeepStatus(status) => {
                let word = match status {
                    ServiceStatus::Start => "start",
                    ServiceStatus::Stop => "stop",
                    ServiceStatus::Ignore => "ignore",
                };
                self.event(
                    Level::Warn,
                    db::SOURCE,
                    format!("hero_db has `status: {word}`; leaving it as the operator asked. Services that require it will wait. Set `status: start` to have hero_proc keep it running."),
                    None,
                );
            }
            Decision::Missing => self.event(Level::Error, db::SOURCE, db::MISSING_HINT.into(), None),
        }
        decision
    }
}
