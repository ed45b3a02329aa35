//! The core's one test kit: a simulated monitor on injected time ([`Sim`]),
//! a beat ([`beat`]), a host record ([`host`]) and an event ([`event`]).
//! Every unit test of the core, and the server's tests that need a beat or
//! an event, use these instead of writing their own.

use super::phi::PhiParams;
use super::stats::{BeatStats, alpha_for_window};
use super::{
    DetectorKind, Event, EventKind, Host, HostState, Monitor, Observation, Outcome, Rule, Rules,
    Settings,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// The server's timeout in these tests (the documented default).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The phi parameters of `[server.phi]`'s documented defaults.
pub fn phi_params() -> PhiParams {
    PhiParams {
        threshold: 10.0,
        late_threshold: 3.0,
        min_std_ms: 100.0,
        pause_ms: 0.0,
        min_loss: 0.01,
    }
}

/// Settings with one rule of `kind`: timeout [`TIMEOUT`], late at half of
/// it, flapping at 3 downs in 10 minutes, no keys.
pub fn settings_of(kind: DetectorKind) -> Settings {
    Settings {
        timeout: TIMEOUT,
        late_ratio: 0.5,
        rules: Rules::single(Rule {
            kind,
            timeout: TIMEOUT,
            phi: phi_params(),
            alpha: alpha_for_window(1000),
        }),
        flap_window: Duration::from_secs(600),
        flap_threshold: 3,
        max_hosts: 2_000_000,
        enforce_seq: false,
        probe: super::probe::ProbeSettings::default(),
    }
}

/// [`settings_of`] the fixed detector.
pub fn settings() -> Settings {
    settings_of(DetectorKind::Fixed)
}

/// A v1 beat of `id`: seq 1, boot id all ones, a declared 10 s interval,
/// from 10.0.0.1:5000. Tests change what they need with `..beat(id)`.
pub fn beat(id: &str) -> Observation<'_> {
    Observation {
        host_id: id,
        addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
        seq: Some(1),
        boot_id: [1; 16],
        interval_ms: 10_000,
        goodbye: false,
        sent_at_micros: 0,
        answers_probes: false,
        answers: None,
    }
}

/// A host record, `up`, last seen at clock time 0, beating every second.
pub fn host() -> Host {
    Host::new(
        HostState::Up,
        SystemTime::UNIX_EPOCH,
        0,
        BeatStats::new(1000.0),
    )
}

/// An event of `kind` about `host` at 2023-11-14T22:13:20.123Z, from
/// 127.0.0.1:4000, 1.5 s silent, in the state `kind` leads to.
pub fn event(kind: EventKind, host: &str) -> Event {
    Event {
        id: 0,
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        kind,
        host: host.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
        silent_for: Duration::from_millis(1500),
        silent_at_least: None,
        state: kind.state_after(),
        flapping: false,
        fleet: 1,
        context: None,
        labels: Default::default(),
        maintenance: None,
    }
}

/// Drives a monitor on injected time: no clock, no sleeps. Times are
/// seconds since the monitor started.
pub struct Sim {
    /// The monitor under test.
    pub monitor: Monitor,
    /// Its start.
    pub start: Instant,
}

impl Default for Sim {
    fn default() -> Self {
        Self::with(settings())
    }
}

impl Sim {
    /// A fixed-timeout monitor with [`settings`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A monitor with `settings`.
    pub fn with(settings: Settings) -> Self {
        let start = Instant::now();
        Self {
            monitor: Monitor::new(settings, start, SystemTime::now()),
            start,
        }
    }

    /// The instant `secs` after the start.
    pub fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs)
    }

    /// Applies `beat` at `secs`; the events it caused.
    pub fn observe(&mut self, secs: f64, beat: Observation<'_>) -> Vec<(EventKind, String)> {
        let mut out = Outcome::default();
        self.monitor
            .observe(&beat, self.at(secs), SystemTime::now(), &mut out);
        kinds(out.events)
    }

    /// Expires the deadlines up to `secs`; the events that caused.
    pub fn expire(&mut self, secs: f64) -> Vec<(EventKind, String)> {
        kinds(self.expire_at(self.at(secs)).events)
    }

    /// Expires the deadlines up to `at`; the whole outcome.
    pub fn expire_at(&mut self, at: Instant) -> Outcome {
        let mut out = Outcome::default();
        self.monitor.expire(at, SystemTime::now(), &mut out);
        out
    }

    /// The record of host `id`.
    pub fn host(&self, id: &str) -> &Host {
        let registry = self.monitor.registry();
        registry.get(registry.find(id).expect("known host"))
    }

    /// The state of host `id`.
    pub fn state(&self, id: &str) -> HostState {
        self.host(id).state
    }
}

/// Events as (kind, host) pairs, for comparing.
pub fn kinds(events: Vec<Event>) -> Vec<(EventKind, String)> {
    events
        .into_iter()
        .map(|e| (e.kind, e.host.to_string()))
        .collect()
}

/// One (kind, host) pair, as [`kinds`] lists them.
pub fn one(kind: EventKind, host: &str) -> Vec<(EventKind, String)> {
    vec![(kind, host.to_string())]
}
