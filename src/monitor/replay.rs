//! The per-host sequence window that makes replayed beats harmless.
//!
//! Pure functions over two numbers every [`Host`](super::registry::Host)
//! keeps: `seq`, the highest sequence number accepted, and `recent_seqs`, a
//! bitmap in which bit `i` is set when `seq - i` was received (bit 0 is `seq`
//! itself). A beat is new if its number is above `seq`, or within the 64
//! below it and not yet seen (a packet overtaken on the way); anything else
//! is a duplicate or too old, i.e. a replay when beats are signed. The same
//! scheme as IPsec's anti-replay window (RFC 4303 §3.4.3), with the client's
//! start time in the high 32 bits of the seq so that it also rises across
//! client restarts.

/// How far below the highest seq a beat may arrive late and still count.
pub const WINDOW: u64 = u64::BITS as u64;

/// Where a beat's seq falls relative to a host's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// Above the highest seq seen, by `ahead` (1: the next one).
    Newer {
        /// `seq - latest`.
        ahead: u64,
    },
    /// Below the highest, inside the window, not seen before: overtaken.
    Reordered,
    /// Seen before (bit set, or equal to the highest).
    Duplicate,
    /// Below the window: too old to tell, so refused.
    TooOld,
}

impl SeqCheck {
    /// True for a seq that was seen before or is too old to tell: with
    /// signed beats, a replay.
    pub fn is_replay(self) -> bool {
        matches!(self, SeqCheck::Duplicate | SeqCheck::TooOld)
    }
}

/// Classifies `seq` against a host's highest seq `latest` and its `recent`
/// bitmap.
pub fn check(latest: u64, recent: u64, seq: u64) -> SeqCheck {
    if seq > latest {
        return SeqCheck::Newer {
            ahead: seq - latest,
        };
    }
    let behind = latest - seq;
    if behind >= WINDOW {
        SeqCheck::TooOld
    } else if recent & (1 << behind) != 0 {
        SeqCheck::Duplicate
    } else {
        SeqCheck::Reordered
    }
}

/// Records an accepted `seq` (one that [`check`] found `Newer` or
/// `Reordered`): moves the window up, or sets the late beat's bit.
pub fn record(latest: &mut u64, recent: &mut u64, seq: u64) {
    match check(*latest, *recent, seq) {
        SeqCheck::Newer { ahead } => {
            *recent = if ahead >= WINDOW {
                1
            } else {
                (*recent << ahead) | 1
            };
            *latest = seq;
        }
        SeqCheck::Reordered => *recent |= 1 << (*latest - seq),
        SeqCheck::Duplicate | SeqCheck::TooOld => {}
    }
}

/// Starts the window afresh at `seq` (a host's first beat, or a new client
/// run on a server that does not enforce the window).
pub fn restart(latest: &mut u64, recent: &mut u64, seq: u64) {
    *latest = seq;
    *recent = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_reordered_duplicate_and_too_old() {
        let (mut latest, mut recent) = (0, 0);
        restart(&mut latest, &mut recent, 100);
        assert_eq!(check(latest, recent, 100), SeqCheck::Duplicate);
        assert_eq!(check(latest, recent, 101), SeqCheck::Newer { ahead: 1 });
        record(&mut latest, &mut recent, 101);
        record(&mut latest, &mut recent, 104); // 102 and 103 still on the way
        assert_eq!((latest, recent), (104, 0b11001));
        assert_eq!(check(latest, recent, 103), SeqCheck::Reordered);
        record(&mut latest, &mut recent, 103);
        assert_eq!(recent, 0b11011);
        assert_eq!(check(latest, recent, 103), SeqCheck::Duplicate);
        assert_eq!(check(latest, recent, 102), SeqCheck::Reordered);
        assert_eq!(check(latest, recent, 104 - 63), SeqCheck::Reordered);
        assert_eq!(check(latest, recent, 104 - 64), SeqCheck::TooOld);
        assert_eq!(check(latest, recent, 0), SeqCheck::TooOld);
        record(&mut latest, &mut recent, 104 + 200);
        assert_eq!((latest, recent), (304, 1));
        assert!(check(latest, recent, 104).is_replay());
        assert!(!check(latest, recent, u64::MAX).is_replay());
    }

    proptest! {
        /// Whatever order beats arrive in, each seq is accepted at most once.
        #[test]
        fn no_seq_is_accepted_twice(seqs in proptest::collection::vec(0u64..200, 1..300)) {
            let (mut latest, mut recent) = (0, 0);
            restart(&mut latest, &mut recent, seqs[0]);
            let mut accepted = std::collections::HashSet::from([seqs[0]]);
            for &seq in &seqs[1..] {
                if !check(latest, recent, seq).is_replay() {
                    prop_assert!(accepted.insert(seq), "seq {} accepted twice", seq);
                    record(&mut latest, &mut recent, seq);
                }
                prop_assert!(check(latest, recent, seq).is_replay());
            }
        }
    }
}
