//! Embedded persistence of the known-host registry and the recent events,
//! in one redb file under the data directory, so that a restart of the
//! server (or a `kill -9`) is not an outage of the fleet.
//!
//! Layout (format version [`FORMAT_VERSION`]):
//! - `hosts`: host id → one [`postcard`] record per host. The state is
//!   stored by name ([`HostState::as_str`]), not by position, so that new
//!   states can be added without rewriting old stores.
//! - `events`: event id → one record per event; only the newest
//!   `event_history` are kept.
//! - `meta`: `version`; `alive_ms`: the wall-clock time of the latest
//!   checkpoint, from which a restarted server tells how long it was away;
//!   and the fleet's loss averages ([`FleetLoss::to_parts`]):
//!   `fleet_burst_excess` and `fleet_probe_run` (`f64` bits) with
//!   `fleet_burst_samples` and `fleet_probe_samples`, rewritten at every
//!   checkpoint. A store without them (written before they were kept)
//!   restores as nothing learnt, and so does a value out of range. Readers
//!   take only the keys they know, so adding these needed no new version.
//!
//! A lock file beside the store keeps a second server off the same data
//! directory. A store that cannot be read makes [`Store::open`] or
//! [`Store::load`] fail with its path; it is never rewritten or wiped
//! (only `lubdub server --forget-all`, through [`forget`], removes it).
//! Before the file is opened for writing, it is opened and read in full
//! through the `dry_run` backend, which writes nothing to disk: a corrupt file, or one
//! on which redb panics, is refused before a single byte of it changes. An
//! empty file is refused too: it is a store whose contents were lost, not a
//! new one. The directory is created `0700` and the store `0600`: it holds
//! every host's address and sequence numbers.

mod dir;
mod dry_run;
mod read;
mod record;

pub use dir::{ALIVE_EVERY, ALIVE_NAME, forget, mark_alive, resolve_data_dir};

use dir::{create_private, lock, read_alive};
use read::{catch_panic, check, read_all};
use record::{encode_event, encode_host, millis};

use crate::labels::Labels;
use crate::monitor::stats::FleetLoss;
use crate::monitor::{Event, HostState};
use redb::{Database, TableDefinition};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "lubdub.redb";
/// The lock file's name inside the data directory.
pub const LOCK_NAME: &str = "lubdub.lock";
/// The layout version written in `meta`; a newer one is refused.
pub const FORMAT_VERSION: u64 = 1;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The `meta` keys of [`FleetLoss::to_parts`], in its order.
const FLEET_LOSS_KEYS: [&str; 4] = [
    "fleet_burst_excess",
    "fleet_burst_samples",
    "fleet_probe_run",
    "fleet_probe_samples",
];
/// `windows` → the open maintenance windows, as one JSON array (a few
/// windows, rewritten whole when they change).
const MAINTENANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("maintenance");

/// redb's page cache (a tenth of it for writes). It grows as used, up to
/// this, and stays: at 256 MiB it held most of a million-host store in the
/// server's memory. At 32 MiB checkpoints cost the same CPU (checkpoints
/// are written in parts, and the kernel's page cache serves what redb's
/// does not) and a restart loads as fast.
const CACHE_BYTES: usize = 32 << 20;

/// Why the store cannot be used. Messages name the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No data directory was given and none could be found.
    #[error(
        "no data directory: set --data-dir (there is no $STATE_DIRECTORY and no home directory)"
    )]
    NoDataDir,
    /// The data directory cannot be created or its lock file opened.
    #[error("cannot use data directory {path}")]
    Dir {
        /// The directory or lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Another server holds the data directory's lock.
    #[error("another lubdub server is using data directory {path} (its lock {LOCK_NAME} is held)")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The store file cannot be opened or read: corrupt, or not a store.
    #[error(
        "cannot read store {path} (left untouched: move it away, or start afresh with --forget-all)"
    )]
    Unreadable {
        /// The store file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// The store file is empty: its contents were lost (a failed copy, a
    /// full disk while restoring), which is not the same as no store.
    #[error(
        "store {path} is empty (0 bytes): its contents were lost (left untouched: restore it, or start afresh with --forget-all)"
    )]
    Empty {
        /// The store file.
        path: PathBuf,
    },
    /// The store library panicked while reading the file: it is corrupt in
    /// a way redb does not report as an error.
    #[error(
        "cannot read store {path}: {message} (left untouched: move it away, or start afresh with --forget-all)"
    )]
    Panicked {
        /// The store file.
        path: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// A record in the store cannot be decoded.
    #[error(
        "store {path} holds an unreadable record: {what} (left untouched: move it away, or start afresh with --forget-all)"
    )]
    BadRecord {
        /// The store file.
        path: PathBuf,
        /// Which record, and what is wrong with it.
        what: String,
    },
    /// A checkpoint could not be written (full or read-only disk, I/O error).
    #[error("cannot write store {path}")]
    Write {
        /// The store file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
}

/// What the store knows of one host: the registry's host without the
/// monotonic times, which mean nothing to another process.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHost {
    /// The host's id.
    pub id: Box<str>,
    /// Its state.
    pub state: HostState,
    /// Wall-clock time of its last state change.
    pub since: SystemTime,
    /// Source address of its latest beat.
    pub addr: SocketAddr,
    /// Wall-clock time of its latest beat.
    pub last_seen: SystemTime,
    /// Highest sequence number seen.
    pub seq: u64,
    /// Boot id of its latest beat (all zero: unknown).
    pub boot_id: [u8; 16],
    /// Declared interval in milliseconds (0: unknown).
    pub interval_ms: u32,
    /// Beats received.
    pub beats: u64,
    /// Beats estimated lost.
    pub losses: u64,
    /// Known only from the seed's `Thump!`.
    pub legacy: bool,
    /// The labels its client declared (the server's rules are applied
    /// again at restore, so a changed rule takes effect).
    pub labels: Labels,
}

/// One checkpoint: what changed since the previous one.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Hosts changed since the last checkpoint.
    pub hosts: Vec<StoredHost>,
    /// Events published since the last checkpoint, oldest first.
    pub events: Vec<Event>,
    /// Hosts forgotten since the last checkpoint (deleted before the
    /// changed hosts are written, so one that beat again is kept).
    pub forgotten: Vec<Box<str>>,
    /// How many events the store keeps; older ones are removed.
    pub event_history: usize,
    /// The open maintenance windows (JSON), when they changed.
    pub windows: Option<Vec<u8>>,
    /// The fleet's loss averages, when they are to be written (`None`
    /// leaves the stored ones as they are).
    pub fleet_loss: Option<FleetLoss>,
}

/// Everything a store remembers.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every remembered host.
    pub hosts: Vec<StoredHost>,
    /// The recent events, oldest first.
    pub events: Vec<Event>,
    /// When the server that wrote the store was last known alive: its last
    /// checkpoint or its later alive mark (within [`ALIVE_EVERY`] of when it
    /// stopped); `None` for a new store.
    pub alive: Option<SystemTime>,
    /// The open maintenance windows (JSON), if any were stored.
    pub windows: Option<Vec<u8>>,
    /// The fleet's loss averages (nothing learnt when none were stored).
    pub fleet_loss: FleetLoss,
}

/// The open store, holding the data directory's lock.
pub struct Store {
    path: PathBuf,
    /// `None` after a failed write: redb refuses further transactions after
    /// an I/O error, so the next write reopens (and repairs) the file.
    db: Option<Database>,
    /// What the check before opening read, handed out by the first `load`
    /// so that the file is read once.
    checked: std::sync::Mutex<Option<Loaded>>,
    _lock: File,
}

// Private and off the hot path: the error is boxed where it leaves the module.
#[allow(clippy::result_large_err)]
fn open_db(path: &Path) -> Result<Database, redb::Error> {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    let told = std::sync::atomic::AtomicBool::new(false);
    builder.set_repair_callback(move |_| {
        // Only after a crash (kill -9, power loss): redb rebuilds its
        // allocator state from the last committed transaction. It calls
        // back repeatedly with progress; say it once.
        if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("store was not closed cleanly; repairing");
        }
    });
    Ok(builder.create(path)?)
}

impl Store {
    /// Opens (or creates) the store in `dir`, taking the directory's lock.
    /// Fails if another server holds it or the file is not a readable store.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let lock = lock(dir)?;
        let path = dir.join(FILE_NAME);
        let checked = check(&path)?;
        if checked.is_none() {
            create_private(&path)?;
        }
        let db = catch_panic(&path, || open_db(&path).map_err(Box::new))?.map_err(|source| {
            Error::Unreadable {
                path: path.clone(),
                source,
            }
        })?;
        Ok(Store {
            path,
            db: Some(db),
            checked: std::sync::Mutex::new(checked),
            _lock: lock,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything the store remembers (the first call hands out what
    /// [`Store::open`] read while checking the file).
    pub fn load(&self) -> Result<Loaded, Error> {
        let mut loaded = self.load_stored()?;
        // The later of the last checkpoint and the last alive mark; a mark
        // without a store (a new or forgotten one) means nothing.
        if let Some(checkpoint) = loaded.alive
            && let Some(mark) = self.path.parent().and_then(read_alive)
        {
            loaded.alive = Some(checkpoint.max(mark));
        }
        Ok(loaded)
    }

    fn load_stored(&self) -> Result<Loaded, Error> {
        if let Some(loaded) = self.checked.lock().expect("checked lock").take() {
            return Ok(loaded);
        }
        let Some(db) = &self.db else {
            return Ok(Loaded::default());
        };
        catch_panic(&self.path, || read_all(db, &self.path))?
    }
}

impl Store {
    /// Writes one checkpoint in one transaction, and records `now` as the
    /// time the server was last alive. On failure nothing of the batch is
    /// written, and the next call reopens the file and tries again.
    pub fn write(&mut self, batch: &Batch, now: SystemTime) -> Result<(), Error> {
        let result = self.try_write(batch, now);
        if result.is_err() {
            self.db = None;
        }
        result.map_err(|source| Error::Write {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }

    #[allow(clippy::result_large_err)] // see open_db
    fn try_write(&mut self, batch: &Batch, now: SystemTime) -> Result<(), redb::Error> {
        if self.db.is_none() {
            self.db = Some(open_db(&self.path)?);
        }
        let db = self.db.as_ref().expect("opened above");
        let txn = db.begin_write()?;
        {
            let mut hosts = txn.open_table(HOSTS)?;
            // Forgotten hosts go first: one that beat again since is among
            // the changed hosts below and is written back.
            for id in &batch.forgotten {
                hosts.remove(&**id)?;
            }
            let mut buf = Vec::with_capacity(128);
            // In key order: consecutive inserts then share B-tree pages, where
            // the order hosts changed in would touch a random page each.
            let mut order: Vec<&StoredHost> = batch.hosts.iter().collect();
            order.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            for host in order {
                buf.clear();
                buf = encode_host(host, buf).map_err(encode_error)?;
                hosts.insert(&*host.id, buf.as_slice())?;
            }
        }
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut buf = Vec::with_capacity(128);
            for event in &batch.events {
                buf.clear();
                buf = encode_event(event, buf).map_err(encode_error)?;
                events.insert(event.id, buf.as_slice())?;
            }
            if let Some(last) = batch.events.last() {
                let keep_from = (last.id + 1).saturating_sub(batch.event_history as u64);
                events.retain_in(..keep_from, |_, _| false)?;
            }
        }
        if let Some(windows) = &batch.windows {
            txn.open_table(MAINTENANCE)?
                .insert("windows", windows.as_slice())?;
        }
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("version", FORMAT_VERSION)?;
            meta.insert("alive_ms", millis(now))?;
            if let Some(fleet) = &batch.fleet_loss {
                for (key, part) in FLEET_LOSS_KEYS.iter().zip(fleet.to_parts()) {
                    meta.insert(*key, part)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Encoding to a `Vec` fails only on a serde bug; still, no panic on I/O paths.
fn encode_error(e: postcard::Error) -> redb::Error {
    redb::Error::Io(io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::EventKind;
    use record::from_millis;

    fn host(i: u32) -> StoredHost {
        StoredHost {
            id: format!("host-{i}").into(),
            state: HostState::ALL[i as usize % HostState::ALL.len()],
            since: from_millis(1_700_000_000_000 + u64::from(i)),
            addr: SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16)),
            last_seen: from_millis(1_700_000_001_000),
            seq: (1_700_000_000u64 << 32) + u64::from(i),
            boot_id: [i as u8; 16],
            interval_ms: 10_000,
            beats: u64::from(i) * 3,
            losses: 1,
            legacy: i % 2 == 0,
            // Half with labels: both record forms round-trip.
            labels: if i % 2 == 1 {
                Labels::parse_list(&format!("team=t{i},role=r")).expect("labels")
            } else {
                Labels::new()
            },
        }
    }

    fn event(id: u64) -> Event {
        let kind = EventKind::ALL[id as usize % EventKind::ALL.len()];
        Event {
            id,
            at: from_millis(1_700_000_002_000 + id),
            addr: SocketAddr::from(([10, 0, 0, 1], 1)),
            fleet: 0,
            ..crate::monitor::testing::event(kind, &format!("host-{id}"))
        }
    }

    #[test]
    fn round_trips_hosts_events_and_alive_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        assert!(store.load().expect("load").alive.is_none(), "new store");
        let batch = Batch {
            hosts: (0..10).map(host).collect(),
            events: (1..=5).map(event).collect(),
            event_history: 3,
            windows: None,
            forgotten: Vec::new(),
            fleet_loss: None,
        };
        let now = from_millis(1_700_000_003_000);
        store.write(&batch, now).expect("write");
        // A later checkpoint overwrites a host and adds events.
        let mut changed = host(3);
        changed.state = HostState::Down;
        let later = Batch {
            hosts: vec![changed.clone()],
            events: vec![event(6)],
            event_history: 3,
            windows: None,
            forgotten: Vec::new(),
            fleet_loss: None,
        };
        store.write(&later, now).expect("write");
        drop(store);

        let store = Store::open(dir.path()).expect("reopen");
        let mut loaded = store.load().expect("load");
        loaded.hosts.sort_by_key(|h| h.beats);
        let mut want: Vec<StoredHost> = (0..10).map(host).collect();
        want[3] = changed;
        assert_eq!(loaded.hosts, want);
        assert_eq!(
            loaded.events,
            (4..=6).map(event).collect::<Vec<_>>(),
            "only the newest event_history events are kept"
        );
        assert_eq!(loaded.alive, Some(now));
    }

    /// A fleet partly learnt: a burst excess not yet trusted (40 of 100
    /// samples) and a trusted probe run.
    fn learning() -> FleetLoss {
        FleetLoss::from_parts([0.25f64.to_bits(), 40, 0.6f64.to_bits(), 500])
    }

    #[test]
    fn round_trips_the_fleet_averages_and_keeps_them_when_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let now = from_millis(1_700_000_003_000);
        for fleet in [learning(), FleetLoss::with(0.3, 0.9)] {
            let batch = Batch {
                fleet_loss: Some(fleet),
                ..Batch::default()
            };
            store.write(&batch, now).expect("write");
            // A later part of a checkpoint carries none: the stored ones stay.
            store.write(&Batch::default(), now).expect("write");
            assert_eq!(store.load().expect("load").fleet_loss, fleet);
        }
        drop(store);
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(loaded.fleet_loss, FleetLoss::with(0.3, 0.9));
        assert_eq!(loaded.fleet_loss.burst_excess(), Some(0.3));
    }

    /// Writes `meta` as given, and one host, the way a build that did not
    /// keep the fleet's averages wrote its stores (by hand: this build
    /// writes them at every checkpoint).
    fn store_with_meta(dir: &Path, meta: &[(&str, u64)]) {
        let db = Database::create(dir.join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(META).expect("meta");
            for (key, value) in meta {
                table.insert(*key, *value).expect("insert");
            }
            let mut buf = Vec::new();
            buf = encode_host(&host(1), buf).expect("encode");
            let mut hosts = txn.open_table(HOSTS).expect("hosts");
            hosts.insert("host-1", buf.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn an_old_or_damaged_store_restores_the_fleet_averages_as_nothing_learnt() {
        let old = [("version", FORMAT_VERSION), ("alive_ms", 1_700_000_003_000)];
        let nan = f64::NAN.to_bits();
        let cases: [&[(&str, u64)]; 3] = [
            &old,
            // Out of range: an excess of 2, and more samples than a u32.
            &[
                ("fleet_burst_excess", 2.0f64.to_bits()),
                ("fleet_burst_samples", 500),
                ("fleet_probe_run", 0.5f64.to_bits()),
                ("fleet_probe_samples", u64::MAX),
            ],
            // Half written: figures without their sample counts.
            &[
                ("fleet_burst_excess", nan),
                ("fleet_probe_run", 0.5f64.to_bits()),
            ],
        ];
        for meta in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            store_with_meta(dir.path(), meta);
            let loaded = Store::open(dir.path()).expect("open").load().expect("load");
            assert_eq!(loaded.hosts, vec![host(1)], "{meta:?}: the hosts are kept");
            let [_, burst_samples, _, probe_samples] = loaded.fleet_loss.to_parts();
            assert_eq!(
                (burst_samples, probe_samples),
                (0, 0),
                "{meta:?}: no samples"
            );
            assert_eq!(loaded.fleet_loss.burst_excess(), None);
            assert_eq!(loaded.fleet_loss.probe_run(), None);
        }
    }
}
