//! Maintenance windows: planned silence until a time T.
//!
//! A window puts hosts in `maintenance`: their silence pages no one until
//! T. A host that comes back before T (a beat after it went away: silent
//! past its warning time, or a new boot or client run) ends its window
//! early and is `up`. A host that says goodbye in its window is `left`, as
//! outside one (one `left` event, no `maintenance-ended`: it is not
//! judged again until it beats, which is a `joined`). A host still in
//! maintenance at T gets a fresh timeout counted from T and is judged
//! normally from then on.
//!
//! Windows live in a side table ([`Maintenance`]), not in the compact host
//! record: a host in maintenance costs one map entry while its window lasts,
//! and a fleet without windows costs nothing. The host's deadline while in
//! maintenance is its window's end, so the ordinary deadline queue ends it.
//! Pure: every call takes `now` and `wall`.

use super::model::{EventKind, HostState};
use super::registry::Slot;
use super::{Monitor, Outcome};
use crate::protocol::maintenance::{BadReason, check_reason};
use crate::select::{Selection, Selector};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Who opened a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The host itself (`lubdub maintenance --for` on the host).
    Host,
    /// An operator, through the API (or `lubdub maintenance --server`).
    Api,
    /// A `[[server.maintenance]]` schedule in the config file.
    Schedule,
}

impl Source {
    /// The name used in events, JSON and the environment of exec hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Host => "host",
            Source::Api => "api",
            Source::Schedule => "schedule",
        }
    }
}

/// What a `maintenance-started` or `maintenance-ended` event says about its
/// window, so a sink needs to ask nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The window's id (as in `GET /api/v1/maintenance`).
    pub window: u64,
    /// Who opened it.
    pub source: Source,
    /// Why, in the opener's words (may be empty).
    pub reason: Arc<str>,
    /// When it ends (or ended).
    pub until: SystemTime,
}

/// One window, as listed by the API and kept in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Its id, unique for the server's lifetime (and across restarts).
    pub id: u64,
    /// Who opened it.
    pub source: Source,
    /// Why (may be empty).
    pub reason: String,
    /// When it was opened.
    #[serde(with = "humantime_serde")]
    pub started: SystemTime,
    /// When it ends.
    #[serde(with = "humantime_serde")]
    pub until: SystemTime,
    /// The hosts it was asked to cover.
    #[serde(default)]
    pub selection: Selection,
    /// The config window that opened it (scheduled windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The hosts it put in maintenance when it opened.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A window to open: everything but its id and hosts.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who asks.
    pub source: Source,
    /// Why (may be empty).
    pub reason: String,
    /// When it ends (wall clock).
    pub until: SystemTime,
    /// The hosts asked for (shown in the listing).
    pub selection: Selection,
    /// The config window's name, for scheduled windows.
    pub schedule: Option<String>,
}

/// Why a window cannot be opened or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its end is not in the future.
    #[error("the window's end is not in the future")]
    Over,
    /// No window has that id.
    #[error("no such maintenance window")]
    Unknown,
    /// Its reason is not one bounded line of printable text.
    #[error("reason: {0}")]
    BadReason(#[from] BadReason),
}

/// What [`Monitor::accept_announcement`] made of an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announced {
    /// From a host the monitor does not know: nothing recorded.
    UnknownHost,
    /// Not newer than one accepted before (a replay or a resend).
    Stale,
    /// Fresh, from the host in this slot.
    Fresh(Slot),
}

/// The announcement table is never swept below this many entries.
const MIN_SWEEP: usize = 1024;

/// One host's place in a window.
#[derive(Clone, Copy, Debug)]
struct Member {
    window: u64,
    /// The window's end, clock ms.
    end_ms: u64,
    /// Client run (high half of its seq) and boot when the window opened:
    /// a beat from another is a return.
    run: u32,
    boot: u32,
}

/// The side table of windows and of the hosts in them.
#[derive(Debug)]
pub struct Maintenance {
    windows: BTreeMap<u64, Window>,
    /// The selections of the open operator and scheduled windows, and
    /// their ends (clock ms): a host they match that was not there when
    /// they opened joins them when it falls silent (`adopt`).
    selectors: BTreeMap<u64, (Selector, u64)>,
    members: HashMap<Slot, Member>,
    last_id: u64,
    /// The windows changed since the store last took them.
    dirty: bool,
    /// The send time of each host's latest accepted announcement (µs):
    /// an announcement must be newer, so a replayed one opens nothing.
    announced: HashMap<Box<str>, u64>,
    /// The table's size at which it is next swept of old entries.
    sweep_at: usize,
    /// Sweeps so far (tests check they stay amortised).
    sweeps: u64,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            windows: BTreeMap::new(),
            selectors: BTreeMap::new(),
            members: HashMap::new(),
            last_id: 0,
            dirty: false,
            announced: HashMap::new(),
            sweep_at: MIN_SWEEP,
            sweeps: 0,
        }
    }
}

impl Maintenance {
    /// The window end of the host in `slot`, if it is in one (clock ms).
    pub(super) fn end_of(&self, slot: Slot) -> Option<u64> {
        self.members.get(&slot).map(|m| m.end_ms)
    }

    /// Drops a host's membership (it was paused or forgotten).
    pub(super) fn leave(&mut self, slot: Slot) {
        self.members.remove(&slot);
    }

    /// Keeps `window` (and its compiled selection, unless a host opened
    /// it for itself) as open until `end_ms`.
    fn keep(&mut self, window: Window, end_ms: u64) {
        if window.source != Source::Host
            && let Ok(selector) = window.selection.compile()
        {
            self.selectors.insert(window.id, (selector, end_ms));
        }
        self.windows.insert(window.id, window);
        self.dirty = true;
    }

    /// Forgets window `id`.
    fn drop_window(&mut self, id: u64) {
        self.windows.remove(&id);
        self.selectors.remove(&id);
        self.dirty = true;
    }

    fn note(&self, member: &Member) -> Option<Arc<Note>> {
        self.windows.get(&member.window).map(|w| {
            Arc::new(Note {
                window: w.id,
                source: w.source,
                reason: Arc::from(w.reason.as_str()),
                until: w.until,
            })
        })
    }
}

impl Monitor {
    /// Checks an announcement from `host` sent at `sent_at_micros`: the
    /// host must be known (the table holds known hosts only, so it is
    /// bounded by the registry however many ids a sender makes up) and the
    /// announcement newer than every one accepted before (a replayed one
    /// opens nothing); a fresh one is recorded. Entries older than
    /// `forget_before_micros` (outside the clock skew allowed, so refused
    /// anyway) are dropped whenever the table has doubled since the last
    /// sweep: amortised O(1) per announcement, not a scan each.
    pub fn accept_announcement(
        &mut self,
        host: &str,
        sent_at_micros: u64,
        forget_before_micros: u64,
    ) -> Announced {
        let Some(slot) = self.registry.find(host) else {
            return Announced::UnknownHost;
        };
        let m = &mut self.maintenance;
        if m.announced.len() >= m.sweep_at {
            m.announced.retain(|_, at| *at >= forget_before_micros);
            m.sweep_at = (2 * m.announced.len()).max(MIN_SWEEP);
            m.sweeps += 1;
        }
        match m.announced.get_mut(host) {
            Some(at) if *at >= sent_at_micros => Announced::Stale,
            Some(at) => {
                *at = sent_at_micros;
                Announced::Fresh(slot)
            }
            None => {
                m.announced.insert(host.into(), sent_at_micros);
                Announced::Fresh(slot)
            }
        }
    }

    /// The known hosts `selector` picks (by id, address and labels).
    pub fn selected(&self, selector: &Selector) -> Vec<Slot> {
        let registry = &self.registry;
        registry
            .iter()
            .map(|(slot, _)| slot)
            .filter(|&slot| {
                let ip = Some(registry.addr(slot).ip());
                selector.matches(registry.id(slot), ip, self.labels_of(slot))
            })
            .collect()
    }

    /// The open windows, by id.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.maintenance.windows.values()
    }

    /// The window the host in `slot` is in, if any.
    pub fn window_of(&self, slot: Slot) -> Option<&Window> {
        let member = self.maintenance.members.get(&slot)?;
        self.maintenance.windows.get(&member.window)
    }

    /// The open windows for the store when they changed since the last
    /// call (`None`: unchanged).
    pub fn take_windows(&mut self, wall: SystemTime) -> Option<Vec<Window>> {
        if !std::mem::take(&mut self.maintenance.dirty) {
            return None;
        }
        let m = &mut self.maintenance;
        m.windows.retain(|_, w| w.until > wall);
        m.selectors.retain(|id, _| m.windows.contains_key(id));
        Some(self.maintenance.windows.values().cloned().collect())
    }

    /// Marks the windows for the next store write again (it failed).
    pub fn untake_windows(&mut self) {
        self.maintenance.dirty = true;
    }

    /// Opens a window over `slots` (hosts that left or are paused are
    /// skipped: a pause is an unbounded window of its own, and a host that
    /// left is not expected back). A host already in a window that ends
    /// later stays in that one. Adds `maintenance-started` events to `out`.
    /// A scheduled window that is open already (restored from the store
    /// after a restart inside it) is that one: no second copy, no events.
    pub fn open_window(
        &mut self,
        request: Request,
        slots: &[Slot],
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) -> Result<Window, Refused> {
        check_reason(&request.reason)?;
        let ahead = request
            .until
            .duration_since(wall)
            .map_err(|_| Refused::Over)?;
        if ahead.is_zero() {
            return Err(Refused::Over);
        }
        if let Some(name) = &request.schedule
            && let Some(same) = self
                .maintenance
                .windows
                .values()
                .find(|w| w.schedule.as_ref() == Some(name) && w.until == request.until)
        {
            return Ok(same.clone());
        }
        let end_ms = self.clock.ms_ceil(now + ahead);
        self.maintenance.last_id += 1;
        let mut window = Window {
            id: self.maintenance.last_id,
            source: request.source,
            reason: request.reason,
            started: wall,
            until: request.until,
            selection: request.selection,
            schedule: request.schedule,
            hosts: Vec::new(),
        };
        // In the table first: the events' notes are read from it.
        self.maintenance.windows.insert(window.id, window.clone());
        for &slot in slots {
            let Some(host) = self.registry.try_get(slot) else {
                continue;
            };
            if matches!(host.state, HostState::Left | HostState::Paused) {
                continue;
            }
            window.hosts.push(self.registry.id(slot).to_string());
            self.enter(slot, window.id, end_ms, now, wall, out);
        }
        window.hosts.sort_unstable();
        self.maintenance.keep(window.clone(), end_ms);
        Ok(window)
    }

    /// A member of window `window` (ending at `end_ms`) for the host in
    /// `slot`, as it is now.
    fn member(&self, slot: Slot, window: u64, end_ms: u64) -> Member {
        let host = self.registry.get(slot);
        Member {
            window,
            end_ms,
            run: (host.seq >> 32) as u32,
            boot: host.boot,
        }
    }

    /// Puts the host in `slot` in window `window` (ending at `end_ms`),
    /// with a `maintenance-started` event; one in a window that ends
    /// later stays there.
    fn enter(
        &mut self,
        slot: Slot,
        window: u64,
        end_ms: u64,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) {
        let member = self.member(slot, window, end_ms);
        match self.maintenance.members.get_mut(&slot) {
            Some(old) if old.end_ms >= end_ms => return,
            Some(old) => *old = member,
            None => {
                self.maintenance.members.insert(slot, member);
                let host = self.registry.get_mut(slot);
                let from = host.state;
                host.state = HostState::Maintenance;
                host.set_since(wall);
                // Its queued deadline (late, down) is stale now.
                host.scheduled = 0;
                let now_ms = self.clock.ms(now);
                self.transition(slot, from, HostState::Maintenance, now_ms, wall);
            }
        }
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let mut event = self.event(EventKind::MaintenanceStarted, slot, wall, silent_for);
        event.maintenance = self.maintenance.note(&member);
        out.events.push(event);
    }

    /// The host in `slot` (`up` or `late`) falls silent: when an open
    /// operator or scheduled window selects it and it was not among the
    /// hosts that window took (it joined later, or its labels or address
    /// changed since), it joins that window instead (the one that ends
    /// last) and pages no one. Whether it did.
    pub(super) fn adopt(
        &mut self,
        slot: Slot,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) -> bool {
        let m = &self.maintenance;
        if m.selectors.is_empty()
            || !matches!(
                self.registry.get(slot).state,
                HostState::Up | HostState::Late
            )
        {
            return false;
        }
        let now_ms = self.clock.ms(now);
        let (id, ip) = (self.registry.id(slot), self.registry.addr(slot).ip());
        let labels = self.labels_of(slot);
        let taken = |window: &u64| {
            m.windows
                .get(window)
                .is_none_or(|w| w.hosts.binary_search_by(|h| h.as_str().cmp(id)).is_ok())
        };
        let Some((window, end_ms)) = m
            .selectors
            .iter()
            .filter(|(w, (selector, end_ms))| {
                *end_ms > now_ms && selector.matches(id, Some(ip), labels) && !taken(w)
            })
            .max_by_key(|(_, (_, end_ms))| *end_ms)
            .map(|(&w, &(_, end_ms))| (w, end_ms))
        else {
            return false;
        };
        let id = id.to_string();
        if let Some(w) = self.maintenance.windows.get_mut(&window) {
            let at = w.hosts.binary_search(&id).unwrap_or_else(|at| at);
            w.hosts.insert(at, id);
        }
        self.maintenance.dirty = true;
        self.enter(slot, window, end_ms, now, wall, out);
        true
    }

    /// Ends window `id` now: its hosts are `up` with a fresh timeout from
    /// `now` (`maintenance-ended` events in `out`).
    pub fn end_window(
        &mut self,
        id: u64,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) -> Result<Window, Refused> {
        let window = self
            .maintenance
            .windows
            .get(&id)
            .cloned()
            .ok_or(Refused::Unknown)?;
        let now_ms = self.clock.ms_ceil(now);
        let mut slots: Vec<Slot> = self
            .maintenance
            .members
            .iter()
            .filter(|(_, m)| m.window == id)
            .map(|(&slot, _)| slot)
            .collect();
        slots.sort_unstable();
        for slot in slots {
            self.finish(slot, now_ms, now, wall, out);
        }
        self.maintenance.drop_window(id);
        Ok(window)
    }

    /// The host in `slot` leaves maintenance: `up`, its silence counted
    /// from no earlier than `from_ms` (a fresh timeout from the window's
    /// end), with a `maintenance-ended` event.
    fn finish(
        &mut self,
        slot: Slot,
        from_ms: u64,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) {
        let Some(member) = self.maintenance.members.remove(&slot) else {
            return;
        };
        let note = self.maintenance.note(&member);
        let silent_for = self.silent_for(self.registry.get(slot), now);
        let host = self.registry.get_mut(slot);
        let from = host.state;
        host.state = HostState::Up;
        host.set_since(wall);
        host.last_seen = host.last_seen.max(from_ms);
        host.scheduled = 0;
        let now_ms = self.clock.ms(now);
        self.transition(slot, from, HostState::Up, now_ms, wall);
        let mut event = self.event(EventKind::MaintenanceEnded, slot, wall, silent_for);
        event.maintenance = note;
        out.events.push(event);
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
    }

    /// The deadline of a host in maintenance passed: its window is over.
    pub(super) fn window_over(
        &mut self,
        slot: Slot,
        due: u64,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) {
        self.finish(slot, due, now, wall, out);
    }

    /// Whether a beat at `now_ms` from the host in `slot` (in maintenance)
    /// says it is back: it went away first (silent past its warning time),
    /// or comes from another boot or client run.
    pub(super) fn back_from_maintenance(
        &self,
        slot: Slot,
        seq: Option<u64>,
        boot: u32,
        now_ms: u64,
    ) -> bool {
        let Some(member) = self.maintenance.members.get(&slot) else {
            return true; // restored without its window: nothing holds it
        };
        let host = self.registry.get(slot);
        let late_ms = super::millis(self.late_silence(host), true);
        now_ms.saturating_sub(host.last_seen) >= late_ms
            || (boot != 0 && member.boot != 0 && boot != member.boot)
            || seq.is_some_and(|s| (s >> 32) as u32 != member.run && member.run != 0)
    }

    /// Ends the membership of a host that beat its way back (the caller
    /// makes it `up`); the note for its `maintenance-ended` event.
    pub(super) fn returned(&mut self, slot: Slot) -> Option<Arc<Note>> {
        let member = self.maintenance.members.remove(&slot)?;
        self.maintenance.note(&member)
    }

    /// Puts back the windows the store remembered, after the hosts: a
    /// restored host in `maintenance` rejoins its window, or, when that is
    /// over or unknown, is `up` with a fresh timeout from now.
    pub fn restore_windows(
        &mut self,
        windows: Vec<Window>,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) {
        for window in windows {
            self.maintenance.last_id = self.maintenance.last_id.max(window.id);
            let Ok(ahead) = window.until.duration_since(wall) else {
                continue;
            };
            let end_ms = self.clock.ms_ceil(now + ahead);
            for id in &window.hosts {
                let Some(slot) = self.registry.find(id) else {
                    continue;
                };
                if self.registry.get(slot).state != HostState::Maintenance {
                    continue;
                }
                let member = self.member(slot, window.id, end_ms);
                let longer = self
                    .maintenance
                    .members
                    .get(&slot)
                    .is_none_or(|m| m.end_ms < end_ms);
                if longer {
                    self.maintenance.members.insert(slot, member);
                }
                self.reschedule_if_earlier(slot);
            }
            self.maintenance.keep(window, end_ms);
        }
        if self.counts[HostState::Maintenance.index()] as usize == self.maintenance.members.len() {
            return;
        }
        let now_ms = self.clock.ms_ceil(now);
        let orphans: Vec<Slot> = self
            .registry
            .iter()
            .filter(|(slot, host)| {
                host.state == HostState::Maintenance && !self.maintenance.members.contains_key(slot)
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in orphans {
            // No window holds it: back to `up`, as if its window just ended.
            self.maintenance.members.insert(
                slot,
                Member {
                    window: 0,
                    end_ms: now_ms,
                    run: 0,
                    boot: 0,
                },
            );
            self.finish(slot, now_ms, now, wall, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Sim, beat, one};
    use super::super::{EventKind, HostState, Observation, Outcome};
    use super::*;
    use std::time::Duration;

    /// A request for a window (its end is set by [`open_with`]).
    fn request(source: Source, hosts: &[&str], schedule: Option<&str>) -> Request {
        Request {
            source,
            reason: "kernel update".into(),
            until: SystemTime::UNIX_EPOCH,
            selection: Selection {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                ..Selection::default()
            },
            schedule: schedule.map(String::from),
        }
    }

    /// Opens `request` for `secs` seconds over hosts `ids` at sim time
    /// `at`.
    fn open_with(
        sim: &mut Sim,
        mut request: Request,
        ids: &[&str],
        at: f64,
        secs: u64,
    ) -> Result<(Window, Vec<Event>), Refused> {
        let registry = sim.monitor.registry();
        let slots: Vec<Slot> = ids.iter().filter_map(|id| registry.find(id)).collect();
        let wall = SystemTime::now();
        request.until = wall + Duration::from_secs(secs);
        let mut out = Outcome::default();
        let window = sim
            .monitor
            .open_window(request, &slots, sim.at(at), wall, &mut out)?;
        Ok((window, out.events))
    }

    /// Asserts that `events` (of several hosts, in any order) are `want`
    /// (in the order of the hosts).
    fn assert_by_host(mut events: Vec<(EventKind, String)>, want: &[(EventKind, &str)]) {
        events.sort_by(|a, b| a.1.cmp(&b.1));
        let want: Vec<(EventKind, String)> =
            want.iter().map(|&(k, h)| (k, h.to_string())).collect();
        assert_eq!(events, want);
    }

    /// Opens a host's own window of `secs` seconds over host `id` at sim
    /// time `at`.
    fn open(sim: &mut Sim, id: &str, at: f64, secs: u64) -> (Window, Vec<Event>) {
        open_with(sim, request(Source::Host, &[], None), &[id], at, secs).expect("opens")
    }

    use super::super::Event;

    #[test]
    fn silent_until_the_end_then_a_fresh_timeout_from_it() {
        let mut sim = Sim::new(); // late after 15 s, down after 30 s
        sim.observe(0.0, beat("a"));
        let (window, events) = open(&mut sim, "a", 1.0, 100);
        assert_eq!(window.hosts, ["a"]);
        let started = &events[0];
        assert_eq!(started.kind, EventKind::MaintenanceStarted);
        let note = started.maintenance.as_deref().expect("note");
        assert_eq!(
            (note.source, &*note.reason),
            (Source::Host, "kernel update")
        );
        assert_eq!(sim.state("a"), HostState::Maintenance);
        assert_eq!(sim.monitor.counts()[HostState::Maintenance.index()], 1);
        assert_eq!(sim.expire(100.9), vec![], "silent: no alarm in the window");
        assert_eq!(sim.expire(101.0), one(EventKind::MaintenanceEnded, "a"));
        assert_eq!(sim.state("a"), HostState::Up);
        assert_eq!(sim.expire(115.9), vec![], "a fresh timeout from the end");
        assert_eq!(sim.expire(116.0), one(EventKind::Late, "a"));
        assert_eq!(sim.expire(131.0), one(EventKind::Down, "a"));
    }

    #[test]
    fn beats_before_the_host_goes_away_keep_it_in_maintenance() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        open(&mut sim, "a", 1.0, 100);
        let next = |seq| Observation {
            seq: Some(seq),
            ..beat("a")
        };
        for (t, seq) in [(2.0, 2), (10.0, 3), (20.0, 4)] {
            assert_eq!(sim.observe(t, next(seq)), vec![], "still beating at {t}");
        }
        assert_eq!(sim.state("a"), HostState::Maintenance);
        // Silent past its warning time, then a beat: it is back.
        assert_eq!(
            sim.observe(40.0, next(5)),
            one(EventKind::MaintenanceEnded, "a")
        );
        assert_eq!(sim.state("a"), HostState::Up);
        assert_eq!(sim.expire(54.9), vec![]);
        assert_eq!(sim.expire(55.0), one(EventKind::Late, "a"));
        assert_eq!(sim.expire(70.0), one(EventKind::Down, "a"));
        assert_eq!(sim.expire(101.0), vec![], "its old window end is stale");
    }

    #[test]
    fn a_goodbye_leaves_as_outside_a_window_and_a_new_run_is_a_return() {
        let mut sim = Sim::new();
        let run = 1_700_000_000u64 << 32;
        let at = |seq| Observation {
            seq: Some(seq),
            ..beat("a")
        };
        sim.observe(0.0, at(run));
        open(&mut sim, "a", 1.0, 100);
        let goodbye = Observation {
            goodbye: true,
            ..at(run + 1)
        };
        // See: issue 16 (a goodbye in a window was swallowed).
        assert_eq!(sim.observe(2.0, goodbye), one(EventKind::Left, "a"));
        assert_eq!(sim.state("a"), HostState::Left);
        assert_eq!(sim.monitor.counts()[HostState::Maintenance.index()], 0);
        let slot = sim.monitor.registry().find("a").expect("known");
        assert_eq!(
            sim.monitor.maintenance.end_of(slot),
            None,
            "out of the window"
        );
        assert_eq!(sim.expire(300.0), vec![], "left: judged no more");
        assert_eq!(sim.observe(301.0, at(run + 2)), one(EventKind::Joined, "a"));
        open(&mut sim, "a", 302.0, 100);
        let next_run = (1_700_000_100u64 << 32) + 1;
        assert_eq!(
            sim.observe(303.0, at(next_run)),
            one(EventKind::MaintenanceEnded, "a"),
            "a restarted client is back"
        );
    }

    #[test]
    fn ending_a_window_early_gives_a_fresh_timeout_and_pause_wins() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        sim.monitor.pause("b", SystemTime::now()).expect("known");
        let api = request(Source::Api, &[], None);
        let (window, _) = open_with(&mut sim, api.clone(), &["a", "b"], 1.0, 3600).expect("opens");
        assert_eq!(window.hosts, ["a"], "a paused host stays paused");
        assert_eq!(sim.monitor.windows().count(), 1);
        let (wall, mut out) = (SystemTime::now(), Outcome::default());
        sim.monitor
            .end_window(window.id, sim.at(50.0), wall, &mut out)
            .expect("open");
        assert_eq!(out.events[0].kind, EventKind::MaintenanceEnded);
        assert_eq!(sim.monitor.windows().count(), 0);
        assert_eq!(sim.expire(64.9), vec![]);
        assert_eq!(sim.expire(65.0), one(EventKind::Late, "a"));
        let again = sim
            .monitor
            .end_window(window.id, sim.at(66.0), wall, &mut out);
        assert_eq!(again.map(|w| w.id), Err(Refused::Unknown));
        let past = open_with(&mut sim, api, &["a"], 66.0, 0);
        assert_eq!(past.map(|(w, _)| w.id), Err(Refused::Over));
    }

    #[test]
    fn windows_are_restored_and_orphans_come_back_up() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        let (window, _) = open(&mut sim, "a", 0.0, 100);
        let stored = sim.monitor.take_windows(SystemTime::now()).expect("dirty");
        assert_eq!(stored, std::slice::from_ref(&window));
        assert_eq!(sim.monitor.take_windows(SystemTime::now()), None);
        // A fresh monitor with the host restored in maintenance.
        let mut fresh = Sim::new();
        let host = sim.host("a").clone();
        let addr = sim.monitor.registry().addr(0);
        fresh
            .monitor
            .restore(host.clone(), "a", addr, fresh.at(0.0));
        fresh.monitor.restore(host, "b", addr, fresh.at(0.0));
        let mut out = Outcome::default();
        fresh
            .monitor
            .restore_windows(stored, fresh.at(0.0), SystemTime::now(), &mut out);
        // b was in maintenance with no window: up again at once.
        assert_eq!(
            super::super::testing::kinds(out.events),
            one(EventKind::MaintenanceEnded, "b")
        );
        assert_eq!(fresh.state("a"), HostState::Maintenance);
        // b is judged normally from now; a stays silent in its window.
        assert_eq!(
            fresh.expire(99.0),
            [one(EventKind::Late, "b"), one(EventKind::Down, "b")].concat()
        );
        assert_eq!(fresh.expire(100.5), one(EventKind::MaintenanceEnded, "a"));
    }

    #[test]
    fn announcements_keep_known_hosts_only_and_sweep_amortised() {
        let mut sim = Sim::new();
        // Made-up ids (no keys: anyone can send them) leave nothing behind.
        for i in 0..5000 {
            let ghost = format!("ghost-{i}");
            let seen = sim.monitor.accept_announcement(&ghost, 1, 0);
            assert_eq!(seen, Announced::UnknownHost);
        }
        assert!(sim.monitor.maintenance.announced.is_empty());
        let ids: Vec<String> = (0..3000).map(|i| format!("h-{i}")).collect();
        for id in &ids {
            sim.observe(0.0, beat(id));
        }
        for id in &ids {
            let seen = sim.monitor.accept_announcement(id, 10, 0);
            assert!(matches!(seen, Announced::Fresh(_)), "{id}: {seen:?}");
        }
        // Swept at 1024 and 2048 entries, not once per announcement.
        assert_eq!(sim.monitor.maintenance.sweeps, 2);
        assert_eq!(
            sim.monitor.accept_announcement("h-7", 10, 0),
            Announced::Stale,
            "a replay"
        );
    }

    #[test]
    fn a_host_that_joins_inside_a_window_over_its_selection_is_silent_in_it() {
        // See: issue 16 (hosts joining an open window's selection paged).
        let mut sim = Sim::new();
        sim.observe(0.0, beat("web-1"));
        let api = request(Source::Api, &["web-*"], None);
        let (window, _) = open_with(&mut sim, api, &["web-1"], 1.0, 100).expect("opens");
        assert_eq!(window.hosts, ["web-1"]);
        sim.observe(2.0, beat("web-2"));
        sim.observe(2.0, beat("db-1"));
        let silent = sim.expire(17.0);
        let want = [
            (EventKind::Late, "db-1"),
            (EventKind::MaintenanceStarted, "web-2"),
        ];
        assert_by_host(silent, &want);
        assert_eq!(sim.state("web-2"), HostState::Maintenance);
        let listed: Vec<&Window> = sim.monitor.windows().collect();
        assert_eq!(listed[0].hosts, ["web-1", "web-2"]);
        assert_eq!(sim.expire(32.0), one(EventKind::Down, "db-1"));
        // Both end with the window, and are judged from its end.
        let ended = sim.expire(101.0);
        let want = [
            (EventKind::MaintenanceEnded, "web-1"),
            (EventKind::MaintenanceEnded, "web-2"),
        ];
        assert_by_host(ended, &want);
        assert_eq!(sim.expire(115.9), vec![]);
        // A host that left the window early is not taken back into it.
        let (window, _) = open_with(
            &mut sim,
            request(Source::Api, &["web-2"], None),
            &["web-2"],
            120.0,
            100,
        )
        .expect("opens");
        sim.observe(121.0, beat("web-2"));
        sim.observe(150.0, beat("web-2")); // silent past late: back
        assert_eq!(sim.state("web-2"), HostState::Up);
        let mut later = sim.expire(165.0);
        later.retain(|(_, host)| host == "web-2"); // web-1 pages too
        assert_eq!(later, one(EventKind::Late, "web-2"));
        sim.monitor
            .end_window(
                window.id,
                sim.at(166.0),
                SystemTime::now(),
                &mut Outcome::default(),
            )
            .expect("open");
    }

    #[test]
    fn a_scheduled_window_opened_again_after_a_restart_is_the_same_window() {
        // See: issue 16 (a restart inside a scheduled window doubled it).
        let mut sim = Sim::new();
        sim.observe(0.0, beat("db-1"));
        let nightly = request(Source::Schedule, &["db-*"], Some("nightly"));
        let wall = SystemTime::now();
        let until = wall + Duration::from_secs(100);
        let opens = |sim: &mut Sim, at: f64| {
            let slot = sim.monitor.registry().find("db-1").expect("known");
            let mut out = Outcome::default();
            let request = Request {
                until,
                ..nightly.clone()
            };
            let window = sim
                .monitor
                .open_window(request, &[slot], sim.at(at), wall, &mut out)
                .expect("opens");
            (window, out.events.len())
        };
        let (window, started) = opens(&mut sim, 0.0);
        assert_eq!(started, 1);
        let stored = sim.monitor.take_windows(wall).expect("dirty");
        let mut fresh = Sim::new();
        let addr = sim.monitor.registry().addr(0);
        fresh
            .monitor
            .restore(sim.host("db-1").clone(), "db-1", addr, fresh.at(0.0));
        let mut out = Outcome::default();
        fresh
            .monitor
            .restore_windows(stored, fresh.at(0.0), wall, &mut out);
        assert!(out.events.is_empty());
        let (again, started) = opens(&mut fresh, 0.0);
        assert_eq!((again.id, started), (window.id, 0), "the same window");
        assert_eq!(fresh.monitor.windows().count(), 1);
        assert_eq!(
            fresh.expire(100.5),
            one(EventKind::MaintenanceEnded, "db-1")
        );
    }
}
