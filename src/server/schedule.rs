//! The task that opens scheduled maintenance windows
//! (`[[server.maintenance]]`) when their time comes, over the hosts their
//! selection picks then. A server started inside a window opens it for the
//! rest of its duration.

use super::fleet::Fleet;
use super::timer::now;
use crate::monitor::maintenance::{Request, Source};
use crate::schedule::Schedule;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Longest sleep between looks at the wall clock: a clock stepped (NTP, a
/// suspended machine) is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The window `schedule` opens at `start`.
fn request(schedule: &Schedule, start: SystemTime) -> Request {
    Request {
        source: Source::Schedule,
        reason: schedule.reason.clone(),
        until: start + schedule.duration,
        selection: schedule.selection.clone(),
        schedule: Some(schedule.name.clone()),
    }
}

fn open(fleet: &Fleet, schedule: &Schedule, start: SystemTime) {
    let wall = SystemTime::now();
    match fleet.open_window(request(schedule, start), &schedule.selector, now(), wall) {
        Ok(w) => tracing::info!(
            schedule = %schedule.name,
            window = w.id,
            hosts = w.hosts.len(),
            until = %humantime::format_rfc3339_seconds(w.until),
            "scheduled maintenance window opened"
        ),
        Err(e) => tracing::debug!(schedule = %schedule.name, "scheduled window not opened: {e}"),
    }
}

/// Opens each schedule's windows as they come, until `stop`.
pub async fn run(fleet: Arc<Fleet>, schedules: Vec<Schedule>, stop: CancellationToken) {
    if schedules.is_empty() {
        return;
    }
    let started = SystemTime::now();
    let mut next: Vec<Option<SystemTime>> = Vec::with_capacity(schedules.len());
    for schedule in &schedules {
        if let Some(start) = schedule.covering(started) {
            open(&fleet, schedule, start);
        }
        next.push(schedule.next_after(started));
    }
    loop {
        let wall = SystemTime::now();
        for (schedule, due) in schedules.iter().zip(&mut next) {
            while let Some(start) = *due
                && start <= wall
            {
                // One missed by more than its duration (the machine slept)
                // is over already: only the latest one still running opens.
                if start + schedule.duration > wall {
                    open(&fleet, schedule, start);
                }
                *due = schedule.next_after(start);
            }
        }
        let earliest = next.iter().flatten().min().copied();
        let sleep = earliest
            .map_or(MAX_SLEEP, |t| t.duration_since(wall).unwrap_or_default())
            .min(MAX_SLEEP);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::monitor::testing::{beat, kinds, one, settings};
    use crate::monitor::{EventKind, HostState, Monitor, Observation, Outcome};
    use crate::schedule::{Schedule, ScheduledWindow};
    use std::time::{Duration, Instant, SystemTime};

    /// A whole night on simulated time: a host beats every 10 s until a
    /// scheduled window (01:30 Berlin, 2 h) opens on the night the clocks
    /// go forward, then falls silent. It pages no one for the window's two
    /// real hours (which end at 04:30 on the wall), then goes late and down
    /// a fresh timeout after.
    #[test]
    fn a_scheduled_window_across_the_spring_change_on_simulated_time() {
        let schedule = Schedule::new(&ScheduledWindow {
            name: Some("nightly".into()),
            schedule: "30 1 * * *".into(),
            duration: Duration::from_secs(2 * 3600),
            timezone: "Europe/Berlin".into(),
            reason: "backup".into(),
            hosts: vec!["db-*".into()],
            labels: Default::default(),
            networks: Vec::new(),
        })
        .expect("valid");
        let wall0 = SystemTime::from(
            "2026-03-29T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .expect("time"),
        );
        let t0 = Instant::now();
        let mut monitor = Monitor::new(settings(), t0, wall0);
        let at = |secs: u64| {
            (
                t0 + Duration::from_secs(secs),
                wall0 + Duration::from_secs(secs),
            )
        };
        let start = schedule.next_after(wall0).expect("a start");
        let start_secs = start.duration_since(wall0).expect("later").as_secs();
        assert_eq!(start_secs, 1800, "01:30 CET is 00:30 UTC");
        let mut out = Outcome::default();
        for (i, secs) in (0..start_secs).step_by(10).enumerate() {
            let (now, wall) = at(secs);
            monitor.expire(now, wall, &mut out);
            let b = Observation {
                seq: Some(i as u64 + 1),
                ..beat("db-1")
            };
            monitor.observe(&b, now, wall, &mut out);
        }
        out.clear();
        let (now, wall) = at(start_secs);
        let slots = monitor.selected(&schedule.selector);
        monitor
            .open_window(
                super::request(&schedule, start),
                &slots,
                now,
                wall,
                &mut out,
            )
            .expect("opens");
        assert_eq!(
            kinds(std::mem::take(&mut out.events)),
            one(EventKind::MaintenanceStarted, "db-1")
        );
        // Silent through the night: every minute, nothing, until 02:30 UTC.
        let end = start_secs + 2 * 3600;
        for secs in (start_secs..end).step_by(60) {
            let (now, wall) = at(secs);
            monitor.expire(now, wall, &mut out);
        }
        assert_eq!(kinds(std::mem::take(&mut out.events)), vec![]);
        let (now, wall) = at(end);
        monitor.expire(now, wall, &mut out);
        assert_eq!(
            kinds(std::mem::take(&mut out.events)),
            one(EventKind::MaintenanceEnded, "db-1")
        );
        let host = monitor.registry().find("db-1").expect("known");
        assert_eq!(monitor.registry().get(host).state, HostState::Up);
        let (now, wall) = at(end + 14);
        monitor.expire(now, wall, &mut out);
        assert!(out.events.is_empty(), "a fresh timeout from the end");
        let (now, wall) = at(end + 30);
        monitor.expire(now, wall, &mut out);
        assert_eq!(
            kinds(std::mem::take(&mut out.events)),
            [one(EventKind::Late, "db-1"), one(EventKind::Down, "db-1")].concat()
        );
    }
}
