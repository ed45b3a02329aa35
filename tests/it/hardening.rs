//! Hardening against the attacks of issue 13: a corrupt store, hostile host
//! ids, cross-site and rebinding requests, connection exhaustion, leaked
//! secrets. Each test reproduces one attack on the real binary on loopback.
//! See: issue 13.

use crate::util::{Proc, Server, closed_port, keygen, run, wait_until, write_file};
use lubdub::protocol::{self, Beat};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// One unsigned v1 beat of `host_id`, sent to `to`.
fn send_beat(socket: &UdpSocket, to: SocketAddr, host_id: &str, seq: u64) {
    let beat = Beat {
        flags: 0,
        seq,
        boot_id: [3; 16],
        sent_at_micros: now_micros(),
        interval_ms: 100,
        host_id,
        tag: None,
    };
    let mut out = Vec::new();
    // Encoded with a stand-in id of the same length, then the id's bytes
    // put in: the encoder refuses the hostile ids the tests send.
    let stand_in = "x".repeat(host_id.len());
    protocol::encode(
        &Beat {
            host_id: &stand_in,
            ..beat
        },
        &mut out,
    )
    .expect("valid beat");
    let at = protocol::HEADER_LEN;
    out[at..at + host_id.len()].copy_from_slice(host_id.as_bytes());
    socket.send_to(&out, to).expect("send beat");
}

fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind udp")
}

/// Hosts the server tracks, from `/api/v1/summary`.
fn tracked(server: &Server) -> u64 {
    server.get_json("/api/v1/summary")["hosts"]
        .as_u64()
        .expect("hosts")
}

/// A store written by a real server that knew `n` hosts, in `dir`.
fn write_store(dir: &Path, n: u64) {
    let mut server = Server::start_in(dir, &[]);
    let socket = udp();
    for i in 0..n {
        send_beat(&socket, server.udp, &format!("host-{i}"), 1);
    }
    assert!(
        wait_until(WAIT, || tracked(&server) == n),
        "{} hosts known",
        tracked(&server)
    );
    server.proc.signal(libc::SIGTERM);
    assert!(server.proc.wait_exit(WAIT).success(), "clean stop");
}

/// A corrupt store (truncated, bytes flipped, emptied) is refused with one
/// line naming it, a non-zero exit that is not a panic or an abort, and
/// not one byte of it changed.
#[test]
fn a_corrupt_store_is_one_line_error_and_stays_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = tmp.path().join("good");
    write_store(&good, 50);
    let original = std::fs::read(good.join("lubdub.redb")).expect("store");
    let flip = |at: usize| {
        let mut bytes = original.clone();
        for b in &mut bytes[at..at + 16] {
            *b ^= 0xff;
        }
        bytes
    };
    // Each of these crashed the server (a redb assertion: exit 101; an
    // allocation of terabytes: abort) or was taken as a new, empty store.
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", original[..original.len() / 2].to_vec()),
        ("flipped header", flip(200)),
        ("flipped region", flip(4096)),
        ("zero-length", Vec::new()),
    ];
    for (name, bytes) in cases {
        let dir = tmp.path().join(name.replace(' ', "-"));
        std::fs::create_dir(&dir).expect("dir");
        let path = dir.join("lubdub.redb");
        std::fs::write(&path, &bytes).expect("write corrupt store");
        let ran = run(
            &[
                "server",
                "--data-dir",
                dir.to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ],
            &[],
        );
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(ran.code, Some(1), "{name}: exit code; stderr {lines:?}");
        assert_eq!(lines.len(), 1, "{name}: one line: {lines:?}");
        assert!(
            lines[0].starts_with("lubdub: ") && lines[0].contains(&path.display().to_string()),
            "{name}: {lines:?}"
        );
        assert!(
            std::fs::read(&path).expect("read back") == bytes,
            "{name}: the store was written to"
        );
    }
    // --forget-all is the way out of an empty store, as of any other.
    let dir = tmp.path().join("zero-length");
    let server = Server::start_in(&dir, &["--forget-all"]);
    assert_eq!(tracked(&server), 0);
}

/// The data directory and the store are private to the server's user,
/// whatever the umask.
#[test]
fn data_dir_and_store_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("new").join("data");
    let server = Server::start_in(&dir, &[]);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&dir.join("lubdub.redb")), 0o600, "store");
    assert_eq!(mode(&dir.join("lubdub.lock")), 0o600, "lock file");
    drop(server);
}

/// `--print-config` shows that secrets are set, never their values: the
/// API token (from the file or `LUBDUB_API_TOKEN`), bearer tokens,
/// basic-auth passwords, credential headers and `user:password@` URLs.
#[test]
fn print_config_redacts_every_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        tmp.path(),
        "lubdub.toml",
        r#"[server]
api_token = "file-token-1"
[[server.sinks.webhook]]
url = "https://hook:hookpass-2@chat.example/hook"
bearer_token = "bearer-3"
headers = { X-Api-Key = "apikey-4", X-Team = "web" }
[[server.sinks.webhook]]
url = "https://chat.example/other"
basic_auth = { username = "u", password = "basicpass-5" }
[[server.sinks.alertmanager]]
urls = ["http://am:ampass-6@127.0.0.1:9093"]
"#,
    );
    for env in [&[][..], &[("LUBDUB_API_TOKEN", "env-token-7")][..]] {
        let ran = run(&["server", "--config", &config, "--print-config"], env);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        for secret in [
            "file-token-1",
            "hookpass-2",
            "bearer-3",
            "apikey-4",
            "basicpass-5",
            "ampass-6",
            "env-token-7",
        ] {
            assert!(
                !ran.stdout.contains(secret),
                "{secret} printed:\n{}",
                ran.stdout
            );
        }
        for shown in [
            "api_token = \"redacted\"",
            "hook:redacted@chat.example",
            "am:redacted@127.0.0.1",
            "X-Team = \"web\"",
        ] {
            assert!(
                ran.stdout.contains(shown),
                "{shown} missing:\n{}",
                ran.stdout
            );
        }
    }
}

/// A failing Alertmanager is logged without the password of its URL, and
/// an exec hook does not inherit the server's `LUBDUB_*` settings (the API
/// token among them).
#[test]
fn sinks_leak_no_secrets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env_file = tmp.path().join("hook-env");
    let config = write_file(
        tmp.path(),
        "lubdub.toml",
        &format!(
            r#"[[server.sinks.alertmanager]]
urls = ["http://am:ampass-1@{}"]
timeout = "500ms"
[[server.sinks.exec]]
command = ["/bin/sh", "-c", "env > {}"]
events = ["down"]
"#,
            closed_port(),
            env_file.display()
        ),
    );
    let data = tempfile::tempdir().expect("tempdir");
    let proc = Proc::spawn_env(
        &[
            "server",
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--timeout",
            "400ms",
            "--config",
            &config,
        ],
        &[
            ("LUBDUB_API_TOKEN", "api-token-2"),
            ("LUBDUB_LOG", "info"),
            ("PATH", "/usr/bin:/bin"),
        ],
    );
    let ready = proc
        .wait_line(WAIT, |l| l.starts_with("listening "))
        .expect("server ready");
    let udp_addr: SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp="))
        .and_then(|a| a.parse().ok())
        .expect("udp address");
    // One beat, then silence: the host goes down, both sinks fire.
    send_beat(&udp(), udp_addr, "web-1", 1);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&env_file)
            .is_ok_and(|t| t.contains("LUBDUB_EVENT=down"))),
        "the hook ran for the down; stderr {:?}",
        proc.stderr()
    );
    let hook_env = std::fs::read_to_string(&env_file).expect("hook env");
    assert!(hook_env.contains("LUBDUB_HOST=web-1"), "{hook_env}");
    assert!(
        !hook_env.contains("api-token-2"),
        "token inherited: {hook_env}"
    );
    assert!(
        wait_until(WAIT, || proc
            .stderr()
            .iter()
            .any(|l| l.contains("alertmanager http://am:redacted@"))),
        "failure logged: {:?}",
        proc.stderr()
    );
    let stderr = proc.stderr().join("\n");
    assert!(!stderr.contains("ampass-1"), "password logged: {stderr}");
}

/// Key files others can read are refused by server and client alike.
#[test]
fn exposed_key_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = keygen(tmp.path(), "keys.toml", &[]);
    let key_arg = keys.to_str().expect("utf-8");
    let chmod = |mode| {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let server = |key: &str| {
        run(
            &[
                "server",
                "--data-dir",
                tmp.path().join("data").to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--key-file",
                key,
            ],
            &[],
        )
    };
    // Fails on the key before it sends anything.
    let client = |key: &str| run(&["client", "--key-file", key, "127.0.0.1:9"], &[]);
    for mode in [0o644, 0o604] {
        chmod(mode);
        for ran in [server(key_arg), client(key_arg)] {
            let lines: Vec<&str> = ran.stderr.lines().collect();
            assert_eq!(ran.code, Some(1), "mode {mode:o}: {lines:?}");
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("accessible by other users"), "{lines:?}");
        }
    }
    // Group-readable: refused unless root owns the file.
    chmod(0o640);
    std::os::unix::fs::chown(&keys, Some(65534), None).expect("chown (tests run as root)");
    let ran = client(key_arg);
    assert!(
        ran.stderr.contains("accessible by its group"),
        "{}",
        ran.stderr
    );
    std::os::unix::fs::chown(&keys, Some(0), None).expect("chown back");
    chmod(0o600);
    let server = Server::start(&["--key-file", key_arg]);
    assert!(
        wait_until(WAIT, || server
            .proc
            .stderr()
            .iter()
            .any(|l| l.contains("beats must be signed"))),
        "the key is used: {:?}",
        server.proc.stderr()
    );
}

/// Host ids with a NUL (which broke the exec sink), a newline (which forged
/// console lines), an ANSI escape or a bidirectional override are refused
/// by the decoder and counted; the client refuses to send them.
#[test]
fn hostile_host_ids_are_dropped_and_counted() {
    let server = Server::start(&[]);
    let socket = udp();
    let hostile = [
        "web\0-1",
        "web-2\n2030-01-01T00:00:00.000Z down      db-1 addr=10.0.0.1:1 silent=30.000s",
        "\x1b[2J\x1b[31mweb-3",
        "\u{202e}4-bew",
    ];
    for (i, id) in hostile.iter().enumerate() {
        send_beat(&socket, server.udp, id, i as u64 + 1);
    }
    send_beat(&socket, server.udp, "web-5", 1);
    let reason = "lubdub_packets_dropped_total{reason=\"bad_host_id\"}";
    assert!(
        wait_until(WAIT, || server.metric(reason) == Some(4.0)),
        "counted: {:?}",
        server.metric(reason)
    );
    assert!(wait_until(WAIT, || tracked(&server) == 1), "only web-5");
    assert_eq!(server.kinds_of("web-5"), ["joined"]);
    let stdout = server.proc.stdout();
    assert!(
        stdout
            .iter()
            .all(|l| !l.contains("db-1") && !l.contains('\x1b') && !l.contains('\u{202e}')),
        "{stdout:?}"
    );
    let ran = run(&["client", "--host-id", "web\n1", "127.0.0.1:9"], &[]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("host_id"), "{}", ran.stderr);
}
