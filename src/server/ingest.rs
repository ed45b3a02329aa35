//! The UDP receive loop: take datagrams in batches, stamp them once, decode,
//! and apply the whole batch to the detector under one lock.
//!
//! Per packet there is no allocation, no lock and no channel send: a batch
//! of up to 64 datagrams costs one system call, one clock read and one lock.

use super::detector::{Detector, Observation};
use super::events::EventLog;
use super::metrics::Metrics;
use super::recv::Batch;
use crate::protocol::{self, DecodeError, Packet};
use crate::ratelimit::RateLimit;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a datagram was dropped, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a lubdub beat: bad magic, wrong length, bad host id, oversized.
    Malformed,
    /// A lubdub packet of a version this server does not speak.
    UnsupportedVersion,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 2] = [DropReason::Malformed, DropReason::UnsupportedVersion];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedVersion => "unsupported_version",
        }
    }

    fn of(error: DecodeError) -> Self {
        match error {
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            _ => DropReason::Malformed,
        }
    }
}

#[derive(Default)]
struct BatchCounts {
    beats: u64,
    legacy_beats: u64,
    dropped: [u64; DropReason::ALL.len()],
}

/// The receive loop and what it feeds.
pub struct Ingest {
    /// The bound UDP socket.
    pub socket: UdpSocket,
    /// The detector the beats are applied to.
    pub detector: Arc<Mutex<Detector>>,
    /// Wakes the detector's timer when a beat queues an earlier deadline.
    pub wake: Arc<Notify>,
    /// Where state changes go.
    pub events: Arc<EventLog>,
    /// Where the counts go.
    pub metrics: Arc<Metrics>,
}

impl Ingest {
    /// Receives until `shutdown`. A bad packet or a receive error never ends
    /// the loop; it is counted and logged at a limited rate.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut batch = Batch::default();
        let mut bad_packet_log = RateLimit::new(Duration::from_secs(10));
        let mut error_log = RateLimit::new(Duration::from_secs(60));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                ready = self.socket.readable() => if let Err(e) = ready {
                    tracing::error!("udp socket failed: {e}");
                    return;
                },
            }
            match self
                .socket
                .try_io(Interest::READABLE, || batch.recv(&self.socket))
            {
                Ok(_) => self.apply(&batch, &mut bad_packet_log),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                        tracing::warn!(suppressed, "udp receive error: {e}");
                    }
                }
            }
        }
    }

    /// Applies one received batch to the detector under one lock. Public so
    /// that the drain benchmark measures this very path.
    pub fn apply(&self, batch: &Batch, bad_packet_log: &mut RateLimit) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut counts = BatchCounts::default();
        let mut events = Vec::new();
        let mut legacy_id = [0u8; 64];
        let woke = {
            let mut detector = self.detector.lock().expect("detector lock");
            let before = detector.next_deadline();
            for datagram in batch.iter() {
                let decoded = if datagram.truncated {
                    Err(DecodeError::LengthMismatch)
                } else {
                    protocol::decode(datagram.bytes)
                };
                let beat = match decoded {
                    Ok(Packet::V1(beat)) => Observation {
                        host_id: beat.host_id,
                        addr: datagram.from,
                        seq: Some(beat.seq),
                        boot_id: beat.boot_id,
                        interval_ms: beat.interval_ms,
                        goodbye: beat.is_goodbye(),
                    },
                    Ok(Packet::Legacy) => {
                        counts.legacy_beats += 1;
                        legacy_observation(datagram.from, &mut legacy_id)
                    }
                    Err(error) => {
                        counts.dropped[DropReason::of(error) as usize] += 1;
                        if let Some(suppressed) = bad_packet_log.check(std::time::Instant::now()) {
                            tracing::debug!(from = %datagram.from, suppressed, "dropped packet: {error}");
                        }
                        continue;
                    }
                };
                tracing::trace!(host = beat.host_id, addr = %beat.addr, "beat");
                detector.observe(&beat, now, wall, &mut events);
                counts.beats += 1;
            }
            earlier(detector.next_deadline(), before)
        };
        if woke {
            self.wake.notify_one();
        }
        if !events.is_empty() {
            self.events.publish(events);
        }
        let m = &self.metrics;
        m.batches.inc();
        m.datagrams.inc_by(batch.len() as u64);
        m.beats.inc_by(counts.beats);
        m.legacy_beats.inc_by(counts.legacy_beats);
        for (reason, n) in DropReason::ALL.into_iter().zip(counts.dropped) {
            m.add_dropped(reason, n);
        }
    }
}

/// True when `after` is a deadline earlier than `before` (or the first one).
fn earlier(after: Option<Instant>, before: Option<Instant>) -> bool {
    match (after, before) {
        (Some(after), Some(before)) => after < before,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A legacy beat is keyed by its source IP, as the seed did: written as
/// text into `buf` (no allocation), IPv4-mapped IPv6 shown as plain IPv4.
fn legacy_observation(from: SocketAddr, buf: &mut [u8; 64]) -> Observation<'_> {
    let ip = from.ip().to_canonical();
    let addr = SocketAddr::new(ip, from.port());
    let len = format_ip(ip, buf);
    Observation {
        host_id: std::str::from_utf8(&buf[..len]).expect("an IP address is ASCII"),
        addr,
        seq: None,
        boot_id: [0; 16],
        interval_ms: 0,
        goodbye: false,
    }
}

fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> usize {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    write!(cursor, "{ip}").expect("an IP address fits 64 bytes");
    cursor.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_hosts_are_keyed_by_canonical_ip() {
        let mut buf = [0; 64];
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().expect("addr");
        let beat = legacy_observation(mapped, &mut buf);
        assert_eq!(
            (beat.host_id, beat.addr.to_string()),
            ("192.0.2.7", "192.0.2.7:4000".to_string())
        );
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().expect("addr");
        assert_eq!(legacy_observation(v6, &mut buf).host_id, "2001:db8::1");
    }

    #[test]
    fn earlier_deadline_detection() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        assert!(earlier(Some(t), None));
        assert!(earlier(Some(t), Some(later)));
        assert!(!earlier(Some(later), Some(t)));
        assert!(!earlier(None, Some(t)));
    }
}
