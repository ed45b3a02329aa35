//! The UDP receive loop: take datagrams in batches, stamp them once, decode,
//! admit ([`Guard`]), and apply the whole batch through the [`Fleet`] under
//! one hold of its lock.
//!
//! Per packet there is no allocation, no lock and no channel send: a batch
//! of up to 64 datagrams costs one system call, one clock read and one lock.
//! The loop runs on a thread of its own in blocking receives, pausing
//! [`GATHER_PAUSE`] after a short batch so that a busy server receives in
//! large batches instead of being woken for every datagram.

use super::dropped::DropReason;
use super::fleet::Fleet;
use super::guard::Guard;
use super::metrics::Metrics;
use super::recv::{self, BATCH, Batch};
use crate::monitor::{Observation, Observed, Outcome};
use crate::protocol::{self, Packet};
use crate::ratelimit::RateLimit;
use std::io;
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    /// The monitor the beats are applied to (it publishes the events).
    pub fleet: Arc<Fleet>,
    /// Where the counts go.
    pub metrics: Arc<Metrics>,
    /// Admission policy (keys, legacy networks, clock skew), applied before
    /// the fleet's lock.
    pub guard: Arc<Guard>,
    /// Beat trace being recorded (`--record`), if any.
    pub record: Option<Mutex<crate::trace::Recorder>>,
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

    /// Applies one received batch through the fleet, under one hold of its
    /// lock. Public so that the drain benchmark measures this very path.
    pub fn apply(
        &self,
        batch: &Batch,
        bad_packet_log: &mut RateLimit,
        host_limit_log: &mut RateLimit,
    ) {
        let (now, wall) = batch.arrival();
        let now = now.into_std();
        let mut counts = BatchCounts::default();
        // Decode and verify the whole batch before taking the lock, into a
        // fixed array on the stack: a forged packet costs no allocation and
        // no lock, and never reaches the registry.
        let mut admitted: [Option<(Packet<'_>, SocketAddr)>; BATCH] = [None; BATCH];
        // Once per batch: a reload may replace the policy in between.
        let policy = self.guard.read();
        // Label and maintenance announcements in this batch (rare: known
        // only once a datagram failed to decode as a beat), handled apart.
        let mut announcements = [false; BATCH];
        for ((slot, datagram), announce) in admitted
            .iter_mut()
            .zip(batch.iter())
            .zip(&mut announcements)
        {
            let checked = if datagram.truncated {
                Err(DropReason::Malformed)
            } else {
                protocol::decode(datagram.bytes)
                    .inspect_err(|e| {
                        // Off the beat path: only a datagram that is no beat.
                        *announce = *e == protocol::DecodeError::BadMagic
                            && (protocol::labels::is_announcement(datagram.bytes)
                                || protocol::maintenance::is_announcement(datagram.bytes));
                    })
                    .map_err(DropReason::of)
                    .and_then(|packet| {
                        policy
                            .check(datagram.bytes, &packet, datagram.from.ip(), wall)
                            .map(|()| match packet {
                                // A host is probed only if it can check
                                // the probe (see `Policy::can_probe`).
                                Packet::V1(mut beat) if !policy.can_probe(&beat) => {
                                    beat.flags &= !protocol::flags::ANSWERS_PROBES;
                                    Packet::V1(beat)
                                }
                                packet => packet,
                            })
                    })
            };
            match checked {
                Ok(packet) => *slot = Some((packet, datagram.from)),
                Err(_) if *announce => {}
                Err(reason) => {
                    counts.dropped[reason as usize] += 1;
                    if let Some(suppressed) = bad_packet_log.check(std::time::Instant::now()) {
                        if reason.is_refused_key() {
                            // A client with the wrong (or no) key looks, to
                            // its operator, like a host that is down: say
                            // where it is and why, at most once a period.
                            tracing::warn!(from = %datagram.from, reason = %reason.as_str(), suppressed, "dropped beat: {}", reason.explain());
                        } else {
                            tracing::debug!(from = %datagram.from, suppressed, "dropped packet: {}", reason.as_str());
                        }
                    }
                }
            }
        }
        drop(policy);
        let maintenance = batch
            .iter()
            .zip(&announcements)
            .any(|(datagram, &announce)| {
                announce && protocol::maintenance::is_announcement(datagram.bytes)
            });
        if maintenance {
            self.announcements(batch, now, wall);
        }
        self.limit_joins(&mut admitted, &mut counts, host_limit_log);
        // Legacy beats are keyed by their address, written as text: one
        // buffer of all of them, so that a batch without any (the common
        // case) allocates nothing.
        let mut legacy_ids = String::new();
        let mut legacy_ends = [0usize; BATCH];
        for ((packet, from), end) in admitted.iter().flatten().zip(&mut legacy_ends) {
            if matches!(packet, Packet::Legacy) {
                push_ip(from.ip().to_canonical(), &mut legacy_ids);
            }
            *end = legacy_ids.len();
        }
        let placeholder = Observation::legacy("", SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut beats = [placeholder; BATCH];
        let mut count = 0;
        let mut start = 0;
        for ((&(packet, from), &end), beat) in
            admitted.iter().flatten().zip(&legacy_ends).zip(&mut beats)
        {
            *beat = match packet {
                Packet::V1(beat) => Observation::v1(&beat, from),
                Packet::Legacy => legacy_observation(&legacy_ids[start..end], from),
            };
            start = end;
            count += 1;
        }
        let beats = &beats[..count];
        let mut results = [Observed::Applied; BATCH];
        let mut out = Outcome::default();
        self.fleet
            .observe_batch(beats, now, wall, &mut results[..count], &mut out);
        let mut recorder = self
            .record
            .as_ref()
            .map(|r| r.lock().expect("recorder lock"));
        for (beat, result) in beats.iter().zip(&results) {
            tracing::trace!(host = beat.host_id, addr = %beat.addr, "beat");
            match result {
                Observed::Applied => {
                    counts.beats += 1;
                    if beat.seq.is_none() {
                        counts.legacy_beats += 1;
                    }
                    if let Some(r) = recorder.as_mut()
                        && let Err(e) = r.record(beat, now)
                    {
                        tracing::error!("beat trace: {e:#}; recording stopped");
                    }
                }
                refused @ (Observed::Replayed | Observed::BadAnswer | Observed::NotLegacy) => {
                    // Off the beat path: only a beat the monitor refused.
                    let (reason, why) = match refused {
                        Observed::Replayed => (DropReason::Replay, "replay"),
                        Observed::BadAnswer => {
                            (DropReason::ProbeNonce, "answer to a probe not sent")
                        }
                        _ => (DropReason::Legacy, "legacy beat for a host that signs"),
                    };
                    counts.dropped[reason as usize] += 1;
                    if let Some(suppressed) = bad_packet_log.check(std::time::Instant::now()) {
                        tracing::debug!(from = %beat.addr, host = beat.host_id, suppressed, "dropped packet: {why}");
                    }
                }
                Observed::HostLimit => {
                    counts.dropped[DropReason::MaxHosts as usize] += 1;
                    if let Some(suppressed) = host_limit_log.check(std::time::Instant::now()) {
                        tracing::warn!(
                            host = beat.host_id,
                            from = %beat.addr,
                            suppressed,
                            "host limit reached (max_hosts = {}): beats from new hosts are dropped",
                            self.fleet.len()
                        );
                    }
                }
            }
        }
        for rtt in &out.probe.answered {
            self.metrics.probe.rtt.observe(rtt.as_secs_f64());
        }
        for moved in &out.moved {
            tracing::info!(host = %moved.host, from = %moved.from, to = %moved.to, "host address changed");
        }
        let m = &self.metrics;
        let labelled = batch
            .iter()
            .zip(announcements)
            .filter(|(datagram, announce)| {
                *announce && protocol::labels::is_announcement(datagram.bytes)
            });
        for (datagram, _) in labelled {
            let result = super::announce::apply(
                &self.fleet,
                &self.guard,
                datagram.bytes,
                datagram.from,
                wall,
            );
            m.label_announcements
                .get_or_create(&super::metrics::ResultLabel { result })
                .inc();
        }
        m.batches.inc();
        m.datagrams.inc_by(batch.len() as u64);
        m.beats.inc_by(counts.beats);
        m.legacy_beats.inc_by(counts.legacy_beats);
        for (reason, n) in DropReason::ALL.into_iter().zip(counts.dropped) {
            m.add_dropped(reason, n);
        }
    }
}

impl Ingest {
    /// Drops the v1 beats of hosts the registry does not know beyond
    /// `join_rate` (see [`super::guard::JoinLimit`]); legacy hosts, keyed
    /// by their address, are not limited. One extra hold of the fleet's
    /// lock per batch, for the lookups, only while a rate is set.
    fn limit_joins(
        &self,
        admitted: &mut [Option<(Packet<'_>, SocketAddr)>; BATCH],
        counts: &mut BatchCounts,
        host_limit_log: &mut RateLimit,
    ) {
        if !self.guard.limits_joins() {
            return;
        }
        let mut ids = [""; BATCH];
        let mut at = [0usize; BATCH];
        let mut count = 0;
        for (i, entry) in admitted.iter().enumerate() {
            if let Some((Packet::V1(beat), _)) = entry {
                (ids[count], at[count]) = (beat.host_id, i);
                count += 1;
            }
        }
        if count == 0 {
            return;
        }
        let mut found = [None; BATCH];
        self.fleet.read(|monitor| {
            monitor
                .registry()
                .find_many(&ids[..count], &mut found[..count])
        });
        let now = std::time::Instant::now();
        for (&i, found) in at[..count].iter().zip(&found[..count]) {
            if found.is_none() && !self.guard.admit_join(now) {
                let from = admitted[i].map(|(_, from)| from);
                admitted[i] = None;
                counts.dropped[DropReason::JoinRate as usize] += 1;
                if let Some(suppressed) = host_limit_log.check(now) {
                    tracing::warn!(
                        from = ?from,
                        suppressed,
                        "new hosts are joining faster than join_rate: beats of further new hosts are dropped"
                    );
                }
            }
        }
    }
}

/// A legacy beat is keyed by its source IP, as the seed did (`id`: that IP
/// as text, see [`push_ip`]); IPv4-mapped IPv6 is shown as plain IPv4.
fn legacy_observation(id: &str, from: SocketAddr) -> Observation<'_> {
    let addr = SocketAddr::new(from.ip().to_canonical(), from.port());
    Observation::legacy(id, addr)
}

/// Appends `ip` as text to `out`.
fn push_ip(ip: IpAddr, out: &mut String) {
    use std::fmt::Write as _;
    write!(out, "{ip}").expect("writing to a String cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_hosts_are_keyed_by_canonical_ip() {
        let key = |from: SocketAddr| {
            let mut id = String::new();
            push_ip(from.ip().to_canonical(), &mut id);
            let beat = legacy_observation(&id, from);
            (beat.host_id.to_string(), beat.addr.to_string(), beat.seq)
        };
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().expect("addr");
        assert_eq!(
            key(mapped),
            ("192.0.2.7".to_string(), "192.0.2.7:4000".to_string(), None)
        );
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().expect("addr");
        assert_eq!(key(v6).0, "2001:db8::1");
    }
}
