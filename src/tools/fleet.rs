//! One synthetic fleet on one simulated server ([`super::engine`]): each
//! host beats until it fails at the end of its run, its packets lost as
//! its link decides, and with `--probes` it answers every probe that
//! reaches it while alive, at once, with its next beat.
//!
//! Without probes, loss is decided per beat: a Gilbert–Elliott chain that
//! steps once per beat. With probes, beats, probes and answers share one
//! channel, one loss process in *time*: the chain evolves in continuous
//! time (its per-beat `burst_enter`/`burst_exit` turned into rates), so a
//! probe sent during a burst suffers the burst whatever its spacing from
//! the beats. Probes go one way, answers the other, each half the round
//! trip late.

use super::engine::{Delivery, Engine, Step};
use super::simulate::{LossModel, Report, Synthetic};
use crate::config::ValidServerConfig;
use crate::monitor::EventKind;
use crate::monitor::stats::FleetLoss;
use std::ops::Range;
use std::time::Duration;

/// A link's loss state.
enum Link {
    /// Steps once per beat (beats alone).
    PerBeat { bad: bool, model: LossModel },
    /// Evolves in time (beats, probes and answers).
    InTime(Channel),
}

/// The loss state of a link whose bursts evolve in time, sampled in time
/// order.
struct Channel {
    bad: bool,
    at: f64,
    /// Rates (per second) of entering and leaving a burst.
    enter: f64,
    exit: f64,
    loss: f64,
    burst_loss: f64,
}

impl Channel {
    fn new(fleet: &Synthetic) -> Self {
        let m = &fleet.loss;
        let interval = fleet.interval.as_secs_f64();
        let rate = |p: f64| -(1.0 - p.min(0.999_999)).ln() / interval;
        Self {
            bad: false,
            at: 0.0,
            enter: if m.burst_enter > 0.0 {
                rate(m.burst_enter)
            } else {
                0.0
            },
            exit: rate(m.burst_exit),
            loss: m.loss,
            burst_loss: m.burst_loss,
        }
    }

    /// Whether a packet sent at `t` (seconds, never earlier than the last
    /// call) is lost.
    fn lost(&mut self, t: f64, rng: &mut fastrand::Rng) -> bool {
        if self.enter > 0.0 {
            let dt = (t - self.at).max(0.0);
            self.at = t;
            let total = self.enter + self.exit;
            let stay = (-total * dt).exp();
            let share_bad = self.enter / total;
            let p_bad = if self.bad {
                share_bad + (1.0 - share_bad) * stay
            } else {
                share_bad * (1.0 - stay)
            };
            self.bad = rng.f64() < p_bad;
        }
        rng.f64() < if self.bad { self.burst_loss } else { self.loss }
    }
}

impl Link {
    /// Whether a packet sent at `t` is lost; `beat`: it is a beat (a
    /// per-beat chain steps only then).
    fn lost(&mut self, t: f64, beat: bool, rng: &mut fastrand::Rng) -> bool {
        match self {
            Link::InTime(channel) => channel.lost(t, rng),
            Link::PerBeat { bad, model } => {
                if beat && model.burst_enter > 0.0 {
                    *bad = if *bad {
                        rng.f64() >= model.burst_exit
                    } else {
                        rng.f64() < model.burst_enter
                    };
                }
                rng.f64() < if *bad { model.burst_loss } else { model.loss }
            }
        }
    }
}

/// One synthetic host.
struct Host {
    /// Its own random numbers, from the fleet's seed and its index.
    rng: fastrand::Rng,
    link: Link,
    /// When its next beat is due (seconds).
    next_send: f64,
    seq: u64,
    /// When it fails (seconds): at a random phase of the last interval,
    /// so detection time averages over where in the beat cycle it falls.
    failure: f64,
    detected: bool,
}

impl Host {
    /// Host `index` of `fleet`.
    fn new(fleet: &Synthetic, index: u32) -> Self {
        let mut rng = fastrand::Rng::with_seed(
            fleet
                .seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(u64::from(index)),
        );
        let interval = fleet.interval.as_secs_f64();
        let failure = fleet.days * 86_400.0 - rng.f64() * interval;
        let next_send = rng.f64() * interval;
        let link = if fleet.probe_rtt.is_some() {
            Link::InTime(Channel::new(fleet))
        } else {
            Link::PerBeat {
                bad: false,
                model: fleet.loss,
            }
        };
        Self {
            rng,
            link,
            next_send,
            seq: 1_700_000_000u64 << 32,
            failure,
            detected: false,
        }
    }
}

/// Simulates hosts `indices` of `fleet` on one server that starts with
/// them, from `fleet_loss` if it knew their fleet before; returns what it
/// measured and what the server learnt of the fleet.
pub(super) fn simulate(
    config: &ValidServerConfig,
    fleet: &Synthetic,
    indices: Range<u32>,
    fleet_loss: Option<FleetLoss>,
) -> (Report, FleetLoss) {
    let mut hosts: Vec<Host> = indices.clone().map(|i| Host::new(fleet, i)).collect();
    let interval_ms = u32::try_from(fleet.interval.as_millis()).unwrap_or(u32::MAX);
    let ids = indices
        .clone()
        .map(|i| (format!("sim-{i}").into(), interval_ms));
    let probe_seed = fleet.seed ^ u64::from(indices.start).rotate_left(32);
    let probing = fleet.probe_rtt.is_some();
    let mut engine = Engine::new(config, ids, fleet_loss, probe_seed, probing);
    for (h, host) in hosts.iter().enumerate() {
        engine.schedule(host.next_send, h, Delivery::Send);
    }
    let interval = fleet.interval.as_secs_f64();
    let half_rtt = fleet.probe_rtt.unwrap_or_default().as_secs_f64() / 2.0;
    let delay_jitter = fleet.delay_jitter.as_secs_f64();
    let last_failure = hosts.iter().map(|h| h.failure).fold(0.0, f64::max);
    // Long enough after the failures for any setting to declare them.
    let end = last_failure + interval * 1000.0 + 3600.0;
    let mut report = Report {
        host_days: hosts.iter().map(|h| h.failure).sum::<f64>() / 86_400.0,
        ..Report::default()
    };
    while let Some(step) = engine.step(end) {
        match step {
            Step::Expired(t) => {
                for probe in std::mem::take(&mut engine.out.probe.send) {
                    report.probes_sent += 1;
                    let Some(h) = engine.host_of(&probe.host) else {
                        continue;
                    };
                    let host = &mut hosts[h];
                    if !host.link.lost(t, false, &mut host.rng) {
                        engine.schedule(t + half_rtt, h, Delivery::Probe(probe.nonce));
                    }
                }
            }
            Step::Delivered(t, h, Delivery::Send) => {
                let host = &mut hosts[h];
                report.beats_sent += 1;
                if host.link.lost(t, true, &mut host.rng) {
                    report.beats_lost += 1;
                } else {
                    let delay = host.rng.f64() * delay_jitter;
                    engine.schedule(t + delay, h, Delivery::Beat(host.seq, 0));
                }
                host.seq += 1;
                host.next_send += interval * (1.0 + fleet.jitter * (2.0 * host.rng.f64() - 1.0));
                if host.next_send < host.failure {
                    engine.schedule(host.next_send, h, Delivery::Send);
                }
            }
            Step::Delivered(t, h, Delivery::Probe(nonce)) => {
                let host = &mut hosts[h];
                // A dead client answers nothing.
                if t < host.failure {
                    if !host.link.lost(t, false, &mut host.rng) {
                        engine.schedule(t + half_rtt, h, Delivery::Beat(host.seq, nonce));
                    }
                    host.seq += 1;
                }
            }
            Step::Delivered(_, _, Delivery::Beat(..)) => {
                report.probes_answered += engine.out.probe.answered.len() as u64;
            }
        }
        for (h, at, kind) in engine.events() {
            let host = &mut hosts[h];
            let alive = at < host.failure;
            match kind {
                EventKind::Down if alive => report.false_downs += 1,
                EventKind::Late if alive => report.false_lates += 1,
                EventKind::Down if !host.detected => {
                    host.detected = true;
                    report
                        .detection
                        .push(Duration::from_secs_f64(at - host.failure));
                }
                EventKind::Flapping => report.flapping += 1,
                _ => {}
            }
        }
    }
    report.missed = hosts.iter().filter(|h| !h.detected).count() as u64;
    (report, engine.monitor.fleet_loss())
}
