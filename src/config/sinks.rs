//! Settings of the alert sinks: the `[server.sinks]` table of the config
//! file, with `[[server.sinks.exec]]`, `[[server.sinks.webhook]]` and
//! `[[server.sinks.alertmanager]]` entries (several of each) and
//! `[server.sinks.mass_silence]`. `Default` is the documented default; see
//! docs/ALERTS.md for examples.

use super::preset::Preset;
use super::secret::Secret;
use super::{Error, ensure, invalid};
use crate::select::Selector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Event kinds a sink can ask for (`events = [...]`). `mass-silence` is the
/// sinks' own event: one page for many hosts going silent together.
pub const EVENT_KINDS: &[&str] = &[
    "joined",
    "late",
    "down",
    "recovered",
    "left",
    "rebooted",
    "mass-silence",
    // Kinds added by the pause/forget work; accepted so configs can name
    // them before and after that lands.
    "paused",
    "resumed",
    "forgotten",
    // A host going down and up repeatedly: one `flapping`, then its pages
    // are held back until `settled`.
    "flapping",
    "settled",
    // Groups and dependencies (docs/GROUPS.md).
    "unreachable",
    "group-down",
    "group-recovered",
    // Maintenance windows: not in the default kinds; a sink asks for them.
    "maintenance-started",
    "maintenance-ended",
];

pub(crate) fn default_events() -> Vec<String> {
    [
        "down",
        "recovered",
        "rebooted",
        "mass-silence",
        "flapping",
        "settled",
        "group-down",
        "group-recovered",
    ]
    .map(String::from)
    .to_vec()
}

/// Every alert sink, plus mass-silence detection in front of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Commands run once per event. Default: none.
    pub exec: Vec<ExecConfig>,
    /// HTTP endpoints that get each event as a JSON POST. Default: none.
    pub webhook: Vec<WebhookConfig>,
    /// Prometheus Alertmanagers (v2 API): a down host is a firing
    /// `HostDown` alert until its next event. Default: none.
    pub alertmanager: Vec<AlertmanagerConfig>,
    /// SMTP servers that get each event as a plain-text e-mail. Default:
    /// none.
    pub email: Vec<super::email::EmailConfig>,
    /// Turns many hosts going down together into one `mass-silence` page.
    pub mass_silence: MassSilenceConfig,
}

/// One exec hook: a command run for each matching event, with the event in
/// its environment (`LUBDUB_EVENT`, `LUBDUB_HOST`, …) and as JSON on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Name in logs and in `/metrics` (`sink="…"`). Default: `exec<N>`, N
    /// counting from 0 in file order.
    pub name: Option<String>,
    /// Program and arguments, run directly (no shell). Required.
    pub command: Vec<String>,
    /// Event kinds to run for. Default: down, recovered, rebooted,
    /// mass-silence; `late` and `joined` on request.
    pub events: Vec<String>,
    /// Host id globs (`web-*`, `db-?.eu`); an event matches if its host
    /// matches any. Empty (the default): every host.
    pub hosts: Vec<String>,
    /// Labels the host must all carry (`{ team = "web" }`). Empty (the
    /// default): any.
    pub labels: crate::labels::Labels,
    /// A run still going after this long is killed (and counted failed).
    /// Default: 30s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many runs may be going at once; events wait in the queue beyond
    /// that. Default: 4.
    pub concurrency: usize,
    /// Events waiting for a run; beyond this they are dropped and counted.
    /// Default: 1000.
    pub queue: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            name: None,
            command: Vec::new(),
            events: default_events(),
            hosts: Vec::new(),
            labels: Default::default(),
            timeout: Duration::from_secs(30),
            concurrency: 4,
            queue: 1000,
        }
    }
}

/// HTTP basic authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password; empty sends none. Never printed.
    pub password: Secret,
    /// A file holding the password instead (relative: in
    /// `$CREDENTIALS_DIRECTORY`). Default: none.
    pub password_file: Option<PathBuf>,
}

/// One webhook: matching events are POSTed as JSON (schema in
/// docs/ALERTS.md), retried with exponential backoff and jitter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name in logs and in `/metrics`. Default: `webhook<N>`.
    pub name: Option<String>,
    /// Where to POST (`http://` or `https://`). Required, except for the
    /// presets with one public endpoint (ntfy, Telegram, PagerDuty,
    /// Opsgenie), where it replaces that endpoint. A secret (chat webhook
    /// URLs carry a token): never printed.
    pub url: Option<Secret>,
    /// A file holding `url` instead (relative: in `$CREDENTIALS_DIRECTORY`).
    pub url_file: Option<PathBuf>,
    /// A service whose request format to use (`slack`, `discord`, `teams`,
    /// `mattermost`, `googlechat`, `ntfy`, `gotify`, `telegram`,
    /// `pagerduty`, `opsgenie`); see docs/ALERTS.md. Default: none, the
    /// event document as JSON (or `body`).
    pub preset: Option<Preset>,
    /// The preset's secret: bot token (Telegram), application token
    /// (Gotify), access token (ntfy), routing key (PagerDuty), API key
    /// (Opsgenie). Never printed. Default: none.
    pub token: Option<Secret>,
    /// A file holding `token` instead (relative: in `$CREDENTIALS_DIRECTORY`).
    pub token_file: Option<PathBuf>,
    /// Telegram: the chat to post to.
    pub chat_id: Option<String>,
    /// ntfy: the topic to publish to.
    pub topic: Option<String>,
    /// A template of the message text of a preset. Default: a summary line
    /// and the event's details.
    pub message: Option<String>,
    /// A template of the request body (instead of the event document);
    /// with the default `Content-Type`, it must render to JSON.
    pub body: Option<String>,
    /// Query parameters added to the URL; values are templates.
    pub query: BTreeMap<String, String>,
    /// Base URL of the dashboard, for `dashboard_url` in templates.
    pub external_url: Option<String>,
    /// Collect the events of this long a window into one message (a
    /// digest: "3 hosts down: a, b, c"). Default: none, each event alone.
    #[serde(with = "humantime_serde")]
    pub group_wait: Option<Duration>,
    /// Send a host's `down` again this often while it stays down. Default:
    /// none.
    #[serde(with = "humantime_serde")]
    pub repeat: Option<Duration>,
    /// Event kinds to send. Default: down, recovered, rebooted,
    /// mass-silence.
    pub events: Vec<String>,
    /// Host id globs; empty (the default): every host.
    pub hosts: Vec<String>,
    /// Labels the host must all carry (`{ team = "web" }`). Empty (the
    /// default): any.
    pub labels: crate::labels::Labels,
    /// Events per request. 1 (the default): the body is one event object.
    /// More: the body is a JSON array of the events that queued up while the
    /// previous request was in flight, at most this many.
    pub max_batch: usize,
    /// Time allowed for one request, connecting included. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after a failed attempt (network error, timeout, 5xx, 408,
    /// 429); other 4xx answers are not retried. Default: 5.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one, capped at
    /// `max_backoff`, each wait randomly shortened by up to half so that
    /// servers restarted together do not retry in step. Default: 500ms.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest wait between retries. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Events waiting for delivery; beyond this they are dropped and
    /// counted. Default: 1000.
    pub queue: usize,
    /// Sent as `Authorization: Bearer …`. Never printed. Default: none.
    pub bearer_token: Option<Secret>,
    /// A file holding `bearer_token` instead (relative: in
    /// `$CREDENTIALS_DIRECTORY`).
    pub bearer_token_file: Option<PathBuf>,
    /// Sent as `Authorization: Basic …`. Default: none.
    pub basic_auth: Option<BasicAuth>,
    /// Extra request headers; values are templates. Default: none.
    pub headers: BTreeMap<String, String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: None,
            url: None,
            url_file: None,
            preset: None,
            token: None,
            token_file: None,
            chat_id: None,
            topic: None,
            message: None,
            body: None,
            query: BTreeMap::new(),
            external_url: None,
            group_wait: None,
            repeat: None,
            events: default_events(),
            hosts: Vec::new(),
            labels: Default::default(),
            max_batch: 1,
            timeout: Duration::from_secs(10),
            retries: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: 1000,
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            headers: BTreeMap::new(),
        }
    }
}

/// One Alertmanager cluster (send to all its `urls`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Name in logs and in `/metrics`. Default: `alertmanager<N>`.
    pub name: Option<String>,
    /// Base URLs of the Alertmanagers (`http://am-1:9093`); alerts go to
    /// `<url>/api/v2/alerts` of every one. Required.
    pub urls: Vec<String>,
    /// Host id globs; empty (the default): every host.
    pub hosts: Vec<String>,
    /// Labels the host must all carry (`{ team = "web" }`; `labels` is
    /// this sink's static alert labels). Empty (the default): any.
    pub match_labels: crate::labels::Labels,
    /// Static labels added to every alert (`severity = "page"`). They
    /// identify the alert, so give every lubdub server the same ones.
    /// `alertname` and `host` are lubdub's. Default: none.
    pub labels: BTreeMap<String, String>,
    /// Base of each alert's `generatorURL`; the host is appended as
    /// `#host=<id>`. Unset: `http://<the server's http address>/`.
    pub external_url: Option<String>,
    /// How often firing alerts are sent again to keep them alive. Default:
    /// 1m.
    #[serde(with = "humantime_serde")]
    pub resend: Duration,
    /// `endsAt` of a firing alert is this far ahead: if every lubdub server
    /// stops sending, Alertmanager resolves the alert after it. Must exceed
    /// `resend`. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Time allowed for one request. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Events waiting to be turned into alerts; beyond this they are dropped
    /// and counted. Default: 10000.
    pub queue: usize,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            name: None,
            urls: Vec::new(),
            hosts: Vec::new(),
            match_labels: Default::default(),
            labels: BTreeMap::new(),
            external_url: None,
            resend: Duration::from_secs(60),
            lease: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            queue: 10_000,
        }
    }
}

/// Mass-silence detection: when at least `share` of the known hosts (and at
/// least `min_hosts`) go down within `window`, the sinks get one
/// `mass-silence` event instead of a page per host. To decide, each `down`
/// is held back for `hold` before it reaches the sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MassSilenceConfig {
    /// Off: every `down` reaches the sinks at once. Default: on.
    pub enabled: bool,
    /// Share of the known hosts, 0 to 1. Default: 0.3.
    pub share: f64,
    /// Fewest hosts that make a mass silence, so that 2 of 5 is still two
    /// pages. Default: 10.
    pub min_hosts: usize,
    /// Window the downs must fall in. Unset: the server's timeout.
    #[serde(with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How long a `down` waits before reaching the sinks, so a mass
    /// silence can absorb it. A network cut spreads the downs over about
    /// one beat interval (each host's deadline runs from its own last
    /// beat), so this should be about the clients' interval; longer delays
    /// every page. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for MassSilenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: 0.3,
            min_hosts: 10,
            window: None,
            hold: Duration::from_secs(10),
        }
    }
}

/// What [`SinksConfig::validate`] parsed, for the sinks to take as it is
/// (they never parse it again): per kind, in file order, each sink's name
/// and host selector, and an Alertmanager's URLs.
#[derive(Clone, Debug, Default)]
pub struct CheckedSinks {
    /// One per `[[server.sinks.exec]]`.
    pub exec: Vec<Checked>,
    /// One per `[[server.sinks.webhook]]`.
    pub webhook: Vec<Checked>,
    /// One per `[[server.sinks.alertmanager]]`.
    pub alertmanager: Vec<CheckedAlertmanager>,
    /// One per `[[server.sinks.email]]`.
    pub email: Vec<Checked>,
}

/// A sink's name and the hosts whose events it takes.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Its name (given, or `<kind><N>`).
    pub name: String,
    /// Compiled from its `hosts` globs.
    pub hosts: Selector,
}

/// An Alertmanager sink's [`Checked`] part and its parsed URLs.
#[derive(Clone, Debug)]
pub struct CheckedAlertmanager {
    /// Name and hosts.
    pub sink: Checked,
    /// `<url>/api/v2/alerts` of every one of its `urls`.
    pub endpoints: Vec<reqwest::Url>,
    /// Its `external_url`, if set.
    pub external_url: Option<reqwest::Url>,
}

/// The selector of a sink's `hosts` globs: the one place sinks turn their
/// host settings into a matcher.
fn host_selector(kind: &'static str, name: &str, hosts: &[String]) -> Result<Selector, Error> {
    Selector::new(hosts, &Default::default(), &[])
        .map_err(|e| invalid("sinks.*.hosts", format!("{kind} sink {name:?}: {e}")))
}

/// Checks the settings every sink has; returns its name and host selector.
pub(crate) fn check_common(
    kind: &'static str,
    name: &str,
    events: &[String],
    hosts: &[String],
    queue: usize,
) -> Result<Checked, Error> {
    for event in events {
        if !EVENT_KINDS.contains(&event.as_str()) {
            return Err(invalid(
                "sinks.*.events",
                format!(
                    "{kind} sink {name:?}: unknown event kind {event:?} (known: {})",
                    EVENT_KINDS.join(", ")
                ),
            ));
        }
    }
    let hosts = host_selector(kind, name, hosts)?;
    ensure(
        queue > 0,
        "sinks.*.queue",
        format!("{kind} sink {name:?}: must be at least 1"),
    )?;
    Ok(Checked {
        name: name.to_string(),
        hosts,
    })
}

/// The parsed URL, if `http` or `https`. The error never shows the URL: it
/// may be a secret.
pub(crate) fn check_http_url(
    field: &'static str,
    name: &str,
    url: &str,
) -> Result<reqwest::Url, Error> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u),
        Ok(u) => Err(invalid(
            field,
            format!(
                "sink {name:?}: scheme {:?} is not http or https",
                u.scheme()
            ),
        )),
        Err(e) => Err(invalid(
            field,
            format!("sink {name:?}: {:?}: {e}", crate::config::redact::url(url)),
        )),
    }
}

/// A sink's `field` that must be at least 1.
fn check_at_least_1(field: &'static str, name: &str, value: usize) -> Result<(), Error> {
    ensure(
        value > 0,
        field,
        format!("sink {name:?}: must be at least 1"),
    )
}

/// A sink's `field` (a time allowed) that must be greater than 0.
pub(crate) fn check_timeout(field: &'static str, name: &str, value: Duration) -> Result<(), Error> {
    ensure(
        !value.is_zero(),
        field,
        format!("sink {name:?}: must be greater than 0"),
    )
}

/// A label name as Prometheus allows it.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SinksConfig {
    /// The names of the sinks, in the order they are started: exec, webhook,
    /// alertmanager, email, each in file order.
    pub fn names(&self) -> Vec<String> {
        let name = |given: &Option<String>, kind: &str, i: usize| {
            given.clone().unwrap_or_else(|| format!("{kind}{i}"))
        };
        let exec = self.exec.iter().enumerate();
        let webhook = self.webhook.iter().enumerate();
        let am = self.alertmanager.iter().enumerate();
        let email = self.email.iter().enumerate();
        exec.map(|(i, s)| name(&s.name, "exec", i))
            .chain(webhook.map(|(i, s)| name(&s.name, "webhook", i)))
            .chain(am.map(|(i, s)| name(&s.name, "alertmanager", i)))
            .chain(email.map(|(i, s)| name(&s.name, "email", i)))
            .collect()
    }

    /// Checks every sink and returns what it parsed; errors name the field
    /// and the sink. (What only the server can check, secret files and
    /// templates, it checks at start: `server::sinks::check`.)
    pub fn validate(&self) -> Result<CheckedSinks, Error> {
        let names = self.names();
        let mut names_iter = names.iter();
        let mut checked = CheckedSinks::default();
        for (sink, name) in self.exec.iter().zip(&mut names_iter) {
            checked.exec.push(check_common(
                "exec",
                name,
                &sink.events,
                &sink.hosts,
                sink.queue,
            )?);
            ensure(
                sink.command.first().is_some_and(|c| !c.is_empty()),
                "sinks.exec.command",
                format!("sink {name:?}: name a program to run"),
            )?;
            check_timeout("sinks.exec.timeout", name, sink.timeout)?;
            check_at_least_1("sinks.exec.concurrency", name, sink.concurrency)?;
        }
        for (sink, name) in self.webhook.iter().zip(&mut names_iter) {
            checked.webhook.push(check_common(
                "webhook",
                name,
                &sink.events,
                &sink.hosts,
                sink.queue,
            )?);
            check_at_least_1("sinks.webhook.max_batch", name, sink.max_batch)?;
            check_timeout("sinks.webhook.timeout", name, sink.timeout)?;
        }
        for (sink, name) in self.alertmanager.iter().zip(&mut names_iter) {
            let common = check_common("alertmanager", name, &[], &sink.hosts, sink.queue)?;
            ensure(
                !sink.urls.is_empty(),
                "sinks.alertmanager.urls",
                format!("sink {name:?}: name at least one Alertmanager"),
            )?;
            let endpoints = sink
                .urls
                .iter()
                .map(|url| {
                    let url = check_http_url("sinks.alertmanager.urls", name, url)?;
                    let base = url.as_str().trim_end_matches('/');
                    check_http_url(
                        "sinks.alertmanager.urls",
                        name,
                        &format!("{base}/api/v2/alerts"),
                    )
                })
                .collect::<Result<_, _>>()?;
            let external_url = sink
                .external_url
                .as_deref()
                .map(|url| check_http_url("sinks.alertmanager.external_url", name, url))
                .transpose()?;
            for label in sink.labels.keys() {
                if !is_label_name(label) || label == "alertname" || label == "host" {
                    return Err(invalid(
                        "sinks.alertmanager.labels",
                        format!(
                            "sink {name:?}: {label:?} is not a label name of your own \
                             (alertname and host are lubdub's)"
                        ),
                    ));
                }
            }
            ensure(
                !sink.resend.is_zero() && sink.lease > sink.resend,
                "sinks.alertmanager.lease",
                format!("sink {name:?}: resend must be > 0 and lease longer than resend"),
            )?;
            check_timeout("sinks.alertmanager.timeout", name, sink.timeout)?;
            checked.alertmanager.push(CheckedAlertmanager {
                sink: common,
                endpoints,
                external_url,
            });
        }
        // The rest of an e-mail sink is checked by the server (it reads
        // secret files and compiles templates).
        for (sink, name) in self.email.iter().zip(&mut names_iter) {
            checked.email.push(check_common(
                "email",
                name,
                &sink.events,
                &sink.hosts,
                sink.queue,
            )?);
        }
        let mut sorted = names.clone();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(
                "sinks.*.name",
                format!("two sinks are named {:?}", pair[0]),
            ));
        }
        let mass = &self.mass_silence;
        ensure(
            mass.share > 0.0 && mass.share <= 1.0,
            "sinks.mass_silence.share",
            "must be greater than 0 and at most 1",
        )?;
        ensure(
            mass.min_hosts > 0,
            "sinks.mass_silence.min_hosts",
            "must be at least 1",
        )?;
        ensure(
            !mass.window.is_some_and(|w| w.is_zero()),
            "sinks.mass_silence.window",
            "must be greater than 0",
        )?;
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn parse(text: &str) -> SinksConfig {
        FileConfig::parse(text).expect("valid toml").server.sinks
    }

    #[test]
    fn parses_every_sink_with_defaults() {
        let sinks = parse(
            r#"
[[server.sinks.exec]]
command = ["/bin/true"]
hosts = ["web-*"]

[[server.sinks.webhook]]
name = "chat"
url = "https://example.com/hook"
events = ["down", "late"]
headers = { "X-Team" = "ops" }
bearer_token = "s3cret"

[[server.sinks.alertmanager]]
urls = ["http://127.0.0.1:9093"]
labels = { severity = "page" }

[server.sinks.mass_silence]
share = 0.5
"#,
        );
        sinks.validate().expect("valid");
        assert_eq!(sinks.names(), ["exec0", "chat", "alertmanager0"]);
        assert_eq!(sinks.exec[0].events, default_events());
        assert_eq!(sinks.webhook[0].retries, 5);
        assert_eq!(sinks.alertmanager[0].resend, Duration::from_secs(60));
        assert_eq!(sinks.mass_silence.share, 0.5);
        assert_eq!(sinks.mass_silence.min_hosts, 10);
        // The printed config reads back the same, except that secrets are
        // printed as `<redacted>`.
        let mut file = FileConfig::default();
        file.server.sinks = sinks.clone();
        let text = toml::to_string(&file).expect("serialise");
        assert!(!text.contains("s3cret") && !text.contains("example.com/hook"));
        let mut redacted = sinks;
        redacted.webhook[0].url = Some(crate::config::secret::REDACTED.into());
        redacted.webhook[0].bearer_token = Some(crate::config::secret::REDACTED.into());
        assert_eq!(
            FileConfig::parse(&text).map(|f| f.server.sinks),
            Ok(redacted)
        );
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            ("[[server.sinks.exec]]\ncommand = []", "sinks.exec.command"),
            (
                "[[server.sinks.exec]]\ncommand = [\"x\"]\nevents = [\"dwon\"]",
                "sinks.*.events",
            ),
            (
                "[[server.sinks.exec]]\ncommand = [\"x\"]\nhosts = [\"a[\"]",
                "sinks.*.hosts",
            ),
            ("[[server.sinks.alertmanager]]", "sinks.alertmanager.urls"),
            (
                "[[server.sinks.alertmanager]]\nurls = [\"http://x\"]\nlabels = { host = \"h\" }",
                "sinks.alertmanager.labels",
            ),
            (
                "[[server.sinks.alertmanager]]\nurls = [\"http://x\"]\nresend = \"1m\"\nlease = \"30s\"",
                "sinks.alertmanager.lease",
            ),
            (
                "[[server.sinks.exec]]\nname = \"a\"\ncommand = [\"x\"]\n[[server.sinks.webhook]]\nname = \"a\"\nurl = \"http://x/\"",
                "sinks.*.name",
            ),
            (
                "[server.sinks.mass_silence]\nshare = 0.0",
                "sinks.mass_silence.share",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).validate().expect_err(field).to_string();
            assert!(err.starts_with(field), "{field}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
