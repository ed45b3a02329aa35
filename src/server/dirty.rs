//! The set of hosts changed since the store's last checkpoint.
//!
//! Marking is on the ingest hot path (once per beat), so it is one bit set:
//! no hashing, no allocation once the set has grown to the fleet's size.
//! One bit per host and no list: a list of changed slots would cost 4 bytes
//! per host at a checkpoint of the whole fleet, a scan of the bits at a
//! checkpoint costs well under a millisecond for a million hosts.

use super::registry::Slot;

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
