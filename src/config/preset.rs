//! The services a webhook can speak to with `preset = "…"` (the
//! requests themselves are built by `server::sinks::presets`).

use serde::{Deserialize, Serialize};

/// A service with a preset request format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Slack incoming webhook.
    Slack,
    /// Discord webhook.
    Discord,
    /// Microsoft Teams (Workflows "post to a channel when a webhook request
    /// is received"), an Adaptive Card.
    Teams,
    /// Mattermost incoming webhook.
    Mattermost,
    /// Google Chat space webhook.
    GoogleChat,
    /// ntfy topic.
    Ntfy,
    /// Gotify application.
    Gotify,
    /// Telegram bot `sendMessage`.
    Telegram,
    /// PagerDuty Events API v2.
    PagerDuty,
    /// Opsgenie Alert API.
    Opsgenie,
}

impl Preset {
    /// Its name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Slack => "slack",
            Preset::Discord => "discord",
            Preset::Teams => "teams",
            Preset::Mattermost => "mattermost",
            Preset::GoogleChat => "googlechat",
            Preset::Ntfy => "ntfy",
            Preset::Gotify => "gotify",
            Preset::Telegram => "telegram",
            Preset::PagerDuty => "pagerduty",
            Preset::Opsgenie => "opsgenie",
        }
    }

    /// The URL used when the sink names none (services with one public
    /// endpoint); `None`: the sink must set `url`.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            Preset::Ntfy => Some("https://ntfy.sh"),
            Preset::Telegram => Some("https://api.telegram.org"),
            Preset::PagerDuty => Some("https://events.pagerduty.com"),
            Preset::Opsgenie => Some("https://api.opsgenie.com"),
            _ => None,
        }
    }

    /// Whether `token` is required.
    pub fn needs_token(self) -> bool {
        matches!(
            self,
            Preset::Gotify | Preset::Telegram | Preset::PagerDuty | Preset::Opsgenie
        )
    }

    /// Whether it pairs a `down` with its resolution (so it takes one event
    /// per request, not digests).
    pub fn is_paging(self) -> bool {
        matches!(self, Preset::PagerDuty | Preset::Opsgenie)
    }
}
