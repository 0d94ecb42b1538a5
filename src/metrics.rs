//! Prometheus metrics, updated by the check loop (the one writer) and encoded on a scrape.
//!
//! The values are atomics inside `prometheus-client` families, so a scrape never waits on a
//! check.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::snapshot::{FleetStatus, GuardState, Snapshot};
use crate::verdict::Verdict;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    verdict: Family<Labels, Gauge>,
    in_rotation: Gauge,
    checks: Counter,
    changes: Counter,
    check_duration: Histogram,
    sentinel_up: Family<Labels, Gauge>,
    node_connections: Family<Labels, Gauge>,
    probe_ok: Family<Labels, Gauge>,
    server_latency: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    maintenance: Gauge,
    repair_kills: Counter,
    master_by_election: Family<Labels, Gauge>,
    frozen: Gauge<f64, std::sync::atomic::AtomicU64>,
    software: Family<Labels, Gauge>,
    fleet_guard: Family<Labels, Gauge>,
    fleet_members: Gauge,
    fleet_in_rotation: Gauge,
    fleet_floor: Gauge,
    /// Label sets written by the previous check, so vanished ones are removed.
    last_servers: Mutex<Vec<Labels>>,
    last_software: Mutex<Vec<Labels>>,
}

/// Registers `metric` and returns the handle the check loop updates.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rolecall");
        let r = &mut registry;
        // Struct fields are evaluated in the order written: the order of the exposition.
        Metrics {
            verdict: register(
                r,
                "verdict",
                "1 for the node's current verdict, 0 for the others",
                Family::default(),
            ),
            in_rotation: register(
                r,
                "in_rotation",
                "1 when rolecall tells load balancers to send traffic to the node",
                Gauge::default(),
            ),
            checks: register(r, "checks", "Complete checks", Counter::default()),
            changes: register(
                r,
                "verdict_changes",
                "Changes of the published verdict or rotation",
                Counter::default(),
            ),
            check_duration: register(
                r,
                "check_duration_seconds",
                "Duration of one complete check",
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            ),
            sentinel_up: register(
                r,
                "sentinel_up",
                "1 when the sentinel answered the last check",
                Family::default(),
            ),
            node_connections: register(
                r,
                "node_connections",
                "The node's live connections to the group's servers",
                Family::default(),
            ),
            probe_ok: register(
                r,
                "probe_write_ok",
                "1 when the write probe on Sentinel's master succeeded",
                Family::default(),
            ),
            server_latency: register(
                r,
                "server_role_latency_seconds",
                "Latency of ROLE on each server asked in the last check",
                Family::default(),
            ),
            maintenance: register(
                r,
                "maintenance",
                "1 while the operator's maintenance switch is on",
                Gauge::default(),
            ),
            repair_kills: register(
                r,
                "repair_kills",
                "Node connections killed by the repair (CLIENT KILL)",
                Counter::default(),
            ),
            master_by_election: register(
                r,
                "master_by_election",
                "1 while the group's master is the one named by a failover leader a majority of the sentinels elected, before the majority names it",
                Family::default(),
            ),
            frozen: register(
                r,
                "frozen_seconds",
                "Time rolecall itself was not running (stopped, frozen VM or container), left out of grace periods, holds and snapshot ages",
                Gauge::default(),
            ),
            software: register(
                r,
                "software_info",
                "1 for each server and sentinel, labelled with what it runs (redis or valkey) and its version, from INFO server",
                Family::default(),
            ),
            fleet_guard: register(
                r,
                "fleet_guard",
                "1 for the fleet guard's state in the last check (holding and waiting: it keeps the node in rotation against its verdict), 0 for the others",
                Family::default(),
            ),
            fleet_members: register(
                r,
                "fleet_members",
                "Nodes of the fleet recently in rotation, as the registry last showed",
                Gauge::default(),
            ),
            fleet_in_rotation: register(
                r,
                "fleet_in_rotation",
                "Nodes of the fleet in rotation, as the registry last showed",
                Gauge::default(),
            ),
            fleet_floor: register(
                r,
                "fleet_floor",
                "The fewest nodes of the fleet the guard keeps in rotation, as last computed",
                Gauge::default(),
            ),
            registry,
            last_servers: Mutex::new(Vec::new()),
            last_software: Mutex::new(Vec::new()),
        }
    }

    fn observe_fleet(&self, f: &FleetStatus) {
        for state in [
            GuardState::Off,
            GuardState::Idle,
            GuardState::Holding,
            GuardState::Waiting,
            GuardState::Released,
            GuardState::Unreachable,
        ] {
            self.fleet_guard
                .get_or_create(&vec![("state".to_string(), state.as_str().to_string())])
                .set(i64::from(state == f.guard));
        }
        let set = |g: &Gauge, v: Option<usize>| {
            if let Some(v) = v {
                g.set(v as i64);
            }
        };
        set(&self.fleet_members, f.members);
        set(&self.fleet_in_rotation, f.in_rotation);
        set(&self.fleet_floor, f.floor);
    }

    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.set(i64::from(on));
    }

    pub fn verdict_changed(&self) {
        self.changes.inc();
    }

    /// Records one completed check.
    pub fn observe_check(&self, s: &Snapshot) {
        self.checks.inc();
        self.check_duration.observe(s.check_duration_ms / 1000.0);
        for v in Verdict::ALL {
            self.verdict
                .get_or_create(&vec![("verdict".to_string(), v.as_str().to_string())])
                .set(i64::from(v == s.verdict));
        }
        self.in_rotation.set(i64::from(s.in_rotation));
        self.observe_fleet(&s.fleet);
        let mut servers = Vec::new();
        for g in &s.groups {
            let group = ("group".to_string(), g.name.clone());
            for sen in &g.sentinels {
                self.sentinel_up
                    .get_or_create(&vec![
                        group.clone(),
                        ("sentinel".to_string(), sen.addr.to_string()),
                    ])
                    .set(i64::from(sen.error.is_none()));
            }
            self.node_connections
                .get_or_create(&vec![group.clone()])
                .set(g.connections.len() as i64);
            self.master_by_election
                .get_or_create(&vec![group.clone()])
                .set(i64::from(g.elected.is_some()));
            if let Some(r) = &g.repair {
                self.repair_kills.inc_by(r.killed.len() as u64);
            }
            self.probe_ok
                .get_or_create(&vec![group.clone()])
                .set(i64::from(g.probe.as_ref().is_some_and(|p| p.ok)));
            for srv in &g.servers {
                let labels = vec![group.clone(), ("server".to_string(), srv.addr.to_string())];
                if let Some(l) = srv.latency_ms {
                    self.server_latency.get_or_create(&labels).set(l / 1000.0);
                    servers.push(labels);
                }
            }
        }
        forget_vanished(&self.server_latency, &self.last_servers, servers);
        let mut software = Vec::new();
        for g in &s.groups {
            let servers = g.servers.iter().map(|x| ("server", &x.addr, &x.software));
            let sentinels = g
                .sentinels
                .iter()
                .map(|x| ("sentinel", &x.addr, &x.software));
            for (kind, addr, sw) in servers.chain(sentinels) {
                let Some(sw) = sw else { continue };
                let labels = vec![
                    ("group".to_string(), g.name.clone()),
                    ("kind".to_string(), kind.to_string()),
                    ("addr".to_string(), addr.to_string()),
                    ("software".to_string(), sw.name.clone()),
                    ("version".to_string(), sw.version.clone()),
                ];
                self.software.get_or_create(&labels).set(1);
                software.push(labels);
            }
        }
        forget_vanished(&self.software, &self.last_software, software);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        // Read at the scrape: a freeze that just ended shows before the next check.
        self.frozen.set(crate::runclock::frozen().as_secs_f64());
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Removes from `family` the label sets of the previous check (`last`) that this check did not
/// write (`now`), and remembers `now`.
fn forget_vanished<M: Default>(
    family: &Family<Labels, M>,
    last: &Mutex<Vec<Labels>>,
    now: Vec<Labels>,
) {
    // A poisoned lock only means a panic elsewhere; the list is still usable.
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    for old in last.iter() {
        if !now.contains(old) {
            family.remove(old);
        }
    }
    *last = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn metrics_show_the_verdict_and_check_duration() {
        let m = Metrics::new();
        let mut s = Snapshot::starting(
            crate::snapshot::NodeStatus {
                name: "n".into(),
                selector: "pid 1".into(),
                pids: vec![],
                running: true,
            },
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        s.verdict = Verdict::StuckOnReplica;
        s.check_duration_ms = 2.0;
        m.observe_check(&s);
        let text = m.encode();
        assert!(
            text.contains("rolecall_verdict{verdict=\"stuck_on_replica\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rolecall_verdict{verdict=\"ok\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("rolecall_check_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("rolecall_in_rotation 0"), "{text}");
        assert!(text.contains("rolecall_maintenance 0"), "{text}");
        m.set_maintenance(true);
        assert!(m.encode().contains("rolecall_maintenance 1"));
        assert!(text.contains("rolecall_repair_kills_total 0"), "{text}");
        assert!(text.contains("rolecall_frozen_seconds 0.0"), "{text}");
    }
}
