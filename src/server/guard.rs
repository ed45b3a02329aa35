//! The admission check every datagram passes before the registry lock:
//! with a key file, only signed, fresh beats (and legacy beats from listed
//! networks) go on. Stateless and allocation-free, so a flood of forged
//! packets costs one HMAC each and never touches the registry.
//!
//! The per-host part of replay protection (the sequence window) needs the
//! host's state, so the detector does it under the lock (see `replay`).

use super::dropped::DropReason;
use crate::auth::{KeyRing, VerifyError};
use crate::config::ServerConfig;
use crate::protocol::Packet;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;
use std::time::{Duration, SystemTime};

/// The server's admission policy, replaceable while the server runs (a
/// reload rotates keys). Ingest reads it once per receive batch.
#[derive(Debug, Default)]
pub struct Guard {
    policy: RwLock<Policy>,
}

/// One admission policy: the keys and the rules of the config it came from.
#[derive(Debug, Default)]
pub struct Policy {
    keys: Option<KeyRing>,
    legacy_networks: Vec<IpNet>,
    max_clock_skew: Duration,
    joins: Mutex<JoinLimit>,
}

/// How fast hosts the server does not know may join: a token bucket of
/// `rate` tokens a second holding at most one second's worth. Without
/// keys anyone can make up host ids; with it, a flood of them grows the
/// registry and the store at this rate, not at line rate, while beats of
/// known hosts are never held back. A refused host is not lost: its next
/// beat tries again.
#[derive(Debug, Default)]
pub struct JoinLimit {
    /// Joins a second; 0: unlimited.
    rate: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl JoinLimit {
    /// A bucket of `rate` joins a second (0: unlimited), full at start.
    pub fn new(rate: u32) -> JoinLimit {
        JoinLimit {
            rate,
            tokens: f64::from(rate),
            last: None,
        }
    }

    /// Takes one join at `now`; false when the rate is exceeded.
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
            self.tokens = (self.tokens + refill).min(rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Guard {
    /// The policy of `config`, reading its key file if it names one.
    pub fn new(config: &ServerConfig) -> Result<Guard, crate::auth::Error> {
        Ok(Guard {
            policy: RwLock::new(Policy::new(config)?),
        })
    }

    /// The policy in force, for a batch of checks.
    pub fn read(&self) -> RwLockReadGuard<'_, Policy> {
        // A policy is replaced whole, never left half-written: a poisoned
        // lock still holds a whole one.
        self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `policy` in force (a reload).
    pub fn replace(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// How many keys the server accepts (0: beats need no signature).
    pub fn key_count(&self) -> usize {
        self.read().key_count()
    }

    /// [`Policy::limits_joins`] under the policy in force.
    pub fn limits_joins(&self) -> bool {
        self.read().limits_joins()
    }

    /// [`Policy::admit_join`] under the policy in force.
    pub fn admit_join(&self, now: Instant) -> bool {
        self.read().admit_join(now)
    }
}

impl Guard {
    /// Admits or refuses a label announcement as a beat would be: with
    /// keys, a valid MAC and a send time within `max_clock_skew`.
    pub fn check_announcement(
        &self,
        datagram: &[u8],
        announcement: &crate::protocol::labels::Announcement<'_>,
        wall: SystemTime,
    ) -> Result<(), DropReason> {
        let policy = self.read();
        let Some(keys) = &policy.keys else {
            return Ok(());
        };
        keys.verify_announcement(datagram, announcement)
            .map_err(|_| DropReason::BadMac)?;
        policy.check_skew(announcement.sent_at_micros, wall)
    }
}

impl Policy {
    /// The policy of `config`, reading its key file if it names one.
    pub fn new(config: &ServerConfig) -> Result<Policy, crate::auth::Error> {
        let keys = match &config.key_file {
            Some(path) => Some(KeyRing::load(path)?),
            None => None,
        };
        Ok(Policy {
            keys,
            legacy_networks: config.legacy_networks.clone(),
            max_clock_skew: config.max_clock_skew,
            joins: Mutex::new(JoinLimit::new(config.join_rate)),
        })
    }

    /// True when new hosts are rate-limited (`join_rate` is not 0).
    pub fn limits_joins(&self) -> bool {
        self.joins.lock().expect("join limit lock").rate != 0
    }

    /// Whether a host the registry does not know may join at `now` (see
    /// [`JoinLimit`]).
    pub fn admit_join(&self, now: Instant) -> bool {
        self.joins.lock().expect("join limit lock").admit(now)
    }

    /// How far a signed datagram's send time may be from the server's.
    pub fn max_clock_skew(&self) -> Duration {
        self.max_clock_skew
    }

    /// How many keys the server accepts (0: beats need no signature).
    pub fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.keys().len())
    }

    /// The keys, when beats must be signed (probes are signed with them,
    /// maintenance announcements checked and confirmed with them).
    pub fn keys(&self) -> Option<&KeyRing> {
        self.keys.as_ref()
    }

    /// Bytes of the tag every admitted v1 beat carries (0 without keys).
    pub fn tag_len(&self) -> usize {
        if self.keys.is_some() {
            crate::protocol::TAG_LEN
        } else {
            0
        }
    }

    /// Whether the host of `beat` may be probed: it says it answers
    /// probes, and (with keys) it signs with the key probes are signed
    /// with, so that it can check them (issue 15).
    pub fn can_probe(&self, beat: &crate::protocol::Beat<'_>) -> bool {
        beat.answers_probes()
            && self
                .keys
                .as_ref()
                .is_none_or(|keys| beat.tag.map(|tag| tag.key_id) == keys.probe_key_id())
    }

    /// The ids of the keys accepted, ascending (for the reload's log).
    pub fn key_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .keys
            .as_ref()
            .map(|k| k.keys().iter().map(|key| key.id).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Refuses a signed datagram sent at `sent_at_micros` (Unix
    /// microseconds, the sender's clock) that is further than
    /// `max_clock_skew` from `wall`, the server's receive time.
    fn check_skew(&self, sent_at_micros: u64, wall: SystemTime) -> Result<(), DropReason> {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_micros(sent_at_micros);
        let skew = match wall.duration_since(sent) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > self.max_clock_skew {
            return Err(DropReason::ClockSkew);
        }
        Ok(())
    }

    /// Admits or refuses one decoded datagram from `from`, received at
    /// `wall`. `datagram` is the packet's bytes, which the MAC covers.
    pub fn check(
        &self,
        datagram: &[u8],
        packet: &Packet<'_>,
        from: IpAddr,
        wall: SystemTime,
    ) -> Result<(), DropReason> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        match packet {
            Packet::Legacy => {
                let from = from.to_canonical();
                if self.legacy_networks.iter().any(|net| net.contains(&from)) {
                    Ok(())
                } else {
                    Err(DropReason::Legacy)
                }
            }
            Packet::V1(beat) => {
                // The MAC first: a forged packet is counted as forged, not
                // as a clock problem of the host it names.
                keys.verify(datagram, beat).map_err(|e| match e {
                    VerifyError::Unsigned => DropReason::Unsigned,
                    VerifyError::UnknownKey => DropReason::UnknownKey,
                    VerifyError::BadMac => DropReason::BadMac,
                })?;
                self.check_skew(beat.sent_at_micros, wall)?;
                // The seq's high half is when the client's run started
                // (Unix seconds): a run that starts after the beat was sent
                // is impossible, and one signed beat of it would make every
                // later beat of the real run look like a replay (issue 13).
                let sent_secs = beat.sent_at_micros / 1_000_000;
                if beat.seq >> 32 > sent_secs.saturating_add(self.max_clock_skew.as_secs()) {
                    return Err(DropReason::FutureRun);
                }
                Ok(())
            }
        }
    }
}

/// Largest HTTP request body the server takes, in bytes. The API reads
/// small JSON at most; a larger body is refused with 413 before it is read.
pub const MAX_HTTP_BODY_BYTES: usize = 64 * 1024;

/// Wraps the whole HTTP app (every route and the fallback) in the request
/// limits: bodies over [`MAX_HTTP_BODY_BYTES`] are refused (413) from their
/// `Content-Length`, or cut off while streaming. Header sizes are bounded by
/// hyper (about 400 KiB of buffer, 100 headers).
pub fn limit_http(app: axum::Router) -> axum::Router {
    app.layer(axum::extract::DefaultBodyLimit::max(MAX_HTTP_BODY_BYTES))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_HTTP_BODY_BYTES,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Key, Signer};
    use crate::protocol::{self, Beat};

    fn guard() -> Guard {
        let mut keys = KeyRing::default();
        keys.add(Key::new(1, &[1; 32], false, None).expect("key"))
            .expect("add");
        let guard = Guard::default();
        guard.replace(Policy {
            keys: Some(keys),
            legacy_networks: vec!["10.0.0.0/8".parse().expect("net")],
            max_clock_skew: Duration::from_secs(120),
            joins: Mutex::default(),
        });
        guard
    }

    fn check(guard: &Guard, bytes: &[u8], from: &str, wall: SystemTime) -> Result<(), DropReason> {
        let packet = protocol::decode(bytes).expect("decodes");
        guard
            .read()
            .check(bytes, &packet, from.parse().expect("ip"), wall)
    }

    // See: issue 13, item 4.
    #[test]
    fn a_seq_whose_run_starts_after_its_send_time_is_refused() {
        let guard = guard(); // max_clock_skew 120 s
        let now = SystemTime::now();
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        let now_secs = since_epoch.as_secs();
        let key = Key::new(1, &[1; 32], false, None).expect("key");
        let signer = Signer::new(&key, "web-1").expect("signer");
        let started = |run_secs: u64| {
            let beat = Beat {
                flags: 0,
                seq: (run_secs << 32) | 5,
                boot_id: [0; 16],
                sent_at_micros: since_epoch.as_micros() as u64,
                interval_ms: 100,
                host_id: "web-1",
                answers: None,
                tag: None,
            };
            let mut out = Vec::new();
            signer.sign(&beat, &mut out).expect("sign");
            check(&guard, &out, "127.0.0.1", now)
        };
        assert_eq!(started(now_secs), Ok(()));
        assert_eq!(started(now_secs - 86_400 * 365), Ok(()), "a long run");
        assert_eq!(started(now_secs + 120), Ok(()), "within the skew");
        assert_eq!(started(now_secs + 121), Err(DropReason::FutureRun));
        assert_eq!(
            started(now_secs + 86_400 * 3650),
            Err(DropReason::FutureRun)
        );
    }

    #[test]
    fn joins_are_limited_to_the_rate_with_one_second_of_burst() {
        let t = Instant::now();
        let mut limit = JoinLimit::new(100);
        let burst = (0..150).filter(|_| limit.admit(t)).count();
        assert_eq!(burst, 100, "one second's worth at once");
        assert!(!limit.admit(t + Duration::from_millis(5)));
        assert!(limit.admit(t + Duration::from_millis(20)), "2 tokens back");
        let later = t + Duration::from_secs(60);
        let refilled = (0..500).filter(|_| limit.admit(later)).count();
        assert_eq!(refilled, 100, "never more than a second's worth");
        let mut open = JoinLimit::new(0);
        assert!((0..10_000).all(|_| open.admit(t)), "0: unlimited");
    }

    #[test]
    fn each_reason() {
        let guard = guard();
        let now = SystemTime::now();
        let micros = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_micros() as u64
        };
        let beat = |sent: SystemTime| Beat {
            flags: 0,
            seq: 1,
            boot_id: [0; 16],
            sent_at_micros: micros(sent),
            interval_ms: 100,
            host_id: "web-1",
            answers: None,
            tag: None,
        };
        let key = Key::new(1, &[1; 32], false, None).expect("key");
        let signer = Signer::new(&key, "web-1").expect("signer");
        let sign = |sent| {
            let mut out = Vec::new();
            signer.sign(&beat(sent), &mut out).expect("sign");
            out
        };
        let ok = sign(now);
        assert_eq!(check(&guard, &ok, "127.0.0.1", now), Ok(()));
        let skew = Duration::from_secs(121);
        for sent in [now - skew, now + skew] {
            assert_eq!(
                check(&guard, &sign(sent), "127.0.0.1", now),
                Err(DropReason::ClockSkew)
            );
        }
        let mut unsigned = Vec::new();
        protocol::encode(&beat(now), &mut unsigned).expect("encode");
        assert_eq!(
            check(&guard, &unsigned, "127.0.0.1", now),
            Err(DropReason::Unsigned)
        );
        let mut bad = ok.clone();
        *bad.last_mut().expect("mac") ^= 1;
        assert_eq!(
            check(&guard, &bad, "127.0.0.1", now),
            Err(DropReason::BadMac)
        );
        let other = Signer::new(&Key::new(2, &[1; 32], false, None).expect("key"), "web-1")
            .expect("signer");
        let mut unknown = Vec::new();
        other.sign(&beat(now), &mut unknown).expect("sign");
        assert_eq!(
            check(&guard, &unknown, "127.0.0.1", now),
            Err(DropReason::UnknownKey)
        );
        assert_eq!(
            check(&guard, b"Thump!", "127.0.0.1", now),
            Err(DropReason::Legacy)
        );
        assert_eq!(check(&guard, b"Thump!", "10.1.2.3", now), Ok(()));
        assert_eq!(check(&guard, b"Thump!", "::ffff:10.1.2.3", now), Ok(()));
        // Without keys everything well-formed is admitted, as in the seed.
        let open = Guard::default();
        for bytes in [&unsigned[..], &bad, b"Thump!", &sign(now - skew)] {
            assert_eq!(check(&open, bytes, "127.0.0.1", now), Ok(()));
        }
    }
}
