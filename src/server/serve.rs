//! Serving HTTP connections within bounds. Every connection costs a file
//! descriptor, and the process shares one descriptor limit with what
//! matters more (the store, a sink's connections, a hook's pipes), so:
//!
//! - at most `http_max_connections` are open at once; further clients wait
//!   in the kernel's accept queue, which holds no descriptor of ours;
//! - a client must send its request headers within `http_header_timeout`,
//!   and a kept-alive connection idle for as long is closed (hyper's header
//!   read timeout runs from the moment the connection waits for a request),
//!   so a slowloris client or a pile of idle connections frees its slots;
//! - the soft descriptor limit is raised to the hard one at start, and the
//!   connection cap is kept 256 descriptors under it.
//!
//! Ingest and the detector hold their socket and threads from the start
//! and open nothing later, so no number of HTTP clients can stop them.

use crate::config::ServerConfig;
use crate::ratelimit::RateLimit;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Descriptors kept free for everything but HTTP connections.
const RESERVED_FDS: u64 = 256;
/// Pause after a failed accept (e.g. the descriptor limit), so that an
/// error that repeats does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// The connection cap for `configured` under a descriptor limit of `fds`:
/// at least 16, so that a tiny limit still leaves the API usable.
pub fn connection_cap(configured: usize, fds: u64) -> usize {
    let room = fds.saturating_sub(RESERVED_FDS).max(16);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `app` on `listener` until `stop`, then lets open connections
/// finish their requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    config: &ServerConfig,
    stop: CancellationToken,
) -> io::Result<()> {
    let fds = match raise_fd_limit() {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            1024
        }
    };
    let cap = connection_cap(config.http_max_connections, fds);
    if cap < config.http_max_connections {
        tracing::warn!(
            cap,
            fds,
            "http_max_connections lowered to leave {RESERVED_FDS} of the {fds} file descriptors free"
        );
    }
    if !config.http.ip().is_loopback() && config.api_token.is_none() {
        tracing::warn!(
            http = %config.http,
            "the API is reachable beyond this machine and has no api_token: anyone who reaches it can pause and forget hosts"
        );
    }
    let policy = Arc::new(super::site::SitePolicy::new(&config.http_hosts));
    let app = app.layer(axum::middleware::from_fn_with_state(
        policy,
        super::site::check,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.http_header_timeout);
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut error_log = RateLimit::new(Duration::from_secs(60));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    if let Some(suppressed) = error_log.check(std::time::Instant::now()) {
                        tracing::warn!(suppressed, "http accept failed: {e}");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or times out is no error of ours.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_free() {
        assert_eq!(connection_cap(512, 1_048_576), 512);
        assert_eq!(connection_cap(512, 1024), 512);
        assert_eq!(connection_cap(512, 600), 344);
        assert_eq!(connection_cap(512, 100), 16);
    }
}
