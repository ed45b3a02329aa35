//! `GET /api/v1/groups` and the group and dependency facts the other
//! views carry (an event's context). Copied under the fleet's lock,
//! serialised after.

use super::Shared;
use crate::monitor::context::Context;
use crate::monitor::depends::GroupView;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One group as the API shows it.
#[derive(Serialize)]
pub struct GroupJson {
    name: String,
    /// `up` or `down`.
    state: &'static str,
    /// The quorum as configured: one of these two is set.
    min_up: Option<u32>,
    min_up_ratio: Option<f64>,
    /// Members that must be up now (from the quorum and `total`).
    need: u32,
    /// Members up (or late).
    up: u32,
    /// Members counted (not left, not paused).
    total: u32,
    /// Counted members not up, sorted, at most 50.
    missing: Vec<String>,
    /// The labels the group declares.
    labels: BTreeMap<String, String>,
}

impl From<GroupView> for GroupJson {
    fn from(view: GroupView) -> Self {
        Self {
            name: view.name.to_string(),
            state: if view.down { "down" } else { "up" },
            min_up: view.min_up,
            min_up_ratio: view.min_up_ratio,
            need: view.need,
            up: view.up,
            total: view.total,
            missing: view.missing.iter().map(|m| m.to_string()).collect(),
            labels: view
                .labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// `GET /api/v1/groups`: every group, in config order.
pub async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<GroupJson>> {
    let views = shared.fleet.read(|monitor| monitor.groups());
    Json(views.into_iter().map(GroupJson::from).collect())
}

/// What an event adds about groups and dependencies (left out of the
/// event's JSON when it adds nothing).
#[derive(Serialize)]
pub struct ContextJson {
    /// The host or group (`group:NAME`) the host depends on.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    /// Hosts made unreachable behind this event, sorted, at most 50.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<String>,
    /// How many in all.
    #[serde(skip_serializing_if = "is_zero")]
    unreachable_count: usize,
    /// Group events: members up, counted, needed, and the missing ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    up: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    need: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<Vec<String>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ContextJson {
    /// The view of `context`, if it says anything.
    pub fn of(context: Option<&Context>) -> Option<Self> {
        let context = context.filter(|c| !c.is_empty())?;
        let ids = |ids: &[Arc<str>]| ids.iter().map(|i| i.to_string()).collect();
        let group = context.group.as_ref();
        Some(Self {
            parent: context.parent.as_deref().map(String::from),
            unreachable: ids(&context.unreachable),
            unreachable_count: context.unreachable_count,
            up: group.map(|g| g.up),
            total: group.map(|g| g.total),
            need: group.map(|g| g.need),
            missing: group.map(|g| ids(&g.missing)),
        })
    }
}
