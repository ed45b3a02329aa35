//! Choosing hosts: by id glob, by label, by network. One matcher for every
//! place that selects hosts (sinks, server label rules, maintenance windows,
//! groups, dependencies), so they all read the same way in the config:
//!
//! ```toml
//! hosts = ["web-*"]              # any of these globs
//! labels = { team = "web" }      # all of these labels
//! networks = ["10.4.0.0/16"]     # any of these networks
//! ```
//!
//! A host is selected when it passes every criterion that is given; a
//! selection with no criterion selects every host. No I/O.

use crate::labels::Labels;
use globset::{Glob, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A selection as written in the config file (or an API request).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// Host id globs (`web-*`, `db-?.eu`); empty: any id.
    pub hosts: Vec<String>,
    /// Labels the host must all carry with these values; empty: any.
    pub labels: Labels,
    /// Networks the host's latest source address must be in; empty: any.
    pub networks: Vec<IpNet>,
}

impl Selection {
    /// True when nothing narrows the selection: it selects every host.
    pub fn is_everything(&self) -> bool {
        self.hosts.is_empty() && self.labels.is_empty() && self.networks.is_empty()
    }

    /// The compiled matcher; the error names the bad glob.
    pub fn compile(&self) -> Result<Selector, globset::Error> {
        Selector::new(&self.hosts, &self.labels, &self.networks)
    }
}

/// A compiled [`Selection`]: cheap to match, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// `None`: any id.
    ids: Option<GlobSet>,
    labels: Labels,
    networks: Vec<IpNet>,
}

impl Selector {
    /// Compiles the three criteria; the error names the bad glob.
    pub fn new(
        hosts: &[String],
        labels: &Labels,
        networks: &[IpNet],
    ) -> Result<Self, globset::Error> {
        let ids = if hosts.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for glob in hosts {
                set.add(Glob::new(glob)?);
            }
            Some(set.build()?)
        };
        Ok(Self {
            ids,
            labels: labels.clone(),
            networks: networks.to_vec(),
        })
    }

    /// Selects every host.
    pub fn everything() -> Self {
        Self::default()
    }

    /// True when no criterion narrows it.
    pub fn is_everything(&self) -> bool {
        self.ids.is_none() && self.labels.is_empty() && self.networks.is_empty()
    }

    /// True when the selector looks at labels (callers without a host's
    /// labels at hand can then skip fetching them when it does not).
    pub fn uses_labels(&self) -> bool {
        !self.labels.is_empty()
    }

    /// True when the selector looks at the host's network (its result can
    /// change when the host moves).
    pub fn uses_networks(&self) -> bool {
        !self.networks.is_empty()
    }

    /// True when host `id`, last heard from `addr` (`None`: unknown, which
    /// no network contains) and carrying `labels`, is selected.
    pub fn matches(&self, id: &str, addr: Option<IpAddr>, labels: &Labels) -> bool {
        self.matches_id(id)
            && labels.contains_all(&self.labels)
            && (self.networks.is_empty()
                || addr.is_some_and(|ip| self.networks.iter().any(|n| n.contains(&canonical(ip)))))
    }

    /// True when the id criterion alone passes (the others are not looked
    /// at): for callers that have only an id, such as a sink filtering the
    /// monitor's own events.
    pub fn matches_id(&self, id: &str) -> bool {
        self.ids.as_ref().is_none_or(|set| set.is_match(id))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.4.0.1`, as a dual-stack socket
/// reports an IPv4 sender) as the IPv4 address it is, so `10.4.0.0/16`
/// matches it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(toml_text: &str) -> Selector {
        toml::from_str::<Selection>(toml_text)
            .expect("parse")
            .compile()
            .expect("compile")
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("ip"))
    }

    #[test]
    fn an_empty_selection_selects_everything() {
        let all = selection("");
        assert!(all.is_everything());
        assert!(all.matches("any", None, &Labels::new()));
    }

    #[test]
    fn every_given_criterion_must_pass() {
        let web_fra = selection(
            "hosts = [\"web-*\", \"www\"]\nlabels = { team = \"web\" }\nnetworks = [\"10.4.0.0/16\"]",
        );
        let team_web = Labels::parse_list("team=web,role=fe").expect("labels");
        assert!(web_fra.matches("web-1", ip("10.4.2.3"), &team_web));
        assert!(web_fra.matches("www", ip("10.4.2.3"), &team_web));
        assert!(!web_fra.matches("db-1", ip("10.4.2.3"), &team_web), "id");
        assert!(!web_fra.matches("web-1", ip("10.5.2.3"), &team_web), "net");
        assert!(!web_fra.matches("web-1", None, &team_web), "no address");
        let team_db = Labels::parse_list("team=db").expect("labels");
        assert!(!web_fra.matches("web-1", ip("10.4.2.3"), &team_db), "label");
        assert!(web_fra.matches_id("web-9"));
        assert!(web_fra.uses_labels());
    }

    #[test]
    fn networks_match_both_families_and_mapped_v4() {
        let nets = selection("networks = [\"10.4.0.0/16\", \"fd00::/8\"]");
        let none = Labels::new();
        assert!(nets.matches("h", ip("::ffff:10.4.0.1"), &none));
        assert!(nets.matches("h", ip("fd00::1"), &none));
        assert!(!nets.matches("h", ip("2001:db8::1"), &none));
    }

    #[test]
    fn bad_input_is_refused_with_its_name() {
        let err = toml::from_str::<Selection>("hosts = [\"[\"]")
            .expect("parse")
            .compile()
            .expect_err("bad glob");
        assert!(err.to_string().contains('['), "{err}");
        assert!(toml::from_str::<Selection>("networks = [\"10.4.0.0/33\"]").is_err());
        assert!(toml::from_str::<Selection>("labels = { \"a-b\" = \"x\" }").is_err());
        assert!(toml::from_str::<Selection>("hostz = []").is_err());
    }
}
