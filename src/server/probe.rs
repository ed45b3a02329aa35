//! Sending the probes the monitor asks for (issue 15), and their metrics.
//!
//! The monitor decides whom to probe and draws the nonces
//! (`monitor::probe`); the timer hands its requests here, outside the
//! fleet's lock. A probe goes from the server's own UDP socket (the one
//! the beats arrive on, so a NAT mapping the beats keep open lets it in)
//! to the address and port of the host's latest beat that was admitted:
//! with keys, only a verified beat moves that address. It is signed with
//! the server's newest key when it has keys, and always shorter than the
//! beat that earned it.

use super::guard::Guard;
use crate::monitor::probe::{ProbeRequest, ProbeTotals};
use crate::protocol::{self, probe::Probe};
use crate::ratelimit::RateLimit;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

/// Longest a probe's send may block (a full socket buffer): the timer
/// must not wait on the network.
const SEND_TIMEOUT: Duration = Duration::from_millis(10);

/// Buckets of the probe round trip, in seconds: 100 µs to ~3 s.
fn rtt_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.5, 12)
}

/// Probing's metrics (handles: clones count into the same series).
#[derive(Clone, Debug)]
pub struct ProbeMetrics {
    /// Probes sent.
    pub sent: Counter,
    /// Probes answered.
    pub answered: Counter,
    /// Probes unanswered for a whole probe interval.
    pub unanswered: Counter,
    /// Hosts declared `down` after their probes went unanswered.
    pub confirmed_down: Counter,
    /// Probes not sent: the server-wide rate was spent.
    pub rate_limited: Counter,
    /// Answers that came after their host's suspicion ended.
    pub late_answers: Counter,
    /// Probes the socket refused to send.
    pub send_errors: Counter,
    /// Hosts under suspicion now.
    pub suspects: Gauge,
    /// Round trip of answered probes.
    pub rtt: Histogram,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self {
            sent: Counter::default(),
            answered: Counter::default(),
            unanswered: Counter::default(),
            confirmed_down: Counter::default(),
            rate_limited: Counter::default(),
            late_answers: Counter::default(),
            send_errors: Counter::default(),
            suspects: Gauge::default(),
            rtt: Histogram::new(rtt_buckets()),
        }
    }
}

impl ProbeMetrics {
    /// Registers every series under `lubdub_probes_…`.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            ("probes_sent", "Probes sent to suspected hosts", &self.sent),
            (
                "probes_answered",
                "Probes answered by a beat carrying their nonce",
                &self.answered,
            ),
            (
                "probes_unanswered",
                "Probes unanswered for a whole probe interval",
                &self.unanswered,
            ),
            (
                "probe_confirmed_downs",
                "Hosts declared down after their probes went unanswered",
                &self.confirmed_down,
            ),
            (
                "probes_rate_limited",
                "Probes not sent because the server-wide probe rate was spent",
                &self.rate_limited,
            ),
            (
                "probe_late_answers",
                "Answers that came after their host's suspicion ended: beats that confirm nothing",
                &self.late_answers,
            ),
            (
                "probe_send_errors",
                "Probes the socket refused to send",
                &self.send_errors,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "hosts_suspected",
            "Hosts being probed now",
            self.suspects.clone(),
        );
        registry.register_with_unit(
            "probe_rtt",
            "Round trip of answered probes",
            Unit::Seconds,
            self.rtt.clone(),
        );
    }

    /// Brings the counters up to the monitor's totals (under the fleet's
    /// lock, as `Metrics::sync_detection`).
    pub fn sync(&self, totals: &ProbeTotals) {
        super::exposition::sync_to_totals(
            &[
                (&self.sent, totals.sent),
                (&self.answered, totals.answered),
                (&self.unanswered, totals.unanswered),
                (&self.confirmed_down, totals.confirmed_down),
                (&self.rate_limited, totals.rate_limited),
                (&self.late_answers, totals.late_answers),
            ],
            (&self.suspects, totals.suspects),
        );
    }
}

/// Sends probes from the server's UDP socket.
pub struct Prober {
    socket: UdpSocket,
    guard: Arc<Guard>,
    metrics: ProbeMetrics,
    packet: Vec<u8>,
    error_log: RateLimit,
}

impl Prober {
    /// A prober on `socket` (a handle on the server's UDP socket), signing
    /// with the keys of `guard`'s policy.
    pub fn new(socket: UdpSocket, guard: Arc<Guard>, metrics: ProbeMetrics) -> Self {
        if let Err(e) = socket.set_write_timeout(Some(SEND_TIMEOUT)) {
            tracing::debug!("probe socket: no send timeout ({e})");
        }
        Self {
            socket,
            guard,
            metrics,
            packet: Vec::with_capacity(protocol::MAX_PACKET_LEN),
            error_log: RateLimit::new(Duration::from_secs(60)),
        }
    }

    /// Sends each of `requests`; a failure is counted and logged (at a
    /// limited rate), never fatal.
    pub fn send(&mut self, requests: &[ProbeRequest]) {
        if requests.is_empty() {
            return;
        }
        let policy = self.guard.read();
        for request in requests {
            let probe = Probe {
                nonce: request.nonce,
                host_id: &request.host,
                tag: None,
            };
            let encoded = match policy.keys() {
                Some(keys) => keys.sign_probe(&probe, &mut self.packet),
                None => protocol::probe::encode_probe(&probe, &mut self.packet),
            };
            let Ok(len) = encoded else {
                continue; // a stored id no longer valid: never sent beats
            };
            // Never more bytes than the beat that earned it (43 bytes of
            // header against the probe's 16, the same id and tag).
            debug_assert!(len < protocol::HEADER_LEN + request.host.len() + policy.tag_len());
            tracing::debug!(host = %request.host, to = %request.addr, "probe sent");
            if let Err(e) = self.socket.send_to(&self.packet[..len], request.addr) {
                self.metrics.send_errors.inc();
                if let Some(suppressed) = self.error_log.check(std::time::Instant::now()) {
                    tracing::warn!(to = %request.addr, suppressed, "cannot send probe: {e}");
                }
            }
        }
    }
}
