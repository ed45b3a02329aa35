//! The JSON API under /api/v1 against the real binary: every endpoint, its
//! error cases, the bearer token, pause/resume and forget.
//! See: issue 3.

use crate::util::{Proc, Server, client, fleet, wait_until};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn hosts_list_filters_sorts_pages_and_refuses_bad_queries() {
    let server = Server::start(&["--timeout", "1s"]);
    let ids = ["web-2", "db-1", "web-1", "cache-1"];
    let mut clients = fleet(&server, &ids);
    clients[3].kill(); // cache-1 goes silent
    assert!(server.wait_event("cache-1", "down", WAIT));

    assert_eq!(
        server.ids("/api/v1/hosts"),
        ["cache-1", "db-1", "web-1", "web-2"],
        "sorted by id"
    );
    assert_eq!(server.ids("/api/v1/hosts?state=down"), ["cache-1"]);
    assert_eq!(
        server.ids("/api/v1/hosts?state=up,late"),
        ["db-1", "web-1", "web-2"]
    );
    assert_eq!(server.ids("/api/v1/hosts?q=WEB"), ["web-1", "web-2"]);
    assert_eq!(
        server.ids("/api/v1/hosts?sort=-id"),
        ["web-2", "web-1", "db-1", "cache-1"]
    );
    assert_eq!(
        server.ids("/api/v1/hosts?sort=state")[0],
        "cache-1",
        "worst state first"
    );
    assert_eq!(
        server.ids("/api/v1/hosts?sort=last_seen")[0],
        "cache-1",
        "longest silent first"
    );

    let page = server.request("GET", "/api/v1/hosts?offset=1&limit=2", None, None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("x-total-count"),
        Some("4"),
        "total before paging"
    );
    assert_eq!(page.json().as_array().map(Vec::len), Some(2));
    assert_eq!(
        server.ids("/api/v1/hosts?offset=1&limit=2"),
        ["db-1", "web-1"]
    );
    let filtered = server.request("GET", "/api/v1/hosts?q=web&limit=1", None, None);
    assert_eq!(filtered.header("x-total-count"), Some("2"));
    assert_eq!(server.ids("/api/v1/hosts?offset=10"), Vec::<String>::new());

    for (query, needle) in [
        ("state=sleepy", "sleepy"),
        ("state=", "state"),
        ("sort=colour", "colour"),
        ("limit=many", "limit"),
        ("offset=-1", "offset"),
        ("colour=red", "colour"),
    ] {
        let reply = server.request("GET", &format!("/api/v1/hosts?{query}"), None, None);
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let content_type = reply.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{reply:?}");
        assert!(reply.error().contains(needle), "{query}: {}", reply.error());
    }
}

#[test]
fn one_host_shows_its_events_and_beat_history() {
    let server = Server::start(&["--timeout", "1s"]);
    let _clients = fleet(&server, &["web-1"]);
    assert!(wait_until(WAIT, || {
        server.get_json("/api/v1/hosts/web-1")["beats"].as_u64() >= Some(5)
    }));
    let host = server.get_json("/api/v1/hosts/web-1");
    let text = |field: &str| {
        host[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {host}"))
    };
    let number = |field: &str| {
        host[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {host}"))
    };
    assert_eq!(text("id"), "web-1");
    assert!(text("addr").starts_with("127.0.0.1:"), "{host}");
    assert_eq!(text("state"), "up");
    for time in ["since", "last_seen"] {
        let at = humantime::parse_rfc3339(text(time)).unwrap_or_else(|e| panic!("{time}: {e}"));
        let age = std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default();
        assert!(age < WAIT, "{time} is now-ish: {host}");
    }
    // Beating every 100 ms: silent for less than the 1 s timeout.
    assert!((0.0..1.0).contains(&number("silent_seconds")), "{host}");
    assert_eq!(number("timeout_seconds"), 1.0);
    assert_eq!(number("interval_seconds"), 0.1);
    assert!(number("beats") >= 5.0, "{host}");
    assert_eq!(number("losses"), 0.0, "loopback loses no beats: {host}");
    // The first 4 bytes of this machine's boot id, which the client sends.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    assert_eq!(text("boot_id"), &boot[..8], "{host}");
    assert_eq!(host["legacy"], false);
    assert_eq!(host["recent_events"][0]["kind"], "joined");
    let history = &host["beat_history"];
    let received = history["received"].as_array().expect("received");
    assert!(received.len() >= 5, "{history}");
    assert_eq!(received.last(), Some(&serde_json::Value::Bool(true)));
    assert!(
        received
            .iter()
            .filter(|r| r == &&serde_json::Value::Bool(true))
            .count()
            >= 5,
        "loopback loses no beats: {history}"
    );
    assert!(
        history["run_started"]
            .as_str()
            .expect("time")
            .ends_with('Z')
    );

    // Ids with URL-special characters round-trip through the path.
    let _odd = client(&[server.udp], "rack 7/node#1", &[]);
    assert!(wait_until(WAIT, || {
        server
            .request("GET", "/api/v1/hosts/rack%207%2Fnode%231", None, None)
            .status
            == 200
    }));

    // A legacy host (the seed's `Thump!`, keyed by IP) has no beat history.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(wait_until(WAIT, || {
        socket.send_to(b"Thump!", server.udp).expect("send");
        server
            .request("GET", "/api/v1/hosts/127.0.0.1", None, None)
            .status
            == 200
    }));
    let legacy = server.get_json("/api/v1/hosts/127.0.0.1");
    assert_eq!(legacy["legacy"], true);
    assert!(legacy["beat_history"].is_null(), "{legacy}");
    assert!(legacy["interval_seconds"].is_null(), "{legacy}");

    let missing = server.request("GET", "/api/v1/hosts/nope", None, None);
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("nope"), "{missing:?}");
    let no_route = server.request("GET", "/api/v1/nothing", None, None);
    assert_eq!(
        (no_route.status, no_route.error()),
        (404, "no such endpoint".into())
    );
    let bad_method = server.request("PUT", "/api/v1/summary", None, None);
    assert_eq!(bad_method.status, 405);
    assert!(!bad_method.error().is_empty());
}

#[test]
fn summary_and_events_with_a_cursor() {
    let server = Server::start(&["--timeout", "1s"]);
    let mut clients = fleet(&server, &["a", "b", "c"]);
    clients[0].kill();
    assert!(server.wait_event("a", "down", WAIT));
    // Polled: on a loaded machine another host may be late for a moment.
    let want = serde_json::json!({"hosts": 3, "up": 2, "late": 0, "down": 1, "left": 0, "paused": 0, "maintenance": 0, "unreachable": 0});
    assert!(
        wait_until(WAIT, || server.get_json("/api/v1/summary") == want),
        "{}",
        server.get_json("/api/v1/summary")
    );

    let all = server.get_json("/api/v1/events?since=0");
    let all = all.as_array().expect("array");
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|e| {
            (
                e["host"].as_str().expect("host"),
                e["kind"].as_str().expect("kind"),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("a", "late")) && kinds.contains(&("a", "down")),
        "{kinds:?}"
    );
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "oldest first, no gaps: {ids:?}"
    );
    let after = server.get_json(&format!("/api/v1/events?since={}", ids[1]));
    assert_eq!(after.as_array().expect("array").len(), ids.len() - 2);
    assert_eq!(after[0]["id"].as_u64(), Some(ids[2]));
    let one = server.get_json(&format!("/api/v1/events?since={}&limit=1", ids[0]));
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    assert_eq!(one[0]["id"].as_u64(), Some(ids[1]));
    let last = *ids.last().expect("some events");
    assert_eq!(
        server.get_json(&format!("/api/v1/events?since={last}")),
        serde_json::json!([])
    );
    let latest = server.get_json("/api/v1/events?limit=1");
    assert_eq!(
        latest[0]["id"].as_u64(),
        Some(last),
        "no cursor: the latest"
    );
    for query in ["limit=0", "limit=100001", "since=x", "since=-1", "cursor=3"] {
        let reply = server.request("GET", &format!("/api/v1/events?{query}"), None, None);
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        assert!(!reply.error().is_empty());
    }
}

#[test]
fn a_paused_host_that_goes_silent_raises_no_down_and_resume_restarts_its_timeout() {
    let server = Server::start(&["--timeout", "1s"]);
    let mut clients = fleet(&server, &["maint", "steady"]);
    let paused = server.request("POST", "/api/v1/hosts/maint/pause", None, None);
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(paused.json()["state"], "paused");
    assert!(server.wait_event("maint", "paused", WAIT));
    let again = server.request("POST", "/api/v1/hosts/maint/pause", None, None);
    assert_eq!(again.status, 200, "pausing twice is harmless");

    clients[0].kill();
    let silenced = Instant::now();
    // Three timeouts of silence: an unpaused host would be down by now.
    // The wait is the assertion: nothing may happen during it.
    assert!(!wait_until(Duration::from_secs(3), || {
        server
            .kinds_of("maint")
            .iter()
            .any(|k| k == "late" || k == "down")
    }));
    assert!(silenced.elapsed() >= Duration::from_secs(3));
    assert_eq!(server.state_of("maint").as_deref(), Some("paused"));
    assert_eq!(server.get_json("/api/v1/summary")["paused"], 1);

    let resumed_at = Instant::now();
    let resumed = server.request("POST", "/api/v1/hosts/maint/resume", None, None);
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.json()["state"], "up");
    // Still silent: late at half the timeout after the resume, then down.
    assert!(
        server.wait_event("maint", "down", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(
        server.kinds_of("maint"),
        ["joined", "paused", "resumed", "late", "down"]
    );
    let late_after = resumed_at.elapsed();
    assert!(
        late_after >= Duration::from_millis(900),
        "a full timeout from the resume: {late_after:?}"
    );
    let not_paused = server.request("POST", "/api/v1/hosts/maint/resume", None, None);
    assert_eq!(
        not_paused.status, 200,
        "resuming an unpaused host changes nothing"
    );
    assert_eq!(not_paused.json()["state"], "down");
    for action in ["pause", "resume"] {
        let reply = server.request("POST", &format!("/api/v1/hosts/ghost/{action}"), None, None);
        assert_eq!(reply.status, 404, "{action}");
    }
}

#[test]
fn forget_removes_a_host_and_its_next_beat_is_a_new_join() {
    let server = Server::start(&["--timeout", "1s"]);
    let mut clients = fleet(&server, &["old", "keep"]);
    clients[0].kill();
    assert!(server.wait_event("old", "down", WAIT));
    let forgot = server.request("DELETE", "/api/v1/hosts/old", None, None);
    assert_eq!(forgot.status, 204, "{forgot:?}");
    assert!(server.wait_event("old", "forgotten", WAIT));
    assert_eq!(
        server
            .request("GET", "/api/v1/hosts/old", None, None)
            .status,
        404
    );
    assert_eq!(server.ids("/api/v1/hosts"), ["keep"]);
    assert_eq!(server.get_json("/api/v1/summary")["hosts"], 1);
    assert_eq!(server.get_json("/api/v1/summary")["down"], 0);
    assert_eq!(
        server.metric("lubdub_events_total{kind=\"forgotten\"}"),
        Some(1.0)
    );
    assert_eq!(
        server
            .request("DELETE", "/api/v1/hosts/old", None, None)
            .status,
        404
    );

    // Beating again: a new host, in a reused slot, with its own deadline.
    let _back = client(&[server.udp], "old", &[]);
    assert!(
        wait_until(WAIT, || server.kinds_of("old")
            == ["joined", "late", "down", "forgotten", "joined"]),
        "{:?}",
        server.kinds_of("old")
    );
    assert_eq!(server.ids("/api/v1/hosts"), ["keep", "old"]);
}

#[test]
fn a_configured_token_guards_mutations_but_not_reads() {
    let server = Server::start(&["--timeout", "1s", "--api-token", "s3cret-T0ken"]);
    let _clients = fleet(&server, &["web-1"]);
    assert_eq!(
        server.request("GET", "/api/v1/hosts", None, None).status,
        200
    );
    assert_eq!(
        server.request("GET", "/api/v1/summary", None, None).status,
        200
    );
    for (method, path) in [
        ("POST", "/api/v1/hosts/web-1/pause"),
        ("POST", "/api/v1/hosts/web-1/resume"),
        ("DELETE", "/api/v1/hosts/web-1"),
    ] {
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-T0ke"),
            Some("s3cret-T0ken2"),
        ] {
            let reply = server.request(method, path, token, None);
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            assert!(!reply.error().is_empty());
        }
    }
    assert_eq!(
        server.state_of("web-1").as_deref(),
        Some("up"),
        "nothing changed"
    );
    assert!(!server.kinds_of("web-1").iter().any(|k| k == "paused"));
    let paused = server.request(
        "POST",
        "/api/v1/hosts/web-1/pause",
        Some("s3cret-T0ken"),
        None,
    );
    assert_eq!(
        (paused.status, paused.json()["state"].clone()),
        (200, "paused".into())
    );
    let unknown = server.request("DELETE", "/api/v1/hosts/ghost", Some("s3cret-T0ken"), None);
    assert_eq!(unknown.status, 404);
}

#[test]
fn an_empty_token_is_refused_at_startup() {
    let mut proc = Proc::spawn(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--api-token",
        "",
    ]);
    let status = proc.wait_exit(WAIT);
    assert!(!status.success());
    let stderr = proc.stderr().join("\n");
    assert!(stderr.contains("api_token"), "{stderr}");
}
