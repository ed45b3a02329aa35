//! Maintenance windows through the real binary: a host's own announcement
//! (`lubdub maintenance --for`), the operator's API window, replay and
//! forgery of announcements.

use crate::util::{
    EventLine, Ran, Server, client, fleet, keygen, path_str, raw_http, run, run_server, wait_until,
    write_file,
};
use lubdub::auth::{KeyRing, Signer};
use lubdub::protocol::maintenance::{self as wire, Announcement, status};
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(10);

fn event(server: &Server, host: &str, kind: &str) -> EventLine {
    server
        .events()
        .into_iter()
        .find(|e| e.host == host && e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} of {host}: {:?}", server.events()))
}

fn secs_between(from: &EventLine, to: &EventLine) -> f64 {
    to.at
        .duration_since(from.at)
        .map_or(-1.0, |d| d.as_secs_f64())
}

/// Runs `lubdub maintenance --server <server's API> ARGS` (the operator
/// form) to its exit.
fn operator(server: &Server, args: &[&str]) -> Ran {
    let api = server.http.to_string();
    let mut all = vec!["maintenance", "--server", &api];
    all.extend(args);
    run(&all, &[])
}

/// Whether `host` paged (went `late` or `down`) within `wait`.
fn pages_within(server: &Server, host: &str, wait: Duration) -> bool {
    wait_until(wait, || {
        server
            .kinds_of(host)
            .iter()
            .any(|k| k == "late" || k == "down")
    })
}

/// Waits for `host`'s `down`; the seconds from its `maintenance-ended` to
/// it (a fresh timeout from the window's end), checking that it went
/// through exactly `kinds`.
fn down_after_its_window(server: &Server, host: &str, kinds: &[&str]) -> f64 {
    assert!(
        server.wait_event(host, "down", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(server.kinds_of(host), kinds, "{host}");
    let ended = event(server, host, "maintenance-ended");
    secs_between(&ended, &event(server, host, "down"))
}

#[test]
fn a_hosts_own_window_keeps_its_killed_client_from_paging_then_it_goes_down_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let keys = path_str(&keys);
    let server = Server::start(&["--timeout", "1s", "--key-file", keys]);
    let mut beating = client(&[server.udp], "db-1", &["--key-file", keys]);
    assert!(server.wait_event("db-1", "joined", WAIT));
    let udp = server.udp.to_string();
    let ran = run(
        &[
            "maintenance",
            "--for",
            "3s",
            "--reason",
            "kernel update",
            "--host-id",
            "db-1",
            "--key-file",
            keys,
            &udp,
        ],
        &[],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("maintenance window 1 open for db-1"),
        "{}",
        ran.stdout
    );
    assert_eq!(server.state_of("db-1").as_deref(), Some("maintenance"));
    beating.kill();
    // Silent for longer than three timeouts inside the window: no page.
    assert!(!pages_within(&server, "db-1", Duration::from_millis(2500)));
    assert_eq!(server.state_of("db-1").as_deref(), Some("maintenance"));
    let listed = server.get_json("/api/v1/maintenance");
    assert_eq!(listed[0]["source"], "host");
    assert_eq!(listed[0]["reason"], "kernel update");
    // Still silent at the window's end: a fresh timeout from it, then down.
    let after = down_after_its_window(&server, "db-1", &SILENT_THROUGH);
    let started = event(&server, "db-1", "maintenance-started");
    let window = secs_between(&started, &event(&server, "db-1", "maintenance-ended"));
    assert!((2.9..3.5).contains(&window), "window lasted {window} s");
    // Down one full timeout (1 s) after the window's end: not earlier, and
    // not the window's length later either.
    assert!((0.95..1.6).contains(&after), "down {after} s after the end");
}

/// The events of a host that joined, went silent in a window and stayed
/// silent past its end.
const SILENT_THROUGH: [&str; 5] = [
    "joined",
    "maintenance-started",
    "maintenance-ended",
    "late",
    "down",
];

fn announcement(keys: &std::path::Path, host: &str, nonce: [u8; 8]) -> Vec<u8> {
    let ring = KeyRing::load(keys).expect("key file");
    let signer = Signer::new(ring.newest().expect("a key"), host).expect("signer");
    let sent_at_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;
    let a = Announcement {
        sent_at_micros,
        duration_ms: 60_000,
        nonce,
        host_id: host,
        reason: "",
        tag: None,
    };
    let mut buf = Vec::new();
    wire::encode_announcement(&a, Some(signer.key_id()), &mut buf).expect("encodes");
    signer.sign_tagged(&mut buf);
    buf
}

/// Sends `datagram` to the server; its answer within `wait`, if any.
fn ask(socket: &UdpSocket, server: &Server, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    socket.send_to(datagram, server.udp).expect("send");
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 512];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn a_replayed_or_forged_announcement_confirms_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let other = keygen(dir.path(), "other.toml", &[]);
    let server = Server::start(&["--timeout", "1s", "--key-file", path_str(&keys)]);
    let _beating = client(&[server.udp], "db-2", &["--key-file", path_str(&keys)]);
    assert!(server.wait_event("db-2", "joined", WAIT));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");

    // Signed with another key: no answer, nothing opened.
    let forged = announcement(&other, "db-2", *b"forged!!");
    assert_eq!(
        ask(&socket, &server, &forged, Duration::from_millis(700)),
        None
    );
    assert!(server.dropped("bad_mac") >= 1.0);
    let ran = run(
        &[
            "maintenance",
            "--for",
            "1m",
            "--host-id",
            "db-2",
            "--key-file",
            path_str(&other),
            "--timeout",
            "1s",
            &server.udp.to_string(),
        ],
        &[],
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr
            .contains("no server confirmed the maintenance window within 1s"),
        "{}",
        ran.stderr
    );
    assert_eq!(server.state_of("db-2").as_deref(), Some("up"));

    // The real one: confirmed, signed with the host's key, nonce echoed.
    let real = announcement(&keys, "db-2", *b"nonce-01");
    let answer = ask(&socket, &server, &real, WAIT).expect("a confirmation");
    let confirmation = wire::decode_confirmation(&answer).expect("decodes");
    assert_eq!(confirmation.status, status::OPEN);
    assert_eq!(&confirmation.nonce, b"nonce-01");
    let ring = KeyRing::load(&keys).expect("keys");
    let signer = Signer::new(ring.newest().expect("a key"), "db-2").expect("signer");
    assert!(signer.verify_tagged(&answer, confirmation.tag));
    assert!(server.wait_event("db-2", "maintenance-started", WAIT));

    // The same datagram again: refused as a replay, answered with nothing.
    let replays = server.dropped("replay");
    assert_eq!(
        ask(&socket, &server, &real, Duration::from_millis(700)),
        None
    );
    assert_eq!(server.dropped("replay"), replays + 1.0);
    assert_eq!(
        server
            .get_json("/api/v1/maintenance")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn an_operators_window_over_a_selection_is_listed_ended_early_and_token_guarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = write_file(dir.path(), "token", "s3cret\n");
    let config = write_file(
        dir.path(),
        "lubdub.toml",
        "[server]\napi_token = \"s3cret\"\n",
    );
    let server = Server::start(&["--timeout", "1s", "--config", &config]);
    let _clients = fleet(&server, &["web-1", "web-2", "db-1"]);
    let open = |extra: &[&str]| {
        let mut args = vec!["--for", "1h", "--reason", "rack firmware"];
        args.extend(extra);
        operator(&server, &args)
    };
    let refused = open(&["--host", "web-*"]);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    let ran = open(&[
        "--host",
        "web-*",
        "--network",
        "127.0.0.0/8",
        "--token-file",
        &token,
    ]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("2 host(s) web-1,web-2 (rack firmware)"),
        "{}",
        ran.stdout
    );
    for host in ["web-1", "web-2"] {
        assert_eq!(server.state_of(host).as_deref(), Some("maintenance"));
    }
    assert_eq!(server.state_of("db-1").as_deref(), Some("up"));
    assert_eq!(server.get_json("/api/v1/summary")["maintenance"], 2);
    let listed = operator(&server, &["--list"]);
    assert!(
        listed.stdout.contains("window 1 (api)"),
        "{}",
        listed.stdout
    );
    // Beating on through the window: still in maintenance (not back, never
    // gone); ended early through the API: up again.
    let end = || operator(&server, &["--end", "1", "--token-file", &token]);
    let ended = end();
    assert_eq!(ended.code, Some(0), "{}", ended.stderr);
    assert!(server.wait_event("web-1", "maintenance-ended", WAIT));
    assert!(wait_until(WAIT, || server.state_of("web-2").as_deref() == Some("up")));
    assert_eq!(open_windows(&server), 0);
    let again = end();
    assert!(again.stderr.contains("404"), "{}", again.stderr);
}

/// How many windows `GET /api/v1/maintenance` lists.
fn open_windows(server: &Server) -> usize {
    let listed = server.get_json("/api/v1/maintenance");
    listed.as_array().map_or(0, Vec::len)
}

#[test]
fn an_open_window_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &["--timeout", "1s"]);
    let mut clients = fleet(&server, &["web-9"]);
    let ran = operator(&server, &["--host", "web-9", "--for", "1h"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    clients[0].kill();
    server.stop();
    let server = Server::start_in(&data, &["--timeout", "1s"]);
    assert_eq!(server.state_of("web-9").as_deref(), Some("maintenance"));
    let listed = server.get_json("/api/v1/maintenance");
    assert_eq!(listed[0]["id"], 1);
    assert_eq!(listed[0]["hosts"][0], "web-9");
    // Silent for three timeouts after the restart: still no page.
    assert!(!pages_within(&server, "web-9", Duration::from_secs(3)));
    assert_eq!(server.state_of("web-9").as_deref(), Some("maintenance"));
    // Window ids go on from the stored ones.
    let next = operator(&server, &["--host", "web-9", "--for", "2h"]);
    assert!(next.stdout.contains("window 2 (api)"), "{}", next.stdout);
}

/// A server (1 s timeout) with clients web-1 (`team=web`) and db-1
/// (`team=db`), both known with their labels.
fn labelled_fleet() -> (Server, Vec<crate::util::Proc>) {
    let server = Server::start(&["--timeout", "1s"]);
    let clients = [("web-1", "team=web"), ("db-1", "team=db")]
        .map(|(id, label)| client(&[server.udp], id, &["--label", label]));
    for (id, team) in [("web-1", "web"), ("db-1", "db")] {
        let path = format!("/api/v1/hosts?label=team={team}");
        assert!(
            wait_until(WAIT, || server.ids(&path) == [id]),
            "{id} labelled: {:?}",
            server.events()
        );
    }
    (server, clients.into())
}

#[test]
fn an_api_window_over_a_label_quiets_the_labelled_host_until_its_end() {
    let (server, mut clients) = labelled_fleet();
    // As in the issue: {"labels": {"team": "web"}, "for": "3s"}.
    let ran = operator(&server, &["--label", "team=web", "--for", "3s"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("1 host(s) web-1"), "{}", ran.stdout);
    // A host of the team that starts after the window opened is in it too
    // once it falls silent. See: issue 16.
    let mut late_joiner = client(&[server.udp], "web-2", &["--label", "team=web"]);
    assert!(wait_until(WAIT, || server
        .ids("/api/v1/hosts?label=team=web")
        .contains(&"web-2".to_string())));
    for c in &mut clients {
        c.kill();
    }
    late_joiner.kill();
    // The other team pages; the labelled ones do not.
    assert!(
        server.wait_event("db-1", "down", WAIT),
        "{:?}",
        server.events()
    );
    for host in ["web-1", "web-2"] {
        assert!(
            !server
                .kinds_of(host)
                .iter()
                .any(|k| k == "late" || k == "down")
        );
        assert_eq!(
            server.state_of(host).as_deref(),
            Some("maintenance"),
            "{host}"
        );
    }
    // At the window's end both go down one fresh timeout later.
    for host in ["web-1", "web-2"] {
        let after = down_after_its_window(&server, host, &SILENT_THROUGH);
        assert!(
            (0.95..1.6).contains(&after),
            "{host} down {after} s after the end"
        );
    }
    let started = event(&server, "web-1", "maintenance-started");
    let ended = event(&server, "web-1", "maintenance-ended");
    let window = secs_between(&started, &ended);
    assert!((2.9..3.5).contains(&window), "window lasted {window} s");
}

#[test]
fn an_api_window_over_a_label_ended_early_lets_the_silent_host_go_down_on_time() {
    let (server, mut clients) = labelled_fleet();
    let ran = operator(&server, &["--label", "team=web", "--for", "1h"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    clients[0].kill();
    assert!(!pages_within(&server, "web-1", Duration::from_millis(1500)));
    assert_eq!(server.kinds_of("db-1"), ["joined"], "db-1 beats on");
    let ended = server.request("DELETE", "/api/v1/maintenance/1", None, None);
    assert_eq!(ended.status, 200, "{}", ended.body);
    let after = down_after_its_window(&server, "web-1", &SILENT_THROUGH);
    assert!((0.95..1.6).contains(&after), "down {after} s after the end");
    assert_eq!(server.state_of("db-1").as_deref(), Some("up"));
}

#[test]
fn a_reason_that_is_not_one_line_of_text_is_refused_at_every_entry() {
    // See: issue 16 (a NUL in the reason broke the exec hook).
    let server = Server::start(&["--timeout", "1s"]);
    let _clients = fleet(&server, &["web-1"]);
    let body = r#"{"hosts": ["web-1"], "for": "1h", "reason": "a\u0000b"}"#;
    let answer = raw_http(
        server.http,
        &format!(
            "POST /api/v1/maintenance HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("reason: control character"), "{answer}");
    for form in [&["--server", "127.0.0.1:9"][..], &["127.0.0.1:9"][..]] {
        let mut args = vec!["maintenance", "--for", "1h", "--reason", "two\nlines"];
        args.extend(form);
        let ran = run(&args, &[]);
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
        assert!(
            ran.stderr.contains("--reason: control character"),
            "{}",
            ran.stderr
        );
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let a = Announcement {
        sent_at_micros: 1,
        duration_ms: 60_000,
        nonce: *b"nul-here",
        host_id: "web-1",
        reason: "nul\0",
        tag: None,
    };
    let mut datagram = Vec::new();
    wire::encode_announcement(&a, None, &mut datagram).expect("encodes");
    let malformed = server.dropped("malformed");
    assert_eq!(
        ask(&socket, &server, &datagram, Duration::from_millis(700)),
        None
    );
    assert_eq!(server.dropped("malformed"), malformed + 1.0);
    assert_eq!(open_windows(&server), 0);
    assert_eq!(server.state_of("web-1").as_deref(), Some("up"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "lubdub.toml",
        "[[server.maintenance]]\nschedule = \"0 2 * * *\"\nduration = \"1h\"\ntimezone = \"UTC\"\nhosts = [\"*\"]\nreason = \"a\\u0007b\"\n",
    );
    let refused = run_server(&config, &dir.path().join("data"));
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("reason: control character"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_host_that_says_goodbye_in_its_window_is_left() {
    // See: issue 16 (a goodbye in a window was swallowed).
    let server = Server::start(&["--timeout", "1s"]);
    let clients = fleet(&server, &["web-3"]);
    let ran = operator(&server, &["--host", "web-3", "--for", "1h"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    clients[0].signal(libc::SIGTERM); // a clean stop says goodbye
    assert!(
        server.wait_event("web-3", "left", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(server.state_of("web-3").as_deref(), Some("left"));
    assert_eq!(server.get_json("/api/v1/summary")["maintenance"], 0);
    assert_eq!(
        server.kinds_of("web-3"),
        ["joined", "maintenance-started", "left"]
    );
}
