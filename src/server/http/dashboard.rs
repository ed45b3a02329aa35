//! The live dashboard at `/`: one self-contained page (HTML, CSS and
//! vanilla JavaScript compiled into the binary; no CDN, no build step) that
//! polls the JSON API. The host table is paged, sorted and filtered by the
//! server, so the page stays fast with 100,000 hosts.

use super::Shared;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

const PAGE: &str = include_str!("../../../assets/dashboard.html");

/// The dashboard's route.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is inline or same-origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
