//! Asking the sentinels: every sentinel of a group concurrently, each under the check timeout
//! (`SENTINEL get-master-addr-by-name`, `SENTINEL replicas`, `INFO sentinel`, `SENTINEL MYID`,
//! `SENTINEL SENTINELS`, and the master's `config-epoch` while a vote is on record), with the
//! parsing of each reply.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::Value;

use super::members::{Asked, Found, Members, Target};
use super::{Peer, ReplicaInfo, SentinelAnswer, SentinelReport, valid_id};
use crate::conn::{
    ErrorClass, Pool, ReplyError, ServerAddr, ServerError, command, resolve, software, text,
};

/// Parses `SENTINEL get-master-addr-by-name`: `[host, port]`, or nil for an unknown name.
pub(crate) fn parse_master_addr(v: &Value) -> Result<Option<ServerAddr>, ReplyError> {
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

pub(crate) fn fields(v: &Value) -> BTreeMap<String, String> {
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
pub(crate) fn parse_replicas(v: &Value) -> Result<Vec<ReplicaInfo>, ReplyError> {
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

/// At most this many sentinels are read from one `SENTINEL SENTINELS` reply: a real group has
/// a handful, and a hostile or broken one must not grow what rolecall keeps and asks.
pub const MAX_PEERS: usize = 16;

/// Parses `SENTINEL SENTINELS`: the other sentinels monitoring the master, each with its id
/// (`runid`) and announced address (an IP, or a host name with `announce-hostnames`); the
/// first [`MAX_PEERS`] that have all three.
pub(crate) fn parse_peers(v: &Value) -> Result<Vec<Peer>, ReplyError> {
    let Value::Array(items) = v else {
        return Err(ReplyError::new(
            "sentinels",
            format!("unexpected reply {v:?}"),
        ));
    };
    Ok(items
        .iter()
        .filter_map(|item| {
            let f = fields(item);
            let id = f.get("runid").filter(|r| valid_id(r))?.clone();
            let port = f.get("port")?.parse::<u16>().ok()?;
            Some(Peer {
                id,
                addr: ServerAddr::new(f.get("ip")?.clone(), port),
            })
        })
        .take(MAX_PEERS)
        .collect())
}

/// Reads `sentinel_tilt:1` from `INFO sentinel`.
pub(crate) fn parse_tilt(info: &str) -> bool {
    info.lines().any(|l| l.trim_end() == "sentinel_tilt:1")
}

/// A sentinel is asked in full at least this often; between, one command per check
/// (`SENTINEL get-master-addr-by-name`), and the rest of its last full answer stands. What the
/// rest says changes with a failover or a sentinel's state, which Sentinel announces as events
/// (and each event asks in full); a replica or a sentinel added without a failover is known
/// within this.
pub const FULL_AFTER: Duration = Duration::from_secs(30);

/// Each sentinel's last full answer, and when it was asked.
#[derive(Debug, Default)]
pub struct Reports(BTreeMap<ServerAddr, (SentinelReport, Instant)>);

impl Reports {
    /// The last full answer of `addr`, while it is recent enough to stand for this check's
    /// (`None`: ask in full).
    fn cached(&self, addr: &ServerAddr, refresh: bool, now: Instant) -> Option<SentinelReport> {
        self.0
            .get(addr)
            .filter(|(_, at)| !refresh && now.saturating_duration_since(*at) < FULL_AFTER)
            .map(|(r, _)| r.clone())
    }

    fn record(&mut self, answer: &SentinelAnswer, full: bool, now: Instant) {
        match (&answer.result, full) {
            (Ok(r), true) => {
                self.0.insert(answer.addr.clone(), (r.clone(), now));
            }
            (Ok(_), false) => {}
            (Err(_), _) => {
                self.0.remove(&answer.addr);
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(&ServerAddr) -> bool) {
        self.0.retain(|a, _| keep(a));
    }
}

/// The light ask: `SENTINEL get-master-addr-by-name` alone. When the sentinel names the master
/// of its last full answer (`prev`), that answer stands; an error is the answer; `None` when it
/// names another master (ask in full now).
async fn ask_light(
    c: &mut redis::aio::MultiplexedConnection,
    addr: &ServerAddr,
    get: &redis::Cmd,
    prev: SentinelReport,
    timeout: Duration,
) -> Option<Result<SentinelReport, ServerError>> {
    let master = command(c, addr, "sentinel", timeout, get)
        .await
        .and_then(|v| {
            parse_master_addr(&v).map_err(|m| {
                ServerError::new(ErrorClass::Protocol, format!("sentinel {addr}: {m}"))
            })
        });
    match master {
        Ok(m) if m == prev.master => Some(Ok(SentinelReport {
            software: None,
            ..prev
        })),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Asks one sentinel: only the master's address when its last full answer (`cached`) can stand
/// for the rest and it names the same master; in full otherwise. Returns the answer, whether it
/// was full, and the connection when it should be kept.
async fn ask(
    conn: Result<(redis::aio::MultiplexedConnection, bool), ServerError>,
    addr: ServerAddr,
    master_name: String,
    timeout: Duration,
    epochs: bool,
    cached: Option<SentinelReport>,
) -> (
    SentinelAnswer,
    bool,
    Option<redis::aio::MultiplexedConnection>,
) {
    let started = Instant::now();
    let answer = |addr, result: Result<SentinelReport, ServerError>| SentinelAnswer {
        addr,
        latency: result.is_ok().then(|| started.elapsed()),
        result,
    };
    let (mut c, fresh) = match conn {
        Ok(c) => c,
        Err(e) => return (answer(addr, Err(e)), false, None),
    };
    let mut get = redis::cmd("SENTINEL");
    get.arg("get-master-addr-by-name").arg(&master_name);
    if let Some(prev) = cached.filter(|_| !fresh && !epochs)
        && let Some(result) = ask_light(&mut c, &addr, &get, prev, timeout).await
    {
        let keep = keeps_connection(&result);
        return (answer(addr, result), false, keep.then_some(c));
    }
    let question = Question {
        addr: &addr,
        master_name: &master_name,
        timeout,
    };
    let result = ask_full(&mut c, question, &get, fresh, epochs).await;
    let keep = keeps_connection(&result);
    (answer(addr, result), true, keep.then_some(c))
}

/// Which sentinel is asked about which master, and for how long.
#[derive(Clone, Copy)]
struct Question<'a> {
    addr: &'a ServerAddr,
    master_name: &'a str,
    timeout: Duration,
}

/// The full answer, its commands sent concurrently on the one connection: the master's
/// address (`get`), the replicas, `INFO sentinel`, the sentinel's identity and, on a `fresh`
/// connection, its software.
async fn ask_full(
    c: &mut redis::aio::MultiplexedConnection,
    question: Question<'_>,
    get: &redis::Cmd,
    fresh: bool,
    epochs: bool,
) -> Result<SentinelReport, ServerError> {
    let Question {
        addr,
        master_name,
        timeout,
    } = question;
    let mut reps = redis::cmd("SENTINEL");
    reps.arg("replicas").arg(master_name);
    let mut info = redis::cmd("INFO");
    info.arg("sentinel");
    let (mut c1, mut c2, c3, mut c4) = (c.clone(), c.clone(), c.clone(), c.clone());
    let sw = async {
        if fresh {
            software(&mut c4, addr, "sentinel", timeout).await
        } else {
            None
        }
    };
    let (m, r, i, (id, peers, config_epoch), software) = tokio::join!(
        command(c, addr, "sentinel", timeout, get),
        command(&mut c1, addr, "sentinel", timeout, &reps),
        command(&mut c2, addr, "sentinel", timeout, &info),
        identity(c3, addr, master_name, timeout, epochs),
        sw,
    );
    read_report(addr, m, r, i).map(|report| SentinelReport {
        id,
        peers,
        config_epoch,
        software,
        ..report
    })
}

/// Who the sentinel is and whom it knows: its id (`SENTINEL MYID`), the other sentinels it
/// knows of (`SENTINEL SENTINELS`), and with `epochs` the master's `config-epoch`
/// (`SENTINEL MASTER`, what the failover-leader rule of [`decide`] needs), asked concurrently.
/// Any of them failing (an older sentinel, an ACL) only leaves out what it would have told.
async fn identity(
    mut c: redis::aio::MultiplexedConnection,
    addr: &ServerAddr,
    master_name: &str,
    timeout: Duration,
    epochs: bool,
) -> (Option<String>, Vec<Peer>, Option<u64>) {
    let mut myid = redis::cmd("SENTINEL");
    myid.arg("MYID");
    let mut peers = redis::cmd("SENTINEL");
    peers.arg("SENTINELS").arg(master_name);
    let mut state = redis::cmd("SENTINEL");
    state.arg("MASTER").arg(master_name);
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let epoch = async {
        if !epochs {
            return None;
        }
        let st = command(&mut c2, addr, "sentinel", timeout, &state).await;
        st.ok()
            .and_then(|v| fields(&v).get("config-epoch").and_then(|e| e.parse().ok()))
    };
    let (id, peers, epoch) = tokio::join!(
        command(&mut c, addr, "sentinel", timeout, &myid),
        command(&mut c1, addr, "sentinel", timeout, &peers),
        epoch,
    );
    let id = id.ok().as_ref().and_then(text).filter(|id| valid_id(id));
    let peers = peers
        .ok()
        .and_then(|v| parse_peers(&v).ok())
        .unwrap_or_default();
    (id, peers, epoch)
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
            class: ErrorClass::Timeout
                | ErrorClass::Connect
                | ErrorClass::Resolve
                | ErrorClass::Tls
                | ErrorClass::Protocol,
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
    reports: &mut Reports,
    sentinels: &[ServerAddr],
    master_name: &str,
    (epochs, refresh): (bool, bool),
) -> Vec<SentinelAnswer> {
    let timeout = pool.timeout();
    let now = Instant::now();
    let asks = sentinels.iter().map(|addr| {
        let conn = pool.connection(addr);
        let cached = reports.cached(addr, refresh, now);
        let addr = addr.clone();
        let name = master_name.to_string();
        async move {
            // One deadline for connect plus commands, so a black-holed sentinel costs at most
            // twice the timeout and never more.
            match tokio::time::timeout(timeout * 2, async {
                ask(conn.await, addr.clone(), name, timeout, epochs, cached).await
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
                    false,
                    None,
                ),
            }
        }
    });
    let results = join_all(asks).await;
    let mut answers = Vec::with_capacity(results.len());
    for (answer, full, conn) in results {
        match conn {
            Some(c) => pool.keep(&answer.addr, c),
            None => pool.forget(&answer.addr),
        }
        reports.record(&answer, full, now);
        answers.push(answer);
    }
    answers
}

/// Asks a group's sentinels (the module docs of `members`): the configured entries, each
/// name as every address it resolves to, and every sentinel known from earlier answers at its
/// announced address; then, in a second round, the sentinels this round's answers made known.
/// Names are resolved again first; connections to addresses no longer asked are dropped.
///
/// Each sentinel is asked in full at least every [`FULL_AFTER`], on a new connection,
/// when it names another master than in its last full answer, while a leader vote is on
/// record (`epochs`), and whenever `refresh` (a Sentinel event since the last check, or events
/// off); otherwise only `SENTINEL get-master-addr-by-name`.
pub async fn ask_group(
    pool: &mut Pool,
    (members, reports): (&mut Members, &mut Reports),
    configured: &[ServerAddr],
    master_name: &str,
    (epochs, refresh): (bool, bool),
) -> Vec<Asked> {
    let timeout = pool.timeout();
    let announced: Vec<ServerAddr> = members.announced().cloned().collect();
    pool.refresh(configured.iter().chain(&announced)).await;
    let mut entries = Vec::with_capacity(configured.len());
    for entry in configured {
        let resolved = match pool.resolved(entry) {
            Some(r) => r,
            None => resolve("sentinel", entry, timeout).await,
        };
        entries.push((entry.clone(), resolved));
    }
    let targets = same_once(pool, members.targets(&entries));
    // An address a configured name resolved to is that name for TLS.
    pool.set_verify_as(
        targets
            .iter()
            .filter_map(|t| Some((t.addr.clone(), t.via.as_ref()?.host.clone()))),
    );
    let how = (epochs, refresh);
    let mut asked = ask_targets(pool, reports, targets, master_name, how).await;
    members.learn(&asked, Instant::now());
    let asked_targets: Vec<Target> = asked.iter().map(|(t, _)| t.clone()).collect();
    let more = members.unasked(&asked_targets);
    if !more.is_empty() {
        let every: Vec<ServerAddr> = asked_targets
            .iter()
            .chain(&more)
            .map(|t| t.addr.clone())
            .chain(configured.iter().cloned())
            .collect();
        pool.refresh(&every).await;
        let mut more = same_once(pool, asked_targets.into_iter().chain(more).collect());
        more.retain(|t| !asked.iter().any(|(a, _)| a.addr == t.addr));
        let round = ask_targets(pool, reports, more, master_name, how).await;
        members.learn(&round, Instant::now());
        asked.extend(round);
    }
    pool.retain(|a| asked.iter().any(|(t, _)| &t.addr == a));
    reports.retain(|a| asked.iter().any(|(t, _)| &t.addr == a));
    asked
        .into_iter()
        .map(|(target, answer)| Asked {
            target,
            answer,
            id: None,
            counted: false,
        })
        .collect()
}

/// Leaves out an announced name whose every address is already asked (a sentinel configured
/// by IP that announces a host name), so one sentinel is asked once.
fn same_once(pool: &Pool, targets: Vec<Target>) -> Vec<Target> {
    let direct: Vec<(std::net::IpAddr, u16)> = targets
        .iter()
        .filter(|t| t.found != Found::Announced)
        .filter_map(|t| Some((t.addr.ip()?, t.addr.port)))
        .collect();
    targets
        .into_iter()
        .filter(|t| {
            t.found != Found::Announced
                || t.addr.ip().is_some()
                || !matches!(pool.resolved(&t.addr), Some(Ok(ips))
                    if ips.iter().all(|ip| direct.contains(&(*ip, t.addr.port))))
        })
        .collect()
}

async fn ask_targets(
    pool: &mut Pool,
    reports: &mut Reports,
    targets: Vec<Target>,
    master_name: &str,
    how: (bool, bool),
) -> Vec<(Target, SentinelAnswer)> {
    let addrs: Vec<ServerAddr> = targets.iter().map(|t| t.addr.clone()).collect();
    let answers = ask_all(pool, reports, &addrs, master_name, how).await;
    targets.into_iter().zip(answers).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::testutil::*;

    #[test]
    fn a_full_answer_stands_until_it_is_old_an_event_asks_again_or_the_sentinel_fails() {
        let t0 = Instant::now();
        let s = a("127.0.0.1:26379");
        let report = SentinelReport {
            master: Some(a(M)),
            ..SentinelReport::default()
        };
        let ok = |r: &SentinelReport| SentinelAnswer {
            addr: s.clone(),
            latency: None,
            result: Ok(r.clone()),
        };
        let mut reports = Reports::default();
        assert!(
            reports.cached(&s, false, t0).is_none(),
            "never asked: in full"
        );
        reports.record(&ok(&report), true, t0);
        assert_eq!(reports.cached(&s, false, t0), Some(report.clone()));
        // A light answer does not make the full one newer.
        reports.record(&ok(&report), false, t0 + FULL_AFTER / 2);
        assert!(
            reports.cached(&s, false, t0 + FULL_AFTER).is_none(),
            "old: in full"
        );
        assert!(reports.cached(&s, true, t0).is_none(), "an event: in full");
        let failed = SentinelAnswer {
            addr: s.clone(),
            latency: None,
            result: Err(ServerError::timeout(
                "sentinel",
                &s,
                Duration::from_millis(1),
            )),
        };
        reports.record(&failed, false, t0);
        assert!(reports.cached(&s, false, t0).is_none(), "failed: in full");
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
    fn the_sentinels_a_sentinel_lists_parse_with_host_names_and_bounded() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let peer = |ip: &str, port: &str, runid: &str| {
            Value::Array(vec![
                b("name"),
                b("x"),
                b("ip"),
                b(ip),
                b("port"),
                b(port),
                b("runid"),
                b(runid),
                b("flags"),
                b("sentinel"),
            ])
        };
        let reply = Value::Array(vec![
            peer(
                "redis-node-1.redis-headless.ns.svc.cluster.local",
                "26379",
                "abc1",
            ),
            peer("10.0.0.2", "26379", "abc2"),
            peer("10.0.0.3", "26379", "not hex"),
            peer("10.0.0.4", "port", "abc4"),
        ]);
        let peers = parse_peers(&reply).unwrap();
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert_eq!(peers[0].id, "abc1");
        assert_eq!(
            peers[0].addr,
            a("redis-node-1.redis-headless.ns.svc.cluster.local:26379")
        );
        assert_eq!(peers[1].addr, a("10.0.0.2:26379"));
        let many = Value::Array(
            (0..100)
                .map(|i| peer("10.0.0.9", "26379", &format!("{i:x}")))
                .collect(),
        );
        assert_eq!(parse_peers(&many).unwrap().len(), MAX_PEERS);
        assert!(parse_peers(&Value::Int(1)).is_err());
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
        for class in [Timeout, Connect, Resolve, Tls, Protocol] {
            assert!(
                !keeps_connection(&Err(ServerError::new(class, "x"))),
                "{class:?}"
            );
        }
        for class in [
            Readonly, Redirect, NoReplicas, Misconf, Oom, Loading, Busy, MasterDown, Auth, NoPerm,
            Other,
        ] {
            assert!(
                keeps_connection(&Err(ServerError::new(class, "x"))),
                "{class:?}"
            );
        }
    }
}
