//! The server: the I/O around the pure [`monitor`](crate::monitor) core.
//!
//! A beat goes socket → [`recv`] (batched receive) → [`ingest`] (decode,
//! [`guard`] admission) → [`fleet`] (the one owner of the monitor's lock,
//! which publishes the events) → [`events`] (history and broadcast) → the
//! console, [`persist`] and [`sinks`]. The [`timer`] expires deadlines
//! through the fleet; [`http`] reads it; [`metrics`] count outcomes.
//!
//! [`Server::bind`] binds the sockets (so the caller learns the real
//! addresses, e.g. for port 0), and [`Server::run`] runs until the shutdown
//! token is cancelled, then stops in order: ingest and the timer together
//! (a half-stopped server must not report hosts down), then HTTP (whose
//! pause/forget must reach the store), then the store's last checkpoint,
//! and last the console and the sinks, after they have printed and
//! delivered every event.

pub mod announce;
pub mod dedicated;
pub mod dropped;
pub mod events;
pub mod exposition;
pub mod fleet;
pub mod fleet_loss;
pub mod guard;
pub mod http;
pub mod ingest;
pub mod maintenance;
pub mod metrics;
pub mod persist;
pub mod probe;
pub mod process;
pub mod recv;
pub mod reload;
pub mod schedule;
pub mod serve;
pub mod sinks;
pub mod site;
pub mod timer;
pub mod watchdog;

use crate::config::ValidServerConfig;
use crate::monitor::{HostState, Monitor};
use events::EventLog;
use fleet::Fleet;
use http::Shared;
use ingest::Ingest;
use metrics::Metrics;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long a stopping server waits for open HTTP requests.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a stopping server lets the alert sinks deliver what they hold.
const SINK_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// `udp` or `http`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The HTTP server failed while running.
    #[error("http server failed")]
    Http(#[source] io::Error),
    /// An alert sink could not be set up.
    #[error(transparent)]
    Sinks(#[from] sinks::Error),
    /// The store cannot be opened or read (locked, corrupt, no directory).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The key file cannot be used.
    #[error(transparent)]
    Keys(#[from] crate::auth::Error),
    /// The watchdog's beats cannot start (`[server.watchdog]`: its key file).
    #[error("watchdog")]
    Watchdog(#[source] crate::client::Error),
    /// The beat trace (`record`) cannot be created.
    #[error("cannot create the beat trace {path}")]
    Record {
        /// The file asked for.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: crate::trace::TraceError,
    },
}

/// A bound, not yet running, server.
pub struct Server {
    config: ValidServerConfig,
    udp: UdpSocket,
    http: TcpListener,
    shared: Arc<Shared>,
    store: crate::store::Store,
    restored: persist::Restored,
    guard: Arc<guard::Guard>,
    record: Option<crate::trace::Recorder>,
    reload: Option<reload::Loader>,
}

impl Server {
    /// Binds the UDP and HTTP sockets and loads the store.
    pub async fn bind(config: ValidServerConfig) -> Result<Server, Error> {
        sinks::check(&config.sinks)?;
        let guard = Arc::new(guard::Guard::new(&config)?);
        let udp =
            bind_udp(config.listen, config.recv_buffer_bytes).map_err(|source| Error::Bind {
                what: "udp",
                addr: config.listen,
                source,
            })?;
        let http = TcpListener::bind(config.http)
            .await
            .map_err(|source| Error::Bind {
                what: "http",
                addr: config.http,
                source,
            })?;
        // After binding: a port in use is reported before any store problem.
        let data_dir = crate::store::resolve_data_dir(config.data_dir.as_deref())?;
        let store = crate::store::Store::open(&data_dir)?;
        let loaded = store.load()?;
        let (now, wall) = (timer::now(), std::time::SystemTime::now());
        let mut monitor = Monitor::new(config.monitor().clone(), now, wall);
        monitor.set_label_rules(config.label_rules().to_vec());
        // Nonces an off-path sender cannot guess (issue 15).
        let mut seed = [0u8; 8];
        if let Err(e) = getrandom::fill(&mut seed) {
            tracing::warn!("no OS randomness for probe nonces ({e}): using the clock");
            seed = crate::monitor::registry::millis(
                wall.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
                false,
            )
            .to_le_bytes();
        }
        monitor.seed_probes(u64::from_le_bytes(seed));
        let events = EventLog::new(config.event_history);
        let restored = persist::restore(loaded, &mut monitor, &events, now, wall);
        monitor.set_topology(config.topology().clone(), now);
        tracing::info!(
            hosts = restored.hosts,
            path = %store.path().display(),
            "store loaded"
        );
        let fleet = Arc::new(Fleet::new(monitor, Arc::new(events)));
        let metrics = Arc::new(Metrics::for_server(
            fleet.clone(),
            &config.metrics_by_labels,
        ));
        let shared = Arc::new(Shared {
            fleet,
            metrics,
            store: Arc::new(persist::StoreHealth::new(store.path().to_path_buf())),
            api_token: config.api_token.clone(),
        });
        let record = match &config.record {
            Some(path) => Some(crate::trace::Recorder::create(path, timer::now()).map_err(
                |source| Error::Record {
                    path: path.clone(),
                    source,
                },
            )?),
            None => None,
        };
        Ok(Server {
            config,
            udp,
            http,
            shared,
            store,
            restored,
            guard,
            record,
            reload: None,
        })
    }

    /// Reloads on SIGHUP, reading the configuration again with `load` (the
    /// file, the environment and the flags, as at start); see [`reload`].
    /// Without it SIGHUP keeps its default (it ends the process).
    pub fn reload_with<E: std::fmt::Display>(
        mut self,
        mut load: impl FnMut() -> Result<ValidServerConfig, E> + Send + 'static,
    ) -> Self {
        // `{:#}`: an anyhow error with its causes, on one line.
        self.reload = Some(Box::new(move || load().map_err(|e| format!("{e:#}"))));
        self
    }

    /// The UDP address actually bound.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The HTTP address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The server's shared state (for in-process tests and embedding).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// How many keys the server accepts beats signed with (0: unsigned
    /// beats are accepted).
    pub fn key_count(&self) -> usize {
        self.guard.key_count()
    }

    /// Runs until `shutdown` is cancelled, then stops cleanly.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // What is used more than once, or outlives a move of another field.
        let (config, shared, guard) = (&self.config, self.shared, self.guard);
        // First: a bad watchdog key file stops the server before anything runs.
        let watchdog = watchdog::Watchdog::start(&config.watchdog, shared.clone())?;
        let fleet = shared.fleet.clone();
        let console = tokio::spawn(print_events(fleet.events().subscribe()));
        // Off the detection path: the sinks only read the event broadcast
        // (and, once, the hosts already down).
        let http_addr = self.http.local_addr().map_err(Error::Http)?;
        let sinks = sinks::Sinks::spawn(
            config,
            http_addr,
            fleet.read(Monitor::down_events),
            fleet.events().subscribe(),
            shared.metrics.clone(),
            None,
        )?;
        let reload_stop = CancellationToken::new();
        let reloader = self.reload.map(|load| reload::Reloader {
            load,
            started: config.clone(),
            fleet: fleet.clone(),
            guard: guard.clone(),
            metrics: shared.metrics.clone(),
            http_addr,
        });
        // The sinks API serves the sinks of the start (a reload's new sinks
        // are not shown there until a restart).
        let sink_routes = sinks.routes();
        let sinks = tokio::spawn(reload::run(reloader, sinks, reload_stop.clone()));
        let checkpoint_stop = CancellationToken::new();
        let checkpointer = tokio::spawn(
            persist::Checkpointer {
                store: self.store,
                fleet: fleet.clone(),
                metrics: shared.metrics.clone(),
                health: shared.store.clone(),
                interval: config.checkpoint_interval,
                event_history: config.event_history,
            }
            .run(fleet.events().subscribe(), checkpoint_stop.clone()),
        );
        fleet.announce(vec![persist::monitor_started(
            self.udp.local_addr().unwrap_or(config.listen),
            self.restored.away,
            std::time::SystemTime::now(),
        )]);

        // A handle on the beats' socket: probes leave from the address the
        // clients beat to (and through the NAT mappings their beats keep).
        let prober = match self.udp.try_clone() {
            Ok(socket) => Some(probe::Prober::new(
                socket,
                guard.clone(),
                shared.metrics.probe.clone(),
            )),
            Err(e) => {
                tracing::warn!("cannot share the UDP socket ({e}): no probes will be sent");
                None
            }
        };
        let ingest_stop = CancellationToken::new();
        let ingest = tokio::spawn(
            Ingest {
                socket: self.udp,
                fleet: fleet.clone(),
                metrics: shared.metrics.clone(),
                guard: guard.clone(),
                record: self.record.map(Mutex::new),
            }
            .run(ingest_stop.clone()),
        );
        let timer_stop = CancellationToken::new();
        // On a thread of its own: see `dedicated`.
        let timer = dedicated::spawn(
            "timer",
            timer::run_timer(
                fleet.clone(),
                shared.metrics.timer.clone(),
                prober,
                timer_stop.clone(),
            ),
        );
        let schedules = crate::schedule::compile(&config.maintenance).unwrap_or_default();
        let scheduler = tokio::spawn(schedule::run(fleet.clone(), schedules, timer_stop.clone()));
        let report = config
            .silent_report
            .map(|every| tokio::spawn(report_silent(fleet.clone(), every, timer_stop.clone())));
        let http_stop = CancellationToken::new();
        let mut http_server = {
            let stop = http_stop.clone();
            let app = guard::limit_http(http::router(shared.clone()).merge(sink_routes));
            let (http, config) = (self.http, config.clone());
            tokio::spawn(async move { serve::serve(http, app, &config, stop).await })
        };

        let http_result = tokio::select! {
            _ = shutdown.cancelled() => None,
            result = &mut http_server => Some(result),
        };
        // Ingest and the detector stop together: a detector left running
        // without beats would report hosts down that are not.
        ingest_stop.cancel();
        timer_stop.cancel();
        reload_stop.cancel();
        let _ = ingest.await;
        let _ = timer.await;
        let _ = scheduler.await;
        watchdog.stop().await; // says goodbye to the servers it beats to
        if let Some(report) = report {
            let _ = report.await;
        }
        // HTTP next: a pause or forget it still serves must reach the store.
        http_stop.cancel();
        if http_result.is_none()
            && tokio::time::timeout(HTTP_DRAIN, &mut http_server)
                .await
                .is_err()
        {
            http_server.abort(); // a client holding a connection open
        }
        // Nothing changes the registry any more: the last checkpoint holds
        // the final state.
        checkpoint_stop.cancel();
        let _ = checkpointer.await;
        // Every publisher has stopped: the console and the sinks print and
        // deliver what is queued, then end.
        fleet.events().close();
        drop(shared);
        drop(fleet);
        let _ = console.await;
        if let Ok(sinks) = sinks.await {
            sinks.finish(SINK_DRAIN).await;
        }
        match http_result {
            Some(Ok(Err(e))) => Err(Error::Http(e)),
            _ => Ok(()),
        }
    }
}

/// Binds the UDP socket. An unspecified IPv6 address is made dual-stack, and
/// falls back to IPv4 where the machine has no IPv6.
fn bind_udp(addr: SocketAddr, recv_buffer_bytes: usize) -> io::Result<UdpSocket> {
    let socket = match Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            tracing::warn!("no IPv6 ({e}); listening on IPv4 only");
            return bind_udp(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())),
                recv_buffer_bytes,
            );
        }
        other => other?,
    };
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    match recv::set_receive_buffer(&socket, recv_buffer_bytes) {
        Ok(granted) if granted < recv_buffer_bytes => tracing::warn!(
            "UDP receive buffer is {granted} bytes, not {recv_buffer_bytes}: raise \
             net.core.rmem_max (or run with CAP_NET_ADMIN) to absorb longer bursts"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("cannot set UDP receive buffer to {recv_buffer_bytes} bytes: {e}")
        }
    }
    socket.bind(&addr.into())?;
    // Blocking: the ingest thread waits in the kernel (see `ingest`).
    Ok(socket.into())
}

/// The console sink: one line per event on stdout. Ends when the event log
/// is closed, after printing everything queued.
///
/// On a thread of its own, writing each burst of events in large blocks: a
/// slow stdout (a pipe read slowly, a terminal) then blocks only this
/// thread, never the detector's timer or HTTP on the runtime's workers, and
/// a million `joined` lines at start cost a few hundred writes, not a
/// million.
async fn print_events(events: broadcast::Receiver<crate::monitor::Event>) {
    if let Err(e) = tokio::task::spawn_blocking(move || print_event_bursts(events)).await {
        tracing::error!("the console printer failed: {e}");
    }
}

/// Events written under one hold of stdout at most, so that other output
/// (the silent-host report) is not held off for long.
const CONSOLE_BURST: usize = 4096;

fn print_event_bursts(mut events: broadcast::Receiver<crate::monitor::Event>) {
    use broadcast::error::{RecvError, TryRecvError};
    loop {
        let mut next = events.blocking_recv();
        let mut out = io::BufWriter::new(io::stdout().lock());
        for written in 1.. {
            match next {
                // A closed stdout must not crash the server: drop the line.
                Ok(event) => {
                    let _ = writeln!(out, "{}", crate::protocol::Printable(&event));
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "console fell behind; events missed on stdout (still in the API)"
                    );
                }
                Err(RecvError::Closed) => {
                    let _ = out.flush();
                    return;
                }
            }
            if written == CONSOLE_BURST {
                break;
            }
            next = match events.try_recv() {
                Ok(event) => Ok(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
        }
        let _ = out.flush();
    }
}

/// The seed's periodic list of silent hosts, kept as an option.
async fn report_silent(fleet: Arc<Fleet>, every: std::time::Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = timer::now();
        let mut silent: Vec<(String, String)> = fleet.read(|monitor| {
            let registry = monitor.registry();
            registry
                .iter()
                .filter(|(_, h)| matches!(h.state, HostState::Late | HostState::Down))
                .map(|(slot, h)| {
                    let secs = monitor.silent_for(h, now).as_secs_f64();
                    // Bounds for a host not heard since the restart.
                    let silence = match monitor.silent_at_least(h, now) {
                        Some(low) => format!("{:.1}s..{secs:.1}s", low.as_secs_f64()),
                        None => format!("{secs:.1}s"),
                    };
                    (registry.id(slot).to_string(), silence)
                })
                .collect()
        });
        silent.sort_by(|a, b| a.0.cmp(&b.0));
        let list: Vec<String> = silent
            .iter()
            .map(|(id, silence)| format!("{id} ({silence})"))
            .collect();
        // One line per report, never an empty list.
        let line = if list.is_empty() {
            "silent hosts: none".to_string()
        } else {
            format!(
                "silent hosts ({}): {}",
                list.len(),
                crate::protocol::Printable(list.join(", "))
            )
        };
        let _ = writeln!(io::stdout().lock(), "{line}");
    }
}
