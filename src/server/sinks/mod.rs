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

pub mod alertmanager;
pub mod api;
pub mod digest;
pub mod email;
pub mod exec;
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

use super::metrics::Metrics;
use crate::config::ValidServerConfig;
use crate::monitor::{Event, EventKind, HostState};
use crate::ratelimit::RateLimit;
use crate::select::Selector;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// Which events a sink takes.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Kinds wanted; `None`: all.
    kinds: Option<Vec<String>>,
    /// The hosts whose events it takes (by id: events carry no more).
    hosts: Selector,
    /// Labels the host must carry; empty: any.
    labels: crate::labels::Labels,
}

impl Filter {
    /// A filter on `kinds` (`None`: every kind) and `hosts` (as the
    /// config's validation compiled them).
    pub fn new(kinds: Option<&[String]>, hosts: Selector) -> Self {
        Self {
            kinds: kinds.map(<[String]>::to_vec),
            hosts,
            labels: crate::labels::Labels::new(),
        }
    }

    /// This filter, taking only hosts that carry every label of `labels`.
    /// A mass silence (no labels of its own) still passes: a page for many
    /// hosts is never lost to a label filter.
    pub fn with_labels(mut self, labels: &crate::labels::Labels) -> Self {
        self.labels = labels.clone();
        self
    }

    /// True when the sink takes events of host `id` (its hosts only).
    pub fn matches_host(&self, id: &str) -> bool {
        self.hosts.matches_id(id)
    }

    /// True when the sink wants `event`. A mass silence matches if any of
    /// its hosts does.
    pub fn matches(&self, event: &SinkEvent) -> bool {
        if let SinkEvent::Host(e) | SinkEvent::Reminder(e) = event
            && !e.labels.contains_all(&self.labels)
        {
            return false;
        }
        self.matches_but_labels(event)
    }

    /// [`Filter::matches`] without the label check: for the event that
    /// ends a `down` the sink was given (see `Told::ends_told_down`).
    pub fn matches_but_labels(&self, event: &SinkEvent) -> bool {
        let kind = event.kind();
        if let Some(kinds) = &self.kinds
            && !matches!(event, SinkEvent::Test(_) | SinkEvent::Digest(_))
            && !kinds.iter().any(|k| k == kind)
        {
            return false;
        }
        if self.hosts.is_everything() {
            return true;
        }
        match event {
            SinkEvent::Host(e) | SinkEvent::Reminder(e) => self.matches_host(&e.host),
            SinkEvent::MassSilence(m) => m.hosts.iter().any(|h| self.matches_host(h)),
            SinkEvent::Digest(events) => events.iter().any(|e| self.matches(e)),
            SinkEvent::Test(_) => true,
        }
    }
}

/// A sink's handle on its delivery counters in `/metrics` and on the
/// latest outcomes shown by `GET /api/v1/sinks`.
#[derive(Clone)]
pub struct Outcomes {
    /// In the order of [`SINK_OUTCOMES`](super::metrics::SINK_OUTCOMES).
    counters: [Counter; 4],
    latest: Arc<Mutex<Latest>>,
}

/// When a sink last delivered and last failed, and why; in its
/// `GET /api/v1/sinks` entry as `last_success`, `last_failure` (RFC 3339)
/// and `last_error`, each `null` when there is none.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latest {
    /// Wall-clock time of the latest delivery.
    #[serde(rename = "last_success", serialize_with = "api::rfc3339")]
    pub success: Option<SystemTime>,
    /// Wall-clock time of the latest failure (given up on).
    #[serde(rename = "last_failure", serialize_with = "api::rfc3339")]
    pub failure: Option<SystemTime>,
    /// Why it failed, without secrets (URLs are left out).
    #[serde(rename = "last_error")]
    pub error: Option<String>,
}

impl Outcomes {
    fn new(metrics: &Metrics, sink: &str) -> Self {
        Self {
            counters: metrics.sink_counters(sink),
            latest: Arc::default(),
        }
    }

    /// Counts `n` events with `outcome`.
    pub fn add(&self, outcome: Delivery, n: u64) {
        self.counters[outcome as usize].inc_by(n);
        let mut latest = self.latest.lock().expect("sink outcome lock");
        match outcome {
            Delivery::Sent => latest.success = Some(SystemTime::now()),
            Delivery::Failed => latest.failure = Some(SystemTime::now()),
            Delivery::Retried | Delivery::Dropped => {}
        }
    }

    /// Counts `n` events given up on because of `why`.
    pub fn fail(&self, n: u64, why: &str) {
        self.add(Delivery::Failed, n);
        self.latest.lock().expect("sink outcome lock").error = Some(why.to_string());
    }

    /// The latest outcomes.
    pub fn latest(&self) -> Latest {
        self.latest.lock().expect("sink outcome lock").clone()
    }
}

/// How a sink's delivery of an event ended, as counted in `/metrics`. The
/// discriminant indexes [`SINK_OUTCOMES`](super::metrics::SINK_OUTCOMES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (2xx, or the hook exited 0).
    Sent = 0,
    /// Given up on: retries spent, a 4xx, a hook that failed or was killed.
    Failed = 1,
    /// One more attempt after a failure.
    Retried = 2,
    /// Never attempted: the sink's queue was full.
    Dropped = 3,
}

/// Waits before retry number `attempt` (0 = the first retry): `base`
/// doubled per attempt, capped at `max`, then shortened by a random amount
/// of up to half (jitter, so that senders do not retry in step).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How a sink retries a delivery after a temporary failure: the
/// `retries`, `backoff` and `max_backoff` settings the webhook and e-mail
/// sinks share, and the wait between attempts that both take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry (see [`backoff`]).
    pub backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl Retry {
    /// After failed attempt number `attempt` (0 = the first), for `why`:
    /// false when the retries are spent (the caller gives up); otherwise
    /// counts the `events` as retried, waits the backoff and returns true.
    pub async fn wait(
        &self,
        sink: &str,
        why: &str,
        attempt: u32,
        outcomes: &Outcomes,
        events: u64,
    ) -> bool {
        if attempt >= self.retries {
            return false;
        }
        let wait = backoff(self.backoff, self.max_backoff, attempt);
        tracing::debug!(sink = %sink, "{why}; retrying in {wait:?}");
        outcomes.add(Delivery::Retried, events);
        tokio::time::sleep(wait).await;
        true
    }
}

struct Route {
    name: String,
    kind: &'static str,
    preset: Option<&'static str>,
    filter: Filter,
    queue: mpsc::Sender<SinkEvent>,
    outcomes: Outcomes,
    full_log: RateLimit,
    told: truth::Told,
}

/// The running sinks.
pub struct Sinks {
    dispatcher: JoinHandle<Carry>,
    workers: Vec<JoinHandle<()>>,
    board: Arc<api::Board>,
    /// Stops the dispatcher at an event id (a reload hands over there).
    stop: oneshot::Sender<u64>,
}

/// What the dispatcher knows that the sinks of a reload must go on from:
/// which hosts are flapping, and what each sink (by name) was told.
#[derive(Default)]
pub struct Carry {
    flaps: Flaps,
    told: std::collections::HashMap<String, truth::Told>,
}

impl Sinks {
    /// Starts every configured sink and the dispatcher that feeds them from
    /// `events`. `http_addr` is the server's API address (default
    /// `generatorURL` base); `down_at_start` are the hosts already down
    /// when the server starts (restored from the store, which does not
    /// repeat their `down`), as their `down` events.
    pub fn spawn(
        config: &ValidServerConfig,
        http_addr: SocketAddr,
        down_at_start: Vec<Event>,
        events: broadcast::Receiver<Event>,
        metrics: Arc<Metrics>,
        handover: Option<oneshot::Receiver<Carry>>,
    ) -> Result<Sinks, Error> {
        let sinks = &config.sinks;
        let checked = config.checked_sinks();
        let mut routes = Vec::new();
        let mut workers = Vec::new();
        // A sink with digests or reminders gets a stage in front of it: the
        // route feeds the stage, the stage feeds the sink.
        let mut route = |name: String,
                         kind: &'static str,
                         preset: Option<&'static str>,
                         filter: Filter,
                         capacity: usize,
                         shaper: Option<digest::Shaper>| {
            let (tx, rx) = mpsc::channel(capacity);
            let outcomes = Outcomes::new(&metrics, &name);
            routes.push(Route {
                name,
                kind,
                preset,
                filter,
                queue: tx,
                outcomes: outcomes.clone(),
                full_log: RateLimit::new(Duration::from_secs(10)),
                told: truth::Told::default(),
            });
            let rx = match shaper {
                Some(shaper) => {
                    let (shaped_tx, shaped_rx) = mpsc::channel(capacity);
                    tokio::spawn(shaper.run(rx, shaped_tx));
                    shaped_rx
                }
                None => rx,
            };
            (rx, outcomes)
        };
        for (sink, checked) in sinks.exec.iter().zip(&checked.exec) {
            let name = checked.name.clone();
            let filter =
                Filter::new(Some(&sink.events), checked.hosts.clone()).with_labels(&sink.labels);
            let (rx, outcomes) = route(name.clone(), "exec", None, filter, sink.queue, None);
            workers.push(tokio::spawn(exec::Exec::new(name, sink, outcomes).run(rx)));
        }
        for (sink, checked) in sinks.webhook.iter().zip(&checked.webhook) {
            let name = checked.name.clone();
            let (filter, shaper) =
                shaped(&sink.events, &checked.hosts, sink.group_wait, sink.repeat);
            let filter = filter.with_labels(&sink.labels);
            let preset = sink.preset.map(presets::Preset::as_str);
            let (rx, outcomes) = route(name.clone(), "webhook", preset, filter, sink.queue, shaper);
            let webhook = webhook::Webhook::new(name, sink, outcomes)?;
            workers.push(tokio::spawn(webhook.run(rx)));
        }
        // Alertmanager must go on renewing the alerts of hosts already down
        // at start, or they would expire while still down.
        for (sink, checked) in sinks.alertmanager.iter().zip(&checked.alertmanager) {
            let name = checked.sink.name.clone();
            // Alertmanager tracks each host's latest event, so it takes
            // every kind; only the host filter applies.
            let filter =
                Filter::new(None, checked.sink.hosts.clone()).with_labels(&sink.match_labels);
            let already_down = down_at_start
                .iter()
                .filter(|e| filter.matches(&SinkEvent::Host((*e).clone())))
                .cloned()
                .collect();
            let (rx, outcomes) =
                route(name.clone(), "alertmanager", None, filter, sink.queue, None);
            let am = alertmanager::Alertmanager::new(name, sink, checked, http_addr, outcomes)?;
            workers.push(tokio::spawn(am.run(rx, already_down)));
        }
        for (sink, checked) in sinks.email.iter().zip(&checked.email) {
            let name = checked.name.clone();
            let (filter, shaper) =
                shaped(&sink.events, &checked.hosts, sink.group_wait, sink.repeat);
            let (rx, outcomes) = route(name.clone(), "email", None, filter, sink.queue, shaper);
            let email = email::Email::new(&name, sink)?;
            workers.push(tokio::spawn(email.with_outcomes(outcomes).run(rx)));
        }
        let mass = &sinks.mass_silence;
        let gate = mass::Gate::new(mass::Settings {
            // Without sinks there is nobody to page, and nothing to hold.
            enabled: mass.enabled && !routes.is_empty(),
            share: mass.share,
            min_hosts: mass.min_hosts,
            window: mass.window.unwrap_or(config.timeout),
            hold: mass.hold,
        });
        let board = Arc::new(api::Board {
            entries: routes
                .iter()
                .map(|r| api::Entry {
                    name: r.name.clone(),
                    kind: r.kind,
                    preset: r.preset,
                    queue: r.queue.clone(),
                    outcomes: r.outcomes.clone(),
                })
                .collect(),
            api_token: config.api_token.clone(),
        });
        let (stop, stop_at) = oneshot::channel();
        let dispatcher = tokio::spawn(dispatch(events, gate, routes, metrics, handover, stop_at));
        Ok(Sinks {
            dispatcher,
            workers,
            board,
            stop,
        })
    }

    /// `GET /api/v1/sinks` and `POST /api/v1/test-alert`, to merge into the
    /// server's router.
    pub fn routes<S>(&self) -> axum::Router<S> {
        api::routes(self.board.clone())
    }

    /// Stops these sinks for a reload: they deliver every event numbered
    /// below `boundary` (the first one the new sinks receive, see
    /// `Fleet::subscribe_at`), then end within `drain`; `carry_tx` gets
    /// what the new sinks go on from.
    pub fn hand_over(self, boundary: u64, drain: Duration, carry_tx: oneshot::Sender<Carry>) {
        let _ = self.stop.send(boundary);
        // The API's handle holds queue senders: without it, the queues
        // close once the dispatcher ends.
        drop(self.board);
        let dispatcher = self.dispatcher;
        let workers = self.workers;
        tokio::spawn(async move {
            let carry = dispatcher.await.unwrap_or_default();
            let _ = carry_tx.send(carry);
            finish_workers(workers, Instant::now() + drain).await;
        });
    }

    /// Waits, at most `drain`, for the sinks to deliver what they hold once
    /// the event stream has closed; then stops them.
    pub async fn finish(self, drain: Duration) {
        // The API's handle holds queue senders: without it, queues close
        // once the dispatcher ends.
        drop(self.board);
        let deadline = Instant::now() + drain;
        // Dropped, not sent: the dispatcher runs until the stream closes.
        drop(self.stop);
        let _ = tokio::time::timeout_at(deadline, self.dispatcher).await;
        finish_workers(self.workers, deadline).await;
    }
}

async fn finish_workers(workers: Vec<JoinHandle<()>>, deadline: Instant) {
    for mut worker in workers {
        if tokio::time::timeout_at(deadline, &mut worker)
            .await
            .is_err()
        {
            tracing::warn!("a sink did not finish delivering in time; stopping it");
            worker.abort();
        }
    }
}

async fn dispatch(
    mut events: broadcast::Receiver<Event>,
    mut gate: mass::Gate,
    mut routes: Vec<Route>,
    metrics: Arc<Metrics>,
    handover: Option<oneshot::Receiver<Carry>>,
    mut stop_at: oneshot::Receiver<u64>,
) -> Carry {
    // The sinks this reload replaced deliver up to where this one begins:
    // their flapping hosts and what each sink was told go on from there.
    let Carry {
        mut flaps,
        mut told,
    } = match handover {
        Some(carry) => carry.await.unwrap_or_default(),
        None => Carry::default(),
    };
    for route in &mut routes {
        route.told = told.remove(&route.name).unwrap_or_default();
    }
    let (mut boundary, mut stop_done) = (None, false);
    loop {
        if routes.is_empty() {
            // Nothing to deliver to: wait only for the end or a hand-over.
            tokio::select! {
                at = &mut stop_at, if !stop_done => match at {
                    Ok(_) => break,
                    Err(_) => stop_done = true,
                },
                received = events.recv() => match received {
                    Err(broadcast::error::RecvError::Closed) => break,
                    _ => continue,
                },
            }
            continue;
        }
        let next = gate.next_release();
        let held = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let received = if let Some(boundary) = boundary {
            // Handing over: only what is already queued, below the boundary.
            match events.try_recv() {
                Ok(event) if event.id < boundary => Some(Ok(event)),
                Ok(_) | Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Some(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(broadcast::error::TryRecvError::Closed) => break,
            }
        } else {
            tokio::select! {
                received = events.recv() => Some(received),
                at = &mut stop_at, if !stop_done => {
                    // Dropped rather than sent: run until the stream closes.
                    stop_done = true;
                    boundary = at.ok();
                    None
                }
                _ = held => None,
            }
        };
        if let Some(received) = received {
            match received {
                Ok(event) => {
                    let Some(event) = flaps.pass(event) else {
                        continue; // a flapping host's page, held back
                    };
                    // The fleet's size when it happened: the event says.
                    let fleet = event.fleet;
                    let host = event.host.clone();
                    match gate.push(event, Instant::now(), fleet) {
                        mass::Outcome::Queued => {}
                        mass::Outcome::MassSilence(count) => {
                            metrics.mass_silences.inc();
                            metrics.pages_absorbed.inc_by(count as u64);
                        }
                        mass::Outcome::Joined => {
                            metrics.pages_absorbed.inc();
                        }
                        mass::Outcome::Absorbed => {
                            metrics.pages_absorbed.inc();
                            tracing::info!(host = %host, "down held for the storm's next mass-silence summary");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    for route in &routes {
                        route.outcomes.add(Delivery::Dropped, missed);
                    }
                    tracing::warn!(missed, "sinks fell behind the event stream; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        for event in gate.release(Instant::now()) {
            deliver(&mut routes, event);
        }
    }
    // The server is stopping (or handing over): held pages go out now
    // rather than never.
    for event in gate.drain() {
        deliver(&mut routes, event);
    }
    let told = routes.into_iter().map(|r| (r.name, r.told)).collect();
    Carry { flaps, told }
}

/// Holds back the pages of flapping hosts: between a host's `flapping` and
/// `settled` events its downs and recoveries reach no sink (they are still
/// on stdout and in the API). When it settles while down, the sinks get a
/// `down`, so the alert fires on the state it settled in.
#[derive(Default)]
struct Flaps {
    flapping: std::collections::HashSet<Arc<str>>,
}

impl Flaps {
    fn pass(&mut self, event: Event) -> Option<Event> {
        match event.kind {
            EventKind::Flapping => {
                self.flapping.insert(event.host.clone());
                Some(event)
            }
            EventKind::Settled => {
                self.flapping.remove(&event.host);
                // The state it settled in, as the event carries it.
                Some(if event.state == HostState::Down {
                    Event {
                        kind: EventKind::Down,
                        ..event
                    }
                } else {
                    event
                })
            }
            EventKind::Forgotten => {
                self.flapping.remove(&event.host);
                Some(event)
            }
            // Still flapping to the detector: the resolution goes out, and
            // its pages stay held until it settles.
            EventKind::Left | EventKind::Paused | EventKind::MaintenanceStarted => Some(event),
            _ if self.flapping.contains(&event.host) => None,
            _ => Some(event),
        }
    }
}

/// Checks what parsing the config cannot: secret files are read, templates
/// rendered on samples, addresses parsed. The server calls it before it
/// binds, so a bad sink is a one-line error at start.
pub fn check(sinks: &SinksConfig) -> Result<(), Error> {
    let names = sinks.names();
    let mut names = names.iter().skip(sinks.exec.len());
    for sink in &sinks.webhook {
        webhook::Compiled::new(names.next().expect("one name per sink"), sink)?;
    }
    let mut names = names.skip(sinks.alertmanager.len());
    for sink in &sinks.email {
        email::Email::new(names.next().expect("one name per sink"), sink)?;
    }
    Ok(())
}

/// The route filter and the digest/reminder stage of a sink. With `repeat`
/// the route takes every kind (the stage must see a host's recovery to stop
/// reminding) and the stage applies the sink's kinds.
fn shaped(
    events: &[String],
    hosts: &Selector,
    group_wait: Option<Duration>,
    repeat: Option<Duration>,
) -> (Filter, Option<digest::Shaper>) {
    let kinds = Filter::new(Some(events), hosts.clone());
    if group_wait.is_none() && repeat.is_none() {
        return (kinds, None);
    }
    let route = match repeat {
        Some(_) => Filter::new(None, hosts.clone()),
        None => kinds.clone(),
    };
    let shaper = digest::Shaper {
        group_wait,
        repeat,
        kinds,
    };
    (route, Some(shaper))
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

fn deliver(routes: &mut [Route], event: SinkEvent) {
    if let SinkEvent::MassSilence(m) = &event {
        let networks: Vec<String> = m
            .networks
            .iter()
            .map(|n| format!("{} ({})", n.network, n.hosts))
            .collect();
        tracing::warn!(
            count = m.count,
            fleet = m.fleet,
            networks = %networks.join(", "),
            "mass-silence: {} of {} hosts went down together",
            m.count,
            m.fleet
        );
    }
    for route in routes.iter_mut() {
        // A settle corrects a sink left believing the host down, whatever
        // kinds it asked for (see `truth`).
        if let SinkEvent::Host(e) = &event
            && route.filter.matches_host(&e.host)
            && let Some(fix) = route.told.correction(&event)
        {
            send(route, fix);
        }
        // A host relabeled while down: the sink that got its `down` gets
        // the end of it too, whatever labels it has now.
        if route.filter.matches(&event)
            || route.told.ends_told_down(&event) && route.filter.matches_but_labels(&event)
        {
            send(route, event.clone());
        }
    }
}

/// Queues `event` for one sink without waiting (a full queue drops it).
fn send(route: &mut Route, event: SinkEvent) {
    // Only what the sink was given counts as told (a dropped `recovered`
    // leaves it believing down, for the next settle to correct).
    match route.queue.try_send(event.clone()) {
        Ok(()) => route.told.delivered(&event),
        Err(mpsc::error::TrySendError::Full(_)) => {
            route.outcomes.add(Delivery::Dropped, 1);
            if let Some(suppressed) = route.full_log.check(std::time::Instant::now()) {
                tracing::warn!(
                    sink = %route.name,
                    suppressed,
                    "sink queue full: event dropped for this sink"
                );
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            route.outcomes.add(Delivery::Dropped, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_event(kind: EventKind, host: &str) -> SinkEvent {
        SinkEvent::Host(Event {
            id: 7,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            addr: SocketAddr::from(([192, 0, 2, 1], 4000)),
            silent_for: Duration::from_millis(1500),
            ..crate::monitor::testing::event(kind, host)
        })
    }

    #[test]
    fn a_flapping_hosts_pages_are_held_until_it_settles_in_its_state() {
        let event = |kind| match host_event(kind, "web-1") {
            SinkEvent::Host(e) => e,
            _ => unreachable!("a host event"),
        };
        let kinds = |e: Option<Event>| e.map(|e| e.kind);
        let in_state = |kind, state| Event {
            state,
            ..event(kind)
        };
        let mut flaps = Flaps::default();
        assert_eq!(
            kinds(flaps.pass(event(EventKind::Down))),
            Some(EventKind::Down)
        );
        assert_eq!(
            kinds(flaps.pass(event(EventKind::Flapping))),
            Some(EventKind::Flapping)
        );
        for held in [EventKind::Recovered, EventKind::Down, EventKind::Late] {
            assert_eq!(kinds(flaps.pass(event(held))), None, "{held:?}");
        }
        assert_eq!(
            kinds(flaps.pass(event(EventKind::Recovered))),
            None,
            "still flapping: still held"
        );
        // web-1 settled while down: settling pages it as down.
        assert_eq!(
            kinds(flaps.pass(in_state(EventKind::Settled, HostState::Down))),
            Some(EventKind::Down)
        );
        assert_eq!(
            kinds(flaps.pass(event(EventKind::Recovered))),
            Some(EventKind::Recovered),
            "after settling, pages flow again"
        );
        // Settled while up: the sinks get the `settled` itself.
        flaps.pass(event(EventKind::Flapping));
        assert_eq!(
            kinds(flaps.pass(in_state(EventKind::Settled, HostState::Up))),
            Some(EventKind::Settled)
        );
    }

    #[test]
    fn filters_on_kind_and_host_globs() {
        let kinds = ["down".to_string()];
        let globs = ["web-*".to_string(), "db-?".to_string()];
        let hosts = Selector::new(&globs, &Default::default(), &[]).expect("globs");
        let filter = Filter::new(Some(&kinds), hosts);
        assert!(filter.matches(&host_event(EventKind::Down, "web-1")));
        assert!(filter.matches(&host_event(EventKind::Down, "db-3")));
        assert!(!filter.matches(&host_event(EventKind::Down, "db-33")));
        assert!(!filter.matches(&host_event(EventKind::Recovered, "web-1")));
        let all = Filter::new(None, Selector::everything());
        assert!(all.matches(&host_event(EventKind::Late, "x")));
    }

    #[test]
    fn filters_on_labels() {
        let labels = |text| crate::labels::Labels::parse_list(text).expect("labels");
        let web = Filter::new(None, Selector::everything()).with_labels(&labels("team=web"));
        let labelled = |text| match host_event(EventKind::Down, "h") {
            SinkEvent::Host(e) => SinkEvent::Host(Event {
                labels: Arc::new(labels(text)),
                ..e
            }),
            other => other,
        };
        assert!(web.matches(&labelled("team=web,role=fe")));
        assert!(!web.matches(&labelled("team=db")));
        assert!(!web.matches(&labelled("")));
        assert!(Filter::new(None, Selector::everything()).matches(&labelled("team=db")));
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

    #[test]
    fn deliveries_count_under_their_metric_label() {
        let metrics = Metrics::default();
        let outcomes = Outcomes::new(&metrics, "s");
        outcomes.add(Delivery::Sent, 1);
        outcomes.add(Delivery::Failed, 2);
        outcomes.add(Delivery::Retried, 3);
        outcomes.add(Delivery::Dropped, 4);
        let text = metrics.encode();
        for (outcome, n) in [("sent", 1), ("failed", 2), ("retried", 3), ("dropped", 4)] {
            let line =
                format!("lubdub_sink_deliveries_total{{sink=\"s\",outcome=\"{outcome}\"}} {n}");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let full = (base * 2u32.pow(attempt.min(20))).min(max);
            let wait = backoff(base, max, attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_its_backoff_counts_and_stops_when_spent() {
        let metrics = Metrics::default();
        let outcomes = Outcomes::new(&metrics, "s");
        let retry = Retry {
            retries: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(150),
        };
        let retried = |n: u64| {
            let line =
                format!("lubdub_sink_deliveries_total{{sink=\"s\",outcome=\"retried\"}} {n}");
            metrics.encode().contains(&line)
        };
        // Each wait is the backoff (doubled, capped) shortened by at most half.
        for (attempt, full) in [(0, 100), (1, 150)] {
            let start = Instant::now();
            assert!(retry.wait("s", "503", attempt, &outcomes, 3).await);
            let waited = start.elapsed();
            let full = Duration::from_millis(full);
            assert!(
                waited >= full / 2 && waited <= full,
                "{attempt}: {waited:?}"
            );
        }
        assert!(retried(6));
        let start = Instant::now();
        assert!(!retry.wait("s", "503", 2, &outcomes, 3).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(retried(6));
    }
}
