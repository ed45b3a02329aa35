//! The event log: every event the monitor makes, numbered, kept in a
//! bounded recent history and broadcast to whoever listens (the console,
//! the store, the alert sinks). Only the [`Fleet`](super::fleet::Fleet)
//! publishes, under its lock, so the order is the monitor's.

use crate::monitor::{Event, EventKind};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

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
    use crate::monitor::testing::event;

    #[test]
    fn history_is_bounded_and_numbered() {
        let log = EventLog::new(2);
        let mut rx = log.subscribe();
        log.publish([
            event(EventKind::Joined, "web-1"),
            event(EventKind::Late, "web-1"),
            event(EventKind::Down, "web-1"),
        ]);
        let recent = log.recent(10);
        assert_eq!(recent.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(rx.try_recv().map(|e| e.kind), Ok(EventKind::Joined));
        assert_eq!(log.recent(1)[0].kind, EventKind::Down);
    }

    #[test]
    fn since_returns_events_after_the_cursor_oldest_first() {
        let log = EventLog::new(3);
        log.publish((0..5).map(|_| event(EventKind::Joined, "web-1")));
        let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(log.since(0, 10)), [3, 4, 5], "older ones fell out");
        assert_eq!(ids(log.since(3, 10)), [4, 5]);
        assert_eq!(ids(log.since(3, 1)), [4]);
        assert_eq!(ids(log.since(5, 10)), Vec::<u64>::new());
        assert_eq!(ids(log.since(u64::MAX, 10)), Vec::<u64>::new());
        assert_eq!(log.counts_by_kind()[EventKind::Joined.index()], 5);
    }
}
