//! The core's vocabulary: the states a host is in and the events that
//! move it between them. Plain data, shared by every layer above (the
//! server's event log, the store, the sinks, the API).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The state vocabulary of DESIGN.md, used in code, JSON and output alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostState {
    /// Beating on time.
    Up,
    /// Silent past the warning time, not yet past its timeout.
    Late,
    /// Silent past its timeout.
    Down,
    /// Said goodbye: stopped cleanly, not an outage.
    Left,
    /// Paused by an operator (maintenance): raises no alarms until resumed.
    Paused,
    /// Silent while a host or group it depends on is `down`: no page of its
    /// own (the parent's `down` names it).
    Unreachable,
    /// In a maintenance window: silent without alarm until the window ends.
    Maintenance,
}

impl HostState {
    /// The name used in output, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Late => "late",
            HostState::Down => "down",
            HostState::Left => "left",
            HostState::Paused => "paused",
            HostState::Unreachable => "unreachable",
            HostState::Maintenance => "maintenance",
        }
    }

    /// Every state, in the order of [`HostState::index`].
    pub const ALL: [HostState; 7] = [
        HostState::Up,
        HostState::Late,
        HostState::Down,
        HostState::Left,
        HostState::Paused,
        HostState::Unreachable,
        HostState::Maintenance,
    ];

    /// A dense index (0..[`HostState::ALL`].len()), for per-state counts.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses [`HostState::as_str`]'s names back.
    pub fn parse(name: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

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
    /// Silent past its timeout while a host or group it depends on is
    /// `down` (or went down while it was late): no page of its own.
    Unreachable,
    /// A group has fewer members `up` than its quorum. Its host is the
    /// group's name; [`Event::context`] names the missing members.
    GroupDown,
    /// A `down` group has its quorum again.
    GroupRecovered,
    /// A maintenance window began for the host (resolves alerts).
    MaintenanceStarted,
    /// Its maintenance window ended: `up`, with a fresh timeout.
    MaintenanceEnded,
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
            EventKind::Unreachable => "unreachable",
            EventKind::GroupDown => "group-down",
            EventKind::GroupRecovered => "group-recovered",
            EventKind::MaintenanceStarted => "maintenance-started",
            EventKind::MaintenanceEnded => "maintenance-ended",
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
            EventKind::Unreachable => HostState::Unreachable,
            // The group's state, in the host vocabulary.
            EventKind::GroupDown => HostState::Down,
            EventKind::GroupRecovered => HostState::Up,
            EventKind::MaintenanceStarted => HostState::Maintenance,
            EventKind::MaintenanceEnded => HostState::Up,
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 17] = [
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
        EventKind::Unreachable,
        EventKind::GroupDown,
        EventKind::GroupRecovered,
        EventKind::MaintenanceStarted,
        EventKind::MaintenanceEnded,
    ];

    /// True for the kinds about a group, not a host.
    pub fn is_group(self) -> bool {
        matches!(self, EventKind::GroupDown | EventKind::GroupRecovered)
    }

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
    /// Set when the silence is known only within bounds: the host was not
    /// heard since the server restarted, and may have beaten unheard after
    /// the server's latest checkpoint or while it was away. Its true
    /// silence is then at least this (since the restart) and at most
    /// `silent_for` (since its latest recorded beat).
    pub silent_at_least: Option<Duration>,
    /// The host's state right after this event (a `settled` host may still
    /// be `down`; a `forgotten` one keeps the state it was forgotten in), so
    /// that a consumer never asks the monitor.
    pub state: HostState,
    /// Whether the host is flapping right after this event.
    pub flapping: bool,
    /// How many hosts the monitor knew when this happened (mass-silence
    /// detection compares the downs with it).
    pub fleet: usize,
    /// What groups and dependencies add (a parent, the hosts unreachable
    /// behind a `down`, a group's missing members); `None` for hosts in
    /// no group and no dependency.
    pub context: Option<Arc<super::context::Context>>,
    /// The host's effective labels at the time (shared with the monitor's
    /// label table: no copy per event).
    pub labels: Arc<crate::labels::Labels>,
    /// The window of a `maintenance-started` or `maintenance-ended` event:
    /// who opened it, why, until when.
    pub maintenance: Option<Arc<super::maintenance::Note>>,
}

impl Event {
    /// An event of `kind` about `host` at `at`, with nothing else known:
    /// no id yet (publishing numbers it), the unspecified address, no
    /// silence, the state `kind` leads to, not flapping, no fleet, no
    /// context, no labels, no maintenance window. Callers set what they
    /// know with `Event { addr, .., ..Event::new(kind, host, at) }`.
    pub fn new(kind: EventKind, host: Arc<str>, at: SystemTime) -> Event {
        Event {
            id: 0,
            at,
            kind,
            host,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            silent_for: Duration::ZERO,
            silent_at_least: None,
            state: kind.state_after(),
            flapping: false,
            fleet: 0,
            context: None,
            labels: no_labels(),
            maintenance: None,
        }
    }
}

/// The empty label set, shared: an event without labels costs a reference
/// count, not an allocation (the monitor replaces it with the host's own).
fn no_labels() -> Arc<crate::labels::Labels> {
    static EMPTY: std::sync::OnceLock<Arc<crate::labels::Labels>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Default::default).clone()
}

impl fmt::Display for Event {
    /// The console line: time, event, host id, address, silence (as
    /// `silent=LOW..HIGH` when known only within bounds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<9} {} addr={} silent=",
            humantime::format_rfc3339_millis(self.at),
            self.kind.as_str(),
            self.host,
            self.addr,
        )?;
        if let Some(low) = self.silent_at_least {
            write!(f, "{:.3}s..", low.as_secs_f64())?;
        }
        write!(f, "{:.3}s", self.silent_for.as_secs_f64())?;
        match &self.context {
            Some(context) => write!(f, "{context}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::monitor::testing::event;

    #[test]
    fn console_line_has_time_kind_host_addr_and_silence() {
        assert_eq!(
            event(EventKind::Down, "web-1").to_string(),
            "2023-11-14T22:13:20.123Z down      web-1 addr=127.0.0.1:4000 silent=1.500s"
        );
    }

    #[test]
    fn kind_indexes_match_the_list() {
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.as_str());
        }
    }
    #[test]
    fn state_indexes_match_the_list_and_names_parse_back() {
        for (i, state) in HostState::ALL.into_iter().enumerate() {
            assert_eq!(state.index(), i);
            assert_eq!(HostState::parse(state.as_str()), Some(state));
        }
        assert_eq!(HostState::parse("sleepy"), None);
    }
}
