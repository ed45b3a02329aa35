//! Network namespaces made by a test (the only place a test host has an
//! address of its own), and running the system programs that make them.

use std::process::Command;
use std::time::SystemTime;

/// Runs `program ARGS` and fails the test with its error text unless it
/// succeeds: a missing program or kernel feature fails, never skips.
pub fn must_run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test does): {e}"));
    assert!(
        out.status.success(),
        "{program} {} (needs root and this kernel feature): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS`, failing the test unless it succeeds.
pub fn ip(args: &[&str]) {
    must_run("ip", args);
}

/// Network namespaces with names unique to this test run, deleted when
/// dropped, even if the test fails.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Creates `count` namespaces, each with its loopback up.
    pub fn new(count: usize) -> Namespaces {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tag = format!("lubdub-it-{}-{nanos}", std::process::id());
        let mut made = Namespaces(Vec::new());
        for i in 0..count {
            let ns = format!("{tag}-{i}");
            ip(&["netns", "add", &ns]);
            made.0.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        made
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
