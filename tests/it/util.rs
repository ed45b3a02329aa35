//! Test harness: spawn the real binary, read what it prints, wait for
//! conditions with deadlines instead of sleeping.

#![allow(dead_code)] // each test file uses a different part of the harness

mod beats;
mod netns;
mod sinks;

pub use beats::*;
pub use netns::*;
pub use sinks::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// A spawned process whose output is collected by two reader threads.
pub struct Proc {
    child: Child,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
}

impl Proc {
    /// Spawns `lubdub ARGS` with a cleared environment.
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_env(args, &[])
    }

    /// Spawns `lubdub ARGS` with only `env` set.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(BIN);
        command.args(args).env_clear().envs(env.iter().copied());
        Self::start(command)
    }

    /// Spawns `program ARGS` (e.g. `ip netns exec NS lubdub …`) with only
    /// PATH kept from the environment.
    pub fn spawn_program(program: &str, args: &[&str]) -> Proc {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut command = Command::new(program);
        command.args(args).env_clear().env("PATH", path);
        Self::start(command)
    }

    /// The one place a test starts a process: stdin closed, stdout and
    /// stderr piped into collectors.
    fn start(mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
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
        self.stdout.lines()
    }

    /// Lines printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// Waits for the `listening udp=… http=…` line a server prints once
    /// ready, and returns it; fails the test (with stderr) without it.
    pub fn wait_listening(&self) -> String {
        let ready = self.wait_line(Duration::from_secs(10), |l| l.starts_with("listening "));
        ready.unwrap_or_else(|| panic!("server did not get ready; stderr: {:?}", self.stderr()))
    }

    /// Waits like [`Proc::wait_listening`] and returns the UDP and HTTP
    /// addresses the server bound.
    pub fn wait_addrs(&self) -> (SocketAddr, SocketAddr) {
        let ready = self.wait_listening();
        let addr = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
        };
        (addr("udp="), addr("http="))
    }

    /// Waits for a stderr line containing `text`.
    pub fn wait_stderr(&self, timeout: Duration, text: &str) -> bool {
        wait_until(timeout, || self.stderr().iter().any(|l| l.contains(text)))
    }

    /// How many stderr lines contain `text`.
    pub fn stderr_count(&self, text: &str) -> usize {
        self.stderr_lines(text).len()
    }

    /// The stderr lines that contain `text`.
    pub fn stderr_lines(&self, text: &str) -> Vec<String> {
        self.stderr()
            .into_iter()
            .filter(|l| l.contains(text))
            .collect()
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

    /// Waits for the process to exit, killing it after `timeout`, and then
    /// (briefly) for the readers to take its last output.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let exited = wait_until(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            panic!(
                "process did not exit within {timeout:?}; stderr: {:?}",
                self.stderr()
            );
        }
        // A grandchild may hold the pipes open: bounded, not fatal.
        wait_until(Duration::from_secs(2), || {
            self.stdout.is_done() && self.stderr.is_done()
        });
        status.expect("exited")
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

/// What a process wrote on one stream, as it arrives.
struct Output {
    text: Mutex<String>,
    done: AtomicBool,
}

impl Output {
    /// The complete lines so far (and the last, unfinished one once the
    /// stream has ended).
    fn lines(&self) -> Vec<String> {
        let text = self.text.lock().expect("output");
        let end = if self.is_done() {
            text.len()
        } else {
            text.rfind('\n').map_or(0, |i| i + 1)
        };
        text[..end].lines().map(String::from).collect()
    }

    /// Everything, as written.
    fn text(&self) -> String {
        self.text.lock().expect("output").clone()
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Output> {
    let output = Arc::new(Output {
        text: Mutex::new(String::new()),
        done: AtomicBool::new(false),
    });
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        // Line by line, so a reader never sees half of a line.
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            sink.text.lock().expect("output").push_str(&text);
            line.clear();
        }
        sink.done.store(true, Ordering::Release);
    });
    output
}

/// One event line of the server's stdout: `TIME KIND HOST addr=… silent=…s`
/// (or `silent=LOs..HIs` when the silence is only known within bounds).
#[derive(Clone, Debug, PartialEq)]
pub struct EventLine {
    /// When the server says it happened.
    pub at: SystemTime,
    pub kind: String,
    pub host: String,
    pub addr: String,
    /// The silence, or its upper bound (since the latest recorded beat).
    pub silent_secs: f64,
    /// The lower bound of a silence known only within bounds.
    pub silent_at_least: Option<f64>,
}

/// Parses an event line; `None` for other lines.
pub fn parse_event(line: &str) -> Option<EventLine> {
    let mut words = line.split_whitespace();
    let at = humantime::parse_rfc3339(words.next()?).ok()?;
    let kind = words.next()?.to_string();
    let host = words.next()?.to_string();
    let addr = words.next()?.strip_prefix("addr=")?.to_string();
    let silent = words.next()?.strip_prefix("silent=")?;
    let (silent_at_least, silent_secs) = match silent.split_once("..") {
        Some((low, high)) => (Some(seconds(low)?), seconds(high)?),
        None => (None, seconds(silent)?),
    };
    Some(EventLine {
        at,
        kind,
        host,
        addr,
        silent_secs,
        silent_at_least,
    })
}

/// `1.500s` → 1.5.
fn seconds(text: &str) -> Option<f64> {
    text.strip_suffix('s')?.parse().ok()
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

    /// Starts a server like [`Server::start`], with `config` as its
    /// config file (e.g. `[[server.sinks.webhook]] …`).
    pub fn with_config(config: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = write_file(tmp.path(), "lubdub.toml", config);
        let mut args = vec!["--config", &path];
        args.extend(extra);
        let mut server = Self::start_in(&tmp.path().join("data"), &args);
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
        let (udp, http) = proc.wait_addrs();
        Server {
            udp,
            http,
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

    /// Starts a client for each of `ids` and waits until all have joined;
    /// returns the clients in the order of `ids`.
    pub fn join_all<S: AsRef<str>>(&self, ids: &[S], timeout: Duration) -> Vec<Proc> {
        let clients = ids
            .iter()
            .map(|id| client(&[self.udp], id.as_ref(), &[]))
            .collect();
        assert!(
            wait_until(timeout, || ids
                .iter()
                .all(|id| self.kinds_of(id.as_ref()).iter().any(|k| k == "joined"))),
            "{:?}",
            self.events()
        );
        clients
    }

    /// Runs `host` through joined -> down -> recovered (each awaited up to
    /// `timeout`), and returns the client beating again: it stops when
    /// dropped.
    pub fn down_and_recover(&self, host: &str, timeout: Duration) -> Proc {
        let mut beating = client(&[self.udp], host, &[]);
        assert!(self.wait_event(host, "joined", timeout));
        beating.kill();
        assert!(self.wait_event(host, "down", timeout));
        let again = client(&[self.udp], host, &[]);
        assert!(self.wait_event(host, "recovered", timeout));
        again
    }

    /// The URL of `path` on the HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GETs `path` and parses the JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let body = self.get_text(path);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
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

    /// How many packets the server dropped for `reason` (e.g. `replay`).
    pub fn dropped(&self, reason: &str) -> f64 {
        let sample = format!("lubdub_packets_dropped_total{{reason=\"{reason}\"}}");
        self.metric(&sample)
            .unwrap_or_else(|| panic!("no drop counter for {reason}"))
    }

    /// Stops the server with SIGTERM and asserts it exits 0 (its store
    /// flushed, for a restart on the same data directory).
    pub fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        let status = self.proc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
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

/// Starts one client per id and waits until the server lists them all `up`.
pub fn fleet(server: &Server, ids: &[&str]) -> Vec<Proc> {
    let clients = ids
        .iter()
        .map(|id| client(&[server.udp], id, &[]))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            ids.iter()
                .all(|id| server.state_of(id).as_deref() == Some("up"))
        }),
        "all up: {:?}",
        server.events()
    );
    clients
}

/// Sends the seed's `Thump!` to `server` and waits for the legacy host
/// (keyed by its IP, 127.0.0.1) to join; returns the socket it came from.
pub fn thump(server: &Server) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(b"Thump!", server.udp).expect("send");
    assert!(
        server.wait_event("127.0.0.1", "joined", Duration::from_secs(10)),
        "{:?}",
        server.events()
    );
    socket
}

/// Starts `lubdub client` beating every 100 ms as `host_id` to `servers`.
pub fn client(servers: &[SocketAddr], host_id: &str, extra: &[&str]) -> Proc {
    let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    let mut args = vec!["client", "--interval", "100ms", "--host-id", host_id];
    args.extend(servers.iter().map(String::as_str));
    args.extend(extra);
    Proc::spawn(&args)
}

/// How a finished `lubdub` run exited, and everything it printed.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// All of stdout.
    pub stdout: String,
    /// All of stderr.
    pub stderr: String,
}

/// Runs `server --config CONFIG --data-dir DATA` on loopback port 0 to its
/// exit (for configurations the server must refuse).
pub fn run_server(config: &str, data: &Path) -> Ran {
    run(&server_args(data, &["--config", config]), &[])
}

/// Runs `lubdub ARGS` with only `env` set, to its exit; kills it and fails
/// after 30 s. Unlike [`Proc`], it returns the output as written.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut proc = Proc::spawn_env(args, env);
    let status = proc.wait_exit(Duration::from_secs(30));
    Ran {
        code: status.code(),
        stdout: proc.stdout.text(),
        stderr: proc.stderr.text(),
    }
}

/// A loopback TCP port that nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// `path` as a `&str`, for arguments.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Writes `text` to `dir/name` and returns the path as a string (for
/// `--config`, hook scripts, …).
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

/// A UDP port on loopback that was free a moment ago, for a server that
/// must keep its port across a restart (its clients keep beating to it).
pub fn free_udp_port() -> u16 {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}

/// Kinds of the server's events about `host` printed after line `from` of
/// its stdout (e.g. only what happened after some point of a test).
pub fn kinds_since(server: &Server, from: usize, host: &str) -> Vec<String> {
    server.proc.stdout()[from..]
        .iter()
        .filter_map(|l| parse_event(l))
        .filter(|e| e.host == host)
        .map(|e| e.kind)
        .collect()
}

/// Runs `lubdub keygen DIR/NAME EXTRA…` and returns the key file's path;
/// panics (with stderr) if it fails.
pub fn keygen(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["keygen", path.to_str().expect("utf-8 path")];
    args.extend(extra);
    let ran = run(&args, &[]);
    assert_eq!(ran.code, Some(0), "keygen {extra:?}: {}", ran.stderr);
    path
}

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS line")
}

/// Sends `request` as raw bytes to `addr` (no client-side URL cleaning)
/// and returns the whole response as text; bounded by a 5 s timeout.
pub fn raw_http(addr: SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response); // ends at close or timeout
    String::from_utf8_lossy(&response).into_owned()
}

/// An HTTP answer: status, headers and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The value of header `name`, if it came and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {:?}", self.body))
            .to_string()
    }
}

impl Server {
    /// Sends `method path` with optional bearer `token` and `accept`
    /// header; any status is returned, not turned into an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
    ) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        let request = match token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        let request = match accept {
            Some(accept) => request.header("Accept", accept),
            None => request,
        };
        let mut response = agent
            .run(request.body(()).expect("request"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.body_mut().read_to_string().expect("text body"),
        }
    }

    /// Host ids of a `/api/v1/hosts…` answer, in order.
    pub fn ids(&self, path: &str) -> Vec<String> {
        self.get_json(path)
            .as_array()
            .expect("array")
            .iter()
            .map(|h| h["id"].as_str().expect("id").to_string())
            .collect()
    }
}

/// A free loopback TCP port: bound, then released for a program that cannot
/// take port 0 (e.g. Prometheus). Another process may grab it in between,
/// so callers retry on a bind failure.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// The arguments of `lubdub server` with data directory `data_dir`, UDP and
/// HTTP on loopback port 0, then `extra`: for a server run some other way
/// than [`Server::start_in`] (to its exit, with an environment, under a
/// wrapper).
pub fn server_args<'a>(data_dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let loopback = ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let mut args = vec!["server", "--data-dir", path_str(data_dir)];
    args.extend(loopback);
    args.extend(extra);
    args
}

/// A fresh temporary directory holding `text` as the file `name`, and the
/// file's path (for `--config`, key files, …); the file lasts as long as
/// the directory.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), name, text);
    (dir, path)
}

impl Proc {
    /// Whether a stderr line so far contains every one of `words`.
    pub fn stderr_has(&self, words: &[&str]) -> bool {
        self.stderr()
            .iter()
            .any(|l| words.iter().all(|w| l.contains(w)))
    }
}
