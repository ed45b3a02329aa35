//! The dispatcher: one task that takes the event broadcast, holds back
//! flapping hosts' pages ([`Flaps`]), folds storms of downs through the
//! [`mass::Gate`], and queues each released event for every sink whose
//! filter takes it, never waiting on a sink.

use super::delivery::{Delivery, Outcomes};
use super::filter::Filter;
use super::{SinkEvent, mass, truth};
use crate::monitor::{Event, EventKind, HostState};
use crate::ratelimit::RateLimit;
use crate::server::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// One sink as the dispatcher sees it: its filter, its queue, and what it
/// was told.
pub(super) struct Route {
    pub(super) name: String,
    pub(super) kind: &'static str,
    pub(super) preset: Option<&'static str>,
    pub(super) filter: Filter,
    pub(super) queue: mpsc::Sender<SinkEvent>,
    pub(super) outcomes: Outcomes,
    pub(super) full_log: RateLimit,
    pub(super) told: truth::Told,
}

/// What the dispatcher knows that the sinks of a reload must go on from:
/// which hosts are flapping, and what each sink (by name) was told.
#[derive(Default)]
pub struct Carry {
    flaps: Flaps,
    told: std::collections::HashMap<String, truth::Told>,
}

/// Runs the dispatcher until the event stream closes, or until it has
/// delivered what came before the event `stop_at` names (a reload hands
/// over there); returns what the next sinks go on from.
pub(super) async fn dispatch(
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
    use super::super::tests::host_event;
    use super::*;

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
}
