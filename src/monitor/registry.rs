//! The host table: one compact record per host, found by id without
//! allocating.
//!
//! Plain data. The monitor owns the state machine; this module only stores
//! hosts, compactly, because a million of them must fit in 128 bytes each
//! with everything counted (issue 7, `docs/BENCHMARKS.md`):
//!
//! - records live in fixed-size chunks, so growing never copies the table
//!   (a doubling `Vec` would copy hundreds of megabytes under the monitor's
//!   lock, and hold twice the memory while it does);
//! - ids live in an append-only arena of fixed-size chunks, the record
//!   keeps only where its id starts, and the hash index from id to slot
//!   keeps no copy of the id;
//! - an IPv4 address fits the record; the rarer IPv6 ones sit in a side
//!   table.

use super::flap::FlapState;
use super::model::HostState;
use super::stats::BeatStats;
use hashbrown::{HashMap, HashTable};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// Index of a host in the registry; stable for the host's lifetime.
pub type Slot = u32;

/// What the registry knows of one host: 96 bytes. Its label-set ids live
/// beside it ([`LabelIds`]), so the record has no padding to pay for them.
///
/// Times are milliseconds on the monitor's clock ([`Clock`]): monotonic,
/// and equal to Unix time in milliseconds when the server started, so one
/// number serves both the deadlines and the display.
#[derive(Clone, Debug)]
pub struct Host {
    /// When its latest beat arrived, in [`Clock`] milliseconds.
    pub last_seen: u64,
    /// Highest sequence number seen from the current boot (v1 only).
    pub seq: u64,
    /// Which recent sequence numbers arrived: bit `i` is set when seq
    /// `seq - i` was received (bit 0 is `seq` itself). The replay window of
    /// signed beats (see `monitor::replay`), the reordering window of the
    /// beat statistics, and a chart of recent beats.
    pub recent_seqs: u64,
    /// Beat statistics: rhythm, loss rate, reordering, clock offset.
    pub stats: BeatStats,
    /// Flapping detection.
    pub flap: FlapState,
    /// Unix time of the last state change, in seconds (display only).
    pub since_secs: u32,
    /// The deadline this host has in the monitor's queue, in queue ticks
    /// (0: none). An entry in the queue whose time differs from this is
    /// stale and is skipped.
    pub scheduled: u32,
    /// Beats received.
    pub beats: u32,
    /// Beats estimated lost, from gaps in the sequence numbers.
    pub losses: u32,
    /// The first 4 bytes of the boot id of its latest beat (0: unknown):
    /// enough to tell a reboot, 12 bytes less per host than the whole id.
    pub boot: u32,
    /// Where its id starts in the registry's id arena.
    id_at: u32,
    /// IPv4 source address; for IPv6, see `Registry::v6`.
    ipv4: u32,
    port: u16,
    /// The interval its client declares (see [`encode_interval`]).
    interval: u16,
    id_len: u8,
    /// Current state.
    pub state: HostState,
    flags: u8,
    /// Which detector rule judges it (see [`super::Rules`]).
    pub rule: u8,
}

/// A host's two label-set ids, into the monitor's label table
/// (`labelsets`); set only by the monitor, which counts references.
///
/// Kept beside the record, not in it: two 16-bit ids would pad the
/// 96-byte record to 104 (8 bytes per host), while this table costs 4,
/// and nothing for a chunk of hosts none of which has labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelIds {
    /// The effective set: the declared one with the server's rules applied.
    pub effective: u16,
    /// The set its client declared.
    pub declared: u16,
}

const LEGACY: u8 = 1;
const GAP_UNCOUNTED: u8 = 2;
const IPV6: u8 = 4;
const ANSWERS_PROBES: u8 = 8;

/// Units of [`encode_interval`]'s codes, in milliseconds, by the code's
/// top two bits.
const INTERVAL_UNITS: [u32; 4] = [1, 1000, 60_000, 3_600_000];

/// A declared interval in 16 bits: a 14-bit count of milliseconds (up to
/// 16 s), seconds (4.5 h), minutes (11 days) or hours (the finest unit
/// that holds it), rounded up, so a timeout derived from it is never
/// shorter than the declared rhythm asks. Covers every u32 of ms.
fn encode_interval(ms: u32) -> u16 {
    const MAX: u32 = (1 << 14) - 1;
    for (index, unit) in INTERVAL_UNITS.into_iter().enumerate() {
        let count = ms.div_ceil(unit);
        if count <= MAX {
            return (index as u16) << 14 | count as u16;
        }
    }
    unreachable!("u32::MAX ms is under 16,383 hours")
}

fn decode_interval(code: u16) -> u32 {
    u32::from(code & 0x3fff).saturating_mul(INTERVAL_UNITS[usize::from(code >> 14)])
}

/// The first 4 bytes of a boot id: what a host record keeps of it.
pub fn boot_prefix(boot_id: &[u8; 16]) -> u32 {
    u32::from_be_bytes([boot_id[0], boot_id[1], boot_id[2], boot_id[3]])
}

fn unix_secs(at: SystemTime) -> u32 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

impl Host {
    /// A new record in `state`, seen at `last_seen` ([`Clock`] ms). Its id
    /// and address are set by [`Registry::insert`].
    pub fn new(state: HostState, since: SystemTime, last_seen: u64, stats: BeatStats) -> Self {
        Self {
            last_seen,
            seq: 0,
            recent_seqs: 0,
            stats,
            flap: FlapState::default(),
            since_secs: unix_secs(since),
            scheduled: 0,
            beats: 0,
            losses: 0,
            boot: 0,
            id_at: 0,
            ipv4: 0,
            port: 0,
            interval: 0,
            id_len: 0,
            state,
            flags: 0,
            rule: 0,
        }
    }

    /// Wall-clock time of the last state change (to the second).
    pub fn since(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(self.since_secs))
    }

    /// Sets the time of the last state change.
    pub fn set_since(&mut self, at: SystemTime) {
        self.since_secs = unix_secs(at);
    }

    /// Wall-clock time of its latest beat.
    pub fn last_seen_wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.last_seen)
    }

    /// The interval its client declares, in milliseconds (0: unknown).
    pub fn interval_ms(&self) -> u32 {
        decode_interval(self.interval)
    }

    /// Sets the declared interval (kept to the millisecond up to 32 s,
    /// to the second above).
    pub fn set_interval_ms(&mut self, ms: u32) {
        self.interval = encode_interval(ms);
    }

    /// True when `ms` is the interval it declares (as the record keeps it).
    pub fn declares(&self, ms: u32) -> bool {
        encode_interval(ms) == self.interval
    }

    /// True for hosts known only from the seed's `Thump!`.
    pub fn legacy(&self) -> bool {
        self.flags & LEGACY != 0
    }

    /// Marks a host known only from the seed's `Thump!`.
    pub fn set_legacy(&mut self, legacy: bool) {
        self.set_flag(LEGACY, legacy);
    }

    /// Set for a host restored from the store: its next sequence gap spans
    /// the server's own absence, so it is not counted as loss.
    pub fn gap_uncounted(&self) -> bool {
        self.flags & GAP_UNCOUNTED != 0
    }

    /// Sets or clears [`Host::gap_uncounted`].
    pub fn set_gap_uncounted(&mut self, uncounted: bool) {
        self.set_flag(GAP_UNCOUNTED, uncounted);
    }

    /// True when its client's latest beat said it answers probes.
    pub fn answers_probes(&self) -> bool {
        self.flags & ANSWERS_PROBES != 0
    }

    /// Sets or clears [`Host::answers_probes`].
    pub fn set_answers_probes(&mut self, answers: bool) {
        self.set_flag(ANSWERS_PROBES, answers);
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

/// The monitor's clock: milliseconds, monotonic, reading as Unix time in
/// milliseconds at the moment it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
    epoch_ms: u64,
}

impl Clock {
    /// A clock whose zero is the Unix epoch as the wall clock reads now.
    pub fn new(now: Instant, wall: SystemTime) -> Self {
        let epoch_ms = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            epoch: now,
            epoch_ms,
        }
    }

    /// `at` in milliseconds, rounded down.
    pub fn ms(&self, at: Instant) -> u64 {
        if at >= self.epoch {
            self.epoch_ms.saturating_add(millis(at - self.epoch, false))
        } else {
            self.epoch_ms.saturating_sub(millis(self.epoch - at, true))
        }
    }

    /// `at` in milliseconds, rounded up: for deadlines, which must never
    /// come early.
    pub fn ms_ceil(&self, at: Instant) -> u64 {
        if at >= self.epoch {
            self.epoch_ms.saturating_add(millis(at - self.epoch, true))
        } else {
            self.epoch_ms.saturating_sub(millis(self.epoch - at, false))
        }
    }

    /// The instant of clock time `ms`.
    pub fn instant(&self, ms: u64) -> Instant {
        if ms >= self.epoch_ms {
            self.epoch + Duration::from_millis(ms - self.epoch_ms)
        } else {
            let back = Duration::from_millis(self.epoch_ms - ms);
            self.epoch.checked_sub(back).unwrap_or(self.epoch)
        }
    }
}

/// `d` in whole milliseconds, rounded up or down; in 64-bit arithmetic
/// (the per-beat path calls this, and 128-bit division is slow).
pub fn millis(d: Duration, round_up: bool) -> u64 {
    let nanos = u64::from(d.subsec_nanos());
    let part = if round_up {
        nanos.div_ceil(1_000_000)
    } else {
        nanos / 1_000_000
    };
    d.as_secs().saturating_mul(1000).saturating_add(part)
}

/// Hosts per chunk of the record table.
const HOST_CHUNK: usize = 4096;
/// Bytes per chunk of the id arena (an id never spans two).
const ID_CHUNK: usize = 1 << 18;

/// Append-only storage for ids: 12-character ids cost 12 bytes each.
/// A forgotten host's id stays behind (counted in `garbage`): forgetting
/// is an operator's action, rare next to joins.
#[derive(Default)]
struct IdArena {
    chunks: Vec<Vec<u8>>,
    garbage: usize,
}

impl IdArena {
    fn push(&mut self, id: &str) -> u32 {
        let bytes = id.as_bytes();
        debug_assert!(bytes.len() <= usize::from(u8::MAX));
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() + bytes.len() <= ID_CHUNK);
        if !fits {
            self.chunks.push(Vec::with_capacity(ID_CHUNK));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let at = index * ID_CHUNK + chunk.len();
        chunk.extend_from_slice(bytes);
        u32::try_from(at).expect("id arena under 4 GiB")
    }

    fn get(&self, at: u32, len: u8) -> &[u8] {
        let at = at as usize;
        let start = at % ID_CHUNK;
        &self.chunks[at / ID_CHUNK][start..start + usize::from(len)]
    }
}

/// The host table.
///
/// A forgotten host leaves a free slot (`None`), reused by a later insert.
/// The monitor's queue may still hold entries for a freed slot; they stay
/// harmless because an entry only counts when its time equals the slot's
/// `Host::scheduled` (a free slot has none, and a reused slot's host keeps
/// its own deadline, so an equal stale entry would do exactly what the
/// real one does).
#[derive(Default)]
pub struct Registry {
    chunks: Vec<Box<[Option<Host>]>>,
    /// One past the highest slot ever used.
    end: Slot,
    index: HashTable<Slot>,
    hasher: hashbrown::DefaultHashBuilder,
    free: Vec<Slot>,
    ids: IdArena,
    v6: HashMap<Slot, Ipv6Addr>,
    /// Label ids by slot, in chunks like the records; a chunk is made at
    /// the first labelled host in it.
    label_ids: Vec<Option<Box<[LabelIds]>>>,
}

impl Registry {
    fn entry(&self, slot: Slot) -> Option<&Option<Host>> {
        let slot = slot as usize;
        self.chunks
            .get(slot / HOST_CHUNK)
            .map(|c| &c[slot % HOST_CHUNK])
    }

    fn entry_mut(&mut self, slot: Slot) -> Option<&mut Option<Host>> {
        let slot = slot as usize;
        self.chunks
            .get_mut(slot / HOST_CHUNK)
            .map(|c| &mut c[slot % HOST_CHUNK])
    }

    fn id_bytes(&self, host: &Host) -> &[u8] {
        self.ids.get(host.id_at, host.id_len)
    }

    /// Finds a host by id. Allocation-free: the hot path calls this per beat.
    pub fn find(&self, id: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(id.as_bytes());
        self.index
            .find(hash, |&slot| self.id_bytes(self.get(slot)) == id.as_bytes())
            .copied()
    }

    /// Finds many hosts at once: `found[i]` becomes `find(ids[i])`.
    ///
    /// Per id a lookup reads the index, the record and the id, each
    /// likely a cache miss at a million hosts, and each waiting for the one
    /// before. Here each step is taken for a group of ids before the next,
    /// so the misses of one step overlap instead of queueing.
    pub fn find_many(&self, ids: &[&str], found: &mut [Option<Slot>]) {
        const GROUP: usize = 16;
        for (ids, found) in ids.chunks(GROUP).zip(found.chunks_mut(GROUP)) {
            // The index: the first entry whose 7-bit hash tag matches (one
            // in 128 is another host's, caught below).
            for (id, slot) in ids.iter().zip(found.iter_mut()) {
                let hash = self.hasher.hash_one(id.as_bytes());
                *slot = self.index.find(hash, |_| true).copied();
            }
            // The records, touched so that the reads below hit the cache.
            let touched = found.iter().flatten().fold(0, |acc, &slot| {
                acc ^ self.try_get(slot).map_or(0, |h| h.id_at)
            });
            std::hint::black_box(touched);
            // The ids: confirm each candidate, or look it up in full.
            for (id, slot) in ids.iter().zip(found.iter_mut()) {
                if let Some(candidate) = *slot
                    && self.id_bytes(self.get(candidate)) != id.as_bytes()
                {
                    *slot = self.find(id);
                }
            }
        }
    }

    /// Adds a host not yet in the table, with its id and address, and
    /// returns its slot.
    pub fn insert(&mut self, mut host: Host, id: &str, addr: SocketAddr) -> Slot {
        debug_assert!(self.find(id).is_none(), "insert of a known host");
        let id = truncate_id(id);
        host.id_at = self.ids.push(id);
        host.id_len = u8::try_from(id.len()).expect("truncated to 255 bytes");
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                if self.end as usize == self.chunks.len() * HOST_CHUNK {
                    self.chunks.push((0..HOST_CHUNK).map(|_| None).collect());
                }
                self.end = self.end.checked_add(1).expect("fewer than 2^32 hosts");
                self.end - 1
            }
        };
        *self.entry_mut(slot).expect("slot allocated") = Some(host);
        self.set_addr(slot, addr);
        let hash = self.hasher.hash_one(id.as_bytes());
        let (chunks, ids, hasher) = (&self.chunks, &self.ids, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            let s = s as usize;
            let host = chunks[s / HOST_CHUNK][s % HOST_CHUNK]
                .as_ref()
                .expect("slot in the index holds a host");
            hasher.hash_one(ids.get(host.id_at, host.id_len))
        });
        slot
    }

    /// Puts `host` in place of the host in `slot` (same id), and returns
    /// the one it replaces.
    pub fn replace(&mut self, slot: Slot, mut host: Host, addr: SocketAddr) -> Host {
        let old = self.get_mut(slot);
        (host.id_at, host.id_len) = (old.id_at, old.id_len);
        let old = std::mem::replace(old, host);
        self.set_addr(slot, addr);
        old
    }

    /// Removes the host in `slot` (forget) and returns it; the slot is
    /// reused by a later insert.
    pub fn remove(&mut self, slot: Slot) -> Option<Host> {
        let host = self.entry_mut(slot)?.take()?;
        let hash = self.hasher.hash_one(self.ids.get(host.id_at, host.id_len));
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.ids.garbage += usize::from(host.id_len);
        self.v6.remove(&slot);
        self.set_label_ids(slot, LabelIds::default());
        self.free.push(slot);
        Some(host)
    }

    /// The label ids of the host in `slot` (none for a free slot).
    pub fn label_ids(&self, slot: Slot) -> LabelIds {
        let slot = slot as usize;
        match self.label_ids.get(slot / HOST_CHUNK) {
            Some(Some(chunk)) => chunk[slot % HOST_CHUNK],
            _ => LabelIds::default(),
        }
    }

    /// Sets the label ids of the host in `slot`.
    pub fn set_label_ids(&mut self, slot: Slot, ids: LabelIds) {
        let (chunk, at) = (slot as usize / HOST_CHUNK, slot as usize % HOST_CHUNK);
        if ids == LabelIds::default() && self.label_ids.get(chunk).is_none_or(Option::is_none) {
            return;
        }
        if self.label_ids.len() <= chunk {
            self.label_ids.resize_with(chunk + 1, || None);
        }
        self.label_ids[chunk]
            .get_or_insert_with(|| vec![LabelIds::default(); HOST_CHUNK].into_boxed_slice())[at] =
            ids;
    }

    /// The host in `slot`.
    pub fn get(&self, slot: Slot) -> &Host {
        self.try_get(slot).expect("slot in use holds a host")
    }

    /// The host in `slot`, to update.
    pub fn get_mut(&mut self, slot: Slot) -> &mut Host {
        self.try_get_mut(slot).expect("slot in use holds a host")
    }

    /// The host in `slot`, if the slot exists and holds a host.
    pub fn try_get(&self, slot: Slot) -> Option<&Host> {
        self.entry(slot)?.as_ref()
    }

    /// The host in `slot`, if the slot exists and holds a host.
    pub fn try_get_mut(&mut self, slot: Slot) -> Option<&mut Host> {
        self.entry_mut(slot)?.as_mut()
    }

    /// The id of `host` (a record of this registry).
    pub fn id_of(&self, host: &Host) -> &str {
        std::str::from_utf8(self.id_bytes(host)).expect("ids are stored from &str")
    }

    /// The id of the host in `slot`.
    pub fn id(&self, slot: Slot) -> &str {
        self.id_of(self.get(slot))
    }

    /// The source address of the latest beat of the host in `slot`.
    pub fn addr(&self, slot: Slot) -> SocketAddr {
        let host = self.get(slot);
        let ip = if host.flags & IPV6 != 0 {
            IpAddr::V6(self.v6.get(&slot).copied().unwrap_or(Ipv6Addr::UNSPECIFIED))
        } else {
            IpAddr::V4(Ipv4Addr::from(host.ipv4))
        };
        SocketAddr::new(ip, host.port)
    }

    /// True when `addr` is where the host in `slot` last beat from; cheap
    /// for IPv4, the common case, which the hot path checks per beat.
    pub fn addr_is(&self, slot: Slot, addr: SocketAddr) -> bool {
        let host = self.get(slot);
        match addr.ip() {
            IpAddr::V4(ip) => {
                host.flags & IPV6 == 0 && host.ipv4 == u32::from(ip) && host.port == addr.port()
            }
            IpAddr::V6(_) => self.addr(slot) == addr,
        }
    }

    /// Records where the host in `slot` now beats from.
    pub fn set_addr(&mut self, slot: Slot, addr: SocketAddr) {
        let v6 = match addr.ip() {
            IpAddr::V4(ip) => {
                self.v6.remove(&slot);
                let host = self.get_mut(slot);
                host.ipv4 = u32::from(ip);
                false
            }
            IpAddr::V6(ip) => {
                self.v6.insert(slot, ip);
                true
            }
        };
        let host = self.get_mut(slot);
        host.port = addr.port();
        host.set_flag(IPV6, v6);
    }

    /// One past the highest slot in use or free: every slot is below it.
    pub fn slot_end(&self) -> Slot {
        self.end
    }

    /// Every host with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Host)> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .take(self.end as usize)
            .enumerate()
            .filter_map(|(slot, host)| Some((slot as Slot, host.as_ref()?)))
    }

    /// How many hosts are known.
    pub fn len(&self) -> usize {
        self.end as usize - self.free.len()
    }

    /// True when no host is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of ids kept for hosts that were forgotten.
    pub fn forgotten_id_bytes(&self) -> usize {
        self.ids.garbage
    }
}

/// Ids are at most 255 bytes on the wire; longer ones (only possible from
/// the API or the store) are cut at a character boundary.
fn truncate_id(id: &str) -> &str {
    let mut end = id.len().min(usize::from(u8::MAX));
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host::new(
            HostState::Up,
            SystemTime::UNIX_EPOCH,
            0,
            BeatStats::new(1000.0),
        )
    }

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 1))
    }

    #[test]
    fn a_host_record_is_96_bytes() {
        assert_eq!(std::mem::size_of::<Host>(), 96);
        assert_eq!(std::mem::size_of::<Option<Host>>(), 96);
    }

    #[test]
    fn finds_hosts_by_id_across_growth() {
        let mut registry = Registry::default();
        for i in 0..10_000 {
            let slot = registry.insert(host(), &format!("h{i}"), v4(1));
            assert_eq!(slot, i);
        }
        for i in 0..10_000 {
            assert_eq!(registry.find(&format!("h{i}")), Some(i));
        }
        assert_eq!(registry.find("h10000"), None);
        assert_eq!(registry.len(), 10_000);
        assert_eq!(registry.id(42), "h42");
        assert_eq!(registry.iter().count(), 10_000);
        let ids: Vec<String> = (9_990..10_010).map(|i| format!("h{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut found = vec![Some(0); ids.len()];
        registry.find_many(&ids, &mut found);
        let want: Vec<_> = ids.iter().map(|id| registry.find(id)).collect();
        assert_eq!(found, want);
        assert_eq!(found.iter().flatten().count(), 10);
    }

    #[test]
    fn removed_slots_are_reused_and_the_index_stays_right() {
        let mut registry = Registry::default();
        for i in 0..10 {
            registry.insert(host(), &format!("h{i}"), v4(1));
        }
        let slot = registry.find("h3").expect("known");
        assert!(registry.remove(slot).is_some());
        assert!(registry.remove(slot).is_none(), "twice is a no-op");
        assert_eq!(registry.find("h3"), None);
        assert_eq!(registry.len(), 9);
        assert_eq!(registry.iter().count(), 9);
        assert!(registry.try_get_mut(slot).is_none());
        assert_eq!(
            registry.insert(host(), "new", v4(1)),
            slot,
            "free slot reused"
        );
        assert_eq!(registry.find("new"), Some(slot));
        assert_eq!(registry.id(slot), "new");
        for i in (0..10).filter(|&i| i != 3) {
            let found = registry.find(&format!("h{i}")).expect("still known");
            assert_eq!(registry.id(found), format!("h{i}"));
        }
        assert_eq!(registry.len(), 10);
        assert_eq!(registry.forgotten_id_bytes(), 2);
    }

    #[test]
    fn ids_of_every_length_round_trip_across_arena_chunks() {
        let mut registry = Registry::default();
        let long = "x".repeat(255);
        let ids: Vec<String> = (0..3000)
            .map(|i| format!("{i}-{long}")[..255].to_string())
            .collect();
        for id in &ids {
            registry.insert(host(), id, v4(1));
        }
        for id in &ids {
            let slot = registry.find(id).expect("known");
            assert_eq!(registry.id(slot), id);
        }
        let cut = registry.insert(host(), &"é".repeat(200), v4(1));
        assert_eq!(
            registry.id(cut),
            "é".repeat(127),
            "cut at a character boundary"
        );
    }

    #[test]
    fn ipv4_and_ipv6_addresses_round_trip() {
        let mut registry = Registry::default();
        let a = registry.insert(host(), "a", v4(7));
        let six: SocketAddr = "[2001:db8::7]:4000".parse().expect("addr");
        let b = registry.insert(host(), "b", six);
        assert_eq!((registry.addr(a), registry.addr(b)), (v4(7), six));
        assert!(registry.addr_is(a, v4(7)) && !registry.addr_is(a, v4(8)));
        assert!(registry.addr_is(b, six) && !registry.addr_is(b, v4(7)));
        registry.set_addr(b, v4(9));
        registry.set_addr(a, six);
        assert_eq!((registry.addr(a), registry.addr(b)), (six, v4(9)));
    }

    #[test]
    fn intervals_keep_milliseconds_then_round_up_in_coarser_units() {
        for ms in [0, 1, 100, 10_000, 16_383, 30_000, 3_600_000, 86_400_000] {
            assert_eq!(decode_interval(encode_interval(ms)), ms);
        }
        assert_eq!(decode_interval(encode_interval(16_384)), 17_000);
        assert_eq!(decode_interval(encode_interval(90_400)), 91_000);
        assert_eq!(decode_interval(encode_interval(20_000_001)), 20_040_000);
        assert!(decode_interval(encode_interval(u32::MAX)) >= u32::MAX - 3_600_000);
        for ms in [5, 16_384, 90_400, 20_000_001, u32::MAX] {
            assert!(decode_interval(encode_interval(ms)) >= ms.min(u32::MAX - 3_600_000));
        }
    }

    #[test]
    fn the_clock_reads_as_unix_milliseconds_both_ways() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let clock = Clock::new(now, wall);
        assert_eq!(clock.ms(now), 1_700_000_000_123);
        let later = now + Duration::from_micros(2_500);
        assert_eq!(
            (clock.ms(later), clock.ms_ceil(later)),
            (1_700_000_000_125, 1_700_000_000_126)
        );
        assert_eq!(
            clock.instant(1_700_000_000_125),
            now + Duration::from_millis(2)
        );
        assert_eq!(
            clock.ms(clock.instant(1_700_000_000_000)),
            1_700_000_000_000
        );
    }
}
