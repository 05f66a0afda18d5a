//! Scheduled actions: one timer for the earliest next tick (none when nothing is
//! scheduled, so an idle daemon does not wake up); a tick whose previous run still goes
//! is skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use hero_proc_logstore::Level;
use hero_proc_spec::Action;
use hero_proc_store::{Ref, RunId};

use super::{Msg, Supervisor};

pub(super) struct Schedule {
    pub(super) cron: croner::Cron,
    pub(super) next: Option<chrono::DateTime<chrono::Local>>,
    /// The run of the previous tick, while it is still going: ticks do not overlap.
    pub(super) running: Option<RunId>,
}

impl Supervisor {
    /// Track (or stop tracking) an action's cron schedule.
    pub(super) fn update_schedule(&mut self, a: &Action) {
        let key = Ref::new(&a.context, &a.name);
        let cron =
            a.schedule.as_deref().filter(|_| !a.process).and_then(|s| hero_proc_spec::schema::parse_cron(s).ok());
        match cron {
            Some(cron) => {
                let next = cron.find_next_occurrence(&chrono::Local::now(), false).ok();
                let running = self.schedules.get(&key).and_then(|s| s.running);
                self.schedules.insert(key, Schedule { cron, next, running });
            }
            None => {
                self.schedules.remove(&key);
            }
        }
    }

    /// One timer for the earliest next tick; nothing at all when nothing is scheduled.
    pub(super) fn arm_cron(&mut self) {
        self.cron_generation += 1;
        let Some(next) = self.schedules.values().filter_map(|s| s.next).min() else { return };
        let wait = (next - chrono::Local::now()).to_std().unwrap_or(Duration::ZERO);
        let generation = self.cron_generation;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(Msg::CronTick { generation });
        });
    }

    /// Start a run for every schedule that is due, unless its previous run still goes.
    pub(super) fn fire_due(&mut self) {
        let now = chrono::Local::now();
        for (key, tick) in due(&self.schedules, now, |run| self.runs.contains_key(&run)) {
            match tick {
                Tick::Skip => self.event(
                    Level::Warn,
                    "hero_proc.schedule",
                    format!("{key}: skipped a tick, the previous run is still going"),
                    None,
                ),
                Tick::Fire => match self.submit(vec![key.clone()], format!("schedule {key}")) {
                    Ok(run) => {
                        if let Some(s) = self.schedules.get_mut(&key) {
                            s.running = Some(run);
                        }
                    }
                    Err(e) => self.event(Level::Error, "hero_proc.schedule", format!("{key}: cannot start: {e}"), None),
                },
            }
            if let Some(s) = self.schedules.get_mut(&key) {
                s.next = s.cron.find_next_occurrence(&now, false).ok();
            }
        }
    }
}

/// What a due schedule does on a tick.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tick {
    Fire,
    /// Its previous run still goes: ticks do not overlap.
    Skip,
}

/// The schedules due at `now`, and whether each fires; `alive` says whether a run still
/// goes. Pure.
pub(super) fn due(
    schedules: &BTreeMap<Ref, Schedule>,
    now: chrono::DateTime<chrono::Local>,
    alive: impl Fn(RunId) -> bool,
) -> Vec<(Ref, Tick)> {
    schedules
        .iter()
        .filter(|(_, s)| s.next.is_some_and(|n| n <= now))
        .map(|(k, s)| (k.clone(), if s.running.is_some_and(&alive) { Tick::Skip } else { Tick::Fire }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(next_in_secs: i64, running: Option<RunId>) -> Schedule {
        let cron = hero_proc_spec::schema::parse_cron("* * * * *").expect("valid cron");
        Schedule { cron, next: Some(chrono::Local::now() + chrono::Duration::seconds(next_in_secs)), running }
    }

    #[test]
    fn a_tick_fires_what_is_due_and_skips_while_the_previous_run_goes() {
        let mut s = BTreeMap::new();
        s.insert(Ref::new("core", "due_idle"), schedule(-1, None));
        s.insert(Ref::new("core", "due_busy"), schedule(-1, Some(RunId(7))));
        s.insert(Ref::new("core", "due_done"), schedule(-1, Some(RunId(8))));
        s.insert(Ref::new("core", "later"), schedule(60, None));
        let got = due(&s, chrono::Local::now(), |r| r == RunId(7));
        assert_eq!(
            got,
            vec![
                (Ref::new("core", "due_busy"), Tick::Skip),
                (Ref::new("core", "due_done"), Tick::Fire),
                (Ref::new("core", "due_idle"), Tick::Fire),
            ]
        );
    }
}
