//! Durations as people write them: `100ms`, `10s`, `2m`, `1h30m`.

use std::time::Duration;

/// Parses a duration with a unit (`500ms`, `10s`, `2m`). Used by every flag.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses like [`parse`], but a bare number means seconds: the seed's
/// positional `TIMEOUT` was a plain count of seconds.
pub fn parse_seconds_or_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse(text),
    }
}

/// Formats a duration compactly for humans (`1.5s`, `250ms`, `2m`).
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert!(parse("10").is_err(), "a flag needs a unit");
        assert!(parse("ten seconds").is_err());
        assert_eq!(parse_seconds_or_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_seconds_or_duration("1500ms"),
            Ok(Duration::from_millis(1500))
        );
    }
}
