//! The observation rules: what one check alone says about the node, from Sentinel's view, the
//! node's connections, each server's `ROLE` and the write probe.
//!
//! [`observe_group_reading`] judges one group in the order of its rules: a group without a
//! master; a node without a connection; each connection to a server that is not Sentinel's
//! master (node-local evidence, so it goes first; with `replica_reads`, the connections on
//! replicas by the rules of `reads.rs`); then Sentinel's master itself and the write probe.
//! [`observe()`] combines the groups with what was found of the node's process.

use std::collections::BTreeSet;

use serde::Serialize;

use super::reads::{ReadsJudgement, ReplicaReads, judge_replica_reads};
use super::{Observation, Verdict};
use crate::conn::{ErrorClass, ServerAddr, ServerError};
use crate::probe::Role;
use crate::sentinel::SentinelView;
use crate::sockets::{Connection, DiscoverError};

/// A node connection matched to the topology server it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedConnection {
    pub connection: Connection,
    pub server: ServerAddr,
}

/// How a node connection was placed on its server (the module docs of `check::route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Its peer is the server's announced address, or what the server's name resolves to.
    Address,
    /// The server lists the node's own address as a client.
    ClientList,
    /// `INFO` at its peer names the server's `run_id`.
    RunId,
}

/// A node connection on a port of the topology that nothing could place on one of its servers
/// (not at a server's address, not in any server's `CLIENT LIST`, not identified by `run_id`
/// through its address), and why. It is never evidence against the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub connection: Connection,
    pub why: String,
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
    /// The node's connections that may reach the topology but could not be placed.
    pub unplaced: &'a [Unplaced],
}

/// What one check says about one group, given that the node process was found, with replica
/// reads off (the rules the table tests below state).
#[cfg(test)]
pub fn observe_group(f: &GroupFacts<'_>) -> Observation {
    observe_group_reading(f, None)
}

/// What one check says about one group, given that the node process was found. With `reads`
/// (`replica_reads = true`), the node's connections on servers that answer `ROLE` as replica
/// are judged by the rules of `reads.rs` instead of each being `stuck_on_replica`; with `None`
/// the rules are those of the table tests below, unchanged.
pub fn observe_group_reading(f: &GroupFacts<'_>, reads: Option<&ReplicaReads<'_>>) -> Observation {
    let Some(master) = &f.view.master else {
        return no_master_named(f.view);
    };
    let master_role = (f.role_of)(master);
    let unverified = master_unverified(master_role.as_ref());
    if f.connections.is_empty() {
        if let Some(u) = f.unplaced.first() {
            return unplaced_only(u, f.unplaced.len(), master);
        }
        return no_connection(master, unverified.as_deref(), f.seen_on_topology);
    }
    let on_master = f
        .connections
        .iter()
        .filter(|rc| &rc.server == master)
        .count();
    let (on_replicas, elsewhere): (Vec<&RoutedConnection>, Vec<&RoutedConnection>) = f
        .connections
        .iter()
        .filter(|rc| &rc.server != master)
        .partition(|rc| reads.is_some() && is_replica(f, rc));

    // Node-local evidence first: a connection to a server that is not Sentinel's master.
    let elsewhere = elsewhere.into_iter().map(|rc| {
        let role = (f.role_of)(&rc.server);
        judge_connection(
            rc,
            role.as_ref(),
            master,
            unverified.as_deref(),
            f.last_replicas.contains(&rc.server),
        )
    });
    let judged = reads.filter(|_| !on_replicas.is_empty()).map(|r| {
        judge_replica_reads(
            &on_replicas,
            r,
            master,
            on_master > 0,
            unverified.as_deref(),
        )
    });
    let (read_evidence, intended) = match judged {
        Some(ReadsJudgement::Observed(o)) => (Some(o), None),
        Some(ReadsJudgement::Reads { count, blind }) => (None, Some((count, blind))),
        None => (None, None),
    };
    if let Some(w) = worst(elsewhere.chain(read_evidence)) {
        return w;
    }
    debug_assert!(on_master > 0);

    // Every other connection goes to Sentinel's master: now the master itself.
    if let Some(o) = judge_master(master, master_role.as_ref()) {
        return o;
    }
    let mut o = judge_probe(master, f.probe, on_master);
    if let Some((count, blind)) = intended {
        o.reason = format!(
            "{}; {count} connection(s) to replicas, read on purpose (replica reads are on){}",
            o.reason,
            blind.map(|b| format!("; {b}")).unwrap_or_default()
        );
    }
    if let Some(u) = f.unplaced.first() {
        o.reason = format!(
            "{}; {} connection(s) not placed on a server, not counted: {} -> {}: {}",
            o.reason,
            f.unplaced.len(),
            u.connection.local,
            u.connection.remote,
            u.why
        );
    }
    o
}

/// The node's only connections to the topology's ports could not be placed: rolecall cannot
/// tell where they go, which is not evidence against the node (it is neither `disconnected`
/// nor misrouted).
fn unplaced_only(first: &Unplaced, count: usize, master: &ServerAddr) -> Observation {
    Observation::new(
        Verdict::Unknown,
        format!(
            "node's {count} connection(s) on the topology's ports could not be placed on a server of master {master}: {} -> {}: {}",
            first.connection.local, first.connection.remote, first.why
        ),
    )
}

/// Whether `rc` goes to a replica: its server answers `ROLE` as replica, or last did and now
/// does not answer (a replica that stopped answering is still the replica it was).
fn is_replica(f: &GroupFacts<'_>, rc: &RoutedConnection) -> bool {
    match (f.role_of)(&rc.server) {
        Some(Ok(Role::Replica { .. })) => true,
        Some(Err(e)) => {
            f.last_replicas.contains(&rc.server)
                && matches!(e.class, ErrorClass::Timeout | ErrorClass::Connect)
        }
        _ => false,
    }
}

/// The most severe observation; of equally severe ones, the first.
fn worst(observations: impl IntoIterator<Item = Observation>) -> Option<Observation> {
    observations.into_iter().fold(None, |worst, o| match worst {
        Some(w) if o.verdict <= w.verdict => Some(w),
        _ => Some(o),
    })
}

/// The sentinels name no master: their problem, which every node shares.
fn no_master_named(view: &SentinelView) -> Observation {
    Observation::new(
        Verdict::Unknown,
        view.problem
            .clone()
            .unwrap_or_else(|| "sentinels name no master".to_string()),
    )
}

/// Why Sentinel's master is not verified, from its answer to `ROLE`; `None` when it answers as
/// master.
///
/// Judging a node by Sentinel's master needs that master to be one: a master that does not
/// answer as master from here (crashed before the failover, unreachable from this host, or
/// Sentinel's view is wrong) is something every node shares, not evidence against this one.
fn master_unverified(role: Option<&Result<Role, ServerError>>) -> Option<String> {
    match role {
        Some(Ok(Role::Master)) => None,
        Some(Ok(other)) => Some(format!("says it is {other}")),
        Some(Err(e)) => Some(format!("did not answer ROLE: {e}")),
        None => Some("was not asked its ROLE".to_string()),
    }
}

/// The node has no connection to the group's topology.
fn no_connection(master: &ServerAddr, unverified: Option<&str>, seen: bool) -> Observation {
    match unverified {
        // Never seen on this topology: the node may well use another Redis, and rolecall's
        // [redis] section may not be the node's (every node of the fleet would say so).
        None if !seen => Observation::new(
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
    }
}

/// A node connection to a server that is not Sentinel's master (`master`), given the server's
/// answer to `ROLE`, why the master is not verified (if it is not) and whether the server's last
/// answer to `ROLE` was replica.
fn judge_connection(
    rc: &RoutedConnection,
    role: Option<&Result<Role, ServerError>>,
    master: &ServerAddr,
    unverified: Option<&str>,
    was_replica: bool,
) -> Observation {
    let c = &rc.connection;
    // A replica that stopped answering is still the replica it was.
    if let Some(Err(e)) = role
        && was_replica
        && matches!(e.class, ErrorClass::Timeout | ErrorClass::Connect)
    {
        return Observation::new(
            Verdict::StuckOnReplica,
            format!(
                "connection {} -> {} goes to a replica (its last answer to ROLE), which does not answer now: {e}; Sentinel's master is {master}",
                c.local, rc.server
            ),
        );
    }
    // Two servers neither of which is a verified master: which one is right is not known.
    if let Some(why) = unverified
        && !matches!(
            role,
            Some(Ok(Role::Replica { .. })) | Some(Ok(Role::Other(_)))
        )
    {
        return Observation::new(
            Verdict::Unknown,
            format!(
                "connection {} -> {} goes to a server Sentinel does not name, but Sentinel's master {master} {why}: cannot tell which is the master",
                c.local, rc.server
            ),
        );
    }
    judge_by_role(rc, role, master)
}

/// A node connection to a server that is not Sentinel's master, by the server's own answer to
/// `ROLE`.
fn judge_by_role(
    rc: &RoutedConnection,
    role: Option<&Result<Role, ServerError>>,
    master: &ServerAddr,
) -> Observation {
    let c = &rc.connection;
    match role {
        Some(Ok(Role::Replica { .. })) | Some(Ok(Role::Other(_))) => Observation::new(
            Verdict::StuckOnReplica,
            format!(
                "connection {} -> {} goes to a replica; Sentinel's master is {master}",
                c.local, rc.server
            ),
        ),
        Some(Ok(Role::Master)) => Observation::new(
            Verdict::StaleMaster,
            format!(
                "connection {} -> {} goes to a server that still claims master; Sentinel's master is {master}",
                c.local, rc.server
            ),
        ),
        // rolecall's own credentials or permissions, a reply it cannot read, a name it cannot
        // resolve, a TLS handshake that failed: that is rolecall being blind, never evidence
        // against the node.
        Some(Err(e))
            if matches!(
                e.class,
                ErrorClass::Auth
                    | ErrorClass::NoPerm
                    | ErrorClass::Resolve
                    | ErrorClass::Tls
                    | ErrorClass::Protocol
                    | ErrorClass::Other
            ) =>
        {
            Observation::new(
                Verdict::Unknown,
                format!("cannot ask {} its ROLE: {e}", rc.server),
            )
        }
        // Unreachable or silent (a frozen old master): the node's connection goes to a
        // server Sentinel no longer names.
        Some(Err(e)) => Observation::new(
            Verdict::StaleMaster,
            format!(
                "connection {} -> {} goes to a server that is not Sentinel's master ({master}) and did not answer ROLE: {e}",
                c.local, rc.server
            ),
        ),
        None => Observation::new(
            Verdict::StaleMaster,
            format!(
                "connection {} -> {} goes to a server that is not Sentinel's master ({master})",
                c.local, rc.server
            ),
        ),
    }
}

/// Sentinel's master, which every connection of the node goes to, by its answer to `ROLE`:
/// `None` when it answers as master, else why rolecall cannot tell.
fn judge_master(
    master: &ServerAddr,
    role: Option<&Result<Role, ServerError>>,
) -> Option<Observation> {
    let reason = match role {
        Some(Ok(Role::Master)) => return None,
        Some(Ok(other)) => {
            format!("Sentinel's master {master} says it is {other}: Sentinel's view is stale")
        }
        Some(Err(e)) => format!("Sentinel's master {master} did not answer ROLE: {e}"),
        None => format!("Sentinel's master {master} was not asked its ROLE"),
    };
    Some(Observation::new(Verdict::Unknown, reason))
}

/// The write probe on Sentinel's master, which answers as master and which every connection of
/// the node goes to; `probe` is `None` when the probe is disabled or was not run.
fn judge_probe(
    master: &ServerAddr,
    probe: Option<&Result<(), ServerError>>,
    connections: usize,
) -> Observation {
    match probe {
        None | Some(Ok(())) => Observation::new(
            Verdict::Ok,
            format!(
                "{} connection(s) to master {master}{}",
                connections,
                if probe.is_some() {
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
        Ok(()) => worst(groups.iter().cloned())
            .unwrap_or_else(|| Observation::new(Verdict::Unknown, "no group configured")),
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
            unplaced: &[],
        })
        .verdict
    }

    #[test]
    fn a_connection_nothing_could_place_is_never_evidence_against_the_node() {
        let v = view(Some(M));
        let role_of = |a: &ServerAddr| (a == &addr(M)).then_some(Ok(Role::Master));
        let unplaced = [Unplaced {
            connection: Connection {
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "10.96.0.10:6379".parse().unwrap(),
            },
            why: "not in any server's CLIENT LIST".to_string(),
        }];
        let replicas = BTreeSet::new();
        let facts = |connections, unplaced| GroupFacts {
            view: &v,
            connections,
            role_of: &role_of,
            probe: None,
            seen_on_topology: true,
            last_replicas: &replicas,
            unplaced,
        };
        // Alone: not disconnected (which drains), but unknown, saying why.
        let alone = observe_group(&facts(&[], &unplaced));
        assert_eq!(alone.verdict, Verdict::Unknown, "{}", alone.reason);
        assert!(
            alone.reason.contains("could not be placed")
                && alone.reason.contains("10.96.0.10:6379")
                && alone.reason.contains("not in any server's CLIENT LIST"),
            "{}",
            alone.reason
        );
        let without = observe_group(&facts(&[], &[]));
        assert_eq!(without.verdict, Verdict::Disconnected);
        // Beside a connection on the master: ok, and the reason says what was not counted.
        let on_master = [conn(1, M)];
        let beside = observe_group(&facts(&on_master, &unplaced));
        assert_eq!(beside.verdict, Verdict::Ok, "{}", beside.reason);
        assert!(
            beside.reason.contains("1 connection(s) not placed"),
            "{}",
            beside.reason
        );
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
                unplaced: &[],
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
    /// A server's answer to `ROLE`, `None` when it was not asked.
    type RoleAnswer = Option<Result<Role, ServerError>>;

    const CLASSES: [ErrorClass; 16] = [
        ErrorClass::Readonly,
        ErrorClass::Redirect,
        ErrorClass::NoReplicas,
        ErrorClass::Misconf,
        ErrorClass::Oom,
        ErrorClass::Loading,
        ErrorClass::Busy,
        ErrorClass::MasterDown,
        ErrorClass::Auth,
        ErrorClass::NoPerm,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::Resolve,
        ErrorClass::Tls,
        ErrorClass::Protocol,
        ErrorClass::Other,
    ];

    #[test]
    fn of_equally_severe_observations_the_first_is_the_worst() {
        let o = |v: Verdict, r: &str| Observation::new(v, r);
        assert_eq!(worst(Vec::new()), None);
        let cases = [
            (
                vec![
                    o(Verdict::Ok, "a"),
                    o(Verdict::Unknown, "b"),
                    o(Verdict::Unknown, "c"),
                    o(Verdict::Ok, "d"),
                ],
                o(Verdict::Unknown, "b"),
            ),
            (
                vec![
                    o(Verdict::StuckOnReplica, "a"),
                    o(Verdict::StaleMaster, "b"),
                ],
                o(Verdict::StuckOnReplica, "a"),
            ),
        ];
        for (observations, want) in cases {
            assert_eq!(worst(observations), Some(want));
        }
    }

    #[test]
    fn sentinels_master_is_verified_only_when_it_answers_as_master() {
        let cases: Vec<(RoleAnswer, Option<&str>)> = vec![
            (Some(Ok(Role::Master)), None),
            (
                Some(Ok(replica())),
                Some("says it is a replica of 127.0.0.1:6379"),
            ),
            (
                Some(Ok(Role::Other("sentinel".into()))),
                Some("says it is sentinel"),
            ),
            (
                Some(Err(err(ErrorClass::Timeout))),
                Some("did not answer ROLE: Timeout"),
            ),
            (None, Some("was not asked its ROLE")),
        ];
        for (role, want) in cases {
            assert_eq!(
                master_unverified(role.as_ref()).as_deref(),
                want,
                "{role:?}"
            );
        }
    }

    #[test]
    fn a_node_without_connections_is_disconnected_only_when_seen_before_and_the_master_is_verified()
    {
        let m = addr(M);
        let cases = [
            (
                None,
                true,
                Verdict::Disconnected,
                "node has no connection to the topology of master 127.0.0.1:6379",
            ),
            (
                None,
                false,
                Verdict::Unknown,
                "node has not been seen connected to the topology of master 127.0.0.1:6379 since rolecall started",
            ),
            (
                Some("did not answer ROLE: Connect"),
                true,
                Verdict::Unknown,
                "node has no connection to the topology, and Sentinel's master 127.0.0.1:6379 did not answer ROLE: Connect: not the node's fault",
            ),
            (
                Some("was not asked its ROLE"),
                false,
                Verdict::Unknown,
                "node has no connection to the topology, and Sentinel's master 127.0.0.1:6379 was not asked its ROLE",
            ),
        ];
        for (unverified, seen, verdict, reason) in cases {
            let o = no_connection(&m, unverified, seen);
            assert_eq!(o.verdict, verdict, "{unverified:?} {seen}");
            assert!(o.reason.starts_with(reason), "{}", o.reason);
        }
    }

    #[test]
    fn a_connection_elsewhere_is_judged_by_its_servers_answer_and_what_it_said_before() {
        use Verdict as V;
        let m = addr(M);
        let rc = conn(1, R);
        let silent = "did not answer ROLE: Timeout";
        let cases: Vec<(&str, RoleAnswer, bool, Option<&str>, Verdict)> = vec![
            (
                "a replica",
                Some(Ok(replica())),
                false,
                None,
                V::StuckOnReplica,
            ),
            (
                "a sentinel",
                Some(Ok(Role::Other("sentinel".into()))),
                false,
                None,
                V::StuckOnReplica,
            ),
            (
                "a second master",
                Some(Ok(Role::Master)),
                false,
                None,
                V::StaleMaster,
            ),
            ("not asked", None, false, None, V::StaleMaster),
            (
                "a former replica gone silent",
                Some(Err(err(ErrorClass::Timeout))),
                true,
                None,
                V::StuckOnReplica,
            ),
            (
                "a former replica refusing connections, master unverified",
                Some(Err(err(ErrorClass::Connect))),
                true,
                Some(silent),
                V::StuckOnReplica,
            ),
            (
                "a silent server never seen as replica",
                Some(Err(err(ErrorClass::Timeout))),
                false,
                None,
                V::StaleMaster,
            ),
            (
                "a replica, master unverified",
                Some(Ok(replica())),
                false,
                Some(silent),
                V::StuckOnReplica,
            ),
            (
                "a second master, master unverified",
                Some(Ok(Role::Master)),
                false,
                Some(silent),
                V::Unknown,
            ),
            (
                "not asked, master unverified",
                None,
                false,
                Some(silent),
                V::Unknown,
            ),
        ];
        for (what, role, was_replica, unverified, want) in cases {
            let o = judge_connection(&rc, role.as_ref(), &m, unverified, was_replica);
            assert_eq!(o.verdict, want, "{what}: {}", o.reason);
        }
        // With a verified master, ROLE errors that blind rolecall are not evidence; the others
        // mean a server Sentinel no longer names.
        for class in CLASSES {
            let role = Err(err(class));
            let o = judge_connection(&rc, Some(&role), &m, None, false);
            let blind = matches!(
                class,
                ErrorClass::Auth
                    | ErrorClass::NoPerm
                    | ErrorClass::Resolve
                    | ErrorClass::Tls
                    | ErrorClass::Protocol
                    | ErrorClass::Other
            );
            let want = if blind { V::Unknown } else { V::StaleMaster };
            assert_eq!(o.verdict, want, "{class:?}: {}", o.reason);
        }
        assert_eq!(
            judge_connection(&rc, Some(&Ok(replica())), &m, None, false).reason,
            "connection 127.0.0.1:1 -> 127.0.0.1:6380 goes to a replica; Sentinel's master is 127.0.0.1:6379"
        );
        assert_eq!(
            judge_connection(&rc, Some(&Err(err(ErrorClass::Auth))), &m, None, false).reason,
            "cannot ask 127.0.0.1:6380 its ROLE: Auth"
        );
    }

    #[test]
    fn connections_all_on_sentinels_master_need_it_to_answer_as_master() {
        let m = addr(M);
        assert_eq!(judge_master(&m, Some(&Ok(Role::Master))), None);
        let cases = [
            (
                Some(Ok(replica())),
                "Sentinel's master 127.0.0.1:6379 says it is a replica of 127.0.0.1:6379: Sentinel's view is stale",
            ),
            (
                Some(Err(err(ErrorClass::Connect))),
                "Sentinel's master 127.0.0.1:6379 did not answer ROLE: Connect",
            ),
            (
                None,
                "Sentinel's master 127.0.0.1:6379 was not asked its ROLE",
            ),
        ];
        for (role, reason) in cases {
            assert_eq!(
                judge_master(&m, role.as_ref()),
                Some(Observation::new(Verdict::Unknown, reason))
            );
        }
    }

    #[test]
    fn the_probe_degrades_only_for_refusals_every_node_shares() {
        let m = addr(M);
        assert_eq!(
            judge_probe(&m, None, 2),
            Observation::new(Verdict::Ok, "2 connection(s) to master 127.0.0.1:6379")
        );
        assert_eq!(
            judge_probe(&m, Some(&Ok(())), 1),
            Observation::new(
                Verdict::Ok,
                "1 connection(s) to master 127.0.0.1:6379, which took the probe write"
            )
        );
        for class in CLASSES {
            let o = judge_probe(&m, Some(&Err(err(class))), 1);
            let want = match class {
                ErrorClass::NoReplicas | ErrorClass::Misconf | ErrorClass::Oom => Observation::new(
                    Verdict::Degraded,
                    format!(
                        "master 127.0.0.1:6379 refuses writes ({class:?}): every node shares this"
                    ),
                ),
                _ => Observation::new(
                    Verdict::Unknown,
                    format!("probe write on master 127.0.0.1:6379 failed: {class:?}"),
                ),
            };
            assert_eq!(o, want, "{class:?}");
        }
    }
}
