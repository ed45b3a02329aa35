//! Noticing the server's own stalls: a suspended process, a paused VM, a
//! starved machine. The detector's timer knows when it meant to wake; if it
//! wakes far later, the whole server was not running, beats were only
//! queued, and the lost time must not be counted as the fleet's silence.
//!
//! Pure: the timer passes the monotonic times in, so tests inject them.

use super::model::HostState;
use super::{Monitor, millis};
use std::time::{Duration, Instant};

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

impl Monitor {
    /// How far behind its own timer the monitor may run before that counts
    /// as a stall of the server (suspended process, paused VM) rather than
    /// scheduling noise: a quarter of the timeout, so a stall is caught
    /// before it could turn beats that were merely queued into `down`s.
    pub fn stall_threshold(&self) -> Duration {
        self.settings.timeout / 4
    }

    /// Forgives a stall of the server itself: every host that could still
    /// go late or down gets `stall` added to its silence clock (never past
    /// `now`), so the time the server was not looking is not counted against
    /// the fleet. Rebuilds the deadline queue: O(hosts), and rare.
    pub fn absorb_stall(&mut self, stall: Duration, now: Instant) {
        // Rounded up: moved silence clocks must not make deadlines early.
        let now_ms = self.clock.ms_ceil(now);
        let stall_ms = millis(stall, true);
        for slot in 0..self.registry.slot_end() {
            let Some(host) = self.registry.try_get_mut(slot) else {
                continue; // freed by a forget
            };
            if matches!(host.state, HostState::Up | HostState::Late) {
                host.last_seen = host.last_seen.saturating_add(stall_ms).min(now_ms);
            }
        }
        self.restored_at = self.restored_at.saturating_add(stall_ms).min(now_ms);
        self.rebuild_queue(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::{Sim, beat, one};

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

    #[test]
    fn a_forgiven_stall_delays_deadlines_but_keeps_down_hosts_down() {
        let mut sim = Sim::new();
        let unversioned = |id| super::super::Observation {
            interval_ms: 0,
            ..beat(id)
        };
        sim.observe(0.0, unversioned("dead"));
        sim.expire(30.0);
        assert_eq!(sim.state("dead"), HostState::Down);
        sim.observe(40.0, unversioned("a"));
        sim.observe(50.0, unversioned("b"));
        // The server stalls from 52 s to 152 s; "b" beat just after it woke.
        let mut events = sim.observe(152.0, unversioned("b"));
        sim.monitor
            .absorb_stall(Duration::from_secs(100), sim.at(152.0));
        events.extend(sim.expire(152.0));
        assert_eq!(events, [], "no mass late/down after a stall");
        // "a" last beat at 40 s, + 100 s forgiven: late at 155 s.
        assert_eq!(sim.expire(154.0), []);
        assert_eq!(sim.expire(155.0), one(crate::monitor::EventKind::Late, "a"));
        // "b" is never pushed past now: late 15 s after its beat, not 115.
        assert_eq!(sim.expire(167.0), one(crate::monitor::EventKind::Late, "b"));
        assert_eq!(sim.state("dead"), HostState::Down, "no second down");
    }
}
