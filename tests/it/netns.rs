//! Real network faults: the server and three clients each in their own
//! network namespace, joined by one veth pair per client, each with its own
//! address in a private test subnet that exists only inside these
//! namespaces. Cutting one link makes exactly that host `down`; restoring
//! it makes it `recovered`; where the kernel has netem, 20 % loss and 50 ms
//! delay on a link raise no `down`. See: issue 8.
//!
//! Needs root and network namespaces (we run as root here and in CI); skips
//! with a printed reason only where the machine forbids them, and the netem
//! part only where the kernel lacks netem. `ip` and `tc` (iproute2) are
//! installed by scripts/test.

use crate::util::{BIN, Proc, parse_event, spawn_program, wait_until};
use std::process::Command;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(15);
const CLIENTS: usize = 3;

/// Runs `ip ARGS`; the error text on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test does): {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(result: Result<(), String>) {
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Deletes the namespaces it names when dropped, even if the test fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Event kinds of `host` in the server's output so far.
fn kinds(server: &Proc, host: &str) -> Vec<String> {
    server
        .stdout()
        .iter()
        .filter_map(|l| parse_event(l))
        .filter(|e| e.host == host)
        .map(|e| e.kind)
        .collect()
}

#[test]
fn cut_link_is_down_exactly_and_restored_link_recovers() {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED netns test: needs root to create network namespaces");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("lubdub-it-{}-{nanos}", std::process::id());
    let server_ns = format!("{tag}-srv");
    let client_ns: Vec<String> = (0..CLIENTS).map(|i| format!("{tag}-c{i}")).collect();
    let mut guard = Namespaces(Vec::new());
    if let Err(e) = ip(&["netns", "add", &server_ns]) {
        println!("SKIPPED netns test: this machine forbids network namespaces ({e})");
        return;
    }
    guard.0.push(server_ns.clone());
    must(ip(&["-n", &server_ns, "link", "set", "lo", "up"]));
    for (i, ns) in client_ns.iter().enumerate() {
        must(ip(&["netns", "add", ns]));
        guard.0.push(ns.clone());
        // 198.18.0.0/15 is reserved for network tests (RFC 2544); these
        // addresses exist only inside the namespaces made here.
        let link = format!("vc{i}");
        must(ip(&[
            "-n", &server_ns, "link", "add", &link, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ]));
        let server_addr = format!("198.18.{i}.1/24");
        let client_addr = format!("198.18.{i}.2/24");
        must(ip(&[
            "-n",
            &server_ns,
            "addr",
            "add",
            &server_addr,
            "dev",
            &link,
        ]));
        must(ip(&["-n", ns, "addr", "add", &client_addr, "dev", "eth0"]));
        must(ip(&["-n", &server_ns, "link", "set", &link, "up"]));
        must(ip(&["-n", ns, "link", "set", "eth0", "up"]));
        must(ip(&["-n", ns, "link", "set", "lo", "up"]));
    }

    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().to_str().expect("utf-8 path");
    // 1 s timeout with 100 ms beats: generous on a loaded machine.
    let server = spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            &server_ns,
            BIN,
            "server",
            "--listen",
            "0.0.0.0:43278",
            "--http",
            "127.0.0.1:0",
            "--timeout",
            "1s",
            "--data-dir",
            data_dir,
        ],
    );
    assert!(
        server
            .wait_line(WAIT, |l| l.starts_with("listening "))
            .is_some(),
        "server did not start: {:?}",
        server.stderr()
    );
    let hosts: Vec<String> = (0..CLIENTS).map(|i| format!("ns-host-{i}")).collect();
    let _clients: Vec<Proc> = client_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let target = format!("198.18.{i}.1:43278");
            spawn_program(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    BIN,
                    "client",
                    "--interval",
                    "100ms",
                    "--host-id",
                    &hosts[i],
                    &target,
                ],
            )
        })
        .collect();
    assert!(
        wait_until(WAIT, || hosts
            .iter()
            .all(|h| kinds(&server, h) == ["joined"])),
        "every host joins over its own link: {:?}",
        server.stdout()
    );

    // Cut host 1's link: exactly it goes down.
    must(ip(&["-n", &server_ns, "link", "set", "vc1", "down"]));
    assert!(
        wait_until(WAIT, || kinds(&server, &hosts[1]).contains(&"down".into())),
        "the cut host goes down: {:?}",
        server.stdout()
    );
    // Restore it: recovered.
    must(ip(&["-n", &server_ns, "link", "set", "vc1", "up"]));
    assert!(
        wait_until(WAIT, || kinds(&server, &hosts[1])
            .contains(&"recovered".into())),
        "the restored host recovers: {:?}",
        server.stdout()
    );
    for host in [&hosts[0], &hosts[2]] {
        assert_eq!(
            kinds(&server, host),
            ["joined"],
            "{host} must not change state"
        );
    }

    // netem on host 2's link: 20 % loss and 50 ms delay are no outage.
    let netem = run(
        "ip",
        &[
            "netns",
            "exec",
            &client_ns[2],
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "netem",
            "loss",
            "20%",
            "delay",
            "50ms",
        ],
    );
    match netem {
        Err(e) if e.contains("qdisc kind is unknown") || e.contains("No such file") => {
            println!("SKIPPED netem part of the netns test: the kernel has no netem ({e})");
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {
            // 5 s of lossy, delayed beats (~50 beats, ~10 lost).
            std::thread::sleep(Duration::from_secs(5));
            assert_eq!(
                kinds(&server, &hosts[2]),
                ["joined"],
                "loss and delay raise no alarm: {:?}",
                server.stdout()
            );
        }
    }
    assert_eq!(kinds(&server, &hosts[0]), ["joined"]);
}
