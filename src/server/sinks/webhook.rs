//! The webhook sink: HTTP POSTs of the event document (one event, or a batch
//! as an array), of a template, or of a preset's request; retried with
//! exponential backoff and jitter, with optional auth and headers.

use super::config::{WebhookConfig, check_http_url};
use super::presets::{self, Preset};
use super::secret::resolve;
use super::template::{self, Templates};
use super::{Delivery, Error, Outcomes, Retry, SinkEvent, report_tests};
use crate::config::Error as ConfigError;
use crate::config::invalid;
use reqwest::header::{HeaderName, HeaderValue};
use std::time::Duration;
use tokio::sync::mpsc;

/// A webhook's settings with its secrets read and its templates compiled.
/// Building it is the config check (`validate`), so a sink that starts
/// cannot fail on its settings later.
pub struct Compiled {
    url: reqwest::Url,
    preset: Option<Preset>,
    token: Option<String>,
    chat_id: Option<String>,
    topic: Option<String>,
    bearer_token: Option<String>,
    basic_auth: Option<(String, Option<String>)>,
    templates: Templates,
    headers: Vec<HeaderName>,
    query: Vec<String>,
    has_body: bool,
    has_message: bool,
    /// `max_batch > 1`: the body is always an array.
    batched: bool,
    external_url: Option<String>,
}

/// The kinds a sink's templates are checked on: its events, a test, and a
/// digest or a reminder when it sends them.
pub fn sample_kinds(
    events: &[String],
    group_wait: Option<Duration>,
    repeat: Option<Duration>,
) -> Vec<&str> {
    let mut kinds: Vec<&str> = events.iter().map(String::as_str).collect();
    kinds.push("test");
    if group_wait.is_some() {
        kinds.push("digest");
    }
    if repeat.is_some() {
        kinds.push("reminder");
    }
    kinds
}

impl Compiled {
    /// Checks and compiles `config`; errors name the field and the sink.
    pub fn new(name: &str, config: &WebhookConfig) -> Result<Self, ConfigError> {
        let bad = |field, reason: &str| Err(invalid(field, format!("sink {name:?}: {reason}")));
        // Every secret is read first; the first refused, in this order, is reported.
        let [url, token, bearer_token] = [
            ("sinks.webhook.url", &config.url, &config.url_file),
            ("sinks.webhook.token", &config.token, &config.token_file),
            (
                "sinks.webhook.bearer_token",
                &config.bearer_token,
                &config.bearer_token_file,
            ),
        ]
        .map(|(field, inline, file)| resolve(field, name, inline.as_ref(), file.as_deref()));
        let url = match (url?, config.preset.and_then(Preset::default_url)) {
            (Some(url), _) => url,
            (None, Some(default)) => default.to_string(),
            (None, None) => return bad("sinks.webhook.url", "required"),
        };
        let url = check_http_url("sinks.webhook.url", name, &url)?;
        let (token, bearer_token) = (token?, bearer_token?);
        let basic_auth = match &config.basic_auth {
            Some(basic) => {
                let password = resolve(
                    "sinks.webhook.basic_auth.password",
                    name,
                    (!basic.password.expose().is_empty()).then_some(&basic.password),
                    basic.password_file.as_deref(),
                )?;
                Some((basic.username.clone(), password))
            }
            None => None,
        };
        if bearer_token.is_some() && basic_auth.is_some() {
            return bad(
                "sinks.webhook.bearer_token",
                "set bearer_token or basic_auth, not both",
            );
        }
        if let Some(token) = &bearer_token
            && HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return bad("sinks.webhook.bearer_token", "not a valid header value");
        }
        match config.preset {
            Some(preset) => {
                if config.body.is_some() {
                    return bad("sinks.webhook.body", "set preset or body, not both");
                }
                if preset.needs_token() && token.is_none() {
                    return bad(
                        "sinks.webhook.token",
                        &format!("the {} preset needs token or token_file", preset.as_str()),
                    );
                }
                if preset == Preset::Telegram && config.chat_id.is_none() {
                    return bad("sinks.webhook.chat_id", "the telegram preset needs chat_id");
                }
                if preset == Preset::Ntfy && config.topic.is_none() {
                    return bad("sinks.webhook.topic", "the ntfy preset needs topic");
                }
                if preset.is_paging() && config.group_wait.is_some() {
                    return bad(
                        "sinks.webhook.group_wait",
                        "a paging preset opens one incident per host: no digests",
                    );
                }
            }
            None if config.message.is_some() => {
                return bad("sinks.webhook.message", "only presets take a message");
            }
            None => {}
        }
        if config.max_batch > 1 && (config.preset.is_some() || config.body.is_some()) {
            return bad(
                "sinks.webhook.max_batch",
                "batches are the plain event document only; use group_wait for digests",
            );
        }
        let mut sources: Vec<(String, String)> = Vec::new();
        if let Some(body) = &config.body {
            sources.push(("body".into(), body.clone()));
        }
        if let Some(message) = &config.message {
            sources.push(("message".into(), message.clone()));
        }
        let mut headers = Vec::new();
        for (key, value) in &config.headers {
            let Ok(header) = HeaderName::from_bytes(key.as_bytes()) else {
                return bad("sinks.webhook.headers", &format!("invalid header {key:?}"));
            };
            sources.push((format!("header {header}"), value.clone()));
            headers.push(header);
        }
        for (key, value) in &config.query {
            sources.push((format!("query {key}"), value.clone()));
        }
        let pairs: Vec<(&str, &str)> = sources
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        let templates = Templates::compile(&pairs)
            .and_then(|t| {
                let kinds = sample_kinds(&config.events, config.group_wait, config.repeat);
                let json: &[&str] = if has_content_type(config) {
                    &[]
                } else {
                    &["body"]
                };
                t.check(&kinds, json)?;
                Ok(t)
            })
            .map_err(|e| invalid("sinks.webhook.body", format!("sink {name:?}: {e}")))?;
        if let Some(external) = &config.external_url {
            check_http_url("sinks.webhook.external_url", name, external)?;
        }
        let compiled = Self {
            url,
            preset: config.preset,
            token,
            chat_id: config.chat_id.clone(),
            topic: config.topic.clone(),
            bearer_token,
            basic_auth,
            templates,
            headers,
            query: config.query.keys().cloned().collect(),
            has_body: config.body.is_some(),
            has_message: config.message.is_some(),
            batched: config.max_batch > 1,
            external_url: config.external_url.clone(),
        };
        // Header values must be valid on every sample, too.
        for kind in sample_kinds(&config.events, config.group_wait, config.repeat) {
            let sample = [template::sample(kind)];
            compiled
                .requests(&sample)
                .and_then(|_| compiled.headers(&sample[0]))
                .map_err(|e| invalid("sinks.webhook.headers", format!("sink {name:?}: {e}")))?;
        }
        Ok(compiled)
    }

    /// The requests that deliver `batch` (one event unless `max_batch > 1`).
    fn requests(&self, batch: &[SinkEvent]) -> Result<Vec<presets::Request>, String> {
        let first = &batch[0];
        let context = template::context(first, self.external_url.as_deref());
        let mut requests = match self.preset {
            Some(preset) => {
                let text = match self.has_message {
                    true => self.templates.render("message", &context)?,
                    false => context["text"].as_str().unwrap_or_default().to_string(),
                };
                let title = template::summary(first);
                let settings = presets::Settings {
                    preset,
                    url: &self.url,
                    token: self.token.as_deref(),
                    chat_id: self.chat_id.as_deref(),
                    topic: self.topic.as_deref(),
                };
                presets::requests(&settings, first, &title, &text)
            }
            None => {
                let body = if self.has_body {
                    let text = self.templates.render("body", &context)?;
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                } else if !self.batched && !matches!(first, SinkEvent::Digest(_)) {
                    serde_json::to_value(first.payload()).map_err(|e| e.to_string())?
                } else {
                    let events = match first {
                        SinkEvent::Digest(events) => events.to_vec(),
                        _ => batch.to_vec(),
                    };
                    let docs: Vec<_> = events.iter().map(SinkEvent::payload).collect();
                    serde_json::to_value(docs).map_err(|e| e.to_string())?
                };
                vec![presets::Request {
                    method: reqwest::Method::POST,
                    url: self.url.clone(),
                    headers: Vec::new(),
                    body,
                }]
            }
        };
        for request in &mut requests {
            for key in &self.query {
                let value = self.templates.render(&format!("query {key}"), &context)?;
                request.url.query_pairs_mut().append_pair(key, &value);
            }
        }
        Ok(requests)
    }

    /// The sink's own headers for `event`, rendered.
    fn headers(&self, event: &SinkEvent) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let context = template::context(event, self.external_url.as_deref());
        let mut out = Vec::new();
        for name in &self.headers {
            let value = self.templates.render(&format!("header {name}"), &context)?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name} renders an invalid value"))?;
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}

/// True when the sink sets its own `Content-Type` (then the body need not
/// be JSON).
fn has_content_type(config: &WebhookConfig) -> bool {
    config
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("content-type"))
}

/// A configured webhook.
pub struct Webhook {
    name: String,
    compiled: Compiled,
    client: reqwest::Client,
    max_batch: usize,
    retry: Retry,
    outcomes: Outcomes,
}

/// How one attempt ended.
enum Attempt {
    Sent,
    /// Worth trying again: network error, timeout, 5xx, 408, 429.
    Retry(String),
    /// Will not get better: other 4xx.
    Fail(String),
}

impl Webhook {
    /// The sink from its config (validated, so compiling succeeds).
    pub fn new(name: String, config: &WebhookConfig, outcomes: Outcomes) -> Result<Self, Error> {
        let compiled = Compiled::new(&name, config)?;
        let client = super::http_client(&name, config.timeout, Default::default())?;
        Ok(Self {
            name,
            compiled,
            client,
            max_batch: config.max_batch,
            retry: Retry {
                retries: config.retries,
                backoff: config.backoff,
                max_backoff: config.max_backoff,
            },
            outcomes,
        })
    }

    /// Delivers events from `queue` until it closes.
    pub async fn run(self, mut queue: mpsc::Receiver<SinkEvent>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            let result = self.deliver(&batch).await;
            report_tests(&batch, &result);
        }
    }

    async fn deliver(&self, batch: &[SinkEvent]) -> Result<(), String> {
        let n = batch.len() as u64;
        let built = self
            .compiled
            .requests(batch)
            .and_then(|r| Ok((r, self.compiled.headers(&batch[0])?)));
        let (requests, headers) = match built {
            Ok(built) => built,
            Err(why) => {
                self.give_up(n, &why);
                return Err(why);
            }
        };
        for request in &requests {
            let body = serde_json::to_vec(&request.body).expect("json serialises");
            let mut attempt = 0;
            loop {
                let why = match self.attempt(request, &headers, body.clone()).await {
                    Attempt::Sent => break,
                    Attempt::Fail(why) => {
                        self.give_up(n, &why);
                        return Err(why);
                    }
                    Attempt::Retry(why) => why,
                };
                if !self
                    .retry
                    .wait(&self.name, &why, attempt, &self.outcomes, n)
                    .await
                {
                    self.give_up(n, &why);
                    return Err(why);
                }
                attempt += 1;
            }
        }
        self.outcomes.add(Delivery::Sent, n);
        Ok(())
    }

    async fn attempt(
        &self,
        request: &presets::Request,
        headers: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
    ) -> Attempt {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder = builder.body(body);
        if let Some(token) = &self.compiled.bearer_token {
            builder = builder.bearer_auth(token);
        } else if let Some((user, password)) = &self.compiled.basic_auth {
            builder = builder.basic_auth(user, password.as_ref());
        }
        match builder.send().await {
            Ok(response) if response.status().is_success() => Attempt::Sent,
            Ok(response) => {
                let status = response.status();
                let why = format!("answered {status}");
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Attempt::Retry(why)
                } else {
                    Attempt::Fail(why)
                }
            }
            // Without the URL: it may carry a secret in its path or query.
            Err(e) => Attempt::Retry(error_chain(&e.without_url())),
        }
    }

    fn give_up(&self, n: u64, why: &str) {
        self.outcomes.fail(n, why);
        tracing::warn!(sink = %self.name, events = n, "webhook delivery failed: {why}");
    }
}

/// An error with its causes ("error sending request: connection refused"),
/// since reqwest's own message alone rarely says what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;

    #[test]
    fn checks_name_the_field() {
        let cases = [
            ("url = \"not a url\"", "sinks.webhook.url"),
            ("url = \"ftp://x/\"", "sinks.webhook.url"),
            ("preset = \"slack\"", "sinks.webhook.url"),
            (
                "preset = \"telegram\"\ntoken = \"t\"",
                "sinks.webhook.chat_id",
            ),
            ("preset = \"pagerduty\"", "sinks.webhook.token"),
            (
                "url = \"http://x/\"\nheaders = { \"bad header\" = \"v\" }",
                "sinks.webhook.headers",
            ),
            (
                "url = \"http://x/\"\nbearer_token = \"t\"\nbasic_auth = { username = \"u\" }",
                "sinks.webhook.bearer_token",
            ),
            (
                "url = \"http://x/\"\nbody = \"{{ nope }}\"",
                "sinks.webhook.body",
            ),
            (
                "url = \"http://x/\"\ntoken_file = \"/nonexistent/t\"",
                "sinks.webhook.token",
            ),
        ];
        for (lines, field) in cases {
            let text = format!("[[server.sinks.webhook]]\n{lines}");
            let sinks = FileConfig::parse(&text).expect("toml").server.sinks;
            let err = super::super::check(&sinks).expect_err(field).to_string();
            assert!(err.starts_with(field), "{field}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
