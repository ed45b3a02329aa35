//! Operator actions on one host: pause (maintenance), resume, forget.

use super::Monitor;
use super::UnknownHost;
use super::model::{Event, EventKind, HostState};
use std::time::{Duration, Instant, SystemTime};

impl Monitor {
    /// Pauses `id` at `now` (maintenance): it raises no late/down until
    /// resumed. `Err` if unknown; `Ok(None)` if it was already paused.
    pub fn pause(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<Event>, UnknownHost> {
        let Some(slot) = self.slot_where(id, |state| state != HostState::Paused)? else {
            return Ok(None);
        };
        self.maintenance.leave(slot);
        let host = self.registry.get_mut(slot);
        let from = host.state;
        host.state = HostState::Paused;
        host.set_since(wall);
        // Its queue entry, if any, is now stale (a paused host has no due).
        host.scheduled = 0;
        // The clock every deadline uses: a paused parent's dependents get
        // their fresh timeout from it.
        self.transition(slot, from, HostState::Paused, self.clock.ms(now), wall);
        self.changes.mark(slot);
        Ok(Some(self.event(
            EventKind::Paused,
            slot,
            wall,
            Duration::ZERO,
        )))
    }

    /// Resumes a paused `id` as `up` with a fresh full timeout from `now`
    /// (its silence during maintenance is not held against it).
    /// `Err` if unknown; `Ok(None)` if it was not paused.
    pub fn resume(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<Event>, UnknownHost> {
        let Some(slot) = self.slot_where(id, |state| state == HostState::Paused)? else {
            return Ok(None);
        };
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let at_least = self.silent_at_least(self.registry.get(slot), now);
        let now_ms = self.clock.ms_ceil(now);
        let host = self.registry.get_mut(slot);
        host.state = HostState::Up;
        host.set_since(wall);
        // Deadlines count from `last_seen`: moving it to now is the grace.
        host.last_seen = host.last_seen.max(now_ms);
        self.transition(slot, HostState::Paused, HostState::Up, now_ms, wall);
        let event = self.bounded_event(EventKind::Resumed, slot, wall, silent_for, at_least);
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
        Ok(Some(event))
    }

    /// The slot of `id` if its state is `wanted` (`None`: the action has
    /// nothing to do); `Err` if unknown.
    fn slot_where(
        &self,
        id: &str,
        wanted: impl Fn(HostState) -> bool,
    ) -> Result<Option<super::registry::Slot>, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        Ok(wanted(self.registry.get(slot).state).then_some(slot))
    }

    /// Forgets `id`: removes it from the registry. Its queue entries stay
    /// behind and are skipped as stale when they surface.
    pub fn forget(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Event, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let at_least = self.silent_at_least(self.registry.get(slot), now);
        let event = self.bounded_event(EventKind::Forgotten, slot, wall, silent_for, at_least);
        // Out of its groups, and no longer anyone's parent, as if it left.
        let from = self.registry.get(slot).state;
        if from != HostState::Left {
            self.registry.get_mut(slot).state = HostState::Left;
            self.transition(slot, from, HostState::Left, self.clock.ms(now), wall);
        }
        self.untie(slot, self.clock.ms(now), wall);
        self.maintenance.leave(slot);
        self.release_labels(slot);
        // Its probing ends too: a host joining in the slot must not inherit
        // the suspicion (nor its nonces).
        self.end_probing(slot);
        let host = self.registry.remove(slot).ok_or(UnknownHost)?;
        self.counts[host.state.index()] -= 1;
        if host.flap.flapping {
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        self.changes.forget(id);
        Ok(event)
    }
}
