//! Scheduled maintenance windows (`[[server.maintenance]]`): a cron
//! schedule read in a time zone, and a duration. No clock reads: every
//! function takes the time it asks about.
//!
//! Cron patterns are `croner`'s (five fields, or six with seconds first),
//! time zones come from the system's time zone database through `jiff`
//! (`/usr/share/zoneinfo`, package `tzdata`). Daylight saving, as croner
//! does it (the Open Cron Pattern Specification, like Vixie cron): a start
//! in the hour skipped in spring runs right after the gap, once; a start in
//! the hour repeated in autumn runs once, at its first pass. The duration
//! is real time from the start: a 1h window is one hour long even across
//! a change of the clocks.

use crate::labels::Labels;
use crate::select::{Selection, Selector};
use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// One `[[server.maintenance]]` entry, as written in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledWindow {
    /// A name for logs and the API (default: the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When windows start: a cron pattern, e.g. `0 2 * * *`.
    pub schedule: String,
    /// How long each lasts (real time), e.g. `1h`.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The time zone the schedule is read in (IANA name). Default: UTC.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Why, shown in the API and sent with the events.
    #[serde(default)]
    pub reason: String,
    /// Host id globs.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Labels the hosts must carry.
    #[serde(default)]
    pub labels: Labels,
    /// Networks the hosts must be in.
    #[serde(default)]
    pub networks: Vec<ipnet::IpNet>,
}

fn utc() -> String {
    "UTC".into()
}

/// A [`ScheduledWindow`] checked and compiled.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Its name (the configured one, else the pattern).
    pub name: String,
    cron: Cron,
    tz: TimeZone,
    /// How long each window lasts.
    pub duration: Duration,
    /// Why.
    pub reason: String,
    /// The hosts it covers, as configured.
    pub selection: Selection,
    /// The compiled selection.
    pub selector: Selector,
}

impl Schedule {
    /// Checks and compiles `w`; the error is one line naming the problem.
    pub fn new(w: &ScheduledWindow) -> Result<Schedule, String> {
        let cron =
            Cron::from_str(&w.schedule).map_err(|e| format!("schedule {:?}: {e}", w.schedule))?;
        let tz = TimeZone::get(&w.timezone).map_err(|e| {
            format!(
                "timezone {:?}: {e} (an IANA name such as Europe/Berlin; is tzdata installed?)",
                w.timezone
            )
        })?;
        crate::protocol::maintenance::check_reason(&w.reason)
            .map_err(|e| format!("reason: {e}"))?;
        if w.duration.is_zero() {
            return Err("duration: must be greater than 0".into());
        }
        let selection = Selection {
            hosts: w.hosts.clone(),
            labels: w.labels.clone(),
            networks: w.networks.clone(),
        };
        if selection.is_everything() {
            return Err(
                "select hosts with hosts, labels or networks (hosts = [\"*\"] for all)".into(),
            );
        }
        let selector = selection.compile().map_err(|e| format!("hosts: {e}"))?;
        Ok(Schedule {
            name: w.name.clone().unwrap_or_else(|| w.schedule.clone()),
            cron,
            tz,
            duration: w.duration,
            reason: w.reason.clone(),
            selection,
            selector,
        })
    }

    /// The first start strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let from = Timestamp::try_from(after).ok()?.to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(SystemTime::from(next.timestamp()))
    }

    /// The start of the window that covers `at`, if one does (a server
    /// started in the middle of a window opens it for the rest).
    pub fn covering(&self, at: SystemTime) -> Option<SystemTime> {
        let from = Timestamp::try_from(at).ok()?.to_zoned(self.tz.clone());
        let start = self.cron.find_previous_occurrence(&from, true).ok()?;
        let start = SystemTime::from(start.timestamp());
        (start + self.duration > at).then_some(start)
    }
}

/// Validates every entry of `[[server.maintenance]]`.
pub fn compile(windows: &[ScheduledWindow]) -> Result<Vec<Schedule>, String> {
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| Schedule::new(w).map_err(|e| format!("entry {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<Timestamp>().expect("timestamp"))
    }

    fn show(t: SystemTime) -> String {
        Timestamp::try_from(t).expect("in range").to_string()
    }

    fn berlin(schedule: &str, duration: &str) -> Schedule {
        Schedule::new(&ScheduledWindow {
            name: None,
            schedule: schedule.into(),
            duration: humantime::parse_duration(duration).expect("duration"),
            timezone: "Europe/Berlin".into(),
            reason: "backup".into(),
            hosts: vec!["*".into()],
            labels: Labels::new(),
            networks: Vec::new(),
        })
        .expect("valid")
    }

    /// Successive starts from `from`, in UTC.
    fn starts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).expect("a next start");
                show(t)
            })
            .collect()
    }

    #[test]
    fn a_nightly_window_keeps_local_time_across_both_changes() {
        let nightly = berlin("0 2 * * *", "1h");
        // Spring (29 March 2026): 02:00 does not exist; the window starts
        // right after the gap, 03:00 CEST, then 02:00 CEST (00:00 UTC).
        assert_eq!(
            starts(&nightly, "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-28T01:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ]
        );
        // Autumn (25 October 2026): 02:00 happens twice; one window, at
        // the first (CEST), then 02:00 CET (01:00 UTC).
        assert_eq!(
            starts(&nightly, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-26T01:00:00Z",
            ]
        );
    }

    #[test]
    fn a_window_spanning_the_change_lasts_its_duration_in_real_time() {
        // 01:30 CET, two hours: it ends at 04:30 CEST (02:30 UTC).
        let s = berlin("30 1 * * *", "2h");
        let start = s.next_after(at("2026-03-29T00:00:00Z")).expect("start");
        assert_eq!(show(start), "2026-03-29T00:30:00Z");
        assert_eq!(s.covering(at("2026-03-29T02:29:59Z")), Some(start));
        assert_eq!(s.covering(at("2026-03-29T02:30:00Z")), None);
        assert_eq!(s.covering(at("2026-03-29T00:29:59Z")), None);
    }

    #[test]
    fn bad_entries_are_one_line_errors() {
        let good = ScheduledWindow {
            name: None,
            schedule: "0 2 * * *".into(),
            duration: Duration::from_secs(3600),
            timezone: "Europe/Berlin".into(),
            reason: String::new(),
            hosts: vec!["db-*".into()],
            labels: Labels::new(),
            networks: Vec::new(),
        };
        assert!(compile(std::slice::from_ref(&good)).is_ok());
        for (bad, says) in [
            (
                ScheduledWindow {
                    schedule: "0 25 * * *".into(),
                    ..good.clone()
                },
                "schedule",
            ),
            (
                ScheduledWindow {
                    timezone: "Mars/Olympus".into(),
                    ..good.clone()
                },
                "timezone",
            ),
            (
                ScheduledWindow {
                    duration: Duration::ZERO,
                    ..good.clone()
                },
                "duration",
            ),
            (
                ScheduledWindow {
                    hosts: vec![],
                    ..good.clone()
                },
                "select hosts",
            ),
            (
                ScheduledWindow {
                    reason: "backup\0".into(),
                    ..good.clone()
                },
                "reason: control character",
            ),
        ] {
            let error = compile(&[bad]).expect_err("refused");
            assert!(
                error.starts_with("entry 1: ") && error.contains(says),
                "{error}"
            );
            assert!(!error.contains('\n'));
        }
    }
}
