//! Settings of the server and the client. `Default` is the single source of
//! truth for every default; command-line flags only override fields.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod detection;
pub mod email;
pub mod env;
pub mod groups;
pub mod label_rules;
pub mod preset;
pub mod probe;
pub mod redact;
pub mod secret;
pub mod sinks;
pub mod watchdog;

/// The UDP port beats go to, as in the seed.
pub const DEFAULT_PORT: u16 = 43278;

/// Why a configuration was refused. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings (unknown key,
    /// bad value); the message names the key and the line.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// One line: where and what.
        message: String,
    },
    /// A field holds a value outside its allowed range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field, as written in the config file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable (`LUBDUB_…`) holds a value its setting does
    /// not accept; the message names the variable.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// One line: what is wrong with its value.
        message: String,
    },
}

/// The error of a field holding a value outside its allowed range: the one
/// way every settings check in this module and its children says so.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}

/// `Ok` when `ok` holds, else the [`invalid`] error of `field`: a settings
/// check in one line, so each `validate` reads as its list of rules.
pub(crate) fn ensure(
    ok: bool,
    field: &'static str,
    reason: impl Into<String>,
) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(invalid(field, reason))
    }
}

/// The config file (`--config FILE`, TOML): a `[server]` and a `[client]`
/// table, each holding any of the fields of [`ServerConfig`] and
/// [`ClientConfig`]. Missing fields keep their defaults; unknown ones are
/// an error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Settings of `lubdub server`.
    pub server: ServerConfig,
    /// Settings of `lubdub client`.
    pub client: ClientConfig,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| Error::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses config text; the error is one line naming the line and key.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let mut message = e.message().replace('\n', " ");
            if let Some(key) = e.span().and_then(|span| key_at(text, span.start)) {
                message = format!("{key}: {message}");
            }
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            }
        })
    }
}

/// The dotted key (`server.timeout`) assigned on the line holding `offset`,
/// so a bad value's error names its key and not only its line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[start..].lines().next()?.split_once('=')?;
    let key = key.trim();
    let table = text[..start].lines().rev().find_map(|line| {
        let line = line.trim();
        let name = line.strip_prefix('[')?.split_once(']')?.0;
        Some(name.trim_matches(|c| c == '[' || c == ' '))
    });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// The `[server]` table alone, for `lubdub server --print-config`.
#[derive(Serialize)]
pub struct ServerFile<'a> {
    /// Settings of `lubdub server`.
    pub server: &'a ServerConfig,
}

/// The `[client]` table alone, for `lubdub client --print-config`.
#[derive(Serialize)]
pub struct ClientFile<'a> {
    /// Settings of `lubdub client`.
    pub client: &'a ClientConfig,
}

/// Settings of `lubdub server`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address beats arrive on. The default `[::]:43278` is dual-stack:
    /// it takes IPv4 and IPv6 beats (it falls back to `0.0.0.0` where the
    /// machine has no IPv6).
    pub listen: SocketAddr,
    /// HTTP address of `/healthz` and the JSON API. Loopback by default:
    /// expose it deliberately. Default: `127.0.0.1:43278`.
    pub http: SocketAddr,
    /// Silence after which a host is declared `down`. Raised per host to 3 ×
    /// the interval its client declares, so a client beating every 60 s is
    /// not dead after 30 s. Lower detects faster, but a few lost packets then
    /// raise false alarms. Default: 30s (three of the default 10 s beats).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Silence after which a host is `late` (a warning, not an alarm). When
    /// a host's timeout is raised by its declared interval, this is raised in
    /// proportion. Unset: half the timeout.
    #[serde(with = "humantime_serde")]
    pub late_after: Option<Duration>,
    /// Print the list of silent (late and down) hosts this often, as the
    /// seed did every 30 s. Unset (the default): only state changes are
    /// printed.
    #[serde(with = "humantime_serde")]
    pub silent_report: Option<Duration>,
    /// How many recent events the server keeps for the API. Default: 10000.
    pub event_history: usize,
    /// Kernel receive buffer for the UDP socket, in bytes as the kernel
    /// counts them (about 800 per queued beat). Larger absorbs bursts (a
    /// fleet restarting together) and pauses of the server without drops;
    /// memory is used only while datagrams wait. Default: 32 MiB, about
    /// 0.4 s of 100,000 beats/s (without `CAP_NET_ADMIN` the kernel caps it
    /// at twice `net.core.rmem_max`, and the server says so at start).
    pub recv_buffer_bytes: usize,
    /// Where the server keeps its state. Unset: a per-user data directory.
    pub data_dir: Option<PathBuf>,
    /// Alert sinks (`[[server.sinks.exec]]`, `[[server.sinks.webhook]]`,
    /// `[[server.sinks.alertmanager]]`) and mass-silence detection
    /// (`[server.sinks.mass_silence]`); see docs/ALERTS.md. Default: no
    /// sinks, only the console.
    pub sinks: sinks::SinksConfig,
    /// How often the last-seen times (and sequence numbers) of hosts that
    /// only beat are written to the store; new hosts and state changes are
    /// written at once, and everything at shutdown. After a `kill -9` or a
    /// power cut, last-seen times are up to this stale; that costs little,
    /// since every remembered `up` host gets a full timeout of grace on
    /// restart anyway, and with keys a stale seq lets only beats still
    /// within `max_clock_skew` be replayed. Each checkpoint writes every host
    /// that beat since the last one (about 2.4 µs of CPU per host), so
    /// shorter costs more: at a million hosts, 24 % of a core at 5s, 4 % at
    /// 1m, under 1 % at 5m (computed from docs/BENCHMARKS.md). Default: 5m.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Key file (written by `lubdub keygen`, see docs/SECURITY.md). Set, the
    /// server accepts only beats signed with a listed key, checks that each
    /// host's sequence numbers only move forward and that beats are fresh
    /// (`max_clock_skew`), and drops legacy `Thump!` beats unless their source
    /// is in `legacy_networks`. Unset (the default, as in the seed): every
    /// well-formed beat is accepted, signed or not.
    pub key_file: Option<PathBuf>,
    /// Networks (CIDR, e.g. `10.1.0.0/16`, `::1/128`) whose unsigned legacy
    /// `Thump!` beats a server with `key_file` still accepts, for old
    /// PyHeartBeat clients that cannot sign. Empty (the default): none. No
    /// effect without `key_file`, where every legacy beat is accepted.
    pub legacy_networks: Vec<ipnet::IpNet>,
    /// With `key_file`: how far a signed beat's send time may lie from the
    /// server's clock, either way. It bounds how long a captured beat can be
    /// replayed to a server that has forgotten the host's sequence number
    /// (e.g. after a restart); lower is safer but needs well-synchronised
    /// clocks (NTP). Default: 2m.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Most hosts the server tracks. Beats from further new hosts are
    /// dropped (counted as `max_hosts` in `lubdub_packets_dropped_total`,
    /// logged at most once a minute), so a flood of made-up host ids cannot
    /// exhaust memory; known hosts are unaffected. Default: 2000000 (twice
    /// the fleet DESIGN.md sizes a server for; a few hundred bytes each).
    pub max_hosts: usize,
    /// Most hosts the server does not know that may join per second (a
    /// token bucket holding one second's worth). Beats of further new
    /// hosts are dropped (counted as `join_rate` in
    /// `lubdub_packets_dropped_total`, logged at most once a minute) and
    /// join with a later beat; known hosts are never limited. Without keys
    /// anyone can make up host ids: this bounds how fast a flood of them
    /// fills memory and the store, below `max_hosts`. A fresh server with
    /// no store takes N / rate seconds to learn a fleet of N hosts. 0: no
    /// limit. Default: 10000.
    pub join_rate: u32,
    /// Bearer token required by the API's mutating calls (forget, pause,
    /// resume) as `Authorization: Bearer <token>`. Reads stay open. Unset
    /// (the default): no token, so anyone who reaches the HTTP address can
    /// change hosts; keep `http` on loopback then.
    pub api_token: Option<String>,
    /// Names (besides IP addresses and `localhost`) that HTTP requests may
    /// call the server by in their `Host` header, e.g. `lubdub.example.org`
    /// when Prometheus scrapes it by name. A request naming anything else is
    /// refused (421): that is how a DNS-rebinding page, which can make its
    /// own name point at 127.0.0.1, is kept from reading and driving the
    /// API from the operator's browser (docs/SECURITY.md). Empty (the
    /// default): addresses and `localhost` only.
    pub http_hosts: Vec<String>,
    /// Most HTTP connections open at once; further clients wait in the
    /// kernel's accept queue until one closes. Bounds the descriptors and
    /// memory the API can take, so that it cannot starve ingest, the store
    /// or the sinks; it is also lowered to leave 256 descriptors free under
    /// the process's descriptor limit (which the server raises to its
    /// maximum at start). Default: 512.
    pub http_max_connections: usize,
    /// How long an HTTP client may take to send a request's headers, and
    /// how long a kept-alive connection may sit idle before its next
    /// request; then it is closed. Lower frees slots held by slow or idle
    /// clients sooner; higher tolerates slower networks. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// Failure detector: `fixed` (the `timeout` above) or `phi` (phi
    /// accrual over each host's own rhythm and loss rate, `[server.phi]`);
    /// see docs/DETECTION.md for how they compare. Default: fixed.
    pub detector: detection::DetectorKind,
    /// Window of flapping detection: a host that goes `down`
    /// `flap_threshold` times within it is marked flapping (one event), and
    /// settles after a whole window without a new `down`. Default: 10m.
    #[serde(with = "humantime_serde")]
    pub flap_window: Duration,
    /// `down`s within `flap_window` that make a host flapping; 0 turns
    /// flapping detection off. Default: 3.
    pub flap_threshold: u16,
    /// Settings of the phi accrual detector.
    pub phi: detection::PhiConfig,
    /// Probing suspected hosts before declaring them `down`
    /// (`[server.probe]`, docs/DETECTION.md). Default: off.
    pub probe: probe::ProbeConfig,
    /// Per-host detector overrides, by host-id glob; the first match wins.
    /// Default: none.
    pub host_detectors: Vec<detection::HostDetector>,
    /// Record every v1 beat's arrival to this file, as a compact trace for
    /// `lubdub simulate --trace` (to tune the detector on real traffic).
    /// Unset (the default): no recording.
    pub record: Option<PathBuf>,
    /// Who watches this server (`[server.watchdog]`): beats to other lubdub
    /// servers and a dead man's switch URL; see docs/OPERATIONS.md.
    /// Default: nothing.
    #[serde(default)]
    pub watchdog: watchdog::WatchdogConfig,
    /// Redundancy groups (`[[server.groups]]`): pages when too few of a
    /// pool are up; see docs/GROUPS.md. Takes effect at a restart.
    /// Default: none.
    pub groups: Vec<groups::GroupConfig>,
    /// What depends on what (`[[server.dependencies]]`): hosts behind a
    /// `down` host or group are `unreachable`, not paged; see
    /// docs/GROUPS.md. Takes effect at a restart. Default: none.
    pub dependencies: Vec<groups::DependencyConfig>,
    /// Labels the server gives hosts by rule (`[[server.labels]]`: `hosts`,
    /// `labels`, `networks` select as a sink does; `set` is what they get).
    /// A rule wins over the client's own label of the same name; a later
    /// rule over an earlier one. Applies live on reload. Default: none.
    pub labels: Vec<label_rules::LabelRuleConfig>,
    /// Label names to break `/metrics`' hosts by state down by
    /// (`["team"]`: `lubdub_hosts_by_labels{team="web",state="down"}`).
    /// Off when empty; every name multiplies the series, so at most
    /// [`crate::server::metrics::MAX_LABEL_COMBINATIONS`] combinations of
    /// values are shown and the rest fold into one `other` series; see
    /// docs/LABELS.md. Takes effect at a restart. Default: none.
    pub metrics_by_labels: Vec<String>,
    /// Scheduled maintenance windows (`[[server.maintenance]]`: `schedule`
    /// (cron), `duration`, `timezone`, `reason`, and hosts by `hosts`,
    /// `labels`, `networks`); see docs/OPERATIONS.md. Default: none.
    #[serde(default)]
    pub maintenance: Vec<crate::schedule::ScheduledWindow>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_PORT)),
            http: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            timeout: Duration::from_secs(30),
            late_after: None,
            silent_report: None,
            event_history: 10_000,
            recv_buffer_bytes: 32 << 20,
            data_dir: None,
            sinks: Default::default(),
            checkpoint_interval: Duration::from_secs(300),
            key_file: None,
            legacy_networks: Vec::new(),
            max_clock_skew: Duration::from_secs(120),
            max_hosts: 2_000_000,
            join_rate: 10_000,
            api_token: None,
            http_hosts: Vec::new(),
            http_max_connections: 512,
            http_header_timeout: Duration::from_secs(10),
            detector: detection::DetectorKind::Fixed,
            flap_window: Duration::from_secs(600),
            flap_threshold: 3,
            phi: detection::PhiConfig::default(),
            probe: probe::ProbeConfig::default(),
            host_detectors: Vec::new(),
            record: None,
            watchdog: Default::default(),
            groups: Vec::new(),
            dependencies: Vec::new(),
            labels: Vec::new(),
            metrics_by_labels: Vec::new(),
            maintenance: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Loopback, port 0 (the OS picks free ports) and a 300 ms timeout, for
    /// tests.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            http: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            timeout: Duration::from_millis(300),
            ..Self::default()
        }
    }

    /// Checks the settings that parse but make no sense together, and
    /// returns them checked: the one type the server (and the simulator)
    /// take, so nothing downstream checks again.
    pub fn validate(&self) -> Result<ValidServerConfig, Error> {
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be greater than 0"));
        }
        if let Some(late) = self.late_after
            && (late.is_zero() || late >= self.timeout)
        {
            return Err(invalid(
                "late_after",
                "must be greater than 0 and less than timeout",
            ));
        }
        if self.silent_report.is_some_and(|d| d.is_zero()) {
            return Err(invalid("silent_report", "must be greater than 0"));
        }
        let sinks = self.sinks.validate()?;
        if self.checkpoint_interval.is_zero() {
            return Err(invalid("checkpoint_interval", "must be greater than 0"));
        }
        if self.max_clock_skew.is_zero() {
            return Err(invalid("max_clock_skew", "must be greater than 0"));
        }
        if self.max_hosts == 0 {
            return Err(invalid("max_hosts", "must be greater than 0"));
        }
        if self
            .api_token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "api_token",
                "must be non-empty, without spaces or control characters",
            ));
        }
        if let Some(name) = self.http_hosts.iter().find(|n| {
            n.is_empty()
                || n.contains(|c: char| c.is_whitespace() || c.is_control() || "/:@".contains(c))
        }) {
            return Err(invalid(
                "http_hosts",
                format!("{name:?} is not a host name (no port, scheme or path)"),
            ));
        }
        if self.http_max_connections == 0 {
            return Err(invalid("http_max_connections", "must be greater than 0"));
        }
        if self.http_header_timeout.is_zero() {
            return Err(invalid("http_header_timeout", "must be greater than 0"));
        }
        if self.flap_window.is_zero() {
            return Err(invalid("flap_window", "must be greater than 0"));
        }
        self.watchdog.validate()?;
        check_metrics_by_labels(&self.metrics_by_labels)?;
        crate::schedule::compile(&self.maintenance).map_err(|e| invalid("maintenance", e))?;
        let rules =
            detection::compile(self.detector, self.timeout, &self.phi, &self.host_detectors)?;
        let monitor = crate::monitor::Settings {
            timeout: self.timeout,
            late_ratio: self.late_ratio(),
            rules,
            flap_window: self.flap_window,
            flap_threshold: self.flap_threshold,
            max_hosts: self.max_hosts,
            enforce_seq: self.key_file.is_some(),
            probe: self.probe.settings()?,
        };
        let topology = groups::compile(&self.groups, &self.dependencies)?;
        Ok(ValidServerConfig {
            config: self.clone(),
            monitor,
            sinks,
            topology,
            label_rules: label_rules::compile(&self.labels)?,
        })
    }

    /// The share of a host's timeout after which it is `late`.
    pub fn late_ratio(&self) -> f64 {
        match self.late_after {
            Some(late) => late.as_secs_f64() / self.timeout.as_secs_f64(),
            None => 0.5,
        }
    }
}

/// Server settings that passed [`ServerConfig::validate`], with the
/// monitor's settings compiled from them. Reads as the [`ServerConfig`] it
/// was made from.
#[derive(Clone, Debug)]
pub struct ValidServerConfig {
    config: ServerConfig,
    monitor: crate::monitor::Settings,
    sinks: sinks::CheckedSinks,
    topology: crate::monitor::groups::Spec,
    label_rules: Vec<crate::monitor::LabelRule>,
}

impl ValidServerConfig {
    /// The groups and dependencies, compiled.
    pub fn topology(&self) -> &crate::monitor::groups::Spec {
        &self.topology
    }

    /// What the monitoring core judges by.
    pub fn monitor(&self) -> &crate::monitor::Settings {
        &self.monitor
    }

    /// What validation parsed of the sinks' settings (names, host
    /// selectors, URLs), for the sinks to take as it is.
    pub fn checked_sinks(&self) -> &sinks::CheckedSinks {
        &self.sinks
    }

    /// The server's label rules, compiled.
    pub fn label_rules(&self) -> &[crate::monitor::LabelRule] {
        &self.label_rules
    }
}

impl std::ops::Deref for ValidServerConfig {
    type Target = ServerConfig;

    fn deref(&self) -> &ServerConfig {
        &self.config
    }
}

/// Settings of `lubdub client`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Servers to beat to, each `HOST`, `HOST:PORT`, `IP`, `IP:PORT` or
    /// `[IPv6]:PORT`; the port defaults to 43278. Beats go to every server
    /// (run two servers for high availability).
    pub servers: Vec<String>,
    /// Time between beats, declared in every beat so the server allows at
    /// least 3 of them before declaring the host down. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Share of the interval by which each wait is randomly lengthened or
    /// shortened, so a fleet that starts together does not beat in lockstep.
    /// Default: 0.05 (±5 %).
    pub jitter: f64,
    /// The identity this host reports. Unset: the hostname.
    pub host_id: Option<String>,
    /// Send the seed's bare `Thump!` instead of v1 beats, to feed an old
    /// PyHeartBeat server. The server then keys the host by its IP address.
    pub legacy: bool,
    /// Key file to sign beats with (see `lubdub keygen`). Unset: beats are
    /// not signed, which a server with a key file drops.
    pub key_file: Option<PathBuf>,
    /// Id of the key in `key_file` to sign with. Unset: the highest id (the
    /// newest, as `lubdub keygen --add` numbers keys upwards).
    pub key_id: Option<u32>,
    /// File holding this host's boot id, a UUID (as in
    /// `/proc/sys/kernel/random/boot_id`). A new boot id tells the server
    /// the host restarted (`rebooted`). Unset: the kernel's, which a
    /// container shares with its host, so a container's restarts go
    /// unnoticed; give it one written at each container start, e.g. `cat
    /// /proc/sys/kernel/random/uuid > /run/lubdub/boot_id`.
    pub boot_id_file: Option<PathBuf>,
    /// This host's labels (`{ team = "web", role = "frontend" }`; in
    /// `LUBDUB_LABELS` as `team=web,role=frontend`): they travel with the
    /// host into the API, events and alerts. Names follow Prometheus'
    /// rules; at most 16, values at most 128 bytes. Default: none.
    pub labels: crate::labels::Labels,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            interval: Duration::from_secs(10),
            jitter: 0.05,
            host_id: None,
            legacy: false,
            key_file: None,
            key_id: None,
            boot_id_file: None,
            labels: crate::labels::Labels::new(),
        }
    }
}

impl ClientConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        if self.servers.is_empty() {
            return Err(invalid("servers", "name at least one server"));
        }
        if self.interval.is_zero() {
            return Err(invalid("interval", "must be greater than 0"));
        }
        if self.interval.as_millis() > u128::from(u32::MAX) {
            return Err(invalid("interval", "must be less than 49 days"));
        }
        if !(0.0..0.5).contains(&self.jitter) {
            return Err(invalid("jitter", "must be at least 0 and below 0.5"));
        }
        if let Some(id) = &self.host_id
            && (id.is_empty() || id.len() > crate::protocol::MAX_HOST_ID_LEN)
        {
            return Err(invalid("host_id", "must be 1 to 255 bytes"));
        }
        if let Some(id) = &self.host_id
            && let Err(e) = crate::protocol::check_host_id(id)
        {
            return Err(invalid("host_id", e.to_string()));
        }
        if self.key_id.is_some() && self.key_file.is_none() {
            return Err(invalid("key_id", "needs key_file"));
        }
        if self.legacy && self.key_file.is_some() {
            return Err(invalid("key_file", "legacy Thump! beats cannot be signed"));
        }
        Ok(())
    }
}

/// Most names `metrics_by_labels` takes: each multiplies the series.
pub const MAX_METRICS_BY_LABELS: usize = 4;

/// `metrics_by_labels`: label names, none twice, none the metric's own
/// `state`, at most [`MAX_METRICS_BY_LABELS`].
fn check_metrics_by_labels(names: &[String]) -> Result<(), Error> {
    let field = "metrics_by_labels";
    if names.len() > MAX_METRICS_BY_LABELS {
        return Err(invalid(
            field,
            format!("at most {MAX_METRICS_BY_LABELS} names"),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        crate::labels::check_name(name).map_err(|e| invalid(field, e.to_string()))?;
        if name == "state" {
            return Err(invalid(field, "\"state\" is the metric's own label"));
        }
        if names[..i].contains(name) {
            return Err(invalid(field, format!("{name:?} is named twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let server = ServerConfig::default();
        assert_eq!(server.listen.to_string(), "[::]:43278");
        assert_eq!(server.http.to_string(), "127.0.0.1:43278");
        assert_eq!(server.timeout, Duration::from_secs(30));
        assert_eq!(server.late_ratio(), 0.5);
        server.validate().expect("defaults are valid");
        assert_eq!(ClientConfig::default().interval, Duration::from_secs(10));
    }

    #[test]
    fn config_file_round_trips_and_names_bad_keys() {
        let defaults = FileConfig::default();
        let text = toml::to_string(&defaults).expect("serialise");
        assert_eq!(FileConfig::parse(&text), Ok(defaults.clone()));
        let server_only = toml::to_string(&ServerFile {
            server: &defaults.server,
        })
        .expect("serialise");
        assert_eq!(FileConfig::parse(&server_only), Ok(defaults));

        let custom = FileConfig::parse("[server]\ntimeout = \"1m\"\nlisten = \"127.0.0.1:9\"\n")
            .expect("valid");
        assert_eq!(custom.server.timeout, Duration::from_secs(60));
        assert_eq!(
            custom.server.http,
            ServerConfig::default().http,
            "unset keys keep defaults"
        );

        let unknown = FileConfig::parse("[server]\ntimeout = \"1m\"\ntimout = \"2m\"\n")
            .expect_err("unknown key");
        assert!(
            unknown.starts_with("line 3: ") && unknown.contains("timout"),
            "{unknown}"
        );
        let bad = FileConfig::parse("[client]\ninterval = \"soon\"\n").expect_err("bad value");
        assert!(bad.starts_with("line 2: ") && !bad.contains('\n'), "{bad}");
    }

    /// A change that makes a setting invalid, and the field its error names.
    type BadCase<T> = (fn(&mut T), &'static str);

    /// Makes each change of `cases` to a copy of `base` and checks that
    /// `validate` refuses the result with an error starting with the field
    /// named next to it.
    fn names_the_field<T: Clone, R>(
        base: &T,
        validate: impl Fn(&T) -> Result<R, Error>,
        cases: &[BadCase<T>],
    ) {
        for (change, field) in cases {
            let mut bad = base.clone();
            change(&mut bad);
            let err = validate(&bad)
                .err()
                .unwrap_or_else(|| panic!("{field}: accepted"));
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        names_the_field(
            &ServerConfig::default(),
            ServerConfig::validate,
            &[
                (|c| c.timeout = Duration::ZERO, "timeout"),
                (
                    |c| c.late_after = Some(Duration::from_secs(30)),
                    "late_after",
                ),
                (|c| c.silent_report = Some(Duration::ZERO), "silent_report"),
                (|c| c.api_token = Some("two words".into()), "api_token"),
            ],
        );
        let client = ClientConfig {
            servers: vec!["a".into()],
            ..ClientConfig::default()
        };
        client.validate().expect("valid");
        names_the_field(
            &client,
            ClientConfig::validate,
            &[
                (|c| c.servers = vec![], "servers"),
                (|c| c.interval = Duration::ZERO, "interval"),
                (|c| c.jitter = 0.7, "jitter"),
                (|c| c.host_id = Some(String::new()), "host_id"),
            ],
        );
    }
}
