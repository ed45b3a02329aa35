//! Templates over the event document (minijinja), and the plain-text
//! words every message sink starts from: a one-line `summary` and a few
//! lines of `text`.
//!
//! A template sees the event document's fields (`kind`, `host`, `addr`,
//! `silent_seconds`, …, as in docs/ALERTS.md) plus `summary`, `text`,
//! `events` (the documents of a digest; one for a single event), `digest`,
//! `test`, `reminder` and `dashboard_url`. Undefined names are errors, so a
//! typo is caught when the config is loaded: every template is rendered on
//! a sample of each event kind its sink takes.

use super::{MassSilence, Network, SinkEvent, TestAlert};
use crate::monitor::{Event, EventKind};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A sink's compiled templates, by name.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl Templates {
    /// Compiles `(name, source)` pairs; the error is one line naming the
    /// template.
    pub fn compile(sources: &[(&str, &str)]) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in sources {
            env.add_template_owned(name.to_string(), source.to_string())
                .map_err(|e| one_line(&e))?;
        }
        Ok(Self { env: Arc::new(env) })
    }

    /// Renders template `name` over `context`.
    pub fn render(&self, name: &str, context: &Value) -> Result<String, String> {
        let template = self.env.get_template(name).map_err(|e| one_line(&e))?;
        template
            .render(minijinja::value::Serde(context))
            .map_err(|e| one_line(&e))
    }

    /// Renders every template on a sample of each of `kinds` (event kinds as
    /// in `events = […]`, plus `test`, `digest`, `reminder`); the error names
    /// the template and the kind it failed on. `json`: templates whose output
    /// must be a JSON document.
    pub fn check(&self, kinds: &[&str], json: &[&str]) -> Result<(), String> {
        for kind in kinds {
            let context = context(&sample(kind), None);
            for (name, _) in self.env.templates() {
                let out = self
                    .render(name, &context)
                    .map_err(|e| format!("template {name} fails on a {kind} event: {e}"))?;
                if json.contains(&name)
                    && let Err(e) = serde_json::from_str::<Value>(&out)
                {
                    return Err(format!(
                        "template {name} renders invalid JSON for a {kind} event: {e}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn one_line(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(detail) = e.detail()
        && !text.contains(detail)
    {
        text = format!("{text}: {detail}");
    }
    text.replace('\n', " ")
}

/// The template context of `event`; `external_url` gives `dashboard_url`.
pub fn context(event: &SinkEvent, external_url: Option<&str>) -> Value {
    let members: Vec<&SinkEvent> = match event {
        SinkEvent::Digest(events) => events.iter().collect(),
        other => vec![other],
    };
    let mut map = match serde_json::to_value(event.payload()) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let documents: Vec<Value> = members
        .iter()
        .map(|e| serde_json::to_value(e.payload()).unwrap_or_default())
        .collect();
    let dashboard = external_url.map(|base| match event.host() {
        Some(host) => format!(
            "{}#host={host}",
            base.trim_end_matches('/').to_owned() + "/"
        ),
        None => base.to_string(),
    });
    map.insert("summary".into(), summary(event).into());
    map.insert("text".into(), text(event, dashboard.as_deref()).into());
    map.insert("events".into(), documents.into());
    map.insert(
        "digest".into(),
        matches!(event, SinkEvent::Digest(_)).into(),
    );
    map.insert("test".into(), matches!(event, SinkEvent::Test(_)).into());
    map.insert(
        "reminder".into(),
        matches!(event, SinkEvent::Reminder(_)).into(),
    );
    map.insert("dashboard_url".into(), dashboard.into());
    Value::Object(map)
}

/// A silence in words: `31.2s`, `4h 2m 5s`.
pub fn silence(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// The silence of a host event in words: `31.2s`, or `30.0s to 5m 31s`
/// when it is known only within bounds (after a restart of the server).
pub fn silence_of(e: &Event) -> String {
    match e.silent_at_least {
        Some(low) => format!("{} to {}", silence(low), silence(e.silent_for)),
        None => silence(e.silent_for),
    }
}

/// One line: what happened.
pub fn summary(event: &SinkEvent) -> String {
    match event {
        SinkEvent::Host(e) => host_line(e),
        SinkEvent::Reminder(e) => format!(
            "host {} is still down: silent for {}",
            e.host,
            silence_of(e)
        ),
        SinkEvent::MassSilence(m) => format!(
            "{} of {} hosts went down within {}",
            m.count,
            m.fleet,
            silence(m.window)
        ),
        SinkEvent::Test(t) => format!("test alert from lubdub (sink {})", t.sink),
        SinkEvent::Digest(events) => digest_line(events),
    }
}

fn host_line(e: &Event) -> String {
    let silent = silence_of(e);
    match e.kind {
        EventKind::Down => format!("host {} is down: silent for {silent}", e.host),
        EventKind::Late => format!("host {} is late: silent for {silent}", e.host),
        EventKind::Recovered => format!("host {} recovered after {silent} of silence", e.host),
        kind => format!("host {}: {}", e.host, kind.as_str()),
    }
}

/// "3 hosts down: a, b, c; 1 host recovered: d", kinds in order of first
/// appearance.
fn digest_line(events: &[SinkEvent]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for event in events {
        let (kind, name) = match event {
            SinkEvent::Host(e) => (e.kind.as_str().to_string(), e.host.to_string()),
            SinkEvent::Reminder(e) => ("still down".to_string(), e.host.to_string()),
            other => (other.kind().to_string(), summary(other)),
        };
        match groups.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, names)) => names.push(name),
            None => groups.push((kind, vec![name])),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(kind, names)| {
            let hosts = if names.len() == 1 { "host" } else { "hosts" };
            format!("{} {hosts} {kind}: {}", names.len(), names.join(", "))
        })
        .collect();
    parts.join("; ")
}

/// A few lines of plain text: the summary, then the details that exist.
pub fn text(event: &SinkEvent, dashboard: Option<&str>) -> String {
    let mut lines = vec![summary(event)];
    let mut details = |e: &Event| {
        let last_seen = e.at.checked_sub(e.silent_for).unwrap_or(e.at);
        lines.push(format!("host: {}", e.host));
        if !e.labels.is_empty() {
            lines.push(format!("labels: {}", e.labels));
        }
        lines.push(format!("address: {}", e.addr));
        lines.push(format!("silence: {}", silence_of(e)));
        if e.silent_at_least.is_some() {
            lines.push(
                "(not heard since the server restarted; it may have beaten unheard before)"
                    .to_string(),
            );
        }
        lines.push(format!("last seen: {}", rfc3339(last_seen)));
        lines.push(format!("at: {}", rfc3339(e.at)));
    };
    match event {
        SinkEvent::Host(e) | SinkEvent::Reminder(e) => details(e),
        SinkEvent::MassSilence(m) => {
            let networks: Vec<String> = m
                .networks
                .iter()
                .map(|n| format!("{} ({})", n.network, n.hosts))
                .collect();
            lines.push(format!("networks: {}", networks.join(", ")));
            lines.push(format!("hosts: {}", m.hosts.join(", ")));
            lines.push(format!("at: {}", rfc3339(m.at)));
        }
        SinkEvent::Test(t) => {
            lines.push("Nothing is wrong: this message checks that alerts arrive.".into());
            lines.push(format!("at: {}", rfc3339(t.at)));
        }
        SinkEvent::Digest(events) => {
            for e in events.iter() {
                lines.push(format!("- {}", summary(e)));
            }
        }
    }
    if let Some(url) = dashboard {
        lines.push(format!("dashboard: {url}"));
    }
    lines.join("\n")
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A sample event of `kind` (an `events = […]` name, or `test`, `digest`,
/// `reminder`), for checking templates.
pub fn sample(kind: &str) -> SinkEvent {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let host = |kind: EventKind, name: &str| Event {
        id: 42,
        addr: SocketAddr::from(([192, 0, 2, 10], 51234)),
        silent_for: Duration::from_millis(31_200),
        fleet: 30,
        ..Event::new(kind, name.into(), at)
    };
    match kind {
        "mass-silence" => SinkEvent::MassSilence(Arc::new(MassSilence {
            at,
            count: 20,
            fleet: 30,
            window: Duration::from_secs(30),
            hosts: vec!["rack4-01".into(), "rack4-02".into()],
            networks: vec![Network {
                network: "192.0.2.0/24".into(),
                hosts: 20,
            }],
        })),
        "test" => SinkEvent::Test(Arc::new(TestAlert::new("sample", at))),
        "digest" => SinkEvent::Digest(Arc::new([
            SinkEvent::Host(host(EventKind::Down, "web-1")),
            SinkEvent::Host(host(EventKind::Down, "web-2")),
        ])),
        "reminder" => SinkEvent::Reminder(host(EventKind::Down, "web-1")),
        name => {
            let kind = EventKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .unwrap_or(EventKind::Down);
            SinkEvent::Host(host(kind, "web-1"))
        }
    }
}

/// The context of a sample, as JSON (for docs and tests).
pub fn sample_context(kind: &str) -> Value {
    context(&sample(kind), Some("https://lubdub.example.com/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_and_refuses_undefined_names() {
        let t = Templates::compile(&[("body", "{{ host }} {{ kind }}: {{ summary }}")])
            .expect("compiles");
        assert_eq!(
            t.render("body", &sample_context("down")).expect("renders"),
            "web-1 down: host web-1 is down: silent for 31.2s"
        );
        // A mass silence has no host: refused when the sink takes it.
        let err = t
            .check(&["down", "mass-silence"], &[])
            .expect_err("no host");
        assert!(err.contains("mass-silence"), "{err}");
        assert!(Templates::compile(&[("body", "{{ host ")]).is_err());
        let json =
            Templates::compile(&[("body", "{\"text\": {{ summary|tojson }}}")]).expect("compiles");
        json.check(&["down", "mass-silence", "test", "digest"], &["body"])
            .expect("valid JSON for every kind");
        let bad = Templates::compile(&[("body", "{\"text\": {{ summary }}}")]).expect("compiles");
        assert!(bad.check(&["down"], &["body"]).is_err(), "unquoted text");
    }

    #[test]
    fn digest_summary_groups_by_kind() {
        let event = |kind, host| {
            let SinkEvent::Host(mut e) = sample("down") else {
                unreachable!("a host event")
            };
            e.kind = kind;
            e.host = Arc::from(host);
            SinkEvent::Host(e)
        };
        let digest = SinkEvent::Digest(Arc::new([
            event(EventKind::Down, "a"),
            event(EventKind::Down, "b"),
            event(EventKind::Recovered, "c"),
            event(EventKind::Down, "d"),
        ]));
        assert_eq!(
            summary(&digest),
            "3 hosts down: a, b, d; 1 host recovered: c"
        );
        assert_eq!(silence(Duration::from_secs(4 * 3600 + 5)), "4h 5s");
    }
}
