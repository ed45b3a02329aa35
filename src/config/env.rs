//! The environment layer of the configuration: `LUBDUB_<FIELD>` sets the
//! field `<field>` of [`ServerConfig`](super::ServerConfig) or
//! [`ClientConfig`](super::ClientConfig) (`LUBDUB_TIMEOUT=45s`,
//! `LUBDUB_SERVERS=a,b`). It sits between the config file and the flags:
//! defaults < file < environment < flags.
//!
//! The variable names come from the structs' serde field names, so a new
//! setting needs no line here: it is settable from the environment as soon
//! as it is a field. Values are written as on the command line, not as TOML:
//! a string as is (`45s`, `127.0.0.1:9`), a number or `true`/`false` bare,
//! a list as comma-separated items. An empty value leaves the setting alone
//! (handy in systemd environment files).

use super::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ffi::OsString;

/// Every variable starts with this.
pub const PREFIX: &str = "LUBDUB_";

/// Variables that are not settings but are read elsewhere: the log filter,
/// the log format, and the config file's path.
pub const OTHER_VARS: &[&str] = &["LUBDUB_LOG", "LUBDUB_LOG_FORMAT", "LUBDUB_CONFIG"];

/// The variable that sets `field`: `late_after` → `LUBDUB_LATE_AFTER`.
pub fn var_name(field: &str) -> String {
    format!("{PREFIX}{}", field.to_ascii_uppercase())
}

/// The field names of a settings struct, in declaration order.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<T>()
}

/// Overlays the process environment on `config`.
pub fn overlay_process<T>(config: &T) -> Result<T, Error>
where
    T: Clone + Serialize + DeserializeOwned,
{
    overlay(config, |name| std::env::var_os(name))
}

/// Overlays the variables that `lookup` finds on `config`: each field whose
/// `LUBDUB_<FIELD>` is set (and not empty) takes its value. The error names
/// the variable and says what is wrong with its value.
pub fn overlay<T>(config: &T, lookup: impl Fn(&str) -> Option<OsString>) -> Result<T, Error>
where
    T: Clone + Serialize + DeserializeOwned,
{
    // Nothing set, nothing to check: skip the TOML round trip, whose code
    // would otherwise stay resident in every idle client (issue 7).
    let set = |field: &&str| lookup(&var_name(field)).is_some_and(|v| !v.is_empty());
    if !fields::<T>().iter().any(set) {
        return Ok(config.clone());
    }
    // Round-trip through a TOML table so each value is checked by exactly
    // the serde rules the config file uses (humantime durations, addresses,
    // ranges): one set of parsers for both layers.
    let mut table = toml::Table::try_from(config).map_err(|e| Error::Env {
        var: PREFIX.to_string(),
        message: format!("cannot represent the settings: {e}"),
    })?;
    let mut merged = None;
    for field in fields::<T>() {
        let var = var_name(field);
        let Some(value) = lookup(&var) else { continue };
        let value = value.into_string().map_err(|_| Error::Env {
            var: var.clone(),
            message: "not valid UTF-8".into(),
        })?;
        if value.is_empty() {
            continue;
        }
        let candidates = candidates(&value);
        let mut errors = Vec::new();
        let mut accepted = None;
        for candidate in &candidates {
            let mut attempt = table.clone();
            attempt.insert(field.to_string(), candidate.clone());
            match toml::Value::Table(attempt.clone()).try_into::<T>() {
                Ok(parsed) => {
                    accepted = Some((attempt, parsed));
                    break;
                }
                Err(e) => errors.push(e.message().replace('\n', " ")),
            }
        }
        match accepted {
            Some((attempt, parsed)) => {
                table = attempt;
                merged = Some(parsed);
            }
            None => {
                return Err(Error::Env {
                    var,
                    // The plain-string reading says best what was expected
                    // ("a duration", "usize"), unless the value read as a
                    // number or boolean, whose error is more precise.
                    message: format!(
                        "invalid value {value:?}: {}",
                        errors[if candidates.len() > 2 { 1 } else { 0 }]
                    ),
                });
            }
        }
    }
    match merged {
        Some(parsed) => Ok(parsed),
        None => toml::Value::Table(table)
            .try_into::<T>()
            .map_err(|e| Error::Env {
                var: PREFIX.to_string(),
                message: e.message().replace('\n', " "),
            }),
    }
}

/// The readings of a variable's text, most literal first: a string, then a
/// number or boolean, then a comma-separated list of strings.
fn candidates(value: &str) -> Vec<toml::Value> {
    let mut out = vec![toml::Value::String(value.to_string())];
    let trimmed = value.trim();
    if let Ok(int) = trimmed.parse::<i64>() {
        out.push(toml::Value::Integer(int));
    } else if let Ok(float) = trimmed.parse::<f64>()
        && looks_scalar(trimmed)
    {
        out.push(toml::Value::Float(float));
    } else if let Ok(flag) = trimmed.parse::<bool>() {
        out.push(toml::Value::Boolean(flag));
    }
    out.push(toml::Value::Array(
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| toml::Value::String(item.to_string()))
            .collect(),
    ));
    out
}

/// True for text that reads as a plain number (not `inf` or `nan`, which
/// Rust would parse as floats, nor a host id made of letters).
fn looks_scalar(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
}

/// The `LUBDUB_…` variables among `names` that set nothing: neither a field
/// of `T` or `U` nor one of [`OTHER_VARS`]. Usually a typo worth a warning.
pub fn unknown_vars<T, U>(names: impl IntoIterator<Item = OsString>) -> Vec<String>
where
    T: DeserializeOwned,
    U: DeserializeOwned,
{
    let ours: Vec<String> = names
        .into_iter()
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    if ours.is_empty() {
        return ours; // the usual case: skip introspecting the settings
    }
    let known: Vec<String> = fields::<T>()
        .iter()
        .chain(fields::<U>())
        .map(|f| var_name(f))
        .collect();
    ours.into_iter()
        .filter(|name| !known.contains(name) && !OTHER_VARS.contains(&name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, ServerConfig};
    use std::collections::HashMap;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// The defaults of `T` with the variables `pairs` overlaid.
    fn defaults_with<T>(pairs: &[(&str, &str)]) -> Result<T, Error>
    where
        T: Default + Clone + Serialize + DeserializeOwned,
    {
        overlay(&T::default(), env(pairs))
    }

    #[test]
    fn every_field_has_a_variable() {
        assert!(fields::<ServerConfig>().contains(&"late_after"));
        assert!(fields::<ClientConfig>().contains(&"servers"));
        assert_eq!(var_name("late_after"), "LUBDUB_LATE_AFTER");
    }

    #[test]
    fn values_of_every_type() {
        let server: ServerConfig = defaults_with(&[
            ("LUBDUB_TIMEOUT", "45s"),
            ("LUBDUB_LISTEN", "127.0.0.1:9"),
            ("LUBDUB_LATE_AFTER", "20s"),
            ("LUBDUB_EVENT_HISTORY", "7"),
            ("LUBDUB_DATA_DIR", "/var/lib/lubdub"),
            ("LUBDUB_SILENT_REPORT", ""),
        ])
        .expect("valid");
        assert_eq!(server.timeout, Duration::from_secs(45));
        assert_eq!(server.listen.to_string(), "127.0.0.1:9");
        assert_eq!(server.late_after, Some(Duration::from_secs(20)));
        assert_eq!(server.event_history, 7);
        assert_eq!(server.data_dir.as_deref(), Some("/var/lib/lubdub".as_ref()));
        assert_eq!(server.silent_report, None, "empty leaves it alone");

        let client: ClientConfig = defaults_with(&[
            ("LUBDUB_SERVERS", "a.example, [::1]:9"),
            ("LUBDUB_JITTER", "0"),
            ("LUBDUB_LEGACY", "true"),
            ("LUBDUB_HOST_ID", "1234"),
        ])
        .expect("valid");
        assert_eq!(client.servers, ["a.example", "[::1]:9"]);
        assert_eq!(client.jitter, 0.0);
        assert!(client.legacy);
        assert_eq!(
            client.host_id.as_deref(),
            Some("1234"),
            "digits stay a string"
        );
        let one: ClientConfig = defaults_with(&[("LUBDUB_SERVERS", "h")]).expect("one server");
        assert_eq!(one.servers, ["h"]);
    }

    #[test]
    fn env_overrides_the_file_and_keeps_the_rest() {
        let file = ServerConfig {
            timeout: Duration::from_secs(60),
            event_history: 5,
            ..ServerConfig::default()
        };
        let merged = overlay(&file, env(&[("LUBDUB_TIMEOUT", "90s")])).expect("valid");
        assert_eq!(merged.timeout, Duration::from_secs(90));
        assert_eq!(merged.event_history, 5);
        assert_eq!(overlay(&file, env(&[])).expect("no vars"), file);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, expect) in [
            ("LUBDUB_TIMEOUT", "soon", "duration"),
            ("LUBDUB_LISTEN", "nowhere", "address"),
            ("LUBDUB_EVENT_HISTORY", "many", "usize"),
            ("LUBDUB_EVENT_HISTORY", "-5", "-5"),
            ("LUBDUB_LEGACY", "maybe", "bool"),
        ] {
            let err = if var == "LUBDUB_LEGACY" {
                defaults_with::<ClientConfig>(&[(var, value)]).map(|_| ())
            } else {
                defaults_with::<ServerConfig>(&[(var, value)]).map(|_| ())
            }
            .expect_err(var)
            .to_string();
            assert!(err.starts_with(&format!("{var}: ")), "{err}");
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn example_config_lists_every_setting_with_its_default() {
        let text = include_str!("../../docs/lubdub.example.toml");
        assert_eq!(
            crate::config::FileConfig::parse(text),
            Ok(crate::config::FileConfig::default())
        );
        for (table, fields) in [
            ("server", fields::<ServerConfig>()),
            ("client", fields::<ClientConfig>()),
        ] {
            let section: Vec<&str> = text
                .lines()
                .skip_while(|l| *l != format!("[{table}]"))
                .skip(1)
                .take_while(|l| !l.starts_with('['))
                .collect();
            for field in fields {
                let set = format!("{field} = ");
                assert!(
                    section
                        .iter()
                        .any(|l| l.trim_start_matches("# ").starts_with(&set)),
                    "docs/lubdub.example.toml: [{table}] does not list {field}"
                );
            }
        }
    }

    #[test]
    fn unknown_variables_are_found() {
        let names = ["LUBDUB_TIMOUT", "LUBDUB_TIMEOUT", "LUBDUB_LOG", "PATH"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(
            unknown_vars::<ServerConfig, ClientConfig>(names),
            ["LUBDUB_TIMOUT"]
        );
    }
}
