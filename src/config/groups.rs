//! `[[server.groups]]` and `[[server.dependencies]]`: redundancy groups
//! and what depends on what, checked and compiled into the core's
//! [`Spec`] (docs/GROUPS.md). A cycle among host parents is refused here,
//! at start, in one line.

use super::{Error, invalid};
use crate::labels::Labels;
use crate::monitor::groups::{DependencySpec, GroupSpec, Parent, Quorum, Spec};
use crate::select::Selection;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One redundancy group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Its name, unique: in events, the `GroupDown` alert (`group`
    /// label) and the API.
    pub name: String,
    /// Its members, by id glob, label or network (`{ hosts = ["web-*"] }`).
    pub members: Selection,
    /// The group is `up` while at least this many members are up (all
    /// of them while fewer are counted: docs/GROUPS.md). Give this or
    /// `min_up_ratio`.
    pub min_up: Option<u32>,
    /// The group is `up` while at least this share (0 < r ≤ 1) of its
    /// counted members are up, rounded up.
    pub min_up_ratio: Option<f64>,
    /// Labels the group declares: they go on its `GroupDown` alert (route
    /// on them). Default: none.
    pub labels: Labels,
    /// A `severity` label for its members' own `HostDown` alerts (e.g.
    /// `"ticket"`, while the group's alert pages). Unset: none is added.
    pub member_severity: Option<String>,
}

/// One dependency: the selected hosts depend on a host or a group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyConfig {
    /// The dependent hosts, by id glob, label or network. A host never
    /// depends on itself (a rack's switch may match its rack's rule).
    pub dependents: Selection,
    /// The id of the host they depend on. Give this or `depends_on_group`.
    pub depends_on: Option<String>,
    /// The name of the group they depend on.
    pub depends_on_group: Option<String>,
}

/// Checks the groups and dependencies and compiles them.
pub fn compile(groups: &[GroupConfig], dependencies: &[DependencyConfig]) -> Result<Spec, Error> {
    let mut spec = Spec::default();
    let mut index = HashMap::new();
    for group in groups {
        let name = &group.name;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "groups.name",
                format!("{name:?}: must be non-empty, without spaces"),
            ));
        }
        if index
            .insert(name.clone(), spec.groups.len() as u16)
            .is_some()
        {
            return Err(invalid(
                "groups.name",
                format!("group {name:?} is declared twice"),
            ));
        }
        let quorum = match (group.min_up, group.min_up_ratio) {
            (Some(n), None) if n >= 1 => Quorum::MinUp(n),
            (None, Some(r)) if r > 0.0 && r <= 1.0 => Quorum::Ratio(r),
            _ => {
                return Err(invalid(
                    "groups.min_up",
                    format!(
                        "group {name:?}: give min_up (at least 1) or min_up_ratio (0 < r <= 1), one of them"
                    ),
                ));
            }
        };
        if group
            .member_severity
            .as_deref()
            .is_some_and(|s| crate::labels::check_value("severity", s).is_err() || s.is_empty())
        {
            return Err(invalid(
                "groups.member_severity",
                format!("group {name:?}: must be a non-empty label value"),
            ));
        }
        let members = group
            .members
            .compile()
            .map_err(|e| invalid("groups.members", format!("group {name:?}: {e}")))?;
        spec.groups.push(GroupSpec {
            name: name.as_str().into(),
            members,
            quorum,
            labels: group.labels.clone(),
            member_severity: group.member_severity.as_deref().map(Into::into),
        });
    }
    for dependency in dependencies {
        let parent = match (&dependency.depends_on, &dependency.depends_on_group) {
            (Some(host), None) if !host.is_empty() => Parent::Host(host.as_str().into()),
            (None, Some(group)) => Parent::Group(*index.get(group).ok_or_else(|| {
                invalid(
                    "dependencies.depends_on_group",
                    format!("no group is named {group:?}"),
                )
            })?),
            _ => {
                return Err(invalid(
                    "dependencies.depends_on",
                    "give depends_on (a host id) or depends_on_group (a group name), one of them",
                ));
            }
        };
        let dependents = dependency
            .dependents
            .compile()
            .map_err(|e| invalid("dependencies.dependents", e.to_string()))?;
        spec.dependencies
            .push(DependencySpec { dependents, parent });
    }
    if let Some(cycle) = find_cycle(&spec) {
        return Err(invalid(
            "dependencies",
            format!("cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(spec)
}

/// A cycle among host parents, as the ids around it: host `P` depends on
/// host `Q` when the first rule whose id globs select `P` (other than
/// `P`'s own) names `Q`. Labels and networks are not known before hosts
/// beat, so only ids are followed; the core refuses any cycle they close
/// at run time as well (the later host gets no parent).
fn find_cycle(spec: &Spec) -> Option<Vec<String>> {
    let parents: Vec<&str> = spec
        .dependencies
        .iter()
        .filter_map(|d| match &d.parent {
            Parent::Host(id) => Some(&**id),
            Parent::Group(_) => None,
        })
        .collect();
    let parent_of = |id: &str| {
        spec.dependencies.iter().find_map(|d| match &d.parent {
            Parent::Host(p) if **p != *id && d.dependents.matches_id(id) => Some(&**p),
            _ => None,
        })
    };
    for &start in &parents {
        let mut path = vec![start];
        let mut at = start;
        while let Some(next) = parent_of(at) {
            if let Some(i) = path.iter().position(|&p| p == next) {
                let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
                cycle.push(next.to_string());
                return Some(cycle);
            }
            path.push(next);
            at = next;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            groups: Vec<GroupConfig>,
            #[serde(default)]
            dependencies: Vec<DependencyConfig>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        compile(&file.groups, &file.dependencies).map_err(|e| e.to_string())
    }

    #[test]
    fn a_rack_and_a_pool_compile() {
        let spec = parse(
            r#"
            [[groups]]
            name = "web"
            members = { hosts = ["web-*"] }
            min_up = 3
            labels = { team = "web" }
            member_severity = "ticket"
            [[dependencies]]
            dependents = { hosts = ["rack4-*"] }
            depends_on = "rack4-sw"
            [[dependencies]]
            dependents = { hosts = ["rack4-sw"] }
            depends_on = "core-router"
            [[dependencies]]
            dependents = { hosts = ["lb-*"] }
            depends_on_group = "web"
            "#,
        )
        .expect("valid");
        assert_eq!(spec.groups[0].quorum, Quorum::MinUp(3));
        assert_eq!(spec.dependencies[2].parent, Parent::Group(0));
    }

    #[test]
    fn bad_groups_and_cycles_are_one_line_errors() {
        let cases = [
            ("[[groups]]\nname = \"a\"\n", "min_up"),
            (
                "[[groups]]\nname = \"a\"\nmin_up = 1\nmin_up_ratio = 0.5\n",
                "one of them",
            ),
            (
                "[[groups]]\nname = \"a\"\nmin_up_ratio = 1.5\n",
                "min_up_ratio",
            ),
            (
                "[[groups]]\nname = \"a\"\nmin_up = 1\n[[groups]]\nname = \"a\"\nmin_up = 1\n",
                "twice",
            ),
            (
                "[[dependencies]]\ndepends_on_group = \"nope\"\n",
                "no group is named \"nope\"",
            ),
            ("[[dependencies]]\n", "depends_on"),
            (
                "[[dependencies]]\ndependents = { hosts = [\"sw-a\"] }\ndepends_on = \"sw-b\"\n\
                 [[dependencies]]\ndependents = { hosts = [\"sw-b\"] }\ndepends_on = \"sw-a\"\n",
                "cycle: sw-b -> sw-a -> sw-b",
            ),
        ];
        for (text, wanted) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(wanted) && !err.contains('\n'), "{text}: {err}");
        }
        // A rack's rule that selects its own switch is no cycle.
        parse(
            "[[dependencies]]\ndependents = { hosts = [\"rack4-*\"] }\ndepends_on = \"rack4-sw\"\n",
        )
        .expect("self is skipped");
    }
}
