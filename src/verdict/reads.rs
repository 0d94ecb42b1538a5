//! Intended replica reads (`[[redis]] replica_reads = true`): the rules for a node that reads
//! from replicas on purpose (Centrifugo's `replica_client`, ioredis's `scaleReads`).
//!
//! Such a node's connections to replicas are not by themselves the #766 failure. Its write path
//! is what must reach Sentinel's master, so with the setting on a node connection on a replica
//! takes the node out only with evidence about the node's own writes:
//!
//! 1. the node has connections to replicas and none to Sentinel's verified master: whatever it
//!    writes can only go to a replica (a command connection stuck on the old master after its
//!    demotion, a client that resolved every role wrong);
//! 2. the last command of one of its connections on a replica (`cmd=` of `CLIENT LIST TYPE
//!    normal` there, matched by the node's `ip:port` in `addr=`) is a write: [`is_write`].
//!
//! rolecall's own blindness never drains: a replica that refuses or fails `CLIENT LIST` (an ACL
//! without `+client|list`) only adds a note to the reason, and a node on replicas only while
//! Sentinel's master does not answer as master is `unknown` (every node would say so).

use std::collections::BTreeMap;

use super::{Observation, RoutedConnection, Verdict};
use crate::conn::{ServerAddr, ServerError};
use crate::probe::LastCommands;

/// Commands that change data, by the name `CLIENT LIST` shows in `cmd=`.
///
/// The commands flagged `write` in `COMMAND` of Redis 7.0 (the `command_flags` of
/// `src/commands/*.json`; https://redis.io/docs/latest/commands/command/), generated from
/// `redis-cli --json COMMAND` by keeping the entries whose flags hold `write`. A command with
/// a read-only twin (`sort`/`sort_ro`, `georadius`/`georadius_ro`) is listed under its
/// writing name, as Redis flags it.
const FLAGGED_WRITE: &[&str] = &[
    "append",
    "bitfield",
    "bitop",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "copy",
    "decr",
    "decrby",
    "del",
    "expire",
    "expireat",
    "flushall",
    "flushdb",
    "geoadd",
    "georadius",
    "georadiusbymember",
    "geosearchstore",
    "getdel",
    "getex",
    "getset",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lmpop",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "migrate",
    "move",
    "mset",
    "msetnx",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfdebug",
    "pfmerge",
    "psetex",
    "rename",
    "renamenx",
    "restore",
    "restore-asking",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinterstore",
    "smove",
    "sort",
    "spop",
    "srem",
    "sunionstore",
    "swapdb",
    "unlink",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xreadgroup",
    "xsetid",
    "xtrim",
    "zadd",
    "zdiffstore",
    "zincrby",
    "zinterstore",
    "zmpop",
    "zpopmax",
    "zpopmin",
    "zrangestore",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zunionstore",
];

/// Commands not flagged `write` that a node sends only down its write path, so that on a
/// replica they are the #766 failure too.
///
/// `publish`/`spublish` succeed on a replica and reach only that replica's subscribers (the
/// incident itself: Centrifugo published to a replica). `eval`/`evalsha`/`fcall` may write, and
/// only the script knows; a node that reads through scripts on replicas uses the `_ro` variants,
/// which Redis runs read-only (https://redis.io/docs/latest/commands/eval_ro/), and those are
/// not listed. `exec` is not listed either: a transaction of reads is a read, and `CLIENT LIST`
/// does not say what the transaction held.
const WRITE_PATH: &[&str] = &["publish", "spublish", "eval", "evalsha", "fcall"];

/// Whether `cmd` (as `CLIENT LIST` shows it: lowercase, `container|sub` for subcommands) is a
/// write: [`FLAGGED_WRITE`] or [`WRITE_PATH`].
pub fn is_write(cmd: &str) -> bool {
    let cmd = cmd.to_ascii_lowercase();
    FLAGGED_WRITE.contains(&cmd.as_str()) || WRITE_PATH.contains(&cmd.as_str())
}

/// What a check learned for the replica-reads rule: the last commands of the clients of each
/// replica the node has a connection on (`CLIENT LIST`), or why rolecall could not see them.
/// A replica missing from the map was not asked.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaReads<'a> {
    pub last_commands: &'a BTreeMap<ServerAddr, Result<LastCommands, ServerError>>,
}

/// What the replica-reads rule says about the node's `on_replicas` connections (each on a
/// server that answers `ROLE` as replica, or last did and is silent now), given whether it has a connection to Sentinel's
/// `master` and why that master is not verified (if it is not).
pub(super) enum ReadsJudgement {
    /// Evidence against the node, or rolecall cannot tell.
    Observed(Observation),
    /// The connections are intended reads; a note for the reason when rolecall could not see
    /// some replica's clients.
    Reads { count: usize, blind: Option<String> },
}

/// Judges the node's connections on replicas with replica reads on (module doc).
pub(super) fn judge_replica_reads(
    on_replicas: &[&RoutedConnection],
    reads: &ReplicaReads<'_>,
    master: &ServerAddr,
    on_master: bool,
    unverified: Option<&str>,
) -> ReadsJudgement {
    if let Some(o) = writes_on_a_replica(on_replicas, reads, master) {
        return ReadsJudgement::Observed(o);
    }
    if !on_master {
        let first = on_replicas.first().map(|rc| rc.server.to_string());
        let first = first.as_deref().unwrap_or("a replica");
        let o = match unverified {
            // The master may simply be down: every node would lose its connection to it.
            Some(why) => Observation::new(
                Verdict::Unknown,
                format!(
                    "replica reads are on; the node has connections only to replicas ({first}), and Sentinel's master {master} {why}: cannot tell where its writes go"
                ),
            ),
            None => Observation::new(
                Verdict::StuckOnReplica,
                format!(
                    "replica reads are on, but the node has no connection to master {master}, only {} to replicas ({first}): its writes can only go to a replica",
                    on_replicas.len()
                ),
            ),
        };
        return ReadsJudgement::Observed(o);
    }
    ReadsJudgement::Reads {
        count: on_replicas.len(),
        blind: blind_note(on_replicas, reads),
    }
}

/// A connection on a replica whose last command is a write.
fn writes_on_a_replica(
    on_replicas: &[&RoutedConnection],
    reads: &ReplicaReads<'_>,
    master: &ServerAddr,
) -> Option<Observation> {
    on_replicas.iter().find_map(|rc| {
        let local = rc.connection.local.to_string();
        let cmd = reads
            .last_commands
            .get(&rc.server)?
            .as_ref()
            .ok()?
            .of(&local)?;
        is_write(cmd).then(|| {
            Observation::new(
                Verdict::StuckOnReplica,
                format!(
                    "replica reads are on, but connection {local} -> {} goes to a replica and its last command was a write ({cmd}); Sentinel's master is {master}",
                    rc.server
                ),
            )
        })
    })
}

/// Why rolecall could not see the last commands on some of the replicas, if it could not.
fn blind_note(on_replicas: &[&RoutedConnection], reads: &ReplicaReads<'_>) -> Option<String> {
    let mut seen = Vec::new();
    let mut notes = Vec::new();
    for rc in on_replicas {
        if seen.contains(&&rc.server) {
            continue;
        }
        seen.push(&rc.server);
        match reads.last_commands.get(&rc.server) {
            Some(Ok(_)) => {}
            // The error names the server ("127.0.0.1:6380: NOPERM ...").
            Some(Err(e)) => notes.push(format!("CLIENT LIST failed: {e}")),
            // Not asked: the replica did not answer ROLE in this check.
            None => notes.push(format!("{} was not asked CLIENT LIST", rc.server)),
        }
    }
    (!notes.is_empty()).then(|| {
        format!(
            "cannot see whether the node writes to replicas ({}); grant rolecall's user +client|list",
            notes.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_the_commands_redis_flags_write_and_the_write_path_ones() {
        for cmd in [
            "set", "incr", "del", "expire", "lpush", "rpush", "zadd", "sadd", "hset", "xadd",
            "publish", "spublish", "eval", "evalsha", "fcall", "SET",
        ] {
            assert!(is_write(cmd), "{cmd}");
        }
        for cmd in [
            "get",
            "mget",
            "hgetall",
            "xrange",
            "zrange",
            "sort_ro",
            "eval_ro",
            "evalsha_ro",
            "fcall_ro",
            "ping",
            "subscribe",
            "client|setname",
            "NULL",
            "",
        ] {
            assert!(!is_write(cmd), "{cmd}");
        }
        let mut sorted = FLAGGED_WRITE.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, FLAGGED_WRITE, "kept sorted and without repeats");
    }

    use std::collections::BTreeSet;

    use crate::conn::ErrorClass;
    use crate::probe::{Role, parse_client_list};
    use crate::sentinel::SentinelView;
    use crate::sockets::Connection;
    use crate::verdict::{GroupFacts, observe_group_reading};

    const M: &str = "127.0.0.1:6379";
    const R: &str = "127.0.0.1:6380";
    const R2: &str = "127.0.0.1:6381";
    /// The node's command connection and its read connection.
    const CMD: u16 = 50001;
    const READ: u16 = 50002;

    fn addr(s: &str) -> ServerAddr {
        s.parse().unwrap()
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

    fn replica() -> Role {
        Role::Replica {
            master: Some(addr(M)),
            link_up: true,
        }
    }

    /// `CLIENT LIST` of a replica whose clients are the node's `(local port, last command)`.
    fn clients(of: &[(u16, &str)]) -> Result<LastCommands, ServerError> {
        let text: String = of
            .iter()
            .map(|(port, cmd)| format!("id=1 addr=127.0.0.1:{port} fd=8 name=n cmd={cmd}\n"))
            .collect();
        Ok(parse_client_list(&text).unwrap())
    }

    fn refused() -> Result<LastCommands, ServerError> {
        Err(ServerError::new(
            ErrorClass::NoPerm,
            "127.0.0.1:6380: NOPERM this user has no permissions to run the 'client|list' command",
        ))
    }

    struct Case<'a> {
        master: &'a str,
        conns: Vec<RoutedConnection>,
        roles: Vec<(&'a str, Result<Role, ServerError>)>,
        lists: Vec<(&'a str, Result<LastCommands, ServerError>)>,
        /// Servers whose last answer to `ROLE` was replica.
        last_replicas: Vec<&'a str>,
    }

    /// The observation of `case` with replica reads on (`Some`) or off (`None`).
    fn observe(case: &Case<'_>, on: bool) -> Observation {
        let view = SentinelView {
            master: Some(addr(case.master)),
            ..SentinelView::default()
        };
        let roles: BTreeMap<ServerAddr, Result<Role, ServerError>> = case
            .roles
            .iter()
            .map(|(a, r)| (addr(a), r.clone()))
            .collect();
        let role_of = |a: &ServerAddr| roles.get(a).cloned();
        let lists: BTreeMap<ServerAddr, Result<LastCommands, ServerError>> = case
            .lists
            .iter()
            .map(|(a, l)| (addr(a), l.clone()))
            .collect();
        let reads = ReplicaReads {
            last_commands: &lists,
        };
        observe_group_reading(
            &GroupFacts {
                view: &view,
                connections: &case.conns,
                role_of: &role_of,
                probe: None,
                seen_on_topology: true,
                last_replicas: &case
                    .last_replicas
                    .iter()
                    .map(|a| addr(a))
                    .collect::<BTreeSet<_>>(),
                unplaced: &[],
            },
            on.then_some(&reads),
        )
    }

    #[test]
    fn with_replica_reads_a_read_connection_is_fine_and_the_write_path_on_a_replica_is_not() {
        use Verdict as V;
        let roles = || {
            vec![
                (M, Ok(Role::Master)),
                (R, Ok(replica())),
                (R2, Ok(replica())),
            ]
        };
        let case = |conns: Vec<RoutedConnection>, lists| Case {
            master: M,
            conns,
            roles: roles(),
            lists,
            last_replicas: vec![],
        };
        // (what, the case, verdict with the setting off, verdict with it on, reason words on)
        let cases: Vec<(&str, Case<'_>, Verdict, Verdict, &str)> = vec![
            (
                "command connection on the master, a read connection on a replica",
                case(
                    vec![conn(CMD, M), conn(READ, R)],
                    vec![(R, clients(&[(READ, "get")]))],
                ),
                V::StuckOnReplica,
                V::Ok,
                "read on purpose",
            ),
            (
                "reads spread over two replicas",
                case(
                    vec![conn(CMD, M), conn(READ, R), conn(READ + 1, R2)],
                    vec![
                        (R, clients(&[(READ, "get")])),
                        (R2, clients(&[(READ + 1, "hgetall")])),
                    ],
                ),
                V::StuckOnReplica,
                V::Ok,
                "2 connection(s) to replicas",
            ),
            (
                "only on the master",
                case(vec![conn(CMD, M)], vec![]),
                V::Ok,
                V::Ok,
                "1 connection(s) to master",
            ),
            (
                "only on a replica: the write path cannot reach the master (#766)",
                case(vec![conn(CMD, R)], vec![(R, clients(&[(CMD, "get")]))]),
                V::StuckOnReplica,
                V::StuckOnReplica,
                "no connection to master 127.0.0.1:6379",
            ),
            (
                "command connection stuck on the demoted old master, reads on the other replica",
                case(
                    vec![conn(CMD, R), conn(READ, R2)],
                    vec![
                        (R, clients(&[(CMD, "client|setname")])),
                        (R2, clients(&[(READ, "get")])),
                    ],
                ),
                V::StuckOnReplica,
                V::StuckOnReplica,
                "no connection to master",
            ),
            (
                "a write on a replica, though the node also has a master connection",
                case(
                    vec![conn(CMD, M), conn(READ, R)],
                    vec![(R, clients(&[(READ, "publish")]))],
                ),
                V::StuckOnReplica,
                V::StuckOnReplica,
                "last command was a write (publish)",
            ),
            (
                "the command connection on a replica after a READONLY (incr), reads on the master",
                case(
                    vec![conn(CMD, R), conn(READ, M)],
                    vec![(R, clients(&[(CMD, "incr")]))],
                ),
                V::StuckOnReplica,
                V::StuckOnReplica,
                "(incr)",
            ),
            (
                "CLIENT LIST refused on the replica: rolecall is blind, the node stays in",
                case(vec![conn(CMD, M), conn(READ, R)], vec![(R, refused())]),
                V::StuckOnReplica,
                V::Ok,
                "CLIENT LIST failed: 127.0.0.1:6380: NOPERM",
            ),
            (
                "the read connection closed before CLIENT LIST: no evidence",
                case(vec![conn(CMD, M), conn(READ, R)], vec![(R, clients(&[]))]),
                V::StuckOnReplica,
                V::Ok,
                "read on purpose",
            ),
            (
                "the replica the node reads from stopped answering: still a replica, still a read",
                Case {
                    master: M,
                    conns: vec![conn(CMD, M), conn(READ, R)],
                    roles: vec![
                        (M, Ok(Role::Master)),
                        (R, Err(ServerError::new(ErrorClass::Timeout, "timeout"))),
                    ],
                    lists: vec![],
                    last_replicas: vec![R],
                },
                V::StuckOnReplica,
                V::Ok,
                "127.0.0.1:6380 was not asked CLIENT LIST",
            ),
            (
                "a server that still claims master: stale_master, as without the setting",
                Case {
                    master: M,
                    conns: vec![conn(CMD, R)],
                    roles: vec![(M, Ok(Role::Master)), (R, Ok(Role::Master))],
                    lists: vec![],
                    last_replicas: vec![],
                },
                V::StaleMaster,
                V::StaleMaster,
                "still claims master",
            ),
            (
                "only on replicas while Sentinel's master does not answer: every node shares it",
                Case {
                    master: M,
                    conns: vec![conn(READ, R)],
                    roles: vec![
                        (M, Err(ServerError::new(ErrorClass::Timeout, "timeout"))),
                        (R, Ok(replica())),
                    ],
                    lists: vec![(R, clients(&[(READ, "get")]))],
                    last_replicas: vec![R],
                },
                V::StuckOnReplica,
                V::Unknown,
                "cannot tell where its writes go",
            ),
        ];
        for (what, case, off, on, words) in cases {
            assert_eq!(observe(&case, false).verdict, off, "off: {what}");
            let o = observe(&case, true);
            assert_eq!(o.verdict, on, "on: {what}: {}", o.reason);
            assert!(o.reason.contains(words), "on: {what}: {}", o.reason);
            if on == V::StuckOnReplica {
                assert!(
                    o.reason.contains("replica reads are on"),
                    "{what}: {}",
                    o.reason
                );
            }
        }
    }
}
