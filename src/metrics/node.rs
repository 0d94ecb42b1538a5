//! The node's metrics: its verdict and rotation, the checks, the maintenance switch, the build,
//! and the time rolecall itself was frozen.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Labels, labels, register};
use crate::snapshot::Snapshot;
use crate::verdict::Verdict;

/// The revision rolecall was built from: `build.rs` sets it from git, when there is one.
const REVISION: &str = match option_env!("ROLECALL_REVISION") {
    Some(r) => r,
    None => "unknown",
};

pub(super) struct Node {
    verdict: Family<Labels, Gauge>,
    in_rotation: Gauge,
    checks: Counter,
    changes: Counter,
    check_duration: Histogram,
    last_check: Gauge<f64, AtomicU64>,
    maintenance: Gauge,
}

impl Node {
    pub(super) fn register(r: &mut Registry) -> Node {
        let build: Family<Labels, Gauge> = register(
            r,
            "build_info",
            "1, labelled with rolecall's version and the git revision it was built from",
            Family::default(),
        );
        build
            .get_or_create(&labels(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", REVISION),
            ]))
            .set(1);
        r.register_collector(Box::new(Frozen));
        Node {
            verdict: register(r, "verdict", VERDICT, Family::default()),
            in_rotation: register(r, "in_rotation", IN_ROTATION, Gauge::default()),
            checks: register(r, "checks", "Complete checks", Counter::default()),
            changes: register(r, "verdict_changes", CHANGES, Counter::default()),
            check_duration: register(
                r,
                "check_duration_seconds",
                "Duration of one complete check",
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            ),
            last_check: register(r, "last_check_timestamp_seconds", LAST, Gauge::default()),
            maintenance: register(r, "maintenance", MAINTENANCE, Gauge::default()),
        }
    }

    pub(super) fn set_maintenance(&self, on: bool) {
        self.maintenance.set(i64::from(on));
    }

    pub(super) fn verdict_changed(&self) {
        self.changes.inc();
    }

    /// Records the check of `s`, completed at `unix_now`.
    pub(super) fn observe(&self, s: &Snapshot, unix_now: f64) {
        self.checks.inc();
        self.check_duration.observe(s.check_duration_ms / 1000.0);
        self.last_check.set(unix_now);
        for v in Verdict::ALL {
            self.verdict
                .get_or_create(&labels(&[("verdict", v.as_str())]))
                .set(i64::from(v == s.verdict));
        }
        self.in_rotation.set(i64::from(s.in_rotation));
    }
}

const VERDICT: &str = "1 for the node's current verdict, 0 for the others";
const IN_ROTATION: &str = "1 when rolecall tells load balancers to send traffic to the node";
const CHANGES: &str = "Changes of the published verdict or rotation";
const LAST: &str = "When the last complete check ended, in seconds since the Unix epoch";
const MAINTENANCE: &str = "1 while the operator's maintenance switch is on";
const FROZEN: &str = "Time rolecall itself was not running (stopped, frozen VM or container), left out of grace periods, holds and snapshot ages.";

/// `frozen_seconds_total`, read at the scrape (a collector's help gets no `.` added, unlike a
/// registered metric's): a freeze that just ended shows before the next
/// check. It only grows, so it is a counter.
#[derive(Debug)]
struct Frozen;

impl Collector for Frozen {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let frozen = ConstCounter::new(crate::runclock::frozen().as_secs_f64());
        let metric =
            encoder.encode_descriptor("frozen_seconds", FROZEN, None, frozen.metric_type())?;
        frozen.encode(metric)
    }
}
