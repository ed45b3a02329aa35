//! HTTP: `/healthz` and the JSON host list. Reads copy what they need under
//! a short lock and serialise outside it, so a slow client never holds up
//! ingest.

use super::Shared;
use super::registry::Host;
use crate::protocol::BootId;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// The routes, over the server's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/hosts", get(hosts))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    {
        let detector = shared.detector.lock().expect("detector lock");
        shared.metrics.sync_detection(&detector.totals());
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        shared.metrics.encode(),
    )
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    hosts: usize,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Health> {
    let hosts = shared
        .detector
        .lock()
        .expect("detector lock")
        .registry()
        .len();
    Json(Health {
        status: "ok",
        hosts,
    })
}

/// One host as the API shows it.
#[derive(Serialize)]
pub struct HostView {
    id: String,
    addr: String,
    state: &'static str,
    /// RFC 3339: when the host entered its current state.
    since: String,
    /// RFC 3339: when its latest beat arrived.
    last_seen: String,
    silent_seconds: f64,
    timeout_seconds: f64,
    /// Declared by the client; null when unknown (legacy beats).
    interval_seconds: Option<f64>,
    beats: u64,
    losses: u64,
    boot_id: Option<String>,
    legacy: bool,
    /// `fixed` or `phi`.
    detector: &'static str,
    /// phi now (phi detector only).
    phi: Option<f64>,
    /// Why the detector judges the host as it does, in one line.
    why: String,
    /// Down repeatedly within the flap window; alerts are held back.
    flapping: bool,
    /// Mean time per beat, from arrivals (seconds).
    interval_mean_seconds: f64,
    /// Its standard deviation (seconds).
    interval_std_seconds: f64,
    /// Recent chance a beat is lost after one arrived (0 to 1).
    loss_rate: f64,
    /// Recent chance a beat is lost after one was lost (bursts).
    burst_loss_rate: f64,
    duplicates: u32,
    reordered: u32,
    /// Receive minus send time (clock offset plus network delay), seconds;
    /// null until a beat carried a send time.
    clock_offset_seconds: Option<f64>,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

async fn hosts(State(shared): State<Arc<Shared>>) -> Json<Vec<HostView>> {
    let now = Instant::now();
    let mut views: Vec<HostView> = {
        let detector = shared.detector.lock().expect("detector lock");
        detector
            .registry()
            .iter()
            .map(|host: &Host| HostView {
                id: host.id.to_string(),
                addr: host.addr.to_string(),
                state: host.state.as_str(),
                since: rfc3339(host.since),
                last_seen: rfc3339(host.last_seen_wall),
                silent_seconds: now.saturating_duration_since(host.last_seen).as_secs_f64(),
                timeout_seconds: detector.timeout_for(host).as_secs_f64(),
                interval_seconds: (host.interval_ms > 0)
                    .then(|| f64::from(host.interval_ms) / 1000.0),
                beats: host.beats,
                losses: host.losses,
                boot_id: (host.boot_id != [0; 16]).then(|| BootId(&host.boot_id).to_string()),
                legacy: host.legacy,
                detector: detector.detector_kind(host).as_str(),
                phi: detector.explain(host, now).0,
                why: detector.explain(host, now).1,
                flapping: host.flap.flapping,
                interval_mean_seconds: f64::from(host.stats.interval_mean_ms) / 1000.0,
                interval_std_seconds: f64::from(host.stats.interval_std_ms()) / 1000.0,
                loss_rate: f64::from(host.stats.loss_rate),
                burst_loss_rate: f64::from(host.stats.burst_loss_rate),
                duplicates: host.stats.duplicates,
                reordered: host.stats.reordered,
                clock_offset_seconds: host.stats.clock_offset().map(|ms| f64::from(ms) / 1000.0),
            })
            .collect()
    };
    views.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Json(views)
}
