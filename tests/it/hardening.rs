//! Hardening against the attacks of issue 13: a corrupt store, hostile host
//! ids, cross-site and rebinding requests, connection exhaustion, leaked
//! secrets. Each test reproduces one attack on the real binary on loopback.
//! See: issue 13.

use crate::util::{Server, run, wait_until};
use lubdub::protocol::{self, Beat};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// One unsigned v1 beat of `host_id`, sent to `to`.
fn send_beat(socket: &UdpSocket, to: SocketAddr, host_id: &str, seq: u64) {
    let beat = Beat {
        flags: 0,
        seq,
        boot_id: [3; 16],
        sent_at_micros: now_micros(),
        interval_ms: 100,
        host_id,
        tag: None,
    };
    let mut out = Vec::new();
    protocol::encode(&beat, &mut out).expect("valid beat");
    socket.send_to(&out, to).expect("send beat");
}

fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind udp")
}

/// Hosts the server tracks, from `/api/v1/summary`.
fn tracked(server: &Server) -> u64 {
    server.get_json("/api/v1/summary")["hosts"]
        .as_u64()
        .expect("hosts")
}

/// A store written by a real server that knew `n` hosts, in `dir`.
fn write_store(dir: &Path, n: u64) {
    let mut server = Server::start_in(dir, &[]);
    let socket = udp();
    for i in 0..n {
        send_beat(&socket, server.udp, &format!("host-{i}"), 1);
    }
    assert!(
        wait_until(WAIT, || tracked(&server) == n),
        "{} hosts known",
        tracked(&server)
    );
    server.proc.signal(libc::SIGTERM);
    assert!(server.proc.wait_exit(WAIT).success(), "clean stop");
}

/// A corrupt store (truncated, bytes flipped, emptied) is refused with one
/// line naming it, a non-zero exit that is not a panic or an abort, and
/// not one byte of it changed.
#[test]
fn a_corrupt_store_is_one_line_error_and_stays_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = tmp.path().join("good");
    write_store(&good, 50);
    let original = std::fs::read(good.join("lubdub.redb")).expect("store");
    let flip = |at: usize| {
        let mut bytes = original.clone();
        for b in &mut bytes[at..at + 16] {
            *b ^= 0xff;
        }
        bytes
    };
    // Each of these crashed the server (a redb assertion: exit 101; an
    // allocation of terabytes: abort) or was taken as a new, empty store.
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", original[..original.len() / 2].to_vec()),
        ("flipped header", flip(200)),
        ("flipped region", flip(4096)),
        ("zero-length", Vec::new()),
    ];
    for (name, bytes) in cases {
        let dir = tmp.path().join(name.replace(' ', "-"));
        std::fs::create_dir(&dir).expect("dir");
        let path = dir.join("lubdub.redb");
        std::fs::write(&path, &bytes).expect("write corrupt store");
        let ran = run(
            &[
                "server",
                "--data-dir",
                dir.to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ],
            &[],
        );
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(ran.code, Some(1), "{name}: exit code; stderr {lines:?}");
        assert_eq!(lines.len(), 1, "{name}: one line: {lines:?}");
        assert!(
            lines[0].starts_with("lubdub: ") && lines[0].contains(&path.display().to_string()),
            "{name}: {lines:?}"
        );
        assert!(
            std::fs::read(&path).expect("read back") == bytes,
            "{name}: the store was written to"
        );
    }
    // --forget-all is the way out of an empty store, as of any other.
    let dir = tmp.path().join("zero-length");
    let server = Server::start_in(&dir, &["--forget-all"]);
    assert_eq!(tracked(&server), 0);
}

/// The data directory and the store are private to the server's user,
/// whatever the umask.
#[test]
fn data_dir_and_store_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("new").join("data");
    let server = Server::start_in(&dir, &[]);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&dir.join("lubdub.redb")), 0o600, "store");
    assert_eq!(mode(&dir.join("lubdub.lock")), 0o600, "lock file");
    drop(server);
}
