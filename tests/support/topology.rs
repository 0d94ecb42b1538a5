//! [`Topology`]: a master, its replicas and the sentinels that watch it, all on loopback (or on
//! another local address, [`TopologyBuilder::ip`]), with a `failover()` that waits until every
//! sentinel has switched and the new master says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use redis::Value;

use super::redis::{
    RedisServer, Sentinel, call_timeout, instances, role_word, value_to_line, value_to_string,
};
use super::{poll_for, timed_out, wait_for_or_dump};

/// Replicas syncing with a fresh master (a few ms on loopback; generous for a loaded machine).
pub(crate) const LINK_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Sentinels finding the replicas (from the master's INFO, at once) and each other (hello
/// messages on `__sentinel__:hello`, every 2 s): typically 2–4 s.
pub(crate) const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// A requested failover: typically 1–3 s until every sentinel reports the new master.
pub(crate) const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// The old master turned into a replica: Sentinel waits 4 publish periods (8 s) after first
/// seeing it claim `master`, and sees that on its INFO refresh (every 10 s for a replica), so
/// 10–20 s after the failover.
pub(crate) const DEMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-command bound while dumping state after a timeout, so frozen servers do not stall it.
pub(crate) const DUMP_CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Builds a [`Topology`]; see [`Topology::builder`].
pub struct TopologyBuilder {
    replicas: usize,
    sentinels: usize,
    quorum: Option<usize>,
    master_name: String,
    server_args: Vec<String>,
    sentinel_conf: Vec<String>,
    ip: IpAddr,
}

impl TopologyBuilder {
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    pub fn sentinels(mut self, n: usize) -> Self {
        self.sentinels = n;
        self
    }

    /// Defaults to a majority of the sentinels.
    pub fn quorum(mut self, q: usize) -> Self {
        self.quorum = Some(q);
        self
    }

    /// Defaults to `mymaster`.
    pub fn master_name(mut self, name: &str) -> Self {
        self.master_name = name.to_owned();
        self
    }

    /// Extra `redis-server` options for every server, e.g. `.server_args(&["--min-replicas-to-write", "1"])`.
    pub fn server_args(mut self, args: &[&str]) -> Self {
        self.server_args
            .extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An extra `sentinel.conf` line for every sentinel; `{name}` stands for the master name.
    pub fn sentinel_conf(mut self, line: &str) -> Self {
        self.sentinel_conf.push(line.to_owned());
        self
    }

    /// The local address every server and sentinel listens on (and Sentinel announces);
    /// defaults to 127.0.0.1. E.g. the cluster end of a [`PodNetns`](super::PodNetns)'s veth
    /// pair (with the topology started inside the cluster namespace), so that processes in the
    /// pod reach the topology while its own connections stay outside the pod.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Starts the master, then the replicas (waiting until each reports its link up), then the
    /// sentinels (waiting until each knows every replica and every other sentinel).
    pub fn start(self) -> Topology {
        let args: Vec<&str> = self.server_args.iter().map(String::as_str).collect();
        let master = RedisServer::start_on(self.ip, &args);
        let mut servers = vec![master];
        for _ in 0..self.replicas {
            servers.push(RedisServer::start_replica_of_with(&servers[0], &args));
        }
        for replica in &servers[1..] {
            replica.wait_link_up(LINK_UP_TIMEOUT);
        }
        let quorum = self.quorum.unwrap_or(self.sentinels / 2 + 1);
        let master_addr = servers[0].addr();
        let sentinels = (0..self.sentinels)
            .map(|_| {
                Sentinel::start_on(
                    self.ip,
                    master_addr,
                    &self.master_name,
                    quorum,
                    &self.sentinel_conf,
                )
            })
            .collect();
        let topology = Topology {
            master_name: self.master_name,
            servers,
            sentinels,
        };
        topology.wait_discovered();
        topology
    }
}

/// A master, its replicas and its sentinels. Servers keep their index in [`Topology::servers`]
/// across failovers (index 0 is the first master); ask the sentinels who the master is now.
pub struct Topology {
    master_name: String,
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl Topology {
    /// `replicas` replicas and `sentinels` sentinels with a majority quorum (2 of 3).
    pub fn start(replicas: usize, sentinels: usize) -> Topology {
        Topology::builder()
            .replicas(replicas)
            .sentinels(sentinels)
            .start()
    }

    /// One replica, three sentinels, quorum 2, master name `mymaster`, unless changed.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder {
            replicas: 1,
            sentinels: 3,
            quorum: None,
            master_name: "mymaster".to_owned(),
            server_args: Vec::new(),
            sentinel_conf: Vec::new(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    pub fn sentinels(&self) -> &[Sentinel] {
        &self.sentinels
    }

    pub fn sentinel(&self, i: usize) -> &Sentinel {
        &self.sentinels[i]
    }

    /// For `stop()`/`cont()`/`kill()`.
    pub fn sentinel_mut(&mut self, i: usize) -> &mut Sentinel {
        &mut self.sentinels[i]
    }

    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(RedisServer::addr).collect()
    }

    /// The server listening on `addr`.
    pub fn server(&self, addr: SocketAddr) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no server of this topology listens on {addr}"))
    }

    /// For `stop()`/`cont()`/`kill()`.
    pub fn server_mut(&mut self, addr: SocketAddr) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no server of this topology listens on {addr}"))
    }

    /// Each sentinel's `get-master-addr-by-name` answer (`None`: no answer).
    pub fn sentinel_views(&self) -> Vec<Option<SocketAddr>> {
        self.sentinels.iter().map(Sentinel::master_addr).collect()
    }

    /// The master a majority of the sentinels reports now; panics (with a dump) if there is no
    /// such majority.
    pub fn master_addr(&self) -> SocketAddr {
        let views = self.sentinel_views();
        majority(&views, self.sentinels.len()).unwrap_or_else(|| {
            panic!(
                "no majority of sentinels agrees on a master: {views:?}\n{}",
                self.dump()
            )
        })
    }

    /// The server the sentinels' majority calls master.
    pub fn master(&self) -> &RedisServer {
        self.server(self.master_addr())
    }

    /// Every server but the current master.
    pub fn replicas(&self) -> Vec<&RedisServer> {
        let master = self.master_addr();
        self.servers.iter().filter(|s| s.addr() != master).collect()
    }

    /// Points every sentinel at `host:port` under the same master name (quorum 2), as an
    /// operator's `SENTINEL REMOVE` and `MONITOR` would: all forget the master first, so none
    /// keeps the old configuration (with its epoch) to hand back to the others.
    pub fn repoint(&self, host: &str, port: u16) {
        for s in &self.sentinels {
            s.cli(&["SENTINEL", "REMOVE", &self.master_name]);
        }
        for s in &self.sentinels {
            s.cli(&[
                "SENTINEL",
                "MONITOR",
                &self.master_name,
                host,
                &port.to_string(),
                "2",
            ]);
        }
    }

    /// Runs `SENTINEL FAILOVER` and waits until every sentinel reports a new master that itself
    /// answers `ROLE` with `master`. Returns `(old, new)`. The old master is not demoted yet:
    /// see [`Topology::wait_demoted`].
    pub fn failover(&self) -> (SocketAddr, SocketAddr) {
        let all: Vec<usize> = (0..self.sentinels.len()).collect();
        self.failover_among(&all)
    }

    /// [`Topology::failover`] asking and waiting only for the sentinels at these indexes (the
    /// others may be stopped or killed).
    pub fn failover_among(&self, sentinels: &[usize]) -> (SocketAddr, SocketAddr) {
        assert!(!sentinels.is_empty(), "failover_among needs a sentinel");
        let old = wait_for_or_dump(
            FAILOVER_TIMEOUT,
            "the sentinels to agree on the master before a failover",
            || agreed(sentinels.iter().map(|&i| self.sentinels[i].master_addr())),
            || self.dump(),
        );
        // An accepted SENTINEL FAILOVER can still be aborted by the leader (no good replica yet,
        // right after a previous failover): ask again, a bounded number of times.
        for _ in 0..3 {
            self.request_failover(sentinels);
            let moved = poll_for(Duration::from_secs(12), || {
                let new = agreed(sentinels.iter().map(|&i| self.sentinels[i].master_addr()))?;
                (new != old).then_some(())
            });
            if moved.is_some() {
                break;
            }
        }
        let new = self.wait_new_master_among(old, sentinels);
        (old, new)
    }

    fn request_failover(&self, sentinels: &[usize]) {
        // NOGOODSLAVE while the sentinels' view of the replicas is not fresh yet (e.g. right
        // after a previous failover), INPROG while one is still running: both pass, so retry.
        let mut last_error = String::new();
        let start = Instant::now();
        let accepted = poll_for(FAILOVER_TIMEOUT, || {
            sentinels.iter().find_map(|&i| {
                match self.sentinels[i].try_cli(&["SENTINEL", "FAILOVER", &self.master_name]) {
                    Ok(_) => Some(()),
                    Err(e) => {
                        last_error = format!("{}: {e}", self.sentinels[i].addr());
                        None
                    }
                }
            })
        });
        if accepted.is_none() {
            timed_out(
                "a sentinel to accept SENTINEL FAILOVER",
                start,
                &format!("last error: {last_error}\n{}", self.dump()),
            );
        }
    }

    /// Waits (30 s) until every sentinel reports a master other than `old` and that server
    /// answers `ROLE` with `master`; returns it. For failovers Sentinel starts by itself (a
    /// stopped or killed master fails over about 3 s after it stops answering).
    pub fn wait_new_master(&self, old: SocketAddr) -> SocketAddr {
        let all: Vec<usize> = (0..self.sentinels.len()).collect();
        self.wait_new_master_among(old, &all)
    }

    /// [`Topology::wait_new_master`] for the sentinels at these indexes only.
    pub fn wait_new_master_among(&self, old: SocketAddr, sentinels: &[usize]) -> SocketAddr {
        wait_for_or_dump(
            FAILOVER_TIMEOUT,
            &format!("the sentinels {sentinels:?} to report a new master instead of {old}"),
            || {
                let new = agreed(sentinels.iter().map(|&i| self.sentinels[i].master_addr()))?;
                (new != old && role(new).as_deref() == Some("master")).then_some(new)
            },
            || self.dump(),
        )
    }

    /// Waits until the server at `addr` is a replica of the current master with its link up:
    /// what Sentinel does to a live old master 10–20 s after a failover (`+convert-to-slave`).
    pub fn wait_demoted(&self, addr: SocketAddr) {
        wait_for_or_dump(
            DEMOTE_TIMEOUT,
            &format!("{addr} to become a connected replica of the current master"),
            || {
                let master = agreed(self.sentinel_views().into_iter())?;
                let reply = call_timeout(addr, &["ROLE"], DUMP_CALL_TIMEOUT).ok()?;
                let Value::Array(items) = reply else {
                    return None;
                };
                let words: Vec<String> = items.iter().map(value_to_string).collect();
                let following = words.len() >= 4
                    && role_word(&words[0]) == "slave"
                    && format!("{}:{}", words[1], words[2]) == master.to_string()
                    && words[3] == "connected";
                following.then_some(())
            },
            || self.dump(),
        )
    }

    /// Waits until the topology is quiet: all sentinels agree on a master that says `master`,
    /// every other server is its connected replica, and every sentinel sees all of them as
    /// healthy replicas. Returns the master.
    pub fn wait_settled(&self) -> SocketAddr {
        let master = wait_for_or_dump(
            DEMOTE_TIMEOUT,
            "all sentinels to agree on a master that says role:master",
            || {
                let m = agreed(self.sentinel_views().into_iter())?;
                (role(m).as_deref() == Some("master")).then_some(m)
            },
            || self.dump(),
        );
        for server in &self.servers {
            if server.addr() != master {
                self.wait_demoted(server.addr());
            }
        }
        self.wait_discovered();
        master
    }

    /// Waits until every sentinel knows every replica (flags exactly `slave`) and every other
    /// sentinel (flags exactly `sentinel`).
    pub fn wait_discovered(&self) {
        let replicas = self.servers.len() - 1;
        let others = self.sentinels.len().saturating_sub(1);
        wait_for_or_dump(
            DISCOVERY_TIMEOUT,
            &format!(
                "every sentinel to know {replicas} healthy replica(s) and {others} other sentinel(s)"
            ),
            || {
                self.sentinels
                    .iter()
                    .all(|s| {
                        let r = s.replicas();
                        let o = s.sentinels();
                        r.len() == replicas
                            && r.iter().all(|i| flags(i) == "slave")
                            && o.len() == others
                            && o.iter().all(|i| flags(i) == "sentinel")
                    })
                    .then_some(())
            },
            || self.dump(),
        )
    }

    /// What the sentinels and servers say now: each sentinel's `SENTINEL MASTERS`, replicas and
    /// `get-master-addr-by-name`, each server's `ROLE`. For panic messages.
    pub fn dump(&self) -> String {
        dump_state(
            &self.master_name,
            &self.sentinel_addrs(),
            &self.server_addrs(),
        )
    }
}

/// An instance's Sentinel `flags` (`slave`, `sentinel`, `slave,s_down`, ...), each flag in the
/// harness's spelling (see [`role_word`]).
pub(crate) fn flags(instance: &BTreeMap<String, String>) -> String {
    instance.get("flags").map_or(String::new(), |f| {
        f.split(',').map(role_word).collect::<Vec<_>>().join(",")
    })
}

/// `ROLE`'s first word at `addr`, `None` if it does not answer.
fn role(addr: SocketAddr) -> Option<String> {
    match call_timeout(addr, &["ROLE"], DUMP_CALL_TIMEOUT).ok()? {
        Value::Array(items) => items
            .first()
            .map(|w| role_word(&value_to_string(w)).to_owned()),
        _ => None,
    }
}

/// The one address all views name, if they all answered and agree.
pub(crate) fn agreed<T: PartialEq>(mut views: impl Iterator<Item = Option<T>>) -> Option<T> {
    let first = views.next()??;
    views.all(|v| v.as_ref() == Some(&first)).then_some(first)
}

/// The address more than half of `total` sentinels name.
pub(crate) fn majority<T: Ord + Clone>(views: &[Option<T>], total: usize) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for addr in views.iter().flatten() {
        *counts.entry(addr.clone()).or_default() += 1;
    }
    counts
        .into_iter()
        .find(|&(_, n)| n > total / 2)
        .map(|(addr, _)| addr)
}

/// See [`Topology::dump`]; usable without the topology (rolecall's harness keeps addresses).
pub(crate) fn dump_state(
    master_name: &str,
    sentinels: &[SocketAddr],
    servers: &[SocketAddr],
) -> String {
    let mut out = String::from("--- topology ---\n");
    let show = |r: redis::RedisResult<Value>| match r {
        Ok(v) => value_to_line(&v),
        Err(e) => format!("(error) {e}"),
    };
    for &s in sentinels {
        let get = call_timeout(
            s,
            &["SENTINEL", "get-master-addr-by-name", master_name],
            DUMP_CALL_TIMEOUT,
        );
        let _ = writeln!(
            out,
            "sentinel {s}: get-master-addr-by-name -> {}",
            show(get)
        );
        match call_timeout(s, &["SENTINEL", "MASTERS"], DUMP_CALL_TIMEOUT) {
            Ok(v) => {
                for m in instances(&v) {
                    let _ = writeln!(out, "  SENTINEL MASTERS: {}", one_line(&m));
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  SENTINEL MASTERS: (error) {e}");
            }
        }
        if let Ok(v) = call_timeout(s, &["SENTINEL", "replicas", master_name], DUMP_CALL_TIMEOUT) {
            for r in instances(&v) {
                let _ = writeln!(
                    out,
                    "  replica: {}",
                    pick(
                        &r,
                        &[
                            "ip",
                            "port",
                            "flags",
                            "master-link-status",
                            "master-host",
                            "master-port"
                        ]
                    )
                );
            }
        }
        if let Ok(v) = call_timeout(
            s,
            &["SENTINEL", "sentinels", master_name],
            DUMP_CALL_TIMEOUT,
        ) {
            for r in instances(&v) {
                let _ = writeln!(out, "  sentinel: {}", pick(&r, &["ip", "port", "flags"]));
            }
        }
    }
    for &s in servers {
        let role = call_timeout(s, &["ROLE"], DUMP_CALL_TIMEOUT);
        let _ = writeln!(out, "server {s}: ROLE -> {}", show(role));
    }
    out
}

pub(crate) fn one_line(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn pick(m: &BTreeMap<String, String>, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| m.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}
