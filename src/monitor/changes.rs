//! What the store's next checkpoint must write: the hosts changed since the
//! last one (joined, changed state, paused...), the hosts that only beat,
//! and the ids forgotten; and the way back, restoring remembered hosts.
//!
//! Marking is on the ingest hot path (once per beat), so it is one bit set:
//! no hashing, no allocation once the set has grown to the fleet's size.
//! One bit per host and no list: a list of changed slots would cost 4 bytes
//! per host at a checkpoint of the whole fleet, a scan of the bits at a
//! checkpoint costs well under a millisecond for a million hosts.

use super::Monitor;
use super::registry::{Host, Slot};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

/// The checkpoint bookkeeping the monitor keeps.
#[derive(Default)]
pub(super) struct Changes {
    /// Hosts changed since the store's last checkpoint: written at the
    /// next checkpoint, which events trigger at once.
    dirty: DirtySet,
    /// Hosts that only beat since the store's last full checkpoint (new
    /// last-seen time, seq and counters): written at the periodic ones.
    beaten: DirtySet,
    /// Ids forgotten since the store's last checkpoint, to delete there.
    forgotten: Vec<Box<str>>,
}

impl Changes {
    /// Marks `slot` changed.
    pub(super) fn mark(&mut self, slot: Slot) {
        self.dirty.mark(slot);
    }

    /// Marks `slot` as having only beaten.
    pub(super) fn mark_beaten(&mut self, slot: Slot) {
        self.beaten.mark(slot);
    }

    /// Records that `id` was forgotten.
    pub(super) fn forget(&mut self, id: &str) {
        self.forgotten.push(id.into());
    }
}

/// Persistence: restoring remembered hosts and handing changed hosts to the
/// store.
impl Monitor {
    /// Adds a host remembered by the store, as it was, restored at `now`,
    /// and schedules its next deadline: its silence counts from `now` at the
    /// earliest, so an `up` or `late` host gets one full timeout (the server
    /// was away, not the host). Not marked dirty: the store already has it.
    pub fn restore(&mut self, mut host: Host, id: &str, addr: SocketAddr, now: Instant) -> Slot {
        self.restored_at = self.restored_at.max(self.clock.ms(now));
        // Learnt rhythms are not stored: they are learnt again.
        host.stats = self.fresh_stats(host.interval_ms());
        host.rule = self.settings.rules.index_for(id);
        host.scheduled = 0;
        let state = host.state;
        let slot = match self.registry.find(id) {
            Some(slot) => {
                let now_ms = self.clock.ms(now);
                self.untie(slot, now_ms, SystemTime::UNIX_EPOCH);
                self.release_labels(slot);
                let old = self.registry.replace(slot, host, addr);
                super::count_move(&mut self.counts, old.state, state);
                if old.flap.flapping {
                    self.totals.flapping = self.totals.flapping.saturating_sub(1);
                }
                slot
            }
            None => {
                self.counts[state.index()] += 1;
                self.registry.insert(host, id, addr)
            }
        };
        self.relabel(slot);
        // Quietly: the state at start is no change (restored `unreachable`
        // hosts get one fresh timeout, like every remembered host).
        self.tie(slot, false, self.clock.ms_ceil(now), SystemTime::UNIX_EPOCH);
        self.reschedule_if_earlier(slot);
        slot
    }

    /// The hosts changed since the last call, each once, and with `beats`
    /// also those that only beat; they count as clean from now on (a host
    /// that changes or beats again is marked again).
    pub fn take_dirty(&mut self, beats: bool) -> Vec<Slot> {
        let changes = &mut self.changes;
        let mut slots = changes.dirty.take();
        // A changed host is written whole: its beats are written with it.
        for &slot in &slots {
            changes.beaten.unmark(slot);
        }
        if beats {
            slots.extend(changes.beaten.take());
        }
        slots
    }

    /// The ids forgotten since the last call, for the store to delete.
    pub fn take_forgotten(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.changes.forgotten)
    }

    /// Puts back ids a failed checkpoint did not delete.
    pub fn unforget(&mut self, ids: Vec<Box<str>>) {
        self.changes.forgotten.extend(ids);
    }

    /// Marks a host changed again (a checkpoint that failed to write it).
    pub fn mark_dirty(&mut self, slot: Slot) {
        if self.registry.try_get(slot).is_some() {
            self.changes.dirty.mark(slot);
        }
    }

    /// How many hosts are waiting for a checkpoint (a host that both beat
    /// and changed may count twice).
    pub fn dirty_len(&self) -> usize {
        self.changes.dirty.len() + self.changes.beaten.len()
    }
}

/// Slots changed since the last [`DirtySet::take`].
#[derive(Default)]
pub struct DirtySet {
    bits: Vec<u64>,
    len: usize,
}

impl DirtySet {
    /// Marks `slot` changed.
    pub fn mark(&mut self, slot: Slot) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.len += 1;
        }
    }

    /// The changed slots, in slot order; the set is empty after.
    pub fn take(&mut self) -> Vec<Slot> {
        let mut slots = Vec::with_capacity(self.len);
        for (word, bits) in self.bits.iter_mut().enumerate() {
            let mut rest = std::mem::take(bits);
            while rest != 0 {
                let bit = rest.trailing_zeros();
                slots.push((word * 64) as Slot + bit);
                rest &= rest - 1;
            }
        }
        self.len = 0;
        slots
    }

    /// Unmarks `slot` (written by other means).
    pub fn unmark(&mut self, slot: Slot) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if let Some(bits) = self.bits.get_mut(word)
            && *bits & bit != 0
        {
            *bits &= !bit;
            self.len -= 1;
        }
    }

    /// How many slots are marked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_once_until_taken() {
        let mut set = DirtySet::default();
        for slot in [3, 200, 3, 64, 200, 0] {
            set.mark(slot);
        }
        assert_eq!(set.len(), 4);
        assert_eq!(set.take(), [0, 3, 64, 200]);
        assert!(set.is_empty());
        set.mark(200);
        assert_eq!(set.take(), [200], "a taken slot can be marked again");
        set.mark(5);
        set.mark(7);
        set.unmark(5);
        set.unmark(9);
        assert_eq!((set.len(), set.take()), (1, vec![7]));
    }
}
