//! Operator actions on one host: pause (maintenance), resume, forget.

use super::model::{Event, EventKind, HostState};
use super::{Monitor, UnknownHost, count_move};
use std::time::{Duration, Instant, SystemTime};

impl Monitor {
    /// Pauses `id` (maintenance): it raises no late/down until resumed.
    /// `Err` if unknown; `Ok(None)` if it was already paused.
    pub fn pause(&mut self, id: &str, wall: SystemTime) -> Result<Option<Event>, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        let host = self.registry.get_mut(slot);
        if host.state == HostState::Paused {
            return Ok(None);
        }
        self.maintenance.leave(slot);
        count_move(&mut self.counts, host.state, HostState::Paused);
        host.state = HostState::Paused;
        host.set_since(wall);
        // Its queue entry, if any, is now stale (a paused host has no due).
        host.scheduled = 0;
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
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        if self.registry.get(slot).state != HostState::Paused {
            return Ok(None);
        }
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let now_ms = self.clock.ms_ceil(now);
        let host = self.registry.get_mut(slot);
        count_move(&mut self.counts, HostState::Paused, HostState::Up);
        host.state = HostState::Up;
        host.set_since(wall);
        // Deadlines count from `last_seen`: moving it to now is the grace.
        host.last_seen = host.last_seen.max(now_ms);
        let event = self.event(EventKind::Resumed, slot, wall, silent_for);
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
        Ok(Some(event))
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
        let event = self.event(EventKind::Forgotten, slot, wall, silent_for);
        self.maintenance.leave(slot);
        let host = self.registry.remove(slot).ok_or(UnknownHost)?;
        self.counts[host.state.index()] -= 1;
        self.release_labels(host.labels, host.declared_labels);
        if host.flap.flapping {
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        self.changes.forget(id);
        Ok(event)
    }
}
