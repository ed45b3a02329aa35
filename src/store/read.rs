//! Reading a store file: checked in full before it is opened for writing,
//! with redb's errors and panics turned into the store's [`Error`].

use super::record::{decode_event, decode_host, from_millis};
use super::{
    EVENTS, Error, FLEET_LOSS_KEYS, FORMAT_VERSION, HOSTS, Loaded, MAINTENANCE, META, dry_run,
};
use crate::monitor::stats::FleetLoss;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::fs::File;
use std::io;
use std::path::Path;

/// Checks the store file at `path` without writing to it: opens it and
/// reads every record through [`dry_run::DryRun`]. `None` when there is no
/// file (a new store).
pub(super) fn check(path: &Path) -> Result<Option<Loaded>, Error> {
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

/// Runs `f`, turning a panic (redb panics on some corrupt files) into
/// [`Error::Panicked`]. The panic message is not printed: the caller's
/// one-line error says it. The panic hook is process-wide, so it is
/// replaced only for the call; this runs at start, before the server's
/// other threads do anything that could panic.
pub(super) fn catch_panic<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, Error> {
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
pub(super) fn read_all(db: &Database, path: &Path) -> Result<Loaded, Error> {
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
    // An absent key (a store from before they were kept) reads as 0: no
    // samples, nothing learnt; `from_parts` refuses values out of range.
    let mut parts = [0; 4];
    for (part, key) in parts.iter_mut().zip(FLEET_LOSS_KEYS) {
        *part = get(key)?.unwrap_or(0);
    }
    loaded.fleet_loss = FleetLoss::from_parts(parts);
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

#[cfg(test)]
mod tests {
    use crate::store::{FILE_NAME, Store, forget};

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
}
