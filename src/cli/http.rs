//! The small HTTP client of the commands that talk to a running server's
//! API from any machine (`lubdub maintenance --server`, `lubdub
//! test-alert`): the base URL, the API token from a file, a bounded agent,
//! and the one-line error for an answer that is not a success.

use lubdub::server::sinks::secret::credential_path;
use std::path::Path;
use std::time::Duration;

/// A server's API, as one command talks to it.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Api {
    /// `server` is HOST:PORT or a URL; `token_file` holds the API token
    /// (relative: in `$CREDENTIALS_DIRECTORY`); every request gives up
    /// after `timeout`.
    pub fn new(server: &str, token_file: Option<&Path>, timeout: Duration) -> Result<Api, String> {
        let base = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let token = match token_file {
            Some(file) => {
                let path = credential_path(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
            None => None,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Api {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The agent to build requests with.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// `request` with the API token, if one was given.
    pub fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => request.header("Authorization", &format!("Bearer {t}")),
            None => request,
        }
    }
}

/// The one-line error for an answer of `status` (not 2xx) from `url`: the
/// API's `error` message when the body has one, else the body.
pub fn refusal(url: &str, status: u16, body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| body.to_string());
    format!("{url} answered {status}: {message}")
}
