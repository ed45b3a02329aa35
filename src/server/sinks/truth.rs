//! What each sink was last told about each host, so that no sink is left
//! believing a host is down when it is not.
//!
//! A flapping host's pages are held back until it settles (see `Flaps`), and
//! a sink may ask for only some kinds (`events = ["down"]`): either way it
//! can hear `down` and never the event that ended it. So when a host
//! settles, a sink whose last word on the host was `down` while the host is
//! not down gets the event that corrects it (`recovered`, or `left` /
//! `paused`), whatever kinds it asked for. Only hosts a sink believes down
//! are remembered, so the memory is bounded by the hosts down at once.

use super::SinkEvent;
use crate::monitor::{Event, EventKind, HostState};
use std::collections::HashSet;
use std::sync::Arc;

/// The hosts one sink was last told are down.
#[derive(Debug, Default)]
pub struct Told {
    down: HashSet<Arc<str>>,
}

impl Told {
    /// Records that the sink was given `event`.
    pub fn delivered(&mut self, event: &SinkEvent) {
        match event {
            SinkEvent::MassSilence(m) => self.down.extend(m.hosts.iter().cloned()),
            // Not about one host's state (a test alert, a digest, a
            // reminder of what is already down).
            SinkEvent::Test(_) | SinkEvent::Digest(_) | SinkEvent::Reminder(_) => {}
            SinkEvent::Host(e) if e.kind == EventKind::Down => {
                self.down.insert(e.host.clone());
            }
            SinkEvent::Host(e) if ends_down(e) => {
                self.down.remove(&e.host);
            }
            SinkEvent::Host(_) => {}
        }
    }

    /// True when `event` ends a `down` this sink was told of. The sink
    /// takes it whatever labels the host has now: they may have changed
    /// while it was down, and its label filter must not keep it from
    /// hearing the end of an alert it raised.
    pub fn ends_told_down(&self, event: &SinkEvent) -> bool {
        matches!(event, SinkEvent::Host(e) if ends_down(e) && self.down.contains(&e.host))
    }

    /// The event that corrects the sink's view of a host that just
    /// settled (`event`), if its last word on it was `down` and the host is
    /// not down. The caller sends it before `event` itself.
    pub fn correction(&self, event: &SinkEvent) -> Option<SinkEvent> {
        let SinkEvent::Host(e) = event else {
            return None;
        };
        if e.kind != EventKind::Settled || !self.down.contains(&e.host) {
            return None;
        }
        let kind = match e.state {
            HostState::Up | HostState::Late => EventKind::Recovered,
            HostState::Left => EventKind::Left,
            HostState::Paused => EventKind::Paused,
            HostState::Maintenance => EventKind::MaintenanceStarted,
            HostState::Down | HostState::Unreachable => return None,
        };
        Some(SinkEvent::Host(Event { kind, ..e.clone() }))
    }
}

/// True when host event `e` says the host is no longer down (back,
/// gone, paused, ...).
fn ends_down(e: &Event) -> bool {
    match e.kind {
        // None of them says the host is back or gone.
        EventKind::Down | EventKind::Late | EventKind::Flapping | EventKind::MonitorStarted => {
            false
        }
        EventKind::Settled => e.state != HostState::Down,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::event;

    fn host(kind: EventKind, state: HostState) -> SinkEvent {
        SinkEvent::Host(Event {
            state,
            ..event(kind, "web-1")
        })
    }

    #[test]
    fn a_sink_told_down_hears_the_state_a_host_settles_in() {
        let settled_up = host(EventKind::Settled, HostState::Up);
        let mut told = Told::default();
        assert!(told.correction(&settled_up).is_none(), "never told down");
        told.delivered(&host(EventKind::Down, HostState::Down));
        told.delivered(&host(EventKind::Flapping, HostState::Down));
        let fix = told.correction(&settled_up).expect("told down, now up");
        assert_eq!(fix.kind(), "recovered");
        for (state, kind) in [(HostState::Left, "left"), (HostState::Paused, "paused")] {
            let fix = told.correction(&host(EventKind::Settled, state));
            assert_eq!(fix.map(|f| f.kind()), Some(kind));
        }
        assert!(
            told.correction(&host(EventKind::Settled, HostState::Down))
                .is_none(),
            "settled down: it was right"
        );
        assert!(
            told.correction(&host(EventKind::Recovered, HostState::Up))
                .is_none(),
            "only a settle corrects"
        );
        told.delivered(&fix);
        assert!(told.correction(&settled_up).is_none(), "told up since");
    }
}
