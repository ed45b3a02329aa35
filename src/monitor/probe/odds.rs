//! The odds of probing, pure: how much one unanswered probe says against
//! a live host, how many confirm `down`, and how far apart they go.

use crate::monitor::phi::Loss;

/// What one unanswered probe says against a live host whose packets are
/// lost at rate `p` (floored at `min_loss`): `-log10` of the chance that
/// the probe or its answer is lost, the unit of phi.
fn probe_weight(p: f64, min_loss: f64) -> f64 {
    let p = p.max(min_loss).clamp(1e-9, 0.95);
    -(1.0 - (1.0 - p) * (1.0 - p)).log10()
}

/// Unanswered probes needed for `threshold`, with `first` the loss rate
/// after a received packet and `next` within a burst (each floored at
/// `min_loss`), at most `max`.
pub fn probes_needed(threshold: f64, first: f64, next: f64, min_loss: f64, max: u8) -> u8 {
    let (w1, w2) = (probe_weight(first, min_loss), probe_weight(next, min_loss));
    let rest = ((threshold - w1).max(0.0) / w2.max(1e-6)).ceil();
    (1.0 + rest).clamp(1.0, f64::from(max.max(1))) as u8
}

/// The loss a suspicion's probes assume for a host whose measured loss is
/// `loss` from `samples` loss samples: the measure, raised to what so few
/// samples cannot rule out. A host on a link that loses a fifth of its
/// packets still shows none in its first 25 beats once in 260 (0.8²⁵), and
/// trusting that would confirm it `down` after 8 unanswered probes where
/// its real loss asks for 20 (a 20 % loss simulation paged for exactly such
/// young hosts). The bound is the "rule of three", 3 / (n + 3): a loss
/// rate that n samples without a loss leave at about 5 % likelihood. It
/// fades below the 1 % floor after 300 samples.
pub fn probe_loss(loss: Loss, samples: u16) -> Loss {
    let doubt = 3.0 / (f64::from(samples) + 3.0);
    Loss {
        first: loss.first.max(doubt),
        next: loss.next.max(doubt),
    }
}

/// What `unanswered` probes in a row say against a live host (`-log10` of
/// their chance): the first weighs with the loss after an arrival, the
/// later ones with the loss within a burst, as in [`probes_needed`].
pub fn probe_evidence(unanswered: u8, first: f64, next: f64, min_loss: f64) -> f64 {
    match unanswered {
        0 => 0.0,
        n => probe_weight(first, min_loss) + f64::from(n - 1) * probe_weight(next, min_loss),
    }
}

/// How many beats longer `loss`'s runs of losses last than independent
/// loss makes them: a run lasts `1 / (1 - next)` beats on average, `1 /
/// (1 - first)` if losses were independent. 0 for random loss.
pub fn excess_run_beats(loss: Loss) -> f64 {
    let run = |p: f64| 1.0 / (1.0 - p.clamp(0.0, 0.99));
    (run(loss.next) - run(loss.first)).max(0.0)
}

/// Spacing of a suspect's probes (ms): `base_ms`, unless its loss comes in
/// bursts. Probes inside a burst share its fate, so `needed` probes 1 s
/// apart say little of a host whose bursts last a minute; they are spread
/// over `spread` times its measured burst, at most `max_ms` apart.
///
/// The burst is [`excess_run_beats`] (0 for random loss, so random loss
/// keeps `base_ms`) times the beat interval `interval_ms`.
pub fn probe_spacing(
    base_ms: u64,
    max_ms: u64,
    spread: f64,
    interval_ms: u32,
    loss: Loss,
    needed: u8,
) -> u64 {
    let burst_beats = excess_run_beats(loss);
    let window_ms = spread.max(0.0) * burst_beats * f64::from(interval_ms);
    let spread_ms = (window_ms / f64::from(needed.max(1))) as u64;
    spread_ms.clamp(base_ms, max_ms.max(base_ms))
}
