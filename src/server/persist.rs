//! Drives the [`store`](crate::store): puts what it remembers back into the
//! monitor on start, and checkpoints changes while the server runs.
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

use super::events::EventLog;
use super::fleet::Fleet;
use super::metrics::Metrics;
use crate::monitor::registry::boot_prefix;
use crate::monitor::stats::BeatStats;
use crate::monitor::{Event, EventKind, Host, MONITOR_HOST, Monitor, Slot};
use crate::ratelimit::RateLimit;
use crate::store::{Batch, Loaded, Store, StoredHost};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
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
    /// How long the server was away: from when it was last known alive
    /// (its last checkpoint or alive mark) to `wall`.
    /// `None` for a new store.
    pub away: Option<Duration>,
}

/// Puts what the store remembered into the monitor and the event log,
/// with the fleet's loss averages.
/// Every remembered host counts its silence from `now` (the server's
/// start), so an `up` or `late` host gets one full timeout before it can be
/// declared down (the server was away, not the fleet), and a `down` host
/// stays down without a second `down` event.
pub fn restore(
    loaded: Loaded,
    monitor: &mut Monitor,
    events: &EventLog,
    now: Instant,
    wall: SystemTime,
) -> Restored {
    let hosts = loaded.hosts.len();
    let clock = monitor.clock();
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
        // Learnt rhythms are not stored (`Monitor::restore` starts them
        // afresh, and picks the detector rule).
        let stats = BeatStats::new(stored.interval_ms as f32);
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
        let slot = monitor.restore(host, &stored.id, stored.addr, now);
        monitor.restore_labels(slot, &stored.labels);
    }
    if let Some(json) = loaded.windows {
        match serde_json::from_slice(&json) {
            Ok(windows) => {
                // Hosts whose window is gone come back up; their events
                // go nowhere yet (no sink runs before the restore ends).
                monitor.restore_windows(
                    windows,
                    now,
                    wall,
                    &mut crate::monitor::Outcome::default(),
                );
            }
            Err(e) => tracing::warn!("store: maintenance windows unreadable ({e}); none restored"),
        }
    } else {
        monitor.restore_windows(
            Vec::new(),
            now,
            wall,
            &mut crate::monitor::Outcome::default(),
        );
    }
    events.restore(loaded.events);
    // The averages a new host's loss model starts from: without them a
    // restarted server judges every host as on a fresh fleet, and a bursty
    // one pages falsely until it has learnt them again.
    monitor.set_fleet_loss(loaded.fleet_loss);
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
        addr,
        silent_for: away.unwrap_or(Duration::ZERO),
        ..Event::new(EventKind::MonitorStarted, Arc::from(MONITOR_HOST), wall)
    }
}

/// Copies the registry's view of the host in `slot` for the store.
pub fn snapshot(monitor: &Monitor, slot: Slot) -> StoredHost {
    let registry = monitor.registry();
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
        labels: monitor.declared_labels_of(slot).clone(),
    }
}

/// How many hosts a checkpoint copies per hold of the fleet's lock: a
/// million dirty hosts copied in one hold would stall ingest for a large
/// fraction of a second; in chunks, ingest gets the lock in between.
const COPY_CHUNK: usize = 4096;

/// Takes the dirty hosts out of the monitor: the only work done under its
/// lock (copies, no I/O), in chunks. A host that changes while the copy is
/// under way is marked dirty again, so it is written at the next checkpoint
/// if this one copied it too early.
pub fn collect_dirty(fleet: &Fleet) -> (Vec<Slot>, Vec<StoredHost>) {
    let slots = fleet.take_dirty(true);
    let hosts = collect(fleet, &slots);
    (slots, hosts)
}

fn collect(fleet: &Fleet, slots: &[Slot]) -> Vec<StoredHost> {
    fleet.copy_hosts(slots, COPY_CHUNK, snapshot)
}

/// The checkpoint task.
pub struct Checkpointer {
    /// The open store.
    pub store: Store,
    /// The monitor whose changes are written.
    pub fleet: Arc<Fleet>,
    /// Where the checkpoints are counted.
    pub metrics: Arc<Metrics>,
    /// Where the store's health is shown (`/healthz`).
    pub health: Arc<StoreHealth>,
    /// Time between checkpoints of last-seen times.
    pub interval: Duration,
    /// How many events the store keeps.
    pub event_history: usize,
}

/// What a checkpoint reads from and reports to.
struct Parts {
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
}

/// How long a failing store stays quiet in the log between reports.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

impl Checkpointer {
    /// Checkpoints until `stop`, then writes a last checkpoint (after the
    /// timer has stopped, so it holds the final state).
    pub async fn run(self, mut events: broadcast::Receiver<Event>, stop: CancellationToken) {
        let Checkpointer {
            store,
            fleet,
            metrics,
            health,
            interval,
            event_history,
        } = self;
        let shared = Parts {
            fleet,
            metrics,
            health,
        };
        let store = Arc::new(Mutex::new(store));
        let mut pending: VecDeque<Event> = VecDeque::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut error_log = RateLimit::new(ERROR_LOG_PERIOD);
        let mut alive_log = RateLimit::new(ERROR_LOG_PERIOD);
        let mut alive = tokio::time::interval(crate::store::ALIVE_EVERY);
        alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dir = shared
            .health
            .path()
            .parent()
            .map(std::path::Path::to_path_buf);
        let mut open = true;
        loop {
            let (stopping, ticked) = tokio::select! {
                biased;
                _ = stop.cancelled() => (true, false),
                _ = alive.tick(), if dir.is_some() => {
                    mark_alive(dir.clone(), &mut alive_log).await;
                    continue;
                }
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
            if !stopping && !ticked && !shared.health.is_ok() {
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

/// Rewrites the alive mark in `dir` (see `store::ALIVE_NAME`), off the
/// runtime's workers; a failure is logged at a limited rate (the store's
/// own errors are reported by its checkpoints and `/healthz`).
async fn mark_alive(dir: Option<std::path::PathBuf>, log: &mut RateLimit) {
    let Some(dir) = dir else { return };
    let written =
        tokio::task::spawn_blocking(move || crate::store::mark_alive(&dir, SystemTime::now()))
            .await;
    if let Ok(Err(e)) = written
        && let Some(suppressed) = log.check(std::time::Instant::now())
    {
        tracing::warn!(suppressed, "cannot write the alive mark: {e}");
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
/// [`WRITE_CHUNK`] hosts (the events, deletions and the fleet's loss
/// averages go with the first), and on failure keep everything not yet
/// written for the next try.
async fn checkpoint(
    store: &Arc<Mutex<Store>>,
    shared: &Parts,
    pending: &mut VecDeque<Event>,
    full: bool,
    event_history: usize,
    error_log: &mut RateLimit,
) {
    let (slots, mut forgotten) = shared.fleet.take_changes(full);
    let mut windows = shared.fleet.take_windows();
    let mut fleet_loss = Some(shared.fleet.read(Monitor::fleet_loss));
    let mut events: Vec<Event> = pending.iter().cloned().collect();
    let metrics: &Metrics = &shared.metrics;
    let mut rest: &[Slot] = &slots;
    loop {
        let (part, after) = rest.split_at(rest.len().min(WRITE_CHUNK));
        rest = after;
        let batch = Batch {
            hosts: collect(&shared.fleet, part),
            events: std::mem::take(&mut events),
            forgotten: std::mem::take(&mut forgotten),
            event_history,
            windows: windows.take(),
            fleet_loss: fleet_loss.take(),
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
            Ok((batch, Err(error))) => {
                if batch.windows.is_some() {
                    shared.fleet.untake_windows();
                }
                Some((batch.forgotten, chain(&error)))
            }
            // A panic in redb must not take monitoring down; retry later.
            Err(join) => Some((Vec::new(), format!("store writer failed: {join}"))),
        };
        if let Some((unwritten, message)) = failure {
            let unwritten_slots: Vec<Slot> = part.iter().chain(rest).copied().collect();
            shared.fleet.untake_changes(&unwritten_slots, unwritten);
            metrics.store_write_errors.inc();
            metrics.store_healthy.set(0);
            if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                tracing::error!(
                    suppressed,
                    "{message}; monitoring goes on in memory, retrying"
                );
            }
            shared.health.set(Some(message));
            return;
        }
        if rest.is_empty() {
            break;
        }
    }
    metrics.store_healthy.set(1);
    if !shared.health.is_ok() {
        tracing::info!(path = %shared.health.path().display(), "store writable again");
        error_log.reset();
    }
    shared.health.set(None);
}

/// An error and its causes on one line, `outer: inner: root` (for the
/// store's health and the log; reload's messages use it too).
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::stats::FleetLoss;
    use crate::monitor::testing::{TIMEOUT, beat, settings, settings_of};
    use crate::monitor::{DetectorKind, HostState, Observation, Observed, Outcome, Settings};

    /// A fresh monitor started now.
    fn monitor(settings: Settings) -> Monitor {
        Monitor::new(settings, Instant::now(), SystemTime::now())
    }

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
            labels: Default::default(),
        }
    }

    #[test]
    fn a_restored_legacy_hosts_first_beat_is_not_a_beat_interval() {
        let mut core = monitor(settings_of(DetectorKind::Phi));
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
            windows: None,
            fleet_loss: FleetLoss::default(),
        };
        restore(loaded, &mut core, &EventLog::new(10), now, wall);
        let beat = Observation::legacy("127.0.0.1", SocketAddr::from(([127, 0, 0, 1], 4000)));
        let later = now + Duration::from_secs(10);
        core.observe(&beat, later, wall, &mut Outcome::default());
        let registry = core.registry();
        let host = registry.get(registry.find("127.0.0.1").expect("restored"));
        let mean = host.stats.interval_mean_ms;
        assert!(
            mean < 20_000.0,
            "the hour away is not its rhythm: {mean} ms"
        );
    }

    #[test]
    fn restored_hosts_get_one_full_timeout_and_down_stays_down() {
        let mut core = monitor(settings());
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
            windows: None,
            fleet_loss: FleetLoss::with(0.3, 0.9),
        };
        let restored = restore(loaded, &mut core, &log, now, wall);
        assert_eq!(
            core.fleet_loss(),
            FleetLoss::with(0.3, 0.9),
            "the fleet's averages"
        );
        assert_eq!(
            restored,
            Restored {
                hosts: 4,
                away: Some(Duration::from_secs(90))
            }
        );
        assert_eq!(log.next_id(), 42, "event ids go on after the stored ones");
        assert_eq!(core.dirty_len(), 0, "nothing to write back");
        let mut out = Outcome::default();
        core.expire(now + TIMEOUT / 2, wall, &mut out);
        let kinds: Vec<_> = out.events.iter().map(|e| (e.kind, &*e.host)).collect();
        assert_eq!(kinds, [(EventKind::Late, "up")], "late at half, no down");
        out.clear();
        core.expire(now + TIMEOUT - Duration::from_millis(1), wall, &mut out);
        assert_eq!(out.events, [], "no down within the grace");
        core.expire(now + TIMEOUT, wall, &mut out);
        let mut kinds: Vec<_> = out
            .events
            .iter()
            .map(|e| (e.kind.as_str(), &*e.host))
            .collect();
        kinds.sort();
        assert_eq!(kinds, [("down", "late"), ("down", "up")]);
        for down in &out.events {
            // Not heard since the restart: at least the grace, at most
            // since the stored beat, 100 s before the restart.
            assert_eq!(down.silent_at_least, Some(TIMEOUT), "{down}");
            assert_eq!(down.silent_for, Duration::from_secs(100) + TIMEOUT);
            assert!(
                down.to_string().ends_with(" silent=30.000s..130.000s"),
                "{down}"
            );
        }
        out.clear();
        core.expire(now + TIMEOUT * 10, wall, &mut out);
        assert_eq!(out.events, [], "a host already down gets no second down");
        let registry = core.registry();
        let host = registry.get(registry.find("down").expect("remembered"));
        assert_eq!((host.beats, host.losses), (42, 1));
        assert_eq!(
            core.silent_for(host, now),
            Duration::from_secs(100),
            "a down host's silence reaches back to its stored beat, on the wall clock"
        );
        assert_eq!(core.silent_at_least(host, now), Some(Duration::ZERO));
        let (_, why) = core.explain(host, now + TIMEOUT);
        assert!(
            why.ends_with("(not heard since the server restarted 30.0s ago; its latest recorded beat was 130.0s ago)"),
            "{why}"
        );
        // A beat ends the uncertainty: the silence that ended is given as
        // bounds, the next one is exact.
        let back = Observation {
            seq: Some(8),
            ..beat("up")
        };
        out.clear();
        core.observe(&back, now + TIMEOUT * 2, wall, &mut out);
        let recovered = &out.events[0];
        assert_eq!(recovered.kind, EventKind::Recovered);
        // (A beat's time is rounded up to the clock's millisecond.)
        let low = recovered.silent_at_least.expect("bounded");
        assert!(
            (TIMEOUT * 2..=TIMEOUT * 2 + Duration::from_millis(1)).contains(&low),
            "{recovered}"
        );
        let registry = core.registry();
        let up = registry.get(registry.find("up").expect("remembered"));
        assert_eq!(core.silent_at_least(up, now + TIMEOUT * 3), None);
        let exact = core.silent_for(up, now + TIMEOUT * 3);
        assert!(
            (TIMEOUT - Duration::from_millis(1)..=TIMEOUT).contains(&exact),
            "{exact:?}"
        );
    }

    /// A beat of host "a" in one client run, with sequence number `run + seq`.
    fn run_beat(seq: u64) -> Observation<'static> {
        Observation {
            seq: Some((1_700_000_000u64 << 32) + seq),
            ..beat("a")
        }
    }

    /// Applies `seqs` to a fresh monitor, stores host "a" and restores it
    /// into another fresh monitor, as a restart would.
    fn restarted(settings: &Settings, seqs: impl IntoIterator<Item = u64>) -> Monitor {
        let mut core = monitor(settings.clone());
        let now = Instant::now();
        let mut out = Outcome::default();
        for seq in seqs {
            core.observe(&run_beat(seq), now, SystemTime::now(), &mut out);
        }
        let slot = core.registry().find("a").expect("known");
        let loaded = Loaded {
            hosts: vec![snapshot(&core, slot)],
            events: Vec::new(),
            alive: None,
            windows: None,
            fleet_loss: FleetLoss::default(),
        };
        let mut after = monitor(settings.clone());
        restore(
            loaded,
            &mut after,
            &EventLog::new(10),
            now,
            SystemTime::now(),
        );
        after
    }

    fn observe(core: &mut Monitor, seq: u64) -> Observed {
        let beat = run_beat(seq);
        core.observe(
            &beat,
            Instant::now(),
            SystemTime::now(),
            &mut Outcome::default(),
        )
    }

    fn losses(core: &Monitor) -> u64 {
        let registry = core.registry();
        u64::from(registry.get(registry.find("a").expect("known")).losses)
    }

    #[test]
    fn a_restored_host_refuses_replays_of_beats_from_before_the_restart() {
        let keyed = Settings {
            enforce_seq: true,
            ..settings()
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
        let mut after = restarted(&settings(), [110]);
        // Without keys a late beat from before the restart still counts...
        observe(&mut after, 105);
        // ...but the gap up to the first new beat is the server's absence.
        observe(&mut after, 120);
        assert_eq!(losses(&after), 0);
        observe(&mut after, 122);
        assert_eq!(losses(&after), 1, "gaps after that are loss again");
    }
}
