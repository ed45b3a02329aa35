//! `lubdub loadgen`: flags → [`LoadgenConfig`] → a simulated fleet beating
//! to a server, and a report of what it sent.

use lubdub::auth::{KeyRing, Signer};
use lubdub::duration;
use lubdub::tools::loadgen::{self, LoadgenConfig};

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `lubdub loadgen`; the defaults in their help come from
/// `LoadgenConfig::default()` (see `defaults.rs`).
#[derive(Args)]
pub struct LoadgenArgs {
    /// Server to load, as ADDR:PORT (loopback only unless --allow-remote).
    #[arg(value_name = "TARGET")]
    target: SocketAddr,
    /// Simulated hosts.
    #[arg(long)]
    hosts: Option<u32>,
    /// Each host's beat interval.
    #[arg(long, value_parser = duration::parse)]
    interval: Option<Duration>,
    /// How long to run.
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Stop after this many packets, if before --duration.
    #[arg(long, value_name = "COUNT")]
    beats: Option<u64>,
    /// Source addresses (127.x.y.z sockets) to spread hosts over.
    #[arg(long)]
    sources: Option<u32>,
    /// Host id prefix; ids are the prefix plus a padded number.
    #[arg(long)]
    id_prefix: Option<String>,
    /// Digits of the host number.
    #[arg(long)]
    id_digits: Option<usize>,
    /// Hosts (chosen evenly over the fleet) that stop beating at --stop-after.
    #[arg(long, value_name = "K")]
    stop_count: Option<u32>,
    /// Skip each beat with this probability (0 to 1), as a lossy network.
    #[arg(long, value_name = "P")]
    loss: Option<f64>,
    /// Beats say "this client answers probes" (the load generator does not
    /// answer them).
    #[arg(long)]
    answers_probes: bool,
    /// When the --stop-count hosts fall silent.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    stop_after: Option<Duration>,
    /// Permit a non-loopback target (never in tests or CI).
    #[arg(long)]
    allow_remote: bool,
    /// Sign every beat with this key file's key (a shared key, not a
    /// per-host master), as signed clients do.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Id of the key to sign with (unset: the highest id in the file).
    #[arg(long, value_name = "ID", requires = "key_file")]
    key_id: Option<u32>,
}

/// The default of each flag that has one, as its help shows it.
pub fn defaults() -> Vec<(&'static str, String)> {
    let d = LoadgenConfig::default();
    vec![
        ("hosts", d.hosts.to_string()),
        ("interval", duration::format(d.interval)),
        ("duration", duration::format(d.duration)),
        ("sources", d.sources.to_string()),
        ("id_prefix", d.id_prefix),
        ("id_digits", d.id_digits.to_string()),
        ("stop_count", d.stop_count.to_string()),
        ("stop_after", duration::format(d.stop_after)),
    ]
}

impl LoadgenArgs {
    /// The signer for `--key-file`, if given.
    fn signer(&self) -> anyhow::Result<Option<Signer>> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let ring = KeyRing::load(path)?;
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
        Ok(Some(Signer::new(key, "")?))
    }

    fn into_config(self) -> LoadgenConfig {
        let mut config = LoadgenConfig {
            target: self.target,
            allow_remote: self.allow_remote,
            max_packets: self.beats,
            answers_probes: self.answers_probes,
            ..LoadgenConfig::default()
        };
        super::set(&mut config.hosts, self.hosts);
        super::set(&mut config.interval, self.interval);
        super::set(&mut config.duration, self.duration);
        super::set(&mut config.sources, self.sources);
        super::set(&mut config.id_prefix, self.id_prefix);
        super::set(&mut config.id_digits, self.id_digits);
        super::set(&mut config.stop_count, self.stop_count);
        super::set(&mut config.stop_after, self.stop_after);
        super::set(&mut config.loss, self.loss);
        config
    }
}

/// Runs the load generator on a blocking thread; a signal ends it early,
/// and it still reports what it sent.
pub async fn run(args: LoadgenArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let signer = args.signer()?;
    let config = args.into_config();
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
    if report.skipped > 0 {
        println!("skipped beats={} (--loss)", report.skipped);
    }
    // Warnings about the measurement, not errors: the report stands.
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
