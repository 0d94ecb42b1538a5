//! Prometheus metrics, updated by the check loop (the one writer) and encoded on a scrape, in
//! the format the scraper asked for.
//!
//! The values are atomics inside `prometheus-client` families, so a scrape never waits on a
//! check. What only the scrape can know (the process' CPU, memory and descriptors; the time
//! rolecall was frozen) is read by collectors at the scrape. The parts:
//!
//! - `format`: the two expositions (OpenMetrics 1.0.0 and Prometheus text 0.0.4), chosen by
//!   the scrape's `Accept`, each served with its own content type.
//! - `node`: the node's verdict, rotation and checks; the build; the frozen time.
//! - `group`: per group: verdict, master, sentinels, servers, errors by stage and class.
//! - `fleet`: the fleet guard.
//! - `process`: the standard `process_*` metrics, read from `/proc/self` at each scrape.
//!
//! Later modules feed their counters through plain-valued methods ([`Metrics::sentinel_event`],
//! [`Metrics::haproxy_push`]), so this module imports only the snapshot.

mod fleet;
mod format;
mod group;
mod node;
mod process;

use std::sync::Mutex;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};

pub use format::Format;

use crate::snapshot::Snapshot;

type Labels = Vec<(String, String)>;

/// A label set from `(name, value)` pairs.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers `metric` and returns the handle the check loop updates.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

pub struct Metrics {
    registry: Registry,
    node: node::Node,
    groups: group::Groups,
    fleet: fleet::Fleet,
    /// `sentinel_events_total{group,kind}`: fed by the event subscriptions.
    sentinel_events: Family<Labels, Counter>,
    /// `haproxy_pushes_total{api}` and `haproxy_push_errors_total{api,reason}`: fed by the push.
    pushes: Family<Labels, Counter>,
    push_errors: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::Process));
        let r = registry.sub_registry_with_prefix("rolecall");
        // Registered in the order of the exposition.
        let node = node::Node::register(r);
        let groups = group::Groups::register(r);
        let fleet = fleet::Fleet::register(r);
        let sentinel_events = register(
            r,
            "sentinel_events",
            "Sentinel events heard about the group's master, by channel (every sentinel's copy counts)",
            Family::default(),
        );
        let pushes = register(
            r,
            "haproxy_pushes",
            "Changes pushed to an HAProxy runtime API, whether or not they took",
            Family::default(),
        );
        let push_errors = register(
            r,
            "haproxy_push_errors",
            "Pushes to an HAProxy runtime API that failed: io, timeout or refused",
            Family::default(),
        );
        Metrics {
            registry,
            node,
            groups,
            fleet,
            sentinel_events,
            pushes,
            push_errors,
        }
    }

    pub fn set_maintenance(&self, on: bool) {
        self.node.set_maintenance(on);
    }

    pub fn verdict_changed(&self) {
        self.node.verdict_changed();
    }

    /// Records one completed check.
    pub fn observe_check(&self, s: &Snapshot) {
        self.node.observe(s, unix_now());
        self.groups.observe(s);
        self.fleet.observe(&s.fleet);
    }

    /// One Sentinel event about `group`'s master, heard on channel `kind` (`+switch-master`…).
    pub fn sentinel_event(&self, group: &str, kind: &str) {
        self.sentinel_events
            .get_or_create(&labels(&[("group", group), ("kind", kind)]))
            .inc();
    }

    /// One push to the HAProxy runtime API `api`, and why it failed (`None`: it took).
    pub fn haproxy_push(&self, api: &str, failed: Option<&str>) {
        self.pushes.get_or_create(&labels(&[("api", api)])).inc();
        if let Some(reason) = failed {
            self.push_errors
                .get_or_create(&labels(&[("api", api), ("reason", reason)]))
                .inc();
        }
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        let written = match format {
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
            Format::Text => prometheus_text::encode(&mut out, &self.registry),
        };
        // Writing to a String fails only if a collector fails, and none does.
        if written.is_err() {
            out.clear();
        }
        out
    }
}

/// Seconds since the Unix epoch, for timestamps.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
mod tests;
