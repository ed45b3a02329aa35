//! Per-host beat statistics, from what the packets already carry: sequence
//! gaps (loss), late and repeated sequence numbers (reordering, duplicates),
//! arrival rhythm (mean and deviation of the time per beat) and clock offset
//! (receive time minus the client's send time).
//!
//! Compact on purpose (a million hosts must fit in memory): no sample
//! window, only exponentially weighted moving averages (EWMA) in `f32` and a
//! 32-bit bitmap of the sequence numbers just below the highest one seen.
//! The EWMA weight is `alpha = 2 / (window + 1)`, the usual mapping from a
//! sample window to an EWMA of the same centre of mass.

/// A sequence number this far (either way) from the highest one seen is a
/// new client run, not a gap: a restart moves the high half (the start time
/// in seconds) by at least one, i.e. by ~2^32.
pub const MAX_RUN_GAP: u64 = 1 << 24;

/// How many sequence numbers below the highest one are remembered, to tell
/// a reordered beat (first seen now) from a duplicate (seen before).
pub const REORDER_WINDOW: u64 = 32;

/// What one sequence number says, relative to what was seen before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOutcome {
    /// Above the highest seen: `lost` beats in between never arrived (yet).
    Next {
        /// Sequence numbers skipped.
        lost: u64,
    },
    /// Below the highest seen, not seen before: a beat overtaken by a later
    /// one. It had been counted lost; it is not.
    Reordered,
    /// Seen before (the network or a relay repeated it).
    Duplicate,
    /// Far from the highest seen: the client restarted.
    NewRun,
}

/// Classifies `seq` against the highest sequence number seen (`highest`)
/// and the bitmap of the [`REORDER_WINDOW`] numbers below it (`recent`, bit
/// `i`: `highest - 1 - i` arrived), and updates both. Arithmetic wraps, so
/// the beat counter (low 32 bits) carrying into the start time, or the
/// whole `u64` wrapping, is a gap like any other.
pub fn track_seq(highest: &mut u64, recent: &mut u32, seq: u64) -> SeqOutcome {
    let ahead = seq.wrapping_sub(*highest);
    let behind = highest.wrapping_sub(seq);
    if ahead == 0 {
        SeqOutcome::Duplicate
    } else if ahead < MAX_RUN_GAP {
        // The old highest is now `ahead - 1` below the new one.
        *recent = if ahead > REORDER_WINDOW {
            0
        } else {
            let shifted = u32::try_from((u64::from(*recent) << ahead) & u64::from(u32::MAX))
                .expect("masked to 32 bits");
            shifted | (1 << (ahead - 1))
        };
        *highest = seq;
        SeqOutcome::Next { lost: ahead - 1 }
    } else if behind < MAX_RUN_GAP {
        if behind > REORDER_WINDOW {
            // Too old to remember: count it as late rather than repeated,
            // since repeats come right after the original.
            return SeqOutcome::Reordered;
        }
        let bit = 1u32 << (behind - 1);
        if *recent & bit != 0 {
            SeqOutcome::Duplicate
        } else {
            *recent |= bit;
            SeqOutcome::Reordered
        }
    } else {
        *highest = seq;
        *recent = 0;
        SeqOutcome::NewRun
    }
}

/// The statistics of one host: 28 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeatStats {
    /// EWMA of the time per beat, in milliseconds: the time between two
    /// arrivals divided by the sequence steps between them, so lost beats
    /// do not stretch it.
    pub interval_mean_ms: f32,
    /// EWMA variance of the time per beat, in ms².
    pub interval_var_ms2: f32,
    /// EWMA of the share of beats lost (0 to 1), from sequence gaps.
    pub loss_rate: f32,
    /// EWMA of receive time minus the client's send time, in milliseconds:
    /// the client's clock offset plus the one-way network delay.
    pub clock_offset_ms: f32,
    /// Beats received more than once.
    pub duplicates: u32,
    /// Beats that arrived after a later one.
    pub reordered: u32,
    /// Bit `i`: sequence number `highest - 1 - i` has arrived.
    pub recent: u32,
}

impl BeatStats {
    /// Fresh statistics, assuming the rhythm the client declares (or
    /// `interval_ms`, whatever the caller best knows) with a deviation of a
    /// quarter of it, as Akka's phi detector starts out.
    pub fn new(interval_ms: f32) -> Self {
        Self {
            interval_mean_ms: interval_ms,
            interval_var_ms2: (interval_ms / 4.0).powi(2),
            loss_rate: 0.0,
            clock_offset_ms: f32::NAN,
            duplicates: 0,
            reordered: 0,
            recent: 0,
        }
    }

    /// Standard deviation of the time per beat, in milliseconds.
    pub fn interval_std_ms(&self) -> f32 {
        self.interval_var_ms2.max(0.0).sqrt()
    }

    /// Adds one arrival-rhythm sample: `elapsed_ms` since the previous
    /// arrival, spanning `steps` sequence numbers (1 when none was lost).
    pub fn add_interval(&mut self, elapsed_ms: f32, steps: u64, alpha: f32) {
        let sample = elapsed_ms / steps.max(1) as f32;
        let diff = sample - self.interval_mean_ms;
        self.interval_mean_ms += alpha * diff;
        // West's incremental EW variance: unbiased for a constant alpha.
        self.interval_var_ms2 = (1.0 - alpha) * (self.interval_var_ms2 + alpha * diff * diff);
    }

    /// Adds `lost` lost beats followed by one received beat to the loss
    /// rate (closed form of `lost` + 1 EWMA steps).
    pub fn add_losses(&mut self, lost: u64, alpha: f32) {
        let keep = 1.0 - alpha;
        let lost = i32::try_from(lost).unwrap_or(i32::MAX);
        self.loss_rate = 1.0 - (1.0 - self.loss_rate) * keep.powi(lost);
        self.loss_rate *= keep;
    }

    /// Adds a clock-offset sample (receive minus send time, ms).
    pub fn add_clock_offset(&mut self, offset_ms: f32, alpha: f32) {
        if self.clock_offset_ms.is_nan() {
            self.clock_offset_ms = offset_ms;
        } else {
            self.clock_offset_ms += alpha * (offset_ms - self.clock_offset_ms);
        }
    }

    /// The clock offset, once a beat carried a send time.
    pub fn clock_offset(&self) -> Option<f32> {
        (!self.clock_offset_ms.is_nan()).then_some(self.clock_offset_ms)
    }
}

/// The EWMA weight for a sample window of `window` beats.
pub fn alpha_for_window(window: u32) -> f32 {
    2.0 / (window.max(1) as f32 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> Vec<SeqOutcome> {
        let (mut highest, mut recent) = (seqs[0], 0);
        seqs[1..]
            .iter()
            .map(|&s| track_seq(&mut highest, &mut recent, s))
            .collect()
    }

    fn lost(n: u64) -> SeqOutcome {
        SeqOutcome::Next { lost: n }
    }

    #[test]
    fn gaps_are_losses_and_late_arrivals_are_reordering() {
        use SeqOutcome::*;
        assert_eq!(
            run(&[10, 11, 14, 13, 13, 12, 15, 14, 11]),
            [
                lost(0),
                lost(2),
                Reordered,
                Duplicate,
                Reordered,
                lost(0),
                Duplicate,
                Duplicate
            ]
        );
    }

    #[test]
    fn losses_across_the_counter_wrap_and_the_u64_wrap() {
        let run_start = 1_700_000_000u64 << 32;
        // The beat counter carries into the high half: still one run.
        let before = run_start | 0xffff_fffe;
        assert_eq!(run(&[before, before + 3]), [lost(2)]);
        // The whole u64 wraps.
        assert_eq!(run(&[u64::MAX - 1, u64::MAX, 1]), [lost(0), lost(1)]);
        // ... and a beat from before the wrap arrives late.
        assert_eq!(
            run(&[u64::MAX - 1, 1, u64::MAX]),
            [lost(2), SeqOutcome::Reordered]
        );
    }

    #[test]
    fn a_restart_is_a_new_run_not_a_gap() {
        let first = (1_700_000_000u64 << 32) + 500;
        let restarted = 1_700_000_100u64 << 32;
        assert_eq!(run(&[first, restarted]), [SeqOutcome::NewRun]);
        // A restart whose clock went backwards is also a new run.
        assert_eq!(run(&[restarted, first]), [SeqOutcome::NewRun]);
    }

    #[test]
    fn very_late_beats_beyond_the_window_count_as_reordered() {
        let mut seqs: Vec<u64> = (100..200).collect();
        seqs.push(101);
        assert_eq!(run(&seqs).last(), Some(&SeqOutcome::Reordered));
    }

    #[test]
    fn ewma_interval_and_loss_rate() {
        let mut stats = BeatStats::new(1000.0);
        assert_eq!(stats.interval_std_ms(), 250.0);
        let alpha = alpha_for_window(3); // 0.5
        assert_eq!(alpha, 0.5);
        // 2000 ms over 2 steps is one beat per 1000 ms: mean unchanged.
        stats.add_interval(2000.0, 2, alpha);
        assert_eq!(stats.interval_mean_ms, 1000.0);
        assert_eq!(stats.interval_var_ms2, 0.5 * 62_500.0);
        // A 1200 ms beat: mean 1100, var = 0.5 * (31250 + 0.5 * 200²) = 25625.
        stats.add_interval(1200.0, 1, alpha);
        assert_eq!(stats.interval_mean_ms, 1100.0);
        assert_eq!(stats.interval_var_ms2, 25_625.0);

        // One lost then one received, alpha 0.5: p = 0.5 (lost), then 0.25.
        stats.add_losses(1, alpha);
        assert_eq!(stats.loss_rate, 0.25);
        stats.add_losses(0, alpha);
        assert_eq!(stats.loss_rate, 0.125);
    }

    #[test]
    fn clock_offset_starts_at_the_first_sample() {
        let mut stats = BeatStats::new(1000.0);
        assert_eq!(stats.clock_offset(), None);
        stats.add_clock_offset(-40.0, 0.5);
        stats.add_clock_offset(-20.0, 0.5);
        assert_eq!(stats.clock_offset(), Some(-30.0));
    }

    #[test]
    fn stats_stay_compact() {
        assert_eq!(std::mem::size_of::<BeatStats>(), 28);
    }
}
