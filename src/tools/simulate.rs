//! `lubdub simulate`: runs the server's real [`Monitor`] on simulated time
//! over synthetic beat traces (interval, client jitter, network delay
//! jitter, random or bursty loss, a real failure at a known time) or over a
//! trace recorded from a live server (`lubdub server --record FILE`), and
//! reports detection time and false alarms for one detector setting.
//!
//! Synthetic hosts are watched by simulated servers of
//! [`Synthetic::fleet_size`] hosts each, all starting together (see
//! the `engine` and `fleet` modules); the servers run spread over
//! the machine's cores. Deterministic: each host's random stream is seeded
//! from `--seed` and its index, and each server watches a fixed range of
//! indices, so the result does not depend on the number of threads.
//!
//! [`Monitor`]: crate::monitor::Monitor

use super::engine::{Delivery, Engine, Step};
use crate::config::ValidServerConfig;
use crate::monitor::EventKind;
use crate::monitor::stats::FleetLoss;
use crate::trace::HostTrace;
pub use crate::trace::read_trace;
use std::time::Duration;

/// How beats are lost on their way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossModel {
    /// Loss probability in the good state (the random loss).
    pub loss: f64,
    /// Per beat, probability of entering the bad state (0: no bursts).
    pub burst_enter: f64,
    /// Per beat, probability of leaving the bad state.
    pub burst_exit: f64,
    /// Loss probability in the bad state.
    pub burst_loss: f64,
}

/// A synthetic fleet to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    /// Hosts simulated; each fails once, at the end of its run.
    pub hosts: u32,
    /// Days each host beats before it fails.
    pub days: f64,
    /// The client's beat interval.
    pub interval: Duration,
    /// The client's jitter, as a share of the interval (±).
    pub jitter: f64,
    /// Network delay of each beat: uniform in [0, this). Beats overtake
    /// each other when it exceeds the interval's spread.
    pub delay_jitter: Duration,
    /// Loss.
    pub loss: LossModel,
    /// Seed of all randomness.
    pub seed: u64,
    /// Probing (issue 15): the round trip of a probe and its answer; `None`
    /// simulates beats alone (then the server's probe settings are unused).
    pub probe_rtt: Option<Duration>,
    /// The hosts join a fleet the server has watched before: each server
    /// starts from what one server learnt of [`WARM_HOSTS`] other hosts on
    /// the same links over their whole run (see
    /// `monitor::stats::FleetLoss`). Off: each server and its hosts start
    /// together, the worst case for new hosts.
    pub established: bool,
    /// Hosts per simulated server (the last may have fewer): a server
    /// learns its fleet's links from all of its hosts at once, so a small
    /// fleet learns them later than a large one.
    pub fleet_size: u32,
}

/// Hosts that run first, on their own random numbers, to establish the
/// fleet of [`Synthetic::established`].
pub const WARM_HOSTS: u32 = 16;

/// What a simulation measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Host-days simulated.
    pub host_days: f64,
    /// Beats sent.
    pub beats_sent: u64,
    /// Beats lost.
    pub beats_lost: u64,
    /// `down` events while the host was alive.
    pub false_downs: u64,
    /// `late` events while the host was alive.
    pub false_lates: u64,
    /// For each real failure detected: time from the failure to `down`.
    pub detection: Vec<Duration>,
    /// Real failures never reported `down` (e.g. flapping hold-off is not
    /// counted here; only a missing `down`).
    pub missed: u64,
    /// Hosts marked flapping.
    pub flapping: u64,
    /// Probes the server sent.
    pub probes_sent: u64,
    /// Probes answered (their answer arrived and matched).
    pub probes_answered: u64,
    /// What the hosts' servers knew of their fleet when they started.
    pub fleet_loss: FleetLoss,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.host_days += other.host_days;
        self.beats_sent += other.beats_sent;
        self.beats_lost += other.beats_lost;
        self.false_downs += other.false_downs;
        self.false_lates += other.false_lates;
        self.detection.extend(other.detection);
        self.missed += other.missed;
        self.flapping += other.flapping;
        self.probes_sent += other.probes_sent;
        self.probes_answered += other.probes_answered;
    }

    /// The `q` quantile (0 to 1) of the detection times (nearest rank).
    pub fn detection_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.detection.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(sorted[rank - 1])
    }

    /// False `down`s per 1,000 host-days.
    pub fn false_downs_per_1000_host_days(&self) -> f64 {
        if self.host_days > 0.0 {
            self.false_downs as f64 * 1000.0 / self.host_days
        } else {
            0.0
        }
    }
}

/// Runs the synthetic fleet: servers of [`Synthetic::fleet_size`] hosts,
/// spread over the machine's cores.
pub fn run_synthetic(config: &ValidServerConfig, fleet: &Synthetic) -> Report {
    let fleet_loss = fleet.established.then(|| {
        // Random numbers no counted host draws (`--hosts` stays below).
        let first = 1 << 31;
        super::fleet::simulate(config, fleet, first..first + WARM_HOSTS, None).1
    });
    let size = fleet.fleet_size.max(1);
    let servers: Vec<_> = (0..fleet.hosts.div_ceil(size))
        .map(|k| k * size..fleet.hosts.min((k + 1) * size))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.clamp(1, servers.len().max(1));
    let mut total = Report {
        fleet_loss: fleet_loss.unwrap_or_default(),
        ..Report::default()
    };
    let mut parts: Vec<(usize, Report)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let servers = &servers;
                scope.spawn(move || {
                    let mine = servers.iter().enumerate().skip(t).step_by(threads);
                    mine.map(|(k, indices)| {
                        let run =
                            super::fleet::simulate(config, fleet, indices.clone(), fleet_loss);
                        (k, run.0)
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("simulation thread does not panic"))
            .collect()
    });
    // In fleet order, so even the sums' last digits do not depend on the
    // number of threads.
    parts.sort_unstable_by_key(|(k, _)| *k);
    for (_, part) in parts {
        total.merge(part);
    }
    total
}

/// What replaying a recorded trace found. There is no ground truth in a
/// recording: a `down` followed by a beat of the same host was a false
/// alarm (or a real outage that ended); one at the end of the trace may be
/// a host that really stopped. Serializes to the fields of
/// `lubdub simulate --trace --json` (beside `detector`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReplayReport {
    /// Hosts in the trace.
    pub hosts: usize,
    /// Beats in the trace.
    pub beats: u64,
    /// Host-days covered (first to last beat of each host).
    pub host_days: f64,
    /// `down`s the host came back from.
    pub downs_recovered: u64,
    /// `late`s the host came back from.
    pub lates_recovered: u64,
    /// Hosts `down` at the end of the trace (stopped, or silent too long).
    pub down_at_end: u64,
}

/// Replays a recorded trace through one monitor, as the server that
/// recorded it watched the hosts: all at once.
pub fn replay(config: &ValidServerConfig, trace: &[(String, HostTrace)]) -> ReplayReport {
    let mut report = ReplayReport {
        hosts: trace.len(),
        ..ReplayReport::default()
    };
    let hosts = trace
        .iter()
        .map(|(id, (interval_ms, _))| (id.as_str().into(), *interval_ms));
    let mut engine = Engine::new(config, hosts, None, 0, false);
    let mut end = 0.0f64;
    for (h, (_, (_, arrivals))) in trace.iter().enumerate() {
        let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
            continue;
        };
        report.beats += arrivals.len() as u64;
        report.host_days += (last.0 - first.0).as_secs_f64() / 86_400.0;
        end = end.max(last.0.as_secs_f64());
        engine.schedule_at(first.0, h, Delivery::Beat(first.1, 0));
    }
    // One arrival per host in flight: the next is queued as one arrives.
    let mut next = vec![1; trace.len()];
    // Up to the end of the recording, plus nothing: a host silent at the
    // end is judged only as far as the recording reaches.
    let mut last_bad = vec![None; trace.len()];
    while let Some(step) = engine.step(end) {
        if let Step::Delivered(_, h, _) = step
            && let Some(&(at, seq)) = trace[h].1.1.get(next[h])
        {
            next[h] += 1;
            engine.schedule_at(at, h, Delivery::Beat(seq, 0));
        }
        for (h, _, kind) in engine.events() {
            let last_bad = &mut last_bad[h];
            match kind {
                EventKind::Late => *last_bad = last_bad.or(Some(EventKind::Late)),
                EventKind::Down => *last_bad = Some(EventKind::Down),
                EventKind::Recovered => match last_bad.take() {
                    Some(EventKind::Down) => report.downs_recovered += 1,
                    Some(_) => report.lates_recovered += 1,
                    None => {}
                },
                _ => {}
            }
        }
    }
    report.down_at_end = last_bad
        .iter()
        .filter(|&&bad| bad == Some(EventKind::Down))
        .count() as u64;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::monitor::DetectorKind;
    use crate::monitor::Observation;
    use crate::trace::Recorder;
    use std::time::Instant;

    fn valid(config: ServerConfig) -> ValidServerConfig {
        config.validate().expect("valid")
    }

    fn fleet(loss: f64) -> Synthetic {
        Synthetic {
            hosts: 50,
            days: 1.0,
            interval: Duration::from_secs(10),
            jitter: 0.05,
            delay_jitter: Duration::ZERO,
            loss: LossModel {
                loss,
                burst_enter: 0.0,
                burst_exit: 1.0,
                burst_loss: 0.0,
            },
            seed: 7,
            probe_rtt: None,
            established: false,
            fleet_size: 1000,
        }
    }

    #[test]
    fn no_loss_fixed_timeout_detects_within_the_timeout_and_never_falsely() {
        let config = valid(ServerConfig::default()); // fixed 30 s, late at 15 s
        let report = run_synthetic(&config, &fleet(0.0));
        assert_eq!(
            (report.false_downs, report.false_lates, report.missed),
            (0, 0, 0)
        );
        assert_eq!(report.detection.len(), 50);
        // Down 30 s after the last beat; the failure is 0–10.5 s after it.
        for d in &report.detection {
            assert!((19.4..=30.0).contains(&d.as_secs_f64()), "{d:?}");
        }
        assert_eq!(report.beats_lost, 0);
        assert!((report.host_days - 50.0).abs() < 0.01);
    }

    #[test]
    fn deterministic_for_a_seed_and_loss_causes_false_alarms_for_a_tight_timeout() {
        let config = valid(ServerConfig {
            timeout: Duration::from_secs(35),
            ..ServerConfig::default()
        });
        let a = run_synthetic(&config, &fleet(0.2));
        let b = run_synthetic(&config, &fleet(0.2));
        assert_eq!(a, b);
        // 20 % loss, 3.5 intervals: a received beat followed by three or
        // more lost ones (0.8 · 0.2³ of beats) is a false `down`.
        let sent = a.beats_sent as f64;
        let expected = sent * 0.8 * 0.2f64.powi(3);
        let got = a.false_downs as f64;
        assert!(
            (got - expected).abs() < expected * 0.2,
            "{got} vs {expected}"
        );
        assert!((a.beats_lost as f64 / sent - 0.2).abs() < 0.01);
    }

    #[test]
    fn phi_adapts_to_loss() {
        let config = valid(ServerConfig {
            detector: DetectorKind::Phi,
            ..ServerConfig::default()
        });
        let clean = run_synthetic(&config, &fleet(0.0));
        let lossy = run_synthetic(&config, &fleet(0.2));
        assert_eq!(clean.false_downs, 0);
        let median = |r: &Report| r.detection_quantile(0.5).expect("detections");
        assert!(
            median(&lossy) > median(&clean),
            "lossy hosts get more slack"
        );
    }

    /// phi 2 / late 1 with probing on: the rows of docs/DETECTION.md.
    fn fast_phi_with_probes() -> ValidServerConfig {
        valid(ServerConfig {
            detector: DetectorKind::Phi,
            phi: crate::config::detection::PhiConfig {
                threshold: 2.0,
                late_threshold: 1.0,
                ..Default::default()
            },
            probe: crate::config::probe::ProbeConfig {
                enabled: true,
                ..Default::default()
            },
            ..ServerConfig::default()
        })
    }

    #[test]
    fn probes_turn_a_fast_detectors_false_downs_into_none() {
        let config = fast_phi_with_probes();
        let lossy = Synthetic {
            hosts: 10,
            ..fleet(0.05)
        };
        let alone = run_synthetic(&config, &lossy);
        assert!(alone.false_downs > 100, "phi 2 alone: {alone:?}");
        let probed = run_synthetic(
            &config,
            &Synthetic {
                probe_rtt: Some(Duration::from_millis(50)),
                ..lossy
            },
        );
        assert_eq!(probed.false_downs, 0);
        assert_eq!(probed.missed, 0);
        assert!(probed.probes_answered > 0 && probed.probes_sent >= probed.probes_answered);
        // Every failure confirmed within about two beats.
        let p99 = probed.detection_quantile(0.99).expect("detections");
        assert!(p99 < Duration::from_secs(30), "{p99:?}");
    }

    #[test]
    fn a_new_bursty_fleet_learns_its_links_from_all_of_its_hosts() {
        let config = fast_phi_with_probes();
        let bursty = Synthetic {
            hosts: 40,
            days: 0.25,
            loss: LossModel {
                loss: 0.01,
                burst_enter: 0.01,
                burst_exit: 0.2,
                burst_loss: 0.8,
            },
            probe_rtt: Some(Duration::from_millis(50)),
            ..fleet(0.0)
        };
        // Each host on a server of its own: its first bursts look like
        // death, as they would for a lone new host.
        let alone = run_synthetic(
            &config,
            &Synthetic {
                fleet_size: 1,
                ..bursty.clone()
            },
        );
        // One server for all: the fleet's first runs of losses teach it
        // before most hosts meet their first burst.
        let together = run_synthetic(&config, &bursty);
        assert!(
            together.false_downs * 4 < alone.false_downs,
            "{} together vs {} alone",
            together.false_downs,
            alone.false_downs
        );
        assert_eq!(together.missed, 0);
    }

    #[test]
    fn a_beat_on_the_instant_of_a_deadline_replays_after_it_wherever_it_falls() {
        let config = valid(ServerConfig {
            timeout: Duration::from_secs(3),
            ..ServerConfig::default()
        });
        // Beats 1 s apart, then one exactly at the 3 s timeout: the
        // deadline goes first, so the host is `down`, then back.
        let downs = |first_ms: u64| {
            let arrivals = [0, 1000, 4000]
                .iter()
                .zip(1u64..)
                .map(|(ms, seq)| (Duration::from_millis(first_ms + ms), seq))
                .collect();
            let trace = vec![("a".to_string(), (1000u32, arrivals))];
            replay(&config, &trace).downs_recovered
        };
        // 4,004 ms is not a whole number of ns as an f64 of seconds.
        for first_ms in [0, 4, 7, 1001] {
            assert_eq!(downs(first_ms), 1, "starting at {first_ms} ms");
        }
    }

    #[test]
    fn trace_round_trip_and_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trace");
        let start = Instant::now();
        let mut recorder = Recorder::create(&path, start).expect("create");
        for i in 0..50u64 {
            for host in ["a", "b"] {
                if host == "b" && (20..30).contains(&i) {
                    continue; // b is silent for 10 beats, then back
                }
                let beat = Observation {
                    seq: Some(i),
                    interval_ms: 1000,
                    ..crate::monitor::testing::beat(host)
                };
                recorder
                    .record(&beat, start + Duration::from_secs(i))
                    .expect("record");
            }
        }
        recorder.flush().expect("flush");
        let file = std::fs::File::open(&path).expect("open");
        let trace = read_trace(std::io::BufReader::new(file)).expect("parse");
        assert_eq!(trace.len(), 2);
        assert_eq!(trace[1].1.1.len(), 40);
        let config = valid(ServerConfig {
            timeout: Duration::from_secs(3),
            ..ServerConfig::default()
        });
        let report = replay(&config, &trace);
        assert_eq!(report.downs_recovered, 1, "{report:?}");
        assert_eq!((report.hosts, report.beats, report.down_at_end), (2, 90, 0));

        let bad = read_trace(std::io::Cursor::new("# lubdub trace v1\nb 1 0 1\n"));
        assert!(
            bad.expect_err("undeclared")
                .to_string()
                .starts_with("line 2:")
        );
    }
}
