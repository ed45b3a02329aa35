//! The deadline queue: a min-heap of 8-byte entries with lazy rescheduling.
//!
//! An entry holds the deadline in queue ticks (milliseconds after the
//! queue's base) in its high 32 bits and the slot in its low 32. A host's
//! record keeps the tick of its one live entry (`Host::scheduled`); an entry
//! whose tick differs is stale and skipped when it surfaces. A beat only
//! moves a deadline later, which leaves the queued entry early: it is moved
//! to the true deadline when it surfaces. Only a deadline made *earlier*
//! (a first beat, a shorter declared interval, a resume) pushes an entry.

use super::registry::Slot;
use super::{HostState, Monitor};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The heap and the clock time of its tick 0.
pub(super) struct Queue {
    heap: BinaryHeap<Reverse<u64>>,
    /// Clock time of queue tick 0; moved forward (and the queue rebuilt)
    /// before ticks could overflow, about every 24 days.
    base: u64,
}

impl Queue {
    /// An empty queue whose tick 0 is clock time `base`.
    pub(super) fn new(base: u64) -> Self {
        Self {
            heap: BinaryHeap::new(),
            base,
        }
    }

    /// The queue tick of clock time `ms`, clamped into the tick range: a
    /// clamped entry only surfaces early, and is then moved to its true
    /// deadline like any early entry.
    pub(super) fn tick(&self, ms: u64) -> u32 {
        u32::try_from(ms.saturating_sub(self.base).max(1)).unwrap_or(u32::MAX)
    }

    fn push(&mut self, tick: u32, slot: Slot) {
        self.heap
            .push(Reverse((u64::from(tick) << 32) | u64::from(slot)));
    }

    /// Clock time of the earliest entry (possibly stale or early).
    fn earliest(&self) -> Option<u64> {
        self.heap
            .peek()
            .map(|Reverse(entry)| self.base + (entry >> 32))
    }

    /// Removes and returns the earliest entry (its tick and slot) if it is
    /// due at clock time `now_ms`.
    pub(super) fn pop_due(&mut self, now_ms: u64) -> Option<(u32, Slot)> {
        let &Reverse(entry) = self.heap.peek()?;
        let (at, slot) = ((entry >> 32) as u32, entry as u32);
        if self.base + u64::from(at) > now_ms {
            return None;
        }
        self.heap.pop();
        Some((at, slot))
    }

    /// True when ticks at `now_ms` are halfway to overflowing.
    pub(super) fn near_overflow(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.base) >= 1 << 31
    }

    /// Empties the queue and puts tick 0 just before `now_ms`.
    fn reset(&mut self, now_ms: u64) {
        self.heap.clear();
        self.base = now_ms.saturating_sub(1);
    }

    /// Entries queued, stale ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

impl Monitor {
    /// Earliest pending deadline (possibly a stale or early entry, which only
    /// costs a spurious wake-up); the timer sleeps until it.
    pub fn next_deadline(&self) -> Option<Instant> {
        let earliest = match (self.queue.earliest(), self.next_probe_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        earliest.map(|ms| self.clock.instant(ms))
    }

    /// Where the silence the monitor holds against the host starts (clock
    /// ms): its last beat, but for a remembered host the restore at the
    /// earliest (one full timeout of grace: the server was away, not it).
    pub(super) fn counted_from(&self, host: &super::Host) -> u64 {
        host.last_seen.max(self.restored_at)
    }

    /// When `host` next changes state if it stays silent, if ever (clock
    /// milliseconds, rounded up).
    pub(super) fn due(&self, host: &super::Host) -> Option<u64> {
        let from = self.counted_from(host);
        let after = |silence: Duration| from.saturating_add(super::millis(silence, true));
        match host.state {
            HostState::Up => Some(after(self.late_silence(host))),
            HostState::Late => Some(after(self.timeout_for(host))),
            // A flapping host that stays down settles (and is then alerted
            // on) after a whole flap window.
            HostState::Down => host
                .flap
                .settles_at(self.flap_window_ms())
                .map(|ms| self.clock.ms_ceil(self.epoch + Duration::from_millis(ms))),
            // Unreachable: only during a fresh timeout (`Monitor::due_at`).
            // In maintenance: its window's end, from the side table
            // (`due_of`, which has the slot).
            HostState::Left
            | HostState::Paused
            | HostState::Unreachable
            | HostState::Maintenance => None,
        }
    }

    /// [`Monitor::due`] of the host in `slot`, but none while its probes
    /// are out, and later when they ended short of confirming it (they
    /// decide when it is `down`: see `probe`).
    pub(super) fn due_of(&self, slot: Slot) -> Option<u64> {
        let host = self.registry.get(slot);
        if host.state == HostState::Maintenance {
            return self.maintenance.end_of(slot);
        }
        if host.state == HostState::Late {
            if self.probe_holds(slot) {
                return None;
            }
            if let Some(silence) = self.unconfirmed_silence(slot) {
                let from = self.counted_from(host);
                return Some(from.saturating_add(super::millis(silence, true)));
            }
        }
        self.due(host)
    }

    /// Queues the host's deadline if it has none queued or its true deadline
    /// is now earlier than the queued one; a later one is left to surface.
    pub(super) fn reschedule_if_earlier(&mut self, slot: Slot) {
        let due = self.due_at(slot).map(|ms| self.queue.tick(ms));
        let host = self.registry.get_mut(slot);
        match due {
            Some(due) if host.scheduled != 0 && due >= host.scheduled => {}
            Some(due) => {
                host.scheduled = due;
                self.queue.push(due, slot);
            }
            None => host.scheduled = 0,
        }
    }

    /// Requeues every host's deadline with tick 0 just before `now_ms`: for
    /// a stall, and before queue ticks could overflow. O(hosts), and rare.
    pub(super) fn rebuild_queue(&mut self, now_ms: u64) {
        self.queue.reset(now_ms);
        for slot in 0..self.registry.slot_end() {
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue; // freed by a forget
            };
            host.scheduled = 0;
            self.reschedule_if_earlier(slot);
        }
    }
}
