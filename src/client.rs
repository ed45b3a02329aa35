//! The client: beats to every configured server until shutdown, then says
//! goodbye. It survives unreachable servers, DNS failures and network
//! errors: it logs them (at most once a minute per server) and keeps beating.
//!
//! It runs on plain threads and blocking sockets, not on an async runtime:
//! it sends one small datagram every few seconds, and every host runs one,
//! so its footprint matters more than its concurrency (issue 7: at most
//! 3 MB resident; docs/BENCHMARKS.md, "Client footprint"). Between beats the
//! one thread sleeps in the kernel until the next beat or a signal.

mod announce;
pub mod answer;
mod identity;
mod memory;
mod servers;
#[cfg(unix)]
mod signals;

pub use identity::{boot_id, boot_id_from, default_host_id, signer};
pub use servers::{Fd, parse_server};
#[cfg(unix)]
pub use signals::StopSignals;

use crate::auth::Signer;
use crate::config::{ClientConfig, DEFAULT_PORT};
use crate::protocol::{self, Beat, flags};
use crate::ratelimit::RateLimit;
use memory::release_unused_memory;
use servers::{ERROR_LOG_PERIOD, Sockets, Target, recv_now, send};
use std::net::{IpAddr, SocketAddr};
// No async runtime, so no paused tokio clock to honour: std's monotonic
// clock is the right one here.
use std::time::{Duration, Instant, SystemTime};

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

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

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
