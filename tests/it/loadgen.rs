//! `lubdub loadgen` end to end: a short smoke run that checks the load
//! generator still works against the real server. Correctness only: the
//! figures it produces belong in docs/BENCHMARKS.md, not in assertions.

use crate::util::{Proc, Server, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

/// Hosts per state, from `/api/v1/hosts`.
fn states(server: &Server) -> (usize, BTreeSet<String>, BTreeSet<String>) {
    let hosts = server.get_json("/api/v1/hosts");
    let hosts = hosts.as_array().expect("host array");
    let with = |state: &str| -> BTreeSet<String> {
        hosts
            .iter()
            .filter(|h| h["state"] == state)
            .filter_map(|h| h["id"].as_str().map(String::from))
            .collect()
    };
    (hosts.len(), with("up"), with("down"))
}

/// Starts `lubdub loadgen` against `server`: `hosts` hosts beating every
/// 100 ms for `duration`, with `extra` arguments.
fn loadgen(server: &Server, hosts: &str, duration: &str, extra: &[&str]) -> Proc {
    let target = server.udp.to_string();
    let mut args = vec!["loadgen", &target, "--hosts", hosts, "--interval", "100ms"];
    args.extend(["--duration", duration]);
    args.extend(extra);
    Proc::spawn(&args)
}

#[test]
fn fleet_comes_up_and_the_stopped_hosts_go_down() {
    let server = Server::start(&["--timeout", "2s"]);
    // Stops 20 hosts after 1 s (down about 2 s later), and keeps the other
    // 180 beating until 8 s: time to see the 20 down while the rest are up.
    let mut loadgen = loadgen(
        &server,
        "200",
        "8s",
        &[
            "--sources",
            "16",
            "--stop-count",
            "20",
            "--stop-after",
            "1s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || states(&server).0 == 200),
        "200 hosts registered; loadgen stderr: {:?}",
        loadgen.stderr()
    );
    let mut last = (0, BTreeSet::new(), BTreeSet::new());
    let split = wait_until(Duration::from_secs(6), || {
        last = states(&server);
        last.1.len() == 180 && last.2.len() == 20
    });
    assert!(split, "180 up and 20 down, got {last:?}");
    let (_, up, down) = last;

    let status = loadgen.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "loadgen: {:?}", loadgen.stderr());
    let out = loadgen.stdout();
    let stopped: BTreeSet<String> = out
        .iter()
        .filter_map(|l| l.strip_prefix("stopped "))
        .map(|l| {
            let (id, last_beat) = l.split_once(" last_beat=").expect("stopped line");
            assert!(
                humantime::parse_rfc3339(last_beat).is_ok(),
                "last beat time: {l}"
            );
            id.to_string()
        })
        .collect();
    assert_eq!(stopped, down, "the hosts loadgen stopped are the ones down");
    assert!(
        up.iter()
            .all(|id| id.len() == 12 && id.starts_with("host-"))
    );
    let sent = out
        .iter()
        .find(|l| l.starts_with("sent "))
        .expect("a sent line");
    assert!(sent.contains(" errors=0 "), "{sent}");
    let packets: u64 = sent
        .split_whitespace()
        .find_map(|w| w.strip_prefix("packets="))
        .and_then(|n| n.parse().ok())
        .expect("packet count");
    // 20 hosts × ~10 beats, 180 × ~80: at least a round of each, at most
    // the full schedule.
    assert!((200..=200 * 81).contains(&packets), "{sent}");
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric("lubdub_beats_total")
            == Some(packets as f64)),
        "every beat sent was applied: {:?} of {packets}",
        server.metric("lubdub_beats_total")
    );
    for id in &stopped {
        assert!(
            server.wait_event(id, "down", Duration::from_secs(5)),
            "{id} down event"
        );
    }
}

#[test]
fn refuses_to_load_a_non_loopback_address() {
    let mut loadgen = Proc::spawn(&["loadgen", "192.0.2.1:43278", "--duration", "1s"]);
    let status = loadgen.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let stderr = loadgen.stderr().join("\n");
    assert!(
        stderr.contains("refusing to send load to non-loopback address 192.0.2.1:43278"),
        "{stderr}"
    );
}

#[test]
fn signed_load_is_accepted_by_a_keyed_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = crate::util::keygen(dir.path(), "keys.toml", &[]);
    let keys = keys.to_str().expect("utf-8 path");
    let server = Server::start(&["--timeout", "2s", "--key-file", keys]);
    let mut loadgen = loadgen(&server, "50", "1s", &["--key-file", keys]);
    assert!(
        loadgen.wait_exit(Duration::from_secs(20)).success(),
        "{:?}",
        loadgen.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(5), || states(&server).1.len() == 50),
        "all 50 signed hosts up: {:?}",
        states(&server)
    );
    for reason in ["unsigned", "bad_mac", "unknown_key", "replay", "clock_skew"] {
        let sample = format!("lubdub_packets_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&sample), Some(0.0), "{reason}");
    }
}
