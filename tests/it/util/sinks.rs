//! Sink endpoints for alert tests: a webhook recorder and a real
//! Alertmanager, both on loopback.

use super::{wait_until, write_file};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a [`Recorder`] received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// `GET`, `POST`, ...
    pub method: String,
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
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
        Self::spawn(statuses.to_vec(), HashMap::new(), false, 200)
    }

    /// Answers every request with `status`.
    pub fn answering(status: u16) -> Recorder {
        Self::spawn(Vec::new(), HashMap::new(), false, status)
    }

    /// Like [`Recorder::start`], with a script of statuses per path (the
    /// paths not listed get 200).
    pub fn scripted(scripts: &[(&str, &[u16])]) -> Recorder {
        let scripts = scripts
            .iter()
            .map(|(path, statuses)| (path.to_string(), statuses.to_vec()))
            .collect();
        Self::spawn(Vec::new(), scripts, false, 200)
    }

    /// Records each request and then never answers.
    pub fn hanging() -> Recorder {
        Self::spawn(Vec::new(), HashMap::new(), true, 200)
    }

    /// `fallback` answers the requests past the end of their script.
    fn spawn(
        statuses: Vec<u16>,
        scripts: HashMap<String, Vec<u16>>,
        hang: bool,
        fallback: u16,
    ) -> Recorder {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let seen = requests.clone();
        let statuses = Arc::new((statuses, scripts));
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (seen, statuses) = (seen.clone(), statuses.clone());
            async move {
                let n = {
                    let mut seen = seen.lock().expect("requests");
                    seen.push(Recorded {
                        method: method.to_string(),
                        at: Instant::now(),
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
                    seen.iter().filter(|r| r.path == uri.path()).count() - 1
                };
                if hang {
                    // Bounded: the runtime is dropped with the test.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                let (all, scripts) = &*statuses;
                let script = scripts.get(uri.path()).unwrap_or(all);
                let status = script.get(n).copied().unwrap_or(fallback);
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

    /// Waits until at least `n` requests came; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        wait_until(timeout, || self.requests().len() >= n);
        self.requests()
    }

    /// Requests received so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let mut requests = self.requests();
        requests.retain(|r| r.path == path);
        requests
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
    /// The `[[server.sinks.alertmanager]]` table that posts to it,
    /// resending every 300 ms (so a test sees alerts at once), with alerts
    /// leased for `lease`.
    pub fn sink(&self, lease: &str) -> String {
        format!(
            "[[server.sinks.alertmanager]]\nurls = [\"{}\"]\nresend = \"300ms\"\nlease = \"{lease}\"\n",
            self.url
        )
    }

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
