//! The core: beats, per-host deadlines and state changes, end to end.
//! See: issue 2.

use crate::util::{Proc, Server, client, free_udp_port, run, thump, wait_until};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn fleet_of_twenty_exact_failures_recovery_and_goodbye() {
    // 1 s timeout: late after 500 ms, down after 1 s, with 100 ms beats; a
    // loaded CI machine can delay a beat a little without a false alarm.
    let server = Server::start(&["--timeout", "1s"]);
    let ids: Vec<String> = (0..20).map(|i| format!("host-{i:02}")).collect();
    let mut clients: BTreeMap<String, Proc> = ids
        .iter()
        .map(|id| (id.clone(), client(&[server.udp], id, &[])))
        .collect();
    assert!(
        wait_until(WAIT, || ids
            .iter()
            .all(|id| server.kinds_of(id) == ["joined"])),
        "all 20 joined: {:?}",
        server.events()
    );
    let hosts = server.get_json("/api/v1/hosts");
    let hosts = hosts.as_array().expect("array");
    assert_eq!(hosts.len(), 20);
    for host in hosts {
        assert_eq!(host["state"], "up");
        assert!(
            host["addr"]
                .as_str()
                .expect("addr")
                .starts_with("127.0.0.1:")
        );
        assert!(host["last_seen"].as_str().expect("rfc3339").ends_with('Z'));
    }

    let killed: Vec<String> = ids[..5].to_vec();
    let stopped_at = Instant::now();
    for id in &killed {
        clients.get_mut(id).expect("client").kill();
    }
    assert!(
        wait_until(WAIT, || killed
            .iter()
            .all(|id| server.kinds_of(id) == ["joined", "late", "down"])),
        "killed clients go late then down: {:?}",
        server.events()
    );
    let detected_in = stopped_at.elapsed();
    assert!(
        detected_in < Duration::from_secs(3),
        "down within timeout plus margin, took {detected_in:?}"
    );
    for event in server.events().iter().filter(|e| e.kind == "down") {
        // Silence counted from the last beat: the timeout, to within a beat
        // and scheduling noise, never a whole scan period later.
        assert!(
            (1.0..1.2).contains(&event.silent_secs),
            "down reported at {event:?}"
        );
    }
    for id in &ids[5..] {
        assert_eq!(
            server.kinds_of(id),
            ["joined"],
            "{id} must not change state"
        );
    }

    // A killed client restarted: recovered.
    let back = &killed[0];
    clients.insert(back.clone(), client(&[server.udp], back, &[]));
    assert!(
        server.wait_event(back, "recovered", WAIT),
        "{:?}",
        server.kinds_of(back)
    );
    assert_eq!(server.state_of(back).as_deref(), Some("up"));

    // A client stopped with SIGTERM says goodbye: left, never down.
    let leaver = &ids[10];
    let mut proc = clients.remove(leaver).expect("client");
    proc.signal(libc::SIGTERM);
    assert!(proc.wait_exit(WAIT).success(), "client exits 0 on SIGTERM");
    assert!(server.wait_event(leaver, "left", WAIT));
    std::thread::sleep(Duration::from_millis(1500)); // longer than the timeout
    assert_eq!(server.kinds_of(leaver), ["joined", "left"]);
    assert_eq!(server.state_of(leaver).as_deref(), Some("left"));
    for id in &ids[5..] {
        if id != leaver {
            assert_eq!(
                server.kinds_of(id),
                ["joined"],
                "{id} must not change state"
            );
        }
    }
}

#[test]
fn seed_thump_is_a_host_keyed_by_ip() {
    let server = Server::start(&["--timeout", "1s"]);
    let socket = thump(&server);
    let hosts = server.get_json("/api/v1/hosts");
    let host = &hosts[0];
    assert_eq!(
        (host["id"].as_str(), host["legacy"].as_bool()),
        (Some("127.0.0.1"), Some(true))
    );
    assert_eq!(host["addr"], socket.local_addr().expect("addr").to_string());
    // PyHB (the original recipe) is a beat too, from the same host; garbage is not.
    socket.send_to(b"garbage!", server.udp).expect("send");
    socket.send_to(b"PyHB", server.udp).expect("send");
    assert!(wait_until(
        WAIT,
        || server.get_json("/api/v1/hosts")[0]["beats"] == 2
    ));
    assert_eq!(
        server.get_json("/api/v1/hosts").as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        server.metric("lubdub_packets_dropped_total{reason=\"malformed\"}"),
        Some(1.0)
    );
    assert_eq!(server.metric("lubdub_legacy_beats_total"), Some(2.0));
    assert!(server.wait_event("127.0.0.1", "down", WAIT));
}

#[test]
fn legacy_client_feeds_a_seed_style_listener() {
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind");
    listener.set_read_timeout(Some(WAIT)).expect("timeout");
    let port = listener.local_addr().expect("addr").port().to_string();
    // The seed's positional form: SERVERIP PORT.
    let _client = Proc::spawn(&[
        "client",
        "127.0.0.1",
        &port,
        "--legacy",
        "--interval",
        "100ms",
    ]);
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let (len, _) = listener.recv_from(&mut buf).expect("a beat arrives");
        assert_eq!(&buf[..len], b"Thump!");
    }
}

#[test]
fn client_started_before_its_server_is_picked_up() {
    let udp = format!("127.0.0.1:{}", free_udp_port());
    let _client = Proc::spawn(&["client", &udp, "--interval", "100ms", "--host-id", "early"]);
    std::thread::sleep(Duration::from_millis(300)); // beats into the void first
    let server = Server::start(&["--listen", &udp, "--timeout", "1s"]);
    assert!(
        server.wait_event("early", "joined", WAIT),
        "{:?}",
        server.events()
    );
}

#[test]
fn server_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = Server::start(&[]);
        let _client = client(&[server.udp], "a", &[]);
        assert!(server.wait_event("a", "joined", WAIT));
        server.proc.signal(signal);
        let status = server.proc.wait_exit(WAIT);
        assert!(
            status.success(),
            "exit 0 on signal {signal}, got {status:?}"
        );
    }
}

#[test]
fn silent_report_lists_silent_hosts_periodically() {
    let server = Server::start(&["--timeout", "300ms", "--silent-report", "200ms"]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(b"Thump!", server.udp).expect("send");
    let line = server
        .proc
        .wait_line(WAIT, |l| l.starts_with("silent hosts (1): 127.0.0.1 ("));
    assert!(line.is_some(), "{:?}", server.proc.stdout());
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    // (arguments, environment, exit code, words the one line must hold).
    // Clap's usage errors and a bad LUBDUB_LOG_FORMAT exit 2 (clap's
    // convention); settings that parse but are refused exit 1.
    type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        i32,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            &["server", "--timeout", "soon"],
            &[],
            2,
            &["--timeout", "soon"],
        ),
        (
            &["server", "--timout", "3s"],
            &[],
            2,
            &[
                "--timout",
                "tip: a similar argument exists: '--timeout'",
                "lubdub server --help",
            ],
        ),
        (
            &["server", "--listen", "not-an-address"],
            &[],
            2,
            &["--listen"],
        ),
        (
            &["server", "30", "notaport"],
            &[],
            2,
            &["notaport", "[PORT]"],
        ),
        (&["frobnicate"], &[], 2, &["frobnicate", "lubdub --help"]),
        (&["sever"], &[], 2, &["similar subcommand exists: 'server'"]),
        (&["loadgen"], &[], 2, &["<TARGET>", "lubdub loadgen --help"]),
        (
            &["status", "--state", "bogus"],
            &[],
            2,
            &["bogus", "possible values: up"],
        ),
        (
            &["-q", "-v", "client", "h"],
            &[],
            2,
            &["--quiet", "--verbose"],
        ),
        (
            &["client", "h"],
            &[("LUBDUB_LOG_FORMAT", "xml")],
            2,
            &["LUBDUB_LOG_FORMAT", "xml"],
        ),
        (
            &["client", "127.0.0.1", "--interval", "0s"],
            &[],
            1,
            &["interval"],
        ),
        (&["client", "host:notaport"], &[], 1, &["host:notaport"]),
    ];
    for (args, env, code, words) in cases {
        let ran = run(args, env);
        assert_eq!(ran.code, Some(*code), "{args:?}: {ran:?}");
        assert!(ran.stdout.is_empty(), "{args:?}: {ran:?}");
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {lines:#?}");
        assert!(lines[0].starts_with("lubdub: "), "{args:?}: {lines:?}");
        for word in *words {
            assert!(
                lines[0].contains(word),
                "{args:?}: {lines:?} lacks {word:?}"
            );
        }
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut proc = Proc::spawn(&["server", "--listen", &addr, "--http", "127.0.0.1:0"]);
    assert!(!proc.wait_exit(WAIT).success());
    let stderr = proc.stderr().join("\n");
    assert!(
        stderr.contains(&format!("cannot bind udp on {addr}")),
        "{stderr}"
    );
}

#[test]
fn ipv6_loopback_beats_arrive() {
    let probe = std::net::UdpSocket::bind("[::1]:0");
    assert!(probe.is_ok(), "this test needs IPv6 loopback, which CI has");
    let server = Server::start(&["--listen", "[::1]:0", "--timeout", "1s"]);
    let _client = client(&[server.udp], "v6-host", &[]);
    assert!(
        server.wait_event("v6-host", "joined", WAIT),
        "{:?}",
        server.events()
    );
    let hosts = server.get_json("/api/v1/hosts");
    assert!(
        hosts[0]["addr"]
            .as_str()
            .expect("addr")
            .starts_with("[::1]:")
    );
}

#[test]
fn config_file_then_flags_and_print_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lubdub.toml");
    std::fs::write(&path, "[server]\ntimeout = \"45s\"\nlate_after = \"20s\"\n").expect("write");
    let path = path.to_str().expect("utf-8");
    let mut proc = Proc::spawn(&[
        "server",
        "--config",
        path,
        "--late-after",
        "10s",
        "--print-config",
    ]);
    assert!(proc.wait_exit(WAIT).success());
    let printed = proc.stdout().join("\n");
    assert!(
        printed.contains("timeout = \"45s\""),
        "file sets the timeout: {printed}"
    );
    assert!(
        printed.contains("late_after = \"10s\""),
        "a flag beats the file: {printed}"
    );

    std::fs::write(dir.path().join("bad.toml"), "[server]\ntimout = \"45s\"\n").expect("write");
    let bad = dir.path().join("bad.toml");
    let mut proc = Proc::spawn(&["server", "--config", bad.to_str().expect("utf-8")]);
    assert!(!proc.wait_exit(WAIT).success());
    let stderr = proc.stderr();
    assert_eq!(stderr.len(), 1, "one line: {stderr:?}");
    assert!(
        stderr[0].contains("line 2") && stderr[0].contains("timout"),
        "{stderr:?}"
    );
}
