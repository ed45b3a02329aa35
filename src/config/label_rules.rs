//! `[[server.labels]]`: labels the server gives hosts by rule, and
//! `metrics_by_labels`' bound.
//!
//! ```toml
//! [[server.labels]]
//! networks = ["10.4.0.0/16"]   # selects like a sink: hosts, labels, networks
//! set = { site = "fra" }
//! ```
//!
//! On a name the client also declares, the rule wins; rules apply in order
//! and a later one wins over an earlier one (see `monitor::labelsets`).

use super::Error;
use crate::labels::Labels;
use crate::monitor::LabelRule;
use crate::select::Selection;
use serde::{Deserialize, Serialize};

/// Most label names `metrics_by_labels` may name: each multiplies the
/// series of `lubdub_hosts_by_labels` (see `docs/METRICS.md`).
pub const MAX_METRICS_BY_LABELS: usize = 4;

/// One rule as written in the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelRuleConfig {
    /// Host id globs; empty: any id.
    pub hosts: Vec<String>,
    /// Labels the host must already carry (its client's, or an earlier
    /// rule's); empty: any.
    pub labels: Labels,
    /// Networks of the host's latest source address; empty: any.
    pub networks: Vec<ipnet::IpNet>,
    /// The labels the selected hosts get.
    pub set: Labels,
}

/// Compiles the rules; the error names the rule.
pub fn compile(rules: &[LabelRuleConfig]) -> Result<Vec<LabelRule>, Error> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let field = "labels";
            if rule.set.is_empty() {
                return Err(Error::Invalid {
                    field,
                    reason: format!(
                        "rule {}: set at least one label (set = {{ site = \"fra\" }})",
                        i + 1
                    ),
                });
            }
            let selection = Selection {
                hosts: rule.hosts.clone(),
                labels: rule.labels.clone(),
                networks: rule.networks.clone(),
            };
            let select = selection.compile().map_err(|e| Error::Invalid {
                field,
                reason: format!("rule {}: {e}", i + 1),
            })?;
            Ok(LabelRule {
                select,
                set: rule.set.clone(),
            })
        })
        .collect()
}

/// Checks `metrics_by_labels`: valid names, at most
/// [`MAX_METRICS_BY_LABELS`], none twice.
pub fn check_metrics_by_labels(names: &[String]) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        field: "metrics_by_labels",
        reason,
    };
    if names.len() > MAX_METRICS_BY_LABELS {
        return Err(invalid(format!(
            "at most {MAX_METRICS_BY_LABELS} label names"
        )));
    }
    for (i, name) in names.iter().enumerate() {
        crate::labels::check_name(name).map_err(|e| invalid(e.to_string()))?;
        if names[..i].contains(name) || name == "state" {
            return Err(invalid(format!("{name:?} given twice or reserved")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compile_and_bad_ones_name_themselves() {
        let rules: Vec<LabelRuleConfig> = toml::from_str::<toml::Table>(
            "[[labels]]\nnetworks = [\"10.4.0.0/16\"]\nset = { site = \"fra\" }\n[[labels]]\nhosts = [\"[\"]\nset = { a = \"b\" }",
        )
        .expect("toml")["labels"]
            .clone()
            .try_into()
            .expect("rules");
        let err = compile(&rules).expect_err("bad glob");
        assert!(err.to_string().contains("rule 2"), "{err}");
        assert_eq!(compile(&rules[..1]).expect("good").len(), 1);
        let empty = [LabelRuleConfig::default()];
        assert!(
            compile(&empty)
                .expect_err("no set")
                .to_string()
                .contains("set")
        );
        check_metrics_by_labels(&["team".into()]).expect("fine");
        assert!(check_metrics_by_labels(&["a-b".into()]).is_err());
        assert!(check_metrics_by_labels(&["a".into(), "a".into()]).is_err());
        let many: Vec<String> = (0..5).map(|i| format!("l{i}")).collect();
        assert!(check_metrics_by_labels(&many).is_err());
    }
}
