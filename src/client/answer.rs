//! Answering probes (issue 15): a server that suspects this host sends a
//! probe to the address its beats come from; the client answers at once
//! with an ordinary beat carrying the probe's nonce, to that server.
//!
//! Only a probe that arrives from an address and port the client beats to,
//! names this host, and (with a key) carries a valid tag is answered, and
//! at most [`BURST`] at once, refilled at the higher of [`PER_SECOND`] a
//! second and [`PER_INTERVAL`] a beat interval; anything else on the
//! socket is counted and ignored. So a forged probe makes the client send
//! at most those few answers, and only to its own servers: never to the
//! probe's source when it differs.

use crate::auth::Signer;
use crate::protocol::probe;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Answers the client may send at once.
pub const BURST: f64 = 4.0;
/// Answers refilled per second...
pub const PER_SECOND: f64 = 4.0;
/// ...or per beat interval, whichever is more (fast-beating clients are
/// probed faster).
pub const PER_INTERVAL: f64 = 2.0;

/// Why a datagram was not answered, counted (for the log at exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Not a probe, or malformed.
    pub not_probe: u64,
    /// From an address the client does not beat to.
    pub stranger: u64,
    /// For another host id.
    pub other_host: u64,
    /// Unsigned, or a tag that does not verify with the client's key.
    pub bad_tag: u64,
    /// Over the answer rate.
    pub over_rate: u64,
}

/// Who the client is, as a probe must match it.
pub struct Me<'a> {
    /// The current address of each server it beats to (`None`: not
    /// resolved).
    pub servers: &'a [Option<SocketAddr>],
    /// Its host id.
    pub host_id: &'a str,
    /// Its key, when it signs.
    pub signer: Option<&'a Signer>,
    /// Its beat interval.
    pub interval: Duration,
}

/// The answer bound and the counts.
#[derive(Debug)]
pub struct Answerer {
    tokens: f64,
    filled: Instant,
    /// What was ignored, by reason.
    pub ignored: Ignored,
    /// Probes answered.
    pub answered: u64,
}

impl Answerer {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            filled: now,
            ignored: Ignored::default(),
            answered: 0,
        }
    }

    /// Checks `datagram` from `from` at `now`: the index in `servers` of
    /// the server to answer and the nonce, if it is a probe to answer.
    pub fn check(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        me: &Me<'_>,
        now: Instant,
    ) -> Option<(usize, u64)> {
        let Me {
            servers,
            host_id,
            signer,
            interval,
        } = *me;
        let Ok(probe) = probe::decode_probe(datagram) else {
            self.ignored.not_probe += 1;
            return None;
        };
        let from = canonical(from);
        let Some(server) = servers
            .iter()
            .position(|s| s.is_some_and(|s| canonical(s) == from))
        else {
            self.ignored.stranger += 1;
            return None;
        };
        if probe.host_id != host_id {
            self.ignored.other_host += 1;
            return None;
        }
        if let Some(signer) = signer
            && signer.verify_probe(datagram, &probe).is_err()
        {
            self.ignored.bad_tag += 1;
            return None;
        }
        let per_second = PER_SECOND.max(PER_INTERVAL / interval.as_secs_f64().max(1e-3));
        let elapsed = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(BURST);
        self.filled = now;
        if self.tokens < 1.0 {
            self.ignored.over_rate += 1;
            return None;
        }
        self.tokens -= 1.0;
        self.answered += 1;
        Some((server, probe.nonce))
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::probe::{Probe, encode_probe};

    fn probe_bytes(host: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_probe(
            &Probe {
                nonce: 42,
                host_id: host,
                tag: None,
            },
            &mut out,
        )
        .expect("probe");
        out
    }

    #[test]
    fn only_probes_from_own_servers_for_this_host_within_the_rate() {
        let server: SocketAddr = "127.0.0.1:43278".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:43278".parse().expect("addr");
        let servers = [None, Some(server)];
        let start = Instant::now();
        let mut answerer = Answerer::new(start);
        let second = Duration::from_secs(10);
        let me = Me {
            servers: &servers,
            host_id: "web-1",
            signer: None,
            interval: second,
        };
        let check = |a: &mut Answerer, bytes: &[u8], from, at| a.check(bytes, from, &me, at);
        let good = probe_bytes("web-1");
        assert_eq!(check(&mut answerer, &good, mapped, start), Some((1, 42)));
        let stranger: SocketAddr = "127.0.0.2:43278".parse().expect("addr");
        assert_eq!(check(&mut answerer, &good, stranger, start), None);
        let other_port: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(check(&mut answerer, &good, other_port, start), None);
        assert_eq!(
            check(&mut answerer, &probe_bytes("web-2"), server, start),
            None
        );
        assert_eq!(check(&mut answerer, b"Thump!", server, start), None);
        // A flood from the server's own address: the burst, then the rate.
        let answered = (0..100)
            .filter(|_| check(&mut answerer, &good, server, start).is_some())
            .count();
        assert_eq!(answered, 3, "the burst of 4, one already spent");
        let later = start + Duration::from_millis(500);
        assert_eq!(check(&mut answerer, &good, server, later), Some((1, 42)));
        assert_eq!(
            answerer.ignored,
            Ignored {
                not_probe: 1,
                stranger: 2,
                other_host: 1,
                bad_tag: 0,
                over_rate: 97,
            }
        );
    }

    #[test]
    fn with_a_key_only_probes_signed_for_this_host_are_answered() {
        let key = crate::auth::Key::new(1, &[7; 32], false, None).expect("key");
        let signer = Signer::new(&key, "web-1").expect("signer");
        let mut ring = crate::auth::KeyRing::default();
        ring.add(key).expect("key");
        let probe = Probe {
            nonce: 9,
            host_id: "web-1",
            tag: None,
        };
        let mut signed = Vec::new();
        ring.sign_probe(&probe, &mut signed).expect("sign");
        let server: SocketAddr = "127.0.0.1:43278".parse().expect("addr");
        let now = Instant::now();
        let mut answerer = Answerer::new(now);
        let servers = [Some(server)];
        let me = Me {
            servers: &servers,
            host_id: "web-1",
            signer: Some(&signer),
            interval: Duration::from_secs(10),
        };
        let mut check = |bytes: &[u8]| answerer.check(bytes, server, &me, now);
        assert_eq!(check(&signed), Some((0, 9)));
        assert_eq!(check(&probe_bytes("web-1")), None, "unsigned");
        let mut altered = signed.clone();
        altered[8] ^= 1; // the nonce
        assert_eq!(check(&altered), None, "forged");
    }
}
