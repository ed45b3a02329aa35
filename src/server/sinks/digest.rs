//! Digests and reminders, in front of one sink.
//!
//! With `group_wait`, the first event starts a window; the events that
//! arrive within it go out as one [`SinkEvent::Digest`] ("3 hosts down: a,
//! b, c"), or alone if it was the only one. With `repeat`, a host whose
//! latest event is `down` is sent again as a [`SinkEvent::Reminder`] every
//! `repeat` until any later event of that host. To see those later events
//! this stage takes every kind of the sink's hosts, and applies the sink's
//! kind filter itself. Test alerts pass straight through.

use super::{Filter, SinkEvent};
use crate::monitor::{Event, EventKind};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The digest and reminder settings of a sink.
pub struct Shaper {
    /// Window collected into one message.
    pub group_wait: Option<Duration>,
    /// Reminder period of a host that stays down.
    pub repeat: Option<Duration>,
    /// The sink's kind filter (the route in front passes every kind when
    /// `repeat` is set).
    pub kinds: Filter,
}

struct Down {
    event: Event,
    due: Instant,
    /// When the host went down, on the monotonic clock.
    since: Instant,
}

impl Shaper {
    /// Moves events from `input` to `output` until `input` closes; then
    /// sends what is collected and ends.
    pub async fn run(self, mut input: mpsc::Receiver<SinkEvent>, output: mpsc::Sender<SinkEvent>) {
        let mut pending: Vec<SinkEvent> = Vec::new();
        let mut window_end: Option<Instant> = None;
        let mut downs: HashMap<Arc<str>, Down> = HashMap::new();
        let mut due: BTreeSet<(Instant, Arc<str>)> = BTreeSet::new();
        loop {
            let next_due = due.first().map(|(at, _)| *at);
            let wake = match (window_end, next_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut out = Vec::new();
            tokio::select! {
                received = input.recv() => {
                    let Some(event) = received else { break };
                    if let (Some(repeat), SinkEvent::Host(e)) = (self.repeat, &event) {
                        let now = Instant::now();
                        if let Some(old) = downs.remove(&e.host) {
                            due.remove(&(old.due, e.host.clone()));
                        }
                        if e.kind == EventKind::Down || e.kind == EventKind::Flapping {
                            let next = now + repeat;
                            due.insert((next, e.host.clone()));
                            downs.insert(e.host.clone(), Down { event: e.clone(), due: next, since: now });
                        }
                    }
                    if matches!(event, SinkEvent::Test(_)) {
                        let _ = output.send(event).await;
                        continue;
                    }
                    if self.kinds.matches(&event) {
                        out.push(event);
                    }
                }
                _ = timer => {}
            }
            let now = Instant::now();
            while let Some((at, host)) = due.first().cloned() {
                if at > now {
                    break;
                }
                due.pop_first();
                let Some(down) = downs.get_mut(&host) else {
                    continue;
                };
                let repeat = self.repeat.expect("reminders only with repeat");
                down.due = now + repeat;
                due.insert((down.due, host.clone()));
                let mut reminder = down.event.clone();
                let since = now.duration_since(down.since);
                reminder.silent_for += since;
                reminder.silent_at_least = reminder.silent_at_least.map(|low| low + since);
                reminder.at = SystemTime::now();
                out.push(SinkEvent::Reminder(reminder));
            }
            match self.group_wait {
                None => {
                    for event in out {
                        if output.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                Some(wait) => {
                    if !out.is_empty() && window_end.is_none() {
                        window_end = Some(now + wait);
                    }
                    pending.extend(out);
                    if window_end.is_some_and(|end| end <= now) {
                        window_end = None;
                        if let Some(event) = bundle(std::mem::take(&mut pending))
                            && output.send(event).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        if let Some(event) = bundle(pending) {
            let _ = output.send(event).await;
        }
    }
}

/// One event alone, several as a digest, none as nothing.
fn bundle(mut events: Vec<SinkEvent>) -> Option<SinkEvent> {
    match events.len() {
        0 => None,
        1 => events.pop(),
        _ => Some(SinkEvent::Digest(events.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sinks::template::sample;

    fn event(kind: EventKind, host: &str) -> SinkEvent {
        let SinkEvent::Host(mut e) = sample("down") else {
            unreachable!("a host event")
        };
        e.kind = kind;
        e.host = host.into();
        SinkEvent::Host(e)
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_of_downs_is_one_digest() {
        let (tx, rx) = mpsc::channel(10);
        let (out_tx, mut out) = mpsc::channel(10);
        let shaper = Shaper {
            group_wait: Some(Duration::from_secs(30)),
            repeat: None,
            kinds: Filter::new(None, crate::select::Selector::everything()),
        };
        tokio::spawn(shaper.run(rx, out_tx));
        for host in ["a", "b", "c"] {
            tx.send(event(EventKind::Down, host)).await.expect("send");
        }
        let digest = out.recv().await.expect("a digest");
        assert_eq!(
            super::super::template::summary(&digest),
            "3 hosts down: a, b, c"
        );
        tx.send(event(EventKind::Recovered, "a"))
            .await
            .expect("send");
        drop(tx);
        assert_eq!(out.recv().await.map(|e| e.kind()), Some("recovered"));
        assert!(out.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn reminders_while_down_only() {
        let (tx, rx) = mpsc::channel(10);
        let (out_tx, mut out) = mpsc::channel(10);
        let kinds = ["down".to_string()];
        let shaper = Shaper {
            group_wait: None,
            repeat: Some(Duration::from_secs(3600)),
            kinds: Filter::new(Some(&kinds), crate::select::Selector::everything()),
        };
        tokio::spawn(shaper.run(rx, out_tx));
        tx.send(event(EventKind::Down, "a")).await.expect("send");
        assert_eq!(out.recv().await.map(|e| e.kind()), Some("down"));
        for _ in 0..2 {
            let reminder = out.recv().await.expect("a reminder");
            assert!(matches!(reminder, SinkEvent::Reminder(_)), "{reminder:?}");
        }
        // Recovered is not sent (the sink takes only down) but ends them.
        tx.send(event(EventKind::Recovered, "a"))
            .await
            .expect("send");
        drop(tx);
        assert!(out.recv().await.is_none(), "no reminder after recovery");
    }
}
