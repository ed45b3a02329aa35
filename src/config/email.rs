//! Settings of an e-mail sink (`[[server.sinks.email]]`); the sink is
//! `server::sinks::email`.

use super::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How the connection to the mail server is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS (required). Port 587.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS"). Port 465.
    Tls,
    /// No encryption (a relay on the same host or network). Port 25.
    None,
}

/// One e-mail sink (`[[server.sinks.email]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Name in logs and in `/metrics`. Default: `email<N>`.
    pub name: Option<String>,
    /// The SMTP server's host name (checked against its certificate).
    /// Required.
    pub server: String,
    /// Its port. Default: 587 (starttls), 465 (tls), 25 (none).
    pub port: Option<u16>,
    /// `starttls` (the default), `tls` or `none`.
    pub tls: Tls,
    /// Login user name; unset: no login.
    pub username: Option<String>,
    /// Login password. Never printed.
    pub password: Option<Secret>,
    /// A file holding the password instead (relative: in
    /// `$CREDENTIALS_DIRECTORY`).
    pub password_file: Option<PathBuf>,
    /// The sender, `lubdub@example.com` or `lubdub <lubdub@example.com>`.
    /// Required.
    pub from: String,
    /// The recipients. Required.
    pub to: Vec<String>,
    /// Subject template. Default: `[lubdub] {{ summary }}`.
    pub subject: Option<String>,
    /// Body template (plain text). Default: the summary, then host,
    /// address, silence, last seen, time and the dashboard link.
    pub body: Option<String>,
    /// Base URL of the dashboard: adds a link to the host to each message.
    pub external_url: Option<String>,
    /// Event kinds to send. Default: down, recovered, rebooted,
    /// mass-silence, flapping, settled.
    pub events: Vec<String>,
    /// Host id globs; empty (the default): every host.
    pub hosts: Vec<String>,
    /// Time allowed for one SMTP exchange. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after a temporary failure (network, 4xx). Default: 5.
    pub retries: u32,
    /// Wait before the first retry, doubled each time. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest wait between retries. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Messages waiting; beyond this they are dropped and counted.
    /// Default: 1000.
    pub queue: usize,
    /// Collect a window's events into one message. Default: none.
    #[serde(with = "humantime_serde")]
    pub group_wait: Option<Duration>,
    /// Send a host's `down` again this often while it stays down.
    #[serde(with = "humantime_serde")]
    pub repeat: Option<Duration>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            name: None,
            server: String::new(),
            port: None,
            tls: Tls::default(),
            username: None,
            password: None,
            password_file: None,
            from: String::new(),
            to: Vec::new(),
            subject: None,
            body: None,
            external_url: None,
            events: super::sinks::default_events(),
            hosts: Vec::new(),
            timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            queue: 1000,
            group_wait: None,
            repeat: None,
        }
    }
}
