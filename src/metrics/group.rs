//! Per-group metrics: the group's verdict and master, its sentinels and servers, the node's
//! connections, the write probe, and the errors of each check by stage and class.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Labels, forget_vanished, labels, register};
use crate::snapshot::{GroupStatus, Snapshot};
use crate::verdict::Verdict;

/// The stages of a check that can fail, per group: a sentinel's answer, a server's `ROLE`, the
/// write probe, the kill repair.
const STAGES: [&str; 4] = ["sentinel", "role", "probe", "repair"];

pub(super) struct Groups {
    verdict: Family<Labels, Gauge>,
    master: Family<Labels, Gauge>,
    by_election: Family<Labels, Gauge>,
    sentinel_up: Family<Labels, Gauge>,
    node_connections: Family<Labels, Gauge>,
    probe_ok: Family<Labels, Gauge>,
    server_latency: Family<Labels, Gauge<f64, AtomicU64>>,
    software: Family<Labels, Gauge>,
    check_errors: Family<Labels, Counter>,
    probe_errors: Family<Labels, Counter>,
    repair_kills: Counter,
    /// Label sets written by the previous check, so vanished ones are removed.
    last: Last,
}

#[derive(Default)]
struct Last {
    master: Mutex<Vec<Labels>>,
    sentinels: Mutex<Vec<Labels>>,
    servers: Mutex<Vec<Labels>>,
    software: Mutex<Vec<Labels>>,
}

/// The label sets one check wrote into the families that forget what vanished.
#[derive(Default)]
struct Seen {
    master: Vec<Labels>,
    sentinels: Vec<Labels>,
    servers: Vec<Labels>,
    software: Vec<Labels>,
}

impl Groups {
    pub(super) fn register(r: &mut Registry) -> Groups {
        Groups {
            verdict: register(r, "group_verdict", GROUP_VERDICT, Family::default()),
            master: register(r, "master_info", MASTER, Family::default()),
            by_election: register(r, "master_by_election", BY_ELECTION, Family::default()),
            sentinel_up: register(r, "sentinel_up", SENTINEL_UP, Family::default()),
            node_connections: register(r, "node_connections", CONNECTIONS, Family::default()),
            probe_ok: register(r, "probe_write_ok", PROBE_OK, Family::default()),
            server_latency: register(r, "server_role_latency_seconds", LATENCY, Family::default()),
            software: register(r, "software_info", SOFTWARE, Family::default()),
            check_errors: register(r, "check_errors", CHECK_ERRORS, Family::default()),
            probe_errors: register(r, "probe_errors", PROBE_ERRORS, Family::default()),
            repair_kills: register(r, "repair_kills", KILLS, Counter::default()),
            last: Last::default(),
        }
    }

    pub(super) fn observe(&self, s: &Snapshot) {
        let mut seen = Seen::default();
        for g in &s.groups {
            self.observe_verdict(g);
            self.observe_sentinels(g, &mut seen);
            self.observe_servers(g, &mut seen);
            self.count_errors(g);
        }
        forget_vanished(&self.master, &self.last.master, seen.master);
        forget_vanished(&self.sentinel_up, &self.last.sentinels, seen.sentinels);
        forget_vanished(&self.server_latency, &self.last.servers, seen.servers);
        forget_vanished(&self.software, &self.last.software, seen.software);
    }

    fn observe_verdict(&self, g: &GroupStatus) {
        for v in Verdict::ALL {
            self.verdict
                .get_or_create(&labels(&[("group", &g.name), ("verdict", v.as_str())]))
                .set(i64::from(v == g.verdict));
        }
        let group = labels(&[("group", &g.name)]);
        self.node_connections
            .get_or_create(&group)
            .set(g.connections.len() as i64);
        self.by_election
            .get_or_create(&group)
            .set(i64::from(g.elected.is_some()));
        self.probe_ok
            .get_or_create(&group)
            .set(i64::from(g.probe.as_ref().is_some_and(|p| p.ok)));
        if let Some(r) = &g.repair {
            self.repair_kills.inc_by(r.killed.len() as u64);
        }
    }

    fn observe_sentinels(&self, g: &GroupStatus, seen: &mut Seen) {
        if let Some(m) = &g.master {
            let l = labels(&[("group", &g.name), ("master", &m.to_string())]);
            self.master.get_or_create(&l).set(1);
            seen.master.push(l);
        }
        for sen in &g.sentinels {
            let l = labels(&[("group", &g.name), ("sentinel", &sen.addr.to_string())]);
            self.sentinel_up
                .get_or_create(&l)
                .set(i64::from(sen.error.is_none()));
            seen.sentinels.push(l);
            self.observe_software(g, "sentinel", &sen.addr.to_string(), &sen.software, seen);
        }
    }

    fn observe_servers(&self, g: &GroupStatus, seen: &mut Seen) {
        for srv in &g.servers {
            let addr = srv.addr.to_string();
            if let Some(ms) = srv.latency_ms {
                let l = labels(&[("group", &g.name), ("server", &addr)]);
                self.server_latency.get_or_create(&l).set(ms / 1000.0);
                seen.servers.push(l);
            }
            self.observe_software(g, "server", &addr, &srv.software, seen);
        }
    }

    fn observe_software(
        &self,
        g: &GroupStatus,
        kind: &str,
        addr: &str,
        software: &Option<crate::conn::Software>,
        seen: &mut Seen,
    ) {
        let Some(sw) = software else { return };
        let l = labels(&[
            ("group", &g.name),
            ("kind", kind),
            ("addr", addr),
            ("software", &sw.name),
            ("version", &sw.version),
        ]);
        self.software.get_or_create(&l).set(1);
        seen.software.push(l);
    }

    /// Counts this check's failures by stage (every stage of every group, so each series
    /// exists from the first check on) and the write probe's by class.
    fn count_errors(&self, g: &GroupStatus) {
        let sentinel = g.sentinels.iter().filter(|s| s.error.is_some()).count();
        let role = g.servers.iter().filter(|s| s.error.is_some()).count();
        let probe = g.probe.as_ref().filter(|p| !p.ok);
        let repair = g.repair.as_ref().filter(|r| r.error.is_some());
        let counts = [
            sentinel,
            role,
            usize::from(probe.is_some()),
            usize::from(repair.is_some()),
        ];
        for (stage, n) in STAGES.iter().zip(counts) {
            self.check_errors
                .get_or_create(&labels(&[("group", &g.name), ("stage", stage)]))
                .inc_by(n as u64);
        }
        if let Some(class) = probe.and_then(|p| p.error_class) {
            self.probe_errors
                .get_or_create(&labels(&[("group", &g.name), ("class", class.as_str())]))
                .inc();
        }
    }
}

const GROUP_VERDICT: &str = "1 for the group's current verdict, 0 for the others";
const MASTER: &str = "1 for the group's master (named by the sentinels' majority or by the failover leader they elected); no series while there is none";
const BY_ELECTION: &str = "1 while the group's master is the one named by a failover leader a majority of the sentinels elected, before the majority names it";
const SENTINEL_UP: &str = "1 when the sentinel answered the last check";
const CONNECTIONS: &str = "The node's live connections to the group's servers";
const PROBE_OK: &str = "1 when the write probe on Sentinel's master succeeded";
const LATENCY: &str = "Latency of ROLE on each server asked in the last check";
const SOFTWARE: &str = "1 for each server and sentinel, labelled with what it runs (redis or valkey) and its version, from INFO server";
const CHECK_ERRORS: &str = "Failures in checks, by group and stage: a sentinel that did not answer, a server whose ROLE failed, a failed write probe, a failed kill repair";
const PROBE_ERRORS: &str = "Failed write probes on the group's master, by class of error (readonly, no_replicas, misconf, oom, timeout, auth...)";
const KILLS: &str = "Node connections killed by the repair (CLIENT KILL)";
