//! Noticing the server's own stalls: a suspended process, a paused VM, a
//! starved machine. The detector's timer knows when it meant to wake; if it
//! wakes far later, the whole server was not running, beats were only
//! queued, and the lost time must not be counted as the fleet's silence.
//!
//! Pure: the timer passes the monotonic times in, so tests inject them.

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::time::Instant;

/// The stall counters exported in `/metrics` (shared with [`super::metrics`]).
#[derive(Clone, Default)]
pub struct StallCounters {
    /// Stalls of the server noticed by the detector.
    pub stalls: Counter,
    /// Their total length, in seconds.
    pub seconds: Counter<f64, AtomicU64>,
}

/// Compares the timer's intended wake-ups with the actual ones.
#[derive(Clone, Copy, Debug)]
pub struct StallWatch {
    threshold: Duration,
}

impl StallWatch {
    /// Lateness past `threshold` counts as a stall.
    pub fn new(threshold: Duration) -> Self {
        Self { threshold }
    }

    /// When the timer should wake: the next deadline, but no later than one
    /// threshold from `now`, so that a stall is noticed even when no
    /// deadline is near.
    pub fn next_wake(&self, now: Instant, deadline: Option<Instant>) -> Instant {
        let tick = now + self.threshold;
        deadline.map_or(tick, |d| d.min(tick))
    }

    /// The stall, if waking at `now` for a wake-up meant for `target` is
    /// later than the threshold. Waking early (a beat woke the timer) is not.
    pub fn check(&self, target: Instant, now: Instant) -> Option<Duration> {
        let late = now.saturating_duration_since(target);
        (late > self.threshold).then_some(late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lateness_past_the_threshold_is_a_stall() {
        let watch = StallWatch::new(Duration::from_millis(250));
        let t = Instant::now();
        assert_eq!(watch.check(t, t), None);
        assert_eq!(watch.check(t + Duration::from_secs(1), t), None, "early");
        assert_eq!(watch.check(t, t + Duration::from_millis(250)), None);
        assert_eq!(
            watch.check(t, t + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(watch.next_wake(t, None), t + Duration::from_millis(250));
        let soon = t + Duration::from_millis(10);
        assert_eq!(watch.next_wake(t, Some(soon)), soon);
    }

    use crate::config::ServerConfig;
    use crate::server::detector::{Detector, Observation, run_timer};
    use crate::server::events::EventKind;
    use crate::server::registry::HostState;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn detector() -> Detector {
        Detector::new(&ServerConfig {
            timeout: TIMEOUT,
            ..ServerConfig::default()
        })
    }

    fn beat(id: &str) -> Observation<'_> {
        Observation {
            host_id: id,
            addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
            seq: Some(1),
            boot_id: [1; 16],
            interval_ms: 0,
            goodbye: false,
            sent_at_micros: 0,
        }
    }

    fn state(detector: &Detector, id: &str) -> HostState {
        let registry = detector.registry();
        registry.get(registry.find(id).expect("known")).state
    }

    #[test]
    fn a_forgiven_stall_delays_deadlines_but_keeps_down_hosts_down() {
        let mut d = detector();
        let t0 = d.started_at();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut events = Vec::new();
        d.observe(&beat("dead"), t0, SystemTime::now(), &mut events);
        d.expire(at(30), SystemTime::now(), &mut events);
        assert_eq!(state(&d, "dead"), HostState::Down);
        d.observe(&beat("a"), at(40), SystemTime::now(), &mut events);
        d.observe(&beat("b"), at(50), SystemTime::now(), &mut events);
        events.clear();
        // The server stalls from 52 s to 152 s; "b" beat just after it woke.
        d.observe(&beat("b"), at(152), SystemTime::now(), &mut events);
        d.absorb_stall(Duration::from_secs(100), at(152));
        d.expire(at(152), SystemTime::now(), &mut events);
        assert_eq!(events, [], "no mass late/down after a stall");
        // "a" last beat at 40 s, + 100 s forgiven: late at 155 s.
        d.expire(at(154), SystemTime::now(), &mut events);
        assert_eq!(events, []);
        d.expire(at(155), SystemTime::now(), &mut events);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, &*e.host)).collect();
        assert_eq!(kinds, [(EventKind::Late, "a")]);
        // "b" is never pushed past now: late 15 s after its beat, not 115.
        events.clear();
        d.expire(at(167), SystemTime::now(), &mut events);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, &*e.host)).collect();
        assert_eq!(kinds, [(EventKind::Late, "b")]);
        assert_eq!(state(&d, "dead"), HostState::Down, "no second down");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_forgives_a_stall_of_the_whole_server() {
        let detector = Arc::new(Mutex::new(detector()));
        let counters = StallCounters::default();
        detector
            .lock()
            .unwrap()
            .set_stall_counters(counters.clone());
        let wake = Arc::new(Notify::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_timer(
            detector.clone(),
            wake.clone(),
            move |events| {
                events.into_iter().for_each(|e| {
                    let _ = tx.send((e.kind, Instant::now()));
                })
            },
            shutdown.clone(),
        ));
        let start = Instant::now();
        detector
            .lock()
            .unwrap()
            .observe(&beat("a"), start, SystemTime::now(), &mut Vec::new());
        wake.notify_one();
        tokio::task::yield_now().await;
        // The whole process is frozen for 100 s (far past the 30 s timeout):
        // the clock jumps and the timer wakes that late.
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            rx.try_recv().is_err(),
            "no late or down right after a stall"
        );
        assert_eq!(counters.stalls.get(), 1);
        assert!(counters.seconds.get() > 90.0);
        // The stall counts from the timer's intended wake-up (at most one
        // tick, a quarter timeout, after the beat), so the host is late half
        // a timeout after that, not at once.
        let (kind, at) = rx.recv().await.expect("late event");
        assert_eq!(kind, EventKind::Late);
        let earliest = Duration::from_secs(100) - TIMEOUT / 4 + TIMEOUT / 2;
        assert!(at - start >= earliest, "late at {:?}", at - start);
        shutdown.cancel();
        task.await.expect("timer task ends on shutdown");
    }
}
