//! Drives the [`store`](crate::store): puts what it remembers back into the
//! detector on start, and checkpoints changes while the server runs.
//!
//! The ingest hot path does no I/O: a beat only marks its host dirty (a bit
//! test). The checkpoint task copies the dirty hosts under one short lock and
//! writes them, with the events published since, in one transaction on a
//! blocking thread. It writes at once when events arrive (state changes are
//! written promptly; an event storm coalesces into the next write) and every
//! `checkpoint_interval` otherwise, so 100,000 beats per second are a few
//! writes per second, not 100,000.
//!
//! A failed write (full or read-only disk) loses nothing in memory: the
//! hosts are marked dirty again, the events kept, the failure logged once
//! and then at a limited rate, shown in `/healthz` and `/metrics`, and the
//! write retried every interval.

use super::Shared;
use super::detector::Detector;
use super::events::{Event, EventKind, EventLog, MONITOR_HOST};
use super::metrics::Metrics;
use super::registry::{Host, Registry, Slot, boot_prefix};
use crate::ratelimit::RateLimit;
use crate::store::{Batch, Loaded, Store, StoredHost};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Whether the store is being written, for `/healthz`.
#[derive(Debug)]
pub struct StoreHealth {
    path: PathBuf,
    ok: AtomicBool,
    error: Mutex<Option<String>>,
}

impl StoreHealth {
    /// A healthy store at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ok: AtomicBool::new(true),
            error: Mutex::new(None),
        }
    }

    /// The store file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// True when the latest checkpoint was written.
    pub fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }

    /// Why the latest checkpoint failed, while it is failing.
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("store health lock").clone()
    }

    fn set(&self, error: Option<String>) {
        self.ok.store(error.is_none(), Ordering::Relaxed);
        *self.error.lock().expect("store health lock") = error;
    }
}

/// What [`restore`] put back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Restored {
    /// Hosts remembered.
    pub hosts: usize,
    /// How long the server was away: from its last checkpoint to `wall`.
    /// `None` for a new store.
    pub away: Option<Duration>,
}

/// Puts what the store remembered into the detector and the event log.
/// Every remembered host counts its silence from `now` (the server's
/// start), so an `up` or `late` host gets one full timeout before it can be
/// declared down (the server was away, not the fleet), and a `down` host
/// stays down without a second `down` event.
pub fn restore(
    loaded: Loaded,
    detector: &mut Detector,
    events: &EventLog,
    now: Instant,
    wall: SystemTime,
) -> Restored {
    let hosts = loaded.hosts.len();
    let clock = detector.clock();
    // The clock reads as the wall clock did when the server started; a
    // stored wall time maps onto it by its distance from now.
    let to_clock = |at: SystemTime| match wall.duration_since(at) {
        Ok(ago) => clock
            .ms(now)
            .saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)),
        Err(ahead) => clock
            .ms(now)
            .saturating_add(u64::try_from(ahead.duration().as_millis()).unwrap_or(u64::MAX)),
    };
    for stored in loaded.hosts {
        if !(1..=usize::from(u8::MAX)).contains(&stored.id.len()) {
            // Not an id the wire allows: a damaged store. Keeping it would
            // store it cut short, and add it again at every restart.
            tracing::warn!(id = %stored.id, "store: skipped a host id of {} bytes (ids are 1 to 255)", stored.id.len());
            continue;
        }
        // Learnt rhythms are not stored (`Detector::restore` starts them
        // afresh, and picks the detector rule).
        let stats = crate::server::stats::BeatStats::new(stored.interval_ms as f32);
        let mut host = Host::new(
            stored.state,
            stored.since,
            to_clock(stored.last_seen),
            stats,
        );
        // Kept so a beat captured before the restart cannot be replayed
        // (with keys); the gap to the next beat spans the server's absence,
        // not network loss, so it is not counted.
        host.seq = stored.seq;
        // Unknown which of the last 64 arrived: all count as seen, so none
        // of them can be replayed either.
        host.recent_seqs = u64::MAX;
        host.set_gap_uncounted(true);
        host.boot = boot_prefix(&stored.boot_id);
        host.set_interval_ms(stored.interval_ms);
        host.beats = u32::try_from(stored.beats).unwrap_or(u32::MAX);
        host.losses = u32::try_from(stored.losses).unwrap_or(u32::MAX);
        host.set_legacy(stored.legacy);
        detector.restore(host, &stored.id, stored.addr, now);
    }
    events.restore(loaded.events);
    Restored {
        hosts,
        away: loaded
            .alive
            .map(|alive| wall.duration_since(alive).unwrap_or(Duration::ZERO)),
    }
}

/// The `monitor_started` event: the server at `addr` is watching again
/// after being away for `away` (zero when unknown).
pub fn monitor_started(addr: SocketAddr, away: Option<Duration>, wall: SystemTime) -> Event {
    Event {
        id: 0,
        at: wall,
        kind: EventKind::MonitorStarted,
        host: Arc::from(MONITOR_HOST),
        addr,
        silent_for: away.unwrap_or(Duration::ZERO),
    }
}

/// Copies the registry's view of the host in `slot` for the store.
pub fn snapshot(registry: &Registry, slot: Slot) -> StoredHost {
    let host = registry.get(slot);
    let mut boot_id = [0; 16];
    boot_id[..4].copy_from_slice(&host.boot.to_be_bytes());
    StoredHost {
        id: registry.id(slot).into(),
        state: host.state,
        since: host.since(),
        addr: registry.addr(slot),
        last_seen: host.last_seen_wall(),
        seq: host.seq,
        boot_id,
        interval_ms: host.interval_ms(),
        beats: u64::from(host.beats),
        losses: u64::from(host.losses),
        legacy: host.legacy(),
    }
}

/// How many hosts a checkpoint copies per hold of the detector's lock: a
/// million dirty hosts copied in one hold would stall ingest for a large
/// fraction of a second; in chunks, ingest gets the lock in between.
const COPY_CHUNK: usize = 4096;

/// Takes the dirty hosts out of the detector: the only work done under its
/// lock (copies, no I/O), in chunks. A host that changes while the copy is
/// under way is marked dirty again, so it is written at the next checkpoint
/// if this one copied it too early.
pub fn collect_dirty(detector: &Mutex<Detector>) -> (Vec<Slot>, Vec<StoredHost>) {
    let slots = detector.lock().expect("detector lock").take_dirty(true);
    let hosts = collect(detector, &slots);
    (slots, hosts)
}

fn collect(detector: &Mutex<Detector>, slots: &[Slot]) -> Vec<StoredHost> {
    let mut hosts = Vec::with_capacity(slots.len());
    for chunk in slots.chunks(COPY_CHUNK) {
        let detector = detector.lock().expect("detector lock");
        let registry = detector.registry();
        // A slot freed by a forget since it was marked has nothing to write.
        hosts.extend(
            chunk
                .iter()
                .filter(|&&slot| registry.try_get(slot).is_some())
                .map(|&slot| snapshot(registry, slot)),
        );
    }
    hosts
}

/// The checkpoint task.
pub struct Checkpointer {
    /// The open store.
    pub store: Store,
    /// The server's state.
    pub shared: Arc<Shared>,
    /// Time between checkpoints of last-seen times.
    pub interval: Duration,
    /// How many events the store keeps.
    pub event_history: usize,
}

/// How long a failing store stays quiet in the log between reports.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

impl Checkpointer {
    /// Checkpoints until `stop`, then writes a last checkpoint (after the
    /// detector has stopped, so it holds the final state).
    pub async fn run(self, mut events: broadcast::Receiver<Event>, stop: CancellationToken) {
        let Checkpointer {
            store,
            shared,
            interval,
            event_history,
        } = self;
        let store = Arc::new(Mutex::new(store));
        let mut pending: VecDeque<Event> = VecDeque::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut error_log = RateLimit::new(ERROR_LOG_PERIOD);
        let mut open = true;
        loop {
            let (stopping, ticked) = tokio::select! {
                biased;
                _ = stop.cancelled() => (true, false),
                _ = ticker.tick() => (false, true),
                received = events.recv(), if open => {
                    take(received, &mut pending, &mut open);
                    (false, false)
                }
            };
            while open {
                let received = match events.try_recv() {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Err(broadcast::error::RecvError::Lagged(n))
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        Err(broadcast::error::RecvError::Closed)
                    }
                };
                take(received, &mut pending, &mut open);
            }
            // A failing store is retried on the ticker only, not on every event.
            if !stopping && !ticked && !shared.store.is_ok() {
                continue;
            }
            while pending.len() > event_history {
                pending.pop_front(); // the store keeps no more than that anyway
            }
            // Events write the hosts that changed; last-seen times of hosts
            // that only beat wait for the ticker (and the final checkpoint).
            let full = ticked || stopping;
            checkpoint(
                &store,
                &shared,
                &mut pending,
                full,
                event_history,
                &mut error_log,
            )
            .await;
            if stopping {
                return;
            }
        }
    }
}

fn take(
    received: Result<Event, broadcast::error::RecvError>,
    pending: &mut VecDeque<Event>,
    open: &mut bool,
) {
    match received {
        Ok(event) => pending.push_back(event),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            tracing::warn!(
                missed,
                "store fell behind the event stream; events missed in its history"
            );
        }
        Err(broadcast::error::RecvError::Closed) => *open = false,
    }
}

/// Hosts per store transaction: a checkpoint of a whole large fleet is
/// written in parts, so that its copies never hold more than this many
/// hosts in memory at once (a million at once took over 100 MB).
const WRITE_CHUNK: usize = 65_536;

/// One checkpoint (`full`: with the hosts that only beat): copy under the
/// lock, write outside it on a blocking thread, in parts of
/// [`WRITE_CHUNK`] hosts (the events and deletions go with the first), and
/// on failure keep everything not yet written for the next try.
async fn checkpoint(
    store: &Arc<Mutex<Store>>,
    shared: &Arc<Shared>,
    pending: &mut VecDeque<Event>,
    full: bool,
    event_history: usize,
    error_log: &mut RateLimit,
) {
    let (slots, mut forgotten) = {
        let mut detector = shared.detector.lock().expect("detector lock");
        (detector.take_dirty(full), detector.take_forgotten())
    };
    let mut events: Vec<Event> = pending.iter().cloned().collect();
    let metrics: &Metrics = &shared.metrics;
    let mut rest: &[Slot] = &slots;
    loop {
        let (part, after) = rest.split_at(rest.len().min(WRITE_CHUNK));
        rest = after;
        let batch = Batch {
            hosts: collect(&shared.detector, part),
            events: std::mem::take(&mut events),
            forgotten: std::mem::take(&mut forgotten),
            event_history,
        };
        let started = std::time::Instant::now();
        let written = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let result = store
                    .lock()
                    .expect("store lock")
                    .write(&batch, SystemTime::now());
                (batch, result)
            })
            .await
        };
        let failure = match written {
            Ok((batch, Ok(()))) => {
                metrics
                    .store_checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.store_checkpoints.inc();
                metrics.store_hosts_written.inc_by(batch.hosts.len() as u64);
                pending.drain(..batch.events.len());
                None
            }
            Ok((batch, Err(error))) => Some((batch.forgotten, chain(&error))),
            // A panic in redb must not take monitoring down; retry later.
            Err(join) => Some((Vec::new(), format!("store writer failed: {join}"))),
        };
        if let Some((unwritten, message)) = failure {
            let mut detector = shared.detector.lock().expect("detector lock");
            for &slot in part.iter().chain(rest) {
                detector.mark_dirty(slot);
            }
            detector.unforget(unwritten);
            drop(detector);
            metrics.store_write_errors.inc();
            metrics.store_healthy.set(0);
            if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                tracing::error!(
                    suppressed,
                    "{message}; monitoring goes on in memory, retrying"
                );
            }
            shared.store.set(Some(message));
            return;
        }
        if rest.is_empty() {
            break;
        }
    }
    metrics.store_healthy.set(1);
    if !shared.store.is_ok() {
        tracing::info!(path = %shared.store.path().display(), "store writable again");
        error_log.reset();
    }
    shared.store.set(None);
}

/// An error and its causes on one line, `outer: inner: root`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::server::detector::{Observation, Observed};
    use crate::server::registry::HostState;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn stored(id: &str, state: HostState) -> StoredHost {
        StoredHost {
            id: id.into(),
            state,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            // Long ago: the grace must not be computed from a stale wall clock.
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            seq: 7,
            boot_id: [1; 16],
            interval_ms: 0,
            beats: 42,
            losses: 1,
            legacy: false,
        }
    }

    #[test]
    fn a_restored_legacy_hosts_first_beat_is_not_a_beat_interval() {
        let mut detector = Detector::new(&ServerConfig {
            timeout: TIMEOUT,
            detector: crate::detection::DetectorKind::Phi,
            ..ServerConfig::default()
        });
        let now = Instant::now();
        // The server was away an hour after the host's last beat.
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_003_600);
        let legacy = StoredHost {
            legacy: true,
            seq: 0,
            boot_id: [0; 16],
            ..stored("127.0.0.1", HostState::Up)
        };
        let loaded = Loaded {
            hosts: vec![legacy],
            events: Vec::new(),
            alive: None,
        };
        restore(loaded, &mut detector, &EventLog::new(10), now, wall);
        let beat = Observation {
            host_id: "127.0.0.1",
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            seq: None,
            boot_id: [0; 16],
            interval_ms: 0,
            goodbye: false,
            sent_at_micros: 0,
        };
        let later = now + Duration::from_secs(10);
        detector.observe(&beat, later, wall, &mut Vec::new());
        let registry = detector.registry();
        let host = registry.get(registry.find("127.0.0.1").expect("restored"));
        let mean = host.stats.interval_mean_ms;
        assert!(
            mean < 20_000.0,
            "the hour away is not its rhythm: {mean} ms"
        );
    }

    #[test]
    fn restored_hosts_get_one_full_timeout_and_down_stays_down() {
        let mut detector = Detector::new(&ServerConfig {
            timeout: TIMEOUT,
            ..ServerConfig::default()
        });
        let log = EventLog::new(100);
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let loaded = Loaded {
            hosts: vec![
                stored("up", HostState::Up),
                stored("late", HostState::Late),
                stored("down", HostState::Down),
                stored("left", HostState::Left),
            ],
            events: vec![monitor_started(
                SocketAddr::from(([127, 0, 0, 1], 1)),
                None,
                wall,
            )]
            .into_iter()
            .map(|mut e| {
                e.id = 41;
                e
            })
            .collect(),
            alive: Some(wall - Duration::from_secs(90)),
        };
        let restored = restore(loaded, &mut detector, &log, now, wall);
        assert_eq!(
            restored,
            Restored {
                hosts: 4,
                away: Some(Duration::from_secs(90))
            }
        );
        assert_eq!(log.next_id(), 42, "event ids go on after the stored ones");
        assert_eq!(detector.dirty_len(), 0, "nothing to write back");
        let mut events = Vec::new();
        detector.expire(now + TIMEOUT / 2, wall, &mut events);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, &*e.host)).collect();
        assert_eq!(kinds, [(EventKind::Late, "up")], "late at half, no down");
        events.clear();
        detector.expire(now + TIMEOUT - Duration::from_millis(1), wall, &mut events);
        assert_eq!(events, [], "no down within the grace");
        detector.expire(now + TIMEOUT, wall, &mut events);
        let mut kinds: Vec<_> = events.iter().map(|e| (e.kind.as_str(), &*e.host)).collect();
        kinds.sort();
        assert_eq!(kinds, [("down", "late"), ("down", "up")]);
        events.clear();
        detector.expire(now + TIMEOUT * 10, wall, &mut events);
        assert_eq!(events, [], "a host already down gets no second down");
        let registry = detector.registry();
        let host = registry.get(registry.find("down").expect("remembered"));
        assert_eq!((host.beats, host.losses), (42, 1));
        assert_eq!(
            detector.silent_for(host, now),
            Duration::from_secs(100),
            "a down host's silence is its true one, from the wall clock"
        );
    }

    /// A beat of host "a" in one client run, with sequence number `run + seq`.
    fn run_beat(seq: u64) -> Observation<'static> {
        Observation {
            host_id: "a",
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            seq: Some((1_700_000_000u64 << 32) + seq),
            boot_id: [1; 16],
            interval_ms: 10_000,
            goodbye: false,
            sent_at_micros: 0,
        }
    }

    /// Applies `seqs` to a fresh detector, stores host "a" and restores it
    /// into another fresh detector, as a restart would.
    fn restarted(config: &ServerConfig, seqs: impl IntoIterator<Item = u64>) -> Detector {
        let mut detector = Detector::new(config);
        let now = Instant::now();
        let mut events = Vec::new();
        for seq in seqs {
            detector.observe(&run_beat(seq), now, SystemTime::now(), &mut events);
        }
        let registry = detector.registry();
        let loaded = Loaded {
            hosts: vec![snapshot(registry, registry.find("a").expect("known"))],
            events: Vec::new(),
            alive: None,
        };
        let mut after = Detector::new(config);
        restore(
            loaded,
            &mut after,
            &EventLog::new(10),
            now,
            SystemTime::now(),
        );
        after
    }

    fn observe(detector: &mut Detector, seq: u64) -> Observed {
        let beat = run_beat(seq);
        detector.observe(&beat, Instant::now(), SystemTime::now(), &mut Vec::new())
    }

    fn losses(detector: &Detector) -> u64 {
        let registry = detector.registry();
        u64::from(registry.get(registry.find("a").expect("known")).losses)
    }

    #[test]
    fn a_restored_host_refuses_replays_of_beats_from_before_the_restart() {
        let keyed = ServerConfig {
            key_file: Some("keys.toml".into()),
            ..ServerConfig::default()
        };
        let mut after = restarted(&keyed, 100..=110);
        for old in [105, 110, 47] {
            assert_eq!(
                observe(&mut after, old),
                Observed::Replayed,
                "seq {old} was sent before the restart"
            );
        }
        assert_eq!(observe(&mut after, 111), Observed::Applied);
        assert_eq!(losses(&after), 0, "the gap over the restart is not loss");
    }

    #[test]
    fn the_gap_over_a_restart_is_not_loss_even_after_a_late_beat() {
        let mut after = restarted(&ServerConfig::default(), [110]);
        // Without keys a late beat from before the restart still counts...
        observe(&mut after, 105);
        // ...but the gap up to the first new beat is the server's absence.
        observe(&mut after, 120);
        assert_eq!(losses(&after), 0);
        observe(&mut after, 122);
        assert_eq!(losses(&after), 1, "gaps after that are loss again");
    }
}
