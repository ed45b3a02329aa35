//! Watching the watcher: the server beats, as a client, to other lubdub
//! servers (so two monitors watch each other with no extra process), and
//! pings an outside dead man's switch (e.g. a healthchecks.io URL) on a
//! schedule, but only while it is healthy, so that the switch fires when
//! this server dies, hangs, stops receiving beats or cannot write its store.
//!
//! The beats are the client's own: [`crate::client::Client`] on a thread of
//! its own, with the client's key handling (`key_file`, `key_id`), its
//! resolver with a deadline and its goodbye on a clean stop.

use super::Shared;
use crate::client::{Client, parse_server};
use crate::config::{ClientConfig, Error as ConfigError};
use crate::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a failing ping is logged about.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

/// `[server.watchdog]`: who watches this server. Default: nobody (no
/// beats, no pings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Other lubdub servers this server beats to, as `lubdub client` does
    /// (`HOST`, `HOST:PORT`, `[IPv6]:PORT`; port 43278 by default). List
    /// each of two servers in the other's config and they watch each other:
    /// one killed is reported `down` by the other (a clean stop: `left`).
    /// Empty (the default): no beats.
    pub servers: Vec<String>,
    /// Host id of those beats. Unset: `lubdub-server@` and the hostname,
    /// so it cannot clash with a `lubdub client` on the same machine.
    pub host_id: Option<String>,
    /// Time between beats, declared in each (the peer allows 3 of them).
    /// Default: 10s, as the client.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Key file to sign the beats with, as the client's `key_file` (for
    /// peers that require signed beats; see docs/SECURITY.md). Unset:
    /// unsigned beats.
    pub key_file: Option<PathBuf>,
    /// Id of the key in `key_file`. Unset: the newest.
    pub key_id: Option<u32>,
    /// Dead man's switch: a URL (http or https) requested every
    /// `ping_interval` while this server is healthy: its store is writable
    /// and it received at least one beat since the previous ping. The
    /// service at the other end alerts when the pings stop. Unset (the
    /// default): no pings.
    pub ping_url: Option<String>,
    /// `GET` (the default) or `POST` (an empty body).
    pub ping_method: PingMethod,
    /// Time between pings. Pick it well under the switch's own grace
    /// period. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Longest wait for one ping's answer. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
}

/// How the dead man's switch is called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PingMethod {
    /// `GET URL`.
    #[default]
    Get,
    /// `POST URL` with an empty body.
    Post,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            host_id: None,
            interval: Duration::from_secs(10),
            key_file: None,
            key_id: None,
            ping_url: None,
            ping_method: PingMethod::Get,
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl WatchdogConfig {
    /// Checks the settings; errors name the field as `watchdog.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.servers.iter().find(|s| parse_server(s).is_none()) {
            return Err(invalid(
                "watchdog.servers",
                format!("{bad:?}: expected HOST, HOST:PORT or [IPv6]:PORT"),
            ));
        }
        if !self.servers.is_empty() {
            self.client_config().validate().map_err(|e| match e {
                ConfigError::Invalid { field, reason } => invalid(watchdog_field(field), reason),
                other => other,
            })?;
        } else if self.key_file.is_some() || self.host_id.is_some() {
            return Err(invalid(
                "watchdog.servers",
                "name at least one server to beat to (key_file and host_id need one)",
            ));
        }
        if let Some(url) = &self.ping_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => {
                    return Err(invalid(
                        "watchdog.ping_url",
                        format!("scheme {:?} is not http or https", u.scheme()),
                    ));
                }
                Err(e) => return Err(invalid("watchdog.ping_url", format!("{url:?}: {e}"))),
            }
        }
        if self.ping_interval.is_zero() {
            return Err(invalid("watchdog.ping_interval", "must be greater than 0"));
        }
        if self.ping_timeout.is_zero() {
            return Err(invalid("watchdog.ping_timeout", "must be greater than 0"));
        }
        Ok(())
    }

    /// The client settings of the beats.
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            servers: self.servers.clone(),
            interval: self.interval,
            host_id: Some(self.host_id.clone().unwrap_or_else(|| {
                let mut id = format!("lubdub-server@{}", crate::client::default_host_id());
                // The hostname is cut to the limit already; the prefix may
                // push it over (on a char boundary: the prefix is ASCII).
                let mut end = id.len().min(crate::protocol::MAX_HOST_ID_LEN);
                while !id.is_char_boundary(end) {
                    end -= 1;
                }
                id.truncate(end);
                id
            })),
            key_file: self.key_file.clone(),
            key_id: self.key_id,
            ..ClientConfig::default()
        }
    }
}

/// The `watchdog.` name of a client field, for error messages.
fn watchdog_field(field: &str) -> &'static str {
    match field {
        "interval" => "watchdog.interval",
        "host_id" => "watchdog.host_id",
        "key_id" => "watchdog.key_id",
        "key_file" => "watchdog.key_file",
        _ => "watchdog.servers",
    }
}

/// The running watchdog; [`Watchdog::stop`] ends it.
pub struct Watchdog {
    stop: CancellationToken,
    beats: Option<tokio::task::JoinHandle<()>>,
    pings: Option<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts what `config` asks for: the beats (their key file is read
    /// now, so a bad one stops the server at start) and the pings.
    pub fn start(config: &WatchdogConfig, shared: Arc<Shared>) -> Result<Self, super::Error> {
        let stop = CancellationToken::new();
        let beats = if config.servers.is_empty() {
            None
        } else {
            let client = Client::new(config.client_config())
                .map_err(super::Error::Watchdog)?
                .embedded();
            tracing::info!(
                host_id = client.host_id(),
                servers = ?config.servers,
                "watchdog beats to other servers"
            );
            Some(spawn_beats(client, stop.clone()))
        };
        let pings = config
            .ping_url
            .clone()
            .map(|url| tokio::spawn(ping_loop(config.clone(), url, shared, stop.clone())));
        Ok(Self { stop, beats, pings })
    }

    /// Stops the pings, and the beats after a goodbye to every server.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in [self.beats, self.pings].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

/// Runs the client's beat loop on a blocking thread until `stop`.
fn spawn_beats(client: Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // The loop waits on a channel with a deadline: the sender is dropped
    // when `stop` fires, which ends the wait at once.
    let (tx, rx) = mpsc::channel::<()>();
    tokio::spawn(async move {
        stop.cancelled().await;
        drop(tx);
    });
    tokio::task::spawn_blocking(move || {
        client.run(|timeout| {
            !matches!(
                rx.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Timeout)
            )
        })
    })
}

/// Whether the server is fit to tell the dead man's switch it lives: the
/// store takes writes, and beats arrived since the last check.
#[derive(Debug)]
struct Health {
    beats_seen: u64,
}

impl Health {
    /// `None` when healthy; else why not, for the log.
    fn check(&mut self, shared: &Shared) -> Option<&'static str> {
        let beats = shared.metrics.beats.get();
        let got_beats = beats > self.beats_seen;
        self.beats_seen = beats;
        if !shared.store.is_ok() {
            Some("the store cannot be written")
        } else if !got_beats {
            Some("no beat received since the last ping")
        } else {
            None
        }
    }
}

async fn ping_loop(
    config: WatchdogConfig,
    url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.ping_timeout)
        .user_agent(concat!("lubdub/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("watchdog: cannot set up the HTTP client, no pings: {e}");
            return;
        }
    };
    let mut health = Health {
        beats_seen: shared.metrics.beats.get(),
    };
    let mut ticker = tokio::time::interval(config.ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is now: judge health over a whole period
    let mut error_log = RateLimit::new(ERROR_LOG_PERIOD);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Some(why) = health.check(&shared) {
            if std::mem::replace(&mut was_healthy, false) {
                tracing::warn!("watchdog: not pinging the dead man's switch: {why}");
            }
            continue;
        }
        if !std::mem::replace(&mut was_healthy, true) {
            tracing::info!("watchdog: healthy again, pinging the dead man's switch");
        }
        let request = match config.ping_method {
            PingMethod::Get => client.get(&url),
            PingMethod::Post => client.post(&url),
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            result = request.send() => result.and_then(|r| r.error_for_status()),
        };
        match outcome {
            Ok(_) => error_log.reset(),
            Err(e) => {
                if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                    // Without the URL: it usually holds a secret token.
                    let e = e.without_url();
                    tracing::warn!(suppressed, "watchdog: ping failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let config = WatchdogConfig::default();
        assert!(config.servers.is_empty() && config.ping_url.is_none());
        config.validate().expect("valid");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                WatchdogConfig {
                    servers: vec!["host:0".into()],
                    ..Default::default()
                },
                "watchdog.servers",
            ),
            (
                WatchdogConfig {
                    servers: vec!["peer".into()],
                    interval: Duration::ZERO,
                    ..Default::default()
                },
                "watchdog.interval",
            ),
            (
                WatchdogConfig {
                    key_file: Some("k".into()),
                    ..Default::default()
                },
                "watchdog.servers",
            ),
            (
                WatchdogConfig {
                    ping_url: Some("ftp://example.org/x".into()),
                    ..Default::default()
                },
                "watchdog.ping_url",
            ),
            (
                WatchdogConfig {
                    ping_url: Some("not a url".into()),
                    ..Default::default()
                },
                "watchdog.ping_url",
            ),
            (
                WatchdogConfig {
                    ping_interval: Duration::ZERO,
                    ..Default::default()
                },
                "watchdog.ping_interval",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(field), "{err}");
        }
    }

    #[test]
    fn the_default_host_id_is_the_servers_own() {
        let config = WatchdogConfig {
            servers: vec!["peer".into()],
            ..Default::default()
        };
        let id = config.client_config().host_id.expect("set");
        assert!(id.starts_with("lubdub-server@"), "{id}");
        assert!(id.len() <= crate::protocol::MAX_HOST_ID_LEN);
    }

    #[test]
    fn parses_from_toml_with_the_method_in_capitals() {
        let config: WatchdogConfig = toml::from_str(
            "servers = [\"mon2:43278\"]\nping_url = \"https://hc.example/ping/x\"\n\
             ping_method = \"POST\"\nping_interval = \"30s\"\n",
        )
        .expect("valid");
        assert_eq!(config.ping_method, PingMethod::Post);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.interval, Duration::from_secs(10), "default kept");
        config.validate().expect("valid");
    }
}
