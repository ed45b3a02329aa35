//! [`Fleet`]: the one owner of the lock around the [`Monitor`].
//!
//! Ingest, the timer, the API, persistence and the metrics call its
//! methods; none of them sees the lock. Each mutating method locks, acts on
//! the monitor, publishes the events it made *while still holding the
//! lock*, wakes the timer if a deadline moved earlier, and unlocks: so events
//! reach the history, the store and the sinks in exactly the order the
//! monitor made them (a `down` from the timer never after the `recovered`
//! that followed it). That rule lives here and nowhere else.
//!
//! The shape of mini-redis's `Db` handle: callers use `get`/`set`, never
//! the `Mutex`; one background task (our timer) does expiry. A
//! `std::sync::Mutex`, not tokio's: every critical section is short and
//! none is held across an `.await`.

use super::events::EventLog;
use crate::monitor::{Event, Monitor, Observation, Observed, Outcome, Slot, UnknownHost};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Beats applied under one hold of the lock at most (a receive batch).
pub const MAX_BATCH: usize = 64;

/// The monitor behind its lock, the event log it publishes to, and the
/// timer's wake-up.
pub struct Fleet {
    monitor: Mutex<Monitor>,
    events: Arc<EventLog>,
    /// Wakes the timer when a deadline may have moved earlier.
    wake: Notify,
}

impl Fleet {
    /// Puts `monitor` behind the lock, publishing to `events`.
    pub fn new(monitor: Monitor, events: Arc<EventLog>) -> Self {
        Self {
            monitor: Mutex::new(monitor),
            events,
            wake: Notify::new(),
        }
    }

    /// The event log the fleet publishes to (for reading and subscribing).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    fn lock(&self) -> MutexGuard<'_, Monitor> {
        // A panic under the lock leaves a monitor whose invariants may be
        // broken: going on with it would report wrong states.
        self.monitor.lock().expect("monitor lock poisoned")
    }

    /// Runs `action` on the monitor under the lock, then publishes the
    /// events it left in `out` (still under the lock, so they keep the
    /// monitor's order) and wakes the timer if the earliest deadline moved
    /// earlier. `out.events` is empty afterwards; its lags and moves stay
    /// for the caller to count and log.
    pub(super) fn act<R>(
        &self,
        out: &mut Outcome,
        action: impl FnOnce(&mut Monitor, &mut Outcome) -> R,
    ) -> R {
        let (result, woke) = {
            let mut monitor = self.lock();
            let before = monitor.next_deadline();
            let result = action(&mut monitor, out);
            if monitor.topology_unsettled() {
                // Hosts relabeled by the action are tied again (groups and
                // dependencies by label), and their events follow.
                // tokio's clock, as `timer::now` reads it (timer names the fleet).
                let now = tokio::time::Instant::now().into_std();
                monitor.settle_topology(now, SystemTime::now(), out);
            }
            if !out.events.is_empty() {
                self.events.publish(out.events.drain(..));
            }
            (result, earlier(monitor.next_deadline(), before))
        };
        if woke {
            self.wake.notify_one();
        }
        result
    }

    /// Reads the monitor under the lock: `read` must only copy what it
    /// needs (serialising, I/O and logging happen after).
    pub fn read<R>(&self, read: impl FnOnce(&Monitor) -> R) -> R {
        read(&self.lock())
    }

    /// Applies a batch of beats received at `now` (`wall`): `results[i]`
    /// becomes what happened to `beats[i]`. The lookups are made first for
    /// the whole batch (see `Registry::find_many`).
    pub fn observe_batch(
        &self,
        beats: &[Observation<'_>],
        now: Instant,
        wall: SystemTime,
        results: &mut [Observed],
        out: &mut Outcome,
    ) {
        let count = beats.len().min(MAX_BATCH).min(results.len());
        self.act(out, |monitor, out| {
            let mut ids = [""; MAX_BATCH];
            for (id, beat) in ids.iter_mut().zip(beats) {
                *id = beat.host_id;
            }
            let mut found = [None; MAX_BATCH];
            monitor
                .registry()
                .find_many(&ids[..count], &mut found[..count]);
            for ((beat, &found), result) in beats.iter().zip(&found[..count]).zip(results) {
                *result = monitor.observe_found(found, beat, now, wall, out);
            }
        });
    }

    /// Expires every deadline at or before the time `clock` reads (under
    /// the lock: a wait for the lock must not make it stale), after
    /// forgiving `stall` (a stall of the whole server, see
    /// `monitor::stall`) if there was one. Returns the next deadline; `out`
    /// keeps the lags.
    pub fn expire(
        &self,
        clock: impl FnOnce() -> (Instant, SystemTime),
        stall: Option<Duration>,
        out: &mut Outcome,
    ) -> Option<Instant> {
        self.act(out, |monitor, out| {
            let (now, wall) = clock();
            if let Some(stall) = stall {
                // Before expiring: the stalled time must not count as silence.
                monitor.absorb_stall(stall, now);
            }
            monitor.expire(now, wall, out);
            monitor.next_deadline()
        })
    }

    /// Waits until a deadline may have moved earlier than the timer knew.
    pub async fn deadline_moved(&self) {
        self.wake.notified().await;
    }

    /// Pauses host `id` (see [`Monitor::pause`]).
    pub fn pause(&self, id: &str, now: Instant, wall: SystemTime) -> Result<(), UnknownHost> {
        self.act(&mut Outcome::default(), |monitor, out| {
            out.events.extend(monitor.pause(id, now, wall)?);
            Ok(())
        })
    }

    /// Resumes host `id` (see [`Monitor::resume`]).
    pub fn resume(&self, id: &str, now: Instant, wall: SystemTime) -> Result<(), UnknownHost> {
        self.act(&mut Outcome::default(), |monitor, out| {
            out.events.extend(monitor.resume(id, now, wall)?);
            Ok(())
        })
    }

    /// Forgets host `id` (see [`Monitor::forget`]).
    pub fn forget(&self, id: &str, now: Instant, wall: SystemTime) -> Result<(), UnknownHost> {
        self.act(&mut Outcome::default(), |monitor, out| {
            out.events.push(monitor.forget(id, now, wall)?);
            Ok(())
        })
    }

    /// Judges by `settings` from `now` on (a reload; see
    /// [`Monitor::replace_settings`]). The timer is woken: a deadline may
    /// now be earlier.
    pub fn replace_settings(&self, settings: crate::monitor::Settings, now: Instant) {
        self.lock().replace_settings(settings, now);
        self.wake.notify_one();
    }

    /// A client's label announcement (see [`Monitor::declare_labels`]).
    /// Through `Fleet::act` like every change: a relabeled host is tied
    /// to its groups and dependencies again, and their events published,
    /// now rather than at the next action.
    pub fn declare_labels(
        &self,
        host_id: &str,
        labels: &crate::labels::Labels,
        seq: u64,
    ) -> crate::monitor::Declared {
        self.act(&mut Outcome::default(), |monitor, _| {
            monitor.declare_labels(host_id, labels, seq)
        })
    }

    /// Replaces the server's label rules (a reload; see
    /// [`Monitor::set_label_rules`]), through `Fleet::act` as
    /// [`Fleet::declare_labels`] is.
    pub fn set_label_rules(&self, rules: Vec<crate::monitor::LabelRule>) {
        self.act(&mut Outcome::default(), |monitor, _| {
            monitor.set_label_rules(rules)
        });
    }

    /// A new subscription to the events and the id of the first event it
    /// will receive, taken together under the lock (events are published
    /// only under it): a sink replaced by a reload hands over at exactly
    /// that event, with none lost or sent twice.
    pub fn subscribe_at(&self) -> (tokio::sync::broadcast::Receiver<Event>, u64) {
        let _monitor = self.lock();
        (self.events.subscribe(), self.events.next_id())
    }

    /// Publishes events that are not about a change the monitor made (the
    /// server's own `monitor_started`), in order with the monitor's.
    pub fn announce(&self, events: Vec<Event>) {
        let mut out = Outcome {
            events,
            ..Outcome::default()
        };
        self.act(&mut out, |_, _| ());
    }

    /// How many hosts are known.
    pub fn len(&self) -> usize {
        self.read(|monitor| monitor.registry().len())
    }

    /// True when no host is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hosts the store's next checkpoint must write (`full`: with those
    /// that only beat) and the ids it must delete; from now on they count
    /// as written.
    pub fn take_changes(&self, full: bool) -> (Vec<Slot>, Vec<Box<str>>) {
        let mut monitor = self.lock();
        (monitor.take_dirty(full), monitor.take_forgotten())
    }

    /// The hosts changed since the last call (`full`: and those that only
    /// beat); from now on they count as written.
    pub fn take_dirty(&self, full: bool) -> Vec<Slot> {
        self.lock().take_dirty(full)
    }

    /// Puts back what a failed checkpoint did not write.
    pub fn untake_changes(&self, slots: &[Slot], forgotten: Vec<Box<str>>) {
        let mut monitor = self.lock();
        for &slot in slots {
            monitor.mark_dirty(slot);
        }
        monitor.unforget(forgotten);
    }

    /// Copies `f` of each host in `slots` that still exists, holding the
    /// lock for at most `chunk` hosts at a time so that ingest gets it in
    /// between.
    pub fn copy_hosts<T>(
        &self,
        slots: &[Slot],
        chunk: usize,
        f: impl Fn(&Monitor, Slot) -> T,
    ) -> Vec<T> {
        let mut copies = Vec::with_capacity(slots.len());
        for part in slots.chunks(chunk.max(1)) {
            let monitor = self.lock();
            let registry = monitor.registry();
            // A slot freed by a forget since it was marked has nothing to copy.
            copies.extend(
                part.iter()
                    .filter(|&&slot| registry.try_get(slot).is_some())
                    .map(|&slot| f(&monitor, slot)),
            );
        }
        copies
    }
}

/// True when `after` is a deadline earlier than `before` (or the first one).
fn earlier(after: Option<Instant>, before: Option<Instant>) -> bool {
    match (after, before) {
        (Some(after), Some(before)) => after < before,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::EventKind;
    use crate::monitor::testing::{Sim, beat};

    fn fleet() -> (Fleet, Instant) {
        let sim = Sim::new();
        let start = sim.start;
        (Fleet::new(sim.monitor, Arc::new(EventLog::new(100))), start)
    }

    #[test]
    fn earlier_deadline_detection() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        assert!(earlier(Some(t), None));
        assert!(earlier(Some(t), Some(later)));
        assert!(!earlier(Some(later), Some(t)));
        assert!(!earlier(None, Some(t)));
    }

    #[test]
    fn events_are_published_in_the_order_the_monitor_made_them() {
        let (fleet, start) = fleet();
        let mut rx = fleet.events().subscribe();
        let mut out = Outcome::default();
        let mut results = [Observed::Applied; 2];
        fleet.observe_batch(
            &[beat("a"), beat("b")],
            start,
            SystemTime::now(),
            &mut results,
            &mut out,
        );
        assert!(out.events.is_empty(), "published, not left behind");
        let at = |secs| start + Duration::from_secs(secs);
        let next = fleet.expire(|| (at(30), SystemTime::now()), None, &mut out);
        assert_eq!(next, None, "both down: nothing left to wait for");
        assert_eq!(out.lags.len(), 4, "two lates and two downs, each timed");
        fleet.pause("a", at(30), SystemTime::now()).expect("known");
        fleet.forget("b", at(31), SystemTime::now()).expect("known");
        assert_eq!(
            fleet.forget("b", at(31), SystemTime::now()),
            Err(UnknownHost)
        );
        let mut got = Vec::new();
        while let Ok(event) = rx.try_recv() {
            got.push((event.kind, event.host.to_string(), event.id));
        }
        use EventKind::*;
        let want = [
            (Joined, "a"),
            (Joined, "b"),
            (Late, "a"),
            (Late, "b"),
            (Down, "a"),
            (Down, "b"),
            (Paused, "a"),
            (Forgotten, "b"),
        ];
        let got_kinds: Vec<_> = got.iter().map(|(k, h, _)| (*k, h.as_str())).collect();
        assert_eq!(got_kinds, want);
        let ids: Vec<u64> = got.iter().map(|g| g.2).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>(), "numbered in order");
        assert_eq!(fleet.len(), 1);
    }

    #[test]
    fn label_changes_retie_groups_at_once() {
        use crate::labels::Labels;
        use crate::monitor::groups::{GroupSpec, Quorum, Spec};
        use crate::select::Selector;
        let (fleet, start) = fleet();
        let web = Labels::parse_list("role=web").expect("labels");
        let members = Selector::new(&[], &web, &[]).expect("selector");
        let spec = Spec {
            groups: vec![GroupSpec {
                name: "web".into(),
                members,
                quorum: Quorum::MinUp(1),
                labels: Default::default(),
                member_severity: None,
            }],
            dependencies: vec![],
        };
        fleet.act(&mut Outcome::default(), |m, _| m.set_topology(spec, start));
        let mut results = [Observed::Applied; 1];
        let (wall, mut out) = (SystemTime::now(), Outcome::default());
        fleet.observe_batch(&[beat("a")], start, wall, &mut results, &mut out);
        let members = || fleet.read(|m| (m.groups()[0].total, m.topology_unsettled()));
        assert_eq!(members(), (0, false));
        fleet.declare_labels("a", &web, 1);
        assert_eq!(members(), (1, false), "in its group without another action");
        fleet.declare_labels("a", &Labels::new(), 1);
        assert_eq!(members(), (0, false));
        let rule = crate::monitor::LabelRule {
            select: Selector::new(&["a".into()], &Labels::new(), &[]).expect("selector"),
            set: web,
        };
        fleet.set_label_rules(vec![rule]);
        assert_eq!(members(), (1, false), "a rule ties it at once too");
    }

    #[tokio::test]
    async fn a_beat_that_brings_a_deadline_forward_wakes_the_timer() {
        let (fleet, start) = fleet();
        let mut out = Outcome::default();
        let mut results = [Observed::Applied; 1];
        let mut beat_a = || {
            fleet.observe_batch(
                &[beat("a")],
                start,
                SystemTime::now(),
                &mut results,
                &mut out,
            )
        };
        beat_a();
        // The first deadline: a wake-up is stored for the timer.
        tokio::time::timeout(Duration::from_secs(5), fleet.deadline_moved())
            .await
            .expect("woken");
        // A plain beat moves no deadline earlier: no wake-up.
        beat_a();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), fleet.deadline_moved())
                .await
                .is_err()
        );
    }
}
