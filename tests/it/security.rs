//! Security: signed beats, replays, key rotation, floods and HTTP limits,
//! against the real binary on loopback. See: issue 5.

use crate::util::{BIN, Proc, Server, client, keygen, raw_http, vm_rss_kib, wait_until};
use lubdub::auth::{Key, KeyRing, Signer};
use lubdub::protocol::{self, Beat};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn dropped(server: &Server, reason: &str) -> f64 {
    server
        .metric(&format!(
            "lubdub_packets_dropped_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or_else(|| panic!("no drop counter for {reason}"))
}

fn host_ids(server: &Server) -> Vec<String> {
    let hosts = server.get_json("/api/v1/hosts");
    let mut ids: Vec<String> = hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

fn random_id(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// A v1 beat for `host_id`, unsigned or signed by `signer`.
fn framed(host_id: &str, seq: u64, signer: Option<&Signer>) -> Vec<u8> {
    let beat = Beat {
        flags: 0,
        seq,
        boot_id: [7; 16],
        sent_at_micros: now_micros(),
        interval_ms: 100,
        host_id,
        tag: None,
    };
    let mut out = Vec::new();
    match signer {
        Some(signer) => signer.sign(&beat, &mut out),
        None => protocol::encode(&beat, &mut out),
    }
    .expect("valid beat");
    out
}

#[test]
fn keygen_writes_private_files_refuses_overwrite_and_rotates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), "keys.toml", &[]);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    let first = std::fs::read_to_string(&path).expect("read");

    let again = Command::new(BIN)
        .args(["keygen", path_str(&path)])
        .env_clear()
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(
        stderr.contains("exists") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), first);

    keygen(dir.path(), "keys.toml", &["--add"]);
    let ring = KeyRing::load(&path).expect("load");
    let ids: Vec<u32> = ring.keys().iter().map(|k| k.id).collect();
    assert_eq!(ids, [1, 2]);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode kept on --add");
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .starts_with(first.lines().next().expect("header"))
    );

    // Without a file, the key file goes to stdout.
    let printed = Command::new(BIN)
        .args(["keygen", "--per-host"])
        .env_clear()
        .output()
        .expect("run");
    assert!(printed.status.success());
    let ring = KeyRing::parse(&String::from_utf8_lossy(&printed.stdout)).expect("key file");
    assert_eq!(ring.newest().map(|k| (k.id, k.per_host)), Some((1, true)));

    keygen(dir.path(), "keys.toml", &["--force", "--id", "9"]);
    let ids: Vec<u32> = KeyRing::load(&path)
        .expect("load")
        .keys()
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, [9]);

    // A client pointed at a missing key file or key id: one clear line.
    for (file, id) in [("missing.toml", "1"), ("keys.toml", "3")] {
        let file = dir.path().join(file);
        let out = Command::new(BIN)
            .args(["client", "127.0.0.1:9", "--key-file", path_str(&file)])
            .args(["--key-id", id])
            .env_clear()
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.starts_with("lubdub: ") && stderr.trim().lines().count() == 1,
            "{stderr}"
        );
    }
}

#[test]
fn only_signed_beats_count_when_keys_are_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let wrong = keygen(dir.path(), "wrong.toml", &[]); // same id 1, other secret
    let unknown = keygen(dir.path(), "unknown.toml", &["--id", "77"]);
    let server = Server::start(&["--timeout", "2s", "--key-file", path_str(&keys)]);
    let _signed = client(&[server.udp], "signed", &["--key-file", path_str(&keys)]);
    let _unsigned = client(&[server.udp], "unsigned", &[]);
    let _wrong = client(
        &[server.udp],
        "wrong-key",
        &["--key-file", path_str(&wrong)],
    );
    let _unknown = client(
        &[server.udp],
        "unknown-key",
        &["--key-file", path_str(&unknown)],
    );
    let legacy = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..3 {
        legacy.send_to(b"Thump!", server.udp).expect("send");
    }

    assert!(
        server.wait_event("signed", "joined", WAIT),
        "{:?}",
        server.events()
    );
    let every_reason_counted = wait_until(WAIT, || {
        ["unsigned", "bad_mac", "unknown_key", "legacy"]
            .iter()
            .all(|reason| dropped(&server, reason) > 0.0)
    });
    assert!(every_reason_counted, "{}", server.get_text("/metrics"));
    assert_eq!(host_ids(&server), ["signed"]);
    assert_eq!(server.state_of("signed").as_deref(), Some("up"));
    assert_eq!(dropped(&server, "legacy"), 3.0);
    assert_eq!(server.metric("lubdub_legacy_beats_total"), Some(0.0));
}

#[test]
fn legacy_beats_from_listed_networks_are_still_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let server = Server::start(&[
        "--key-file",
        path_str(&keys),
        "--legacy-network",
        "127.0.0.0/8",
    ]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(b"Thump!", server.udp).expect("send");
    assert!(
        server.wait_event("127.0.0.1", "joined", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(dropped(&server, "legacy"), 0.0);
}

/// A UDP relay between a client and the server that records every packet
/// it forwards, as an attacker on the path would.
/// Packets a relay forwarded, with when.
type Log = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

struct Relay {
    addr: SocketAddr,
    captured: Log,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (captured.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let started = Instant::now();
            // Bounded: stops when told, or after a minute at most.
            while !halt.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                if let Ok((len, _)) = socket.recv_from(&mut buf) {
                    let mut log = log.lock().expect("log");
                    if log.len() < 10_000 {
                        log.push((Instant::now(), buf[..len].to_vec()));
                    }
                    let _ = socket.send_to(&buf[..len], to);
                }
            }
        });
        Relay {
            addr,
            captured,
            stop,
            thread: Some(thread),
        }
    }

    fn captured(&self) -> Vec<(Instant, Vec<u8>)> {
        self.captured.lock().expect("log").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `packets` to `to` every 50 ms until `stop` (at most `limit`).
fn replay_until(
    packets: Vec<Vec<u8>>,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let started = Instant::now();
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
            for packet in &packets {
                if socket.send_to(packet, to).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sent
    })
}

#[test]
fn captured_beats_replayed_keep_no_host_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let server = Server::start(&["--timeout", "1s", "--key-file", path_str(&keys)]);
    let relay = Relay::start(server.udp);
    let mut victim = client(&[relay.addr], "victim", &["--key-file", path_str(&keys)]);
    assert!(
        server.wait_event("victim", "joined", WAIT),
        "{:?}",
        server.events()
    );
    assert!(wait_until(WAIT, || relay.captured().len() >= 10));
    victim.kill(); // no goodbye: the host just goes silent
    let captured = relay.captured();
    drop(relay);
    let latest: Vec<Vec<u8>> = captured
        .iter()
        .rev()
        .take(20)
        .map(|(_, p)| p.clone())
        .collect();

    // Replay the last 20 captured beats every 50 ms, from the moment the
    // client stopped until a second after the host is reported down.
    let stop = Arc::new(AtomicBool::new(false));
    let replayer = replay_until(latest.clone(), server.udp, stop.clone(), WAIT);
    let went_down = server.wait_event("victim", "down", WAIT);
    // Time itself is the test here: replays go on for a second after
    // `down`, and must not bring the host back.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let replayed = replayer.join().expect("replayer");
    assert!(went_down, "replays kept the host up: {:?}", server.events());
    assert_eq!(server.kinds_of("victim"), ["joined", "late", "down"]);
    assert_eq!(server.state_of("victim").as_deref(), Some("down"));
    assert!(wait_until(WAIT, || dropped(&server, "replay") > 0.0));
    eprintln!(
        "replay: sent {replayed}, server refused {} as replays",
        dropped(&server, "replay")
    );

    // A restarted server has forgotten the host's seq: the send time,
    // older than the allowed skew, is what refuses the captured beats.
    let fresh = Server::start(&[
        "--timeout",
        "1s",
        "--key-file",
        path_str(&keys),
        "--max-clock-skew",
        "1s",
    ]);
    let newest = captured.last().expect("captured").0;
    // Let the captured beats age past the 1 s skew.
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(newest.elapsed()));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for packet in &latest {
        socket.send_to(packet, fresh.udp).expect("send");
    }
    assert!(wait_until(WAIT, || dropped(&fresh, "clock_skew") > 0.0));
    assert!(host_ids(&fresh).is_empty(), "{:?}", fresh.events());
}

#[test]
fn key_rotation_has_no_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    keygen(dir.path(), "keys.toml", &["--add"]);
    let server = Server::start(&["--timeout", "2s", "--key-file", path_str(&keys)]);
    let mut old = client(
        &[server.udp],
        "rotating",
        &["--key-file", path_str(&keys), "--key-id", "1"],
    );
    assert!(
        server.wait_event("rotating", "joined", WAIT),
        "{:?}",
        server.events()
    );
    // The new run's seq must start in a later second than the old one's
    // (its high half is the start time), as any real restart does.
    std::thread::sleep(Duration::from_millis(1100));
    // Restart the client on the newest key (the default), at once.
    old.kill();
    let beats_before = server.metric("lubdub_beats_total").expect("beats");
    let new = client(&[server.udp], "rotating", &["--key-file", path_str(&keys)]);
    // 2.5 s of beats on key 2: more than the 2 s timeout.
    assert!(wait_until(WAIT, || {
        server.metric("lubdub_beats_total").expect("beats") >= beats_before + 25.0
    }));
    assert!(
        new.stderr()
            .iter()
            .any(|l| l.contains("signed_with_key=Some(2)")),
        "{:?}",
        new.stderr()
    );
    assert_eq!(server.kinds_of("rotating"), ["joined"], "never late");
    assert_eq!(server.state_of("rotating").as_deref(), Some("up"));
    for reason in ["unsigned", "bad_mac", "unknown_key", "replay", "clock_skew"] {
        assert_eq!(dropped(&server, reason), 0.0, "{reason}");
    }
}

#[test]
fn per_host_keys_sign_only_for_their_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = keygen(dir.path(), "master.toml", &["--per-host"]);
    let web = keygen(
        dir.path(),
        "web-1.toml",
        &["--for-host", "web-1", "--from", path_str(&master)],
    );
    let server = Server::start(&["--timeout", "2s", "--key-file", path_str(&master)]);
    let _web = client(&[server.udp], "web-1", &["--key-file", path_str(&web)]);
    assert!(
        server.wait_event("web-1", "joined", WAIT),
        "{:?}",
        server.events()
    );

    // The stolen key of web-1, stripped of its host binding, used for db-1.
    let ring = KeyRing::load(&web).expect("load");
    let text = ring.to_toml().replace("host = \"web-1\"\n", "");
    let stolen = KeyRing::parse(&text).expect("parse");
    let forger = Signer::new(stolen.get(1).expect("key 1"), "db-1").expect("signer");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let run = (now_micros() / 1_000_000) << 32;
    for i in 0..5 {
        socket
            .send_to(&framed("db-1", run + i, Some(&forger)), server.udp)
            .expect("send");
    }
    assert!(wait_until(WAIT, || dropped(&server, "bad_mac") >= 5.0));
    assert_eq!(host_ids(&server), ["web-1"]);

    // And the client itself refuses to sign as another host.
    let mut wrong = Proc::spawn(&[
        "client",
        "127.0.0.1:9",
        "--host-id",
        "db-1",
        "--key-file",
        path_str(&web),
    ]);
    assert!(!wrong.wait_exit(WAIT).success());
    assert!(
        wrong.stderr().iter().any(|l| l.contains("not \"db-1\"")),
        "{:?}",
        wrong.stderr()
    );
}

#[test]
fn flood_of_forged_packets_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let wrong = KeyRing::load(&keygen(dir.path(), "wrong.toml", &[])).expect("load");
    let wrong = Signer::new(wrong.get(1).expect("key"), "x").expect("signer");
    let unknown = Key::new(4242, &[9; 32], false, None).expect("key");
    // -v: bad packets are logged (at debug level), so the test sees that
    // the log is rate-limited rather than silent.
    let server = Server::start(&["--timeout", "2s", "--key-file", path_str(&keys), "-v"]);
    let real = ["real-0", "real-1", "real-2"];
    let _clients: Vec<Proc> = real
        .iter()
        .map(|id| client(&[server.udp], id, &["--key-file", path_str(&keys)]))
        .collect();
    assert!(wait_until(WAIT, || real
        .iter()
        .all(|id| server.kinds_of(id) == ["joined"])));
    let rss_before = vm_rss_kib(server.proc.pid());

    // Built before sending, so the burst is as fast as loopback allows.
    const N: usize = 100_000;
    let packets: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let id = random_id(fastrand::usize(1..40));
            let seq = fastrand::u64(..);
            match i % 4 {
                0 => std::iter::repeat_with(|| fastrand::u8(..))
                    .take(fastrand::usize(0..400))
                    .collect(),
                1 => framed(&id, seq, None),
                2 => {
                    let signer = Signer::new(&unknown, &id).expect("signer");
                    framed(&id, seq, Some(&signer))
                }
                // Key id 1, as the server's, but another secret.
                _ => framed(&id, seq, Some(&wrong)),
            }
        })
        .collect();
    let udp = server.udp;
    let flood = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let started = Instant::now();
        let mut sent = 0u64;
        for chunk in packets.chunks(500) {
            if started.elapsed() > Duration::from_secs(20) {
                break; // bounded in time as well as in count
            }
            for packet in chunk {
                if socket.send_to(packet, udp).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    // HTTP keeps answering during the flood.
    let mut answered = 0;
    while !flood.is_finished() {
        let health = server.get_json("/healthz");
        assert_eq!(health["status"], "ok");
        assert_eq!(health["hosts"], 3);
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = flood.join().expect("flood thread");
    let forged = || {
        ["malformed", "unsigned", "unknown_key", "bad_mac"]
            .iter()
            .map(|r| dropped(&server, r))
            .sum::<f64>()
    };
    // Let ingest drain its socket buffer.
    let mut last = -1.0;
    wait_until(WAIT, || {
        let now = forged();
        let settled = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    });
    let rss_after = vm_rss_kib(server.proc.pid());
    eprintln!(
        "flood: sent {sent} forged datagrams, server dropped {} of them; \
         VmRSS {rss_before} KiB before, {rss_after} KiB after; {answered} HTTP checks",
        forged()
    );
    for reason in ["malformed", "unsigned", "unknown_key", "bad_mac"] {
        assert!(dropped(&server, reason) > 0.0, "{reason}");
    }
    assert_eq!(host_ids(&server), real);
    for id in real {
        assert_eq!(server.kinds_of(id), ["joined"], "{id} stayed up");
        assert_eq!(server.state_of(id).as_deref(), Some("up"));
    }
    // Nothing is kept per forged packet: a generous bound for allocator
    // and stack noise, far below what 100 000 hosts would take.
    assert!(
        rss_after < rss_before + 8 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(answered > 0);
    // One line per 10 s for bad packets, with a count of those held back:
    // a flood cannot fill the disk.
    let logged = server
        .proc
        .stderr()
        .iter()
        .filter(|l| l.contains("dropped packet"))
        .count();
    assert!(
        (1..=3).contains(&logged),
        "{logged} lines about dropped packets"
    );
}

#[test]
fn without_keys_max_hosts_holds_under_a_flood_of_made_up_hosts() {
    let server = Server::start(&["--timeout", "2s", "--max-hosts", "50"]);
    let _real = client(&[server.udp], "real", &[]);
    assert!(server.wait_event("real", "joined", WAIT));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let run = (now_micros() / 1_000_000) << 32;
    for i in 0..5_000u64 {
        let id = format!("made-up-{i}-{}", random_id(8));
        let _ = socket.send_to(&framed(&id, run, None), server.udp);
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(wait_until(WAIT, || dropped(&server, "max_hosts") > 0.0));
    assert_eq!(server.get_json("/healthz")["hosts"], 50);
    assert_eq!(server.kinds_of("real"), ["joined"]);
    assert_eq!(server.state_of("real").as_deref(), Some("up"));
    let stderr = server.proc.stderr();
    let limit_lines: Vec<_> = stderr
        .iter()
        .filter(|l| l.contains("host limit reached (max_hosts = 50)"))
        .collect();
    assert_eq!(
        limit_lines.len(),
        1,
        "logged once, not per packet: {stderr:?}"
    );
}

#[test]
fn http_refuses_large_bodies_and_reads_no_files() {
    let server = Server::start(&[]);
    let big = raw_http(
        server.http,
        "POST /api/v1/hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    );
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    for path in [
        "/../../../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/assets/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/api/v1/../../../etc/passwd",
    ] {
        let response = raw_http(
            server.http,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(response.starts_with("HTTP/1.1 404"), "{path}: {response}");
        assert!(!response.contains("root:"), "{path} leaked a file");
    }
    // The server is still fine.
    assert_eq!(server.get_json("/healthz")["status"], "ok");
}
