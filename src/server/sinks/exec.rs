//! The exec sink: runs a command per event, with the event in its
//! environment and as JSON on stdin. At most `concurrency` runs at once,
//! each killed after `timeout`; what it prints goes to the log.

use super::config::ExecConfig;
use super::{Delivery, Outcomes, SinkEvent};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Longest output line kept in the log, so a chatty hook cannot flood it.
const MAX_LOGGED_LINE: usize = 1000;
/// Most output lines logged per run and stream.
const MAX_LOGGED_LINES: usize = 50;

/// A configured exec sink.
pub struct Exec {
    name: Arc<str>,
    command: Arc<[String]>,
    timeout: Duration,
    concurrency: usize,
    outcomes: Outcomes,
}

impl Exec {
    /// The sink from its (validated) config.
    pub fn new(name: String, config: &ExecConfig, outcomes: Outcomes) -> Self {
        Self {
            name: name.into(),
            command: config.command.clone().into(),
            timeout: config.timeout,
            concurrency: config.concurrency,
            outcomes,
        }
    }

    /// Runs the command for each event from `queue` until it closes, then
    /// waits for the runs still going.
    pub async fn run(self, mut queue: mpsc::Receiver<SinkEvent>) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut runs = JoinSet::new();
        while let Some(event) = queue.recv().await {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (name, command, timeout, outcomes) = (
                self.name.clone(),
                self.command.clone(),
                self.timeout,
                self.outcomes.clone(),
            );
            runs.spawn(async move {
                let result = run_one(&name, &command, timeout, &event).await;
                match &result {
                    Ok(()) => outcomes.add(Delivery::Sent, 1),
                    Err(why) => outcomes.fail(1, why),
                }
                super::report_tests(std::slice::from_ref(&event), &result);
                drop(permit);
            });
            while runs.try_join_next().is_some() {}
        }
        while runs.join_next().await.is_some() {}
    }
}

/// The host's labels as `LUBDUB_LABEL_<NAME>` (the name upper-cased:
/// label names are `[a-zA-Z_][a-zA-Z0-9_]*`, so every one is a valid
/// variable name; `team` and `TEAM` would both be `LUBDUB_LABEL_TEAM`,
/// and the later in name order wins).
pub fn label_environment(event: &SinkEvent) -> Vec<(String, String)> {
    match event {
        SinkEvent::Host(e) | SinkEvent::Reminder(e) => e
            .labels
            .iter()
            .map(|(n, v)| {
                (
                    format!("LUBDUB_LABEL_{}", n.to_ascii_uppercase()),
                    v.to_string(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The environment a hook sees for `event`.
pub fn environment(event: &SinkEvent) -> Vec<(&'static str, String)> {
    let payload = event.payload();
    let mut env = vec![
        ("LUBDUB_EVENT", payload.kind.to_string()),
        ("LUBDUB_TIME", payload.at.clone()),
    ];
    match event {
        SinkEvent::Host(e) | SinkEvent::Reminder(e) => {
            if matches!(event, SinkEvent::Reminder(_)) {
                env.push(("LUBDUB_REMINDER", "1".to_string()));
            }
            env.push(("LUBDUB_HOST", e.host.to_string()));
            env.push(("LUBDUB_ADDR", e.addr.to_string()));
            env.push(("LUBDUB_IP", e.addr.ip().to_string()));
            env.push((
                "LUBDUB_SILENT_SECONDS",
                format!("{:.3}", e.silent_for.as_secs_f64()),
            ));
            if let Some(low) = e.silent_at_least {
                env.push((
                    "LUBDUB_SILENT_SECONDS_AT_LEAST",
                    format!("{:.3}", low.as_secs_f64()),
                ));
            }
            env.push(("LUBDUB_EVENT_ID", e.id.to_string()));
            if let Some(last_seen) = payload.last_seen {
                env.push(("LUBDUB_LAST_SEEN", last_seen));
            }
            if let Some(m) = &payload.maintenance {
                env.push(("LUBDUB_MAINTENANCE_SOURCE", m.source.to_string()));
                env.push(("LUBDUB_MAINTENANCE_REASON", m.reason.clone()));
                env.push(("LUBDUB_MAINTENANCE_UNTIL", m.until.clone()));
            }
        }
        SinkEvent::MassSilence(m) => {
            env.push(("LUBDUB_COUNT", m.count.to_string()));
            env.push(("LUBDUB_FLEET", m.fleet.to_string()));
            let hosts: Vec<&str> = m.hosts.iter().map(|h| &**h).collect();
            env.push(("LUBDUB_HOSTS", hosts.join(" ")));
            let networks: Vec<&str> = m.networks.iter().map(|n| n.network.as_str()).collect();
            env.push(("LUBDUB_NETWORKS", networks.join(" ")));
        }
        SinkEvent::Test(_) | SinkEvent::Digest(_) => {
            env.push(("LUBDUB_MESSAGE", payload.message.unwrap_or_default()));
        }
    }
    env
}

/// The `LUBDUB_*` variables of the server's own environment: its settings,
/// `LUBDUB_API_TOKEN` among them. A hook does not inherit them (it gets
/// its own `LUBDUB_*` event variables instead): a hook is often a script
/// that logs its environment, or a program the operator did not write.
fn server_settings() -> &'static [std::ffi::OsString] {
    static NAMES: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        std::env::vars_os()
            .map(|(name, _)| name)
            .filter(|name| name.as_encoded_bytes().starts_with(b"LUBDUB_"))
            .collect()
    })
}

/// One run; `Ok` when the command exited 0 within the timeout.
async fn run_one(
    name: &str,
    command: &[String],
    timeout: Duration,
    event: &SinkEvent,
) -> Result<(), String> {
    let kind = event.kind();
    let host = match event {
        SinkEvent::Host(e) | SinkEvent::Reminder(e) => e.host.to_string(),
        SinkEvent::MassSilence(m) => format!("{} hosts", m.count),
        SinkEvent::Test(_) => "test".to_string(),
        SinkEvent::Digest(events) => format!("{} events", events.len()),
    };
    let mut stdin_json = serde_json::to_vec(&event.payload()).expect("payload serialises");
    stdin_json.push(b'\n');
    let mut spawned = Command::new(&command[0]);
    for name in server_settings() {
        spawned.env_remove(name);
    }
    let spawned = spawned
        .args(&command[1..])
        .envs(environment(event))
        .envs(label_environment(event))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A run that outlives its timeout is dropped, and so killed.
        .kill_on_drop(true);
    // Its own process group, so that a timeout kills what it started too.
    #[cfg(unix)]
    let spawned = spawned.process_group(0);
    let spawned = spawned.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let why = format!("cannot run {:?}: {e}", command[0]);
            tracing::warn!(sink = name, kind, host, "{why}");
            return Err(why);
        }
    };
    let group = child.id();
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A hook that ignores stdin may close it: not an error.
            let _ = stdin.write_all(&stdin_json).await;
        } // dropped: the hook sees end of input
    };
    // Fed while its output is read, so a hook that writes much before it
    // reads a large document (a mass silence) cannot deadlock with us.
    let finished = tokio::time::timeout(timeout, async move {
        tokio::join!(feed, child.wait_with_output()).1
    })
    .await;
    let output = match finished {
        Err(_) => {
            #[cfg(unix)]
            if let Some(group) = group.and_then(|g| i32::try_from(g).ok()) {
                // SAFETY: kill(2) has no memory effects; the group is the
                // one the hook leads (the hook itself is already killed).
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            tracing::warn!(sink = name, kind, host, "hook killed after {timeout:?}");
            return Err(format!("hook killed after {timeout:?}"));
        }
        Ok(Err(e)) => {
            tracing::warn!(sink = name, kind, host, "waiting for the hook: {e}");
            return Err(format!("waiting for the hook: {e}"));
        }
        Ok(Ok(output)) => output,
    };
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        for line in String::from_utf8_lossy(bytes)
            .lines()
            .take(MAX_LOGGED_LINES)
        {
            let line: String = line.chars().take(MAX_LOGGED_LINE).collect();
            tracing::info!(sink = name, kind, host, stream, "hook: {line}");
        }
    }
    if output.status.success() {
        Ok(())
    } else {
        tracing::warn!(sink = name, kind, host, "hook failed: {}", output.status);
        Err(format!("hook failed: {}", output.status))
    }
}
