//! The `lubdub` command: thin CLI over the library.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lubdub::config::{
    ClientConfig, DEFAULT_PORT, FileConfig, ServerConfig, ServerFile, ValidServerConfig,
};
use lubdub::tools::loadgen;
use lubdub::{client, duration, server, shutdown, store};
use lubdub::{config, status};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod keygen;

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
    /// Log format on stderr: `text` for people, `json` (one object per
    /// line) for log collectors [default: text; env: LUBDUB_LOG_FORMAT].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The flag, else `LUBDUB_LOG_FORMAT`, else text. Read by hand rather
    /// than with clap's `env`, whose error would not name the variable.
    fn choose(flag: Option<LogFormat>) -> anyhow::Result<LogFormat> {
        use clap::ValueEnum;
        if let Some(format) = flag {
            return Ok(format);
        }
        match std::env::var_os("LUBDUB_LOG_FORMAT") {
            None => Ok(LogFormat::Text),
            Some(value) if value.is_empty() => Ok(LogFormat::Text),
            Some(value) => {
                let text = value.to_string_lossy();
                LogFormat::from_str(&text, true).map_err(|_| {
                    anyhow::anyhow!("LUBDUB_LOG_FORMAT: invalid value {text:?} (text or json)")
                })
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Receive beats and report hosts that go silent.
    Server(ServerArgs),
    /// Send beats to one or more servers.
    Client(ClientArgs),
    /// Show the fleet as a server sees it (a table, JSON, or a Nagios check).
    Status(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory.
    #[command(hide = true)]
    Man {
        /// Write lubdub.1, lubdub-server.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write a new random key to a key file (mode 0600), or derive a host's key.
    Keygen(keygen::KeygenArgs),
    /// Run the detector on simulated time over synthetic or recorded beat
    /// traces; report detection time and false alarms.
    Simulate(simulate_cli::SimulateArgs),
    /// Simulate a fleet of hosts beating to a server, to measure it.
    Loadgen(LoadgenArgs),
    /// Send a test alert through a running server's sinks; print each outcome.
    TestAlert(server::sinks::test_alert::TestAlertArgs),
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
    #[arg(long, value_name = "FILE", env = "LUBDUB_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// How many recent events to keep for the API [default: 10000].
    #[arg(long, value_name = "N")]
    event_history: Option<usize>,
    /// Kernel receive buffer of the UDP socket, in bytes [default: 32 MiB].
    #[arg(long, value_name = "BYTES")]
    recv_buffer_bytes: Option<usize>,
    /// How often last-seen times are written to the store [default: 5s].
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
    #[arg(long, value_name = "CIDR")]
    legacy_network: Vec<ipnet::IpNet>,
    /// With --key-file: largest difference between a beat's send time and
    /// the server's clock [default: 2m].
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    max_clock_skew: Option<Duration>,
    /// Most hosts tracked; beats from further new hosts are dropped
    /// [default: 2000000].
    #[arg(long, value_name = "N")]
    max_hosts: Option<usize>,
    /// Bearer token the API's mutating calls must carry [default: none].
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Failure detector: fixed timeout or phi accrual [default: fixed].
    #[arg(long, value_enum)]
    detector: Option<lubdub::monitor::DetectorKind>,
    /// Record every beat's arrival to FILE, for `lubdub simulate --trace`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

impl ServerArgs {
    /// Defaults, then the config file, then `LUBDUB_…` variables, then
    /// flags; validated.
    fn into_config(self) -> anyhow::Result<ValidServerConfig> {
        let mut config = load_file(self.config.as_deref())?.server;
        config = config::env::overlay_process(&config)?;
        if let Some(port) = self.seed_port {
            config.listen.set_port(port);
        }
        set(&mut config.listen, self.listen);
        set(&mut config.http, self.http);
        set(&mut config.timeout, self.timeout.or(self.seed_timeout));
        config.late_after = self.late_after.or(config.late_after);
        config.silent_report = self.silent_report.or(config.silent_report);
        config.data_dir = self.data_dir.or(config.data_dir);
        set(&mut config.event_history, self.event_history);
        set(&mut config.recv_buffer_bytes, self.recv_buffer_bytes);
        set(&mut config.checkpoint_interval, self.checkpoint_interval);
        config.key_file = self.key_file.or(config.key_file);
        if !self.legacy_network.is_empty() {
            config.legacy_networks = self.legacy_network;
        }
        set(&mut config.max_clock_skew, self.max_clock_skew);
        set(&mut config.max_hosts, self.max_hosts);
        config.api_token = self.api_token.or(config.api_token);
        set(&mut config.detector, self.detector);
        config.record = self.record.or(config.record);
        Ok(config.validate()?)
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
    /// Without any, the config file's or `LUBDUB_SERVERS` (comma-separated).
    #[arg(value_name = "SERVER")]
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
    #[arg(long, value_name = "FILE", env = "LUBDUB_CONFIG")]
    config: Option<PathBuf>,
    /// Share of the interval by which each wait randomly varies [default: 0.05].
    #[arg(long, value_name = "SHARE")]
    jitter: Option<f64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Sign every beat with a key from this file (see `lubdub keygen`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Id of the key to sign with [default: the highest id in the file].
    #[arg(long, value_name = "ID")]
    key_id: Option<u32>,
}

impl ClientArgs {
    /// Defaults, then the config file, then `LUBDUB_…` variables, then
    /// flags (servers named on the command line replace the list); validated.
    fn into_config(self) -> anyhow::Result<ClientConfig> {
        let mut config = load_file(self.config.as_deref())?.client;
        config = config::env::overlay_process(&config)?;
        if !self.servers.is_empty() {
            config.servers = seed_client_form(self.servers);
        }
        set(&mut config.interval, self.interval);
        config.host_id = self.host_id.or(config.host_id);
        config.legacy |= self.legacy;
        set(&mut config.jitter, self.jitter);
        config.key_file = self.key_file.or(config.key_file);
        config.key_id = self.key_id.or(config.key_id);
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
struct StatusArgs {
    /// The server's HTTP API: HOST:PORT, or a URL such as http://mon:43278/.
    #[arg(long, visible_alias = "http", value_name = "ADDR", default_value = status::DEFAULT_SERVER)]
    server: String,
    /// Print the hosts as JSON (the API's objects, filtered) instead.
    #[arg(long)]
    json: bool,
    /// Only hosts in these states (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(status::STATES))]
    state: Vec<String>,
    /// Act as a Nagios plugin: one line, exit 0 all up, 1 some late, 2 some
    /// down, 3 server unreachable.
    #[arg(long, conflicts_with = "json")]
    check: bool,
    /// Give up on the server after this long.
    #[arg(long, value_parser = duration::parse, default_value = "10s")]
    timeout: Duration,
}

/// `lubdub status`: a blocking HTTP request, so it runs without the runtime.
fn status_command(args: StatusArgs) -> ExitCode {
    use std::io::Write;
    let result = status::fetch(&args.server, args.timeout).map(|h| status::filter(h, &args.state));
    // Write errors (a closed pipe, `| head`) are not worth a panic.
    let mut out = anstream::stdout();
    if args.check {
        let (verdict, line) = match &result {
            Ok(hosts) => status::check(hosts),
            Err(e) => (status::CheckStatus::Unknown, status::check_unknown(e)),
        };
        let _ = writeln!(out, "{line}");
        return ExitCode::from(verdict as u8);
    }
    let hosts = match result {
        Ok(hosts) => hosts,
        Err(e) => {
            eprintln!("lubdub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&hosts) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("lubdub: printing JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        status::table(&hosts, std::time::SystemTime::now())
    };
    let _ = out.write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// `lubdub client`: runs without the async runtime, on one thread that
/// sleeps between beats, so an idle client stays within a few MB (issue 7).
fn client_command(args: ClientArgs) -> ExitCode {
    match run_client(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lubdub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let print_config = args.print_config;
    let config = args.into_config()?;
    if print_config {
        let file = config::ClientFile { client: &config };
        print!("{}", toml::to_string(&file).context("printing the config")?);
        return Ok(());
    }
    // Before any thread starts (DNS lookups), so that every thread inherits
    // the blocked signals and they wait for the beat loop.
    let signals = client::StopSignals::block().context("blocking SIGINT and SIGTERM")?;
    let client = client::Client::new(config.clone()).context("starting the client")?;
    tracing::info!(
        host_id = client.host_id(),
        servers = ?config.servers,
        signed_with_key = ?client.key_id(),
        interval = %duration::format(config.interval),
        "beating (port {DEFAULT_PORT} unless given)"
    );
    client.run_until_signal(&signals);
    Ok(())
}

/// `lubdub man [--dir DIR]`: the man pages, from the CLI definition.
fn man_command(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let command = Cli::command();
    match dir {
        Some(dir) => {
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        None => {
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .context("printing the man page")?;
        }
    }
    Ok(())
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
    /// Sign every beat with this key file's key (a shared key, not a
    /// per-host master), as signed clients do.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Id of the key to sign with [default: the highest id in the file].
    #[arg(long, value_name = "ID", requires = "key_file")]
    key_id: Option<u32>,
}

impl LoadgenArgs {
    /// The signer for `--key-file`, if given.
    fn signer(&self) -> anyhow::Result<Option<lubdub::auth::Signer>> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let ring = lubdub::auth::KeyRing::load(path)?;
        let key = match self.key_id {
            Some(id) => ring.get(id),
            None => ring.newest(),
        }
        .with_context(|| format!("{}: no such key", path.display()))?;
        anyhow::ensure!(
            !key.per_host && key.host.is_none(),
            "{}: key {} is a per-host key; the load generator signs with a shared key",
            path.display(),
            key.id
        );
        Ok(Some(lubdub::auth::Signer::new(key, "")?))
    }

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
    signer: Option<lubdub::auth::Signer>,
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
    let report = tokio::task::spawn_blocking(move || loadgen::run(&config, signer.as_ref(), &flag))
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

fn init_logging(quiet: bool, verbose: u8, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUBDUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lubdub={level}")));
    if format == LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The CLI cut down to `lubdub [-q|-v] [--log-format F] client …`: parsing
/// it builds only the client's flags, not every subcommand's, so the code
/// that builds the others never becomes resident in an idle client
/// (issue 7). Its global flags repeat [`Cli`]'s; anything it cannot parse
/// (help, errors, other commands) goes to [`Cli`], which words the output.
#[derive(Parser)]
#[command(name = "lubdub")]
struct ClientCli {
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: ClientOnly,
}

#[derive(Subcommand)]
enum ClientOnly {
    Client(ClientArgs),
}

impl ClientCli {
    /// `Some` when the arguments are a valid client command line.
    fn parse_client() -> Option<Cli> {
        if !std::env::args_os().any(|arg| arg == "client") {
            return None;
        }
        let cli = ClientCli::try_parse().ok()?;
        let ClientOnly::Client(args) = cli.command;
        Some(Cli {
            quiet: cli.quiet,
            verbose: cli.verbose,
            log_format: cli.log_format,
            command: Command::Client(args),
        })
    }
}

fn main() -> ExitCode {
    let cli = ClientCli::parse_client().unwrap_or_else(Cli::parse);
    let log_format = match LogFormat::choose(cli.log_format) {
        Ok(format) => format,
        Err(e) => {
            eprintln!("lubdub: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.quiet, cli.verbose, log_format);
    let names = std::env::vars_os().map(|(name, _)| name);
    for var in config::env::unknown_vars::<ServerConfig, ClientConfig>(names) {
        tracing::warn!("{var} is set but is no lubdub setting; ignored");
    }
    let command = match cli.command {
        Command::Status(args) => return status_command(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "lubdub", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            return match man_command(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lubdub: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Client(args) => return client_command(args),
        Command::TestAlert(args) => return server::sinks::test_alert::run(args),
        command => command,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lubdub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
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
            let (print_config, forget_all) = (args.print_config, args.forget_all);
            let config = args.into_config()?;
            if print_config {
                let file = ServerFile { server: &config };
                print!("{}", toml::to_string(&file).context("printing the config")?);
                return Ok(());
            }
            if forget_all {
                let dir = store::resolve_data_dir(config.data_dir.as_deref())?;
                if store::forget(&dir).context("forgetting the stored state")? {
                    tracing::warn!(dir = %dir.display(), "forgot every stored host and event (--forget-all)");
                }
            }
            let server = server::Server::bind(config)
                .await
                .context("starting the server")?;
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
        Command::Status(_)
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::TestAlert(_)
        | Command::Client(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Keygen(args) => keygen::run(args),
        Command::Simulate(args) => simulate_cli::run(args),
        Command::Loadgen(args) => {
            let signer = args.signer()?;
            run_loadgen(args.into_config(), signer, stop).await
        }
    }
}

mod simulate_cli;

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
            &["lubdub", "client", "h", "--interval", "-1s"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
