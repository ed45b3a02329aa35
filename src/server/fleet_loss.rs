//! The fleet's loss averages in `/metrics` (`FleetLoss`, where a new
//! host's loss model starts): each average once it is trusted, which is
//! when the monitor uses it, and always how many samples it has taken in,
//! so that an operator sees it being learnt, and kept over a restart.

use super::fleet::Fleet;
use crate::monitor::Monitor;
use crate::monitor::stats::{FLEET_BURST_SAMPLES, FleetLoss, PROBE_RUN_SAMPLES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;

/// Reads the averages at each scrape (one copy under the fleet's lock).
pub struct FleetLossCollector {
    /// The monitor whose averages are shown.
    pub fleet: Arc<Fleet>,
}

impl std::fmt::Debug for FleetLossCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetLossCollector")
    }
}

impl Collector for FleetLossCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.fleet.read(Monitor::fleet_loss), encoder)
    }
}

/// Writes the gauges of `fleet`: an average only once trusted (absent, the
/// monitor takes losses as independent and weighs each host's probes by
/// its own), the sample counts always.
fn encode(fleet: &FleetLoss, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let [_, burst_samples, _, probe_samples] = fleet.to_parts();
    let burst_help = format!(
        "Beats after a lost one (lost or not) that taught lubdub_fleet_burst_excess; \
         it is used from {FLEET_BURST_SAMPLES}"
    );
    let probe_help = format!(
        "Probes of live hosts that taught lubdub_fleet_probe_run_loss; \
         it is used from {PROBE_RUN_SAMPLES}"
    );
    let gauges = [
        (
            "fleet_burst_excess",
            "How far the hosts' burst loss rate (the chance that a beat is lost \
             right after a lost one) exceeds their loss rate, fleet-wide: 0 for \
             independent loss, near 1 for long bursts; a new host's loss model \
             starts from it. Absent until enough runs of losses were seen",
            fleet.burst_excess(),
        ),
        (
            "fleet_probe_run_loss",
            "How often a probe to a live host goes unanswered after an unanswered \
             one, fleet-wide; it weighs the probes of new and bursty hosts. \
             Absent until enough suspicions of live hosts were seen",
            fleet.probe_run(),
        ),
        (
            "fleet_burst_samples",
            &burst_help,
            Some(burst_samples as f64),
        ),
        (
            "fleet_probe_run_samples",
            &probe_help,
            Some(probe_samples as f64),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// The `/metrics` lines of `fleet`.
    fn lines(fleet: FleetLoss) -> Vec<String> {
        #[derive(Debug)]
        struct Fixed(FleetLoss);
        impl Collector for Fixed {
            fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode(&self.0, encoder)
            }
        }
        let mut registry = Registry::with_prefix("lubdub");
        registry.register_collector(Box::new(Fixed(fleet)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    #[test]
    fn an_average_shows_once_trusted_and_its_samples_always() {
        assert_eq!(
            lines(FleetLoss::default()),
            [
                "lubdub_fleet_burst_samples 0.0",
                "lubdub_fleet_probe_run_samples 0.0"
            ]
        );
        let burst = |samples: u32| {
            let parts = [0.25f64.to_bits(), samples.into(), 0.5f64.to_bits(), 3];
            lines(FleetLoss::from_parts(parts))
        };
        let samples = |n: u32| format!("lubdub_fleet_burst_samples {n}.0");
        let probes = "lubdub_fleet_probe_run_samples 3.0".to_string();
        let untrusted = FLEET_BURST_SAMPLES - 1;
        assert_eq!(burst(untrusted), [samples(untrusted), probes.clone()]);
        assert_eq!(
            burst(FLEET_BURST_SAMPLES),
            [
                "lubdub_fleet_burst_excess 0.25".to_string(),
                samples(FLEET_BURST_SAMPLES),
                probes
            ]
        );
        assert_eq!(
            lines(FleetLoss::with(0.0, 0.9))[..2],
            [
                "lubdub_fleet_burst_excess 0.0",
                "lubdub_fleet_probe_run_loss 0.9"
            ]
        );
    }
}
