//! The monitoring core: each host's deadline and its state machine, pure.
//!
//! No sockets, no clock reads, no metrics, no logging, no async: every
//! method takes `now` (and the wall-clock `wall` where an event is stamped)
//! and reports what happened in an [`Outcome`] (events, how late each
//! `late`/`down` was declared, hosts that moved) that the server logs and
//! counts: the shape of boringtun's `decapsulate` → `TunnResult`.
//!
//! Time is `std::time::Instant`, passed in: the server converts tokio's
//! (paused-time) instants at its edge with `into_std`, so paused-time tests
//! drive the core exactly as real time does, and the core never names tokio.
//!
//! Deadlines live in a min-heap with *lazy rescheduling* ([`queue`]): a beat
//! only writes the host's `last_seen` (O(1), no heap operation), and the
//! host's queue entry, which may now be early, is moved to its true deadline
//! when it surfaces. So a host costs one heap operation per timeout period
//! instead of one per beat, and a beat stays cheap at a million hosts.
//!
//! One file per concern: [`model`] (states, events), [`registry`] (the
//! compact host table, [`Clock`]), [`queue`] (deadline heap), [`policy`]
//! (fixed/phi timeouts, `explain`), [`beat`] (applying one beat),
//! [`actions`] (pause, resume, forget), [`changes`] (what the store must
//! write, restore), [`stall`] (the server's own stalls), and the math:
//! [`phi`], [`stats`], [`replay`], [`flap`].

pub mod actions;
pub mod beat;
pub mod changes;
pub mod context;
pub mod depends;
pub mod flap;
pub mod groups;
pub mod labelsets;
pub mod maintenance;
pub mod model;
pub mod phi;
pub mod policy;
pub mod probe;
pub mod queue;
pub mod registry;
pub mod replay;
pub mod stall;
pub mod stats;
#[cfg(test)]
pub mod testing;

pub use labelsets::{Declared, LabelRule, LabelTable};
pub use model::{Event, EventKind, HostState, MONITOR_HOST};
pub use policy::{DetectorKind, Rule, Rules, Settings};
pub use registry::{Clock, Host, Registry, Slot};

use changes::Changes;
use queue::Queue;
use registry::millis;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One received beat, as the monitor needs it.
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
    /// The client answers probes (and the server can sign them so that it
    /// can check them): the host may be probed when it falls silent.
    pub answers_probes: bool,
    /// The nonce of the probe this beat answers.
    pub answers: Option<u64>,
}

impl<'a> Observation<'a> {
    /// A decoded v1 beat from `addr`.
    pub fn v1(beat: &crate::protocol::Beat<'a>, addr: SocketAddr) -> Self {
        Observation {
            host_id: beat.host_id,
            addr,
            seq: Some(beat.seq),
            boot_id: beat.boot_id,
            interval_ms: beat.interval_ms,
            goodbye: beat.is_goodbye(),
            sent_at_micros: beat.sent_at_micros,
            answers_probes: beat.answers_probes(),
            answers: beat.answers,
        }
    }

    /// A legacy `Thump!` beat of the host known as `host_id` (its IP as
    /// text), from `addr`: no seq, no boot id, no interval, no send time.
    pub fn legacy(host_id: &'a str, addr: SocketAddr) -> Self {
        Observation {
            host_id,
            addr,
            seq: None,
            boot_id: [0; 16],
            interval_ms: 0,
            goodbye: false,
            sent_at_micros: 0,
            answers_probes: false,
            answers: None,
        }
    }
}

/// Test shorthands for a beat that differs in one field from the test
/// kit's (`beat("a").with_seq(2)`).
#[cfg(test)]
impl Observation<'_> {
    /// With sequence number `seq`.
    pub fn with_seq(self, seq: u64) -> Self {
        Self {
            seq: Some(seq),
            ..self
        }
    }

    /// With the declared interval `interval_ms`.
    pub fn with_interval_ms(self, interval_ms: u32) -> Self {
        Self {
            interval_ms,
            ..self
        }
    }

    /// With the boot id `boot_id`.
    pub fn with_boot_id(self, boot_id: [u8; 16]) -> Self {
        Self { boot_id, ..self }
    }

    /// A goodbye.
    pub fn with_goodbye(self) -> Self {
        Self {
            goodbye: true,
            ..self
        }
    }
}

/// What [`Monitor::observe`] did with a beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The beat was applied to its host (or added a new one).
    Applied,
    /// Refused: its seq was seen before or is below the host's window, and
    /// the server enforces the window (it has keys). Nothing changed.
    Replayed,
    /// Refused: a new host, but `max_hosts` are already tracked.
    HostLimit,
    /// Refused: with keys, a legacy (unsigned, unnumbered) beat for a host
    /// that has sent numbered beats. Nothing changed.
    NotLegacy,
    /// Refused: it answers a probe the server did not send that host
    /// during its current suspicion (forged or replayed). Nothing changed.
    /// (An answer that comes after the suspicion ended is applied as an
    /// ordinary beat.)
    BadAnswer,
}

/// A host whose beats now come from another address (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// The host's id.
    pub host: Box<str>,
    /// Where it beat from before.
    pub from: SocketAddr,
    /// Where it beats from now.
    pub to: SocketAddr,
}

/// What a call into the monitor did, for the caller to act on: publish the
/// events, count the lags, log the moves. Reused across calls (its vectors
/// keep their capacity), so the per-beat path does not allocate.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// State changes, in the order they happened.
    pub events: Vec<Event>,
    /// For each `late` or `down` declared: how far past its deadline.
    pub lags: Vec<Duration>,
    /// Hosts that beat from a new address.
    pub moved: Vec<Moved>,
    /// Probes to send, answers received.
    pub probe: probe::ProbeOutcome,
}

impl Outcome {
    /// Empties it, keeping the capacity.
    pub fn clear(&mut self) {
        self.events.clear();
        self.lags.clear();
        self.moved.clear();
        self.probe.send.clear();
        self.probe.answered.clear();
    }
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

/// No host has that id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown host")]
pub struct UnknownHost;

/// The registry plus the deadline queue and the state machine over them.
pub struct Monitor {
    registry: Registry,
    queue: Queue,
    /// The clock host times are kept in.
    clock: Clock,
    /// Clock time of the latest restore from the store: a remembered host's
    /// silence counts from no earlier than this (the server was away, not
    /// the host).
    restored_at: u64,
    settings: Settings,
    /// What the store's next checkpoint must write.
    changes: Changes,
    /// Hosts per state, indexed by [`HostState::index`]: kept on every
    /// transition so a scrape never scans a million hosts.
    counts: [u64; HostState::ALL.len()],
    /// Zero of the millisecond clock of [`flap::FlapState`] (compact per
    /// host).
    epoch: Instant,
    totals: DetectionTotals,
    /// Groups and dependencies (side tables; empty unless declared).
    topo: groups::Topology,
    /// Maintenance windows and the hosts in them (a side table).
    maintenance: maintenance::Maintenance,
    /// Hosts under suspicion, being probed (a side table: see [`probe`]).
    probing: probe::Probing,
    /// Interned label sets (see [`labelsets`]).
    labels: LabelTable,
    /// The server's label rules.
    label_rules: Vec<LabelRule>,
    /// Some rule selects by network: a host's move may relabel it.
    rules_use_networks: bool,
    /// What the fleet showed of its loss, where a new host starts.
    fleet_loss: stats::FleetLoss,
}

impl Monitor {
    /// An empty monitor judging by `settings`, started at `now` (`wall`:
    /// the same moment on the wall clock, which host times read as).
    pub fn new(settings: Settings, now: Instant, wall: SystemTime) -> Self {
        let clock = Clock::new(now, wall);
        Self {
            registry: Registry::default(),
            queue: Queue::new(clock.ms(now).saturating_sub(1)),
            clock,
            restored_at: 0,
            settings,
            changes: Changes::default(),
            counts: [0; HostState::ALL.len()],
            epoch: now,
            totals: DetectionTotals::default(),
            topo: groups::Topology::default(),
            maintenance: maintenance::Maintenance::default(),
            probing: probe::Probing::default(),
            labels: LabelTable::default(),
            label_rules: Vec::new(),
            rules_use_networks: false,
            fleet_loss: stats::FleetLoss::default(),
        }
    }

    /// What the fleet's hosts showed of their loss, which a
    /// new host's loss model starts from (see [`stats::FleetLoss`]).
    pub fn fleet_loss(&self) -> stats::FleetLoss {
        self.fleet_loss
    }

    /// Starts from a fleet that showed `fleet` (the store's, after a
    /// restart; the simulator's established fleet).
    pub fn set_fleet_loss(&mut self, fleet: stats::FleetLoss) {
        self.fleet_loss = fleet;
    }

    /// `host`'s loss model in this fleet.
    pub(super) fn loss_of(&self, host: &Host) -> phi::Loss {
        host.stats
            .loss(self.fleet_loss.burst_excess().unwrap_or(0.0))
    }

    /// The host table, for reading.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The settings it judges by.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Fleet-wide counts of losses, duplicates, reordering and flapping.
    pub fn totals(&self) -> DetectionTotals {
        self.totals
    }

    /// How many hosts are in each state, indexed by [`HostState::index`].
    pub fn counts(&self) -> [u64; HostState::ALL.len()] {
        self.counts
    }

    /// When the monitor (and its clock) started: instants whole
    /// milliseconds after it are exact on the clock.
    pub fn started_at(&self) -> Instant {
        self.epoch
    }

    /// The clock host times are kept in.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// How long `host` has been silent at `now`: since its latest recorded
    /// beat (an upper bound when [`Monitor::silent_at_least`] says so).
    pub fn silent_for(&self, host: &Host, now: Instant) -> Duration {
        Duration::from_millis(self.clock.ms(now).saturating_sub(host.last_seen))
    }

    /// For a host not heard since the server restarted: the silence it has
    /// surely had at `now`, since the restart. Its latest recorded beat is
    /// from the store, and it may have beaten unheard after the store's
    /// latest checkpoint or while the server was away, so its true silence
    /// lies between this and [`Monitor::silent_for`]. `None` when the
    /// silence is known exactly.
    pub fn silent_at_least(&self, host: &Host, now: Instant) -> Option<Duration> {
        self.unheard_since_restore(host.last_seen, self.clock.ms(now))
    }

    /// [`Monitor::silent_at_least`] in clock milliseconds.
    fn unheard_since_restore(&self, last_seen: u64, now_ms: u64) -> Option<Duration> {
        (last_seen < self.restored_at)
            .then(|| Duration::from_millis(now_ms.saturating_sub(self.restored_at)))
    }

    /// `at` in the flap state's milliseconds (since the monitor started).
    fn flap_ms(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.epoch), false)
    }

    fn flap_window_ms(&self) -> u64 {
        millis(self.settings.flap_window, false)
    }

    /// Every host now `down`, as the `down` events that made them so (for
    /// sinks that must re-assert alerts at start, e.g. Alertmanager), and
    /// every group now `down`.
    pub fn down_events(&self) -> Vec<Event> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(self.clock.ms(self.epoch));
        let groups = self.group_down_events(start);
        self.registry
            .iter()
            .filter(|(_, host)| host.state == HostState::Down)
            .map(|(slot, host)| Event {
                silent_for: host
                    .since()
                    .duration_since(host.last_seen_wall())
                    .unwrap_or_default(),
                ..self.event(EventKind::Down, slot, host.since(), Duration::ZERO)
            })
            .chain(groups)
            .collect()
    }

    /// An event about the host in `slot`, carrying its state as it is now.
    fn event(&self, kind: EventKind, slot: Slot, at: SystemTime, silent_for: Duration) -> Event {
        let host = self.registry.get(slot);
        Event {
            addr: self.registry.addr(slot),
            silent_for,
            state: host.state,
            flapping: host.flap.flapping,
            fleet: self.registry.len(),
            labels: self.labels_arc(slot).clone(),
            context: self.context_of(slot),
            ..Event::new(kind, Arc::from(self.registry.id(slot)), at)
        }
    }

    /// [`Monitor::event`] about a silence known only within bounds when
    /// `at_least` is set (see [`Event::silent_at_least`]).
    fn bounded_event(
        &self,
        kind: EventKind,
        slot: Slot,
        at: SystemTime,
        silent_for: Duration,
        at_least: Option<Duration>,
    ) -> Event {
        Event {
            silent_at_least: at_least,
            ..self.event(kind, slot, at, silent_for)
        }
    }

    /// Records a beat received at `now` (`wall`: the same moment on the wall
    /// clock) and adds what it caused to `out`. A beat refused (replayed,
    /// or a new host past `max_hosts`) changes nothing.
    pub fn observe(
        &mut self,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) -> Observed {
        let slot = self.registry.find(beat.host_id);
        self.observe_found(slot, beat, now, wall, out)
    }

    /// Processes every deadline at or before `now`: hosts silent past their
    /// warning time become `late`, past their timeout `down`, and a flapping
    /// host that stayed down a whole window settles. Adds the events, and
    /// how late each was declared, to `out`.
    pub fn expire(&mut self, now: Instant, wall: SystemTime, out: &mut Outcome) {
        let now_ms = self.clock.ms(now);
        if self.queue.near_overflow(now_ms) {
            self.rebuild_queue(now_ms);
        }
        while let Some((at, slot)) = self.queue.pop_due(now_ms) {
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue;
            };
            if host.scheduled != at {
                continue; // stale: superseded by an earlier entry
            }
            host.scheduled = 0;
            let Some(due) = self.due_at(slot) else {
                continue;
            };
            if due <= now_ms {
                self.declare(slot, due, now, wall, out);
            }
            // Queue the next step: the true deadline of an early entry, or
            // `down` after `late` (at once if that is already due).
            self.reschedule_if_earlier(slot);
        }
        self.run_probes(now, wall, out);
    }

    /// The transition of the host in `slot`, whose deadline `due` (clock
    /// ms) has passed at `now`.
    fn declare(&mut self, slot: Slot, due: u64, now: Instant, wall: SystemTime, out: &mut Outcome) {
        if self.registry.get(slot).state == HostState::Maintenance {
            self.window_over(slot, due, now, wall, out);
            return;
        }
        // Silent, but selected by a window opened before it joined.
        if self.adopt(slot, now, wall, out) {
            return;
        }
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let at_least = self.silent_at_least(self.registry.get(slot), now);
        let flap_ms = self.flap_ms(now);
        let (window_ms, threshold) = (self.flap_window_ms(), self.settings.flap_threshold);
        let status = self.parent_status(slot);
        let host = self.registry.get_mut(slot);
        if host.state == HostState::Down {
            // Its only deadline while down: a flapping host settles.
            if host.flap.try_settle(flap_ms, window_ms) {
                self.totals.flapping = self.totals.flapping.saturating_sub(1);
                self.changes.mark(slot);
                out.events.push(self.bounded_event(
                    EventKind::Settled,
                    slot,
                    wall,
                    silent_for,
                    at_least,
                ));
            }
            return;
        }
        let from = host.state;
        let mut kind = if from == HostState::Up {
            EventKind::Late
        } else {
            EventKind::Down
        };
        if kind == EventKind::Down && self.probe_holds(slot) {
            return; // its probes decide (see `probe`)
        }
        if kind == EventKind::Down {
            // Dependencies (see `depends`): wait for a silent parent's
            // verdict; behind a down one, unreachable instead of down.
            match status {
                groups::Status::Pending => return self.hold(slot),
                groups::Status::Blocked if from == HostState::Unreachable => {
                    return self.end_grace(slot);
                }
                groups::Status::Blocked => kind = EventKind::Unreachable,
                groups::Status::Clear => {}
            }
        }
        let host = self.registry.get_mut(slot);
        host.state = kind.state_after();
        host.set_since(wall);
        let flapping = kind == EventKind::Down && host.flap.on_down(flap_ms, window_ms, threshold);
        if flapping {
            self.totals.flapping += 1;
        }
        let due_at = self.clock.instant(due);
        out.lags.push(now.saturating_duration_since(due_at));
        let behind = self.transition(slot, from, kind.state_after(), self.clock.ms(now), wall);
        let mut event = self.bounded_event(kind, slot, wall, silent_for, at_least);
        if !behind.is_empty() {
            let context = event.context.as_deref().cloned().unwrap_or_default();
            event.context = Some(Arc::new(depends::with_behind(context, behind)));
        }
        out.events.push(event);
        if flapping {
            out.events.push(self.bounded_event(
                EventKind::Flapping,
                slot,
                wall,
                silent_for,
                at_least,
            ));
        }
        self.take_knock_on(out);
        self.changes.mark(slot);
        match kind {
            EventKind::Late => self.start_probing(slot, self.clock.ms(now)),
            _ => self.down_declared(slot, out),
        }
    }
}

fn count_move(counts: &mut [u64; HostState::ALL.len()], from: HostState, to: HostState) {
    counts[from.index()] -= 1;
    counts[to.index()] += 1;
}

#[cfg(test)]
mod tests {
    use super::testing::{Sim, TIMEOUT, beat, kinds, one, settings, settings_of};
    use super::*;

    fn monitor() -> Monitor {
        Sim::new().monitor
    }

    /// A monitor that heard one beat of `id`, at 0 s.
    fn beating(id: &str) -> Sim {
        let mut sim = Sim::new();
        sim.observe(0.0, beat(id));
        sim
    }

    #[test]
    fn changes_are_written_at_every_checkpoint_plain_beats_at_full_ones() {
        let mut sim = beating("a");
        sim.observe(0.0, beat("b"));
        assert_eq!(sim.monitor.take_dirty(false), [0, 1], "joins");
        sim.observe(1.0, beat("a").with_seq(2));
        assert!(
            sim.monitor.take_dirty(false).is_empty(),
            "a plain beat waits"
        );
        sim.expire(15.0);
        assert_eq!(sim.monitor.take_dirty(false), [1], "b went late");
        assert_eq!(sim.monitor.take_dirty(true), [0], "a's beat, once");
        assert!(sim.monitor.take_dirty(true).is_empty());
        let a = beat("a").with_seq(3);
        sim.observe(16.0, a);
        sim.observe(16.0, beat("b").with_seq(2));
        assert_eq!(sim.monitor.take_dirty(false), [1], "b recovered");
        assert_eq!(sim.monitor.take_dirty(true), [0]);
    }

    #[test]
    fn a_declared_interval_dropping_to_unknown_brings_the_deadline_forward() {
        let mut sim = Sim::new();
        let slow = beat("a").with_interval_ms(600_000);
        sim.observe(0.0, slow); // a 1800 s timeout: late at 900 s
        let unknown = beat("a").with_interval_ms(0).with_seq(2);
        assert_eq!(sim.observe(600.0, unknown), vec![]);
        // The server's 30 s timeout again: late at 615 s, not 900 s.
        assert_eq!(sim.expire(614.9), vec![]);
        assert_eq!(sim.expire(615.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn a_one_day_interval_gets_its_three_day_timeout() {
        let mut sim = Sim::new();
        let daily = beat("a").with_interval_ms(86_400_000);
        sim.observe(0.0, daily);
        assert_eq!(sim.expire(3.0 * 86_400.0 / 2.0 - 1.0), vec![]);
        assert_eq!(sim.expire(3.0 * 86_400.0 / 2.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn late_at_half_timeout_then_down_at_timeout_exactly() {
        let mut sim = Sim::new();
        assert_eq!(sim.observe(0.0, beat("a")), one(EventKind::Joined, "a"));
        assert_eq!(sim.monitor.next_deadline(), Some(sim.at(15.0)));
        assert_eq!(sim.expire(14.999), vec![]);
        assert_eq!(sim.expire(15.0), one(EventKind::Late, "a"));
        assert_eq!(sim.monitor.next_deadline(), Some(sim.at(30.0)));
        assert_eq!(sim.expire(29.999), vec![]);
        assert_eq!(sim.expire(30.0), one(EventKind::Down, "a"));
        assert_eq!(sim.state("a"), HostState::Down);
        assert_eq!(
            sim.monitor.next_deadline(),
            None,
            "a down host has no deadline"
        );
    }

    #[test]
    fn beats_push_the_deadline_without_touching_the_queue() {
        let mut sim = beating("a");
        for t in 1..=10 {
            assert_eq!(sim.observe(f64::from(t) * 10.0, beat("a")), vec![]);
        }
        assert_eq!(
            sim.monitor.queue.len(),
            1,
            "beats are O(1): no queue entries"
        );
        // The early entry (15 s) surfaces and moves to the true deadline.
        assert_eq!(sim.expire(100.0), vec![]);
        assert_eq!(sim.monitor.next_deadline(), Some(sim.at(115.0)));
        assert_eq!(sim.expire(115.0), one(EventKind::Late, "a"));
    }

    #[test]
    fn a_long_stall_yields_late_then_down_in_order() {
        let mut sim = beating("a");
        let events = sim.expire(100.0);
        assert_eq!(
            events,
            [one(EventKind::Late, "a"), one(EventKind::Down, "a")].concat()
        );
    }

    #[test]
    fn a_beat_recovers_late_and_down_hosts() {
        let mut sim = beating("a");
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
        let mut sim = beating("a");
        let bye = beat("a").with_goodbye();
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
        let mut sim = beating("a");
        let rebooted = beat("a").with_boot_id([2; 16]);
        assert_eq!(sim.observe(5.0, rebooted), one(EventKind::Rebooted, "a"));
        assert_eq!(sim.state("a"), HostState::Up);
        // Down, then back after a reboot: both facts are reported.
        sim.expire(100.0);
        let again = beat("a").with_boot_id([3; 16]);
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
        let unknown = beat("a").with_boot_id([0; 16]);
        assert_eq!(sim.observe(102.0, unknown), vec![]);
    }

    #[test]
    fn declared_interval_raises_the_timeout_floor() {
        let mut sim = Sim::new();
        let slow = beat("slow").with_interval_ms(60_000);
        sim.observe(0.0, slow);
        // 3 × 60 s = 180 s timeout; late at 90 s, not at 15 s.
        assert_eq!(sim.expire(89.9), vec![]);
        assert_eq!(sim.expire(90.0), one(EventKind::Late, "slow"));
        assert_eq!(sim.expire(180.0), one(EventKind::Down, "slow"));
    }

    #[test]
    fn a_shorter_declared_interval_brings_the_deadline_forward() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a").with_interval_ms(60_000));
        sim.observe(1.0, beat("a").with_interval_ms(1_000));
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
        sim.observe(0.0, beat("a").with_seq(run));
        sim.observe(1.0, beat("a").with_seq(run + 1));
        sim.observe(2.0, beat("a").with_seq(run + 4));
        // Overtaken by run + 4: arrived after all, so not lost.
        sim.observe(3.0, beat("a").with_seq(run + 3));
        let next_run = 1_700_000_100u64 << 32;
        sim.observe(4.0, beat("a").with_seq(next_run)); // client restarted
        let registry = sim.monitor.registry();
        let host = registry.get(registry.find("a").expect("known"));
        assert_eq!((host.losses, host.seq, host.beats), (1, next_run, 5));
        assert_eq!(host.stats.reordered, 1);
    }

    fn keyed_monitor(max_hosts: usize) -> Monitor {
        let settings = Settings {
            enforce_seq: true,
            max_hosts,
            ..settings()
        };
        Sim::with(settings).monitor
    }

    fn observe_at(d: &mut Monitor, at: Instant, seq: u64, goodbye: bool) -> Observed {
        let beat = Observation {
            seq: Some(seq),
            goodbye,
            ..beat("a")
        };
        d.observe(&beat, at, SystemTime::now(), &mut Outcome::default())
    }

    #[test]
    fn with_keys_a_replayed_seq_changes_nothing() {
        let mut d = keyed_monitor(10);
        let t0 = d.started_at();
        let run = 1_700_000_000u64 << 32;
        for i in 0..5 {
            assert_eq!(observe_at(&mut d, t0, run + i, false), Observed::Applied);
        }
        let later = t0 + TIMEOUT * 2;
        d.expire(later, SystemTime::now(), &mut Outcome::default());
        let state = |d: &Monitor| {
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
        let mut d = monitor();
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
        let mut d = keyed_monitor(3);
        let t0 = Instant::now();
        let mut events = Outcome::default();
        let ids = ["h0", "h1", "h2", "h3", "h4"];
        let got: Vec<Observed> = ids
            .iter()
            .map(|id| d.observe(&beat(id), t0, SystemTime::now(), &mut events))
            .collect();
        use Observed::{Applied, HostLimit};
        assert_eq!(got, [Applied, Applied, Applied, HostLimit, HostLimit]);
        assert_eq!(d.registry().len(), 3);
        let known = beat("h1").with_seq(2);
        assert_eq!(
            d.observe(&known, t0, SystemTime::now(), &mut events),
            Applied
        );
    }

    fn counts_of(sim: &Sim) -> Vec<(&'static str, u64)> {
        HostState::ALL
            .iter()
            .map(|s| (s.as_str(), sim.monitor.counts()[s.index()]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    #[test]
    fn per_state_counts_follow_every_transition() {
        let mut sim = beating("a");
        sim.observe(0.0, beat("b"));
        sim.observe(0.0, beat("c").with_goodbye());
        assert_eq!(counts_of(&sim), [("up", 2), ("left", 1)]);
        sim.observe(10.0, beat("b"));
        sim.expire(16.0);
        assert_eq!(counts_of(&sim), [("up", 1), ("late", 1), ("left", 1)]);
        sim.expire(31.0);
        assert_eq!(counts_of(&sim), [("late", 1), ("down", 1), ("left", 1)]);
        sim.observe(32.0, beat("a"));
        sim.monitor
            .pause("b", sim.at(32.0), SystemTime::now())
            .expect("known");
        assert_eq!(counts_of(&sim), [("up", 1), ("left", 1), ("paused", 1)]);
        sim.monitor
            .forget("c", sim.at(33.0), SystemTime::now())
            .expect("known");
        assert_eq!(counts_of(&sim), [("up", 1), ("paused", 1)]);
    }

    #[test]
    fn a_paused_host_raises_nothing_and_resumes_with_a_full_timeout() {
        let mut sim = beating("a");
        let paused = sim
            .monitor
            .pause("a", sim.at(0.0), SystemTime::now())
            .expect("known");
        assert_eq!(paused.map(|e| e.kind), Some(EventKind::Paused));
        assert_eq!(
            sim.monitor.pause("a", sim.at(0.0), SystemTime::now()),
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
            .monitor
            .resume("a", sim.at(2000.0), SystemTime::now())
            .expect("known");
        assert_eq!(resumed.map(|e| e.kind), Some(EventKind::Resumed));
        assert_eq!(sim.state("a"), HostState::Up);
        assert_eq!(sim.expire(2014.9), vec![], "a full timeout from the resume");
        assert_eq!(sim.expire(2015.0), one(EventKind::Late, "a"));
        assert_eq!(
            sim.monitor.resume("a", sim.at(2016.0), SystemTime::now()),
            Ok(None)
        );
        assert_eq!(
            sim.monitor.pause("nope", sim.at(2016.0), SystemTime::now()),
            Err(UnknownHost)
        );
    }

    #[test]
    fn forget_removes_the_host_and_its_stale_deadlines_are_skipped() {
        let mut sim = beating("a");
        sim.observe(0.0, beat("b"));
        let event = sim
            .monitor
            .forget("a", sim.at(1.0), SystemTime::now())
            .expect("known");
        assert_eq!(event.kind, EventKind::Forgotten);
        assert!(sim.monitor.registry().find("a").is_none());
        // The new host reuses a's slot; a's old entry (15 s) must not make it
        // late early.
        sim.observe(10.0, beat("c"));
        assert_eq!(sim.expire(15.0), one(EventKind::Late, "b"));
        assert_eq!(sim.expire(24.9), vec![]);
        assert_eq!(sim.expire(25.0), one(EventKind::Late, "c"));
        assert_eq!(
            sim.monitor.forget("a", sim.at(26.0), SystemTime::now()),
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
            sim.observe(t, beat("a").with_seq(run + seq));
        };
        let bits = |sim: &Sim| {
            let registry = sim.monitor.registry();
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
        sim.observe(5.0, beat("a").with_seq((run + (1 << 32)) | 7));
        assert_eq!(bits(&sim), 0b1, "a new client run starts afresh");
    }

    fn phi_sim() -> Sim {
        Sim::with(settings_of(DetectorKind::Phi))
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
            let at = sim.monitor.next_deadline().expect("scheduled");
            let events = sim.expire_at(at).events;
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
        let registry = sim.monitor.registry();
        let host = registry.get(registry.find("a").expect("known"));
        let (phi, why) = sim.monitor.explain(host, sim.at(down_at));
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
        let registry = sim.monitor.registry();
        let timeout = |id| {
            let host = registry.get(registry.find(id).expect("known"));
            sim.monitor.timeout_for(host)
        };
        assert!(timeout("lossy") > timeout("clean") + Duration::from_secs(20));
        // Legacy beats carry no sequence: the rhythm alone decides, and the
        // deadline stays finite and near the rhythm.
        phi_beats(&mut sim, "legacy", 0, 500, |_| None);
        let registry = sim.monitor.registry();
        let legacy = registry.get(registry.find("legacy").expect("known"));
        assert!(sim.monitor.timeout_for(legacy) < Duration::from_secs(120));
        // The client now declares 60 s: the learnt 10 s rhythm is dropped.
        sim.observe(
            5000.0,
            beat("clean").with_seq(run + 500).with_interval_ms(60_000),
        );
        let registry = sim.monitor.registry();
        let host = registry.get(registry.find("clean").expect("known"));
        assert_eq!({ host.stats.interval_mean_ms }, 60_000.0);
    }

    #[test]
    fn flapping_once_then_settled_at_its_deadline_even_while_down() {
        let mut sim = Sim::with(Settings {
            flap_window: Duration::from_secs(60),
            flap_threshold: 2,
            ..settings()
        });
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
            let registry = sim.monitor.registry();
            registry
                .get(registry.find("a").expect("known"))
                .flap
                .flapping
        };
        assert!(flapping(&sim));
        assert_eq!(sim.monitor.totals().flapping, 1);
        // Still down a whole window after its last `down`: settled, and
        // still down (sinks now alert on it).
        // (Flap times are kept in tenths of a second.)
        let settle = sim.monitor.next_deadline().expect("settle deadline");
        assert!(settle > sim.at(129.85) && settle <= sim.at(130.0));
        assert_eq!(sim.expire(129.8), vec![]);
        assert_eq!(sim.expire(130.0), one(EventKind::Settled, "a"));
        assert_eq!(sim.state("a"), HostState::Down);
        assert!(!flapping(&sim));
        assert_eq!(sim.monitor.totals().flapping, 0);
        assert_eq!(sim.monitor.next_deadline(), None);
    }

    #[test]
    fn a_new_host_in_a_bursty_fleet_is_judged_by_the_fleets_bursts() {
        // (fleet's burst rate, a new host's phi timeout) after an old host
        // beat every 10 s, losing `run` beats in a row out of every 20.
        let fleet_after = |run: u64| {
            let mut sim = Sim::with(settings_of(DetectorKind::Phi));
            let mut t = 0.0;
            for seq in (1..=1000u64).filter(|s| s % 20 >= run) {
                t = seq as f64 * 10.0;
                sim.observe(
                    t,
                    Observation {
                        seq: Some(seq),
                        ..beat("old")
                    },
                );
            }
            for seq in 1..=20u64 {
                let at = t + seq as f64 * 10.0;
                sim.observe(
                    at,
                    Observation {
                        seq: Some(seq),
                        ..beat("new")
                    },
                );
            }
            let timeout = sim.monitor.timeout_for(sim.host("new"));
            (sim.monitor.fleet_loss().excess, timeout)
        };
        let (calm, calm_timeout) = fleet_after(0);
        assert_eq!(calm, 0.0, "no runs of losses, nothing learnt");
        let (lone, lone_timeout) = fleet_after(1);
        assert!(lone < 0.1, "single losses are no bursts: {lone}");
        let (bursty, bursty_timeout) = fleet_after(4);
        assert!(bursty > 0.5, "runs of 4: {bursty}");
        // The same new host, with no loss of its own, waits longer in the
        // bursty fleet: its first silence may be the fleet's kind of burst.
        assert!(
            bursty_timeout > calm_timeout.mul_f64(1.5),
            "{bursty_timeout:?} vs {calm_timeout:?}"
        );
        assert!(lone_timeout < calm_timeout.mul_f64(1.2), "{lone_timeout:?}");
    }

    #[test]
    fn outages_and_long_gaps_teach_the_fleet_nothing_of_bursts() {
        let mut sim = Sim::with(settings_of(DetectorKind::Phi));
        let old = |seq: u64| Observation {
            seq: Some(seq),
            ..beat("old")
        };
        // An established host: an hour and more of beats, runs of 3 lost.
        let mut t = 0.0;
        let mut seq = 1u64;
        for _ in 0..600 {
            seq += if seq % 10 == 0 { 4 } else { 1 };
            t += 10.0;
            sim.observe(t, old(seq));
        }
        let learnt = sim.monitor.fleet_loss();
        assert!(learnt.burst_excess().is_some_and(|e| e > 0.3), "{learnt:?}");
        // Down after a silence, back 30 beats later: an outage, not a burst.
        t += 600.0;
        let events = sim.expire(t);
        assert!(events.iter().any(|(kind, _)| *kind == EventKind::Down));
        // Then, up: a gap wider than the replay window is no burst either;
        // a burst of the watched host still counts.
        for (gap, after, counts) in [(30, 1.0, false), (100, 11.0, false), (4, 21.0, true)] {
            seq += gap;
            sim.observe(t + after, old(seq));
            assert_eq!(sim.monitor.fleet_loss() != learnt, counts, "gap {gap}");
        }
    }
}
