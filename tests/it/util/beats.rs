//! The one beat encoder of the integration tests: beats made with the
//! library's own `lubdub::protocol` (and `lubdub::auth` to sign them), so
//! a test speaks exactly the wire format the client does.

use lubdub::auth::Signer;
use lubdub::protocol::{self, Beat};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

/// The boot id of the beats made here, unless a test sets another.
pub const BOOT_ID: [u8; 16] = [7; 16];

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// The seq of the first beat of a client run started now: like the
/// client, the run's start second in the high half.
pub fn run_seq() -> u64 {
    (now_micros() / 1_000_000) << 32
}

/// A v1 beat of `host_id` with `seq`, sent now, declaring a 100 ms beat,
/// with boot id [`BOOT_ID`]. Change a field with
/// `Beat { interval_ms: 10_000, ..beat(id, seq) }`.
pub fn beat(host_id: &str, seq: u64) -> Beat<'_> {
    Beat {
        flags: 0,
        seq,
        boot_id: BOOT_ID,
        sent_at_micros: now_micros(),
        interval_ms: 100,
        host_id,
        answers: None,
        tag: None,
    }
}

/// The datagram of `beat`, signed by `signer` when given.
pub fn packet(beat: &Beat<'_>, signer: Option<&Signer>) -> Vec<u8> {
    let mut out = Vec::new();
    match signer {
        Some(signer) => signer.sign(beat, &mut out),
        None => protocol::encode(beat, &mut out),
    }
    .expect("a valid beat");
    out
}

/// The label announcement of `host_id` declaring `labels` (`team=web,…`)
/// after beat `seq`, signed by `signer` when given.
pub fn label_packet(host_id: &str, seq: u64, labels: &str, signer: Option<&Signer>) -> Vec<u8> {
    let labels = lubdub::labels::Labels::parse_list(labels).expect("labels");
    let mut out = Vec::new();
    match signer {
        Some(signer) => signer.sign_announcement(seq, now_micros(), host_id, &labels, &mut out),
        None => protocol::labels::encode(seq, now_micros(), host_id, &labels, None, &mut out),
    }
    .expect("a valid announcement");
    out
}

/// Sends `packets` to `to` from one socket, in order, pausing 5 ms after
/// each `burst` of them so that a busy server's receive buffer keeps up
/// (1: one at a time, so none overtakes another). Returns how many sends
/// succeeded.
pub fn send_packets(to: SocketAddr, packets: &[Vec<u8>], burst: usize) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut sent = 0;
    for chunk in packets.chunks(burst.max(1)) {
        for packet in chunk {
            sent += usize::from(socket.send_to(packet, to).is_ok());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sent
}

/// A signer for `host_id` with the newest key of the key file at `path`.
pub fn signer(path: &std::path::Path, host_id: &str) -> Signer {
    let ring = lubdub::auth::KeyRing::load(path).expect("key file");
    let key = ring.newest().expect("a key");
    Signer::new(key, host_id).expect("signer")
}

/// The seq of beat `n` of a client run that started at Unix second
/// `run_secs` (docs/PROTOCOL.md: the run's start in the high 32 bits).
pub fn seq_of(run_secs: u64, n: u32) -> u64 {
    (run_secs << 32) | u64::from(n)
}
