//! HTTP: `/healthz`, `/metrics`, the JSON API ([`api`], its JSON shapes in
//! [`views`]) and the dashboard ([`dashboard`]) at `/`. Reads copy what
//! they need through the [`Fleet`] (a short hold of its lock) and serialise
//! outside it, so a slow client never holds up ingest.

pub mod api;
pub mod dashboard;
pub mod groups;
pub mod label_filter;
pub mod maintenance;
pub mod views;

use super::exposition;
use super::fleet::Fleet;
use super::metrics::Metrics;
use super::persist::StoreHealth;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

/// What the HTTP handlers share.
pub struct Shared {
    /// The monitor, behind its one lock.
    pub fleet: Arc<Fleet>,
    /// Every exported metric.
    pub metrics: Arc<Metrics>,
    /// Whether checkpoints are being written.
    pub store: Arc<StoreHealth>,
    /// Bearer token of the API's mutating calls (`ServerConfig::api_token`).
    pub api_token: Option<String>,
}

/// The routes, over the server's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(dashboard::routes())
        .merge(maintenance::routes())
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::bad_method)
        .with_state(shared)
}

/// Serves OpenMetrics to clients that ask for it (Prometheus does), and the
/// classic text format to everyone else (`promtool check metrics`, curl).
async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    // Under the lock: see `Metrics::sync_detection`.
    shared.fleet.read(|monitor| {
        shared.metrics.sync_detection(&monitor.totals());
        shared.metrics.probe.sync(&monitor.probe_totals());
    });
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, exposition::OPENMETRICS)],
            shared.metrics.encode(),
        )
    } else {
        (
            [(header::CONTENT_TYPE, exposition::CLASSIC)],
            shared.metrics.encode_classic(),
        )
    }
}

#[derive(Serialize)]
struct Health {
    /// `ok`, or `degraded` while the server monitors but cannot persist.
    status: &'static str,
    hosts: usize,
    store: StoreView,
}

#[derive(Serialize)]
struct StoreView {
    /// True while checkpoints are written.
    ok: bool,
    path: String,
    /// Why writes fail (full or read-only disk), while they do.
    error: Option<String>,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Health> {
    let hosts = shared.fleet.len();
    let store = StoreView {
        ok: shared.store.is_ok(),
        path: shared.store.path().display().to_string(),
        error: shared.store.error(),
    };
    Json(Health {
        status: if store.ok { "ok" } else { "degraded" },
        hosts,
        store,
    })
}
