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
    /// Went down repeatedly within the flap window: alert sinks hold back
    /// its individual alerts until it settles. Comes right after a `down`.
    Flapping,
    /// A flapping host had a whole flap window without going down; alerts
    /// flow again. Does not change the state (up, or down if it stayed
    /// down).
    Settled,
}

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
            // Usually; a host that settles while down stays down.
            EventKind::Settled => HostState::Up,
        }
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
    sender: broadcast::Sender<Event>,
}

struct History {
    next_id: u64,
    capacity: usize,
    recent: VecDeque<Event>,
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
        };
        Self {
            history: Mutex::new(history),
            sender,
        }
    }

    /// Numbers the events, records them and sends them to subscribers.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut history = self.history.lock().expect("event history lock");
        for mut event in events {
            event.id = history.next_id;
            history.next_id += 1;
            if history.capacity > 0 {
                if history.recent.len() == history.capacity {
                    history.recent.pop_front();
                }
                history.recent.push_back(event.clone());
            }
            // No subscriber is not an error: events are still in the history.
            let _ = self.sender.send(event);
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// The most recent events, oldest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let history = self.history.lock().expect("event history lock");
        let skip = history.recent.len().saturating_sub(limit);
        history.recent.iter().skip(skip).cloned().collect()
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
}
