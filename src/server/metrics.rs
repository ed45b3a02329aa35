//! Every metric the server exports, defined in one place. Aggregates only:
//! a million hosts must never become a million series.

use super::dropped::DropReason;
use super::fleet::Fleet;
use super::process::ProcessStats;
use super::timer::TimerMetrics;
use crate::labels::Labels;
use crate::monitor::labelsets::StateCounts;
use crate::monitor::{DetectionTotals, EventKind, HostState, Monitor};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Label set for packets dropped, by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`DropReason::as_str`].
    pub reason: &'static str,
}

/// Label set for alert-sink deliveries: which sink, and how it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// The sink's configured name.
    pub sink: String,
    /// `sent`, `failed`, `retried` or `dropped`.
    pub outcome: &'static str,
}

/// The outcomes a sink delivery is counted under.
pub const SINK_OUTCOMES: [&str; 4] = ["sent", "failed", "retried", "dropped"];

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
    /// Alert-sink deliveries, per sink and outcome.
    pub sink_deliveries: Family<SinkLabel, Counter>,
    /// Mass silences sent to the sinks.
    pub mass_silences: Counter,
    /// Downs folded into a mass silence instead of paged one by one.
    pub pages_absorbed: Counter,
    /// 1 while the store is written, 0 while writes fail (full or
    /// read-only disk): monitoring goes on in memory meanwhile.
    pub store_healthy: Gauge,
    /// Checkpoints written to the store.
    pub store_checkpoints: Counter,
    /// Checkpoints that failed to write (retried).
    pub store_write_errors: Counter,
    /// Host records written by checkpoints.
    pub store_hosts_written: Counter,
    /// Time to write one checkpoint (outside the registry lock).
    pub store_checkpoint_seconds: Histogram,
    /// What the timer counts: the detector lag, and stalls of the server
    /// itself with their length.
    pub timer: TimerMetrics,
    /// Beats lost in the network, from sequence gaps (fleet total).
    pub beats_lost: Counter,
    /// Beats received more than once (fleet total).
    pub beats_duplicated: Counter,
    /// Beats that arrived after a later one (fleet total).
    pub beats_reordered: Counter,
    /// Hosts flapping now.
    pub hosts_flapping: Gauge,
    /// Probing of suspected hosts (issue 15).
    pub probe: super::probe::ProbeMetrics,
    /// Label announcements received, by what became of them.
    pub label_announcements: Family<ResultLabel, Counter>,
}

/// Label set for label announcements, by result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// One of `announce::RESULTS`.
    pub result: &'static str,
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
        let sink_deliveries = Family::<SinkLabel, Counter>::default();
        registry.register(
            "sink_deliveries",
            "Events handled by alert sinks, by sink and outcome \
             (sent, failed, retried, dropped)",
            sink_deliveries.clone(),
        );
        let label_announcements = Family::<ResultLabel, Counter>::default();
        for result in super::announce::RESULTS {
            let _ = label_announcements.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "label_announcements",
            "Label announcements received, by result (applied, unchanged, \
             unknown_host, stale, table_full, malformed, refused, bad_label)",
            label_announcements.clone(),
        );
        let mass_silences = Counter::default();
        registry.register(
            "mass_silences",
            "Mass silences sent to the sinks instead of one page per host",
            mass_silences.clone(),
        );
        let pages_absorbed = Counter::default();
        registry.register(
            "sink_pages_absorbed",
            "Downs folded into a mass silence instead of paged one by one",
            pages_absorbed.clone(),
        );
        let store_healthy = Gauge::default();
        store_healthy.set(1);
        registry.register(
            "store_healthy",
            "1 while the store is written, 0 while writes fail",
            store_healthy.clone(),
        );
        let store_checkpoints = Counter::default();
        registry.register(
            "store_checkpoints",
            "Checkpoints written to the store",
            store_checkpoints.clone(),
        );
        let store_write_errors = Counter::default();
        registry.register(
            "store_write_errors",
            "Checkpoints that failed to write (retried)",
            store_write_errors.clone(),
        );
        let store_hosts_written = Counter::default();
        registry.register(
            "store_hosts_written",
            "Host records written by checkpoints",
            store_hosts_written.clone(),
        );
        // 1 ms to ~16 s: a checkpoint of a whole large fleet is seconds.
        let store_checkpoint_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        );
        registry.register(
            "store_checkpoint_duration_seconds",
            "Time to write one checkpoint",
            store_checkpoint_seconds.clone(),
        );
        let timer = TimerMetrics::default();
        registry.register(
            "detector_stalls",
            "Stalls of the server itself (suspended, starved) forgiven by the detector",
            timer.stalls.clone(),
        );
        registry.register(
            "detector_stalled_seconds",
            "Total length of those stalls; deadlines were extended by it",
            timer.stall_seconds.clone(),
        );
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
        let probe = super::probe::ProbeMetrics::default();
        probe.register(&mut registry);
        Self {
            registry,
            probe,
            beats_lost,
            beats_duplicated,
            beats_reordered,
            hosts_flapping,
            datagrams,
            beats,
            legacy_beats,
            batches,
            dropped,
            sink_deliveries,
            mass_silences,
            label_announcements,
            pages_absorbed,
            store_healthy,
            store_checkpoints,
            store_write_errors,
            store_hosts_written,
            store_checkpoint_seconds,
            timer,
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

    /// The delivery counters of `sink`, one per [`SINK_OUTCOMES`] entry in
    /// that order; all are exported from 0, so a rate() sees the first.
    pub fn sink_counters(&self, sink: &str) -> [Counter; 4] {
        SINK_OUTCOMES.map(|outcome| {
            self.sink_deliveries
                .get_or_create(&SinkLabel {
                    sink: sink.to_string(),
                    outcome,
                })
                .clone()
        })
    }

    /// Brings the detection metrics up to the monitor's totals. Call under
    /// the fleet's lock (`Fleet::read`), so two scrapes cannot add the same
    /// delta twice.
    pub fn sync_detection(&self, totals: &DetectionTotals) {
        super::exposition::sync_to_totals(
            &[
                (&self.beats_lost, totals.lost),
                (&self.beats_duplicated, totals.duplicates),
                (&self.beats_reordered, totals.reordered),
            ],
            (&self.hosts_flapping, totals.flapping),
        );
    }

    /// Writes every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    /// The server's metrics: [`Metrics::default`] plus those read from the
    /// server's state at each scrape (hosts by state, events by kind,
    /// detector lag, the fleet's loss averages, process basics).
    /// With `by_labels` (`metrics_by_labels`), hosts by state are also
    /// broken down by those labels.
    pub fn for_server(fleet: Arc<Fleet>, by_labels: &[String]) -> Self {
        let mut metrics = Self::default();
        if !by_labels.is_empty() {
            metrics
                .registry
                .register_collector(Box::new(LabelCollector {
                    fleet: fleet.clone(),
                    names: by_labels.to_vec(),
                }));
        }
        metrics.registry.register_with_unit(
            "detector_lag",
            "How far past its deadline a host was declared late or down",
            Unit::Seconds,
            metrics.timer.lag.clone(),
        );
        metrics
            .registry
            .register_collector(Box::new(super::fleet_loss::FleetLossCollector {
                fleet: fleet.clone(),
            }));
        metrics
            .registry
            .register_collector(Box::new(StateCollector { fleet }));
        metrics
            .registry
            .register_collector(Box::new(ProcessCollector));
        metrics
    }

    /// Writes every metric in the classic Prometheus text format (0.0.4),
    /// which `promtool check metrics` and plain scrapers read.
    pub fn encode_classic(&self) -> String {
        super::exposition::to_classic(&self.encode())
    }
}

/// Label set of hosts by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Label set of events by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Reads the counts the monitor and event log keep on every change: a
/// scrape copies a few numbers under the lock, never scans the hosts.
struct StateCollector {
    fleet: Arc<Fleet>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.fleet.read(Monitor::counts);
        let hosts = gauge_family(&mut encoder, "hosts", "Hosts known, by state")?;
        encode_by_state(hosts, &counts)?;
        let by_kind = self.fleet.events().counts_by_kind();
        let mut events = encoder.encode_descriptor(
            "events",
            "Events (state changes) published, by kind",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for kind in EventKind::ALL {
            ConstCounter::new(by_kind[kind.index()]).encode(events.encode_family(
                &KindLabel {
                    kind: kind.as_str(),
                },
            )?)?;
        }
        Ok(())
    }
}

/// Most combinations of label values `lubdub_hosts_by_labels` has a
/// series for (each times the states): the first in the order of their
/// values; the hosts of the others are summed in
/// `lubdub_hosts_by_labels_other`.
pub const MAX_LABEL_COMBINATIONS: usize = 100;

/// Hosts by state broken down by the labels `metrics_by_labels` names.
/// A scrape copies the counts the monitor keeps per label set (a few per
/// set, never a scan of the hosts) and sums them by the named values.
struct LabelCollector {
    fleet: Arc<Fleet>,
    names: Vec<String>,
}

impl std::fmt::Debug for LabelCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LabelCollector")
    }
}

/// Hosts by state summed by the values of `names` (`""` where a host has
/// no such label): the first [`MAX_LABEL_COMBINATIONS`] combinations in
/// value order, the sum of the rest, and how many combinations there are.
fn by_label_values(
    names: &[String],
    sets: &[(Arc<Labels>, StateCounts)],
) -> (Vec<(Vec<String>, StateCounts)>, StateCounts, usize) {
    let mut by: BTreeMap<Vec<String>, StateCounts> = BTreeMap::new();
    for (labels, counts) in sets.iter().filter(|(_, c)| c.iter().any(|&n| n > 0)) {
        let values = names
            .iter()
            .map(|n| labels.get(n).unwrap_or_default().to_string())
            .collect();
        add_counts(by.entry(values).or_default(), counts);
    }
    let combinations = by.len();
    let mut other = StateCounts::default();
    let mut kept = Vec::new();
    for (values, counts) in by {
        if kept.len() < MAX_LABEL_COMBINATIONS {
            kept.push((values, counts));
        } else {
            add_counts(&mut other, &counts);
        }
    }
    (kept, other, combinations)
}

fn add_counts(into: &mut StateCounts, counts: &StateCounts) {
    for (sum, n) in into.iter_mut().zip(counts) {
        *sum += n;
    }
}

/// A gauge family's descriptor.
fn gauge_family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &'a str,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())
}

/// One gauge per state of `counts`, labelled `state`, into `family`.
fn encode_by_state(
    mut family: prometheus_client::encoding::MetricEncoder<'_>,
    counts: &StateCounts,
) -> Result<(), std::fmt::Error> {
    for state in HostState::ALL {
        let value = i64::try_from(counts[state.index()]).unwrap_or(i64::MAX);
        ConstGauge::new(value).encode(family.encode_family(&StateLabel {
            state: state.as_str(),
        })?)?;
    }
    Ok(())
}

impl Collector for LabelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sets = self.fleet.read(Monitor::counts_by_labels);
        let (kept, other, combinations) = by_label_values(&self.names, &sets);
        let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let mut family = gauge_family(
            &mut encoder,
            "hosts_by_labels",
            "Hosts known, by state and the labels metrics_by_labels names",
        )?;
        for (values, counts) in &kept {
            for state in HostState::ALL {
                let mut labels: Vec<(String, String)> = self
                    .names
                    .iter()
                    .cloned()
                    .zip(values.iter().cloned())
                    .collect();
                labels.push(("state".into(), state.as_str().into()));
                gauge(counts[state.index()]).encode(family.encode_family(&labels)?)?;
            }
        }
        let family = gauge_family(
            &mut encoder,
            "hosts_by_labels_other",
            "Hosts by state whose label values are past the combinations shown",
        )?;
        encode_by_state(family, &other)?;
        gauge(combinations as u64).encode(gauge_family(
            &mut encoder,
            "hosts_by_labels_combinations",
            "Combinations of the values of the labels metrics_by_labels names",
        )?)
    }
}

/// The process basics, from `/proc/self` at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(()); // no /proc: leave them out rather than report zeros
        };
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     unit: Option<&Unit>,
                     value: f64|
         -> Result<(), std::fmt::Error> {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
        };
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            stats.resident_memory_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            stats.virtual_memory_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            stats.open_fds as f64,
        )?;
        if let Some(max) = stats.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Limit on open file descriptors",
                None,
                max as f64,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            stats.start_time_seconds,
        )?;
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)
    }
}
