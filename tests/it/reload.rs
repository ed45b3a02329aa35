//! SIGHUP reloads the server and the client instead of ending them: key
//! rotation without a restart, a bad config refused, a timeout changed
//! live. See: issue 14, item 1.

use crate::util::{Server, client, keygen, wait_until, write_file};
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// Writes a key file (mode 0600, as key files must be) from key files.
fn write_keys(path: &Path, from: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    let text: String = from
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("key file") + "\n")
        .collect();
    std::fs::write(path, text).expect("write keys");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// How many of the process's stderr lines contain `text`.
fn count(lines: &[String], text: &str) -> usize {
    lines.iter().filter(|l| l.contains(text)).count()
}

/// The host's beats as the API counts them.
fn beats(server: &Server, host: &str) -> u64 {
    server.get_json(&format!("/api/v1/hosts/{host}"))["beats"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until `host` has beaten `n` more times: proof that time passed
/// with the host heard (longer than a timeout when `n` is large enough).
fn wait_beats(server: &Server, host: &str, n: u64) {
    let from = beats(server, host);
    assert!(
        wait_until(WAIT, || beats(server, host) >= from + n),
        "{host} stopped beating: {:?}",
        server.kinds_of(host)
    );
}

#[test]
fn sighup_rotates_keys_on_server_and_client_and_the_host_never_goes_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = keygen(dir.path(), "old.toml", &[]);
    let new = keygen(dir.path(), "new.toml", &["--id", "2"]);
    let (server_keys, client_keys) = (
        dir.path().join("server.toml"),
        dir.path().join("client.toml"),
    );
    write_keys(&server_keys, &[&old]);
    write_keys(&client_keys, &[&old]);
    let server = Server::start(&[
        "--timeout",
        "1s",
        "--key-file",
        server_keys.to_str().expect("utf-8"),
    ]);
    let web = client(
        &[server.udp],
        "web",
        &["--key-file", client_keys.to_str().expect("utf-8")],
    );
    assert!(
        server.wait_event("web", "joined", WAIT),
        "{:?}",
        server.proc.stderr()
    );

    // 1. The server learns the new key beside the old one.
    write_keys(&server_keys, &[&old, &new]);
    server.proc.signal(libc::SIGHUP);
    assert!(wait_until(WAIT, || count(
        &server.proc.stderr(),
        "keys reloaded"
    ) == 1));
    // 2. The client moves to the new key (the newest in its file).
    write_keys(&client_keys, &[&new]);
    web.signal(libc::SIGHUP);
    assert!(
        wait_until(WAIT, || web.stderr_has(&["reloaded", "signed_with_key=2"])),
        "{:?}",
        web.stderr()
    );
    // 3. The server drops the old key.
    write_keys(&server_keys, &[&new]);
    server.proc.signal(libc::SIGHUP);
    assert!(wait_until(WAIT, || count(
        &server.proc.stderr(),
        "keys reloaded"
    ) == 2));
    // A client still on the old key is now refused as unknown_key.
    let straggler = client(
        &[server.udp],
        "straggler",
        &["--key-file", old.to_str().expect("utf-8")],
    );
    let unknown = r#"lubdub_packets_dropped_total{reason="unknown_key"}"#;
    assert!(wait_until(WAIT, || server.metric(unknown) >= Some(3.0)));
    // Beats signed with the new key go on being accepted, for well over a
    // timeout (1 s of beats every 100 ms): the host never went down.
    wait_beats(&server, "web", 20);
    assert_eq!(
        server.kinds_of("web"),
        ["joined"],
        "{:?}",
        server.proc.stderr()
    );
    assert!(server.kinds_of("straggler").is_empty(), "never admitted");
    drop(straggler);
}

#[test]
fn a_bad_config_on_sighup_is_refused_in_one_line_and_the_server_runs_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(dir.path(), "lubdub.toml", "[server]\ntimeout = \"1s\"\n");
    let server = Server::start(&["--config", &config]);
    let _web = client(&[server.udp], "web", &[]);
    assert!(server.wait_event("web", "joined", WAIT));
    write_file(dir.path(), "lubdub.toml", "[server]\ntimeout = \"soon\"\n");
    server.proc.signal(libc::SIGHUP);
    assert!(wait_until(WAIT, || count(
        &server.proc.stderr(),
        "reload refused"
    ) >= 1));
    let refused: Vec<String> = server.proc.stderr_lines("reload refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("server.timeout") && refused[0].contains("lubdub.toml"),
        "names the file and the key: {refused:?}"
    );
    // Still running, on the old config: the host stays up and is heard.
    wait_beats(&server, "web", 20);
    assert_eq!(server.kinds_of("web"), ["joined"]);
    assert_eq!(server.state_of("web").as_deref(), Some("up"));
}

#[test]
fn a_timeout_changed_by_sighup_applies_to_a_host_already_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(dir.path(), "lubdub.toml", "[server]\ntimeout = \"20s\"\n");
    let server = Server::start(&["--config", &config]);
    let mut web = client(&[server.udp], "web", &[]);
    assert!(server.wait_event("web", "joined", WAIT));
    web.kill(); // no goodbye: silent from now on
    let killed = Instant::now();
    write_file(dir.path(), "lubdub.toml", "[server]\ntimeout = \"500ms\"\n");
    server.proc.signal(libc::SIGHUP);
    assert!(
        server.wait_event("web", "down", WAIT),
        "{:?}",
        server.proc.stderr()
    );
    // Far sooner than the 20 s it started with (late alone was due at 10 s).
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        server.proc.stderr_has(&["reloaded", "changed=timeout"]),
        "says what changed: {:?}",
        server.proc.stderr()
    );
}

#[test]
fn sighup_to_the_client_reloads_it_without_a_goodbye() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&["--timeout", "1s"]);
    let config = write_file(
        dir.path(),
        "client.toml",
        "[client]\ninterval = \"100ms\"\n",
    );
    let web = client(&[server.udp], "web", &["--config", &config]);
    assert!(server.wait_event("web", "joined", WAIT));
    web.signal(libc::SIGHUP);
    assert!(
        wait_until(WAIT, || count(&web.stderr(), "reloaded") == 1),
        "{:?}",
        web.stderr()
    );
    wait_beats(&server, "web", 20);
    assert_eq!(server.kinds_of("web"), ["joined"], "no left, no down");
    // A stop is still a stop, with its goodbye.
    web.signal(libc::SIGTERM);
    assert!(server.wait_event("web", "left", WAIT));
}
