//! Events: one per state change, kept in a bounded recent history and
//! broadcast to whoever listens (the console now, alert sinks later).

use super::registry::HostState;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

/// What happened to a host. WARNING: only append: the names are public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// First beat from a host the server did not know (or that had left).
    Joined,
    /// Silent past its warning time.
    Late,
    /// Silent past its timeout.
    Down,
    /// Beating again after being late or down.
    Recovered,
    /// Said goodbye on a clean shutdown.
    Left,
    /// Beats carry a new boot id: the machine restarted.
    Rebooted,
    /// The server itself started, with its remembered hosts. Not about a
    /// host: its host is [`MONITOR_HOST`], and its silence is how long the
    /// server was away (zero when it has no record of running before).
    MonitorStarted,
    /// Paused by an operator: no alarms until resumed (resolves alerts).
    Paused,
    /// Resumed by an operator: `up`, with a fresh full timeout.
    Resumed,
    /// Forgotten by an operator: removed from the registry (resolves alerts).
    Forgotten,
    /// Went down repeatedly within the flap window: alert sinks hold back
    /// its individual alerts until it settles. Comes right after a `down`.
    Flapping,
    /// A flapping host had a whole flap window without going down; alerts
    /// flow again. Does not change the state (up, or down if it stayed
    /// down).
    Settled,
}

/// The host name of events about the monitor itself, not a host.
pub const MONITOR_HOST: &str = "-";

impl EventKind {
    /// The name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Late => "late",
            EventKind::Down => "down",
            EventKind::Recovered => "recovered",
            EventKind::Left => "left",
            EventKind::Rebooted => "rebooted",
            EventKind::MonitorStarted => "monitor_started",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Forgotten => "forgotten",
            EventKind::Flapping => "flapping",
            EventKind::Settled => "settled",
        }
    }

    /// The state a host is in after this event.
    pub fn state_after(self) -> HostState {
        match self {
            EventKind::Late => HostState::Late,
            EventKind::Down | EventKind::Flapping => HostState::Down,
            EventKind::Left => HostState::Left,
            EventKind::Joined | EventKind::Recovered | EventKind::Rebooted => HostState::Up,
            // Changes no host; `up` as in "the monitor is up".
            EventKind::MonitorStarted => HostState::Up,
            EventKind::Paused => HostState::Paused,
            EventKind::Resumed => HostState::Up,
            // A forgotten host has no state; like `left`, it is no outage.
            EventKind::Forgotten => HostState::Left,
            // Usually; a host that settles while down stays down.
            EventKind::Settled => HostState::Up,
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 12] = [
        EventKind::Joined,
        EventKind::Late,
        EventKind::Down,
        EventKind::Recovered,
        EventKind::Left,
        EventKind::Rebooted,
        EventKind::MonitorStarted,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::Forgotten,
        EventKind::Flapping,
        EventKind::Settled,
    ];

    /// A dense index into [`EventKind::ALL`], for per-kind counts.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One state change of one host.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the server's event stream, from 1; assigned on publish.
    pub id: u64,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
    /// Which host.
    pub host: Arc<str>,
    /// The host's address at the time.
    pub addr: SocketAddr,
    /// How long the host had been silent when this happened (for `recovered`:
    /// how long it was silent before the beat that ended the silence).
    pub silent_for: Duration,
}

impl fmt::Display for Event {
    /// The console line: time, event, host id, address, silence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<9} {} addr={} silent={:.3}s",
            humantime::format_rfc3339_millis(self.at),
            self.kind.as_str(),
            self.host,
            self.addr,
            self.silent_for.as_secs_f64(),
        )
    }
}

/// The recent history and the broadcast of events.
pub struct EventLog {
    history: Mutex<History>,
}

struct History {
    next_id: u64,
    capacity: usize,
    recent: VecDeque<Event>,
    /// Events published, by [`EventKind::index`] (for `/metrics`).
    by_kind: [u64; EventKind::ALL.len()],
    /// `None` once closed: subscribers then drain what is queued and end.
    /// An explicit close, not the last `Arc` dropping, because long-lived
    /// parts (metrics collectors, sinks) hold the log until the very end.
    sender: Option<broadcast::Sender<Event>>,
}

/// How many events a slow subscriber may fall behind before it loses some.
const BROADCAST_CAPACITY: usize = 65_536;

impl EventLog {
    /// A log keeping the latest `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let history = History {
            next_id: 1,
            capacity,
            recent: VecDeque::new(),
            by_kind: [0; EventKind::ALL.len()],
            sender: Some(sender),
        };
        Self {
            history: Mutex::new(history),
        }
    }

    /// Numbers the events, records them and sends them to subscribers.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut history = self.history.lock().expect("event history lock");
        for mut event in events {
            event.id = history.next_id;
            history.next_id += 1;
            history.by_kind[event.kind.index()] += 1;
            if history.capacity > 0 {
                if history.recent.len() == history.capacity {
                    history.recent.pop_front();
                }
                history.recent.push_back(event.clone());
            }
            // No subscriber is not an error: events are still in the history.
            if let Some(sender) = &history.sender {
                let _ = sender.send(event);
            }
        }
    }

    /// Puts events remembered from an earlier run back into the history,
    /// without broadcasting them (they happened then, not now), and goes on
    /// numbering after the last of them.
    pub fn restore(&self, events: impl IntoIterator<Item = Event>) {
        let mut history = self.history.lock().expect("event history lock");
        for event in events {
            history.next_id = history.next_id.max(event.id + 1);
            if history.capacity > 0 {
                if history.recent.len() == history.capacity {
                    history.recent.pop_front();
                }
                history.recent.push_back(event);
            }
        }
    }

    /// The id the next published event gets.
    pub fn next_id(&self) -> u64 {
        self.history.lock().expect("event history lock").next_id
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        match &self.history.lock().expect("event history lock").sender {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1, // already closed
        }
    }

    /// Ends the broadcast: subscribers receive what was published so far,
    /// then see it closed. Later events still enter the history.
    pub fn close(&self) {
        self.history.lock().expect("event history lock").sender = None;
    }

    /// The most recent events, oldest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let history = self.history.lock().expect("event history lock");
        let skip = history.recent.len().saturating_sub(limit);
        history.recent.iter().skip(skip).cloned().collect()
    }

    /// Up to `limit` events with an id above `cursor`, oldest first. Ids
    /// are consecutive, so the start is found by arithmetic, not a scan.
    pub fn since(&self, cursor: u64, limit: usize) -> Vec<Event> {
        let history = self.history.lock().expect("event history lock");
        let first = history.recent.front().map_or(history.next_id, |e| e.id);
        let skip =
            usize::try_from(cursor.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        history
            .recent
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The latest `limit` events of `host`, oldest first (scans the
    /// history: for one host's detail page, not for the hot path).
    pub fn recent_of(&self, host: &str, limit: usize) -> Vec<Event> {
        let history = self.history.lock().expect("event history lock");
        let mut found: Vec<Event> = history
            .recent
            .iter()
            .rev()
            .filter(|e| &*e.host == host)
            .take(limit)
            .cloned()
            .collect();
        found.reverse();
        found
    }

    /// Events published so far, by [`EventKind::index`].
    pub fn counts_by_kind(&self) -> [u64; EventKind::ALL.len()] {
        self.history.lock().expect("event history lock").by_kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            id: 0,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            kind,
            host: "web-1".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            silent_for: Duration::from_millis(1500),
        }
    }

    #[test]
    fn console_line_has_time_kind_host_addr_and_silence() {
        assert_eq!(
            event(EventKind::Down).to_string(),
            "2023-11-14T22:13:20.123Z down      web-1 addr=127.0.0.1:4000 silent=1.500s"
        );
    }

    #[test]
    fn history_is_bounded_and_numbered() {
        let log = EventLog::new(2);
        let mut rx = log.subscribe();
        log.publish([
            event(EventKind::Joined),
            event(EventKind::Late),
            event(EventKind::Down),
        ]);
        let recent = log.recent(10);
        assert_eq!(recent.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(rx.try_recv().map(|e| e.kind), Ok(EventKind::Joined));
        assert_eq!(log.recent(1)[0].kind, EventKind::Down);
    }

    #[test]
    fn since_returns_events_after_the_cursor_oldest_first() {
        let log = EventLog::new(3);
        log.publish((0..5).map(|_| event(EventKind::Joined)));
        let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(log.since(0, 10)), [3, 4, 5], "older ones fell out");
        assert_eq!(ids(log.since(3, 10)), [4, 5]);
        assert_eq!(ids(log.since(3, 1)), [4]);
        assert_eq!(ids(log.since(5, 10)), Vec::<u64>::new());
        assert_eq!(ids(log.since(u64::MAX, 10)), Vec::<u64>::new());
        assert_eq!(log.counts_by_kind()[EventKind::Joined.index()], 5);
    }

    #[test]
    fn kind_indexes_match_the_list() {
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.as_str());
        }
    }
}
