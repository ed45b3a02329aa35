//! The host table: one entry per host, found by id without allocating.
//!
//! Plain data. The detector owns the state machine; this module only stores
//! hosts in a slab (`Vec`) addressed by [`Slot`], with a hash index from id
//! to slot that keeps no second copy of the id.

use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::time::Instant;

/// Index of a host in the registry; stable for the host's lifetime.
pub type Slot = u32;

/// The state vocabulary of DESIGN.md, used in code, JSON and output alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostState {
    /// Beating on time.
    Up,
    /// Silent past the warning time, not yet past its timeout.
    Late,
    /// Silent past its timeout.
    Down,
    /// Said goodbye: stopped cleanly, not an outage.
    Left,
    /// Paused by an operator (maintenance): raises no alarms until resumed.
    Paused,
}

impl HostState {
    /// The name used in output, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Late => "late",
            HostState::Down => "down",
            HostState::Left => "left",
            HostState::Paused => "paused",
        }
    }

    /// Every state, in the order of [`HostState::index`].
    pub const ALL: [HostState; 5] = [
        HostState::Up,
        HostState::Late,
        HostState::Down,
        HostState::Left,
        HostState::Paused,
    ];

    /// A dense index (0..[`HostState::ALL`].len()), for per-state counts.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses [`HostState::as_str`]'s names back.
    pub fn parse(name: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What the registry knows of one host.
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's id: from its beats, or its IP for legacy beats.
    pub id: Box<str>,
    /// Source address of its latest beat.
    pub addr: SocketAddr,
    /// Current state.
    pub state: HostState,
    /// Wall-clock time of the last state change (display only).
    pub since: SystemTime,
    /// When its latest beat arrived (monotonic: deadlines count from it).
    pub last_seen: Instant,
    /// Wall-clock time of its latest beat (display only).
    pub last_seen_wall: SystemTime,
    /// Highest sequence number seen from the current boot (v1 only).
    pub seq: u64,
    /// Boot id of its latest beat; all zero when unknown.
    pub boot_id: [u8; 16],
    /// The interval its client declares, in milliseconds (0: unknown).
    pub interval_ms: u32,
    /// Beats received.
    pub beats: u64,
    /// Beats estimated lost, from gaps in the sequence numbers.
    pub losses: u64,
    /// True for hosts known only from the seed's `Thump!`.
    pub legacy: bool,
    /// The deadline this host has in the detector's queue, if any. An entry
    /// in the queue whose time differs from this is stale and is skipped.
    pub scheduled: Option<Instant>,
    /// Which recent sequence numbers arrived: bit `i` is set when seq
    /// `seq - i` was received (bit 0 is `seq` itself). The replay window of
    /// signed beats (see `server::replay`), and a chart of recent beats.
    pub recent_seqs: u64,
    /// Set for a host restored from the store: its next sequence gap spans
    /// the server's own absence, so it is not counted as loss.
    pub gap_uncounted: bool,
    /// Beat statistics: rhythm, loss rate, reordering, clock offset.
    pub stats: super::stats::BeatStats,
    /// Which detector rule judges it (see [`crate::detection::Rules`]).
    pub rule: u8,
    /// Flapping detection.
    pub flap: crate::detection::FlapState,
}

/// The host table.
///
/// A forgotten host leaves a free slot (`None`), reused by a later insert.
/// The detector's queue may still hold entries for a freed slot; they stay
/// harmless because an entry only counts when its time equals the slot's
/// `Host::scheduled` (a free slot has none, and a reused slot's host keeps
/// its own deadline, so an equal stale entry would do exactly what the
/// real one does).
#[derive(Default)]
pub struct Registry {
    hosts: Vec<Option<Host>>,
    index: HashTable<Slot>,
    hasher: hashbrown::DefaultHashBuilder,
    free: Vec<Slot>,
}

fn live(host: &Option<Host>) -> &Host {
    host.as_ref().expect("slot in the index holds a host")
}

impl Registry {
    /// Finds a host by id. Allocation-free: the hot path calls this per beat.
    pub fn find(&self, id: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&slot| &*live(&self.hosts[slot as usize]).id == id)
            .copied()
    }

    /// Adds a host not yet in the table and returns its slot.
    pub fn insert(&mut self, host: Host) -> Slot {
        debug_assert!(self.find(&host.id).is_none(), "insert of a known host");
        let hash = self.hasher.hash_one(&*host.id);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.hosts[slot as usize] = Some(host);
                slot
            }
            None => {
                let slot = Slot::try_from(self.hosts.len()).expect("fewer than 2^32 hosts");
                self.hosts.push(Some(host));
                slot
            }
        };
        let (hosts, hasher) = (&self.hosts, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(&*live(&hosts[s as usize]).id)
        });
        slot
    }

    /// Removes the host in `slot` (forget) and returns it; the slot is
    /// reused by a later insert.
    pub fn remove(&mut self, slot: Slot) -> Option<Host> {
        let host = self.hosts.get_mut(slot as usize)?.take()?;
        let hash = self.hasher.hash_one(&*host.id);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.free.push(slot);
        Some(host)
    }

    /// The host in `slot`.
    pub fn get(&self, slot: Slot) -> &Host {
        live(&self.hosts[slot as usize])
    }

    /// The host in `slot`, to update.
    pub fn get_mut(&mut self, slot: Slot) -> &mut Host {
        self.hosts[slot as usize]
            .as_mut()
            .expect("slot in use holds a host")
    }

    /// The host in `slot`, if the slot exists and holds a host.
    pub fn try_get(&self, slot: Slot) -> Option<&Host> {
        self.hosts.get(slot as usize)?.as_ref()
    }

    /// One past the highest slot in use or free: every slot is below it.
    pub fn slot_end(&self) -> Slot {
        self.hosts.len() as Slot
    }

    /// The host in `slot`, if the slot exists and holds a host.
    pub fn try_get_mut(&mut self, slot: Slot) -> Option<&mut Host> {
        self.hosts.get_mut(slot as usize)?.as_mut()
    }

    /// Every host, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().flatten()
    }

    /// How many hosts are known.
    pub fn len(&self) -> usize {
        self.hosts.len() - self.free.len()
    }

    /// True when no host is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> Host {
        Host {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            state: HostState::Up,
            since: SystemTime::UNIX_EPOCH,
            last_seen: Instant::now(),
            last_seen_wall: SystemTime::UNIX_EPOCH,
            seq: 0,
            boot_id: [0; 16],
            interval_ms: 0,
            beats: 1,
            losses: 0,
            legacy: false,
            scheduled: None,
            recent_seqs: 1,
            gap_uncounted: false,
            stats: crate::server::stats::BeatStats::new(1000.0),
            rule: 0,
            flap: Default::default(),
        }
    }

    #[test]
    fn finds_hosts_by_id_across_growth() {
        let mut registry = Registry::default();
        for i in 0..1000 {
            assert_eq!(registry.insert(host(&format!("h{i}"))), i);
        }
        for i in 0..1000 {
            assert_eq!(registry.find(&format!("h{i}")), Some(i));
        }
        assert_eq!(registry.find("h1000"), None);
        assert_eq!(registry.len(), 1000);
        assert_eq!(&*registry.get(42).id, "h42");
    }

    #[test]
    fn removed_slots_are_reused_and_the_index_stays_right() {
        let mut registry = Registry::default();
        for i in 0..10 {
            registry.insert(host(&format!("h{i}")));
        }
        let slot = registry.find("h3").expect("known");
        assert_eq!(registry.remove(slot).map(|h| h.id), Some("h3".into()));
        assert_eq!(
            registry.remove(slot).map(|h| h.id),
            None,
            "twice is a no-op"
        );
        assert_eq!(registry.find("h3"), None);
        assert_eq!(registry.len(), 9);
        assert_eq!(registry.iter().count(), 9);
        assert!(registry.try_get_mut(slot).is_none());
        assert_eq!(registry.insert(host("new")), slot, "free slot reused");
        assert_eq!(registry.find("new"), Some(slot));
        for i in (0..10).filter(|&i| i != 3) {
            let found = registry.find(&format!("h{i}")).expect("still known");
            assert_eq!(&*registry.get(found).id, format!("h{i}"));
        }
        assert_eq!(registry.len(), 10);
    }

    #[test]
    fn state_indexes_match_the_list_and_names_parse_back() {
        for (i, state) in HostState::ALL.into_iter().enumerate() {
            assert_eq!(state.index(), i);
            assert_eq!(HostState::parse(state.as_str()), Some(state));
        }
        assert_eq!(HostState::parse("sleepy"), None);
    }
}
