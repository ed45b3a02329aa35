//! Host labels: `team=web`, `role=frontend`. Names follow Prometheus' rules
//! so every label can become an Alertmanager label and a metric label as it
//! is; values are bounded so a label set fits one datagram. No I/O.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Most labels one host may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest label value, in bytes of UTF-8.
pub const MAX_VALUE_LEN: usize = 128;

/// Why a label or a label set was refused; the text names the culprit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The name breaks Prometheus' rule or is reserved.
    #[error(
        "label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_NAME_LEN} bytes, and not start with \"__\""
    )]
    BadName(String),
    /// The value is too long or holds a control character.
    #[error(
        "label {name:?}: value must be at most {MAX_VALUE_LEN} bytes with no control characters"
    )]
    BadValue {
        /// The label whose value was refused.
        name: String,
    },
    /// More than [`MAX_LABELS`] labels.
    #[error("at most {MAX_LABELS} labels per host")]
    TooMany,
    /// A `name=value` pair without `=`.
    #[error("label {0:?}: expected name=value")]
    NoEquals(String),
    /// The same name twice in one declaration.
    #[error("label {0:?} given twice")]
    Duplicate(String),
}

/// Checks a label name: `[a-zA-Z_][a-zA-Z0-9_]*`, no `__` prefix (Prometheus
/// reserves it), at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<(), LabelError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN && !name.starts_with("__") {
        Ok(())
    } else {
        Err(LabelError::BadName(name.to_string()))
    }
}

/// Checks a label value: at most [`MAX_VALUE_LEN`] bytes, no control
/// characters (they would corrupt logs, e-mail headers and exec
/// environments). Empty is allowed, as in Prometheus.
pub fn check_value(name: &str, value: &str) -> Result<(), LabelError> {
    if value.len() <= MAX_VALUE_LEN && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(LabelError::BadValue {
            name: name.to_string(),
        })
    }
}

/// A host's labels: validated, sorted by name, each name once. Two equal
/// sets compare equal whatever order they were declared in, which is what
/// lets the server intern them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set from `(name, value)` pairs, checking each and refusing a name
    /// given twice.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, LabelError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            check_name(&name)?;
            check_value(&name, &value)?;
            if map.contains_key(&name) {
                return Err(LabelError::Duplicate(name));
            }
            map.insert(name, value);
            if map.len() > MAX_LABELS {
                return Err(LabelError::TooMany);
            }
        }
        Ok(Self(map))
    }

    /// Parses `team=web,role=frontend` (the `LUBDUB_LABELS` form); empty
    /// text is the empty set.
    pub fn parse_list(text: &str) -> Result<Self, LabelError> {
        let pairs = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(parse_pair)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pairs(pairs)
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every label of `wanted` is set here to the same value.
    pub fn contains_all(&self, wanted: &Labels) -> bool {
        wanted.iter().all(|(n, v)| self.get(n) == Some(v))
    }

    /// These labels with `over`'s laid on top: on a name in both, `over`
    /// wins. The result may exceed [`MAX_LABELS`]: server rules are trusted
    /// config, and the bound exists for what clients send.
    pub fn overlaid(&self, over: &Labels) -> Labels {
        let mut map = self.0.clone();
        map.extend(over.0.iter().map(|(n, v)| (n.clone(), v.clone())));
        Labels(map)
    }
}

/// Splits one `name=value` pair (the `--label` form), checking neither part.
pub fn parse_pair(pair: &str) -> Result<(String, String), LabelError> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| LabelError::NoEquals(pair.to_string()))?;
    Ok((name.trim().to_string(), value.to_string()))
}

/// One `name=value` pair (the `--label` form), both parts checked.
pub fn parse_checked_pair(pair: &str) -> Result<(String, String), LabelError> {
    let (name, value) = parse_pair(pair)?;
    check_name(&name)?;
    check_value(&name, &value)?;
    Ok((name, value))
}

impl fmt::Display for Labels {
    /// `team=web,role=frontend`: the form [`Labels::parse_list`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Labels {
    /// A table of strings (`labels = { team = "web" }`), or the list form
    /// as one string (`"team=web,role=fe"`, as `LUBDUB_LABELS` gives it),
    /// checked as it is read so a bad config is refused with the label's
    /// name.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of labels or \"name=value,...\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Labels, E> {
                Labels::parse_list(text).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Labels, A::Error> {
                let map = BTreeMap::<String, String>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Labels::from_pairs(map).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        for good in ["team", "_x", "a1_b", "T"] {
            check_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "1a", "a-b", "a.b", "__reserved", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_are_bounded_and_printable() {
        check_value("n", "").expect("empty value");
        check_value("n", "Europe/Berlin rack 4 ü").expect("plain value");
        assert!(check_value("n", &"v".repeat(MAX_VALUE_LEN + 1)).is_err());
        assert!(check_value("n", "a\nb").is_err());
    }

    #[test]
    fn parses_the_list_form_in_any_order_to_one_set() {
        let a = Labels::parse_list("team=web, role=frontend").expect("parse");
        let b = Labels::parse_list("role=frontend,team=web,").expect("parse");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "role=frontend,team=web");
        assert_eq!(a.get("team"), Some("web"));
        assert_eq!(Labels::parse_list("").expect("empty"), Labels::new());
        assert_eq!(
            Labels::parse_list("team"),
            Err(LabelError::NoEquals("team".into()))
        );
        assert_eq!(
            Labels::parse_list("a=1,a=2"),
            Err(LabelError::Duplicate("a".into()))
        );
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=v")).collect();
        assert_eq!(
            Labels::parse_list(&many.join(",")),
            Err(LabelError::TooMany)
        );
    }

    #[test]
    fn containment_and_overlay() {
        let host = Labels::parse_list("team=web,site=fra").expect("parse");
        assert!(host.contains_all(&Labels::parse_list("team=web").expect("parse")));
        assert!(host.contains_all(&Labels::new()));
        assert!(!host.contains_all(&Labels::parse_list("team=db").expect("parse")));
        let rule = Labels::parse_list("site=ber,env=prod").expect("parse");
        assert_eq!(
            host.overlaid(&rule).to_string(),
            "env=prod,site=ber,team=web"
        );
    }

    #[test]
    fn a_config_table_is_checked_as_it_is_read() {
        let ok: Labels = toml::from_str::<BTreeMap<String, Labels>>("l = { team = \"web\" }")
            .expect("parse")
            .remove("l")
            .expect("key");
        assert_eq!(ok.get("team"), Some("web"));
        let err = toml::from_str::<BTreeMap<String, Labels>>("l = { \"bad-name\" = \"x\" }")
            .expect_err("bad name");
        assert!(err.to_string().contains("bad-name"), "{err}");
        let text: BTreeMap<String, Labels> =
            toml::from_str("l = \"team=web,role=fe\"").expect("list form");
        assert_eq!(text["l"].to_string(), "role=fe,team=web");
    }
}
