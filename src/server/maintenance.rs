//! Maintenance windows on the server: opening one over a host selection
//! (API, schedule), ending one, and a host's own announcement received on
//! the UDP socket and confirmed to it (see `protocol::maintenance`).

use super::dropped::DropReason;
use super::fleet::Fleet;
use super::ingest::Ingest;
use super::recv::Batch;
use crate::monitor::Outcome;
use crate::monitor::maintenance::{Announced, Refused, Request, Source, Window};
use crate::protocol::maintenance::{self as wire, Announcement, Confirmation, status};
use crate::select::Selector;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest window a host may announce for itself.
pub const MAX_HOST_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl Fleet {
    /// Opens a window over every known host `selector` picks.
    pub fn open_window(
        &self,
        request: Request,
        selector: &Selector,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Window, Refused> {
        let mut out = Outcome::default();
        self.act(&mut out, |monitor, out| {
            let slots = monitor.selected(selector);
            monitor.open_window(request, &slots, now, wall, out)
        })
    }

    /// Ends window `id` now.
    pub fn end_window(&self, id: u64, now: Instant, wall: SystemTime) -> Result<Window, Refused> {
        let mut out = Outcome::default();
        self.act(&mut out, |monitor, out| {
            monitor.end_window(id, now, wall, out)
        })
    }

    /// The open windows as the store keeps them (JSON), when they changed
    /// since the last call.
    pub fn take_windows(&self) -> Option<Vec<u8>> {
        let windows = self.act(&mut Outcome::default(), |monitor, _| {
            monitor.take_windows(SystemTime::now())
        })?;
        serde_json::to_vec(&windows).ok()
    }

    /// Marks the windows for the next checkpoint again (a write failed).
    pub fn untake_windows(&self) {
        self.act(&mut Outcome::default(), |monitor, _| {
            monitor.untake_windows()
        });
    }

    /// The open windows, oldest first.
    pub fn windows(&self) -> Vec<Window> {
        self.read(|monitor| monitor.windows().cloned().collect())
    }

    /// A host's own announcement (already authenticated): opens its window
    /// unless it is a replay. `None`: refused, answer nothing.
    fn announced(
        &self,
        a: &Announcement<'_>,
        forget_before_micros: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Option<(u8, Option<Window>)> {
        let mut out = Outcome::default();
        self.act(&mut out, |monitor, out| {
            let slot = match monitor.accept_announcement(
                a.host_id,
                a.sent_at_micros,
                forget_before_micros,
            ) {
                Announced::Fresh(slot) => slot,
                Announced::Stale => return None,
                Announced::UnknownHost => return Some((status::UNKNOWN_HOST, None)),
            };
            let request = Request {
                source: Source::Host,
                reason: a.reason.to_string(),
                until: wall + Duration::from_millis(a.duration_ms),
                selection: crate::select::Selection {
                    hosts: vec![a.host_id.to_string()],
                    ..Default::default()
                },
                schedule: None,
            };
            match monitor.open_window(request, &[slot], now, wall, out) {
                Ok(window) if !window.hosts.is_empty() => Some((status::OPEN, Some(window))),
                Ok(window) => {
                    // Nothing opened (the host is paused or left): no
                    // empty window stays behind.
                    let _ = monitor.end_window(window.id, now, wall, out);
                    Some((status::NOT_OPENED, None))
                }
                Err(_) => Some((status::NOT_OPENED, None)),
            }
        })
    }
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Ingest {
    /// Handles the maintenance announcements of a received batch: each is
    /// checked like a beat (keys, clock skew), must be newer than the
    /// host's last one (no replay), opens the host's window, and is
    /// answered with a confirmation signed with the same key. A refused
    /// one is counted as dropped and answered with nothing.
    pub(super) fn announcements(&self, batch: &Batch, now: Instant, wall: SystemTime) {
        let policy = self.guard.read();
        let mut reply = Vec::with_capacity(128);
        for datagram in batch.iter() {
            if !datagram.bytes.starts_with(&wire::ANNOUNCE_MAGIC) {
                continue;
            }
            let checked = wire::decode_announcement(datagram.bytes)
                .map_err(|_| DropReason::Malformed)
                .and_then(|a| {
                    let Some(keys) = policy.keys() else {
                        return Ok(a);
                    };
                    keys.verify_tagged(datagram.bytes, a.tag, a.host_id)
                        .map_err(|e| match e {
                            crate::auth::VerifyError::Unsigned => DropReason::Unsigned,
                            crate::auth::VerifyError::UnknownKey => DropReason::UnknownKey,
                            crate::auth::VerifyError::BadMac => DropReason::BadMac,
                        })?;
                    let skew = micros(wall).abs_diff(a.sent_at_micros);
                    if skew > u64::try_from(policy.max_clock_skew().as_micros()).unwrap_or(u64::MAX)
                    {
                        return Err(DropReason::ClockSkew);
                    }
                    Ok(a)
                })
                .and_then(|a| {
                    let length = Duration::from_millis(a.duration_ms);
                    if length.is_zero() || length > MAX_HOST_WINDOW {
                        return Err(DropReason::Malformed);
                    }
                    Ok(a)
                });
            let a = match checked {
                Ok(a) => a,
                Err(reason) => {
                    self.refused(reason, datagram.from);
                    continue;
                }
            };
            let skew = policy.max_clock_skew().max(Duration::from_secs(1));
            let forget_before = micros(wall.checked_sub(skew).unwrap_or(UNIX_EPOCH));
            let Some((code, window)) = self.fleet.announced(&a, forget_before, now, wall) else {
                self.refused(DropReason::Replay, datagram.from);
                continue;
            };
            if let Some(w) = &window {
                tracing::info!(host = a.host_id, from = %datagram.from, window = w.id, reason = a.reason, "maintenance announced by the host");
            }
            let answer = Confirmation {
                status: code,
                nonce: a.nonce,
                until_micros: window.as_ref().map_or(0, |w| micros(w.until)),
                window: window.as_ref().map_or(0, |w| w.id),
                host_id: a.host_id,
                tag: None,
            };
            let key_id = a.tag.filter(|_| policy.keys().is_some()).map(|t| t.key_id);
            if wire::encode_confirmation(&answer, key_id, &mut reply).is_err() {
                continue;
            }
            if let (Some(keys), Some(id)) = (policy.keys(), key_id) {
                keys.sign_tagged(id, a.host_id, &mut reply);
            }
            if let Err(e) = self.socket.send_to(&reply, datagram.from) {
                tracing::warn!(to = %datagram.from, "cannot confirm maintenance: {e}");
            }
        }
    }

    fn refused(&self, reason: DropReason, from: SocketAddr) {
        self.metrics.add_dropped(reason, 1);
        tracing::warn!(%from, reason = reason.as_str(), "refused maintenance announcement: {}", reason.explain());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::monitor::testing::{beat, settings};
    use crate::monitor::{HostState, Monitor, Observed};
    use crate::select::Selection;
    use crate::server::events::EventLog;
    use std::sync::Arc;

    /// An operator's window over a label selection picks exactly the hosts
    /// whose labels (as `Monitor::labels_of` has them) match.
    #[test]
    fn a_window_over_a_label_selection_takes_the_labelled_hosts_only() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut monitor = Monitor::new(settings(), now, wall);
        let mut out = Outcome::default();
        for id in ["web-1", "web-2", "db-1"] {
            let applied = monitor.observe(&beat(id), now, wall, &mut out);
            assert_eq!(applied, Observed::Applied);
        }
        let web = Labels::parse_list("team=web").expect("labels");
        for id in ["web-1", "db-1"] {
            let declared = monitor.declare_labels(id, &web, 1);
            assert!(matches!(declared, crate::monitor::Declared::Applied { .. }));
        }
        let fleet = Fleet::new(monitor, Arc::new(EventLog::new(100)));
        let selection = Selection {
            labels: web,
            ..Selection::default()
        };
        let request = Request {
            source: Source::Api,
            reason: "team web's rollout".into(),
            until: wall + Duration::from_secs(3600),
            selection: selection.clone(),
            schedule: None,
        };
        let selector = selection.compile().expect("compiles");
        let window = fleet
            .open_window(request, &selector, now, wall)
            .expect("opens");
        assert_eq!(window.hosts, ["db-1", "web-1"]);
        let states: Vec<(String, HostState)> = fleet.read(|m| {
            m.registry()
                .iter()
                .map(|(slot, h)| (m.registry().id(slot).to_string(), h.state))
                .collect()
        });
        assert!(
            states.contains(&("web-2".into(), HostState::Up)),
            "{states:?}"
        );
        assert!(states.contains(&("web-1".into(), HostState::Maintenance)));
    }
}
