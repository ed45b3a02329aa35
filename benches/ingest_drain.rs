//! Ingest capacity against the machine's own limit, measured side by side.
//!
//! On loopback one sender is slower than one receiver, so receive capacity
//! is measured by filling a large socket receive buffer while nothing reads
//! and timing how fast it drains. Each round fills the same socket with the
//! same kind of traffic (real v1 beats from `lubdub loadgen`'s fleet, many
//! 127.x.y.z sources) three times and drains it with:
//!
//! 1. **raw**: `recvmmsg` batches that are only counted (the baseline);
//! 2. **lubdub**: the server's real ingest path, [`Ingest::apply`] (decode,
//!    registry lookup, `Monitor::observe`, one lock per batch), with a
//!    million hosts already in the registry;
//! 3. **seed**: `bench/seed_server.py`, the seed's Python receive path, on
//!    the same socket (inherited as a file descriptor).
//!
//! Run: `cargo bench --bench ingest_drain` (`cargo test --all-targets` runs
//! a small smoke check of it instead). Settings through the environment:
//! `DRAIN_DATAGRAMS` (per fill, default 300000), `DRAIN_ROUNDS` (default 5),
//! `DRAIN_HOSTS` (registry size, default 1000000), `DRAIN_BUFFER_BYTES`
//! (default 1 GiB), `DRAIN_SIGNED` (default 1: beats are signed and the
//! server requires keys, so the MAC check is part of lubdub's path; 0 for
//! unsigned beats and a server without keys).

use lubdub::auth::{Key, KeyRing, Signer};
use lubdub::config::ServerConfig;
use lubdub::monitor::{Monitor, Observation, Outcome};
use lubdub::protocol::{self, Packet};
use lubdub::ratelimit::RateLimit;
use lubdub::server::events::EventLog;
use lubdub::server::fleet::Fleet as Monitored;
use lubdub::server::guard::Guard;
use lubdub::server::ingest::Ingest;
use lubdub::server::recv::Batch;
use lubdub::tools::loadgen::{Fleet, Sender};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this thread has used (user + system: the kernel's receive
/// work is charged here too). Unlike wall time, it does not count the time
/// other processes on a shared machine take the core away.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How one drain went.
struct Drained {
    received: u64,
    wall: Duration,
    cpu: Duration,
}

/// Drains the socket with `step`, which receives one batch and returns how
/// many datagrams it took (0 when the socket is empty).
fn drain(expected: u64, mut step: impl FnMut() -> usize) -> Drained {
    let (start, cpu_start) = (Instant::now(), thread_cpu());
    let mut received = 0u64;
    let mut idle_since: Option<(Instant, Duration)> = None;
    while received < expected {
        let n = step();
        if n == 0 {
            // Filled before we started, so empty means done; allow a moment
            // for datagrams still in flight through loopback.
            let (idle, idle_cpu) =
                *idle_since.get_or_insert_with(|| (Instant::now(), thread_cpu()));
            if idle.elapsed() > Duration::from_millis(200) {
                return Drained {
                    received,
                    wall: idle - start,
                    cpu: idle_cpu - cpu_start,
                };
            }
            continue;
        }
        idle_since = None;
        received += n as u64;
    }
    Drained {
        received,
        wall: start.elapsed(),
        cpu: thread_cpu() - cpu_start,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Runs the seed's Python receive path on the socket; `None` if python3
/// cannot run (said on stderr, never silently).
fn seed_drain(fd: i32, count: u64) -> Option<(u64, f64, f64)> {
    // SAFETY: dup(2) of our own open socket; the copy (without
    // FD_CLOEXEC) is inherited by the child and closed below.
    let child_fd = unsafe { libc::dup(fd) };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/seed_server.py");
    let output = Command::new("python3")
        .args([
            script,
            "--fd",
            &child_fd.to_string(),
            "--count",
            &count.to_string(),
        ])
        .output();
    // SAFETY: closing the descriptor dup'ed above, used by no one else.
    unsafe { libc::close(child_fd) };
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!(
                "seed baseline failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("seed baseline not run: python3: {e}");
            return None;
        }
    };
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some((
        result["received"].as_u64()?,
        result["rate"].as_f64()?,
        result["cpu_rate"].as_f64()?,
    ))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and then a small run checks that the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |n: u64| if full { n } else { n / 100 };
    let datagrams: u64 = env_or("DRAIN_DATAGRAMS", if full { 300_000 } else { 300 });
    let rounds: usize = env_or("DRAIN_ROUNDS", if full { 5 } else { 1 });
    let hosts: u32 = env_or("DRAIN_HOSTS", scale(1_000_000) as u32);
    let buffer_bytes: usize = env_or("DRAIN_BUFFER_BYTES", scale(1 << 30) as usize);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();

    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .expect("udp socket");
    // The server's own setting: SO_RCVBUFFORCE as root, else capped by
    // net.core.rmem_max (the bench then fills less per round, and says so).
    let buffer = lubdub::server::recv::set_receive_buffer(&socket, buffer_bytes).unwrap_or(0);
    let how = if buffer >= buffer_bytes {
        "SO_RCVBUFFORCE"
    } else {
        "SO_RCVBUF, capped by net.core.rmem_max (no SO_RCVBUFFORCE: not root?)"
    };
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    socket.set_nonblocking(true).expect("non-blocking");
    let std_socket: std::net::UdpSocket = socket.into();
    let target = std_socket.local_addr().expect("local addr");

    // A million hosts in the registry, with the ids the traffic carries.
    let mut fleet = Fleet::new(hosts, "host-", 7, Duration::from_secs(10));
    let signed = env_or("DRAIN_SIGNED", 1u8) != 0;
    let key_dir = tempfile::tempdir().expect("temp dir for the key file");
    let (config, signer) = if signed {
        let key = Key::generate(1, false).expect("random key");
        let mut ring = KeyRing::default();
        ring.add(key.clone()).expect("one key");
        let path = key_dir.path().join("keys.toml");
        std::fs::write(&path, ring.to_toml()).expect("write key file");
        // Private, as keygen writes it: the server refuses a key file others can read.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key file");
        let config = ServerConfig {
            key_file: Some(path),
            ..ServerConfig::default()
        };
        (config, Some(Signer::new(&key, "").expect("shared key")))
    } else {
        (ServerConfig::default(), None)
    };
    let mut sender = Sender::bind(target, 256).expect("bind 127.x.y.z sources");
    let config = config.validate().expect("valid");
    let mut detector = Monitor::new(config.monitor().clone(), Instant::now(), SystemTime::now());
    let fill_start = Instant::now();
    {
        // Each host as the server knows it just before the drained traffic:
        // same source address, boot id and run, one beat earlier. So the
        // drain measures steady beating, not a reboot or a move per host.
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut events = Outcome::default();
        let mut packet = Vec::new();
        for i in 0..hosts {
            fleet.encode(i, 0, wall, None, &mut packet);
            let Ok(Packet::V1(first)) = protocol::decode(&packet) else {
                panic!("the fleet encodes v1 beats");
            };
            let beat = Observation {
                seq: Some(first.seq - 1),
                ..Observation::v1(&first, sender.source_local_addr(sender.source_of(i)))
            };
            detector.observe(&beat, now, wall, &mut events);
            events.clear();
        }
    }
    eprintln!(
        "registry filled with {hosts} hosts in {:.2}s",
        fill_start.elapsed().as_secs_f64()
    );
    let ingest = Ingest {
        socket: std_socket,
        fleet: Arc::new(Monitored::new(detector, Arc::new(EventLog::new(1000)))),
        metrics: Arc::default(),
        guard: Arc::new(Guard::new(&config).expect("key file")),
        record: None,
    };
    let fd = ingest.socket.as_raw_fd();
    let mut batch = Batch::default();
    let mut log = RateLimit::new(Duration::from_secs(3600));
    let mut host_limit_log = RateLimit::new(Duration::from_secs(3600));
    let mut next_packet = 0u64;
    let mut fill = |sender: &mut Sender| {
        let before = sender.report().packets;
        let report = sender.flood(&mut fleet, next_packet, datagrams, signer.as_ref());
        next_packet += datagrams;
        report.packets - before
    };

    println!(
        "ingest drain: {datagrams} {} datagrams per fill, {rounds} rounds, {hosts} hosts in the registry",
        if signed { "signed" } else { "unsigned" }
    );
    println!("receive buffer: {buffer} bytes via {how}");
    println!(
        "rates in datagrams per second of the draining thread's CPU time (wall-clock rates in brackets)"
    );
    println!(
        "{:>6} {:>20} {:>20} {:>20} {:>11} {:>12}",
        "round", "raw/s", "lubdub/s", "seed/s", "lubdub÷raw", "lubdub÷seed"
    );
    let (mut raws, mut ours, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
    let mut short = false;
    let both = |cpu: f64, wall: f64| format!("{cpu:.0} ({wall:.0})");
    for round in 1..=rounds {
        // Whatever the last drain left (nothing, unless it fell short).
        while batch.recv(&ingest.socket).unwrap_or(0) > 0 {}

        let sent = fill(&mut sender);
        let raw = drain(sent, || batch.recv(&ingest.socket).unwrap_or(0));
        let sent_ours = fill(&mut sender);
        let our = drain(sent_ours, || match batch.recv(&ingest.socket) {
            Ok(n) => {
                ingest.apply(&batch, &mut log, &mut host_limit_log);
                n
            }
            Err(_) => 0,
        });
        let sent_seed = fill(&mut sender);
        let seed = seed_drain(fd, sent_seed);
        if let Some((got, _, _)) = seed {
            short |= got != sent_seed;
        }
        if raw.received != sent || our.received != sent_ours {
            short = true;
            eprintln!(
                "round {round}: sent {sent}/{sent_ours}, drained raw {}, lubdub {}: \
                 the kernel dropped datagrams (buffer too small?)",
                raw.received, our.received
            );
        }
        let rate = |d: &Drained, t: Duration| d.received as f64 / t.as_secs_f64();
        let (raw_cpu, raw_wall) = (rate(&raw, raw.cpu), rate(&raw, raw.wall));
        let (our_cpu, our_wall) = (rate(&our, our.cpu), rate(&our, our.wall));
        raws.push(raw_cpu);
        ours.push(our_cpu);
        if let Some((_, _, seed_cpu)) = seed {
            seeds.push(seed_cpu);
        }
        println!(
            "{round:>6} {:>20} {:>20} {:>20} {:>11.2} {:>12}",
            both(raw_cpu, raw_wall),
            both(our_cpu, our_wall),
            seed.map_or("-".into(), |(_, wall, cpu)| both(cpu, wall)),
            our_cpu / raw_cpu,
            seed.map_or("-".into(), |(_, _, cpu)| format!("{:.2}", our_cpu / cpu)),
        );
    }
    let (raw, our, seed) = (median(raws), median(ours), median(seeds));
    println!(
        "{:>6} {raw:>20.0} {our:>20.0} {seed:>20.0} {:>11.2} {:>12.2}",
        "median",
        our / raw,
        our / seed
    );
    let beats = ingest.metrics.beats.get();
    println!(
        "lubdub applied {beats} beats; send errors: {}",
        sender.report().errors
    );
    if short {
        println!("WARNING: some drains received fewer datagrams than were sent");
    }
    if !full {
        // The smoke run checks correctness, never speed.
        assert!(!short, "every datagram sent was drained");
        assert_eq!(beats, datagrams * rounds as u64, "every beat was applied");
    }
}
