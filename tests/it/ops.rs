//! Running it for real: shell completions and man pages generated from the
//! CLI, systemd units that `systemd-analyze verify` accepts, JSON logs.
//! See: issue 3.

use crate::util::{Proc, Server, client, run, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn completions_cover_every_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let ran = run(&["completions", shell], &[]);
        assert_eq!(ran.code, Some(0), "{shell}: {ran:?}");
        for word in ["lubdub", "status", "print-config", "late-after", "check"] {
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
    let top = run(&["man"], &[]);
    assert!(top.stdout.contains(".TH lubdub 1"), "{top:?}");
    for command in ["server", "client", "status"] {
        assert!(top.stdout.contains(command), "lubdub(1) lists {command}");
    }
    assert!(
        !top.stdout.contains("completions"),
        "hidden commands stay out of the man page"
    );
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
        wait_until(WAIT, || server
            .proc
            .stderr()
            .iter()
            .any(|l| l.contains("dropped packet"))),
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
