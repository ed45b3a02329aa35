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

use super::dirty::DirtySet;
use super::events::{Event, EventKind};
use super::registry::{Clock, Host, HostState, Registry, Slot, boot_prefix, millis};
use super::replay;
use super::stall::{StallCounters, StallWatch};
use super::stats::{BeatStats, SeqOutcome, track_seq};
use crate::config::ServerConfig;
use crate::detection::{DetectorKind, Rules};
use prometheus_client::metrics::histogram::Histogram;
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

/// What [`Detector::observe`] did with a beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The beat was applied to its host (or added a new one).
    Applied,
    /// Refused: its seq was seen before or is below the host's window, and
    /// the server enforces the window (it has keys). Nothing changed.
    Replayed,
    /// Refused: a new host, but `max_hosts` are already tracked.
    HostLimit,
}

/// The registry plus the deadline queue and the state machine over them.
pub struct Detector {
    registry: Registry,
    /// Queue entries: the deadline in queue ticks (milliseconds after
    /// `queue_base`) in the high 32 bits, the slot in the low 32, so an
    /// entry is 8 bytes.
    deadlines: BinaryHeap<Reverse<u64>>,
    /// The clock host times are kept in.
    clock: Clock,
    /// Clock time of queue tick 0; moved forward (and the queue rebuilt)
    /// before ticks could overflow, about every 24 days.
    queue_base: u64,
    /// Clock time of the latest restore from the store: a remembered host's
    /// silence counts from no earlier than this (the server was away, not
    /// the host).
    restored_at: u64,
    timeout: Duration,
    late_ratio: f64,
    /// Hosts changed since the store's last checkpoint: joined, changed
    /// state, paused... written at the next checkpoint, which events
    /// trigger at once.
    dirty: DirtySet,
    /// Hosts that only beat since the store's last full checkpoint (new
    /// last-seen time, seq and counters): written at the periodic ones.
    beaten: DirtySet,
    /// Where stalls are counted (the metrics' counters, once linked).
    stall_counters: StallCounters,
    /// Refuse beats whose seq is not new (see `replay`): on with keys, where
    /// a seq cannot be forged; without keys it would protect nothing.
    enforce_seq: bool,
    max_hosts: usize,
    /// Hosts per state, indexed by [`HostState::index`]: kept on every
    /// transition so a scrape never scans a million hosts.
    counts: [u64; HostState::ALL.len()],
    /// How far past its deadline each late/down was declared.
    lag: Histogram,
    rules: Rules,
    /// Zero of the millisecond clock of [`FlapState`] (compact per host).
    epoch: Instant,
    flap_window: Duration,
    flap_threshold: u16,
    totals: DetectionTotals,
    /// Ids forgotten since the store's last checkpoint, to delete there.
    forgotten: Vec<Box<str>>,
}

/// Buckets of the detector lag histogram, in seconds: from 1 ms (the timer's
/// resolution) to 10 s (a stalled server).
const LAG_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0];

/// Seq numbers carry the client's start time (Unix seconds) in their high
/// 32 bits and a beat counter in the low 32 (see docs/PROTOCOL.md): a gap
/// within one client run is loss, a change of the high half is a restart.
const SEQ_RUN_SHIFT: u32 = 32;

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
        let epoch = Instant::now();
        let clock = Clock::new(epoch, SystemTime::now());
        Self {
            registry: Registry::default(),
            deadlines: BinaryHeap::new(),
            clock,
            queue_base: clock.ms(epoch).saturating_sub(1),
            restored_at: 0,
            timeout: config.timeout,
            late_ratio: config.late_ratio(),
            dirty: DirtySet::default(),
            beaten: DirtySet::default(),
            stall_counters: StallCounters::default(),
            enforce_seq: config.key_file.is_some(),
            max_hosts: config.max_hosts,
            counts: [0; HostState::ALL.len()],
            lag: Histogram::new(LAG_BUCKETS),
            rules: config
                .detector_rules()
                .expect("ServerConfig::validate checks the detector rules"),
            epoch,
            flap_window: config.flap_window,
            flap_threshold: config.flap_threshold,
            totals: DetectionTotals::default(),
            forgotten: Vec::new(),
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
                .max(Duration::from_millis(u64::from(host.interval_ms())) * 3),
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
        let silent =
            Duration::from_millis(self.clock.ms(now).saturating_sub(self.counted_from(host)));
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

    /// How long `host` has been silent at `now`.
    pub fn silent_for(&self, host: &Host, now: Instant) -> Duration {
        Duration::from_millis(self.clock.ms(now).saturating_sub(host.last_seen))
    }

    /// When the detector (and its clock) started: instants whole
    /// milliseconds after it are exact on the clock.
    pub fn started_at(&self) -> Instant {
        self.epoch
    }

    /// The clock host times are kept in.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Statistics for a host before its first interval is measured.
    fn fresh_stats(&self, interval_ms: u32) -> BeatStats {
        BeatStats::new(if interval_ms > 0 {
            interval_ms as f32
        } else {
            // Legacy clients declare nothing: assume the seed's three beats
            // per timeout.
            self.timeout.as_secs_f32() * 1000.0 / 3.0
        })
    }

    /// Where the silence the detector holds against `host` starts (clock
    /// ms): its last beat, but for a remembered host the restore at the
    /// earliest (one full timeout of grace: the server was away, not it).
    fn counted_from(&self, host: &Host) -> u64 {
        host.last_seen.max(self.restored_at)
    }

    /// When `host` next changes state if it stays silent, if ever (clock
    /// milliseconds, rounded up).
    fn due(&self, host: &Host) -> Option<u64> {
        let from = self.counted_from(host);
        let after = |silence: Duration| from.saturating_add(millis(silence, true));
        match host.state {
            HostState::Up => Some(after(self.late_silence(host))),
            HostState::Late => Some(after(self.timeout_for(host))),
            // A flapping host that stays down settles (and is then alerted
            // on) after a whole flap window.
            HostState::Down => host
                .flap
                .settles_at(self.flap_window_ms())
                .map(|ms| self.clock.ms_ceil(self.epoch + Duration::from_millis(ms))),
            HostState::Left | HostState::Paused => None,
        }
    }

    /// The queue tick of clock time `ms`, clamped into the tick range: a
    /// clamped entry only surfaces early, and is then moved to its true
    /// deadline like any early entry.
    fn tick(&self, ms: u64) -> u32 {
        u32::try_from(ms.saturating_sub(self.queue_base).max(1)).unwrap_or(u32::MAX)
    }

    fn push_deadline(&mut self, tick: u32, slot: Slot) {
        self.deadlines
            .push(Reverse((u64::from(tick) << 32) | u64::from(slot)));
    }

    fn flap_window_ms(&self) -> u64 {
        u64::try_from(self.flap_window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Earliest pending deadline (possibly a stale or early entry, which only
    /// costs a spurious wake-up); the timer task sleeps until it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .peek()
            .map(|Reverse(entry)| self.clock.instant(self.queue_base + (entry >> 32)))
    }

    /// Records a beat received at `now` (`wall`: the same moment on the wall
    /// clock) and appends the state changes it causes to `events`. A beat
    /// refused (replayed, or a new host past `max_hosts`) changes nothing.
    pub fn observe(
        &mut self,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) -> Observed {
        let slot = self.registry.find(beat.host_id);
        self.observe_found(slot, beat, now, wall, events)
    }

    /// [`Detector::observe`] for a beat whose host was already looked up
    /// (`found`: `registry().find(beat.host_id)`, or `None` when unknown
    /// then, which is looked up again: an earlier beat may have added it).
    /// Ingest looks up a whole batch first: the lookups' cache misses then
    /// overlap instead of queueing behind each beat's update.
    pub fn observe_found(
        &mut self,
        found: Option<Slot>,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) -> Observed {
        debug_assert!(found.is_none_or(|slot| self.registry.find(beat.host_id) == Some(slot)));
        let Some(slot) = found.or_else(|| self.registry.find(beat.host_id)) else {
            if self.registry.len() >= self.max_hosts {
                return Observed::HostLimit;
            }
            self.join(beat, now, wall, events);
            return Observed::Applied;
        };
        // Rounded up: deadlines count from it and must never come early.
        let now_ms = self.clock.ms_ceil(now);
        let host = self.registry.get(slot);
        let seq_check = beat
            .seq
            .map(|seq| replay::check(host.seq, host.recent_seqs, seq));
        if self.enforce_seq && seq_check.is_some_and(replay::SeqCheck::is_replay) {
            return Observed::Replayed;
        }
        if !self.registry.addr_is(slot, beat.addr) {
            tracing::info!(host = beat.host_id, from = %self.registry.addr(slot), to = %beat.addr, "host address changed");
            self.registry.set_addr(slot, beat.addr);
        }
        let host = self.registry.get_mut(slot);
        let silent_for = Duration::from_millis(now_ms.saturating_sub(host.last_seen));
        let mut changes = [None, None, None];
        let boot = boot_prefix(&beat.boot_id);
        let rebooted = boot != 0 && host.boot != 0 && boot != host.boot;
        let alpha = self.rules.get(host.rule).alpha;
        // Only in-order beats of a host that was beating say anything of
        // its rhythm: a gap after `down` is an outage, not jitter.
        let mut rhythm = matches!(host.state, HostState::Up | HostState::Late) && !beat.goodbye;
        // Whether the deadline may have moved earlier (see the end).
        // A changed declared interval (to 0 too) changes the timeout.
        let mut may_hasten = host.scheduled == 0
            || self.rules.get(host.rule).kind != DetectorKind::Fixed
            || !host.declares(beat.interval_ms);
        if beat.seq.is_none() && host.gap_uncounted() {
            // A restored legacy host: its first silence spans the server's
            // absence, not its rhythm (v1 hosts: see the seq below).
            host.set_gap_uncounted(false);
            rhythm = false;
        }
        if beat.interval_ms > 0 && !host.declares(beat.interval_ms) {
            // A new declared rhythm: what was learnt of the old one misleads
            // (a host slowing from 10 s to 60 s beats is not 6 beats late).
            let (duplicates, reordered) = (host.stats.duplicates, host.stats.reordered);
            host.stats = BeatStats::new(beat.interval_ms as f32);
            (host.stats.duplicates, host.stats.reordered) = (duplicates, reordered);
            rhythm = false;
        }
        let mut steps = 1;
        if let (Some(seq), Some(check)) = (beat.seq, seq_check) {
            // The statistics (loss, reordering, duplicates: `stats`) ...
            if rebooted {
                host.set_gap_uncounted(false);
                rhythm = false;
            } else {
                // The statistics' reordering window is the replay window
                // below the highest seq (one bitmap serves both).
                let (mut latest, mut below) = (host.seq, (host.recent_seqs >> 1) as u32);
                match track_seq(&mut latest, &mut below, seq) {
                    // A restored host's first gap spans the server's absence
                    // (a beat overtaken on the way does not end that).
                    SeqOutcome::Next { .. } if host.gap_uncounted() => {
                        host.set_gap_uncounted(false);
                        rhythm = false;
                    }
                    SeqOutcome::Reordered if host.gap_uncounted() => rhythm = false,
                    SeqOutcome::Next { lost } => {
                        host.losses = host
                            .losses
                            .saturating_add(u32::try_from(lost).unwrap_or(u32::MAX));
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
                    SeqOutcome::NewRun => {
                        host.set_gap_uncounted(false);
                        rhythm = false;
                    }
                }
            }
            // ... and the replay window (`replay`), which also feeds the
            // API's beat history.
            let same_run = seq >> SEQ_RUN_SHIFT == host.seq >> SEQ_RUN_SHIFT;
            match check {
                replay::SeqCheck::Newer { .. } | replay::SeqCheck::Reordered => {
                    replay::record(&mut host.seq, &mut host.recent_seqs, seq);
                }
                // Only reached without enforcement: a new run that numbers
                // lower (the client's clock went back) starts afresh.
                _ if rebooted || !same_run => {
                    replay::restart(&mut host.seq, &mut host.recent_seqs, seq);
                }
                _ => {}
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
            let received = wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
                d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
            });
            // In f64: exact for any plausible pair of times, and no 128-bit
            // arithmetic on the per-beat path.
            let offset_ms = (received as f64 - beat.sent_at_micros as f64) / 1000.0;
            host.stats.add_clock_offset(offset_ms as f32, alpha);
        }
        host.boot = boot;
        host.set_interval_ms(beat.interval_ms);
        host.last_seen = host.last_seen.max(now_ms);
        host.beats = host.beats.saturating_add(1);
        let next_state = if beat.goodbye {
            HostState::Left
        } else {
            HostState::Up
        };
        changes[0] = match (host.state, next_state) {
            // Paused by an operator: beats are recorded, the state is kept.
            (HostState::Paused, _) => None,
            (HostState::Left, HostState::Up) => Some(EventKind::Joined),
            (HostState::Late | HostState::Down, HostState::Up) => Some(EventKind::Recovered),
            (state, HostState::Left) if state != HostState::Left => Some(EventKind::Left),
            _ => None,
        };
        if rebooted {
            changes[1] = Some(EventKind::Rebooted);
        }
        let flap_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let window_ms = u64::try_from(self.flap_window.as_millis()).unwrap_or(u64::MAX);
        if host.flap.try_settle(flap_ms, window_ms) {
            changes[2] = Some(EventKind::Settled);
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        if changes[0].is_some() {
            count_move(&mut self.counts, host.state, next_state);
            host.state = next_state;
            host.set_since(wall);
            may_hasten = true;
        }
        if changes.iter().any(Option::is_some) {
            self.dirty.mark(slot);
        } else {
            self.beaten.mark(slot);
        }
        for kind in changes.into_iter().flatten() {
            events.push(self.event(kind, slot, wall, silent_for));
        }
        // The common beat (same state, same declared interval, fixed
        // timeout) only moves the deadline later: the queued entry stays,
        // early, and is moved when it surfaces. Skipping the computation
        // keeps the beat cheap.
        if may_hasten {
            self.reschedule_if_earlier(slot);
        }
        Observed::Applied
    }

    fn join(
        &mut self,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) {
        let state = if beat.goodbye {
            HostState::Left
        } else {
            HostState::Up
        };
        let mut host = Host::new(
            state,
            wall,
            self.clock.ms_ceil(now),
            self.fresh_stats(beat.interval_ms),
        );
        host.seq = beat.seq.unwrap_or(0);
        host.recent_seqs = u64::from(beat.seq.is_some());
        host.boot = boot_prefix(&beat.boot_id);
        host.set_interval_ms(beat.interval_ms);
        host.beats = 1;
        host.set_legacy(beat.seq.is_none());
        host.rule = self.rules.index_for(beat.host_id);
        self.counts[state.index()] += 1;
        let slot = self.registry.insert(host, beat.host_id, beat.addr);
        let kind = if beat.goodbye {
            EventKind::Left
        } else {
            EventKind::Joined
        };
        events.push(self.event(kind, slot, wall, Duration::ZERO));
        self.dirty.mark(slot);
        self.reschedule_if_earlier(slot);
    }

    /// An event about the host in `slot`.
    fn event(&self, kind: EventKind, slot: Slot, at: SystemTime, silent_for: Duration) -> Event {
        Event {
            id: 0,
            at,
            kind,
            host: Arc::from(self.registry.id(slot)),
            addr: self.registry.addr(slot),
            silent_for,
        }
    }

    /// Queues the host's deadline if it has none queued or its true deadline
    /// is now earlier than the queued one; a later one is left to surface.
    fn reschedule_if_earlier(&mut self, slot: Slot) {
        let due = self.due(self.registry.get(slot)).map(|ms| self.tick(ms));
        let host = self.registry.get_mut(slot);
        match due {
            Some(due) if host.scheduled != 0 && due >= host.scheduled => {}
            Some(due) => {
                host.scheduled = due;
                self.push_deadline(due, slot);
            }
            None => host.scheduled = 0,
        }
    }

    /// Processes every deadline at or before `now`: hosts silent past their
    /// warning time become `late`, past their timeout `down`. Appends the
    /// events to `events`.
    pub fn expire(&mut self, now: Instant, wall: SystemTime, events: &mut Vec<Event>) {
        let now_ms = self.clock.ms(now);
        if now_ms.saturating_sub(self.queue_base) >= 1 << 31 {
            self.rebuild_queue(now_ms);
        }
        while let Some(&Reverse(entry)) = self.deadlines.peek() {
            let (at, slot) = ((entry >> 32) as u32, entry as u32);
            if self.queue_base + u64::from(at) > now_ms {
                break;
            }
            self.deadlines.pop();
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue;
            };
            if host.scheduled != at {
                continue; // stale: superseded by an earlier entry
            }
            host.scheduled = 0;
            let host = self.registry.get(slot);
            let Some(due) = self.due(host) else { continue };
            if due <= now_ms {
                let silent_for = self.silent_for(host, now);
                let flap_ms = self.millis_since_epoch(now);
                let (window_ms, threshold) = (self.flap_window_ms(), self.flap_threshold);
                let host = self.registry.get_mut(slot);
                if host.state == HostState::Down {
                    // Its only deadline while down: a flapping host settles.
                    if host.flap.try_settle(flap_ms, window_ms) {
                        self.totals.flapping = self.totals.flapping.saturating_sub(1);
                        self.dirty.mark(slot);
                        events.push(self.event(EventKind::Settled, slot, wall, silent_for));
                    }
                } else {
                    let kind = if host.state == HostState::Up {
                        EventKind::Late
                    } else {
                        EventKind::Down
                    };
                    count_move(&mut self.counts, host.state, kind.state_after());
                    host.state = kind.state_after();
                    host.set_since(wall);
                    let flapping =
                        kind == EventKind::Down && host.flap.on_down(flap_ms, window_ms, threshold);
                    let due_at = self.clock.instant(due);
                    self.lag
                        .observe(now.saturating_duration_since(due_at).as_secs_f64());
                    events.push(self.event(kind, slot, wall, silent_for));
                    if flapping {
                        events.push(self.event(EventKind::Flapping, slot, wall, silent_for));
                        self.totals.flapping += 1;
                    }
                    self.dirty.mark(slot);
                }
            }
            // Queue the next step: the true deadline of an early entry, or
            // `down` after `late` (at once if that is already due).
            self.reschedule_if_earlier(slot);
        }
    }

    /// Requeues every host's deadline with tick 0 just before `now_ms`: for
    /// a stall, and before queue ticks could overflow. O(hosts), and rare.
    fn rebuild_queue(&mut self, now_ms: u64) {
        self.deadlines.clear();
        self.queue_base = now_ms.saturating_sub(1);
        for slot in 0..self.registry.slot_end() {
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue; // freed by a forget
            };
            host.scheduled = 0;
            self.reschedule_if_earlier(slot);
        }
    }
}

/// Persistence and stall handling: restoring remembered hosts, handing
/// changed hosts to the store, and forgiving the detector's own stalls.
impl Detector {
    /// Adds a host remembered by the store, as it was, restored at `now`,
    /// and schedules its next deadline: its silence counts from `now` at the
    /// earliest, so an `up` or `late` host gets one full timeout (the server
    /// was away, not the host). Not marked dirty: the store already has it.
    pub fn restore(&mut self, mut host: Host, id: &str, addr: SocketAddr, now: Instant) -> Slot {
        self.restored_at = self.restored_at.max(self.clock.ms(now));
        // Learnt rhythms are not stored: they are learnt again.
        host.stats = self.fresh_stats(host.interval_ms());
        host.rule = self.rules.index_for(id);
        host.scheduled = 0;
        let state = host.state;
        let slot = match self.registry.find(id) {
            Some(slot) => {
                let old = self.registry.replace(slot, host, addr);
                count_move(&mut self.counts, old.state, state);
                if old.flap.flapping {
                    self.totals.flapping = self.totals.flapping.saturating_sub(1);
                }
                slot
            }
            None => {
                self.counts[state.index()] += 1;
                self.registry.insert(host, id, addr)
            }
        };
        self.reschedule_if_earlier(slot);
        slot
    }

    /// The hosts changed since the last call, each once, and with `beats`
    /// also those that only beat; they count as clean from now on (a host
    /// that changes or beats again is marked again).
    pub fn take_dirty(&mut self, beats: bool) -> Vec<Slot> {
        let mut slots = self.dirty.take();
        // A changed host is written whole: its beats are written with it.
        for &slot in &slots {
            self.beaten.unmark(slot);
        }
        if beats {
            slots.extend(self.beaten.take());
        }
        slots
    }

    /// The ids forgotten since the last call, for the store to delete.
    pub fn take_forgotten(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.forgotten)
    }

    /// Puts back ids a failed checkpoint did not delete.
    pub fn unforget(&mut self, ids: Vec<Box<str>>) {
        self.forgotten.extend(ids);
    }

    /// Marks a host changed again (a checkpoint that failed to write it).
    pub fn mark_dirty(&mut self, slot: Slot) {
        if self.registry.try_get(slot).is_some() {
            self.dirty.mark(slot);
        }
    }

    /// Counts stalls in `counters` (the exported metrics).
    pub fn set_stall_counters(&mut self, counters: StallCounters) {
        self.stall_counters = counters;
    }

    /// How many hosts are waiting for a checkpoint (a host that both beat
    /// and changed may count twice).
    pub fn dirty_len(&self) -> usize {
        self.dirty.len() + self.beaten.len()
    }

    /// How far behind its own timer the detector may run before that counts
    /// as a stall of the server (suspended process, paused VM) rather than
    /// scheduling noise: a quarter of the timeout, so a stall is caught
    /// before it could turn beats that were merely queued into `down`s.
    pub fn stall_threshold(&self) -> Duration {
        self.timeout / 4
    }

    /// Forgives a stall of the server itself: every host that could still
    /// go late or down gets `stall` added to its silence clock (never past
    /// `now`), so the time the server was not looking is not counted against
    /// the fleet. Rebuilds the deadline queue: O(hosts), and rare.
    pub fn absorb_stall(&mut self, stall: Duration, now: Instant) {
        self.stall_counters.stalls.inc();
        self.stall_counters.seconds.inc_by(stall.as_secs_f64());
        // Rounded up: moved silence clocks must not make deadlines early.
        let now_ms = self.clock.ms_ceil(now);
        let stall_ms = millis(stall, true);
        for slot in 0..self.registry.slot_end() {
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue; // freed by a forget
            };
            if matches!(host.state, HostState::Up | HostState::Late) {
                host.last_seen = host.last_seen.saturating_add(stall_ms).min(now_ms);
            }
        }
        self.restored_at = self.restored_at.saturating_add(stall_ms).min(now_ms);
        self.rebuild_queue(now_ms);
    }
}

/// Operator actions on one host: pause, resume, forget.
impl Detector {
    /// How many hosts are in each state, indexed by [`HostState::index`].
    pub fn counts(&self) -> [u64; HostState::ALL.len()] {
        self.counts
    }

    /// The detector lag histogram (a handle: the metrics export it).
    pub fn lag_histogram(&self) -> Histogram {
        self.lag.clone()
    }

    /// Pauses `id` (maintenance): it raises no late/down until resumed.
    /// `Err` if unknown; `Ok(None)` if it was already paused.
    pub fn pause(&mut self, id: &str, wall: SystemTime) -> Result<Option<Event>, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        let host = self.registry.get_mut(slot);
        if host.state == HostState::Paused {
            return Ok(None);
        }
        count_move(&mut self.counts, host.state, HostState::Paused);
        host.state = HostState::Paused;
        host.set_since(wall);
        // Its queue entry, if any, is now stale (a paused host has no due).
        host.scheduled = 0;
        self.dirty.mark(slot);
        Ok(Some(self.event(
            EventKind::Paused,
            slot,
            wall,
            Duration::ZERO,
        )))
    }

    /// Resumes a paused `id` as `up` with a fresh full timeout from `now`
    /// (its silence during maintenance is not held against it).
    /// `Err` if unknown; `Ok(None)` if it was not paused.
    pub fn resume(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<Event>, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        if self.registry.get(slot).state != HostState::Paused {
            return Ok(None);
        }
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let now_ms = self.clock.ms_ceil(now);
        let host = self.registry.get_mut(slot);
        count_move(&mut self.counts, HostState::Paused, HostState::Up);
        host.state = HostState::Up;
        host.set_since(wall);
        // Deadlines count from `last_seen`: moving it to now is the grace.
        host.last_seen = host.last_seen.max(now_ms);
        let event = self.event(EventKind::Resumed, slot, wall, silent_for);
        self.dirty.mark(slot);
        self.reschedule_if_earlier(slot);
        Ok(Some(event))
    }

    /// Forgets `id`: removes it from the registry. Its queue entries stay
    /// behind and are skipped as stale when they surface.
    pub fn forget(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Event, UnknownHost> {
        let slot = self.registry.find(id).ok_or(UnknownHost)?;
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let event = self.event(EventKind::Forgotten, slot, wall, silent_for);
        let host = self.registry.remove(slot).ok_or(UnknownHost)?;
        self.counts[host.state.index()] -= 1;
        if host.flap.flapping {
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        self.forgotten.push(id.into());
        Ok(event)
    }
}

/// No host has that id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown host")]
pub struct UnknownHost;

fn count_move(counts: &mut [u64; HostState::ALL.len()], from: HostState, to: HostState) {
    counts[from.index()] -= 1;
    counts[to.index()] += 1;
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
    let watch = StallWatch::new(detector.lock().expect("detector lock").stall_threshold());
    let mut stall: Option<Duration> = None;
    loop {
        let mut events = Vec::new();
        let next = {
            let mut detector = detector.lock().expect("detector lock");
            let now = Instant::now();
            if let Some(stall) = stall.take() {
                // Before expiring: the stalled time must not count as silence.
                tracing::warn!(
                    "the server stalled for {:.3}s (suspended or starved); deadlines extended by that",
                    stall.as_secs_f64()
                );
                detector.absorb_stall(stall, now);
            }
            detector.expire(now, SystemTime::now(), &mut events);
            // Under the lock: see `Ingest::apply`.
            if !events.is_empty() {
                publish(std::mem::take(&mut events));
            }
            detector.next_deadline()
        };
        // Wake at least every tick even with no deadline near, so a stall is
        // seen as a late wake-up of this loop.
        let target = watch.next_wake(Instant::now(), next);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(target) => {}
        }
        stall = watch.check(target, Instant::now());
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
            let detector = detector();
            Self {
                start: detector.started_at(),
                detector,
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
    fn changes_are_written_at_every_checkpoint_plain_beats_at_full_ones() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        assert_eq!(sim.detector.take_dirty(false), [0, 1], "joins");
        sim.observe(
            1.0,
            Observation {
                seq: Some(2),
                ..beat("a")
            },
        );
        assert!(
            sim.detector.take_dirty(false).is_empty(),
            "a plain beat waits"
        );
        sim.expire(15.0);
        assert_eq!(sim.detector.take_dirty(false), [1], "b went late");
        assert_eq!(sim.detector.take_dirty(true), [0], "a's beat, once");
        assert!(sim.detector.take_dirty(true).is_empty());
        let a = Observation {
            seq: Some(3),
            ..beat("a")
        };
        sim.observe(16.0, a);
        sim.observe(
            16.0,
            Observation {
                seq: Some(2),
                ..beat("b")
            },
        );
        assert_eq!(sim.detector.take_dirty(false), [1], "b recovered");
        assert_eq!(sim.detector.take_dirty(true), [0]);
    }

    #[test]
    fn a_declared_interval_dropping_to_unknown_brings_the_deadline_forward() {
        let mut sim = Sim::new();
        let slow = Observation {
            interval_ms: 600_000,
            ..beat("a")
        };
        sim.observe(0.0, slow); // a 1800 s timeout: late at 900 s
        let unknown = Observation {
            interval_ms: 0,
            seq: Some(2),
            ..beat("a")
        };
        assert_eq!(sim.observe(600.0, unknown), vec![]);
        // The server's 30 s timeout again: late at 615 s, not 900 s.
        assert_eq!(sim.expire(614.9), vec![]);
        assert_eq!(sim.expire(615.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn a_one_day_interval_gets_its_three_day_timeout() {
        let mut sim = Sim::new();
        let daily = Observation {
            interval_ms: 86_400_000,
            ..beat("a")
        };
        sim.observe(0.0, daily);
        assert_eq!(sim.expire(3.0 * 86_400.0 / 2.0 - 1.0), vec![]);
        assert_eq!(sim.expire(3.0 * 86_400.0 / 2.0), one(EventKind::Late, "a"));
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
        ); // overtaken by run + 4: arrived after all, so not lost
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

    fn keyed_detector(max_hosts: usize) -> Detector {
        Detector::new(&ServerConfig {
            timeout: TIMEOUT,
            key_file: Some("keys.toml".into()),
            max_hosts,
            ..ServerConfig::default()
        })
    }

    fn observe_at(d: &mut Detector, at: Instant, seq: u64, goodbye: bool) -> Observed {
        let mut events = Vec::new();
        let beat = Observation {
            seq: Some(seq),
            goodbye,
            ..beat("a")
        };
        d.observe(&beat, at, SystemTime::now(), &mut events)
    }

    #[test]
    fn with_keys_a_replayed_seq_changes_nothing() {
        let mut d = keyed_detector(10);
        let t0 = d.started_at();
        let run = 1_700_000_000u64 << 32;
        for i in 0..5 {
            assert_eq!(observe_at(&mut d, t0, run + i, false), Observed::Applied);
        }
        let later = t0 + TIMEOUT * 2;
        let mut events = Vec::new();
        d.expire(later, SystemTime::now(), &mut events);
        let state = |d: &Detector| {
            let host = d.registry().get(d.registry().find("a").expect("known"));
            (host.state, host.last_seen, host.beats, host.seq)
        };
        let t0_ms = d.clock().ms(t0);
        assert_eq!(state(&d), (HostState::Down, t0_ms, 5, run + 4));
        // Every captured beat, the latest included, and a goodbye: refused.
        for i in 0..5 {
            assert_eq!(
                observe_at(&mut d, later, run + i, false),
                Observed::Replayed
            );
            assert_eq!(observe_at(&mut d, later, run + i, true), Observed::Replayed);
        }
        // An older client run (earlier start time) is a replay too.
        let older = (1_699_999_000u64 << 32) + 100;
        assert_eq!(observe_at(&mut d, later, older, false), Observed::Replayed);
        assert_eq!(state(&d), (HostState::Down, t0_ms, 5, run + 4));
        // A beat overtaken on the way still counts once; a new run works.
        assert_eq!(observe_at(&mut d, later, run + 7, false), Observed::Applied);
        assert_eq!(observe_at(&mut d, later, run + 6, false), Observed::Applied);
        assert_eq!(
            observe_at(&mut d, later, run + 6, false),
            Observed::Replayed
        );
        let next_run = 1_700_000_100u64 << 32;
        assert_eq!(
            observe_at(&mut d, later, next_run, false),
            Observed::Applied
        );
        let host = d.registry().get(d.registry().find("a").expect("known"));
        assert_eq!(
            (host.state, host.seq, host.recent_seqs),
            (HostState::Up, next_run, 1)
        );
    }

    #[test]
    fn recent_seqs_marks_which_beats_arrived() {
        let mut d = detector();
        let t0 = Instant::now();
        for seq in [10, 11, 13, 16, 12] {
            observe_at(&mut d, t0, seq, false);
        }
        let host = d.registry().get(d.registry().find("a").expect("known"));
        // seq 16 is bit 0; 13, 12, 11, 10 are bits 3 to 6; 14, 15 are lost.
        assert_eq!(
            (host.seq, host.recent_seqs, host.losses),
            (16, 0b111_1001, 2)
        );
        // Without keys a repeated seq is still a beat (the seed's behaviour).
        assert_eq!(observe_at(&mut d, t0, 16, false), Observed::Applied);
    }

    #[test]
    fn max_hosts_caps_new_hosts_only() {
        let mut d = keyed_detector(3);
        let t0 = Instant::now();
        let mut events = Vec::new();
        let ids = ["h0", "h1", "h2", "h3", "h4"];
        let got: Vec<Observed> = ids
            .iter()
            .map(|id| d.observe(&beat(id), t0, SystemTime::now(), &mut events))
            .collect();
        use Observed::{Applied, HostLimit};
        assert_eq!(got, [Applied, Applied, Applied, HostLimit, HostLimit]);
        assert_eq!(d.registry().len(), 3);
        let known = Observation {
            seq: Some(2),
            ..beat("h1")
        };
        assert_eq!(
            d.observe(&known, t0, SystemTime::now(), &mut events),
            Applied
        );
    }

    fn counts_of(sim: &Sim) -> Vec<(&'static str, u64)> {
        HostState::ALL
            .iter()
            .map(|s| (s.as_str(), sim.detector.counts()[s.index()]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    #[test]
    fn per_state_counts_follow_every_transition() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        sim.observe(
            0.0,
            Observation {
                goodbye: true,
                ..beat("c")
            },
        );
        assert_eq!(counts_of(&sim), [("up", 2), ("left", 1)]);
        sim.observe(10.0, beat("b"));
        sim.expire(16.0);
        assert_eq!(counts_of(&sim), [("up", 1), ("late", 1), ("left", 1)]);
        sim.expire(31.0);
        assert_eq!(counts_of(&sim), [("late", 1), ("down", 1), ("left", 1)]);
        let mut events = Vec::new();
        sim.detector
            .observe(&beat("a"), sim.at(32.0), SystemTime::now(), &mut events);
        sim.detector.pause("b", SystemTime::now()).expect("known");
        assert_eq!(counts_of(&sim), [("up", 1), ("left", 1), ("paused", 1)]);
        sim.detector
            .forget("c", sim.at(33.0), SystemTime::now())
            .expect("known");
        assert_eq!(counts_of(&sim), [("up", 1), ("paused", 1)]);
    }

    #[test]
    fn a_paused_host_raises_nothing_and_resumes_with_a_full_timeout() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        let paused = sim.detector.pause("a", SystemTime::now()).expect("known");
        assert_eq!(paused.map(|e| e.kind), Some(EventKind::Paused));
        assert_eq!(
            sim.detector.pause("a", SystemTime::now()),
            Ok(None),
            "pausing twice changes nothing"
        );
        assert_eq!(sim.expire(1000.0), vec![], "silent while paused: no alarm");
        assert_eq!(
            sim.observe(1001.0, beat("a")),
            vec![],
            "beats keep it paused"
        );
        assert_eq!(sim.state("a"), HostState::Paused);
        let resumed = sim
            .detector
            .resume("a", sim.at(2000.0), SystemTime::now())
            .expect("known");
        assert_eq!(resumed.map(|e| e.kind), Some(EventKind::Resumed));
        assert_eq!(sim.state("a"), HostState::Up);
        assert_eq!(sim.expire(2014.9), vec![], "a full timeout from the resume");
        assert_eq!(sim.expire(2015.0), one(EventKind::Late, "a"));
        assert_eq!(
            sim.detector.resume("a", sim.at(2016.0), SystemTime::now()),
            Ok(None)
        );
        assert_eq!(
            sim.detector.pause("nope", SystemTime::now()),
            Err(UnknownHost)
        );
    }

    #[test]
    fn forget_removes_the_host_and_its_stale_deadlines_are_skipped() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        let event = sim
            .detector
            .forget("a", sim.at(1.0), SystemTime::now())
            .expect("known");
        assert_eq!(event.kind, EventKind::Forgotten);
        assert!(sim.detector.registry().find("a").is_none());
        // The new host reuses a's slot; a's old entry (15 s) must not make it
        // late early.
        sim.observe(10.0, beat("c"));
        assert_eq!(sim.expire(15.0), one(EventKind::Late, "b"));
        assert_eq!(sim.expire(24.9), vec![]);
        assert_eq!(sim.expire(25.0), one(EventKind::Late, "c"));
        assert_eq!(
            sim.detector.forget("a", sim.at(26.0), SystemTime::now()),
            Err(UnknownHost)
        );
        // A forgotten host that beats again is a new host.
        assert_eq!(sim.observe(27.0, beat("a")), one(EventKind::Joined, "a"));
    }

    #[test]
    fn recent_seqs_marks_exactly_the_beats_received() {
        let mut sim = Sim::new();
        let run = 1_700_000_000u64 << 32;
        let at = |sim: &mut Sim, t: f64, seq: u64| {
            sim.observe(
                t,
                Observation {
                    seq: Some(run + seq),
                    ..beat("a")
                },
            );
        };
        let bits = |sim: &Sim| {
            let registry = sim.detector.registry();
            registry.get(registry.find("a").expect("known")).recent_seqs
        };
        at(&mut sim, 0.0, 0);
        assert_eq!(bits(&sim), 0b1);
        at(&mut sim, 1.0, 1);
        at(&mut sim, 2.0, 4); // 2 and 3 lost
        assert_eq!(bits(&sim), 0b11001);
        at(&mut sim, 3.0, 2); // 2 arrives late
        assert_eq!(bits(&sim), 0b11101);
        at(&mut sim, 4.0, 100); // a gap wider than the window
        assert_eq!(bits(&sim), 0b1);
        sim.observe(
            5.0,
            Observation {
                seq: Some((run + (1 << 32)) | 7),
                ..beat("a")
            },
        );
        assert_eq!(bits(&sim), 0b1, "a new client run starts afresh");
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
        assert_eq!({ host.stats.interval_mean_ms }, 60_000.0);
    }

    #[test]
    fn flapping_once_then_settled_at_its_deadline_even_while_down() {
        let config = ServerConfig {
            timeout: TIMEOUT,
            flap_window: Duration::from_secs(60),
            flap_threshold: 2,
            ..ServerConfig::default()
        };
        let detector = Detector::new(&config);
        let mut sim = Sim {
            start: detector.started_at(),
            detector,
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
