//! Alert sinks: exec hooks, webhooks and Alertmanager, fed from the event
//! broadcast and never from the ingest or detector path.
//!
//! One dispatcher task subscribes to the [`EventLog`](super::events::EventLog)
//! broadcast, passes events through the mass-silence [`mass::Gate`], and
//! hands each released event to every sink whose filter matches with a
//! non-blocking `try_send` into that sink's bounded queue: a full queue drops
//! the event for that sink (counted in `/metrics`, logged), so a sink that
//! hangs delays neither detection nor the other sinks. Each sink is its own
//! task. See docs/ALERTS.md.
//!
//! This file holds what every sink shares: what it receives ([`SinkEvent`])
//! and its JSON document ([`Payload`]). Starting and stopping the sinks is in
//! `lifecycle.rs`, the dispatcher's loop in `dispatch.rs`, which events a
//! sink takes in `filter.rs`, how its deliveries are counted and retried in
//! `delivery.rs`, and each kind of sink in its own file.

pub mod alertmanager;
pub mod api;
mod delivery;
pub mod digest;
mod dispatch;
pub mod email;
pub mod exec;
mod filter;
mod lifecycle;
pub mod mass;
pub mod presets;
pub mod template;
pub mod truth;
pub mod webhook;

/// The sinks' settings live with the rest of the config (`config::sinks`):
/// the config is below the server, never the other way round.
pub use crate::config::secret;
pub use crate::config::sinks as config;
pub use config::SinksConfig;
pub use delivery::{Delivery, Latest, Outcomes, Retry, backoff};
pub use dispatch::Carry;
pub use filter::Filter;
pub use lifecycle::{Sinks, check};

use crate::monitor::Event;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why the sinks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client of a webhook or Alertmanager sink failed to build.
    #[error("sink {sink:?}: cannot build the http client")]
    Client {
        /// The sink's name.
        sink: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// A sink's settings are refused: a secret file, a template, an
    /// address (the message names the field and the sink).
    #[error(transparent)]
    Config(#[from] crate::config::Error),
}

/// Many hosts that went down together, sent instead of one page each.
#[derive(Clone, Debug, PartialEq)]
pub struct MassSilence {
    /// Wall-clock time of the down that made it a mass silence.
    pub at: SystemTime,
    /// How many hosts went down within the window.
    pub count: usize,
    /// How many hosts the server knew.
    pub fleet: usize,
    /// The window they went down in.
    pub window: Duration,
    /// Their ids, sorted.
    pub hosts: Vec<Arc<str>>,
    /// Their networks, most hosts first.
    pub networks: Vec<Network>,
}

/// One network of a mass silence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    /// `a.b.c.0/24` or an IPv6 `/64`.
    pub network: String,
    /// Hosts of the mass silence in it.
    pub hosts: usize,
}

/// What a sink receives.
#[derive(Clone, Debug)]
pub enum SinkEvent {
    /// A state change of one host.
    Host(Event),
    /// Many hosts down at once.
    MassSilence(Arc<MassSilence>),
    /// A test alert from `lubdub test-alert`; the sink reports how its
    /// delivery ended.
    Test(Arc<TestAlert>),
    /// The events of one `group_wait` window, sent as one message.
    Digest(Arc<[SinkEvent]>),
    /// A host's `down` sent again because it is still down (`repeat`);
    /// `at` and `silent_for` are those of the reminder.
    Reminder(Event),
}

/// The host of a test alert's document: no real host id (ids of real hosts
/// are what their clients send; this one is reserved by convention).
pub const TEST_HOST: &str = "lubdub-test";

/// A test alert, with the channel its sink answers on.
pub struct TestAlert {
    /// The sink it was sent to.
    pub sink: String,
    /// When it was sent.
    pub at: SystemTime,
    reply: Mutex<Option<tokio::sync::oneshot::Sender<Result<(), String>>>>,
}

impl std::fmt::Debug for TestAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestAlert({})", self.sink)
    }
}

impl TestAlert {
    /// A test alert nobody waits for (a template sample).
    pub fn new(sink: &str, at: SystemTime) -> Self {
        Self {
            sink: sink.to_string(),
            at,
            reply: Mutex::new(None),
        }
    }

    /// A test alert and the receiver of its outcome.
    pub fn with_reply(
        sink: &str,
        at: SystemTime,
    ) -> (Self, tokio::sync::oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let alert = Self {
            sink: sink.to_string(),
            at,
            reply: Mutex::new(Some(tx)),
        };
        (alert, rx)
    }

    /// Tells the waiting caller how the delivery ended (once; later calls
    /// are ignored).
    pub fn report(&self, result: Result<(), String>) {
        if let Some(tx) = self.reply.lock().expect("test alert lock").take() {
            let _ = tx.send(result);
        }
    }
}

/// Reports `result` to every test alert in `events` (a delivered batch).
pub fn report_tests(events: &[SinkEvent], result: &Result<(), String>) {
    for event in events {
        if let SinkEvent::Test(t) = event {
            t.report(result.clone());
        }
    }
}

impl SinkEvent {
    /// The kind as sinks and filters name it.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkEvent::Host(e) | SinkEvent::Reminder(e) => e.kind.as_str(),
            SinkEvent::MassSilence(_) => "mass-silence",
            SinkEvent::Test(_) => "test",
            SinkEvent::Digest(_) => "digest",
        }
    }

    /// The host the event is about, if one.
    pub fn host(&self) -> Option<&str> {
        match self {
            SinkEvent::Host(e) | SinkEvent::Reminder(e) => Some(&e.host),
            _ => None,
        }
    }

    /// The JSON document of this event (docs/ALERTS.md).
    pub fn payload(&self) -> Payload {
        let rfc3339 = |at| humantime::format_rfc3339_millis(at).to_string();
        let empty = |kind, at| Payload {
            kind,
            at,
            event_id: None,
            host: None,
            labels: None,
            addr: None,
            silent_seconds: None,
            silent_seconds_at_least: None,
            last_seen: None,
            count: None,
            fleet: None,
            window_seconds: None,
            hosts: None,
            networks: None,
            reminder: None,
            message: None,
            maintenance: None,
        };
        match self {
            // A host, so that templates written for host events work on it.
            SinkEvent::Test(t) => Payload {
                host: Some(TEST_HOST.to_string()),
                message: Some(template::summary(self)),
                ..empty("test", rfc3339(t.at))
            },
            SinkEvent::Digest(events) => {
                let at = events.first().map(|e| e.payload().at).unwrap_or_default();
                let hosts = events.iter().filter_map(|e| e.host().map(String::from));
                Payload {
                    count: Some(events.len()),
                    hosts: Some(hosts.collect()),
                    message: Some(template::summary(self)),
                    ..empty("digest", at)
                }
            }
            SinkEvent::Host(e) | SinkEvent::Reminder(e) => Payload {
                event_id: Some(e.id),
                host: Some(e.host.to_string()),
                labels: Some((*e.labels).clone()),
                addr: Some(e.addr.to_string()),
                silent_seconds: Some(e.silent_for.as_secs_f64()),
                silent_seconds_at_least: e.silent_at_least.map(|d| d.as_secs_f64()),
                last_seen: Some(rfc3339(e.at.checked_sub(e.silent_for).unwrap_or(e.at))),
                reminder: matches!(self, SinkEvent::Reminder(_)).then_some(true),
                maintenance: e.maintenance.as_deref().map(|n| MaintenancePayload {
                    window: n.window,
                    source: n.source.as_str(),
                    reason: n.reason.to_string(),
                    until: rfc3339(n.until),
                }),
                ..empty(self.kind(), rfc3339(e.at))
            },
            SinkEvent::MassSilence(m) => Payload {
                count: Some(m.count),
                fleet: Some(m.fleet),
                window_seconds: Some(m.window.as_secs_f64()),
                hosts: Some(m.hosts.iter().map(|h| h.to_string()).collect()),
                networks: Some(m.networks.clone()),
                ..empty(self.kind(), rfc3339(m.at))
            },
        }
    }
}

/// The JSON form of a [`SinkEvent`], for webhooks and exec stdin. Fields that
/// do not apply to the kind are left out.
#[derive(Clone, Debug, Serialize)]
pub struct Payload {
    /// `down`, `recovered`, …, or `mass-silence`.
    pub kind: &'static str,
    /// RFC 3339 time of the event.
    pub at: String,
    /// The event's number in the server's stream (host events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// Host id (host events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host's labels, `{}` when it has none (host events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<crate::labels::Labels>,
    /// Host address `ip:port` (host events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Silence when it happened, in seconds (host events); an upper bound
    /// (since its latest recorded beat) when `silent_seconds_at_least` is
    /// set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_seconds: Option<f64>,
    /// Set when the silence is known only within bounds: the host was not
    /// heard since the server restarted, so it is at least this (since the
    /// restart) and at most `silent_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_seconds_at_least: Option<f64>,
    /// RFC 3339 time of the host's latest beat (host events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Hosts down together (mass-silence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Hosts known to the server (mass-silence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<usize>,
    /// The window they went down in, in seconds (mass-silence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    /// Their ids (mass-silence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Their networks (mass-silence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    /// `true` on a reminder that the host is still down (`repeat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminder: Option<bool>,
    /// What a test alert or a digest says, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Maintenance events: who opened the window (`host`, `api`,
    /// `schedule`), why, until when, and its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenancePayload>,
}

/// The window of a maintenance event, in its JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct MaintenancePayload {
    /// The window's id (`GET /api/v1/maintenance`).
    pub window: u64,
    /// `host`, `api` or `schedule`.
    pub source: &'static str,
    /// Why (may be empty).
    pub reason: String,
    /// RFC 3339 end of the window.
    pub until: String,
}

/// The HTTP client of a webhook or Alertmanager sink: its timeout, our
/// user agent, and `headers` on every request.
fn http_client(
    sink: &str,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .user_agent(concat!("lubdub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| Error::Client {
            sink: sink.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::EventKind;
    use std::net::SocketAddr;

    /// A host event with a fixed id, time, address and silence (the tests
    /// of the filter and the dispatcher use it too).
    pub(super) fn host_event(kind: EventKind, host: &str) -> SinkEvent {
        SinkEvent::Host(Event {
            id: 7,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            addr: SocketAddr::from(([192, 0, 2, 1], 4000)),
            silent_for: Duration::from_millis(1500),
            ..crate::monitor::testing::event(kind, host)
        })
    }

    #[test]
    fn payload_of_a_host_event() {
        let json =
            serde_json::to_value(host_event(EventKind::Down, "web-1").payload()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "down",
                "at": "2023-11-14T22:13:20.000Z",
                "event_id": 7,
                "host": "web-1",
                "labels": {},
                "addr": "192.0.2.1:4000",
                "silent_seconds": 1.5,
                "last_seen": "2023-11-14T22:13:18.500Z",
            })
        );
    }
}
