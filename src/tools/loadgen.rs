//! `lubdub loadgen`: a simulated fleet, to measure a server.
//!
//! N hosts beat every interval with real v1 packets, spread evenly over the
//! interval (host `i` beats at `i × interval / N` into each round), from many
//! source addresses across 127.0.0.0/8 (Linux routes all of it to loopback),
//! sent in `sendmmsg(2)` batches so that one sender thread keeps up with a
//! million hosts. A chosen set of hosts can stop at a given time; their last
//! beat times are reported so that detection latency can be computed as
//! `event time − (last beat + timeout)`.
//!
//! Load never goes to a non-loopback address unless the caller says so
//! (`allow_remote`): tests and CI must only ever load this machine.

use crate::auth::Signer;
use crate::protocol::{self, Beat};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets per `sendmmsg` call (and hosts per source-address block).
pub const BATCH: usize = 64;

/// Most source addresses: they are 127.x.y.z, and each is one socket.
pub const MAX_SOURCES: u32 = 65_000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct LoadgenConfig {
    /// Where to send the beats.
    pub target: SocketAddr,
    /// Simulated hosts. Default: 1000.
    pub hosts: u32,
    /// Each host's beat interval (also declared in its packets). Default: 10s.
    pub interval: Duration,
    /// How long to run. Default: 10s.
    pub duration: Duration,
    /// Stop after this many packets, if earlier than `duration` (unset: no
    /// count limit).
    pub max_packets: Option<u64>,
    /// Source addresses (one socket each) the hosts are spread over.
    /// Default: 256.
    pub sources: u32,
    /// Host ids are this prefix plus a zero-padded number from 1.
    /// Default: `host-`.
    pub id_prefix: String,
    /// Digits of that number. Default: 7 (so ids are 12 characters).
    pub id_digits: usize,
    /// Hosts that stop beating at `stop_after`, chosen evenly over the
    /// fleet (every `hosts / stop_count`-th host). Default: 0.
    pub stop_count: u32,
    /// When the stopping hosts fall silent. Default: 0s.
    pub stop_after: Duration,
    /// Permit a non-loopback target. Default: false.
    pub allow_remote: bool,
    /// Beats skipped at random, each with this probability (0 to 1), as a
    /// lossy network would drop them: to measure what loss costs the
    /// server (e.g. probing, issue 15). Default: 0.
    pub loss: f64,
    /// Beats carry the flag "this client answers probes", so a server
    /// with probing on probes the hosts that fall silent (the load
    /// generator does not answer: each suspicion runs until the host's
    /// next beat, the most probes it can cost). Default: false.
    pub answers_probes: bool,
}

impl Default for LoadgenConfig {
    fn default() -> Self {
        Self {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, crate::config::DEFAULT_PORT)),
            hosts: 1000,
            interval: Duration::from_secs(10),
            duration: Duration::from_secs(10),
            max_packets: None,
            sources: 256,
            id_prefix: "host-".into(),
            id_digits: 7,
            stop_count: 0,
            stop_after: Duration::ZERO,
            allow_remote: false,
            loss: 0.0,
            answers_probes: false,
        }
    }
}

/// Why the load generator could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target is not on this machine and `allow_remote` is not set.
    #[error("refusing to send load to non-loopback address {0} (use --allow-remote)")]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A source socket could not be bound.
    #[error("cannot bind source address {addr}")]
    Bind {
        /// The source address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// A host that was stopped, and its last beat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Its id.
    pub id: String,
    /// Wall-clock time its last beat was sent; `None` if it never beat.
    pub last_beat: Option<SystemTime>,
}

/// What was sent.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Datagrams the kernel accepted.
    pub packets: u64,
    /// Their bytes (UDP payload).
    pub bytes: u64,
    /// Datagrams that failed to send.
    pub errors: u64,
    /// Beats skipped on purpose (`loss`).
    pub skipped: u64,
    /// The last send error, if any.
    pub last_error: Option<String>,
    /// From the first send to the end.
    pub elapsed: Duration,
    /// The stopped hosts, in fleet order.
    pub stopped: Vec<Stopped>,
    /// How far behind its schedule the sender fell at worst: when this is
    /// more than a small part of the interval, the machine could not offer
    /// the load asked for, and hosts beat less often than simulated.
    pub max_lag: Duration,
}

impl Report {
    /// Datagrams per second over the run.
    pub fn rate(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The simulated hosts' identities and their packets.
pub struct Fleet {
    hosts: u32,
    id_prefix: String,
    id_digits: usize,
    interval_ms: u32,
    /// High half of every seq: the run's start (Unix seconds), as a real
    /// client does, so a rerun is a restart and not a loss.
    run_id: u64,
    id: String,
    /// Flags of every beat.
    pub flags: u8,
}

impl Fleet {
    /// A fleet of `hosts` hosts with ids `{id_prefix}{n:0id_digits}`.
    pub fn new(hosts: u32, id_prefix: &str, id_digits: usize, interval: Duration) -> Self {
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            hosts,
            id_prefix: id_prefix.into(),
            id_digits,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            run_id,
            id: String::new(),
            flags: 0,
        }
    }

    /// How many hosts.
    pub fn len(&self) -> u32 {
        self.hosts
    }

    /// True for a fleet of no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts == 0
    }

    /// The id of host `index` (0-based; ids are numbered from 1).
    pub fn host_id(&self, index: u32) -> String {
        format!(
            "{}{:0width$}",
            self.id_prefix,
            u64::from(index) + 1,
            width = self.id_digits
        )
    }

    /// Encodes beat number `round` of host `index`, sent at `sent_at`, into
    /// `out`; signed by `signer` when one is given.
    pub fn encode(
        &mut self,
        index: u32,
        round: u32,
        sent_at: SystemTime,
        signer: Option<&Signer>,
        out: &mut Vec<u8>,
    ) {
        self.id.clear();
        let _ = write!(
            self.id,
            "{}{:0width$}",
            self.id_prefix,
            u64::from(index) + 1,
            width = self.id_digits
        );
        let mut boot_id = [0u8; 16];
        boot_id[..4].copy_from_slice(&index.to_be_bytes());
        boot_id[4..12].copy_from_slice(&self.run_id.to_be_bytes());
        boot_id[15] = 1; // never all zero ("unknown")
        let beat = Beat {
            flags: self.flags,
            seq: (self.run_id << 32) | u64::from(round + 1),
            boot_id,
            sent_at_micros: sent_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            interval_ms: self.interval_ms,
            host_id: &self.id,
            answers: None,
            tag: None,
        };
        let encoded = match signer {
            Some(signer) => signer.sign(&beat, out),
            None => protocol::encode(&beat, out),
        };
        encoded.expect("ids are checked to fit when the fleet is configured");
    }
}

/// Source sockets and `sendmmsg` batches to one target.
pub struct Sender {
    sockets: Vec<UdpSocket>,
    target: socket2::SockAddr,
    report: Report,
}

/// The `n`th source address for an IPv4 loopback target: 127.x.y.z from
/// 127.1.1.1 on (never .0 or .255 in the last byte).
fn source_addr(n: u32) -> Ipv4Addr {
    let (z, rest) = (n % 254 + 1, n / 254);
    let (y, x) = (rest % 254 + 1, rest / 254 + 1);
    Ipv4Addr::new(127, x as u8, y as u8, z as u8)
}

impl Sender {
    /// Binds `sources` sockets (127.x.y.z for an IPv4 loopback target; one
    /// wildcard socket otherwise) to send to `target`.
    pub fn bind(target: SocketAddr, sources: u32) -> Result<Self, Error> {
        let loopback_v4 = match target.ip().to_canonical() {
            IpAddr::V4(ip) => ip.is_loopback() && target.is_ipv4(),
            IpAddr::V6(_) => false,
        };
        let addrs: Vec<SocketAddr> = if loopback_v4 {
            (0..sources.max(1))
                .map(|n| SocketAddr::from((source_addr(n), 0)))
                .collect()
        } else if target.is_ipv4() {
            vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))]
        } else {
            vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))]
        };
        let sockets = addrs
            .into_iter()
            .map(|addr| UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source }))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sockets,
            target: target.into(),
            report: Report::default(),
        })
    }

    /// How many source sockets.
    pub fn sources(&self) -> usize {
        self.sockets.len()
    }

    /// The address source socket `source` sends from.
    pub fn source_local_addr(&self, source: usize) -> SocketAddr {
        self.sockets[source]
            .local_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The source socket for host `index`: blocks of [`BATCH`] consecutive
    /// hosts share one, so a batch is one system call.
    pub fn source_of(&self, index: u32) -> usize {
        (index as usize / BATCH) % self.sockets.len()
    }

    /// Sends `packets` from source `source` with as few `sendmmsg` calls as
    /// the kernel allows; failures are counted, never fatal.
    pub fn send(&mut self, source: usize, packets: &[Vec<u8>]) {
        for chunk in packets.chunks(BATCH) {
            self.send_chunk(source, chunk);
        }
    }

    #[cfg(target_os = "linux")]
    fn send_chunk(&mut self, source: usize, packets: &[Vec<u8>]) {
        use std::os::fd::AsRawFd;
        let mut iovecs: Vec<libc::iovec> = packets
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; packets.len()];
        for (header, iov) in headers.iter_mut().zip(iovecs.iter_mut()) {
            header.msg_hdr.msg_name = self.target.as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = self.target.len();
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        let fd = self.sockets[source].as_raw_fd();
        let mut done = 0;
        while done < headers.len() {
            // SAFETY: every header points at an iovec, a packet and the
            // target address, all alive until the call returns; the kernel
            // only reads them (and writes msg_len).
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    headers[done..].as_mut_ptr(),
                    (headers.len() - done) as libc::c_uint,
                    0,
                )
            };
            if sent <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.count_error(error, (headers.len() - done) as u64);
                return;
            }
            let sent = sent as usize;
            self.report.packets += sent as u64;
            self.report.bytes += headers[done..done + sent]
                .iter()
                .map(|h| u64::from(h.msg_len))
                .sum::<u64>();
            done += sent;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn send_chunk(&mut self, source: usize, packets: &[Vec<u8>]) {
        let target = self.target.as_socket().expect("an IP target");
        for packet in packets {
            match self.sockets[source].send_to(packet, target) {
                Ok(n) => {
                    self.report.packets += 1;
                    self.report.bytes += n as u64;
                }
                Err(error) => self.count_error(error, 1),
            }
        }
    }

    fn count_error(&mut self, error: io::Error, packets: u64) {
        self.report.errors += packets;
        self.report.last_error = Some(error.to_string());
    }

    /// What has been sent so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Sends `count` beats as fast as possible, round-robin over `fleet`
    /// (one round after the other) starting at packet number `first_packet`,
    /// from the sources hosts normally use. For filling a socket buffer in
    /// a benchmark.
    pub fn flood(
        &mut self,
        fleet: &mut Fleet,
        first_packet: u64,
        count: u64,
        signer: Option<&Signer>,
    ) -> Report {
        let start = Instant::now();
        let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(128)).collect();
        let hosts = u64::from(fleet.len().max(1));
        let mut k = first_packet;
        let count = first_packet + count;
        while k < count {
            let first = (k % hosts) as u32;
            let round = (k / hosts) as u32;
            let block_end = (u64::from(first) / BATCH as u64 + 1) * BATCH as u64;
            let n = (count - k).min(block_end.min(hosts) - u64::from(first)) as usize;
            let wall = SystemTime::now();
            for (j, packet) in packets[..n].iter_mut().enumerate() {
                fleet.encode(first + j as u32, round, wall, signer, packet);
            }
            let source = self.source_of(first);
            self.send(source, &packets[..n]);
            k += n as u64;
        }
        self.report.elapsed += start.elapsed();
        self.report.clone()
    }
}

/// Checks `config`: loopback unless allowed, ids that fit, sane counts.
pub fn validate(config: &LoadgenConfig) -> Result<(), Error> {
    let invalid = |field, reason: &str| Error::Invalid {
        field,
        reason: reason.into(),
    };
    if !config.allow_remote && !config.target.ip().to_canonical().is_loopback() {
        return Err(Error::NotLoopback(config.target));
    }
    if config.hosts == 0 {
        return Err(invalid("hosts", "must be at least 1"));
    }
    if config.interval.is_zero() {
        return Err(invalid("interval", "must be greater than 0"));
    }
    if config.sources == 0 || config.sources > MAX_SOURCES {
        return Err(invalid("sources", &format!("must be 1 to {MAX_SOURCES}")));
    }
    if !(0.0..=1.0).contains(&config.loss) {
        return Err(invalid("loss", "must be 0 to 1"));
    }
    if config.stop_count > config.hosts {
        return Err(invalid("stop-count", "must not exceed hosts"));
    }
    let id_len = config.id_prefix.len() + config.id_digits.max(config.hosts.to_string().len());
    if id_len > protocol::MAX_HOST_ID_LEN {
        return Err(invalid(
            "id-prefix",
            &format!(
                "host ids would be {id_len} bytes, over {}",
                protocol::MAX_HOST_ID_LEN
            ),
        ));
    }
    Ok(())
}

/// Runs the simulated fleet until `duration`, `max_packets` or `stop`.
/// Packets are sent when due (never early); a sender that falls behind
/// catches up in full batches rather than skipping beats.
pub fn run(
    config: &LoadgenConfig,
    signer: Option<&Signer>,
    stop: &AtomicBool,
) -> Result<Report, Error> {
    validate(config)?;
    let mut sender = Sender::bind(config.target, config.sources)?;
    let mut fleet = Fleet::new(
        config.hosts,
        &config.id_prefix,
        config.id_digits,
        config.interval,
    );
    if config.answers_probes {
        fleet.flags |= protocol::flags::ANSWERS_PROBES;
    }
    // Seeded: a rerun drops the same beats.
    let mut lossy = fastrand::Rng::with_seed(1);
    let mut skipped = 0;
    let hosts = u64::from(config.hosts);
    let stride = config.hosts.checked_div(config.stop_count).unwrap_or(0);
    let stopping = |i: u32| stride > 0 && i % stride == 0 && i / stride < config.stop_count;
    let mut last_beats: Vec<Option<SystemTime>> = vec![None; config.stop_count as usize];
    let per_packet = config.interval.as_secs_f64() / hosts as f64;
    let limit = config.max_packets.unwrap_or(u64::MAX);
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(128)).collect();
    let (start, wall_start) = (Instant::now(), SystemTime::now());
    let mut k = 0u64; // next packet: round k / hosts, host k % hosts
    let mut max_lag = Duration::ZERO;
    while k < limit && !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= config.duration {
            break;
        }
        let due = ((elapsed.as_secs_f64() / per_packet) as u64 + 1).min(limit);
        if k >= due {
            let next = Duration::from_secs_f64(k as f64 * per_packet);
            let wait = next.min(config.duration).saturating_sub(elapsed);
            // Short naps keep the send times close to their schedule.
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            continue;
        }
        let first = (k % hosts) as u32;
        let round = (k / hosts) as u32;
        let block_end = (u64::from(first) / BATCH as u64 + 1) * BATCH as u64;
        let n = (due - k).min(block_end.min(hosts) - u64::from(first)) as usize;
        let wall = wall_start + elapsed;
        let scheduled = Duration::from_secs_f64(k as f64 * per_packet);
        max_lag = max_lag.max(elapsed.saturating_sub(scheduled));
        let silenced = elapsed >= config.stop_after;
        let mut m = 0;
        for index in first..first + n as u32 {
            if stopping(index) {
                if silenced {
                    continue;
                }
                last_beats[(index / stride) as usize] = Some(wall);
            }
            if config.loss > 0.0 && lossy.f64() < config.loss {
                skipped += 1;
                continue;
            }
            fleet.encode(index, round, wall, signer, &mut packets[m]);
            m += 1;
        }
        let source = sender.source_of(first);
        sender.send(source, &packets[..m]);
        k += n as u64;
    }
    let mut report = sender.report().clone();
    report.elapsed = start.elapsed();
    report.max_lag = max_lag;
    report.skipped = skipped;
    report.stopped = last_beats
        .into_iter()
        .enumerate()
        .map(|(n, last_beat)| Stopped {
            id: fleet.host_id(n as u32 * stride),
            last_beat,
        })
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_skips_beats_at_random_and_the_flag_says_it_answers_probes() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let config = LoadgenConfig {
            target: server.local_addr().expect("addr"),
            hosts: 100,
            interval: Duration::from_millis(100),
            max_packets: Some(1000),
            duration: Duration::from_secs(5),
            sources: 1,
            loss: 0.2,
            answers_probes: true,
            ..LoadgenConfig::default()
        };
        let report = run(&config, None, &AtomicBool::new(false)).expect("run");
        // 1000 beats due: about 200 skipped, the rest sent.
        assert_eq!(report.packets + report.skipped, 1000);
        assert!((120..280).contains(&report.skipped), "{report:?}");
        let mut buf = [0u8; 256];
        let (len, _) = server.recv_from(&mut buf).expect("a beat");
        let protocol::Packet::V1(beat) = protocol::decode(&buf[..len]).expect("a beat") else {
            panic!("not a v1 beat");
        };
        assert!(beat.answers_probes());
        let bad = LoadgenConfig {
            loss: 1.5,
            ..config
        };
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn ids_are_twelve_characters_by_default() {
        let c = LoadgenConfig::default();
        let fleet = Fleet::new(1_000_000, &c.id_prefix, c.id_digits, c.interval);
        assert_eq!(fleet.host_id(0), "host-0000001");
        assert_eq!(fleet.host_id(999_999), "host-1000000");
    }

    #[test]
    fn packets_decode_as_v1_beats() {
        let mut fleet = Fleet::new(10, "h-", 3, Duration::from_millis(100));
        let mut out = Vec::new();
        fleet.encode(4, 2, SystemTime::now(), None, &mut out);
        let Ok(protocol::Packet::V1(beat)) = protocol::decode(&out) else {
            panic!("not a v1 beat: {out:?}");
        };
        assert_eq!(beat.host_id, "h-005");
        assert_eq!(beat.seq & 0xffff_ffff, 3);
        assert_eq!(beat.interval_ms, 100);
        assert_ne!(beat.boot_id, [0; 16]);
    }

    #[test]
    fn refuses_non_loopback_targets() {
        for target in ["192.0.2.1:43278", "[2001:db8::1]:43278", "10.0.0.1:1"] {
            let config = LoadgenConfig {
                target: target.parse().expect("addr"),
                ..LoadgenConfig::default()
            };
            assert!(matches!(validate(&config), Err(Error::NotLoopback(_))));
            let allowed = LoadgenConfig {
                allow_remote: true,
                ..config
            };
            assert!(validate(&allowed).is_ok());
        }
        for target in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let config = LoadgenConfig {
                target: target.parse().expect("addr"),
                ..LoadgenConfig::default()
            };
            assert!(validate(&config).is_ok(), "{target}");
        }
    }

    #[test]
    fn source_addresses_are_distinct_loopback_addresses() {
        let addrs: std::collections::HashSet<_> = (0..MAX_SOURCES).map(source_addr).collect();
        assert_eq!(addrs.len(), MAX_SOURCES as usize);
        assert!(addrs.iter().all(|a| a.is_loopback() && a.octets()[3] != 0));
    }

    #[test]
    fn sends_every_due_beat_and_stops_the_chosen_hosts() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let config = LoadgenConfig {
            target: rx.local_addr().expect("addr"),
            hosts: 20,
            interval: Duration::from_millis(100),
            duration: Duration::from_secs(5),
            max_packets: Some(100),
            sources: 4,
            stop_count: 2,
            stop_after: Duration::ZERO,
            ..LoadgenConfig::default()
        };
        let report = run(&config, None, &AtomicBool::new(false)).expect("run");
        assert_eq!(report.errors, 0);
        let ids: Vec<_> = report.stopped.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["host-0000001", "host-0000011"]);
        assert!(report.stopped.iter().all(|s| s.last_beat.is_none()));
        // 100 due packets minus the two stopped hosts' 5 rounds each.
        assert_eq!(report.packets, 90);
        let mut buf = [0u8; 512];
        let mut sources = std::collections::HashSet::new();
        for _ in 0..report.packets {
            let (len, from) = rx.recv_from(&mut buf).expect("receive");
            let Ok(protocol::Packet::V1(beat)) = protocol::decode(&buf[..len]) else {
                panic!("bad packet");
            };
            assert!(!ids.contains(&beat.host_id), "stopped host beat");
            sources.insert(from.ip());
        }
        assert!(sources.iter().all(|ip| ip.is_loopback()));
    }
}
