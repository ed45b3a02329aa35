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
}

impl HostState {
    /// The name used in output, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Late => "late",
            HostState::Down => "down",
            HostState::Left => "left",
        }
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
    /// Beat statistics: rhythm, loss rate, reordering, clock offset.
    pub stats: super::stats::BeatStats,
    /// Which detector rule judges it (see [`crate::detection::Rules`]).
    pub rule: u8,
    /// Flapping detection.
    pub flap: crate::detection::FlapState,
}

/// The host table.
#[derive(Default)]
pub struct Registry {
    hosts: Vec<Host>,
    index: HashTable<Slot>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Registry {
    /// Finds a host by id. Allocation-free: the hot path calls this per beat.
    pub fn find(&self, id: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&slot| &*self.hosts[slot as usize].id == id)
            .copied()
    }

    /// Adds a host not yet in the table and returns its slot.
    pub fn insert(&mut self, host: Host) -> Slot {
        debug_assert!(self.find(&host.id).is_none(), "insert of a known host");
        let slot = Slot::try_from(self.hosts.len()).expect("fewer than 2^32 hosts");
        let hash = self.hasher.hash_one(&*host.id);
        self.hosts.push(host);
        let (hosts, hasher) = (&self.hosts, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(&*hosts[s as usize].id));
        slot
    }

    /// The host in `slot`.
    pub fn get(&self, slot: Slot) -> &Host {
        &self.hosts[slot as usize]
    }

    /// The host in `slot`, to update.
    pub fn get_mut(&mut self, slot: Slot) -> &mut Host {
        &mut self.hosts[slot as usize]
    }

    /// The host in `slot`, if the slot exists.
    pub fn try_get_mut(&mut self, slot: Slot) -> Option<&mut Host> {
        self.hosts.get_mut(slot as usize)
    }

    /// Every host, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// How many hosts are known.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is known yet.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
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
}
