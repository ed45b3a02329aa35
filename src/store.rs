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
//! - `meta`: `version`, and `alive_ms`: the wall-clock time of the latest
//!   checkpoint, from which a restarted server tells how long it was away.
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

mod dry_run;

use crate::labels::Labels;
use crate::monitor::{Event, EventKind, HostState};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "lubdub.redb";
/// The lock file's name inside the data directory.
pub const LOCK_NAME: &str = "lubdub.lock";
/// The layout version written in `meta`; a newer one is refused.
pub const FORMAT_VERSION: u64 = 1;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `windows` → the open maintenance windows, as one JSON array (a few
/// windows, rewritten whole when they change).
const MAINTENANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("maintenance");

/// redb's page cache (a tenth of it for writes). It grows as used, up to
/// this, and stays: at 256 MiB it held most of a million-host store in the
/// server's memory. At 32 MiB checkpoints cost the same CPU (checkpoints
/// are written in parts, and the kernel's page cache serves what redb's
/// does not) and a restart loads as fast.
const CACHE_BYTES: usize = 32 << 20;

// States and kinds are stored by name (`as_str`) and read back through
// `HostState::ALL` / `EventKind::ALL`, so a new one needs no change here and
// old stores stay readable.

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
}

#[derive(Serialize, Deserialize)]
struct HostRecord<'a> {
    state: &'a str,
    since_ms: u64,
    addr: SocketAddr,
    last_seen_ms: u64,
    boot_id: [u8; 16],
    seq: u64,
    interval_ms: u32,
    beats: u64,
    losses: u64,
    legacy: bool,
}

#[derive(Serialize, Deserialize)]
struct EventRecord<'a> {
    at_ms: u64,
    kind: &'a str,
    host: &'a str,
    addr: SocketAddr,
    silent_ms: u64,
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

/// The data directory to use: the configured one; else systemd's
/// `$STATE_DIRECTORY` (`StateDirectory=lubdub` → `/var/lib/lubdub`); else
/// the per-user data directory (`~/.local/share/lubdub` on Linux).
pub fn resolve_data_dir(configured: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        // systemd lists one directory per StateDirectory= entry, ':'-separated.
        if let Some(first) = dirs.to_str().and_then(|d| d.split(':').next())
            && !first.is_empty()
        {
            return Ok(PathBuf::from(first));
        }
    }
    directories::ProjectDirs::from("", "", "lubdub")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or(Error::NoDataDir)
}

/// Takes the data directory's lock (creating the directory), so that no
/// other server can use it.
fn lock(dir: &Path) -> Result<File, Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Private: the store holds every host's address. An existing directory
    // keeps its mode (systemd's StateDirectory= sets its own).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    let lock_path = dir.join(LOCK_NAME);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| Error::Dir {
            path: lock_path,
            source,
        })?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::Dir {
                path: dir.join(LOCK_NAME),
                source: err,
            }
        });
    }
    Ok(file)
}

/// The alive mark beside the store: the wall time (Unix milliseconds, as
/// text) the server last said it was running, rewritten every
/// [`ALIVE_EVERY`]. Much cheaper than a checkpoint, so that after a
/// `kill -9` the outage is known to within that, not to within the
/// checkpoint interval.
pub const ALIVE_NAME: &str = "lubdub.alive";

/// How often the running server rewrites its alive mark.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the alive mark in `dir`: the server is running at `now`.
pub fn mark_alive(dir: &Path, now: SystemTime) -> io::Result<()> {
    // Not atomic, and need not be: a torn mark reads as none, and the
    // store's own last write stands in for it.
    std::fs::write(dir.join(ALIVE_NAME), millis(now).to_string())
}

/// The alive mark in `dir`, if there is a readable one.
fn read_alive(dir: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(dir.join(ALIVE_NAME)).ok()?;
    text.trim().parse().ok().map(from_millis)
}

/// Removes the store in `dir` (under the lock, so never under a running
/// server), for `lubdub server --forget-all`. Returns whether there was one.
pub fn forget(dir: &Path) -> Result<bool, Error> {
    let _lock = lock(dir)?;
    let _ = std::fs::remove_file(dir.join(ALIVE_NAME));
    let path = dir.join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Dir { path, source }),
    }
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

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
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

/// Checks the store file at `path` without writing to it: opens it and
/// reads every record through [`dry_run::DryRun`]. `None` when there is no
/// file (a new store).
fn check(path: &Path) -> Result<Option<Loaded>, Error> {
    let unreadable = |source: io::Error| Error::Unreadable {
        path: path.to_path_buf(),
        source: Box::new(redb::Error::Io(source)),
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let backend = dry_run::DryRun::new(file).map_err(unreadable)?;
    if redb::StorageBackend::len(&backend).map_err(unreadable)? == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    catch_panic(path, || {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| Error::Unreadable {
                path: path.to_path_buf(),
                source: Box::new(e.into()),
            })?;
        let loaded = read_all(&db, path)?;
        // A checkpoint's write path reads parts of the file that reading
        // records does not (the allocator's state); one corrupt there made
        // redb abort on a terabyte allocation at the first checkpoint. A
        // write into the overlay goes the same way, and fails here instead.
        dry_write(&db).map_err(|e| Error::Unreadable {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(loaded)
    })?
    .map(Some)
}

/// A checkpoint-like write transaction (it rewrites `meta.version`).
#[allow(clippy::result_large_err)] // see open_db
fn dry_write(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert("version", FORMAT_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// Creates an empty store file readable by its owner only (redb would
/// create it with the umask's mode).
fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| Error::Dir {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f`, turning a panic (redb panics on some corrupt files) into
/// [`Error::Panicked`]. The panic message is not printed: the caller's
/// one-line error says it. The panic hook is process-wide, so it is
/// replaced only for the call; this runs at start, before the server's
/// other threads do anything that could panic.
fn catch_panic<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, Error> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the store library panicked".into());
        Error::Panicked {
            path: path.to_path_buf(),
            message: message.replace('\n', " "),
        }
    })
}

/// Turns what goes wrong while reading the store at `path` into its
/// [`Error`], and opens and walks its tables.
struct Reading<'p> {
    path: &'p Path,
}

impl Reading<'_> {
    /// redb could not read the file.
    fn unreadable(&self, source: impl Into<redb::Error>) -> Error {
        Error::Unreadable {
            path: self.path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }

    /// A record was read but makes no sense.
    fn bad(&self, what: String) -> Error {
        Error::BadRecord {
            path: self.path.to_path_buf(),
            what,
        }
    }

    /// The table `definition` of `txn`; `None` where the store has none
    /// (yet: older stores lack the newer tables).
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &redb::ReadTransaction,
        definition: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, Error> {
        match txn.open_table(definition) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.unreadable(e)),
        }
    }

    /// Every record of `table`, in key order, through `decode` (whose error
    /// names the record).
    fn records<K: redb::Key + 'static, T>(
        &self,
        table: &redb::ReadOnlyTable<K, &'static [u8]>,
        decode: impl Fn(K::SelfType<'_>, &[u8]) -> Result<T, String>,
    ) -> Result<Vec<T>, Error> {
        let len = table.len().map_err(|e| self.unreadable(e))?;
        let mut records = Vec::with_capacity(len as usize);
        for entry in table.iter().map_err(|e| self.unreadable(e))? {
            let (key, value) = entry.map_err(|e| self.unreadable(e))?;
            records.push(decode(key.value(), value.value()).map_err(|what| self.bad(what))?);
        }
        Ok(records)
    }
}

/// Reads every record of `db`.
fn read_all(db: &Database, path: &Path) -> Result<Loaded, Error> {
    let reading = Reading { path };
    let txn = db.begin_read().map_err(|e| reading.unreadable(e))?;
    let mut loaded = Loaded::default();
    let Some(meta) = reading.table(&txn, META)? else {
        return Ok(loaded);
    };
    let get = |key| -> Result<Option<u64>, Error> {
        Ok(meta
            .get(key)
            .map_err(|e| reading.unreadable(e))?
            .map(|v| v.value()))
    };
    if let Some(version) = get("version")?
        && version > FORMAT_VERSION
    {
        return Err(reading.bad(format!(
            "format version {version} is newer than this lubdub's {FORMAT_VERSION}"
        )));
    }
    loaded.alive = get("alive_ms")?.map(from_millis);
    if let Some(hosts) = reading.table(&txn, HOSTS)? {
        loaded.hosts = reading.records(&hosts, |id: &str, value| {
            decode_host(id, value).map_err(|what| format!("host {id:?}: {what}"))
        })?;
    }
    if let Some(table) = reading.table(&txn, MAINTENANCE)?
        && let Some(value) = table.get("windows").map_err(|e| reading.unreadable(e))?
    {
        loaded.windows = Some(value.value().to_vec());
    }
    if let Some(events) = reading.table(&txn, EVENTS)? {
        loaded.events = reading.records(&events, |id: u64, value| {
            decode_event(id, value).map_err(|what| format!("event {id}: {what}"))
        })?;
    }
    Ok(loaded)
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
                let record = HostRecord {
                    state: host.state.as_str(),
                    since_ms: millis(host.since),
                    addr: host.addr,
                    last_seen_ms: millis(host.last_seen),
                    boot_id: host.boot_id,
                    seq: host.seq,
                    interval_ms: host.interval_ms,
                    beats: host.beats,
                    losses: host.losses,
                    legacy: host.legacy,
                };
                buf = postcard::to_extend(&record, buf).map_err(encode_error)?;
                // Labels follow the record (a store from before labels has
                // none there, and reads as a host without labels).
                if !host.labels.is_empty() {
                    let pairs: Vec<(&str, &str)> = host.labels.iter().collect();
                    buf = postcard::to_extend(&pairs, buf).map_err(encode_error)?;
                }
                hosts.insert(&*host.id, buf.as_slice())?;
            }
        }
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut buf = Vec::with_capacity(128);
            for event in &batch.events {
                buf.clear();
                let record = EventRecord {
                    at_ms: millis(event.at),
                    kind: event.kind.as_str(),
                    host: &event.host,
                    addr: event.addr,
                    silent_ms: u64::try_from(event.silent_for.as_millis()).unwrap_or(u64::MAX),
                };
                buf = postcard::to_extend(&record, buf).map_err(encode_error)?;
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
        }
        txn.commit()?;
        Ok(())
    }
}

/// Encoding to a `Vec` fails only on a serde bug; still, no panic on I/O paths.
fn encode_error(e: postcard::Error) -> redb::Error {
    redb::Error::Io(io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode_host(id: &str, bytes: &[u8]) -> Result<StoredHost, String> {
    let (record, rest): (HostRecord<'_>, _) =
        postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    let labels = if rest.is_empty() {
        Labels::new()
    } else {
        let pairs: Vec<(&str, &str)> = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
        Labels::from_pairs(pairs).map_err(|e| e.to_string())?
    };
    let state = HostState::ALL
        .into_iter()
        .find(|s| s.as_str() == record.state)
        .ok_or_else(|| format!("unknown state {:?}", record.state))?;
    Ok(StoredHost {
        id: id.into(),
        state,
        since: from_millis(record.since_ms),
        addr: record.addr,
        last_seen: from_millis(record.last_seen_ms),
        seq: record.seq,
        boot_id: record.boot_id,
        interval_ms: record.interval_ms,
        beats: record.beats,
        losses: record.losses,
        legacy: record.legacy,
        labels,
    })
}

fn decode_event(id: u64, bytes: &[u8]) -> Result<Event, String> {
    let record: EventRecord<'_> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let kind = EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == record.kind)
        .ok_or_else(|| format!("unknown event kind {:?}", record.kind))?;
    Ok(Event {
        id,
        at: from_millis(record.at_ms),
        kind,
        host: Arc::from(record.host),
        addr: record.addr,
        silent_for: Duration::from_millis(record.silent_ms),
        // Not stored: a remembered event is history for the API, never
        // sent to a sink again, so what only sinks read is left plain. The
        // lower bound of a silence is lost too (the record's layout is
        // fixed); `silent_for` stays the true upper bound.
        silent_at_least: None,
        state: kind.state_after(),
        flapping: false,
        maintenance: None,
        fleet: 0,
        // Not stored either (history, not a page): a restored `down` no
        // longer lists the hosts unreachable behind it.
        context: None,
        labels: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_second_open_of_one_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).err().expect("second open refused");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(
            matches!(forget(dir.path()), Err(Error::Locked { .. })),
            "no forgetting under a running server"
        );
    }

    #[test]
    fn garbage_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).expect("write");
        let err = Store::open(dir.path()).err().expect("refused");
        let message = format!("{err}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
        assert!(
            forget(dir.path()).expect("forget"),
            "--forget-all removes it"
        );
        Store::open(dir.path()).expect("fresh store after forgetting");
    }

    #[test]
    fn an_unknown_state_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .write(&Batch::default(), SystemTime::now())
            .expect("write");
        {
            let db = store.db.as_ref().expect("open");
            let txn = db.begin_write().expect("txn");
            {
                let mut hosts = txn.open_table(HOSTS).expect("table");
                let record = HostRecord {
                    state: "sleeping",
                    since_ms: 0,
                    addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                    last_seen_ms: 0,
                    boot_id: [0; 16],
                    seq: 0,
                    interval_ms: 0,
                    beats: 0,
                    losses: 0,
                    legacy: false,
                };
                let bytes = postcard::to_allocvec(&record).expect("encode");
                hosts.insert("odd", bytes.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = store.load().expect_err("unknown state");
        assert!(
            err.to_string().contains("unknown state \"sleeping\""),
            "{err}"
        );
    }
}
