//! The operator form of `lubdub maintenance --server URL`: the API's
//! `/api/v1/maintenance` (open, list, end).

use anyhow::bail;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// What the operator form needs of the flags.
pub struct ApiArgs {
    pub length: Option<Duration>,
    pub until: Option<String>,
    pub reason: String,
    pub hosts: Vec<String>,
    pub labels: Vec<String>,
    pub networks: Vec<String>,
    pub list: bool,
    pub end: Option<u64>,
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Opens, lists or ends windows on `server`; prints the result.
pub fn run(server: &str, args: &ApiArgs) -> anyhow::Result<()> {
    let base = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let url = format!("{}/api/v1/maintenance", base.trim_end_matches('/'));
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(args.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let (url, mut response) = if args.list {
        let r = agent.get(&url).call();
        (url, r)
    } else if let Some(id) = args.end {
        let url = format!("{url}/{id}");
        let r = bearer(agent.delete(&url), &token).call();
        (url, r)
    } else {
        let mut labels = serde_json::Map::new();
        for pair in &args.labels {
            let (name, value) = lubdub::labels::parse_pair(pair)
                .map_err(|e| anyhow::anyhow!("--label {pair:?}: {e}"))?;
            labels.insert(name, Value::String(value));
        }
        let mut body = json!({
            "hosts": args.hosts,
            "labels": labels,
            "networks": args.networks,
            "reason": args.reason,
        });
        match (&args.length, &args.until) {
            (Some(length), None) => {
                body["for"] = Value::String(format!("{}ms", length.as_millis()));
            }
            (None, Some(until)) => body["until"] = Value::String(until.clone()),
            _ => bail!("give --for DURATION or --until TIME (or --list, --end ID)"),
        }
        let r = bearer(agent.post(&url), &token).send_json(&body);
        (url, r)
    };
    let response = response
        .as_mut()
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !(200..300).contains(&status) {
        let message = value["error"]
            .as_str()
            .map_or(value.to_string(), String::from);
        bail!("{url} answered {status}: {message}");
    }
    let windows = match value {
        Value::Array(list) => list,
        one => vec![one],
    };
    for w in &windows {
        let hosts: Vec<&str> = w["hosts"]
            .as_array()
            .map(|h| h.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let verb = if args.end.is_some() { "ended" } else { "until" };
        println!(
            "window {} ({}) {verb} {}: {} host(s) {}{}",
            w["id"],
            w["source"].as_str().unwrap_or("?"),
            w["until"].as_str().unwrap_or("?"),
            hosts.len(),
            hosts.join(","),
            w["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
        );
    }
    if windows.is_empty() {
        println!("no open maintenance windows");
    }
    Ok(())
}

/// `request` with the API token, if one was given.
fn bearer<B>(request: ureq::RequestBuilder<B>, token: &Option<String>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => request.header("Authorization", &format!("Bearer {t}")),
        None => request,
    }
}
