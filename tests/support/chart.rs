//! [`Chart`]: a Redis Sentinel cluster shaped like Bitnami's `redis` Helm chart in Sentinel mode
//! (`architecture: replication`, `sentinel.enabled: true`, `auth.enabled: true`,
//! `auth.sentinel: true`), every address a **hostname**, resolved by the children through a
//! [`PrivateHosts`] of the chart's own.
//!
//! # What runs
//!
//! `N` pods (default 3). Pod `i` is `<release>-node-<i>`, with the hostname
//! `<release>-node-<i>.<release>-headless.<namespace>.svc.cluster.local` (the StatefulSet pod's
//! name in the headless Service), resolving to its own loopback address `127.A.B.<i+1>`; the
//! block `127.A.B.0/24` is picked per chart (by pid and a counter), so charts of tests running
//! in parallel never share an address. Each pod runs, bound to its address and under the
//! chart's hosts file (free ports, distinct per process):
//!
//! - a data server (`redis` container): `requirepass` and `masterauth` set to the chart's
//!   password, `replica-announce-ip <pod hostname>`; pods 1.. start as
//!   `replicaof <pod-0 hostname> <port>`. It also listens on a second address of its own,
//!   `127.A.B.<101+i>` (see [`Chart::repoint_name`]).
//! - a sentinel (`sentinel` container): `sentinel resolve-hostnames yes`,
//!   `sentinel announce-hostnames yes`, `sentinel announce-ip <pod hostname>`,
//!   `sentinel announce-port <its port>`, `sentinel monitor <master> <pod-0 hostname> <port> 2`,
//!   `sentinel auth-pass`, and `requirepass` with the sentinel password (with no
//!   `sentinel sentinel-pass`, Redis sends `requirepass` to the other sentinels as well),
//!   `down-after-milliseconds 1000`, `failover-timeout 5000` as elsewhere in the harness.
//!
//! And the chart's sentinel **Service** (`<release>.<namespace>.svc.cluster.local`, at
//! `127.A.B.200`): one `haproxy` TCP frontend, `balance roundrobin` over the three sentinels
//! (by hostname), as kube-proxy spreads fresh connections over a Service's endpoints.
//!
//! Password files for rolecall (`[[redis]] password_file`, `sentinel_password_file`; mode
//! 0600) are in the chart's temp dir.
//!
//! # Talking to it from the test
//!
//! The test process itself never resolves the chart's names: the harness talks to each
//! process by its pod address ([`Pod::ip`]), with `AUTH` (the servers' and sentinels' `cli`
//! send their password). Sentinel, though, names everything by hostname, so the helpers
//! here speak `HOST:PORT` strings as the sentinels do (`redis-node-1.redis-headless....:PORT`)
//! and map them back to pods ([`Chart::pod_of`]).

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use redis::Value;
use tempfile::TempDir;

use super::haproxy::Haproxy;
use super::hosts::PrivateHosts;
use super::node::{DemoNode, NodeOptions};
use super::redis::{
    RedisServer, Sentinel, call_auth_timeout, host_port, host_port_reply, instances, role_word,
    value_to_line, value_to_string,
};
use super::rolecall::Dumper;
use super::topology::{
    DEMOTE_TIMEOUT, DISCOVERY_TIMEOUT, DUMP_CALL_TIMEOUT, FAILOVER_TIMEOUT, LINK_UP_TIMEOUT,
    agreed, flags, majority, one_line, pick,
};
use super::{poll_for, timed_out, wait_for_or_dump};

/// The last octet of a pod's second address is this plus its index.
const ALT_OFFSET: u8 = 101;
/// The last octet of the sentinel Service's address.
const SERVICE_HOST: u8 = 200;

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// Builds a [`Chart`]; see [`Chart::builder`].
pub struct ChartBuilder {
    release: String,
    namespace: String,
    pods: usize,
    master_name: String,
    quorum: usize,
    password: Option<String>,
    sentinel_password: Option<String>,
    server_args: Vec<String>,
    sentinel_conf: Vec<String>,
}

impl ChartBuilder {
    /// The Helm release name; defaults to `redis` (pods `redis-node-0` ...).
    pub fn release(mut self, release: &str) -> Self {
        self.release = release.to_owned();
        self
    }

    /// The Kubernetes namespace in the hostnames; defaults to `default`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// How many pods (data server + sentinel each); defaults to 3 (at most 99).
    pub fn pods(mut self, n: usize) -> Self {
        self.pods = n;
        self
    }

    /// `sentinel.masterSet`; defaults to `mymaster`.
    pub fn master_name(mut self, name: &str) -> Self {
        self.master_name = name.to_owned();
        self
    }

    /// `sentinel.quorum`; defaults to 2.
    pub fn quorum(mut self, q: usize) -> Self {
        self.quorum = q;
        self
    }

    /// The data servers' password; defaults to a random one.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The sentinels' password; defaults to a random one (Bitnami's `auth.sentinel: true`
    /// uses the data servers' password: pass the same here for that).
    pub fn sentinel_password(mut self, password: &str) -> Self {
        self.sentinel_password = Some(password.to_owned());
        self
    }

    /// Extra `redis-server` options for every data server.
    pub fn server_args(mut self, args: &[&str]) -> Self {
        self.server_args
            .extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An extra `sentinel.conf` line for every sentinel; `{name}` stands for the master name,
    /// `{port}` for the sentinel's own port.
    pub fn sentinel_conf(mut self, line: &str) -> Self {
        self.sentinel_conf.push(line.to_owned());
        self
    }

    /// Starts the data servers (waiting until every replica's link is up), the sentinels
    /// (waiting until each knows every replica and every other sentinel, all healthy) and the
    /// sentinel Service.
    pub fn start(self) -> Chart {
        assert!(
            (1..=99).contains(&self.pods),
            "a chart has 1 to 99 pods, not {}",
            self.pods
        );
        let hosts = PrivateHosts::new();
        let block = next_block();
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-chart-")
            .tempdir()
            .expect("create a temp dir");
        let password = self.password.unwrap_or_else(|| random_password("data"));
        let sentinel_password = self
            .sentinel_password
            .unwrap_or_else(|| random_password("sentinel"));
        let password_file = dir.path().join("redis-password");
        let sentinel_password_file = dir.path().join("sentinel-password");
        write_secret(&password_file, &password);
        write_secret(&sentinel_password_file, &sentinel_password);

        let hostname = |i: usize| {
            format!(
                "{r}-node-{i}.{r}-headless.{ns}.svc.cluster.local",
                r = self.release,
                ns = self.namespace
            )
        };
        let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, block.0, block.1, last));
        let service_hostname = format!("{}.{}.svc.cluster.local", self.release, self.namespace);
        let service_ip = ip(SERVICE_HOST);
        for i in 0..self.pods {
            hosts.set(&hostname(i), ip(i as u8 + 1));
        }
        hosts.set(&service_hostname, service_ip);

        let server_args: Vec<&str> = self.server_args.iter().map(String::as_str).collect();
        let mut servers: Vec<RedisServer> = Vec::new();
        for i in 0..self.pods {
            let mut b = RedisServer::builder()
                .ip(ip(i as u8 + 1))
                .also_bind(ip(ALT_OFFSET + i as u8))
                .password(&password)
                .masterauth(&password)
                .args(&["--replica-announce-ip", &hostname(i)])
                .hosts(&hosts);
            if i > 0 {
                b = b.replica_of(&hostname(0), servers[0].port());
            }
            servers.push(b.args(&server_args).start());
        }
        for replica in &servers[1..] {
            replica.wait_link_up(LINK_UP_TIMEOUT);
        }
        let master_port = servers[0].port();
        let mut pods = Vec::new();
        for (i, server) in servers.into_iter().enumerate() {
            let mut b =
                Sentinel::builder(&hostname(0), master_port, &self.master_name, self.quorum)
                    .ip(ip(i as u8 + 1))
                    .password(&sentinel_password)
                    .auth_pass(&password)
                    .conf("sentinel resolve-hostnames yes")
                    .conf("sentinel announce-hostnames yes")
                    .conf(&format!("sentinel announce-ip {}", hostname(i)))
                    .conf("sentinel announce-port {port}")
                    .hosts(&hosts);
            for line in &self.sentinel_conf {
                b = b.conf(line);
            }
            pods.push(Pod {
                index: i,
                hostname: hostname(i),
                ip: ip(i as u8 + 1),
                alt_ip: ip(ALT_OFFSET + i as u8),
                server,
                sentinel: b.start(),
            });
        }

        let service_cfg = dir.path().join("sentinel-service.cfg");
        std::fs::write(&service_cfg, service_config(&pods)).expect("write the Service's config");
        let service = Haproxy::config(&service_cfg)
            .hosts(&hosts)
            .frontend_ip(service_ip)
            .start();

        let chart = Chart {
            release: self.release,
            namespace: self.namespace,
            master_name: self.master_name,
            pods,
            service,
            service_hostname,
            hosts,
            password,
            sentinel_password,
            password_file,
            sentinel_password_file,
            dir,
        };
        chart.wait_discovered();
        chart
    }
}

/// One pod: its hostname and addresses, its data server and its sentinel.
pub struct Pod {
    index: usize,
    hostname: String,
    ip: IpAddr,
    alt_ip: IpAddr,
    server: RedisServer,
    sentinel: Sentinel,
}

impl Pod {
    /// Its index `i` in `<release>-node-<i>`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `<release>-node-<i>.<release>-headless.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The pod's address (`127.A.B.<i+1>`): where its hostname points at first, where both its
    /// processes listen, and where the harness talks to them.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The data server's second address (`127.A.B.<101+i>`): the hostname can be re-pointed
    /// here ([`Chart::repoint_name`]) while the server goes on answering on both.
    pub fn alt_ip(&self) -> IpAddr {
        self.alt_ip
    }

    /// The data server (its `cli` sends the chart's password).
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// For `stop()`/`cont()`/`kill()`.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }

    /// The sentinel (its `cli` sends the sentinel password).
    pub fn sentinel(&self) -> &Sentinel {
        &self.sentinel
    }

    /// For `stop()`/`cont()`/`kill()`.
    pub fn sentinel_mut(&mut self) -> &mut Sentinel {
        &mut self.sentinel
    }

    /// The data server as Sentinel names it: `HOSTNAME:PORT`.
    pub fn server_host_port(&self) -> String {
        host_port(&self.hostname, self.server.port())
    }

    /// The sentinel as clients name it: `HOSTNAME:PORT`.
    pub fn sentinel_host_port(&self) -> String {
        host_port(&self.hostname, self.sentinel.port())
    }
}

/// A Bitnami-shaped Sentinel cluster named by hostnames; see the module docs. Everything is
/// killed on drop. Pods keep their index across failovers (pod 0 is the first master): ask
/// the sentinels who the master is now ([`Chart::master`]).
pub struct Chart {
    release: String,
    namespace: String,
    master_name: String,
    pods: Vec<Pod>,
    service: Haproxy,
    service_hostname: String,
    hosts: PrivateHosts,
    password: String,
    sentinel_password: String,
    password_file: PathBuf,
    sentinel_password_file: PathBuf,
    dir: TempDir,
}

impl Chart {
    /// Three pods, quorum 2, release `redis`, namespace `default`, master name `mymaster`,
    /// random passwords.
    pub fn start() -> Chart {
        Chart::builder().start()
    }

    pub fn builder() -> ChartBuilder {
        ChartBuilder {
            release: "redis".to_owned(),
            namespace: "default".to_owned(),
            pods: 3,
            master_name: "mymaster".to_owned(),
            quorum: 2,
            password: None,
            sentinel_password: None,
            server_args: Vec::new(),
            sentinel_conf: Vec::new(),
        }
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The hosts file every process of the chart runs with: give it to rolecall
    /// ([`RolecallConfig::hosts`](super::RolecallConfig::hosts), or
    /// [`RolecallConfig::chart`](super::RolecallConfig::chart)) and to anything else that must
    /// resolve the chart's names.
    pub fn hosts(&self) -> &PrivateHosts {
        &self.hosts
    }

    /// The chart's temp dir (password files, the Service's config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }

    /// For the pod's `server_mut()`/`sentinel_mut()`.
    pub fn pod_mut(&mut self, i: usize) -> &mut Pod {
        &mut self.pods[i]
    }

    /// The data servers' password (`requirepass`, `masterauth`, `sentinel auth-pass`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The sentinels' password (their `requirepass`).
    pub fn sentinel_password(&self) -> &str {
        &self.sentinel_password
    }

    /// A file holding [`Chart::password`] (mode 0600): `[[redis]] password_file`.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// A file holding [`Chart::sentinel_password`] (mode 0600): `sentinel_password_file`.
    pub fn sentinel_password_file(&self) -> &Path {
        &self.sentinel_password_file
    }

    /// Every pod's sentinel, `HOSTNAME:PORT`.
    pub fn sentinel_host_ports(&self) -> Vec<String> {
        self.pods.iter().map(Pod::sentinel_host_port).collect()
    }

    /// Every pod's data server, `HOSTNAME:PORT`.
    pub fn server_host_ports(&self) -> Vec<String> {
        self.pods.iter().map(Pod::server_host_port).collect()
    }

    /// The sentinel Service as clients name it: `<release>.<namespace>.svc.cluster.local:PORT`.
    pub fn service_host_port(&self) -> String {
        host_port(&self.service_hostname, self.service.frontend().port())
    }

    /// The sentinel Service's address (for the harness's own connections).
    pub fn service_addr(&self) -> SocketAddr {
        self.service.frontend()
    }

    /// The HAProxy behind the sentinel Service.
    pub fn service(&self) -> &Haproxy {
        &self.service
    }

    /// The pod named by `name`: a hostname, `HOSTNAME:PORT`, or one of a pod's addresses (with
    /// or without a port). Panics (with the names) if no pod has it.
    pub fn pod_of(&self, name: &str) -> usize {
        self.try_pod_of(name).unwrap_or_else(|| {
            panic!(
                "no pod of this chart is {name:?}; pods: {:?}",
                self.pods.iter().map(|p| &p.hostname).collect::<Vec<_>>()
            )
        })
    }

    /// [`Chart::pod_of`], `None` for a name that is no pod's.
    pub fn try_pod_of(&self, name: &str) -> Option<usize> {
        let host = match name.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => name,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.pods.iter().position(|p| {
            p.hostname == host
                || host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip == p.ip || ip == p.alt_ip)
        })
    }

    /// The data server named by `name` (see [`Chart::pod_of`]).
    pub fn server(&self, name: &str) -> &RedisServer {
        &self.pods[self.pod_of(name)].server
    }

    /// Each sentinel's `get-master-addr-by-name` answer, `HOST:PORT` (`None`: no answer).
    pub fn sentinel_views(&self) -> Vec<Option<String>> {
        self.pods
            .iter()
            .map(|p| p.sentinel.master_host_port())
            .collect()
    }

    /// The master a majority of the sentinels names now, `HOSTNAME:PORT`; panics (with a
    /// dump) if there is no such majority.
    pub fn master(&self) -> String {
        let views = self.sentinel_views();
        majority(&views, self.pods.len()).unwrap_or_else(|| {
            panic!(
                "no majority of sentinels agrees on a master: {views:?}\n{}",
                self.dump()
            )
        })
    }

    /// The pod of [`Chart::master`].
    pub fn master_pod(&self) -> usize {
        self.pod_of(&self.master())
    }

    /// `SENTINEL FAILOVER`, then waits until every sentinel names a new master that itself
    /// answers `ROLE` with `master`. Returns `(old, new)` as `HOSTNAME:PORT`. The old master is
    /// not demoted yet: see [`Chart::wait_demoted`].
    pub fn failover(&self) -> (String, String) {
        let all: Vec<usize> = (0..self.pods.len()).collect();
        self.failover_among(&all)
    }

    /// [`Chart::failover`] asking and waiting only for the sentinels of these pods (the
    /// others may be stopped or killed).
    pub fn failover_among(&self, sentinels: &[usize]) -> (String, String) {
        assert!(!sentinels.is_empty(), "failover_among needs a sentinel");
        let views = || {
            sentinels
                .iter()
                .map(|&i| self.pods[i].sentinel.master_host_port())
        };
        let old = wait_for_or_dump(
            FAILOVER_TIMEOUT,
            "the sentinels to agree on the master before a failover",
            || agreed(views()),
            || self.dump(),
        );
        // An accepted SENTINEL FAILOVER can still be aborted by the leader (no good replica
        // yet, right after a previous failover): ask again, a bounded number of times.
        for _ in 0..3 {
            self.request_failover(sentinels);
            let moved = poll_for(Duration::from_secs(12), || {
                agreed(views()).filter(|new| *new != old)
            });
            if moved.is_some() {
                break;
            }
        }
        let new = self.wait_new_master_among(&old, sentinels);
        (old, new)
    }

    fn request_failover(&self, sentinels: &[usize]) {
        // NOGOODSLAVE while the sentinels' view of the replicas is not fresh yet, INPROG while
        // one is still running: both pass, so retry.
        let mut last_error = String::new();
        let start = Instant::now();
        let accepted = poll_for(FAILOVER_TIMEOUT, || {
            sentinels.iter().find_map(|&i| {
                let s = &self.pods[i].sentinel;
                match s.try_cli(&["SENTINEL", "FAILOVER", &self.master_name]) {
                    Ok(_) => Some(()),
                    Err(e) => {
                        last_error = format!("{}: {e}", self.pods[i].sentinel_host_port());
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

    /// Waits (30 s) until every sentinel names a master other than `old` (`HOSTNAME:PORT`)
    /// that answers `ROLE` with `master`; returns it. For failovers Sentinel starts by itself.
    pub fn wait_new_master(&self, old: &str) -> String {
        let all: Vec<usize> = (0..self.pods.len()).collect();
        self.wait_new_master_among(old, &all)
    }

    /// [`Chart::wait_new_master`] for the sentinels of these pods only.
    pub fn wait_new_master_among(&self, old: &str, sentinels: &[usize]) -> String {
        wait_for_or_dump(
            FAILOVER_TIMEOUT,
            &format!("the sentinels of pods {sentinels:?} to name a new master instead of {old}"),
            || {
                let new = agreed(
                    sentinels
                        .iter()
                        .map(|&i| self.pods[i].sentinel.master_host_port()),
                )?;
                (new != old && self.role_of(&new).as_deref() == Some("master")).then_some(new)
            },
            || self.dump(),
        )
    }

    /// `ROLE`'s first word of the data server named `name`, `None` if it does not answer or no
    /// pod has that name.
    fn role_of(&self, name: &str) -> Option<String> {
        let pod = &self.pods[self.try_pod_of(name)?];
        match call_auth_timeout(
            pod.server.addr(),
            Some(&self.password),
            &["ROLE"],
            DUMP_CALL_TIMEOUT,
        )
        .ok()?
        {
            Value::Array(items) => items
                .first()
                .map(|w| role_word(&value_to_string(w)).to_owned()),
            _ => None,
        }
    }

    /// Waits until the data server named `name` (`HOSTNAME:PORT`) is a connected replica of the
    /// current master, by hostname (`ROLE` says `slave HOSTNAME PORT connected`): what Sentinel
    /// does to a live old master 10–20 s after a failover.
    pub fn wait_demoted(&self, name: &str) {
        let pod = &self.pods[self.pod_of(name)];
        wait_for_or_dump(
            DEMOTE_TIMEOUT,
            &format!("{name} to become a connected replica of the current master"),
            || {
                let master = agreed(self.sentinel_views().into_iter())?;
                let reply = call_auth_timeout(
                    pod.server.addr(),
                    Some(&self.password),
                    &["ROLE"],
                    DUMP_CALL_TIMEOUT,
                )
                .ok()?;
                let Value::Array(items) = reply else {
                    return None;
                };
                let words: Vec<String> = items.iter().map(value_to_string).collect();
                let following = words.len() >= 4
                    && role_word(&words[0]) == "slave"
                    && words[2]
                        .parse::<u16>()
                        .is_ok_and(|port| host_port(&words[1], port) == master)
                    && words[3] == "connected";
                following.then_some(())
            },
            || self.dump(),
        )
    }

    /// Waits until the chart is quiet: all sentinels agree on a master that says `master`,
    /// every other data server is its connected replica, and every sentinel sees all of them
    /// as healthy replicas and the other sentinels as healthy. Returns the master.
    pub fn wait_settled(&self) -> String {
        let master = wait_for_or_dump(
            DEMOTE_TIMEOUT,
            "all sentinels to agree on a master that says role:master",
            || {
                let m = agreed(self.sentinel_views().into_iter())?;
                (self.role_of(&m).as_deref() == Some("master")).then_some(m)
            },
            || self.dump(),
        );
        let master_pod = self.pod_of(&master);
        for pod in &self.pods {
            if pod.index != master_pod {
                self.wait_demoted(&pod.server_host_port());
            }
        }
        self.wait_discovered();
        master
    }

    /// Waits until every sentinel lists every replica by hostname (flags exactly `slave`) and
    /// every other sentinel by hostname (flags exactly `sentinel`).
    pub fn wait_discovered(&self) {
        let replicas = self.pods.len() - 1;
        let others = self.pods.len() - 1;
        let hostnames: Vec<&str> = self.pods.iter().map(|p| p.hostname.as_str()).collect();
        wait_for_or_dump(
            DISCOVERY_TIMEOUT,
            &format!(
                "every sentinel to list {replicas} healthy replica(s) and {others} other \
                 sentinel(s), by hostname"
            ),
            || {
                self.pods
                    .iter()
                    .all(|p| {
                        let r = p.sentinel.replicas();
                        let o = p.sentinel.sentinels();
                        let named = |i: &BTreeMap<String, String>| {
                            i.get("ip").is_some_and(|h| hostnames.contains(&h.as_str()))
                        };
                        r.len() == replicas
                            && r.iter().all(|i| flags(i) == "slave" && named(i))
                            && o.len() == others
                            && o.iter().all(|i| flags(i) == "sentinel" && named(i))
                    })
                    .then_some(())
            },
            || self.dump(),
        )
    }

    /// Points pod `i`'s hostname at the data server's second address ([`Pod::alt_ip`]), as a
    /// pod rescheduled with a new IP would be. Connections already open stay where they are;
    /// whatever resolves the name for a new connection goes to the new address: rolecall, demo
    /// nodes on their next dial, and the sentinels too when they re-create a link (Redis 7.0
    /// resolves the hostname again on reconnecting, and keeps the old address if it cannot).
    pub fn repoint_name(&self, i: usize) {
        let pod = &self.pods[i];
        self.hosts.set(&pod.hostname, pod.alt_ip);
    }

    /// Points pod `i`'s hostname back at its own address ([`Pod::ip`]), also after
    /// [`Chart::hide_name`].
    pub fn restore_name(&self, i: usize) {
        let pod = &self.pods[i];
        self.hosts.set(&pod.hostname, pod.ip);
    }

    /// Points pod `i`'s hostname at any address.
    pub fn point_name(&self, i: usize, ip: IpAddr) {
        self.hosts.set(&self.pods[i].hostname, ip);
    }

    /// Makes pod `i`'s hostname stop resolving, as a pod's DNS record goes while the pod is
    /// down (its processes keep running: kill them too for a pod that is really gone).
    ///
    /// Beware a failover while a *live* replica's name is hidden. Redis 7.0.15's leader can
    /// still pick that replica and promote it (over the link it already has), then fails to
    /// resolve its name when switching the master: it stays in its failover, logging
    /// `+switch-master` and "Failed to resolve hostname" several times a second, and answers
    /// `get-master-addr-by-name` with the promoted replica's name (seen for 40 s and more),
    /// while the other sentinels keep the old master and turn the promoted replica back into
    /// a replica. Only a later failover (a new epoch, from another sentinel) clears it.
    pub fn hide_name(&self, i: usize) {
        self.hosts.remove(&self.pods[i].hostname);
    }

    /// Where pod `i`'s hostname points now (`None`: hidden).
    pub fn name_ip(&self, i: usize) -> Option<IpAddr> {
        self.hosts.lookup(&self.pods[i].hostname)
    }

    /// [`NodeOptions`] for this chart: its hosts file and both passwords.
    pub fn node_options(&self) -> NodeOptions {
        NodeOptions::new()
            .hosts(&self.hosts)
            .password(&self.password)
            .sentinel_password(&self.sentinel_password)
    }

    /// A demo node pinned to `addr` (`HOSTNAME:PORT`, re-resolved on every redial).
    pub fn pin_node(&self, addr: &str) -> DemoNode {
        self.node_options().pin(addr)
    }

    /// A demo node following the master through the pods' sentinels (by hostname).
    pub fn follow_node(&self) -> DemoNode {
        self.node_options()
            .follow(&self.sentinel_host_ports(), &self.master_name)
    }

    /// [`Chart::follow_node`] also watching `+switch-master`.
    pub fn follow_watching_node(&self) -> DemoNode {
        self.node_options()
            .follow_watching(&self.sentinel_host_ports(), &self.master_name)
    }

    /// What the sentinels and servers say now, and the hosts file's names. For panic messages.
    pub fn dump(&self) -> String {
        (self.dumper())()
    }

    /// [`Chart::dump`] as a function that holds no borrow of the chart (for
    /// [`RolecallConfig::dump_with`](super::RolecallConfig::dump_with) and threads).
    pub fn dumper(&self) -> Dumper {
        let spec = DumpSpec {
            master_name: self.master_name.clone(),
            sentinels: self
                .pods
                .iter()
                .map(|p| (p.sentinel_host_port(), p.sentinel.addr()))
                .collect(),
            servers: self
                .pods
                .iter()
                .map(|p| (p.server_host_port(), p.server.addr()))
                .collect(),
            password: self.password.clone(),
            sentinel_password: self.sentinel_password.clone(),
            hosts: self.hosts.clone(),
        };
        Arc::new(move || spec.dump())
    }
}

/// What [`Chart::dumper`] needs, owned.
struct DumpSpec {
    master_name: String,
    /// (`HOSTNAME:PORT`, the address the harness uses).
    sentinels: Vec<(String, SocketAddr)>,
    servers: Vec<(String, SocketAddr)>,
    password: String,
    sentinel_password: String,
    hosts: PrivateHosts,
}

impl DumpSpec {
    fn dump(&self) -> String {
        let mut out = String::from("--- chart ---\n");
        let show = |r: redis::RedisResult<Value>| match r {
            Ok(v) => value_to_line(&v),
            Err(e) => format!("(error) {e}"),
        };
        let sentinel = |addr: SocketAddr, args: &[&str]| {
            call_auth_timeout(addr, Some(&self.sentinel_password), args, DUMP_CALL_TIMEOUT)
        };
        let name = self.master_name.as_str();
        for (label, addr) in &self.sentinels {
            let get = match sentinel(*addr, &["SENTINEL", "get-master-addr-by-name", name]) {
                Ok(v) => host_port_reply(&v).unwrap_or_else(|| value_to_line(&v)),
                Err(e) => format!("(error) {e}"),
            };
            let _ = writeln!(
                out,
                "sentinel {label} ({addr}): get-master-addr-by-name -> {get}"
            );
            match sentinel(*addr, &["SENTINEL", "MASTERS"]) {
                Ok(v) => {
                    for m in instances(&v) {
                        let _ = writeln!(out, "  SENTINEL MASTERS: {}", one_line(&m));
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  SENTINEL MASTERS: (error) {e}");
                }
            }
            if let Ok(v) = sentinel(*addr, &["SENTINEL", "replicas", name]) {
                for r in instances(&v) {
                    let keys = [
                        "ip",
                        "port",
                        "flags",
                        "master-link-status",
                        "master-host",
                        "master-port",
                    ];
                    let _ = writeln!(out, "  replica: {}", pick(&r, &keys));
                }
            }
            if let Ok(v) = sentinel(*addr, &["SENTINEL", "sentinels", name]) {
                for r in instances(&v) {
                    let _ = writeln!(out, "  sentinel: {}", pick(&r, &["ip", "port", "flags"]));
                }
            }
        }
        for (label, addr) in &self.servers {
            let role = call_auth_timeout(*addr, Some(&self.password), &["ROLE"], DUMP_CALL_TIMEOUT);
            let _ = writeln!(out, "server {label} ({addr}): ROLE -> {}", show(role));
        }
        let _ = writeln!(out, "--- private hosts: names now ---");
        for (name, ip) in self.hosts.names() {
            let _ = writeln!(out, "{ip} {name}");
        }
        out
    }
}

/// The sentinel Service's HAProxy configuration: a TCP frontend, round-robin over the
/// sentinels by hostname (resolved once, when HAProxy starts, under the private hosts), with a
/// plain connect check so that a dead sentinel leaves the rotation as an unready pod leaves a
/// Service's endpoints.
fn service_config(pods: &[Pod]) -> String {
    let mut cfg = String::from(
        "global\n\
         \x20   log stdout format raw local0\n\
         \x20   stats socket \"${RUNTIME_API}\" mode 600 level admin\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option log-health-checks\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 1h\n\
         \x20   timeout server 1h\n\
         \x20   timeout check 1s\n\
         \n\
         frontend sentinel\n\
         \x20   bind \"${FRONTEND}\"\n\
         \x20   default_backend sentinels\n\
         \n\
         backend sentinels\n\
         \x20   balance roundrobin\n\
         \x20   default-server check inter 1s fall 2 rise 1\n",
    );
    for pod in pods {
        let _ = writeln!(
            cfg,
            "    server sentinel-{} {}",
            pod.index,
            pod.sentinel_host_port()
        );
    }
    cfg
}

/// The next `(A, B)` of `127.A.B.0/24` for a chart: by pid and a counter, so that charts of one
/// test binary never share a block and those of two binaries running at once rarely do (and
/// then only collide if their free ports do too, which the servers' retry covers).
fn next_block() -> (u8, u8) {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    // 200 values of A (10..=209) times 256 of B; 127.0.x.x and 127.1.x.x stay free for
    // everything else.
    let blocks = 200 * 256;
    let index = std::process::id().wrapping_mul(97).wrapping_add(n) % blocks;
    ((10 + index / 256) as u8, (index % 256) as u8)
}

/// A random password (alphanumeric, as Bitnami's chart generates them).
fn random_password(kind: &str) -> String {
    let mut out = format!("{kind}-");
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        let _ = write!(out, "{:016x}", h.finish());
    }
    out
}

/// Writes `secret` and a newline to a new file readable by its owner only (rolecall refuses a
/// password file others can read).
fn write_secret(path: &Path, secret: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    writeln!(file, "{secret}").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
