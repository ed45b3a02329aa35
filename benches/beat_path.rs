//! The per-beat path and the detector, with a million hosts in the table,
//! so that regressions show: `cargo bench --bench beat_path`.
//!
//! - `beat/decode`: `protocol::decode` of one 12-character-id v1 packet;
//! - `beat/decode+observe`: decode, registry lookup, `Monitor::observe`
//!   (the deadline move included), cycling over a million known hosts in a
//!   scattered order so the lookups miss the cache as real traffic does;
//! - `beat/decode+verify+observe`: the same for signed beats, with the
//!   HMAC-SHA256 check of a shared key: the whole per-beat path;
//! - `detector/expire_1000_due`: one `expire` call that finds 1000 hosts
//!   due (they go late), among a million;
//! - `detector/next_deadline`: the timer task's peek.

use criterion::{BatchSize, Bencher, Criterion, Throughput, criterion_group, criterion_main};
use lubdub::auth::{Key, KeyRing, Signer};
use lubdub::config::ServerConfig;
use lubdub::monitor::{Monitor, Observation, Outcome};
use lubdub::protocol::{self, Packet};
use lubdub::tools::loadgen::Fleet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

const HOSTS: u32 = 1_000_000;
const INTERVAL: Duration = Duration::from_secs(10);

/// Every host's second beat, encoded (and signed by `signer`, if given),
/// in a scattered order.
fn encode_all(fleet: &mut Fleet, signer: Option<&Signer>) -> Vec<Vec<u8>> {
    let wall = SystemTime::now();
    // A multiplicative step coprime with HOSTS visits every host once.
    (0..HOSTS)
        .map(|n| {
            let index = ((u64::from(n) * 700_001) % u64::from(HOSTS)) as u32;
            let mut out = Vec::with_capacity(64);
            fleet.encode(index, 1, wall, signer, &mut out);
            out
        })
        .collect()
}

fn observation<'a>(packet: &'a [u8], addr: SocketAddr) -> Observation<'a> {
    match protocol::decode(packet) {
        Ok(Packet::V1(beat)) => Observation::v1(&beat, addr),
        other => panic!("benchmark packet does not decode: {other:?}"),
    }
}

/// A monitor with every host of `fleet` joined, and when it started:
/// hosts join 1000 per millisecond of the monitor's clock (host `i` at
/// `i / 1000` ms), so deadlines are spread out.
fn full_detector(fleet: &mut Fleet) -> (Monitor, Instant) {
    let settings = ServerConfig::default().validate().expect("valid");
    let mut detector = Monitor::new(
        settings.monitor().clone(),
        Instant::now(),
        SystemTime::now(),
    );
    let at = detector.started_at();
    let (wall, addr) = (SystemTime::now(), SocketAddr::from(([127, 1, 1, 1], 40000)));
    let mut events = Outcome::default();
    let mut out = Vec::new();
    for i in 0..fleet.len() {
        fleet.encode(i, 0, wall, None, &mut out);
        let now = at + Duration::from_millis(u64::from(i / 1000));
        detector.observe(&observation(&out, addr), now, wall, &mut events);
        events.clear();
    }
    (detector, at)
}

fn beat_path(c: &mut Criterion) {
    let mut fleet = Fleet::new(HOSTS, "host-", 7, INTERVAL);
    let packets = encode_all(&mut fleet, None);
    let key = Key::new(1, &[7; 32], false, None).expect("key");
    let mut ring = KeyRing::default();
    ring.add(key.clone()).expect("add key");
    let signer = Signer::new(&key, "").expect("signer");
    let signed = encode_all(&mut fleet, Some(&signer));
    let (mut detector, start) = full_detector(&mut fleet);
    let addr = SocketAddr::from(([127, 1, 1, 1], 40000));
    let wall = SystemTime::now();

    let mut group = c.benchmark_group("beat");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        cycle(b, &packets, |packet| {
            black_box(protocol::decode(packet).is_ok());
        })
    });
    let now = (start + INTERVAL, wall);
    group.bench_function("decode+observe", |b| {
        observe_each(b, &packets, &mut detector, now, addr, |_| {})
    });
    group.bench_function("decode+verify+observe", |b| {
        observe_each(b, &signed, &mut detector, now, addr, |packet| {
            let Ok(Packet::V1(decoded)) = protocol::decode(packet) else {
                panic!("benchmark packet does not decode");
            };
            ring.verify(packet, &decoded)
                .expect("a signed beat verifies");
        })
    });
    group.finish();
}

/// Times `step` on one packet per iteration, cycling through `packets`.
fn cycle(b: &mut Bencher<'_>, packets: &[Vec<u8>], mut step: impl FnMut(&[u8])) {
    let mut n = 0;
    b.iter(|| {
        n = (n + 1) % packets.len();
        step(black_box(&packets[n]))
    })
}

/// Times `check` and then decoding and observing one packet per iteration
/// (cycling through `packets`) at `now` (monotonic, wall), from `addr`.
fn observe_each(
    b: &mut Bencher<'_>,
    packets: &[Vec<u8>],
    detector: &mut Monitor,
    now: (Instant, SystemTime),
    addr: SocketAddr,
    check: impl Fn(&[u8]),
) {
    let mut events = Outcome::default();
    cycle(b, packets, |packet| {
        check(packet);
        detector.observe(&observation(packet, addr), now.0, now.1, &mut events);
        events.clear();
    })
}

fn detector_bench(c: &mut Criterion) {
    let mut fleet = Fleet::new(HOSTS, "host-", 7, INTERVAL);
    let (mut detector, mut start) = full_detector(&mut fleet);
    let late_at = INTERVAL * 3 / 2; // 15 s: half the default 30 s timeout
    let wall = SystemTime::now();
    let mut group = c.benchmark_group("detector");
    group.bench_function("next_deadline", |b| {
        b.iter(|| black_box(detector.next_deadline()))
    });
    group.bench_function("expire_none_due", |b| {
        let mut events = Outcome::default();
        b.iter_batched(
            || start,
            |now| detector.expire(now, wall, &mut events),
            BatchSize::SmallInput,
        )
    });
    const DUE: u64 = 1000;
    let mut done = 0u64;
    group.throughput(Throughput::Elements(DUE));
    group.bench_function("expire_1000_due", |b| {
        // Host i is due at start + 15 s + i / 1000 ms: each call moves
        // `now` on by 1 ms, so exactly 1000 hosts go late. A fresh detector is built
        // (untimed) when every host has gone late.
        // (`done` lives outside: criterion calls this closure more than once.)
        let mut events = Outcome::default();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if done + DUE > u64::from(HOSTS) {
                    (detector, start) = full_detector(&mut fleet);
                    done = 0;
                }
                done += DUE;
                let now = start + late_at + Duration::from_millis(done / DUE - 1);
                let t = Instant::now();
                detector.expire(now, wall, &mut events);
                total += t.elapsed();
                assert_eq!(
                    events.events.len() as u64,
                    DUE,
                    "hosts due in the step to {done}"
                );
                events.clear();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = beat_path, detector_bench
}
criterion_main!(benches);
