//! The monitoring mixin in dist/prometheus/: the rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`), every alert has its
//! annotations, a unit test that fires and one that does not, and a runbook
//! section; every metric they name is one the server exports; and every
//! query of the Grafana dashboard, and every recording rule, returns data
//! from a real Prometheus scraping a real lubdub.

use crate::metrics::Prometheus;
use crate::util::{Recorder, Server, client, wait_until, write_file};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn mixin(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist/prometheus")
        .join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(mixin(""))
        .output()
        .expect("promtool is installed by scripts/test");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values of `key: VALUE` lines (after `- `), in order.
fn values_of<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}

#[test]
fn rules_pass_promtool_and_their_unit_tests_cover_every_alert() {
    promtool(&["check", "rules", "lubdub-rules.yml"]);
    promtool(&["test", "rules", "lubdub-rules.test.yml"]);

    let rules = read(&mixin("lubdub-rules.yml"));
    let tests = read(&mixin("lubdub-rules.test.yml"));
    let runbook = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RUNBOOK.md"));
    let alerts = values_of(&rules, "alert:");
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        // Each alert's own block: from its line to the next rule.
        let block: String = rules
            .split("- alert: ")
            .find(|b| b.starts_with(alert))
            .expect("block")
            .split("- record: ")
            .next()
            .expect("block")
            .to_string();
        for key in ["summary:", "description:", "runbook_url:"] {
            assert!(block.contains(key), "{alert} has no {key}");
        }
        let anchor = format!("docs/RUNBOOK.md#{}", alert.to_lowercase());
        assert!(block.contains(&anchor), "{alert}: runbook_url {anchor}");
        assert!(
            runbook.contains(&format!("## {alert}\n")),
            "docs/RUNBOOK.md has no section {alert}"
        );
        // A unit test where it fires and one where it does not.
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no test where it stays silent"
        );
        assert!(
            cases.iter().any(|c| c.contains("- exp_labels:")),
            "{alert}: no test where it fires"
        );
    }
}

/// A server with a webhook sink (so that the sink metrics exist) that
/// checkpoints often (so that the store metrics move), and its recorder.
fn server_with_a_sink(dir: &Path) -> (Server, Recorder) {
    let hook = Recorder::start(&[]);
    let config = write_file(
        dir,
        "sinks.toml",
        &format!(
            "[[server.sinks.webhook]]\nname = \"hook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    let server = Server::start(&[
        "--timeout",
        "1s",
        "--checkpoint-interval",
        "200ms",
        "--config",
        &config,
    ]);
    (server, hook)
}

#[test]
fn every_metric_the_mixin_names_is_exported_by_the_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, _hook) = server_with_a_sink(tmp.path());
    let exported = server.get_text("/metrics");
    let families: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 10, "{exported}");
    for file in ["lubdub-rules.yml", "lubdub-dashboard.json"] {
        let text = read(&mixin(file));
        let mut named: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("lubdub_") && !w.contains(':'))
            .collect();
        named.sort_unstable();
        named.dedup();
        assert!(named.len() >= 8, "{file}: {named:?}");
        for name in named {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                families.contains(&name) || families.contains(&family),
                "{file} names {name}, which /metrics does not export"
            );
        }
    }
}

/// Every `expr` of the dashboard's panels, with the panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&mixin("lubdub-dashboard.json"))).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title").to_string();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            queries.push((title.clone(), expr.to_string()));
        }
    }
    assert!(panels.len() >= 10, "{} panels", panels.len());
    queries
}

/// Whether `promql` returns at least one series with a finite value.
fn returns_data(prometheus: &Prometheus, promql: &str) -> bool {
    let Ok(mut response) = ureq::get(&prometheus.url("/api/v1/query"))
        .query("query", promql)
        .call()
    else {
        return false;
    };
    let Ok(body) = response.body_mut().read_json::<serde_json::Value>() else {
        return false;
    };
    body["data"]["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        })
    })
}

#[test]
fn dashboard_queries_and_recording_rules_return_data_from_real_prometheus() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, hook) = server_with_a_sink(tmp.path());
    let mut clients: Vec<_> = ["d-1", "d-2", "d-3"]
        .iter()
        .map(|id| client(&[server.udp], id, &[]))
        .collect();
    assert!(wait_until(
        WAIT,
        || server.get_json("/api/v1/summary")["up"] == 3
    ));
    let prometheus = Prometheus::start_with_rules(
        tmp.path(),
        &server.http.to_string(),
        &[&mixin("lubdub-rules.yml")],
    );
    assert!(wait_until(Duration::from_secs(30), || returns_data(
        &prometheus,
        "lubdub_beats_total"
    )));
    // A host goes late and down while Prometheus watches: the detector lag
    // histogram moves within the queries' rate windows.
    clients[0].kill();
    assert!(server.wait_event("d-1", "down", WAIT));
    assert!(wait_until(WAIT, || !hook.requests().is_empty()));
    let mut queries = dashboard_queries();
    for record in values_of(&read(&mixin("lubdub-rules.yml")), "record:") {
        queries.push((format!("recording rule {record}"), record.to_string()));
    }
    for (what, expr) in &queries {
        // As Grafana would send it with every server selected.
        let promql = expr
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        assert!(
            wait_until(Duration::from_secs(60), || returns_data(
                &prometheus,
                &promql
            )),
            "{what}: {promql} returns no data"
        );
    }
}
