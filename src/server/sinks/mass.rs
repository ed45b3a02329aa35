//! Mass-silence detection: the gate between the event stream and the sinks.
//!
//! Pure (takes `now`). Each `down` is held for `hold` before it is released
//! to the sinks. If, meanwhile, enough hosts go down within `window`
//! (`share` of the fleet, at least `min_hosts`), the held downs are taken
//! back and replaced by one [`MassSilence`]; further downs are absorbed
//! until a whole window passes without one. Other events are never held on
//! their own, but wait behind a held `down` so that each host's events reach
//! the sinks in order.

use super::{MassSilence, Network, SinkEvent};
use crate::monitor::{Event, EventKind};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The gate's settings, resolved (window known).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Off: events pass straight through.
    pub enabled: bool,
    /// Share of the fleet.
    pub share: f64,
    /// Fewest hosts.
    pub min_hosts: usize,
    /// Window the downs must fall in.
    pub window: Duration,
    /// How long a `down` is held.
    pub hold: Duration,
}

/// The gate.
pub struct Gate {
    settings: Settings,
    /// Events in arrival order with the time each may be released.
    queue: VecDeque<(Instant, Item)>,
    /// Downs seen within the last `window`.
    recent: VecDeque<(Instant, Event)>,
    /// The downs of a mass silence not yet released (its place in the
    /// queue is an [`Item::Mass`]): later downs join it until it goes out.
    pending: Vec<Event>,
    /// Fleet size when the mass silence was last joined.
    pending_fleet: usize,
    /// While a mass silence lasts (until a window without a new down),
    /// further downs are absorbed.
    storm_until: Option<Instant>,
}

enum Item {
    Event(SinkEvent),
    /// Where the pending mass silence goes out.
    Mass,
}

/// What the gate did with an event.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Held for its page, or passed on (not a down, or gate off).
    Queued,
    /// Made a mass silence of this many hosts (it goes out when the
    /// earliest of them would have).
    MassSilence(usize),
    /// Joined the mass silence about to go out.
    Joined,
    /// Absorbed by the mass silence already sent.
    Absorbed,
}

impl Gate {
    /// An empty gate.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            queue: VecDeque::new(),
            recent: VecDeque::new(),
            pending: Vec::new(),
            pending_fleet: 0,
            storm_until: None,
        }
    }

    /// Takes one event from the stream; `fleet` is how many hosts are known.
    pub fn push(&mut self, event: Event, now: Instant, fleet: usize) -> Outcome {
        if !self.settings.enabled || event.kind != EventKind::Down {
            self.queue
                .push_back((now, Item::Event(SinkEvent::Host(event))));
            return Outcome::Queued;
        }
        let window = self.settings.window;
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.recent.pop_front();
        }
        if self.storm_until.is_some_and(|until| now < until) {
            self.storm_until = Some(now + window);
            return if self.has_pending() {
                self.pending.push(event);
                self.pending_fleet = fleet;
                Outcome::Joined
            } else {
                Outcome::Absorbed
            };
        }
        self.storm_until = None;
        self.recent.push_back((now, event.clone()));
        let threshold = self
            .settings
            .min_hosts
            .max((self.settings.share * fleet as f64).ceil() as usize);
        if self.recent.len() < threshold {
            // A fleet smaller than the threshold can never make a mass
            // silence: nothing to wait for.
            let hold = if threshold > fleet {
                Duration::ZERO
            } else {
                self.settings.hold
            };
            self.queue
                .push_back((now + hold, Item::Event(SinkEvent::Host(event))));
            return Outcome::Queued;
        }
        // A mass silence: take back the downs still held; one page goes out
        // in the place (and at the time) of the earliest of them.
        let downs: Vec<Event> = self.recent.drain(..).map(|(_, e)| e).collect();
        let held = |item: &Item| {
            matches!(item, Item::Event(SinkEvent::Host(e))
                if e.kind == EventKind::Down && downs.iter().any(|d| d.id == e.id))
        };
        let place = self.queue.iter().position(|(_, item)| held(item));
        let release = place.map_or(now, |i| self.queue[i].0);
        self.queue.retain(|(_, item)| !held(item));
        let place = place.unwrap_or(self.queue.len()).min(self.queue.len());
        self.queue.insert(place, (release, Item::Mass));
        let count = downs.len();
        self.pending = downs;
        self.pending_fleet = fleet;
        self.storm_until = Some(now + window);
        Outcome::MassSilence(count)
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the next held event is due, if one is waiting.
    pub fn next_release(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    /// Events due at `now`, in order.
    pub fn release(&mut self, now: Instant) -> Vec<SinkEvent> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, item)) = self.queue.pop_front() {
                out.push(self.take(item));
            }
        }
        out
    }

    /// Everything still held (at shutdown: deliver rather than lose).
    pub fn drain(&mut self) -> Vec<SinkEvent> {
        let items: Vec<Item> = self.queue.drain(..).map(|(_, item)| item).collect();
        items.into_iter().map(|item| self.take(item)).collect()
    }

    fn take(&mut self, item: Item) -> SinkEvent {
        match item {
            Item::Event(event) => event,
            Item::Mass => {
                let downs = std::mem::take(&mut self.pending);
                SinkEvent::MassSilence(Arc::new(mass_silence(
                    downs,
                    self.pending_fleet,
                    self.settings.window,
                )))
            }
        }
    }
}

fn mass_silence(downs: Vec<Event>, fleet: usize, window: Duration) -> MassSilence {
    let at = downs
        .iter()
        .map(|e| e.at)
        .min()
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut networks: BTreeMap<String, usize> = BTreeMap::new();
    for down in &downs {
        *networks.entry(network_of(down.addr.ip())).or_default() += 1;
    }
    let mut networks: Vec<Network> = networks
        .into_iter()
        .map(|(network, hosts)| Network { network, hosts })
        .collect();
    networks.sort_by(|a, b| b.hosts.cmp(&a.hosts).then(a.network.cmp(&b.network)));
    let mut hosts: Vec<Arc<str>> = downs.into_iter().map(|e| e.host).collect();
    hosts.sort();
    MassSilence {
        at,
        count: hosts.len(),
        fleet,
        window,
        hosts,
        networks,
    }
}

/// The /24 of an IPv4 address, the /64 of an IPv6 one (IPv4-mapped IPv6
/// counts as IPv4: that is what a dual-stack socket reports).
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            network_of(IpAddr::V4(v6.to_ipv4_mapped().expect("checked")))
        }
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    fn settings() -> Settings {
        Settings {
            enabled: true,
            share: 0.3,
            min_hosts: 3,
            window: Duration::from_secs(30),
            hold: Duration::from_secs(10),
        }
    }

    fn ev(id: u64, kind: EventKind, host: &str, ip: [u8; 4]) -> Event {
        Event {
            id,
            at: SystemTime::UNIX_EPOCH,
            addr: SocketAddr::from((ip, 4000)),
            silent_for: Duration::from_secs(30),
            ..crate::monitor::testing::event(kind, host)
        }
    }

    fn names(out: &[SinkEvent]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                SinkEvent::Host(e) => format!("{} {}", e.kind.as_str(), e.host),
                SinkEvent::MassSilence(m) => format!("mass-silence {}", m.count),
                other => other.kind().to_string(),
            })
            .collect()
    }

    #[test]
    fn a_lone_down_is_held_then_released_and_keeps_order() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        gate.push(ev(1, EventKind::Down, "a", [10, 0, 0, 1]), t0, 100);
        gate.push(ev(2, EventKind::Recovered, "a", [10, 0, 0, 1]), t0, 100);
        assert!(gate.release(t0).is_empty(), "the recovery waits behind");
        assert_eq!(gate.next_release(), Some(t0 + Duration::from_secs(10)));
        let out = gate.release(t0 + Duration::from_secs(10));
        assert_eq!(names(&out), ["down a", "recovered a"]);
        assert_eq!(gate.next_release(), None);
    }

    #[test]
    fn a_fleet_below_the_threshold_is_paged_at_once() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        // min_hosts 3, fleet 2: no mass silence is possible.
        gate.push(ev(1, EventKind::Down, "a", [10, 0, 0, 1]), t0, 2);
        assert_eq!(names(&gate.release(t0)), ["down a"]);
    }

    #[test]
    fn other_events_pass_at_once() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        gate.push(ev(1, EventKind::Joined, "a", [10, 0, 0, 1]), t0, 1);
        assert_eq!(names(&gate.release(t0)), ["joined a"]);
    }

    #[test]
    fn many_downs_become_one_mass_silence() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        // 20 hosts: threshold max(3, 30 % of 20) = 6.
        let mut outcomes = Vec::new();
        for i in 0..8u8 {
            let net = if i < 5 { [10, 0, 1, i] } else { [10, 0, 2, i] };
            let at = t0 + Duration::from_millis(u64::from(i) * 100);
            outcomes.push(gate.push(
                ev(u64::from(i), EventKind::Down, &format!("h{i}"), net),
                at,
                20,
            ));
        }
        assert_eq!(outcomes[4], Outcome::Queued);
        assert_eq!(outcomes[5], Outcome::MassSilence(6));
        assert_eq!(outcomes[6..], [Outcome::Joined, Outcome::Joined]);
        // It goes out when the first down would have, with all 8.
        assert!(gate.release(t0 + Duration::from_millis(9_999)).is_empty());
        assert_eq!(gate.next_release(), Some(t0 + Duration::from_secs(10)));
        let out = gate.release(t0 + Duration::from_secs(10));
        assert_eq!(names(&out), ["mass-silence 8"]);
        let SinkEvent::MassSilence(mass) = &out[0] else {
            panic!("mass silence")
        };
        assert_eq!(mass.fleet, 20);
        assert_eq!(
            mass.networks,
            [
                Network {
                    network: "10.0.1.0/24".into(),
                    hosts: 5
                },
                Network {
                    network: "10.0.2.0/24".into(),
                    hosts: 3
                }
            ]
        );
        // After it went out, more downs in the storm are absorbed.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(
            gate.push(ev(50, EventKind::Down, "h50", [10, 0, 3, 1]), t1, 20),
            Outcome::Absorbed
        );
        // A window later, a lone down is a page again.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            gate.push(ev(99, EventKind::Down, "z", [10, 9, 9, 9]), later, 20),
            Outcome::Queued
        );
    }

    #[test]
    fn downs_spread_wider_than_the_window_stay_pages() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        for i in 0..5u64 {
            let at = t0 + Duration::from_secs(31 * i);
            let out = gate.push(
                ev(i, EventKind::Down, &format!("h{i}"), [10, 0, 0, 1]),
                at,
                10,
            );
            assert_eq!(out, Outcome::Queued);
        }
        assert_eq!(gate.drain().len(), 5);
    }

    #[test]
    fn disabled_gate_passes_downs_at_once() {
        let mut gate = Gate::new(Settings {
            enabled: false,
            ..settings()
        });
        let t0 = Instant::now();
        gate.push(ev(1, EventKind::Down, "a", [10, 0, 0, 1]), t0, 1);
        assert_eq!(names(&gate.release(t0)), ["down a"]);
    }

    #[test]
    fn networks_are_24s_and_64s() {
        assert_eq!(
            network_of("192.0.2.77".parse().expect("ip")),
            "192.0.2.0/24"
        );
        assert_eq!(
            network_of("::ffff:192.0.2.77".parse().expect("ip")),
            "192.0.2.0/24"
        );
        assert_eq!(
            network_of("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
    }
}
