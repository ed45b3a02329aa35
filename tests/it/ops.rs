//! Running it for real: shell completions and man pages generated from the
//! CLI, systemd units that `systemd-analyze verify` accepts, JSON logs, and
//! docs/API.md checked against the running server.
//! See: issues 3, 14.

use crate::util::{Proc, Server, client, run, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn completions_cover_every_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let commands = help_commands();
    let flags = ["print-config", "late-after", "check"];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let ran = run(&["completions", shell], &[]);
        assert_eq!(ran.code, Some(0), "{shell}: {ran:?}");
        for word in commands.iter().map(String::as_str).chain(flags) {
            assert!(ran.stdout.contains(word), "{shell} lacks {word}");
        }
        if shell == "bash" {
            let script = tmp.path().join("lubdub.bash");
            std::fs::write(&script, &ran.stdout).expect("write");
            let syntax = Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .expect("run bash");
            assert!(syntax.status.success(), "{syntax:?}");
        }
    }
    let bad = run(&["completions", "tcsh"], &[]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
}

/// Writes the man pages into `dir` and checks `man` renders them.
fn man_pages(dir: &Path) {
    let dir_arg = dir.to_str().expect("utf-8");
    let ran = run(&["man", "--dir", dir_arg], &[]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    for page in ["lubdub", "lubdub-server", "lubdub-client", "lubdub-status"] {
        let path = dir.join(format!("{page}.1"));
        let rendered = Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("run man (scripts/test installs man-db)");
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(rendered.status.success(), "{page}: {rendered:?}");
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
    // lubdub(1), printed or written, names only pages that exist, and a
    // page for every command `lubdub --help` lists (clap's `help` aside).
    let top = run(&["man"], &[]);
    assert!(top.stdout.contains(".TH lubdub 1"), "{top:?}");
    let written = std::fs::read_to_string(dir.join("lubdub.1")).expect("lubdub.1");
    // roff escapes every hyphen: `lubdub\-test\-alert(1)`.
    let unescaped = top.stdout.replace("\\-", "-");
    let named: Vec<&str> = unescaped
        .split("lubdub-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)").map(|(name, _)| name))
        .collect();
    for name in &named {
        let page = dir.join(format!("lubdub-{name}.1"));
        assert!(
            page.exists(),
            "lubdub(1) names lubdub-{name}(1), never written"
        );
    }
    let mut listed = help_commands();
    listed.retain(|c| c != "help");
    assert_eq!(named, listed, "lubdub(1) names a page per command");
    assert_eq!(top.stdout, written, "lubdub man prints the page it writes");
}

/// The commands `lubdub --help` lists, in order.
fn help_commands() -> Vec<String> {
    let ran = run(&["--help"], &[]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    ran.stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn help_lists_every_command() {
    let commands = help_commands();
    for command in [
        "server",
        "client",
        "status",
        "keygen",
        "simulate",
        "loadgen",
        "completions",
        "man",
        "test-alert",
        "help",
    ] {
        assert!(
            commands.iter().any(|c| c == command),
            "{command}: {commands:?}"
        );
        if command != "help" {
            let ran = run(&[command, "--help"], &[]);
            assert_eq!(ran.code, Some(0), "{command}: {ran:?}");
            assert!(
                ran.stdout.contains(&format!("Usage: lubdub {command}")),
                "{ran:?}"
            );
        }
    }
    assert_eq!(commands.len(), 11, "{commands:?}");
}

#[test]
fn man_pages_render_and_systemd_units_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let man1 = tmp.path().join("man").join("man1");
    std::fs::create_dir_all(&man1).expect("mkdir");
    man_pages(&man1);

    // The shipped units, with ExecStart pointing at the binary under test
    // (verify checks that it exists); the man pages just generated satisfy
    // their `Documentation=man:lubdub(1)`.
    let root = env!("CARGO_MANIFEST_DIR");
    let mut units = Vec::new();
    for unit in ["lubdub-server.service", "lubdub-client.service"] {
        let text = std::fs::read_to_string(format!("{root}/dist/{unit}")).expect("unit");
        assert!(text.contains("ExecStart=/usr/local/bin/lubdub "), "{unit}");
        for directive in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(directive), "{unit} lacks {directive:?}");
        }
        let path = tmp.path().join(unit);
        let bin = env!("CARGO_BIN_EXE_lubdub");
        std::fs::write(&path, text.replace("/usr/local/bin/lubdub", bin)).expect("write");
        units.push(path);
    }
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .env("MANPATH", tmp.path().join("man"))
        .output()
        .expect("run systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{verify:?}");
    assert!(
        !stderr.contains("lubdub-"),
        "systemd-analyze has remarks on our units: {stderr}"
    );
}

fn assert_json_lines(who: &str, lines: &[String]) {
    assert!(!lines.is_empty(), "{who} logged nothing");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{who}: {e}: {line:?}"));
        assert!(entry["timestamp"].is_string(), "{who}: {line}");
        assert!(entry["level"].is_string(), "{who}: {line}");
        assert!(entry["fields"].is_object(), "{who}: {line}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start(&["--log-format", "json", "-v"]);
    let mut beater = client(&[server.udp], "json-host", &["--log-format", "json", "-v"]);
    assert!(server.wait_event("json-host", "joined", WAIT));
    // -v logs every beat: wait for a few, then stop cleanly.
    assert!(
        wait_until(WAIT, || beater.stderr().len() >= 3),
        "{:?}",
        beater.stderr()
    );
    beater.signal(libc::SIGTERM);
    assert!(beater.wait_exit(WAIT).success());
    assert!(server.wait_event("json-host", "left", WAIT));
    assert_json_lines("client", &beater.stderr());
    let first: serde_json::Value = serde_json::from_str(&beater.stderr()[0]).expect("json line");
    assert_eq!(first["fields"]["host_id"], "json-host", "{first}");
    // The server logs little at -v: a malformed datagram is one line.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(b"not a beat", server.udp).expect("send");
    assert!(
        server.proc.wait_stderr(WAIT, "dropped packet"),
        "{:?}",
        server.proc.stderr()
    );
    assert_json_lines("server", &server.proc.stderr());

    // The environment selects it too, and stdout (events) stays plain.
    let env_client = Proc::spawn_env(
        &["client", "127.0.0.1:9", "--interval", "100ms"],
        &[("LUBDUB_LOG_FORMAT", "json")],
    );
    assert!(wait_until(WAIT, || !env_client.stderr().is_empty()));
    assert_json_lines("env client", &env_client.stderr());
}

/// The section of `doc` from the heading `from` to the next `## ` heading.
fn section<'a>(doc: &'a str, from: &str) -> &'a str {
    let start = doc.find(from).unwrap_or_else(|| panic!("no {from:?}"));
    let rest = &doc[start + from.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// Issue 14: docs/API.md names every event kind the server has, and says
/// truly which `limit`s are refused.
#[test]
fn api_doc_lists_every_event_kind_and_the_true_limits() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/API.md")).expect("docs/API.md");
    let server = Server::start(&[]);

    // Every kind has a series in /metrics, from the start.
    let metrics = server.get_text("/metrics");
    let kinds: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("lubdub_events_total{kind=\""))
        .filter_map(|l| l.split_once('"').map(|(kind, _)| kind))
        .collect();
    assert!(kinds.len() >= 12, "{metrics}");
    let events = section(&doc, "## Events");
    for kind in &kinds {
        assert!(
            events.contains(&format!("`{kind}`")),
            "docs/API.md: the event kind {kind} is missing"
        );
    }

    // The hosts' `limit` takes any number; the events' only 1 to the
    // maximum the doc gives, and the error table says so.
    let zero = server.request("GET", "/api/v1/hosts?limit=0", None, None);
    assert_eq!((zero.status, zero.body.as_str()), (200, "[]"), "{zero:?}");
    assert_eq!(zero.header("x-total-count"), Some("0"), "{zero:?}");
    let huge = server.request(
        "GET",
        "/api/v1/hosts?limit=18446744073709551615",
        None,
        None,
    );
    assert_eq!(huge.status, 200, "{huge:?}");
    let max: usize = events
        .split("at most ")
        .skip(1)
        .find_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .expect("the events section gives the most a call returns");
    for (limit, status) in [(0, 400), (1, 200), (max, 200), (max + 1, 400)] {
        let reply = server.request("GET", &format!("/api/v1/events?limit={limit}"), None, None);
        assert_eq!(reply.status, status, "events limit={limit}: {reply:?}");
    }
    let refused = section(&doc, "## Errors")
        .lines()
        .find(|l| l.starts_with("| 400 |"))
        .expect("a 400 row");
    assert!(
        refused.contains(&format!("events `limit` outside 1 to {max}")),
        "docs/API.md: {refused}"
    );
    let hosts_limit = section(&doc, "## Hosts")
        .lines()
        .find(|l| l.starts_with("| `limit=N` |"))
        .expect("the hosts' limit row");
    assert!(hosts_limit.contains("any N is accepted"), "{hosts_limit}");

    // The defaults it names are the server's.
    let printed = run(&["server", "--print-config"], &[]).stdout;
    let default = |key: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{key}: {printed}"))
    };
    for claim in [
        format!("(`--http`, default `{}`)", default("http")),
        format!(
            "`event_history` events (default {})",
            default("event_history")
        ),
    ] {
        assert!(doc.contains(&claim), "docs/API.md lacks {claim:?}");
    }
}
