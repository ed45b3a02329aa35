//! `lubdub simulate`: runs the server's real [`Monitor`] on simulated time
//! over synthetic beat traces (interval, client jitter, network delay
//! jitter, random or bursty loss, a real failure at a known time) or over a
//! trace recorded from a live server (`lubdub server --record FILE`), and
//! reports detection time and false alarms for one detector setting.
//!
//! Time is simulated, never slept: each host gets its own monitor, fed its
//! arrivals in order, with every deadline expired at its own instant, so a
//! `down` carries the exact time the live server would have reported it.
//! Deterministic: each host's random stream is seeded from `--seed` and its
//! index, so the result does not depend on the number of threads.

use crate::config::ValidServerConfig;
use crate::monitor::stats::FleetLoss;
use crate::monitor::{EventKind, Monitor, Observation, Outcome};
use crate::trace::HostTrace;
pub use crate::trace::read_trace;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

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
    /// The hosts join a fleet the server has watched before: each starts
    /// from the burst rate of [`WARM_HOSTS`] other hosts on the same links
    /// after their whole run (see `monitor::stats::FleetLoss`). Off: the
    /// server and all hosts start together, the worst case for new hosts.
    pub established: bool,
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
    /// What the hosts' server knew of their fleet when they started.
    pub fleet_loss: FleetLoss,
    /// What each host's server learnt of the fleet, summed over the hosts
    /// (burst rate; probe run chance and the hosts that learnt one).
    pub(super) learnt: Learnt,
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
        self.learnt.burst += other.learnt.burst;
        self.learnt.burst_hosts += other.learnt.burst_hosts;
        self.learnt.probe_run += other.learnt.probe_run;
        self.learnt.probe_hosts += other.learnt.probe_hosts;
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

/// Sums of what hosts' servers learnt of their fleet ([`Report::learnt`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Learnt {
    burst: f64,
    burst_hosts: u32,
    probe_run: f64,
    probe_hosts: u32,
}

impl Learnt {
    /// What one host's server learnt.
    pub(super) fn of(fleet: FleetLoss) -> Self {
        Self {
            burst: fleet.burst_excess().unwrap_or(0.0),
            burst_hosts: u32::from(fleet.burst_excess().is_some()),
            probe_run: fleet.probe_run().unwrap_or(0.0),
            probe_hosts: u32::from(fleet.probe_run().is_some()),
        }
    }

    /// The established fleet of `hosts` hosts: the means over the hosts
    /// whose monitors learnt each figure, if most did (else 0: nothing).
    fn fleet(&self, hosts: u32) -> FleetLoss {
        let mean = |sum: f64, n: u32| {
            if n * 2 > hosts {
                sum / f64::from(n)
            } else {
                0.0
            }
        };
        FleetLoss::with(
            mean(self.burst, self.burst_hosts),
            mean(self.probe_run, self.probe_hosts),
        )
    }
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Feeds one host's arrivals (arrival time after start, seq) to a fresh
/// monitor, expiring each deadline at its own instant until `end`, and
/// returns every event with its time after start.
fn run_host(
    config: &ValidServerConfig,
    host_id: &str,
    interval_ms: u32,
    arrivals: &[(Duration, u64)],
    end: Duration,
    fleet_loss: Option<FleetLoss>,
) -> (Vec<(Duration, EventKind)>, FleetLoss) {
    let wall = |offset: Duration| SystemTime::UNIX_EPOCH + offset;
    // Simulated time: any instant serves as the start.
    let start = Instant::now();
    let mut monitor = Monitor::new(config.monitor().clone(), start, wall(Duration::ZERO));
    if let Some(fleet) = fleet_loss {
        monitor.set_fleet_loss(fleet);
    }
    let mut outcome = Outcome::default();
    let mut out = Vec::new();
    let drain = |outcome: &mut Outcome, out: &mut Vec<(Duration, EventKind)>| {
        for e in outcome.events.drain(..) {
            let at =
                e.at.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
            out.push((at, e.kind));
        }
        outcome.clear();
    };
    let expire_until = |monitor: &mut Monitor, until: Duration, outcome: &mut Outcome| {
        while let Some(next) = monitor.next_deadline() {
            let offset = next.saturating_duration_since(start);
            if offset > until {
                break;
            }
            monitor.expire(next, wall(offset), outcome);
        }
    };
    for &(at, seq) in arrivals {
        expire_until(&mut monitor, at, &mut outcome);
        let beat = Observation {
            seq: Some(seq),
            boot_id: [1; 16],
            interval_ms,
            ..Observation::legacy(host_id, addr())
        };
        monitor.observe(&beat, start + at, wall(at), &mut outcome);
        drain(&mut outcome, &mut out);
    }
    expire_until(&mut monitor, end, &mut outcome);
    drain(&mut outcome, &mut out);
    (out, monitor.fleet_loss())
}

/// What one synthetic host's run starts from (with or without probes).
pub(super) struct HostRun {
    /// The host's own random numbers, from the fleet's seed and its index.
    pub rng: fastrand::Rng,
    /// Its beat interval (seconds).
    pub interval: f64,
    /// The simulated time (seconds).
    pub span: f64,
    /// When it fails (seconds): at a random phase of the last interval,
    /// so detection time averages over where in the beat cycle it falls.
    pub failure: f64,
}

impl HostRun {
    /// Host `index` of `fleet`.
    pub fn new(fleet: &Synthetic, index: u32) -> Self {
        let mut rng = fastrand::Rng::with_seed(
            fleet
                .seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(u64::from(index)),
        );
        let interval = fleet.interval.as_secs_f64();
        let span = fleet.days * 86_400.0;
        let failure = span - rng.f64() * interval;
        Self {
            rng,
            interval,
            span,
            failure,
        }
    }
}

/// Simulates one synthetic host: its beats, the loss, a failure at the end.
fn simulate_host(
    config: &ValidServerConfig,
    fleet: &Synthetic,
    index: u32,
    fleet_loss: Option<FleetLoss>,
) -> Report {
    if let Some(rtt) = fleet.probe_rtt {
        return super::probing::simulate_host(config, fleet, index, rtt, fleet_loss);
    }
    let HostRun {
        mut rng,
        interval,
        span,
        failure,
    } = HostRun::new(fleet, index);
    let run = 1_700_000_000u64 << 32;
    let mut arrivals = Vec::with_capacity((span / interval) as usize + 1);
    let (mut sent_at, mut seq, mut bad) = (rng.f64() * interval, run, false);
    let mut report = Report {
        host_days: failure / 86_400.0,
        ..Report::default()
    };
    while sent_at < failure {
        report.beats_sent += 1;
        let m = &fleet.loss;
        if m.burst_enter > 0.0 {
            bad = if bad {
                rng.f64() >= m.burst_exit
            } else {
                rng.f64() < m.burst_enter
            };
        }
        let loss = if bad { m.burst_loss } else { m.loss };
        if rng.f64() < loss {
            report.beats_lost += 1;
        } else {
            let delay = rng.f64() * fleet.delay_jitter.as_secs_f64();
            arrivals.push((Duration::from_secs_f64(sent_at + delay), seq));
        }
        seq += 1;
        let jitter = fleet.jitter * (2.0 * rng.f64() - 1.0);
        sent_at += interval * (1.0 + jitter);
    }
    arrivals.sort_unstable_by_key(|&(at, _)| at);
    let interval_ms = u32::try_from(fleet.interval.as_millis()).unwrap_or(u32::MAX);
    // Long enough after the failure for any setting to declare it.
    let end = Duration::from_secs_f64(failure) + fleet.interval * 1000 + Duration::from_secs(3600);
    let failed_at = Duration::from_secs_f64(failure);
    let mut detected = false;
    let (events, learnt) = run_host(config, "sim", interval_ms, &arrivals, end, fleet_loss);
    report.learnt = Learnt::of(learnt);
    for (at, kind) in events {
        let alive = at < failed_at;
        match kind {
            EventKind::Down if alive => report.false_downs += 1,
            EventKind::Late if alive => report.false_lates += 1,
            EventKind::Down if !detected => {
                detected = true;
                report.detection.push(at - failed_at);
            }
            EventKind::Flapping => report.flapping += 1,
            _ => {}
        }
    }
    report.missed = u64::from(!detected);
    report
}

/// Runs the synthetic fleet, spread over the machine's cores.
pub fn run_synthetic(config: &ValidServerConfig, fleet: &Synthetic) -> Report {
    let fleet_loss = fleet.established.then(|| {
        // Random numbers no counted host draws (`--hosts` stays below).
        let first = 1 << 31;
        let warm = run_hosts(config, fleet, first..first + WARM_HOSTS, None);
        warm.learnt.fleet(WARM_HOSTS)
    });
    Report {
        fleet_loss: fleet_loss.unwrap_or_default(),
        ..run_hosts(config, fleet, 0..fleet.hosts, fleet_loss)
    }
}

/// Runs the hosts `indices` of `fleet`, whose server starts each from the
/// fleet as `fleet_loss` (`None`: as new), spread over the machine's cores.
fn run_hosts(
    config: &ValidServerConfig,
    fleet: &Synthetic,
    indices: std::ops::Range<u32>,
    fleet_loss: Option<FleetLoss>,
) -> Report {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = u32::try_from(threads)
        .unwrap_or(1)
        .clamp(1, indices.len().max(1) as u32);
    let mut total = Report::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut report = Report::default();
                    let mut index = indices.start + t;
                    while index < indices.end {
                        report.merge(simulate_host(config, fleet, index, fleet_loss));
                        let Some(next) = index.checked_add(threads) else {
                            break;
                        };
                        index = next;
                    }
                    report
                })
            })
            .collect();
        for worker in workers {
            total.merge(worker.join().expect("simulation thread does not panic"));
        }
    });
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

/// Replays a recorded trace through the monitor.
pub fn replay(config: &ValidServerConfig, trace: &[(String, HostTrace)]) -> ReplayReport {
    let mut report = ReplayReport {
        hosts: trace.len(),
        ..ReplayReport::default()
    };
    for (id, (interval_ms, arrivals)) in trace {
        let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
            continue;
        };
        report.beats += arrivals.len() as u64;
        report.host_days += (last.0 - first.0).as_secs_f64() / 86_400.0;
        // Up to the end of the recording, plus nothing: a host silent at
        // the end is judged only as far as the recording reaches.
        let end = trace
            .iter()
            .filter_map(|(_, (_, a))| a.last().map(|l| l.0))
            .max()
            .unwrap_or_default();
        let mut last_bad = None;
        for (_, kind) in run_host(config, id, *interval_ms, arrivals, end, None).0 {
            match kind {
                EventKind::Late => last_bad = last_bad.or(Some(EventKind::Late)),
                EventKind::Down => last_bad = Some(EventKind::Down),
                EventKind::Recovered => match last_bad.take() {
                    Some(EventKind::Down) => report.downs_recovered += 1,
                    Some(_) => report.lates_recovered += 1,
                    None => {}
                },
                _ => {}
            }
        }
        if last_bad == Some(EventKind::Down) {
            report.down_at_end += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::monitor::DetectorKind;
    use crate::trace::Recorder;

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

    #[test]
    fn probes_turn_a_fast_detectors_false_downs_into_none() {
        let config = valid(ServerConfig {
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
        });
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
