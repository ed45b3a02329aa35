//! The client on its own thread-and-signals loop (no async runtime): names
//! resolved on a helper thread, SIGINT as well as SIGTERM, the seed form.

use crate::util::{BIN, Namespaces, Proc, Server, client, wait_until};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn sigint_sends_a_goodbye_and_exits_zero() {
    let server = Server::start(&["--timeout", "1s"]);
    let mut leaving = client(&[server.udp], "int-1", &[]);
    let _staying = client(&[server.udp], "int-2", &[]);
    assert!(server.wait_event("int-1", "joined", WAIT));
    assert!(server.wait_event("int-2", "joined", WAIT));
    leaving.signal(libc::SIGINT);
    assert!(leaving.wait_exit(WAIT).success(), "exit 0 on SIGINT");
    assert!(
        server.wait_event("int-1", "left", WAIT),
        "{:?}",
        server.events()
    );
    // The other client beats on, for longer than a server timeout.
    let beats = || server.get_json("/api/v1/hosts/int-2")["beats"].as_u64();
    let before = beats().expect("int-2 is listed");
    assert!(wait_until(WAIT, || beats() >= Some(before + 15)));
    assert_eq!(server.kinds_of("int-2"), ["joined"]);
}

#[test]
fn a_name_is_resolved_and_beats_arrive() {
    // Dual-stack, so `localhost` arrives whichever address it resolves to.
    let probe = std::net::UdpSocket::bind("[::1]:0");
    assert!(probe.is_ok(), "this test needs IPv6 loopback, which CI has");
    let server = Server::start(&["--listen", "[::]:0", "--timeout", "1s"]);
    let target = format!("localhost:{}", server.udp.port());
    let _client = Proc::spawn(&[
        "client",
        &target,
        "--interval",
        "100ms",
        "--host-id",
        "named",
    ]);
    assert!(
        server.wait_event("named", "joined", WAIT),
        "{:?}",
        server.events()
    );
    // Still beating well after start-up (and after the client released
    // its start-up memory): no late, no down.
    let beats = |server: &Server| {
        let hosts = server.get_json("/api/v1/hosts");
        hosts[0]["beats"].as_u64().unwrap_or(0)
    };
    let before = beats(&server);
    assert!(wait_until(WAIT, || beats(&server) >= before + 5));
    assert_eq!(server.kinds_of("named"), ["joined"]);
}

#[test]
fn help_and_errors_come_from_the_full_cli() {
    // The client's command line is parsed by a cut-down parser first; help
    // and errors must still be the whole CLI's.
    let mut help = Proc::spawn(&["client", "--help"]);
    assert!(help.wait_exit(WAIT).success());
    let text = help.stdout().join("\n");
    assert!(text.contains("Usage: lubdub client"), "{text}");
    assert!(text.contains("--key-file"), "{text}");
    let mut bad = Proc::spawn(&["client", "127.0.0.1", "--no-such-flag"]);
    assert!(!bad.wait_exit(WAIT).success());
    let stderr = bad.stderr().join("\n");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    // Global flags before the subcommand still work.
    let mut quiet = Proc::spawn(&["-q", "client", "127.0.0.1", "--print-config"]);
    assert!(quiet.wait_exit(WAIT).success());
    assert!(quiet.stdout().iter().any(|l| l.contains("127.0.0.1")));
}

#[test]
fn quiet_keeps_the_warnings_and_nothing_else() {
    // In an empty network namespace nothing routes to 198.18.0.1: every
    // send fails at once (a warning), and no packet leaves.
    let guard = Namespaces::new(1);
    let run_client = |quiet: bool| -> Vec<String> {
        let mut args = vec!["netns", "exec", guard.0[0].as_str(), BIN];
        if quiet {
            args.push("-q");
        }
        args.extend(["client", "198.18.0.1:9", "--interval", "100ms"]);
        // `ip netns exec` execs the client: the pid is the client's.
        let mut c = Proc::spawn_program("ip", &args);
        assert!(
            c.wait_stderr(WAIT, "cannot send beat"),
            "quiet={quiet}: {:?}",
            c.stderr()
        );
        c.signal(libc::SIGTERM);
        assert!(c.wait_exit(WAIT).success());
        c.stderr()
    };
    let loud = run_client(false);
    assert!(
        loud.iter()
            .any(|l| l.contains(" INFO ") && l.contains("beating")),
        "{loud:?}"
    );
    let quiet = run_client(true);
    assert!(
        quiet.iter().all(|l| l.contains(" WARN ")),
        "only warnings: {quiet:?}"
    );
}
