//! The e-mail sink: one plain-text message per event (or digest) over SMTP
//! (lettre), with STARTTLS, implicit TLS or none, optional login, several
//! recipients, templated subject and body, and retries with backoff like
//! the webhook's.

use super::config::{check_common, check_timeout};
use super::secret::resolve;
use super::template::{self, Templates};
use super::webhook::sample_kinds;
use super::{Delivery, Outcomes, Retry, SinkEvent, report_tests};
use crate::config::Error as ConfigError;
pub use crate::config::email::{EmailConfig, Tls};
use crate::config::invalid;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;

/// The default subject template.
pub const DEFAULT_SUBJECT: &str = "[lubdub] {{ summary }}";
/// The default body template: the summary and the event's details.
pub const DEFAULT_BODY: &str = "{{ text }}\n";

/// A checked e-mail sink, ready to send.
pub struct Email {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    templates: Templates,
    external_url: Option<String>,
    retry: Retry,
    outcomes: Option<Outcomes>,
}

impl Email {
    /// Checks `config` (the config load's validation) and builds the sink;
    /// errors name the field and the sink.
    pub fn new(name: &str, config: &EmailConfig) -> Result<Self, ConfigError> {
        let bad = |field, reason: String| invalid(field, format!("sink {name:?}: {reason}"));
        check_common("email", name, &config.events, &config.hosts, config.queue)?;
        if config.server.is_empty() {
            return Err(bad("sinks.email.server", "required".into()));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| bad("sinks.email.from", format!("{:?}: {e}", config.from)))?;
        if config.to.is_empty() {
            return Err(bad("sinks.email.to", "name at least one recipient".into()));
        }
        let to = config
            .to
            .iter()
            .map(|t| {
                t.parse()
                    .map_err(|e| bad("sinks.email.to", format!("{t:?}: {e}")))
            })
            .collect::<Result<Vec<Mailbox>, _>>()?;
        check_timeout("sinks.email.timeout", name, config.timeout)?;
        let password = resolve(
            "sinks.email.password",
            name,
            config.password.as_ref(),
            config.password_file.as_deref(),
        )?;
        if password.is_some() && config.username.is_none() {
            return Err(bad(
                "sinks.email.username",
                "a password needs a username".into(),
            ));
        }
        let subject = config.subject.as_deref().unwrap_or(DEFAULT_SUBJECT);
        let body = config.body.as_deref().unwrap_or(DEFAULT_BODY);
        let templates = Templates::compile(&[("subject", subject), ("body", body)])
            .and_then(|t| {
                t.check(
                    &sample_kinds(&config.events, config.group_wait, config.repeat),
                    &[],
                )?;
                Ok(t)
            })
            .map_err(|e| bad("sinks.email.body", e))?;
        let port = config.port.unwrap_or(match config.tls {
            Tls::Starttls => 587,
            Tls::Tls => 465,
            Tls::None => 25,
        });
        let builder = match config.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server),
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.server)
                .map_err(|e| bad("sinks.email.server", e.to_string()))?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.server)
                .map_err(|e| bad("sinks.email.server", e.to_string()))?,
        };
        let mut builder = builder.port(port).timeout(Some(config.timeout));
        if let Some(user) = &config.username {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        Ok(Self {
            name: name.to_string(),
            transport: builder.build(),
            from,
            to,
            templates,
            external_url: config.external_url.clone(),
            retry: Retry {
                retries: config.retries,
                backoff: config.backoff,
                max_backoff: config.max_backoff,
            },
            outcomes: None,
        })
    }

    /// The sink, counting into `outcomes`.
    pub fn with_outcomes(mut self, outcomes: Outcomes) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// Sends a message for each event from `queue` until it closes.
    pub async fn run(self, mut queue: mpsc::Receiver<SinkEvent>) {
        while let Some(event) = queue.recv().await {
            let result = self.deliver(&event).await;
            report_tests(std::slice::from_ref(&event), &result);
        }
    }

    fn message(&self, event: &SinkEvent) -> Result<Message, String> {
        let context = template::context(event, self.external_url.as_deref());
        let subject = self.templates.render("subject", &context)?;
        let body = self.templates.render("body", &context)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            // One line: a template's newline must not start a header.
            .subject(subject.replace(['\r', '\n'], " "))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(body).map_err(|e| e.to_string())
    }

    async fn deliver(&self, event: &SinkEvent) -> Result<(), String> {
        let outcomes = self.outcomes.as_ref().expect("outcomes set before run");
        let message = match self.message(event) {
            Ok(message) => message,
            Err(why) => {
                self.give_up(outcomes, &why);
                return Err(why);
            }
        };
        let mut attempt = 0;
        loop {
            let why = match self.transport.send(message.clone()).await {
                Ok(_) => {
                    outcomes.add(Delivery::Sent, 1);
                    return Ok(());
                }
                Err(e) if e.is_permanent() => {
                    let why = format!("refused: {e}");
                    self.give_up(outcomes, &why);
                    return Err(why);
                }
                Err(e) => e.to_string(),
            };
            if !self
                .retry
                .wait(&self.name, &why, attempt, outcomes, 1)
                .await
            {
                self.give_up(outcomes, &why);
                return Err(why);
            }
            attempt += 1;
        }
    }

    fn give_up(&self, outcomes: &Outcomes, why: &str) {
        outcomes.fail(1, why);
        tracing::warn!(sink = %self.name, "e-mail delivery failed: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_settings_naming_the_field() {
        let good = EmailConfig {
            server: "mail.example.com".into(),
            from: "lubdub <lubdub@example.com>".into(),
            to: vec!["ops@example.com".into(), "oncall@example.com".into()],
            ..EmailConfig::default()
        };
        Email::new("m", &good).map(|_| ()).expect("valid");
        let cases = [
            (
                EmailConfig {
                    to: vec![],
                    ..good.clone()
                },
                "sinks.email.to",
            ),
            (
                EmailConfig {
                    from: "not an address".into(),
                    ..good.clone()
                },
                "sinks.email.from",
            ),
            (
                EmailConfig {
                    subject: Some("{{ nope }}".into()),
                    ..good.clone()
                },
                "sinks.email.body",
            ),
            (
                EmailConfig {
                    password: Some("p".into()),
                    ..good.clone()
                },
                "sinks.email.username",
            ),
        ];
        for (config, field) in cases {
            let err = Email::new("m", &config)
                .map(|_| ())
                .expect_err(field)
                .to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn default_message_is_plain_text_with_the_details() {
        let config = EmailConfig {
            server: "mail.example.com".into(),
            from: "lubdub@example.com".into(),
            to: vec!["ops@example.com".into()],
            external_url: Some("https://lubdub.example.com/".into()),
            ..EmailConfig::default()
        };
        let email = Email::new("m", &config).expect("valid");
        let message = email.message(&template::sample("down")).expect("message");
        let text = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(
            text.contains("Subject: [lubdub] host web-1 is down: silent for 31.2s"),
            "{text}"
        );
        assert!(text.contains("address: 192.0.2.10:51234"), "{text}");
        assert!(
            text.contains("dashboard: https://lubdub.example.com/#host=web-1"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/plain"), "{text}");
    }
}
