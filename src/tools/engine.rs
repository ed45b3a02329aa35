//! The simulated server: one real [`Monitor`] watching a whole fleet on
//! simulated time, as the live server does, so what the monitor learns
//! from one host (the fleet's averages, `monitor::stats::FleetLoss`)
//! reaches the others when it would live.
//!
//! Time is simulated, never slept: packets in flight wait in one queue
//! ordered by arrival, and every deadline is expired at its own instant,
//! so an event carries the exact time the live server would have
//! reported it. Ties go to deadlines first, then to the lower host index:
//! the same inputs give the same run.

use crate::config::ValidServerConfig;
use crate::monitor::stats::FleetLoss;
use crate::monitor::{EventKind, Monitor, Observation, Outcome};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What reaches its destination (or, for [`Delivery::Send`], is due).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Delivery {
    /// A beat reaches the server: its seq, and the nonce of the probe it
    /// answers (0: none).
    Beat(u64, u64),
    /// A probe (its nonce) reaches the client.
    Probe(u64),
    /// The client's next beat is due.
    Send,
}

/// One step of the simulation.
pub(super) enum Step {
    /// Deadlines fell due at this time (seconds after start): the probes
    /// to send are in [`Engine::out`].
    Expired(f64),
    /// `Delivery` to or from host `usize` at this time. A beat has been
    /// observed already (answered probes are in [`Engine::out`]).
    Delivered(f64, usize, Delivery),
}

/// A monitor, the hosts it watches and the packets in flight.
pub(super) struct Engine {
    /// The server's core.
    pub monitor: Monitor,
    /// What the latest step produced; cleared at the next.
    pub out: Outcome,
    start: Instant,
    /// In flight, by arrival (ns after start, host, what).
    flight: BinaryHeap<Reverse<(u64, usize, Delivery)>>,
    ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    interval_ms: Vec<u32>,
    answers_probes: bool,
}

fn wall(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
}

fn ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

impl Engine {
    /// A server judging by `config` that starts watching `hosts` (id, beat
    /// interval in ms) at time 0, from `fleet_loss` if it knew their fleet
    /// before; `answers_probes`: their clients answer probes.
    pub fn new(
        config: &ValidServerConfig,
        hosts: impl IntoIterator<Item = (Arc<str>, u32)>,
        fleet_loss: Option<FleetLoss>,
        probe_seed: u64,
        answers_probes: bool,
    ) -> Self {
        // Simulated time: any instant serves as the start.
        let start = Instant::now();
        let mut monitor = Monitor::new(config.monitor().clone(), start, wall(0.0));
        monitor.seed_probes(probe_seed);
        if let Some(fleet) = fleet_loss {
            monitor.set_fleet_loss(fleet);
        }
        let (ids, interval_ms): (Vec<_>, Vec<_>) = hosts.into_iter().unzip();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Self {
            monitor,
            out: Outcome::default(),
            start,
            flight: BinaryHeap::new(),
            ids,
            index,
            interval_ms,
            answers_probes,
        }
    }

    /// Puts `what` for `host` in flight, arriving at `at` (seconds).
    pub fn schedule(&mut self, at: f64, host: usize, what: Delivery) {
        self.flight.push(Reverse((ns(at), host, what)));
    }

    /// The index of the host with id `id`.
    pub fn host_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Runs to the next deadline or arrival, if one comes by `end`
    /// (seconds): nothing left to do ends the run too.
    pub fn step(&mut self, end: f64) -> Option<Step> {
        self.out.clear();
        let next = self.monitor.next_deadline();
        let deadline = next.map(|d| d.saturating_duration_since(self.start).as_secs_f64());
        let arrival = self.flight.peek().map(|Reverse((at, ..))| *at as f64 / 1e9);
        let t = deadline
            .into_iter()
            .chain(arrival)
            .fold(f64::INFINITY, f64::min);
        if t > end {
            return None;
        }
        if let Some(next) = next.filter(|_| deadline == Some(t)) {
            self.monitor.expire(next, wall(t), &mut self.out);
            return Some(Step::Expired(t));
        }
        let Reverse((_, host, what)) = self.flight.pop()?;
        if let Delivery::Beat(seq, answers) = what {
            let beat = Observation {
                seq: Some(seq),
                boot_id: [1; 16],
                interval_ms: self.interval_ms[host],
                answers_probes: self.answers_probes,
                answers: (answers != 0).then_some(answers),
                ..Observation::legacy(&self.ids[host], addr_of(host))
            };
            let at = self.start + Duration::from_secs_f64(t);
            self.monitor.observe(&beat, at, wall(t), &mut self.out);
        }
        Some(Step::Delivered(t, host, what))
    }

    /// The events of the latest step: host index, time (seconds), kind.
    pub fn events(&self) -> impl Iterator<Item = (usize, f64, EventKind)> + '_ {
        self.out.events.iter().filter_map(|e| {
            let at = e.at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
            Some((self.host_of(&e.host)?, at.as_secs_f64(), e.kind))
        })
    }
}

/// Host `index`'s own address (127.0.0.0/8, as many as there are hosts).
fn addr_of(index: usize) -> SocketAddr {
    let index = u32::try_from(index).unwrap_or(u32::MAX) & 0x00ff_ffff;
    SocketAddr::from((Ipv4Addr::from(0x7f00_0000 | index), 9))
}
