//! How a sink's deliveries end and are retried: the counters in
//! `/metrics` and the latest outcomes in `GET /api/v1/sinks` ([`Outcomes`]),
//! and the backoff between attempts ([`Retry`]).

use crate::server::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A sink's handle on its delivery counters in `/metrics` and on the
/// latest outcomes shown by `GET /api/v1/sinks`.
#[derive(Clone)]
pub struct Outcomes {
    /// In the order of [`SINK_OUTCOMES`](crate::server::metrics::SINK_OUTCOMES).
    counters: [Counter; 4],
    latest: Arc<Mutex<Latest>>,
}

/// When a sink last delivered and last failed, and why; in its
/// `GET /api/v1/sinks` entry as `last_success`, `last_failure` (RFC 3339)
/// and `last_error`, each `null` when there is none.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latest {
    /// Wall-clock time of the latest delivery.
    #[serde(rename = "last_success", serialize_with = "rfc3339")]
    pub success: Option<SystemTime>,
    /// Wall-clock time of the latest failure (given up on).
    #[serde(rename = "last_failure", serialize_with = "rfc3339")]
    pub failure: Option<SystemTime>,
    /// Why it failed, without secrets (URLs are left out).
    #[serde(rename = "last_error")]
    pub error: Option<String>,
}

/// A time in RFC 3339 with milliseconds (`null` when none): the sinks'
/// [`Latest`] in JSON.
fn rfc3339<S: serde::Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    at.map(|at| humantime::format_rfc3339_millis(at).to_string())
        .serialize(serializer)
}

impl Outcomes {
    /// The outcomes of sink `sink`, counted in `metrics`.
    pub(super) fn new(metrics: &Metrics, sink: &str) -> Self {
        Self {
            counters: metrics.sink_counters(sink),
            latest: Arc::default(),
        }
    }

    /// Counts `n` events with `outcome`.
    pub fn add(&self, outcome: Delivery, n: u64) {
        self.counters[outcome as usize].inc_by(n);
        let mut latest = self.latest.lock().expect("sink outcome lock");
        match outcome {
            Delivery::Sent => latest.success = Some(SystemTime::now()),
            Delivery::Failed => latest.failure = Some(SystemTime::now()),
            Delivery::Retried | Delivery::Dropped => {}
        }
    }

    /// Counts `n` events given up on because of `why`.
    pub fn fail(&self, n: u64, why: &str) {
        self.add(Delivery::Failed, n);
        self.latest.lock().expect("sink outcome lock").error = Some(why.to_string());
    }

    /// The latest outcomes.
    pub fn latest(&self) -> Latest {
        self.latest.lock().expect("sink outcome lock").clone()
    }
}

/// How a sink's delivery of an event ended, as counted in `/metrics`. The
/// discriminant indexes [`SINK_OUTCOMES`](crate::server::metrics::SINK_OUTCOMES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (2xx, or the hook exited 0).
    Sent = 0,
    /// Given up on: retries spent, a 4xx, a hook that failed or was killed.
    Failed = 1,
    /// One more attempt after a failure.
    Retried = 2,
    /// Never attempted: the sink's queue was full.
    Dropped = 3,
}

/// Waits before retry number `attempt` (0 = the first retry): `base`
/// doubled per attempt, capped at `max`, then shortened by a random amount
/// of up to half (jitter, so that senders do not retry in step).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How a sink retries a delivery after a temporary failure: the
/// `retries`, `backoff` and `max_backoff` settings the webhook and e-mail
/// sinks share, and the wait between attempts that both take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry (see [`backoff`]).
    pub backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl Retry {
    /// After failed attempt number `attempt` (0 = the first), for `why`:
    /// false when the retries are spent (the caller gives up); otherwise
    /// counts the `events` as retried, waits the backoff and returns true.
    pub async fn wait(
        &self,
        sink: &str,
        why: &str,
        attempt: u32,
        outcomes: &Outcomes,
        events: u64,
    ) -> bool {
        if attempt >= self.retries {
            return false;
        }
        let wait = backoff(self.backoff, self.max_backoff, attempt);
        tracing::debug!(sink = %sink, "{why}; retrying in {wait:?}");
        outcomes.add(Delivery::Retried, events);
        tokio::time::sleep(wait).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn deliveries_count_under_their_metric_label() {
        let metrics = Metrics::default();
        let outcomes = Outcomes::new(&metrics, "s");
        outcomes.add(Delivery::Sent, 1);
        outcomes.add(Delivery::Failed, 2);
        outcomes.add(Delivery::Retried, 3);
        outcomes.add(Delivery::Dropped, 4);
        let text = metrics.encode();
        for (outcome, n) in [("sent", 1), ("failed", 2), ("retried", 3), ("dropped", 4)] {
            let line =
                format!("lubdub_sink_deliveries_total{{sink=\"s\",outcome=\"{outcome}\"}} {n}");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let full = (base * 2u32.pow(attempt.min(20))).min(max);
            let wait = backoff(base, max, attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_its_backoff_counts_and_stops_when_spent() {
        let metrics = Metrics::default();
        let outcomes = Outcomes::new(&metrics, "s");
        let retry = Retry {
            retries: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(150),
        };
        let retried = |n: u64| {
            let line =
                format!("lubdub_sink_deliveries_total{{sink=\"s\",outcome=\"retried\"}} {n}");
            metrics.encode().contains(&line)
        };
        // Each wait is the backoff (doubled, capped) shortened by at most half.
        for (attempt, full) in [(0, 100), (1, 150)] {
            let start = Instant::now();
            assert!(retry.wait("s", "503", attempt, &outcomes, 3).await);
            let waited = start.elapsed();
            let full = Duration::from_millis(full);
            assert!(
                waited >= full / 2 && waited <= full,
                "{attempt}: {waited:?}"
            );
        }
        assert!(retried(6));
        let start = Instant::now();
        assert!(!retry.wait("s", "503", 2, &outcomes, 3).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(retried(6));
    }
}
