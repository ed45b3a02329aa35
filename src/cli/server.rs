//! `lubdub server`: flags → `ServerConfig` → a running server.
//!
//! A flag is an `Option` with no clap default, so that an absent flag
//! leaves the value of the file or the environment alone; its help shows
//! the default from `ServerConfig::default()` (see `defaults.rs`).

use lubdub::config::{ServerFile, ValidServerConfig};
use lubdub::monitor::DetectorKind;
use lubdub::{duration, server, store};

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `lubdub server`. Each setting's default, and its `LUBDUB_…`
/// variable, are added to its help from the config types.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Seed form: timeout (seconds, or a duration like 30s).
    #[arg(value_name = "TIMEOUT", value_parser = duration::parse_seconds_or_duration, conflicts_with = "timeout")]
    seed_timeout: Option<Duration>,
    /// Seed form: UDP port.
    #[arg(value_name = "PORT", requires = "seed_timeout")]
    seed_port: Option<u16>,
    /// UDP address to receive beats on (`[::]` is dual-stack).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// HTTP address of the API.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Silence after which a host is down.
    #[arg(long, value_parser = duration::parse)]
    timeout: Option<Duration>,
    /// Silence after which a host is late (unset: half the timeout).
    #[arg(long, value_parser = duration::parse)]
    late_after: Option<Duration>,
    /// Probe a suspected host before declaring it down (`[server.probe]`).
    #[arg(long)]
    probes: bool,
    /// Spacing of the probes to one host.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    probe_interval: Option<Duration>,
    /// Also print the list of silent hosts this often, as the seed did.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    silent_report: Option<Duration>,
    /// Directory for the server's state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; its `[server]` table sets any of these settings.
    #[arg(long, value_name = "FILE", env = "LUBDUB_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// How many recent events to keep for the API.
    #[arg(long, value_name = "N")]
    event_history: Option<usize>,
    /// Kernel receive buffer of the UDP socket, in bytes.
    #[arg(long, value_name = "BYTES")]
    recv_buffer_bytes: Option<usize>,
    /// How often last-seen times are written to the store.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    checkpoint_interval: Option<Duration>,
    /// Start afresh: delete the stored hosts and events in the data
    /// directory before starting (refused while another server uses it).
    #[arg(long)]
    forget_all: bool,
    /// Accept only beats signed with a key of this file (see `lubdub keygen`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// With --key-file: also accept unsigned legacy `Thump!` beats from this
    /// network (CIDR; repeat for several).
    #[arg(long = "legacy-network", id = "legacy_networks", value_name = "CIDR")]
    legacy_network: Vec<ipnet::IpNet>,
    /// With --key-file: largest difference between a beat's send time and
    /// the server's clock.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    max_clock_skew: Option<Duration>,
    /// Most hosts tracked; beats from further new hosts are dropped.
    #[arg(long, value_name = "N")]
    max_hosts: Option<usize>,
    /// Bearer token the API's mutating calls must carry (unset: none).
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Failure detector: fixed timeout or phi accrual.
    #[arg(long, value_enum)]
    detector: Option<DetectorKind>,
    /// Record every beat's arrival to FILE, for `lubdub simulate --trace`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

impl ServerArgs {
    /// Defaults, then the config file, then `LUBDUB_…` variables, then
    /// flags; validated.
    fn into_config(self) -> anyhow::Result<ValidServerConfig> {
        let mut config = super::file_and_env(self.config.as_deref(), |file| file.server)?;
        if let Some(port) = self.seed_port {
            config.listen.set_port(port);
        }
        super::set(&mut config.listen, self.listen);
        super::set(&mut config.http, self.http);
        super::set(&mut config.timeout, self.timeout.or(self.seed_timeout));
        config.late_after = self.late_after.or(config.late_after);
        config.probe.enabled |= self.probes;
        super::set(&mut config.probe.interval, self.probe_interval);
        config.silent_report = self.silent_report.or(config.silent_report);
        config.data_dir = self.data_dir.or(config.data_dir);
        super::set(&mut config.event_history, self.event_history);
        super::set(&mut config.recv_buffer_bytes, self.recv_buffer_bytes);
        super::set(&mut config.checkpoint_interval, self.checkpoint_interval);
        config.key_file = self.key_file.or(config.key_file);
        if !self.legacy_network.is_empty() {
            config.legacy_networks = self.legacy_network;
        }
        super::set(&mut config.max_clock_skew, self.max_clock_skew);
        super::set(&mut config.max_hosts, self.max_hosts);
        config.api_token = self.api_token.or(config.api_token);
        super::set(&mut config.detector, self.detector);
        config.record = self.record.or(config.record);
        Ok(config.validate()?)
    }
}

/// Runs the server until `stop` (or prints its settings).
pub async fn run(args: ServerArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let (print_config, forget_all) = (args.print_config, args.forget_all);
    let again = args.clone(); // SIGHUP reads the config as at start
    let config = args.into_config()?;
    if print_config {
        return super::print_config(&ServerFile {
            server: &config.redacted(),
        });
    }
    if forget_all {
        let dir = store::resolve_data_dir(config.data_dir.as_deref())?;
        if store::forget(&dir).context("forgetting the stored state")? {
            tracing::warn!(dir = %dir.display(), "forgot every stored host and event (--forget-all)");
        }
    }
    let server = server::Server::bind(config)
        .await
        .context("starting the server")?
        .reload_with(move || again.clone().into_config());
    match server.key_count() {
        0 => tracing::info!("no key file: unsigned beats are accepted"),
        keys => tracing::info!(keys, "beats must be signed with a listed key"),
    }
    println!(
        "listening udp={} http={}",
        server.udp_addr(),
        server.http_addr()
    );
    server.run(stop).await.context("running the server")
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    #[test]
    fn seed_positional_form() {
        let cli =
            Cli::try_parse_from(["lubdub", "server", "60", "5000"]).expect("seed server form");
        let Command::Server(args) = cli.command else {
            panic!("server")
        };
        let config = args.into_config().expect("valid");
        assert_eq!(
            (config.timeout, config.listen.port()),
            (Duration::from_secs(60), 5000)
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["lubdub", "server", "--timeout", "soon"][..],
            &["lubdub", "server", "--timeout", "10"],
            &["lubdub", "server", "30", "notaport"],
            &["lubdub", "client", "h", "--interval", "-1s"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
