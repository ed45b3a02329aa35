//! `lubdub client`: flags → [`ClientConfig`] → a beat loop until a signal.

use lubdub::config::{ClientConfig, ClientFile};
use lubdub::{client, duration};

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `lubdub client`. Each setting's default, and its `LUBDUB_…`
/// variable, are added to its help from the config types.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Servers: HOST, HOST:PORT or [IPv6]:PORT (the default port unless given).
    /// The seed form `SERVERIP PORT` also works.
    /// Without any, the config file's or `LUBDUB_SERVERS` (comma-separated).
    #[arg(value_name = "SERVER")]
    servers: Vec<String>,
    /// Time between beats.
    #[arg(long, value_parser = duration::parse)]
    interval: Option<Duration>,
    /// Identity to report (unset: the hostname).
    #[arg(long)]
    host_id: Option<String>,
    /// Send the seed's bare `Thump!`, to feed an old PyHeartBeat server.
    #[arg(long)]
    legacy: bool,
    /// TOML config file; its `[client]` table sets any of these settings.
    #[arg(long, value_name = "FILE", env = "LUBDUB_CONFIG")]
    config: Option<PathBuf>,
    /// Share of the interval by which each wait randomly varies.
    #[arg(long, value_name = "SHARE")]
    jitter: Option<f64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Sign every beat with a key from this file (see `lubdub keygen`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Id of the key to sign with (unset: the highest id in the file).
    #[arg(long, value_name = "ID")]
    key_id: Option<u32>,
    /// File holding this host's boot id, a UUID (unset: the kernel's;
    /// give a container its own).
    #[arg(long, value_name = "FILE")]
    boot_id_file: Option<PathBuf>,
    /// A label of this host, NAME=VALUE (repeatable; replaces the config
    /// file's and `LUBDUB_LABELS`' labels of the same name).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = lubdub::labels::parse_pair(text).map_err(|e| e.to_string())?;
    lubdub::labels::check_name(&name).map_err(|e| e.to_string())?;
    lubdub::labels::check_value(&name, &value).map_err(|e| e.to_string())?;
    Ok((name, value))
}

impl ClientArgs {
    /// Defaults, then the config file, then `LUBDUB_…` variables, then
    /// flags (servers named on the command line replace the list); validated.
    fn into_config(self) -> anyhow::Result<ClientConfig> {
        let mut config = super::file_and_env(self.config.as_deref(), |file| file.client)?;
        if !self.servers.is_empty() {
            config.servers = seed_client_form(self.servers);
        }
        super::set(&mut config.interval, self.interval);
        config.host_id = self.host_id.or(config.host_id);
        config.legacy |= self.legacy;
        super::set(&mut config.jitter, self.jitter);
        config.key_file = self.key_file.or(config.key_file);
        config.key_id = self.key_id.or(config.key_id);
        config.boot_id_file = self.boot_id_file.or(config.boot_id_file);
        if !self.labels.is_empty() {
            let flags = lubdub::labels::Labels::from_pairs(self.labels)?;
            config.labels = config.labels.overlaid(&flags);
            if config.labels.len() > lubdub::labels::MAX_LABELS {
                anyhow::bail!("{}", lubdub::labels::LabelError::TooMany);
            }
        }
        config.validate()?;
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

/// Runs without the async runtime, on one thread that sleeps between
/// beats, so an idle client stays within a few MB (issue 7).
pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let print_config = args.print_config;
    let again = args.clone(); // SIGHUP reads the config as at start
    let config = args.into_config()?;
    if print_config {
        super::print_config(&ClientFile { client: &config })?;
        return Ok(ExitCode::SUCCESS);
    }
    // Before any thread starts (DNS lookups), so that every thread inherits
    // the blocked signals and they wait for the beat loop.
    let signals = client::StopSignals::block().context("blocking SIGINT and SIGTERM")?;
    let client = client::Client::new(config.clone()).context("starting the client")?;
    client.log_start();
    client.run_until_signal(&signals, move || again.clone().into_config());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::seed_client_form;

    #[test]
    fn seed_positional_form() {
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
}
