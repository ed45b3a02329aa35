//! `[server.watchdog]`: who watches the server (beats to other lubdub
//! servers, a dead man's switch URL); the server side is
//! `server::watchdog`. Server addresses are parsed when the beats start.

use super::{ClientConfig, Error as ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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
        if !self.servers.is_empty() {
            self.as_client().validate().map_err(|e| match e {
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

    /// The client settings these stand for (servers, interval, host id as
    /// given, key); the server fills in the default host id.
    pub fn as_client(&self) -> ClientConfig {
        ClientConfig {
            servers: self.servers.clone(),
            interval: self.interval,
            host_id: self.host_id.clone(),
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
