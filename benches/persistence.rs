//! Persistence benchmark: how long a restart with a million remembered
//! hosts takes to load, and what checkpoints cost at 100,000 beats/s.
//!
//! `cargo bench --bench persistence` runs the full sizes and prints the
//! figures recorded in docs/BENCHMARKS.md; `-- --hosts N` changes the fleet.
//! Under `cargo test` (no `--bench` flag) it runs a small smoke size, so the
//! code stays working without slowing the test suite.
//!
//! Every figure comes with a same-run baseline, because the machine is
//! shared and absolute times move with its load:
//! - load: reading the store vs. putting the same hosts into the detector
//!   from memory (the part of a restart the store cannot avoid);
//! - checkpoint: writing the hosts changed in one checkpoint interval vs.
//!   applying the beats that changed them.

use lubdub::config::ServerConfig;
use lubdub::monitor::{HostState, Monitor, Observation, Observed, Outcome};
use lubdub::server::events::EventLog;
use lubdub::server::fleet::Fleet;
use lubdub::server::persist;
use lubdub::store::{Batch, Loaded, Store, StoredHost};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const REPEATS: usize = 3;

fn host_id(i: u32) -> String {
    format!("host-{i:07}.example.net")
}

fn stored(i: u32) -> StoredHost {
    StoredHost {
        id: host_id(i).into(),
        state: if i % 100 == 0 {
            HostState::Down
        } else {
            HostState::Up
        },
        since: SystemTime::now(),
        addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000)),
        last_seen: SystemTime::now(),
        seq: (1_700_000_000u64 << 32) + 1000,
        boot_id: [i as u8; 16],
        interval_ms: 10_000,
        beats: 1000,
        losses: 0,
        legacy: false,
        labels: Default::default(),
    }
}

/// A fresh monitor with a 30 s timeout.
fn monitor() -> Monitor {
    let config = ServerConfig {
        timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    }
    .validate()
    .expect("valid");
    Monitor::new(config.monitor().clone(), Instant::now(), SystemTime::now())
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of this thread: on a machine shared with other work, wall
/// time includes waiting for a core; CPU time does not (nor waiting on fsync).
fn thread_cpu() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn max_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct we pass; no other memory is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn bench_load(hosts: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let write_started = Instant::now();
    {
        let mut store = Store::open(dir.path()).expect("open");
        let chunk = 100_000;
        for start in (0..hosts).step_by(chunk) {
            let batch = Batch {
                hosts: (start..(start + chunk as u32).min(hosts))
                    .map(stored)
                    .collect(),
                events: Vec::new(),
                event_history: 10_000,
                windows: None,
                forgotten: Vec::new(),
                fleet_loss: None,
            };
            store.write(&batch, SystemTime::now()).expect("write");
        }
    }
    let written_in = write_started.elapsed();
    let file_bytes = std::fs::metadata(dir.path().join(lubdub::store::FILE_NAME))
        .expect("store file")
        .len();

    let mut loads = Vec::new();
    let mut load_cpus = Vec::new();
    let mut restores = Vec::new();
    for _ in 0..REPEATS {
        // The restart path: open, read every record, rebuild the detector.
        let started = Instant::now();
        let cpu = thread_cpu();
        let store = Store::open(dir.path()).expect("open");
        let loaded = store.load().expect("load");
        let read = started.elapsed();
        let copy: Vec<StoredHost> = loaded.hosts.clone();
        let mut detector = monitor();
        let events = EventLog::new(10_000);
        let restore_started = Instant::now();
        persist::restore(
            loaded,
            &mut detector,
            &events,
            Instant::now(),
            SystemTime::now(),
        );
        let restore = restore_started.elapsed();
        loads.push(read + restore);
        load_cpus.push(thread_cpu() - cpu);
        assert_eq!(detector.registry().len(), hosts as usize);
        drop(store);

        // Baseline: the same hosts into a fresh detector from memory.
        let mut detector = monitor();
        let baseline_started = Instant::now();
        persist::restore(
            Loaded {
                hosts: copy,
                ..Loaded::default()
            },
            &mut detector,
            &events,
            Instant::now(),
            SystemTime::now(),
        );
        restores.push(baseline_started.elapsed());
    }
    let (load, baseline) = (median(loads.clone()), median(restores.clone()));
    println!("## load: {hosts} remembered hosts");
    println!(
        "store file: {:.1} MiB, written in {} (batches of 100k)",
        file_bytes as f64 / (1 << 20) as f64,
        secs(written_in)
    );
    println!(
        "restart load (open + read + rebuild detector), {REPEATS} runs: {:?} -> median {}",
        loads.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        secs(load)
    );
    println!(
        "restart load cpu time (excludes waiting for a core), median {}",
        secs(median(load_cpus))
    );
    println!(
        "baseline (rebuild detector from memory), {REPEATS} runs: {:?} -> median {}",
        restores.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        secs(baseline)
    );
    println!(
        "ratio load / baseline: {:.1}x",
        load.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("peak RSS so far: {:.0} MiB", max_rss_mib());
}

fn bench_checkpoint(hosts: u32, beats_per_sec: u32, interval: Duration, periods: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    let detector = Fleet::new(monitor(), Arc::new(EventLog::new(10_000)));
    let ids: Vec<String> = (0..hosts).map(host_id).collect();
    let t0 = Instant::now();
    let beat = |i: u32, seq: u64| Observation {
        seq: Some((1_700_000_000u64 << 32) + seq),
        boot_id: [1; 16],
        interval_ms: 10_000,
        ..Observation::legacy(&ids[i as usize], SocketAddr::from(([10, 0, 0, 1], 40000)))
    };
    // Applies `beats` as ingest does: one hold of the lock per batch.
    let apply = |beats: &[Observation<'_>], now: Instant, out: &mut Outcome| {
        let mut results = [Observed::Applied; 64];
        detector.observe_batch(beats, now, SystemTime::now(), &mut results, out);
    };
    // The fleet joins, and the first checkpoint writes all of it.
    {
        let mut out = Outcome::default();
        let all: Vec<_> = (0..hosts).map(|i| beat(i, 0)).collect();
        for batch in all.chunks(64) {
            apply(batch, t0, &mut out);
        }
    }
    let (_, all) = persist::collect_dirty(&detector);
    store
        .write(
            &Batch {
                hosts: all,
                events: Vec::new(),
                event_history: 10_000,
                windows: None,
                forgotten: Vec::new(),
                fleet_loss: None,
            },
            SystemTime::now(),
        )
        .expect("first write");

    let per_period = (f64::from(beats_per_sec) * interval.as_secs_f64()) as u32;
    let mut next = 0u32;
    let mut seq = 1u64;
    println!(
        "## checkpoint: {hosts} hosts, {beats_per_sec} beats/s, checkpoint every {}",
        secs(interval)
    );
    let (mut apply_total, mut lock_total, mut write_total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut apply_cpu_total, mut checkpoint_cpu_total) = (Duration::ZERO, Duration::ZERO);
    for period in 0..periods {
        // One interval's beats, applied in ingest-sized batches of 64.
        let now = t0 + interval * (period + 1);
        let started = Instant::now();
        let cpu = thread_cpu();
        let mut out = Outcome::default();
        let mut left = per_period;
        let mut beats = Vec::with_capacity(64);
        while left > 0 {
            let n = left.min(64);
            beats.clear();
            for _ in 0..n {
                beats.push(beat(next, seq));
                next += 1;
                if next == hosts {
                    next = 0;
                    seq += 1;
                }
            }
            apply(&beats, now, &mut out);
            left -= n;
        }
        let apply = started.elapsed();
        let apply_cpu = thread_cpu() - cpu;
        let cpu = thread_cpu();
        let started = Instant::now();
        let (_, dirty) = persist::collect_dirty(&detector);
        let lock = started.elapsed();
        let written = dirty.len();
        let started = Instant::now();
        store
            .write(
                &Batch {
                    hosts: dirty,
                    events: Vec::new(),
                    event_history: 10_000,
                    windows: None,
                    forgotten: Vec::new(),
                    fleet_loss: None,
                },
                SystemTime::now(),
            )
            .expect("write");
        let write = started.elapsed();
        let checkpoint_cpu = thread_cpu() - cpu;
        println!(
            "period {period}: {per_period} beats applied in {} (cpu {}), {written} hosts copied (under the lock, in chunks of 4096) in {}, written in {} (cpu of copy + write {})",
            secs(apply),
            secs(apply_cpu),
            secs(lock),
            secs(write),
            secs(checkpoint_cpu)
        );
        apply_cpu_total += apply_cpu;
        checkpoint_cpu_total += checkpoint_cpu;
        apply_total += apply;
        lock_total += lock;
        write_total += write;
    }
    let wall = interval * periods;
    println!(
        "per second of traffic: applying beats {:.1} ms, checkpoint copy {:.1} ms, checkpoint write {:.1} ms (off the lock, on a blocking thread)",
        apply_total.as_secs_f64() * 1000.0 / wall.as_secs_f64(),
        lock_total.as_secs_f64() * 1000.0 / wall.as_secs_f64(),
        write_total.as_secs_f64() * 1000.0 / wall.as_secs_f64(),
    );
    println!(
        "ratio (copy + write) / applying the beats: {:.2}x; share of one core: {:.1}%",
        (lock_total + write_total).as_secs_f64() / apply_total.as_secs_f64(),
        (lock_total + write_total).as_secs_f64() * 100.0 / wall.as_secs_f64()
    );
    println!(
        "cpu: checkpoint / applying the beats: {:.2}x; checkpoint cpu share of one core: {:.1}%",
        checkpoint_cpu_total.as_secs_f64() / apply_cpu_total.as_secs_f64(),
        checkpoint_cpu_total.as_secs_f64() * 100.0 / wall.as_secs_f64()
    );
    println!(
        "store file after: {:.1} MiB",
        std::fs::metadata(dir.path().join(lubdub::store::FILE_NAME))
            .expect("store file")
            .len() as f64
            / (1 << 20) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let hosts: u32 = args
        .iter()
        .position(|a| a == "--hosts")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let beats_per_sec = if full { 100_000 } else { 1_000 };
    bench_load(hosts);
    bench_checkpoint(hosts, beats_per_sec, Duration::from_secs(5), 4);
    bench_checkpoint(hosts, beats_per_sec, Duration::from_secs(30), 2);
    println!("peak RSS: {:.0} MiB", max_rss_mib());
}
