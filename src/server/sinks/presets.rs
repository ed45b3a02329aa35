//! Webhook presets: the request each service's public API documents, built
//! from an event (docs/ALERTS.md names the documents and the fields used).
//! Chat services get the `message` text; PagerDuty and Opsgenie open one
//! incident per host on `down` and resolve or close it on the host's next
//! event, by a key derived from the host id alone (so every lubdub server
//! watching the host names the same incident).

use super::SinkEvent;
pub use crate::config::preset::Preset;
use crate::monitor::EventKind;
use reqwest::Method;
use serde_json::{Value, json};

/// One HTTP request to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Always POST today; kept for the services that differ.
    pub method: Method,
    /// The full URL.
    pub url: reqwest::Url,
    /// Headers beyond `Content-Type: application/json` and the sink's own.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Value,
}

/// What a preset needs besides the event.
pub struct Settings<'a> {
    /// The preset.
    pub preset: Preset,
    /// Base or full URL (`url`, or the preset's default).
    pub url: &'a reqwest::Url,
    /// `token` (bot token, app token, routing key, API key).
    pub token: Option<&'a str>,
    /// Telegram `chat_id`.
    pub chat_id: Option<&'a str>,
    /// ntfy topic.
    pub topic: Option<&'a str>,
}

/// The incident key of a host (PagerDuty `dedup_key`, Opsgenie `alias`).
pub fn incident_key(event: &SinkEvent) -> String {
    match event {
        SinkEvent::MassSilence(_) => "lubdub/mass-silence".to_string(),
        SinkEvent::Test(_) => "lubdub/test".to_string(),
        other => format!("lubdub/{}", other.host().unwrap_or("-")),
    }
}

/// Whether `event` opens an incident (`Some(true)`), resolves one
/// (`Some(false)`), or means nothing to a pager (`late`, `joined`,
/// `flapping`: the host's incident stays as it is).
fn opens(event: &SinkEvent) -> Option<bool> {
    match event {
        SinkEvent::Host(e) => match e.kind {
            EventKind::Down => Some(true),
            EventKind::Late | EventKind::Joined | EventKind::Flapping => None,
            EventKind::MonitorStarted => None,
            _ => Some(false),
        },
        SinkEvent::Reminder(_) | SinkEvent::MassSilence(_) | SinkEvent::Digest(_) => Some(true),
        SinkEvent::Test(_) => Some(true),
    }
}

fn join(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// The requests for `event`: `title` is the one-line summary, `text` the
/// message. A test event to a paging service opens and at once resolves its
/// incident, so that nobody is left with an open test page.
pub fn requests(s: &Settings, event: &SinkEvent, title: &str, text: &str) -> Vec<Request> {
    let post = |url: reqwest::Url, headers: Vec<(&'static str, String)>, body: Value| Request {
        method: Method::POST,
        url,
        headers,
        body,
    };
    let token = s.token.unwrap_or_default();
    let opening = opens(event);
    let down = opening == Some(true) && !matches!(event, SinkEvent::Test(_));
    if s.preset.is_paging() && opening.is_none() {
        return Vec::new();
    }
    match s.preset {
        Preset::Slack | Preset::Mattermost | Preset::GoogleChat => {
            vec![post(s.url.clone(), vec![], json!({ "text": text }))]
        }
        Preset::Discord => {
            // Discord refuses content over 2000 characters.
            let content: String = text.chars().take(2000).collect();
            vec![post(s.url.clone(), vec![], json!({ "content": content }))]
        }
        Preset::Teams => {
            let card = json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.2",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": text, "wrap": true},
                ],
            });
            let body = json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": card,
                }],
            });
            vec![post(s.url.clone(), vec![], body)]
        }
        Preset::Ntfy => {
            let mut headers = vec![];
            if !token.is_empty() {
                headers.push(("authorization", format!("Bearer {token}")));
            }
            let body = json!({
                "topic": s.topic.unwrap_or_default(),
                "title": title,
                "message": text,
                "priority": if down { 4 } else { 3 },
                "tags": [if down { "rotating_light" } else { "white_check_mark" }],
            });
            vec![post(s.url.clone(), headers, body)]
        }
        Preset::Gotify => {
            let body = json!({
                "title": title,
                "message": text,
                "priority": if down { 8 } else { 4 },
            });
            let headers = vec![("x-gotify-key", token.to_string())];
            vec![post(join(s.url, "/message"), headers, body)]
        }
        Preset::Telegram => {
            let url = join(s.url, &format!("/bot{token}/sendMessage"));
            // Telegram's limit is 4096 characters.
            let text: String = text.chars().take(4096).collect();
            let body = json!({ "chat_id": s.chat_id.unwrap_or_default(), "text": text });
            vec![post(url, vec![], body)]
        }
        Preset::PagerDuty => {
            let url = join(s.url, "/v2/enqueue");
            let key = incident_key(event);
            let trigger = json!({
                "routing_key": token,
                "event_action": "trigger",
                "dedup_key": key,
                "payload": {
                    "summary": title.chars().take(1024).collect::<String>(),
                    "source": event.host().unwrap_or("lubdub"),
                    "severity": if matches!(event, SinkEvent::Test(_)) { "info" } else { "critical" },
                    "timestamp": event.payload().at,
                    "component": "lubdub",
                    "custom_details": { "text": text, "event": event.payload() },
                },
            });
            let resolve =
                json!({ "routing_key": token, "event_action": "resolve", "dedup_key": key });
            match event {
                SinkEvent::Test(_) => vec![
                    post(url.clone(), vec![], trigger),
                    post(url, vec![], resolve),
                ],
                _ if down => vec![post(url, vec![], trigger)],
                _ => vec![post(url, vec![], resolve)],
            }
        }
        Preset::Opsgenie => {
            let auth = vec![("authorization", format!("GenieKey {token}"))];
            let alias = incident_key(event);
            let create = json!({
                "message": title.chars().take(130).collect::<String>(),
                "alias": alias,
                "description": text,
                "source": "lubdub",
                "entity": event.host().unwrap_or("lubdub"),
                "tags": ["lubdub", event.kind()],
                "priority": if matches!(event, SinkEvent::Test(_)) { "P5" } else { "P1" },
            });
            let mut close_url = join(s.url, &format!("/v2/alerts/{}/close", urlencode(&alias)));
            close_url.set_query(Some("identifierType=alias"));
            let close = json!({ "source": "lubdub", "note": title });
            let create_url = join(s.url, "/v2/alerts");
            match event {
                SinkEvent::Test(_) => vec![
                    post(create_url, auth.clone(), create),
                    post(close_url, auth, close),
                ],
                _ if down => vec![post(create_url, auth, create)],
                _ => vec![post(close_url, auth, close)],
            }
        }
    }
}

/// Percent-encodes a path segment (the alias holds a `/`).
fn urlencode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sinks::template::sample;

    /// The requests `preset` makes for a sample event of `kind`, to a
    /// server at 127.0.0.1:9 with `token`.
    fn requests_of(preset: Preset, token: &str, kind: &str) -> Vec<Request> {
        let url = reqwest::Url::parse("http://127.0.0.1:9/").expect("url");
        let s = Settings {
            preset,
            url: &url,
            token: Some(token),
            chat_id: None,
            topic: None,
        };
        requests(&s, &sample(kind), "t", "x")
    }

    #[test]
    fn pagerduty_pairs_trigger_and_resolve_by_host() {
        let down = requests_of(Preset::PagerDuty, "R0UTING", "down");
        let up = requests_of(Preset::PagerDuty, "R0UTING", "recovered");
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].url.as_str(), "http://127.0.0.1:9/v2/enqueue");
        assert_eq!(down[0].body["event_action"], "trigger");
        assert_eq!(up[0].body["event_action"], "resolve");
        assert_eq!(down[0].body["dedup_key"], up[0].body["dedup_key"]);
        assert_eq!(requests_of(Preset::PagerDuty, "R0UTING", "test").len(), 2);
    }

    #[test]
    fn opsgenie_closes_by_encoded_alias() {
        let close = &requests_of(Preset::Opsgenie, "k", "recovered")[0];
        assert_eq!(
            close.url.as_str(),
            "http://127.0.0.1:9/v2/alerts/lubdub%2Fweb-1/close?identifierType=alias"
        );
    }
}
