//! `lubdub simulate`: flags and report printing over [`lubdub::tools::simulate`].

use lubdub::config::{ClientConfig, FileConfig, ServerConfig, ValidServerConfig};
use lubdub::duration;
use lubdub::monitor::DetectorKind;
use lubdub::tools::simulate::{self, LossModel, Synthetic};

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `lubdub simulate`. The detector settings start from the
/// `[server]` table of `--config` (or the defaults); flags override them.
/// The help of the flags without a clap default shows the default of the
/// server's or the client's setting (see `defaults.rs`).
#[derive(Args)]
pub struct SimulateArgs {
    /// Replay a trace recorded by `lubdub server --record FILE` instead of
    /// synthetic traffic.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Synthetic hosts; each beats for --days, then fails.
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// Days each synthetic host beats before it fails.
    #[arg(long, default_value_t = 1.0)]
    days: f64,
    /// The clients' beat interval.
    #[arg(long, value_parser = duration::parse)]
    interval: Option<Duration>,
    /// Client jitter, a share of the interval (±), as `lubdub client` adds.
    #[arg(long)]
    jitter: Option<f64>,
    /// Network delay of each beat, uniform in [0, this).
    #[arg(long, value_parser = duration::parse, default_value = "0s")]
    delay_jitter: Duration,
    /// Random loss: probability that a beat is lost (in the good state).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Bursty (Gilbert–Elliott) loss: per-beat probability of entering the
    /// bad state. 0: no bursts.
    #[arg(long, default_value_t = 0.0)]
    burst_enter: f64,
    /// Per-beat probability of leaving the bad state (mean burst: 1/this).
    #[arg(long, default_value_t = 0.2)]
    burst_exit: f64,
    /// Loss probability in the bad state.
    #[arg(long, default_value_t = 0.8)]
    burst_loss: f64,
    /// Seed of all randomness: the same seed gives the same report.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// TOML config file: the detector settings of its `[server]` table.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Detector: fixed or phi.
    #[arg(long, value_enum)]
    detector: Option<DetectorKind>,
    /// Fixed detector: silence after which a host is down.
    #[arg(long, value_parser = duration::parse)]
    timeout: Option<Duration>,
    /// Fixed detector: silence after which a host is late.
    #[arg(long, value_parser = duration::parse)]
    late_after: Option<Duration>,
    /// phi at which a host is down.
    #[arg(long)]
    phi_threshold: Option<f64>,
    /// phi at which a host is late.
    #[arg(long)]
    phi_late_threshold: Option<f64>,
    /// Beats the statistics remember.
    #[arg(long)]
    phi_window: Option<u32>,
    /// Floor of the deviation of the time per beat.
    #[arg(long, value_parser = duration::parse)]
    phi_min_deviation: Option<Duration>,
    /// Silence always allowed on top of the model.
    #[arg(long, value_parser = duration::parse)]
    phi_acceptable_pause: Option<Duration>,
    /// Floor of the loss rate.
    #[arg(long)]
    phi_min_loss: Option<f64>,
    /// Probe suspected hosts (issue 15): beats, probes and answers share
    /// one loss process in time.
    #[arg(long)]
    probes: bool,
    /// Round trip of a probe and its answer.
    #[arg(long, value_parser = duration::parse, default_value = "50ms")]
    rtt: Duration,
    /// The hosts join a fleet the server already knows: each server starts
    /// from what a server learnt watching 16 other hosts on the same links
    /// for their run (how their loss comes in bursts, and how their probes
    /// went unanswered in a row). Without it each server and its hosts
    /// start together, the worst case for new hosts on bursty links.
    #[arg(long)]
    established: bool,
    /// Hosts per simulated server, all starting together: a server learns
    /// how its fleet's links lose beats from all of its hosts at once, so
    /// a larger fleet learns it sooner.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    fleet_size: u32,
    /// Spacing of the probes to one host.
    #[arg(long, value_parser = duration::parse)]
    probe_interval: Option<Duration>,
    /// -log10 of the chance a live host leaves all its probes unanswered.
    #[arg(long)]
    probe_threshold: Option<f64>,
    /// Spread a bursty host's probes over this many of its bursts.
    #[arg(long)]
    probe_spread: Option<f64>,
    /// Widest spacing of a bursty host's probes.
    #[arg(long, value_parser = duration::parse)]
    probe_max_interval: Option<Duration>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl SimulateArgs {
    fn config(&self) -> anyhow::Result<ValidServerConfig> {
        let mut config = match &self.config {
            Some(path) => FileConfig::load(path)?.server,
            None => ServerConfig::default(),
        };
        config.detector = self.detector.unwrap_or(config.detector);
        config.timeout = self.timeout.unwrap_or(config.timeout);
        config.late_after = self.late_after.or(config.late_after);
        config.probe.enabled |= self.probes;
        config.probe.interval = self.probe_interval.unwrap_or(config.probe.interval);
        config.probe.threshold = self.probe_threshold.unwrap_or(config.probe.threshold);
        let probe = &mut config.probe;
        probe.burst_spread = self.probe_spread.unwrap_or(probe.burst_spread);
        probe.max_interval = self.probe_max_interval.unwrap_or(probe.max_interval);
        let phi = &mut config.phi;
        phi.threshold = self.phi_threshold.unwrap_or(phi.threshold);
        phi.late_threshold = self.phi_late_threshold.unwrap_or(phi.late_threshold);
        phi.window = self.phi_window.unwrap_or(phi.window);
        phi.min_deviation = self.phi_min_deviation.unwrap_or(phi.min_deviation);
        phi.acceptable_pause = self.phi_acceptable_pause.unwrap_or(phi.acceptable_pause);
        phi.min_loss = self.phi_min_loss.unwrap_or(phi.min_loss);
        Ok(config.validate()?)
    }

    fn fleet(&self) -> anyhow::Result<Synthetic> {
        let client = ClientConfig::default();
        let interval = self.interval.unwrap_or(client.interval);
        let jitter = self.jitter.unwrap_or(client.jitter);
        let probability = |name: &str, p: f64| {
            anyhow::ensure!((0.0..=1.0).contains(&p), "--{name}: must be 0 to 1");
            Ok(())
        };
        probability("loss", self.loss)?;
        probability("burst-enter", self.burst_enter)?;
        probability("burst-exit", self.burst_exit)?;
        probability("burst-loss", self.burst_loss)?;
        anyhow::ensure!((0.0..0.5).contains(&jitter), "--jitter: must be 0 to 0.5");
        anyhow::ensure!(
            self.days > 0.0 && self.days <= 3650.0,
            "--days: must be above 0 and at most 3650"
        );
        // Above it the established fleet's own hosts draw their numbers.
        anyhow::ensure!(self.hosts <= 1 << 30, "--hosts: at most 2^30");
        anyhow::ensure!(
            interval >= Duration::from_millis(10),
            "--interval: at least 10ms"
        );
        anyhow::ensure!(
            self.days * 86_400.0 / interval.as_secs_f64() <= 1e8,
            "--days/--interval: at most 10^8 beats per host"
        );
        Ok(Synthetic {
            hosts: self.hosts,
            days: self.days,
            interval,
            jitter,
            delay_jitter: self.delay_jitter,
            loss: LossModel {
                loss: self.loss,
                burst_enter: self.burst_enter,
                burst_exit: self.burst_exit,
                burst_loss: self.burst_loss,
            },
            seed: self.seed,
            probe_rtt: self.probes.then_some(self.rtt),
            established: self.established,
            fleet_size: self.fleet_size,
        })
    }
}

fn describe(config: &ServerConfig) -> String {
    match config.detector {
        DetectorKind::Fixed => format!(
            "fixed (timeout {}, late at {:.0} %)",
            duration::format(config.timeout),
            config.late_ratio() * 100.0
        ),
        DetectorKind::Phi => {
            let phi = &config.phi;
            format!(
                "phi (threshold {}, late {}, window {}, min_deviation {}, acceptable_pause {}, min_loss {})",
                phi.threshold,
                phi.late_threshold,
                phi.window,
                duration::format(phi.min_deviation),
                duration::format(phi.acceptable_pause),
                phi.min_loss
            )
        }
    }
}

/// Runs the simulation and prints the report.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let started = Instant::now();
    if let Some(path) = &args.trace {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening trace {}", path.display()))?;
        let trace = simulate::read_trace(std::io::BufReader::new(file))
            .with_context(|| format!("reading trace {}", path.display()))?;
        let report = simulate::replay(&config, &trace);
        if args.json {
            // The report's own fields, so the JSON and the type cannot drift.
            let mut json = serde_json::to_value(&report)?;
            json["detector"] = describe(&config).into();
            println!("{json}");
        } else {
            println!("detector   {}", describe(&config));
            println!(
                "trace      {}: {} hosts, {} beats, {:.3} host-days",
                path.display(),
                report.hosts,
                report.beats,
                report.host_days
            );
            println!(
                "alarms     {} down then recovered (false alarms or short outages), {} late then recovered, {} down at the end",
                report.downs_recovered, report.lates_recovered, report.down_at_end
            );
            println!("time       {:.2}s", started.elapsed().as_secs_f64());
        }
        return Ok(());
    }
    let fleet = args.fleet()?;
    let report = simulate::run_synthetic(&config, &fleet);
    let interval = fleet.interval.as_secs_f64();
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let median = secs(report.detection_quantile(0.5));
    let p99 = secs(report.detection_quantile(0.99));
    let loss_share = report.beats_lost as f64 / report.beats_sent.max(1) as f64;
    if args.json {
        let json = serde_json::json!({
            "detector": describe(&config),
            "hosts": fleet.hosts,
            "host_days": report.host_days,
            "beats_sent": report.beats_sent,
            "beats_lost": report.beats_lost,
            "detection_median_seconds": median,
            "detection_p99_seconds": p99,
            "detection_median_intervals": median.map(|m| m / interval),
            "detection_p99_intervals": p99.map(|p| p / interval),
            "missed": report.missed,
            "false_downs": report.false_downs,
            "false_downs_per_1000_host_days": report.false_downs_per_1000_host_days(),
            "false_lates": report.false_lates,
            "flapping": report.flapping,
            "probes_sent": report.probes_sent,
            "probes_answered": report.probes_answered,
            "probes_per_host_day": report.probes_sent as f64 / report.host_days.max(1e-9),
            "fleet_burst_excess": report.fleet_loss.excess,
            "fleet_probe_run_loss": report.fleet_loss.probe_next,
            "seed": fleet.seed,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{json}");
        return Ok(());
    }
    let fmt = |s: Option<f64>| match s {
        Some(s) => format!("{s:.1}s ({:.2} intervals)", s / interval),
        None => "-".into(),
    };
    println!("detector   {}", describe(&config));
    println!(
        "traffic    {} hosts x {} days, interval {}, jitter ±{:.0} %, delay jitter {}, seed {}",
        fleet.hosts,
        fleet.days,
        duration::format(fleet.interval),
        fleet.jitter * 100.0,
        duration::format(fleet.delay_jitter),
        fleet.seed
    );
    println!(
        "beats      {} sent, {} lost ({:.2} %)",
        report.beats_sent,
        report.beats_lost,
        loss_share * 100.0
    );
    println!(
        "detection  median {}, p99 {}, missed {}",
        fmt(median),
        fmt(p99),
        report.missed
    );
    println!(
        "false      down {} ({:.3} per 1000 host-days), late {}, flapping {}",
        report.false_downs,
        report.false_downs_per_1000_host_days(),
        report.false_lates,
        report.flapping
    );
    if fleet.probe_rtt.is_some() {
        println!(
            "probes     {} sent ({:.1} per host-day), {} answered",
            report.probes_sent,
            report.probes_sent as f64 / report.host_days.max(1e-9),
            report.probes_answered
        );
    }
    println!(
        "time       {:.2}s for {:.0} host-days",
        started.elapsed().as_secs_f64(),
        report.host_days
    );
    Ok(())
}
