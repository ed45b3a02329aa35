//! Redundancy groups and dependencies end to end: a pool that pages only
//! below its quorum, a switch whose dead rack is one page, and a real
//! Alertmanager that gets `GroupDown` and no `HostDown` for the rack.
//! See: issue 17.

use crate::util::{Alertmanager, Proc, Server, client, wait_until};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The server's events (from the API) of `kind` about `host`.
fn api_events(server: &Server, kind: &str, host: &str) -> Vec<Value> {
    let events = server.get_json("/api/v1/events?limit=10000");
    events
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["kind"] == kind && e["host"] == host)
        .cloned()
        .collect()
}

fn count_kind(server: &Server, kind: &str) -> usize {
    server.events().iter().filter(|e| e.kind == kind).count()
}

#[test]
fn a_pool_of_six_pages_once_at_the_fourth_member_down_then_recovers() {
    let server = Server::with_config(
        r#"
[[server.groups]]
name = "web"
members = { hosts = ["web-*"] }
min_up = 3
"#,
        &["--timeout", "1s"],
    );
    let web = ids("web-", 6);
    let mut clients = server.join_all(&web, WAIT);
    for c in &mut clients[..3] {
        c.kill();
    }
    for id in &web[..3] {
        assert!(server.wait_event(id, "down", WAIT), "{id} down");
    }
    let group = &server.get_json("/api/v1/groups")[0];
    assert_eq!(
        (
            &group["state"],
            &group["up"],
            &group["total"],
            &group["need"]
        ),
        (&"up".into(), &3.into(), &6.into(), &3.into()),
        "{group}"
    );
    assert_eq!(count_kind(&server, "group-down"), 0, "3 down of 6: no page");
    clients[3].kill();
    assert!(server.wait_event("web", "group-down", WAIT));
    let down = api_events(&server, "group-down", "web");
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(
        down[0]["missing"],
        serde_json::json!(["web-0", "web-1", "web-2", "web-3"])
    );
    assert_eq!(server.get_json("/api/v1/groups")[0]["state"], "down");
    let _back = client(&[server.udp], "web-3", &[]);
    assert!(server.wait_event("web", "group-recovered", WAIT));
    assert_eq!(server.get_json("/api/v1/groups")[0]["state"], "up");
    assert_eq!(count_kind(&server, "group-down"), 1);
}

const RACK: &str = r#"
[[server.dependencies]]
dependents = { hosts = ["rack-*"] }
depends_on = "rack-sw"
"#;

#[test]
fn a_dead_switch_is_one_down_naming_its_ten_unreachable_hosts() {
    let server = Server::with_config(RACK, &["--timeout", "2s"]);
    let hosts = ids("rack-h", 10);
    let mut all: Vec<String> = hosts.clone();
    all.push("rack-sw".into());
    let mut clients = server.join_all(&all, WAIT);
    for c in &mut clients {
        c.kill();
    }
    assert!(server.wait_event("rack-sw", "down", WAIT));
    assert!(
        wait_until(WAIT, || hosts
            .iter()
            .all(|h| server.state_of(h).as_deref() == Some("unreachable"))),
        "{:?}",
        server.events()
    );
    let down = api_events(&server, "down", "rack-sw");
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["unreachable_count"], 10, "{}", down[0]);
    assert_eq!(down[0]["unreachable"].as_array().map(Vec::len), Some(10));
    assert_eq!(count_kind(&server, "down"), 1, "no down for the 10");
    let host = server.get_json("/api/v1/hosts/rack-h0");
    assert_eq!(host["depends_on"], "rack-sw", "{host}");
    // Nine come back while the switch is still down, then the switch:
    // rack-h0 stays dead and is judged one timeout after the switch.
    let _nine: Vec<Proc> = hosts[1..]
        .iter()
        .map(|h| client(&[server.udp], h, &[]))
        .collect();
    for h in &hosts[1..] {
        assert!(server.wait_event(h, "recovered", WAIT), "{h}");
    }
    let _switch = client(&[server.udp], "rack-sw", &[]);
    assert!(server.wait_event("rack-sw", "recovered", WAIT));
    assert!(server.wait_event("rack-h0", "down", WAIT));
    let at = |kind, host| {
        server
            .events()
            .into_iter()
            .find(|e| e.kind == kind && e.host == host)
            .map(|e| e.at)
            .expect("event")
    };
    let waited = at("down", "rack-h0")
        .duration_since(at("recovered", "rack-sw"))
        .expect("after the switch");
    assert!(
        waited >= Duration::from_millis(1900),
        "judged after {waited:?}"
    );
    for h in &hosts[1..] {
        assert_eq!(server.state_of(h).as_deref(), Some("up"), "{h}");
    }
    assert_eq!(count_kind(&server, "down"), 2);
}

#[test]
fn alertmanager_gets_group_down_with_its_labels_and_no_host_down_behind_a_switch() {
    let am = Alertmanager::start();
    let server = Server::with_config(
        &format!(
            r#"{}
# Only what carries team=web: the group's alert, by the labels it declares.
[[server.sinks.alertmanager]]
urls = ["{url}"]
match_labels = {{ team = "web" }}
labels = {{ via = "team" }}

[[server.groups]]
name = "web"
members = {{ hosts = ["web-*"] }}
min_up = 2
labels = {{ team = "web" }}
member_severity = "ticket"
{RACK}"#,
            am.sink("30s"),
            url = am.url
        ),
        &["--timeout", "2s"],
    );
    let mut web = server.join_all(&ids("web-", 3), WAIT);
    let rack = ids("rack-h", 3);
    let mut all = rack.clone();
    all.push("rack-sw".into());
    let mut behind = server.join_all(&all, WAIT);
    for c in web[..2].iter_mut().chain(behind.iter_mut()) {
        c.kill();
    }
    let group_alert = || {
        am.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "GroupDown")
    };
    assert!(
        wait_until(WAIT, || group_alert().is_some()),
        "{:?}",
        am.alerts()
    );
    let alert = group_alert().expect("GroupDown");
    assert_eq!(alert["labels"]["group"], "web", "{alert}");
    assert_eq!(alert["labels"]["team"], "web", "{alert}");
    let via_team = || {
        am.alerts()
            .into_iter()
            .filter(|a| a["labels"]["via"] == "team")
            .map(|a| a["labels"]["alertname"].clone())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(WAIT, || !via_team().is_empty()),
        "the team=web sink got the group's alert: {:?}",
        am.alerts()
    );
    assert!(wait_until(WAIT, || !am.alerts_for("rack-sw").is_empty()));
    let sw = &am.alerts_for("rack-sw")[0];
    assert!(
        sw["annotations"]["unreachable"]
            .as_str()
            .is_some_and(|u| u.starts_with("3 hosts: ")),
        "{sw}"
    );
    assert!(wait_until(WAIT, || !am.alerts_for("web-0").is_empty()));
    assert_eq!(am.alerts_for("web-0")[0]["labels"]["severity"], "ticket");
    assert!(wait_until(WAIT, || rack
        .iter()
        .all(|h| server.state_of(h).as_deref() == Some("unreachable"))));
    // A resend after every dependent is unreachable: still none of theirs.
    let sent = |s: &Server| {
        s.metric(r#"lubdub_sink_deliveries_total{sink="alertmanager0",outcome="sent"}"#)
            .unwrap_or(0.0)
    };
    let before = sent(&server);
    assert!(wait_until(WAIT, || sent(&server) >= before + 2.0));
    for h in &rack {
        assert!(am.alerts_for(h).is_empty(), "{h}: {:?}", am.alerts_for(h));
    }
    assert_eq!(via_team(), ["GroupDown"], "no host carries team=web");
}
