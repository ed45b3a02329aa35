//! Per-host beat statistics, from what the packets already carry: sequence
//! gaps (loss), late and repeated sequence numbers (reordering, duplicates),
//! arrival rhythm (mean and deviation of the time per beat) and clock offset
//! (receive time minus the client's send time).
//!
//! Compact on purpose (a million hosts must fit in memory): no sample
//! window, only exponentially weighted moving averages (EWMA) in `f32`; the
//! reordering window is the host's replay bitmap (32 of its 64 bits).
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

/// Weight (in samples) of the prior guess for the burst rate.
pub const BURST_PRIOR_SAMPLES: f64 = 20.0;

/// Loss samples (beats) over which a new host's prior for its burst rate
/// fades from the fleet's to independent loss: 6 hours of 10 s beats.
pub const YOUNG_SAMPLES: f64 = 2160.0;

/// A host speaks for the fleet's bursts once this many beats settled its
/// loss rate (its prior then weighs under 5 %, and only ever lowers what
/// it teaches).
pub const SETTLED_BEATS: u16 = 20;

/// The beats of a run of losses that teach the fleet (see
/// [`FleetLoss::observe`]).
pub const RUN_SAMPLES: u64 = 16;

/// A gap of more lost beats is an outage, not a burst: it never teaches
/// the fleet (the replay window's width).
pub const MAX_BURST_GAP: u64 = 64;

/// Burst samples (beats after a lost one) before
/// [`FleetLoss::burst_excess`] is trusted: about 25 runs of losses.
pub const FLEET_BURST_SAMPLES: u32 = 100;

/// Probe samples before [`FleetLoss::probe_next`] is trusted.
pub const PROBE_RUN_SAMPLES: u32 = 100;

/// Weight of one sample in [`FleetLoss`], once warm.
const FLEET_ALPHA: f64 = 1.0 / 1024.0;

/// What the fleet's hosts showed of their loss, where a new host's loss
/// model starts. A new host has shown no runs of losses yet, so alone it
/// looks independent; on links that lose in bursts its first bursts then
/// look like death (a simulated bursty fleet paged about once per host, in
/// its first hours, docs/DETECTION.md). The fleet has seen those links
/// before, and a fleet that starts all at once sees them within minutes:
/// every run of losses of every host teaches it. Fleet-wide, so no
/// per-host memory; kept in the store (32 bytes), so a restart keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FleetLoss {
    /// EWMA, over the fleet's burst samples (each beat after a lost one,
    /// lost or not), of how far that beat's loss exceeds its host's loss
    /// rate: the burst rate's excess over the loss rate, 0 for independent
    /// loss however lossy, pooled so that hosts that lose more weigh more.
    pub excess: f64,
    samples: u32,
    /// EWMA of the chance that a probe to a live host goes unanswered
    /// after one that did (one sample per probe of a suspicion that ended
    /// with the host beating again; its closing sample is the answer or
    /// the beat that ended it): inside a burst, far above what the beats'
    /// burst rate says, since probes follow each other within a second
    /// where beats are 10 s apart.
    pub probe_next: f64,
    probe_samples: u32,
}

impl FleetLoss {
    /// A fleet whose hosts' burst rate exceeds their loss rate
    /// by `excess` and whose live hosts left `probe_next` of the probes
    /// after an unanswered one unanswered (the simulator's "established
    /// fleet").
    pub fn with(excess: f64, probe_next: f64) -> Self {
        Self {
            excess: excess.clamp(-1.0, 1.0),
            samples: u32::MAX,
            probe_next: probe_next.clamp(0.0, 1.0),
            probe_samples: u32::MAX,
        }
    }

    /// How far the hosts' burst rate exceeds their loss rate, once enough
    /// runs of losses showed it.
    pub fn burst_excess(&self) -> Option<f64> {
        (self.samples >= FLEET_BURST_SAMPLES).then_some(self.excess)
    }

    /// The chance that a probe goes unanswered after an unanswered one,
    /// once enough suspicions of live hosts showed it.
    pub fn probe_run(&self) -> Option<f64> {
        (self.probe_samples >= PROBE_RUN_SAMPLES).then_some(self.probe_next)
    }

    /// Takes in a suspicion of a live host that left `unanswered` probes
    /// unanswered in a row before a beat came back: `unanswered - 1`
    /// probes went unanswered after an unanswered one, and then one did
    /// not (at most 255 steps).
    pub fn observe_probes(&mut self, unanswered: u8) {
        for _ in 1..unanswered {
            self.probe_sample(1.0);
        }
        if unanswered > 0 {
            self.probe_sample(0.0);
        }
    }

    fn probe_sample(&mut self, unanswered: f64) {
        self.probe_samples = self.probe_samples.saturating_add(1);
        let alpha = (1.0 / f64::from(self.probe_samples)).max(FLEET_ALPHA);
        self.probe_next += alpha * (unanswered - self.probe_next);
    }

    /// Takes in a run of `lost` lost beats of a host whose statistics,
    /// before the run, are `stats`: each lost beat of the run was followed
    /// by a lost one, but the last, followed by the beat that ended it;
    /// each sample against the host's loss rate. Only the first
    /// [`RUN_SAMPLES`] beats of a run count (a longer run adds that many
    /// samples of a beat lost after a lost one and no arrival), so one
    /// packet with a seq jump weighs at most that much, and the chance that
    /// a run goes on is still measured without bias where a detector
    /// needs it, in the first beats. Nothing until the host's loss rate has
    /// settled (the caller passes only runs of a watched host no longer
    /// than [`MAX_BURST_GAP`]).
    pub fn observe(&mut self, lost: u64, stats: &BeatStats) {
        if lost == 0 || stats.samples[1] < SETTLED_BEATS {
            return;
        }
        let loss_rate = f64::from(stats.loss_rate);
        for _ in 1..lost.min(RUN_SAMPLES + 1) {
            self.burst_sample(1.0 - loss_rate);
        }
        if lost <= RUN_SAMPLES {
            self.burst_sample(-loss_rate);
        }
    }

    fn burst_sample(&mut self, excess: f64) {
        self.samples = self.samples.saturating_add(1);
        let alpha = (1.0 / f64::from(self.samples)).max(FLEET_ALPHA);
        self.excess += alpha * (excess - self.excess);
    }

    /// The four figures the store keeps: excess and probe run (as `f64`
    /// bits) and their sample counts.
    pub fn to_parts(&self) -> [u64; 4] {
        [
            self.excess.to_bits(),
            u64::from(self.samples),
            self.probe_next.to_bits(),
            u64::from(self.probe_samples),
        ]
    }

    /// The fleet the store kept as `parts` ([`Self::to_parts`]); figures
    /// out of range (a damaged or foreign store) are nothing learnt.
    pub fn from_parts(parts: [u64; 4]) -> Self {
        let [excess, samples, probe_next, probe_samples] = parts;
        let figure = |bits: u64, range: std::ops::RangeInclusive<f64>, n: u64| {
            let value = f64::from_bits(bits);
            match u32::try_from(n) {
                Ok(n) if range.contains(&value) => (value, n),
                _ => (0.0, 0),
            }
        };
        let (excess, samples) = figure(excess, -1.0..=1.0, samples);
        let (probe_next, probe_samples) = figure(probe_next, 0.0..=1.0, probe_samples);
        Self {
            excess,
            samples,
            probe_next,
            probe_samples,
        }
    }
}

/// The statistics of one host: 30 bytes. Packed to 2-byte alignment, so
/// the host record has no padding around it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, packed(2))]
pub struct BeatStats {
    /// EWMA of the time per beat, in milliseconds: the time between two
    /// arrivals divided by the sequence steps between them, so lost beats
    /// do not stretch it.
    pub interval_mean_ms: f32,
    /// EWMA variance of the time per beat, in ms².
    pub interval_var_ms2: f32,
    /// EWMA of the chance that a beat is lost when the one before arrived
    /// (0 to 1), from sequence gaps: the loss rate, for independent loss.
    pub loss_rate: f32,
    /// EWMA of receive time minus the client's send time, in milliseconds:
    /// the client's clock offset plus the one-way network delay.
    pub clock_offset_ms: f32,
    /// Beats received more than once (saturating).
    pub duplicates: u16,
    /// Beats that arrived after a later one (saturating).
    pub reordered: u16,
    /// EWMA of the chance that a beat is lost when the one before was lost
    /// too: near `loss_rate` for independent loss, far above it in bursts.
    pub burst_loss_rate: f32,
    /// Samples taken into the rhythm, the loss rate and the burst loss
    /// rate (saturating): until a window's worth, each average is the plain
    /// mean of the samples and the prior, so a new host's estimates settle
    /// in a few beats instead of a few windows.
    pub samples: [u16; 3],
}

impl BeatStats {
    /// Fresh statistics, assuming the rhythm the client declares (or
    /// `interval_ms`, whatever the caller best knows) with a deviation of a
    /// quarter of it, as Akka's phi detector starts out.
    pub fn new(interval_ms: f32) -> Self {
        Self {
            interval_mean_ms: interval_ms,
            interval_var_ms2: (interval_ms / 4.0).powi(2),
            clock_offset_ms: f32::NAN,
            duplicates: 0,
            reordered: 0,
            // Uninformed prior: cautious until the host has shown its loss.
            // The burst rate has none of its own: until bursts are seen,
            // loss() takes the fleet's, or losses as independent.
            loss_rate: 0.5,
            burst_loss_rate: 0.0,
            samples: [0; 3],
        }
    }

    /// Standard deviation of the time per beat, in milliseconds.
    pub fn interval_std_ms(&self) -> f32 {
        self.interval_var_ms2.max(0.0).sqrt()
    }

    /// Adds one arrival-rhythm sample: `elapsed_ms` since the previous
    /// arrival, spanning `steps` sequence numbers (1 when none was lost).
    pub fn add_interval(&mut self, elapsed_ms: f32, steps: u64, alpha: f32) {
        let alpha = self.warm(0, alpha);
        let sample = elapsed_ms / steps.max(1) as f32;
        let diff = sample - self.interval_mean_ms;
        self.interval_mean_ms += alpha * diff;
        // West's incremental EW variance: unbiased for a constant alpha.
        self.interval_var_ms2 = (1.0 - alpha) * (self.interval_var_ms2 + alpha * diff * diff);
    }

    /// Adds a run of `lost` lost beats followed by one received beat:
    /// after the previous arrival, the next beat was lost (or not), and in
    /// a run of losses, `lost - 1` beats followed a lost one and were lost,
    /// and the one ending the run followed a lost one and arrived (closed
    /// form of those EWMA steps).
    pub fn add_losses(&mut self, lost: u64, alpha: f32) {
        let started = if lost > 0 { 1.0 } else { 0.0 };
        let a = self.warm(1, alpha);
        self.loss_rate += a * (started - self.loss_rate);
        if lost > 0 {
            // Step by step while warming up (few steps), then in closed form.
            let mut more = lost - 1;
            while more > 0 && self.samples[2] < u16::MAX {
                let a = self.warm(2, alpha);
                self.burst_loss_rate += a * (1.0 - self.burst_loss_rate);
                more -= 1;
                if a <= alpha {
                    break;
                }
            }
            let keep = 1.0 - alpha;
            let more = i32::try_from(more).unwrap_or(i32::MAX);
            self.burst_loss_rate = 1.0 - (1.0 - self.burst_loss_rate) * keep.powi(more);
            let a = self.warm(2, alpha);
            self.burst_loss_rate *= 1.0 - a;
        }
    }

    /// The EWMA weight for estimate `which`, counting one more sample: the
    /// plain mean of the samples until it falls to `alpha` (the burst
    /// rate, which has no prior, starts at its first sample).
    fn warm(&mut self, which: usize, alpha: f32) -> f32 {
        let n = &mut self.samples[which];
        *n = n.saturating_add(1);
        let prior = if which == 2 { 0.0 } else { 1.0 };
        alpha.max(1.0 / (f32::from(*n) + prior))
    }

    /// How new the host still is, 1 to 0 over its first [`YOUNG_SAMPLES`]
    /// beats: the share the fleet's averages keep in its loss model.
    pub fn youth(&self) -> f64 {
        (1.0 - f64::from(self.samples[1]) / YOUNG_SAMPLES).max(0.0)
    }

    /// The loss model the phi detector and the probes use, in a fleet
    /// whose hosts' burst rate exceeds their loss rate by
    /// `fleet_excess`. Few burst samples say little, so the burst rate is
    /// shrunk, with the weight of [`BURST_PRIOR_SAMPLES`] samples, toward a
    /// prior: the host's plain loss rate (independent loss) plus, for a new
    /// host, the fleet's excess, fading over [`YOUNG_SAMPLES`] beats, since
    /// a host that long without a run of losses has shown its link is not
    /// the fleet's. While young, it never falls below that prior.
    pub fn loss(&self, fleet_excess: f64) -> super::phi::Loss {
        let n = f64::from(self.samples[2]);
        let k = BURST_PRIOR_SAMPLES;
        let first = f64::from(self.loss_rate);
        let lift = (self.youth() * fleet_excess.max(0.0)).min(1.0 - first);
        let shrunk = (n * f64::from(self.burst_loss_rate) + k * (first + lift)) / (n + k);
        // A young host's own few runs, often short, must not talk it out
        // of the fleet's bursts either.
        let floor = if lift > 0.0 { first + lift } else { 0.0 };
        super::phi::Loss {
            first,
            next: shrunk.max(floor),
        }
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
        stats.samples = [u16::MAX; 3]; // warmed up: plain EWMA from here
        stats.loss_rate = 0.0;
        stats.burst_loss_rate = 0.0;
        assert_eq!(stats.interval_std_ms(), 250.0);
        let alpha = alpha_for_window(3); // 0.5
        assert_eq!(alpha, 0.5);
        // 2000 ms over 2 steps is one beat per 1000 ms: mean unchanged.
        stats.add_interval(2000.0, 2, alpha);
        assert_eq!({ stats.interval_mean_ms }, 1000.0);
        assert_eq!({ stats.interval_var_ms2 }, 0.5 * 62_500.0);
        // A 1200 ms beat: mean 1100, var = 0.5 * (31250 + 0.5 * 200²) = 25625.
        stats.add_interval(1200.0, 1, alpha);
        assert_eq!({ stats.interval_mean_ms }, 1100.0);
        assert_eq!({ stats.interval_var_ms2 }, 25_625.0);

        // Arrival, loss, arrival (alpha 0.5): a loss after an arrival (p1 =
        // 0.5), an arrival after a loss (p2 = 0). Then three lost in a row:
        // p1 = 0.75; p2 sees lost, lost, arrived: 0.5, 0.75, 0.375.
        stats.add_losses(1, alpha);
        assert_eq!(({ stats.loss_rate }, { stats.burst_loss_rate }), (0.5, 0.0));
        stats.add_losses(3, alpha);
        assert_eq!(
            ({ stats.loss_rate }, { stats.burst_loss_rate }),
            (0.75, 0.375)
        );
        stats.add_losses(0, alpha);
        assert_eq!(
            ({ stats.loss_rate }, { stats.burst_loss_rate }),
            (0.375, 0.375)
        );
    }

    #[test]
    fn new_hosts_average_until_a_window_is_full() {
        let mut stats = BeatStats::new(1000.0);
        let alpha = alpha_for_window(1000);
        // Prior 0.5 plus 9 arrivals without loss: 0.5 / 10.
        for _ in 0..9 {
            stats.add_losses(0, alpha);
        }
        let loss_rate = stats.loss_rate;
        assert!((loss_rate - 0.05).abs() < 1e-6, "{loss_rate}");
        // Prior 1000 ms plus 1200 ms: 1100.
        stats.add_interval(1200.0, 1, alpha);
        assert_eq!({ stats.interval_mean_ms }, 1100.0);
        // Bursts: lost, lost, arrived: mean of 1, 1, 0.
        assert_eq!(
            stats.loss(0.0).next,
            stats.loss(0.0).first,
            "no bursts seen"
        );
        stats.add_losses(3, alpha);
        let burst = stats.burst_loss_rate;
        assert!((burst - 2.0 / 3.0).abs() < 1e-6, "{burst}");
        // Shrunk toward the loss rate with 20 samples' weight against 3.
        let loss = stats.loss(0.0);
        let want = (3.0 * 2.0 / 3.0 + 20.0 * loss.first) / 23.0;
        assert!((loss.next - want).abs() < 1e-6, "{loss:?}");
    }

    #[test]
    fn a_new_host_starts_from_the_fleets_burst_rate_and_outgrows_it() {
        let alpha = alpha_for_window(1000);
        // (beats without a loss, burst samples from one run, fleet) → next
        let young = |beats: usize, run: u64, fleet: f64| {
            let mut stats = BeatStats::new(1000.0);
            for _ in 0..beats {
                stats.add_losses(0, alpha);
            }
            if run > 0 {
                stats.add_losses(run, alpha);
            }
            let loss = stats.loss(fleet);
            (loss.first, loss.next)
        };
        // No fleet: independent, as before.
        let (first, next) = young(99, 0, 0.0);
        assert!((next - first).abs() < 1e-9, "{first} {next}");
        // A new host in a bursty fleet: its loss rate plus the fleet's
        // excess, as the host ages.
        let (first, next) = young(99, 0, 0.5);
        let youth = 1.0 - 99.0 / YOUNG_SAMPLES;
        let want = first + youth * 0.5;
        assert!((next - want).abs() < 1e-6, "{next} {want}");
        // Six hours without a run of losses: its own link, independent.
        let (first, next) = young(2160, 0, 0.5);
        assert!((next - first).abs() < 1e-9, "{first} {next}");
        // A fleet whose runs are shorter than independent loss makes them
        // never lowers a host's burst rate.
        let (first, next) = young(99, 0, -0.1);
        assert!((next - first).abs() < 1e-9, "{first} {next}");
        // Its own runs of losses outweigh the prior as they come.
        let (_, with_run) = young(99, 10, 0.5);
        assert!(with_run > 0.5, "{with_run}");
    }

    #[test]
    fn the_fleet_learns_from_every_run_of_settled_hosts() {
        let alpha = alpha_for_window(1000);
        let mut fleet = FleetLoss::default();
        // A new host's loss rate has not settled before 20 beats.
        let mut stats = BeatStats::new(1000.0);
        for _ in 1..SETTLED_BEATS {
            stats.add_losses(0, alpha);
        }
        fleet.observe(5, &stats);
        assert_eq!(fleet, FleetLoss::default());
        stats.add_losses(0, alpha);
        fleet.observe(5, &stats);
        assert_eq!(
            fleet.samples, 5,
            "a run of 5: 4 lost after a lost one, 1 not"
        );
        stats.add_losses(5, alpha);
        // Runs of 5 lost in every 20 beats: 4 of 5 burst samples lost.
        while fleet.samples < FLEET_BURST_SAMPLES - 5 {
            fleet.observe(5, &stats);
            for _ in 0..15 {
                stats.add_losses(0, alpha);
            }
            stats.add_losses(5, alpha);
        }
        assert_eq!(fleet.burst_excess(), None, "95 samples: not yet");
        for _ in 0..30 {
            fleet.observe(5, &stats);
            for _ in 0..15 {
                stats.add_losses(0, alpha);
            }
            stats.add_losses(5, alpha);
        }
        let learnt = fleet.burst_excess().expect("enough runs");
        let want = 0.8 - f64::from(stats.loss_rate);
        assert!((learnt - want).abs() < 0.05, "{learnt} vs {want}");
        // Random loss, however lossy, has no excess: single losses at a
        // loss rate of 0.3 pull it down...
        let mut random = stats;
        random.loss_rate = 0.3;
        for _ in 0..10_000 {
            fleet.observe(1, &random);
        }
        let excess = fleet.burst_excess().expect("warm");
        assert!((excess + 0.3).abs() < 1e-3, "{excess}");
        // ... and runs as long as independent loss makes them learn 0: at
        // 0.25, one burst sample in four lost.
        random.loss_rate = 0.25;
        for _ in 0..10_000 {
            fleet.observe(1, &random);
            fleet.observe(1, &random);
            fleet.observe(2, &random);
        }
        let excess = fleet.burst_excess().expect("warm");
        assert!(excess.abs() < 0.05, "{excess}");
        assert_eq!(FleetLoss::with(2.0, 0.5).excess, 1.0);
    }

    #[test]
    fn a_run_teaches_by_its_first_beats_only() {
        let mut stats = BeatStats::new(1000.0);
        stats.samples[1] = SETTLED_BEATS;
        stats.loss_rate = 0.0;
        let taught = |lost: u64| {
            let mut fleet = FleetLoss::default();
            fleet.observe(lost, &stats);
            (fleet.samples, fleet.excess)
        };
        // A run of 16: 15 lost after a lost one, then the beat that ended it.
        assert_eq!(taught(16), (16, 15.0 / 16.0));
        // Longer runs, up to a forged 64-seq jump: their first 16 beats
        // were all followed by a lost one; the rest teach nothing.
        assert_eq!(taught(17), (16, 1.0));
        assert_eq!(taught(64), (16, 1.0));
    }

    #[test]
    fn the_fleet_survives_the_store_and_nothing_else_does() {
        let mut fleet = FleetLoss::default();
        let mut stats = BeatStats::new(1000.0);
        stats.samples[1] = SETTLED_BEATS;
        stats.loss_rate = 0.05;
        for _ in 0..40 {
            fleet.observe(4, &stats);
        }
        fleet.observe_probes(120);
        let kept = FleetLoss::from_parts(fleet.to_parts());
        assert_eq!(kept, fleet);
        assert!(kept.burst_excess().is_some() && kept.probe_run().is_some());
        // Damaged figures are nothing learnt, not a fleet of NaN.
        for bad in [f64::NAN, 1.5, f64::INFINITY] {
            let mut parts = fleet.to_parts();
            parts[0] = bad.to_bits();
            parts[2] = bad.to_bits();
            let read = FleetLoss::from_parts(parts);
            assert_eq!((read.burst_excess(), read.probe_run()), (None, None));
        }
        let mut parts = fleet.to_parts();
        parts[1] = u64::MAX;
        assert_eq!(FleetLoss::from_parts(parts).burst_excess(), None);
    }

    #[test]
    fn the_fleet_learns_how_probes_go_unanswered_in_a_row() {
        let mut fleet = FleetLoss::default();
        fleet.observe_probes(0); // answered at once: no run
        assert_eq!(fleet.probe_run(), None);
        // 9 unanswered, then an answer: 8 of 9 followed an unanswered one.
        for _ in 0..12 {
            fleet.observe_probes(9);
        }
        let run = fleet.probe_run().expect("108 samples");
        assert!((run - 8.0 / 9.0).abs() < 1e-9, "{run}");
        // Single unanswered probes (random loss) pull it down.
        for _ in 0..10_000 {
            fleet.observe_probes(1);
        }
        assert!(fleet.probe_run().expect("warm") < 0.01);
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
        assert_eq!(std::mem::size_of::<BeatStats>(), 30);
    }
}
