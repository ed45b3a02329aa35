//! The client: beats to every configured server until shutdown, then says
//! goodbye. It survives unreachable servers, DNS failures and network
//! errors: it logs them (at most once a minute per server) and keeps beating.

use crate::auth::{KeyRing, Signer};
use crate::config::{ClientConfig, DEFAULT_PORT};
use crate::protocol::{self, Beat, flags};
use crate::ratelimit::RateLimit;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a failing server is logged about.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);
/// Names are resolved again this often even when sending works, to follow
/// DNS changes.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// Longest wait for one DNS lookup, so a dead resolver cannot stall the beat
/// to the other servers for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// A server is not of the form `HOST[:PORT]`.
    #[error("bad server address {0:?}: expected HOST, HOST:PORT or [IPv6]:PORT")]
    BadServer(String),
    /// The key file cannot be used.
    #[error(transparent)]
    Key(#[from] crate::auth::Error),
}

/// One server to beat to.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    /// Resolved addresses; beats go to the first, and a failure rotates.
    addrs: Vec<SocketAddr>,
    resolved_at: Option<Instant>,
    error_log: RateLimit,
    failing: bool,
}

/// Splits `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`.
pub fn parse_server(spec: &str) -> Option<(String, u16)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, DEFAULT_PORT),
            _ => (host, port(after.strip_prefix(':')?)?),
        }
    } else if spec.matches(':').count() > 1 {
        (spec, DEFAULT_PORT) // a bare IPv6 address has no port
    } else if let Some((host, p)) = spec.split_once(':') {
        (host, port(p)?)
    } else {
        (spec, DEFAULT_PORT)
    };
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
}

/// The OS's boot id (Linux: `/proc/sys/kernel/random/boot_id`); all zero
/// (unknown) elsewhere, so the server never reports a false reboot.
pub fn boot_id() -> [u8; 16] {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|text| protocol::parse_boot_id(&text))
        .unwrap_or([0; 16])
}

/// This machine's hostname, cut to the protocol's host id limit.
pub fn default_host_id() -> String {
    let mut name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() {
        name = "localhost".into();
    }
    let mut end = name.len().min(protocol::MAX_HOST_ID_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The client's UDP sockets, one per address family, opened on first use.
#[derive(Default)]
struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    async fn for_addr(&mut self, to: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, local) = match to {
            SocketAddr::V4(_) => (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        if slot.is_none() {
            *slot = Some(UdpSocket::bind(local).await?);
        }
        Ok(slot.as_ref().expect("just opened"))
    }
}

/// The beat loop.
pub struct Client {
    config: ClientConfig,
    host_id: String,
    boot_id: [u8; 16],
    seq: u64,
    targets: Vec<Target>,
    sockets: Sockets,
    packet: Vec<u8>,
    /// Signs every beat when a key file is configured.
    signer: Option<Signer>,
}

impl Client {
    /// Validates the settings and parses the server list.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let targets = config
            .servers
            .iter()
            .map(|spec| {
                let (host, port) =
                    parse_server(spec).ok_or_else(|| Error::BadServer(spec.clone()))?;
                let addrs = host
                    .parse::<IpAddr>()
                    .map(|ip| vec![SocketAddr::new(ip, port)])
                    .unwrap_or_default();
                Ok(Target {
                    host,
                    port,
                    addrs,
                    resolved_at: None,
                    error_log: RateLimit::new(ERROR_LOG_PERIOD),
                    failing: false,
                })
            })
            .collect::<Result<_, Error>>()?;
        let host_id = config.host_id.clone().unwrap_or_else(default_host_id);
        let signer = match &config.key_file {
            Some(path) => Some(signer(path, config.key_id, &host_id)?),
            None => None,
        };
        // The high half is the start time, so the sequence keeps rising
        // across restarts of the client (see docs/PROTOCOL.md).
        let start_secs = unix_micros(SystemTime::now()) / 1_000_000;
        Ok(Self {
            host_id,
            boot_id: boot_id(),
            seq: (start_secs & 0xffff_ffff) << 32,
            targets,
            sockets: Sockets::default(),
            packet: Vec::with_capacity(protocol::MAX_PACKET_LEN),
            signer,
            config,
        })
    }

    /// The host id this client reports.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The id of the key beats are signed with; `None` when unsigned.
    pub fn key_id(&self) -> Option<u32> {
        self.signer.as_ref().map(Signer::key_id)
    }

    /// Beats until `shutdown`, then sends a goodbye to every server.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut next = Instant::now();
        loop {
            self.beat(false).await;
            next += self.jittered_interval();
            let now = Instant::now();
            if next < now {
                next = now; // suspended or overloaded: do not burst to catch up
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        if !self.config.legacy {
            self.beat(true).await;
        }
    }

    fn jittered_interval(&self) -> Duration {
        let spread = self.config.jitter * (2.0 * fastrand::f64() - 1.0);
        self.config.interval.mul_f64(1.0 + spread)
    }

    /// Sends one beat (or the goodbye) to every server.
    async fn beat(&mut self, goodbye: bool) {
        let payload: &[u8] = if self.config.legacy {
            protocol::LEGACY_THUMP
        } else {
            let beat = Beat {
                flags: if goodbye { flags::GOODBYE } else { 0 },
                seq: self.seq,
                boot_id: self.boot_id,
                sent_at_micros: unix_micros(SystemTime::now()),
                interval_ms: u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX),
                host_id: &self.host_id,
                tag: None,
            };
            match &self.signer {
                Some(signer) => signer.sign(&beat, &mut self.packet),
                None => protocol::encode(&beat, &mut self.packet),
            }
            .expect("host id validated at start");
            self.seq = self.seq.wrapping_add(1);
            &self.packet
        };
        for target in &mut self.targets {
            let result = send(target, &mut self.sockets, payload).await;
            match result {
                Ok(to) => {
                    tracing::debug!(server = %to, goodbye, "beat sent");
                    if std::mem::take(&mut target.failing) {
                        tracing::info!(server = %target.host, "sending to server works again");
                        target.error_log.reset();
                    }
                }
                Err(e) => {
                    target.failing = true;
                    target.addrs.clear(); // resolve again next time
                    if let Some(suppressed) = target.error_log.check(std::time::Instant::now()) {
                        tracing::warn!(server = %target.host, port = target.port, suppressed, "cannot send beat: {e}");
                    }
                }
            }
        }
    }
}

/// The signer for `host_id` from the key file: key `key_id`, or the newest.
fn signer(path: &std::path::Path, key_id: Option<u32>, host_id: &str) -> Result<Signer, Error> {
    let ring = KeyRing::load(path)?;
    let key = match key_id {
        Some(id) => ring.get(id).ok_or_else(|| crate::auth::Error::NoSuchKey {
            path: path.to_path_buf(),
            id,
        })?,
        None => ring.newest().expect("a loaded key file has a key"),
    };
    Ok(Signer::new(key, host_id)?)
}

/// Resolves `target` if needed and sends `payload` to its first address.
async fn send(
    target: &mut Target,
    sockets: &mut Sockets,
    payload: &[u8],
) -> io::Result<SocketAddr> {
    let literal = target.host.parse::<IpAddr>().ok();
    let stale = target
        .resolved_at
        .is_none_or(|at| at.elapsed() > RESOLVE_EVERY);
    if literal.is_none() && (target.addrs.is_empty() || stale) {
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS lookup timed out"))??
            .collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "name has no addresses",
            ));
        }
        target.addrs = addrs;
        target.resolved_at = Some(Instant::now());
    } else if let Some(ip) = literal
        && target.addrs.is_empty()
    {
        target.addrs = vec![SocketAddr::new(ip, target.port)];
    }
    let to = target.addrs[0];
    let result = async { sockets.for_addr(to).await?.send_to(payload, to).await }.await;
    if result.is_err() && target.addrs.len() > 1 {
        target.addrs.rotate_left(1); // try the next address next time
    }
    result.map(|_| to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_specs() {
        let ok = |spec: &str, host: &str, port: u16| {
            assert_eq!(parse_server(spec), Some((host.to_string(), port)), "{spec}");
        };
        ok("127.0.0.1", "127.0.0.1", DEFAULT_PORT);
        ok("127.0.0.1:9000", "127.0.0.1", 9000);
        ok("monitor.example.org", "monitor.example.org", DEFAULT_PORT);
        ok("monitor:1", "monitor", 1);
        ok("::1", "::1", DEFAULT_PORT);
        ok("[::1]", "::1", DEFAULT_PORT);
        ok("[2001:db8::1]:9000", "2001:db8::1", 9000);
        for bad in [
            "",
            ":9000",
            "host:",
            "host:0",
            "host:99999",
            "[::1",
            "[::1]9000",
            "a b",
        ] {
            assert_eq!(parse_server(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hostname_default_fits_the_protocol() {
        let id = default_host_id();
        assert!(!id.is_empty() && id.len() <= protocol::MAX_HOST_ID_LEN);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_has_a_boot_id() {
        assert_ne!(boot_id(), [0; 16]);
    }

    #[test]
    fn sequence_starts_at_the_start_time_and_jitter_stays_small() {
        let config = ClientConfig {
            servers: vec!["127.0.0.1".into()],
            ..ClientConfig::default()
        };
        let client = Client::new(config).expect("valid");
        let now_secs = unix_micros(SystemTime::now()) / 1_000_000;
        assert!(now_secs - (client.seq >> 32) < 5);
        for _ in 0..100 {
            let d = client.jittered_interval().as_secs_f64();
            assert!((9.5..=10.5).contains(&d), "{d}");
        }
    }
}
