//! `[server.probe]`: probing suspected hosts before declaring them `down`
//! (issue 15; docs/DETECTION.md, "Probing"). A field of
//! [`ServerConfig`](super::ServerConfig); [`ProbeConfig::settings`] checks
//! it and builds the monitor's [`ProbeSettings`].

use super::{Error, invalid};
use crate::monitor::probe::ProbeSettings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of probing (`[server.probe]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Probe a silent host whose client answers probes (lubdub clients
    /// since issue 15 do; old clients and `Thump!` senders are never
    /// probed) when it turns `late`, and declare it `down` only when its
    /// detector says so *and* its probes went unanswered. The server then
    /// sends UDP to the address of each suspected host's latest valid
    /// beat (see docs/SECURITY.md). Off by default: opt in, and then a
    /// much shorter `timeout` is safe (docs/DETECTION.md). Default: false.
    pub enabled: bool,
    /// Spacing of the probes to one host (shortened to half the
    /// interval its client declares). Shorter confirms sooner but sends
    /// more; it must exceed the round trip, or answers count as missing.
    /// Default: 1s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A live host leaves all its probes unanswered less than once in
    /// 10^threshold suspicions: the number of unanswered probes that
    /// confirm `down` follows from it and the host's measured loss (at
    /// 1 % loss 6 probes, at 5 % 10, at 20 % 20 with the default).
    /// Higher: fewer false alarms, slower confirmation. Default: 10.
    pub threshold: f64,
    /// Most probes per suspicion (1 to 255): past them the detector alone
    /// decides. Bounds the probes a very lossy host costs. Default: 20.
    pub max_probes: u8,
    /// Floor of the loss rate the probe count assumes (0 to 0.5): a host
    /// that lost nothing yet may still lose a probe. Default: 0.01.
    pub min_loss: f64,
    /// Most probes per second, server-wide (a probe not sent for it is
    /// not counted as unanswered). Sized for a million hosts at 5 % loss,
    /// which need about 6,000 a second. Default: 20000.
    pub rate: u32,
    /// For a host whose loss comes in bursts (its runs of lost beats are
    /// longer than independent loss makes them), spread its probes over
    /// this many times its measured burst length instead of `interval`
    /// apart: probes inside one burst are lost together, so only probes
    /// that outlast the burst tell a live host from a dead one. Higher:
    /// fewer false alarms on bursty links, slower confirmation there.
    /// Hosts with random loss are unaffected. 0: never spread. Default: 20
    /// (docs/DETECTION.md, "Bursty loss").
    pub burst_spread: f64,
    /// Widest spacing of a bursty host's probes (at least `interval`):
    /// bounds how long confirming such a host can take (`max_probes`
    /// times it). Default: 5s.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        let d = ProbeSettings::default();
        Self {
            enabled: d.enabled,
            interval: d.interval,
            threshold: d.threshold,
            max_probes: d.max_probes,
            min_loss: d.min_loss,
            rate: d.rate,
            burst_spread: d.burst_spread,
            max_interval: d.max_interval,
        }
    }
}

impl ProbeConfig {
    /// Checks the values and builds what the monitor takes.
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
        Ok(ProbeSettings {
            enabled: self.enabled,
            interval: self.interval,
            threshold: self.threshold,
            max_probes: self.max_probes,
            min_loss: self.min_loss,
            rate: self.rate,
            burst_spread: self.burst_spread,
            max_interval: self.max_interval,
        })
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
