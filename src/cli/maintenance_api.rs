//! The operator form of `lubdub maintenance --server URL`: the API's
//! `/api/v1/maintenance` (open, list, end).

use super::maintenance::MaintenanceArgs;
use anyhow::{anyhow, bail};
use serde_json::{Value, json};

/// Opens, lists or ends windows on `server`; prints the result.
pub fn run(server: &str, args: &MaintenanceArgs) -> anyhow::Result<()> {
    let api = super::http::Api::new(server, args.token_file.as_deref(), args.timeout)
        .map_err(|e| anyhow!(e))?;
    let url = api.url("/api/v1/maintenance");
    let (url, mut response) = if args.list {
        let r = api.agent().get(&url).call();
        (url, r)
    } else if let Some(id) = args.end {
        let url = format!("{url}/{id}");
        let r = api.authorized(api.agent().delete(&url)).call();
        (url, r)
    } else {
        let mut labels = serde_json::Map::new();
        for pair in &args.labels {
            let (name, value) =
                lubdub::labels::parse_pair(pair).map_err(|e| anyhow!("--label {pair:?}: {e}"))?;
            labels.insert(name, Value::String(value));
        }
        let mut body = json!({
            "hosts": args.hosts,
            "labels": labels,
            "networks": args.networks,
            "reason": args.reason.as_deref().unwrap_or_default(),
        });
        match (&args.length, &args.until) {
            (Some(length), None) => {
                body["for"] = Value::String(format!("{}ms", length.as_millis()));
            }
            (None, Some(until)) => body["until"] = Value::String(until.clone()),
            _ => bail!("give --for DURATION or --until TIME (or --list, --end ID)"),
        }
        let r = api.authorized(api.agent().post(&url)).send_json(&body);
        (url, r)
    };
    let response = response
        .as_mut()
        .map_err(|e| anyhow!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    if !(200..300).contains(&status) {
        bail!(super::http::refusal(&url, status, &text));
    }
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
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
