//! `lubdub status`: the fleet as the server's HTTP API sees it, as a table
//! for people (coloured on a terminal, plain when piped), as JSON for
//! scripts, or as a Nagios-plugin check for existing monitoring.
//!
//! It reads `GET /api/v1/hosts` and filters by state and label on this
//! side, so it works against any server that has that endpoint.

use lubdub::config::ServerConfig;
use lubdub::duration;

use anyhow::Context;
use clap::Args;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Flags of `lubdub status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The server's HTTP API: HOST:PORT, or a URL such as http://mon:43278/.
    #[arg(long, visible_alias = "http", value_name = "ADDR",
          default_value_t = ServerConfig::default().http.to_string())]
    server: String,
    /// Print the hosts as JSON (the API's objects, filtered) instead.
    #[arg(long)]
    json: bool,
    /// Only hosts in these states (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(STATES))]
    state: Vec<String>,
    /// Only hosts with this label, NAME=VALUE (repeatable: all must match),
    /// as the API's `?label=`.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Act as a Nagios plugin: one line, exit 0 all up, 1 some late, 2 some
    /// down, 3 server unreachable.
    #[arg(long, conflicts_with = "json")]
    check: bool,
    /// Give up on the server after this long.
    #[arg(long, value_parser = duration::parse, default_value = "10s")]
    timeout: Duration,
}

/// Runs a blocking HTTP request, so without the runtime. With `--check`,
/// the exit code is the check's verdict.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let result = fetch(&args.server, args.timeout)
        .map(|h| filter_labels(filter(h, &args.state), &args.labels));
    // Write errors (a closed pipe, `| head`) are not worth a panic.
    let mut out = anstream::stdout();
    if args.check {
        let (verdict, line) = match &result {
            Ok(hosts) => check(hosts),
            Err(e) => (CheckStatus::Unknown, check_unknown(e)),
        };
        let _ = writeln!(out, "{line}");
        return Ok(ExitCode::from(verdict as u8));
    }
    // The message already holds the cause; as a chain it would repeat it.
    let hosts = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = if args.json {
        serde_json::to_string_pretty(&hosts).context("printing JSON")? + "\n"
    } else {
        let groups = fetch_list(&args.server, "groups", args.timeout).unwrap_or_default();
        table(&hosts, SystemTime::now()) + &groups_table(&groups)
    };
    let _ = out.write_all(text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// The host states a server reports, in the order the check summarises.
pub const STATES: &[&str] = &[
    "up",
    "late",
    "down",
    "left",
    "paused",
    "maintenance",
    "unreachable",
];

/// Why the fleet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HTTP answer: connection refused, timeout, DNS failure.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body (the API's error message).
        body: String,
    },
    /// The answer is not the JSON array of hosts.
    #[error("{url} did not answer a JSON array of hosts: {reason}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The URL of the host list on `server`: `HOST:PORT`, or a base URL such
/// as `http://monitor:43278/` (for a server behind a proxy path).
pub fn hosts_url(server: &str) -> String {
    let base = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    format!("{}/api/v1/hosts", base.trim_end_matches('/'))
}

/// Fetches the host list, giving up after `timeout` in all.
pub fn fetch(server: &str, timeout: Duration) -> Result<Vec<serde_json::Value>, Error> {
    fetch_list(server, "hosts", timeout)
}

/// One line per group (`lubdub status` under its table): state, members
/// up of counted, quorum, missing members. Empty without groups.
pub fn groups_table(groups: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for g in groups {
        let n = |key: &str| g.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        let state = field(g, "state");
        let style = state_style(state);
        out.push_str(&format!(
            "group {}: {style}{state}{style:#}, {} of {} up, need {}",
            printable(field(g, "name")),
            n("up"),
            n("total"),
            n("need")
        ));
        let missing: Vec<String> = g
            .get("missing")
            .and_then(|m| m.as_array())
            .map(|m| m.iter().filter_map(|v| v.as_str()).map(printable).collect())
            .unwrap_or_default();
        if !missing.is_empty() {
            out.push_str(&format!("; missing {}", missing.join(", ")));
        }
        out.push('\n');
    }
    out
}

/// Fetches the JSON array at `/api/v1/{what}`, giving up after `timeout`.
fn fetch_list(
    server: &str,
    what: &str,
    timeout: Duration,
) -> Result<Vec<serde_json::Value>, Error> {
    let url = hosts_url(server).replace("/api/v1/hosts", &format!("/api/v1/{what}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Error statuses are read here, to show the API's own message.
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .header("Accept", "application/json")
        .call()
        .map_err(|source| Error::Unreachable {
            url: url.clone(),
            source: Box::new(source),
        })?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|source| Error::Unreachable {
            url: url.clone(),
            source: Box::new(source),
        })?;
    if status != 200 {
        let body: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(Error::Status { url, status, body });
    }
    let hosts: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadAnswer {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    match hosts {
        serde_json::Value::Array(hosts) => Ok(hosts),
        _ => Err(Error::BadAnswer {
            url,
            reason: "not an array".into(),
        }),
    }
}

fn field<'a>(host: &'a serde_json::Value, key: &str) -> &'a str {
    host.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// A host's text made safe to show: a host id comes from the network (or
/// from a store written before the decoder refused such ids), and control
/// characters (an escape sequence that clears the terminal, a newline that
/// forges a check line), bidirectional overrides (U+202E shows `1-bew` as
/// `web-1`), invisible characters, and the `|` that starts Nagios
/// performance data must not reach the operator's screen as they are.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if lubdub::protocol::forbidden_in_host_id(c) || c == '|' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Keeps the hosts whose state is one of `states` (all when empty).
pub fn filter(hosts: Vec<serde_json::Value>, states: &[String]) -> Vec<serde_json::Value> {
    if states.is_empty() {
        return hosts;
    }
    hosts
        .into_iter()
        .filter(|h| states.iter().any(|s| s == field(h, "state")))
        .collect()
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    lubdub::labels::parse_checked_pair(text).map_err(|e| e.to_string())
}

/// Keeps the hosts that carry every label of `labels` (all when empty).
pub fn filter_labels(
    hosts: Vec<serde_json::Value>,
    labels: &[(String, String)],
) -> Vec<serde_json::Value> {
    hosts
        .into_iter()
        .filter(|h| {
            labels
                .iter()
                .all(|(name, value)| h["labels"][name.as_str()].as_str() == Some(value.as_str()))
        })
        .collect()
}

/// Nagios plugin result: the exit code is the `u8` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// Every host is up (or left cleanly, or paused).
    Ok = 0,
    /// Some host is late, none down.
    Warning = 1,
    /// Some host is down.
    Critical = 2,
    /// The server could not be asked.
    Unknown = 3,
}

impl CheckStatus {
    /// The word Nagios shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "OK",
            CheckStatus::Warning => "WARNING",
            CheckStatus::Critical => "CRITICAL",
            CheckStatus::Unknown => "UNKNOWN",
        }
    }
}

/// How many of the hosts (at most) a check line names per state.
const NAMED_IN_CHECK: usize = 5;

/// The check's verdict and its one-line message, in the plugin format:
/// `LUBDUB CRITICAL - 1 down (db-1), 2 late (a, b); 9 hosts | up=6 late=2 …`
/// (performance data after the `|`).
pub fn check(hosts: &[serde_json::Value]) -> (CheckStatus, String) {
    let count = |state: &str| hosts.iter().filter(|h| field(h, "state") == state).count();
    let named = |state: &str| {
        let ids: Vec<String> = hosts
            .iter()
            .filter(|h| field(h, "state") == state)
            .map(|h| printable(field(h, "id")))
            .collect();
        let mut text = ids
            .iter()
            .take(NAMED_IN_CHECK)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if ids.len() > NAMED_IN_CHECK {
            text.push_str(", …");
        }
        format!("{} {state} ({text})", ids.len())
    };
    let (down, late) = (count("down"), count("late"));
    let status = if down > 0 {
        CheckStatus::Critical
    } else if late > 0 {
        CheckStatus::Warning
    } else {
        CheckStatus::Ok
    };
    let mut problems = Vec::new();
    if down > 0 {
        problems.push(named("down"));
    }
    if late > 0 {
        problems.push(named("late"));
    }
    let total = format!(
        "{} host{}",
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" }
    );
    let summary = if problems.is_empty() {
        format!("{total}, none late or down")
    } else {
        format!("{}; {total}", problems.join(", "))
    };
    let perf: Vec<String> = STATES
        .iter()
        .map(|state| format!("{state}={}", count(state)))
        .collect();
    let line = format!(
        "LUBDUB {} - {summary} | {}",
        status.as_str(),
        perf.join(" ")
    );
    (status, line)
}

/// The check line when the server cannot be asked.
pub fn check_unknown(error: &Error) -> String {
    let error = error.to_string().replace('\n', " ");
    format!("LUBDUB UNKNOWN - {error}")
}

fn state_style(state: &str) -> anstyle::Style {
    use anstyle::{AnsiColor, Style};
    match state {
        "up" => Style::new().fg_color(Some(AnsiColor::Green.into())),
        "late" => Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
        "down" => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        "paused" => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
        "unreachable" => Style::new().fg_color(Some(AnsiColor::Magenta.into())),
        "maintenance" => Style::new().fg_color(Some(AnsiColor::Blue.into())),
        _ => Style::new().dimmed(),
    }
}

/// Compact age for a table cell: `850ms`, `12s`, `3m12s`, `2h5m`, `3d4h`.
pub fn age(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// The table, with ANSI styles (strip them for a pipe: `anstream` does).
/// `now` dates the `FOR` column (time in the current state).
pub fn table(hosts: &[serde_json::Value], now: SystemTime) -> String {
    let header = ["HOST", "STATE", "FOR", "SILENT", "ADDR", "BEATS", "LOSSES"];
    let rows: Vec<[String; 7]> = hosts
        .iter()
        .map(|h| {
            let state_for = humantime::parse_rfc3339_weak(field(h, "since"))
                .ok()
                .map(|since| age(now.duration_since(since).unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            let silent = h
                .get("silent_seconds")
                .and_then(|v| v.as_f64())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| age(Duration::from_secs_f64(s)))
                .unwrap_or_else(|| "-".into());
            let number = |key: &str| {
                h.get(key)
                    .and_then(|v| v.as_u64())
                    .map_or_else(|| "-".into(), |n| n.to_string())
            };
            [
                printable(field(h, "id")),
                printable(field(h, "state")),
                state_for,
                silent,
                printable(field(h, "addr")),
                number("beats"),
                number("losses"),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Numbers align right, text left, as `ps` and `kubectl get` do.
    let right = [false, false, true, true, false, true, true];
    let mut out = String::new();
    let bold = anstyle::Style::new().bold();
    let cells = |out: &mut String, row: &[String], style: &dyn Fn(usize) -> anstyle::Style| {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let style = style(i);
            if right[i] {
                out.push_str(&" ".repeat(pad));
            }
            let _ = write!(out, "{style}{cell}{style:#}");
            if !right[i] && i != last {
                out.push_str(&" ".repeat(pad));
            }
            if i != last {
                out.push_str("  ");
            }
        }
        out.push('\n');
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    cells(&mut out, &header, &|_| bold);
    for row in &rows {
        let state = state_style(&row[1]);
        cells(&mut out, row, &|i| {
            if i == 1 { state } else { anstyle::Style::new() }
        });
    }
    let counts: Vec<String> = STATES
        .iter()
        .filter_map(|state| {
            let n = rows.iter().filter(|r| r[1] == *state).count();
            (n > 0).then(|| {
                let style = state_style(state);
                format!("{style}{n} {state}{style:#}")
            })
        })
        .collect();
    let _ = write!(
        out,
        "{} host{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    if !counts.is_empty() {
        let _ = write!(out, ": {}", counts.join(", "));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(id: &str, state: &str) -> serde_json::Value {
        json!({"id": id, "state": state, "addr": "127.0.0.1:1",
               "since": "2026-01-01T00:00:00Z", "silent_seconds": 0.25,
               "beats": 12, "losses": 0})
    }

    #[test]
    fn urls() {
        assert_eq!(
            hosts_url("127.0.0.1:43278"),
            "http://127.0.0.1:43278/api/v1/hosts"
        );
        assert_eq!(
            hosts_url("https://mon.example/lubdub/"),
            "https://mon.example/lubdub/api/v1/hosts"
        );
    }

    #[test]
    fn check_verdicts() {
        let fleet = |states: &[&str]| -> Vec<serde_json::Value> {
            states
                .iter()
                .enumerate()
                .map(|(i, s)| host(&format!("h{i}"), s))
                .collect()
        };
        let (status, line) = check(&fleet(&["up", "left", "paused"]));
        assert_eq!(status, CheckStatus::Ok);
        assert_eq!(
            line,
            "LUBDUB OK - 3 hosts, none late or down | up=1 late=0 down=0 left=1 paused=1 maintenance=0 unreachable=0"
        );
        assert_eq!(check(&fleet(&["up", "late"])).0, CheckStatus::Warning);
        let (status, line) = check(&fleet(&["late", "down", "up"]));
        assert_eq!(status, CheckStatus::Critical);
        assert!(
            line.starts_with("LUBDUB CRITICAL - 1 down (h1), 1 late (h0); 3 hosts | "),
            "{line}"
        );
        let (_, line) = check(&fleet(&["down"; 7]));
        assert!(line.contains("7 down (h0, h1, h2, h3, h4, …)"), "{line}");
        assert_eq!(check(&[]).0, CheckStatus::Ok);
    }

    #[test]
    fn table_aligns_and_counts() {
        let now = humantime::parse_rfc3339("2026-01-01T00:05:00Z").expect("time");
        let text = table(&[host("a", "up"), host("longer-name", "down")], now);
        let plain = anstream::adapter::strip_str(&text).to_string();
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 4, "{plain}");
        assert!(lines[0].starts_with("HOST         STATE"), "{plain}");
        assert!(
            lines[1].starts_with("a            up     5m0s   250ms"),
            "{plain}"
        );
        assert_eq!(lines[3], "2 hosts: 1 up, 1 down");
        assert!(text.contains("\x1b["), "styled before stripping");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 120)), "3h2m");
    }

    #[test]
    fn hostile_host_ids_are_escaped() {
        let evil = host("x\x1b[2J|y\nLUBDUB OK", "down");
        let (_, line) = check(std::slice::from_ref(&evil));
        assert!(
            line.starts_with("LUBDUB CRITICAL - 1 down (x\\u{1b}[2J\\u{7c}y\\u{a}LUBDUB OK); "),
            "{line}"
        );
        assert_eq!(line.matches('|').count(), 1, "{line}");
        let text = table(&[evil], SystemTime::now());
        assert!(
            !text.contains("\x1b[2J") && text.lines().count() == 3,
            "{text:?}"
        );
        // Shown as `web-1` by a terminal, were the override not escaped.
        let spoof = host("\u{202e}1-bew\u{200b}", "down");
        let text = table(std::slice::from_ref(&spoof), SystemTime::now());
        assert!(text.contains("\\u{202e}1-bew\\u{200b}"), "{text:?}");
        let (_, line) = check(&[spoof]);
        assert!(!line.contains('\u{202e}'), "{line}");
    }
}
