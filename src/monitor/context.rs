//! What groups and dependencies add to an event: the parent of an
//! `unreachable` host, the hosts unreachable behind a `down` one, a
//! group's quorum and missing members, a member's own severity. Plain
//! data, carried by the event so a sink never asks the monitor.

use std::fmt;
use std::sync::Arc;

/// Most host ids an event lists (unreachable hosts, missing members); the
/// counts are always whole.
pub const MAX_LISTED: usize = 50;

/// The extra facts of one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    /// The host or group this host depends on (`group:NAME` for a group).
    pub parent: Option<Arc<str>>,
    /// Hosts that became `unreachable` behind this change (a parent's
    /// `down`, a group's `group-down`), at most [`MAX_LISTED`], sorted.
    pub unreachable: Vec<Arc<str>>,
    /// How many hosts became unreachable behind it, all of them.
    pub unreachable_count: usize,
    /// For `group-down` / `group-recovered`: the group.
    pub group: Option<GroupFacts>,
    /// The severity a member's `down` alert carries (`member_severity` of
    /// its group), if one is configured.
    pub severity: Option<Arc<str>>,
    /// The host is in a declared group or dependency, or is a parent: the
    /// mass-silence gate leaves its `down` alone (docs/ALERTS.md).
    pub declared: bool,
}

/// A group as a `group-down` / `group-recovered` event reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupFacts {
    /// Members `up` (or `late`).
    pub up: u32,
    /// Members counted (not `left`, not paused).
    pub total: u32,
    /// The quorum: fewest members `up` for the group to be `up`.
    pub need: u32,
    /// Members counted and not up, at most [`MAX_LISTED`], sorted.
    pub missing: Vec<Arc<str>>,
}

impl Context {
    /// True when it says nothing an event would show.
    pub fn is_empty(&self) -> bool {
        self.parent.is_none()
            && self.unreachable_count == 0
            && self.group.is_none()
            && self.severity.is_none()
    }
}

impl fmt::Display for Context {
    /// The console line's tail: ` parent=sw-1`, ` unreachable=10:a,b,…`,
    /// ` up=2/6 need=3 missing=a,b`; empty when nothing applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(group) = &self.group {
            write!(f, " up={}/{} need={}", group.up, group.total, group.need)?;
            if !group.missing.is_empty() {
                write!(f, " missing={}", join(&group.missing))?;
            }
        }
        if let Some(parent) = &self.parent {
            write!(f, " parent={parent}")?;
        }
        if self.unreachable_count > 0 {
            write!(f, " unreachable={}", self.unreachable_count)?;
            if !self.unreachable.is_empty() {
                write!(f, ":{}", join(&self.unreachable))?;
            }
        }
        if let Some(severity) = &self.severity {
            write!(f, " severity={severity}")?;
        }
        Ok(())
    }
}

/// Ids joined with commas.
pub fn join(ids: &[Arc<str>]) -> String {
    ids.iter().map(|id| &**id).collect::<Vec<_>>().join(",")
}
