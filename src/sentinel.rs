//! Sentinel's view of one group: every configured sentinel asked concurrently, each under the
//! check timeout, and the master decided by a majority of the *configured* sentinels.
//!
//! A sentinel that did not answer, does not know the master name, or is in TILT mode has no
//! vote (Redis docs, "Sentinel", TILT mode: its view may be wrong). Asking is I/O
//! ([`ask_all`]); deciding is pure ([`decide`]) and table-tested.
//!
//! One more way to a master, and still a majority's: **the configuration of an elected failover
//! leader**. Before a sentinel fails a master over, a majority of the sentinels must vote for it
//! as leader for a new epoch (each voter publishes `+vote-for-leader <leader-id> <epoch>`); once
//! the promoted replica answers as master, the leader names it under that epoch as its
//! `config-epoch`, and Sentinel's own rule makes every other sentinel adopt it (a greater epoch
//! always wins) as soon as the leader's next hello reaches them, up to ~100 ms later. When
//! rolecall has heard a majority of its configured sentinels vote for sentinel L in epoch E, and
//! L names master B under config-epoch E, and no sentinel that answers names another master under
//! an epoch as recent, B is the master: the majority already decided it, by electing L. An
//! operator's `SENTINEL FAILOVER` has no election (one sentinel acts alone), so it is followed
//! once the majority names the new master, as before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::Value;
use serde::Serialize;

use crate::conn::{ErrorClass, Pool, ReplyError, ServerAddr, ServerError, command, text};

/// A replica as one sentinel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub addr: ServerAddr,
    pub flags: Vec<String>,
    /// The replica's run id (`runid`), when the sentinel knows it.
    pub run_id: Option<String>,
}

/// One sentinel's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelReport {
    /// `None`: this sentinel does not monitor a master of that name.
    pub master: Option<ServerAddr>,
    pub tilt: bool,
    pub replicas: Vec<ReplicaInfo>,
    /// The sentinel's own id (`SENTINEL MYID`) and the master's `config-epoch` as it knows them;
    /// asked only while a leader vote is on record (see [`Vote`]).
    pub id: Option<String>,
    pub config_epoch: Option<u64>,
}

/// A leader vote heard on one configured sentinel's pub/sub (`+vote-for-leader <id> <epoch>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub voter: ServerAddr,
    pub leader: String,
    pub epoch: u64,
}

/// Parses a `+vote-for-leader` payload: `<leader-id> <epoch>`.
pub fn parse_vote(payload: &str) -> Option<(String, u64)> {
    let mut words = payload.split_whitespace();
    let leader = words.next()?;
    let epoch = words.next()?.parse().ok()?;
    if words.next().is_some()
        || leader.is_empty()
        || leader.len() > 64
        || !leader.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some((leader.to_string(), epoch))
}

/// How a master was decided when a majority of sentinels does not name it yet: by the sentinel
/// a majority elected as failover leader for `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Elected {
    pub leader: ServerAddr,
    pub epoch: u64,
    /// Configured sentinels heard voting for the leader in that epoch.
    pub voters: usize,
}

#[derive(Debug, Clone)]
pub struct SentinelAnswer {
    pub addr: ServerAddr,
    pub latency: Option<Duration>,
    pub result: Result<SentinelReport, ServerError>,
}

/// The group's topology as the sentinels see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The master named by a majority of the configured sentinels.
    pub master: Option<ServerAddr>,
    pub votes: usize,
    pub configured: usize,
    /// Every other server of the group: replicas any sentinel lists, masters a minority names.
    pub others: Vec<ServerAddr>,
    /// Why there is no master, when there is none.
    pub problem: Option<String>,
    /// Sentinels that did not vote with the majority, and why.
    pub dissent: Vec<String>,
    /// Run ids the sentinels report for the servers (replicas), to recognise a server the node
    /// reaches under another address (NAT, `replica-announce-ip`, host names).
    pub run_ids: BTreeMap<String, ServerAddr>,
    /// Set when the master is the elected failover leader's and a majority does not name it yet.
    pub elected: Option<Elected>,
}

impl SentinelView {
    /// Every server of the group, master first.
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> {
        self.master.iter().chain(self.others.iter())
    }
}

/// The master named by an elected failover leader, if the votes heard make one (module docs).
fn elected_leader(
    configured: usize,
    answers: &[SentinelAnswer],
    votes: &[Vote],
) -> Option<(ServerAddr, Elected)> {
    let majority = configured / 2 + 1;
    let reports = || {
        answers
            .iter()
            .filter_map(|a| Some((&a.addr, a.result.as_ref().ok()?)))
    };
    for (addr, r) in reports() {
        let (Some(id), Some(epoch), Some(master), false) =
            (&r.id, r.config_epoch, &r.master, r.tilt)
        else {
            continue;
        };
        // Voters are the configured sentinels that answered or not; one vote each.
        let voters: std::collections::BTreeSet<&ServerAddr> = votes
            .iter()
            .filter(|v| &v.leader == id && v.epoch == epoch)
            .filter(|v| answers.iter().any(|a| a.addr == v.voter))
            .map(|v| &v.voter)
            .collect();
        if voters.len() < majority {
            continue;
        }
        // No answering sentinel may name another master under an epoch as recent, or under an
        // epoch it did not report.
        let contradicted = reports().any(|(_, o)| match &o.master {
            Some(m) if m != master => o.config_epoch.is_none_or(|e| e >= epoch),
            _ => false,
        });
        if contradicted {
            continue;
        }
        return Some((
            master.clone(),
            Elected {
                leader: addr.clone(),
                epoch,
                voters: voters.len(),
            },
        ));
    }
    None
}

/// Decides the master from the answers of `configured` sentinels of master `name`, and the
/// leader votes heard from them.
pub fn decide(
    name: &str,
    configured: usize,
    answers: &[SentinelAnswer],
    leader_votes: &[Vote],
) -> SentinelView {
    let mut tally = count_votes(name, answers);
    let (master, votes, elected) = choose_master(&tally.votes, configured, answers, leader_votes);
    let mut others = group_servers(&tally.votes, answers);
    let problem = match &master {
        Some(m) => {
            others.retain(|o| o != m);
            let dissent = master_dissent(m, votes, elected.as_ref(), configured, &tally.votes);
            tally.dissent.extend(dissent);
            None
        }
        None => Some(tally.no_master(name, configured)),
    };
    SentinelView {
        master,
        votes,
        configured,
        others,
        problem,
        dissent: tally.dissent,
        run_ids: replica_run_ids(answers),
        elected,
    }
}

/// The answers counted: the masters the sentinels with a vote name, and who has no vote.
struct Tally<'a> {
    /// Each master named by a sentinel with a vote, and by how many.
    votes: BTreeMap<&'a ServerAddr, usize>,
    /// Sentinels without a vote, and why.
    dissent: Vec<String>,
    /// Sentinels that answered, with a vote or not.
    answered: usize,
    /// Sentinels that answered but do not know the master name.
    unknown_name: usize,
}

/// Counts the votes of the sentinels that answered, know master `name` and are not in TILT.
fn count_votes<'a>(name: &str, answers: &'a [SentinelAnswer]) -> Tally<'a> {
    let mut tally = Tally {
        votes: BTreeMap::new(),
        dissent: Vec::new(),
        answered: 0,
        unknown_name: 0,
    };
    for a in answers {
        match &a.result {
            Err(e) => tally.dissent.push(format!("sentinel {}: {e}", a.addr)),
            Ok(r) => {
                tally.answered += 1;
                if r.tilt {
                    tally
                        .dissent
                        .push(format!("sentinel {} is in TILT mode: vote ignored", a.addr));
                } else if let Some(m) = &r.master {
                    *tally.votes.entry(m).or_default() += 1;
                } else {
                    tally.unknown_name += 1;
                    tally.dissent.push(format!(
                        "sentinel {} does not know master name {name:?}",
                        a.addr
                    ));
                }
            }
        }
    }
    tally
}

impl Tally<'_> {
    /// Why no master was decided.
    fn no_master(&self, name: &str, configured: usize) -> String {
        let majority = configured / 2 + 1;
        if self.answered == 0 {
            format!("no sentinel answered (0 of {configured})")
        } else if self.unknown_name == self.answered {
            format!("master name {name:?} unknown to every sentinel that answered")
        } else {
            let named: Vec<String> = self
                .votes
                .iter()
                .map(|(m, n)| format!("{m} by {n}"))
                .collect();
            format!(
                "no sentinel majority: {majority} of {configured} needed, {} ({} answered)",
                if named.is_empty() {
                    "none named a master".to_string()
                } else {
                    format!("named {}", named.join(", "))
                },
                self.answered
            )
        }
    }
}

/// The master, the votes it has, and the election that decided it when the majority did not.
/// Without a master, the votes are those of the most named server (0 if none is named).
fn choose_master(
    votes: &BTreeMap<&ServerAddr, usize>,
    configured: usize,
    answers: &[SentinelAnswer],
    leader_votes: &[Vote],
) -> (Option<ServerAddr>, usize, Option<Elected>) {
    let majority = configured / 2 + 1;
    let best = votes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| ((*m).clone(), *n));
    // An elected leader's newer configuration goes before a majority that has not heard of it
    // yet; when the majority names the same master, the majority alone decides.
    let by_majority = best
        .as_ref()
        .filter(|(_, n)| *n >= majority)
        .map(|(m, _)| m.clone());
    match elected_leader(configured, answers, leader_votes) {
        Some((m, e)) if by_majority.as_ref() != Some(&m) => {
            let n = votes.get(&m).copied().unwrap_or(0);
            (Some(m), n, Some(e))
        }
        _ => match best {
            Some((m, n)) if n >= majority => (Some(m), n, None),
            Some((_, n)) => (None, n, None),
            None => (None, 0, None),
        },
    }
}

/// Every server of the group the sentinels know of: the masters any of them names and the
/// replicas any of them lists, sorted, each once.
fn group_servers(
    votes: &BTreeMap<&ServerAddr, usize>,
    answers: &[SentinelAnswer],
) -> Vec<ServerAddr> {
    let mut servers: Vec<ServerAddr> = votes.keys().map(|m| (*m).clone()).collect();
    for a in answers {
        if let Ok(r) = &a.result {
            servers.extend(r.replicas.iter().map(|x| x.addr.clone()));
        }
    }
    servers.sort();
    servers.dedup();
    servers
}

/// The run id of each replica the sentinels list.
fn replica_run_ids(answers: &[SentinelAnswer]) -> BTreeMap<String, ServerAddr> {
    let mut run_ids = BTreeMap::new();
    for a in answers {
        if let Ok(r) = &a.result {
            for x in &r.replicas {
                if let Some(id) = &x.run_id {
                    run_ids.insert(id.clone(), x.addr.clone());
                }
            }
        }
    }
    run_ids
}

/// How the decided master `m`, with `n` votes, differs from what the sentinels say: the
/// election that decided it, if one did, and the masters the others name.
fn master_dissent(
    m: &ServerAddr,
    n: usize,
    elected: Option<&Elected>,
    configured: usize,
    votes: &BTreeMap<&ServerAddr, usize>,
) -> Vec<String> {
    let mut dissent = Vec::new();
    if let Some(e) = elected {
        dissent.push(format!(
            "{m} is named by sentinel {}, failover leader of epoch {} elected by {} of {configured} sentinels ({n} of {configured} name it so far)",
            e.leader, e.epoch, e.voters
        ));
    }
    for (other, n) in votes {
        if *other != m {
            dissent.push(format!("{n} sentinel(s) name {other} as master"));
        }
    }
    dissent
}

/// Parses `SENTINEL get-master-addr-by-name`: `[host, port]`, or nil for an unknown name.
pub fn parse_master_addr(v: &Value) -> Result<Option<ServerAddr>, ReplyError> {
    let error = |problem: String| ReplyError::new("master address", problem);
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) if items.len() == 2 => {
            let host = text(&items[0]).ok_or_else(|| error("host is not text".into()))?;
            let port = text(&items[1])
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| error("port is not a number".into()))?;
            Ok(Some(ServerAddr::new(host, port)))
        }
        other => Err(error(format!("unexpected reply {other:?}"))),
    }
}

fn fields(v: &Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    match v {
        Value::Array(kv) => {
            for pair in kv.chunks(2) {
                if let [k, v] = pair
                    && let (Some(k), Some(v)) = (text(k), text(v))
                {
                    m.insert(k, v);
                }
            }
        }
        Value::Map(kv) => {
            for (k, v) in kv {
                if let (Some(k), Some(v)) = (text(k), text(v)) {
                    m.insert(k, v);
                }
            }
        }
        _ => {}
    }
    m
}

/// Parses `SENTINEL replicas`: an array of field/value arrays.
pub fn parse_replicas(v: &Value) -> Result<Vec<ReplicaInfo>, ReplyError> {
    let Value::Array(items) = v else {
        return Err(ReplyError::new(
            "replicas",
            format!("unexpected reply {v:?}"),
        ));
    };
    Ok(items
        .iter()
        .filter_map(|item| {
            let f = fields(item);
            let host = f.get("ip")?.clone();
            let port = f.get("port")?.parse::<u16>().ok()?;
            Some(ReplicaInfo {
                addr: ServerAddr::new(host, port),
                flags: f
                    .get("flags")
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                run_id: f.get("runid").filter(|r| !r.is_empty()).cloned(),
            })
        })
        .collect())
}

/// Reads `sentinel_tilt:1` from `INFO sentinel`.
pub fn parse_tilt(info: &str) -> bool {
    info.lines().any(|l| l.trim_end() == "sentinel_tilt:1")
}

/// Asks one sentinel; the connection is returned when it should be kept.
async fn ask(
    conn: Result<(redis::aio::MultiplexedConnection, bool), ServerError>,
    addr: ServerAddr,
    master_name: String,
    timeout: Duration,
    epochs: bool,
) -> (SentinelAnswer, Option<redis::aio::MultiplexedConnection>) {
    let started = Instant::now();
    let mut c = match conn {
        Ok((c, _)) => c,
        Err(e) => {
            return (
                SentinelAnswer {
                    addr,
                    latency: None,
                    result: Err(e),
                },
                None,
            );
        }
    };
    let mut get = redis::cmd("SENTINEL");
    get.arg("get-master-addr-by-name").arg(&master_name);
    let mut reps = redis::cmd("SENTINEL");
    reps.arg("replicas").arg(&master_name);
    let mut info = redis::cmd("INFO");
    info.arg("sentinel");
    let (mut c1, mut c2, c3) = (c.clone(), c.clone(), c.clone());
    let leader = async {
        if !epochs {
            return (None, None);
        }
        leader_facts(c3, &addr, &master_name, timeout).await
    };
    let (m, r, i, (id, config_epoch)) = tokio::join!(
        command(&mut c, &addr, "sentinel", timeout, &get),
        command(&mut c1, &addr, "sentinel", timeout, &reps),
        command(&mut c2, &addr, "sentinel", timeout, &info),
        leader,
    );
    let result = read_report(&addr, m, r, i).map(|report| SentinelReport {
        id,
        config_epoch,
        ..report
    });
    let keep = keeps_connection(&result);
    (
        SentinelAnswer {
            addr,
            latency: result.is_ok().then(|| started.elapsed()),
            result,
        },
        keep.then_some(c),
    )
}

/// The sentinel's id (`SENTINEL MYID`) and the master's `config-epoch` (`SENTINEL MASTER`),
/// asked concurrently: what the failover-leader rule of [`decide`] needs.
async fn leader_facts(
    mut c: redis::aio::MultiplexedConnection,
    addr: &ServerAddr,
    master_name: &str,
    timeout: Duration,
) -> (Option<String>, Option<u64>) {
    let mut myid = redis::cmd("SENTINEL");
    myid.arg("MYID");
    let mut state = redis::cmd("SENTINEL");
    state.arg("MASTER").arg(master_name);
    let mut c1 = c.clone();
    let (id, st) = tokio::join!(
        command(&mut c, addr, "sentinel", timeout, &myid),
        command(&mut c1, addr, "sentinel", timeout, &state),
    );
    // Older sentinels lack MYID; either failing only leaves the election rule out.
    let id = id.ok().as_ref().and_then(text);
    let epoch = st
        .ok()
        .and_then(|v| fields(&v).get("config-epoch").and_then(|e| e.parse().ok()));
    (id, epoch)
}

/// Reads a sentinel's answers to `SENTINEL get-master-addr-by-name`, `SENTINEL replicas` and
/// `INFO sentinel`; the replicas only count when the sentinel knows the master name. The first
/// failure, in the order master address, `INFO`, replicas, is the sentinel's answer.
fn read_report(
    addr: &ServerAddr,
    master: Result<Value, ServerError>,
    replicas: Result<Value, ServerError>,
    info: Result<Value, ServerError>,
) -> Result<SentinelReport, ServerError> {
    let protocol =
        |m: ReplyError| ServerError::new(ErrorClass::Protocol, format!("sentinel {addr}: {m}"));
    let master = parse_master_addr(&master?).map_err(protocol)?;
    let tilt = parse_tilt(&text(&info?).unwrap_or_default());
    let replicas = match (&master, replicas) {
        (None, _) => Vec::new(),
        (Some(_), r) => parse_replicas(&r?).map_err(protocol)?,
    };
    Ok(SentinelReport {
        master,
        tilt,
        replicas,
        ..SentinelReport::default()
    })
}

/// Whether a sentinel's connection is kept after its answer: not after a timeout, a failed
/// connect or a reply rolecall could not read.
fn keeps_connection(result: &Result<SentinelReport, ServerError>) -> bool {
    !matches!(
        result,
        Err(ServerError {
            class: ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::Protocol,
            ..
        })
    )
}

/// Asks every sentinel of a group concurrently. Each answer is bounded by the pool's timeout
/// (connect, then each command).
///
/// With `epochs`, each sentinel is also asked its id and the master's `config-epoch` (what the
/// failover-leader rule of [`decide`] needs; only worth asking while a leader vote is on record).
pub async fn ask_all(
    pool: &mut Pool,
    sentinels: &[ServerAddr],
    master_name: &str,
    epochs: bool,
) -> Vec<SentinelAnswer> {
    let timeout = pool.timeout();
    let asks = sentinels.iter().map(|addr| {
        let conn = pool.connection(addr);
        let addr = addr.clone();
        let name = master_name.to_string();
        async move {
            // One deadline for connect plus commands, so a black-holed sentinel costs at most
            // twice the timeout and never more.
            match tokio::time::timeout(timeout * 2, async {
                ask(conn.await, addr.clone(), name, timeout, epochs).await
            })
            .await
            {
                Ok(r) => r,
                Err(_) => (
                    SentinelAnswer {
                        result: Err(ServerError::timeout("sentinel", &addr, timeout * 2)),
                        addr,
                        latency: None,
                    },
                    None,
                ),
            }
        }
    });
    let results = join_all(asks).await;
    let mut answers = Vec::with_capacity(results.len());
    for (answer, conn) in results {
        match conn {
            Some(c) => pool.keep(&answer.addr, c),
            None => pool.forget(&answer.addr),
        }
        answers.push(answer);
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> ServerAddr {
        s.parse().unwrap()
    }

    fn says(sentinel: &str, master: Option<&str>, tilt: bool) -> SentinelAnswer {
        SentinelAnswer {
            addr: a(sentinel),
            latency: Some(Duration::from_millis(1)),
            result: Ok(SentinelReport {
                master: master.map(a),
                tilt,
                replicas: vec![ReplicaInfo {
                    addr: a("127.0.0.1:6380"),
                    flags: vec!["slave".into()],
                    run_id: Some("r1".into()),
                }],
                ..Default::default()
            }),
        }
    }

    /// A sentinel with id `id` naming `master` under `epoch`.
    fn says_epoch(sentinel: &str, id: &str, master: &str, epoch: u64) -> SentinelAnswer {
        let mut answer = says(sentinel, Some(master), false);
        if let Ok(r) = &mut answer.result {
            r.id = Some(id.to_string());
            r.config_epoch = Some(epoch);
        }
        answer
    }

    fn vote(voter: &str, leader: &str, epoch: u64) -> Vote {
        Vote {
            voter: a(voter),
            leader: leader.to_string(),
            epoch,
        }
    }

    fn silent(sentinel: &str) -> SentinelAnswer {
        SentinelAnswer {
            addr: a(sentinel),
            latency: None,
            result: Err(ServerError::new(ErrorClass::Connect, "connection refused")),
        }
    }

    const S1: &str = "127.0.0.1:26379";
    const S2: &str = "127.0.0.1:26380";
    const S3: &str = "127.0.0.1:26381";
    const M: &str = "127.0.0.1:6379";
    const N: &str = "127.0.0.1:6381";

    #[test]
    fn the_majority_of_configured_sentinels_names_the_master() {
        let cases: Vec<(&str, Vec<SentinelAnswer>, Option<&str>, &str)> = vec![
            (
                "all agree",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(M), false),
                    says(S3, Some(M), false),
                ],
                Some(M),
                "",
            ),
            (
                "one disagrees",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(M), false),
                    says(S3, Some(N), false),
                ],
                Some(M),
                "",
            ),
            (
                "one unreachable",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(M), false),
                    silent(S3),
                ],
                Some(M),
                "",
            ),
            (
                "1-1 and one unreachable",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(N), false),
                    silent(S3),
                ],
                None,
                "no sentinel majority",
            ),
            (
                "only one answers",
                vec![says(S1, Some(M), false), silent(S2), silent(S3)],
                None,
                "no sentinel majority",
            ),
            (
                "none answers",
                vec![silent(S1), silent(S2), silent(S3)],
                None,
                "no sentinel answered",
            ),
            (
                "a TILT vote does not count",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(M), true),
                    silent(S3),
                ],
                None,
                "no sentinel majority",
            ),
            (
                "unknown master name",
                vec![
                    says(S1, None, false),
                    says(S2, None, false),
                    says(S3, None, false),
                ],
                None,
                "unknown to every sentinel",
            ),
        ];
        for (what, answers, master, problem) in cases {
            let v = decide("mymaster", 3, &answers, &[]);
            assert_eq!(v.master, master.map(a), "{what}");
            if master.is_some() {
                assert!(v.problem.is_none(), "{what}");
                assert!(
                    !v.others.contains(&a(M)),
                    "{what}: master is not among the others"
                );
            } else {
                assert!(
                    v.problem.as_deref().unwrap().contains(problem),
                    "{what}: {:?}",
                    v.problem
                );
            }
        }
    }

    #[test]
    fn dissent_is_reported_and_minority_masters_belong_to_the_topology() {
        let v = decide(
            "mymaster",
            3,
            &[
                says(S1, Some(M), false),
                says(S2, Some(M), false),
                says(S3, Some(N), false),
            ],
            &[],
        );
        assert_eq!(v.votes, 2);
        assert!(v.others.contains(&a(N)) && v.others.contains(&a("127.0.0.1:6380")));
        assert!(
            v.dissent.iter().any(|d| d.contains("127.0.0.1:6381")),
            "{:?}",
            v.dissent
        );
    }

    #[test]
    fn an_elected_leaders_newer_configuration_goes_before_the_majority() {
        // S3 ("ccc") won epoch 7 with the votes of all three and names N; S1 and S2 have not
        // heard its hello yet and still name M under epoch 6.
        let stale_majority = || {
            vec![
                says_epoch(S1, "aaa", M, 6),
                says_epoch(S2, "bbb", M, 6),
                says_epoch(S3, "ccc", N, 7),
            ]
        };
        let all_voted = [vote(S1, "ccc", 7), vote(S2, "ccc", 7), vote(S3, "ccc", 7)];
        let v = decide("mymaster", 3, &stale_majority(), &all_voted);
        assert_eq!(v.master, Some(a(N)));
        assert_eq!(v.votes, 1);
        assert_eq!(
            v.elected,
            Some(Elected {
                leader: a(S3),
                epoch: 7,
                voters: 3
            })
        );
        assert!(
            v.others.contains(&a(M)),
            "the old master stays in the topology"
        );
        assert!(
            v.dissent
                .iter()
                .any(|d| d.contains("failover leader of epoch 7")),
            "{:?}",
            v.dissent
        );

        // Two votes are a majority of three; the leaders' own vote counts.
        let two = [vote(S1, "ccc", 7), vote(S3, "ccc", 7)];
        assert_eq!(
            decide("mymaster", 3, &stale_majority(), &two).master,
            Some(a(N))
        );

        // And the same holds when the others do not answer at all.
        let alone = vec![silent(S1), silent(S2), says_epoch(S3, "ccc", N, 7)];
        assert_eq!(decide("mymaster", 3, &alone, &all_voted).master, Some(a(N)));

        let not_elected: Vec<(&str, Vec<Vote>, Vec<SentinelAnswer>)> = vec![
            (
                // An operator's SENTINEL FAILOVER: the leader votes for itself, nobody else.
                "only the leader's own vote",
                vec![vote(S3, "ccc", 7)],
                stale_majority(),
            ),
            (
                "votes for another leader",
                vec![vote(S1, "bbb", 7), vote(S2, "bbb", 7), vote(S3, "bbb", 7)],
                stale_majority(),
            ),
            (
                "votes in another epoch",
                vec![vote(S1, "ccc", 5), vote(S2, "ccc", 5), vote(S3, "ccc", 5)],
                stale_majority(),
            ),
            (
                "votes from sentinels rolecall is not configured with",
                vec![
                    vote("127.0.0.9:1", "ccc", 7),
                    vote("127.0.0.9:2", "ccc", 7),
                    vote(S3, "ccc", 7),
                ],
                stale_majority(),
            ),
            (
                "the same voter twice",
                vec![vote(S3, "ccc", 7), vote(S3, "ccc", 7)],
                stale_majority(),
            ),
            (
                "another sentinel names another master under a newer epoch",
                all_voted.to_vec(),
                vec![
                    says_epoch(S1, "aaa", M, 8),
                    says_epoch(S2, "bbb", M, 6),
                    says_epoch(S3, "ccc", N, 7),
                ],
            ),
            (
                "another sentinel names another master without an epoch",
                all_voted.to_vec(),
                vec![
                    says(S1, Some(M), false),
                    says_epoch(S2, "bbb", M, 6),
                    says_epoch(S3, "ccc", N, 7),
                ],
            ),
            (
                "the leader is in TILT",
                all_voted.to_vec(),
                vec![says_epoch(S1, "aaa", M, 6), says_epoch(S2, "bbb", M, 6), {
                    let mut t = says_epoch(S3, "ccc", N, 7);
                    if let Ok(r) = &mut t.result {
                        r.tilt = true;
                    }
                    t
                }],
            ),
        ];
        for (what, votes, answers) in not_elected {
            let v = decide("mymaster", 3, &answers, &votes);
            assert_eq!(v.master, Some(a(M)), "{what}: the majority decides");
            assert_eq!(v.elected, None, "{what}");
        }

        // Once the majority names the leader's master, the majority alone decides.
        let caught_up = vec![
            says_epoch(S1, "aaa", N, 7),
            says_epoch(S2, "bbb", N, 7),
            says_epoch(S3, "ccc", N, 7),
        ];
        let v = decide("mymaster", 3, &caught_up, &all_voted);
        assert_eq!((v.master, v.elected, v.votes), (Some(a(N)), None, 3));
    }

    #[test]
    fn votes_parse() {
        assert_eq!(
            parse_vote("0090b383ba647c919e01989bab97af9d5fe0f00f 1"),
            Some(("0090b383ba647c919e01989bab97af9d5fe0f00f".to_string(), 1))
        );
        for bad in ["", "abc", "abc x", "abc 1 2", "not-hex 1", "abc -1"] {
            assert_eq!(parse_vote(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replies_parse() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            parse_master_addr(&Value::Array(vec![b("127.0.0.1"), b("6379")])).unwrap(),
            Some(a(M))
        );
        assert_eq!(parse_master_addr(&Value::Nil).unwrap(), None);
        assert!(parse_master_addr(&Value::Array(vec![b("x")])).is_err());
        assert!(parse_master_addr(&Value::Array(vec![b("h"), b("port")])).is_err());
        let reps = Value::Array(vec![Value::Array(vec![
            b("name"),
            b("127.0.0.1:6380"),
            b("ip"),
            b("127.0.0.1"),
            b("port"),
            b("6380"),
            b("flags"),
            b("slave,s_down"),
            b("runid"),
            b("abc123"),
        ])]);
        let r = parse_replicas(&reps).unwrap();
        assert_eq!(r[0].addr, a("127.0.0.1:6380"));
        assert_eq!(r[0].flags, vec!["slave", "s_down"]);
        assert_eq!(r[0].run_id.as_deref(), Some("abc123"));
        assert!(parse_replicas(&Value::Int(3)).is_err());
        assert!(parse_tilt(
            "# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:1\r\n"
        ));
        assert!(!parse_tilt("# Sentinel\r\nsentinel_tilt:0\r\n"));
    }

    #[test]
    fn sentinels_without_a_vote_are_named_with_the_reason() {
        let m = a(M);
        let answers = [
            says(S1, Some(M), false),
            says(S2, Some(M), true),
            says(S3, None, false),
            silent("127.0.0.1:26382"),
        ];
        let t = count_votes("mymaster", &answers);
        assert_eq!(t.votes, BTreeMap::from([(&m, 1)]));
        assert_eq!((t.answered, t.unknown_name), (3, 1));
        assert_eq!(
            t.dissent,
            vec![
                "sentinel 127.0.0.1:26380 is in TILT mode: vote ignored",
                "sentinel 127.0.0.1:26381 does not know master name \"mymaster\"",
                "sentinel 127.0.0.1:26382: connection refused",
            ]
        );
    }

    #[test]
    fn why_there_is_no_master_says_who_answered_and_whom_they_named() {
        let cases: Vec<(&str, Vec<SentinelAnswer>, &str)> = vec![
            (
                "none answers",
                vec![silent(S1), silent(S2), silent(S3)],
                "no sentinel answered (0 of 3)",
            ),
            (
                "the name is unknown to those that answer",
                vec![says(S1, None, false), silent(S2), says(S3, None, false)],
                "master name \"mymaster\" unknown to every sentinel that answered",
            ),
            (
                "a split",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(N), false),
                    silent(S3),
                ],
                "no sentinel majority: 2 of 3 needed, named 127.0.0.1:6379 by 1, 127.0.0.1:6381 by 1 (2 answered)",
            ),
            (
                "only a sentinel in TILT names a master",
                vec![says(S1, Some(M), true), says(S2, None, false), silent(S3)],
                "no sentinel majority: 2 of 3 needed, none named a master (2 answered)",
            ),
        ];
        for (what, answers, want) in cases {
            let tally = count_votes("mymaster", &answers);
            assert_eq!(tally.no_master("mymaster", 3), want, "{what}");
        }
    }

    #[test]
    fn a_sentinels_answers_read_as_one_report() {
        use ErrorClass::*;
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let s1 = a(S1);
        let master = || Ok(Value::Array(vec![b("127.0.0.1"), b("6379")]));
        let replicas = || {
            Ok(Value::Array(vec![Value::Array(vec![
                b("ip"),
                b("127.0.0.1"),
                b("port"),
                b("6380"),
            ])]))
        };
        let info = || Ok(b("# Sentinel\r\nsentinel_tilt:1\r\n"));
        let fail = |class| Err(ServerError::new(class, "x"));
        let r = read_report(&s1, master(), replicas(), info()).unwrap();
        assert_eq!((r.master, r.tilt, r.replicas.len()), (Some(a(M)), true, 1));
        // A sentinel that does not know the name lists no replicas, and need not answer for them.
        let r = read_report(&s1, Ok(Value::Nil), fail(Timeout), info()).unwrap();
        assert_eq!((r.master, r.replicas.len()), (None, 0));
        let class = |r: Result<SentinelReport, ServerError>| r.unwrap_err().class;
        assert_eq!(
            class(read_report(&s1, fail(Timeout), fail(Auth), fail(Other))),
            Timeout
        );
        assert_eq!(
            class(read_report(&s1, master(), fail(Auth), fail(Other))),
            Other
        );
        assert_eq!(class(read_report(&s1, master(), fail(Auth), info())), Auth);
        let bad = read_report(&s1, Ok(Value::Int(1)), replicas(), info()).unwrap_err();
        assert_eq!(bad.class, Protocol);
        assert!(
            bad.message
                .starts_with("sentinel 127.0.0.1:26379: master address: unexpected reply"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn a_sentinel_connection_is_dropped_after_a_timeout_a_refused_connect_or_an_unreadable_reply() {
        use ErrorClass::*;
        assert!(keeps_connection(&Ok(SentinelReport::default())));
        for class in [Timeout, Connect, Protocol] {
            assert!(
                !keeps_connection(&Err(ServerError::new(class, "x"))),
                "{class:?}"
            );
        }
        for class in [
            Readonly, NoReplicas, Misconf, Oom, Loading, Busy, MasterDown, Auth, NoPerm, Other,
        ] {
            assert!(
                keeps_connection(&Err(ServerError::new(class, "x"))),
                "{class:?}"
            );
        }
    }
}
