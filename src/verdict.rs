//! The verdict: a pure function of what one check saw, the previous verdict and the policy.
//!
//! Two steps, both free of I/O and table-tested:
//!
//! 1. [`observe`] turns the facts of one check (Sentinel's view, the node's connections, each
//!    server's `ROLE`, the write probe) into an [`Observation`]: what this check alone says.
//! 2. [`Tracker::update`] applies the policy over time: rise/fall thresholds (consecutive
//!    observations), the grace periods of `stale_master` and `disconnected`, and the hold of the
//!    last verdict while rolecall is blind (`unknown`), after which it fails open.
//!
//! Draining is decided only on node-local evidence: a connection of the node to a server that is
//! not Sentinel's master. Anything every node would share (Sentinel's master refusing writes for
//! lack of replicas, no Sentinel majority, rolecall's own errors) keeps the node in rotation.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conn::{ErrorClass, ServerAddr, ServerError};
use crate::probe::Role;
use crate::sentinel::SentinelView;
use crate::sockets::{Connection, DiscoverError};

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
}

impl Observation {
    pub fn new(verdict: Verdict, reason: impl Into<String>) -> Observation {
        Observation {
            verdict,
            reason: reason.into(),
        }
    }
}

/// A node connection matched to the topology server it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedConnection {
    pub connection: Connection,
    pub server: ServerAddr,
}

/// The facts of one group gathered by one check.
#[derive(Clone)]
pub struct GroupFacts<'a> {
    pub view: &'a SentinelView,
    /// The node's connections to servers of this group's topology.
    pub connections: &'a [RoutedConnection],
    /// `ROLE` of each server the node talks to and of Sentinel's master.
    pub role_of: &'a dyn Fn(&ServerAddr) -> Option<Result<Role, ServerError>>,
    /// Result of the write probe on Sentinel's master; `None` when disabled or not run.
    pub probe: Option<&'a Result<(), ServerError>>,
    /// Whether the node has been seen connected to this topology since rolecall started.
    pub seen_on_topology: bool,
    /// Servers whose last answer to `ROLE` was replica: one that stops answering is still a
    /// replica, not a server that might be a stale master.
    pub last_replicas: &'a BTreeSet<ServerAddr>,
}

/// What one check says about one group, given that the node process was found.
pub fn observe_group(f: &GroupFacts<'_>) -> Observation {
    let Some(master) = &f.view.master else {
        return Observation::new(
            Verdict::Unknown,
            f.view
                .problem
                .clone()
                .unwrap_or_else(|| "sentinels name no master".to_string()),
        );
    };
    // Judging a node by Sentinel's master needs that master to be one: a master that does not
    // answer as master from here (crashed before the failover, unreachable from this host, or
    // Sentinel's view is wrong) is something every node shares, not evidence against this one.
    let master_role = (f.role_of)(master);
    let unverified = match &master_role {
        Some(Ok(Role::Master)) => None,
        Some(Ok(other)) => Some(format!("says it is {other}")),
        Some(Err(e)) => Some(format!("did not answer ROLE: {e}")),
        None => Some("was not asked its ROLE".to_string()),
    };
    if f.connections.is_empty() {
        return match &unverified {
            // Never seen on this topology: the node may well use another Redis, and rolecall's
            // [redis] section may not be the node's (every node of the fleet would say so).
            None if !f.seen_on_topology => Observation::new(
                Verdict::Unknown,
                format!(
                    "node has not been seen connected to the topology of master {master} since rolecall started: if it uses other Redis servers, [redis] sentinels or master_name do not match it"
                ),
            ),
            None => Observation::new(
                Verdict::Disconnected,
                format!("node has no connection to the topology of master {master}"),
            ),
            Some(why) => Observation::new(
                Verdict::Unknown,
                format!(
                    "node has no connection to the topology, and Sentinel's master {master} {why}: not the node's fault"
                ),
            ),
        };
    }

    // Node-local evidence first: a connection to a server that is not Sentinel's master.
    let mut worst: Option<Observation> = None;
    let mut consider = |o: Observation| {
        if worst.as_ref().is_none_or(|w| o.verdict > w.verdict) {
            worst = Some(o);
        }
    };
    let mut on_master = false;
    for rc in f.connections {
        let c = &rc.connection;
        if &rc.server == master {
            on_master = true;
            continue;
        }
        let role = (f.role_of)(&rc.server);
        // A replica that stopped answering is still the replica it was.
        if let Some(Err(e)) = &role
            && f.last_replicas.contains(&rc.server)
            && matches!(e.class, ErrorClass::Timeout | ErrorClass::Connect)
        {
            consider(Observation::new(
                Verdict::StuckOnReplica,
                format!(
                    "connection {} -> {} goes to a replica (its last answer to ROLE), which does not answer now: {e}; Sentinel's master is {master}",
                    c.local, rc.server
                ),
            ));
            continue;
        }
        // Two servers neither of which is a verified master: which one is right is not known.
        if let Some(why) = &unverified
            && !matches!(
                role,
                Some(Ok(Role::Replica { .. })) | Some(Ok(Role::Other(_)))
            )
        {
            consider(Observation::new(
                Verdict::Unknown,
                format!(
                    "connection {} -> {} goes to a server Sentinel does not name, but Sentinel's master {master} {why}: cannot tell which is the master",
                    c.local, rc.server
                ),
            ));
            continue;
        }
        match role {
            Some(Ok(Role::Replica { .. })) | Some(Ok(Role::Other(_))) => {
                consider(Observation::new(
                    Verdict::StuckOnReplica,
                    format!(
                        "connection {} -> {} goes to a replica; Sentinel's master is {master}",
                        c.local, rc.server
                    ),
                ))
            }
            Some(Ok(Role::Master)) => consider(Observation::new(
                Verdict::StaleMaster,
                format!(
                    "connection {} -> {} goes to a server that still claims master; Sentinel's master is {master}",
                    c.local, rc.server
                ),
            )),
            // rolecall's own credentials or permissions, or a reply it cannot read: that is
            // rolecall being blind, never evidence against the node.
            Some(Err(e))
                if matches!(
                    e.class,
                    ErrorClass::Auth
                        | ErrorClass::NoPerm
                        | ErrorClass::Protocol
                        | ErrorClass::Other
                ) =>
            {
                consider(Observation::new(
                    Verdict::Unknown,
                    format!("cannot ask {} its ROLE: {e}", rc.server),
                ))
            }
            // Unreachable or silent (a frozen old master): the node's connection goes to a
            // server Sentinel no longer names.
            Some(Err(e)) => consider(Observation::new(
                Verdict::StaleMaster,
                format!(
                    "connection {} -> {} goes to a server that is not Sentinel's master ({master}) and did not answer ROLE: {e}",
                    c.local, rc.server
                ),
            )),
            None => consider(Observation::new(
                Verdict::StaleMaster,
                format!(
                    "connection {} -> {} goes to a server that is not Sentinel's master ({master})",
                    c.local, rc.server
                ),
            )),
        }
    }
    if let Some(w) = worst {
        return w;
    }
    debug_assert!(on_master);

    // Every connection goes to Sentinel's master: now the master itself.
    match master_role {
        Some(Ok(Role::Master)) => {}
        Some(Ok(other)) => {
            return Observation::new(
                Verdict::Unknown,
                format!("Sentinel's master {master} says it is {other}: Sentinel's view is stale"),
            );
        }
        Some(Err(e)) => {
            return Observation::new(
                Verdict::Unknown,
                format!("Sentinel's master {master} did not answer ROLE: {e}"),
            );
        }
        None => {
            return Observation::new(
                Verdict::Unknown,
                format!("Sentinel's master {master} was not asked its ROLE"),
            );
        }
    }
    match f.probe {
        None | Some(Ok(())) => Observation::new(
            Verdict::Ok,
            format!(
                "{} connection(s) to master {master}{}",
                f.connections.len(),
                if f.probe.is_some() {
                    ", which took the probe write"
                } else {
                    ""
                }
            ),
        ),
        Some(Err(e)) => match e.class {
            ErrorClass::NoReplicas | ErrorClass::Misconf | ErrorClass::Oom => Observation::new(
                Verdict::Degraded,
                format!(
                    "master {master} refuses writes ({}): every node shares this",
                    e
                ),
            ),
            _ => Observation::new(
                Verdict::Unknown,
                format!("probe write on master {master} failed: {e}"),
            ),
        },
    }
}

/// The observation of a whole check: the node's process, then the worst of the groups.
pub fn observe(node: &Result<(), DiscoverError>, groups: &[Observation]) -> Observation {
    match node {
        Err(DiscoverError::NodeMissing(m)) => Observation::new(Verdict::NodeMissing, m.clone()),
        Err(DiscoverError::Unreadable(m)) => Observation::new(
            Verdict::Unknown,
            format!("cannot see the node's sockets: {m}"),
        ),
        Ok(()) => {
            let mut worst: Option<&Observation> = None;
            for g in groups {
                if worst.is_none_or(|w| g.verdict > w.verdict) {
                    worst = Some(g);
                }
            }
            worst
                .cloned()
                .unwrap_or_else(|| Observation::new(Verdict::Unknown, "no group configured"))
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
            checked: false,
            started: false,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
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
            Verdict::StaleMaster => held_for < self.policy.stale_master_grace,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ServerError;
    use std::collections::BTreeMap;

    fn addr(s: &str) -> ServerAddr {
        s.parse().unwrap()
    }

    fn view(master: Option<&str>) -> SentinelView {
        SentinelView {
            master: master.map(addr),
            problem: master
                .is_none()
                .then(|| "no sentinel majority (1 of 3)".to_string()),
            ..SentinelView::default()
        }
    }

    fn conn(local_port: u16, server: &str) -> RoutedConnection {
        let s = addr(server);
        RoutedConnection {
            connection: Connection {
                local: format!("127.0.0.1:{local_port}").parse().unwrap(),
                remote: format!("{}:{}", s.host, s.port).parse().unwrap(),
            },
            server: s,
        }
    }

    fn err(class: ErrorClass) -> ServerError {
        ServerError {
            class,
            message: format!("{class:?}"),
        }
    }

    const M: &str = "127.0.0.1:6379";
    const R: &str = "127.0.0.1:6380";

    fn run(
        master: Option<&str>,
        conns: &[RoutedConnection],
        roles: &[(&str, Result<Role, ServerError>)],
        probe: Option<Result<(), ServerError>>,
    ) -> Verdict {
        let v = view(master);
        let roles: BTreeMap<ServerAddr, Result<Role, ServerError>> =
            roles.iter().map(|(a, r)| (addr(a), r.clone())).collect();
        let role_of = |a: &ServerAddr| roles.get(a).cloned();
        observe_group(&GroupFacts {
            view: &v,
            connections: conns,
            role_of: &role_of,
            probe: probe.as_ref(),
            seen_on_topology: true,
            last_replicas: &BTreeSet::new(),
        })
        .verdict
    }

    #[test]
    fn what_rolecall_saw_before_counts_when_a_server_goes_silent_or_the_node_was_never_there() {
        let v = view(Some(M));
        let roles: BTreeMap<ServerAddr, Result<Role, ServerError>> = [
            (addr(M), Ok(Role::Master)),
            (addr(R), Err(err(ErrorClass::Timeout))),
        ]
        .into_iter()
        .collect();
        let role_of = |a: &ServerAddr| roles.get(a).cloned();
        let replicas: BTreeSet<ServerAddr> = [addr(R)].into_iter().collect();
        let empty = BTreeSet::new();
        let facts = |conns: &[RoutedConnection], seen: bool, r_was_replica: bool| {
            observe_group(&GroupFacts {
                view: &v,
                connections: conns,
                role_of: &role_of,
                probe: None,
                seen_on_topology: seen,
                last_replicas: if r_was_replica { &replicas } else { &empty },
            })
            .verdict
        };
        let on_r = [conn(1, R)];
        // A silent server the node is on: a replica if that is what it last said, else possibly
        // the old master.
        assert_eq!(facts(&on_r, true, true), Verdict::StuckOnReplica);
        assert_eq!(facts(&on_r, true, false), Verdict::StaleMaster);
        // No connection: disconnected only for a node once seen on this topology.
        assert_eq!(facts(&[], true, false), Verdict::Disconnected);
        assert_eq!(facts(&[], false, false), Verdict::Unknown);
    }

    fn replica() -> Role {
        Role::Replica {
            master: Some(addr(M)),
            link_up: true,
        }
    }

    #[test]
    fn each_state_follows_from_its_facts() {
        use Verdict as V;
        let ok = || Ok(());
        let cases: Vec<(&str, Verdict, Verdict)> = vec![
            (
                "node on master, master says master, probe ok",
                run(Some(M), &[conn(1, M)], &[(M, Ok(Role::Master))], Some(ok())),
                V::Ok,
            ),
            (
                "probe disabled",
                run(Some(M), &[conn(1, M)], &[(M, Ok(Role::Master))], None),
                V::Ok,
            ),
            (
                "node on a replica (#766)",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Ok(Role::Master)), (R, Ok(replica()))],
                    Some(ok()),
                ),
                V::StuckOnReplica,
            ),
            (
                "node on a second master (split-brain window)",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Ok(Role::Master)), (R, Ok(Role::Master))],
                    Some(ok()),
                ),
                V::StaleMaster,
            ),
            (
                "one of two connections on a replica",
                run(
                    Some(M),
                    &[conn(1, M), conn(2, R)],
                    &[(M, Ok(Role::Master)), (R, Ok(replica()))],
                    Some(ok()),
                ),
                V::StuckOnReplica,
            ),
            (
                "node on a server that does not answer and is not the master",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Ok(Role::Master)), (R, Err(err(ErrorClass::Timeout)))],
                    Some(ok()),
                ),
                V::StaleMaster,
            ),
            (
                "no connection",
                run(Some(M), &[], &[(M, Ok(Role::Master))], Some(ok())),
                V::Disconnected,
            ),
            (
                "no connection, Sentinel's master down (crashed, before the failover)",
                run(Some(M), &[], &[(M, Err(err(ErrorClass::Connect)))], None),
                V::Unknown,
            ),
            (
                "node on a second master, Sentinel's master unreachable from here",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Err(err(ErrorClass::Timeout))), (R, Ok(Role::Master))],
                    None,
                ),
                V::Unknown,
            ),
            (
                "node on a silent server, Sentinel's master silent too",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[
                        (M, Err(err(ErrorClass::Timeout))),
                        (R, Err(err(ErrorClass::Timeout))),
                    ],
                    None,
                ),
                V::Unknown,
            ),
            (
                "Sentinel names a replica (its view is wrong), node on the real master",
                run(
                    Some(R),
                    &[conn(1, M)],
                    &[(R, Ok(replica())), (M, Ok(Role::Master))],
                    None,
                ),
                V::Unknown,
            ),
            (
                "node on a replica, Sentinel's master unreachable: still node-local evidence",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Err(err(ErrorClass::Timeout))), (R, Ok(replica()))],
                    None,
                ),
                V::StuckOnReplica,
            ),
            (
                "no sentinel majority",
                run(None, &[conn(1, M)], &[], None),
                V::Unknown,
            ),
            (
                "master refuses writes for lack of replicas",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Ok(Role::Master))],
                    Some(Err(err(ErrorClass::NoReplicas))),
                ),
                V::Degraded,
            ),
            (
                "master MISCONF",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Ok(Role::Master))],
                    Some(Err(err(ErrorClass::Misconf))),
                ),
                V::Degraded,
            ),
            (
                "master OOM",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Ok(Role::Master))],
                    Some(Err(err(ErrorClass::Oom))),
                ),
                V::Degraded,
            ),
            (
                "rolecall's own auth fails on the master",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Ok(Role::Master))],
                    Some(Err(err(ErrorClass::Auth))),
                ),
                V::Unknown,
            ),
            (
                "master LOADING",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Ok(Role::Master))],
                    Some(Err(err(ErrorClass::Loading))),
                ),
                V::Unknown,
            ),
            (
                "Sentinel's master says replica: Sentinel is stale, never drain for it",
                run(Some(M), &[conn(1, M)], &[(M, Ok(replica()))], Some(ok())),
                V::Unknown,
            ),
            (
                "Sentinel's master unreachable from here",
                run(
                    Some(M),
                    &[conn(1, M)],
                    &[(M, Err(err(ErrorClass::Connect)))],
                    None,
                ),
                V::Unknown,
            ),
            (
                "rolecall's own auth failing on the node's server is not evidence",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Ok(Role::Master)), (R, Err(err(ErrorClass::Auth)))],
                    Some(ok()),
                ),
                V::Unknown,
            ),
            (
                "an ACL without ROLE on the node's server is not evidence",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Ok(Role::Master)), (R, Err(err(ErrorClass::NoPerm)))],
                    Some(ok()),
                ),
                V::Unknown,
            ),
            (
                "a replica connection is evidence even when the master is unreachable",
                run(
                    Some(M),
                    &[conn(1, R)],
                    &[(M, Err(err(ErrorClass::Connect))), (R, Ok(replica()))],
                    None,
                ),
                V::StuckOnReplica,
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_missing_node_outranks_everything_and_groups_combine_to_the_worst() {
        let g = [
            Observation::new(Verdict::Ok, "a"),
            Observation::new(Verdict::StuckOnReplica, "b"),
            Observation::new(Verdict::Unknown, "c"),
        ];
        assert_eq!(observe(&Ok(()), &g).verdict, Verdict::StuckOnReplica);
        assert_eq!(observe(&Ok(()), &g[..1]).verdict, Verdict::Ok);
        let missing = Err(DiscoverError::NodeMissing("no process with pid 7".into()));
        assert_eq!(observe(&missing, &g).verdict, Verdict::NodeMissing);
        let blind = Err(DiscoverError::Unreadable("permission denied".into()));
        assert_eq!(observe(&blind, &g).verdict, Verdict::Unknown);
        let degraded_and_disconnected = [
            Observation::new(Verdict::Degraded, "a"),
            Observation::new(Verdict::Disconnected, "b"),
        ];
        assert_eq!(
            observe(&Ok(()), &degraded_and_disconnected).verdict,
            Verdict::Disconnected
        );
    }

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
