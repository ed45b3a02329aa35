//! State changes per second with group bookkeeping, against a same-run
//! baseline without it (issue 17).
//!
//! 100,000 hosts join, go `late`, go `down` and recover: four state
//! changes each, 400,000 in all, driven through the core (`expire`,
//! `observe`). Once with no group (the baseline), once with all of them
//! in one group (`min_up_ratio = 0.5`, so the group also goes down and
//! recovers once, listing its missing members each time), once with each
//! host also depending on a parent host that stays up. Prints state
//! changes per second and the ratio to the baseline; the run's figures go
//! in docs/BENCHMARKS.md.
//!
//! Run: `cargo bench --bench groups` (`GROUP_HOSTS` to change the count).

use lubdub::config::ServerConfig;
use lubdub::config::groups::{DependencyConfig, GroupConfig};
use lubdub::monitor::groups::Spec;
use lubdub::monitor::{Monitor, Observation, Outcome};
use lubdub::select::Selection;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

fn spec(groups: Vec<GroupConfig>, dependencies: Vec<DependencyConfig>) -> (ServerConfig, Spec) {
    let config = ServerConfig {
        timeout: Duration::from_secs(30),
        groups,
        dependencies,
        ..ServerConfig::for_tests()
    };
    let valid = config.validate().expect("valid config");
    let spec = valid.topology().clone();
    (config, spec)
}

/// One run: the state changes made and how long they took.
fn run(hosts: usize, config: &ServerConfig, spec: Spec) -> (u64, Duration, u64) {
    let settings = config.validate().expect("valid").monitor().clone();
    let start = Instant::now();
    let wall = SystemTime::now();
    let mut monitor = Monitor::new(settings, start, wall);
    monitor.set_topology(spec, start);
    let ids: Vec<String> = (0..hosts).map(|i| format!("web-{i:06}")).collect();
    let addr = SocketAddr::from(([10, 0, 0, 1], 5000));
    fn beat(id: &str, seq: u64, addr: SocketAddr) -> Observation<'_> {
        Observation {
            seq: Some(seq),
            interval_ms: 10_000,
            boot_id: [1; 16],
            ..Observation::legacy(id, addr)
        }
    }
    // The parent beats first and again just before the others go silent.
    let mut out = Outcome::default();
    let timer = Instant::now();
    let (mut changes, mut group_events) = (0u64, 0u64);
    let mut count = |out: &mut Outcome| {
        for e in &out.events {
            if e.kind.is_group() {
                group_events += 1;
            } else {
                changes += 1;
            }
        }
        out.clear();
    };
    monitor.observe(&beat("parent", 1, addr), start, wall, &mut out);
    for id in &ids {
        monitor.observe(&beat(id, 1, addr), start, wall, &mut out);
    }
    count(&mut out);
    let parent_beat = |m: &mut Monitor, at: Instant, seq, out: &mut Outcome| {
        m.observe(&beat("parent", seq, addr), at, wall, out);
    };
    let t = |s: u64| start + Duration::from_secs(s);
    parent_beat(&mut monitor, t(14), 2, &mut out);
    monitor.expire(t(16), wall, &mut out); // late
    count(&mut out);
    parent_beat(&mut monitor, t(28), 3, &mut out);
    monitor.expire(t(31), wall, &mut out); // down
    count(&mut out);
    for id in &ids {
        monitor.observe(&beat(id, 2, addr), t(32), wall, &mut out); // recovered
    }
    count(&mut out);
    let took = timer.elapsed();
    // The parent's own events are not the hosts' changes.
    (changes - 1, took, group_events)
}

fn main() {
    let hosts: usize = std::env::var("GROUP_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let web = || GroupConfig {
        name: "web".into(),
        members: Selection {
            hosts: vec!["web-*".into()],
            ..Selection::default()
        },
        min_up_ratio: Some(0.5),
        ..GroupConfig::default()
    };
    let behind = || DependencyConfig {
        dependents: Selection {
            hosts: vec!["web-*".into()],
            ..Selection::default()
        },
        depends_on: Some("parent".into()),
        depends_on_group: None,
    };
    let cases = [
        ("no group (baseline)", spec(vec![], vec![])),
        ("one group of all", spec(vec![web()], vec![])),
        ("group + dependency", spec(vec![web()], vec![behind()])),
    ];
    let mut baseline = None;
    for (name, (config, spec)) in cases {
        // Best of three: the machine is shared.
        let best = (0..3)
            .map(|_| run(hosts, &config, spec.clone()))
            .min_by_key(|r| r.1)
            .expect("three runs");
        let (changes, took, groups) = best;
        assert_eq!(
            changes,
            4 * hosts as u64,
            "{name}: every host changed state 4 times"
        );
        let per_sec = changes as f64 / took.as_secs_f64();
        let base = *baseline.get_or_insert(per_sec);
        println!(
            "{name:<22} {hosts} hosts: {changes} state changes in {took:?}: {:.2} M/s ({:.2} of baseline; {groups} group events)",
            per_sec / 1e6,
            per_sec / base
        );
    }
}
