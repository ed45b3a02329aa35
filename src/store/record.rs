//! The records' encoding: one [`postcard`] record per host and per event,
//! in the store's own types, apart from the monitor's (which may change
//! without changing what is on disk).

use super::StoredHost;
use crate::labels::Labels;
use crate::monitor::{Event, EventKind, HostState};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// States and kinds are stored by name (`as_str`) and read back through
// `HostState::ALL` / `EventKind::ALL`, so a new one needs no change here and
// old stores stay readable.

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

/// Appends the record of `host` to `buf`.
pub(super) fn encode_host(host: &StoredHost, buf: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
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
    let buf = postcard::to_extend(&record, buf)?;
    // Labels follow the record (a store from before labels has
    // none there, and reads as a host without labels).
    if host.labels.is_empty() {
        return Ok(buf);
    }
    let pairs: Vec<(&str, &str)> = host.labels.iter().collect();
    postcard::to_extend(&pairs, buf)
}

/// Appends the record of `event` to `buf` (its id is the key).
pub(super) fn encode_event(event: &Event, buf: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    let record = EventRecord {
        at_ms: millis(event.at),
        kind: event.kind.as_str(),
        host: &event.host,
        addr: event.addr,
        silent_ms: u64::try_from(event.silent_for.as_millis()).unwrap_or(u64::MAX),
    };
    postcard::to_extend(&record, buf)
}

pub(super) fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

pub(super) fn decode_host(id: &str, bytes: &[u8]) -> Result<StoredHost, String> {
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

pub(super) fn decode_event(id: u64, bytes: &[u8]) -> Result<Event, String> {
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
    use crate::store::{Batch, HOSTS, Store};

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
