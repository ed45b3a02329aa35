//! Groups and dependencies on the monitor: resolving a host's ties when it
//! joins (or moves), keeping the group counters on each state change, and
//! the dependency rules of the state machine:
//!
//! - a host whose `down` is due while its parent is *pending* (silent,
//!   not judged yet) waits for the verdict (it stays `late`, no deadline);
//! - while the parent is `down` (or `unreachable`, or a `down` group), a
//!   silent dependent becomes `unreachable` instead of `down`, and when the
//!   parent goes down its `late` dependents become `unreachable` at once,
//!   named in the parent's `down`;
//! - when the parent recovers, each dependent still `unreachable` gets one
//!   fresh timeout from that moment and is then judged normally.
//!
//! Knock-on events (dependents, group changes) collect in
//! `Topology::pending`; [`Monitor::take_knock_on`] hands them out after
//! the event that caused them. Nothing here runs on a plain beat.

use super::context::{Context, GroupFacts, MAX_LISTED};
use super::groups::{Parent, Spec, Status, Ties, Topology, host_status, is_missing};
use super::model::{Event, EventKind, HostState};
use super::registry::{Slot, millis};
use super::{Monitor, Outcome, count_move};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Longest chain of host parents followed when checking for a cycle.
const MAX_CHAIN: usize = 32;

/// State changes still to be carried through groups and dependents, and
/// the hosts made unreachable behind the first one.
#[derive(Default)]
struct Ripple {
    work: VecDeque<(Slot, HostState, HostState)>,
    behind: Vec<Arc<str>>,
}

/// A group as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupView {
    /// Its name.
    pub name: Arc<str>,
    /// `down` when fewer than `need` members are up.
    pub down: bool,
    /// `min_up`, if the quorum is a count.
    pub min_up: Option<u32>,
    /// `min_up_ratio`, if the quorum is a share.
    pub min_up_ratio: Option<f64>,
    /// Members that must be up now.
    pub need: u32,
    /// Members up (or late).
    pub up: u32,
    /// Members counted.
    pub total: u32,
    /// Counted members not up, sorted, at most [`MAX_LISTED`].
    pub missing: Vec<Arc<str>>,
    /// The labels it declares.
    pub labels: crate::labels::Labels,
}

impl Monitor {
    /// Declares groups and dependencies (at start, before or after the
    /// restore): every known host is tied quietly (no events: the state at
    /// start is not a change).
    pub fn set_topology(&mut self, spec: Spec, now: Instant) {
        self.topo = Topology::new(spec);
        let now_ms = self.clock.ms_ceil(now);
        for slot in 0..self.registry.slot_end() {
            if self.registry.try_get(slot).is_some() {
                self.tie(slot, false, now_ms, SystemTime::UNIX_EPOCH);
            }
        }
    }

    /// Moves the host in `slot` from state `from` to `to` (the caller has
    /// set the record's state): the per-state counts, its groups'
    /// counters, and its dependents. Returns the hosts this made
    /// unreachable behind it; other knock-on events wait in the pending
    /// list ([`Monitor::take_knock_on`]).
    pub(super) fn transition(
        &mut self,
        slot: Slot,
        from: HostState,
        to: HostState,
        now_ms: u64,
        wall: SystemTime,
    ) -> Vec<Arc<str>> {
        count_move(&mut self.counts, from, to);
        self.count_labelled_move(slot, from, to);
        if from == HostState::Unreachable && self.topo.ties.get(&slot).is_some_and(Ties::is_bare) {
            self.topo.ties.remove(&slot); // its grace (see `tie`) is over
        }
        if self.topo.is_empty() || from == to {
            return Vec::new();
        }
        let mut ripple = Ripple::default();
        ripple.work.push_back((slot, from, to));
        self.ripple(&mut ripple, now_ms, wall);
        ripple.behind
    }

    /// True when relabeled hosts wait to be tied again, or knock-on
    /// events to be handed out.
    pub fn topology_unsettled(&self) -> bool {
        !self.topo.relabeled.is_empty() || !self.topo.pending.is_empty()
    }

    /// Ties the relabeled hosts again (at `now`) and hands out every
    /// knock-on event: the fleet calls it after any change it made.
    pub fn settle_topology(&mut self, now: Instant, wall: SystemTime, out: &mut Outcome) {
        for slot in std::mem::take(&mut self.topo.relabeled) {
            if self.registry.try_get(slot).is_some() {
                self.retie(slot, now, wall);
            }
        }
        self.take_knock_on(out);
    }

    /// Appends the knock-on events of the latest changes to `out`.
    pub fn take_knock_on(&mut self, out: &mut Outcome) {
        out.events.append(&mut self.topo.pending);
    }

    fn ripple(&mut self, ripple: &mut Ripple, now_ms: u64, wall: SystemTime) {
        while let Some((slot, from, to)) = ripple.work.pop_front() {
            let groups = match self.topo.ties.get_mut(&slot) {
                Some(ties) => {
                    // Any change ends a wait for the parent or a grace.
                    ties.held = false;
                    ties.grace_from = None;
                    ties.groups.clone()
                }
                None => Vec::new(),
            };
            for g in groups {
                self.member_changed(slot, g, Some(from), Some(to), true, now_ms, wall);
            }
            let (before, after) = (host_status(from), host_status(to));
            if before != after
                && self
                    .topo
                    .host_dependents
                    .contains_key(self.registry.id(slot))
            {
                let parent = Parent::Host(self.registry.id(slot).into());
                let mut events = Vec::new();
                let made =
                    self.parent_changed(&parent, before, after, ripple, now_ms, wall, &mut events);
                ripple.behind.extend(made);
                self.topo.pending.append(&mut events);
            }
        }
    }

    /// Member `slot` of group `g` went from `from` to `to` (`None`: not a
    /// member): the counters, the group's verdict, its dependents.
    #[allow(clippy::too_many_arguments)]
    fn member_changed(
        &mut self,
        slot: Slot,
        g: u16,
        from: Option<HostState>,
        to: Option<HostState>,
        announce: bool,
        now_ms: u64,
        wall: SystemTime,
    ) {
        let gi = usize::from(g);
        let quorum = self.topo.spec.groups[gi].quorum;
        let before = self.topo.group_status(g);
        let count = &mut self.topo.counts[gi];
        let was_down = count.down;
        if let Some(from) = from {
            count.apply(from, -1);
        } else {
            count.members.insert(slot);
        }
        if let Some(to) = to {
            count.apply(to, 1);
        } else {
            count.members.remove(&slot);
        }
        count.down = count.is_down(quorum);
        let down = count.down;
        if !announce {
            return;
        }
        let after = self.topo.group_status(g);
        let mut events = Vec::new();
        let mut ripple = Ripple::default();
        let made = if before == after {
            Vec::new()
        } else {
            self.parent_changed(
                &Parent::Group(g),
                before,
                after,
                &mut ripple,
                now_ms,
                wall,
                &mut events,
            )
        };
        if was_down != down {
            let kind = if down {
                EventKind::GroupDown
            } else {
                EventKind::GroupRecovered
            };
            let event = self.group_event(g, kind, wall, made);
            self.topo.pending.push(event);
        }
        self.topo.pending.append(&mut events);
        self.ripple(&mut ripple, now_ms, wall);
    }

    /// `parent` went from `before` to `after` for its dependents: late
    /// ones become unreachable when it blocks (returned, their events in
    /// `events`); unreachable ones get a fresh timeout when it unblocks;
    /// waiting ones are judged again when it clears.
    #[allow(clippy::too_many_arguments)]
    fn parent_changed(
        &mut self,
        parent: &Parent,
        before: Status,
        after: Status,
        ripple: &mut Ripple,
        now_ms: u64,
        wall: SystemTime,
        events: &mut Vec<Event>,
    ) -> Vec<Arc<str>> {
        let mut made = Vec::new();
        for d in self.topo.dependents(parent) {
            let Some(host) = self.registry.try_get(d) else {
                continue;
            };
            let state = host.state;
            let silent_for = Duration::from_millis(now_ms.saturating_sub(host.last_seen));
            let ties = self.topo.ties.get_mut(&d);
            match (after, state) {
                (Status::Blocked, HostState::Late) => {
                    let host = self.registry.get_mut(d);
                    host.state = HostState::Unreachable;
                    host.set_since(wall);
                    host.scheduled = 0;
                    count_move(&mut self.counts, HostState::Late, HostState::Unreachable);
                    self.count_labelled_move(d, HostState::Late, HostState::Unreachable);
                    self.changes.mark(d);
                    events.push(self.event(EventKind::Unreachable, d, wall, silent_for));
                    made.push(Arc::from(self.registry.id(d)));
                    ripple
                        .work
                        .push_back((d, HostState::Late, HostState::Unreachable));
                }
                (Status::Blocked, HostState::Unreachable) => {
                    if let Some(ties) = ties {
                        (ties.grace_from, ties.held) = (None, false);
                    }
                }
                (_, HostState::Unreachable) if before == Status::Blocked => {
                    if let Some(ties) = ties {
                        (ties.grace_from, ties.held) = (Some(now_ms), false);
                    }
                    self.registry.get_mut(d).scheduled = 0;
                    self.reschedule_if_earlier(d);
                }
                (Status::Clear, HostState::Late | HostState::Unreachable) => {
                    if let Some(ties) = ties.filter(|t| t.held) {
                        ties.held = false;
                        self.registry.get_mut(d).scheduled = 0;
                        self.reschedule_if_earlier(d);
                    }
                }
                _ => {}
            }
        }
        made
    }

    fn group_event(&self, g: u16, kind: EventKind, wall: SystemTime, made: Vec<Arc<str>>) -> Event {
        let view = self.group_view(g);
        let context = Context {
            group: Some(GroupFacts {
                up: view.up,
                total: view.total,
                need: view.need,
                missing: view.missing,
            }),
            declared: true,
            ..Context::default()
        };
        Event {
            id: 0,
            at: wall,
            kind,
            host: view.name,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            silent_for: Duration::ZERO,
            silent_at_least: None,
            // What it declares, as a host's event carries the host's: sinks
            // filter and Alertmanager routes on them.
            labels: Arc::new(view.labels),
            maintenance: None,
            state: kind.state_after(),
            flapping: false,
            fleet: self.registry.len(),
            context: Some(Arc::new(with_behind(context, made))),
        }
    }

    /// Resolves the groups and the parent of the host in `slot` and adds
    /// it to their books (`announce`: group changes make events).
    /// A host with no tie that is `unreachable` (its parent's rule went
    /// by a relabel or a reload, or it was restored so) gets one fresh
    /// timeout from now and is then judged normally.
    pub(super) fn tie(&mut self, slot: Slot, announce: bool, now_ms: u64, wall: SystemTime) {
        let (groups, parent) = match self.topo.is_empty() {
            true => (Vec::new(), None),
            false => self.resolve(slot),
        };
        let state = self.registry.get(slot).state;
        if groups.is_empty() && parent.is_none() {
            if state == HostState::Unreachable {
                let grace = Ties {
                    grace_from: Some(now_ms),
                    ..Ties::default()
                };
                self.topo.ties.insert(slot, grace);
            }
            // A late host may have waited for the parent it no longer has.
            self.judge_again(slot, state);
            return;
        }
        let spec = &self.topo.spec;
        let severity = groups
            .iter()
            .find_map(|&g| spec.groups[usize::from(g)].member_severity.clone());
        let context = Context {
            parent: parent.as_ref().map(|p| self.topo.parent_name(p)),
            severity,
            declared: true,
            ..Context::default()
        };
        let ties = Ties {
            groups: groups.clone(),
            parent: parent.clone(),
            held: false,
            // Tied again while unreachable: one fresh timeout, then judged.
            grace_from: (state == HostState::Unreachable).then_some(now_ms),
            context: Arc::new(context),
        };
        self.topo.ties.insert(slot, ties);
        match parent {
            Some(Parent::Host(p)) => {
                self.topo.host_dependents.entry(p).or_default().insert(slot);
            }
            Some(Parent::Group(g)) => {
                self.topo.group_dependents[usize::from(g)].insert(slot);
            }
            None => {}
        }
        for g in groups {
            self.member_changed(slot, g, None, Some(state), announce, now_ms, wall);
        }
        self.judge_again(slot, state);
    }

    /// Queues the deadline of a silent host in `state` anew: its ties
    /// changed, and with them whether and when it is judged.
    fn judge_again(&mut self, slot: Slot, state: HostState) {
        if matches!(state, HostState::Late | HostState::Unreachable) {
            self.registry.get_mut(slot).scheduled = 0;
            self.reschedule_if_earlier(slot);
        }
    }

    /// The groups and the parent the host in `slot` has by the config.
    fn resolve(&self, slot: Slot) -> (Vec<u16>, Option<Parent>) {
        let id: Arc<str> = self.registry.id(slot).into();
        let ip = Some(self.registry.addr(slot).ip());
        let labels = self.labels_of(slot);
        let spec = &self.topo.spec;
        let groups: Vec<u16> = (0..spec.groups.len())
            .filter(|&g| spec.groups[g].members.matches(&id, ip, labels))
            .map(|g| g as u16)
            .collect();
        let parent = spec
            .dependencies
            .iter()
            .filter(|d| d.dependents.matches(&id, ip, labels))
            .map(|d| d.parent.clone())
            .find(|p| match p {
                // A host is never its own dependent (a rack's switch is
                // usually selected by the rack's own rule), nor its
                // ancestor's.
                Parent::Host(p) => **p != *id && !self.descends_from(p, &id),
                Parent::Group(g) => !groups.contains(g),
            });
        (groups, parent)
    }

    /// Removes the host in `slot` from its groups and its parent's
    /// dependents (a forget, or before tying it again).
    pub(super) fn untie(&mut self, slot: Slot, now_ms: u64, wall: SystemTime) {
        let Some(ties) = self.topo.ties.remove(&slot) else {
            return;
        };
        let state = self.registry.get(slot).state;
        for g in ties.groups {
            self.member_changed(slot, g, Some(state), None, true, now_ms, wall);
        }
        match ties.parent {
            Some(Parent::Host(p)) => {
                if let Some(set) = self.topo.host_dependents.get_mut(&p) {
                    set.remove(&slot);
                }
            }
            Some(Parent::Group(g)) => {
                self.topo.group_dependents[usize::from(g)].remove(&slot);
            }
            None => {}
        }
    }

    /// Resolves the ties of the host in `slot` again: its labels or its
    /// address changed.
    pub fn retie(&mut self, slot: Slot, now: Instant, wall: SystemTime) {
        if self.topo.is_empty() {
            return;
        }
        let (groups, parent) = self.resolve(slot);
        let same = match self.topo.ties.get(&slot) {
            Some(ties) => ties.groups == groups && ties.parent == parent,
            None => groups.is_empty() && parent.is_none(),
        };
        if same {
            return; // the common case: nothing it is tied to changed
        }
        let now_ms = self.clock.ms_ceil(now);
        self.untie(slot, now_ms, wall);
        self.tie(slot, true, now_ms, wall);
    }

    /// True when host `id` is (through host parents) a dependent of
    /// `ancestor`: `ancestor` depending on `id` would close a cycle.
    fn descends_from(&self, id: &str, ancestor: &str) -> bool {
        let mut at = id;
        for _ in 0..MAX_CHAIN {
            let Some(slot) = self.registry.find(at) else {
                return false;
            };
            match self.topo.ties.get(&slot).and_then(|t| t.parent.as_ref()) {
                Some(Parent::Host(p)) if **p == *ancestor => return true,
                Some(Parent::Host(p)) => at = p,
                _ => return false,
            }
        }
        true
    }

    /// How the parent of the host in `slot` stands.
    pub(super) fn parent_status(&self, slot: Slot) -> Status {
        match self.topo.ties.get(&slot).and_then(|t| t.parent.as_ref()) {
            None => Status::Clear,
            Some(Parent::Host(id)) => self
                .registry
                .find(id)
                .map_or(Status::Clear, |p| host_status(self.registry.get(p).state)),
            Some(Parent::Group(g)) => self.topo.group_status(*g),
        }
    }

    /// Marks the host in `slot` as waiting for its parent's verdict.
    pub(super) fn hold(&mut self, slot: Slot) {
        if let Some(ties) = self.topo.ties.get_mut(&slot) {
            ties.held = true;
        }
    }

    /// Ends the fresh timeout of an unreachable host whose parent is down
    /// again: it stays unreachable, with no deadline.
    pub(super) fn end_grace(&mut self, slot: Slot) {
        if let Some(ties) = self.topo.ties.get_mut(&slot) {
            ties.grace_from = None;
        }
    }

    /// [`Monitor::due`] with the dependency rules: a host waiting for its
    /// parent has no deadline; an unreachable one has one only during its
    /// fresh timeout.
    pub(super) fn due_at(&self, slot: Slot) -> Option<u64> {
        let host = self.registry.get(slot);
        if !matches!(host.state, HostState::Late | HostState::Unreachable)
            || self.topo.ties.is_empty()
        {
            return self.due_of(slot);
        }
        let ties = self.topo.ties.get(&slot);
        match host.state {
            _ if ties.is_some_and(|t| t.held) => None,
            HostState::Unreachable => ties
                .and_then(|t| t.grace_from)
                .map(|from| from.saturating_add(millis(self.timeout_for(host), true))),
            // Probes may hold a late host (see `probe`).
            _ => self.due_of(slot),
        }
    }

    /// What events about the host in `slot` carry, if it has ties or
    /// dependents.
    pub(super) fn context_of(&self, slot: Slot) -> Option<Arc<Context>> {
        if self.topo.is_empty() {
            return None;
        }
        if let Some(ties) = self.topo.ties.get(&slot).filter(|t| !t.is_bare()) {
            return Some(ties.context.clone());
        }
        self.topo
            .host_dependents
            .contains_key(self.registry.id(slot))
            .then(|| {
                Arc::new(Context {
                    declared: true,
                    ..Context::default()
                })
            })
    }

    /// The parent of the host in `slot` (`group:NAME` for a group).
    pub fn parent_of(&self, slot: Slot) -> Option<Arc<str>> {
        self.topo.ties.get(&slot)?.context.parent.clone()
    }

    /// Every group, in config order.
    pub fn groups(&self) -> Vec<GroupView> {
        (0..self.topo.spec.groups.len())
            .map(|g| self.group_view(g as u16))
            .collect()
    }

    /// Every group now `down`, as the `group-down` events that made it so
    /// (re-asserted at start, as [`Monitor::down_events`]).
    pub fn group_down_events(&self, wall: SystemTime) -> Vec<Event> {
        (0..self.topo.spec.groups.len() as u16)
            .filter(|&g| self.topo.counts[usize::from(g)].down)
            .map(|g| self.group_event(g, EventKind::GroupDown, wall, Vec::new()))
            .collect()
    }

    fn group_view(&self, g: u16) -> GroupView {
        let gi = usize::from(g);
        let spec = &self.topo.spec.groups[gi];
        let count = &self.topo.counts[gi];
        let mut missing: Vec<Arc<str>> = count
            .members
            .iter()
            .filter(|&&s| is_missing(self.registry.get(s).state))
            .map(|&s| Arc::from(self.registry.id(s)))
            .collect();
        missing.sort_unstable();
        missing.truncate(MAX_LISTED);
        let (min_up, min_up_ratio) = match spec.quorum {
            super::groups::Quorum::MinUp(n) => (Some(n), None),
            super::groups::Quorum::Ratio(r) => (None, Some(r)),
        };
        GroupView {
            name: spec.name.clone(),
            down: count.down,
            min_up,
            min_up_ratio,
            need: count.need(spec.quorum),
            up: count.up,
            total: count.total,
            missing,
            labels: spec.labels.clone(),
        }
    }
}

/// `context` naming `made` as the hosts unreachable behind its event.
pub(super) fn with_behind(mut context: Context, mut made: Vec<Arc<str>>) -> Context {
    context.unreachable_count = made.len();
    made.sort_unstable();
    made.truncate(MAX_LISTED);
    context.unreachable = made;
    context
}

#[cfg(test)]
mod tests {
    use super::super::groups::{DependencySpec, GroupSpec, Quorum};
    use super::super::testing::{Sim, beat, kinds, one};
    use super::*;
    use crate::select::Selector;

    fn select(globs: &[&str]) -> Selector {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        Selector::new(&globs, &Default::default(), &[]).expect("globs")
    }

    fn group(name: &str, globs: &[&str], quorum: Quorum) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            members: select(globs),
            quorum,
            labels: Default::default(),
            member_severity: None,
        }
    }

    fn on_host(globs: &[&str], parent: &str) -> DependencySpec {
        DependencySpec {
            dependents: select(globs),
            parent: Parent::Host(parent.into()),
        }
    }

    fn sim(groups: Vec<GroupSpec>, dependencies: Vec<DependencySpec>) -> Sim {
        let mut sim = Sim::new();
        let at = sim.at(0.0);
        let spec = Spec {
            groups,
            dependencies,
        };
        sim.monitor.set_topology(spec, at);
        sim
    }

    fn beat_all(sim: &mut Sim, at: f64, ids: &[String]) {
        for id in ids {
            sim.observe(at, beat(id));
        }
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn context_of(sim: &mut Sim, at: f64) -> Vec<(EventKind, String, String)> {
        sim.expire_at(sim.at(at))
            .events
            .into_iter()
            .map(|e| {
                let context = e.context.map(|c| c.to_string()).unwrap_or_default();
                (e.kind, e.host.to_string(), context)
            })
            .collect()
    }

    #[test]
    fn a_pool_of_six_goes_down_at_the_fourth_missing_and_recovers() {
        let mut sim = sim(vec![group("web", &["web-*"], Quorum::MinUp(3))], vec![]);
        let web = ids("web-", 6);
        beat_all(&mut sim, 0.0, &web);
        // Three keep beating; web-3 .. web-5 stop at 0, web-2 at 20.
        for t in [10.0, 20.0] {
            beat_all(&mut sim, t, &web[..3]);
        }
        beat_all(&mut sim, 30.0, &web[..2]);
        let events = context_of(&mut sim, 30.0);
        let downs: Vec<_> = events.iter().filter(|e| e.0 == EventKind::Down).collect();
        assert_eq!(downs.len(), 3, "{events:?}");
        assert!(!events.iter().any(|e| e.0.is_group()), "{events:?}");
        let view = &sim.monitor.groups()[0];
        assert_eq!(
            (view.down, view.up, view.total, view.need),
            (false, 3, 6, 3)
        );
        // web-2's down (silent since 20) is the fourth.
        let events = context_of(&mut sim, 50.0);
        let events: Vec<_> = events
            .into_iter()
            .filter(|e| e.0 != EventKind::Late)
            .collect();
        assert_eq!(
            (events[0].0, events[0].1.as_str()),
            (EventKind::Down, "web-2")
        );
        assert_eq!(
            events[1],
            (
                EventKind::GroupDown,
                "web".into(),
                " up=2/6 need=3 missing=web-2,web-3,web-4,web-5".into()
            )
        );
        assert!(sim.monitor.groups()[0].down);
        let back = sim.observe(
            51.0,
            Observation {
                seq: Some(9),
                ..beat("web-4")
            },
        );
        assert_eq!(
            back,
            [
                one(EventKind::Recovered, "web-4"),
                one(EventKind::GroupRecovered, "web")
            ]
            .concat()
        );
    }

    use super::super::Observation;

    // See: issue 17 (review): members paused or in maintenance could leave
    // fewer counted than min_up, and the group was never judged again; and
    // group events carried no labels, so a sink filtering on them lost them.
    #[test]
    fn a_pool_mostly_in_maintenance_needs_all_its_counted_members_up() {
        let team = crate::labels::Labels::parse_list("team=web").expect("labels");
        let mut sim = sim(
            vec![GroupSpec {
                labels: team.clone(),
                ..group("web", &["web-*"], Quorum::MinUp(3))
            }],
            vec![],
        );
        let web = ids("web-", 6);
        beat_all(&mut sim, 0.0, &web);
        for id in &web[2..] {
            let at = sim.at(1.0);
            sim.monitor.pause(id, at, SystemTime::now()).expect("known");
        }
        let view = &sim.monitor.groups()[0];
        assert_eq!(
            (view.down, view.up, view.total, view.need),
            (false, 2, 2, 2)
        );
        for t in [10.0, 20.0] {
            beat_all(&mut sim, t, &web[1..2]);
        }
        let events = sim.expire_at(sim.at(30.0)).events;
        let down = events.last().expect("events");
        assert_eq!(
            (down.kind, down.context.as_ref().map(|c| c.to_string())),
            (
                EventKind::GroupDown,
                Some(" up=1/2 need=2 missing=web-0".into())
            ),
            "{events:?}"
        );
        assert_eq!(*down.labels, team, "the labels the group declares");
    }

    #[test]
    fn dependents_behind_a_dead_switch_are_unreachable_and_judged_again_after_it() {
        let mut sim = sim(vec![], vec![on_host(&["rack4-*"], "rack4-sw")]);
        let hosts = ids("rack4-h", 10);
        beat_all(&mut sim, 0.0, &hosts[..9]);
        sim.observe(0.5, beat("rack4-sw")); // selected by its own rule: skipped
        sim.observe(1.0, beat(&hosts[9])); // beat after the switch's last
        // The hosts' downs are due first: they wait for the switch's.
        let early = context_of(&mut sim, 30.2);
        assert!(early.iter().all(|e| e.0 == EventKind::Late), "{early:?}");
        let events = context_of(&mut sim, 30.5);
        let (kind, host, context) = &events[0];
        assert_eq!((kind, host.as_str()), (&EventKind::Down, "rack4-sw"));
        assert!(
            context.starts_with(" unreachable=10:rack4-h0,rack4-h1,"),
            "{context}"
        );
        let rest: Vec<_> = events[1..].iter().map(|e| (e.0, e.2.as_str())).collect();
        assert_eq!(rest, vec![(EventKind::Unreachable, " parent=rack4-sw"); 10]);
        assert_eq!(sim.state("rack4-h9"), HostState::Unreachable);
        assert_eq!(
            sim.expire(100.0),
            vec![],
            "no down while the switch is down"
        );
        // The switch is back at 100, and all but h0 with it.
        let back = sim.observe(
            100.0,
            Observation {
                seq: Some(2),
                ..beat("rack4-sw")
            },
        );
        assert_eq!(back, one(EventKind::Recovered, "rack4-sw"));
        for id in &hosts[1..] {
            let recovered = sim.observe(
                100.5,
                Observation {
                    seq: Some(2),
                    ..beat(id)
                },
            );
            assert_eq!(recovered, one(EventKind::Recovered, id));
        }
        // h0 gets one fresh timeout from the switch's return.
        for t in [110.0, 120.0] {
            sim.observe(
                t,
                Observation {
                    seq: Some(3),
                    ..beat("rack4-sw")
                },
            );
            beat_all(&mut sim, t, &hosts[1..]);
        }
        assert_eq!(sim.expire(129.9), vec![]);
        assert_eq!(sim.expire(130.0), one(EventKind::Down, "rack4-h0"));
    }

    #[test]
    fn a_chain_blocks_through_an_unreachable_parent_and_a_late_parent_that_recovers_releases() {
        let mut sim = sim(
            vec![],
            vec![on_host(&["host"], "switch"), on_host(&["switch"], "router")],
        );
        sim.observe(0.0, beat("host"));
        sim.observe(0.0, beat("switch"));
        sim.observe(0.5, beat("router"));
        let events = context_of(&mut sim, 30.5);
        let kinds: Vec<_> = events.iter().map(|e| (e.0, e.1.as_str())).collect();
        assert!(kinds.contains(&(EventKind::Down, "router")), "{kinds:?}");
        assert!(
            kinds.contains(&(EventKind::Unreachable, "switch")),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&(EventKind::Unreachable, "host")),
            "{kinds:?}"
        );
        assert_eq!(kinds.iter().filter(|k| k.0 == EventKind::Down).count(), 1);
        assert!(
            events.iter().any(|e| e.2 == " unreachable=2:host,switch"),
            "{events:?}"
        );
        // A parent that is only late, then beats: the dependent it held
        // back goes down at once.
        let mut sim = sim_one_dependency();
        sim.observe(0.0, beat("a"));
        sim.observe(0.5, beat("p"));
        let lates = sim.expire(30.2);
        assert_eq!(
            lates,
            [one(EventKind::Late, "a"), one(EventKind::Late, "p")].concat()
        );
        assert_eq!(sim.state("a"), HostState::Late);
        sim.observe(
            30.3,
            Observation {
                seq: Some(2),
                ..beat("p")
            },
        );
        assert_eq!(sim.expire(30.3), one(EventKind::Down, "a"));
    }

    #[test]
    fn a_dependent_that_goes_silent_after_its_parent_is_down_is_unreachable_at_its_timeout() {
        let mut sim = sim_one_dependency();
        sim.observe(0.0, beat("p"));
        for t in [0.0, 10.0, 20.0, 30.0, 40.0] {
            sim.observe(t, beat("a"));
        }
        assert_eq!(
            sim.expire(30.0).last(),
            Some(&(EventKind::Down, "p".into()))
        );
        assert_eq!(sim.state("a"), HostState::Up, "still beating");
        assert_eq!(sim.expire(55.0), one(EventKind::Late, "a"));
        assert_eq!(sim.expire(70.0), one(EventKind::Unreachable, "a"));
        assert_eq!(sim.expire(1000.0), vec![]);
    }

    #[test]
    fn a_group_by_label_follows_the_server_label_rules() {
        use super::super::labelsets::LabelRule;
        use crate::labels::Labels;
        let role_web = Labels::parse_list("role=web").expect("labels");
        let members = Selector::new(&[], &role_web, &[]).expect("selector");
        let mut sim = sim(
            vec![GroupSpec {
                members,
                ..group("web", &[], Quorum::MinUp(1))
            }],
            vec![],
        );
        let rule = LabelRule {
            select: select(&["web-*"]),
            set: role_web.clone(),
        };
        sim.monitor.set_label_rules(vec![rule]);
        sim.observe(0.0, beat("web-1"));
        sim.observe(0.0, beat("db-1"));
        let settle = |sim: &mut Sim| {
            let at = sim.at(1.0);
            let mut out = Outcome::default();
            sim.monitor.settle_topology(at, SystemTime::now(), &mut out);
            kinds(out.events)
        };
        assert_eq!(settle(&mut sim), vec![]);
        let total = |sim: &Sim| sim.monitor.groups()[0].total;
        assert_eq!(total(&sim), 1, "web-1 by its label, not db-1");
        // The rule is gone: web-1 leaves the group.
        sim.monitor.set_label_rules(vec![]);
        settle(&mut sim);
        assert_eq!(total(&sim), 0);
    }

    /// How a host loses its parent in [`a_host_that_loses_its_parent_is_judged_again`].
    #[derive(Clone, Copy, Debug)]
    enum Loss {
        /// The label rule that put it behind the parent goes (a reload).
        Relabel,
        /// The parent is forgotten.
        Forget,
    }

    /// `h` behind `sw` by a label a server rule gives it; both beat at 0,
    /// `sw` last.
    fn sim_behind_by_label() -> Sim {
        use super::super::labelsets::LabelRule;
        let rack = crate::labels::Labels::parse_list("role=rack").expect("labels");
        let mut sim = sim(
            vec![],
            vec![DependencySpec {
                dependents: Selector::new(&[], &rack, &[]).expect("selector"),
                parent: Parent::Host("sw".into()),
            }],
        );
        sim.monitor.set_label_rules(vec![LabelRule {
            select: select(&["h"]),
            set: rack,
        }]);
        sim.observe(0.0, beat("h"));
        sim.observe(0.5, beat("sw"));
        sim
    }

    fn lose_parent(sim: &mut Sim, loss: Loss, secs: f64) {
        let at = sim.at(secs);
        match loss {
            Loss::Relabel => sim.monitor.set_label_rules(vec![]),
            Loss::Forget => {
                sim.monitor
                    .forget("sw", at, SystemTime::now())
                    .expect("known");
            }
        }
        sim.monitor
            .settle_topology(at, SystemTime::now(), &mut Outcome::default());
    }

    // See: issue 17 (review): a host that lost its tie while unreachable,
    // or while late waiting for its parent, was never judged again.
    #[test]
    fn a_host_that_loses_its_parent_is_judged_again() {
        for loss in [Loss::Forget, Loss::Relabel] {
            // Unreachable behind the down switch: one fresh timeout from
            // the loss, then down.
            let mut sim = sim_behind_by_label();
            sim.expire(30.5);
            assert_eq!(sim.state("h"), HostState::Unreachable, "{loss:?}");
            lose_parent(&mut sim, loss, 100.0);
            assert_eq!(sim.expire(129.9), vec![], "{loss:?}");
            assert_eq!(sim.expire(130.0), one(EventKind::Down, "h"), "{loss:?}");
            // Late, waiting for the late switch's verdict: judged at once.
            let mut sim = sim_behind_by_label();
            assert_eq!(
                sim.expire(30.2),
                [one(EventKind::Late, "h"), one(EventKind::Late, "sw")].concat()
            );
            assert_eq!(sim.state("h"), HostState::Late);
            lose_parent(&mut sim, loss, 30.3);
            assert_eq!(sim.expire(30.3), one(EventKind::Down, "h"), "{loss:?}");
        }
        // Restored unreachable when nothing is declared any more (the rule
        // went while the server was stopped): the same fresh timeout.
        let mut sim = Sim::new();
        let mut record = super::super::testing::host();
        record.state = HostState::Unreachable;
        let at = sim.at(10.0);
        sim.monitor.restore(record, "h", beat("h").addr, at);
        assert_eq!(sim.expire(39.9), vec![]);
        assert_eq!(sim.expire(40.0), one(EventKind::Down, "h"));
        assert!(sim.monitor.topo.ties.is_empty(), "the grace ends with it");
    }

    // See: issue 17 (review): pausing a down parent starts its
    // dependents' fresh timeout on the monitor's clock, not the wall's.
    #[test]
    fn pausing_a_down_parent_gives_its_dependents_a_fresh_timeout_from_the_pause() {
        let mut sim = sim_one_dependency();
        sim.observe(0.0, beat("a"));
        sim.observe(0.5, beat("p"));
        sim.expire(30.5);
        assert_eq!(sim.state("a"), HostState::Unreachable);
        let at = sim.at(100.0);
        sim.monitor
            .pause("p", at, SystemTime::now())
            .expect("known");
        assert_eq!(sim.expire(129.9), vec![]);
        assert_eq!(sim.expire(130.0), one(EventKind::Down, "a"));
    }

    fn sim_one_dependency() -> Sim {
        let mut sim = sim(vec![], vec![on_host(&["a"], "p")]);
        sim.expire(0.0);
        sim
    }

    #[test]
    fn a_cycle_met_at_run_time_is_broken_at_the_second_host() {
        let mut sim = sim(vec![], vec![on_host(&["a"], "b"), on_host(&["b"], "a")]);
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        let registry = sim.monitor.registry();
        let parent = |id| sim.monitor.parent_of(registry.find(id).expect("known"));
        assert_eq!(parent("a"), Some("b".into()));
        assert_eq!(parent("b"), None);
    }

    #[test]
    fn a_group_parent_blocks_while_down_and_members_left_out_are_not_counted() {
        let mut sim = sim(
            vec![group("db", &["db-*"], Quorum::Ratio(0.5))],
            vec![DependencySpec {
                dependents: select(&["app"]),
                parent: Parent::Group(0),
            }],
        );
        for id in ["db-1", "db-2", "app"] {
            sim.observe(0.0, beat(id));
        }
        sim.observe(
            0.0,
            Observation {
                goodbye: true,
                ..beat("db-3")
            },
        );
        let events = context_of(&mut sim, 30.0);
        let group_down = events
            .iter()
            .find(|e| e.0 == EventKind::GroupDown)
            .expect("group-down");
        assert_eq!(
            group_down.2,
            " up=0/2 need=1 missing=db-1,db-2 unreachable=1:app"
        );
        assert_eq!(sim.state("app"), HostState::Unreachable);
        assert!(
            !events
                .iter()
                .any(|e| e.0 == EventKind::Down && e.1 == "app")
        );
        let registry = sim.monitor.registry();
        assert_eq!(
            sim.monitor.parent_of(registry.find("app").expect("known")),
            Some("group:db".into())
        );
    }
}
