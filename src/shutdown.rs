//! Signals to shutdown: SIGINT or SIGTERM cancels a token; a second signal
//! exits at once, for when a clean stop itself hangs.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Returns a token cancelled by the first SIGINT/SIGTERM; a second signal
/// exits the process immediately with status 130.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down (signal again to exit at once)");
        cancel.cancel();
        signal().await;
        std::process::exit(130);
    });
    token
}
