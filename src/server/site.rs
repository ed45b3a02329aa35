//! Who may talk to the HTTP API from a browser. Two attacks come through
//! the operator's own browser, which can reach a loopback address no one
//! else can:
//!
//! - **Cross-site requests.** Any page the operator opens can send a
//!   `POST` or `DELETE` to `http://127.0.0.1:43278` (a form, or `fetch`
//!   with `mode: "no-cors"`); the browser sends it without asking the
//!   server, and only hides the answer. So a mutating call is refused when
//!   its `Origin` is another site's (or `null`), when `Sec-Fetch-Site`
//!   says it is cross-site, or when it carries one of the content types a
//!   page may send cross-site without asking (form and plain-text
//!   bodies). Programs (`curl`, scripts, `lubdub`) send none of these.
//! - **DNS rebinding.** A page on `evil.example` makes its own name
//!   resolve to 127.0.0.1; the browser then treats the API as that page's
//!   own origin and lets it *read* every answer (the fleet, its addresses,
//!   its events) and send any request. The one thing it cannot change is
//!   the `Host` header: it names `evil.example`. So every request, reads
//!   included, must name the server by an IP address, `localhost`, or a
//!   name listed in `http_hosts`.
//!
//! Neither check needs a token: they hold with or without `api_token`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The names the server answers to besides IP addresses and `localhost`.
#[derive(Clone, Debug, Default)]
pub struct SitePolicy {
    /// Lowercase names from `http_hosts`.
    names: Vec<String>,
}

impl SitePolicy {
    /// The policy for `http_hosts`.
    pub fn new(names: &[String]) -> SitePolicy {
        SitePolicy {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// True when `host` (a `Host` header: name or address, optional port)
    /// names this server: an IP address (it cannot be rebound), `localhost`
    /// (browsers resolve it to loopback themselves), or a listed name.
    pub fn serves(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

/// The name part of a `Host` value: without the port, without the
/// brackets of an IPv6 address, without a trailing dot.
fn host_name(host: &str) -> &str {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or("", |(name, _port)| name)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Why a request was refused, as JSON like the API's other errors.
fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Content types a page may send to another site without the browser
/// asking that site first (the CORS "simple" ones).
const SIMPLE_CONTENT_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Why a mutating request looks cross-site, if it does.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        // Same origin: the page was served by this server under the name
        // the request uses. The scheme is not compared: behind a TLS proxy
        // the page is https and the request reaches us as plain http.
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        if authority.is_none() || authority != text(header::HOST.as_str()) {
            return Some(format!("cross-site request from origin {origin:?}"));
        }
    }
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("cross-site request (Sec-Fetch-Site: {site})"));
    }
    if let Some(kind) = text(header::CONTENT_TYPE.as_str()) {
        let essence = kind.split(';').next().unwrap_or("").trim();
        if SIMPLE_CONTENT_TYPES
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
        {
            return Some(format!(
                "content type {essence:?} is what cross-site forms send: send application/json or no body"
            ));
        }
    }
    None
}

/// The middleware: checks `Host` on every request and refuses cross-site
/// mutating calls.
pub async fn check(
    State(policy): State<Arc<SitePolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // A request without Host is HTTP/1.0 from a program: browsers always
    // send one.
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !policy.serves(host) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server does not answer to the name {host:?}: use its IP address, or list the name in http_hosts"
                ),
            );
        }
    }
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !reads && let Some(why) = cross_site(headers) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hosts_that_name_the_server() {
        let policy = SitePolicy::new(&["Lubdub.Example.org".into()]);
        for host in [
            "127.0.0.1:43278",
            "[::1]:43278",
            "10.1.2.3",
            "localhost:43278",
            "LOCALHOST",
            "lubdub.example.org:80",
            "lubdub.example.org.",
        ] {
            assert!(policy.serves(host), "{host}");
        }
        for host in [
            "evil.example:43278",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "",
            "[::1",
        ] {
            assert!(!policy.serves(host), "{host}");
        }
    }

    #[test]
    fn cross_site_signs() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let host = ("host", "127.0.0.1:43278");
        for ok in [
            headers(&[host]),
            headers(&[host, ("origin", "http://127.0.0.1:43278")]),
            headers(&[host, ("content-type", "application/json")]),
            headers(&[host, ("sec-fetch-site", "same-origin")]),
        ] {
            assert_eq!(cross_site(&ok), None, "{ok:?}");
        }
        for bad in [
            headers(&[host, ("origin", "https://evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[host, ("origin", "http://127.0.0.1:8080")]),
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[host, ("content-type", "text/plain;charset=UTF-8")]),
            headers(&[host, ("content-type", "application/x-www-form-urlencoded")]),
        ] {
            assert!(cross_site(&bad).is_some(), "{bad:?}");
        }
    }
}
