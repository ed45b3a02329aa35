//! `/metrics` against the real tools: `promtool check metrics` reads the
//! classic format, and a real Prometheus scrapes the live server (it
//! negotiates OpenMetrics) and answers queries with the right values.
//! See: issue 3.

use crate::util::{Server, client, fleet, free_port, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn metrics_negotiate_the_format_and_the_classic_one_passes_promtool() {
    let server = Server::start(&["--timeout", "1s"]);
    let _a = client(&[server.udp], "a", &[]);
    assert!(wait_until(WAIT, || server.state_of("a").as_deref() == Some("up")));

    let om = server.request(
        "GET",
        "/metrics",
        None,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(om.status, 200);
    let content_type = om.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om.body.contains("# TYPE lubdub_beats counter"));

    let classic = server.request("GET", "/metrics", None, None);
    assert_eq!(classic.status, 200);
    let content_type = classic.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(!classic.body.contains("# EOF"));
    assert!(classic.body.contains("# TYPE lubdub_beats_total counter"));
    for sample in [
        "lubdub_hosts{state=\"up\"} 1",
        "lubdub_hosts{state=\"paused\"} 0",
        "lubdub_events_total{kind=\"joined\"} 1",
        "lubdub_detector_lag_seconds_count 0",
    ] {
        assert!(
            classic.body.lines().any(|l| l == sample),
            "{sample} in {}",
            classic.body
        );
    }
    for name in [
        "lubdub_process_resident_memory_bytes",
        "lubdub_process_cpu_seconds_total",
        "lubdub_process_open_fds",
        "lubdub_process_start_time_seconds",
    ] {
        let value = server.metric(name).unwrap_or_else(|| panic!("{name}"));
        // CPU time counts in 10 ms ticks: a fresh, idle server may show 0.
        assert!(
            value > 0.0 || name.contains("cpu") && value == 0.0,
            "{name} = {value}"
        );
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(classic.body.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server on loopback, killed on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every 200 ms. Prometheus cannot
    /// listen on port 0, so it gets a port just found free, and another if
    /// someone took that one in between.
    pub fn start(dir: &Path, target: &str) -> Prometheus {
        Self::start_with_rules(dir, target, &[])
    }

    /// [`Prometheus::start`], also evaluating the rule files `rules` every
    /// 200 ms.
    pub fn start_with_rules(dir: &Path, target: &str, rules: &[&Path]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let mut rule_files: String = rules
            .iter()
            .map(|r| format!("  - '{}'\n", r.display()))
            .collect();
        if !rule_files.is_empty() {
            rule_files.insert_str(0, "rule_files:\n");
        }
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 200ms\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: lubdub\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("prometheus is installed by scripts/test");
            let mut prometheus = Prometheus { child, port };
            let ready = wait_until(Duration::from_secs(60), || {
                prometheus.exited()
                    || ureq::get(&prometheus.url("/-/ready"))
                        .call()
                        .is_ok_and(|r| r.status() == 200)
            });
            if ready && !prometheus.exited() {
                return prometheus;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                log.contains("address already in use"),
                "prometheus did not start: {log}"
            );
        }
        panic!("no free port for prometheus after 5 attempts");
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The value of an instant query that returns one series, if it does.
    fn query(&self, promql: &str) -> Option<f64> {
        let mut response = ureq::get(&self.url("/api/v1/query"))
            .query("query", promql)
            .call()
            .ok()?;
        let body: serde_json::Value = response.body_mut().read_json().ok()?;
        let result = body["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` evaluates to `want`.
    fn wait_for(&self, promql: &str, want: f64) -> bool {
        wait_until(Duration::from_secs(30), || self.query(promql) == Some(want))
    }
}

#[test]
fn real_prometheus_scrapes_the_live_server() {
    let server = Server::start(&["--timeout", "1s"]);
    let mut clients = fleet(&server, &["p-1", "p-2", "p-3"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let prometheus = Prometheus::start(tmp.path(), &server.http.to_string());

    assert!(
        prometheus.wait_for("up{job=\"lubdub\"}", 1.0),
        "target up: {:?}",
        prometheus.query("up")
    );
    assert!(prometheus.wait_for("lubdub_hosts{state=\"up\"}", 3.0));
    assert!(prometheus.wait_for("sum(lubdub_hosts)", 3.0));
    assert!(prometheus.wait_for("lubdub_events_total{kind=\"joined\"}", 3.0));

    clients[0].kill();
    assert!(server.wait_event("p-1", "down", WAIT));
    assert!(prometheus.wait_for("lubdub_hosts{state=\"down\"}", 1.0));
    assert!(prometheus.wait_for("lubdub_hosts{state=\"up\"}", 2.0));
    assert!(prometheus.wait_for("lubdub_events_total{kind=\"down\"}", 1.0));
    assert!(
        prometheus.wait_for("lubdub_detector_lag_seconds_count", 2.0),
        "late + down"
    );
    assert!(prometheus.wait_for("lubdub_packets_dropped_total{reason=\"malformed\"}", 0.0));
    // Counters grow and Prometheus sees them grow.
    assert!(wait_until(Duration::from_secs(30), || {
        prometheus
            .query("increase(lubdub_beats_total[2s])")
            .is_some_and(|v| v > 0.0)
    }));
    assert!(wait_until(Duration::from_secs(30), || prometheus
        .query("lubdub_process_resident_memory_bytes")
        .is_some_and(|v| v > 1e6)));
    // One series per counter: the exposition's names line up.
    assert!(prometheus.wait_for("count(lubdub_beats_total)", 1.0));
}
