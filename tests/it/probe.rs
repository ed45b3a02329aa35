//! Probing suspected hosts (issue 15), for real: clients in network
//! namespaces on lossy veth links (nftables drops packets at random in
//! both directions), a client behind a masquerading router, and on
//! loopback forged and replayed answers and forged probes.
//!
//! Timing comes from the settings: 100 ms beats, a 300 ms timeout and
//! `late` at 180 ms, so a host that loses two beats in a row is `down`
//! unless probes say otherwise; probes go half a beat (50 ms) apart, at
//! most 20. Waits are for conditions, with generous deadlines (a loaded
//! 2-core machine).

use crate::netns::{self, client_in, events, http_of, link, nft, random_loss};
use crate::util::{
    EventLine, Namespaces, Proc, Server, beat, ip, keygen, must_run, packet, path_str, run_seq,
    signer, wait_until,
};
use lubdub::protocol::{self, flags, probe};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const PORT: u16 = 43278;
/// The server's detector settings in these tests.
const DETECTOR: [&str; 4] = ["--timeout", "300ms", "--late-after", "180ms"];
/// The longest silence before a killed client's `down` that the settings
/// allow: `late` at 180 ms, then at most 20 probes 50 ms apart, the last
/// unanswered 50 ms after it is sent.
const DOWN_BOUND_SECS: f64 = 0.18 + 21.0 * 0.05;

/// `lubdub server` inside `ns` on UDP `listen`, ready, with the test's
/// detector settings and probing on or off.
fn server_in(ns: &str, listen: &str, data: &std::path::Path, probes: bool) -> Proc {
    let mut extra = DETECTOR.to_vec();
    if probes {
        extra.push("--probes");
    }
    netns::server_in(ns, listen, data, &extra)
}

fn downs(server: &Proc, host: &str) -> Vec<EventLine> {
    events(server, host)
        .into_iter()
        .filter(|e| e.kind == "down")
        .collect()
}

/// Drops `percent` % of what leaves and of what arrives on `dev` in `ns`.
fn lossy(ns: &str, dev: &str, percent: u32) {
    for hook in ["input", "output"] {
        random_loss(ns, hook, dev, percent);
    }
}

/// A metric of the server in `ns` (0 when absent).
fn metric_in(ns: &str, server: &Proc, name: &str) -> f64 {
    let url = format!("http://{}/metrics", http_of(server));
    let text = must_run("ip", &["netns", "exec", ns, "curl", "-sf", &url]);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// See: issue 15, "What it must show", first item.
#[test]
fn on_lossy_links_probes_prevent_false_downs_and_confirm_real_ones_in_bound() {
    let guard = netns::star(3);
    let (server_ns, client_ns) = (&guard.0[0], &guard.0[1..]);
    let hosts: Vec<String> = (0..3).map(|i| format!("lossy-{i}")).collect();
    for ns in client_ns {
        // 15 % each way at the client: beats and answers, and probes.
        lossy(ns, "eth0", 15);
    }
    let start_clients = || -> Vec<Proc> {
        client_ns
            .iter()
            .enumerate()
            .map(|(i, ns)| client_in(ns, &format!("198.18.{i}.1:{PORT}"), &hosts[i]))
            .collect()
    };
    let listen = format!("0.0.0.0:{PORT}");

    // Probing off: two beats lost in a row (2 % of beats) is a false down.
    let data = tempfile::tempdir().expect("tempdir");
    let mut listening = server_in(server_ns, &listen, data.path(), false);
    let mut clients = start_clients();
    let started = Instant::now();
    assert!(
        wait_until(WAIT, || hosts
            .iter()
            .any(|h| !downs(&listening, h).is_empty())),
        "beats alone raise false downs on these links: {:?}",
        listening.stdout()
    );
    // Probing gets three times as long to raise one (at most 45 s).
    let window = (started.elapsed() * 3).min(Duration::from_secs(45));
    listening.kill();
    for client in &mut clients {
        client.kill();
    }

    // Probing on, the same links and detector: probes are answered, and
    // no live host goes down.
    let data = tempfile::tempdir().expect("tempdir");
    let server = server_in(server_ns, &listen, data.path(), true);
    let mut clients = start_clients();
    let started = Instant::now();
    assert!(
        wait_until(WAIT, || started.elapsed() >= window
            && metric_in(server_ns, &server, "lubdub_probes_answered_total")
                >= 30.0),
        "probes answered over the lossy links: {:?}",
        server.stdout()
    );
    for host in &hosts {
        assert!(
            downs(&server, host).is_empty(),
            "no false down with probes: {host}: {:?}",
            events(&server, host)
        );
    }
    let lates: usize = hosts
        .iter()
        .map(|h| {
            events(&server, h)
                .iter()
                .filter(|e| e.kind == "late")
                .count()
        })
        .sum();
    assert!(lates > 0, "the hosts were suspected: {:?}", server.stdout());

    // Killed clients (no goodbye): down, within the bound the settings
    // promise (the silence the server reports with the `down`).
    clients[0].kill();
    clients[1].kill();
    assert!(
        wait_until(WAIT, || !downs(&server, &hosts[0]).is_empty()
            && !downs(&server, &hosts[1]).is_empty()),
        "killed clients go down: {:?}",
        server.stdout()
    );
    for host in &hosts[..2] {
        let down = &downs(&server, host)[0];
        assert!(
            down.silent_secs >= 0.3 && down.silent_secs <= DOWN_BOUND_SECS + 0.5,
            "{host} down after {} s of silence (bound {DOWN_BOUND_SECS} s)",
            down.silent_secs
        );
    }
    assert!(metric_in(server_ns, &server, "lubdub_probe_confirmed_downs_total") >= 2.0);
    assert!(
        downs(&server, &hosts[2]).is_empty(),
        "{:?}",
        events(&server, &hosts[2])
    );
}

// See: issue 15, "What it must show", second item.
#[test]
fn a_client_behind_nat_is_probed_and_answers() {
    let guard = Namespaces::new(3);
    let (server_ns, router, client_ns) = (&guard.0[0], &guard.0[1], &guard.0[2]);
    link(
        server_ns,
        "s0",
        "198.18.50.1/24",
        router,
        "up0",
        "198.18.50.2/24",
    );
    link(
        router,
        "down0",
        "10.99.0.1/24",
        client_ns,
        "eth0",
        "10.99.0.2/24",
    );
    ip(&[
        "-n",
        client_ns,
        "route",
        "add",
        "default",
        "via",
        "10.99.0.1",
    ]);
    must_run(
        "ip",
        &[
            "netns",
            "exec",
            router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    nft(router, "add table ip nat");
    nft(
        router,
        "add chain ip nat post { type nat hook postrouting priority 100 ; }",
    );
    nft(router, "add rule ip nat post oifname up0 masquerade");
    // Beats (and answers) lost now and then, so the host is suspected.
    lossy(client_ns, "eth0", 20);

    let data = tempfile::tempdir().expect("tempdir");
    let server = server_in(server_ns, &format!("0.0.0.0:{PORT}"), data.path(), true);
    let _client = client_in(client_ns, &format!("198.18.50.1:{PORT}"), "natted");
    assert!(
        wait_until(WAIT, || metric_in(
            server_ns,
            &server,
            "lubdub_probes_answered_total"
        ) >= 5.0),
        "probes reach the client through the NAT and are answered: {:?}",
        server.stdout()
    );
    let joined = &events(&server, "natted")[0];
    assert!(
        joined.addr.starts_with("198.18.50.2:"),
        "the server sees the router's address: {}",
        joined.addr
    );
    assert!(downs(&server, "natted").is_empty(), "{:?}", server.stdout());
}

/// A probe the server sent to `socket`, decoded: (nonce, bytes).
fn receive_probe(socket: &UdpSocket) -> Option<(u64, Vec<u8>)> {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(p) = probe::decode_probe(&buf[..len]) {
            return Some((p.nonce, buf[..len].to_vec()));
        }
    }
    None
}

// See: issue 15, "What it must show", third item (answers).
#[test]
fn forged_and_replayed_answers_confirm_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let mut args = vec!["--key-file", path_str(&keys), "--probes"];
    args.extend(DETECTOR);
    let server = Server::start(&args);
    let sign = signer(&keys, "answering");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut seq = run_seq();
    let mut send = |answers: Option<u64>| {
        seq += 1;
        let b = protocol::Beat {
            flags: flags::ANSWERS_PROBES,
            answers,
            ..beat("answering", seq)
        };
        let bytes = packet(&b, Some(&sign));
        socket.send_to(&bytes, server.udp).expect("send");
        bytes
    };
    for _ in 0..20 {
        send(None);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Silent: late, then probed, signed, from the server's own port and
    // shorter than a beat.
    let (nonce, bytes) = receive_probe(&socket).expect("a probe");
    let probe = probe::decode_probe(&bytes).expect("probe");
    assert_eq!(probe.host_id, "answering");
    assert_eq!(
        sign.verify_probe(&bytes, &probe),
        Ok(()),
        "signed with our key"
    );
    assert!(bytes.len() < protocol::HEADER_LEN + "answering".len() + protocol::TAG_LEN);
    // A forged nonce (validly signed, a fresh seq): refused, still late.
    send(Some(nonce ^ 0x5a5a));
    assert!(
        wait_until(WAIT, || server.dropped("probe_nonce") >= 1.0),
        "{:?}",
        server.events()
    );
    assert_eq!(server.state_of("answering").as_deref(), Some("late"));
    // The real answer: up at once. The same nonce again right behind it
    // (a fresh seq: a slow duplicate answer) finds no suspicion: an
    // ordinary beat, counted as a late answer.
    let answer = send(Some(nonce));
    send(Some(nonce));
    assert!(
        wait_until(WAIT, || server.state_of("answering").as_deref()
            == Some("up")),
        "{:?}",
        server.events()
    );
    assert!(server.metric("lubdub_probes_answered_total").unwrap_or(0.0) >= 1.0);
    assert!(
        wait_until(WAIT, || server
            .metric("lubdub_probe_late_answers_total")
            .unwrap_or(0.0)
            >= 1.0),
        "{:?}",
        server.events()
    );
    // Silent again: the old answer replayed (to the new suspicion)
    // confirms nothing, and the host goes down.
    receive_probe(&socket).expect("probed again");
    socket.send_to(&answer, server.udp).expect("replay");
    assert!(
        server.wait_event("answering", "down", WAIT),
        "{:?}",
        server.events()
    );
    assert!(server.dropped("replay") >= 1.0);
    assert_eq!(
        server
            .events()
            .iter()
            .filter(|e| e.host == "answering" && e.kind == "recovered")
            .count(),
        1,
        "{:?}",
        server.events()
    );
}

/// Beats of `host` received on `socket` within `within`: (answers, from).
fn answers_within(socket: &UdpSocket, within: Duration) -> usize {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    let mut answers = 0;
    while Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf)
            && let Ok(protocol::Packet::V1(b)) = protocol::decode(&buf[..len])
            && b.answers.is_some()
        {
            answers += 1;
        }
    }
    answers
}

// See: issue 15, "What it must show", third item (probes).
#[test]
fn a_forged_probe_earns_only_bounded_answers_and_only_to_own_servers() {
    // A stand-in server: the test's socket, which the client beats to.
    let own = UdpSocket::bind("127.0.0.1:0").expect("bind");
    own.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let _client = crate::util::client(&[own.local_addr().expect("addr")], "probed", &[]);
    let mut buf = [0u8; 512];
    let client_addr: SocketAddr = loop {
        if let Ok((len, from)) = own.recv_from(&mut buf) {
            let Ok(protocol::Packet::V1(b)) = protocol::decode(&buf[..len]) else {
                panic!("not a beat");
            };
            assert!(b.answers_probes(), "the client says it answers probes");
            break from;
        }
    };
    let probe_for = |host: &str| {
        let mut out = Vec::new();
        probe::encode_probe(
            &probe::Probe {
                nonce: 7,
                host_id: host,
                tag: None,
            },
            &mut out,
        )
        .expect("probe");
        out
    };
    // From a stranger: never answered, neither to it nor to the server.
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    stranger
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    for _ in 0..50 {
        stranger
            .send_to(&probe_for("probed"), client_addr)
            .expect("send");
    }
    assert_eq!(answers_within(&own, Duration::from_secs(1)), 0);
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "nothing to the stranger"
    );
    // For another host id, from the server's own address: not answered.
    for _ in 0..50 {
        own.send_to(&probe_for("other"), client_addr).expect("send");
    }
    assert_eq!(answers_within(&own, Duration::from_secs(1)), 0);
    // A flood from the server's own address: a few answers, no more.
    for _ in 0..50 {
        own.send_to(&probe_for("probed"), client_addr)
            .expect("send");
    }
    let answered = answers_within(&own, Duration::from_secs(2));
    assert!(
        (1..=lubdub::client::answer::BURST as usize + 1).contains(&answered),
        "{answered} answers to a flood of 50 probes"
    );
}
