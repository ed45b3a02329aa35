//! How the JSON API behind the dashboard scales with the fleet: starts a
//! server in-process on loopback, registers N hosts (one v1 beat each, over
//! real UDP), then times the calls the dashboard makes against
//! `/api/v1/summary` (which reads a few counters: the same-run baseline).
//!
//! `cargo run --release --example api_scale -- 100000`

use lubdub::config::ServerConfig;
use lubdub::protocol::{Beat, encode};
use lubdub::server::Server;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let hosts: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let config = ServerConfig {
        timeout: Duration::from_secs(3600), // all stay up while measured
        ..ServerConfig::for_tests()
    };
    let server = runtime.block_on(Server::bind(config.validate()?))?;
    let (udp, http) = (server.udp_addr(), server.http_addr());
    let shutdown = CancellationToken::new();
    let running = runtime.spawn(server.run(shutdown.clone()));

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let base = format!("http://{http}");
    let count = || -> anyhow::Result<u64> {
        let summary: serde_json::Value = ureq::get(&format!("{base}/api/v1/summary"))
            .call()?
            .body_mut()
            .read_json()?;
        Ok(summary["hosts"].as_u64().unwrap_or(0))
    };
    let mut buf = Vec::new();
    // Resend until all are known: a burst may overflow the socket buffer.
    for _round in 0..20 {
        for i in 0..hosts {
            let id = format!("host-{i:06}");
            let beat = Beat {
                flags: 0,
                seq: 1_800_000_000u64 << 32,
                boot_id: [1; 16],
                sent_at_micros: 0,
                interval_ms: 10_000,
                host_id: &id,
                answers: None,
                tag: None,
            };
            buf.clear();
            encode(&beat, &mut buf)?;
            socket.send_to(&buf, udp)?;
            if i % 2000 == 1999 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        if count()? as usize >= hosts {
            break;
        }
    }
    let known = count()?;
    println!("hosts registered: {known}");

    let calls = [
        ("summary (baseline)", "/api/v1/summary".to_string()),
        ("dashboard page: 50 by id", "/api/v1/hosts?limit=50".into()),
        (
            "dashboard page: 50 by state",
            "/api/v1/hosts?sort=state&limit=50".into(),
        ),
        (
            "dashboard page: 50, last page",
            format!("/api/v1/hosts?offset={}&limit=50", hosts.saturating_sub(50)),
        ),
        (
            "dashboard filter q=host-0999",
            "/api/v1/hosts?q=host-0999&limit=50".into(),
        ),
        ("one host", "/api/v1/hosts/host-000042".into()),
        ("full list (no paging)", "/api/v1/hosts".into()),
    ];
    let mut baseline = None;
    println!("{:<32} {:>12} {:>10}", "call", "median", "× summary");
    for (name, path) in calls {
        let runs = if path == "/api/v1/hosts" { 5 } else { 31 };
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| -> anyhow::Result<Duration> {
                let start = Instant::now();
                let body = ureq::get(&format!("{base}{path}"))
                    .call()?
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_string()?;
                std::hint::black_box(body);
                Ok(start.elapsed())
            })
            .collect::<anyhow::Result<_>>()?;
        times.sort();
        let median = times[times.len() / 2];
        let base = *baseline.get_or_insert(median);
        println!(
            "{name:<32} {:>9.3} ms {:>9.1}×",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
    shutdown.cancel();
    runtime.block_on(running)??;
    Ok(())
}
