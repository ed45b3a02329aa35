//! `GET /api/v1/sinks` (each sink: kind, queue, latest outcomes; no
//! secrets) and `POST /api/v1/test-alert[?sink=NAME]` (a clearly marked
//! test event through one or every sink, answered per sink with whether it
//! was delivered). The test alert is a mutating call: it needs the API token
//! when one is configured.

use super::{Latest, Outcomes, SinkEvent, TestAlert};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

/// How long a test alert may take before the answer says so (a sink that
/// retries may still deliver it later).
const TEST_WAIT: Duration = Duration::from_secs(30);

/// One sink as the API sees it.
pub struct Entry {
    /// Its name.
    pub name: String,
    /// `exec`, `webhook`, `alertmanager`, `email`.
    pub kind: &'static str,
    /// The webhook preset, if any.
    pub preset: Option<&'static str>,
    /// The front of its queue (test alerts go in here).
    pub queue: mpsc::Sender<SinkEvent>,
    /// Its counters and latest outcomes.
    pub outcomes: Outcomes,
}

/// The sinks, for the API.
pub struct Board {
    /// Every sink, in start order.
    pub entries: Vec<Entry>,
    /// The API's bearer token (`api_token`).
    pub api_token: Option<String>,
}

/// The routes, with their own state: merged into the server's router.
pub fn routes<S>(board: Arc<Board>) -> Router<S> {
    Router::new()
        .route("/api/v1/sinks", get(list))
        .route("/api/v1/test-alert", post(test_alert))
        .with_state(board)
}

/// A sink in `GET /api/v1/sinks`.
#[derive(Serialize, Debug)]
pub struct SinkView {
    /// Its name.
    pub name: String,
    /// `exec`, `webhook`, `alertmanager`, `email`.
    pub kind: &'static str,
    /// The webhook preset, if any.
    pub preset: Option<&'static str>,
    /// Events waiting in its queue.
    pub queue: usize,
    /// Its latest delivery and failure, as they are.
    #[serde(flatten)]
    pub latest: Latest,
}

async fn list(State(board): State<Arc<Board>>) -> Json<Vec<SinkView>> {
    let views = board
        .entries
        .iter()
        .map(|e| SinkView {
            name: e.name.clone(),
            kind: e.kind,
            preset: e.preset,
            queue: e.queue.max_capacity() - e.queue.capacity(),
            latest: e.outcomes.latest(),
        })
        .collect();
    Json(views)
}

/// Query of `POST /api/v1/test-alert`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestQuery {
    sink: Option<String>,
}

/// One sink's answer to a test alert.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct TestResult {
    /// The sink.
    pub sink: String,
    /// Whether it was delivered.
    pub delivered: bool,
    /// Why not.
    pub error: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The same check as the API's other mutating calls.
fn authorized(board: &Board, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = board.api_token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"Bearer "));
    match given {
        // Constant time: the comparison must not tell how much matched.
        Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err((StatusCode::UNAUTHORIZED, "wrong token")),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <token>",
        )),
    }
}

async fn test_alert(
    State(board): State<Arc<Board>>,
    query: Result<Query<TestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, message)) = authorized(&board, &headers) {
        return error(status, message);
    }
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "the only parameter is sink=NAME");
    };
    let chosen: Vec<&Entry> = board
        .entries
        .iter()
        .filter(|e| query.sink.as_ref().is_none_or(|s| *s == e.name))
        .collect();
    if let Some(name) = &query.sink
        && chosen.is_empty()
    {
        return error(StatusCode::NOT_FOUND, &format!("no sink named {name:?}"));
    }
    let now = SystemTime::now();
    let mut waits = Vec::new();
    for entry in chosen {
        let (alert, reply) = TestAlert::with_reply(&entry.name, now);
        let sent = entry.queue.try_send(SinkEvent::Test(Arc::new(alert)));
        waits.push((entry.name.clone(), sent.is_ok(), reply));
    }
    let deadline = tokio::time::Instant::now() + TEST_WAIT;
    let mut results = Vec::new();
    for (sink, queued, reply) in waits {
        let outcome = if !queued {
            Err("the sink's queue is full".to_string())
        } else {
            match tokio::time::timeout_at(deadline, reply).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the sink stopped before delivering".to_string()),
                Err(_) => Err(format!("not delivered within {TEST_WAIT:?}")),
            }
        };
        results.push(TestResult {
            sink,
            delivered: outcome.is_ok(),
            error: outcome.err(),
        });
    }
    Json(results).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_view_writes_its_latest_outcomes_flat_in_rfc3339_or_null() {
        let view = SinkView {
            name: "chat".into(),
            kind: "webhook",
            preset: Some("slack"),
            queue: 2,
            latest: Latest {
                success: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
                failure: None,
                error: Some("answered 500".into()),
            },
        };
        assert_eq!(
            serde_json::to_value(&view).expect("serialises"),
            json!({
                "name": "chat",
                "kind": "webhook",
                "preset": "slack",
                "queue": 2,
                "last_success": "2023-11-14T22:13:20.250Z",
                "last_failure": null,
                "last_error": "answered 500",
            })
        );
    }
}
