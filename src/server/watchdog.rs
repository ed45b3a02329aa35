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
use crate::client::Client;
use crate::config::ClientConfig;
pub use crate::config::watchdog::{PingMethod, WatchdogConfig};
use crate::ratelimit::RateLimit;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a failing ping is logged about.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

/// The client settings of the beats: the config's, with the default host
/// id filled in.
fn client_config(config: &WatchdogConfig) -> ClientConfig {
    let mut client = config.as_client();
    client.host_id.get_or_insert_with(|| {
        let mut id = format!("lubdub-server@{}", crate::client::default_host_id());
        // The hostname is cut to the limit already; the prefix may push it
        // over (cut on a char boundary).
        let mut end = id.len().min(crate::protocol::MAX_HOST_ID_LEN);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
        id
    });
    client
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
            let client = Client::new(client_config(config))
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
                "servers = [\"peer\"]\ninterval = \"0s\"",
                "watchdog.interval",
            ),
            ("key_file = \"k\"", "watchdog.servers"),
            ("ping_url = \"ftp://example.org/x\"", "watchdog.ping_url"),
            ("ping_url = \"not a url\"", "watchdog.ping_url"),
            ("ping_interval = \"0s\"", "watchdog.ping_interval"),
        ];
        for (toml, field) in cases {
            let config: WatchdogConfig = toml::from_str(toml).expect(toml);
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
        let id = client_config(&config).host_id.expect("set");
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
