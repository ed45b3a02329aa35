//! Detection quality end to end: beat statistics in the API and /metrics,
//! the phi detector explaining itself, flapping, and a recorded trace
//! replayed by `lubdub simulate`. See: issue 8.

use crate::util::{
    Proc, Recorder, Server, beat, client, packet, run_seq, send_packets, wait_until,
};
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

/// A server with a 1 s timeout that calls a host flapping at its second
/// `down` within `window`.
fn flapping_server(window: &str) -> Server {
    let config =
        format!("[server]\ntimeout = \"1s\"\nflap_window = \"{window}\"\nflap_threshold = 2\n");
    Server::with_config(&config, &[])
}

/// Round `round` of a flapping host `id`: it beats until it is up, then
/// stops until it is down (its `round`th down).
fn up_then_down(server: &Server, id: &str, round: usize) {
    let mut c = client(&[server.udp], id, &[]);
    assert!(
        wait_until(WAIT, || server.kinds_of(id).len() >= 2 * round - 1
            && server.state_of(id).as_deref() == Some("up")),
        "round {round}: {:?}",
        server.events()
    );
    c.kill();
    let downs = || server.kinds_of(id).iter().filter(|k| *k == "down").count();
    assert!(
        wait_until(WAIT, || downs() == round),
        "round {round}: {:?}",
        server.events()
    );
}

#[test]
fn a_host_going_down_repeatedly_is_flapping_with_one_event() {
    let server = flapping_server("1m");
    for round in 1..=3 {
        up_then_down(&server, "flappy", round);
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
    let downs_before = kinds[..at].iter().filter(|k| *k == "down").count();
    assert_eq!(
        downs_before, 2,
        "flapping at the threshold's down: {kinds:?}"
    );
    let hosts = server.get_json("/api/v1/hosts");
    assert_eq!(hosts[0]["flapping"], true);
    assert_eq!(server.metric("lubdub_hosts_flapping"), Some(1.0));
}

#[test]
fn a_flapping_host_settles_after_a_quiet_window() {
    let window = Duration::from_secs(5);
    let server = flapping_server("5s");
    up_then_down(&server, "settling", 1);
    up_then_down(&server, "settling", 2);
    assert!(server.wait_event("settling", "flapping", WAIT));
    let _steady = client(&[server.udp], "settling", &[]);
    assert!(
        server.wait_event("settling", "settled", window + WAIT),
        "{:?}",
        server.events()
    );
    // By the server's clock: a whole window after the second down (which
    // it keeps to a tenth of a second).
    let at = |kind: &str| {
        let mut events = server.events();
        events.retain(|e| e.host == "settling" && e.kind == kind);
        events.last().expect("event").at
    };
    let quiet = at("settled").duration_since(at("down")).expect("in order");
    assert!(
        quiet + Duration::from_millis(100) >= window,
        "settled {quiet:?} after the last down"
    );
    assert_eq!(
        server.kinds_of("settling"),
        [
            "joined",
            "late",
            "down",
            "recovered",
            "late",
            "down",
            "flapping",
            "recovered",
            "settled"
        ]
    );
    let host = server.get_json("/api/v1/hosts/settling");
    assert_eq!(
        (&host["state"], &host["flapping"]),
        (&"up".into(), &false.into())
    );
    assert_eq!(server.metric("lubdub_hosts_flapping"), Some(0.0));
}

#[test]
fn a_new_boot_id_is_a_reboot_in_events_api_and_sinks() {
    let recorder = Recorder::start(&[]);
    let config = format!(
        "[[server.sinks.webhook]]\nurl = \"{}\"\nevents = [\"rebooted\"]\n",
        recorder.url("/")
    );
    let server = Server::with_config(&config, &["--timeout", "30s"]);
    let before_boot = run_seq();
    let first: Vec<Vec<u8>> = (1..=3)
        .map(|i| packet(&beat("rb-1", before_boot + i), None))
        .collect();
    send_packets(server.udp, &first, 1);
    assert!(server.wait_event("rb-1", "joined", WAIT));
    assert!(wait_until(
        WAIT,
        || server.get_json("/api/v1/hosts/rb-1")["beats"] == 3
    ));
    assert_eq!(server.get_json("/api/v1/hosts/rb-1")["boot_id"], "07070707");

    // The machine rebooted: another boot id, and a new run of the client.
    std::thread::sleep(Duration::from_millis(1100)); // a later start second
    let after = run_seq();
    assert!(after > before_boot);
    let rebooted = packet(
        &Beat {
            boot_id: [8; 16],
            ..beat("rb-1", after)
        },
        None,
    );
    send_packets(server.udp, &[rebooted], 1);
    assert!(
        server.wait_event("rb-1", "rebooted", WAIT),
        "{:?}",
        server.events()
    );
    assert_eq!(server.kinds_of("rb-1"), ["joined", "rebooted"]);
    let host = server.get_json("/api/v1/hosts/rb-1");
    assert_eq!(
        (&host["boot_id"], &host["state"]),
        (&"08080808".into(), &"up".into())
    );
    assert!(wait_until(WAIT, || recorder.requests().len() == 1));
    let sent = &recorder.requests()[0].body;
    assert_eq!(
        (&sent["kind"], &sent["host"]),
        (&"rebooted".into(), &"rb-1".into())
    );
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
