//! The JSON shapes the API answers with, copied from the monitor under the
//! fleet's lock and serialised after.

use super::Shared;
use crate::monitor::{Monitor, Slot};
use serde::Serialize;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One host as the API shows it.
#[derive(Serialize)]
pub struct HostView {
    id: String,
    addr: String,
    state: &'static str,
    /// Effective labels: the client's, with the server's rules applied.
    labels: crate::labels::Labels,
    /// RFC 3339: when the host entered its current state.
    since: String,
    /// RFC 3339: when its latest beat arrived.
    last_seen: String,
    /// Since its latest recorded beat: an upper bound when
    /// `silent_seconds_at_least` is set.
    silent_seconds: f64,
    /// Not heard since the server restarted: its silence is at least this
    /// (since the restart); null when known exactly.
    silent_seconds_at_least: Option<f64>,
    timeout_seconds: f64,
    /// Declared by the client; null when unknown (legacy beats).
    interval_seconds: Option<f64>,
    beats: u64,
    losses: u64,
    boot_id: Option<String>,
    legacy: bool,
    /// `fixed` or `phi`.
    detector: &'static str,
    /// phi now (phi detector only).
    phi: Option<f64>,
    /// Why the detector judges the host as it does, in one line.
    why: String,
    /// Down repeatedly within the flap window; alerts are held back.
    flapping: bool,
    /// Mean time per beat, from arrivals (seconds).
    interval_mean_seconds: f64,
    /// Its standard deviation (seconds).
    interval_std_seconds: f64,
    /// Share of its beats lost, as measured: `losses / (beats + losses)`
    /// (0 to 1; 0 for a host that has lost none). The detector's own
    /// estimate, which starts from a prior, stays internal.
    loss_rate: f64,
    /// Recent chance a beat is lost after one was lost (bursts).
    burst_loss_rate: f64,
    duplicates: u16,
    reordered: u16,
    /// Receive minus send time (clock offset plus network delay), seconds;
    /// null until a beat carried a send time.
    clock_offset_seconds: Option<f64>,
    /// The host or group (`group:NAME`) it depends on; null when none. An
    /// `unreachable` host is silent behind it.
    depends_on: Option<String>,
}

/// The share of beats lost among those sent: `losses / (beats + losses)`.
fn measured_loss(beats: u32, losses: u32) -> f64 {
    let sent = f64::from(beats) + f64::from(losses);
    if sent == 0.0 {
        0.0
    } else {
        f64::from(losses) / sent
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl HostView {
    /// The view of the host in `slot` at `now`.
    pub fn new(monitor: &Monitor, slot: Slot, now: Instant) -> Self {
        let registry = monitor.registry();
        let host = registry.get(slot);
        let (phi, why) = monitor.explain(host, now);
        // A suspected host: what its probes say first ("late: 3 probes
        // unanswered (down after 6); …"), issue 15.
        let why = match monitor.probe_status(slot) {
            Some(probes) => format!("{}: {probes}; {why}", host.state.as_str()),
            None => why,
        };
        let interval_ms = host.interval_ms();
        HostView {
            id: registry.id(slot).to_string(),
            addr: registry.addr(slot).to_string(),
            state: host.state.as_str(),
            labels: monitor.labels_of(slot).clone(),
            since: rfc3339(host.since()),
            last_seen: rfc3339(host.last_seen_wall()),
            silent_seconds: monitor.silent_for(host, now).as_secs_f64(),
            silent_seconds_at_least: monitor.silent_at_least(host, now).map(|d| d.as_secs_f64()),
            timeout_seconds: monitor.timeout_of(slot).as_secs_f64(),
            interval_seconds: (interval_ms > 0).then(|| f64::from(interval_ms) / 1000.0),
            beats: u64::from(host.beats),
            losses: u64::from(host.losses),
            boot_id: (host.boot != 0).then(|| format!("{:08x}", host.boot)),
            legacy: host.legacy(),
            detector: monitor.detector_kind(host).as_str(),
            phi,
            why,
            flapping: host.flap.flapping,
            interval_mean_seconds: f64::from(host.stats.interval_mean_ms) / 1000.0,
            interval_std_seconds: f64::from(host.stats.interval_std_ms()) / 1000.0,
            loss_rate: measured_loss(host.beats, host.losses),
            burst_loss_rate: f64::from(host.stats.burst_loss_rate),
            duplicates: host.stats.duplicates,
            reordered: host.stats.reordered,
            clock_offset_seconds: host.stats.clock_offset().map(|ms| f64::from(ms) / 1000.0),
            depends_on: monitor.parent_of(slot).map(|p| p.to_string()),
        }
    }
}

/// Hosts per hold of the fleet's lock while a listing is written.
const STREAM_CHUNK: usize = 1024;

/// The JSON array of the views of `picked` (each a slot and the range of
/// its id in `ids`), built and serialised a chunk at a time as the client
/// reads it: a listing of 150,000 hosts holds one chunk of views and bytes
/// at a time, not all 111 MB of them, and a slow reader holds only its
/// chunk. A host forgotten since it was picked (its slot now empty or
/// another host's) is left out.
pub fn stream_views(
    shared: Arc<Shared>,
    picked: Vec<(Slot, Range<usize>)>,
    ids: String,
) -> axum::body::Body {
    use futures_util::stream::{self, StreamExt};
    let mut first = true;
    // With no host, no chunk writes the opening bracket.
    let empty = picked.is_empty();
    let chunks = (0..picked.len()).step_by(STREAM_CHUNK).map(move |start| {
        let mut out = Vec::with_capacity(STREAM_CHUNK * 800);
        if start == 0 {
            out.push(b'[');
        }
        shared.fleet.read(|monitor| {
            let registry = monitor.registry();
            let now = crate::server::timer::now();
            for (slot, id) in &picked[start..(start + STREAM_CHUNK).min(picked.len())] {
                if registry.try_get(*slot).is_none() || registry.id(*slot) != &ids[id.clone()] {
                    continue;
                }
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &HostView::new(monitor, *slot, now))
                    .expect("a host view serialises");
            }
        });
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(out))
    });
    let head = stream::iter(empty.then(|| Ok(axum::body::Bytes::from_static(b"["))));
    let tail = stream::once(async { Ok(axum::body::Bytes::from_static(b"]")) });
    axum::body::Body::from_stream(head.chain(stream::iter(chunks)).chain(tail))
}
