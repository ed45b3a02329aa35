//! Test harness: spawn the real binary, read what it prints, wait for
//! conditions with deadlines instead of sleeping.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lubdub");

/// Polls `check` until it returns true or `timeout` passes; returns the
/// final answer. Bounded in time, so a broken feature fails, never hangs.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A spawned process whose stdout and stderr lines are collected.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawns `lubdub ARGS` with a cleared environment.
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_env(args, &[])
    }

    /// Spawns `lubdub ARGS` with only `env` set.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lubdub");
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// Lines printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("lines").clone()
    }

    /// Lines printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lines").clone()
    }

    /// Waits for a stdout line matching `pred`.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.stdout().into_iter().find(|l| pred(l));
            found.is_some()
        });
        found
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit, killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; stderr: {:?}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

/// One event line of the server's stdout: `TIME KIND HOST addr=… silent=…s`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventLine {
    pub kind: String,
    pub host: String,
    pub addr: String,
    pub silent_secs: f64,
}

/// Parses an event line; `None` for other lines.
pub fn parse_event(line: &str) -> Option<EventLine> {
    let mut words = line.split_whitespace();
    let _time = words.next()?;
    let kind = words.next()?.to_string();
    let host = words.next()?.to_string();
    let addr = words.next()?.strip_prefix("addr=")?.to_string();
    let silent_secs = words
        .next()?
        .strip_prefix("silent=")?
        .strip_suffix('s')?
        .parse()
        .ok()?;
    Some(EventLine {
        kind,
        host,
        addr,
        silent_secs,
    })
}

/// A running server, with the addresses it printed when ready.
pub struct Server {
    pub proc: Proc,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on loopback port 0 with a fresh data directory and
    /// `extra` arguments (e.g. `--timeout 1s`).
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(tmp.path(), extra);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server using `data_dir`, which the caller keeps.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec!["server", "--data-dir", dir];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--http") {
            args.extend(["--http", "127.0.0.1:0"]);
        }
        args.extend(extra);
        let proc = Proc::spawn(&args);
        let ready = proc.wait_line(Duration::from_secs(10), |l| l.starts_with("listening "));
        let Some(ready) = ready else {
            panic!("server did not get ready; stderr: {:?}", proc.stderr());
        };
        let addr = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
        };
        Server {
            udp: addr("udp="),
            http: addr("http="),
            proc,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// All event lines printed so far.
    pub fn events(&self) -> Vec<EventLine> {
        self.proc
            .stdout()
            .iter()
            .filter_map(|l| parse_event(l))
            .collect()
    }

    /// Events of `host`, as kinds in order.
    pub fn kinds_of(&self, host: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.host == host)
            .map(|e| e.kind)
            .collect()
    }

    /// Waits until `host` has had an event of `kind`.
    pub fn wait_event(&self, host: &str, kind: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.kinds_of(host).iter().any(|k| k == kind))
    }

    /// The URL of `path` on the HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GETs `path` and parses the JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_json()
            .expect("json body")
    }

    /// GETs `path` and returns the body as text.
    pub fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .expect("text body")
    }

    /// The value of the metric sample `name_and_labels` in `/metrics`.
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        self.get_text("/metrics").lines().find_map(|line| {
            let value = line.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
    }

    /// The state of `host` according to `/api/v1/hosts`.
    pub fn state_of(&self, host: &str) -> Option<String> {
        let hosts = self.get_json("/api/v1/hosts");
        hosts
            .as_array()?
            .iter()
            .find(|h| h["id"] == host)
            .and_then(|h| h["state"].as_str())
            .map(String::from)
    }
}

/// Starts `lubdub client` beating every 100 ms as `host_id` to `servers`.
pub fn client(servers: &[SocketAddr], host_id: &str, extra: &[&str]) -> Proc {
    let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    let mut args = vec!["client", "--interval", "100ms", "--host-id", host_id];
    args.extend(servers.iter().map(String::as_str));
    args.extend(extra);
    Proc::spawn(&args)
}

/// Spawns `program ARGS` (e.g. `ip netns exec NS lubdub …`) with only PATH
/// kept from the environment, collecting its output like [`Proc::spawn`].
pub fn spawn_program(program: &str, args: &[&str]) -> Proc {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    Proc {
        child,
        stdout,
        stderr,
    }
}
