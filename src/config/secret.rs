//! Secret settings (webhook URLs, tokens, passwords): given inline or read
//! from a file (`token_file = …`), and never printed: `--print-config`,
//! `Debug` and the API show `<redacted>` in their place.
//!
//! A relative file name is looked up in `$CREDENTIALS_DIRECTORY` when that is
//! set, so systemd credentials (`LoadCredential=pd:/etc/lubdub/pd-key`) are
//! named as `token_file = "pd"`.

use crate::config::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret value from the config file. Serialises as [`REDACTED`], so a
/// printed config never holds it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// The file a `*_file` setting names: relative names are taken from
/// `$CREDENTIALS_DIRECTORY` (systemd) when it is set.
pub fn credential_path(file: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if file.is_relative() => Path::new(&dir).join(file),
        _ => file.to_path_buf(),
    }
}

/// The value of a secret setting given as `inline` or as `file` (not both);
/// `None` when neither is set. A file's trailing newline is not part of the
/// secret. Errors name `field` and the sink, never the value.
pub fn resolve(
    field: &'static str,
    sink: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<String>, Error> {
    let invalid = |reason: String| Error::Invalid { field, reason };
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "sink {sink:?}: set {field} or {field}_file, not both"
        ))),
        (Some(value), None) => Ok(Some(value.0.clone())),
        (None, Some(file)) => {
            let path = credential_path(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(format!(
                    "sink {sink:?}: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(invalid(format!(
                    "sink {sink:?}: {} is empty",
                    path.display()
                )));
            }
            Ok(Some(value.to_string()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_read_from_files() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).expect("json"),
            format!("\"{REDACTED}\"")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "hunter2\n").expect("write");
        assert_eq!(
            resolve("token", "s", None, Some(&file)).expect("read"),
            Some("hunter2".into())
        );
        let err = resolve("token", "s", Some(&secret), Some(&file)).expect_err("both");
        assert!(err.to_string().starts_with("token: "), "{err}");
        let missing = dir.path().join("missing");
        let err = resolve("token", "s", None, Some(&missing)).expect_err("missing");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
