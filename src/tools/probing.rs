//! `lubdub simulate --probes`: one synthetic host with probing (issue 15),
//! on simulated time, through the server's real [`Monitor`].
//!
//! Beats, probes and answers share one channel: one loss process in
//! *time*. Random loss drops each packet alike; Gilbert–Elliott bursts are
//! a two-state chain that evolves in continuous time (its per-beat
//! `burst_enter`/`burst_exit` turned into rates), so a probe sent during a
//! burst suffers the burst whatever its spacing from the beats. Probes go
//! one way, answers the other, each half the round trip late; the client
//! answers every probe that reaches it while it is alive.

use super::simulate::{Report, Synthetic};
use crate::config::ValidServerConfig;
use crate::monitor::{EventKind, Monitor, Observation, Outcome};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// The channel's loss state, sampled in time order.
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

/// What reaches its destination, and when.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    /// A beat (seq, the nonce it answers, 0: none) reaches the server.
    Beat(u64, u64),
    /// A probe (its nonce) reaches the client.
    Probe(u64),
}

/// Simulates host `index` of `fleet` with probing, `rtt` the round trip.
pub fn simulate_host(
    config: &ValidServerConfig,
    fleet: &Synthetic,
    index: u32,
    rtt: Duration,
    fleet_loss: Option<crate::monitor::stats::FleetLoss>,
) -> Report {
    let super::simulate::HostRun {
        mut rng,
        interval,
        failure,
        ..
    } = super::simulate::HostRun::new(fleet, index);
    let half_rtt = rtt.as_secs_f64() / 2.0;
    let mut channel = Channel::new(fleet);
    let start = Instant::now();
    let wall = |secs: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
    let mut monitor = Monitor::new(config.monitor().clone(), start, wall(0.0));
    monitor.seed_probes(rng.u64(..));
    if let Some(fleet) = fleet_loss {
        monitor.set_fleet_loss(fleet);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let interval_ms = u32::try_from(fleet.interval.as_millis()).unwrap_or(u32::MAX);
    let end = failure + interval * 1000.0 + 3600.0;
    let mut report = Report {
        host_days: failure / 86_400.0,
        ..Report::default()
    };
    // In flight, by arrival time (ns after start, for a total order).
    let mut flight: BinaryHeap<Reverse<(u64, Delivery)>> = BinaryHeap::new();
    let ns = |secs: f64| (secs * 1e9) as u64;
    let mut next_send = rng.f64() * interval;
    let mut seq = 1_700_000_000u64 << 32;
    let mut out = Outcome::default();
    let mut detected = false;
    loop {
        let next = monitor.next_deadline();
        let deadline = next.map(|d| d.saturating_duration_since(start).as_secs_f64());
        let arrival = flight.peek().map(|Reverse((at, _))| *at as f64 / 1e9);
        let send = (next_send < failure).then_some(next_send);
        let t = [deadline, arrival, send]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        if t > end {
            break;
        }
        let at = start + Duration::from_secs_f64(t);
        if let Some(next) = next.filter(|_| deadline == Some(t)) {
            monitor.expire(next, wall(t), &mut out);
            for probe in out.probe.send.drain(..) {
                report.probes_sent += 1;
                if !channel.lost(t, &mut rng) {
                    flight.push(Reverse((ns(t + half_rtt), Delivery::Probe(probe.nonce))));
                }
            }
        } else if send == Some(t) {
            report.beats_sent += 1;
            if channel.lost(t, &mut rng) {
                report.beats_lost += 1;
            } else {
                let delay = rng.f64() * fleet.delay_jitter.as_secs_f64();
                flight.push(Reverse((ns(t + delay), Delivery::Beat(seq, 0))));
            }
            seq += 1;
            next_send += interval * (1.0 + fleet.jitter * (2.0 * rng.f64() - 1.0));
        } else if let Some(Reverse((_, delivery))) = flight.pop() {
            match delivery {
                Delivery::Probe(nonce) if t < failure => {
                    // Answered at once with the client's next beat.
                    if !channel.lost(t, &mut rng) {
                        flight.push(Reverse((ns(t + half_rtt), Delivery::Beat(seq, nonce))));
                    }
                    seq += 1;
                }
                Delivery::Probe(_) => {} // the client is dead
                Delivery::Beat(beat_seq, nonce) => {
                    let beat = Observation {
                        seq: Some(beat_seq),
                        boot_id: [1; 16],
                        interval_ms,
                        answers_probes: true,
                        answers: (nonce != 0).then_some(nonce),
                        ..Observation::legacy("sim", addr)
                    };
                    monitor.observe(&beat, at, wall(t), &mut out);
                    report.probes_answered += out.probe.answered.len() as u64;
                }
            }
        }
        for event in out.events.drain(..) {
            let when = event
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let alive = when < failure;
            match event.kind {
                EventKind::Down if alive => report.false_downs += 1,
                EventKind::Late if alive => report.false_lates += 1,
                EventKind::Down if !detected => {
                    detected = true;
                    report
                        .detection
                        .push(Duration::from_secs_f64(when - failure));
                }
                EventKind::Flapping => report.flapping += 1,
                _ => {}
            }
        }
        out.clear();
        if detected && t > failure && monitor.next_deadline().is_none() {
            break;
        }
    }
    report.missed = u64::from(!detected);
    report.learnt = super::simulate::Learnt::of(monitor.fleet_loss());
    report
}
