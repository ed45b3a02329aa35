//! `lubdub maintenance`: planned silence, in two forms told apart by
//! `--server`:
//!
//! - without it (the host form), run on the host itself: with the client's
//!   config, host id and key, it announces "silent for `--for`" in a signed
//!   datagram to the client's servers and returns once one confirms (a
//!   signed answer when keyed), or fails after `--timeout`;
//! - with `--server URL` (the operator form), from any machine: it opens a
//!   window through the API over `--host`/`--label`/`--network`, or lists
//!   (`--list`) or ends (`--end ID`) windows.

use lubdub::client::{default_host_id, parse_server, signer};
use lubdub::duration;
use lubdub::protocol::maintenance::{self as wire, Announcement, status};

use anyhow::{Context, bail};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Flags of `lubdub maintenance`.
#[derive(clap::Args)]
pub struct MaintenanceArgs {
    /// How long the window lasts (`20m`, `2h`).
    #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse)]
    pub(super) length: Option<Duration>,
    /// Operator form: when the window ends, RFC 3339 (instead of --for).
    #[arg(
        long,
        value_name = "TIME",
        requires = "server",
        conflicts_with = "length"
    )]
    pub(super) until: Option<String>,
    /// Why: shown in the API and sent with the events.
    #[arg(long, value_name = "TEXT")]
    pub(super) reason: Option<String>,
    /// Operator form: the server's HTTP API (URL or HOST:PORT). Without it,
    /// the host form announces this host's own window over UDP.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Operator form: hosts by id or glob (repeatable).
    #[arg(long = "host", value_name = "GLOB", requires = "server")]
    pub(super) hosts: Vec<String>,
    /// Operator form: hosts carrying this label (repeatable; all must match).
    #[arg(long = "label", value_name = "NAME=VALUE", requires = "server")]
    pub(super) labels: Vec<String>,
    /// Operator form: hosts in this network (repeatable).
    #[arg(long = "network", value_name = "CIDR", requires = "server")]
    pub(super) networks: Vec<String>,
    /// Operator form: list the open windows.
    #[arg(long, requires = "server")]
    pub(super) list: bool,
    /// Operator form: end window ID now.
    #[arg(long, value_name = "ID", requires = "server")]
    pub(super) end: Option<u64>,
    /// Operator form: a file holding the server's API token.
    #[arg(long, value_name = "FILE", requires = "server")]
    pub(super) token_file: Option<PathBuf>,
    /// Host form: the client's config file (servers, host id, key).
    #[arg(long, value_name = "FILE", env = "LUBDUB_CONFIG")]
    config: Option<PathBuf>,
    /// Host form: the host id (default: the client's).
    #[arg(long)]
    host_id: Option<String>,
    /// Host form: the key file (default: the client's).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Host form: the key id (default: the newest).
    #[arg(long, value_name = "ID")]
    key_id: Option<u32>,
    /// Host form: the servers to tell (default: the client's).
    #[arg(value_name = "SERVER")]
    servers: Vec<String>,
    /// Give up after this long without a confirmation.
    #[arg(long, value_parser = duration::parse, default_value = "5s")]
    pub(super) timeout: Duration,
}

/// Runs the command (blocking, without the runtime).
pub fn run(args: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    if let Some(reason) = &args.reason {
        wire::check_reason(reason).map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
    }
    match args.server.clone() {
        Some(server) => super::maintenance_api::run(&server, &args),
        None => announce(args),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// How often an unconfirmed announcement is sent again (each time anew:
/// a server refuses a repeated one as a replay).
const RESEND: Duration = Duration::from_millis(500);

/// The host form.
fn announce(args: MaintenanceArgs) -> anyhow::Result<()> {
    let Some(length) = args.length else {
        bail!("give --for DURATION (or --server URL for the operator form)");
    };
    let mut config = super::file_and_env(args.config.as_deref(), |file| file.client)?;
    if !args.servers.is_empty() {
        config.servers = args.servers.clone();
    }
    config.host_id = args.host_id.clone().or(config.host_id);
    config.key_file = args.key_file.clone().or(config.key_file);
    config.key_id = args.key_id.or(config.key_id);
    if config.servers.is_empty() {
        bail!("no server to tell: name one, or set servers in the client's config");
    }
    let host_id = config.host_id.clone().unwrap_or_else(default_host_id);
    let signer = match &config.key_file {
        Some(path) => Some(signer(path, config.key_id, &host_id).context("loading the key")?),
        None => None,
    };
    let reason = args.reason.clone().unwrap_or_default();
    let mut targets = Vec::new();
    for spec in &config.servers {
        let (host, port) =
            parse_server(spec).with_context(|| format!("bad server address {spec:?}"))?;
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        targets.extend(addrs.into_iter().next());
    }
    let socket = |v6: bool| {
        let any: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .expect("address");
        UdpSocket::bind(any)
    };
    let (v4, v6) = (socket(false).ok(), socket(true).ok());
    let deadline = Instant::now() + args.timeout;
    let mut sent: Vec<[u8; 8]> = Vec::new();
    let mut buf = Vec::with_capacity(512);
    let mut answer = [0u8; 512];
    while Instant::now() < deadline {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("random nonce: {e}"))?;
        let sent_at_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let a = Announcement {
            sent_at_micros,
            duration_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
            nonce,
            host_id: &host_id,
            reason: &reason,
            tag: None,
        };
        wire::encode_announcement(&a, signer.as_ref().map(|s| s.key_id()), &mut buf)
            .context("encoding the announcement")?;
        if let Some(s) = &signer {
            s.sign_tagged(&mut buf);
        }
        sent.push(nonce);
        for target in &targets {
            let socket = if target.is_ipv6() { &v6 } else { &v4 };
            if let Some(socket) = socket {
                let _ = socket.send_to(&buf, target);
            }
        }
        let wait_until = (Instant::now() + RESEND).min(deadline);
        while let Some(left) = wait_until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            let mut got = None;
            for socket in [&v4, &v6].into_iter().flatten() {
                socket.set_read_timeout(Some(left.max(Duration::from_millis(1)) / 2))?;
                if let Ok((n, from)) = socket.recv_from(&mut answer) {
                    got = Some((n, from));
                    break;
                }
            }
            let Some((n, from)) = got else { continue };
            let Ok(c) = wire::decode_confirmation(&answer[..n]) else {
                continue;
            };
            let authentic = match &signer {
                Some(s) => s.verify_tagged(&answer[..n], c.tag),
                None => true,
            };
            if !authentic || c.host_id != host_id || !sent.contains(&c.nonce) {
                continue; // not an answer to us: keep waiting
            }
            return match c.status {
                status::OPEN => {
                    let until = UNIX_EPOCH + Duration::from_micros(c.until_micros);
                    println!(
                        "maintenance window {} open for {host_id} on {from} until {}",
                        c.window,
                        humantime::format_rfc3339_seconds(until)
                    );
                    Ok(())
                }
                status::UNKNOWN_HOST => {
                    bail!("{from} does not know host {host_id:?} (has its client beat yet?)")
                }
                _ => bail!("{from} opened no window: host {host_id:?} is paused or has left"),
            };
        }
    }
    bail!(
        "no server confirmed the maintenance window within {} ({}): check that they are reachable and that the key matches theirs",
        humantime::format_duration(args.timeout),
        config.servers.join(", ")
    )
}
