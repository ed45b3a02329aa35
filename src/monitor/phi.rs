//! The phi accrual failure detector (Hayashibara et al., 2004; as in Akka
//! and Cassandra), extended with the loss rate that sequence numbers reveal.
//!
//! phi is the suspicion that a silent host is dead, on a log scale:
//! `phi(t) = -log10 P(a live host would be silent for t)`. phi 8 means a
//! live host is this silent once in 10^8 chances. The classic detector
//! models the time between arrivals as one normal distribution, which fits
//! jitter but not loss: a lost beat doubles a gap, the fitted deviation
//! balloons, and detection slows for everyone, while a host whose rhythm
//! was steady raises a false alarm on its first lost beat.
//!
//! Here the beats themselves are modelled: the client sends beat `k` at
//! `k·μ` after the last arrival (μ: the time per beat, measured per
//! sequence step, so losses do not stretch it); each arrives with
//! probability `1 - p` (p: the loss rate from sequence gaps), with normal
//! jitter σ. A live host is silent for `t` when every beat due by then was
//! lost or is still on its way:
//!
//! ```text
//! P(silent for t) = Π_k [1 - (1 - p)·Φ((t - pause - k·μ) / σ)]
//! ```
//!
//! With `p = 0` this is exactly the classic normal phi. Beats well past
//! their time contribute `p` each, so at 5 % loss each missing beat adds
//! `-log10 0.05 = 1.3` to phi: the number of beats a host may miss before
//! it is declared down follows from the threshold and its own loss rate.

/// Tuned settings of the phi detector for one host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiParams {
    /// phi at which a host is `down`.
    pub threshold: f64,
    /// phi at which a host is `late` (lower than `threshold`).
    pub late_threshold: f64,
    /// Floor of σ, in ms: a host beating like clockwork must not be
    /// declared down a few microseconds after its beat was due.
    pub min_std_ms: f64,
    /// Silence (ms) always allowed on top of the model, e.g. for GC pauses.
    pub pause_ms: f64,
    /// Floor of the loss rate: a host that has lost no beat yet may still
    /// lose one.
    pub min_loss: f64,
}

/// A host's loss, as a two-state (Gilbert) chain: losses come in bursts
/// on real networks, so the chance that a beat is lost depends on whether
/// the one before it was.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    /// P(a beat is lost | the beat before it arrived).
    pub first: f64,
    /// P(a beat is lost | the beat before it was lost too).
    pub next: f64,
}

impl Loss {
    /// Independent loss: every beat lost with probability `p`.
    pub fn random(p: f64) -> Self {
        Self { first: p, next: p }
    }
}

/// Largest phi reported: past this the number means "certainly dead" and
/// `f64` precision has run out.
pub const MAX_PHI: f64 = 300.0;

/// The standard normal CDF.
pub fn normal_cdf(y: f64) -> f64 {
    0.5 * libm::erfc(-y / std::f64::consts::SQRT_2)
}

/// `-log10(1 - Φ(y))`, accurate far into the tail.
fn neg_log10_normal_sf(y: f64) -> f64 {
    let sf = 0.5 * libm::erfc(y / std::f64::consts::SQRT_2);
    if sf > 0.0 { -sf.log10() } else { MAX_PHI }
}

/// The inverse of the standard normal CDF (Acklam's rational approximation:
/// relative error below 1.2e-9, far finer than any deadline needs; no
/// refinement step, as this runs on every beat of a phi host).
pub fn normal_quantile(q: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let q = q.clamp(1e-300, 1.0 - 1e-16);
    let tail = |r: f64| {
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if q < 0.02425 {
        tail((-2.0 * q.ln()).sqrt())
    } else if q > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - q).ln()).sqrt())
    } else {
        let s = q - 0.5;
        let r = s * s;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * s
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

impl PhiParams {
    fn sigma(&self, std_ms: f64) -> f64 {
        std_ms.max(self.min_std_ms).max(1e-3)
    }

    /// The loss rates with the floor applied, and capped so a host that
    /// loses nearly everything still gets a finite deadline.
    fn loss(&self, loss: Loss) -> (f64, f64) {
        let floor = |p: f64| p.max(self.min_loss).clamp(0.0, 0.9);
        (floor(loss.first), floor(loss.next))
    }

    /// phi after `elapsed_ms` of silence, for a host whose time per beat has
    /// mean `mean_ms` and deviation `std_ms`, and which loses beats as
    /// `loss` says (the first overdue beat at `loss.first`, each later one
    /// at `loss.next`).
    pub fn phi(&self, elapsed_ms: f64, mean_ms: f64, std_ms: f64, loss: Loss) -> f64 {
        let sigma = self.sigma(std_ms);
        let (first, next) = self.loss(loss);
        let mean = mean_ms.max(1e-3);
        let t = elapsed_ms - self.pause_ms;
        let mut phi = 0.0;
        // Without loss the next beat always comes: only it matters (the
        // classic phi). With loss, every beat due by now may be the lost one.
        let beats = if first == 0.0 { 1 } else { u64::MAX };
        // Beats more than 9σ overdue have Φ = 1 to f64 precision: each
        // adds exactly -log10 p, summed at once (a long silence would
        // otherwise cost a loop step per beat).
        let mut from = 1;
        if first > 0.0 {
            let full = ((t - 9.0 * sigma) / mean).floor();
            if full >= 1.0 {
                phi += -first.log10() + (full - 1.0) * -next.log10();
                if phi >= MAX_PHI {
                    return MAX_PHI;
                }
                from = full as u64 + 1;
            }
        }
        for k in from..=beats {
            let p = if k == 1 { first } else { next };
            let y = (t - k as f64 * mean) / sigma;
            if y < -10.0 {
                break; // this beat and all later ones are not yet due
            }
            phi += if p == 0.0 {
                neg_log10_normal_sf(y)
            } else {
                -(1.0 - (1.0 - p) * normal_cdf(y)).log10()
            };
            if phi >= MAX_PHI {
                return MAX_PHI;
            }
        }
        phi
    }

    /// Silence (ms) after which phi reaches `target`: in closed form where
    /// σ ≪ μ (beats before the last one counted are then fully due), and
    /// refined by root finding on [`PhiParams::phi`] where jitter is wide
    /// enough for overdue beats to overlap, so a host is declared at the
    /// phi it is said to have.
    pub fn silence_for(&self, target: f64, mean_ms: f64, std_ms: f64, loss: Loss) -> f64 {
        let approx = self.silence_closed_form(target, mean_ms, std_ms, loss);
        let sigma = self.sigma(std_ms);
        if sigma * 8.0 <= mean_ms || target >= MAX_PHI {
            return approx;
        }
        // phi rises with t: bracket the crossing, then regula falsi with
        // the Illinois step (superlinear: a handful of phi evaluations).
        let f = |t: f64| self.phi(t, mean_ms, std_ms, loss) - target;
        let (mut lo, mut hi) = (self.pause_ms, approx.max(self.pause_ms + mean_ms));
        let (mut f_lo, mut f_hi) = (f(lo), f(hi));
        let mut grow = 0;
        while f_hi < 0.0 && grow < 60 {
            (lo, f_lo) = (hi, f_hi);
            hi *= 2.0;
            f_hi = f(hi);
            grow += 1;
        }
        if f_lo >= 0.0 {
            return lo;
        }
        let mut side = 0;
        for _ in 0..60 {
            if hi - lo <= 0.01 {
                break;
            }
            let mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo);
            let mid = if mid > lo && mid < hi {
                mid
            } else {
                (lo + hi) / 2.0
            };
            let f_mid = f(mid);
            if f_mid.abs() < 1e-9 {
                return mid;
            }
            if f_mid < 0.0 {
                (lo, f_lo) = (mid, f_mid);
                if side == -1 {
                    f_hi /= 2.0;
                }
                side = -1;
            } else {
                (hi, f_hi) = (mid, f_mid);
                if side == 1 {
                    f_lo /= 2.0;
                }
                side = 1;
            }
        }
        hi
    }

    fn silence_closed_form(&self, target: f64, mean_ms: f64, std_ms: f64, loss: Loss) -> f64 {
        let sigma = self.sigma(std_ms);
        let (first, next) = self.loss(loss);
        let mean = mean_ms.max(1e-3);
        let target = target.min(MAX_PHI);
        // `whole`: beats that must all be lost (phi L1 for the first, L2 for
        // each later one); `rest`: phi the next one must add by being late;
        // `p`: that beat's loss probability.
        let (l1, l2) = (-first.log10(), -next.log10());
        let (whole, rest, p) = if first == 0.0 || target <= l1 {
            (0.0, target, first)
        } else {
            let whole = ((target - l1) / l2).ceil().max(1.0);
            (whole, target - l1 - (whole - 1.0) * l2, next)
        };
        // 1 - (1 - p)·Φ(y) = 10^-rest, solved through the upper tail
        // 1 - Φ(y) = -Φ⁻¹(tail), which keeps precision where Φ(y) ≈ 1.
        // When `rest` is (nearly) a whole beat's worth, the crossing is only
        // approached as this beat's factor tends to p, and the next beat
        // soon decides it: the floor (the factor within 1e-6 of p) puts the
        // deadline about 5σ after the beat instead of at infinity.
        let factor = 10f64.powf(-rest);
        let tail = (factor - p) / (1.0 - p);
        let y = -normal_quantile(tail.max(factor * 1e-6));
        self.pause_ms + (whole + 1.0) * mean + y * sigma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(min_loss: f64) -> PhiParams {
        PhiParams {
            threshold: 8.0,
            late_threshold: 3.0,
            min_std_ms: 0.0,
            pause_ms: 0.0,
            min_loss,
        }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn normal_quantile_matches_tables() {
        for (q, y) in [
            (0.5, 0.0),
            (0.9, 1.281_551_565_545),
            (0.99, 2.326_347_874_041),
            (0.975, 1.959_963_984_540),
            (1e-8, -5.612_001_244_175),
            (0.001, -3.090_232_306_168),
        ] {
            let got = normal_quantile(q);
            assert!(close(got, y, 1e-8), "Φ⁻¹({q}) = {got}, want {y}");
        }
    }

    /// One row of a phi or silence table: the input (elapsed ms, or the
    /// target phi), σ in ms, the loss, the expected value and its
    /// tolerance; the mean is always 1000 ms.
    type Row = (f64, f64, Loss, f64, f64);

    /// Checks `f(input, σ, loss)` against every row.
    fn assert_rows(rows: &[Row], f: impl Fn(f64, f64, Loss) -> f64) {
        for &(input, std, loss, want, tolerance) in rows {
            let got = f(input, std, loss);
            assert!(
                close(got, want, tolerance),
                "f({input}, σ {std}, {loss:?}) = {got}, want {want}"
            );
        }
    }

    /// [`assert_rows`] of `p.phi(elapsed, 1000, σ, loss)`.
    fn assert_phi(p: &PhiParams, rows: &[Row]) {
        assert_rows(rows, |elapsed, std, loss| p.phi(elapsed, 1000.0, std, loss));
    }

    /// [`assert_rows`] of `p.silence_for(target, 1000, σ, loss)`.
    fn assert_silence(p: &PhiParams, rows: &[Row]) {
        assert_rows(rows, |target, std, loss| {
            p.silence_for(target, 1000.0, std, loss)
        });
    }

    #[test]
    fn without_loss_it_is_the_classic_normal_phi() {
        let none = Loss::random(0.0);
        assert_phi(
            &params(0.0),
            &[
                // Hand-computed: at the mean, P(later) = 0.5, phi = log10 2.
                (1000.0, 100.0, none, 2f64.log10(), 1e-12),
                // 1.2816σ past the mean: P = 0.1, phi = 1.
                (1_128.155_16, 100.0, none, 1.0, 1e-6),
                // 2.3263σ: phi = 2; 5.612σ: phi = 8.
                (1_232.634_79, 100.0, none, 2.0, 1e-6),
                (1_561.200_12, 100.0, none, 8.0, 1e-6),
                // Long before the beat is due there is no suspicion.
                (100.0, 100.0, none, 0.0, 1e-9),
                // Silence for ever saturates instead of overflowing.
                (1e9, 100.0, none, MAX_PHI, 0.0),
            ],
        );
    }

    #[test]
    fn each_missing_beat_adds_minus_log10_of_the_loss_rate() {
        assert_phi(
            &params(0.0),
            &[
                // 10 % loss, σ ≪ μ. At 2.5 beats two beats are overdue (each
                // lost with p = 0.1) and the third is not yet due: phi = 2.
                (2500.0, 10.0, Loss::random(0.1), 2.0, 1e-9),
                // At 1 beat exactly: 1 - 0.9·0.5 = 0.55, phi = -log10 0.55.
                (1000.0, 10.0, Loss::random(0.1), -(0.55f64).log10(), 1e-9),
                // 5 % loss: 6 missing beats are phi 7.81, the 7th takes it past 8.
                (6500.0, 10.0, Loss::random(0.05), 6.0 * 1.30103, 1e-4),
            ],
        );
        assert!(params(0.0).phi(7100.0, 1000.0, 10.0, Loss::random(0.05)) > 8.0);
        // The loss floor applies when no loss was measured.
        assert_phi(
            &params(0.01),
            &[(3500.0, 10.0, Loss::random(0.0), 6.0, 1e-9)],
        );
    }

    #[test]
    fn bursty_loss_makes_later_missing_beats_weigh_less() {
        // Lost after an arrival: 10 %; lost after a loss: 50 %. At 3.5
        // beats: 1 + 2 × log10 2.
        let p = params(0.0);
        let bursty = Loss {
            first: 0.1,
            next: 0.5,
        };
        let want = 1.0 + 2.0 * 2f64.log10();
        assert!(close(p.phi(3500.0, 1000.0, 10.0, bursty), want, 1e-9));
        let t = p.silence_for(8.0, 1000.0, 10.0, bursty);
        assert!(close(p.phi(t, 1000.0, 10.0, bursty), 8.0, 1e-4), "{t}");
        // 1 + 23 × 0.301 = 7.92 after 24 beats: the 25th decides.
        assert!((24_000.0..25_100.0).contains(&t), "{t}");
    }

    #[test]
    fn silence_for_inverts_phi() {
        let normal = params(0.0);
        // 10 % loss, phi 2.5: two beats lost (phi 2), the third must be
        // late enough that 1 - 0.9Φ(y) = 10^-0.5.
        let y = -normal_quantile((10f64.powf(-0.5) - 0.1) / 0.9);
        assert_silence(
            &normal,
            &[
                // Hand-computed: phi 1 at μ + 1.2816σ; phi 8 at μ + 5.612σ.
                (1.0, 100.0, Loss::random(0.0), 1128.155, 1e-3),
                (8.0, 100.0, Loss::random(0.0), 1561.200, 1e-3),
                // 1 % loss, phi 4: exactly two lost beats' worth: 2 beats
                // plus 5.612σ (the floor: tail 1e-8 of the last beat).
                (4.0, 10.0, Loss::random(0.01), 2000.0 + 56.12, 1e-2),
                (2.5, 10.0, Loss::random(0.1), 3000.0 + y * 10.0, 1e-6),
            ],
        );
        for (loss, target) in [
            (0.0, 3.0),
            (0.05, 8.0),
            (0.2, 8.0),
            (0.01, 12.0),
            (0.3, 3.0),
        ] {
            let t = normal.silence_for(target, 1000.0, 30.0, Loss::random(loss));
            let phi = normal.phi(t, 1000.0, 30.0, Loss::random(loss));
            assert!(close(phi, target, 1e-3), "loss {loss}: phi({t}) = {phi}");
        }
    }

    #[test]
    fn wide_jitter_deadlines_are_refined_to_the_exact_crossing() {
        // σ = μ: overdue beats overlap, the closed form alone would be early.
        let p = params(0.01);
        for target in [3.0, 10.0] {
            let t = p.silence_for(target, 100.0, 100.0, Loss::random(0.025));
            let phi = p.phi(t, 100.0, 100.0, Loss::random(0.025));
            assert!(close(phi, target, 1e-6), "phi({t}) = {phi}");
        }
    }

    #[test]
    fn pause_and_deviation_floor_delay_the_deadline() {
        let p = PhiParams {
            min_std_ms: 200.0,
            pause_ms: 500.0,
            ..params(0.0)
        };
        // σ raised from 10 to 200, then 500 ms more.
        let none = Loss::random(0.0);
        assert_silence(&p, &[(1.0, 10.0, none, 1756.31, 1e-2)]);
        assert_phi(&p, &[(1500.0, 10.0, none, 2f64.log10(), 1e-12)]);
    }
}
