//! Keys over time: captured beats replayed to a running and to a restarted
//! server, and the key rotation of docs/SECURITY.md done step by step.
//! See: issue 5, issue 14 (item 12).

use crate::util::{Server, client, free_udp_port, keygen, path_str, send_packets, wait_until};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Packets a relay forwarded, with when.
type Log = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A UDP relay between a client and the server that records every packet
/// it forwards, as an attacker on the path would.
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
fn captured_beats_replayed_keep_no_host_alive_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let data = dir.path().join("data");
    let args = ["--timeout", "1s", "--key-file", path_str(&keys)];
    let server = Server::start_in(&data, &args);
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
    assert!(wait_until(WAIT, || server.dropped("replay") > 0.0));
    eprintln!(
        "replay: sent {replayed}, server refused {} as replays",
        server.dropped("replay")
    );

    // Restarted on the same store, the server still knows the host's seq:
    // the captured beats, seconds old and well within the allowed clock
    // skew, are refused as replays.
    server.stop();
    let restarted = Server::start_in(&data, &args);
    assert_eq!(restarted.state_of("victim").as_deref(), Some("down"));
    assert_eq!(send_packets(restarted.udp, &latest, 1), latest.len());
    // A client announces its labels (none, here) after its first beat: a
    // replayed announcement is refused as stale, the beats as replays.
    let beats = latest.iter().filter(|p| p.starts_with(b"LBDB")).count();
    let announcements = latest.len() - beats;
    assert!(
        wait_until(WAIT, || restarted.dropped("replay") >= beats as f64
            && restarted
                .metric("lubdub_label_announcements_total{result=\"stale\"}")
                .unwrap_or(0.0)
                >= announcements as f64),
        "replays after the restart: {}",
        restarted.dropped("replay")
    );
    assert_eq!(restarted.dropped("clock_skew"), 0.0, "refused by seq");
    assert_eq!(restarted.state_of("victim").as_deref(), Some("down"));
    assert_eq!(restarted.kinds_of("victim"), Vec::<String>::new());
    drop(restarted);

    // A new server (another store) has never seen the host's seq: the
    // send time, older than the allowed skew, is what refuses them.
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
    send_packets(fresh.udp, &latest, latest.len());
    assert!(wait_until(WAIT, || fresh.dropped("clock_skew") > 0.0));
    assert!(
        fresh.ids("/api/v1/hosts").is_empty(),
        "{:?}",
        fresh.events()
    );
}

/// The kinds of `host`'s events that mean an alarm.
fn alarms(server: &Server, host: &str) -> Vec<String> {
    let mut kinds = server.kinds_of(host);
    kinds.retain(|k| k == "late" || k == "down");
    kinds
}

/// Removes key `id` from the key file at `path`, as an operator would.
fn remove_key(path: &Path, id: u32) {
    let text = std::fs::read_to_string(path).expect("read key file");
    let (header, keys) = text.split_once("[[key]]").expect("a key");
    let kept: String = keys
        .split("[[key]]")
        .filter(|key| !key.contains(&format!("\nid = {id}\n")))
        .map(|key| format!("[[key]]{key}"))
        .collect();
    assert!(
        kept.len() < keys.len() + "[[key]]".len(),
        "key {id} in {text}"
    );
    std::fs::write(path, format!("{header}{kept}")).expect("write key file");
}

#[test]
fn key_rotation_as_documented_never_takes_a_host_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "server.toml", &[]);
    // Each client has its own copy of the server's file.
    let (rolled, laggard) = (
        dir.path().join("rolled.toml"),
        dir.path().join("laggard.toml"),
    );
    std::fs::copy(&keys, &rolled).expect("copy");
    std::fs::copy(&keys, &laggard).expect("copy");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let args = [
        "--listen",
        &listen,
        "--timeout",
        "2s",
        "--key-file",
        path_str(&keys),
    ];
    let start = || Server::start_in(&data, &args);
    let on_key = |file: &Path| -> Vec<String> { vec!["--key-file".into(), path_str(file).into()] };
    let spawn = |id: &str, file: &Path, server: &Server| {
        let extra = on_key(file);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        client(&[server.udp], id, &extra)
    };

    let server = start();
    let old_client = spawn("rotating", &rolled, &server);
    let _laggard = spawn("laggard", &laggard, &server);
    assert!(server.wait_event("rotating", "joined", WAIT));
    assert!(server.wait_event("laggard", "joined", WAIT));
    let mut seen = alarms(&server, "rotating");

    // 1. Add key 2 and restart the server: it accepts keys 1 and 2.
    keygen(dir.path(), "server.toml", &["--add"]);
    server.stop();
    let server = start();
    // 2. Roll the client: the new key file, a restart (SIGTERM: it says
    // goodbye, and the new run says hello). Its new run's seq must start
    // in a later second than the old run's (its high half is the start
    // time), as any real restart does.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(&keys, &rolled).expect("roll the key file");
    let mut old_client = old_client;
    old_client.signal(libc::SIGTERM);
    assert!(old_client.wait_exit(WAIT).success());
    let new_client = spawn("rotating", &rolled, &server);
    assert!(
        wait_until(WAIT, || server.kinds_of("rotating") == ["left", "joined"]),
        "{:?}",
        server.events()
    );
    // Nothing is refused while both keys are accepted: the operator's
    // signal that the roll is complete.
    for reason in ["unsigned", "bad_mac", "unknown_key", "replay", "clock_skew"] {
        assert_eq!(server.dropped(reason), 0.0, "{reason}");
    }
    seen.extend(alarms(&server, "rotating"));

    // 3. Remove key 1 and restart the server: the rolled host beats on
    // (on key 2), the host still on key 1 is refused as an unknown key.
    remove_key(&keys, 1);
    server.stop();
    let server = start();
    let beats = || server.get_json("/api/v1/hosts/rotating")["beats"].as_u64();
    let before = beats().expect("rotating is remembered");
    // Longer than the 2 s timeout of beats on key 2 alone.
    assert!(wait_until(WAIT, || beats() >= Some(before + 25)));
    assert!(wait_until(WAIT, || server.dropped("unknown_key") > 0.0));
    assert_eq!(server.state_of("rotating").as_deref(), Some("up"));
    assert!(
        server.wait_event("laggard", "down", WAIT),
        "{:?}",
        server.events()
    );
    seen.extend(alarms(&server, "rotating"));
    assert_eq!(
        seen,
        Vec::<String>::new(),
        "the rolled host was never late or down"
    );
    for reason in ["bad_mac", "replay", "clock_skew"] {
        assert_eq!(server.dropped(reason), 0.0, "{reason}");
    }
    drop(new_client);
}
