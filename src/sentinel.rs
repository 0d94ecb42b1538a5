//! Sentinel's view of one group: every configured sentinel asked concurrently, each under the
//! check timeout, and the master decided by a majority of the *configured* sentinels.
//!
//! A sentinel that did not answer, does not know the master name, or is in TILT mode has no
//! vote (Redis docs, "Sentinel", TILT mode: its view may be wrong). Asking is I/O
//! ([`ask_all`]); deciding is pure ([`decide`]) and table-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::Value;
use serde::{Serialize, Serializer};

use crate::probe::{ErrorClass, Pool, ServerError, command, text};

/// A server address as Sentinel announces it: an IP or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn new(host: String, port: u16) -> ServerAddr {
        // "::ffff:10.0.0.1" and "10.0.0.1" are one server; keep the plain form.
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            },
            Ok(v4) => v4.to_string(),
            Err(_) => host,
        };
        ServerAddr { host, port }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<ServerAddr, String> {
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            return Ok(ServerAddr::new(sa.ip().to_string(), sa.port()));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        if host.is_empty() || host.contains(':') {
            return Err(format!("{s:?} is not host:port"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: bad port"))?;
        Ok(ServerAddr::new(host.to_string(), port))
    }
}

impl Serialize for ServerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A replica as one sentinel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub addr: ServerAddr,
    pub flags: Vec<String>,
    /// The replica's run id (`runid`), when the sentinel knows it.
    pub run_id: Option<String>,
}

/// One sentinel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelReport {
    /// `None`: this sentinel does not monitor a master of that name.
    pub master: Option<ServerAddr>,
    pub tilt: bool,
    pub replicas: Vec<ReplicaInfo>,
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
}

impl SentinelView {
    /// Every server of the group, master first.
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> {
        self.master.iter().chain(self.others.iter())
    }
}

/// Decides the master from the answers of `configured` sentinels of master `name`.
pub fn decide(name: &str, configured: usize, answers: &[SentinelAnswer]) -> SentinelView {
    let mut votes: BTreeMap<&ServerAddr, usize> = BTreeMap::new();
    let mut dissent = Vec::new();
    let mut unknown_name = 0;
    let mut answered = 0;
    for a in answers {
        match &a.result {
            Err(e) => dissent.push(format!("sentinel {}: {e}", a.addr)),
            Ok(r) => {
                answered += 1;
                if r.tilt {
                    dissent.push(format!("sentinel {} is in TILT mode: vote ignored", a.addr));
                } else if let Some(m) = &r.master {
                    *votes.entry(m).or_default() += 1;
                } else {
                    unknown_name += 1;
                    dissent.push(format!(
                        "sentinel {} does not know master name {name:?}",
                        a.addr
                    ));
                }
            }
        }
    }
    let majority = configured / 2 + 1;
    let best = votes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| ((*m).clone(), *n));
    let mut others: Vec<ServerAddr> = votes.keys().map(|m| (*m).clone()).collect();
    for a in answers {
        if let Ok(r) = &a.result {
            others.extend(r.replicas.iter().map(|x| x.addr.clone()));
        }
    }
    others.sort();
    others.dedup();
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
    let (master, n) = match best {
        Some((m, n)) if n >= majority => (Some(m), n),
        Some((_, n)) => (None, n),
        None => (None, 0),
    };
    if let Some(m) = &master {
        others.retain(|o| o != m);
        for (other, n) in &votes {
            if *other != m {
                dissent.push(format!("{n} sentinel(s) name {other} as master"));
            }
        }
    }
    let problem = if master.is_some() {
        None
    } else if answered == 0 {
        Some(format!("no sentinel answered (0 of {configured})"))
    } else if unknown_name == answered {
        Some(format!(
            "master name {name:?} unknown to every sentinel that answered"
        ))
    } else {
        let named: Vec<String> = votes.iter().map(|(m, n)| format!("{m} by {n}")).collect();
        Some(format!(
            "no sentinel majority: {majority} of {configured} needed, {} ({} answered)",
            if named.is_empty() {
                "none named a master".to_string()
            } else {
                format!("named {}", named.join(", "))
            },
            answered
        ))
    };
    SentinelView {
        master,
        votes: n,
        configured,
        others,
        problem,
        dissent,
        run_ids,
    }
}

/// Parses `SENTINEL get-master-addr-by-name`: `[host, port]`, or nil for an unknown name.
pub fn parse_master_addr(v: &Value) -> Result<Option<ServerAddr>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) if items.len() == 2 => {
            let host = text(&items[0]).ok_or("master address: host is not text")?;
            let port = text(&items[1])
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or("master address: port is not a number")?;
            Ok(Some(ServerAddr::new(host, port)))
        }
        other => Err(format!("master address: unexpected reply {other:?}")),
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
pub fn parse_replicas(v: &Value) -> Result<Vec<ReplicaInfo>, String> {
    let Value::Array(items) = v else {
        return Err(format!("replicas: unexpected reply {v:?}"));
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
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (m, r, i) = tokio::join!(
        command(&mut c, &addr, "sentinel", timeout, &get),
        command(&mut c1, &addr, "sentinel", timeout, &reps),
        command(&mut c2, &addr, "sentinel", timeout, &info),
    );
    let protocol =
        |m: String| ServerError::new(ErrorClass::Protocol, format!("sentinel {addr}: {m}"));
    let result = (|| {
        let master = parse_master_addr(&m?).map_err(protocol)?;
        let tilt = parse_tilt(&text(&i?).unwrap_or_default());
        let replicas = match (&master, r) {
            (None, _) => Vec::new(),
            (Some(_), r) => parse_replicas(&r?).map_err(protocol)?,
        };
        Ok(SentinelReport {
            master,
            tilt,
            replicas,
        })
    })();
    let keep = !matches!(
        &result,
        Err(ServerError {
            class: ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::Protocol,
            ..
        })
    );
    (
        SentinelAnswer {
            addr,
            latency: result.is_ok().then(|| started.elapsed()),
            result,
        },
        keep.then_some(c),
    )
}

/// Asks every sentinel of a group concurrently. Each answer is bounded by the pool's timeout
/// (connect, then each command).
pub async fn ask_all(
    pool: &mut Pool,
    sentinels: &[ServerAddr],
    master_name: &str,
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
                ask(conn.await, addr.clone(), name, timeout).await
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
            }),
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
            let v = decide("mymaster", 3, &answers);
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
    fn addresses_parse_and_normalise() {
        assert_eq!(a("[::ffff:127.0.0.1]:6379"), a("127.0.0.1:6379"));
        assert_eq!(a("[::1]:6379").to_string(), "[::1]:6379");
        assert_eq!(a("redis-1:6379").host, "redis-1");
        assert!("6379".parse::<ServerAddr>().is_err());
        assert!(":6379".parse::<ServerAddr>().is_err());
    }
}
