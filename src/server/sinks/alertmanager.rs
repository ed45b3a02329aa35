//! The Alertmanager sink (v2 API, `POST /api/v2/alerts`).
//!
//! A host is firing while its latest event is `down`: `alertname="HostDown"`
//! and `host=<id>` plus the configured static labels. Nothing server- or
//! address-derived goes into the labels, since they are the alert's identity:
//! two lubdub servers watching the same host send the same alert, and
//! Alertmanager deduplicates them. Firing alerts are sent again every
//! `resend` with `endsAt = now + lease`, so they stay alive while any
//! server is running and expire on their own if none is; any later event
//! for the host (recovered, left, rebooted, and kinds added later such as
//! paused or forgotten) resolves it with `endsAt = now`. A mass silence is
//! one `alertname="MassSilence"` alert, resolved once each of its hosts has
//! had a later event. A group below its quorum is one `alertname="GroupDown"`
//! alert with `group=<name>` and the group's declared labels, resolved by
//! its `group-recovered`; a member's `HostDown` carries its group's
//! `member_severity` as `severity`, and a parent's `HostDown` names the
//! hosts unreachable behind it.

use super::config::{AlertmanagerConfig, CheckedAlertmanager, check_http_url};
use super::{Delivery, Error, MassSilence, Outcomes, SinkEvent};
use crate::monitor::context::{Context, join};
use crate::monitor::{Event, EventKind};
use crate::ratelimit::RateLimit;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How soon a failed POST is tried again (when `resend` is longer).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Most host ids listed in a mass-silence annotation.
const MAX_LISTED_HOSTS: usize = 50;
/// Most events turned into alerts per POST.
const MAX_ALERTS_PER_POST: usize = 1000;

/// One alert as Alertmanager's v2 API takes it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Identity of the alert.
    pub labels: BTreeMap<String, String>,
    /// Information that does not identify it.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339: the lease end while firing, the resolution time after.
    pub ends_at: String,
    /// Link to the host on the dashboard.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

struct Firing {
    down_at: SystemTime,
    addr: SocketAddr,
    last_seen: SystemTime,
    /// The host's labels when it went down (a group's: those it
    /// declares): part of the alert's identity, so the resolve carries
    /// the same ones.
    labels: Arc<crate::labels::Labels>,
    /// Groups and dependencies: severity, hosts unreachable behind it, and
    /// for a group its quorum and missing members.
    context: Option<Arc<Context>>,
}

/// Whose alert a firing entry is. Host ids and group names are apart: a
/// host may well be called `group web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A host's `HostDown`, by its id.
    Host(Arc<str>),
    /// A group's `GroupDown`, by its name.
    Group(Arc<str>),
}

impl Key {
    /// The alert's name and the label that names whose it is.
    fn names(&self) -> (&'static str, &'static str, &str) {
        match self {
            Key::Host(id) => ("HostDown", "host", id),
            Key::Group(name) => ("GroupDown", "group", name),
        }
    }
}

struct MassFiring {
    silence: Arc<MassSilence>,
    /// Hosts of the mass silence whose latest event is still its down.
    remaining: HashSet<Arc<str>>,
}

/// A configured Alertmanager sink.
pub struct Alertmanager {
    name: String,
    endpoints: Vec<reqwest::Url>,
    client: reqwest::Client,
    labels: BTreeMap<String, String>,
    external: reqwest::Url,
    resend: Duration,
    lease: Duration,
    outcomes: Outcomes,
    fail_log: RateLimit,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl Alertmanager {
    /// The sink from its config and what validation parsed of it
    /// (`checked`); `http_addr` is the server's API address, the default
    /// base of `generatorURL`.
    pub fn new(
        name: String,
        config: &AlertmanagerConfig,
        checked: &CheckedAlertmanager,
        http_addr: SocketAddr,
        outcomes: Outcomes,
    ) -> Result<Self, Error> {
        let endpoints = checked.endpoints.clone();
        let external = match &checked.external_url {
            Some(url) => url.clone(),
            None => check_http_url(
                "sinks.alertmanager.external_url",
                &name,
                &format!("http://{http_addr}/"),
            )?,
        };
        let client = super::http_client(&name, config.timeout, Default::default())?;
        Ok(Self {
            name,
            endpoints,
            client,
            labels: config.labels.clone(),
            external,
            resend: config.resend,
            lease: config.lease,
            outcomes,
            fail_log: RateLimit::new(Duration::from_secs(10)),
        })
    }

    /// The sink's static labels, then the host's (or group's) own
    /// (`team`, `site`: Alertmanager routes on them; they win over the
    /// sink's), then `alertname` and `host` (or `group`), which nothing
    /// overrides.
    fn labels(
        &self,
        alertname: &str,
        own: &crate::labels::Labels,
        whose: Option<(&str, &str)>,
    ) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.extend(own.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        labels.insert("alertname".into(), alertname.into());
        if let Some((name, value)) = whose {
            labels.insert(name.into(), value.into());
        }
        labels
    }

    /// The alert of firing entry `key`, ending at `ends_at`: a host's
    /// `HostDown` or a group's `GroupDown`.
    fn alert(&self, key: &Key, firing: &Firing, now: SystemTime, ends_at: SystemTime) -> Alert {
        let (alertname, label, name) = key.names();
        let context = firing.context.as_deref();
        let mut annotations = BTreeMap::new();
        let mut note = |n: &str, v: String| annotations.insert(n.to_string(), v);
        match (key, context.and_then(|c| c.group.as_ref())) {
            (Key::Group(_), Some(group)) => {
                note(
                    "summary",
                    format!(
                        "group {name} is down: {} of {} members up, {} needed",
                        group.up, group.total, group.need
                    ),
                );
                note("missing", join(&group.missing));
            }
            (Key::Group(_), None) => {}
            (Key::Host(_), _) => {
                let silence = now.duration_since(firing.last_seen).unwrap_or_default();
                let silence = format!("{:.1}s", silence.as_secs_f64());
                note(
                    "summary",
                    format!("host {name} is down: silent for {silence}"),
                );
                note("address", firing.addr.to_string());
                note("last_seen", rfc3339(firing.last_seen));
                note("silence", silence);
            }
        }
        if let Some(context) = context.filter(|c| c.unreachable_count > 0) {
            note("unreachable", unreachable_note(context));
        }
        let mut labels = self.labels(alertname, &firing.labels, Some((label, name)));
        if let Some(severity) = context.and_then(|c| c.severity.as_ref()) {
            labels.insert("severity".into(), severity.to_string());
        }
        let mut url = self.external.clone();
        url.set_fragment(Some(&format!("{label}={name}")));
        Alert {
            labels,
            annotations,
            starts_at: rfc3339(firing.down_at),
            ends_at: rfc3339(ends_at),
            generator_url: url.to_string(),
        }
    }

    fn mass_alert(&self, mass: &MassSilence, ends_at: SystemTime) -> Alert {
        let networks: Vec<String> = mass
            .networks
            .iter()
            .map(|n| format!("{} ({})", n.network, n.hosts))
            .collect();
        let mut hosts: Vec<&str> = mass
            .hosts
            .iter()
            .take(MAX_LISTED_HOSTS)
            .map(|h| &**h)
            .collect();
        let more = mass.hosts.len().saturating_sub(MAX_LISTED_HOSTS);
        let more = format!("and {more} more");
        if mass.hosts.len() > MAX_LISTED_HOSTS {
            hosts.push(&more);
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".into(),
            format!(
                "{} of {} hosts went down within {}",
                mass.count,
                mass.fleet,
                crate::duration::format(mass.window)
            ),
        );
        annotations.insert("networks".into(), networks.join(", "));
        annotations.insert("hosts".into(), hosts.join(" "));
        Alert {
            labels: self.labels("MassSilence", &Default::default(), None),
            annotations,
            starts_at: rfc3339(mass.at),
            ends_at: rfc3339(ends_at),
            generator_url: self.external.to_string(),
        }
    }

    /// Turns events from `queue` into alerts until it closes. Firing alerts
    /// are left to expire at their lease: a server that stops must not
    /// resolve what another server still sees down.
    /// `already_down`: `down` events of hosts that were down before this
    /// server started; their alerts are (re)sent at once and renewed.
    pub async fn run(mut self, mut queue: mpsc::Receiver<SinkEvent>, already_down: Vec<Event>) {
        let mut firing: HashMap<Key, Firing> = HashMap::new();
        let mut mass: Option<MassFiring> = None;
        let resend_now = !already_down.is_empty();
        for event in already_down {
            let (mut alerts, mut resolving) = (Vec::new(), Vec::new());
            let now = SystemTime::now();
            let event = SinkEvent::Host(event);
            self.apply(
                event,
                now,
                &mut firing,
                &mut mass,
                &mut alerts,
                &mut resolving,
            );
        }
        // Resolutions not yet accepted by every Alertmanager, until their
        // alert's lease would have ended anyway.
        let mut unresolved: Vec<(Alert, SystemTime)> = Vec::new();
        let mut tick = tokio::time::interval(self.resend);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !resend_now {
            tick.tick().await; // the first tick is immediate: nothing to send yet
        }
        loop {
            let mut alerts = Vec::new();
            let mut resolving = Vec::new();
            let mut retried = 0;
            tokio::select! {
                received = queue.recv() => {
                    let Some(event) = received else { return };
                    if let SinkEvent::Test(test) = &event {
                        let alert = self.test_alert(test);
                        let result = match self.post(&[alert]).await {
                            true => Ok(()),
                            false => Err(self.outcomes.latest().error.unwrap_or_default()),
                        };
                        test.report(result);
                        continue;
                    }
                    let now = SystemTime::now();
                    self.apply(event, now, &mut firing, &mut mass, &mut alerts, &mut resolving);
                    while alerts.len() + resolving.len() < MAX_ALERTS_PER_POST {
                        let Ok(event) = queue.try_recv() else { break };
                        self.apply(event, now, &mut firing, &mut mass, &mut alerts, &mut resolving);
                    }
                }
                _ = tick.tick() => {
                    let now = SystemTime::now();
                    let lease_end = now + self.lease;
                    for (key, f) in &firing {
                        alerts.push(self.alert(key, f, now, lease_end));
                    }
                    if let Some(m) = &mass {
                        alerts.push(self.mass_alert(&m.silence, lease_end));
                    }
                    unresolved.retain(|(_, until)| *until > now);
                    retried = unresolved.len();
                    resolving.extend(unresolved.drain(..).map(|(alert, _)| alert));
                }
            }
            if alerts.is_empty() && resolving.is_empty() {
                continue;
            }
            if retried > 0 {
                self.outcomes.add(Delivery::Retried, retried as u64);
            }
            let n_resolving = resolving.len();
            alerts.extend(resolving);
            if !self.post(&alerts).await {
                // Firing alerts go again with the next resend; make that soon.
                let until = SystemTime::now() + self.lease;
                let resolving = alerts.split_off(alerts.len() - n_resolving);
                unresolved.extend(resolving.into_iter().map(|a| (a, until)));
                tick.reset_after(self.resend.min(RETRY_AFTER));
            }
        }
    }

    /// Updates the firing set for one event; pushes new firing alerts to
    /// `alerts` and resolutions to `resolving`.
    fn apply(
        &self,
        event: SinkEvent,
        now: SystemTime,
        firing: &mut HashMap<Key, Firing>,
        mass: &mut Option<MassFiring>,
        alerts: &mut Vec<Alert>,
        resolving: &mut Vec<Alert>,
    ) {
        match event {
            SinkEvent::Host(e) => {
                let key = match e.kind.is_group() {
                    true => Key::Group(e.host.clone()),
                    false => Key::Host(e.host.clone()),
                };
                if matches!(e.kind, EventKind::Down | EventKind::GroupDown) {
                    let f = Firing {
                        down_at: e.at,
                        addr: e.addr,
                        last_seen: e.at.checked_sub(e.silent_for).unwrap_or(e.at),
                        labels: e.labels,
                        context: e.context,
                    };
                    alerts.push(self.alert(&key, &f, now, now + self.lease));
                    firing.insert(key, f);
                    return;
                }
                // Any later event leaves the host (or group) not down:
                // resolve.
                if let Some(f) = firing.remove(&key) {
                    resolving.push(self.alert(&key, &f, e.at, e.at));
                }
                if let (Key::Host(host), Some(m)) = (&key, mass.as_mut())
                    && m.remaining.remove(host)
                    && m.remaining.is_empty()
                {
                    resolving.push(self.mass_alert(&m.silence, e.at));
                    *mass = None;
                }
            }
            // Not sent to Alertmanager sinks (it renews firing alerts
            // itself, and `group_wait` is its own); tests are sent apart.
            SinkEvent::Reminder(_) | SinkEvent::Digest(_) | SinkEvent::Test(_) => {}
            SinkEvent::MassSilence(silence) => {
                let remaining = match mass.take() {
                    Some(m) => m.remaining,
                    None => HashSet::new(),
                };
                let mut m = MassFiring {
                    silence: silence.clone(),
                    remaining,
                };
                m.remaining.extend(silence.hosts.iter().cloned());
                alerts.push(self.mass_alert(&silence, now + self.lease));
                *mass = Some(m);
            }
        }
    }

    /// A `LubdubTest` alert that ends a minute after it starts: it shows
    /// the route to the receivers works, and resolves itself.
    fn test_alert(&self, test: &super::TestAlert) -> Alert {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            super::template::summary(&SinkEvent::Test(Arc::new(super::TestAlert::new(
                &test.sink, test.at,
            )))),
        );
        Alert {
            labels: self.labels("LubdubTest", &Default::default(), None),
            annotations,
            starts_at: rfc3339(test.at),
            ends_at: rfc3339(test.at + Duration::from_secs(60)),
            generator_url: self.external.to_string(),
        }
    }

    /// POSTs `alerts` to every Alertmanager at once; true when all took them.
    async fn post(&mut self, alerts: &[Alert]) -> bool {
        let body = serde_json::to_vec(alerts).expect("alerts serialise");
        let mut posts = JoinSet::new();
        for endpoint in &self.endpoints {
            let request = self
                .client
                .post(endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            let endpoint = endpoint.clone();
            posts.spawn(async move {
                let result = match request.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(e.without_url().to_string()),
                };
                (endpoint, result)
            });
        }
        let n = alerts.len() as u64;
        let mut all_ok = true;
        while let Some(joined) = posts.join_next().await {
            let Ok((endpoint, result)) = joined else {
                all_ok = false;
                continue;
            };
            match result {
                Ok(()) => self.outcomes.add(Delivery::Sent, n),
                Err(why) => {
                    all_ok = false;
                    self.outcomes.fail(n, &why);
                    if let Some(suppressed) = self.fail_log.check(std::time::Instant::now()) {
                        // Without the password of a `user:password@` URL.
                        let endpoint = crate::config::redact::url(endpoint.as_str());
                        tracing::warn!(
                            sink = %self.name,
                            suppressed,
                            "alertmanager {endpoint}: {why}"
                        );
                    }
                }
            }
        }
        all_ok
    }
}

/// `10 hosts: a,b,c …` (the list is bounded by the core).
fn unreachable_note(context: &Context) -> String {
    let listed = context.unreachable.len();
    let more = context.unreachable_count.saturating_sub(listed);
    let mut note = format!(
        "{} hosts: {}",
        context.unreachable_count,
        join(&context.unreachable)
    );
    if more > 0 {
        note.push_str(&format!(" and {more} more"));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::event;
    use crate::select::Selector;
    use crate::server::metrics::Metrics;

    fn sink() -> Alertmanager {
        let url = reqwest::Url::parse("http://127.0.0.1:9/api/v2/alerts").expect("url");
        let checked = CheckedAlertmanager {
            sink: crate::config::sinks::Checked {
                name: "am".into(),
                hosts: Selector::everything(),
            },
            endpoints: vec![url],
            external_url: None,
        };
        let outcomes = Outcomes::new(&Metrics::default(), "am");
        let http = SocketAddr::from(([127, 0, 0, 1], 1));
        Alertmanager::new("am".into(), &Default::default(), &checked, http, outcomes).expect("sink")
    }

    // See: issue 17 (review): a group's alert was keyed "group NAME", the
    // key of a host of that id (host ids may hold spaces).
    #[test]
    fn a_host_named_like_a_group_keeps_its_own_alert() {
        let am = sink();
        let (mut firing, mut mass) = (HashMap::new(), None);
        // What one event fires and resolves: each alert's name and whose.
        let mut step = |kind, host| {
            let (mut alerts, mut resolving) = (Vec::new(), Vec::new());
            let e = SinkEvent::Host(event(kind, host));
            let now = SystemTime::now();
            am.apply(e, now, &mut firing, &mut mass, &mut alerts, &mut resolving);
            let whose = |alerts: Vec<Alert>| -> Vec<String> {
                let label = |a: &Alert, n| a.labels.get(n).cloned().unwrap_or_default();
                let whose = |a: &Alert| format!("{}:{}", label(a, "host"), label(a, "group"));
                alerts
                    .iter()
                    .map(|a| format!("{} {}", label(a, "alertname"), whose(a)))
                    .collect()
            };
            (whose(alerts), whose(resolving))
        };
        let host = || vec!["HostDown group web:".to_string()];
        let group = || vec!["GroupDown :web".to_string()];
        assert_eq!(step(EventKind::Down, "group web"), (host(), vec![]));
        assert_eq!(step(EventKind::GroupDown, "web"), (group(), vec![]));
        assert_eq!(step(EventKind::GroupRecovered, "web"), (vec![], group()));
        assert_eq!(step(EventKind::Recovered, "group web"), (vec![], host()));
    }
}
