//! Detector settings: which detector (fixed timeout or phi accrual) judges a
//! host, with what parameters, server-wide and per host-id pattern; and the
//! flapping settings. The config types here are fields of
//! [`ServerConfig`](crate::config::ServerConfig); [`Rules`] is their
//! checked, compiled form that the detector uses.

use crate::config::Error;
use crate::server::phi::PhiParams;
use crate::server::stats::alpha_for_window;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which failure detector judges a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// Down after a fixed silence (`timeout`, raised to 3 declared
    /// intervals); late at `late_after`. Predictable; blind to each host's
    /// loss and jitter.
    #[default]
    Fixed,
    /// phi accrual: down when phi (the suspicion, from the host's own
    /// rhythm and loss rate) reaches `phi.threshold`; late at
    /// `phi.late_threshold`.
    Phi,
}

impl DetectorKind {
    /// The name used in config, JSON and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Fixed => "fixed",
            DetectorKind::Phi => "phi",
        }
    }
}

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
        let invalid = |field, reason: &str| Error::Invalid {
            field,
            reason: reason.into(),
        };
        if !(self.threshold > 0.0 && self.threshold <= 100.0) {
            return Err(invalid("phi.threshold", "must be above 0 and at most 100"));
        }
        if !(self.late_threshold > 0.0 && self.late_threshold < self.threshold) {
            return Err(invalid(
                "phi.late_threshold",
                "must be above 0 and below phi.threshold",
            ));
        }
        if self.window == 0 {
            return Err(invalid("phi.window", "must be at least 1"));
        }
        if !(0.0..0.5).contains(&self.min_loss) {
            return Err(invalid("phi.min_loss", "must be at least 0 and below 0.5"));
        }
        Ok(())
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

/// How one group of hosts is judged, compiled from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Fixed timeout or phi.
    pub kind: DetectorKind,
    /// Fixed detector: the timeout before the declared-interval floor.
    pub timeout: Duration,
    /// phi detector: its parameters.
    pub phi: PhiParams,
    /// EWMA weight of the host's statistics.
    pub alpha: f32,
}

/// The compiled per-host detector settings: rule 0 is the server's, rule
/// `i + 1` is `host_detectors[i]`.
#[derive(Clone, Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    patterns: globset::GlobSet,
}

/// At most this many `host_detectors`: a host stores its rule in one byte.
pub const MAX_HOST_DETECTORS: usize = 254;

impl Rules {
    /// Checks and compiles the settings.
    pub fn new(
        kind: DetectorKind,
        timeout: Duration,
        phi: &PhiConfig,
        overrides: &[HostDetector],
    ) -> Result<Self, Error> {
        phi.validate()?;
        if overrides.len() > MAX_HOST_DETECTORS {
            return Err(Error::Invalid {
                field: "host_detectors",
                reason: format!("at most {MAX_HOST_DETECTORS} entries"),
            });
        }
        let mut rules = vec![Rule {
            kind,
            timeout,
            phi: phi.params(),
            alpha: alpha_for_window(phi.window),
        }];
        let mut patterns = globset::GlobSetBuilder::new();
        for entry in overrides {
            let glob = globset::Glob::new(&entry.hosts).map_err(|e| Error::Invalid {
                field: "host_detectors.hosts",
                reason: format!("{:?}: {}", entry.hosts, e.kind()),
            })?;
            patterns.add(glob);
            let own_phi = entry.phi.as_ref().unwrap_or(phi);
            own_phi.validate()?;
            if entry.timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::Invalid {
                    field: "host_detectors.timeout",
                    reason: "must be greater than 0".into(),
                });
            }
            rules.push(Rule {
                kind: entry.detector.unwrap_or(kind),
                timeout: entry.timeout.unwrap_or(timeout),
                phi: own_phi.params(),
                alpha: alpha_for_window(own_phi.window),
            });
        }
        let patterns = patterns.build().map_err(|e| Error::Invalid {
            field: "host_detectors.hosts",
            reason: e.to_string(),
        })?;
        Ok(Self { rules, patterns })
    }

    /// The rule index for host `id` (called once, when a host joins).
    pub fn index_for(&self, id: &str) -> u8 {
        if self.rules.len() == 1 {
            return 0;
        }
        let first = self.patterns.matches(id).into_iter().min();
        first.map_or(0, |i| u8::try_from(i + 1).expect("at most 254 rules"))
    }

    /// Rule `index` (from [`Rules::index_for`]).
    pub fn get(&self, index: u8) -> &Rule {
        &self.rules[usize::from(index)]
    }
}

/// Flapping: a host that goes down `flap_threshold` times within
/// `flap_window` is *flapping*; it settles after a whole window without a
/// new `down`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct FlapState {
    /// While not flapping: when the first `down` of the current window
    /// happened; while flapping: when the latest `down` happened. In tenths
    /// of a second since the detector started (6 bytes per host in all;
    /// u32 lasts 13 years of uptime, and saturates after).
    mark_ds: u32,
    /// `down`s in the current window (saturating: a threshold above 255
    /// is reached at 255).
    pub downs: u8,
    /// Marked flapping; alert sinks hold back its alerts until it settles.
    pub flapping: bool,
}

impl FlapState {
    fn mark_ms(&self) -> u64 {
        u64::from(self.mark_ds) * 100
    }

    fn set_mark(&mut self, now_ms: u64) {
        self.mark_ds = u32::try_from(now_ms / 100).unwrap_or(u32::MAX);
    }

    /// Records a `down` at `now_ms`; true when the host starts flapping.
    pub fn on_down(&mut self, now_ms: u64, window_ms: u64, threshold: u16) -> bool {
        if self.flapping {
            self.set_mark(now_ms);
            return false;
        }
        if self.downs == 0 || now_ms.saturating_sub(self.mark_ms()) > window_ms {
            self.set_mark(now_ms);
            self.downs = 0;
        }
        self.downs = self.downs.saturating_add(1);
        if threshold > 0 && u16::from(self.downs) >= threshold.min(255) {
            self.flapping = true;
            self.set_mark(now_ms);
            self.downs = 0;
            return true;
        }
        false
    }

    /// When a flapping host settles if it has no new `down` (ms).
    pub fn settles_at(&self, window_ms: u64) -> Option<u64> {
        self.flapping
            .then(|| self.mark_ms().saturating_add(window_ms))
    }

    /// Ends flapping if a whole window passed without a `down`; true if it
    /// settled now.
    pub fn try_settle(&mut self, now_ms: u64, window_ms: u64) -> bool {
        if self.settles_at(window_ms).is_some_and(|at| now_ms >= at) {
            self.flapping = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rules = Rules::new(
            DetectorKind::Fixed,
            Duration::from_secs(30),
            &PhiConfig::default(),
            &overrides,
        )
        .expect("valid");
        assert_eq!(rules.index_for("db-1"), 1);
        assert_eq!(rules.get(1).kind, DetectorKind::Phi);
        assert_eq!(rules.index_for("web-1"), 2);
        assert_eq!(rules.get(2).timeout, Duration::from_secs(90));
        assert_eq!(rules.get(2).kind, DetectorKind::Fixed);
        let none = Rules::new(
            DetectorKind::Phi,
            Duration::from_secs(30),
            &PhiConfig::default(),
            &[],
        )
        .expect("valid");
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
        config.validate().expect("valid");
        let rules = config.detector_rules().expect("rules");
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
        let err = Rules::new(DetectorKind::Phi, Duration::from_secs(1), &phi, &[])
            .expect_err("late above down");
        assert!(err.to_string().starts_with("phi.late_threshold"), "{err}");
        let bad_glob = [HostDetector {
            hosts: "db-[".into(),
            ..HostDetector::default()
        }];
        let err = Rules::new(
            DetectorKind::Phi,
            Duration::from_secs(1),
            &PhiConfig::default(),
            &bad_glob,
        )
        .expect_err("bad glob");
        assert!(err.to_string().starts_with("host_detectors.hosts"), "{err}");
    }

    #[test]
    fn flapping_after_threshold_downs_in_a_window_then_settles() {
        let mut flap = FlapState::default();
        let window = 10_000;
        assert!(!flap.on_down(0, window, 3));
        assert!(!flap.on_down(4_000, window, 3));
        assert!(flap.on_down(8_000, window, 3), "third down within 10 s");
        assert!(!flap.on_down(9_000, window, 3), "one flapping event only");
        assert!(!flap.try_settle(18_999, window));
        assert!(flap.try_settle(19_000, window));
        assert!(!flap.flapping);
        assert_eq!(std::mem::size_of::<FlapState>(), 6);
        // Downs spread wider than the window never flap.
        let mut slow = FlapState::default();
        for i in 0..10 {
            assert!(!slow.on_down(i * 6_000, window, 3));
        }
    }
}
