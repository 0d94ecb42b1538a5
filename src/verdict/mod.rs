//! The verdict: a pure function of what one check saw, the previous verdict and the policy.
//!
//! Two steps, both free of I/O and table-tested:
//!
//! 1. [`observe_group_reading`] and [`observe()`] turn the facts of one check (Sentinel's view,
//!    the node's connections, each server's `ROLE`, the write probe, and for a group with
//!    `replica_reads` the last command of its connections on replicas) into an [`Observation`]:
//!    what this check alone says. Their rules live in `observe.rs` and `reads.rs`.
//! 2. [`Tracker::update`] applies the policy over time: rise/fall thresholds (consecutive
//!    observations), the grace periods of `stale_master` and `disconnected`, and the hold of the
//!    last verdict while rolecall is blind (`unknown`), after which it fails open. The verdicts,
//!    the policy and the tracker live here.
//!
//! Draining is decided only on node-local evidence: a connection of the node to a server that is
//! not Sentinel's master. Anything every node would share (Sentinel's master refusing writes for
//! lack of replicas, no Sentinel majority, rolecall's own errors) keeps the node in rotation.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

mod observe;
mod reads;

pub use observe::{
    GroupFacts, Placement, RoutedConnection, Unplaced, observe, observe_group_reading,
};
pub use reads::ReplicaReads;

/// The states of DESIGN.md, in order of severity (worst last) for combining groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Degraded,
    Unknown,
    Disconnected,
    StaleMaster,
    StuckOnReplica,
    NodeMissing,
}

impl Verdict {
    pub const ALL: [Verdict; 7] = [
        Verdict::Ok,
        Verdict::Degraded,
        Verdict::Unknown,
        Verdict::Disconnected,
        Verdict::StaleMaster,
        Verdict::StuckOnReplica,
        Verdict::NodeMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Unknown => "unknown",
            Verdict::Disconnected => "disconnected",
            Verdict::StaleMaster => "stale_master",
            Verdict::StuckOnReplica => "stuck_on_replica",
            Verdict::NodeMissing => "node_missing",
        }
    }

    pub fn from_name(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Verdicts that never take a node out of rotation (`unknown` holds the last state and then
    /// fails open).
    pub fn in_rotation_by_default(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::Degraded | Verdict::Unknown)
    }

    /// Nagios-style severity for `rolecall check`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn nagios_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Degraded | Verdict::StaleMaster | Verdict::Disconnected => 1,
            Verdict::StuckOnReplica | Verdict::NodeMissing => 2,
            Verdict::Unknown => 3,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How verdicts move over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive observations needed to return to `ok`.
    pub rise: u32,
    /// Consecutive observations needed for any other change.
    pub fall: u32,
    /// How long the last verdict is held while rolecall cannot tell, before failing open.
    pub unknown_hold: Duration,
    /// How long a node may have no connection to the topology before it is taken out.
    pub disconnected_grace: Duration,
    /// How long a node on a server that still claims `master` stays in rotation.
    pub stale_master_grace: Duration,
}

/// What one check alone says about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub verdict: Verdict,
    pub reason: String,
    /// A `stale_master` node that the kill repair proved does not ask Sentinel (it came back to
    /// the old master after every kill round): its grace, which is for nodes that will follow
    /// Sentinel, does not apply.
    pub pinned: bool,
}

impl Observation {
    pub fn new(verdict: Verdict, reason: impl Into<String>) -> Observation {
        Observation {
            verdict,
            reason: reason.into(),
            pinned: false,
        }
    }
}

/// The published state of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    pub in_rotation: bool,
    /// Whether at least one check has completed.
    pub checked: bool,
    /// Out on evidence only this node has: on a replica, its process gone, or proven not to
    /// ask Sentinel.
    pub local: bool,
}

/// Applies the policy to a stream of observations.
#[derive(Debug, Clone)]
pub struct Tracker {
    policy: Policy,
    verdict: Verdict,
    reason: String,
    /// When the evidence for the current verdict began (first observation of its streak).
    since: Instant,
    /// A different verdict being observed, how many times in a row, since when.
    pending: Option<(Verdict, u32, Instant)>,
    /// Rotation held while `unknown`.
    held_rotation: bool,
    /// The current `stale_master` is proven pinned ([`Observation::pinned`]).
    pinned: bool,
    checked: bool,
    started: bool,
}

impl Tracker {
    pub fn new(policy: Policy, now: Instant) -> Tracker {
        Tracker {
            policy,
            verdict: Verdict::Unknown,
            reason: "no complete check yet".to_string(),
            since: now,
            pending: None,
            held_rotation: false,
            pinned: false,
            checked: false,
            started: false,
        }
    }

    /// Takes a new policy (a reload) and keeps the verdict, its streak and the change being
    /// confirmed: a pending change now needs the new threshold, a grace or hold runs from
    /// when it started.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// When the evidence for the current verdict began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Whether a change of verdict is being confirmed (the next check should come soon).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    fn threshold(&self, to: Verdict) -> u32 {
        if to == Verdict::Ok {
            self.policy.rise
        } else {
            self.policy.fall
        }
    }

    /// Feeds one observation taken at `now`; returns the decision to publish.
    pub fn update(&mut self, obs: Observation, now: Instant) -> Decision {
        self.checked = true;
        if obs.verdict == self.verdict && self.started {
            self.pending = None;
            self.reason = obs.reason;
            self.pinned = obs.pinned;
        } else {
            let (count, first) = match self.pending {
                Some((v, n, t)) if v == obs.verdict => (n + 1, t),
                _ => (1, now),
            };
            if count >= self.threshold(obs.verdict) {
                if obs.verdict == Verdict::Unknown && self.verdict != Verdict::Unknown {
                    self.held_rotation = self.rotation_at(now);
                }
                self.verdict = obs.verdict;
                self.reason = obs.reason;
                self.pinned = obs.pinned;
                self.since = first;
                self.pending = None;
                self.started = true;
            } else {
                self.pending = Some((obs.verdict, count, first));
            }
        }
        self.decision(now)
    }

    fn rotation_at(&self, now: Instant) -> bool {
        if !self.started {
            return false;
        }
        let held_for = now.saturating_duration_since(self.since);
        match self.verdict {
            Verdict::Ok | Verdict::Degraded => true,
            Verdict::StuckOnReplica | Verdict::NodeMissing => false,
            Verdict::StaleMaster => !self.pinned && held_for < self.policy.stale_master_grace,
            Verdict::Disconnected => held_for < self.policy.disconnected_grace,
            Verdict::Unknown => self.held_rotation || held_for >= self.policy.unknown_hold,
        }
    }

    /// The decision as of `now` (grace periods and holds run out without new observations).
    pub fn decision(&self, now: Instant) -> Decision {
        let in_rotation = self.rotation_at(now);
        let held_for = now.saturating_duration_since(self.since);
        let reason = match self.verdict {
            Verdict::Unknown if self.started => {
                if held_for >= self.policy.unknown_hold {
                    format!(
                        "{}; failing open after {}",
                        self.reason,
                        humantime::format_duration(self.policy.unknown_hold)
                    )
                } else {
                    format!(
                        "{}; holding the last state ({}) for up to {}",
                        self.reason,
                        if self.held_rotation {
                            "in rotation"
                        } else {
                            "out of rotation"
                        },
                        humantime::format_duration(self.policy.unknown_hold)
                    )
                }
            }
            Verdict::StaleMaster | Verdict::Disconnected if in_rotation => {
                let grace = if self.verdict == Verdict::StaleMaster {
                    self.policy.stale_master_grace
                } else {
                    self.policy.disconnected_grace
                };
                format!(
                    "{}; in rotation for a grace period of {}",
                    self.reason,
                    humantime::format_duration(grace)
                )
            }
            _ => self.reason.clone(),
        };
        Decision {
            verdict: self.verdict,
            reason,
            in_rotation,
            checked: self.checked,
            local: !in_rotation
                && match self.verdict {
                    Verdict::StuckOnReplica | Verdict::NodeMissing => true,
                    Verdict::StaleMaster => self.pinned,
                    _ => false,
                },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            rise: 2,
            fall: 2,
            unknown_hold: Duration::from_secs(30),
            disconnected_grace: Duration::from_secs(5),
            stale_master_grace: Duration::from_secs(15),
        }
    }

    fn o(v: Verdict) -> Observation {
        Observation::new(v, v.as_str())
    }

    /// Feeds (seconds since start, observation) and returns (verdict, in_rotation) after each.
    fn feed(steps: &[(u64, Verdict)]) -> Vec<(Verdict, bool)> {
        let t0 = Instant::now();
        let mut t = Tracker::new(policy(), t0);
        steps
            .iter()
            .map(|(s, v)| {
                let d = t.update(o(*v), t0 + Duration::from_secs(*s));
                (d.verdict, d.in_rotation)
            })
            .collect()
    }

    #[test]
    fn not_ready_until_rise_checks_agree() {
        let t0 = Instant::now();
        let t = Tracker::new(policy(), t0);
        let d = t.decision(t0);
        assert!(!d.checked && !d.in_rotation);
        use Verdict::*;
        assert_eq!(
            feed(&[(0, Ok), (1, Ok)]),
            vec![(Unknown, false), (Ok, true)]
        );
    }

    #[test]
    fn transitions_need_consecutive_observations() {
        use Verdict::*;
        let got = feed(&[
            (0, Ok),
            (1, Ok),
            (2, StuckOnReplica), // one observation is not enough
            (3, Ok),             // streak broken
            (4, StuckOnReplica),
            (5, StuckOnReplica), // fall reached
            (6, Ok),
            (7, Ok), // rise reached
        ]);
        assert_eq!(
            got,
            vec![
                (Unknown, false),
                (Ok, true),
                (Ok, true),
                (Ok, true),
                (Ok, true),
                (StuckOnReplica, false),
                (StuckOnReplica, false),
                (Ok, true),
            ]
        );
    }

    #[test]
    fn stale_master_stays_in_rotation_for_its_grace_then_goes_out() {
        use Verdict::*;
        let got = feed(&[
            (0, Ok),
            (1, Ok),
            (2, StaleMaster),
            (3, StaleMaster),
            (16, StaleMaster), // 14 s since the first observation: still in
            (17, StaleMaster), // 15 s: out
        ]);
        assert_eq!(got[3], (StaleMaster, true));
        assert_eq!(got[4], (StaleMaster, true));
        assert_eq!(got[5], (StaleMaster, false));
    }

    #[test]
    fn disconnected_has_a_grace_period() {
        use Verdict::*;
        let got = feed(&[
            (0, Ok),
            (1, Ok),
            (2, Disconnected),
            (3, Disconnected),
            (7, Disconnected),
        ]);
        assert_eq!(got[3], (Disconnected, true));
        assert_eq!(got[4], (Disconnected, false));
    }

    #[test]
    fn unknown_holds_the_last_state_then_fails_open() {
        use Verdict::*;
        // Held out of rotation while blind, then in rotation after the hold time.
        let got = feed(&[
            (0, StuckOnReplica),
            (1, StuckOnReplica),
            (2, Unknown),
            (3, Unknown),
            (20, Unknown),
            (33, Unknown),
        ]);
        assert_eq!(got[1], (StuckOnReplica, false));
        assert_eq!(got[3], (Unknown, false));
        assert_eq!(got[4], (Unknown, false));
        assert_eq!(got[5], (Unknown, true));
        // Held in rotation while blind.
        let got = feed(&[(0, Ok), (1, Ok), (2, Unknown), (3, Unknown), (40, Unknown)]);
        assert_eq!(got[3], (Unknown, true));
        assert_eq!(got[4], (Unknown, true));
        // Blind from the start: not ready, then fail open.
        let got = feed(&[(0, Unknown), (1, Unknown), (10, Unknown), (32, Unknown)]);
        assert_eq!(got[1], (Unknown, false));
        assert_eq!(got[2], (Unknown, false));
        assert_eq!(got[3], (Unknown, true));
    }

    #[test]
    fn a_stale_master_proven_pinned_goes_out_at_once_without_its_grace() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Tracker::new(policy(), t0);
        t.update(o(Verdict::Ok), at(0));
        t.update(o(Verdict::Ok), at(1));
        t.update(o(Verdict::StaleMaster), at(2));
        let d = t.update(o(Verdict::StaleMaster), at(3));
        assert!(d.in_rotation && !d.local, "within the grace");
        let pinned = Observation {
            pinned: true,
            ..o(Verdict::StaleMaster)
        };
        let d = t.update(pinned, at(4));
        assert!(
            !d.in_rotation && d.local,
            "proven pinned: out, on local evidence"
        );
        assert_eq!(d.verdict, Verdict::StaleMaster);
        // The proof is the latest check's: a node that follows after all is in its grace again.
        let d = t.update(o(Verdict::StaleMaster), at(5));
        assert!(d.in_rotation);
    }

    #[test]
    fn degraded_stays_in_rotation_and_node_missing_goes_out() {
        use Verdict::*;
        let got = feed(&[
            (0, Ok),
            (1, Ok),
            (2, Degraded),
            (3, Degraded),
            (4, NodeMissing),
            (5, NodeMissing),
        ]);
        assert_eq!(got[3], (Degraded, true));
        assert_eq!(got[5], (NodeMissing, false));
    }

    #[test]
    fn grace_runs_out_without_new_observations() {
        let t0 = Instant::now();
        let mut t = Tracker::new(policy(), t0);
        t.update(o(Verdict::Disconnected), t0);
        let d = t.update(o(Verdict::Disconnected), t0 + Duration::from_secs(1));
        assert!(d.in_rotation);
        assert!(!t.decision(t0 + Duration::from_secs(6)).in_rotation);
    }

    #[test]
    fn verdict_names_round_trip() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::from_name(v.as_str()), Some(v));
        }
    }
}
