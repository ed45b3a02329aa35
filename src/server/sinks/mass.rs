//! Mass-silence detection: the gate between the event stream and the sinks.
//!
//! Pure (takes `now`). Each `down` is held for `hold` before it is released
//! to the sinks. If, meanwhile, enough hosts go down within `window`
//! (`share` of the fleet, at least `min_hosts`), the held downs are taken
//! back and replaced by one [`MassSilence`]. Only downs still held count: a
//! page already sent cannot be taken back, and counting it would page its
//! host twice (alone, then in the summary).
//!
//! The storm that follows lasts one `window` from the mass silence, never
//! longer: downs in it are gathered into the storm's next summary (another
//! mass silence), which goes out `hold` after the first of them, so a
//! trickle of downs (made-up hosts, or churn in a big fleet) can neither
//! prolong the storm nor keep a real `down` from the sinks (issue 13).
//! Other events are never held on their own, but wait behind a held `down`
//! or summary so that each host's events reach the sinks in order.

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
    /// Downs still held (not paged yet) that went down within the last
    /// `window`, oldest first: what a mass silence counts.
    recent: VecDeque<(Instant, Event)>,
    /// The downs of each mass silence or summary not yet released, in the
    /// order of their [`Item::Mass`] in the queue.
    pending: VecDeque<Batch>,
    /// The last of `pending` still takes the storm's downs.
    open: bool,
    /// The end of the storm: one window after its mass silence.
    storm_until: Option<Instant>,
}

/// The downs of one mass silence (or storm summary), and the fleet size
/// when the last of them joined.
struct Batch {
    downs: Vec<Event>,
    fleet: usize,
}

enum Item {
    Event(SinkEvent),
    /// Where the next of `pending` goes out.
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
    /// Joined the mass silence, or the storm's summary, about to go out.
    Joined,
    /// In a storm whose mass silence went out: starts the storm's next
    /// summary, which goes out after `hold`.
    Absorbed,
}

impl Gate {
    /// An empty gate.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            queue: VecDeque::new(),
            recent: VecDeque::new(),
            pending: VecDeque::new(),
            open: false,
            storm_until: None,
        }
    }

    /// Takes one event from the stream; `fleet` is how many hosts are known.
    pub fn push(&mut self, event: Event, now: Instant, fleet: usize) -> Outcome {
        // A declared host's down (in a group, behind a parent, or a parent
        // itself) is already explained by what the operator declared: the
        // gate's guess is for the rest (docs/GROUPS.md).
        let declared = event.context.as_ref().is_some_and(|c| c.declared);
        if !self.settings.enabled || event.kind != EventKind::Down || declared {
            self.queue
                .push_back((now, Item::Event(SinkEvent::Host(event))));
            return Outcome::Queued;
        }
        let Settings { window, hold, .. } = self.settings;
        // Released (paged) or out of the window: no longer counted. Every
        // entry was held `hold`, so both fall in arrival order.
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window || *at + hold <= now)
        {
            self.recent.pop_front();
        }
        if let Some(until) = self.storm_until {
            if now < until {
                return match self.pending.back_mut() {
                    Some(batch) if self.open => {
                        batch.downs.push(event);
                        batch.fleet = fleet;
                        Outcome::Joined
                    }
                    _ => {
                        self.pending.push_back(Batch {
                            downs: vec![event],
                            fleet,
                        });
                        self.open = true;
                        self.queue.push_back((now + hold, Item::Mass));
                        Outcome::Absorbed
                    }
                };
            }
            // Over: what it still holds goes out as it is.
            self.storm_until = None;
            self.open = false;
        }
        let threshold = self
            .settings
            .min_hosts
            .max((self.settings.share * fleet as f64).ceil() as usize);
        if threshold > fleet {
            // A fleet smaller than the threshold can never make a mass
            // silence: nothing to wait for.
            self.queue
                .push_back((now, Item::Event(SinkEvent::Host(event))));
            return Outcome::Queued;
        }
        self.recent.push_back((now, event.clone()));
        if self.recent.len() < threshold {
            self.queue
                .push_back((now + hold, Item::Event(SinkEvent::Host(event))));
            return Outcome::Queued;
        }
        // A mass silence: take back the downs still held; one page goes out
        // in the place (and at the time) of the earliest of them. Every
        // older summary in the queue came before them (it was made during
        // an earlier storm), so the pending batches stay in queue order.
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
        self.pending.push_back(Batch { downs, fleet });
        self.open = true;
        self.storm_until = Some(now + window);
        Outcome::MassSilence(count)
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
                let batch = self.pending.pop_front().expect("a batch per mass item");
                if self.pending.is_empty() {
                    // The open batch went out: the storm's next down
                    // starts another.
                    self.open = false;
                }
                SinkEvent::MassSilence(Arc::new(mass_silence(
                    batch.downs,
                    batch.fleet,
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
    fn what_cannot_be_a_mass_silence_passes_at_once() {
        let disabled = Settings {
            enabled: false,
            ..settings()
        };
        // (settings, kind, fleet size, what is released at once)
        let cases = [
            // min_hosts 3, fleet 2: no mass silence is possible.
            (settings(), EventKind::Down, 2, "down a"),
            (settings(), EventKind::Joined, 1, "joined a"),
            // Disabled: even a down in a fleet large enough is not held.
            (disabled, EventKind::Down, 100, "down a"),
        ];
        for (settings, kind, fleet, released) in cases {
            let mut gate = Gate::new(settings);
            let t0 = Instant::now();
            gate.push(ev(1, kind, "a", [10, 0, 0, 1]), t0, fleet);
            assert_eq!(
                names(&gate.release(t0)),
                [released],
                "{kind:?}, fleet {fleet}"
            );
        }
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

    /// Pushes `downs` ((seconds after `t0`, host), in order) into `gate`,
    /// releasing what falls due exactly when it does (as the dispatcher
    /// sleeps until `next_release`), up to `until`. Returns each release as
    /// (seconds, "down HOST" or "mass-silence HOST HOST …").
    fn drive(
        gate: &mut Gate,
        t0: Instant,
        downs: &[(f64, String)],
        until: f64,
    ) -> Vec<(f64, String)> {
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut out = Vec::new();
        let mut release_until = |gate: &mut Gate, now: Instant| {
            while let Some(due) = gate.next_release().filter(|due| *due <= now) {
                for event in gate.release(due) {
                    let name = match &event {
                        SinkEvent::Host(e) => format!("{} {}", e.kind.as_str(), e.host),
                        SinkEvent::MassSilence(m) => format!("mass-silence {}", m.hosts.join(" ")),
                        other => other.kind().to_string(),
                    };
                    out.push((due.duration_since(t0).as_secs_f64(), name));
                }
            }
        };
        for (i, (secs, host)) in downs.iter().enumerate() {
            release_until(gate, at(*secs));
            gate.push(
                ev(i as u64, EventKind::Down, host, [10, 0, 0, 1]),
                at(*secs),
                20,
            );
        }
        release_until(gate, at(until));
        out
    }

    // See: issue 13, item 1.
    #[test]
    fn a_trickle_of_downs_neither_prolongs_the_storm_nor_hides_a_down() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        // Six hosts at once: a mass silence (threshold 6 of 20), declared
        // at 0.5 s, so the storm ends at 30.5 s.
        let mut downs: Vec<(f64, String)> = (0..6)
            .map(|i| (f64::from(i) * 0.1, format!("rack-{i}")))
            .collect();
        // Then a made-up host goes down every 5 s for ten minutes, and a
        // real host at 20 s, in the storm.
        for i in 0..120 {
            downs.push((11.0 + f64::from(i) * 5.0, format!("forged-{i}")));
        }
        downs.insert(8, (20.0, "victim".into()));
        let out = drive(&mut gate, t0, &downs, 1000.0);
        let text = |(secs, name): &(f64, String)| format!("{secs:.1} {name}");
        let lines: Vec<String> = out.iter().map(text).collect();
        assert_eq!(
            lines[..4],
            [
                "10.0 mass-silence rack-0 rack-1 rack-2 rack-3 rack-4 rack-5",
                "21.0 mass-silence forged-0 forged-1 victim",
                "31.0 mass-silence forged-2 forged-3",
                "41.0 down forged-4",
            ]
        );
        // After the storm every down is a page of its own, hold after it,
        // and not one of the 127 downs is lost.
        assert!(
            lines[4..].iter().all(|l| l.contains(" down forged-")),
            "{lines:?}"
        );
        let delivered: usize = out
            .iter()
            .map(|(_, name)| name.split(' ').count() - 1)
            .sum();
        assert_eq!(delivered, downs.len());
        assert!(gate.drain().is_empty());
    }

    // See: issue 13, item 1.
    #[test]
    fn downs_already_paged_do_not_count_toward_a_mass_silence() {
        let mut gate = Gate::new(settings());
        let t0 = Instant::now();
        // Three paged at 10-12 s, three more held from 15 s: six within the
        // window, but only three can still be taken back.
        let mut downs: Vec<(f64, String)> = [0.0, 1.0, 2.0, 15.0, 16.0, 17.0]
            .iter()
            .enumerate()
            .map(|(i, secs)| (*secs, format!("h{i}")))
            .collect();
        let out = drive(&mut gate, t0, &downs, 100.0);
        let names: Vec<&str> = out.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "down h0", "down h1", "down h2", "down h3", "down h4", "down h5"
            ]
        );
        // Six held at once are still a mass silence, of exactly those six.
        let mut gate = Gate::new(settings());
        downs.extend([
            (18.0, "h6".into()),
            (19.0, "h7".into()),
            (20.0, "h8".into()),
        ]);
        let out = drive(&mut gate, t0, &downs, 100.0);
        let names: Vec<&str> = out.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "down h0",
                "down h1",
                "down h2",
                "mass-silence h3 h4 h5 h6 h7 h8"
            ]
        );
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
