//! Real network faults, in network namespaces the tests make: the server
//! and three clients each in their own namespace, joined by one veth pair
//! per client, each with its own address in a private test subnet that
//! exists only inside these namespaces. Cutting one link makes exactly
//! that host `down`; restoring it makes it `recovered`; random loss on a
//! link (nftables, both ways) raises no `down`. And a client that beats to
//! a name resolves it again when sending fails. See: issue 8, issue 14.
//!
//! Needs root, network namespaces, veth and nftables: where any is
//! missing the test fails (we run as root here and in CI). `ip`
//! (iproute2) and `nft` (nftables) are installed by scripts/test.

use crate::util::{
    BIN, EventLine, Namespaces, Proc, ip, must_run, parse_event, path_str, wait_until,
};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const CLIENTS: usize = 3;
/// The UDP port of servers inside the namespaces (nothing else is there).
const PORT: u16 = 43278;

// The namespace kit, shared with `probe.rs`: servers and clients in
// namespaces, veth links, nftables loss.

/// Starts `lubdub server` inside `ns` on UDP `listen`, with its data in
/// `data` and `extra` flags, and waits until it is ready (its HTTP API is
/// on the namespace's own loopback, out of the test's reach: it is read
/// through stdout, or a program run in the namespace: [`http_of`]).
pub(crate) fn server_in(ns: &str, listen: &str, data: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "netns",
        "exec",
        ns,
        BIN,
        "server",
        "--listen",
        listen,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        path_str(data),
    ];
    args.extend(extra);
    let server = Proc::spawn_program("ip", &args);
    server.wait_listening();
    server
}

/// `lubdub client` inside `ns`, beating every 100 ms as `host` to `target`.
pub(crate) fn client_in(ns: &str, target: &str, host: &str) -> Proc {
    Proc::spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            BIN,
            "client",
            "--interval",
            "100ms",
            "--host-id",
            host,
            target,
        ],
    )
}

/// Events of `host` in the server's output so far.
pub(crate) fn events(server: &Proc, host: &str) -> Vec<EventLine> {
    server
        .stdout()
        .iter()
        .filter_map(|l| parse_event(l))
        .filter(|e| e.host == host)
        .collect()
}

/// Event kinds of `host` in the server's output so far.
fn kinds(server: &Proc, host: &str) -> Vec<String> {
    events(server, host).into_iter().map(|e| e.kind).collect()
}

fn went_down(server: &Proc, host: &str) -> bool {
    kinds(server, host).iter().any(|k| k == "down")
}

/// A veth link between `a` (address `a_addr`, device `a_dev`) and `b`.
pub(crate) fn link(a: &str, a_dev: &str, a_addr: &str, b: &str, b_dev: &str, b_addr: &str) {
    ip(&[
        "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b,
    ]);
    ip(&["-n", a, "addr", "add", a_addr, "dev", a_dev]);
    ip(&["-n", b, "addr", "add", b_addr, "dev", b_dev]);
    ip(&["-n", a, "link", "set", a_dev, "up"]);
    ip(&["-n", b, "link", "set", b_dev, "up"]);
}

/// Makes `clients + 1` namespaces, the first the server's, and joins each
/// client `i` to the server by its own veth pair: `vc{i}` at 198.18.i.1 on
/// the server's side, `eth0` at 198.18.i.2 in the client's.
pub(crate) fn star(clients: usize) -> Namespaces {
    let guard = Namespaces::new(clients + 1);
    let (server_ns, client_ns) = (&guard.0[0], &guard.0[1..]);
    for (i, ns) in client_ns.iter().enumerate() {
        // 198.18.0.0/15 is reserved for network tests (RFC 2544); these
        // addresses exist only inside the namespaces made here.
        link(
            server_ns,
            &format!("vc{i}"),
            &format!("198.18.{i}.1/24"),
            ns,
            "eth0",
            &format!("198.18.{i}.2/24"),
        );
    }
    guard
}

/// Runs `nft ARGS` in `ns` (ARGS split at spaces).
pub(crate) fn nft(ns: &str, args: &str) -> String {
    let mut all = vec!["netns", "exec", ns, "nft"];
    all.extend(args.split(' '));
    must_run("ip", &all)
}

/// Drops `percent` % of the packets on `dev` in namespace `ns`, in one
/// direction (`input` or `output`), counting what it drops.
pub(crate) fn random_loss(ns: &str, hook: &str, dev: &str, percent: u32) {
    let which = if hook == "input" {
        "iifname"
    } else {
        "oifname"
    };
    nft(ns, &format!("add table inet loss_{hook}"));
    nft(
        ns,
        &format!("add chain inet loss_{hook} c {{ type filter hook {hook} priority 0 ; }}"),
    );
    nft(
        ns,
        &format!(
            "add rule inet loss_{hook} c {which} {dev} numgen random mod 100 < {percent} counter drop"
        ),
    );
}

/// Packets dropped so far by the [`random_loss`] rule of `hook` in `ns`.
fn lost(ns: &str, hook: &str) -> u64 {
    let listed = nft(ns, &format!("list table inet loss_{hook}"));
    listed
        .split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listed}"))
}

/// The HTTP address a server printed when ready.
pub(crate) fn http_of(server: &Proc) -> String {
    server
        .stdout()
        .iter()
        .find_map(|l| {
            Some(
                l.split_once(" http=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .expect("http address")
}

#[test]
fn cut_link_is_down_exactly_and_restored_link_recovers() {
    let guard = star(CLIENTS);
    let (server_ns, client_ns) = (&guard.0[0], &guard.0[1..]);
    let data = tempfile::tempdir().expect("tempdir");
    // 1 s timeout with 100 ms beats: generous on a loaded machine.
    let server = server_in(
        server_ns,
        &format!("0.0.0.0:{PORT}"),
        data.path(),
        &["--timeout", "1s"],
    );
    let hosts: Vec<String> = (0..CLIENTS).map(|i| format!("ns-host-{i}")).collect();
    let _clients: Vec<Proc> = client_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| client_in(ns, &format!("198.18.{i}.1:{PORT}"), &hosts[i]))
        .collect();
    assert!(
        wait_until(WAIT, || hosts
            .iter()
            .all(|h| kinds(&server, h).contains(&"joined".into()))),
        "every host joins over its own link: {:?}",
        server.stdout()
    );

    // Cut host 1's link: exactly it goes down.
    ip(&["-n", server_ns, "link", "set", "vc1", "down"]);
    assert!(
        wait_until(WAIT, || went_down(&server, &hosts[1])),
        "the cut host goes down: {:?}",
        server.stdout()
    );
    // Restore it: recovered.
    ip(&["-n", server_ns, "link", "set", "vc1", "up"]);
    assert!(
        wait_until(WAIT, || kinds(&server, &hosts[1])
            .contains(&"recovered".into())),
        "the restored host recovers: {:?}",
        server.stdout()
    );

    // Random loss on host 2's link, both ways: 10 % as the client sends,
    // 10 % as the server receives (~19 % of beats lost) is no outage.
    random_loss(&client_ns[2], "output", "eth0", 10);
    random_loss(server_ns, "input", "vc2", 10);
    // 5 s of lossy beats (~50 beats, ~10 lost).
    std::thread::sleep(Duration::from_secs(5));
    let (sent_lost, received_lost) = (lost(&client_ns[2], "output"), lost(server_ns, "input"));
    assert!(
        sent_lost > 0 && received_lost > 0,
        "loss applied both ways: {sent_lost} and {received_lost} dropped"
    );
    // The server counted them: from `lubdub status`, run beside it.
    let http = http_of(&server);
    let mut status = Proc::spawn_program(
        "ip",
        &[
            "netns", "exec", server_ns, BIN, "status", "--server", &http, "--json",
        ],
    );
    assert!(status.wait_exit(WAIT).success(), "{:?}", status.stderr());
    let listed: serde_json::Value =
        serde_json::from_str(&status.stdout().join("\n")).expect("status json");
    let lossy = listed
        .as_array()
        .and_then(|all| all.iter().find(|h| h["id"] == hosts[2].as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(lossy["losses"].as_u64() > Some(0), "{listed}");
    for host in &hosts {
        let expected = usize::from(host == &hosts[1]);
        let downs = kinds(&server, host).iter().filter(|k| *k == "down").count();
        assert_eq!(downs, expected, "{host}: {:?}", kinds(&server, host));
    }
}

#[test]
fn a_client_resolves_its_server_name_again_when_sending_fails() {
    let guard = Namespaces::new(1);
    let ns = &guard.0[0];
    // A second address in the namespace, on a veth pair of its own.
    ip(&[
        "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    ip(&["-n", ns, "addr", "add", "198.18.99.1/24", "dev", "v0"]);
    ip(&["-n", ns, "link", "set", "v0", "up"]);
    ip(&["-n", ns, "link", "set", "v1", "up"]);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let first = server_in(ns, &format!("198.18.99.1:{PORT}"), data_a.path(), &[]);
    let second = server_in(ns, &format!("127.0.0.1:{PORT}"), data_b.path(), &[]);

    // The name is the test's: a hosts file of its own, bound over
    // /etc/hosts for the client only (`ip netns exec` gives it a mount
    // namespace of its own, so nothing else sees it).
    let tmp = tempfile::tempdir().expect("tempdir");
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, "198.18.99.1 lubdub-test-server\n").expect("write hosts");
    let target = format!("lubdub-test-server:{PORT}");
    let client = Proc::spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
            path_str(&hosts),
            BIN,
            "client",
            "--interval",
            "100ms",
            "--host-id",
            "moving",
            &target,
        ],
    );
    assert!(
        wait_until(WAIT, || kinds(&first, "moving") == ["joined"]),
        "{:?} {:?}",
        first.stdout(),
        client.stderr()
    );

    // The name moves (in place: the bind mount follows the file), and the
    // old address goes away: sending fails, and the client looks again.
    std::fs::write(&hosts, "127.0.0.1 lubdub-test-server\n").expect("rewrite hosts");
    ip(&["-n", ns, "addr", "del", "198.18.99.1/24", "dev", "v0"]);
    assert!(
        wait_until(WAIT, || kinds(&second, "moving") == ["joined"]),
        "the client follows the name: {:?} {:?}",
        second.stdout(),
        client.stderr()
    );
}
