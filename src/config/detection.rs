//! Detector settings as the config file writes them: which detector (fixed
//! timeout or phi accrual) judges a host, with what parameters,
//! server-wide and per host-id pattern. Fields of
//! [`ServerConfig`](super::ServerConfig); [`compile`] checks them and
//! builds the monitor's [`Rules`], the form the core takes.

use super::{Error, ensure, invalid};
pub use crate::monitor::DetectorKind;
use crate::monitor::phi::PhiParams;
use crate::monitor::policy::{MAX_HOST_DETECTORS, Rule, Rules};
use crate::monitor::stats::alpha_for_window;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the phi accrual detector (`[server.phi]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhiConfig {
    /// phi at which a host is `down`: a live host reaches it once in
    /// 10^threshold silences. Higher: fewer false alarms, slower detection
    /// (at 5 % loss each extra 1.3 is one more beat). Default: 10 (see
    /// docs/DETECTION.md).
    pub threshold: f64,
    /// phi at which a host is `late` (a warning). Default: 3.
    pub late_threshold: f64,
    /// Beats the statistics remember (an EWMA of this centre of mass):
    /// larger is steadier, smaller adapts faster to a changed network.
    /// Until a host has sent this many, its estimates are plain means.
    /// Default: 1000.
    pub window: u32,
    /// Floor of the deviation of the time per beat, so a host beating like
    /// clockwork is not declared down moments after a beat was due.
    /// Default: 100ms.
    #[serde(with = "humantime_serde")]
    pub min_deviation: Duration,
    /// Silence always allowed on top of the model (GC pauses, short
    /// network hiccups). Default: 0s.
    #[serde(with = "humantime_serde")]
    pub acceptable_pause: Duration,
    /// Floor of the loss rate (0 to 1): a host that has lost no beat yet
    /// may still lose one. Lower detects loss-free hosts faster. Default:
    /// 0.01.
    pub min_loss: f64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        Self {
            threshold: 10.0,
            late_threshold: 3.0,
            window: 1000,
            min_deviation: Duration::from_millis(100),
            acceptable_pause: Duration::ZERO,
            min_loss: 0.01,
        }
    }
}

impl PhiConfig {
    fn validate(&self) -> Result<(), Error> {
        let (threshold, late) = (self.threshold, self.late_threshold);
        ensure(
            threshold > 0.0 && threshold <= 100.0,
            "phi.threshold",
            "must be above 0 and at most 100",
        )?;
        ensure(
            late > 0.0 && late < threshold,
            "phi.late_threshold",
            "must be above 0 and below phi.threshold",
        )?;
        ensure(self.window > 0, "phi.window", "must be at least 1")?;
        ensure(
            (0.0..0.5).contains(&self.min_loss),
            "phi.min_loss",
            "must be at least 0 and below 0.5",
        )
    }

    /// The parameters the phi math takes.
    pub fn params(&self) -> PhiParams {
        PhiParams {
            threshold: self.threshold,
            late_threshold: self.late_threshold,
            min_std_ms: self.min_deviation.as_secs_f64() * 1000.0,
            pause_ms: self.acceptable_pause.as_secs_f64() * 1000.0,
            min_loss: self.min_loss,
        }
    }
}

/// A per-host override (`[[server.host_detectors]]`): hosts whose id
/// matches `hosts` use these settings; unset ones keep the server's. The
/// first matching entry wins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostDetector {
    /// Glob over host ids (`db-*`, `*.eu-west`, `web-[0-9]*`).
    pub hosts: String,
    /// Detector for these hosts.
    pub detector: Option<DetectorKind>,
    /// Fixed detector: silence after which they are `down`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// phi detector: settings replacing the server's `[server.phi]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phi: Option<PhiConfig>,
}

/// Checks the detector settings and compiles them into the monitor's
/// rules: rule 0 is the server's, rule `i + 1` is `overrides[i]`.
pub fn compile(
    kind: DetectorKind,
    timeout: Duration,
    phi: &PhiConfig,
    overrides: &[HostDetector],
) -> Result<Rules, Error> {
    phi.validate()?;
    ensure(
        overrides.len() <= MAX_HOST_DETECTORS,
        "host_detectors",
        format!("at most {MAX_HOST_DETECTORS} entries"),
    )?;
    let server = Rule {
        kind,
        timeout,
        phi: phi.params(),
        alpha: alpha_for_window(phi.window),
    };
    let mut rules = Vec::with_capacity(overrides.len());
    let mut patterns = globset::GlobSetBuilder::new();
    for entry in overrides {
        let glob = globset::Glob::new(&entry.hosts).map_err(|e| {
            invalid(
                "host_detectors.hosts",
                format!("{:?}: {}", entry.hosts, e.kind()),
            )
        })?;
        patterns.add(glob);
        let own_phi = entry.phi.as_ref().unwrap_or(phi);
        own_phi.validate()?;
        ensure(
            !entry.timeout.is_some_and(|t| t.is_zero()),
            "host_detectors.timeout",
            "must be greater than 0",
        )?;
        rules.push(Rule {
            kind: entry.detector.unwrap_or(kind),
            timeout: entry.timeout.unwrap_or(timeout),
            phi: own_phi.params(),
            alpha: alpha_for_window(own_phi.window),
        });
    }
    let patterns = patterns
        .build()
        .map_err(|e| invalid("host_detectors.hosts", e.to_string()))?;
    Ok(Rules::with_overrides(server, patterns, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of a server with `kind`, a `timeout_secs` timeout, default
    /// phi settings and `overrides`.
    fn compile_with(
        kind: DetectorKind,
        timeout_secs: u64,
        overrides: &[HostDetector],
    ) -> Result<Rules, Error> {
        let timeout = Duration::from_secs(timeout_secs);
        compile(kind, timeout, &PhiConfig::default(), overrides)
    }

    #[test]
    fn first_matching_pattern_wins() {
        let overrides = [
            HostDetector {
                hosts: "db-*".into(),
                detector: Some(DetectorKind::Phi),
                ..HostDetector::default()
            },
            HostDetector {
                hosts: "*".into(),
                timeout: Some(Duration::from_secs(90)),
                ..HostDetector::default()
            },
        ];
        let rules = compile_with(DetectorKind::Fixed, 30, &overrides).expect("valid");
        assert_eq!(rules.index_for("db-1"), 1);
        assert_eq!(rules.get(1).kind, DetectorKind::Phi);
        assert_eq!(rules.index_for("web-1"), 2);
        assert_eq!(rules.get(2).timeout, Duration::from_secs(90));
        assert_eq!(rules.get(2).kind, DetectorKind::Fixed);
        let none = compile_with(DetectorKind::Phi, 30, &[]).expect("valid");
        assert_eq!(none.index_for("anything"), 0);
    }

    #[test]
    fn config_file_sets_detector_phi_and_per_host_overrides() {
        let text = r#"
[server]
detector = "phi"
[server.phi]
threshold = 12.0
acceptable_pause = "2s"
[[server.host_detectors]]
hosts = "db-*"
detector = "fixed"
timeout = "2m"
[[server.host_detectors]]
hosts = "edge-*"
phi = { threshold = 16.0, window = 200 }
"#;
        let config = crate::config::FileConfig::parse(text)
            .expect("valid")
            .server;
        let rules = config.validate().expect("valid").monitor().rules.clone();
        let server = rules.get(rules.index_for("web-1"));
        assert_eq!(
            (server.kind, server.phi.threshold),
            (DetectorKind::Phi, 12.0)
        );
        assert_eq!(server.phi.pause_ms, 2000.0);
        let db = rules.get(rules.index_for("db-7"));
        assert_eq!(
            (db.kind, db.timeout),
            (DetectorKind::Fixed, Duration::from_secs(120))
        );
        let edge = rules.get(rules.index_for("edge-3"));
        assert_eq!((edge.kind, edge.phi.threshold), (DetectorKind::Phi, 16.0));
        assert_eq!(edge.alpha, alpha_for_window(200));
        // And it prints back as it was read.
        let printed =
            toml::to_string(&crate::config::ServerFile { server: &config }).expect("toml");
        let again = crate::config::FileConfig::parse(&printed).expect("round trip");
        assert_eq!(again.server, config);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let phi = PhiConfig {
            late_threshold: 20.0,
            ..PhiConfig::default()
        };
        let err = compile(DetectorKind::Phi, Duration::from_secs(1), &phi, &[])
            .expect_err("late above down");
        assert!(err.to_string().starts_with("phi.late_threshold"), "{err}");
        let bad_glob = [HostDetector {
            hosts: "db-[".into(),
            ..HostDetector::default()
        }];
        let err = compile_with(DetectorKind::Phi, 1, &bad_glob).expect_err("bad glob");
        assert!(err.to_string().starts_with("host_detectors.hosts"), "{err}");
    }
}
