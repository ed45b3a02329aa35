//! The JSON API under `/api/v1` (documented in `docs/API.md`): hosts (with
//! server-side filter, sort and paging, so a dashboard stays fast at 100,000
//! hosts), one host with its recent events and beat history, a summary by
//! state, the event stream with a cursor, and the operator's actions:
//! forget, pause, resume (behind a bearer token when one is configured).
//!
//! Handlers hold the fleet's lock only to pick and copy what they answer
//! with; serialising happens after it is released.

use super::Shared;
use super::views::HostView;
use crate::monitor::{Event, Host, HostState, Monitor, Slot, UnknownHost};
use crate::server::fleet::Fleet;
use crate::server::timer::now;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// Most events one `/api/v1/events` call returns.
pub const MAX_EVENTS: usize = 10_000;
/// Events returned when the call names no limit.
const DEFAULT_EVENTS: usize = 100;
/// How many of a host's latest events its detail shows.
const HOST_EVENTS: usize = 20;

/// The `/api/v1` routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{id}", get(one_host).delete(forget))
        // Pause: maintenance, no alarms until resumed.
        .route(
            "/api/v1/hosts/{id}/pause",
            host_action(|fleet, id| fleet.pause(id, now(), SystemTime::now())),
        )
        // Resume: `up` again, with a fresh timeout.
        .route(
            "/api/v1/hosts/{id}/resume",
            host_action(|fleet, id| fleet.resume(id, now(), SystemTime::now())),
        )
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/events", get(events))
        .route("/api/v1/groups", get(super::groups::list))
}

/// An API error: a status and a one-line message, sent as
/// `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unknown_host(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown host {id:?}"))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text().replace('\n', " "))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The answer to a path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The answer to a method the path does not take.
pub async fn bad_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

/// Query of `GET /api/v1/hosts`. Every field is optional; unknown ones are
/// refused, so a typo is an error rather than a silently ignored filter.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Comma-separated states to keep.
    state: Option<String>,
    /// Keep ids containing this (case-insensitive).
    q: Option<String>,
    /// Sort key, `-` in front for descending.
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A sort order of the host list.
#[derive(Clone, Copy)]
enum SortKey {
    Id,
    State,
    Addr,
    LastSeen,
    Since,
    Beats,
    Losses,
    Timeout,
}

impl SortKey {
    const NAMES: [(&'static str, SortKey); 8] = [
        ("id", SortKey::Id),
        ("state", SortKey::State),
        ("addr", SortKey::Addr),
        ("last_seen", SortKey::LastSeen),
        ("since", SortKey::Since),
        ("beats", SortKey::Beats),
        ("losses", SortKey::Losses),
        ("timeout", SortKey::Timeout),
    ];

    fn parse(name: &str) -> Option<SortKey> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, key)| key)
    }

    /// The value of this key for the host in `slot` (ids are compared
    /// separately).
    fn value(self, monitor: &Monitor, slot: Slot, host: &Host) -> SortValue {
        match self {
            SortKey::Id => SortValue::Number(0),
            SortKey::State => SortValue::Number(u64::from(state_rank(host.state))),
            SortKey::Addr => SortValue::Addr(monitor.registry().addr(slot)),
            SortKey::LastSeen => SortValue::Number(host.last_seen),
            SortKey::Since => SortValue::Number(u64::from(host.since_secs)),
            SortKey::Beats => SortValue::Number(u64::from(host.beats)),
            SortKey::Losses => SortValue::Number(u64::from(host.losses)),
            SortKey::Timeout => SortValue::Number(
                u64::try_from(monitor.timeout_of(slot).as_millis()).unwrap_or(u64::MAX),
            ),
        }
    }
}

/// A host's value for the sort key: all keys but the address are numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SortValue {
    Number(u64),
    Addr(std::net::SocketAddr),
}

/// A host that matched the filter: what sorting and paging need. Its id
/// is `ids[id]` of the listing's one buffer of ids (one allocation per
/// listing, not one per host).
struct Candidate {
    value: SortValue,
    id: std::ops::Range<usize>,
    slot: Slot,
}

/// Hosts per hold of the fleet's lock while listing: a full list of a
/// million hosts is picked and built in chunks, so ingest gets the lock
/// between them instead of waiting seconds.
const LIST_CHUNK: usize = 8192;

fn state_rank(state: HostState) -> u8 {
    match state {
        HostState::Down => 0,
        HostState::Late => 1,
        HostState::Unreachable => 2,
        HostState::Up => 3,
        HostState::Maintenance => 3,
        HostState::Paused => 4,
        HostState::Left => 5,
    }
}

/// Parses `state=up,late` into a filter over [`HostState::index`].
fn parse_states(list: &str) -> Result<[bool; HostState::ALL.len()], ApiError> {
    let mut keep = [false; HostState::ALL.len()];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let state = HostState::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state: unknown state {name:?} (expected up, late, down, left, paused or maintenance)"
            ))
        })?;
        keep[state.index()] = true;
    }
    if keep.iter().all(|k| !k) {
        return Err(ApiError::bad_request("state: empty list"));
    }
    Ok(keep)
}

/// `GET /api/v1/hosts`: a JSON array (always), sorted by id unless `sort`
/// says otherwise; `X-Total-Count` tells how many matched before paging.
async fn list_hosts(
    State(shared): State<Arc<Shared>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let (wanted, rest) =
        super::label_filter::split(raw.as_deref()).map_err(ApiError::bad_request)?;
    let Query(query) = Query::<ListQuery>::try_from_uri(&rest)?;
    let keep = query.state.as_deref().map(parse_states).transpose()?;
    let (key, descending) = match query.sort.as_deref() {
        None | Some("") => (SortKey::Id, false),
        Some(sort) => {
            let (name, descending) = match sort.strip_prefix('-') {
                Some(name) => (name, true),
                None => (sort, false),
            };
            let key = SortKey::parse(name).ok_or_else(|| {
                let names: Vec<&str> = SortKey::NAMES.iter().map(|(n, _)| *n).collect();
                ApiError::bad_request(format!(
                    "sort: unknown key {name:?} (expected one of {}, optionally with a leading -)",
                    names.join(", ")
                ))
            })?;
            (key, descending)
        }
    };
    let needle = query.q.as_deref().unwrap_or("").to_lowercase();
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(usize::MAX);
    // 1. The matching hosts, a chunk of slots per hold of the lock.
    let mut matches = Vec::new();
    let mut ids = String::new();
    let mut from: Slot = 0;
    loop {
        let (to, end) = shared.fleet.read(|monitor| {
            let registry = monitor.registry();
            let to = registry
                .slot_end()
                .min(from.saturating_add(LIST_CHUNK as Slot));
            for slot in from..to {
                let Some(host) = registry.try_get(slot) else {
                    continue;
                };
                let id = registry.id(slot);
                if keep.is_none_or(|keep| keep[host.state.index()])
                    && (needle.is_empty() || contains_lowercase(id, &needle))
                    && (wanted.is_empty() || monitor.labels_of(slot).contains_all(&wanted))
                {
                    let value = key.value(monitor, slot, host);
                    let start = ids.len();
                    ids.push_str(id);
                    matches.push(Candidate {
                        value,
                        id: start..ids.len(),
                        slot,
                    });
                }
            }
            (to, registry.slot_end())
        });
        if to >= end {
            break;
        }
        from = to;
    }
    // 2. The page, off the lock. Ids are unique: the tie-break makes every
    // order total and stable across calls, which paging needs.
    let id = |c: &Candidate| &ids[c.id.clone()];
    let order = |a: &Candidate, b: &Candidate| {
        let by_key = match key {
            SortKey::Id => id(a).cmp(id(b)),
            _ => a.value.cmp(&b.value),
        };
        let by_key = if descending { by_key.reverse() } else { by_key };
        by_key.then_with(|| id(a).cmp(id(b)))
    };
    let total = matches.len();
    let end = offset.saturating_add(limit).min(total);
    if end < total {
        matches.select_nth_unstable_by(end, order);
        matches.truncate(end);
    }
    matches.sort_unstable_by(order);
    let picked = matches.get(offset..).unwrap_or_default();
    // 3. Their views, streamed (see `stream_views`). One forgotten and back
    // in a slot not yet scanned was picked twice, so `total` counts it
    // twice, and only its current slot gets a view.
    let picked = picked.iter().map(|c| (c.slot, c.id.clone())).collect();
    let body = super::views::stream_views(shared, picked, ids);
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(response)
}

fn contains_lowercase(id: &str, needle: &str) -> bool {
    if id.is_ascii() {
        // The common case, without allocating per host.
        id.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        id.to_lowercase().contains(needle)
    }
}

/// One event as the API shows it.
#[derive(Serialize)]
pub struct EventView {
    /// Position in the event stream: the cursor for `since`.
    id: u64,
    /// RFC 3339.
    at: String,
    kind: &'static str,
    host: String,
    addr: String,
    /// How long the host had been silent when this happened: an upper
    /// bound when `silent_seconds_at_least` is set.
    silent_seconds: f64,
    /// Set when the silence is known only within bounds (not heard since
    /// the server restarted): at least this; null otherwise.
    silent_seconds_at_least: Option<f64>,
    /// Groups and dependencies: a parent, hosts unreachable behind it, a
    /// group's quorum and missing members (left out when none applies).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    context: Option<super::groups::ContextJson>,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        Self {
            id: event.id,
            at: humantime::format_rfc3339_millis(event.at).to_string(),
            kind: event.kind.as_str(),
            host: event.host.to_string(),
            addr: event.addr.to_string(),
            silent_seconds: event.silent_for.as_secs_f64(),
            silent_seconds_at_least: event.silent_at_least.map(|d| d.as_secs_f64()),
            context: super::groups::ContextJson::of(event.context.as_deref()),
        }
    }
}

/// Which of a host's latest beats arrived, for its chart.
#[derive(Serialize)]
struct BeatHistory {
    /// When the client's current run started (RFC 3339), from the high half
    /// of its sequence numbers.
    run_started: String,
    /// The latest beat counter of the run (the low half of the seq).
    latest: u32,
    /// Beats `latest - received.len() + 1 ..= latest`, oldest first: true
    /// when it arrived. Starts at the oldest beat received among the
    /// latest 64.
    received: Vec<bool>,
}

impl BeatHistory {
    fn of(host: &Host) -> Option<BeatHistory> {
        if host.legacy() {
            return None; // the seed's beats carry no sequence number
        }
        let latest = (host.seq & 0xffff_ffff) as u32;
        let run_secs = host.seq >> 32;
        // The window starts at the oldest beat received in it: an unset bit
        // older than that may be a loss, or a beat from before the server
        // knew this run (it joined mid-run); showing it as lost would lie.
        let window = (u64::from(latest) + 1).min(64) as u32;
        let in_window = if window == 64 {
            host.recent_seqs
        } else {
            host.recent_seqs & ((1 << window) - 1)
        };
        let window = 64 - in_window.leading_zeros();
        let received = (0..window)
            .rev()
            .map(|i| host.recent_seqs >> i & 1 == 1)
            .collect();
        Some(BeatHistory {
            run_started: humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(run_secs),
            )
            .to_string(),
            latest,
            received,
        })
    }
}

/// `GET /api/v1/hosts/{id}`: the host's fields, its latest events and beat
/// history.
#[derive(Serialize)]
struct HostDetail {
    #[serde(flatten)]
    host: HostView,
    /// Its latest events, oldest first.
    recent_events: Vec<EventView>,
    /// Null for legacy hosts.
    beat_history: Option<BeatHistory>,
}

async fn one_host(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<HostDetail>, ApiError> {
    let now = now();
    let (host, beat_history) = shared.fleet.read(|monitor| {
        let registry = monitor.registry();
        let slot = registry
            .find(&id)
            .ok_or_else(|| ApiError::unknown_host(&id))?;
        Ok::<_, ApiError>((
            HostView::new(monitor, slot, now),
            BeatHistory::of(registry.get(slot)),
        ))
    })?;
    let recent_events = shared
        .fleet
        .events()
        .recent_of(&id, HOST_EVENTS)
        .iter()
        .map(EventView::from)
        .collect();
    Ok(Json(HostDetail {
        host,
        recent_events,
        beat_history,
    }))
}

/// `GET /api/v1/summary`: how many hosts are in each state.
#[derive(Serialize)]
struct Summary {
    hosts: u64,
    up: u64,
    late: u64,
    down: u64,
    left: u64,
    paused: u64,
    unreachable: u64,
    maintenance: u64,
}

async fn summary(State(shared): State<Arc<Shared>>) -> Json<Summary> {
    let counts = shared.fleet.read(Monitor::counts);
    let n = |state: HostState| counts[state.index()];
    Json(Summary {
        hosts: counts.iter().sum(),
        up: n(HostState::Up),
        late: n(HostState::Late),
        down: n(HostState::Down),
        left: n(HostState::Left),
        paused: n(HostState::Paused),
        unreachable: n(HostState::Unreachable),
        maintenance: n(HostState::Maintenance),
    })
}

/// Query of `GET /api/v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Return events after this id; without it, the latest `limit`.
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/events`: events after the cursor, oldest first.
async fn events(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_EVENTS}"
        )));
    }
    let events = match query.since {
        Some(cursor) => shared.fleet.events().since(cursor, limit),
        None => shared.fleet.events().recent(limit),
    };
    Ok(Json(events.iter().map(EventView::from).collect()))
}

/// Checks the bearer token of a mutating call, when one is configured.
pub(super) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = shared.api_token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing token: send Authorization: Bearer <token>",
            )
        })?
        .as_bytes();
    let given = given
        .strip_prefix(b"Bearer ")
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "expected a Bearer token"))?;
    // Constant time: the comparison must not tell how much of a guess matched.
    if bool::from(given.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token"))
    }
}

/// The host's view after an action, for the response.
fn view_of(shared: &Shared, id: &str) -> Result<HostView, ApiError> {
    shared.fleet.read(|monitor| {
        let registry = monitor.registry();
        let slot = registry
            .find(id)
            .ok_or_else(|| ApiError::unknown_host(id))?;
        Ok(HostView::new(monitor, slot, now()))
    })
}

/// `POST /api/v1/hosts/{id}/ACTION`: authorizes the request, applies
/// `action` to host `id` and answers with the host's view after it.
fn host_action(action: fn(&Fleet, &str) -> Result<(), UnknownHost>) -> MethodRouter<Arc<Shared>> {
    post(
        move |State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap| async move {
            authorize(&shared, &headers)?;
            action(&shared.fleet, &id).map_err(|UnknownHost| ApiError::unknown_host(&id))?;
            view_of(&shared, &id).map(Json)
        },
    )
}

/// `DELETE /api/v1/hosts/{id}`: forget the host (it joins anew if it beats).
async fn forget(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&shared, &headers)?;
    shared
        .fleet
        .forget(&id, now(), SystemTime::now())
        .map_err(|UnknownHost| ApiError::unknown_host(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lists_parse_or_name_the_bad_state() {
        let keep = parse_states("down, late").expect("valid");
        assert!(keep[HostState::Down.index()] && keep[HostState::Late.index()]);
        assert!(!keep[HostState::Up.index()]);
        let err = parse_states("up,sleepy").expect_err("bad state");
        assert!(err.message.contains("sleepy"), "{}", err.message);
        assert!(parse_states(",").is_err());
    }

    #[test]
    fn id_filter_is_case_insensitive_substring() {
        assert!(contains_lowercase("Web-01", "web"));
        assert!(contains_lowercase("db-web-9", "web-9"));
        assert!(!contains_lowercase("db-1", "web"));
        assert!(contains_lowercase("Ünï-1", "ünï"));
    }

    fn host_with(seq: u64, recent_seqs: u64) -> Host {
        let mut host = crate::monitor::testing::host();
        (host.seq, host.recent_seqs) = (seq, recent_seqs);
        host
    }

    #[test]
    fn beat_history_covers_the_known_part_of_the_window() {
        let run = 1_800_000_000u64 << 32;
        let history = |seq, bits| BeatHistory::of(&host_with(run + seq, bits)).expect("v1 host");
        // From the start of a run: beats 0..=4, beat 2 lost.
        let h = history(4, 0b11011);
        assert_eq!(
            (h.latest, h.received),
            (4, vec![true, true, false, true, true])
        );
        // Joined mid-run at beat 498: nothing before it is shown as lost.
        let h = history(500, 0b101);
        assert_eq!(h.received, [true, false, true]);
        // A full window.
        assert_eq!(history(1000, u64::MAX).received.len(), 64);
        assert_eq!(history(1000, 1 << 63 | 1).received.len(), 64);
        assert_eq!(h.run_started, "2027-01-15T08:00:00Z");
        let mut legacy = host_with(0, 0);
        legacy.set_legacy(true);
        assert!(BeatHistory::of(&legacy).is_none());
    }
}
