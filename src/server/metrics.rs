//! Every metric the server exports, defined in one place. Aggregates only:
//! a million hosts must never become a million series.

use super::ingest::DropReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set for packets dropped, by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`DropReason::as_str`].
    pub reason: &'static str,
}

/// The server's metrics. Counters are atomics: the hot path adds to them
/// once per batch, never per packet.
pub struct Metrics {
    registry: Registry,
    /// Datagrams received.
    pub datagrams: Counter,
    /// Beats applied to the registry (v1 and legacy).
    pub beats: Counter,
    /// Of those, the seed's `Thump!`/`PyHB`.
    pub legacy_beats: Counter,
    /// Receive batches (system calls that returned datagrams).
    pub batches: Counter,
    /// Datagrams dropped, by reason.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Beats lost in the network, from sequence gaps (fleet total).
    pub beats_lost: Counter,
    /// Beats received more than once (fleet total).
    pub beats_duplicated: Counter,
    /// Beats that arrived after a later one (fleet total).
    pub beats_reordered: Counter,
    /// Hosts flapping now.
    pub hosts_flapping: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lubdub");
        let datagrams = Counter::default();
        registry.register(
            "datagrams_received",
            "UDP datagrams received",
            datagrams.clone(),
        );
        let beats = Counter::default();
        registry.register("beats", "Beats applied to the registry", beats.clone());
        let legacy_beats = Counter::default();
        registry.register(
            "legacy_beats",
            "Seed-format beats (Thump!/PyHB) applied",
            legacy_beats.clone(),
        );
        let batches = Counter::default();
        registry.register(
            "ingest_batches",
            "Receive batches (one system call each)",
            batches.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "packets_dropped",
            "Datagrams dropped, by reason",
            dropped.clone(),
        );
        for reason in DropReason::ALL {
            // Export every reason from the start, so a rate() sees the first drop.
            drop(dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        let beats_lost = Counter::default();
        registry.register(
            "beats_lost",
            "Beats lost in the network, from sequence gaps",
            beats_lost.clone(),
        );
        let beats_duplicated = Counter::default();
        registry.register(
            "beats_duplicated",
            "Beats received more than once",
            beats_duplicated.clone(),
        );
        let beats_reordered = Counter::default();
        registry.register(
            "beats_reordered",
            "Beats that arrived after a later one",
            beats_reordered.clone(),
        );
        let hosts_flapping = Gauge::default();
        registry.register(
            "hosts_flapping",
            "Hosts flapping now (alerts held back)",
            hosts_flapping.clone(),
        );
        Self {
            registry,
            beats_lost,
            beats_duplicated,
            beats_reordered,
            hosts_flapping,
            datagrams,
            beats,
            legacy_beats,
            batches,
            dropped,
        }
    }
}

impl Metrics {
    /// Adds a drop count for `reason`.
    pub fn add_dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(n);
        }
    }

    /// Brings the detection metrics up to the detector's totals. Call under
    /// the detector lock, so two scrapes cannot add the same delta twice.
    pub fn sync_detection(&self, totals: &super::detector::DetectionTotals) {
        for (counter, total) in [
            (&self.beats_lost, totals.lost),
            (&self.beats_duplicated, totals.duplicates),
            (&self.beats_reordered, totals.reordered),
        ] {
            // `lost` can shrink (a late beat); a counter only grows.
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.hosts_flapping
            .set(i64::try_from(totals.flapping).unwrap_or(i64::MAX));
    }

    /// Writes every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
