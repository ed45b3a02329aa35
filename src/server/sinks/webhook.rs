//! The webhook sink: JSON POSTs (one event, or a batch as an array), retried
//! with exponential backoff and jitter, with optional auth and headers.

use super::config::BasicAuth;
use super::config::WebhookConfig;
use super::{Delivery, Error, Outcomes, SinkEvent, backoff};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use tokio::sync::mpsc;

/// A configured webhook.
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    bearer_token: Option<String>,
    basic_auth: Option<BasicAuth>,
    max_batch: usize,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
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
    /// The sink from its (validated) config.
    pub fn new(name: String, config: &WebhookConfig, outcomes: Outcomes) -> Result<Self, Error> {
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(key.as_bytes()).expect("validated header name"),
                HeaderValue::from_str(value).expect("validated header value"),
            );
        }
        let client = super::http_client(&name, config.timeout, headers)?;
        Ok(Self {
            name,
            url: reqwest::Url::parse(&config.url).expect("validated url"),
            client,
            bearer_token: config.bearer_token.clone(),
            basic_auth: config.basic_auth.clone(),
            max_batch: config.max_batch,
            retries: config.retries,
            backoff: config.backoff,
            max_backoff: config.max_backoff,
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
            self.deliver(&batch).await;
        }
    }

    async fn deliver(&self, batch: &[SinkEvent]) {
        let payloads: Vec<_> = batch.iter().map(SinkEvent::payload).collect();
        let body = if self.max_batch == 1 {
            serde_json::to_vec(&payloads[0])
        } else {
            serde_json::to_vec(&payloads)
        }
        .expect("payload serialises");
        let n = batch.len() as u64;
        let mut attempt = 0;
        loop {
            let why = match self.attempt(body.clone()).await {
                Attempt::Sent => {
                    self.outcomes.add(Delivery::Sent, n);
                    return;
                }
                Attempt::Fail(why) => {
                    self.give_up(n, &why);
                    return;
                }
                Attempt::Retry(why) => why,
            };
            if attempt >= self.retries {
                self.give_up(n, &why);
                return;
            }
            let wait = backoff(self.backoff, self.max_backoff, attempt);
            tracing::debug!(sink = %self.name, "{why}; retrying in {wait:?}");
            self.outcomes.add(Delivery::Retried, n);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, body: Vec<u8>) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        } else if let Some(basic) = &self.basic_auth {
            let password = (!basic.password.is_empty()).then_some(&basic.password);
            request = request.basic_auth(&basic.username, password);
        }
        let sent = request.send().await;
        match sent {
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
            // Without the URL: it may carry a secret in its query.
            Err(e) => Attempt::Retry(e.without_url().to_string()),
        }
    }

    fn give_up(&self, n: u64, why: &str) {
        self.outcomes.add(Delivery::Failed, n);
        tracing::warn!(sink = %self.name, events = n, "webhook delivery failed: {why}");
    }
}
