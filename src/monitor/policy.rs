//! The timeout policy: which detector (fixed timeout or phi accrual) judges
//! a host and with what parameters, when it becomes `late` and `down`, and
//! the one-line explanation the API shows.
//!
//! [`Settings`] is what the monitor is built from: checked values only (the
//! config's `validate` builds it), so nothing here re-validates.

use super::phi::PhiParams;
use super::stats::BeatStats;
use super::{Host, Monitor};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

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

/// How one group of hosts is judged.
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

/// At most this many per-host rules besides the server's: a host stores its
/// rule's index in one byte.
pub const MAX_HOST_DETECTORS: usize = 254;

/// The per-host detector rules: rule 0 is the server's, rule `i + 1` is the
/// one for hosts matching pattern `i` (the first match wins).
#[derive(Clone, Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    patterns: globset::GlobSet,
}

impl Rules {
    /// One rule for every host.
    pub fn single(rule: Rule) -> Self {
        Self {
            rules: vec![rule],
            patterns: globset::GlobSet::empty(),
        }
    }

    /// The server's rule plus one per pattern of `patterns` (in its
    /// order), at most [`MAX_HOST_DETECTORS`] of them (checked by the
    /// config, so more is a bug).
    pub fn with_overrides(server: Rule, patterns: globset::GlobSet, overrides: Vec<Rule>) -> Self {
        assert!(
            overrides.len() <= MAX_HOST_DETECTORS && patterns.len() == overrides.len(),
            "the config checks the rules"
        );
        let mut rules = vec![server];
        rules.extend(overrides);
        Self { rules, patterns }
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

/// Everything the monitor judges by, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The server's timeout (the silence before `down`).
    pub timeout: Duration,
    /// The share of a host's timeout after which it is `late`.
    pub late_ratio: f64,
    /// Per-host detector rules.
    pub rules: Rules,
    /// Window of flapping detection.
    pub flap_window: Duration,
    /// `down`s within the window that make a host flapping (0: off).
    pub flap_threshold: u16,
    /// Most hosts tracked; beats of further new hosts are refused.
    pub max_hosts: usize,
    /// Refuse beats whose seq is not new (see `replay`): on with keys,
    /// where a seq cannot be forged; without keys it would protect nothing.
    pub enforce_seq: bool,
    /// Probing of suspected hosts (issue 15).
    pub probe: super::probe::ProbeSettings,
}

impl Monitor {
    /// Judges by `settings` from `now` on (a reload): every host's rule is
    /// chosen again and every deadline recomputed, so a shorter timeout
    /// applies to hosts already silent, not only after their next beat.
    /// O(hosts), and rare.
    pub fn replace_settings(&mut self, settings: Settings, now: Instant) {
        self.settings = settings;
        for slot in 0..self.registry.slot_end() {
            let Some(host) = self.registry.try_get(slot) else {
                continue; // freed by a forget
            };
            let rule = self.settings.rules.index_for(self.registry.id_of(host));
            self.registry.get_mut(slot).rule = rule;
        }
        // Rounded up, as a stall's: a recomputed deadline is never early.
        self.rebuild_queue(self.clock.ms_ceil(now));
    }

    /// A host's timeout: the silence after which it is `down`. Fixed
    /// detector: the server's (or its rule's), raised to 3 × its declared
    /// interval; phi: where phi reaches the threshold, from its statistics.
    pub fn timeout_for(&self, host: &Host) -> Duration {
        let rule = self.settings.rules.get(host.rule);
        match rule.kind {
            DetectorKind::Fixed => rule
                .timeout
                .max(Duration::from_millis(u64::from(host.interval_ms())) * 3),
            DetectorKind::Phi => self.phi_silence(host, rule.phi.threshold),
        }
    }

    /// Silence after which `host`'s phi reaches `target`.
    pub(super) fn phi_silence(&self, host: &Host, target: f64) -> Duration {
        let rule = self.settings.rules.get(host.rule);
        let ms = rule.phi.silence_for(
            target,
            f64::from(host.stats.interval_mean_ms),
            f64::from(host.stats.interval_std_ms()),
            self.loss_of(host),
        );
        // Bounded so a wild estimate cannot overflow an Instant: a year.
        Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 365.0 * 86_400.0))
    }

    /// The silence after which `host` becomes `late`.
    pub(super) fn late_silence(&self, host: &Host) -> Duration {
        let rule = self.settings.rules.get(host.rule);
        match rule.kind {
            DetectorKind::Fixed => self.timeout_for(host).mul_f64(self.settings.late_ratio),
            DetectorKind::Phi => self.phi_silence(host, rule.phi.late_threshold),
        }
    }

    /// Which detector judges `host`.
    pub fn detector_kind(&self, host: &Host) -> DetectorKind {
        self.settings.rules.get(host.rule).kind
    }

    /// Why `host` is (or is not) suspected at `now`: its phi (phi
    /// detector only) and a one-line explanation, e.g. "phi 9.1: beat 3.2 σ
    /// overdue"; for a host not heard since the server restarted, also the
    /// bounds of its silence (its deadlines count from the restart).
    pub fn explain(&self, host: &Host, now: Instant) -> (Option<f64>, String) {
        let (phi, mut why) = self.explain_detector(host, now);
        if let Some(at_least) = self.silent_at_least(host, now) {
            why.push_str(&format!(
                " (not heard since the server restarted {:.1}s ago; its latest recorded beat was {:.1}s ago)",
                at_least.as_secs_f64(),
                self.silent_for(host, now).as_secs_f64()
            ));
        }
        (phi, why)
    }

    /// [`Monitor::explain`]'s detector part.
    fn explain_detector(&self, host: &Host, now: Instant) -> (Option<f64>, String) {
        let rule = self.settings.rules.get(host.rule);
        let silent =
            Duration::from_millis(self.clock.ms(now).saturating_sub(self.counted_from(host)));
        let mean = f64::from(host.stats.interval_mean_ms);
        let std = f64::from(host.stats.interval_std_ms()).max(rule.phi.min_std_ms);
        match rule.kind {
            DetectorKind::Fixed => {
                let timeout = self.timeout_for(host);
                (
                    None,
                    format!(
                        "silent {:.1}s of a {:.1}s timeout",
                        silent.as_secs_f64(),
                        timeout.as_secs_f64()
                    ),
                )
            }
            DetectorKind::Phi => {
                let ms = silent.as_secs_f64() * 1000.0;
                let loss = self.loss_of(host);
                let phi = rule.phi.phi(ms, mean, std, loss);
                let overdue = (ms - rule.phi.pause_ms - mean) / std.max(1e-3);
                let missed = ((ms - rule.phi.pause_ms) / mean.max(1e-3)).floor().max(0.0);
                // Probes that ended short move `down` later (see `probe`).
                let down_at = self.held_phi_target(host).unwrap_or(rule.phi.threshold);
                (
                    Some(phi),
                    format!(
                        "phi {phi:.1}: beat {overdue:.1} σ overdue ({missed} beats missed; loss {:.1} %, in bursts {:.1} %; down at phi {})",
                        loss.first.max(rule.phi.min_loss) * 100.0,
                        loss.next.max(rule.phi.min_loss) * 100.0,
                        (down_at * 10.0).round() / 10.0
                    ),
                )
            }
        }
    }

    /// Statistics for a host before its first interval is measured.
    pub(super) fn fresh_stats(&self, interval_ms: u32) -> BeatStats {
        BeatStats::new(if interval_ms > 0 {
            interval_ms as f32
        } else {
            // Legacy clients declare nothing: assume the seed's three beats
            // per timeout.
            self.settings.timeout.as_secs_f32() * 1000.0 / 3.0
        })
    }
}
