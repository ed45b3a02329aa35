//! `/api/v1/maintenance`: open a window over a host selection (`POST`),
//! list the open ones (`GET`), end one early (`DELETE .../{id}`). The
//! mutating calls take the API token like every other.

use super::Shared;
use super::api::{ApiError, authorize};
use crate::labels::Labels;
use crate::monitor::maintenance::{Request, Source, Window};
use crate::select::Selection;
use crate::server::timer::now;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Longest window the API opens (a year): beyond that, use pause.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The maintenance routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/maintenance", get(list).post(open))
        .route("/api/v1/maintenance/{id}", delete(end))
}

/// Body of `POST /api/v1/maintenance`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    networks: Vec<IpNet>,
    /// How long, as `2h`, `90m`.
    #[serde(rename = "for")]
    length: Option<String>,
    /// Until when, RFC 3339 with any offset.
    until: Option<String>,
    #[serde(default)]
    reason: String,
}

/// When a window asked for as `for` or `until` ends, from `wall`.
fn end_of(body: &OpenBody, wall: SystemTime) -> Result<SystemTime, ApiError> {
    let until = match (&body.length, &body.until) {
        (Some(length), None) => {
            let length = crate::duration::parse(length)
                .map_err(|e| ApiError::bad_request(format!("for: {e}")))?;
            wall + length
        }
        (None, Some(until)) => {
            let at: jiff::Timestamp = until
                .parse()
                .map_err(|e| ApiError::bad_request(format!("until: not an RFC 3339 time ({e})")))?;
            SystemTime::from(at)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"for\" and \"until\"",
            ));
        }
    };
    match until.duration_since(wall) {
        Ok(ahead) if !ahead.is_zero() && ahead <= MAX_WINDOW => Ok(until),
        Ok(ahead) if !ahead.is_zero() => Err(ApiError::bad_request(
            "the window is longer than a year: pause the hosts instead",
        )),
        _ => Err(ApiError::bad_request(
            "the window's end is not in the future",
        )),
    }
}

/// `POST /api/v1/maintenance`: 201 with the window (its `hosts`: those it
/// put in maintenance).
async fn open(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<OpenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Window>), ApiError> {
    authorize(&shared, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text().replace('\n', " ")))?;
    let wall = SystemTime::now();
    let until = end_of(&body, wall)?;
    crate::protocol::maintenance::check_reason(&body.reason)
        .map_err(|e| ApiError::bad_request(format!("reason: {e}")))?;
    let selection = Selection {
        hosts: body.hosts,
        labels: body.labels,
        networks: body.networks,
    };
    if selection.is_everything() {
        return Err(ApiError::bad_request(
            "select hosts with \"hosts\", \"labels\" or \"networks\" (\"hosts\": [\"*\"] for all)",
        ));
    }
    let selector = selection
        .compile()
        .map_err(|e| ApiError::bad_request(format!("hosts: {e}")))?;
    let request = Request {
        source: Source::Api,
        reason: body.reason,
        until,
        selection,
        schedule: None,
    };
    let window = shared
        .fleet
        .open_window(request, &selector, now(), wall)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(window)))
}

/// `GET /api/v1/maintenance`: the open windows, oldest first.
async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<Window>> {
    let wall = SystemTime::now();
    let mut windows = shared.fleet.windows();
    windows.retain(|w| w.until > wall);
    Json(windows)
}

/// `DELETE /api/v1/maintenance/{id}`: ends the window now; its hosts are
/// judged again, with a fresh timeout.
async fn end(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Window>, ApiError> {
    authorize(&shared, &headers)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no maintenance window {id:?}"),
        )
    };
    let number: u64 = id.parse().map_err(|_| unknown())?;
    match shared.fleet.end_window(number, now(), SystemTime::now()) {
        Ok(window) => Ok(Json(window)),
        Err(_) => Err(unknown()),
    }
}
