//! The Debian package, for real on this machine (root, as CI is): built by
//! scripts/package (release build, man pages, completions, cargo-deb),
//! installed with `dpkg -i`, checked, verified with `systemd-analyze`,
//! upgraded over a local edit, removed and purged; then installed again the
//! way dist/cloud-init.yaml does it, with a client started as its unit
//! would start it, beating with a per-host key to a server.
//!
//! One test, because the steps share one machine-wide install. It builds
//! the release binary once (minutes; see docs/OPERATIONS.md for the time).

use crate::util::{Proc, Server, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `program ARGS`, panicking with its output unless it succeeds.
fn must(program: &str, args: &[&str]) -> String {
    let out = try_run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn try_run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// `dpkg -s lubdub`'s Status line, or None when dpkg knows no such package.
fn status() -> Option<String> {
    let out = try_run("dpkg-query", &["-W", "-f=${Status}", "lubdub"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|s| !s.contains("not-installed"))
}

/// Removes what an earlier, interrupted run may have left.
fn purge_leftovers() {
    if status().is_some() {
        must("dpkg", &["-P", "lubdub"]);
    }
    let _ = std::fs::remove_dir_all("/etc/systemd/system/lubdub-client.service.d");
    let _ = std::fs::remove_file("/var/tmp/lubdub.deb");
    let _ = std::fs::remove_dir_all("/etc/lubdub");
}

/// Whether `name` is one of the variables cargo sets for the crate under
/// test. They must not reach the nested `cargo build`: ring's build script
/// declares `rerun-if-env-changed` on `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_*`, so inheriting lubdub's values made cargo rebuild ring and
/// everything above it, the fat-LTO binary included (minutes of CI), though
/// `./scripts/test` had built it just before.
fn set_by_cargo_for_the_test(name: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ];
    const NAMES: [&str; 4] = [
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// Builds the package (once per test run) and returns the .deb's path.
fn build() -> PathBuf {
    let started = Instant::now();
    let mut package = Command::new(format!("{ROOT}/scripts/package"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_the_test) {
            package.env_remove(name);
        }
    }
    let out = package
        .current_dir(ROOT)
        .output()
        .expect("run scripts/package");
    assert!(
        out.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(stdout.lines().last().expect("the .deb's path").trim());
    eprintln!(
        "scripts/package took {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        deb.display()
    );
    assert!(deb.starts_with(format!("{ROOT}/target/debian")), "{deb:?}");
    assert!(deb.extension().is_some_and(|e| e == "deb"), "{deb:?}");
    deb
}

/// The files (not directories) the installed package owns.
fn owned_files() -> Vec<PathBuf> {
    must("dpkg", &["-L", "lubdub"])
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

fn unit_path(unit: &str) -> PathBuf {
    ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join(unit))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{unit} not installed"))
}

fn verify_units() {
    let units: Vec<String> = ["lubdub-server.service", "lubdub-client.service"]
        .iter()
        .map(|u| unit_path(u).to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = std::iter::once("verify")
        .chain(units.iter().map(String::as_str))
        .collect();
    let out = try_run("systemd-analyze", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze: {stderr}");
    assert!(
        !stderr.contains("lubdub"),
        "systemd-analyze has remarks on the installed units: {stderr}"
    );
}

const CONFFILES: [&str; 2] = ["/etc/lubdub/lubdub.env", "/etc/lubdub/lubdub.toml"];

#[test]
fn the_package_installs_upgrades_over_local_edits_removes_and_purges() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "installing a package needs root (this project's test machines and CI run as root)"
    );
    purge_leftovers();
    let deb = build();
    let deb = deb.to_str().expect("utf-8 path");

    let conffiles = must("dpkg-deb", &["-I", deb, "conffiles"]);
    for file in CONFFILES {
        assert!(conffiles.lines().any(|l| l == file), "{file}: {conffiles}");
    }

    // Install.
    must("dpkg", &["-i", deb]);
    assert_eq!(status().as_deref(), Some("install ok installed"));
    let version = must("/usr/bin/lubdub", &["--version"]);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "lubdub --version: {version}"
    );
    for file in [
        "/usr/bin/lubdub",
        "/usr/share/man/man1/lubdub.1.gz",
        "/usr/share/man/man1/lubdub-server.1.gz",
        "/usr/share/man/man1/lubdub-client.1.gz",
        "/usr/share/bash-completion/completions/lubdub",
        "/usr/share/zsh/vendor-completions/_lubdub",
        "/usr/share/fish/vendor_completions.d/lubdub.fish",
        "/usr/share/lubdub/prometheus/lubdub-rules.yml",
        "/usr/share/lubdub/prometheus/lubdub-dashboard.json",
        "/usr/share/doc/lubdub/examples/cloud-init.yaml",
        CONFFILES[0],
        CONFFILES[1],
    ] {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    let man = must("man", &["-P", "cat", "lubdub-server"]);
    assert!(man.contains("--timeout"), "{man}");
    // The units run the packaged binary, and are not enabled until the
    // operator configures and enables them.
    for unit in ["lubdub-server.service", "lubdub-client.service"] {
        let text = std::fs::read_to_string(unit_path(unit)).expect("unit");
        assert!(text.contains("ExecStart=/usr/bin/lubdub "), "{unit}");
        assert!(
            !Path::new("/etc/systemd/system/multi-user.target.wants")
                .join(unit)
                .exists(),
            "{unit} enabled by the install"
        );
    }
    assert!(
        std::fs::read_to_string(unit_path("lubdub-server.service"))
            .expect("unit")
            .contains("StateDirectory=lubdub")
    );
    verify_units();

    // Upgrade (the same package again) over a local edit: the edit stays.
    let edited = format!(
        "{}LUBDUB_TIMEOUT=45s\n",
        std::fs::read_to_string(CONFFILES[0]).expect("env file")
    );
    std::fs::write(CONFFILES[0], &edited).expect("edit conffile");
    must("dpkg", &["-i", deb]);
    assert_eq!(
        std::fs::read_to_string(CONFFILES[0]).expect("env file"),
        edited
    );

    // Remove: everything but the conffiles goes; purge: they go too.
    let files = owned_files();
    assert!(files.len() >= 12, "{files:?}");
    must("dpkg", &["-r", "lubdub"]);
    assert_eq!(status().as_deref(), Some("deinstall ok config-files"));
    for file in &files {
        let conffile = CONFFILES.iter().any(|c| Path::new(c) == file);
        assert_eq!(file.exists(), conffile, "{} after dpkg -r", file.display());
    }
    must("dpkg", &["-P", "lubdub"]);
    assert_eq!(status(), None);
    for file in &files {
        assert!(!file.exists(), "{} after dpkg -P", file.display());
    }
    assert!(
        !Path::new("/etc/lubdub").exists(),
        "/etc/lubdub after purge"
    );

    cloud_init_installs_and_starts_a_signing_client(deb);
}

/// The `write_files` (path, mode, content) and `runcmd` lines of
/// dist/cloud-init.yaml. The file keeps to a plain layout (six-space
/// content blocks, one-line commands) that this reads strictly.
fn cloud_init() -> (Vec<(String, u32, String)>, Vec<String>) {
    let text = std::fs::read_to_string(format!("{ROOT}/dist/cloud-init.yaml")).expect("read");
    assert!(text.starts_with("#cloud-config\n"));
    let (mut files, mut commands) = (Vec::<(String, u32, String)>::new(), Vec::new());
    let mut section = "";
    let mut in_content = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') {
            section = line;
            in_content = false;
        } else if section == "write_files:" {
            if let Some(path) = line.strip_prefix("  - path: ") {
                // cloud-init's default mode.
                files.push((path.to_string(), 0o644, String::new()));
                in_content = false;
            } else if let Some(mode) = line.strip_prefix("    permissions: ") {
                let (_, file_mode, _) = files.last_mut().expect("a file");
                *file_mode = u32::from_str_radix(mode.trim_matches('"'), 8).expect("octal mode");
            } else if line == "    content: |" {
                in_content = true;
            } else if in_content && let Some(content) = line.strip_prefix("      ") {
                let (_, _, text) = files.last_mut().expect("a file");
                text.push_str(content);
                text.push('\n');
            }
        } else if section == "runcmd:"
            && let Some(command) = line.strip_prefix("  - ")
        {
            commands.push(command.to_string());
        }
    }
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(commands.len(), 4, "{commands:?}");
    (files, commands)
}

/// dist/cloud-init.yaml's steps, in cloud-init's order (files first, then
/// the commands), with the example values replaced: the servers by a test
/// server, the key by one derived for the host from the server's master key,
/// the package URL by the file just built. `systemctl` cannot run here (no
/// systemd as PID 1), so the client is then started as the installed unit
/// would start it: its ExecStart, with its EnvironmentFile and the drop-in's
/// key file.
fn cloud_init_installs_and_starts_a_signing_client(deb: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = crate::util::keygen(tmp.path(), "server.keys", &["--per-host"]);
    let server = Server::start(&["--key-file", master.to_str().expect("utf-8")]);
    let host_key = must(
        crate::util::BIN,
        &[
            "keygen",
            "--for-host",
            "web-042",
            "--from",
            master.to_str().expect("utf-8"),
        ],
    );

    let (files, commands) = cloud_init();
    let mut skipped = Vec::new();
    for (path, mode, content) in files {
        let content = match path.as_str() {
            "/etc/lubdub/client.key" => host_key.clone(),
            _ => content.replace(
                "monitor-1.example.org,monitor-2.example.org",
                &server.udp.to_string(),
            ),
        };
        let path = Path::new(&path);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, content).expect("write file");
        // As cloud-init would: the client refuses a key file others can read.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    for command in commands {
        if command.starts_with("systemctl ") {
            skipped.push(command);
            continue;
        }
        let command = command.replace(
            "https://packages.example.org/lubdub_0.1.0-1_amd64.deb",
            &format!("file://{deb}"),
        );
        must("sh", &["-c", &command]);
    }
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(status().as_deref(), Some("install ok installed"));
    // The drop-in, loaded with the unit, passes systemd's checks.
    verify_units();

    // Start the client as systemd would: ExecStart, EnvironmentFile, and
    // LUBDUB_KEY_FILE from the drop-in (%d: the credentials directory,
    // which would hold a copy of /etc/lubdub/client.key).
    let unit = std::fs::read_to_string(unit_path("lubdub-client.service")).expect("unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let dropin = std::fs::read_to_string("/etc/systemd/system/lubdub-client.service.d/key.conf")
        .expect("drop-in");
    assert!(dropin.contains("Environment=LUBDUB_KEY_FILE=%d/client.key"));
    assert!(dropin.contains("LoadCredential=client.key:/etc/lubdub/client.key"));
    let mut env = vec!["-i".to_string()];
    env.extend(
        std::fs::read_to_string("/etc/lubdub/lubdub.env")
            .expect("env file")
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(String::from),
    );
    env.push("LUBDUB_KEY_FILE=/etc/lubdub/client.key".into());
    env.extend(exec.split_whitespace().map(String::from));
    let args: Vec<&str> = env.iter().map(String::as_str).collect();
    let mut client = Proc::spawn_program("env", &args);
    assert!(
        server.wait_event("web-042", "joined", WAIT),
        "{:?} {:?}",
        server.events(),
        client.stderr()
    );
    assert_eq!(
        server.metric("lubdub_packets_dropped_total{reason=\"unsigned\"}"),
        Some(0.0)
    );
    assert!(wait_until(WAIT, || server.state_of("web-042").as_deref() == Some("up")));
    client.signal(libc::SIGTERM);
    assert!(client.wait_exit(WAIT).success());

    must("dpkg", &["-P", "lubdub"]);
    purge_leftovers();
    assert!(!Path::new("/usr/bin/lubdub").exists());
}
