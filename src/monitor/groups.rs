//! Groups and dependencies, as the core keeps them: the compiled
//! configuration ([`Spec`]), each host's few memberships and its parent in
//! a side table (not the host record), and per-group counters kept on
//! state changes only, so a beat never scans a group (O(1) per change).
//!
//! A group is `up` while at least its quorum of members are `up` (or
//! `late`: not judged missing yet); members `left`, paused or in
//! maintenance count in neither number. The quorum is capped at the
//! members counted: with fewer counted than `min_up`, all of them must be
//! up (a group with none counted is `up`).

use super::model::HostState;
use super::registry::Slot;
use crate::labels::Labels;
use crate::select::Selector;
use hashbrown::{HashMap, HashSet};
use std::sync::Arc;

/// A group's quorum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quorum {
    /// At least this many members up.
    MinUp(u32),
    /// At least this share of the counted members up (rounded up).
    Ratio(f64),
}

impl Quorum {
    /// Members that must be up when `total` are counted.
    pub fn need(self, total: u32) -> u32 {
        match self {
            Quorum::MinUp(n) => n,
            Quorum::Ratio(r) => (r * f64::from(total)).ceil() as u32,
        }
    }
}

/// One group, compiled.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// Its name (events, alerts, the API).
    pub name: Arc<str>,
    /// Who is a member.
    pub members: Selector,
    /// How many must be up.
    pub quorum: Quorum,
    /// Labels it declares (on its `GroupDown` alert).
    pub labels: Labels,
    /// Severity of a member's own `HostDown` alert, if set.
    pub member_severity: Option<Arc<str>>,
}

/// What a dependency names as the parent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Parent {
    /// A host, by id (it may join after its dependents).
    Host(Arc<str>),
    /// A group, by index into [`Spec::groups`].
    Group(u16),
}

/// One `[[server.dependencies]]` entry, compiled.
#[derive(Clone, Debug)]
pub struct DependencySpec {
    /// The dependent hosts.
    pub dependents: Selector,
    /// What they depend on.
    pub parent: Parent,
}

/// Groups and dependencies, checked (no cycle among host parents).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The groups, in config order.
    pub groups: Vec<GroupSpec>,
    /// The dependencies; a host takes the first that selects it.
    pub dependencies: Vec<DependencySpec>,
}

impl Spec {
    /// True when nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.dependencies.is_empty()
    }

    /// True when a selector looks at addresses (a move must re-resolve).
    pub fn uses_networks(&self) -> bool {
        self.groups.iter().any(|g| g.members.uses_networks())
            || self
                .dependencies
                .iter()
                .any(|d| d.dependents.uses_networks())
    }
}

/// How a parent stands for its dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Up (or absent, left, paused): dependents are judged normally.
    Clear,
    /// Silent and not judged yet (`late`, or a group that would fall if
    /// its late members did): a dependent's `down` waits for the verdict.
    Pending,
    /// `down` or `unreachable` (a group: `down`): silent dependents are
    /// `unreachable`.
    Blocked,
}

/// How a host parent in `state` stands.
pub fn host_status(state: HostState) -> Status {
    match state {
        // A parent in maintenance is down on purpose: what goes silent
        // behind it is unreachable, not paged.
        HostState::Down | HostState::Unreachable | HostState::Maintenance => Status::Blocked,
        HostState::Late => Status::Pending,
        HostState::Up | HostState::Left | HostState::Paused => Status::Clear,
    }
}

/// Whether a member in `state` is counted, and whether it is up.
fn standing(state: HostState) -> (bool, bool) {
    match state {
        HostState::Up | HostState::Late => (true, true),
        HostState::Down | HostState::Unreachable => (true, false),
        HostState::Left | HostState::Paused | HostState::Maintenance => (false, false),
    }
}

/// True when a member in `state` is counted and not up.
pub fn is_missing(state: HostState) -> bool {
    standing(state) == (true, false)
}

/// A group's counters, kept on every member's state change.
#[derive(Clone, Debug, Default)]
pub struct Count {
    /// Members up or late.
    pub up: u32,
    /// Of them, late.
    pub late: u32,
    /// Members counted.
    pub total: u32,
    /// The group's state as last judged.
    pub down: bool,
    /// Its members (for listing the missing ones at a change).
    pub members: HashSet<Slot>,
}

impl Count {
    /// Adds (`sign` 1) or removes (-1) a member in `state`.
    pub fn apply(&mut self, state: HostState, sign: i8) {
        let (counted, up) = standing(state);
        let step = |n: &mut u32, yes: bool| {
            if yes {
                *n = if sign > 0 {
                    *n + 1
                } else {
                    n.saturating_sub(1)
                };
            }
        };
        step(&mut self.total, counted);
        step(&mut self.up, up);
        step(&mut self.late, state == HostState::Late);
    }

    /// Members that must be up under `quorum`: capped at the members
    /// counted, so members in maintenance or `left` never leave a group
    /// that cannot be judged (all that are counted must then be up).
    pub fn need(&self, quorum: Quorum) -> u32 {
        quorum.need(self.total).min(self.total)
    }

    /// Whether the counts make the group down under `quorum` (a group with
    /// no member counted is not).
    pub fn is_down(&self, quorum: Quorum) -> bool {
        self.up < self.need(quorum)
    }

    /// How the group stands for its dependents.
    pub fn status(&self, quorum: Quorum) -> Status {
        if self.down {
            Status::Blocked
        } else if self.up - self.late < self.need(quorum) {
            Status::Pending
        } else {
            Status::Clear
        }
    }
}

/// One host's ties: its groups, its parent, and where its dependency
/// stands.
#[derive(Clone, Debug, Default)]
pub struct Ties {
    /// Indexes into [`Spec::groups`].
    pub groups: Vec<u16>,
    /// What it depends on.
    pub parent: Option<Parent>,
    /// Its `down` waits for its parent's verdict (it is `late`, no
    /// deadline queued).
    pub held: bool,
    /// Its parent recovered at this clock ms while it was unreachable: it
    /// is judged again one timeout later.
    pub grace_from: Option<u64>,
    /// What its events carry.
    pub context: Arc<super::context::Context>,
}

impl Ties {
    /// True when it ties the host to nothing: only the fresh timeout of an
    /// `unreachable` host that lost its parent.
    pub fn is_bare(&self) -> bool {
        self.groups.is_empty() && self.parent.is_none()
    }
}

/// The runtime side of [`Spec`]: memberships, counters, dependents.
#[derive(Debug, Default)]
pub struct Topology {
    /// The configuration.
    pub spec: Spec,
    /// Per group, in `spec.groups` order.
    pub counts: Vec<Count>,
    /// Hosts with any tie, and unreachable hosts that lost theirs
    /// ([`Ties::is_bare`]).
    pub ties: HashMap<Slot, Ties>,
    /// Dependents of each host parent, by the parent's id.
    pub host_dependents: HashMap<Arc<str>, HashSet<Slot>>,
    /// Dependents of each group.
    pub group_dependents: Vec<HashSet<Slot>>,
    /// Events made by knock-on changes, for the caller to publish.
    pub pending: Vec<super::model::Event>,
    /// A move re-resolves the host's ties.
    pub uses_networks: bool,
    /// Hosts whose labels changed: their ties are resolved again at the
    /// end of the call (`Monitor::settle_topology`).
    pub relabeled: Vec<Slot>,
}

impl Topology {
    /// Empty runtime state for `spec`.
    pub fn new(spec: Spec) -> Self {
        let n = spec.groups.len();
        Self {
            uses_networks: spec.uses_networks(),
            spec,
            counts: vec![Count::default(); n],
            group_dependents: vec![HashSet::new(); n],
            ..Self::default()
        }
    }

    /// Notes that the host in `slot` has new labels (its groups and parent
    /// may change).
    pub fn note_relabeled(&mut self, slot: Slot) {
        if !self.is_empty() {
            self.relabeled.push(slot);
        }
    }

    /// True when nothing is declared: every hook returns at once.
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    /// The dependents of `parent`.
    pub fn dependents(&self, parent: &Parent) -> Vec<Slot> {
        let set = match parent {
            Parent::Host(id) => self.host_dependents.get(id),
            Parent::Group(g) => self.group_dependents.get(usize::from(*g)),
        };
        set.map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// How group `g` stands for its dependents.
    pub fn group_status(&self, g: u16) -> Status {
        let g = usize::from(g);
        self.counts[g].status(self.spec.groups[g].quorum)
    }

    /// The display name of a parent: the host id, or `group:NAME`.
    pub fn parent_name(&self, parent: &Parent) -> Arc<str> {
        match parent {
            Parent::Host(id) => id.clone(),
            Parent::Group(g) => format!("group:{}", self.spec.groups[usize::from(*g)].name).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::*;

    fn count(states: &[HostState]) -> Count {
        let mut c = Count::default();
        for &s in states {
            c.apply(s, 1);
        }
        c
    }

    /// Members written one letter each: `u`p, `l`ate, `d`own,
    /// unreac`h`able, lef`t`, `p`aused, `m`aintenance.
    fn members(letters: &str) -> Vec<HostState> {
        letters
            .chars()
            .map(|c| match c {
                'u' => Up,
                'l' => Late,
                'd' => Down,
                'h' => Unreachable,
                't' => Left,
                'p' => Paused,
                'm' => Maintenance,
                _ => panic!("no state is written {c:?}"),
            })
            .collect()
    }

    #[test]
    fn quorum_table() {
        use Quorum::{MinUp, Ratio};
        use Status::{Blocked, Clear, Pending};
        // (quorum, how the group stands, the members that make it so); it
        // is down exactly when it blocks. With fewer counted than min_up
        // (`dh`, `udmmmm`, `ulm`, `uumt`) the quorum is all of them.
        let cases = [
            (MinUp(3), Clear, &["uuuddd", "uutpp", "uumt"][..]),
            (MinUp(3), Pending, &["uulddd", "ulm"]),
            (MinUp(3), Blocked, &["uudddd", "dh", "udmmmm"]),
            (MinUp(1), Clear, &["mp", ""]),
            (Ratio(0.5), Clear, &["uudd", "uudht", ""]),
            (Ratio(0.5), Blocked, &["uddd"]),
        ];
        for (quorum, status, rows) in cases {
            for letters in rows {
                let mut c = count(&members(letters));
                c.down = c.is_down(quorum);
                let row = format!("{letters:?} under {quorum:?}");
                assert_eq!(c.down, status == Blocked, "{row}");
                assert_eq!(c.status(quorum), status, "{row}");
            }
        }
    }

    #[test]
    fn removing_a_member_undoes_adding_it() {
        let mut c = count(&[Up, Late, Down, Left]);
        assert_eq!((c.up, c.late, c.total), (2, 1, 3));
        c.apply(Late, -1);
        c.apply(Down, -1);
        assert_eq!((c.up, c.late, c.total), (1, 0, 1));
    }

    #[test]
    fn host_parents_block_when_down_or_unreachable() {
        assert_eq!(host_status(Down), Status::Blocked);
        assert_eq!(host_status(Unreachable), Status::Blocked);
        assert_eq!(host_status(Late), Status::Pending);
        for s in [Up, Left, Paused] {
            assert_eq!(host_status(s), Status::Clear);
        }
    }
}
