//! Which events a sink takes: its kinds, its hosts and their labels.

use super::SinkEvent;
use crate::select::Selector;

/// Which events a sink takes.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Kinds wanted; `None`: all.
    kinds: Option<Vec<String>>,
    /// The hosts whose events it takes (by id: events carry no more).
    hosts: Selector,
    /// Labels the host must carry; empty: any.
    labels: crate::labels::Labels,
}

impl Filter {
    /// A filter on `kinds` (`None`: every kind) and `hosts` (as the
    /// config's validation compiled them).
    pub fn new(kinds: Option<&[String]>, hosts: Selector) -> Self {
        Self {
            kinds: kinds.map(<[String]>::to_vec),
            hosts,
            labels: crate::labels::Labels::new(),
        }
    }

    /// This filter, taking only hosts that carry every label of `labels`.
    /// A mass silence (no labels of its own) still passes: a page for many
    /// hosts is never lost to a label filter.
    pub fn with_labels(mut self, labels: &crate::labels::Labels) -> Self {
        self.labels = labels.clone();
        self
    }

    /// True when the sink takes events of host `id` (its hosts only).
    pub fn matches_host(&self, id: &str) -> bool {
        self.hosts.matches_id(id)
    }

    /// True when the sink wants `event`. A mass silence matches if any of
    /// its hosts does.
    pub fn matches(&self, event: &SinkEvent) -> bool {
        if let SinkEvent::Host(e) | SinkEvent::Reminder(e) = event
            && !e.labels.contains_all(&self.labels)
        {
            return false;
        }
        self.matches_but_labels(event)
    }

    /// [`Filter::matches`] without the label check: for the event that
    /// ends a `down` the sink was given (see `Told::ends_told_down`).
    pub fn matches_but_labels(&self, event: &SinkEvent) -> bool {
        let kind = event.kind();
        if let Some(kinds) = &self.kinds
            && !matches!(event, SinkEvent::Test(_) | SinkEvent::Digest(_))
            && !kinds.iter().any(|k| k == kind)
        {
            return false;
        }
        if self.hosts.is_everything() {
            return true;
        }
        match event {
            SinkEvent::Host(e) | SinkEvent::Reminder(e) => self.matches_host(&e.host),
            SinkEvent::MassSilence(m) => m.hosts.iter().any(|h| self.matches_host(h)),
            SinkEvent::Digest(events) => events.iter().any(|e| self.matches(e)),
            SinkEvent::Test(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::host_event;
    use super::*;
    use crate::monitor::{Event, EventKind};
    use std::sync::Arc;

    #[test]
    fn filters_on_kind_and_host_globs() {
        let kinds = ["down".to_string()];
        let globs = ["web-*".to_string(), "db-?".to_string()];
        let hosts = Selector::new(&globs, &Default::default(), &[]).expect("globs");
        let filter = Filter::new(Some(&kinds), hosts);
        assert!(filter.matches(&host_event(EventKind::Down, "web-1")));
        assert!(filter.matches(&host_event(EventKind::Down, "db-3")));
        assert!(!filter.matches(&host_event(EventKind::Down, "db-33")));
        assert!(!filter.matches(&host_event(EventKind::Recovered, "web-1")));
        let all = Filter::new(None, Selector::everything());
        assert!(all.matches(&host_event(EventKind::Late, "x")));
    }

    #[test]
    fn filters_on_labels() {
        let labels = |text| crate::labels::Labels::parse_list(text).expect("labels");
        let web = Filter::new(None, Selector::everything()).with_labels(&labels("team=web"));
        let labelled = |text| match host_event(EventKind::Down, "h") {
            SinkEvent::Host(e) => SinkEvent::Host(Event {
                labels: Arc::new(labels(text)),
                ..e
            }),
            other => other,
        };
        assert!(web.matches(&labelled("team=web,role=fe")));
        assert!(!web.matches(&labelled("team=db")));
        assert!(!web.matches(&labelled("")));
        assert!(Filter::new(None, Selector::everything()).matches(&labelled("team=db")));
    }
}
