//! The detector: each host's deadline and its state machine, as a pure core
//! that takes `now` as an argument, plus the timer task that drives it.
//!
//! Deadlines live in a min-heap with *lazy rescheduling*: a beat only writes
//! the host's `last_seen` (O(1), no heap operation), and the host's queue
//! entry, which may now be early, is moved to its true deadline when it
//! surfaces. So a host costs one heap operation per timeout period instead
//! of one per beat, and a beat stays cheap at a million hosts. Only a beat
//! that makes a deadline *earlier* (a first beat, or a client declaring a
//! shorter interval) pushes an entry, and the older one becomes stale.

use super::events::{Event, EventKind};
use super::registry::{Host, HostState, Registry, Slot};
use super::stats::{BeatStats, SeqOutcome, track_seq};
use crate::config::ServerConfig;
use crate::detection::{DetectorKind, Rules};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One received beat, as the detector needs it.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The host's id (for legacy beats: its IP as text).
    pub host_id: &'a str,
    /// Where the beat came from.
    pub addr: SocketAddr,
    /// Sequence number; `None` for legacy beats, which carry none.
    pub seq: Option<u64>,
    /// The client's boot id; all zero when unknown.
    pub boot_id: [u8; 16],
    /// The interval the client declares, in milliseconds (0: unknown).
    pub interval_ms: u32,
    /// The client is shutting down cleanly.
    pub goodbye: bool,
    /// The client's send time, microseconds since the Unix epoch (0:
    /// unknown, e.g. legacy beats).
    pub sent_at_micros: u64,
}

/// The registry plus the deadline queue and the state machine over them.
pub struct Detector {
    registry: Registry,
    deadlines: BinaryHeap<Reverse<(Instant, Slot)>>,
    timeout: Duration,
    late_ratio: f64,
    rules: Rules,
    /// Zero of the millisecond clock of [`FlapState`] (compact per host).
    epoch: Instant,
    flap_window: Duration,
    flap_threshold: u16,
    totals: DetectionTotals,
}

/// Fleet-wide counts of what the beat statistics saw, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectionTotals {
    /// Beats lost (sequence gaps, less those that arrived late).
    pub lost: u64,
    /// Beats received more than once.
    pub duplicates: u64,
    /// Beats that arrived after a later one.
    pub reordered: u64,
    /// Hosts flapping now.
    pub flapping: u64,
}

// Seq numbers carry the client's start time (Unix seconds) in their high
// 32 bits and a beat counter in the low 32 (see docs/PROTOCOL.md): a gap
// within one client run is loss, a jump of the high half is a restart
// (`stats::track_seq`).

impl Detector {
    /// An empty detector with the server's timeout settings.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            registry: Registry::default(),
            deadlines: BinaryHeap::new(),
            timeout: config.timeout,
            late_ratio: config.late_ratio(),
            rules: config
                .detector_rules()
                .expect("ServerConfig::validate checks the detector rules"),
            epoch: Instant::now(),
            flap_window: config.flap_window,
            flap_threshold: config.flap_threshold,
            totals: DetectionTotals::default(),
        }
    }

    /// The host table, for reading.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A host's timeout: the silence after which it is `down`. Fixed
    /// detector: the server's (or its rule's), raised to 3 × its declared
    /// interval; phi: where phi reaches the threshold, from its statistics.
    pub fn timeout_for(&self, host: &Host) -> Duration {
        let rule = self.rules.get(host.rule);
        match rule.kind {
            DetectorKind::Fixed => rule
                .timeout
                .max(Duration::from_millis(u64::from(host.interval_ms)) * 3),
            DetectorKind::Phi => self.phi_silence(host, rule.phi.threshold),
        }
    }

    /// Silence after which `host`'s phi reaches `target`.
    fn phi_silence(&self, host: &Host, target: f64) -> Duration {
        let rule = self.rules.get(host.rule);
        let ms = rule.phi.silence_for(
            target,
            f64::from(host.stats.interval_mean_ms),
            f64::from(host.stats.interval_std_ms()),
            host.stats.loss(),
        );
        // Bounded so a wild estimate cannot overflow an Instant: a year.
        Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 365.0 * 86_400.0))
    }

    /// The silence after which `host` becomes `late`.
    fn late_silence(&self, host: &Host) -> Duration {
        let rule = self.rules.get(host.rule);
        match rule.kind {
            DetectorKind::Fixed => self.timeout_for(host).mul_f64(self.late_ratio),
            DetectorKind::Phi => self.phi_silence(host, rule.phi.late_threshold),
        }
    }

    /// Fleet-wide counts of losses, duplicates, reordering and flapping.
    pub fn totals(&self) -> DetectionTotals {
        self.totals
    }

    /// Which detector judges `host`.
    pub fn detector_kind(&self, host: &Host) -> DetectorKind {
        self.rules.get(host.rule).kind
    }

    /// Why `host` is (or is not) suspected at `now`: its phi (phi
    /// detector only) and a one-line explanation, e.g. "phi 9.1: beat 3.2 σ
    /// overdue".
    pub fn explain(&self, host: &Host, now: Instant) -> (Option<f64>, String) {
        let rule = self.rules.get(host.rule);
        let silent = now.saturating_duration_since(host.last_seen);
        let mean = f64::from(host.stats.interval_mean_ms);
        let std = f64::from(host.stats.interval_std_ms()).max(rule.phi.min_std_ms);
        match rule.kind {
            DetectorKind::Fixed => {
                let timeout = self.timeout_for(host);
                (
                    None,
                    format!(
                        "silent {:.1}s of a {:.1}s timeout",
                        silent.as_secs_f64(),
                        timeout.as_secs_f64()
                    ),
                )
            }
            DetectorKind::Phi => {
                let ms = silent.as_secs_f64() * 1000.0;
                let phi = rule.phi.phi(ms, mean, std, host.stats.loss());
                let overdue = (ms - rule.phi.pause_ms - mean) / std.max(1e-3);
                let missed = ((ms - rule.phi.pause_ms) / mean.max(1e-3)).floor().max(0.0);
                (
                    Some(phi),
                    format!(
                        "phi {phi:.1}: beat {overdue:.1} σ overdue ({missed} beats missed; loss {:.1} %, in bursts {:.1} %; down at phi {})",
                        host.stats.loss().first.max(rule.phi.min_loss) * 100.0,
                        host.stats.loss().next.max(rule.phi.min_loss) * 100.0,
                        rule.phi.threshold
                    ),
                )
            }
        }
    }

    fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// When `host` next changes state if it stays silent, if ever.
    fn due(&self, host: &Host) -> Option<Instant> {
        match host.state {
            HostState::Up => Some(host.last_seen + self.late_silence(host)),
            HostState::Late => Some(host.last_seen + self.timeout_for(host)),
            // A flapping host that stays down settles (and is then alerted
            // on) after a whole flap window.
            HostState::Down => host
                .flap
                .settles_at(self.flap_window_ms())
                .map(|ms| self.epoch + Duration::from_millis(ms)),
            HostState::Left => None,
        }
    }

    fn flap_window_ms(&self) -> u64 {
        u64::try_from(self.flap_window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Earliest pending deadline (possibly a stale or early entry, which only
    /// costs a spurious wake-up); the timer task sleeps until it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Records a beat received at `now` (`wall`: the same moment on the wall
    /// clock) and appends the state changes it causes to `events`.
    pub fn observe(
        &mut self,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) {
        let Some(slot) = self.registry.find(beat.host_id) else {
            self.join(beat, now, wall, events);
            return;
        };
        let host = self.registry.get_mut(slot);
        let silent_for = now.saturating_duration_since(host.last_seen);
        let mut changes = [None, None, None];
        if host.addr != beat.addr {
            tracing::info!(host = %host.id, from = %host.addr, to = %beat.addr, "host address changed");
            host.addr = beat.addr;
        }
        let rebooted =
            beat.boot_id != [0; 16] && host.boot_id != [0; 16] && beat.boot_id != host.boot_id;
        let alpha = self.rules.get(host.rule).alpha;
        // Only in-order beats of a host that was beating say anything of
        // its rhythm: a gap after `down` is an outage, not jitter.
        let mut rhythm = matches!(host.state, HostState::Up | HostState::Late) && !beat.goodbye;
        if beat.interval_ms > 0 && beat.interval_ms != host.interval_ms {
            // A new declared rhythm: what was learnt of the old one misleads
            // (a host slowing from 10 s to 60 s beats is not 6 beats late).
            let (duplicates, reordered) = (host.stats.duplicates, host.stats.reordered);
            host.stats = BeatStats::new(beat.interval_ms as f32);
            (host.stats.duplicates, host.stats.reordered) = (duplicates, reordered);
            rhythm = false;
        }
        let mut steps = 1;
        if let Some(seq) = beat.seq {
            if rebooted {
                host.seq = seq;
                host.stats.recent = 0;
                rhythm = false;
            } else {
                match track_seq(&mut host.seq, &mut host.stats.recent, seq) {
                    SeqOutcome::Next { lost } => {
                        host.losses += lost;
                        self.totals.lost += lost;
                        host.stats.add_losses(lost, alpha);
                        steps = lost + 1;
                    }
                    SeqOutcome::Reordered => {
                        host.losses = host.losses.saturating_sub(1);
                        self.totals.lost = self.totals.lost.saturating_sub(1);
                        self.totals.reordered += 1;
                        host.stats.reordered = host.stats.reordered.saturating_add(1);
                        rhythm = false;
                    }
                    SeqOutcome::Duplicate => {
                        host.stats.duplicates = host.stats.duplicates.saturating_add(1);
                        self.totals.duplicates += 1;
                        rhythm = false;
                    }
                    SeqOutcome::NewRun => rhythm = false,
                }
            }
        }
        if rhythm && beat.seq.is_none() {
            // Legacy beats carry no sequence: loss is invisible, and the
            // rhythm (gaps included) must carry it, as in classic phi.
            host.stats.add_losses(0, alpha);
        }
        if rhythm {
            host.stats
                .add_interval(silent_for.as_secs_f32() * 1000.0, steps, alpha);
        }
        if beat.sent_at_micros != 0 {
            let received = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let offset_micros = received as i128 - i128::from(beat.sent_at_micros);
            host.stats
                .add_clock_offset(offset_micros as f32 / 1000.0, alpha);
        }
        host.boot_id = beat.boot_id;
        host.interval_ms = beat.interval_ms;
        host.last_seen = now;
        host.last_seen_wall = wall;
        host.beats += 1;
        let next_state = if beat.goodbye {
            HostState::Left
        } else {
            HostState::Up
        };
        changes[0] = match (host.state, next_state) {
            (HostState::Left, HostState::Up) => Some(EventKind::Joined),
            (HostState::Late | HostState::Down, HostState::Up) => Some(EventKind::Recovered),
            (state, HostState::Left) if state != HostState::Left => Some(EventKind::Left),
            _ => None,
        };
        if rebooted {
            changes[1] = Some(EventKind::Rebooted);
        }
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let window_ms = u64::try_from(self.flap_window.as_millis()).unwrap_or(u64::MAX);
        if host.flap.try_settle(now_ms, window_ms) {
            changes[2] = Some(EventKind::Settled);
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        if changes[0].is_some() {
            host.state = next_state;
            host.since = wall;
        }
        for kind in changes.into_iter().flatten() {
            events.push(event(kind, host, wall, silent_for));
        }
        self.reschedule_if_earlier(slot);
    }

    fn join(
        &mut self,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) {
        let host = Host {
            id: beat.host_id.into(),
            addr: beat.addr,
            state: if beat.goodbye {
                HostState::Left
            } else {
                HostState::Up
            },
            since: wall,
            last_seen: now,
            last_seen_wall: wall,
            seq: beat.seq.unwrap_or(0),
            boot_id: beat.boot_id,
            interval_ms: beat.interval_ms,
            beats: 1,
            losses: 0,
            legacy: beat.seq.is_none(),
            scheduled: None,
            stats: BeatStats::new(if beat.interval_ms > 0 {
                beat.interval_ms as f32
            } else {
                // Legacy clients declare nothing: assume the seed's three
                // beats per timeout.
                self.timeout.as_secs_f32() * 1000.0 / 3.0
            }),
            rule: self.rules.index_for(beat.host_id),
            flap: Default::default(),
        };
        let kind = if beat.goodbye {
            EventKind::Left
        } else {
            EventKind::Joined
        };
        events.push(event(kind, &host, wall, Duration::ZERO));
        let slot = self.registry.insert(host);
        self.reschedule_if_earlier(slot);
    }

    /// Queues the host's deadline if it has none queued or its true deadline
    /// is now earlier than the queued one; a later one is left to surface.
    fn reschedule_if_earlier(&mut self, slot: Slot) {
        let host = self.registry.get(slot);
        let due = self.due(host);
        let host = self.registry.get_mut(slot);
        match (due, host.scheduled) {
            (Some(due), Some(scheduled)) if due >= scheduled => {}
            (Some(due), _) => {
                host.scheduled = Some(due);
                self.deadlines.push(Reverse((due, slot)));
            }
            (None, _) => host.scheduled = None,
        }
    }

    /// Processes every deadline at or before `now`: hosts silent past their
    /// warning time become `late`, past their timeout `down`. Appends the
    /// events to `events`.
    pub fn expire(&mut self, now: Instant, wall: SystemTime, events: &mut Vec<Event>) {
        while let Some(&Reverse((at, slot))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue;
            };
            if host.scheduled != Some(at) {
                continue; // stale: superseded by an earlier entry
            }
            host.scheduled = None;
            let host = self.registry.get(slot);
            let Some(due) = self.due(host) else { continue };
            if due <= now {
                let silent_for = now.saturating_duration_since(host.last_seen);
                let now_ms = self.millis_since_epoch(now);
                let (window_ms, threshold) = (self.flap_window_ms(), self.flap_threshold);
                let host = self.registry.get_mut(slot);
                if host.state == HostState::Down {
                    // Its only deadline while down: a flapping host settles.
                    if host.flap.try_settle(now_ms, window_ms) {
                        events.push(event(EventKind::Settled, host, wall, silent_for));
                        self.totals.flapping = self.totals.flapping.saturating_sub(1);
                    }
                } else {
                    let kind = if host.state == HostState::Up {
                        EventKind::Late
                    } else {
                        EventKind::Down
                    };
                    host.state = kind.state_after();
                    host.since = wall;
                    events.push(event(kind, host, wall, silent_for));
                    if kind == EventKind::Down && host.flap.on_down(now_ms, window_ms, threshold) {
                        events.push(event(EventKind::Flapping, host, wall, silent_for));
                        self.totals.flapping += 1;
                    }
                }
            }
            // Queue the next step: the true deadline of an early entry, or
            // `down` after `late` (at once if that is already due).
            self.reschedule_if_earlier(slot);
        }
    }
}

fn event(kind: EventKind, host: &Host, at: SystemTime, silent_for: Duration) -> Event {
    Event {
        id: 0,
        at,
        kind,
        host: Arc::from(&*host.id),
        addr: host.addr,
        silent_for,
    }
}

/// Runs the detector's clock until `shutdown`: sleeps until the earliest
/// deadline (or until `wake` says a beat queued an earlier one), expires it,
/// and publishes the events.
pub async fn run_timer(
    detector: Arc<Mutex<Detector>>,
    wake: Arc<Notify>,
    publish: impl Fn(Vec<Event>),
    shutdown: CancellationToken,
) {
    loop {
        let mut events = Vec::new();
        let next = {
            let mut detector = detector.lock().expect("detector lock");
            detector.expire(Instant::now(), SystemTime::now(), &mut events);
            detector.next_deadline()
        };
        if !events.is_empty() {
            publish(events);
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn detector() -> Detector {
        Detector::new(&ServerConfig {
            timeout: TIMEOUT,
            ..ServerConfig::default()
        })
    }

    fn beat(id: &str) -> Observation<'_> {
        Observation {
            host_id: id,
            addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
            seq: Some(1),
            boot_id: [1; 16],
            interval_ms: 10_000,
            goodbye: false,
            sent_at_micros: 0,
        }
    }

    /// Drives a detector on injected time: no clock, no sleeps.
    struct Sim {
        detector: Detector,
        start: Instant,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                detector: detector(),
                start: Instant::now(),
            }
        }
        fn at(&self, secs: f64) -> Instant {
            self.start + Duration::from_secs_f64(secs)
        }
        fn observe(&mut self, secs: f64, beat: Observation<'_>) -> Vec<(EventKind, String)> {
            let mut events = Vec::new();
            self.detector
                .observe(&beat, self.at(secs), SystemTime::now(), &mut events);
            kinds(events)
        }
        fn expire(&mut self, secs: f64) -> Vec<(EventKind, String)> {
            let mut events = Vec::new();
            self.detector
                .expire(self.at(secs), SystemTime::now(), &mut events);
            kinds(events)
        }
        fn state(&self, id: &str) -> HostState {
            let registry = self.detector.registry();
            registry.get(registry.find(id).expect("known host")).state
        }
    }

    fn kinds(events: Vec<Event>) -> Vec<(EventKind, String)> {
        events
            .into_iter()
            .map(|e| (e.kind, e.host.to_string()))
            .collect()
    }

    fn one(kind: EventKind, host: &str) -> Vec<(EventKind, String)> {
        vec![(kind, host.to_string())]
    }

    #[test]
    fn late_at_half_timeout_then_down_at_timeout_exactly() {
        let mut sim = Sim::new();
        assert_eq!(sim.observe(0.0, beat("a")), one(EventKind::Joined, "a"));
        assert_eq!(sim.detector.next_deadline(), Some(sim.at(15.0)));
        assert_eq!(sim.expire(14.999), vec![]);
        assert_eq!(sim.expire(15.0), one(EventKind::Late, "a"));
        assert_eq!(sim.detector.next_deadline(), Some(sim.at(30.0)));
        assert_eq!(sim.expire(29.999), vec![]);
        assert_eq!(sim.expire(30.0), one(EventKind::Down, "a"));
        assert_eq!(sim.state("a"), HostState::Down);
        assert_eq!(
            sim.detector.next_deadline(),
            None,
            "a down host has no deadline"
        );
    }

    #[test]
    fn beats_push_the_deadline_without_touching_the_queue() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        for t in 1..=10 {
            assert_eq!(sim.observe(f64::from(t) * 10.0, beat("a")), vec![]);
        }
        assert_eq!(
            sim.detector.deadlines.len(),
            1,
            "beats are O(1): no queue entries"
        );
        // The early entry (15 s) surfaces and moves to the true deadline.
        assert_eq!(sim.expire(100.0), vec![]);
        assert_eq!(sim.detector.next_deadline(), Some(sim.at(115.0)));
        assert_eq!(sim.expire(115.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn a_long_stall_yields_late_then_down_in_order() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        let events = sim.expire(100.0);
        assert_eq!(
            events,
            [one(EventKind::Late, "a"), one(EventKind::Down, "a")].concat()
        );
    }

    #[test]
    fn a_beat_recovers_late_and_down_hosts() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.expire(16.0);
        assert_eq!(sim.observe(17.0, beat("a")), one(EventKind::Recovered, "a"));
        assert_eq!(sim.state("a"), HostState::Up);
        sim.expire(60.0);
        assert_eq!(sim.state("a"), HostState::Down);
        assert_eq!(sim.observe(70.0, beat("a")), one(EventKind::Recovered, "a"));
        assert_eq!(sim.expire(84.9), vec![]);
        assert_eq!(
            sim.expire(85.0),
            one(EventKind::Late, "a"),
            "deadline counts from the new beat"
        );
    }

    #[test]
    fn goodbye_means_left_never_down() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        let bye = Observation {
            goodbye: true,
            ..beat("a")
        };
        assert_eq!(sim.observe(1.0, bye), one(EventKind::Left, "a"));
        assert_eq!(sim.expire(1000.0), vec![]);
        assert_eq!(sim.state("a"), HostState::Left);
        assert_eq!(
            sim.observe(1001.0, beat("a")),
            one(EventKind::Joined, "a"),
            "a left host rejoins"
        );
    }

    #[test]
    fn a_new_boot_id_is_a_reboot() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        let rebooted = Observation {
            boot_id: [2; 16],
            ..beat("a")
        };
        assert_eq!(sim.observe(5.0, rebooted), one(EventKind::Rebooted, "a"));
        assert_eq!(sim.state("a"), HostState::Up);
        // Down, then back after a reboot: both facts are reported.
        sim.expire(100.0);
        let again = Observation {
            boot_id: [3; 16],
            ..beat("a")
        };
        let events = sim.observe(101.0, again);
        assert_eq!(
            events,
            [
                one(EventKind::Recovered, "a"),
                one(EventKind::Rebooted, "a")
            ]
            .concat()
        );
        // An unknown (zero) boot id never counts as a reboot.
        let unknown = Observation {
            boot_id: [0; 16],
            ..beat("a")
        };
        assert_eq!(sim.observe(102.0, unknown), vec![]);
    }

    #[test]
    fn declared_interval_raises_the_timeout_floor() {
        let mut sim = Sim::new();
        let slow = Observation {
            interval_ms: 60_000,
            ..beat("slow")
        };
        sim.observe(0.0, slow);
        // 3 × 60 s = 180 s timeout; late at 90 s, not at 15 s.
        assert_eq!(sim.expire(89.9), vec![]);
        assert_eq!(sim.expire(90.0), one(EventKind::Late, "slow"));
        assert_eq!(sim.expire(180.0), one(EventKind::Down, "slow"));
    }

    #[test]
    fn a_shorter_declared_interval_brings_the_deadline_forward() {
        let mut sim = Sim::new();
        sim.observe(
            0.0,
            Observation {
                interval_ms: 60_000,
                ..beat("a")
            },
        );
        sim.observe(
            1.0,
            Observation {
                interval_ms: 1_000,
                ..beat("a")
            },
        );
        assert_eq!(sim.expire(15.999), vec![]);
        assert_eq!(sim.expire(16.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn only_the_silent_host_changes_state() {
        let mut sim = Sim::new();
        let ids: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
        for t in 0..10 {
            for (i, id) in ids.iter().enumerate() {
                if i != 7 || t < 2 {
                    sim.observe(f64::from(t) * 10.0, beat(id));
                }
            }
            sim.expire(f64::from(t) * 10.0 + 5.0);
        }
        let down: Vec<_> = ids
            .iter()
            .filter(|id| sim.state(id) == HostState::Down)
            .collect();
        assert_eq!(down, ["h7"]);
    }

    #[test]
    fn sequence_gaps_count_losses_within_one_client_run() {
        let mut sim = Sim::new();
        let run = 1_700_000_000u64 << 32;
        sim.observe(
            0.0,
            Observation {
                seq: Some(run),
                ..beat("a")
            },
        );
        sim.observe(
            1.0,
            Observation {
                seq: Some(run + 1),
                ..beat("a")
            },
        );
        sim.observe(
            2.0,
            Observation {
                seq: Some(run + 4),
                ..beat("a")
            },
        );
        sim.observe(
            3.0,
            Observation {
                seq: Some(run + 3),
                ..beat("a")
            },
        ); // arrives late: no longer lost
        let next_run = 1_700_000_100u64 << 32;
        sim.observe(
            4.0,
            Observation {
                seq: Some(next_run),
                ..beat("a")
            },
        ); // client restarted
        let registry = sim.detector.registry();
        let host = registry.get(registry.find("a").expect("known"));
        assert_eq!((host.losses, host.seq, host.beats), (1, next_run, 5));
        assert_eq!(host.stats.reordered, 1);
    }

    fn phi_sim() -> Sim {
        let config = ServerConfig {
            detector: DetectorKind::Phi,
            ..ServerConfig::default()
        };
        Sim {
            detector: Detector::new(&config),
            start: Instant::now(),
        }
    }

    fn phi_beats(sim: &mut Sim, id: &str, from: u64, to: u64, seq_of: impl Fn(u64) -> Option<u64>) {
        for i in from..to {
            let t = i as f64 * 10.0;
            sim.expire(t);
            sim.observe(
                t,
                Observation {
                    seq: seq_of(i),
                    ..beat(id)
                },
            );
        }
    }

    #[test]
    fn phi_declares_a_silent_host_at_its_deadline_and_explains_it() {
        let mut sim = phi_sim();
        let run = 1_700_000_000u64 << 32;
        phi_beats(&mut sim, "a", 0, 200, |i| Some(run + i));
        let last = 1990.0;
        // Loss-free and steady: late, then down, at phi's own deadlines
        // (an early queue entry may surface first and move to the true one).
        let next_event = |sim: &mut Sim| loop {
            let at = sim.detector.next_deadline().expect("scheduled");
            let mut events = Vec::new();
            sim.detector.expire(at, SystemTime::now(), &mut events);
            if !events.is_empty() {
                return (at.duration_since(sim.start).as_secs_f64(), kinds(events));
            }
        };
        let (late_at, events) = next_event(&mut sim);
        assert_eq!(events, one(EventKind::Late, "a"));
        assert!(
            late_at > last + 10.0 && late_at < last + 30.0,
            "late at {late_at}"
        );
        let (down_at, events) = next_event(&mut sim);
        assert_eq!(events, one(EventKind::Down, "a"));
        // phi 10 at the 1 % loss floor: five beats missed, then the sixth.
        assert!(
            down_at > last + 50.0 && down_at < last + 70.0,
            "down at {down_at}"
        );
        let registry = sim.detector.registry();
        let host = registry.get(registry.find("a").expect("known"));
        let (phi, why) = sim.detector.explain(host, sim.at(down_at));
        assert!((phi.expect("phi") - 10.0).abs() < 0.01, "{why}");
        assert!(why.starts_with("phi 10.0: beat "), "{why}");
    }

    #[test]
    fn phi_gives_lossy_hosts_more_silence_and_resets_on_a_new_interval() {
        let mut sim = phi_sim();
        let run = 1_700_000_000u64 << 32;
        phi_beats(&mut sim, "clean", 0, 500, |i| Some(run + i));
        // Every fifth beat lost: 20 % loss.
        phi_beats(&mut sim, "lossy", 0, 500, |i| {
            (i % 5 != 0).then_some(run + i)
        });
        let registry = sim.detector.registry();
        let timeout = |id| {
            let host = registry.get(registry.find(id).expect("known"));
            sim.detector.timeout_for(host)
        };
        assert!(timeout("lossy") > timeout("clean") + Duration::from_secs(20));
        // Legacy beats carry no sequence: the rhythm alone decides, and the
        // deadline stays finite and near the rhythm.
        phi_beats(&mut sim, "legacy", 0, 500, |_| None);
        let registry = sim.detector.registry();
        let legacy = registry.get(registry.find("legacy").expect("known"));
        assert!(sim.detector.timeout_for(legacy) < Duration::from_secs(120));
        // The client now declares 60 s: the learnt 10 s rhythm is dropped.
        sim.observe(
            5000.0,
            Observation {
                seq: Some(run + 500),
                interval_ms: 60_000,
                ..beat("clean")
            },
        );
        let registry = sim.detector.registry();
        let host = registry.get(registry.find("clean").expect("known"));
        assert_eq!(host.stats.interval_mean_ms, 60_000.0);
    }

    #[test]
    fn flapping_once_then_settled_at_its_deadline_even_while_down() {
        let config = ServerConfig {
            timeout: TIMEOUT,
            flap_window: Duration::from_secs(60),
            flap_threshold: 2,
            ..ServerConfig::default()
        };
        let mut sim = Sim {
            detector: Detector::new(&config),
            start: Instant::now(),
        };
        sim.observe(0.0, beat("a"));
        assert_eq!(
            sim.expire(30.0).last(),
            Some(&(EventKind::Down, "a".into()))
        );
        sim.observe(40.0, beat("a"));
        assert_eq!(
            sim.expire(70.0),
            [
                one(EventKind::Late, "a"),
                one(EventKind::Down, "a"),
                one(EventKind::Flapping, "a")
            ]
            .concat()
        );
        let flapping = |sim: &Sim| {
            let registry = sim.detector.registry();
            registry
                .get(registry.find("a").expect("known"))
                .flap
                .flapping
        };
        assert!(flapping(&sim));
        assert_eq!(sim.detector.totals().flapping, 1);
        // Still down a whole window after its last `down`: settled, and
        // still down (sinks now alert on it).
        // (Flap times are kept in tenths of a second.)
        let settle = sim.detector.next_deadline().expect("settle deadline");
        assert!(settle > sim.at(129.85) && settle <= sim.at(130.0));
        assert_eq!(sim.expire(129.8), vec![]);
        assert_eq!(sim.expire(130.0), one(EventKind::Settled, "a"));
        assert_eq!(sim.state("a"), HostState::Down);
        assert!(!flapping(&sim));
        assert_eq!(sim.detector.totals().flapping, 0);
        assert_eq!(sim.detector.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn timer_task_reports_at_the_deadline() {
        let detector = Arc::new(Mutex::new(detector()));
        let wake = Arc::new(Notify::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_timer(
            detector.clone(),
            wake.clone(),
            move |events| {
                events.into_iter().for_each(|e| {
                    let _ = tx.send((e.kind, Instant::now()));
                })
            },
            shutdown.clone(),
        ));
        let start = Instant::now();
        {
            let mut events = Vec::new();
            detector
                .lock()
                .unwrap()
                .observe(&beat("a"), start, SystemTime::now(), &mut events);
        }
        wake.notify_one();
        let (kind, at) = rx.recv().await.expect("late event");
        assert_eq!((kind, at - start), (EventKind::Late, TIMEOUT / 2));
        let (kind, at) = rx.recv().await.expect("down event");
        assert_eq!((kind, at - start), (EventKind::Down, TIMEOUT));
        shutdown.cancel();
        task.await.expect("timer task ends on shutdown");
    }
}
