//! Detection quality end to end: beat statistics in the API and /metrics,
//! the phi detector explaining itself, flapping, and a recorded trace
//! replayed by `lubdub simulate`. See: issue 8.

use crate::util::{Proc, Server, beat, client, packet, send_packets, wait_until};
use lubdub::protocol::Beat;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn host<'a>(hosts: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    hosts.as_array()?.iter().find(|h| h["id"] == id)
}

/// Sends v1 beats of `id` with the given sequence numbers, in this order.
fn send_seqs(server: &Server, id: &str, seqs: &[u64]) {
    let packets: Vec<Vec<u8>> = seqs
        .iter()
        .map(|&seq| {
            packet(
                &Beat {
                    interval_ms: 10_000,
                    ..beat(id, seq)
                },
                None,
            )
        })
        .collect();
    // One datagram at a time: the order on the wire is the test.
    send_packets(server.udp, &packets, 1);
}

#[test]
fn losses_duplicates_and_reordering_show_in_the_api_and_metrics() {
    let server = Server::start(&["--timeout", "30s"]);
    let run = 1_700_000_000u64 << 32;
    // 1, 2, then 5 (3 and 4 lost), 4 late (reordered), 4 again (duplicate).
    send_seqs(
        &server,
        "stats-host",
        &[run + 1, run + 2, run + 5, run + 4, run + 4],
    );
    let mut view = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            let hosts = server.get_json("/api/v1/hosts");
            view = host(&hosts, "stats-host").cloned().unwrap_or_default();
            view["beats"] == 5
        }),
        "{view}"
    );
    assert_eq!(view["losses"], 1, "{view}");
    assert_eq!(view["reordered"], 1, "{view}");
    assert_eq!(view["duplicates"], 1, "{view}");
    assert_eq!(view["detector"], "fixed");
    assert_eq!(view["flapping"], false);
    let offset = view["clock_offset_seconds"].as_f64().expect("offset");
    assert!((0.0..5.0).contains(&offset), "sent just now: {offset}");
    assert!(
        view["why"].as_str().expect("why").contains("timeout"),
        "{view}"
    );
    assert_eq!(server.metric("lubdub_beats_lost_total"), Some(1.0));
    assert_eq!(server.metric("lubdub_beats_reordered_total"), Some(1.0));
    assert_eq!(server.metric("lubdub_beats_duplicated_total"), Some(1.0));
    assert_eq!(server.metric("lubdub_hosts_flapping"), Some(0.0));
}

#[test]
fn phi_detector_learns_the_rhythm_and_explains_a_down_host() {
    let server = Server::start(&["--detector", "phi"]);
    let mut beating = client(&[server.udp], "phi-host", &[]);
    let mut view = serde_json::Value::Null;
    // The rhythm estimate converges on the 100 ms beat.
    assert!(
        wait_until(WAIT, || {
            let hosts = server.get_json("/api/v1/hosts");
            view = host(&hosts, "phi-host").cloned().unwrap_or_default();
            view["beats"].as_u64().unwrap_or(0) >= 20
        }),
        "{view}"
    );
    assert_eq!(view["detector"], "phi");
    let mean = view["interval_mean_seconds"].as_f64().expect("mean");
    assert!((0.08..0.15).contains(&mean), "mean time per beat {mean}");
    assert!(view["phi"].as_f64().expect("phi") < 3.0, "beating: {view}");
    beating.kill();
    assert!(
        server.wait_event("phi-host", "down", WAIT),
        "{:?}",
        server.events()
    );
    let hosts = server.get_json("/api/v1/hosts");
    let view = host(&hosts, "phi-host").expect("host");
    assert_eq!(view["state"], "down");
    assert!(view["phi"].as_f64().expect("phi") >= 10.0, "{view}");
    let why = view["why"].as_str().expect("why");
    assert!(
        why.starts_with("phi ") && why.contains("σ overdue"),
        "{why}"
    );
    assert_eq!(server.kinds_of("phi-host"), ["joined", "late", "down"]);
}

#[test]
fn a_host_going_down_repeatedly_is_flapping_with_one_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lubdub.toml");
    std::fs::write(
        &config,
        "[server]\ntimeout = \"1s\"\nflap_window = \"1m\"\nflap_threshold = 2\n",
    )
    .expect("write config");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    for round in 1..=3 {
        let mut c = client(&[server.udp], "flappy", &[]);
        assert!(
            wait_until(WAIT, || server.kinds_of("flappy").len() >= 2 * round - 1
                && server.get_json("/api/v1/hosts")[0]["state"] == "up"),
            "round {round}: {:?}",
            server.events()
        );
        c.kill();
        let downs = |s: &Server| s.kinds_of("flappy").iter().filter(|k| *k == "down").count();
        assert!(
            wait_until(WAIT, || downs(&server) == round),
            "round {round}: {:?}",
            server.events()
        );
    }
    let kinds = server.kinds_of("flappy");
    assert_eq!(
        kinds.iter().filter(|k| *k == "flapping").count(),
        1,
        "one flapping event: {kinds:?}"
    );
    let at = kinds
        .iter()
        .position(|k| k == "flapping")
        .expect("flapping");
    assert_eq!(kinds[at - 1], "down", "flapping comes with the second down");
    let hosts = server.get_json("/api/v1/hosts");
    assert_eq!(hosts[0]["flapping"], true);
    assert_eq!(server.metric("lubdub_hosts_flapping"), Some(1.0));
}

#[test]
fn a_recorded_trace_replays_in_the_simulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("beats.trace");
    let trace_arg = trace.to_str().expect("utf-8");
    let mut server = Server::start(&["--timeout", "1s", "--record", trace_arg]);
    let _a = client(&[server.udp], "rec-a", &[]);
    let mut b = client(&[server.udp], "rec-b", &[]);
    assert!(server.wait_event("rec-b", "joined", WAIT));
    assert!(wait_until(WAIT, || server
        .get_json("/api/v1/hosts")
        .as_array()
        .is_some_and(|h| h.len() == 2
            && h.iter()
                .all(|h| h["beats"].as_u64().unwrap_or(0) >= 10))));
    b.kill();
    assert!(server.wait_event("rec-b", "down", WAIT));
    // rec-a beats on a little, so the trace reaches past rec-b's deadline.
    let beats_of_a = || {
        let hosts = server.get_json("/api/v1/hosts");
        host(&hosts, "rec-a")
            .and_then(|h| h["beats"].as_u64())
            .unwrap_or(0)
    };
    let before = beats_of_a();
    assert!(wait_until(WAIT, || beats_of_a() >= before + 5));
    server.proc.signal(libc::SIGTERM);
    assert!(server.proc.wait_exit(WAIT).success());

    let mut sim = Proc::spawn(&[
        "simulate",
        "--trace",
        trace_arg,
        "--timeout",
        "1s",
        "--json",
    ]);
    assert!(sim.wait_exit(WAIT).success(), "{:?}", sim.stderr());
    let out = sim.stdout().join("\n");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["hosts"], 2, "{report}");
    assert!(report["beats"].as_u64().expect("beats") >= 20, "{report}");
    assert_eq!(report["down_at_end"], 1, "rec-b stopped: {report}");

    let bad = dir.path().join("not-a-trace");
    std::fs::write(&bad, "hello\n").expect("write");
    let mut sim = Proc::spawn(&["simulate", "--trace", bad.to_str().expect("utf-8")]);
    assert!(!sim.wait_exit(WAIT).success());
    let err = sim.stderr().join("\n");
    assert!(err.contains("line 1: not a lubdub trace"), "{err}");
}
