//! Attacks on the beat path, against the real binary on loopback: a trickle
//! of downs after a mass silence, withheld beats released late, a seq that
//! claims a run starting in the future, legacy beats for a signed host.
//! See: issue 13 (items 1, 3, 4, 5).

use crate::util::{
    Proc, Recorder, Server, beat, client, keygen, packet, path_str, seq_of, signer, wait_until,
};
use lubdub::protocol::flags;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn beats_applied(server: &Server) -> f64 {
    server.metric("lubdub_beats_total").unwrap_or(0.0)
}

/// A keyed server and its key file (in a directory that lasts as long as
/// it does).
struct Keyed {
    server: Server,
    keys: PathBuf,
    _dir: tempfile::TempDir,
}

/// A keyed server (timeout 1 s) with `extra` flags.
fn keyed_server(extra: &[&str]) -> Keyed {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let mut args = vec!["--timeout", "1s", "--key-file", path_str(&keys)];
    args.extend(extra);
    let server = Server::start(&args);
    Keyed {
        server,
        keys,
        _dir: dir,
    }
}

impl Keyed {
    /// A beat of host `victim` with `seq` and `flags`, signed with the key.
    fn victim_beat(&self, seq: u64, flags: u8) -> Vec<u8> {
        let beat = lubdub::protocol::Beat {
            flags,
            ..beat("victim", seq)
        };
        packet(&beat, Some(&signer(&self.keys, "victim")))
    }

    /// A client beating as `host` with the key, once the server has seen
    /// it join.
    fn joined_client(&self, host: &str) -> Proc {
        let key = ["--key-file", path_str(&self.keys)];
        let beating = client(&[self.server.udp], host, &key);
        assert!(
            self.server.wait_event(host, "joined", WAIT),
            "{:?}",
            self.server.events()
        );
        beating
    }
}

/// Item 3: an on-path delay holds one beat and releases it after the
/// client's goodbye. It is older than the goodbye: the host stays `left`
/// (it used to rejoin, and then go falsely `down`).
#[test]
fn a_beat_withheld_past_its_goodbye_does_not_revive_the_host() {
    let keyed = keyed_server(&[]);
    let server = &keyed.server;
    let run = unix_secs();
    let packets: Vec<Vec<u8>> = (1..=5)
        .map(|n| {
            let goodbye = if n == 5 { flags::GOODBYE } else { 0 };
            keyed.victim_beat(seq_of(run, n), goodbye)
        })
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (i, packet) in packets.iter().enumerate() {
        if i != 2 {
            socket.send_to(packet, server.udp).expect("send");
        }
    }
    assert!(
        server.wait_event("victim", "left", WAIT),
        "{:?}",
        server.events()
    );
    // Released now: beat 3, signed, fresh, never seen, so not a replay.
    socket.send_to(&packets[2], server.udp).expect("send");
    assert!(
        wait_until(WAIT, || beats_applied(server) >= 5.0),
        "the withheld beat is counted"
    );
    assert_eq!(server.metric("lubdub_beats_reordered_total"), Some(1.0));
    assert_eq!(server.kinds_of("victim"), ["joined", "left"]);
    assert_eq!(server.state_of("victim").as_deref(), Some("left"));
}

/// Item 3: an on-path delay passes every other beat and holds the rest;
/// once the host dies it releases them one by one. They are older than the
/// newest beat seen: the host goes `down` at its own deadline, not after
/// the last release.
#[test]
fn withheld_beats_released_one_by_one_keep_no_dead_host_up() {
    let keyed = keyed_server(&[]);
    let server = &keyed.server;
    let run = unix_secs();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut held = Vec::new();
    for n in 1..=21 {
        let packet = keyed.victim_beat(seq_of(run, n), 0);
        if n % 2 == 0 {
            held.push(packet);
        } else {
            socket.send_to(&packet, server.udp).expect("send");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The host is dead now. One held beat every 400 ms: 4 s of releases,
    // against a 1 s timeout.
    let releasing = Arc::new(AtomicBool::new(true));
    let (to, flag) = (server.udp, releasing.clone());
    let releaser = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for packet in held {
            socket.send_to(&packet, to).expect("send");
            std::thread::sleep(Duration::from_millis(400));
        }
        flag.store(false, Ordering::SeqCst);
    });
    assert!(
        server.wait_event("victim", "down", WAIT),
        "{:?}",
        server.events()
    );
    let down_while_releasing = releasing.load(Ordering::SeqCst);
    releaser.join().expect("releaser");
    assert!(
        down_while_releasing,
        "down only after the releases: {:?}",
        server.events()
    );
    assert!(
        wait_until(WAIT, || beats_applied(server) >= 21.0),
        "every released beat is counted"
    );
    assert_eq!(server.kinds_of("victim"), ["joined", "late", "down"]);
    assert_eq!(server.state_of("victim").as_deref(), Some("down"));
}

/// Item 4: one signed beat whose seq claims a run starting ten years from
/// now is refused (counted as `future_run`), so the real client's beats
/// are not taken for replays of an older run afterwards.
#[test]
fn a_seq_from_a_future_run_does_not_lock_the_client_out() {
    let keyed = keyed_server(&[]);
    let server = &keyed.server;
    let _victim = keyed.joined_client("victim");
    let future = unix_secs() + 10 * 365 * 86_400;
    let forged = keyed.victim_beat(seq_of(future, 1), 0);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(&forged, server.udp).expect("send");
    assert!(
        wait_until(WAIT, || server.dropped("future_run") >= 1.0),
        "{}",
        server.get_text("/metrics")
    );
    // The real client goes on: ten more of its beats are applied.
    let before = beats_applied(server);
    assert!(
        wait_until(WAIT, || beats_applied(server) >= before + 10.0),
        "the client's beats are applied"
    );
    assert_eq!(server.dropped("replay"), 0.0);
    assert_eq!(server.kinds_of("victim"), ["joined"]);
    assert_eq!(server.state_of("victim").as_deref(), Some("up"));
}

/// Item 5: with `--legacy-network`, a `Thump!` from 127.0.0.1 does not
/// feed the signed host whose id is `127.0.0.1` (it used to revive it after
/// its goodbye, around the MAC and the replay window); a host known only
/// from `Thump!` keeps its documented id, its IP.
#[test]
fn a_legacy_beat_never_feeds_a_signed_host() {
    let keyed = keyed_server(&["--legacy-network", "127.0.0.0/8"]);
    let server = &keyed.server;
    let signed = keyed.joined_client("127.0.0.1");
    signed.signal(libc::SIGTERM); // a clean stop: goodbye
    assert!(
        server.wait_event("127.0.0.1", "left", WAIT),
        "{:?}",
        server.events()
    );
    let from_signed_ip = UdpSocket::bind("127.0.0.1:0").expect("bind");
    from_signed_ip.send_to(b"Thump!", server.udp).expect("send");
    assert!(
        wait_until(WAIT, || server.dropped("legacy") >= 1.0),
        "{}",
        server.get_text("/metrics")
    );
    assert_eq!(server.kinds_of("127.0.0.1"), ["joined", "left"]);
    assert_eq!(server.state_of("127.0.0.1").as_deref(), Some("left"));
    // A legacy host of its own is still accepted, keyed by its IP.
    let legacy = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    legacy.send_to(b"Thump!", server.udp).expect("send");
    assert!(
        server.wait_event("127.0.0.2", "joined", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(server.dropped("legacy"), 1.0);
}

/// Item 1: after a mass silence, a host going down every 600 ms (made-up
/// hosts: no key needed) used to extend the storm without end, so a real
/// host that went down later was never paged. Now the storm ends a window
/// after its mass silence, and the real down is paged on its own.
#[test]
fn a_trickle_of_downs_after_a_mass_silence_hides_no_real_down() {
    let recorder = Recorder::start(&[]);
    let config = format!(
        r#"
[[server.sinks.webhook]]
url = "{}"

[server.sinks.mass_silence]
share = 0.1
min_hosts = 4
window = "2s"
hold = "500ms"
"#,
        recorder.url("/")
    );
    let server = Server::with_config(&config, &["--timeout", "1s"]);
    let ids = ["rack-1", "rack-2", "rack-3", "rack-4", "victim"];
    let mut clients = server.join_all(&ids, WAIT);
    for c in &mut clients[..4] {
        c.kill();
    }
    let paged_alone = |host: &str| {
        recorder
            .requests()
            .iter()
            .any(|r| r.body["kind"] == "down" && r.body["host"] == host)
    };
    assert!(
        wait_until(WAIT, || recorder
            .requests()
            .iter()
            .any(|r| r.body["kind"] == "mass-silence")),
        "mass silence sent: {:?}",
        recorder.requests()
    );
    // The trickle: a new made-up host joins every 600 ms and goes silent,
    // for 20 s at most (longer than any wait below).
    let trickling = Arc::new(AtomicBool::new(true));
    let (to, flag) = (server.udp, trickling.clone());
    let trickle = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let started = Instant::now();
        let mut n = 0u32;
        while flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
            let id = format!("forged-{n}");
            let packet = packet(&beat(&id, 1), None);
            let _ = socket.send_to(&packet, to);
            n += 1;
            std::thread::sleep(Duration::from_millis(600));
        }
    });
    // Let the trickle's downs start, then the real host dies: after the
    // storm (2 s from the mass silence), so it is a page of its own.
    assert!(
        server.wait_event("forged-2", "down", WAIT),
        "{:?}",
        server.events()
    );
    clients[4].kill();
    assert!(
        server.wait_event("victim", "down", WAIT),
        "{:?}",
        server.events()
    );
    let paged = wait_until(Duration::from_secs(5), || paged_alone("victim"));
    trickling.store(false, Ordering::SeqCst);
    trickle.join().expect("trickle");
    assert!(
        paged,
        "victim's down was not paged: {:?}",
        recorder
            .requests()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>()
    );
}
