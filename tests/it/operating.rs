//! What an operator sees: sinks that end up knowing each host's true state
//! after flapping, dropped beats logged, true loss figures, the client's
//! start line, the silent-host report, a client's own boot id, and the true
//! length of an outage after `kill -9`. See: issue 14, items 2, 3, 4, 6.

use crate::util::{Recorder, Server, client, keygen, wait_until, write_file};
use serde_json::Value;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// The kinds a recorder received for `host`, in order (a batch's events
/// in their order within it).
fn hook_kinds(recorder: &Recorder, host: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for request in recorder.requests() {
        let events = match request.body {
            Value::Array(events) => events,
            one => vec![one],
        };
        for event in events {
            if event["host"] == host {
                kinds.push(event["kind"].as_str().unwrap_or("?").to_string());
            }
        }
    }
    kinds
}

#[test]
fn a_sink_asking_only_for_the_documented_kinds_hears_a_settled_host_is_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&[]);
    let config = write_file(
        dir.path(),
        "lubdub.toml",
        &format!(
            r#"[server]
timeout = "400ms"
flap_threshold = 2
flap_window = "3s"

[[server.sinks.webhook]]
url = "{}"
events = ["down", "recovered", "rebooted", "mass-silence"]
retries = 0

[server.sinks.mass_silence]
enabled = false
"#,
            recorder.url("/hook")
        ),
    );
    let server = Server::start(&["--config", &config]);
    // Down twice within the window: flapping from the second down on.
    for round in 1..=2 {
        let mut web = client(&[server.udp], "web", &[]);
        assert!(wait_until(WAIT, || server
            .kinds_of("web")
            .iter()
            .filter(|k| *k == "joined" || *k == "recovered")
            .count()
            == round));
        web.kill(); // no goodbye
        assert!(wait_until(WAIT, || server
            .kinds_of("web")
            .iter()
            .filter(|k| *k == "down")
            .count()
            == round));
    }
    assert!(server.kinds_of("web").contains(&"flapping".to_string()));
    // Back up, and up for a whole window: it settles while up.
    let _web = client(&[server.udp], "web", &[]);
    assert!(
        server.wait_event("web", "settled", WAIT),
        "{:?}",
        server.kinds_of("web")
    );
    assert_eq!(server.state_of("web").as_deref(), Some("up"));
    // The sink's last word on the host must be that it is up again.
    assert!(
        wait_until(WAIT, || hook_kinds(&recorder, "web")
            .last()
            .map(String::as_str)
            == Some("recovered")),
        "sink heard {:?}; server said {:?}",
        hook_kinds(&recorder, "web"),
        server.kinds_of("web")
    );
    assert_eq!(
        hook_kinds(&recorder, "web"),
        ["down", "recovered", "down", "recovered"],
        "the held recovery arrives once, at the settle"
    );
}

#[test]
fn a_keyed_server_logs_refused_beats_once_per_burst_with_source_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let server = Server::start(&["--key-file", keys.to_str().expect("utf-8")]);
    let _unsigned = client(&[server.udp], "nokey", &[]);
    let dropped = r#"lubdub_packets_dropped_total{reason="unsigned"}"#;
    // A burst of ten refused beats (a second at 100 ms)...
    assert!(wait_until(WAIT, || server.metric(dropped) >= Some(10.0)));
    let lines: Vec<String> = server.proc.stderr_lines("dropped beat");
    // ...is one line, naming where they come from and why.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("from=127.0.0.1:"), "{lines:?}");
    assert!(lines[0].contains("reason=unsigned"), "{lines:?}");
    assert!(lines[0].contains("WARN"), "{lines:?}");
}

#[test]
fn loss_rate_is_what_was_measured() {
    let server = Server::start(&["--timeout", "1s"]);
    let _web = client(&[server.udp], "web", &[]);
    assert!(server.wait_event("web", "joined", WAIT));
    assert!(wait_until(
        WAIT,
        || server.get_json("/api/v1/hosts/web")["beats"].as_u64() >= Some(5)
    ));
    let host = server.get_json("/api/v1/hosts/web");
    assert_eq!(host["losses"], 0, "{host}");
    assert_eq!(
        host["loss_rate"].as_f64(),
        Some(0.0),
        "nothing lost: {host}"
    );
}

#[test]
fn the_clients_start_line_names_the_key_id_plainly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keygen(dir.path(), "keys.toml", &[]);
    let server = Server::start(&[]);
    let signed = client(
        &[server.udp],
        "signed",
        &["--key-file", keys.to_str().expect("utf-8")],
    );
    let unsigned = client(&[server.udp], "unsigned", &[]);
    let start = |c: &crate::util::Proc| -> Option<String> {
        c.stderr().into_iter().find(|l| l.contains("beating"))
    };
    assert!(wait_until(WAIT, || start(&signed).is_some()
        && start(&unsigned).is_some()));
    let (signed, unsigned) = (
        start(&signed).expect("line"),
        start(&unsigned).expect("line"),
    );
    assert!(signed.contains("signed_with_key=1 "), "{signed}");
    assert!(unsigned.contains("signed_with_key=none "), "{unsigned}");
    assert!(!signed.contains("Some(") && !unsigned.contains("None"));
}

#[test]
fn the_silent_report_has_no_empty_list() {
    let server = Server::start(&["--timeout", "300ms", "--silent-report", "200ms"]);
    let none = server
        .proc
        .wait_line(WAIT, |l| l.starts_with("silent hosts"));
    assert_eq!(none.as_deref(), Some("silent hosts: none"));
    let mut web = client(&[server.udp], "web", &[]);
    assert!(server.wait_event("web", "joined", WAIT));
    web.kill();
    assert!(server.wait_event("web", "down", WAIT));
    let one = server
        .proc
        .wait_line(WAIT, |l| l.starts_with("silent hosts (1): web ("))
        .expect("the down host listed");
    assert!(one.ends_with("s)"), "{one}");
}

#[test]
fn a_client_given_its_own_boot_id_reports_a_reboot_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let boot = dir.path().join("boot_id");
    std::fs::write(&boot, "0f5ad3c2-6a1e-4b0c-9d7e-2f4a8c1b3e5d\n").expect("write");
    let server = Server::start(&["--timeout", "2s"]);
    let boot_arg = boot.to_str().expect("utf-8");
    let mut web = client(&[server.udp], "box", &["--boot-id-file", boot_arg]);
    assert!(
        server.wait_event("box", "joined", WAIT),
        "{:?}",
        web.stderr()
    );
    let shown = server.get_json("/api/v1/hosts/box")["boot_id"].clone();
    assert_eq!(shown, "0f5ad3c2", "the file's id, not the kernel's");
    web.kill();
    // The container starts again with a new boot id in its file.
    std::fs::write(&boot, "9b2e4f60-1c3d-4e5f-8a7b-6c5d4e3f2a1b").expect("write");
    let _web = client(&[server.udp], "box", &["--boot-id-file", boot_arg]);
    assert!(
        server.wait_event("box", "rebooted", WAIT),
        "{:?}",
        server.kinds_of("box")
    );
    // A file that holds no UUID is one clear error.
    std::fs::write(&boot, "not a uuid").expect("write");
    let mut bad = client(&[server.udp], "box2", &["--boot-id-file", boot_arg]);
    assert!(!bad.wait_exit(WAIT).success());
    let err = bad.stderr().join("\n");
    assert!(
        err.contains("boot id file") && err.contains("UUID"),
        "{err}"
    );
}

#[test]
fn after_kill_9_the_reported_outage_is_the_real_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_in(dir.path(), &["--timeout", "1s"]);
    let started = Instant::now();
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    // Run until the alive mark is 4 s past the start, long after the
    // store's first (and, at the default 5 min checkpoint, only) write.
    let mark = || -> u128 {
        std::fs::read_to_string(dir.path().join("lubdub.alive"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(WAIT, || mark() >= start_ms + 4000),
        "alive mark {}",
        mark()
    );
    server.proc.kill();
    let killed = Instant::now();
    // The outage itself: a real gap of 2 s, nothing to wait for.
    std::thread::sleep(Duration::from_secs(2));
    let server = Server::start_in(dir.path(), &["--timeout", "1s"]);
    let restarted = killed.elapsed();
    let line = server
        .proc
        .wait_line(WAIT, |l| l.contains(" monitor_started "))
        .expect("monitor_started line");
    let away = crate::util::parse_event(&line)
        .expect("an event line")
        .silent_secs;
    // The store was last written at start: that figure was the whole run
    // plus the gap (over 6 s); the alive mark is at most 1 s older than
    // the kill.
    let true_gap = restarted.as_secs_f64();
    assert!(
        away >= true_gap - 0.5 && away <= true_gap + 1.5,
        "reported {away} s for a {true_gap:.1} s outage (run {:?})",
        killed - started
    );
}

/// The text of every element of `dom` opened by `open` (up to `close`).
fn texts_after<'a>(dom: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    dom.match_indices(open)
        .filter_map(|(at, _)| {
            let rest = &dom[at + open.len()..];
            rest.find(close).map(|end| &rest[..end])
        })
        .collect()
}

/// `HH:MM:SS`, or `YYYY-MM-DD HH:MM:SS`: the dashboard's one time format.
fn is_dashboard_time(text: &str) -> bool {
    let digits = |s: &str, seps: &[(usize, u8)]| {
        s.bytes().enumerate().all(|(i, b)| {
            seps.iter()
                .find(|(at, _)| *at == i)
                .map_or(b.is_ascii_digit(), |&(_, c)| b == c)
        })
    };
    match text.len() {
        8 => digits(text, &[(2, b':'), (5, b':')]),
        19 => digits(
            text,
            &[(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')],
        ),
        _ => false,
    }
}

#[test]
fn the_dashboard_shows_every_time_in_one_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&["--timeout", "1s"]);
    let _web = client(&[server.udp], "web", &[]);
    assert!(server.wait_event("web", "joined", WAIT));
    let page = format!("http://{}/#host=web", server.http);
    let dump = crate::dashboard::chromium(&tmp.path().join("profile"), &page, &["--dump-dom"]);
    // The page as built, without the script's own text.
    let dom = dump.split("<script").next().unwrap_or_default();
    let mut times: Vec<&str> = texts_after(dom, r#"<span class="t">"#, "</span>");
    for field in ["since", "last seen"] {
        times.extend(texts_after(dom, &format!("<dt>{field}</dt><dd>"), "</dd>"));
    }
    assert!(times.len() >= 4, "event times, since, last seen: {times:?}");
    let status = texts_after(dom, r#"id="status""#, "</").join("");
    let updated = status
        .split("updated ")
        .nth(1)
        .and_then(|s| s.split(" · ").next())
        .unwrap_or_default();
    times.push(updated);
    for time in &times {
        assert!(is_dashboard_time(time), "{time:?} of {times:?}");
    }
    assert!(status.contains("times in UTC"), "{status}");
}
