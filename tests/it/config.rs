//! Configuration layers through the real binary: defaults < file <
//! environment < flags, for the server and the client, and every way a
//! configuration can be wrong; and every place that shows a default
//! agreeing with the settings' `Default`.
//! See: issues 3, 12.

use crate::util::{Proc, Ran, run, temp_file, wait_until, write_file};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

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

/// Runs `lubdub ARGS` (a `--print-config`) with `env`, and returns what
/// it printed; it must succeed.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    printed(&run(args, env)).to_string()
}

#[test]
fn server_precedence_defaults_file_env_flags() {
    let (tmp, file) = &temp_file(
        "lubdub.toml",
        "[server]\ntimeout = \"1m\"\nevent_history = 5\nlate_after = \"20s\"\n",
    );

    let defaults = &print_config(&["server", "--print-config"], &[]);
    assert_eq!(value(defaults, "timeout"), Some("\"30s\""));
    assert_eq!(value(defaults, "late_after"), None, "unset by default");

    let from_file = &print_config(&["server", "--config", file, "--print-config"], &[]);
    assert_eq!(value(from_file, "timeout"), Some("\"1m\""));
    assert_eq!(value(from_file, "event_history"), Some("5"));
    assert_eq!(value(from_file, "http"), Some("\"127.0.0.1:43278\""));

    let env = [
        ("LUBDUB_TIMEOUT", "2m"),
        ("LUBDUB_EVENT_HISTORY", "6"),
        ("LUBDUB_HTTP", "127.0.0.1:9"),
    ];
    let from_env = &print_config(&["server", "--config", file, "--print-config"], &env);
    assert_eq!(value(from_env, "timeout"), Some("\"2m\""));
    assert_eq!(value(from_env, "event_history"), Some("6"));
    assert_eq!(value(from_env, "http"), Some("\"127.0.0.1:9\""));
    assert_eq!(value(from_env, "late_after"), Some("\"20s\""), "file kept");

    let from_flags = &print_config(
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
    assert_eq!(value(from_flags, "timeout"), Some("\"3m\""));
    assert_eq!(value(from_flags, "event_history"), Some("7"));
    assert_eq!(
        value(from_flags, "http"),
        Some("\"127.0.0.1:9\""),
        "env kept"
    );

    // LUBDUB_CONFIG names the file; the printed config is itself a valid
    // config file that gives the same result.
    let again = write_file(tmp.path(), "printed.toml", from_flags);
    let via_env = print_config(&["server", "--print-config"], &[("LUBDUB_CONFIG", &again)]);
    assert_eq!(&via_env, from_flags);
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
    let (_tmp, file) = &temp_file(
        "c.toml",
        "[client]\nservers = [\"a\"]\ninterval = \"5s\"\njitter = 0.1\n",
    );
    let base = ["client", "--config", file, "--print-config"];
    let from_file = &print_config(&base, &[]);
    assert_eq!(value(from_file, "servers"), Some("[\"a\"]"));
    assert_eq!(value(from_file, "interval"), Some("\"5s\""));

    let env = [("LUBDUB_SERVERS", "b, c:9"), ("LUBDUB_JITTER", "0.2")];
    let from_env = &print_config(&base, &env);
    assert_eq!(value(from_env, "servers"), Some("[\"b\", \"c:9\"]"));
    assert_eq!(value(from_env, "jitter"), Some("0.2"));
    assert_eq!(value(from_env, "interval"), Some("\"5s\""), "file kept");

    let mut with_flags = base.to_vec();
    with_flags.extend(["d", "--jitter", "0", "--interval", "1s"]);
    let from_flags = &print_config(&with_flags, &env);
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
        let path = write_file(dir, name, text);
        let error = refused(&["server", "--config", &path, "--print-config"], &[]);
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

/// Dotted key (`phi.window`) → value of every setting in `table`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let key = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => flatten(&format!("{key}."), inner, out),
            value => {
                out.insert(key, value.clone());
            }
        }
    }
}

/// The settings of `[table]` in TOML text, flattened.
fn settings_of(text: &str, table: &str) -> BTreeMap<String, toml::Value> {
    let parsed: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut out = BTreeMap::new();
    if let Some(toml::Value::Table(inner)) = parsed.get(table) {
        flatten("", inner, &mut out);
    }
    out
}

/// A setting's value as help and the env file write it: a string without
/// quotes, a list comma-separated.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The text of the bracket that starts with `open` in `text` (brackets
/// inside it, as in `[::]:43278`, are kept).
fn bracketed(text: &str, open: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        depth += match c {
            '[' => 1,
            ']' => -1,
            _ => 0,
        };
        if depth == 0 {
            return Some(text[start..start + i].to_string());
        }
    }
    None
}

/// Flag (as its setting is named: `checkpoint_interval`) → the default its
/// help shows, from lines that each hold a flag and its help.
fn defaults_in(lines: impl Iterator<Item = String>) -> BTreeMap<String, String> {
    lines
        .filter_map(|line| {
            let flag = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("--"))?
                .trim_end_matches(',')
                .replace('-', "_");
            Some((flag, bracketed(&line, "[default: ")?))
        })
        .collect()
}

/// The defaults `lubdub COMMAND -h` shows. An argument's line is indented
/// a little; its help follows on the same line or, when clap finds the
/// lines too long, on lines indented further.
fn help_defaults(command: &str) -> BTreeMap<String, String> {
    let ran = run(&[command, "-h"], &[]);
    let mut entries: Vec<String> = Vec::new();
    for line in printed(&ran).lines() {
        let indent = line.len() - line.trim_start().len();
        match (indent, entries.last_mut()) {
            (10.., Some(entry)) => {
                entry.push(' ');
                entry.push_str(line.trim());
            }
            // A heading (`Options:`) ends the entry before it.
            _ => entries.push(line.trim().to_string()),
        }
    }
    defaults_in(entries.into_iter().filter(|e| e.starts_with('-')))
}

/// The defaults the man page of `lubdub COMMAND` shows: each `.TP` entry
/// is a flag line, then its help up to the next request.
fn man_defaults(dir: &Path, command: &str) -> BTreeMap<String, String> {
    let roff = std::fs::read_to_string(dir.join(format!("lubdub-{command}.1"))).expect("page");
    let plain = |text: &str| {
        text.replace("\\-", "-")
            .replace("\\*(Aq", "'")
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\fI", "")
    };
    let entries = roff.split("\n.TP\n").skip(1).map(|entry| {
        let text: Vec<&str> = entry.lines().take_while(|l| !l.starts_with('.')).collect();
        plain(&text.join(" "))
    });
    defaults_in(entries.filter(|e| e.starts_with('-')))
}

/// Issue 12: a default is written once, in the settings' `Default`; the
/// help, the man pages, `--print-config`, docs/lubdub.example.toml and
/// dist/lubdub.env all show that same value.
#[test]
fn help_man_pages_print_config_and_docs_agree_on_every_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let man = tmp.path();
    let ran = run(&["man", "--dir", man.to_str().expect("utf-8")], &[]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let server = settings_of(printed(&run(&["server", "--print-config"], &[])), "server");
    let mut client = settings_of(
        printed(&run(&["client", "h", "--print-config"], &[])),
        "client",
    );
    client.remove("servers"); // given here; the default is none

    // Every flag of a setting shows the setting's default, in the help and
    // the man page alike, and a flag without a setting shows none that
    // contradicts one.
    for (command, settings) in [("server", &server), ("client", &client)] {
        let mut help = help_defaults(command);
        assert_eq!(
            help,
            man_defaults(man, command),
            "{command}: help and man page"
        );
        // The one global flag with a default, which is no setting.
        assert_eq!(help.remove("log_format").as_deref(), Some("text"));
        for (flag, default) in &help {
            let value = settings.get(flag).unwrap_or_else(|| {
                panic!("{command} --{flag} shows [default: {default}], no setting has it")
            });
            assert_eq!(*default, shown(value), "{command} --{flag}");
        }
        let ran = run(&[command, "-h"], &[]);
        for (key, value) in settings
            .iter()
            .filter(|(_, v)| !matches!(v, toml::Value::Array(_)))
        {
            let flag = format!("--{} ", key.replace('_', "-"));
            if printed(&ran).contains(&flag) && !matches!(value, toml::Value::Boolean(_)) {
                assert!(help.contains_key(key), "{command} {flag}shows no default");
            }
        }
    }
    assert!(
        help_defaults("server").contains_key("checkpoint_interval"),
        "the default that once drifted is shown"
    );

    // `simulate` starts from the server's detector and the client's rhythm.
    let simulate = help_defaults("simulate");
    assert_eq!(
        simulate,
        man_defaults(man, "simulate"),
        "simulate: help and man"
    );
    let mut checked = 0;
    for (flag, default) in &simulate {
        let key = flag
            .strip_prefix("phi_")
            .map_or(flag.clone(), |k| format!("phi.{k}"));
        if let Some(value) = server.get(&key).or_else(|| client.get(&key)) {
            assert_eq!(*default, shown(value), "simulate --{flag}");
            checked += 1;
        }
    }
    assert!(checked >= 9, "simulate: {simulate:?}");
    assert_eq!(
        help_defaults("status").get("server"),
        Some(&shown(&server["http"])),
        "status --server asks the server's default address"
    );

    // The example config shows every setting with its default. A list of
    // sink tables, empty by default, shows as a commented example table.
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/docs/lubdub.example.toml"))
        .expect("docs/lubdub.example.toml");
    for (table, settings) in [("server", &server), ("client", &client)] {
        let shown_there = settings_of(&example, table);
        for (key, value) in settings {
            match shown_there.get(key) {
                Some(there) => assert_eq!(there, value, "example {table}.{key}"),
                None => {
                    let header = format!("#   [[{table}.{key}]]");
                    assert!(
                        *value == toml::Value::Array(vec![]) && example.contains(&header),
                        "docs/lubdub.example.toml lacks {table}.{key} = {value}"
                    );
                }
            }
        }
    }

    // dist/lubdub.env: a commented variable shows its setting's default.
    let env_file =
        std::fs::read_to_string(format!("{root}/dist/lubdub.env")).expect("dist/lubdub.env");
    let mut compared = 0;
    for line in env_file.lines() {
        let Some((var, value)) = line
            .strip_prefix("# LUBDUB_")
            .and_then(|l| l.split_once('='))
        else {
            continue;
        };
        let key = var.to_ascii_lowercase();
        if let Some(default) = server.get(&key).or_else(|| client.get(&key)) {
            assert_eq!(value, shown(default), "dist/lubdub.env: LUBDUB_{var}");
            compared += 1;
        }
    }
    assert!(compared >= 8, "{env_file}");
}
