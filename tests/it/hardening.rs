//! Hardening against the attacks of issue 13: a corrupt store, hostile host
//! ids, cross-site and rebinding requests, connection exhaustion, leaked
//! secrets. Each test reproduces one attack on the real binary on loopback.
//! See: issue 13.

use crate::util::{
    Proc, Server, closed_port, keygen, raw_http, run, server_args, temp_file, wait_until,
    write_file,
};
use lubdub::protocol::{self, Beat};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
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
        answers: None,
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
    // Flips 16 bytes at each offset. redb's header holds two commit slots
    // (at 64 and 192; the newest commit picks one), so both are hit alike.
    let flip = |offsets: &[usize]| {
        let mut bytes = original.clone();
        for &at in offsets {
            for b in &mut bytes[at..at + 16] {
                *b ^= 0xff;
            }
        }
        bytes
    };
    // Each of these crashed the server before: a redb assertion (exit 101),
    // an abort on a terabyte allocation (at start, or at the first
    // checkpoint after a clean start), or it was taken as a new, empty
    // store.
    let cases: [(&str, Vec<u8>); 5] = [
        ("truncated", original[..original.len() / 2].to_vec()),
        ("flipped commit slots", flip(&[72, 200])),
        ("flipped allocator state", flip(&[128, 256])),
        ("flipped region", flip(&[4096])),
        ("zero-length", Vec::new()),
    ];
    for (name, bytes) in cases {
        let dir = tmp.path().join(name.replace(' ', "-"));
        std::fs::create_dir(&dir).expect("dir");
        let path = dir.join("lubdub.redb");
        std::fs::write(&path, &bytes).expect("write corrupt store");
        let ran = run(&server_args(&dir, &[]), &[]);
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
    let (_tmp, config) = temp_file(
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
            // A webhook URL is a secret as a whole (issue 18: chat
            // services put their token in it), so none of it is shown.
            "url = \"<redacted>\"",
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
    let alertmanager = format!(
        "[[server.sinks.alertmanager]]\nurls = [\"http://am:ampass-1@{}\"]\ntimeout = \"500ms\"\n",
        closed_port()
    );
    let hook = down_hook("env", &env_file);
    let config = write_file(tmp.path(), "lubdub.toml", &(alertmanager + &hook));
    let data = tmp.path().join("data");
    let proc = Proc::spawn_env(
        &server_args(&data, &["--timeout", "400ms", "--config", &config]),
        &[
            ("LUBDUB_API_TOKEN", "api-token-2"),
            ("LUBDUB_LOG", "info"),
            ("PATH", "/usr/bin:/bin"),
        ],
    );
    let (udp_addr, _) = proc.wait_addrs();
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
        proc.wait_stderr(WAIT, "alertmanager http://am:redacted@"),
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
    let data = tmp.path().join("data");
    let server = |key: &str| run(&server_args(&data, &["--key-file", key]), &[]);
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
        server.proc.wait_stderr(WAIT, "beats must be signed"),
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

/// Sends `request` on a fresh connection and returns the status code of the
/// answer (0 when there is none within 5 s).
fn status_of(addr: SocketAddr, request: &str) -> u16 {
    let response = raw_http(addr, request);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A page from another site can make the operator's browser send a
/// `POST` or `DELETE` to the loopback API (a form, or `fetch` with
/// `no-cors`); a DNS-rebinding page can even read the answers. Both are
/// refused, with or without an API token.
#[test]
fn cross_site_and_rebinding_requests_are_refused() {
    for token in [None, Some("tok-1")] {
        let mut extra = vec![];
        if let Some(token) = token {
            extra.extend(["--api-token", token]);
        }
        let server = Server::start(&extra);
        send_beat(&udp(), server.udp, "web-1", 1);
        assert!(wait_until(WAIT, || tracked(&server) == 1), "web-1 joined");
        let host = server.http.to_string();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let post = |path: &str, headers: &str| {
            status_of(
                server.http,
                &format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            )
        };
        let pause = "/api/v1/hosts/web-1/pause";
        // What a cross-site form or no-cors fetch sends.
        for headers in [
            "Origin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\n",
            "Origin: https://evil.example\r\n",
            "Origin: null\r\n",
            "Origin: http://127.0.0.1:1\r\n",
            "Content-Type: text/plain;charset=UTF-8\r\n",
            "Sec-Fetch-Site: cross-site\r\n",
        ] {
            assert_eq!(post(pause, headers), 403, "{token:?} {headers:?}");
        }
        let delete = format!(
            "DELETE /api/v1/hosts/web-1 HTTP/1.1\r\nHost: {host}\r\n{auth}Origin: https://evil.example\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(status_of(server.http, &delete), 403);
        // A rebinding page: the browser sends the page's own name as Host.
        let forged = format!("rebind.evil.example:{}", server.http.port());
        for request in [
            format!("GET /api/v1/hosts HTTP/1.1\r\nHost: {forged}\r\nConnection: close\r\n\r\n"),
            format!(
                "POST {pause} HTTP/1.1\r\nHost: {forged}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ] {
            assert_eq!(status_of(server.http, &request), 421, "{request:?}");
        }
        assert_eq!(
            server.state_of("web-1").as_deref(),
            Some("up"),
            "nothing changed"
        );
        // Programs (no Origin) and the server's own pages still work.
        assert_eq!(post(pause, ""), 200);
        assert_eq!(server.state_of("web-1").as_deref(), Some("paused"));
        let same_origin = format!("Origin: http://{host}\r\nContent-Type: application/json\r\n");
        assert_eq!(post("/api/v1/hosts/web-1/resume", &same_origin), 200);
        let local = format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            server.http.port()
        );
        assert_eq!(status_of(server.http, &local), 200);
    }
}

/// A name listed in `http_hosts` is served; others are not.
#[test]
fn http_hosts_lists_extra_names() {
    let server = Server::with_config("[server]\nhttp_hosts = [\"lubdub.example.org\"]\n", &[]);
    let get = |name: &str| {
        status_of(
            server.http,
            &format!("GET /healthz HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(get("LUBDUB.example.org:43278"), 200);
    assert_eq!(get("other.example.org"), 421);
}

/// The server's open descriptors (its `/proc/PID/fd` entries).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// `n` TCP connections to `addr` that never send a byte.
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect (queued)")
        })
        .collect()
}

/// GET /healthz answered 200 within 5 s.
fn healthy(addr: SocketAddr) -> bool {
    status_of(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ) == 200
}

/// An exec hook that runs `script` for each `down`, its output written to
/// `out`.
fn down_hook(script: &str, out: &Path) -> String {
    let command = format!("{script} > {}", out.display());
    format!(
        "[[server.sinks.exec]]\ncommand = [\"/bin/sh\", \"-c\", {command:?}]\nevents = [\"down\"]\n"
    )
}

/// Three hundred idle connections to a server started under a soft limit of
/// 128 descriptors: it raises the limit, `/healthz` still answers, and an
/// exec hook still runs for a real `down`.
#[test]
fn idle_connections_exhaust_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("hook-ran");
    let hook = down_hook("echo $LUBDUB_HOST", &marker);
    let config = write_file(tmp.path(), "lubdub.toml", &hook);
    let data = tmp.path().join("data");
    let mut args = vec!["--nofile=128:4096", crate::util::BIN];
    args.extend(server_args(
        &data,
        &["--timeout", "500ms", "--config", &config],
    ));
    let proc = Proc::spawn_program("prlimit", &args);
    let (udp_addr, http) = proc.wait_addrs();
    let _idle = idle_connections(http, 300);
    assert!(healthy(http), "healthz; stderr {:?}", proc.stderr());
    send_beat(&udp(), udp_addr, "web-1", 1);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&marker)
            .is_ok_and(|t| t.trim() == "web-1")),
        "the hook ran for web-1's down; stderr {:?}",
        proc.stderr()
    );
}

/// With `http_max_connections = 20`, a hundred idle connections hold at
/// most twenty descriptors, and are closed after `http_header_timeout`,
/// so `/healthz` gets its turn.
#[test]
fn connections_are_capped_and_idle_ones_closed() {
    let server = Server::with_config(
        "[server]\nhttp_max_connections = 20\nhttp_header_timeout = \"300ms\"\n",
        &[],
    );
    let pid = server.proc.pid();
    let before = open_fds(pid);
    let idle = idle_connections(server.http, 100);
    // Give the server time to accept all it will accept.
    assert!(
        wait_until(Duration::from_secs(2), || open_fds(pid) >= before + 20),
        "accepts up to the cap: {} then {}",
        before,
        open_fds(pid)
    );
    let most = (0..20).map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        open_fds(pid)
    });
    let most = most.max().expect("samples");
    assert!(
        most <= before + 22,
        "{before} fds before, {most} with 100 idle clients"
    );
    assert!(
        healthy(server.http),
        "healthz answered once idle ones closed"
    );
    drop(idle);
}

/// A client that sends its headers a byte at a time (slowloris) is
/// disconnected after `http_header_timeout`, however long it keeps going.
#[test]
fn slow_headers_are_cut_off() {
    let server = Server::with_config("[server]\nhttp_header_timeout = \"500ms\"\n", &[]);
    let mut stream = TcpStream::connect(server.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("start");
    let started = std::time::Instant::now();
    let mut closed = false;
    // Bounded: 100 rounds of 50 ms at most.
    for _ in 0..100 {
        if stream.write_all(b"X-Slow: 1\r\n").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {} // an error answer (408) before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A flood of made-up host ids (no keys needed) joins at `join_rate`, not
/// at line rate; the rest is dropped and counted, known hosts beat on, and
/// a new host joins once the flood is over.
#[test]
fn made_up_hosts_join_at_the_join_rate() {
    let server = Server::with_config("[server]\njoin_rate = 100\n", &["--timeout", "5s"]);
    let socket = udp();
    send_beat(&socket, server.udp, "real", 1);
    assert!(wait_until(WAIT, || tracked(&server) == 1), "real joined");
    let started = std::time::Instant::now();
    for i in 0..2_000u64 {
        send_beat(&socket, server.udp, &format!("made-up-{i}"), 1);
        send_beat(&socket, server.udp, "real", i + 2);
    }
    let reason = "lubdub_packets_dropped_total{reason=\"join_rate\"}";
    let dropped = || server.metric(reason).unwrap_or(0.0) as u64;
    // Each made-up beat joins or is dropped (a few may be lost in the
    // socket buffer), once the server has drained the flood: waited for,
    // as a loaded machine drains slowly.
    assert!(
        wait_until(WAIT, || tracked(&server) - 1 + dropped() >= 2_000 - 50),
        "each made-up beat joined or was dropped: {} {}",
        tracked(&server),
        dropped()
    );
    assert!(dropped() > 0, "joins beyond the rate are counted");
    let joined = tracked(&server);
    // A second's worth at once, then 100 a second since the flood began
    // (the time read after the count, so the bound can only be generous).
    let allowed = 1 + 100 + (started.elapsed().as_secs_f64() * 100.0).ceil() as u64;
    assert!(
        joined <= allowed,
        "{joined} hosts, at most {allowed} allowed"
    );
    assert_eq!(server.kinds_of("real"), ["joined"], "real never held back");
    assert!(
        wait_until(WAIT, || {
            send_beat(&socket, server.udp, "late-comer", 1);
            server.state_of("late-comer").is_some()
        }),
        "a new host joins once the flood is over"
    );
}
