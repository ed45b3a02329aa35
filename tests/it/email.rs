//! The e-mail sink against a real mail server: Debian's Exim (installed by
//! scripts/test), started here on a loopback port with a config, spool and
//! maildir of its own, requiring a login. See: issue 18.

use crate::util::{Proc, Server, free_port, run, wait_until, write_file};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const EXIM: &str = "/usr/sbin/exim4";

/// A running Exim that accepts mail from `lubdub` / `s3cret` only and
/// delivers every message into `maildir`.
struct Exim {
    port: u16,
    maildir: PathBuf,
    _proc: Proc,
}

impl Exim {
    fn start(dir: &Path) -> Exim {
        assert!(
            Path::new(EXIM).exists(),
            "{EXIM} is missing: run ./scripts/test, which installs exim4-daemon-light"
        );
        for sub in ["spool", "log", "Maildir"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        // Exim writes its spool, logs and mail as its own user (or as the
        // caller when not root): let either write here.
        use std::os::unix::fs::PermissionsExt;
        for sub in ["", "spool", "log", "Maildir"] {
            let perms = std::fs::Permissions::from_mode(0o777);
            std::fs::set_permissions(dir.join(sub), perms).expect("chmod");
        }
        // SAFETY: getuid(2) has no side effects.
        let user = match unsafe { libc::getuid() } {
            0 => "Debian-exim".to_string(),
            uid => uid.to_string(),
        };
        // A taken port (another process grabbed it) fails the start: retry.
        for _ in 0..5 {
            let port = free_port();
            let d = dir.display();
            let config = write_file(
                dir,
                "exim.conf",
                &format!(
                    r#"primary_hostname = lubdub.test
qualify_domain = lubdub.test
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
pid_file_path = {d}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept authenticated = *
  deny message = authentication required
begin routers
all:
  driver = accept
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = {d}/Maildir
  maildir_format
  envelope_to_add
  create_directory
  user = {user}
  mode = 0644
begin retry
* * F,1m,1m
begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${{if and {{{{eq{{$auth2}}{{lubdub}}}}{{eq{{$auth3}}{{s3cret}}}}}}}}
  server_set_id = $auth2
"#
                ),
            );
            let mut proc =
                Proc::spawn_program(EXIM, &["-C", &config, "-bdf", "-oX", &port.to_string()]);
            let up = wait_until(Duration::from_secs(5), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return Exim {
                    port,
                    maildir: dir.join("Maildir"),
                    _proc: proc,
                };
            }
            proc.kill();
        }
        panic!(
            "exim did not start; log: {:?}",
            std::fs::read_dir(dir.join("log"))
        );
    }

    /// The delivered messages, oldest first.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

fn sink(exim: &Exim, password_line: &str, extra: &str) -> String {
    format!(
        r#"[[server.sinks.email]]
name = "mail"
server = "127.0.0.1"
port = {}
tls = "none"
username = "lubdub"
{password_line}
from = "lubdub <lubdub@lubdub.test>"
to = ["ops@example.test", "oncall@example.test"]
external_url = "https://lubdub.example.com/"
retries = 0
{extra}
"#,
        exim.port
    )
}

#[test]
fn a_down_and_its_recovery_arrive_by_mail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exim = Exim::start(&tmp.path().join("exim"));
    let password = write_file(tmp.path(), "smtp-password", "s3cret\n");
    let config = write_file(
        tmp.path(),
        "lubdub.toml",
        &sink(&exim, &format!("password_file = \"{password}\""), ""),
    );
    let server = Server::start(&["--timeout", "1s", "--config", &config]);
    let _again = server.down_and_recover("web-1", WAIT);
    assert!(
        wait_until(WAIT, || exim.messages().len() >= 4),
        "two messages to two recipients: {:?}; server: {:?}",
        exim.messages(),
        server.proc.stderr()
    );
    let messages = exim.messages();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let down: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("Subject: [lubdub] host web-1 is down: silent for "))
        .collect();
    assert_eq!(down.len(), 2, "one per recipient: {messages:#?}");
    for m in &down {
        assert!(m.contains("From: lubdub <lubdub@lubdub.test>"), "{m}");
        assert!(
            m.contains("To: ops@example.test, oncall@example.test"),
            "{m}"
        );
        assert!(m.contains("Content-Type: text/plain"), "{m}");
        assert!(m.contains("address: 127.0.0.1:"), "{m}");
        assert!(
            m.contains("dashboard: https://lubdub.example.com/#host=web-1"),
            "{m}"
        );
    }
    let envelope: Vec<bool> = ["ops@example.test", "oncall@example.test"]
        .iter()
        .map(|to| {
            down.iter()
                .any(|m| m.contains(&format!("Envelope-to: {to}")))
        })
        .collect();
    assert_eq!(envelope, [true, true], "{down:#?}");
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.contains("Subject: [lubdub] host web-1 recovered after "))
            .count(),
        2
    );
}

#[test]
fn test_alert_reports_a_refused_login() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exim = Exim::start(&tmp.path().join("exim"));
    let config = write_file(
        tmp.path(),
        "lubdub.toml",
        &format!(
            "{}{}",
            sink(&exim, "password = \"s3cret\"", ""),
            sink(&exim, "password = \"wrong\"", "").replace("name = \"mail\"", "name = \"bad\"")
        ),
    );
    let server = Server::start(&["--config", &config]);
    let ran = run(&["test-alert", "--server", &server.http.to_string()], &[]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines[0], "mail: delivered", "{ran:?}");
    assert!(lines[1].starts_with("bad: failed: refused: "), "{ran:?}");
    assert!(!ran.stdout.contains("wrong") && !ran.stdout.contains("s3cret"));
    assert!(wait_until(WAIT, || exim.messages().len() == 2));
    assert!(
        exim.messages()[0].contains("Subject: [lubdub] test alert from lubdub (sink mail)"),
        "{:?}",
        exim.messages()
    );
}
