//! The UDP receive loop: take datagrams in batches, stamp them once, decode,
//! and apply the whole batch to the detector under one lock.
//!
//! Per packet there is no allocation, no lock and no channel send: a batch
//! of up to 64 datagrams costs one system call, one clock read and one lock.
//! The loop runs on a thread of its own in blocking receives, pausing
//! [`GATHER_PAUSE`] after a short batch so that a busy server receives in
//! large batches instead of being woken for every datagram.

use super::detector::{Detector, Observation, Observed};
use super::events::EventLog;
use super::guard::Guard;
use super::metrics::Metrics;
use super::recv::{self, BATCH, Batch};
use crate::protocol::{self, DecodeError, Packet};
use crate::ratelimit::RateLimit;
use std::io::{self, Write};
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// With keys: a beat without a tag.
    Unsigned,
    /// With keys: a tag whose MAC does not verify.
    BadMac,
    /// With keys: a tag naming a key id the server does not have.
    UnknownKey,
    /// With keys: a legacy `Thump!` from outside `legacy_networks`.
    Legacy,
    /// With keys: a sequence number seen before or too old (a replay).
    Replay,
    /// With keys: a send time further than `max_clock_skew` from ours.
    ClockSkew,
    /// A new host while `max_hosts` hosts are tracked.
    MaxHosts,
    /// A host id with a control, bidirectional or invisible character
    /// (see [`protocol::forbidden_in_host_id`]).
    BadHostId,
    /// A new host beyond `join_rate` joins a second.
    JoinRate,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::UnsupportedVersion,
        DropReason::Unsigned,
        DropReason::BadMac,
        DropReason::UnknownKey,
        DropReason::Legacy,
        DropReason::Replay,
        DropReason::ClockSkew,
        DropReason::MaxHosts,
        DropReason::BadHostId,
        DropReason::JoinRate,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::Unsigned => "unsigned",
            DropReason::BadMac => "bad_mac",
            DropReason::UnknownKey => "unknown_key",
            DropReason::Legacy => "legacy",
            DropReason::Replay => "replay",
            DropReason::ClockSkew => "clock_skew",
            DropReason::MaxHosts => "max_hosts",
            DropReason::BadHostId => "bad_host_id",
            DropReason::JoinRate => "join_rate",
        }
    }

    fn of(error: DecodeError) -> Self {
        match error {
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            DecodeError::HostIdForbiddenChar => DropReason::BadHostId,
            _ => DropReason::Malformed,
        }
    }
}

/// How long the receive thread pauses after a receive that did not fill its
/// batch, so that datagrams accumulate in the socket and the next receive
/// takes many at once: at 100,000 beats/s, about 100 arrive meanwhile,
/// where without the pause nearly every wake-up would take one or two. The
/// cost is latency: a beat waits at most this long (plus the thread's
/// wake-up) before it is applied. Its time is the kernel's arrival stamp
/// of the batch's newest datagram ([`Batch::arrival`]), so a host's
/// deadline lies at most the batch's spread (about this pause) later than
/// its beat, far inside the detector's 10 ms budget; without kernel stamps,
/// the wait counts too. On an idle server the thread blocks in the kernel
/// instead and costs nothing.
pub const GATHER_PAUSE: Duration = Duration::from_millis(1);

/// How long a blocking receive waits before the thread looks at the stop
/// flag again, where shutting the socket down does not interrupt it (not
/// Linux); it bounds how long a stopping server waits for this thread.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// Pause after a receive error other than "nothing yet", so that a socket
/// that keeps failing does not spin the thread.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct BatchCounts {
    beats: u64,
    legacy_beats: u64,
    dropped: [u64; DropReason::ALL.len()],
}

/// The receive loop and what it feeds.
pub struct Ingest {
    /// The bound UDP socket; [`Ingest::run`] makes it blocking, with a
    /// read timeout.
    pub socket: UdpSocket,
    /// The detector the beats are applied to.
    pub detector: Arc<Mutex<Detector>>,
    /// Wakes the detector's timer when a beat queues an earlier deadline.
    pub wake: Arc<Notify>,
    /// Where state changes go.
    pub events: Arc<EventLog>,
    /// Where the counts go.
    pub metrics: Arc<Metrics>,
    /// Admission policy (keys, legacy networks, clock skew), applied before
    /// the detector lock.
    pub guard: Arc<Guard>,
    /// Beat trace being recorded (`--record`), if any.
    pub record: Option<Mutex<crate::simulate::Recorder>>,
}

impl Ingest {
    /// Receives until `shutdown`. A bad packet or a receive error never ends
    /// the loop; it is counted and logged at a limited rate.
    ///
    /// The receiving runs on a thread of its own (`lubdub-recv`), in
    /// blocking `recvmmsg` calls, not as a task woken by the reactor: at
    /// 100,000 beats/s a readiness-driven task is woken for nearly every
    /// datagram, and the wake-up (epoll, task switch, a
    /// second receive that finds nothing) costs far more than the beat.
    /// See [`GATHER_PAUSE`] for how the thread keeps its batches large.
    pub async fn run(self, shutdown: CancellationToken) {
        let stop = Arc::new(AtomicBool::new(false));
        // Another handle on the same socket, to interrupt a blocked receive.
        let interrupt = self.socket.try_clone();
        let ingest = Arc::new(self);
        let finished = CancellationToken::new();
        let body = || {
            let (ingest, stop, finished) = (ingest.clone(), stop.clone(), finished.clone());
            move || {
                // Cancelled however the loop ends, a panic included.
                let _finished = finished.drop_guard();
                ingest.receive(&stop);
            }
        };
        // A named thread, so that `top -H` and perf show the receive path.
        let thread = std::thread::Builder::new().name("lubdub-recv".into());
        if let Err(e) = thread.spawn(body()) {
            tracing::warn!("cannot start the receive thread ({e}); using tokio's blocking pool");
            drop(tokio::task::spawn_blocking(body()));
        }
        shutdown.cancelled().await;
        stop.store(true, Ordering::Release);
        // On Linux, shutting down the reading side wakes a blocked
        // `recvmmsg` at once; elsewhere the read timeout bounds the wait.
        if let Ok(socket) = &interrupt {
            let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
        }
        finished.cancelled().await;
    }

    /// The receive thread's loop: blocking batched receives until `stop`.
    fn receive(&self, stop: &AtomicBool) {
        let mut batch = Batch::default();
        let mut bad_packet_log = RateLimit::new(Duration::from_secs(10));
        let mut host_limit_log = RateLimit::new(Duration::from_secs(60));
        let mut error_log = RateLimit::new(Duration::from_secs(60));
        let blocking = self
            .socket
            .set_nonblocking(false)
            .and_then(|()| self.socket.set_read_timeout(Some(RECV_TIMEOUT)));
        if let Err(e) = &blocking {
            // Still correct on a non-blocking socket (`WouldBlock` below
            // pauses), only with more wake-ups.
            tracing::warn!("cannot make the UDP socket blocking: {e}");
        }
        if let Err(e) = recv::stamp_arrivals(&self.socket) {
            tracing::debug!("no kernel arrival stamps ({e}): beats are stamped when received");
        }
        loop {
            let received = batch.recv_wait(&self.socket);
            // Before using the batch: a receive interrupted by the shutdown
            // returns an empty read, which is not a datagram.
            if stop.load(Ordering::Acquire) {
                break;
            }
            match received {
                Ok(0) => {}
                Ok(n) => {
                    self.apply(&batch, &mut bad_packet_log, &mut host_limit_log);
                    if n < BATCH {
                        std::thread::sleep(GATHER_PAUSE);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if blocking.is_err() {
                        std::thread::sleep(GATHER_PAUSE);
                    }
                }
                Err(e) => {
                    if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                        tracing::warn!(suppressed, "udp receive error: {e}");
                    }
                    // An error that repeats (a socket gone bad) must not
                    // spin the thread.
                    std::thread::sleep(ERROR_PAUSE);
                }
            }
        }
        self.stop_recording();
    }

    /// Flushes the beat trace; on a write error, reports it and stops
    /// recording (the server goes on).
    fn stop_recording(&self) {
        if let Some(recorder) = &self.record {
            let mut recorder = recorder.lock().expect("recorder lock");
            if let Err(e) = recorder.flush() {
                tracing::error!("beat trace: {e:#}");
            }
        }
    }

    /// Applies one received batch to the detector under one lock. Public so
    /// that the drain benchmark measures this very path.
    pub fn apply(
        &self,
        batch: &Batch,
        bad_packet_log: &mut RateLimit,
        host_limit_log: &mut RateLimit,
    ) {
        let (now, wall) = batch.arrival();
        let mut counts = BatchCounts::default();
        let mut events = Vec::new();
        let mut legacy_id = [0u8; 64];
        // Decode and verify the whole batch before taking the lock, into a
        // fixed array on the stack: a forged packet costs no allocation and
        // no lock, and never reaches the registry.
        let mut admitted: [Option<(Packet<'_>, SocketAddr)>; BATCH] = [None; BATCH];
        for (slot, datagram) in admitted.iter_mut().zip(batch.iter()) {
            let checked = if datagram.truncated {
                Err(DropReason::Malformed)
            } else {
                protocol::decode(datagram.bytes)
                    .map_err(DropReason::of)
                    .and_then(|packet| {
                        self.guard
                            .check(datagram.bytes, &packet, datagram.from.ip(), wall)
                            .map(|()| packet)
                    })
            };
            match checked {
                Ok(packet) => *slot = Some((packet, datagram.from)),
                Err(reason) => {
                    counts.dropped[reason as usize] += 1;
                    if let Some(suppressed) = bad_packet_log.check(std::time::Instant::now()) {
                        tracing::debug!(from = %datagram.from, suppressed, "dropped packet: {}", reason.as_str());
                    }
                }
            }
        }
        let mut recorder = self
            .record
            .as_ref()
            .map(|r| r.lock().expect("recorder lock"));
        let woke = {
            let mut detector = self.detector.lock().expect("detector lock");
            let before = detector.next_deadline();
            // All lookups first (see `Registry::find_many`); legacy beats,
            // keyed by their address, are looked up as they are applied.
            let mut ids = [""; BATCH];
            for (id, (packet, _)) in ids.iter_mut().zip(admitted.iter().flatten()) {
                if let Packet::V1(beat) = packet {
                    *id = beat.host_id;
                }
            }
            let mut found = [None; BATCH];
            let count = admitted.iter().flatten().count();
            detector
                .registry()
                .find_many(&ids[..count], &mut found[..count]);
            for (found, (packet, _)) in found.iter_mut().zip(admitted.iter().flatten()) {
                if matches!(packet, Packet::Legacy) {
                    *found = None;
                }
            }
            for (&(packet, from), &found) in admitted.iter().flatten().zip(&found) {
                // A host the registry does not know joins within the rate
                // (legacy hosts are looked up later: they are not limited).
                if found.is_none() && matches!(packet, Packet::V1(_)) && !self.guard.admit_join(now)
                {
                    counts.dropped[DropReason::JoinRate as usize] += 1;
                    if let Some(suppressed) = host_limit_log.check(std::time::Instant::now()) {
                        tracing::warn!(
                            from = %from,
                            suppressed,
                            "new hosts are joining faster than join_rate: beats of further new hosts are dropped"
                        );
                    }
                    continue;
                }
                let beat = match packet {
                    Packet::V1(beat) => Observation {
                        host_id: beat.host_id,
                        addr: from,
                        seq: Some(beat.seq),
                        boot_id: beat.boot_id,
                        interval_ms: beat.interval_ms,
                        goodbye: beat.is_goodbye(),
                        sent_at_micros: beat.sent_at_micros,
                    },
                    Packet::Legacy => legacy_observation(from, &mut legacy_id),
                };
                tracing::trace!(host = beat.host_id, addr = %beat.addr, "beat");
                match detector.observe_found(found, &beat, now, wall, &mut events) {
                    Observed::Applied => {
                        counts.beats += 1;
                        if matches!(packet, Packet::Legacy) {
                            counts.legacy_beats += 1;
                        }
                        if let Some(r) = recorder.as_mut()
                            && let Err(e) = r.record(&beat, now)
                        {
                            tracing::error!("beat trace: {e:#}; recording stopped");
                        }
                    }
                    Observed::Replayed => {
                        counts.dropped[DropReason::Replay as usize] += 1;
                        if let Some(suppressed) = bad_packet_log.check(std::time::Instant::now()) {
                            tracing::debug!(from = %from, host = beat.host_id, suppressed, "dropped packet: replay");
                        }
                    }
                    Observed::HostLimit => {
                        counts.dropped[DropReason::MaxHosts as usize] += 1;
                        if let Some(suppressed) = host_limit_log.check(std::time::Instant::now()) {
                            tracing::warn!(
                                host = beat.host_id,
                                from = %from,
                                suppressed,
                                "host limit reached (max_hosts = {}): beats from new hosts are dropped",
                                detector.registry().len()
                            );
                        }
                    }
                }
            }
            // Published under the lock, so that events reach the sinks in
            // the order the detector made them (a `down` from the timer
            // never after the `recovered` that followed it).
            if !events.is_empty() {
                self.events.publish(events);
            }
            earlier(detector.next_deadline(), before)
        };
        if woke {
            self.wake.notify_one();
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
        sent_at_micros: 0,
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
