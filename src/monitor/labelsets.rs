//! Where a host's labels live in the core.
//!
//! Most hosts share a few label sets (`team=web,role=fe` on hundreds of
//! hosts), so sets are interned: the monitor keeps each distinct set once,
//! reference-counted, and each host has two 16-bit ids into that table
//! (beside its record, see [`super::registry::LabelIds`]): the set its
//! client declared and the effective set, the declared one with the
//! server's rules applied ([`LabelRule`]). The effective set
//! is what every reader sees ([`Monitor::labels_of`]); the declared one is
//! kept so the effective one can be computed again when the rules change
//! (a reload) or the host moves to another network.
//!
//! Rules apply in their order on top of the client's labels: on a name
//! set by both, the rule wins (the operator's config is the authority over
//! what a host says of itself), and a later rule wins over an earlier one.
//! A rule matches the labels as they stand when it is reached (the
//! client's, plus earlier rules'), so one rule may build on another.

use super::Monitor;
use super::model::HostState;
use super::registry::Slot;
use crate::labels::Labels;
use crate::select::Selector;
use hashbrown::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Index of a label set in the monitor's table; 0 is the empty set.
pub type LabelSetId = u16;

/// Most distinct label sets in use at once (declared and effective
/// together). A label set beyond it is refused and counted (see
/// [`LabelTable::refused`]); the host keeps the labels it had.
pub const MAX_LABEL_SETS: usize = LabelSetId::MAX as usize;

/// A server rule: hosts matching `select` get the labels `set`.
#[derive(Clone, Debug, Default)]
pub struct LabelRule {
    /// Which hosts (id glob, network, labels).
    pub select: Selector,
    /// The labels they get; on a conflict these win.
    pub set: Labels,
}

/// The interned label sets, reference-counted so a set no host uses any
/// more is freed (a fleet relabelled over time does not fill the table).
pub struct LabelTable {
    /// By id; the empty set at 0 is never freed.
    sets: Vec<Arc<Labels>>,
    /// References per id (0 for a free id; the empty set's is not kept).
    refs: Vec<u32>,
    index: HashMap<Arc<Labels>, LabelSetId>,
    free: Vec<LabelSetId>,
    refused: u64,
    /// Hosts by state whose effective set this is, by id (kept on every
    /// change, so `/metrics` by label never scans the hosts; not kept for
    /// the empty set, which is what the others leave of the fleet).
    states: Vec<StateCounts>,
}

/// Hosts by state, in [`HostState::index`] order.
pub type StateCounts = [u64; HostState::ALL.len()];

impl Default for LabelTable {
    fn default() -> Self {
        let empty = Arc::new(Labels::new());
        Self {
            sets: vec![empty.clone()],
            refs: vec![0],
            index: HashMap::from_iter([(empty, 0)]),
            free: Vec::new(),
            refused: 0,
            states: vec![StateCounts::default()],
        }
    }
}

impl LabelTable {
    /// The id of `labels`, taking one reference; `None` when the table is
    /// full (counted in [`LabelTable::refused`]).
    pub fn intern(&mut self, labels: &Labels) -> Option<LabelSetId> {
        if labels.is_empty() {
            return Some(0);
        }
        if let Some(&id) = self.index.get(labels) {
            self.refs[usize::from(id)] += 1;
            return Some(id);
        }
        let set = Arc::new(labels.clone());
        let id = match self.free.pop() {
            Some(id) => {
                self.sets[usize::from(id)] = set.clone();
                self.refs[usize::from(id)] = 1;
                self.states[usize::from(id)] = StateCounts::default();
                id
            }
            None if self.sets.len() <= MAX_LABEL_SETS => {
                self.sets.push(set.clone());
                self.refs.push(1);
                self.states.push(StateCounts::default());
                LabelSetId::try_from(self.sets.len() - 1).expect("bounded by MAX_LABEL_SETS")
            }
            None => {
                self.refused += 1;
                return None;
            }
        };
        self.index.insert(set, id);
        Some(id)
    }

    /// Drops one reference to `id`, freeing the set at the last one.
    pub fn release(&mut self, id: LabelSetId) {
        let at = usize::from(id);
        if id == 0 || self.refs.get(at).is_none_or(|&n| n == 0) {
            return;
        }
        self.refs[at] -= 1;
        if self.refs[at] == 0 {
            let empty = self.sets[0].clone();
            let set = std::mem::replace(&mut self.sets[at], empty);
            self.index.remove(&*set);
            self.free.push(id);
        }
    }

    /// The set with id `id` (the empty set for an unknown id).
    pub fn get(&self, id: LabelSetId) -> &Arc<Labels> {
        self.sets.get(usize::from(id)).unwrap_or(&self.sets[0])
    }

    /// Distinct non-empty sets in use.
    pub fn len(&self) -> usize {
        self.sets.len() - 1 - self.free.len()
    }

    /// True when no host has a label.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label sets refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts one host in `state` into (`add`) or out of set `id`.
    fn count(&mut self, id: LabelSetId, state: HostState, add: bool) {
        if id == 0 {
            return;
        }
        if let Some(counts) = self.states.get_mut(usize::from(id)) {
            let n = &mut counts[state.index()];
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// Every non-empty set in use as some host's effective set, with its
    /// hosts by state.
    pub fn counts_by_set(&self) -> Vec<(Arc<Labels>, StateCounts)> {
        self.sets
            .iter()
            .zip(&self.states)
            .skip(1)
            .filter(|(_, counts)| counts.iter().any(|&n| n > 0))
            .map(|(set, counts)| (set.clone(), *counts))
            .collect()
    }

    /// Heap bytes of the table, roughly (for the memory bench).
    pub fn heap_bytes(&self) -> usize {
        let per_set: usize = self
            .sets
            .iter()
            .map(|s| {
                s.iter()
                    .map(|(n, v)| n.len() + v.len() + 2 * 24 + 48)
                    .sum::<usize>()
                    + 48
            })
            .sum();
        per_set
            + self.sets.capacity() * 10
            + self.index.capacity() * 10
            + self.states.capacity() * std::mem::size_of::<StateCounts>()
    }
}

/// The effective labels of host `id` at `addr` declaring `declared`.
pub fn apply_rules(
    rules: &[LabelRule],
    id: &str,
    addr: Option<IpAddr>,
    declared: &Labels,
) -> Labels {
    let mut labels = declared.clone();
    for rule in rules {
        if rule.select.matches(id, addr, &labels) {
            labels = labels.overlaid(&rule.set);
        }
    }
    labels
}

/// What a label announcement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// The host's labels are now the ones announced (`changed`: they
    /// differ from what the server had).
    Applied {
        /// The declared set differs from the one the server had.
        changed: bool,
    },
    /// No host has that id (it has not beaten yet, or was forgotten).
    UnknownHost,
    /// With keys: older than the host's newest beat, so a replay (or one
    /// overtaken by a newer announcement); ignored.
    Stale,
    /// The label table is full; the host keeps its labels.
    TableFull,
}

impl Monitor {
    /// The host's effective labels: its client's, with the server's rules
    /// applied. The empty set for a free slot.
    pub fn labels_of(&self, slot: Slot) -> &Labels {
        self.labels_arc(slot)
    }

    /// [`Monitor::labels_of`] as a shared pointer (events carry it).
    pub fn labels_arc(&self, slot: Slot) -> &Arc<Labels> {
        self.labels.get(self.registry.label_ids(slot).effective)
    }

    /// The labels the host's client declared, before the server's rules.
    pub fn declared_labels_of(&self, slot: Slot) -> &Labels {
        self.labels.get(self.registry.label_ids(slot).declared)
    }

    /// The interned label sets.
    pub fn label_table(&self) -> &LabelTable {
        &self.labels
    }

    /// The server's label rules.
    pub fn label_rules(&self) -> &[LabelRule] {
        &self.label_rules
    }

    /// Replaces the server's label rules (start, reload) and computes every
    /// host's effective labels again: O(hosts), and rare. Hosts whose
    /// labels changed are marked for the store.
    pub fn set_label_rules(&mut self, rules: Vec<LabelRule>) {
        self.label_rules = rules;
        self.rules_use_networks = self.label_rules.iter().any(|r| r.select.uses_networks());
        for slot in 0..self.registry.slot_end() {
            if self.registry.try_get(slot).is_some() {
                self.relabel(slot);
            }
        }
    }

    /// A client's label announcement for host `host_id`: its declared
    /// labels become `labels`. `seq` is the sequence number of the beat the
    /// announcement rides with; with keys one older than the host's newest
    /// beat is refused (a replayed announcement must not undo a change).
    pub fn declare_labels(&mut self, host_id: &str, labels: &Labels, seq: u64) -> Declared {
        let Some(slot) = self.registry.find(host_id) else {
            return Declared::UnknownHost;
        };
        if self.settings.enforce_seq && seq < self.registry.get(slot).seq {
            return Declared::Stale;
        }
        if **self.labels.get(self.registry.label_ids(slot).declared) == *labels {
            return Declared::Applied { changed: false };
        }
        let Some(id) = self.labels.intern(labels) else {
            return Declared::TableFull;
        };
        self.set_declared(slot, id);
        self.changes.mark(slot);
        Declared::Applied { changed: true }
    }

    /// Sets a restored host's declared labels (the store keeps them; the
    /// effective ones follow from today's rules).
    pub fn restore_labels(&mut self, slot: Slot, declared: &Labels) {
        if self.registry.try_get(slot).is_none() {
            return;
        }
        let id = self.labels.intern(declared).unwrap_or(0);
        self.set_declared(slot, id);
    }

    /// Makes `id` (one reference taken) the host's declared set, and
    /// computes its effective one again.
    fn set_declared(&mut self, slot: Slot, id: LabelSetId) {
        let mut ids = self.registry.label_ids(slot);
        let old = std::mem::replace(&mut ids.declared, id);
        self.registry.set_label_ids(slot, ids);
        self.labels.release(old);
        self.relabel(slot);
    }

    /// Computes the host's effective labels again from its declared ones,
    /// id and address; marks it for the store when they changed.
    pub(super) fn relabel(&mut self, slot: Slot) {
        let mut ids = self.registry.label_ids(slot);
        let (declared_id, current) = (ids.declared, ids.effective);
        let effective_id = if self.label_rules.is_empty() {
            if declared_id == current {
                return;
            }
            self.labels
                .intern(self.labels.get(declared_id).clone().as_ref())
        } else {
            let declared = self.labels.get(declared_id).clone();
            let addr = Some(self.registry.addr(slot).ip());
            let effective = apply_rules(&self.label_rules, self.registry.id(slot), addr, &declared);
            if **self.labels.get(current) == effective {
                return;
            }
            self.labels.intern(&effective)
        };
        let Some(effective_id) = effective_id else {
            return; // table full: keep what it had
        };
        ids.effective = effective_id;
        self.registry.set_label_ids(slot, ids);
        let state = self.registry.get(slot).state;
        self.labels.count(current, state, false);
        self.labels.count(effective_id, state, true);
        self.labels.release(current);
        self.changes.mark(slot);
        self.topo.note_relabeled(slot);
    }

    /// Counts the host in `slot` from state `from` into `to` in its
    /// effective set's counts (the caller moves the fleet's).
    pub(super) fn count_labelled_move(&mut self, slot: Slot, from: HostState, to: HostState) {
        let id = self.registry.label_ids(slot).effective;
        if id != 0 && from != to {
            self.labels.count(id, from, false);
            self.labels.count(id, to, true);
        }
    }

    /// Hosts by state for each effective label set: the non-empty sets,
    /// then the hosts without labels (the empty set). Copies a few numbers
    /// per set, never scans the hosts.
    pub fn counts_by_labels(&self) -> Vec<(Arc<Labels>, StateCounts)> {
        let mut sets = self.labels.counts_by_set();
        let mut rest = self.counts;
        for (_, counts) in &sets {
            for (r, n) in rest.iter_mut().zip(counts) {
                *r = r.saturating_sub(*n);
            }
        }
        sets.push((self.labels.get(0).clone(), rest));
        sets
    }

    /// After the host in `slot` moved to a new address: its network rules
    /// may now select it differently.
    pub(super) fn relabel_moved(&mut self, slot: Slot) {
        if self.rules_use_networks {
            self.relabel(slot);
        }
    }

    /// Drops the references of the host in `slot` (it leaves the
    /// registry, or is replaced by a restored record).
    pub(super) fn release_labels(&mut self, slot: Slot) {
        let ids = self.registry.label_ids(slot);
        self.registry.set_label_ids(slot, Default::default());
        if let Some(host) = self.registry.try_get(slot) {
            self.labels.count(ids.effective, host.state, false);
        }
        self.labels.release(ids.effective);
        self.labels.release(ids.declared);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Sim, beat};
    use super::*;
    use crate::select::Selection;

    fn labels(text: &str) -> Labels {
        Labels::parse_list(text).expect("labels")
    }

    fn rule(select: &str, set: &str) -> LabelRule {
        LabelRule {
            select: toml::from_str::<Selection>(select)
                .expect("selection")
                .compile()
                .expect("compile"),
            set: labels(set),
        }
    }

    #[test]
    fn equal_sets_share_one_entry_and_the_last_release_frees_it() {
        let mut table = LabelTable::default();
        let a = table.intern(&labels("team=web")).expect("room");
        let b = table.intern(&labels("team=web")).expect("room");
        assert_eq!(a, b);
        assert_eq!(table.intern(&Labels::new()), Some(0));
        assert_eq!(table.len(), 1);
        table.release(a);
        assert_eq!(table.len(), 1, "one reference left");
        table.release(b);
        assert_eq!(table.len(), 0);
        let c = table.intern(&labels("team=db")).expect("room");
        assert_eq!(c, a, "the freed id is reused");
        assert_eq!(**table.get(c), labels("team=db"));
    }

    #[test]
    fn rules_apply_in_order_and_win_over_the_client() {
        let rules = [
            rule("networks = [\"10.4.0.0/16\"]", "site=fra"),
            rule("labels = { site = \"fra\" }", "region=eu"),
            rule("hosts = [\"db-*\"]", "team=db"),
        ];
        let ip = Some("10.4.1.2".parse().expect("ip"));
        let got = apply_rules(&rules, "db-1", ip, &labels("team=web,site=ber"));
        assert_eq!(got, labels("team=db,site=fra,region=eu"));
        let elsewhere = Some("10.5.1.2".parse().expect("ip"));
        let got = apply_rules(&rules, "web-1", elsewhere, &labels("team=web"));
        assert_eq!(got, labels("team=web"));
    }

    #[test]
    fn announcements_rules_moves_and_forgets_keep_the_table_right() {
        let mut sim = Sim::new();
        sim.observe(0.0, beat("a"));
        sim.observe(0.0, beat("b"));
        let slot = |sim: &Sim, id| sim.monitor.registry().find(id).expect("known");
        let (a, b) = (slot(&sim, "a"), slot(&sim, "b"));
        assert!(sim.monitor.labels_of(a).is_empty());
        let web = labels("team=web");
        for id in ["a", "b"] {
            assert_eq!(
                sim.monitor.declare_labels(id, &web, 1),
                Declared::Applied { changed: true }
            );
        }
        assert_eq!(
            sim.monitor.declare_labels("a", &web, 1),
            Declared::Applied { changed: false }
        );
        assert_eq!(sim.monitor.labels_of(a), &web);
        assert_eq!(sim.monitor.label_table().len(), 1, "shared");
        assert_eq!(
            sim.monitor.declare_labels("nope", &web, 1),
            Declared::UnknownHost
        );
        // A rule by network: both hosts beat from 10.0.0.1 (testing::beat).
        sim.monitor
            .set_label_rules(vec![rule("networks = [\"10.0.0.0/8\"]", "site=ten")]);
        assert_eq!(sim.monitor.labels_of(b), &labels("team=web,site=ten"));
        assert_eq!(sim.monitor.declared_labels_of(b), &web);
        // b moves out of the network: its next beat relabels it.
        let moved = super::super::Observation {
            addr: "192.168.1.1:5000".parse().expect("addr"),
            seq: Some(2),
            ..beat("b")
        };
        sim.observe(1.0, moved);
        assert_eq!(sim.monitor.labels_of(b), &web);
        assert_eq!(sim.monitor.labels_of(a), &labels("team=web,site=ten"));
        sim.monitor
            .set_label_rules(vec![rule("networks = [\"172.16.0.0/12\"]", "site=x")]);
        assert_eq!(sim.monitor.labels_of(a), &web);
        assert_eq!(sim.monitor.label_table().len(), 1, "site=ten freed");
        sim.monitor
            .forget("a", sim.at(1.0), std::time::SystemTime::now())
            .expect("known");
        sim.monitor
            .forget("b", sim.at(1.0), std::time::SystemTime::now())
            .expect("known");
        assert_eq!(
            sim.monitor.label_table().len(),
            0,
            "forgotten hosts release"
        );
    }

    /// The kept counts by label set, as a scan of every host finds them.
    fn scanned(sim: &Sim) -> Vec<(Labels, StateCounts)> {
        let mut by: std::collections::BTreeMap<String, (Labels, StateCounts)> = Default::default();
        let registry = sim.monitor.registry();
        for slot in 0..registry.slot_end() {
            if let Some(host) = registry.try_get(slot) {
                let labels = sim.monitor.labels_of(slot).clone();
                let entry = by.entry(labels.to_string()).or_insert((labels, [0; 7]));
                entry.1[host.state.index()] += 1;
            }
        }
        by.into_values().collect()
    }

    fn kept(sim: &Sim) -> Vec<(Labels, StateCounts)> {
        let mut kept: Vec<(Labels, StateCounts)> = sim
            .monitor
            .counts_by_labels()
            .into_iter()
            .filter(|(_, c)| c.iter().any(|&n| n > 0))
            .map(|(l, c)| ((*l).clone(), c))
            .collect();
        kept.sort_by_key(|(l, _)| l.to_string());
        kept
    }

    #[test]
    fn hosts_by_state_per_label_set_follow_every_change() {
        let mut sim = Sim::new();
        for id in ["a", "b", "c"] {
            sim.observe(0.0, beat(id));
        }
        sim.monitor.declare_labels("a", &labels("team=web"), 1);
        sim.monitor.declare_labels("b", &labels("team=web"), 1);
        assert_eq!(kept(&sim), scanned(&sim));
        sim.observe(20.0, beat("c"));
        sim.expire(20.0); // a and b late
        assert_eq!(kept(&sim), scanned(&sim));
        sim.expire(40.0); // a and b down, c late
        assert_eq!(kept(&sim), scanned(&sim));
        let web = kept(&sim)[1].1;
        assert_eq!(web[HostState::Down.index()], 2, "{:?}", kept(&sim));
        sim.monitor.declare_labels("b", &labels("team=db"), 1);
        sim.monitor
            .set_label_rules(vec![rule("hosts = [\"c\"]", "team=ops")]);
        assert_eq!(kept(&sim), scanned(&sim));
        sim.observe(41.0, beat("a"));
        sim.monitor
            .forget("b", sim.at(42.0), std::time::SystemTime::now())
            .expect("known");
        assert_eq!(kept(&sim), scanned(&sim));
        assert_eq!(kept(&sim).len(), 2, "web and ops: {:?}", kept(&sim));
    }

    #[test]
    fn with_keys_an_announcement_older_than_the_newest_beat_is_stale() {
        let mut sim = Sim::with(super::super::Settings {
            enforce_seq: true,
            ..super::super::testing::settings()
        });
        let run = 1_700_000_000u64 << 32;
        sim.observe(
            0.0,
            super::super::Observation {
                seq: Some(run + 5),
                ..beat("a")
            },
        );
        let web = labels("team=web");
        assert_eq!(
            sim.monitor.declare_labels("a", &web, run + 4),
            Declared::Stale
        );
        assert_eq!(
            sim.monitor.declare_labels("a", &web, run + 5),
            Declared::Applied { changed: true }
        );
    }
}
