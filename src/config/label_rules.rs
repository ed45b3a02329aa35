//! `[[server.labels]]`: labels the server gives hosts by rule.
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
    }
}
