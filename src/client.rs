//! The client: beats to every configured server until shutdown, then says
//! goodbye. It survives unreachable servers, DNS failures and network
//! errors: it logs them (at most once a minute per server) and keeps beating.
//!
//! It runs on plain threads and blocking sockets, not on an async runtime:
//! it sends one small datagram every few seconds, and every host runs one,
//! so its footprint matters more than its concurrency (issue 7: at most
//! 3 MB resident; docs/BENCHMARKS.md, "Client footprint"). Between beats the
//! one thread sleeps in the kernel until the next beat or a signal.

pub mod answer;

use crate::auth::{KeyRing, Signer};
use crate::config::{ClientConfig, DEFAULT_PORT};
use crate::protocol::{self, Beat, flags};
use crate::ratelimit::RateLimit;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
// No async runtime, so no paused tokio clock to honour: std's monotonic
// clock is the right one here.
use std::time::{Duration, Instant, SystemTime};

/// How often a failing server is logged about.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);
/// Names are resolved again this often even when sending works, to follow
/// DNS changes.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// Longest wait for one DNS lookup, so a dead resolver cannot stall the beat
/// to the other servers for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a send may block (a full socket buffer), for the same reason.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// A reload changed a setting that needs a restart.
    #[error(
        "host_id, legacy and boot_id_file change only at a restart (another id is another host)"
    )]
    NeedsRestart,
    /// The labels cannot be announced (too long for one datagram).
    #[error("labels: {0}")]
    Labels(#[from] protocol::labels::AnnounceError),
    /// The boot id file cannot be read or holds no boot id.
    #[error("boot id file {path}: {reason}")]
    BootId {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What ends a wait between beats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Time for the next beat.
    Beat,
    /// Stop (SIGINT, SIGTERM): send the goodbye and end.
    Stop,
    /// Read the configuration again (SIGHUP).
    Reload,
    /// A datagram waits on a client socket (a probe, perhaps).
    Readable,
}

/// One server to beat to.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    /// `host` when it is an IP address: never resolved.
    literal: Option<IpAddr>,
    /// Resolved addresses; beats go to the first, and a failure rotates.
    addrs: Vec<SocketAddr>,
    /// Where the latest beat that left went: the one address probes are
    /// answered from (kept while `addrs` is cleared after an error).
    beat_to: Option<SocketAddr>,
    resolved_at: Option<Instant>,
    error_log: RateLimit,
    failing: bool,
    /// A lookup that outlived [`RESOLVE_TIMEOUT`]: its answer is awaited
    /// again next time instead of starting another, so a hung resolver
    /// costs at most one thread per server.
    lookup: Option<mpsc::Receiver<io::Result<Vec<SocketAddr>>>>,
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

/// The boot id written in `path` (a UUID, as the kernel's).
pub fn boot_id_from(path: &std::path::Path) -> Result<[u8; 16], Error> {
    let error = |reason: String| Error::BootId {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    protocol::parse_boot_id(&text)
        .ok_or_else(|| error("expected a UUID such as 0f5ad3c2-6a1e-4b0c-9d7e-2f4a8c1b3e5d".into()))
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

/// A socket's file descriptor, to wait on.
#[cfg(unix)]
pub type Fd = std::os::fd::RawFd;
/// A socket's handle, to wait on (unused off unix).
#[cfg(not(unix))]
pub type Fd = i32;

impl Sockets {
    /// The open sockets' descriptors (a fixed array: no allocation on
    /// the beat path) and how many there are.
    fn fds(&self) -> ([Fd; 2], usize) {
        let mut fds = [0; 2];
        let mut count = 0;
        #[cfg(unix)]
        for socket in [&self.v4, &self.v6].into_iter().flatten() {
            use std::os::fd::AsRawFd;
            fds[count] = socket.as_raw_fd();
            count += 1;
        }
        (fds, count)
    }

    fn for_addr(&mut self, to: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, local) = match to {
            SocketAddr::V4(_) => (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        if slot.is_none() {
            let socket = UdpSocket::bind(local)?;
            socket.set_write_timeout(Some(SEND_TIMEOUT))?;
            *slot = Some(socket);
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
    /// Jitter source, owned rather than the thread-local one, so a beat
    /// runs less code (see [`release_unused_memory`]).
    rng: fastrand::Rng,
    /// Code off the steady beat path ran since memory was last released:
    /// start-up, a DNS lookup, a send error or recovery (and its log line).
    off_path: bool,
    /// Give memory back after start-up and rare paths (the `lubdub client`
    /// process); off when the loop runs inside a server ([`Client::embedded`]).
    release_memory: bool,
    /// Set while the loop answers probes (then its beats say so).
    answerer: Option<answer::Answerer>,
    /// Beats until the labels are announced again (0: with the next beat).
    announce_in: u64,
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
                let literal = host.parse::<IpAddr>().ok();
                let addrs = literal
                    .map(|ip| vec![SocketAddr::new(ip, port)])
                    .unwrap_or_default();
                Ok(Target {
                    host,
                    port,
                    literal,
                    addrs,
                    beat_to: None,
                    resolved_at: None,
                    error_log: RateLimit::new(ERROR_LOG_PERIOD),
                    failing: false,
                    lookup: None,
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
        let boot_id = match &config.boot_id_file {
            Some(path) => boot_id_from(path)?,
            None => boot_id(),
        };
        // Refused at start, not at the first announcement: too many labels
        // for one datagram.
        protocol::labels::encode(
            0,
            0,
            &host_id,
            &config.labels,
            signer.as_ref().map(|_| protocol::Tag {
                key_id: 0,
                mac: [0; protocol::MAC_LEN],
            }),
            &mut Vec::new(),
        )?;
        Ok(Self {
            host_id,
            boot_id,
            seq: (start_secs & 0xffff_ffff) << 32,
            targets,
            sockets: Sockets::default(),
            packet: Vec::with_capacity(protocol::MAX_PACKET_LEN),
            signer,
            rng: fastrand::Rng::new(),
            off_path: true,
            release_memory: true,
            answerer: None,
            announce_in: 0,
            config,
        })
    }

    /// For a beat loop inside another process (the server's watchdog): it
    /// never trims the heap nor unmaps the executable's code, which would
    /// make a busy server fault its own code back in.
    pub fn embedded(mut self) -> Self {
        self.release_memory = false;
        self
    }

    /// The host id this client reports.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The id of the key beats are signed with; `None` when unsigned.
    pub fn key_id(&self) -> Option<u32> {
        self.signer.as_ref().map(Signer::key_id)
    }

    /// Logs the start line: who it is, where it beats, how it signs.
    pub fn log_start(&self) {
        tracing::info!(
            host_id = self.host_id,
            servers = ?self.config.servers,
            signed_with_key = %self.key_label(),
            interval = %crate::duration::format(self.config.interval),
            "beating (port {DEFAULT_PORT} unless given)"
        );
    }

    /// The key id beats are signed with, or `none`, for the log.
    fn key_label(&self) -> String {
        self.key_id()
            .map_or_else(|| "none".into(), |id| id.to_string())
    }

    /// Beats until `wait` says to stop, then sends a goodbye to every
    /// server. Between beats it calls `wait(time until the next beat)`,
    /// which sleeps up to that long and returns `true` when the client
    /// should stop (tests pass their own; see [`Client::run_with`]).
    pub fn run(self, mut wait: impl FnMut(Duration) -> bool) {
        self.run_with(
            |timeout| {
                if wait(timeout) {
                    Wake::Stop
                } else {
                    Wake::Beat
                }
            },
            || None,
        );
    }

    /// [`Client::run`], where `wait` may also ask for a reload: `reload`
    /// then gives the configuration read again (`None`: it could not be,
    /// and said why), which [`Client::apply`] puts in force before the next
    /// beat, keeping the beat's schedule.
    pub fn run_with(
        self,
        mut wait: impl FnMut(Duration) -> Wake,
        reload: impl FnMut() -> Option<ClientConfig>,
    ) {
        self.run_loop(|timeout, _| wait(timeout), reload);
    }

    /// The beat loop: `wait(timeout, sockets)` sleeps up to `timeout`, or
    /// until one of `sockets` is readable ([`Wake::Readable`]: the loop
    /// then answers what probes wait there).
    fn run_loop(
        mut self,
        mut wait: impl FnMut(Duration, &[Fd]) -> Wake,
        mut reload: impl FnMut() -> Option<ClientConfig>,
    ) {
        let mut next = Instant::now();
        'beats: loop {
            self.beat(false, None);
            if std::mem::take(&mut self.off_path) && self.release_memory {
                release_unused_memory();
            }
            next += self.jittered_interval();
            loop {
                let now = Instant::now();
                if next < now {
                    next = now; // suspended or overloaded: do not burst to catch up
                }
                let (fds, count) = self.sockets.fds();
                match wait(next - now, &fds[..count]) {
                    Wake::Beat => break,
                    Wake::Stop => break 'beats,
                    Wake::Readable => self.answer_probes(),
                    Wake::Reload => {
                        if let Some(config) = reload() {
                            match self.apply(config) {
                                Ok(()) => self.log_reloaded(),
                                Err(e) => tracing::error!(
                                    "reload refused, still running on the previous config: {e}"
                                ),
                            }
                        }
                        self.off_path = true;
                    }
                }
            }
        }
        if !self.config.legacy {
            self.beat(true, None);
        }
        if let Some(answerer) = &self.answerer
            && (answerer.answered > 0 || answerer.ignored != answer::Ignored::default())
        {
            tracing::info!(answered = answerer.answered, ignored = ?answerer.ignored, "probes");
        }
    }

    /// Reads what waits on the sockets (a bounded number of datagrams) and
    /// answers the probes among them (see [`answer`]).
    fn answer_probes(&mut self) {
        let Some(answerer) = self.answerer.as_mut() else {
            return;
        };
        let mut buf = [0u8; 512];
        let mut to_answer = Vec::new();
        let servers: Vec<Option<SocketAddr>> = self.targets.iter().map(|t| t.beat_to).collect();
        let me = answer::Me {
            servers: &servers,
            host_id: &self.host_id,
            signer: self.signer.as_ref(),
            interval: self.config.interval,
        };
        for socket in [&self.sockets.v4, &self.sockets.v6].into_iter().flatten() {
            // Bounded: a flood cannot keep the loop from beating.
            for _ in 0..64 {
                let Ok((len, from)) = recv_now(socket, &mut buf) else {
                    break;
                };
                let found = answerer.check(&buf[..len], from, &me, Instant::now());
                if let Some(found) = found {
                    to_answer.push(found);
                }
            }
        }
        for (server, nonce) in to_answer {
            tracing::debug!(server = %self.targets[server].host, "answering a probe");
            self.beat(false, Some((server, nonce)));
        }
    }

    /// Puts a configuration read again in force: servers, interval,
    /// jitter and the key (read again from the key file). The host id,
    /// the legacy mode and the boot id file need a restart (another id is
    /// another host to the server); a change to them refuses the reload.
    pub fn apply(&mut self, config: ClientConfig) -> Result<(), Error> {
        let fresh = Client::new(config)?;
        if fresh.host_id != self.host_id
            || fresh.config.legacy != self.config.legacy
            || fresh.config.boot_id_file != self.config.boot_id_file
        {
            return Err(Error::NeedsRestart);
        }
        // The sequence, boot id and sockets go on: the server sees the same
        // host, beating on.
        self.targets = fresh.targets;
        self.signer = fresh.signer;
        if fresh.config.labels != self.config.labels {
            self.announce_in = 0; // with the next beat
        }
        self.config = fresh.config;
        Ok(())
    }

    fn log_reloaded(&self) {
        tracing::info!(
            servers = ?self.config.servers,
            signed_with_key = %self.key_label(),
            interval = %crate::duration::format(self.config.interval),
            "reloaded"
        );
    }

    /// [`Client::run`] until SIGINT or SIGTERM; SIGHUP reloads, reading
    /// the configuration again with `load` (as at start: file, environment,
    /// flags).
    /// It answers probes (issue 15) where the OS lets it wait on signals
    /// and sockets together (Linux).
    #[cfg(unix)]
    pub fn run_until_signal<E: std::fmt::Display>(
        mut self,
        signals: &StopSignals,
        mut load: impl FnMut() -> Result<ClientConfig, E>,
    ) {
        if signals.can_wait_on_sockets() && !self.config.legacy {
            self.answerer = Some(answer::Answerer::new(Instant::now()));
        }
        self.run_loop(
            |timeout, sockets| signals.wait_on(timeout, sockets),
            || {
                tracing::info!("SIGHUP: reloading the config and the key file");
                // `{:#}`: an anyhow error with its causes, on one line.
                load()
                    .map_err(|e| {
                        tracing::error!(
                            "reload refused, still running on the previous config: {e:#}"
                        )
                    })
                    .ok()
            },
        );
    }

    fn jittered_interval(&mut self) -> Duration {
        let spread = self.config.jitter * (2.0 * self.rng.f64() - 1.0);
        self.config.interval.mul_f64(1.0 + spread)
    }

    /// Sends one beat (or the goodbye) to every server; with `answer`
    /// (server index, nonce), one beat answering that server's probe, to it
    /// alone.
    fn beat(&mut self, goodbye: bool, answer: Option<(usize, u64)>) {
        let payload: &[u8] = if self.config.legacy {
            protocol::LEGACY_THUMP
        } else {
            let mut beat_flags = if goodbye { flags::GOODBYE } else { 0 };
            if self.answerer.is_some() {
                beat_flags |= flags::ANSWERS_PROBES;
            }
            let beat = Beat {
                flags: beat_flags,
                seq: self.seq,
                boot_id: self.boot_id,
                sent_at_micros: unix_micros(SystemTime::now()),
                interval_ms: u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX),
                host_id: &self.host_id,
                answers: answer.map(|(_, nonce)| nonce),
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
        for (index, target) in self.targets.iter_mut().enumerate() {
            if answer.is_some_and(|(to, _)| to != index) {
                continue;
            }
            let resolved_at = target.resolved_at;
            let result = send(target, &mut self.sockets, payload);
            self.off_path |= target.resolved_at != resolved_at;
            match result {
                Ok(to) => {
                    target.beat_to = Some(to);
                    tracing::debug!(server = %to, goodbye, "beat sent");
                    if std::mem::take(&mut target.failing) {
                        self.off_path = true;
                        tracing::info!(server = %target.host, "sending to server works again");
                        target.error_log.reset();
                    }
                }
                Err(e) => {
                    self.off_path = true;
                    target.failing = true;
                    target.addrs.clear(); // resolve again next time
                    if let Some(suppressed) = target.error_log.check(Instant::now()) {
                        tracing::warn!(server = %target.host, port = target.port, suppressed, "cannot send beat: {e}");
                    }
                }
            }
        }
        if !self.config.legacy && !goodbye && answer.is_none() {
            self.announce();
        }
    }

    /// Announces the labels after a beat when due: at start, after a
    /// change, and every `REFRESH_BEATS` beats (a client without labels
    /// announces the empty set at start and on a change only, so a
    /// server's stale labels are cleared without a steady extra datagram).
    fn announce(&mut self) {
        if self.announce_in > 0 {
            self.announce_in -= 1;
            return;
        }
        self.announce_in = if self.config.labels.is_empty() {
            u64::MAX
        } else {
            protocol::labels::REFRESH_BEATS - 1
        };
        let seq = self.seq.wrapping_sub(1); // the beat just sent
        let sent_at = unix_micros(SystemTime::now());
        let mut packet = Vec::with_capacity(protocol::labels::MAX_LEN);
        let encoded = match &self.signer {
            Some(signer) => signer.sign_announcement(
                seq,
                sent_at,
                &self.host_id,
                &self.config.labels,
                &mut packet,
            ),
            None => protocol::labels::encode(
                seq,
                sent_at,
                &self.host_id,
                &self.config.labels,
                None,
                &mut packet,
            ),
        };
        if encoded.is_err() {
            return; // checked at start
        }
        // Failures are the beat's to log: the announcement goes where the
        // beat just went.
        for target in &mut self.targets {
            if let Err(e) = send(target, &mut self.sockets, &packet) {
                tracing::debug!(server = %target.host, "cannot send label announcement: {e}");
            }
        }
    }
}

/// One datagram already waiting on `socket`, without blocking.
fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    socket.set_nonblocking(true)?;
    let received = socket.recv_from(buf);
    socket.set_nonblocking(false)?;
    received
}

/// The signer for `host_id` from the key file: key `key_id`, or the newest.
pub fn signer(path: &std::path::Path, key_id: Option<u32>, host_id: &str) -> Result<Signer, Error> {
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
fn send(target: &mut Target, sockets: &mut Sockets, payload: &[u8]) -> io::Result<SocketAddr> {
    let literal = target.literal;
    let stale = target
        .resolved_at
        .is_none_or(|at| at.elapsed() > RESOLVE_EVERY);
    if literal.is_none() && (target.addrs.is_empty() || stale) {
        let addrs = lookup(target)?;
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
    let result = sockets.for_addr(to).and_then(|s| s.send_to(payload, to));
    if result.is_err() && target.addrs.len() > 1 {
        target.addrs.rotate_left(1); // try the next address next time
    }
    result.map(|_| to)
}

/// Resolves `target`'s name, waiting at most [`RESOLVE_TIMEOUT`].
/// `getaddrinfo` itself cannot be given a deadline, so it runs on a thread
/// of its own, which is left to finish (and picked up next time) when it
/// takes longer.
fn lookup(target: &mut Target) -> io::Result<Vec<SocketAddr>> {
    lookup_with(target, RESOLVE_TIMEOUT, |name| {
        name.to_socket_addrs().map(Iterator::collect)
    })
}

/// [`lookup`] with the wait and the resolver as parameters, for tests.
fn lookup_with(
    target: &mut Target,
    timeout: Duration,
    resolve: impl FnOnce((String, u16)) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> io::Result<Vec<SocketAddr>> {
    let answer = match target.lookup.take() {
        Some(pending) => pending,
        None => {
            let (tx, rx) = mpsc::sync_channel(1);
            let name = (target.host.clone(), target.port);
            std::thread::Builder::new()
                .name("lubdub-resolve".into())
                .spawn(move || {
                    // The receiver may be gone (shutdown): nothing to tell.
                    let _ = tx.send(resolve(name));
                })?;
            rx
        }
    };
    match answer.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            target.lookup = Some(answer);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "DNS lookup timed out",
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other("DNS lookup ended without an answer"))
        }
    }
}

/// Gives back what the steady beat loop does not use: the heap's free
/// memory, and the pages of the executable that start-up (argument parsing,
/// logging set-up, config, key loading) or a rare path (a DNS lookup, an
/// error) mapped. Called after the first beat and after any beat that left
/// the steady path.
///
/// The one `lubdub` binary holds the server too, and the kernel maps a
/// binary's code 64 KiB around each page touched, so start-up alone leaves
/// about 3 MB of it mapped, nearly all of it never run again. Unmapping
/// costs nothing but a page fault for each part the loop needs again (a few
/// hundred KiB, faulted back in by the next beat); the code stays in the
/// page cache, where the kernel may now reclaim the rest. Only read-only
/// file mappings that were never written are unmapped: such a page reads
/// back exactly as it was. A relocated (copied-on-write) mapping would lose
/// its changes and is left alone. The shared libraries are left alone too:
/// their pages are the same in every process. Best effort: any failure
/// leaves all as is.
#[cfg(target_os = "linux")]
fn release_unused_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let ranges = {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        clean_file_mappings(&smaps, &exe.to_string_lossy())
    }; // the text is freed first, so no allocator code runs after the unmap
    for &(start, end) in ranges.iter().flatten() {
        // SAFETY: [start, end) is a whole read-only, private mapping of the
        // executable file with no private (written) pages: dropping its
        // pages only makes the next access read them from the file again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
fn release_unused_memory() {}

/// Most mappings of the executable [`clean_file_mappings`] reports; a
/// binary has four or five (headers, code, read-only data, relocated and
/// writable data).
const MAX_MAPPINGS: usize = 8;

/// The address ranges in `smaps` (the text of `/proc/self/smaps`) that map
/// `path` read-only and private with no anonymous (written) pages. A fixed
/// array, not a `Vec`: freeing it would run allocator code just unmapped.
fn clean_file_mappings(smaps: &str, path: &str) -> [Option<(usize, usize)>; MAX_MAPPINGS] {
    let mut found = [None; MAX_MAPPINGS];
    let mut slots = found.iter_mut();
    let mut current = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A mapping's header: range perms offset dev inode path.
            let perms = fields.next().unwrap_or_default();
            let mapped = fields.nth(3).unwrap_or_default();
            let wanted = perms.starts_with('r') && !perms.contains('w') && perms.ends_with('p');
            current = (wanted && mapped == path).then_some((start, end));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && fields.next() == Some("0")
            && let Some(slot) = slots.next()
        {
            *slot = Some(range);
        }
    }
    found
}

/// SIGINT and SIGTERM, taken synchronously: the client's one thread sleeps
/// in `sigtimedwait` between beats, so a signal ends the sleep at once,
/// with no handler, self-pipe or runtime thread to keep resident.
#[cfg(unix)]
pub struct StopSignals {
    set: libc::sigset_t,
    /// The same signals as a descriptor (Linux), so the loop can wait on
    /// them and its sockets together.
    #[cfg(target_os = "linux")]
    signal_fd: Option<std::os::fd::OwnedFd>,
}

#[cfg(unix)]
impl StopSignals {
    /// Blocks SIGINT and SIGTERM in this thread, and so in every thread it
    /// starts afterwards: call it before starting any. From then on they
    /// wait, pending, for [`StopSignals::wait`].
    pub fn block() -> io::Result<Self> {
        // SAFETY: plain libc calls on a local, initialized sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            // A reload, not an end: a closed terminal must not stop the
            // beats (nor end them without a goodbye).
            libc::sigaddset(&mut set, libc::SIGHUP);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            #[cfg(target_os = "linux")]
            let signal_fd = {
                use std::os::fd::FromRawFd;
                let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
                (fd >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(fd))
            };
            Ok(Self {
                set,
                #[cfg(target_os = "linux")]
                signal_fd,
            })
        }
    }

    /// True when [`StopSignals::wait_on`] also wakes for sockets.
    pub fn can_wait_on_sockets(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.signal_fd.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// [`StopSignals::wait`], but also ends with [`Wake::Readable`] when a
    /// datagram waits on one of `sockets` (Linux: `poll` on them and a
    /// signalfd; elsewhere the sockets are not watched).
    pub fn wait_on(&self, timeout: Duration, sockets: &[Fd]) -> Wake {
        #[cfg(target_os = "linux")]
        if let Some(signal_fd) = &self.signal_fd
            && !sockets.is_empty()
        {
            use std::os::fd::AsRawFd;
            let deadline = Instant::now() + timeout;
            let mut polled = [libc::pollfd {
                fd: signal_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }; 3];
            for (entry, &fd) in polled[1..].iter_mut().zip(sockets) {
                entry.fd = fd;
            }
            let count = 1 + sockets.len().min(2);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up: waking a moment early would only wait again.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                // SAFETY: `polled` holds `count` initialized entries.
                let ready = unsafe { libc::poll(polled.as_mut_ptr(), count as libc::nfds_t, ms) };
                if ready < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return self.wait(left); // poll itself failed: signals only
                }
                if polled[0].revents != 0 {
                    // A signal is pending: take it the usual way, at once.
                    return match self.wait(Duration::ZERO) {
                        Wake::Beat => continue, // consumed elsewhere meanwhile
                        wake => wake,
                    };
                }
                if polled[1..count].iter().any(|p| p.revents != 0) {
                    return Wake::Readable;
                }
                if ready == 0 && left.is_zero() || Instant::now() >= deadline {
                    return Wake::Beat;
                }
            }
        }
        let _ = sockets;
        self.wait(timeout)
    }

    /// Sleeps up to `timeout`: [`Wake::Stop`] when SIGINT or SIGTERM came
    /// (then a second one ends the process at once with status 130, for
    /// when the goodbye itself hangs, e.g. on DNS), [`Wake::Reload`] on
    /// SIGHUP, else [`Wake::Beat`].
    pub fn wait(&self, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = libc::timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: left.subsec_nanos().into(),
            };
            // SAFETY: `set` was initialized in `block`; a null siginfo is allowed.
            let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if signal == libc::SIGHUP {
                return Wake::Reload;
            }
            if signal > 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                self.exit_on_next();
                return Wake::Stop;
            }
            // EAGAIN: the time is up. EINTR (another signal, a stop and
            // continue): sleep on until the deadline.
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Wake::Beat;
            }
        }
    }

    /// Makes the next SIGINT/SIGTERM exit the process with status 130.
    fn exit_on_next(&self) {
        extern "C" fn exit_now(_: libc::c_int) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) }
        }
        // SAFETY: installs a handler that only calls _exit, then unblocks.
        // SIGHUP stays blocked: a closed terminal must not cut the goodbye.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            for signal in [libc::SIGINT, libc::SIGTERM] {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
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
    fn only_clean_read_only_mappings_of_the_binary_are_released() {
        let smaps = "\
55d0-55e0 r--p 00000000 fe:00 42 /usr/bin/lubdub
Rss:                  64 kB
Anonymous:             0 kB
55e0-5600 r-xp 00010000 fe:00 42 /usr/bin/lubdub
Anonymous:             0 kB
5600-5610 r--p 00030000 fe:00 42 /usr/bin/lubdub
Anonymous:            16 kB
5610-5620 rw-p 00040000 fe:00 42 /usr/bin/lubdub
Anonymous:             4 kB
7f00-7f10 r-xp 00000000 fe:00 43 /usr/lib/libc.so.6
Anonymous:             0 kB
7f10-7f20 rw-p 00000000 00:00 0
Anonymous:             8 kB
";
        let found: Vec<_> = clean_file_mappings(smaps, "/usr/bin/lubdub")
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(found, [(0x55d0, 0x55e0), (0x55e0, 0x5600)]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_unused_memory_keeps_the_code_running() {
        // The real smaps of this test binary: its code is found...
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let found = clean_file_mappings(&smaps, &exe.to_string_lossy());
        assert!(found.iter().flatten().any(|&(start, end)| {
            let code = parse_server as fn(&str) -> Option<(String, u16)> as usize;
            (start..end).contains(&code)
        }));
        // ...and dropping its pages leaves it running: they fault back in.
        release_unused_memory();
        assert_eq!(parse_server("h:1"), Some(("h".to_string(), 1)));
    }

    fn target(host: &str) -> Target {
        Target {
            host: host.into(),
            port: 9,
            literal: None,
            addrs: Vec::new(),
            beat_to: None,
            resolved_at: None,
            error_log: RateLimit::new(ERROR_LOG_PERIOD),
            failing: false,
            lookup: None,
        }
    }

    #[test]
    fn a_slow_lookup_is_waited_for_once_then_picked_up_later() {
        let mut target = target("slow.example");
        let (release, hold) = mpsc::channel::<()>();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let started = Instant::now();
        let error = lookup_with(
            &mut target,
            Duration::from_millis(50),
            move |(host, port)| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = hold.recv_timeout(Duration::from_secs(10)); // a hung resolver
                assert_eq!((host.as_str(), port), ("slow.example", 9));
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], 9))])
            },
        )
        .expect_err("gave up waiting");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(target.lookup.is_some(), "the lookup is kept");
        // The next beat waits for the same lookup instead of starting one.
        release.send(()).expect("resolver waits");
        let addrs = lookup_with(&mut target, Duration::from_secs(10), |_| {
            panic!("no second lookup while one is pending")
        })
        .expect("answer of the first lookup");
        assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 9))]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(target.lookup.is_none());
    }

    #[test]
    fn beats_then_a_goodbye_when_told_to_stop() {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let config = ClientConfig {
            servers: vec![receiver.local_addr().expect("addr").to_string()],
            interval: Duration::from_millis(10),
            host_id: Some("unit".into()),
            ..ClientConfig::default()
        };
        let mut waits = 0;
        Client::new(config).expect("valid").run(|timeout| {
            // At most the interval plus 5 % jitter after each beat.
            assert!(timeout <= Duration::from_micros(10_500), "{timeout:?}");
            std::thread::sleep(timeout);
            waits += 1;
            waits == 3 // three beats, then stop
        });
        let mut buf = [0; protocol::labels::MAX_LEN];
        let mut seqs = Vec::new();
        // The label announcement (at start, even of no labels) follows the
        // first beat.
        let mut announced = 0;
        for goodbye in [false, false, false, true] {
            let mut len = receiver.recv(&mut buf).expect("a beat arrives");
            if protocol::labels::is_announcement(&buf[..len]) {
                let a = protocol::labels::decode(&buf[..len]).expect("announcement");
                assert_eq!((a.host_id, a.seq), ("unit", seqs[0]));
                announced += 1;
                len = receiver.recv(&mut buf).expect("a beat arrives");
            }
            let Ok(protocol::Packet::V1(beat)) = protocol::decode(&buf[..len]) else {
                panic!("not a v1 beat: {:?}", &buf[..len]);
            };
            assert_eq!(beat.host_id, "unit");
            assert_eq!(beat.flags & flags::GOODBYE != 0, goodbye);
            seqs.push(beat.seq);
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(announced, 1, "no labels: announced once, at start");
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
        let mut client = Client::new(config).expect("valid");
        let now_secs = unix_micros(SystemTime::now()) / 1_000_000;
        assert!(now_secs - (client.seq >> 32) < 5);
        for _ in 0..100 {
            let d = client.jittered_interval().as_secs_f64();
            assert!((9.5..=10.5).contains(&d), "{d}");
        }
    }
}
