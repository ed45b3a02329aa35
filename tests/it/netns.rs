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

use crate::util::{BIN, Namespaces, Proc, ip, must_run, parse_event, path_str, wait_until};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const CLIENTS: usize = 3;
/// The UDP port of servers inside the namespaces (nothing else is there).
const PORT: u16 = 43278;

/// Starts `lubdub server` inside `ns` on UDP `listen`, with its data in
/// `data`, and waits until it is ready (its HTTP API is on the
/// namespace's own loopback, out of the test's reach: it is read through
/// stdout, or `lubdub status` run in the namespace).
fn server_in(ns: &str, listen: &str, data: &Path) -> Proc {
    let server = Proc::spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            BIN,
            "server",
            "--listen",
            listen,
            "--http",
            "127.0.0.1:0",
            "--timeout",
            "1s",
            "--data-dir",
            path_str(data),
        ],
    );
    server.wait_listening();
    server
}

/// Event kinds of `host` in the server's output so far.
fn kinds(server: &Proc, host: &str) -> Vec<String> {
    server
        .stdout()
        .iter()
        .filter_map(|l| parse_event(l))
        .filter(|e| e.host == host)
        .map(|e| e.kind)
        .collect()
}

fn went_down(server: &Proc, host: &str) -> bool {
    kinds(server, host).iter().any(|k| k == "down")
}

/// Drops `percent` % of the packets on `dev` in namespace `ns`, in one
/// direction (`input` or `output`), counting what it drops.
fn random_loss(ns: &str, hook: &str, dev: &str, percent: u32) {
    let table = format!("loss_{hook}");
    let chain = format!("{{ type filter hook {hook} priority 0; }}");
    let which = if hook == "input" {
        "iifname"
    } else {
        "oifname"
    };
    let rule = format!("{which} \"{dev}\" numgen random mod 100 < {percent} counter drop");
    must_run(
        "ip",
        &["netns", "exec", ns, "nft", "add", "table", "inet", &table],
    );
    must_run(
        "ip",
        &[
            "netns", "exec", ns, "nft", "add", "chain", "inet", &table, "c", &chain,
        ],
    );
    let mut args = vec![
        "netns", "exec", ns, "nft", "add", "rule", "inet", &table, "c",
    ];
    args.extend(rule.split(' '));
    must_run("ip", &args);
}

/// Packets dropped so far by the [`random_loss`] rule of `hook` in `ns`.
fn lost(ns: &str, hook: &str) -> u64 {
    let table = format!("loss_{hook}");
    let listed = must_run(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", "inet", &table],
    );
    listed
        .split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listed}"))
}

#[test]
fn cut_link_is_down_exactly_and_restored_link_recovers() {
    let guard = Namespaces::new(CLIENTS + 1);
    let (server_ns, client_ns) = (&guard.0[0], &guard.0[1..]);
    for (i, ns) in client_ns.iter().enumerate() {
        // 198.18.0.0/15 is reserved for network tests (RFC 2544); these
        // addresses exist only inside the namespaces made here.
        let link = format!("vc{i}");
        ip(&[
            "-n", server_ns, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ]);
        let server_addr = format!("198.18.{i}.1/24");
        let client_addr = format!("198.18.{i}.2/24");
        ip(&["-n", server_ns, "addr", "add", &server_addr, "dev", &link]);
        ip(&["-n", ns, "addr", "add", &client_addr, "dev", "eth0"]);
        ip(&["-n", server_ns, "link", "set", &link, "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    let data = tempfile::tempdir().expect("tempdir");
    // 1 s timeout with 100 ms beats: generous on a loaded machine.
    let server = server_in(server_ns, &format!("0.0.0.0:{PORT}"), data.path());
    let hosts: Vec<String> = (0..CLIENTS).map(|i| format!("ns-host-{i}")).collect();
    let _clients: Vec<Proc> = client_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let target = format!("198.18.{i}.1:{PORT}");
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
                    &hosts[i],
                    &target,
                ],
            )
        })
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
    let http = server
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
        .expect("http address");
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
    let first = server_in(ns, &format!("198.18.99.1:{PORT}"), data_a.path());
    let second = server_in(ns, &format!("127.0.0.1:{PORT}"), data_b.path());

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
