//! The classic Prometheus text format (version 0.0.4), derived from the
//! OpenMetrics text the prometheus-client crate writes. Prometheus itself
//! negotiates OpenMetrics; `promtool check metrics`, older scrapers and
//! people with curl get this one. The two differ only in the metadata lines
//! for what we export: counters are named with `_total` in `# TYPE`, info
//! metrics become gauges, `# UNIT` and `# EOF` do not exist.

/// The content type of the classic text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when the `Accept` header asks for OpenMetrics (as Prometheus's
/// scrape negotiation does); anything else gets the classic format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            let refused = params.any(|p| p.replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// Rewrites OpenMetrics text as the classic text format.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut renames: Vec<(String, String)> = Vec::new();
    // First pass: which families change name (counters, infos).
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            match kind {
                "counter" => renames.push((name.to_string(), format!("{name}_total"))),
                "info" => renames.push((name.to_string(), format!("{name}_info"))),
                _ => {}
            }
        }
    }
    let renamed = |name: &str| -> String {
        renames
            .iter()
            .find(|(from, _)| from == name)
            .map_or_else(|| name.to_string(), |(_, to)| to.clone())
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "info" => "gauge",
                "unknown" => "untyped",
                other => other,
            };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
        } else {
            // A sample; an exemplar (` # {...}`) has no classic form.
            let sample = match line.find(" # {") {
                Some(at) => &line[..at],
                None => line,
            };
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// Brings counters up to the monitor's running totals, and a gauge to its
/// current count: how every part mirrors the core's figures (the core
/// never touches metrics). Here, below both `metrics` and `probe`, so
/// that each can use it without importing the other back. A total can shrink (`lost`, after a late beat)
/// but a counter only grows, so it then stays where it is.
pub(crate) fn sync_to_totals(
    counters: &[(&prometheus_client::metrics::counter::Counter, u64)],
    (gauge, count): (&prometheus_client::metrics::gauge::Gauge, u64),
) {
    for (counter, total) in counters {
        counter.inc_by(total.saturating_sub(counter.get()));
    }
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_by_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0"
        )));
    }

    #[test]
    fn rewrites_counter_and_info_metadata() {
        let om = "# HELP lubdub_beats Beats applied.\n# TYPE lubdub_beats counter\nlubdub_beats_total 3\n\
                  # HELP lubdub_build Build.\n# TYPE lubdub_build info\nlubdub_build_info{version=\"1\"} 1\n\
                  # HELP lubdub_up_seconds Up.\n# TYPE lubdub_up_seconds gauge\n# UNIT lubdub_up_seconds seconds\nlubdub_up_seconds 1.5\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP lubdub_beats_total Beats applied.\n# TYPE lubdub_beats_total counter\nlubdub_beats_total 3\n\
             # HELP lubdub_build_info Build.\n# TYPE lubdub_build_info gauge\nlubdub_build_info{version=\"1\"} 1\n\
             # HELP lubdub_up_seconds Up.\n# TYPE lubdub_up_seconds gauge\nlubdub_up_seconds 1.5\n"
        );
    }
}
