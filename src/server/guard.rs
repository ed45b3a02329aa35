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
use std::time::{Duration, SystemTime};

/// The server's admission policy.
#[derive(Debug, Default)]
pub struct Guard {
    keys: Option<KeyRing>,
    legacy_networks: Vec<IpNet>,
    max_clock_skew: Duration,
}

impl Guard {
    /// The policy of `config`, reading its key file if it names one.
    pub fn new(config: &ServerConfig) -> Result<Guard, crate::auth::Error> {
        let keys = match &config.key_file {
            Some(path) => Some(KeyRing::load(path)?),
            None => None,
        };
        Ok(Guard {
            keys,
            legacy_networks: config.legacy_networks.clone(),
            max_clock_skew: config.max_clock_skew,
        })
    }

    /// How many keys the server accepts (0: beats need no signature).
    pub fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.keys().len())
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
                let sent = SystemTime::UNIX_EPOCH + Duration::from_micros(beat.sent_at_micros);
                let skew = match wall.duration_since(sent) {
                    Ok(behind) => behind,
                    Err(ahead) => ahead.duration(),
                };
                if skew > self.max_clock_skew {
                    return Err(DropReason::ClockSkew);
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
        Guard {
            keys: Some(keys),
            legacy_networks: vec!["10.0.0.0/8".parse().expect("net")],
            max_clock_skew: Duration::from_secs(120),
        }
    }

    fn check(guard: &Guard, bytes: &[u8], from: &str, wall: SystemTime) -> Result<(), DropReason> {
        let packet = protocol::decode(bytes).expect("decodes");
        guard.check(bytes, &packet, from.parse().expect("ip"), wall)
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
