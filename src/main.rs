//! The `lubdub` command: thin CLI over the library.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lubdub::config::{ClientConfig, DEFAULT_PORT, FileConfig, ServerConfig, ServerFile};
use lubdub::{client, duration, loadgen, server, shutdown};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Heartbeat monitor: tells you, at each host's own deadline, which of your
/// computers has stopped working.
#[derive(Parser)]
#[command(name = "lubdub", version, about)]
struct Cli {
    /// Quieter: only warnings and state changes.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More output: -v adds every beat, -vv everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive beats and report hosts that go silent.
    Server(ServerArgs),
    /// Send beats to one or more servers.
    Client(ClientArgs),
    /// Simulate a fleet of hosts beating to a server, to measure it.
    Loadgen(LoadgenArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// Seed form: timeout (seconds, or a duration like 30s).
    #[arg(value_name = "TIMEOUT", value_parser = duration::parse_seconds_or_duration, conflicts_with = "timeout")]
    seed_timeout: Option<Duration>,
    /// Seed form: UDP port.
    #[arg(value_name = "PORT", requires = "seed_timeout")]
    seed_port: Option<u16>,
    /// UDP address to receive beats on [default: [::]:43278, dual-stack].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// HTTP address of the API [default: 127.0.0.1:43278].
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Silence after which a host is down [default: 30s].
    #[arg(long, value_parser = duration::parse)]
    timeout: Option<Duration>,
    /// Silence after which a host is late [default: half the timeout].
    #[arg(long, value_parser = duration::parse)]
    late_after: Option<Duration>,
    /// Also print the list of silent hosts this often, as the seed did.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    silent_report: Option<Duration>,
    /// Directory for the server's state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; its `[server]` table sets any of these settings.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServerArgs {
    /// Defaults, then the config file, then flags.
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut config = load_file(self.config.as_deref())?.server;
        if let Some(port) = self.seed_port {
            config.listen.set_port(port);
        }
        set(&mut config.listen, self.listen);
        set(&mut config.http, self.http);
        set(&mut config.timeout, self.timeout.or(self.seed_timeout));
        config.late_after = self.late_after.or(config.late_after);
        config.silent_report = self.silent_report.or(config.silent_report);
        config.data_dir = self.data_dir.or(config.data_dir);
        Ok(config)
    }
}

fn load_file(path: Option<&std::path::Path>) -> anyhow::Result<FileConfig> {
    Ok(match path {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    })
}

#[derive(Args)]
struct ClientArgs {
    /// Servers: HOST, HOST:PORT or [IPv6]:PORT (port 43278 unless given).
    /// The seed form `SERVERIP PORT` also works.
    #[arg(value_name = "SERVER", required_unless_present = "config")]
    servers: Vec<String>,
    /// Time between beats [default: 10s].
    #[arg(long, value_parser = duration::parse)]
    interval: Option<Duration>,
    /// Identity to report [default: the hostname].
    #[arg(long)]
    host_id: Option<String>,
    /// Send the seed's bare `Thump!`, to feed an old PyHeartBeat server.
    #[arg(long)]
    legacy: bool,
    /// TOML config file; its `[client]` table sets any of these settings.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ClientArgs {
    /// Defaults, then the config file, then flags (servers named on the
    /// command line replace the file's list).
    fn into_config(self) -> anyhow::Result<ClientConfig> {
        let mut config = load_file(self.config.as_deref())?.client;
        if !self.servers.is_empty() {
            config.servers = seed_client_form(self.servers);
        }
        set(&mut config.interval, self.interval);
        config.host_id = self.host_id.or(config.host_id);
        config.legacy |= self.legacy;
        Ok(config)
    }
}

/// The seed's `client SERVERIP PORT`: two arguments, the second a bare port.
fn seed_client_form(servers: Vec<String>) -> Vec<String> {
    match servers.as_slice() {
        [host, port] if port.parse::<u16>().is_ok() => {
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            vec![format!("{host}:{port}")]
        }
        _ => servers,
    }
}

#[derive(Args)]
struct LoadgenArgs {
    /// Server to load, as ADDR:PORT (loopback only unless --allow-remote).
    #[arg(value_name = "TARGET")]
    target: SocketAddr,
    /// Simulated hosts [default: 1000].
    #[arg(long)]
    hosts: Option<u32>,
    /// Each host's beat interval [default: 10s].
    #[arg(long, value_parser = duration::parse)]
    interval: Option<Duration>,
    /// How long to run [default: 10s].
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Stop after this many packets, if before --duration.
    #[arg(long, value_name = "COUNT")]
    beats: Option<u64>,
    /// Source addresses (127.x.y.z sockets) to spread hosts over [default: 256].
    #[arg(long)]
    sources: Option<u32>,
    /// Host id prefix; ids are the prefix plus a padded number [default: host-].
    #[arg(long)]
    id_prefix: Option<String>,
    /// Digits of the host number [default: 7, so ids are 12 characters].
    #[arg(long)]
    id_digits: Option<usize>,
    /// Hosts (chosen evenly over the fleet) that stop beating at --stop-after.
    #[arg(long, value_name = "K")]
    stop_count: Option<u32>,
    /// When the --stop-count hosts fall silent [default: 0s].
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    stop_after: Option<Duration>,
    /// Permit a non-loopback target (never in tests or CI).
    #[arg(long)]
    allow_remote: bool,
}

impl LoadgenArgs {
    fn into_config(self) -> loadgen::LoadgenConfig {
        let mut config = loadgen::LoadgenConfig {
            target: self.target,
            allow_remote: self.allow_remote,
            max_packets: self.beats,
            ..loadgen::LoadgenConfig::default()
        };
        set(&mut config.hosts, self.hosts);
        set(&mut config.interval, self.interval);
        set(&mut config.duration, self.duration);
        set(&mut config.sources, self.sources);
        set(&mut config.id_prefix, self.id_prefix);
        set(&mut config.id_digits, self.id_digits);
        set(&mut config.stop_count, self.stop_count);
        set(&mut config.stop_after, self.stop_after);
        config
    }
}

/// Runs the load generator on a blocking thread; a signal ends it early,
/// and it still reports what it sent.
async fn run_loadgen(
    config: loadgen::LoadgenConfig,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loadgen::validate(&config)?;
    println!(
        "loadgen target={} hosts={} interval={} duration={} sources={}",
        config.target,
        config.hosts,
        duration::format(config.interval),
        duration::format(config.duration),
        config.sources,
    );
    let config_interval = config.interval;
    let flag = Arc::new(AtomicBool::new(false));
    let watcher = {
        let flag = flag.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            flag.store(true, Ordering::Relaxed);
        })
    };
    let report = tokio::task::spawn_blocking(move || loadgen::run(&config, None, &flag))
        .await
        .context("load generator thread")??;
    watcher.abort();
    for stopped in &report.stopped {
        let last = stopped.last_beat.map_or("never".to_string(), |at| {
            humantime::format_rfc3339_micros(at).to_string()
        });
        println!("stopped {} last_beat={last}", stopped.id);
    }
    println!(
        "sent packets={} bytes={} errors={} seconds={:.3} rate={:.0}/s max_lag={:.3}s",
        report.packets,
        report.bytes,
        report.errors,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.max_lag.as_secs_f64()
    );
    if report.max_lag > config_interval / 10 {
        eprintln!(
            "lubdub: the sender fell up to {:.1}s behind schedule: the machine could not offer this load",
            report.max_lag.as_secs_f64()
        );
    }
    if let Some(error) = &report.last_error {
        eprintln!("lubdub: last send error: {error}");
    }
    Ok(())
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUBDUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lubdub={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lubdub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lubdub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let stop = shutdown::on_signal();
    match command {
        Command::Server(args) => {
            let print_config = args.print_config;
            let config = args.into_config()?;
            if print_config {
                let file = ServerFile { server: &config };
                print!("{}", toml::to_string(&file).context("printing the config")?);
                return Ok(());
            }
            let server = server::Server::bind(config)
                .await
                .context("starting the server")?;
            println!(
                "listening udp={} http={}",
                server.udp_addr(),
                server.http_addr()
            );
            server.run(stop).await.context("running the server")
        }
        Command::Client(args) => {
            let config = args.into_config()?;
            let client = client::Client::new(config.clone()).context("starting the client")?;
            tracing::info!(
                host_id = client.host_id(),
                servers = ?config.servers,
                interval = %duration::format(config.interval),
                "beating (port {DEFAULT_PORT} unless given)"
            );
            client.run(stop).await;
            Ok(())
        }
        Command::Loadgen(args) => run_loadgen(args.into_config(), stop).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_positional_forms() {
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

        assert_eq!(
            seed_client_form(vec!["10.0.0.1".into(), "5000".into()]),
            ["10.0.0.1:5000"]
        );
        assert_eq!(
            seed_client_form(vec!["::1".into(), "5000".into()]),
            ["[::1]:5000"]
        );
        assert_eq!(seed_client_form(vec!["a".into(), "b".into()]), ["a", "b"]);
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["lubdub", "server", "--timeout", "soon"][..],
            &["lubdub", "server", "--timeout", "10"],
            &["lubdub", "server", "30", "notaport"],
            &["lubdub", "client"],
            &["lubdub", "client", "h", "--interval", "-1s"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
