//! Reloading on SIGHUP, as daemons do: the config file and the key file are
//! read again and what can change while running is applied (keys, sinks,
//! timeouts and detector settings); a config that does not load or check
//! is refused with one error line, and the server goes on with the one it
//! has. Settings bound at start (addresses, data directory, ...) are
//! reported as needing a restart. See docs/RELOAD.md.

use super::fleet::Fleet;
use super::guard::{Guard, Policy};
use super::metrics::Metrics;
use super::persist::chain;
use super::sinks::Sinks;
use crate::config::{ServerConfig, ValidServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads the configuration again, as at start (file, environment, flags),
/// checked; the error is the one line to log.
pub type Loader = Box<dyn FnMut() -> Result<ValidServerConfig, String> + Send>;

/// How long replaced sinks may take to deliver what they hold.
const SINK_DRAIN: Duration = Duration::from_secs(5);

/// The reload task's state: what it reads with and what it replaces.
pub struct Reloader {
    /// Reads the configuration again.
    pub load: Loader,
    /// The configuration the server started with (for settings that need
    /// a restart).
    pub started: ValidServerConfig,
    /// The monitor whose settings are replaced.
    pub fleet: Arc<Fleet>,
    /// The admission policy whose keys are replaced.
    pub guard: Arc<Guard>,
    /// Where the new sinks count their deliveries.
    pub metrics: Arc<Metrics>,
    /// The server's HTTP address (the Alertmanager sink's link).
    pub http_addr: SocketAddr,
}

/// Reloads on every SIGHUP until `stop`, and returns the sinks then
/// running (the server drains them at its end). Without a reloader it only
/// waits: the sinks stay as they are (and SIGHUP keeps its default).
pub async fn run(reloader: Option<Reloader>, mut sinks: Sinks, stop: CancellationToken) -> Sinks {
    {
        let Some(mut reloader) = reloader else {
            stop.cancelled().await;
            return sinks;
        };
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(hangups) => hangups,
                Err(e) => {
                    tracing::warn!("cannot take SIGHUP ({e}): no reload");
                    stop.cancelled().await;
                    return sinks;
                }
            };
        let mut current = reloader.started.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return sinks,
                _ = hangups.recv() => {}
            }
            tracing::info!("SIGHUP: reloading the config and the key file");
            match reloader.reload(&current, sinks) {
                (Ok(config), now) => {
                    current = config;
                    sinks = now;
                }
                (Err(e), now) => {
                    tracing::error!("reload refused, still running on the previous config: {e}");
                    sinks = now;
                }
            }
        }
    }
}

impl Reloader {
    /// One reload against the `current` config; returns the config now in
    /// force (or why the new one was refused) and the sinks now running.
    fn reload(
        &mut self,
        current: &ValidServerConfig,
        sinks: Sinks,
    ) -> (Result<ValidServerConfig, String>, Sinks) {
        let new = match (self.load)() {
            Ok(new) => new,
            Err(e) => return (Err(e), sinks),
        };
        let policy = match Policy::new(&new) {
            Ok(policy) => policy,
            Err(e) => return (Err(chain(&e)), sinks),
        };
        let changed = changed_keys(current, &new);
        let live: Vec<&str> = changed.iter().copied().filter(|k| is_live(k)).collect();
        // Sinks first: the only part that can still fail (an HTTP client
        // that does not build), and then nothing is applied.
        let sinks = if live.iter().any(|k| *k == "sinks" || *k == "timeout") {
            let (events, boundary) = self.fleet.subscribe_at();
            let (carry_tx, carry_rx) = tokio::sync::oneshot::channel();
            let down = self.fleet.read(crate::monitor::Monitor::down_events);
            match Sinks::spawn(
                &new,
                self.http_addr,
                down,
                events,
                self.metrics.clone(),
                Some(carry_rx),
            ) {
                Ok(fresh) => {
                    sinks.hand_over(boundary, SINK_DRAIN, carry_tx);
                    fresh
                }
                Err(e) => return (Err(chain(&e)), sinks),
            }
        } else {
            sinks
        };
        let old_keys = self.guard.read().key_ids();
        let new_keys = policy.key_ids();
        self.guard.replace(policy);
        if live.iter().any(|k| applies(k) == Applies::Detection) {
            self.fleet
                .replace_settings(new.monitor().clone(), super::timer::now());
        }
        if live.contains(&"labels") {
            self.fleet.set_label_rules(new.label_rules().to_vec());
        }
        if old_keys != new_keys {
            tracing::info!(before = ?old_keys, now = ?new_keys, "keys reloaded");
        }
        if live.is_empty() {
            tracing::info!("reloaded: no setting that applies live changed");
        } else {
            tracing::info!(changed = %live.join(", "), "reloaded");
        }
        for key in changed_keys(&self.started, &new) {
            if !is_live(key) {
                tracing::warn!("{key} changed in the config, but takes effect only at a restart");
            }
        }
        (Ok(new), sinks)
    }
}

/// The top-level settings whose values differ between `a` and `b`.
pub fn changed_keys(a: &ServerConfig, b: &ServerConfig) -> Vec<&'static str> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) =
        (toml::Value::try_from(a), toml::Value::try_from(b))
    else {
        return Vec::new();
    };
    FIELDS
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| a.get(*key) != b.get(*key))
        .collect()
}

/// How a change of a setting takes effect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Applies {
    /// At the next start only.
    AtRestart,
    /// While running.
    Live,
    /// While running, and the monitor judges by it (a change rebuilds its
    /// deadlines).
    Detection,
}

/// Every top-level setting of `[server]`, and how a change of it applies.
const FIELDS: &[(&str, Applies)] = &[
    ("listen", Applies::AtRestart),
    ("http", Applies::AtRestart),
    ("http_hosts", Applies::AtRestart),
    ("http_header_timeout", Applies::AtRestart),
    ("http_max_connections", Applies::AtRestart),
    ("timeout", Applies::Detection),
    ("late_after", Applies::Detection),
    ("silent_report", Applies::AtRestart),
    ("event_history", Applies::AtRestart),
    ("recv_buffer_bytes", Applies::AtRestart),
    ("data_dir", Applies::AtRestart),
    ("sinks", Applies::Live),
    ("checkpoint_interval", Applies::AtRestart),
    ("key_file", Applies::Detection),
    ("legacy_networks", Applies::Live),
    ("max_clock_skew", Applies::Live),
    ("join_rate", Applies::Live),
    ("max_hosts", Applies::Detection),
    ("api_token", Applies::AtRestart),
    ("detector", Applies::Detection),
    ("flap_window", Applies::Detection),
    ("flap_threshold", Applies::Detection),
    ("phi", Applies::Detection),
    ("probe", Applies::Detection),
    ("host_detectors", Applies::Detection),
    ("record", Applies::AtRestart),
    ("watchdog", Applies::AtRestart),
    ("labels", Applies::Live),
    ("groups", Applies::AtRestart),
    ("dependencies", Applies::AtRestart),
    ("maintenance", Applies::AtRestart),
];

/// How a change of `key` applies.
fn applies(key: &str) -> Applies {
    FIELDS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or(Applies::AtRestart, |(_, applies)| *applies)
}

/// True when a change of `key` applies while running.
fn is_live(key: &str) -> bool {
    applies(key) != Applies::AtRestart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_compared_and_changes_are_named() {
        let config = ServerConfig::default();
        let toml::Value::Table(table) = toml::Value::try_from(&config).expect("toml") else {
            panic!("a table");
        };
        // Unset options are left out of the TOML; set them all to see them.
        let mut all: Vec<&str> = table.keys().map(String::as_str).collect();
        for optional in [
            "late_after",
            "silent_report",
            "data_dir",
            "key_file",
            "api_token",
            "record",
        ] {
            all.push(optional);
        }
        all.sort_unstable();
        let mut fields: Vec<&str> = FIELDS.iter().map(|(key, _)| *key).collect();
        fields.sort_unstable();
        assert_eq!(fields, all, "FIELDS lists every setting of [server]");
        let changed = ServerConfig {
            timeout: Duration::from_secs(9),
            http: "127.0.0.1:1".parse().expect("addr"),
            ..config.clone()
        };
        assert_eq!(changed_keys(&config, &changed), ["http", "timeout"]);
        assert!(changed_keys(&config, &config).is_empty());
    }
}
