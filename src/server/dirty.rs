//! The set of hosts changed since the store's last checkpoint.
//!
//! Marking is on the ingest hot path (once per beat), so it is a bit test and
//! at most one push: no hashing, no allocation once the set has grown to the
//! fleet's size. Taking the set hands back each changed slot once.

use super::registry::Slot;

/// Slots changed since the last [`DirtySet::take`], each listed once.
#[derive(Default)]
pub struct DirtySet {
    bits: Vec<u64>,
    list: Vec<Slot>,
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
            self.list.push(slot);
        }
    }

    /// The changed slots, in the order first marked; the set is empty after.
    pub fn take(&mut self) -> Vec<Slot> {
        for &slot in &self.list {
            self.bits[slot as usize / 64] &= !(1u64 << (slot % 64));
        }
        std::mem::take(&mut self.list)
    }

    /// How many slots are marked.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
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
        assert_eq!(set.take(), [3, 200, 64, 0]);
        assert!(set.is_empty());
        set.mark(200);
        assert_eq!(set.take(), [200], "a taken slot can be marked again");
    }
}
