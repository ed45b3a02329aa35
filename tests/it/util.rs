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

/// Runs `lubdub ARGS` with only `env` set, to its exit; kills it and fails
/// after 30 s. Unlike [`Proc`], it reads the output to its end.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Ran {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lubdub");
    let read_all = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lubdub {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A loopback TCP port that nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Writes `text` to `dir/name` and returns the path as a string (for
/// `--config`, hook scripts, …).
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

/// One request a [`Recorder`] received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    /// Header names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

/// A webhook receiver on loopback port 0 that records every request and
/// answers with scripted statuses (or never, to play a hanging endpoint).
pub struct Recorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Recorder {
    /// Answers the n-th request to each path with `statuses[n]`, and 200
    /// once they run out.
    pub fn start(statuses: &[u16]) -> Recorder {
        Self::spawn(statuses.to_vec(), false)
    }

    /// Records each request and then never answers.
    pub fn hanging() -> Recorder {
        Self::spawn(Vec::new(), true)
    }

    fn spawn(statuses: Vec<u16>, hang: bool) -> Recorder {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let seen = requests.clone();
        let statuses = Arc::new(statuses);
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (seen, statuses) = (seen.clone(), statuses.clone());
            async move {
                let n = {
                    let mut seen = seen.lock().expect("requests");
                    seen.push(Recorded {
                        path: uri.path().to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                    });
                    seen.iter().filter(|r| r.path == uri.path()).count() - 1
                };
                if hang {
                    // Bounded: the runtime is dropped with the test.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                let status = statuses.get(n).copied().unwrap_or(200);
                StatusCode::from_u16(status).expect("valid status")
            }
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, app).await });
        Recorder {
            addr,
            requests,
            runtime: Some(runtime),
        }
    }

    /// The URL of `path` on the recorder.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`,
/// installed by scripts/test) on a free loopback port, without clustering,
/// with a temporary storage path and a receiver that notifies nobody.
pub struct Alertmanager {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

const ALERTMANAGER_CONFIG: &str = "\
route:
  receiver: 'null'
receivers:
  - name: 'null'
";

impl Alertmanager {
    /// Starts it and waits until it is ready. A port taken between choosing
    /// and binding it makes it exit: then it is started again on another.
    pub fn start() -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_file(dir.path(), "alertmanager.yml", ALERTMANAGER_CONFIG);
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
            let mut child = Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={config}"))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus-alertmanager is installed (scripts/test installs it)");
            let url = format!("http://127.0.0.1:{port}");
            let mut exited = false;
            let ready = wait_until(Duration::from_secs(20), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || ureq::get(&format!("{url}/-/ready")).call().is_ok()
            });
            if ready && !exited {
                return Alertmanager {
                    url,
                    child,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();
        panic!("alertmanager did not start: {log}");
    }

    /// `GET /api/v2/alerts`: the alerts it holds (resolved ones drop out).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let body: serde_json::Value = ureq::get(&format!("{}/api/v2/alerts", self.url))
            .call()
            .expect("GET /api/v2/alerts")
            .body_mut()
            .read_json()
            .expect("json");
        body.as_array().cloned().unwrap_or_default()
    }

    /// The alerts whose `host` label is `host`.
    pub fn alerts_for(&self, host: &str) -> Vec<serde_json::Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["labels"]["host"] == host)
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let out = Command::new(BIN)
        .arg("keygen")
        .arg(&path)
        .args(extra)
        .env_clear()
        .output()
        .expect("run lubdub keygen");
    assert!(
        out.status.success(),
        "keygen {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// An HTTP answer: status, headers of interest and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub total_count: Option<usize>,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl Reply {
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
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Reply {
            status: response.status().as_u16(),
            content_type: header("content-type").unwrap_or_default(),
            total_count: header("x-total-count").and_then(|v| v.parse().ok()),
            www_authenticate: header("www-authenticate"),
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

/// One request an [`HttpRecorder`] received, with its method and query
/// (presets are checked request by request).
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// Header names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

/// A loopback HTTP receiver on port 0 that records every request, method
/// and query included, and answers `status` to all of them.
pub struct HttpRecorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpRecorder {
    /// Starts a recorder answering every request with `status`.
    pub fn start(status: u16) -> HttpRecorder {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let requests: Arc<Mutex<Vec<HttpRequest>>> = Arc::default();
        let seen = requests.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("requests").push(HttpRequest {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    query: uri.query().unwrap_or("").to_string(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| {
                            (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                        })
                        .collect(),
                    body: serde_json::from_slice(&body).unwrap_or_default(),
                });
                StatusCode::from_u16(status).expect("valid status")
            }
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, app).await });
        HttpRecorder {
            addr,
            requests,
            runtime: Some(runtime),
        }
    }

    /// The URL of `path` on the recorder.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().expect("requests").clone()
    }

    /// Waits until at least `n` requests came; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<HttpRequest> {
        wait_until(timeout, || self.requests().len() >= n);
        self.requests()
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
