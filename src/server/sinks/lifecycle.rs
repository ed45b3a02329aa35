//! Starting the sinks ([`check`] first refuses what the config cannot),
//! and stopping them: at shutdown, or handing over to the sinks of a
//! reload.

use super::delivery::Outcomes;
use super::dispatch::{self, Carry};
use super::filter::Filter;
use super::{Error, SinkEvent, SinksConfig};
use super::{alertmanager, api, digest, email, exec, mass, presets, truth, webhook};
use crate::config::ValidServerConfig;
use crate::monitor::Event;
use crate::ratelimit::RateLimit;
use crate::select::Selector;
use crate::server::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The running sinks.
pub struct Sinks {
    dispatcher: JoinHandle<Carry>,
    workers: Vec<JoinHandle<()>>,
    board: Arc<api::Board>,
    /// Stops the dispatcher at an event id (a reload hands over there).
    stop: oneshot::Sender<u64>,
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
            routes.push(dispatch::Route {
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
        let dispatcher = tokio::spawn(dispatch::dispatch(
            events, gate, routes, metrics, handover, stop_at,
        ));
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
