//! Alert sinks end to end: a real Alertmanager, exec hooks, webhooks, a
//! hanging webhook, mass silence, and two servers for high availability.
//! See: issue 6.

use crate::util::{
    Alertmanager, Proc, Recorded, Recorder, Server, client, closed_port, wait_until, write_file,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);
/// How soon after `recovered` an alert must be gone from Alertmanager:
/// about a second, with room for a loaded machine, and well below every
/// lease used with it, so only a resolve can make it.
const RESOLVED_WITHIN: Duration = Duration::from_secs(2);

/// Starts a server with a 1 s timeout and `sinks` as its config file.
fn server_with(sinks: &str) -> Server {
    Server::with_config(sinks, &["--timeout", "1s"])
}

/// An exec hook that writes its `LUBDUB_*` environment and its stdin to
/// `DIR/<event>-<host>-<pid>.txt` (atomically) and prints a line.
fn hook_script(dir: &Path) -> String {
    let script = write_file(
        dir,
        "hook.sh",
        r#"PATH=/usr/bin:/bin
out="$1/$LUBDUB_EVENT-${LUBDUB_HOST:-fleet}-$$"
{ env | grep '^LUBDUB_' | sort; echo '--- stdin'; cat; } > "$out.tmp"
mv "$out.tmp" "$out.txt"
echo "hook ran for ${LUBDUB_HOST:-fleet}"
"#,
    );
    let out = dir.join("hook-out");
    std::fs::create_dir(&out).expect("mkdir");
    format!(
        "command = [\"/bin/sh\", \"{script}\", \"{}\"]",
        out.display()
    )
}

/// What the hook wrote: (file name, environment, stdin JSON).
fn hook_runs(dir: &Path) -> Vec<(String, BTreeMap<String, String>, Value)> {
    let mut runs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("hook-out")) else {
        return runs;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".txt") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read hook output");
        let (env, stdin) = text.split_once("--- stdin\n").expect("marker");
        let env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        runs.push((name, env, serde_json::from_str(stdin).expect("stdin json")));
    }
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    runs
}

/// An Alertmanager sink for `am`, renewing every 300 ms with `lease`.
fn alertmanager_sink(am: &Alertmanager, lease: &str) -> String {
    format!(
        r#"
[[server.sinks.alertmanager]]
urls = ["{}"]
resend = "300ms"
lease = "{lease}"
"#,
        am.url
    )
}

/// Two servers with the same `sinks`, and a client `host` beating to both;
/// returns once both have seen it join.
fn two_servers(sinks: &str, host: &str) -> (Server, Server, Proc) {
    let (a, b) = (server_with(sinks), server_with(sinks));
    let beating = client(&[a.udp, b.udp], host, &[]);
    assert!(a.wait_event(host, "joined", WAIT) && b.wait_event(host, "joined", WAIT));
    (a, b, beating)
}

/// Waits for `host` to recover on `server`, and for its alert to leave
/// Alertmanager within [`RESOLVED_WITHIN`] of that.
fn resolved_on_recovery(am: &Alertmanager, server: &Server, host: &str) {
    assert!(server.wait_event(host, "recovered", WAIT));
    let recovered = Instant::now();
    assert!(
        wait_until(WAIT, || am.alerts_for(host).is_empty()),
        "resolved after recovery: {:?}",
        am.alerts()
    );
    let took = recovered.elapsed();
    assert!(
        took < RESOLVED_WITHIN,
        "gone {took:?} after `recovered`: resolved, not expired"
    );
}

fn runs_named(dir: &Path, prefix: &str) -> Vec<(String, BTreeMap<String, String>, Value)> {
    hook_runs(dir)
        .into_iter()
        .filter(|r| r.0.starts_with(prefix))
        .collect()
}

#[test]
fn alertmanager_fires_with_stable_labels_and_resolves_on_recovery() {
    let am = Alertmanager::start();
    // A second Alertmanager URL where nothing listens: alerts still reach
    // the first, and the failures are counted.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let server = server_with(&format!(
        r#"
[[server.sinks.alertmanager]]
urls = ["{}", "http://{dead}"]
labels = {{ severity = "page", team = "ops" }}
external_url = "https://lubdub.example.com/"
resend = "300ms"
lease = "10m"

[server.sinks.mass_silence]
enabled = false
"#,
        am.url
    ));
    let mut down = client(&[server.udp], "am-down", &[]);
    let _stays = client(&[server.udp], "am-stays", &[]);
    assert!(server.wait_event("am-down", "joined", WAIT));
    assert!(server.wait_event("am-stays", "joined", WAIT));
    down.kill();
    assert!(server.wait_event("am-down", "down", WAIT));
    assert!(
        wait_until(WAIT, || am.alerts_for("am-down").len() == 1),
        "alert in Alertmanager: {:?}",
        am.alerts()
    );
    let alert = &am.alerts_for("am-down")[0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "HostDown", "host": "am-down", "severity": "page", "team": "ops"}),
        "labels are the alert's identity: nothing address- or server-derived"
    );
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(
        alert["generatorURL"],
        "https://lubdub.example.com/#host=am-down"
    );
    let annotations = &alert["annotations"];
    type Check = fn(&str) -> bool;
    let expected: [(&str, Check); 4] = [
        ("address", |a| a.starts_with("127.0.0.1:")),
        ("last_seen", |t| t.ends_with('Z')),
        ("summary", |s| s.contains("am-down")),
        ("silence", |s| s.ends_with('s')),
    ];
    for (name, holds) in expected {
        let value = annotations[name].as_str();
        assert!(value.is_some_and(holds), "{name}: {annotations}");
    }
    assert!(am.alerts_for("am-stays").is_empty(), "{:?}", am.alerts());

    // The client comes back (from a new port): the alert is resolved (its
    // lease is ten minutes).
    let _back = client(&[server.udp], "am-down", &[]);
    resolved_on_recovery(&am, &server, "am-down");
    let sent = || {
        server
            .metric(r#"lubdub_sink_deliveries_total{sink="alertmanager0",outcome="sent"}"#)
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || sent() >= 2.0),
        "firing and resolved sent"
    );
    let failed = server
        .metric(r#"lubdub_sink_deliveries_total{sink="alertmanager0",outcome="failed"}"#)
        .expect("failed metric");
    assert!(failed >= 1.0, "the dead URL counts failures: {failed}");
}

#[test]
fn two_servers_one_alert_and_either_can_die() {
    let am = Alertmanager::start();
    // A lease longer than RESOLVED_WITHIN, and shorter than the watch below.
    let (mut a, b, mut ha) = two_servers(&alertmanager_sink(&am, "4s"), "ha-1");
    ha.kill();
    assert!(a.wait_event("ha-1", "down", WAIT) && b.wait_event("ha-1", "down", WAIT));
    // Both servers send it; Alertmanager holds one.
    assert!(
        wait_until(WAIT, || {
            let metric = |s: &Server| {
                s.metric(r#"lubdub_sink_deliveries_total{sink="alertmanager0",outcome="sent"}"#)
                    .unwrap_or(0.0)
            };
            metric(&a) >= 2.0 && metric(&b) >= 2.0 && am.alerts_for("ha-1").len() == 1
        }),
        "one alert from two servers: {:?}",
        am.alerts()
    );
    assert_eq!(am.alerts().len(), 1, "{:?}", am.alerts());

    // Server A dies without a word. For longer than the lease, the alert
    // stays: one, active (B renews it).
    a.proc.kill();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let alerts = am.alerts_for("ha-1");
        assert_eq!(
            alerts.len(),
            1,
            "neither resolved nor duplicated: {alerts:?}"
        );
        assert_eq!(alerts[0]["status"]["state"], "active");
        std::thread::sleep(Duration::from_millis(250));
    }

    // B alone resolves it when the host is back.
    let _back = client(&[b.udp], "ha-1", &[]);
    resolved_on_recovery(&am, &b, "ha-1");
}

#[test]
fn exec_hook_gets_the_event_in_its_environment_and_stdin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hook = hook_script(tmp.path());
    let server = server_with(&format!(
        r#"
[[server.sinks.exec]]
{hook}
events = ["joined", "down"]
hosts = ["exec-*"]
timeout = "5s"

[server.sinks.mass_silence]
enabled = false
"#
    ));
    let mut watched = client(&[server.udp], "exec-1", &[]);
    let mut other = client(&[server.udp], "other-1", &[]);
    assert!(
        wait_until(WAIT, || runs_named(tmp.path(), "joined-exec-1-").len() == 1),
        "{:?}",
        hook_runs(tmp.path())
    );
    assert!(server.wait_event("other-1", "joined", WAIT));
    watched.kill();
    other.kill();
    assert!(server.wait_event("exec-1", "down", WAIT));
    assert!(server.wait_event("other-1", "down", WAIT));
    assert!(
        wait_until(WAIT, || runs_named(tmp.path(), "down-exec-1-").len() == 1),
        "{:?}",
        hook_runs(tmp.path())
    );
    let (_, env, stdin) = runs_named(tmp.path(), "down-exec-1-").remove(0);
    let line = server
        .events()
        .into_iter()
        .find(|e| e.host == "exec-1" && e.kind == "down")
        .expect("down line");
    assert_eq!(env["LUBDUB_EVENT"], "down");
    assert_eq!(env["LUBDUB_HOST"], "exec-1");
    assert_eq!(env["LUBDUB_ADDR"], line.addr);
    assert_eq!(env["LUBDUB_IP"], "127.0.0.1");
    let silent: f64 = env["LUBDUB_SILENT_SECONDS"].parse().expect("seconds");
    assert!(
        (silent - line.silent_secs).abs() < 0.01,
        "{silent} vs {line:?}"
    );
    assert!(env["LUBDUB_TIME"].ends_with('Z'));
    assert!(env["LUBDUB_LAST_SEEN"].ends_with('Z'));
    assert_eq!(stdin["kind"], "down");
    assert_eq!(stdin["host"], "exec-1");
    assert_eq!(stdin["addr"], line.addr.as_str());
    assert_eq!(stdin["at"], env["LUBDUB_TIME"].as_str());
    // The host filter: nothing ran for other-1, and late is not asked for.
    assert!(
        hook_runs(tmp.path())
            .iter()
            .all(|r| r.0.contains("exec-1") && !r.0.starts_with("late")),
        "{:?}",
        hook_runs(tmp.path())
    );
    // The hook's output is in the server's log.
    assert!(
        server.proc.wait_stderr(WAIT, "hook: hook ran for exec-1"),
        "{:?}",
        server.proc.stderr()
    );
    // joined and down, each once.
    assert!(wait_until(WAIT, || server.metric(
        r#"lubdub_sink_deliveries_total{sink="exec0",outcome="sent"}"#
    ) == Some(2.0)));
    assert_eq!(
        hook_runs(tmp.path()).len(),
        2,
        "{:?}",
        hook_runs(tmp.path())
    );
}

#[test]
fn exec_hook_that_hangs_is_killed_and_counted_failed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The hook's own child must die with it.
    let pid_file = tmp.path().join("sleep.pid");
    let script = write_file(
        tmp.path(),
        "hang.sh",
        &format!(
            "/bin/sleep 600 &\necho $! > {}.tmp\nmv {0}.tmp {0}\nwait\n",
            pid_file.display()
        ),
    );
    let server = server_with(&format!(
        r#"
[[server.sinks.exec]]
name = "sleepy"
command = ["/bin/sh", "{script}"]
events = ["joined"]
# Long enough for a busy machine to start the shell and its sleep (the
# pid file below), far short of the 600 s hang.
timeout = "2s"
"#
    ));
    let _c = client(&[server.udp], "hang-1", &[]);
    assert!(
        wait_until(WAIT, || server.metric(
            r#"lubdub_sink_deliveries_total{sink="sleepy",outcome="failed"}"#
        ) == Some(1.0)),
        "{:?}",
        server.proc.stderr()
    );
    assert!(
        server.proc.stderr_has(&["hook killed after"]),
        "{:?}",
        server.proc.stderr()
    );
    let pid = std::fs::read_to_string(&pid_file).expect("the hook started sleep");
    let stat = format!("/proc/{}/stat", pid.trim());
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&stat)
            // Gone, or a zombie waiting for a reaper: not running.
            .map_or(true, |s| s.contains(") Z "))),
        "the hook's child was killed too"
    );
}

#[test]
fn webhook_posts_json_retries_after_failures_and_authenticates() {
    // Two failures, then success.
    let recorder = Recorder::start(&[500, 503]);
    let plain = Recorder::start(&[]);
    let server = server_with(&format!(
        r#"
[[server.sinks.webhook]]
name = "bearer"
url = "{}"
hosts = ["hook-*"]
bearer_token = "s3cret"
headers = {{ "X-Team" = "ops" }}
retries = 5
backoff = "100ms"
max_backoff = "1s"

[[server.sinks.webhook]]
name = "basic"
url = "{}"
events = ["joined"]
hosts = ["hook-*"]
basic_auth = {{ username = "lubdub", password = "pa55" }}
max_batch = 10

[server.sinks.mass_silence]
enabled = false
"#,
        recorder.url("/bearer"),
        plain.url("/basic"),
    ));
    let mut c = client(&[server.udp], "hook-1", &[]);
    assert!(server.wait_event("hook-1", "joined", WAIT));
    c.kill();
    assert!(server.wait_event("hook-1", "down", WAIT));
    let bearer = || recorder.requests_to("/bearer");
    assert!(
        wait_until(WAIT, || bearer().len() == 3),
        "{:?}",
        recorder.requests()
    );
    // Backed off: 100 ms, then 200 ms, each jittered down to half.
    assert_backoff(
        &bearer(),
        Duration::from_millis(100),
        Duration::from_secs(1),
    );
    let line = server
        .events()
        .into_iter()
        .find(|e| e.host == "hook-1" && e.kind == "down")
        .expect("down line");
    for request in bearer() {
        assert_eq!(request.headers["authorization"], "Bearer s3cret");
        assert_eq!(request.headers["x-team"], "ops");
        assert_eq!(request.headers["content-type"], "application/json");
        let body = &request.body;
        assert_eq!(body["kind"], "down", "{body}");
        assert_eq!(body["host"], "hook-1");
        assert_eq!(body["addr"], line.addr.as_str());
        assert!(body["event_id"].as_u64().is_some());
        assert!(body["at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(body["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')));
        let silent = body["silent_seconds"].as_f64().expect("silent_seconds");
        assert!((silent - line.silent_secs).abs() < 0.01);
    }
    let metric = |outcome: &str| {
        server.metric(&format!(
            r#"lubdub_sink_deliveries_total{{sink="bearer",outcome="{outcome}"}}"#
        ))
    };
    assert!(wait_until(WAIT, || metric("sent") == Some(1.0)));
    assert_eq!(metric("retried"), Some(2.0));
    assert_eq!(metric("failed"), Some(0.0));

    let basic = plain.requests_to("/basic");
    assert_eq!(basic.len(), 1, "{basic:?}");
    // "lubdub:pa55" in base64.
    assert_eq!(basic[0].headers["authorization"], "Basic bHViZHViOnBhNTU=");
    let batch = basic[0].body.as_array().expect("batched: an array");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0]["kind"], "joined");
}

/// Asserts that the gaps between `requests` grow as the webhook's backoff
/// (`base`, doubling, capped at `max`, jittered down to half): never
/// shorter, and not much longer than a loaded machine explains.
fn assert_backoff(requests: &[Recorded], base: Duration, max: Duration) {
    let at: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    for (attempt, pair) in at.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let full = (base * 2u32.pow(attempt as u32)).min(max);
        assert!(
            gap >= full / 2 && gap <= full + Duration::from_secs(1),
            "gap {attempt} is {gap:?}, the backoff {:?} to {full:?}: {at:?}",
            full / 2
        );
    }
}

#[test]
fn webhook_retries_only_what_may_succeed_backs_off_and_logs_no_url() {
    let recorder = Recorder::scripted(&[
        ("/gone", &[404]),
        ("/busy", &[408, 429]),
        ("/flaky", &[500, 502, 503]),
        ("/broken", &[500, 500, 500, 500]),
    ]);
    // Nothing listens there; the query is a secret that must not be logged.
    let offline = format!("http://{}/hook?token=s3cret-query", closed_port());
    let sink = |name: &str, url: &str, retries: u32| {
        format!(
            r#"
[[server.sinks.webhook]]
name = "{name}"
url = "{url}"
events = ["down"]
retries = {retries}
backoff = "200ms"
max_backoff = "800ms"
"#
        )
    };
    let config = [
        sink("gone", &recorder.url("/gone"), 5),
        sink("busy", &recorder.url("/busy"), 5),
        sink("flaky", &recorder.url("/flaky"), 5),
        sink("broken", &recorder.url("/broken"), 2),
        sink("offline", &offline, 2),
    ]
    .concat();
    // -v: the retries are logged too (at debug level).
    let server = Server::with_config(&config, &["--timeout", "1s", "-v"]);
    let mut c = client(&[server.udp], "wh-1", &[]);
    assert!(server.wait_event("wh-1", "joined", WAIT));
    c.kill();
    assert!(server.wait_event("wh-1", "down", WAIT));

    let count = |sink: &str, outcome: &str| {
        server
            .metric(&format!(
                r#"lubdub_sink_deliveries_total{{sink="{sink}",outcome="{outcome}"}}"#
            ))
            .unwrap_or(0.0)
    };
    // (sink, sent, retried, failed, requests): a 4xx is final; 408, 429,
    // 5xx and a refused connection are retried until the retries run out.
    let expected = [
        ("gone", 0.0, 0.0, 1.0, 1),
        ("busy", 1.0, 2.0, 0.0, 3),
        ("flaky", 1.0, 3.0, 0.0, 4),
        ("broken", 0.0, 2.0, 1.0, 3),
        ("offline", 0.0, 2.0, 1.0, 0),
    ];
    for (sink, sent, retried, failed, requests) in expected {
        assert!(
            wait_until(WAIT, || count(sink, "sent") + count(sink, "failed") == 1.0),
            "{sink} done: {:?}",
            recorder.requests()
        );
        let counts = (
            count(sink, "sent"),
            count(sink, "retried"),
            count(sink, "failed"),
        );
        assert_eq!(counts, (sent, retried, failed), "{sink}");
        if sink != "offline" {
            let got = recorder.requests_to(&format!("/{sink}"));
            assert_eq!(got.len(), requests, "{sink}: {got:?}");
            assert!(got.iter().all(|r| r.body["kind"] == "down"), "{got:?}");
        }
    }
    let base = Duration::from_millis(200);
    let max = Duration::from_millis(800);
    assert_backoff(&recorder.requests_to("/flaky"), base, max);
    assert_backoff(&recorder.requests_to("/broken"), base, max);
    assert_backoff(&recorder.requests_to("/busy"), base, max);

    // Each failure is logged, naming the sink, never the URL.
    let stderr = server.proc.stderr();
    let failures: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("webhook delivery failed"))
        .collect();
    assert_eq!(failures.len(), 3, "gone, broken, offline: {stderr:?}");
    for sink in ["gone", "broken", "offline"] {
        assert!(failures.iter().any(|l| l.contains(sink)), "{failures:?}");
    }
    for line in &stderr {
        assert!(
            !line.contains("s3cret-query") && !line.contains("/hook") && !line.contains("http://"),
            "a URL in the log: {line}"
        );
    }
}

#[test]
fn a_hanging_webhook_delays_no_other_down() {
    let stuck = Recorder::hanging();
    let tmp = tempfile::tempdir().expect("tempdir");
    let hook = hook_script(tmp.path());
    let mut server = server_with(&format!(
        r#"
[[server.sinks.webhook]]
name = "stuck"
url = "{}"
events = ["joined", "down"]
timeout = "60s"
retries = 0
queue = 1

# Mass silence keeps its defaults: with 5 hosts (fewer than min_hosts)
# no down is held back.
[[server.sinks.exec]]
{hook}
events = ["down"]
"#,
        stuck.url("/")
    ));
    // Four joins: the first request hangs, one waits in the queue, the rest
    // are dropped.
    let slow: Vec<Proc> = (0..4)
        .map(|i| client(&[server.udp], &format!("slow-{i}"), &[]))
        .collect();
    assert!(wait_until(WAIT, || (0..4).all(|i| server
        .kinds_of(&format!("slow-{i}"))
        .contains(&"joined".to_string()))));
    assert!(wait_until(WAIT, || !stuck.requests().is_empty()));
    let mut fast = client(&[server.udp], "fast-1", &[]);
    assert!(server.wait_event("fast-1", "joined", WAIT));
    let killed = Instant::now();
    fast.kill();
    assert!(server.wait_event("fast-1", "down", WAIT));
    let line = server
        .events()
        .into_iter()
        .find(|e| e.host == "fast-1" && e.kind == "down")
        .expect("down line");
    assert!(line.silent_secs < 1.5, "down on time: {line:?}");
    assert!(
        wait_until(WAIT, || runs_named(tmp.path(), "down-fast-1-").len() == 1),
        "{:?}",
        hook_runs(tmp.path())
    );
    // Against a 60 s hang, "not delayed" has a wide margin.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "exec hook ran {took:?} after the kill"
    );
    assert_eq!(stuck.requests().len(), 1, "still hanging on the first");
    let dropped = server
        .metric(r#"lubdub_sink_deliveries_total{sink="stuck",outcome="dropped"}"#)
        .expect("dropped metric");
    assert!(dropped >= 2.0, "queue of 1 overflowed: {dropped}");
    assert!(
        server.proc.stderr_has(&["sink queue full"]),
        "{:?}",
        server.proc.stderr()
    );
    drop(slow);

    // A clean stop waits for the hung sink only a bounded time.
    let stopping = Instant::now();
    server.proc.signal(libc::SIGTERM);
    let status = server.proc.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
}

#[test]
fn mass_silence_is_one_page_not_twenty() {
    let recorder = Recorder::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let hook = hook_script(tmp.path());
    let hold = Duration::from_millis(1500);
    let server = server_with(&format!(
        r#"
[[server.sinks.webhook]]
url = "{}"

[[server.sinks.exec]]
{hook}

[server.sinks.mass_silence]
share = 0.3
min_hosts = 10
window = "3s"
hold = "1500ms"
"#,
        recorder.url("/")
    ));
    let ids: Vec<String> = (0..30).map(|i| format!("m-{i:02}")).collect();
    let mut clients = server.join_all(&ids, WAIT);
    for c in &mut clients[..20] {
        c.kill();
    }
    let stopped = &ids[..20];
    assert!(
        wait_until(WAIT, || stopped
            .iter()
            .all(|id| server.kinds_of(id).contains(&"down".to_string()))),
        "{:?}",
        server.events()
    );
    assert!(
        wait_until(WAIT, || !recorder.requests().is_empty()),
        "mass silence sent"
    );
    // Absence of pages can only be seen by waiting: past the hold of the
    // last down, any page held back would have gone out.
    std::thread::sleep(hold + Duration::from_secs(1));

    // Each down is still on stdout (and in the API).
    assert_eq!(
        server.events().iter().filter(|e| e.kind == "down").count(),
        20
    );
    let requests = recorder.requests();
    assert_eq!(requests.len(), 1, "one page: {requests:?}");
    let body = &requests[0].body;
    assert_eq!(body["kind"], "mass-silence");
    assert_eq!(body["count"], 20);
    assert_eq!(body["fleet"], 30);
    assert_eq!(body["hosts"], json!(stopped));
    assert_eq!(
        body["networks"],
        json!([{"network": "127.0.0.0/24", "hosts": 20}])
    );
    let runs = hook_runs(tmp.path());
    assert_eq!(runs.len(), 1, "one hook run: {runs:?}");
    let (name, env, stdin) = &runs[0];
    assert!(name.starts_with("mass-silence-fleet-"), "{name}");
    assert_eq!(env["LUBDUB_COUNT"], "20");
    assert_eq!(env["LUBDUB_NETWORKS"], "127.0.0.0/24");
    assert_eq!(env["LUBDUB_HOSTS"], stopped.join(" "));
    assert_eq!(stdin["count"], 20);
    assert_eq!(server.metric("lubdub_mass_silences_total"), Some(1.0));
    for id in &ids[20..] {
        assert_eq!(server.state_of(id).as_deref(), Some("up"), "{id}");
    }
}

#[test]
fn a_bad_sink_setting_is_one_line_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (text, field) in [
        (
            "[[server.sinks.webhook]]\nurl = \"htps//x\"\n",
            "sinks.webhook.url",
        ),
        (
            "[[server.sinks.exec]]\ncommand = []\n",
            "sinks.exec.command",
        ),
        (
            "[[server.sinks.exec]]\ncommand = [\"x\"]\nevnts = []\n",
            "evnts",
        ),
    ] {
        let config = write_file(tmp.path(), "bad.toml", text);
        let mut server = Proc::spawn(&[
            "server",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ]);
        let status = server.wait_exit(WAIT);
        assert!(!status.success(), "{text}");
        let stderr = server.stderr();
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains(field), "{stderr:?}");
        assert!(
            server.stdout().is_empty(),
            "never listening: {:?}",
            server.stdout()
        );
    }
}

#[test]
fn an_alert_fires_while_any_server_sees_the_host_down_and_expires_with_its_lease() {
    let am = Alertmanager::start();
    let (mut a, b, mut both) = two_servers(&alertmanager_sink(&am, "3s"), "split-1");
    both.kill();
    assert!(wait_until(WAIT, || am.alerts_for("split-1").len() == 1));

    // The host comes back, but only B hears it: B resolves, A keeps
    // renewing, and the alert is firing again after A's next renewal.
    let _only_b = client(&[b.udp], "split-1", &[]);
    assert!(b.wait_event("split-1", "recovered", WAIT));
    let resolved_by_b = Instant::now();
    assert!(
        wait_until(WAIT, || resolved_by_b.elapsed() > Duration::from_secs(1)
            && am.alerts_for("split-1").len() == 1
            && am.alerts_for("split-1")[0]["status"]["state"] == "active"),
        "{:?}",
        am.alerts()
    );
    assert_eq!(a.state_of("split-1").as_deref(), Some("down"));

    // A stops without resolving: the alert ends with its lease (3 s).
    a.proc.kill();
    let killed = Instant::now();
    assert!(
        wait_until(WAIT, || am.alerts_for("split-1").is_empty()),
        "{:?}",
        am.alerts()
    );
    let gone_after = killed.elapsed();
    assert!(
        gone_after > Duration::from_secs(1),
        "expired by the lease, not resolved at once: {gone_after:?}"
    );
}
