//! Watching the watcher (`[server.watchdog]`): two servers beating to each
//! other, and the dead man's switch pinged on schedule only while healthy.

use crate::persistence::{Disk, beat_new_hosts, fill};
use crate::util::{Recorder, Server, client, free_udp_port, keygen, wait_until, write_file};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Starts a server on `udp_port` whose config file holds `watchdog`
/// (the body of a `[server.watchdog]` table).
fn start_with_watchdog(
    dir: &std::path::Path,
    name: &str,
    udp_port: Option<u16>,
    watchdog: &str,
    extra: &[&str],
) -> Server {
    let config = write_file(
        dir,
        &format!("{name}.toml"),
        &format!("[server.watchdog]\n{watchdog}\n"),
    );
    let listen = udp_port.map(|p| format!("127.0.0.1:{p}"));
    let mut args = vec!["--config", &config, "--timeout", "1s"];
    if let Some(listen) = &listen {
        args.extend(["--listen", listen]);
    }
    args.extend(extra);
    Server::start_in(&dir.join(name), &args)
}

#[test]
fn two_servers_watch_each_other_and_report_the_one_killed_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Server b requires signed beats: a signs its watchdog beats with the
    // client's key handling; b's beats to a are unsigned.
    let key = keygen(tmp.path(), "shared.key", &[]);
    let key = key.to_str().expect("utf-8");
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let a = start_with_watchdog(
        tmp.path(),
        "a",
        Some(port_a),
        &format!(
            "servers = [\"127.0.0.1:{port_b}\"]\nhost_id = \"mon-a\"\ninterval = \"100ms\"\n\
             key_file = \"{key}\"\n"
        ),
        &[],
    );
    let mut b = start_with_watchdog(
        tmp.path(),
        "b",
        Some(port_b),
        &format!("servers = [\"127.0.0.1:{port_a}\"]\nhost_id = \"mon-b\"\ninterval = \"100ms\"\n"),
        &["--key-file", key],
    );
    assert!(a.wait_event("mon-b", "joined", WAIT), "{:?}", a.events());
    assert!(b.wait_event("mon-a", "joined", WAIT), "{:?}", b.events());
    assert_eq!(
        b.metric("lubdub_packets_dropped_total{reason=\"unsigned\"}"),
        Some(0.0),
        "a's beats are signed"
    );
    assert!(wait_until(WAIT, || a.state_of("mon-b").as_deref() == Some("up")));

    b.proc.kill();
    assert!(a.wait_event("mon-b", "down", WAIT), "{:?}", a.events());
    assert_eq!(a.state_of("mon-b").as_deref(), Some("down"));
}

#[test]
fn a_clean_stop_says_goodbye_and_the_default_host_id_names_the_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let watcher = Server::start(&["--timeout", "1s"]);
    let mut watched = start_with_watchdog(
        tmp.path(),
        "watched",
        None,
        &format!("servers = [\"{}\"]\ninterval = \"100ms\"\n", watcher.udp),
        &[],
    );
    let id = wait_until(WAIT, || {
        watcher
            .events()
            .iter()
            .any(|e| e.host.starts_with("lubdub-server@"))
    });
    assert!(id, "{:?}", watcher.events());
    let host = watcher
        .events()
        .into_iter()
        .find(|e| e.host.starts_with("lubdub-server@"))
        .expect("joined")
        .host;
    watched.proc.signal(libc::SIGTERM);
    assert!(watched.proc.wait_exit(WAIT).success());
    assert!(
        watcher.wait_event(&host, "left", WAIT),
        "{:?}",
        watcher.events()
    );
    assert!(!watcher.kinds_of(&host).contains(&"down".to_string()));
}

/// Arrival times of the first `count` requests at `recorder`, once they
/// came (fewer if they did not within the wait).
fn ping_times(recorder: &Recorder, count: usize) -> Vec<Instant> {
    wait_until(WAIT, || recorder.requests().len() >= count);
    recorder
        .requests()
        .iter()
        .take(count)
        .map(|r| r.at)
        .collect()
}

#[test]
fn the_dead_mans_switch_is_pinged_on_schedule_only_while_healthy() {
    let recorder = Recorder::start(&[]);
    let tmpfs = Disk::tmpfs("8m");
    let watchdog = format!(
        "ping_url = \"{}\"\nping_method = \"POST\"\nping_interval = \"200ms\"\n",
        recorder.url("/ping/token")
    );
    let server = start_with_watchdog(
        &tmpfs.path,
        "data",
        None,
        &watchdog,
        &["--checkpoint-interval", "200ms"],
    );
    // No beat received yet: not healthy, so no ping over five intervals.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(recorder.requests().len(), 0, "{:?}", recorder.requests());

    let _beating = client(&[server.udp], "pinger", &[]);
    let times = ping_times(&recorder, 5);
    assert_eq!(times.len(), 5, "{:?}", recorder.requests());
    for pair in times.windows(2) {
        // On schedule, not in a burst: 200 ms apart (100 ms of slack for
        // a loaded machine).
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(100), "{gap:?}");
    }
    for request in recorder.requests() {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/ping/token")
        );
    }

    // The store fails: the pings stop while monitoring goes on.
    fill(&tmpfs.path.join("filler"));
    beat_new_hosts(&server, "fill", 3000);
    assert!(
        wait_until(WAIT, || server.metric("lubdub_store_healthy") == Some(0.0)),
        "the store fails on a full disk"
    );
    // A ping decided just before the failure may still be arriving.
    std::thread::sleep(Duration::from_millis(300));
    let stopped_at = recorder.requests().len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        recorder.requests().len(),
        stopped_at,
        "no ping while failing"
    );
    assert!(
        server.proc.stderr_has(&["not pinging", "store"]),
        "{:?}",
        server.proc.stderr()
    );

    // Space again: the store recovers and the pings resume.
    std::fs::remove_file(tmpfs.path.join("filler")).expect("remove filler");
    assert!(wait_until(WAIT, || server.metric("lubdub_store_healthy") == Some(1.0)));
    assert!(
        wait_until(WAIT, || recorder.requests().len() >= stopped_at + 2),
        "pings resume"
    );
}

#[test]
fn a_bad_watchdog_setting_is_a_one_line_error_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        tmp.path(),
        "bad.toml",
        "[server.watchdog]\nping_url = \"ftp://example.org/x\"\n",
    );
    let ran = crate::util::run(&["server", "--config", &config, "--print-config"], &[]);
    assert_ne!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stderr.contains("watchdog.ping_url"), "{ran:?}");
    let missing = write_file(
        tmp.path(),
        "nokey.toml",
        "[server.watchdog]\nservers = [\"127.0.0.1:9\"]\nkey_file = \"/nonexistent/k\"\n",
    );
    let data = tmp.path().join("data");
    let ran = crate::util::run_server(&missing, &data);
    assert_ne!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stderr.contains("/nonexistent/k"), "{ran:?}");
}
