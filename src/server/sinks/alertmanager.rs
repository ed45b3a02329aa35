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
    /// The host's labels when it went down: part of the alert's identity,
    /// so the resolve carries the same ones.
    labels: Arc<crate::labels::Labels>,
    /// Groups and dependencies: severity, hosts unreachable behind it, and
    /// for a group (`group` set) its quorum and missing members.
    context: Option<Arc<Context>>,
    group: bool,
}

/// The firing-set key of a group's alert (host ids cannot contain a
/// space, so it never meets a host's).
fn group_key(name: &str) -> Arc<str> {
    format!("group {name}").into()
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

    fn labels(&self, alertname: &str, host: Option<&str>) -> BTreeMap<String, String> {
        self.labels_with(alertname, host, &crate::labels::Labels::new())
    }

    /// The sink's static labels, then the host's own (`team`, `site`:
    /// Alertmanager routes on them; the host's win over the sink's), then
    /// `alertname` and `host`, which nothing overrides.
    fn labels_with(
        &self,
        alertname: &str,
        host: Option<&str>,
        host_labels: &crate::labels::Labels,
    ) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.extend(
            host_labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        labels.insert("alertname".into(), alertname.into());
        if let Some(host) = host {
            labels.insert("host".into(), host.into());
        }
        labels
    }

    /// The alert of firing entry `key`: a host's, or a group's.
    fn alert(&self, key: &str, firing: &Firing, now: SystemTime, ends_at: SystemTime) -> Alert {
        match &firing.context {
            Some(context) if firing.group => self.group_alert(context, firing, ends_at),
            _ => self.host_alert(key, firing, now, ends_at),
        }
    }

    /// The `GroupDown` alert of the group `context` describes.
    fn group_alert(&self, context: &Context, firing: &Firing, ends_at: SystemTime) -> Alert {
        let name = context.parent.as_deref().unwrap_or_default();
        let mut labels = self.labels_with("GroupDown", None, &firing.labels);
        labels.insert("group".into(), name.into());
        let mut annotations = BTreeMap::new();
        if let Some(group) = &context.group {
            annotations.insert(
                "summary".into(),
                format!(
                    "group {name} is down: {} of {} members up, {} needed",
                    group.up, group.total, group.need
                ),
            );
            annotations.insert("missing".into(), join(&group.missing));
        }
        if context.unreachable_count > 0 {
            annotations.insert("unreachable".into(), unreachable_note(context));
        }
        let mut url = self.external.clone();
        url.set_fragment(Some(&format!("group={name}")));
        Alert {
            labels,
            annotations,
            starts_at: rfc3339(firing.down_at),
            ends_at: rfc3339(ends_at),
            generator_url: url.to_string(),
        }
    }

    /// The `HostDown` alert of `host`, ending at `ends_at`.
    fn host_alert(
        &self,
        host: &str,
        firing: &Firing,
        now: SystemTime,
        ends_at: SystemTime,
    ) -> Alert {
        let silence = now.duration_since(firing.last_seen).unwrap_or_default();
        let silence = format!("{:.1}s", silence.as_secs_f64());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".into(),
            format!("host {host} is down: silent for {silence}"),
        );
        annotations.insert("address".into(), firing.addr.to_string());
        annotations.insert("last_seen".into(), rfc3339(firing.last_seen));
        annotations.insert("silence".into(), silence);
        let mut labels = self.labels_with("HostDown", Some(host), &firing.labels);
        if let Some(context) = &firing.context {
            if let Some(severity) = &context.severity {
                labels.insert("severity".into(), severity.to_string());
            }
            if context.unreachable_count > 0 {
                annotations.insert("unreachable".into(), unreachable_note(context));
            }
        }
        let mut url = self.external.clone();
        url.set_fragment(Some(&format!("host={host}")));
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
            labels: self.labels("MassSilence", None),
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
        let mut firing: HashMap<Arc<str>, Firing> = HashMap::new();
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
        firing: &mut HashMap<Arc<str>, Firing>,
        mass: &mut Option<MassFiring>,
        alerts: &mut Vec<Alert>,
        resolving: &mut Vec<Alert>,
    ) {
        match event {
            SinkEvent::Host(e) if e.kind.is_group() => {
                let key = group_key(&e.host);
                if let Some(f) = firing.remove(&key) {
                    resolving.push(self.alert(&key, &f, e.at, e.at));
                }
                if e.kind == EventKind::GroupDown {
                    // The group's name travels as the context's parent.
                    let mut context = e.context.as_deref().cloned().unwrap_or_default();
                    context.parent = Some(e.host.clone());
                    let f = Firing {
                        down_at: e.at,
                        addr: e.addr,
                        last_seen: e.at,
                        labels: e.labels.clone(),
                        context: Some(Arc::new(context)),
                        group: true,
                    };
                    alerts.push(self.alert(&key, &f, now, now + self.lease));
                    firing.insert(key, f);
                }
            }
            SinkEvent::Host(Event {
                kind: EventKind::Down,
                host,
                at,
                addr,
                silent_for,
                context,
                labels,
                ..
            }) => {
                let f = Firing {
                    down_at: at,
                    addr,
                    last_seen: at.checked_sub(silent_for).unwrap_or(at),
                    context,
                    group: false,
                    labels,
                };
                alerts.push(self.host_alert(&host, &f, now, now + self.lease));
                firing.insert(host, f);
            }
            SinkEvent::Host(event) => {
                // Any later event leaves the host not down: resolve.
                if let Some(f) = firing.remove(&event.host) {
                    resolving.push(self.host_alert(&event.host, &f, event.at, event.at));
                }
                if let Some(m) = mass
                    && m.remaining.remove(&event.host)
                    && m.remaining.is_empty()
                {
                    resolving.push(self.mass_alert(&m.silence, event.at));
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
            labels: self.labels("LubdubTest", None),
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
