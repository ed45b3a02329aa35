//! The cost that signed beats add on the ingest hot path, per packet, as a
//! ratio to decoding alone in the same run (docs/BENCHMARKS.md):
//! decode; decode + verify with a shared key; decode + verify with a
//! per-host master key (one more HMAC to derive the host's key); and the
//! whole admission check of a keyed server (`Policy::check`, which adds the
//! clock-skew test). Run: `cargo bench --bench verify`.

use criterion::{Criterion, criterion_group, criterion_main};
use lubdub::auth::{Key, KeyRing, Signer};
use lubdub::config::ServerConfig;
use lubdub::protocol::{self, Beat, Packet};
use lubdub::server::guard::Guard;
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

fn signed_beat(key: &Key) -> Vec<u8> {
    let sent = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;
    let beat = Beat {
        flags: 0,
        seq: 1 << 32,
        boot_id: [0x11; 16],
        sent_at_micros: sent,
        interval_ms: 10_000,
        host_id: "web-0042.example.org",
        answers: None,
        tag: None,
    };
    let mut out = Vec::new();
    Signer::new(key, beat.host_id)
        .expect("signer")
        .sign(&beat, &mut out)
        .expect("sign");
    out
}

fn bench(c: &mut Criterion) {
    let shared = Key::new(1, &[7; 32], false, None).expect("key");
    let master = Key::new(2, &[9; 32], true, None).expect("key");
    let mut ring = KeyRing::default();
    ring.add(shared.clone()).expect("add");
    ring.add(master.clone()).expect("add");
    let shared_beat = signed_beat(&shared);
    let per_host_beat = signed_beat(&master);

    let mut group = c.benchmark_group("per_packet");
    group.bench_function("decode_only", |b| {
        b.iter(|| protocol::decode(black_box(&shared_beat)).is_ok())
    });
    for (name, bytes) in [
        ("decode_verify_shared_key", &shared_beat),
        ("decode_verify_per_host_key", &per_host_beat),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| match protocol::decode(black_box(bytes)) {
                Ok(Packet::V1(beat)) => ring.verify(bytes, &beat).is_ok(),
                _ => false,
            })
        });
    }

    // The server's own admission path, key file and all.
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("keys.toml");
    std::fs::write(&key_file, ring.to_toml()).expect("write keys");
    // Private, as keygen writes it: the server refuses a key file others can read.
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key file");
    let guard = Guard::new(&ServerConfig {
        key_file: Some(key_file),
        ..ServerConfig::default()
    })
    .expect("guard");
    let from = "192.0.2.1".parse().expect("ip");
    // Ingest reads the clock once per batch of up to 64, not per packet.
    let wall = SystemTime::now();
    group.bench_function("decode_guard_check_shared_key", |b| {
        b.iter(|| match protocol::decode(black_box(&shared_beat)) {
            Ok(packet) => guard
                .read()
                .check(&shared_beat, &packet, from, wall)
                .is_ok(),
            Err(_) => false,
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
