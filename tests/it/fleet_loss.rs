//! The fleet's loss averages (where a new host's loss model starts): learnt
//! from the hosts' runs of lost beats, shown in `/metrics`, and kept over a
//! restart, so that a restarted server does not judge a bursty fleet as a
//! new one. See: issue 15.

use crate::util::{Server, beat, packet, run_seq, send_packets, wait_until};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Hosts, and sequence numbers each: every 10, 6 arrive and 4 are lost.
/// A host's runs count once 20 of its beats arrived (seq 33), so each
/// host teaches 8 runs (36..=39 up to 106..=109) of 4 samples: 160 in all,
/// past the 100 after which the average is used.
const HOSTS: usize = 5;
const SEQS: u64 = 120;

/// The datagrams of [`HOSTS`] bursty hosts, interleaved as they would
/// arrive together.
fn bursty_fleet() -> Vec<Vec<u8>> {
    let run = run_seq();
    let ids: Vec<String> = (0..HOSTS).map(|i| format!("bursty-{i}")).collect();
    (0..SEQS)
        .filter(|n| n % 10 < 6)
        .flat_map(|n| ids.iter().map(move |id| packet(&beat(id, run + n), None)))
        .collect()
}

#[test]
fn the_fleets_burst_average_is_learnt_shown_and_kept_over_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No periodic checkpoint: only the clean shutdown's can keep them
    // (the hosts' joins are written at once, before anything is learnt).
    let args = ["--checkpoint-interval", "1h"];
    let server = Server::start_in(dir.path(), &args);
    assert_eq!(server.metric("lubdub_fleet_burst_excess"), None);
    assert_eq!(server.metric("lubdub_fleet_burst_samples"), Some(0.0));

    let packets = bursty_fleet();
    // One beat of each host per burst: none overtakes its host's previous.
    assert_eq!(send_packets(server.udp, &packets, HOSTS), packets.len());
    let applied = packets.len() as f64;
    assert!(
        wait_until(WAIT, || server.metric("lubdub_beats_total")
            == Some(applied)),
        "all beats applied: {:?}",
        server.metric("lubdub_beats_total")
    );
    let samples = server
        .metric("lubdub_fleet_burst_samples")
        .expect("samples");
    let excess = server.metric("lubdub_fleet_burst_excess");
    // A run of 4 after 6 arrivals: a loss rate near 1/6, and each run's
    // 3 losses after a loss (1 - 1/6 each) and 1 arrival (-1/6) average
    // about 0.58 above it.
    assert!(
        excess.is_some_and(|e| (0.4..0.8).contains(&e)),
        "a burst excess learnt from {samples} samples: {excess:?}"
    );
    assert!(samples >= 100.0, "{samples}");
    assert_eq!(server.metric("lubdub_fleet_probe_run_loss"), None);
    server.stop();

    let server = Server::start_in(dir.path(), &args);
    assert_eq!(
        server.metric("lubdub_beats_total"),
        Some(0.0),
        "nothing new learnt"
    );
    assert_eq!(
        server.metric("lubdub_fleet_burst_excess"),
        excess,
        "the average is restored"
    );
    assert_eq!(
        server.metric("lubdub_fleet_burst_samples"),
        Some(samples),
        "with its samples"
    );
    server.stop();
}
