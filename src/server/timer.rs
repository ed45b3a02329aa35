//! The timer: sleeps until the monitor's next deadline (or until a beat or
//! a resume moves one earlier), expires what is due through the [`Fleet`],
//! notices stalls of the whole server, and feeds the lag and stall metrics
//! from the monitor's outcome.
//!
//! Time enters the pure core here (and in ingest and the API): tokio's
//! clock, which `tokio::time::pause()` controls in tests, read by [`now`]
//! and handed to the monitor as a `std::time::Instant`.

use super::fleet::Fleet;
use crate::monitor::Outcome;
use crate::monitor::stall::StallWatch;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The monotonic clock the monitor runs on: tokio's (so paused-time tests
/// control it), as the `std` instant the core takes.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Buckets of the detector lag histogram, in seconds: from 1 ms (the timer's
/// resolution) to 10 s (a stalled server).
const LAG_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0];

/// What the timer counts, exported in `/metrics` (handles: clones count
/// into the same series).
#[derive(Clone, Debug)]
pub struct TimerMetrics {
    /// How far past its deadline each late/down was declared.
    pub lag: Histogram,
    /// Stalls of the server noticed by the timer.
    pub stalls: Counter,
    /// Their total length, in seconds.
    pub stall_seconds: Counter<f64, AtomicU64>,
}

impl Default for TimerMetrics {
    fn default() -> Self {
        Self {
            lag: Histogram::new(LAG_BUCKETS),
            stalls: Counter::default(),
            stall_seconds: Counter::default(),
        }
    }
}

/// Runs the monitor's clock until `shutdown`: sleeps until the earliest
/// deadline (or until the fleet says one moved earlier), expires it, and
/// counts what happened.
pub async fn run_timer(
    fleet: Arc<Fleet>,
    metrics: TimerMetrics,
    mut prober: Option<super::probe::Prober>,
    shutdown: CancellationToken,
) {
    let watch = StallWatch::new(fleet.read(|monitor| monitor.stall_threshold()));
    let mut stall: Option<Duration> = None;
    let mut out = Outcome::default();
    loop {
        if let Some(stall) = stall {
            tracing::warn!(
                "the server stalled for {:.3}s (suspended or starved); deadlines extended by that",
                stall.as_secs_f64()
            );
            metrics.stalls.inc();
            metrics.stall_seconds.inc_by(stall.as_secs_f64());
        }
        // The clock is read under the lock: a wait for it does not make
        // `now` stale (the lag would read short and deadlines wait a turn).
        let next = fleet.expire(|| (now(), SystemTime::now()), stall.take(), &mut out);
        for lag in out.lags.drain(..) {
            metrics.lag.observe(lag.as_secs_f64());
        }
        // Outside the lock: the monitor decided, the socket sends.
        if let Some(prober) = &mut prober {
            prober.send(&out.probe.send);
        }
        out.probe.send.clear();
        // Wake at least every tick even with no deadline near, so a stall is
        // seen as a late wake-up of this loop.
        let target = watch.next_wake(now(), next);
        let sleep_until = tokio::time::Instant::from_std(target);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.deadline_moved() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
        stall = watch.check(target, now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::{TIMEOUT, beat, settings};
    use crate::monitor::{EventKind, Monitor, Observed};
    use crate::server::events::EventLog;
    use tokio::time::Instant;

    /// A fleet over a fresh monitor started now (paused time), with its
    /// timer task running and host `a` just joined.
    struct Running {
        metrics: TimerMetrics,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        events: tokio::sync::broadcast::Receiver<crate::monitor::Event>,
        /// When `a` beat.
        start: Instant,
    }

    impl Running {
        async fn start() -> Running {
            let monitor = Monitor::new(settings(), now(), SystemTime::now());
            let fleet = Arc::new(Fleet::new(monitor, Arc::new(EventLog::new(100))));
            let metrics = TimerMetrics::default();
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run_timer(
                fleet.clone(),
                metrics.clone(),
                None,
                shutdown.clone(),
            ));
            let mut events = fleet.events().subscribe();
            let start = Instant::now();
            let mut results = [Observed::Applied];
            fleet.observe_batch(
                &[beat("a")],
                now(),
                SystemTime::now(),
                &mut results,
                &mut Outcome::default(),
            );
            assert_eq!(events.recv().await.map(|e| e.kind), Ok(EventKind::Joined));
            Running {
                metrics,
                shutdown,
                task,
                events,
                start,
            }
        }

        /// The next event's kind, and how long after the beat it came.
        async fn next(&mut self) -> (EventKind, Duration) {
            let kind = self.events.recv().await.expect("an event").kind;
            (kind, Instant::now() - self.start)
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.expect("timer task ends on shutdown");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timer_task_reports_at_the_deadline() {
        let mut timer = Running::start().await;
        assert_eq!(timer.next().await, (EventKind::Late, TIMEOUT / 2));
        assert_eq!(timer.next().await, (EventKind::Down, TIMEOUT));
        let lags = timer.metrics.lag.clone();
        timer.stop().await;
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("lag", "lag", lags);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("lag_count 2"), "late and down timed: {text}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_forgives_a_stall_of_the_whole_server() {
        let mut timer = Running::start().await;
        tokio::task::yield_now().await;
        // The whole process is frozen for 100 s (far past the 30 s timeout):
        // the clock jumps and the timer wakes that late.
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            timer.events.try_recv().is_err(),
            "no late or down right after a stall"
        );
        assert_eq!(timer.metrics.stalls.get(), 1);
        assert!(timer.metrics.stall_seconds.get() > 90.0);
        // The stall counts from the timer's intended wake-up (at most one
        // tick, a quarter timeout, after the beat), so the host is late half
        // a timeout after that, not at once.
        let (kind, at) = timer.next().await;
        assert_eq!(kind, EventKind::Late);
        let earliest = Duration::from_secs(100) - TIMEOUT / 4 + TIMEOUT / 2;
        assert!(at >= earliest, "late at {at:?}");
        timer.stop().await;
    }
}
