//! `?label=team=web` on `GET /api/v1/hosts`: repeatable, every one must
//! match. Taken out of the query before the rest is read, because the
//! query's other fields are read as a struct, which takes each key once.

use crate::labels::Labels;
use axum::extract::Query;
use axum::http::Uri;

/// Splits a raw query into the label filter and the rest (as a URI that
/// `Query` reads); the error is the one line a bad request answers.
pub fn split(raw: Option<&str>) -> Result<(Labels, Uri), String> {
    let raw = raw.unwrap_or("");
    let (mut label_parts, mut rest) = (Vec::new(), Vec::new());
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        if part.starts_with("label=") {
            label_parts.push(part);
        } else {
            rest.push(part);
        }
    }
    let bad = |e: String| format!("label: {e}");
    let uri = |q: String| -> Result<Uri, String> {
        format!("/?{q}")
            .parse()
            .map_err(|_| "malformed query".to_string())
    };
    let Query(pairs): Query<Vec<(String, String)>> =
        Query::try_from_uri(&uri(label_parts.join("&"))?).map_err(|e| bad(e.body_text()))?;
    let wanted = pairs
        .into_iter()
        .map(|(_, pair)| {
            crate::labels::parse_pair(&pair)
                .map_err(|e| bad(format!("{e} (expected label=NAME=VALUE)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let wanted = Labels::from_pairs(wanted).map_err(|e| bad(e.to_string()))?;
    Ok((wanted, uri(rest.join("&"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_taken_out_and_decoded() {
        let (wanted, rest) =
            split(Some("state=up&label=team%3Dweb&label=role=fe&q=x")).expect("split");
        assert_eq!(wanted.to_string(), "role=fe,team=web");
        assert_eq!(rest.query(), Some("state=up&q=x"));
        assert!(split(Some("label=team")).is_err());
        assert!(split(Some("label=a-b=1")).is_err());
        assert!(split(None).expect("none").0.is_empty());
    }
}
