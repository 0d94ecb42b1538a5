//! The published state: one immutable [`Snapshot`] per check, written only by the check loop
//! and read by every server (agent, HTTP, metrics) without waiting on Redis.
//!
//! Readers hold an `Arc<Snapshot>` copied out of a `tokio::sync::watch` channel; nobody keeps
//! a borrow across an `.await`. What depends on the time of reading (is the snapshot stale?
//! has a wedged check loop been blind long enough to fail open?) is computed by
//! [`Snapshot::at`], so a stuck check loop is visible to every reader.
//!
//! [`History`] keeps the last [`HISTORY`] changes of the published verdict or rotation, with
//! their wall-clock times and causes, for `/status`, the page at `/` and `rolecall status`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::conn::{ErrorClass, ServerAddr, Software};
use crate::sentinel::Found;
use crate::verdict::{Placement, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub verdict: Verdict,
    pub in_rotation: bool,
    pub reason: String,
    /// What the last check alone saw, before rise/fall thresholds and grace periods.
    pub observed: Verdict,
    pub observed_reason: String,
    /// False until the first complete check.
    pub checked: bool,
    /// Number of complete checks so far.
    pub checks: u64,
    pub check_duration_ms: f64,
    pub node: NodeStatus,
    pub groups: Vec<GroupStatus>,
    /// The fleet guard, as of this check.
    pub fleet: FleetStatus,
    /// When this check completed (reader-side staleness).
    #[serde(skip)]
    pub completed: Option<Instant>,
    /// A snapshot older than this is stale: the check loop is not making progress.
    #[serde(skip)]
    pub stale_after: Duration,
    /// Blind for this long (stale), rolecall fails open like any `unknown`.
    #[serde(skip)]
    pub fail_open_after: Duration,
}

/// What the fleet guard did in a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardState {
    /// `fleet.guard = false`.
    Off,
    /// Nothing to guard: the node is in rotation, or out on evidence only it has.
    #[default]
    Idle,
    /// The node would be out on a condition the fleet may share; the guard keeps it in to hold
    /// the floor.
    Holding,
    /// Another rolecall of the fleet is deciding (it holds the registry's lock): in rotation
    /// until the next check.
    Waiting,
    /// The floor holds without this node: out of rotation.
    Released,
    /// The registry cannot be read or written: today's rules, the node goes out.
    Unreachable,
}

impl GuardState {
    /// Whether the guard keeps the node in rotation against its verdict.
    pub fn holds_in(self) -> bool {
        matches!(self, GuardState::Holding | GuardState::Waiting)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuardState::Off => "off",
            GuardState::Idle => "idle",
            GuardState::Holding => "holding",
            GuardState::Waiting => "waiting",
            GuardState::Released => "released",
            GuardState::Unreachable => "unreachable",
        }
    }
}

/// The fleet guard in `/status`: the registry and what the last look at it showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetStatus {
    pub guard: GuardState,
    /// The registry's name: the rolecalls sharing it are one fleet.
    pub name: String,
    /// The server holding the registry (the first group's verified master), when known.
    pub registry: Option<ServerAddr>,
    /// Nodes recently in rotation (or out only on a shared condition), as last read.
    pub members: Option<usize>,
    /// Of those, how many are in rotation now, as their rolecalls last wrote.
    pub in_rotation: Option<usize>,
    /// The fewest nodes the guard keeps in rotation.
    pub floor: Option<usize>,
    /// The nodes the guard keeps in against their verdicts, in the order it chooses them.
    pub kept: Vec<String>,
    /// Why, in words (also in the node's reason while the guard acts).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub selector: String,
    pub pids: Vec<u32>,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub master_name: String,
    pub verdict: Verdict,
    pub in_rotation: bool,
    pub reason: String,
    /// The master named by a majority of the configured sentinels, or by the failover leader
    /// they elected (`elected`) before they all name it.
    pub master: Option<ServerAddr>,
    pub votes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elected: Option<crate::sentinel::Elected>,
    /// Entries of `sentinels` in the configuration.
    pub configured_sentinels: usize,
    /// The group's sentinels as rolecall counts them (every id heard of, and each address that
    /// never said who it is): the majority is of these.
    pub sentinels_known: usize,
    /// Addresses asked this check.
    pub sentinels_asked: usize,
    /// Whether the master is named by a majority of the known sentinels.
    pub majority: bool,
    pub dissent: Vec<String>,
    pub sentinels: Vec<SentinelStatus>,
    pub connections: Vec<ConnectionStatus>,
    pub unplaced: Vec<UnplacedStatus>,
    pub servers: Vec<ServerStatus>,
    /// The group's other servers as the sentinels know them: the replicas any sentinel lists,
    /// and a master only a minority names. rolecall asks `ROLE` only of those the node's
    /// connections reach (`servers`).
    pub other_servers: Vec<ServerAddr>,
    pub probe: Option<ProbeStatus>,
    /// What the kill repair did in this check (when enabled).
    pub repair: Option<KillReport>,
    /// Servers whose writes rolecall holds paused now: old masters that still claim master
    /// (`repair.fence_old_master`).
    pub fenced: Vec<String>,
    /// The last Sentinel event about this master.
    pub last_event: Option<EventStatus>,
}

/// What the kill repair did, per group, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KillReport {
    /// Connections killed in this check.
    pub killed: Vec<String>,
    /// Servers rolecall gave up on: the node keeps coming back to them.
    pub given_up: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventStatus {
    pub sentinel: String,
    pub channel: String,
    pub payload: String,
    pub age_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentinelStatus {
    pub addr: ServerAddr,
    /// The sentinel's id, as it said or as it answered at this address before.
    pub id: Option<String>,
    /// How rolecall came to ask this address: `configured`, `resolved` from the configured
    /// name `via`, or `announced` by another sentinel.
    pub found: Found,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<ServerAddr>,
    /// Whether this answer is its sentinel's vote (a sentinel reached at two addresses, say
    /// directly and through a Service, votes once).
    pub counted: bool,
    /// What it runs (`INFO server`), as it said on rolecall's last new connection to it.
    pub software: Option<Software>,
    pub master: Option<ServerAddr>,
    pub tilt: bool,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    pub local: String,
    pub remote: String,
    pub server: ServerAddr,
    /// How the connection was placed on `server`: by its peer `address`, by the server's
    /// `client_list`, or by the `run_id` at its peer.
    pub placed_by: Placement,
    pub role: Option<String>,
}

/// A node connection on a port of the topology that nothing placed on a server, and why; it
/// is not counted for or against the node.
#[derive(Debug, Clone, Serialize)]
pub struct UnplacedStatus {
    pub local: String,
    pub remote: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub addr: ServerAddr,
    pub role: Option<String>,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
    /// What it runs (`INFO server`), as it said on rolecall's last new connection to it.
    pub software: Option<Software>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub ok: bool,
    pub error: Option<String>,
    /// The class of `error` (`readonly`, `no_replicas`, `timeout`…), as the verdict reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
}

/// What a reader acts on at a given moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub verdict: Verdict,
    pub in_rotation: bool,
    pub reason: String,
    pub stale: bool,
}

impl Snapshot {
    /// The snapshot before the first check: not ready.
    pub fn starting(
        node: NodeStatus,
        stale_after: Duration,
        fail_open_after: Duration,
    ) -> Snapshot {
        Snapshot {
            verdict: Verdict::Unknown,
            in_rotation: false,
            reason: "no complete check yet".to_string(),
            observed: Verdict::Unknown,
            observed_reason: "no complete check yet".to_string(),
            checked: false,
            checks: 0,
            check_duration_ms: 0.0,
            node,
            groups: Vec::new(),
            fleet: FleetStatus::default(),
            completed: None,
            stale_after,
            fail_open_after,
        }
    }

    pub fn is_stale(&self, now: Instant) -> bool {
        self.completed
            .is_some_and(|c| now.saturating_duration_since(c) > self.stale_after)
    }

    /// The node's state as of `now`.
    pub fn at(&self, now: Instant) -> Effective {
        let stale = self.is_stale(now);
        if stale {
            let age = self
                .completed
                .map(|c| now.saturating_duration_since(c))
                .unwrap_or_default();
            let fail_open = age > self.fail_open_after;
            return Effective {
                verdict: Verdict::Unknown,
                in_rotation: self.in_rotation || fail_open,
                reason: format!(
                    "no check completed for {}ms (check loop stalled); last verdict {}: {}{}",
                    age.as_millis(),
                    self.verdict,
                    self.reason,
                    if fail_open { "; failing open" } else { "" }
                ),
                stale,
            };
        }
        Effective {
            verdict: self.verdict,
            in_rotation: self.in_rotation,
            reason: self.reason.clone(),
            stale,
        }
    }

    /// The state of one group as of `now`, by its configured name.
    pub fn group_at(&self, name: &str, now: Instant) -> Option<Effective> {
        let g = self.groups.iter().find(|g| g.name == name)?;
        let node = self.at(now);
        if node.stale || !self.node.running {
            return Some(node);
        }
        Some(Effective {
            verdict: g.verdict,
            in_rotation: g.in_rotation,
            reason: g.reason.clone(),
            stale: false,
        })
    }

    /// The JSON of `/status`, with the reader-side fields.
    pub fn to_json(&self, now: Instant) -> serde_json::Value {
        let e = self.at(now);
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("verdict".into(), serde_json::json!(e.verdict));
            o.insert("in_rotation".into(), e.in_rotation.into());
            o.insert("reason".into(), e.reason.into());
            o.insert("stale".into(), e.stale.into());
            o.insert(
                "age_ms".into(),
                self.completed
                    .map(|c| now.saturating_duration_since(c).as_millis() as u64)
                    .into(),
            );
        }
        v
    }
}

/// How many changes [`History`] keeps.
pub const HISTORY: usize = 20;

/// One change of the published verdict or rotation, as `/status` lists it under `changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// When rolecall published it (wall clock, RFC 3339 in UTC with milliseconds).
    pub at: String,
    pub at_unix_ms: u64,
    pub verdict: Verdict,
    pub in_rotation: bool,
    /// The cause: the verdict's reason as published.
    pub reason: String,
}

/// The last [`HISTORY`] changes of the published `(verdict, in_rotation)`, oldest first: the
/// same changes the check loop logs as "verdict changed". Fed every published snapshot;
/// read by the HTTP server. A std `Mutex`: it is held only to push or copy a few entries,
/// never across an `.await`.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    changes: VecDeque<Change>,
    last: Option<(Verdict, bool)>,
}

impl History {
    /// Records `s` if its verdict or rotation differs from the last snapshot recorded (the
    /// starting snapshot, before any check, is not a verdict); `at` is when it was published.
    /// Returns whether it was a change.
    pub fn record(&self, s: &Snapshot, at: SystemTime) -> bool {
        if !s.checked {
            return false;
        }
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = (s.verdict, s.in_rotation);
        if ring.last == Some(now) {
            return false;
        }
        ring.last = Some(now);
        if ring.changes.len() == HISTORY {
            ring.changes.pop_front();
        }
        ring.changes.push_back(Change {
            at: humantime::format_rfc3339_millis(at).to_string(),
            at_unix_ms: at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
            verdict: s.verdict,
            in_rotation: s.in_rotation,
            reason: s.reason.clone(),
        });
        true
    }

    /// The changes kept, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.changes.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let mut s = Snapshot::starting(
            NodeStatus {
                name: "n".into(),
                selector: "pid 1".into(),
                pids: vec![1],
                running: true,
            },
            Duration::from_secs(3),
            Duration::from_secs(30),
        );
        s.checked = true;
        s.verdict = Verdict::StuckOnReplica;
        s.in_rotation = false;
        s
    }

    #[test]
    fn a_stalled_check_loop_is_reported_and_fails_open_after_the_hold() {
        let t0 = Instant::now();
        let mut s = snap();
        s.completed = Some(t0);
        assert_eq!(
            s.at(t0 + Duration::from_secs(1)).verdict,
            Verdict::StuckOnReplica
        );
        let e = s.at(t0 + Duration::from_secs(5));
        assert!(e.stale && !e.in_rotation && e.verdict == Verdict::Unknown);
        assert!(e.reason.contains("stalled"));
        assert!(s.at(t0 + Duration::from_secs(31)).in_rotation);
        let j = s.to_json(t0 + Duration::from_secs(5));
        assert_eq!(j["stale"], true);
        assert_eq!(j["verdict"], "unknown");
    }

    #[test]
    fn before_the_first_check_the_node_is_not_ready() {
        let s = Snapshot::starting(
            NodeStatus {
                name: "n".into(),
                selector: "pid 1".into(),
                pids: vec![],
                running: false,
            },
            Duration::from_secs(3),
            Duration::from_secs(30),
        );
        let e = s.at(Instant::now() + Duration::from_secs(100));
        assert!(!e.in_rotation && !e.stale);
        assert_eq!(s.to_json(Instant::now())["checked"], false);
    }

    #[test]
    fn the_history_keeps_the_last_twenty_changes_with_their_times_and_causes() {
        let h = History::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let starting = Snapshot::starting(snap().node, Duration::ZERO, Duration::ZERO);
        assert!(
            !h.record(&starting, t0),
            "the starting snapshot is no verdict"
        );
        let mut s = snap();
        s.reason = "on a replica".into();
        assert!(h.record(&s, t0));
        assert!(!h.record(&s, t0 + Duration::from_secs(1)), "no change");
        s.in_rotation = true;
        assert!(
            h.record(&s, t0 + Duration::from_millis(1500)),
            "rotation alone"
        );
        let c = h.changes();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].at, "2026-05-28T20:26:40.000Z");
        assert_eq!(c[0].at_unix_ms, 1_780_000_000_000);
        assert_eq!(
            (c[0].verdict, c[0].in_rotation, c[0].reason.as_str()),
            (Verdict::StuckOnReplica, false, "on a replica")
        );
        assert_eq!(c[1].at, "2026-05-28T20:26:41.500Z");
        for i in 0..30u64 {
            s.verdict = if i % 2 == 0 {
                Verdict::Ok
            } else {
                Verdict::Degraded
            };
            s.reason = format!("change {i}");
            assert!(h.record(&s, t0 + Duration::from_secs(10 + i)));
        }
        let c = h.changes();
        assert_eq!(c.len(), HISTORY);
        assert_eq!(c[0].reason, "change 10", "the oldest dropped first");
        assert_eq!(c[HISTORY - 1].reason, "change 29");
    }
}
