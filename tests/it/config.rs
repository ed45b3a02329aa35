//! Configuration layers through the real binary: defaults < file <
//! environment < flags, for the server and the client, and every way a
//! configuration can be wrong.
//! See: issue 3.

use crate::util::{Proc, Ran, run, wait_until};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The value of `key` in printed TOML (`key = value`).
fn value<'a>(printed: &'a str, key: &str) -> Option<&'a str> {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
}

fn printed(ran: &Ran) -> &str {
    assert_eq!(ran.code, Some(0), "{ran:?}");
    &ran.stdout
}

#[test]
fn server_precedence_defaults_file_env_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write(
        tmp.path(),
        "lubdub.toml",
        "[server]\ntimeout = \"1m\"\nevent_history = 5\nlate_after = \"20s\"\n",
    );
    let file = file.to_str().expect("utf-8");

    let defaults = run(&["server", "--print-config"], &[]);
    let defaults = printed(&defaults);
    assert_eq!(value(defaults, "timeout"), Some("\"30s\""));
    assert_eq!(value(defaults, "late_after"), None, "unset by default");

    let from_file = run(&["server", "--config", file, "--print-config"], &[]);
    let from_file = printed(&from_file);
    assert_eq!(value(from_file, "timeout"), Some("\"1m\""));
    assert_eq!(value(from_file, "event_history"), Some("5"));
    assert_eq!(value(from_file, "http"), Some("\"127.0.0.1:43278\""));

    let env = [
        ("LUBDUB_TIMEOUT", "2m"),
        ("LUBDUB_EVENT_HISTORY", "6"),
        ("LUBDUB_HTTP", "127.0.0.1:9"),
    ];
    let from_env = run(&["server", "--config", file, "--print-config"], &env);
    let from_env = printed(&from_env);
    assert_eq!(value(from_env, "timeout"), Some("\"2m\""));
    assert_eq!(value(from_env, "event_history"), Some("6"));
    assert_eq!(value(from_env, "http"), Some("\"127.0.0.1:9\""));
    assert_eq!(value(from_env, "late_after"), Some("\"20s\""), "file kept");

    let from_flags = run(
        &[
            "server",
            "--config",
            file,
            "--print-config",
            "--timeout",
            "3m",
            "--event-history",
            "7",
        ],
        &env,
    );
    let from_flags = printed(&from_flags);
    assert_eq!(value(from_flags, "timeout"), Some("\"3m\""));
    assert_eq!(value(from_flags, "event_history"), Some("7"));
    assert_eq!(
        value(from_flags, "http"),
        Some("\"127.0.0.1:9\""),
        "env kept"
    );

    // LUBDUB_CONFIG names the file; the printed config is itself a valid
    // config file that gives the same result.
    let again = write(tmp.path(), "printed.toml", from_flags);
    let via_env = run(
        &["server", "--print-config"],
        &[("LUBDUB_CONFIG", again.to_str().expect("utf-8"))],
    );
    assert_eq!(printed(&via_env), from_flags);
}

#[test]
fn environment_reaches_the_running_server_and_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().to_str().expect("utf-8");
    let server = Proc::spawn_env(
        &["server"],
        &[
            ("LUBDUB_LISTEN", "127.0.0.1:0"),
            ("LUBDUB_HTTP", "127.0.0.1:0"),
            ("LUBDUB_TIMEOUT", "2500ms"),
            ("LUBDUB_DATA_DIR", data),
        ],
    );
    let ready = server
        .wait_line(WAIT, |l| l.starts_with("listening "))
        .unwrap_or_else(|| panic!("not ready: {:?}", server.stderr()));
    let addr = |key: &str| -> String {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{ready}"))
            .to_string()
    };
    let (udp, http) = (addr("udp="), addr("http="));
    assert!(udp.starts_with("127.0.0.1:"), "{ready}");

    // The client takes everything from the environment: no arguments.
    let _client = Proc::spawn_env(
        &["client"],
        &[
            ("LUBDUB_SERVERS", &udp),
            ("LUBDUB_INTERVAL", "100ms"),
            ("LUBDUB_HOST_ID", "from-env"),
        ],
    );
    let url = format!("http://{http}/api/v1/hosts");
    let mut host = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            let hosts: serde_json::Value = match ureq::get(&url).call() {
                Ok(mut r) => r.body_mut().read_json().unwrap_or_default(),
                Err(_) => return false,
            };
            host = hosts[0].clone();
            host["id"] == "from-env"
        }),
        "{host}"
    );
    assert_eq!(host["timeout_seconds"], 2.5, "{host}");
    assert_eq!(host["interval_seconds"], 0.1, "{host}");
}

#[test]
fn client_precedence_and_print_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write(
        tmp.path(),
        "c.toml",
        "[client]\nservers = [\"a\"]\ninterval = \"5s\"\njitter = 0.1\n",
    );
    let file = file.to_str().expect("utf-8");
    let base = ["client", "--config", file, "--print-config"];
    let from_file = run(&base, &[]);
    let from_file = printed(&from_file);
    assert_eq!(value(from_file, "servers"), Some("[\"a\"]"));
    assert_eq!(value(from_file, "interval"), Some("\"5s\""));

    let env = [("LUBDUB_SERVERS", "b, c:9"), ("LUBDUB_JITTER", "0.2")];
    let from_env = run(&base, &env);
    let from_env = printed(&from_env);
    assert_eq!(value(from_env, "servers"), Some("[\"b\", \"c:9\"]"));
    assert_eq!(value(from_env, "jitter"), Some("0.2"));
    assert_eq!(value(from_env, "interval"), Some("\"5s\""), "file kept");

    let mut with_flags = base.to_vec();
    with_flags.extend(["d", "--jitter", "0", "--interval", "1s"]);
    let from_flags = run(&with_flags, &env);
    let from_flags = printed(&from_flags);
    assert_eq!(value(from_flags, "servers"), Some("[\"d\"]"));
    assert_eq!(value(from_flags, "jitter"), Some("0.0"));
    assert_eq!(value(from_flags, "interval"), Some("\"1s\""));
}

/// Runs a command that must fail, and returns its one-line error.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let ran = run(args, env);
    assert_ne!(ran.code, Some(0), "{args:?} {env:?} must fail: {ran:?}");
    assert!(ran.stdout.is_empty(), "{ran:?}");
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {ran:?}");
    assert!(!ran.stderr.contains("panicked"), "{ran:?}");
    lines[0].to_string()
}

#[test]
fn every_config_error_is_one_line_naming_the_culprit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cases: &[(&str, &str, &[&str])] = &[
        // (file name, contents, words the error must contain)
        (
            "unknown-key.toml",
            "[server]\ntimout = \"3s\"\n",
            &["line 2", "timout"],
        ),
        ("unknown-table.toml", "[sever]\n", &["line 1", "sever"]),
        (
            "bad-value.toml",
            "[server]\ntimeout = \"soon\"\n",
            &["line 2", "server.timeout", "duration"],
        ),
        (
            "bad-type.toml",
            "[server]\nevent_history = \"many\"\n",
            &["line 2", "server.event_history", "usize"],
        ),
        (
            "bad-address.toml",
            "[server]\nlisten = \"nowhere\"\n",
            &["server.listen"],
        ),
        ("syntax.toml", "[server\ntimeout = 3\n", &["line 1"]),
        (
            "late-after-timeout.toml",
            "[server]\ntimeout = \"10s\"\nlate_after = \"10s\"\n",
            &["late_after", "less than timeout"],
        ),
        (
            "zero-timeout.toml",
            "[server]\ntimeout = \"0s\"\n",
            &["timeout", "greater than 0"],
        ),
    ];
    for (name, text, words) in cases {
        let path = write(dir, name, text);
        let path = path.to_str().expect("utf-8");
        let error = refused(&["server", "--config", path, "--print-config"], &[]);
        assert!(error.starts_with("lubdub: "), "{error}");
        for word in *words {
            assert!(error.contains(word), "{name}: {error:?} lacks {word:?}");
        }
    }

    // A file that cannot be read: missing, or a directory.
    let missing = dir.join("missing.toml");
    let missing = missing.to_str().expect("utf-8");
    let error = refused(&["server", "--config", missing], &[]);
    assert!(
        error.contains("cannot read config file") && error.contains("missing.toml"),
        "{error}"
    );
    let error = refused(&["client", "--config", dir.to_str().expect("utf-8")], &[]);
    assert!(error.contains("cannot read config file"), "{error}");

    // Bad environment values name the variable.
    for (var, value, words) in [
        ("LUBDUB_TIMEOUT", "soon", ["LUBDUB_TIMEOUT", "duration"]),
        ("LUBDUB_LISTEN", "nowhere", ["LUBDUB_LISTEN", "address"]),
        ("LUBDUB_EVENT_HISTORY", "-1", ["LUBDUB_EVENT_HISTORY", "-1"]),
        // Parses, but makes no sense with the default 30 s timeout.
        (
            "LUBDUB_LATE_AFTER",
            "1h",
            ["late_after", "less than timeout"],
        ),
    ] {
        let error = refused(&["server", "--print-config"], &[(var, value)]);
        for word in words {
            assert!(error.contains(word), "{var}: {error:?} lacks {word:?}");
        }
    }
    for (var, value, word) in [
        ("LUBDUB_INTERVAL", "often", "LUBDUB_INTERVAL"),
        ("LUBDUB_LEGACY", "maybe", "LUBDUB_LEGACY"),
        ("LUBDUB_JITTER", "0.7", "jitter"),
    ] {
        let error = refused(&["client", "h", "--print-config"], &[(var, value)]);
        assert!(error.contains(word), "{var}: {error}");
    }

    let error = refused(
        &["server", "--print-config"],
        &[("LUBDUB_LOG_FORMAT", "xml")],
    );
    assert!(
        error.contains("LUBDUB_LOG_FORMAT") && error.contains("xml"),
        "{error}"
    );

    // Invalid combinations given by flags, and a client with no server.
    let error = refused(&["server", "--timeout", "1s", "--late-after", "2s"], &[]);
    assert!(error.contains("late_after"), "{error}");
    let error = refused(&["client"], &[]);
    assert!(error.contains("servers"), "{error}");
    // Bad flag values are clap's usage errors (exit 2), naming the flag.
    let ran = run(&["server", "--timeout", "soon"], &[]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("--timeout"), "{ran:?}");
}

#[test]
fn unknown_environment_variables_are_warned_about() {
    let ran = run(
        &["server", "--print-config"],
        &[("LUBDUB_TIMOUT", "5s"), ("LUBDUB_LOG", "lubdub=info")],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(value(&ran.stdout, "timeout"), Some("\"30s\""));
    assert!(
        ran.stderr
            .contains("LUBDUB_TIMOUT is set but is no lubdub setting"),
        "{ran:?}"
    );
    assert!(!ran.stderr.contains("LUBDUB_LOG "), "{ran:?}");
}

#[test]
fn example_config_and_env_file_are_accepted_as_they_ship() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = format!("{root}/docs/lubdub.example.toml");
    let defaults = run(&["server", "--print-config"], &[]);
    let shipped = run(&["server", "--config", &example, "--print-config"], &[]);
    assert_eq!(printed(&shipped), printed(&defaults));

    // Every variable of dist/lubdub.env, commented or not, is a setting the
    // binary knows, and the file's example values are all valid.
    let env_file =
        std::fs::read_to_string(format!("{root}/dist/lubdub.env")).expect("dist/lubdub.env");
    let vars: Vec<(String, String)> = env_file
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("LUBDUB_") && !k.contains(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| k != "LUBDUB_CONFIG")
        .collect();
    assert!(vars.len() >= 12, "{vars:?}");
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (&**k, &**v)).collect();
    for command in ["server", "client"] {
        let ran = run(&[command, "--print-config"], &env);
        assert_eq!(ran.code, Some(0), "{command}: {ran:?}");
        assert!(!ran.stderr.contains("no lubdub setting"), "{ran:?}");
    }
}
