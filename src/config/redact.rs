//! Secrets out of what is printed: `--print-config` and log lines show
//! that a secret is set, never its value.

use super::ServerConfig;

/// What a secret is printed as.
pub const REDACTED: &str = "redacted";

/// Header names whose values are credentials (compared lowercase, by
/// substring for the last group: `X-Api-Key`, `X-Auth-Token`, …).
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
const SECRET_HEADER_PARTS: [&str; 5] = ["token", "key", "secret", "auth", "pass"];

/// `url` with the password of its `user:password@` part replaced by
/// [`REDACTED`]; text that does not parse as a URL is shown as is only
/// when it holds no `@` (it cannot carry credentials then).
pub fn url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL with a password has a host.
                let _ = parsed.set_password(Some(REDACTED));
            }
            parsed.to_string()
        }
        Err(_) if url.contains('@') => REDACTED.to_string(),
        Err(_) => url.to_string(),
    }
}

/// True when a header of this name carries a credential.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_HEADER_PARTS.iter().any(|p| name.contains(p))
}

impl ServerConfig {
    /// This config with every secret replaced by [`REDACTED`]: the API
    /// token, webhook bearer tokens, basic-auth passwords and credential
    /// headers, and passwords inside sink URLs. For `--print-config`,
    /// whose output ends up in tickets and chat.
    pub fn redacted(&self) -> ServerConfig {
        let mut config = self.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some(REDACTED.to_string());
            }
        };
        hide(&mut config.api_token);
        for sink in &mut config.sinks.webhook {
            // url, token, bearer_token and basic_auth.password are
            // `Secret`s: they print as <redacted> themselves.
            for (name, value) in &mut sink.headers {
                if is_secret_header(name) {
                    *value = REDACTED.to_string();
                }
            }
        }
        for sink in &mut config.sinks.alertmanager {
            for u in &mut sink.urls {
                *u = url(u);
            }
            if let Some(external) = &mut sink.external_url {
                *external = url(external);
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(
            url("https://am:hunter2@alerts.example:9093/x"),
            "https://am:redacted@alerts.example:9093/x"
        );
        assert_eq!(url("http://am@h/"), "http://am@h/");
        assert_eq!(url("http://h:9093"), "http://h:9093/");
        assert_eq!(url("not a url with user:pw@host"), REDACTED);
    }

    #[test]
    fn credential_headers_are_recognised() {
        for name in ["Authorization", "X-Api-Key", "X-Auth-Token", "Cookie"] {
            assert!(is_secret_header(name), "{name}");
        }
        assert!(!is_secret_header("Content-Type"));
        assert!(!is_secret_header("X-Team"));
    }
}
