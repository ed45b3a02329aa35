//! `[server.probe]`: probing suspected hosts before declaring them `down`
//! (issue 15; docs/DETECTION.md, "Probing"). A field of
//! [`ServerConfig`](super::ServerConfig) of the monitor's own
//! [`ProbeSettings`] type; [`ProbeSettings::settings`] checks it.

use super::{Error, invalid};
use crate::monitor::probe::ProbeSettings;
use std::time::Duration;

/// Settings of probing (`[server.probe]`): the monitor's own type, so the
/// keys, their documentation and their defaults are written once.
pub type ProbeConfig = ProbeSettings;

impl ProbeSettings {
    /// Checks the values: what the monitor takes.
    pub fn settings(&self) -> Result<ProbeSettings, Error> {
        if self.interval < Duration::from_millis(1) {
            return Err(invalid("probe.interval", "must be at least 1ms"));
        }
        if !(self.threshold > 0.0 && self.threshold <= 100.0) {
            return Err(invalid(
                "probe.threshold",
                "must be above 0 and at most 100",
            ));
        }
        if self.max_probes == 0 {
            return Err(invalid("probe.max_probes", "must be at least 1"));
        }
        if !(0.0..0.5).contains(&self.min_loss) {
            return Err(invalid(
                "probe.min_loss",
                "must be at least 0 and below 0.5",
            ));
        }
        if self.rate == 0 {
            return Err(invalid(
                "probe.rate",
                "must be at least 1 (turn probing off with enabled = false)",
            ));
        }
        if !(0.0..=100.0).contains(&self.burst_spread) {
            return Err(invalid("probe.burst_spread", "must be 0 to 100"));
        }
        if self.max_interval < self.interval {
            return Err(invalid(
                "probe.max_interval",
                "must be at least probe.interval",
            ));
        }
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_monitors_and_bad_values_name_the_field() {
        assert_eq!(
            ProbeConfig::default().settings().expect("valid"),
            ProbeSettings::default()
        );
        let bad = |field: &'static str, set: fn(&mut ProbeConfig)| {
            let mut config = ProbeConfig::default();
            set(&mut config);
            (config, field)
        };
        for (config, field) in [
            bad("probe.interval", |c| c.interval = Duration::ZERO),
            bad("probe.threshold", |c| c.threshold = 0.0),
            bad("probe.max_probes", |c| c.max_probes = 0),
            bad("probe.min_loss", |c| c.min_loss = 0.5),
            bad("probe.rate", |c| c.rate = 0),
            bad("probe.burst_spread", |c| c.burst_spread = -1.0),
            bad("probe.max_interval", |c| {
                c.max_interval = Duration::from_millis(500);
            }),
        ] {
            let error = config.settings().expect_err(field).to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
