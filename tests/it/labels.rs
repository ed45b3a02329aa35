//! Labels end to end: a client's labels (flag and `LUBDUB_LABELS`) reach
//! the API and its filter, the dashboard's filter, a webhook's event
//! document and a real Alertmanager's alert; a server rule adds a label by
//! network; labels survive a server restart. See: issue 16.

use crate::dashboard::chromium;
use crate::util::{
    Alertmanager, Proc, Recorder, Server, beat, client, keygen, label_packet, packet, path_str,
    run_seq, signer, wait_until,
};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn ids(hosts: &Value) -> Vec<String> {
    let mut ids: Vec<String> = hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

/// The host's labels in the API's list (null while it is unknown).
fn labels_of(server: &Server, host: &str) -> Value {
    let hosts = server.get_json("/api/v1/hosts");
    hosts
        .as_array()
        .expect("array")
        .iter()
        .find(|h| h["id"] == host)
        .map_or(Value::Null, |h| h["labels"].clone())
}

#[test]
fn client_labels_reach_the_api_dashboard_webhook_and_alertmanager() {
    let am = Alertmanager::start();
    let hook = Recorder::answering(200);
    let server = Server::with_config(
        &format!(
            r#"{}
[[server.sinks.webhook]]
url = "{}"
events = ["down"]

[server.sinks.mass_silence]
enabled = false

[[server.labels]]
networks = ["127.0.0.3/32"]
set = {{ site = "three" }}
"#,
            am.sink("10m"),
            hook.url("/hook")
        ),
        &["--timeout", "1s"],
    );
    let mut web = client(
        &[server.udp],
        "lab-web",
        &["--label", "team=web", "--label", "role=fe"],
    );
    let udp = server.udp.to_string();
    let _db = Proc::spawn_env(
        &["client", "--interval", "100ms", "--host-id", "lab-db", &udp],
        &[("LUBDUB_LABELS", "team=db,role=store")],
    );
    assert!(
        wait_until(WAIT, || labels_of(&server, "lab-web")
            == json!({"team": "web", "role": "fe"})
            && labels_of(&server, "lab-db")
                == json!({"team": "db", "role": "store"})),
        "labels in the API: {}",
        server.get_json("/api/v1/hosts")
    );
    // The filter: repeatable, every one must match.
    assert_eq!(
        ids(&server.get_json("/api/v1/hosts?label=team=web")),
        ["lab-web"]
    );
    assert_eq!(
        ids(&server.get_json("/api/v1/hosts?label=role%3Dstore")),
        ["lab-db"]
    );
    assert_eq!(
        ids(&server.get_json("/api/v1/hosts?label=team=web&label=role=fe")),
        ["lab-web"]
    );
    assert!(ids(&server.get_json("/api/v1/hosts?label=team=web&label=role=store")).is_empty());

    // A rule by network: beats from 127.0.0.3 get site=three, the
    // clients' (from 127.0.0.1) do not.
    let far = std::net::UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    let beating = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = crate::util::run_seq();
            for n in 0..150u64 {
                if !beating.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = far.send_to(&packet(&beat("lab-far", start + n), None), server.udp);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let ok = wait_until(WAIT, || {
            labels_of(&server, "lab-far") == json!({"site": "three"})
        });
        beating.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(ok, "rule label: {}", labels_of(&server, "lab-far"));
    });
    assert!(labels_of(&server, "lab-web").get("site").is_none());
    assert_eq!(
        ids(&server.get_json("/api/v1/hosts?label=site=three")),
        ["lab-far"]
    );

    // The dashboard's label filter (from the page's address) shows only
    // the hosts with the label.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dom = chromium(
        &tmp.path().join("p1"),
        &server.url("/#label=team=web"),
        &["--dump-dom"],
    );
    assert!(dom.contains("data-id=\"lab-web\""), "{dom}");
    assert!(!dom.contains("data-id=\"lab-db\""), "filtered out: {dom}");
    assert!(dom.contains("data-labels=\"role=fe,team=web\""), "{dom}");

    // lab-web goes down: its labels are in the webhook's document and on
    // the Alertmanager alert, next to `host`.
    web.kill();
    assert!(server.wait_event("lab-web", "down", WAIT));
    // (lab-far, silent since its beats stopped, may be posted first.)
    let web_doc = || {
        hook.requests()
            .into_iter()
            .map(|r| r.body)
            .find(|b| b["host"] == "lab-web")
    };
    assert!(
        wait_until(WAIT, || web_doc().is_some()),
        "webhook: {:?}",
        hook.requests()
    );
    let doc = web_doc().expect("posted");
    assert_eq!(doc["labels"], json!({"team": "web", "role": "fe"}), "{doc}");
    assert!(
        wait_until(WAIT, || am.alerts_for("lab-web").len() == 1),
        "alert: {:?}",
        am.alerts()
    );
    assert_eq!(
        am.alerts_for("lab-web")[0]["labels"],
        json!({"alertname": "HostDown", "host": "lab-web", "team": "web", "role": "fe"})
    );
}

#[test]
fn labels_survive_a_server_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start_in(data.path(), &[]);
    let mut c = client(&[server.udp], "keep-1", &["--label", "team=keep"]);
    assert!(wait_until(WAIT, || labels_of(&server, "keep-1")
        == json!({"team": "keep"})));
    c.kill();
    server.stop();
    let server = Server::start_in(data.path(), &[]);
    assert_eq!(labels_of(&server, "keep-1"), json!({"team": "keep"}));
}

/// A host relabeled while it is down: the sink whose label filter took
/// its `down` also gets its `recovered`, though the host no longer has the
/// label (else that sink's alert would fire forever). Review of issue 16.
#[test]
fn a_sink_that_got_the_down_gets_the_recovery_after_a_relabel() {
    let hook = Recorder::answering(200);
    let server = Server::with_config(
        &format!(
            r#"
[[server.sinks.webhook]]
url = "{}"
labels = {{ team = "web" }}

[server.sinks.mass_silence]
enabled = false
"#,
            hook.url("/hook")
        ),
        &["--timeout", "1s"],
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let send = |datagram: Vec<u8>| socket.send_to(&datagram, server.udp).expect("send");
    let seq = run_seq();
    send(packet(&beat("mv-1", seq), None));
    send(label_packet("mv-1", seq, "team=web", None));
    assert!(wait_until(WAIT, || labels_of(&server, "mv-1")
        == json!({"team": "web"})));
    // The server's event, then the sink's copy of it.
    let reached_sink = |kind: &str| {
        server.wait_event("mv-1", kind, WAIT)
            && wait_until(WAIT, || {
                hook.requests()
                    .iter()
                    .any(|r| r.body["host"] == "mv-1" && r.body["kind"] == kind)
            })
    };
    assert!(reached_sink("down"), "{:?}", hook.requests());
    // Relabeled while down, then back.
    send(label_packet("mv-1", seq, "team=db", None));
    assert!(wait_until(WAIT, || labels_of(&server, "mv-1") == json!({"team": "db"})));
    send(packet(&beat("mv-1", seq + 1), None));
    assert!(reached_sink("recovered"), "{:?}", hook.requests());
}

/// With keys, a keyed client's labels reach the API, and an announcement
/// for its host that is unsigned or signed with another key changes
/// nothing (refused and counted); one signed with the host's key does.
#[test]
fn with_keys_only_announcements_signed_with_the_key_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let other = keygen(dir.path(), "other.toml", &[]);
    let server = Server::start(&["--key-file", path_str(&keys)]);
    let key_args = ["--key-file", path_str(&keys), "--label", "team=web"];
    let _keyed = client(&[server.udp], "keyed-1", &key_args);
    assert!(
        wait_until(WAIT, || labels_of(&server, "keyed-1")
            == json!({"team": "web"})),
        "{}",
        server.get_json("/api/v1/hosts")
    );
    let refused = || {
        server
            .metric("lubdub_label_announcements_total{result=\"refused\"}")
            .unwrap_or(0.0)
    };
    let before = refused();
    // Far ahead of the client's seq, so only the signature can refuse it.
    let seq = run_seq() + (1 << 40);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let forger = signer(&other, "keyed-1");
    for forged in [
        label_packet("keyed-1", seq, "team=evil", None),
        label_packet("keyed-1", seq, "team=evil", Some(&forger)),
    ] {
        socket.send_to(&forged, server.udp).expect("send");
    }
    assert!(
        wait_until(WAIT, || refused() >= before + 2.0),
        "refused: {}",
        refused()
    );
    assert_eq!(labels_of(&server, "keyed-1"), json!({"team": "web"}));
    // The same announcement signed with the host's key is taken.
    let owner = signer(&keys, "keyed-1");
    let genuine = label_packet("keyed-1", seq, "team=ops", Some(&owner));
    socket.send_to(&genuine, server.udp).expect("send");
    assert!(wait_until(WAIT, || labels_of(&server, "keyed-1")
        == json!({"team": "ops"})));
}

/// `metrics_by_labels`: hosts by state per value of the named label, at
/// most 100 combinations with a series, the hosts of the rest summed in
/// one `other` series, and the number of combinations.
#[test]
fn metrics_break_hosts_by_state_down_by_the_named_labels() {
    let server = Server::with_config("[server]\nmetrics_by_labels = [\"team\"]\n", &[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let seq = run_seq();
    // 103 teams of one host each, and a second host in team t000.
    let mut hosts: Vec<(String, String)> = (0..103)
        .map(|i| (format!("m-{i}"), format!("t{i:03}")))
        .collect();
    hosts.push(("m-x".into(), "t000".into()));
    for (id, team) in &hosts {
        socket
            .send_to(&packet(&beat(id, seq), None), server.udp)
            .expect("send");
        let labels = format!("team={team},role=any");
        socket
            .send_to(&label_packet(id, seq, &labels, None), server.udp)
            .expect("send");
        std::thread::sleep(Duration::from_millis(2)); // the receive buffer keeps up
    }
    let sample = |team: &str, state: &str| {
        server.metric(&format!(
            "lubdub_hosts_by_labels{{team=\"{team}\",state=\"{state}\"}}"
        ))
    };
    let combinations = || server.metric("lubdub_hosts_by_labels_combinations");
    assert!(
        wait_until(WAIT, || combinations() == Some(103.0)),
        "{}",
        server.get_text("/metrics")
    );
    assert_eq!(sample("t000", "up"), Some(2.0));
    assert_eq!(sample("t000", "paused"), Some(0.0));
    assert_eq!(sample("t099", "up"), Some(1.0));
    assert_eq!(sample("t100", "up"), None, "past the 100 shown");
    let other = |state: &str| {
        server.metric(&format!(
            "lubdub_hosts_by_labels_other{{state=\"{state}\"}}"
        ))
    };
    assert_eq!(other("up"), Some(3.0));
    // A state change moves the host's count at once.
    let paused = server.request("POST", "/api/v1/hosts/m-x/pause", None, None);
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(sample("t000", "up"), Some(1.0));
    assert_eq!(sample("t000", "paused"), Some(1.0));
    let paused = server.request("POST", "/api/v1/hosts/m-102/pause", None, None);
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(other("paused"), Some(1.0));
}

#[test]
fn metrics_by_labels_is_off_by_default_and_checked() {
    let server = Server::start(&[]);
    assert!(!server.get_text("/metrics").contains("hosts_by_labels"));
    for (names, error) in [
        ("[\"state\"]", "the metric's own label"),
        ("[\"team\", \"team\"]", "named twice"),
        ("[\"9x\"]", "metrics_by_labels"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!("[server]\nmetrics_by_labels = {names}\n");
        let path = crate::util::write_file(dir.path(), "lubdub.toml", &config);
        let ran = crate::util::run_server(&path, dir.path());
        assert_ne!(ran.code, Some(0), "{names}");
        assert!(ran.stderr.contains(error), "{names}: {}", ran.stderr);
        assert_eq!(ran.stderr.trim().lines().count(), 1, "{}", ran.stderr);
    }
}

/// `lubdub status --label`: repeatable, all must match, as `?label=`; a
/// bad one is a one-line error.
#[test]
fn status_filters_by_label() {
    let server = Server::start(&[]);
    let http = server.http.to_string();
    let _web = client(
        &[server.udp],
        "st-web",
        &["--label", "team=web", "--label", "role=fe"],
    );
    let _db = client(
        &[server.udp],
        "st-db",
        &["--label", "team=db", "--label", "role=fe"],
    );
    assert!(wait_until(WAIT, || labels_of(&server, "st-web")
        == json!({"team": "web", "role": "fe"})
        && labels_of(&server, "st-db")
            == json!({"team": "db", "role": "fe"})));
    let status = |labels: &[&str]| {
        let mut args = vec!["status", "--server", &http, "--json"];
        for label in labels {
            args.extend(["--label", label]);
        }
        let ran = crate::util::run(&args, &[]);
        assert_eq!(ran.code, Some(0), "{ran:?}");
        ids(&serde_json::from_str(&ran.stdout).expect("json"))
    };
    assert_eq!(status(&["team=web"]), ["st-web"]);
    assert_eq!(status(&["role=fe"]), ["st-db", "st-web"]);
    assert_eq!(status(&["role=fe", "team=db"]), ["st-db"]);
    assert!(status(&["team=web", "team=db"]).is_empty());
    let table = crate::util::run(&["status", "--server", &http, "--label", "team=db"], &[]);
    assert!(table.stdout.ends_with("1 host: 1 up\n"), "{}", table.stdout);
    let bad = crate::util::run(&["status", "--server", &http, "--label", "9x=1"], &[]);
    assert_ne!(bad.code, Some(0));
    assert!(bad.stderr.contains("--label"), "{}", bad.stderr);
}
