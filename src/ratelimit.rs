//! Throttling for log lines that a flood or a long outage would repeat.

use std::time::{Duration, Instant};

/// Lets one event through per `period`, and counts what it held back, so
/// that a flood of bad packets or a server down for hours cannot fill a disk
/// with identical lines.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limiter that lets one event through per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(n)` when the caller should log now, where `n` is how
    /// many events were suppressed since the last one logged; `None` when it
    /// should stay quiet.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the last event, so the next one is logged at once (e.g. after
    /// a server that was failing works again).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_suppressed_count() {
        let mut limit = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Some(0));
        assert_eq!(limit.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(60)), Some(2));
        limit.reset();
        assert_eq!(limit.check(t0 + Duration::from_secs(61)), Some(0));
    }
}
