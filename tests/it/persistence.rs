//! Persistence: a restart or a stall of the server is not an outage of the
//! fleet; a failing disk never stops monitoring; a bad store is refused.
//! See: issue 4.

use crate::util::{
    Proc, Server, beat, client, free_udp_port, kinds_since, must_run, packet, path_str,
    send_packets, wait_until,
};
use lubdub::protocol::Beat;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

fn beats_of(server: &Server) -> BTreeMap<String, u64> {
    let hosts = server.get_json("/api/v1/hosts");
    hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| {
            (
                h["id"].as_str().expect("id").to_string(),
                h["beats"].as_u64().expect("beats"),
            )
        })
        .collect()
}

/// Waits for `n` more checkpoints than have been written so far, so that
/// everything seen before this call is on disk.
fn wait_checkpoints(server: &Server, n: f64) {
    let metric = "lubdub_store_checkpoints_total";
    let before = server.metric(metric).expect("checkpoint metric");
    assert!(
        wait_until(WAIT, || server.metric(metric).unwrap_or(0.0) >= before + n),
        "checkpoints are written"
    );
}

/// Arguments of a server restarted on the same UDP port `listen`, with a
/// 1 s timeout and a checkpoint every `checkpoint`.
fn restartable<'a>(listen: &'a str, checkpoint: &'a str) -> [&'a str; 6] {
    [
        "--listen",
        listen,
        "--timeout",
        "1s",
        "--checkpoint-interval",
        checkpoint,
    ]
}

#[test]
fn kill_9_then_restart_remembers_hosts_and_gives_them_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let args = restartable(&listen, "200ms");
    let mut server = Server::start_in(dir.path(), &args);
    let ids = ["keeps-beating-1", "keeps-beating-2", "stops"];
    let mut clients: BTreeMap<&str, Proc> = ids
        .iter()
        .map(|&id| (id, client(&[server.udp], id, &[])))
        .collect();
    assert!(
        wait_until(WAIT, || beats_of(&server)
            .values()
            .filter(|&&b| b >= 5)
            .count()
            == 3),
        "all beating: {:?}",
        server.events()
    );
    let before = beats_of(&server);
    wait_checkpoints(&server, 2.0);

    server.proc.kill(); // SIGKILL: no chance to flush
    clients.get_mut("stops").expect("client").kill(); // stops while the server is away
    let restarted_at = Instant::now();
    let server = Server::start_in(dir.path(), &args);

    let after = beats_of(&server);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "every host is remembered"
    );
    for (id, beats) in &before {
        assert!(
            after[id] >= *beats,
            "{id}: last-seen checkpoint kept its counters"
        );
    }
    // Printed by another task than the `listening` line, so perhaps later.
    assert!(
        server.wait_event("-", "monitor_started", WAIT),
        "{:?}",
        server.proc.stdout()
    );
    let started = server
        .events()
        .into_iter()
        .find(|e| e.kind == "monitor_started")
        .expect("a monitor_started event");
    assert!(
        started.silent_secs > 0.0,
        "it says how long the server was away: {started:?}"
    );

    // The stopped client is declared down once the grace (one timeout from
    // the server's start) ends, and not before.
    assert!(
        server.wait_event("stops", "down", WAIT),
        "{:?}",
        server.events()
    );
    assert!(restarted_at.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.kinds_of("stops"), ["late", "down"]);
    // The clients that kept running never changed state: no late, no down,
    // not even a `joined`, since the server remembered them.
    let changed = wait_until(Duration::from_secs(2), || {
        ids[..2].iter().any(|id| !server.kinds_of(id).is_empty())
    });
    assert!(!changed, "running clients untouched: {:?}", server.events());
    for id in &ids[..2] {
        assert_eq!(server.state_of(id).as_deref(), Some("up"));
    }
}

/// After a `kill -9` the store's last-seen times are those of the latest
/// checkpoint, and a host may beat unheard until the server is back: a
/// host that died meanwhile is paged a full timeout after the restart, no
/// sooner, with its silence given as bounds (at least since the restart, at
/// most since its latest recorded beat) that hold its true silence, in the
/// console line, the events API and the host's `why`.
#[test]
fn a_host_that_died_while_the_server_was_away_gets_bounds_not_a_stale_silence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_udp_port());
    // Checkpoints far apart: the stored last-seen times stay those written
    // when the hosts joined.
    let timeout = 1.0;
    let args = restartable(&listen, "10min");
    let mut server = Server::start_in(dir.path(), &args);
    let mut clients = server.join_all(&["beats-on", "dies"], WAIT);
    // Two seconds of beats the store does not hear of.
    let joined = SystemTime::now();
    assert!(wait_until(WAIT, || {
        joined.elapsed().unwrap_or_default() >= Duration::from_secs(2)
            && beats_of(&server).values().all(|&b| b >= 10)
    }));
    server.proc.kill(); // SIGKILL: no chance to flush
    clients[1].kill(); // dies while the server is away
    let died = SystemTime::now();
    let restarting = SystemTime::now();
    let server = Server::start_in(dir.path(), &args);

    assert!(
        server.wait_event("dies", "down", WAIT),
        "{:?}",
        server.events()
    );
    let events = server.events();
    let down = events
        .iter()
        .find(|e| e.host == "dies" && e.kind == "down")
        .expect("down");
    let since_start = down
        .at
        .duration_since(restarting)
        .expect("down after the restart");
    assert!(
        since_start.as_secs_f64() >= timeout,
        "paged {since_start:?} after the restart, before a full timeout"
    );
    let truth = down
        .at
        .duration_since(died)
        .expect("down after death")
        .as_secs_f64();
    let low = down
        .silent_at_least
        .unwrap_or_else(|| panic!("the silence is given as bounds: {down:?}"));
    // The console rounds to milliseconds.
    assert!(
        low >= timeout - 0.001
            && low <= since_start.as_secs_f64() + 0.001
            && low <= truth + 0.001
            && truth <= down.silent_secs + 0.001,
        "timeout <= {low} s <= true silence {truth} s <= {} s",
        down.silent_secs
    );
    assert!(
        down.silent_secs - low >= 2.0,
        "the upper bound reaches back to the latest stored beat: {down:?}"
    );

    let api_events = server.get_json("/api/v1/events");
    let api_down = api_events
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["host"] == "dies" && e["kind"] == "down")
        .expect("the down in the API");
    let api_low = api_down["silent_seconds_at_least"]
        .as_f64()
        .unwrap_or_else(|| panic!("bounds in the API: {api_down}"));
    assert!((api_low - low).abs() < 0.001, "{api_down}");
    let host = server.get_json("/api/v1/hosts/dies");
    let why = host["why"].as_str().expect("why");
    assert!(
        why.contains("not heard since the server restarted")
            && why.contains("latest recorded beat"),
        "{why}"
    );
    assert!(
        host["silent_seconds_at_least"].as_f64().expect("bounds")
            < host["silent_seconds"].as_f64().expect("silence"),
        "{host}"
    );
    // A host heard since the restart has its exact silence again.
    assert!(
        wait_until(WAIT, || {
            server.get_json("/api/v1/hosts/beats-on")["silent_seconds_at_least"].is_null()
        }),
        "{}",
        server.get_json("/api/v1/hosts/beats-on")
    );
    assert_eq!(server.kinds_of("beats-on"), Vec::<String>::new());
}

#[test]
fn a_stopped_server_does_not_declare_the_fleet_down_when_it_resumes() {
    // 2 s timeout: the stall is forgiven from the timer's intended wake-up
    // (at most half a second before it), and a loaded machine may take a
    // moment to apply the queued beats.
    let server = Server::start(&["--timeout", "2s"]);
    let mut stops = client(&[server.udp], "stops", &[]);
    let _a = client(&[server.udp], "beating-a", &[]);
    let _b = client(&[server.udp], "beating-b", &[]);
    for id in ["stops", "beating-a", "beating-b"] {
        assert!(
            server.wait_event(id, "joined", WAIT),
            "{:?}",
            server.events()
        );
    }
    stops.kill();
    server.proc.signal(libc::SIGSTOP);
    // The stall itself: longer than the timeout, while the clients beat on.
    std::thread::sleep(Duration::from_secs(3));
    server.proc.signal(libc::SIGCONT);
    let resumed = server.proc.stdout().len();

    assert!(
        server.wait_event("stops", "down", WAIT),
        "detection still works after a stall: {:?}",
        server.events()
    );
    let changed = wait_until(Duration::from_secs(2), || {
        ["beating-a", "beating-b"]
            .iter()
            .any(|id| !kinds_since(&server, resumed, id).is_empty())
    });
    assert!(
        !changed,
        "no mass down after SIGCONT: {:?}",
        server.events()
    );
    assert!(
        server.metric("lubdub_detector_stalls_total").unwrap_or(0.0) >= 1.0,
        "the stall is counted"
    );
}

/// A small filesystem mounted for one test, unmounted on drop (even when
/// the test fails), so a full or read-only disk can be made for real.
/// Needs root, which this project's test machines and CI run as.
pub struct Disk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Disk {
    /// A tmpfs of `size` (e.g. `8m`).
    pub fn tmpfs(size: &str) -> Disk {
        Self::mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "lubdub-test"])
    }

    /// An ext4 image on a loop device, mounted so that an error makes the
    /// kernel turn it read-only under the open files (as a failing disk
    /// does; a plain `remount,ro` is refused while a file is open for
    /// writing).
    fn ext4(size_bytes: u64) -> Disk {
        let image = tempfile::NamedTempFile::new().expect("image file");
        image.as_file().set_len(size_bytes).expect("size image");
        must_run("mkfs.ext4", &["-q", path_str(image.path())]);
        let image_path = path_str(image.path()).to_string();
        let disk = Self::mount(&["-o", "loop,errors=remount-ro", &image_path]);
        drop(image); // the loop device keeps the image's inode
        disk
    }

    fn mount(how: &[&str]) -> Disk {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mkdir");
        let mut args = how.to_vec();
        args.push(path_str(&path));
        must_run("mount", &args);
        Disk { path, _dir: dir }
    }

    /// Makes the ext4 disk read-only the way the kernel does on an error.
    fn fail_read_only(&self) {
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .expect("run findmnt");
        let device = String::from_utf8_lossy(&source.stdout);
        let device = device.trim().trim_start_matches("/dev/");
        let trigger = format!("/sys/fs/ext4/{device}/trigger_fs_error");
        std::fs::write(&trigger, "lubdub test")
            .unwrap_or_else(|e| panic!("{trigger}: this kernel needs ext4 error triggers: {e}"));
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Lazy: the server under test may still hold files open here.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros to `path` until the filesystem is full. Bounded by the
/// filesystem's size.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    for chunk in [1 << 20, 4096, 1] {
        let buf = vec![0u8; chunk];
        for _ in 0..100_000 {
            if file.write_all(&buf).is_err() {
                break;
            }
        }
    }
    let _ = file.sync_all();
}

/// Sends one v1 beat for each of `count` new hosts with long ids, so the
/// next checkpoint has to grow the store.
pub fn beat_new_hosts(server: &Server, prefix: &str, count: usize) {
    let pad = "x".repeat(180);
    let packets: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let id = format!("{prefix}-{i:05}-{pad}");
            packet(
                &Beat {
                    interval_ms: 60_000,
                    ..beat(&id, 1)
                },
                None,
            )
        })
        .collect();
    send_packets(server.udp, &packets, 200);
}

/// With a client `watched` beating, breaks the disk with `fault`, then
/// checks what the README promises: the failed write is counted, logged
/// once and shown in `/healthz` (with one of `error_texts`) and `/metrics`, while
/// monitoring goes on in memory (3000 new hosts are known, and `watched`,
/// stopped, goes down). Leaves `watched` down and the disk broken.
fn monitors_on_a_failing_disk(server: &Server, error_texts: &[&str], fault: impl FnOnce()) {
    let mut watched = client(&[server.udp], "watched", &[]);
    assert!(server.wait_event("watched", "joined", WAIT));
    assert_eq!(server.get_json("/healthz")["store"]["ok"], true);

    fault();
    beat_new_hosts(server, "during", 3000);
    let write_errors = || {
        server
            .metric("lubdub_store_write_errors_total")
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || write_errors() >= 1.0),
        "the write fails on a broken disk"
    );
    let health = server.get_json("/healthz");
    assert_eq!(health["status"], "degraded", "{health}");
    let error = health["store"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("lubdub.redb") && error_texts.iter().any(|text| error.contains(text)),
        "{health}"
    );
    assert_eq!(server.metric("lubdub_store_healthy"), Some(0.0));
    // Monitoring goes on in memory: new hosts are known, silence detected.
    assert!(wait_until(WAIT, || host_count(server) == 3001));
    watched.kill();
    assert!(
        server.wait_event("watched", "down", WAIT),
        "{:?}",
        server.events()
    );
    // Retried (each checkpoint), but logged once, then rate-limited (one
    // line per minute at most).
    assert!(
        wait_until(WAIT, || write_errors() >= 3.0),
        "retried: {}",
        write_errors()
    );
    let logged = server.proc.stderr_count("cannot write store");
    assert_eq!(logged, 1, "{:?}", server.proc.stderr());
}

#[test]
fn a_disk_turned_read_only_keeps_monitoring_and_reports_it() {
    let disk = Disk::ext4(32 << 20);
    let data = disk.path.join("data");
    let server = Server::start_in(
        &data,
        &["--timeout", "1s", "--checkpoint-interval", "200ms"],
    );
    // A write caught in flight when the kernel aborts the journal fails
    // with EIO; the ones after it with EROFS. Which one the health shows
    // depends on where the checkpoint was (CI saw EIO once).
    let errors = ["Read-only file system", "Input/output error"];
    monitors_on_a_failing_disk(&server, &errors, || disk.fail_read_only());
    // Everything stays in memory and in the API meanwhile.
    assert_eq!(server.state_of("watched").as_deref(), Some("down"));
    assert_eq!(server.get_json("/healthz")["status"], "degraded");
}

fn host_count(server: &Server) -> usize {
    server
        .get_json("/api/v1/hosts")
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_full_disk_keeps_monitoring_reports_it_and_recovers() {
    let tmpfs = Disk::tmpfs("8m");
    let data = tmpfs.path.join("data");
    let args = ["--timeout", "1s", "--checkpoint-interval", "200ms"];
    let mut server = Server::start_in(&data, &args);
    monitors_on_a_failing_disk(&server, &["No space left"], || {
        fill(&tmpfs.path.join("filler"));
    });

    // Space again: the retry writes everything that was kept in memory.
    std::fs::remove_file(tmpfs.path.join("filler")).expect("remove filler");
    assert!(
        wait_until(WAIT, || server.get_json("/healthz")["status"] == "ok"),
        "the store recovers"
    );
    assert_eq!(server.metric("lubdub_store_healthy"), Some(1.0));
    wait_checkpoints(&server, 1.0);
    server.proc.kill();
    let server = Server::start_in(&data, &args);
    assert_eq!(
        host_count(&server),
        3001,
        "what was kept in memory was written"
    );
    assert!(server.kinds_of("watched").is_empty());
    assert_eq!(
        server.state_of("watched").as_deref(),
        Some("down"),
        "stays down, no second down"
    );
    drop(server);
}

/// Starts a server on `dir`, whose store holds `bytes`, and checks that it
/// refuses with one line naming the store and `--forget-all`, and leaves
/// the file as it was.
fn refuses_store(dir: &Path, bytes: &[u8]) {
    let path = dir.join("lubdub.redb");
    let mut proc = Proc::spawn(&[
        "server",
        "--data-dir",
        path_str(dir),
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(!proc.wait_exit(WAIT).success());
    let stderr = proc.stderr();
    assert_eq!(stderr.len(), 1, "one line: {stderr:?}");
    assert!(
        stderr[0].contains(&format!("cannot read store {}", path.display()))
            && stderr[0].contains("--forget-all"),
        "{stderr:?}"
    );
    assert!(std::fs::read(&path).expect("read") == bytes, "untouched");
}

#[test]
fn a_corrupt_store_is_refused_with_its_path_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(dir.path().join("lubdub.redb"), &garbage).expect("write");
    refuses_store(dir.path(), &garbage);
}

// See: issue 14 (item 16) and issue 13 (item 9).
#[test]
fn a_truncated_store_is_refused_with_its_path_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_in(dir.path(), &["--timeout", "1s"]);
    let _clients: Vec<Proc> = ["t-1", "t-2"]
        .iter()
        .map(|id| client(&[server.udp], id, &[]))
        .collect();
    assert!(wait_until(WAIT, || host_count(&server) == 2));
    server.stop();
    let path = dir.path().join("lubdub.redb");
    let whole = std::fs::read(&path).expect("read store");
    // Cut off mid-file, as a copy or a disk that died mid-write leaves it.
    let truncated = &whole[..whole.len() / 2];
    std::fs::write(&path, truncated).expect("truncate");
    refuses_store(dir.path(), truncated);
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let first = Server::start(&[]);
    let data = first.data_dir.to_str().expect("utf-8");
    let mut second = Proc::spawn(&[
        "server",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(!second.wait_exit(WAIT).success());
    let stderr = second.stderr().join("\n");
    assert!(
        stderr.contains(&format!(
            "another lubdub server is using data directory {data}"
        )),
        "{stderr}"
    );
    // Nor can it be wiped from under the running server.
    let mut forget = Proc::spawn(&["server", "--data-dir", data, "--forget-all"]);
    assert!(!forget.wait_exit(WAIT).success());
    assert_eq!(
        first.get_json("/healthz")["status"],
        "ok",
        "the first server is unaffected"
    );
}

#[test]
fn sigterm_flushes_the_store_and_forget_all_starts_afresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Checkpoints only on events and at shutdown: the shutdown must flush.
    let args = ["--timeout", "1s", "--checkpoint-interval", "1h"];
    let mut server = Server::start_in(dir.path(), &args);
    let _client = client(&[server.udp], "a", &[]);
    assert!(wait_until(WAIT, || beats_of(&server)
        .get("a")
        .is_some_and(|&b| b >= 10)));
    let seen = beats_of(&server)["a"];
    server.proc.signal(libc::SIGTERM);
    assert!(server.proc.wait_exit(WAIT).success(), "exit 0 on SIGTERM");

    let server = Server::start_in(dir.path(), &args);
    assert!(
        beats_of(&server)["a"] >= seen,
        "the last-seen checkpoint was flushed at shutdown"
    );
    drop(server);

    let server = Server::start_in(dir.path(), &["--forget-all"]);
    assert_eq!(
        server.get_json("/api/v1/hosts"),
        serde_json::json!([]),
        "nothing remembered after --forget-all"
    );
}

#[test]
fn default_data_dir_is_systemds_state_directory_else_the_users_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("var-lib-lubdub");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let args = ["server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let cases = [
        (
            vec![
                ("STATE_DIRECTORY", state.to_str().expect("utf-8")),
                ("HOME", home.to_str().expect("utf-8")),
            ],
            state.join("lubdub.redb"),
        ),
        (
            vec![("HOME", home.to_str().expect("utf-8"))],
            home.join(".local/share/lubdub/lubdub.redb"),
        ),
    ];
    for (env, store) in cases {
        let mut server = Proc::spawn_env(&args, &env);
        server.wait_listening();
        assert!(store.exists(), "{env:?}: store at {}", store.display());
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit(WAIT).success());
    }
}

#[test]
fn pause_and_forget_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--timeout", "1s", "--checkpoint-interval", "1h"];
    let mut server = Server::start_in(dir.path(), &args);
    let mut clients: Vec<Proc> = ["kept", "paused", "forgotten"]
        .iter()
        .map(|id| client(&[server.udp], id, &[]))
        .collect();
    assert!(wait_until(WAIT, || beats_of(&server).len() == 3));
    assert_eq!(
        server
            .request("POST", "/api/v1/hosts/paused/pause", None, None)
            .status,
        200
    );
    clients[2].kill();
    assert_eq!(
        server
            .request("DELETE", "/api/v1/hosts/forgotten", None, None)
            .status,
        204
    );
    server.proc.signal(libc::SIGTERM);
    assert!(server.proc.wait_exit(WAIT).success());

    let server = Server::start_in(dir.path(), &args);
    let hosts = beats_of(&server);
    assert_eq!(
        hosts.keys().collect::<Vec<_>>(),
        ["kept", "paused"],
        "forget is stored"
    );
    assert_eq!(
        server.state_of("paused").as_deref(),
        Some("paused"),
        "pause is stored"
    );
    clients[1].kill(); // a paused host may go silent: still no alarm after the restart
    std::thread::sleep(Duration::from_millis(2500)); // beyond grace and timeout
    assert_eq!(server.state_of("paused").as_deref(), Some("paused"));
    assert_eq!(server.kinds_of("paused"), Vec::<String>::new());
}
