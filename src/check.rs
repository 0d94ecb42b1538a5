//! The check loop: the only owner of Redis I/O and the only writer of the snapshot.
//!
//! One check: find the node's live connections (/proc), ask every group's sentinels (all
//! concurrently), route the node's connections to the servers of each group's topology, ask
//! `ROLE` of those servers and of Sentinel's master, make the write probe on the master, then
//! let the pure verdict code decide and publish one [`Snapshot`].
//!
//! Checks run every `interval`, and every `fast_interval` while a change of verdict waits for
//! its rise/fall confirmation. A check can also be asked for at once through [`Trigger`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GroupConfig, RepairConfig};
use crate::events::{EventLog, Failover, Trigger, VoteLog};
use crate::metrics::Metrics;
use crate::conn::{Auth, Pool, ServerAddr, ServerError};
use crate::probe::{Role, ServerFacts, server_facts};
use crate::repair::{CommandRunner, Killer, note};
use crate::sentinel::{SentinelAnswer, SentinelView, ask_all, decide};
use crate::snapshot::{
    ConnectionStatus, EventStatus, GroupStatus, NodeStatus, ProbeStatus, SentinelStatus,
    ServerStatus, Snapshot,
};
use crate::sockets::{DiscoverError, FdMemory, NodeSockets, discover_remembering};
use crate::verdict::{GroupFacts, Observation, RoutedConnection, Tracker, observe, observe_group};

/// After a Sentinel event, confirmation checks follow each other this closely (instead of
/// `fast_interval`) while the trigger is bursting: a failover is confirmed by complete checks
/// within milliseconds, and the spacing bounds the load a storm of events can cause.
const EVENT_CONFIRM: Duration = Duration::from_millis(2);

struct Group {
    config: GroupConfig,
    sentinels: Vec<ServerAddr>,
    sentinel_pool: Pool,
    server_pool: Pool,
    tracker: Tracker,
    killer: Killer,
    events: EventLog,
    /// Leader votes heard on this group's sentinels.
    votes: VoteLog,
    /// Whether the node was ever seen connected to this topology.
    seen_on_topology: bool,
    /// Servers whose last answer to `ROLE` was replica.
    last_replicas: BTreeSet<ServerAddr>,
    /// Sentinel's master as of the last check, if it said `master` to `ROLE`.
    verified_master: Option<ServerAddr>,
    /// rolecall's own write pause on a master (failover repair): no probe write there until then.
    paused: Option<(ServerAddr, Instant)>,
}

/// State kept across checks.
pub struct Checker {
    config: Arc<Config>,
    groups: Vec<Group>,
    tracker: Tracker,
    checks: u64,
    runner: CommandRunner,
    /// The topology's ports as of the last check: discovery asks the kernel only for the node's
    /// connections to these (empty: all of them).
    ports: BTreeSet<u16>,
    /// What the last discovery learned from the node's fds (read them all only when needed).
    fd_memory: Arc<std::sync::Mutex<FdMemory>>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resolves a server address to the socket addresses a node connection may show.
async fn resolve(addr: &ServerAddr, timeout: Duration) -> Vec<SocketAddr> {
    if let Ok(ip) = addr.host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, addr.port)];
    }
    match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((addr.host.as_str(), addr.port)),
    )
    .await
    {
        Ok(Ok(it)) => it
            .map(|sa| match sa.ip() {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), sa.port()),
                    None => sa,
                },
                IpAddr::V4(_) => sa,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Checker {
    pub fn new(config: Arc<Config>) -> Checker {
        let now = crate::runclock::now();
        let timeout = config.check.timeout;
        let groups = config
            .groups
            .iter()
            .map(|g| Group {
                sentinels: g
                    .sentinels
                    .iter()
                    .map(|s| s.parse().expect("validated sentinel address"))
                    .collect(),
                sentinel_pool: Pool::new(
                    "sentinel",
                    Auth {
                        username: g.sentinel_username.clone(),
                        password: g.sentinel_password.clone(),
                    },
                    timeout,
                ),
                server_pool: Pool::new(
                    "server",
                    Auth {
                        username: g.username.clone(),
                        password: g.password.clone(),
                    },
                    timeout,
                ),
                tracker: Tracker::new(config.check.policy.clone(), now),
                killer: Killer::default(),
                events: EventLog::default(),
                votes: VoteLog::default(),
                seen_on_topology: false,
                last_replicas: BTreeSet::new(),
                verified_master: None,
                paused: None,
                config: g.clone(),
            })
            .collect();
        Checker {
            tracker: Tracker::new(config.check.policy.clone(), now),
            groups,
            checks: 0,
            runner: CommandRunner::default(),
            ports: BTreeSet::new(),
            fd_memory: Arc::default(),
            config,
        }
    }

    /// What the event subscriptions need: per group, its sentinels, their credentials, the
    /// master name and the log the group's status reads the last event from.
    pub fn event_sources(&self) -> Vec<(Vec<ServerAddr>, Auth, String, EventLog, VoteLog)> {
        self.groups
            .iter()
            .map(|g| {
                (
                    g.sentinels.clone(),
                    Auth {
                        username: g.config.sentinel_username.clone(),
                        password: g.config.sentinel_password.clone(),
                    },
                    g.config.master_name.clone(),
                    g.events.clone(),
                    g.votes.clone(),
                )
            })
            .collect()
    }

    /// The snapshot before any check.
    pub fn starting_snapshot(&self) -> Snapshot {
        Snapshot::starting(
            NodeStatus {
                name: self.config.node.name.clone(),
                selector: self.config.node.selector.to_string(),
                pids: Vec::new(),
                running: false,
            },
            self.stale_after(),
            self.config.check.policy.unknown_hold,
        )
    }

    fn stale_after(&self) -> Duration {
        // A check takes at most about 4 timeouts (sentinels: connect + commands; servers: the
        // same); three missed intervals beyond that mean the loop is stuck.
        self.config.check.interval * 3 + self.config.check.timeout * 4
    }

    /// Pauses writes on a verified master whose replica a sentinel starts promoting (writes it
    /// would acknowledge from now on are lost), or lifts the pause when the failover is aborted.
    /// Opt-in: `repair.pause_writes_on_failover`.
    pub async fn failover_repair(&mut self, failovers: &[Failover]) {
        let repair = &self.config.repair;
        if !repair.pause_writes_on_failover {
            return;
        }
        let timeout = self.config.check.timeout;
        for (name, old, starting) in failovers {
            for g in self
                .groups
                .iter_mut()
                .filter(|g| &g.config.master_name == name)
            {
                // Only the master this rolecall verified itself: an event alone names nothing.
                if g.verified_master.as_ref() != Some(old) {
                    tracing::info!(master = %old, "failover event for a server that is not the verified master; no pause");
                    continue;
                }
                let Ok((mut conn, fresh)) = g.server_pool.connection(old).await else {
                    continue;
                };
                let mut cmd = redis::cmd("CLIENT");
                if *starting {
                    cmd.arg("PAUSE")
                        .arg(repair.pause_for.as_millis() as u64)
                        .arg("WRITE");
                } else {
                    cmd.arg("UNPAUSE");
                }
                match crate::conn::command(&mut conn, old, "server", timeout, &cmd).await {
                    Ok(_) => {
                        if fresh {
                            g.server_pool.keep(old, conn);
                        }
                        g.paused =
                            starting.then(|| (old.clone(), Instant::now() + repair.pause_for));
                        if *starting {
                            tracing::warn!(master = %old, pause_ms = repair.pause_for.as_millis() as u64, "repair: failover starting; paused writes on the old master");
                        } else {
                            tracing::warn!(master = %old, "repair: failover aborted; writes on the master resumed");
                        }
                    }
                    Err(e) => {
                        if e.class == crate::conn::ErrorClass::NoPerm {
                            tracing::warn!(master = %old, error = %e, "repair: CLIENT PAUSE/UNPAUSE refused by an ACL; grant +client|pause and +client|unpause, or set repair.pause_writes_on_failover = false");
                        } else {
                            tracing::warn!(master = %old, error = %e, "repair: CLIENT PAUSE/UNPAUSE failed");
                        }
                    }
                }
            }
        }
    }

    /// Whether a verdict change is waiting for confirmation.
    pub fn pending(&self) -> bool {
        self.tracker.pending() || self.groups.iter().any(|g| g.tracker.pending())
    }

    /// Runs one complete check and returns the snapshot to publish.
    pub async fn check(&mut self) -> Snapshot {
        let started = Instant::now();
        // The node's sockets (a /proc read, kernel time proportional to the namespace's
        // sockets) and Sentinel's view are independent: gather both at once. Only connections to
        // the topology's ports matter; they are known from the last check.
        let ports = self.ports.clone();
        let discovery = discover_blocking(
            self.config.node.selector.clone(),
            ports.clone(),
            self.fd_memory.clone(),
        );
        let views = join_all(self.groups.iter_mut().map(|g| async {
            let votes = g.votes.current(Instant::now());
            let answers = ask_all(
                &mut g.sentinel_pool,
                &g.sentinels,
                &g.config.master_name,
                !votes.is_empty(),
            )
            .await;
            let view = decide(&g.config.master_name, g.sentinels.len(), &answers, &votes);
            (answers, view)
        }));
        let (node, views) = tokio::join!(discovery, views);
        // A server on a port the filter left out (a new replica, a failover to another port):
        // look again with the ports of this check, so no connection of the node is missed.
        let wanted: BTreeSet<u16> = views
            .iter()
            .flat_map(|(_, v)| v.servers().map(|s| s.port))
            .collect();
        let node = if !ports.is_empty() && !wanted.is_subset(&ports) {
            discover_blocking(
                self.config.node.selector.clone(),
                wanted.clone(),
                self.fd_memory.clone(),
            )
            .await
        } else {
            node
        };
        self.ports = wanted;
        let node_ok: Result<(), DiscoverError> = match &node {
            Ok(_) => Ok(()),
            Err(DiscoverError::NodeMissing(m)) => Err(DiscoverError::NodeMissing(m.clone())),
            Err(DiscoverError::Unreadable(m)) => Err(DiscoverError::Unreadable(m.clone())),
        };
        let empty = NodeSockets::default();
        let sockets = node.as_ref().unwrap_or(&empty);

        let probe_key_base = format!(
            "{}:{}",
            self.config.check.probe_key_prefix, self.config.node.name
        );
        let probe = self
            .config
            .check
            .write_probe
            .then(|| (probe_key_base, self.config.check.probe_ttl));
        let timeout = self.config.check.timeout;
        let repair = &self.config.repair;
        let results = join_all(
            self.groups
                .iter_mut()
                .zip(views)
                .map(|(g, (answers, view))| {
                    check_group(g, answers, view, sockets, probe.clone(), timeout, repair)
                }),
        )
        .await;

        // The policy clock: a freeze of rolecall itself is not time that passed for the node.
        let now = crate::runclock::now();
        let mut statuses = Vec::with_capacity(results.len());
        let mut observations = Vec::with_capacity(results.len());
        for (g, (obs, mut status)) in self.groups.iter_mut().zip(results) {
            let group_obs = observe(&node_ok, std::slice::from_ref(&obs));
            let d = g.tracker.update(group_obs, now);
            status.verdict = d.verdict;
            status.in_rotation = d.in_rotation;
            status.reason = d.reason;
            observations.push(obs);
            statuses.push(status);
        }
        let obs = observe(&node_ok, &observations);
        let (observed, observed_reason) = (obs.verdict, obs.reason.clone());
        let decision = self.tracker.update(obs, now);
        if let Some(cmd) = &self.config.repair.command {
            let master = self.groups.iter().find_map(|g| {
                let m = g.verified_master.clone()?;
                let c = g.server_pool.get(&m)?;
                Some((m, c))
            });
            self.runner.maybe_run(
                cmd,
                &self.config.node.name,
                decision.verdict,
                self.tracker.since(),
                master,
                timeout,
                now,
            );
        }
        self.checks += 1;
        Snapshot {
            verdict: decision.verdict,
            in_rotation: decision.in_rotation,
            reason: decision.reason,
            observed,
            observed_reason,
            checked: true,
            checks: self.checks,
            check_duration_ms: ms(started.elapsed()),
            node: NodeStatus {
                name: self.config.node.name.clone(),
                selector: self.config.node.selector.to_string(),
                pids: sockets.pids.clone(),
                running: !matches!(node_ok, Err(DiscoverError::NodeMissing(_))),
            },
            groups: statuses,
            completed: Some(crate::runclock::now()),
            stale_after: self.stale_after(),
            fail_open_after: self.config.check.policy.unknown_hold,
        }
    }
}

/// [`discover_remembering`] off the async runtime (it reads /proc and waits on netlink).
async fn discover_blocking(
    selector: crate::sockets::NodeSelector,
    ports: BTreeSet<u16>,
    memory: Arc<std::sync::Mutex<FdMemory>>,
) -> Result<NodeSockets, DiscoverError> {
    tokio::task::spawn_blocking(move || {
        // Only the check loop discovers, one at a time; a poisoned lock only means a panic in
        // an earlier discovery, and the memory is still consistent or forgotten below.
        let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
        let result = discover_remembering(&selector, &ports, &mut memory);
        if result.is_err() {
            *memory = FdMemory::default();
        }
        result
    })
    .await
    .unwrap_or_else(|e| {
        Err(DiscoverError::Unreadable(format!(
            "discovery task failed: {e}"
        )))
    })
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Finds which topology server each unplaced node connection reaches, by run id: asks
/// `INFO server` at the address the node uses and, for the master, at the announced address.
/// Only addresses on a port of the topology are asked, so rolecall never sends Redis commands to
/// the node's other services. Returns the node's remote address → the announced server.
async fn identify(
    g: &mut Group,
    view: &SentinelView,
    servers: &[ServerAddr],
    sockets: &NodeSockets,
    by_socket: &HashMap<SocketAddr, ServerAddr>,
    timeout: Duration,
) -> BTreeMap<SocketAddr, ServerAddr> {
    let ports: BTreeSet<u16> = servers.iter().map(|s| s.port).collect();
    let candidates: BTreeSet<SocketAddr> = sockets
        .connections
        .iter()
        .map(|c| c.remote)
        .filter(|r| !by_socket.contains_key(r) && ports.contains(&r.port()))
        .collect();
    if candidates.is_empty() {
        return BTreeMap::new();
    }
    let mut ask: Vec<ServerAddr> = candidates
        .iter()
        .map(|sa| ServerAddr::new(sa.ip().to_string(), sa.port()))
        .collect();
    if let Some(m) = &view.master {
        ask.push(m.clone());
    }
    let infos = join_all(ask.iter().map(|addr| {
        let conn = g.server_pool.connection(addr);
        let addr = addr.clone();
        async move {
            let Ok((mut c, _)) = conn.await else {
                return (addr, None);
            };
            let mut info = redis::cmd("INFO");
            info.arg("server");
            let id = crate::conn::command(&mut c, &addr, "server", timeout, &info)
                .await
                .ok()
                .and_then(|v| crate::conn::text(&v))
                .and_then(|t| crate::probe::parse_run_id(&t));
            (addr, id.map(|id| (id, c)))
        }
    }))
    .await;
    let mut ids = view.run_ids.clone();
    let mut found: BTreeMap<ServerAddr, String> = BTreeMap::new();
    for (addr, r) in infos {
        if let Some((id, conn)) = r {
            g.server_pool.keep(&addr, conn);
            if view.master.as_ref() == Some(&addr) {
                ids.insert(id.clone(), addr.clone());
            }
            found.insert(addr, id);
        }
    }
    candidates
        .into_iter()
        .filter_map(|sa| {
            let id = found.get(&ServerAddr::new(sa.ip().to_string(), sa.port()))?;
            Some((sa, ids.get(id)?.clone()))
        })
        .collect()
}

async fn check_group(
    g: &mut Group,
    answers: Vec<SentinelAnswer>,
    view: SentinelView,
    sockets: &NodeSockets,
    probe: Option<(String, Duration)>,
    timeout: Duration,
    repair: &RepairConfig,
) -> (Observation, GroupStatus) {
    // Route the node's connections to the servers of this topology, by address.
    let servers: Vec<ServerAddr> = view.servers().cloned().collect();
    let resolved = join_all(servers.iter().map(|s| resolve(s, timeout))).await;
    let mut by_socket: HashMap<SocketAddr, ServerAddr> = HashMap::new();
    for (s, addrs) in servers.iter().zip(resolved) {
        for a in addrs {
            by_socket.entry(a).or_insert_with(|| s.clone());
        }
    }
    // Then by identity: a connection to an address Sentinel does not announce, on a port a
    // server of the topology listens on, may reach one of them under another address (NAT,
    // `replica-announce-ip`, host names). Its run id says which.
    let aliases = identify(g, &view, &servers, sockets, &by_socket, timeout).await;
    for (socket, server) in &aliases {
        by_socket.insert(*socket, server.clone());
    }
    let routed: Vec<RoutedConnection> = sockets
        .connections
        .iter()
        .filter_map(|c| {
            by_socket.get(&c.remote).map(|s| RoutedConnection {
                connection: *c,
                server: s.clone(),
            })
        })
        .collect();

    // ROLE of every server the node talks to and of Sentinel's master; the probe on the master.
    let mut ask: BTreeSet<ServerAddr> = routed.iter().map(|r| r.server.clone()).collect();
    if let Some(m) = &view.master {
        ask.insert(m.clone());
    }
    let stamp = now_millis().to_string();
    // While rolecall itself holds writes on a master, a probe write there would only wait.
    let probe = match &g.paused {
        Some((m, until)) if Instant::now() < *until && view.master.as_ref() == Some(m) => None,
        _ => probe,
    };
    let fact_futures: Vec<_> = ask
        .iter()
        .map(|addr| {
            let conn = g.server_pool.connection(addr);
            let p = match (&probe, &view.master) {
                (Some((key, ttl)), Some(m)) if m == addr => {
                    Some((key.clone(), stamp.clone(), *ttl))
                }
                _ => None,
            };
            let addr = addr.clone();
            async move {
                let deadline = timeout * 3;
                match tokio::time::timeout(deadline, async {
                    server_facts(conn.await, addr.clone(), timeout, p.clone()).await
                })
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        let e = ServerError::timeout("server", &addr, deadline);
                        (
                            addr,
                            ServerFacts {
                                role: Err(e.clone()),
                                latency: None,
                                probe: p.map(|_| Err(e)),
                            },
                            None,
                        )
                    }
                }
            }
        })
        .collect();
    let mut facts: BTreeMap<ServerAddr, ServerFacts> = BTreeMap::new();
    for (addr, f, conn) in join_all(fact_futures).await {
        match conn {
            Some(c) => g.server_pool.keep(&addr, c),
            None => g.server_pool.forget(&addr),
        }
        facts.insert(addr, f);
    }
    let mut known: BTreeSet<ServerAddr> = servers.iter().cloned().collect();
    known.extend(
        aliases
            .keys()
            .map(|sa| ServerAddr::new(sa.ip().to_string(), sa.port())),
    );
    g.server_pool.retain(|a| known.contains(a));

    let probe_result = view
        .master
        .as_ref()
        .and_then(|m| facts.get(m))
        .and_then(|f| f.probe.clone());
    let role_of = |a: &ServerAddr| facts.get(a).map(|f| f.role.clone());
    g.seen_on_topology |= !routed.is_empty();
    for (addr, f) in &facts {
        match &f.role {
            Ok(Role::Replica { .. }) => {
                g.last_replicas.insert(addr.clone());
            }
            Ok(_) => {
                g.last_replicas.remove(addr);
            }
            Err(_) => {}
        }
    }
    g.last_replicas.retain(|a| known.contains(a));
    let mut obs = observe_group(&GroupFacts {
        view: &view,
        connections: &routed,
        role_of: &role_of,
        probe: probe_result.as_ref(),
        seen_on_topology: g.seen_on_topology,
        last_replicas: &g.last_replicas,
    });
    g.verified_master = view
        .master
        .clone()
        .filter(|m| matches!(facts.get(m).map(|f| &f.role), Some(Ok(Role::Master))));

    // Repair: only against a verified master, only the node's connections elsewhere, and only
    // once the sentinel majority names that master: a node that re-asks Sentinel before then is
    // told the old address again.
    let mut kill_report = None;
    if repair.kill_stale_connections
        && view.elected.is_none()
        && let Some(master) = &g.verified_master
    {
        let mut stale: BTreeMap<ServerAddr, Vec<SocketAddr>> = BTreeMap::new();
        for r in routed.iter().filter(|r| &r.server != master) {
            stale
                .entry(r.server.clone())
                .or_default()
                .push(r.connection.local);
        }
        let stale: Vec<(ServerAddr, Vec<SocketAddr>)> = stale.into_iter().collect();
        let conns: HashMap<ServerAddr, redis::aio::MultiplexedConnection> = stale
            .iter()
            .filter_map(|(s, _)| g.server_pool.get(s).map(|c| (s.clone(), c)))
            .collect();
        let report = g
            .killer
            .repair(repair, &stale, &conns, timeout, Instant::now())
            .await;
        if let Some(n) = note(&report, repair.kill_attempts) {
            obs.reason = format!("{}; {n}", obs.reason);
        }
        kill_report = Some(report);
    }
    let last_event = g
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(|e| EventStatus {
            age_ms: e.at.map(|t| t.elapsed().as_millis() as u64),
            sentinel: e.sentinel,
            channel: e.channel,
            payload: e.payload,
        });

    let status = GroupStatus {
        name: g.config.name.clone(),
        master_name: g.config.master_name.clone(),
        verdict: obs.verdict,
        in_rotation: true,
        reason: obs.reason.clone(),
        master: view.master.clone(),
        votes: view.votes,
        elected: view.elected.clone(),
        configured_sentinels: view.configured,
        dissent: {
            let mut d = view.dissent.clone();
            if let Some(p) = &view.problem {
                d.insert(0, p.clone());
            }
            d
        },
        sentinels: answers
            .iter()
            .map(|a| SentinelStatus {
                addr: a.addr.clone(),
                master: a.result.as_ref().ok().and_then(|r| r.master.clone()),
                tilt: a.result.as_ref().is_ok_and(|r| r.tilt),
                error: a.result.as_ref().err().map(|e| e.to_string()),
                latency_ms: a.latency.map(ms),
            })
            .collect(),
        connections: routed
            .iter()
            .map(|r| ConnectionStatus {
                local: r.connection.local.to_string(),
                remote: r.connection.remote.to_string(),
                server: r.server.clone(),
                role: facts
                    .get(&r.server)
                    .and_then(|f| f.role.as_ref().ok())
                    .map(|role| role.name().to_string()),
            })
            .collect(),
        servers: facts
            .iter()
            .map(|(addr, f)| ServerStatus {
                addr: addr.clone(),
                role: f.role.as_ref().ok().map(|r| r.name().to_string()),
                error: f.role.as_ref().err().map(|e| e.to_string()),
                latency_ms: f.latency.map(ms),
            })
            .collect(),
        probe: probe_result.as_ref().map(|r| ProbeStatus {
            ok: r.is_ok(),
            error: r.as_ref().err().map(|e| e.to_string()),
        }),
        repair: kill_report,
        last_event,
    };
    (obs, status)
}

/// Runs checks until `shutdown`, publishing each snapshot.
pub async fn run(
    mut checker: Checker,
    tx: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    trigger: Trigger,
    shutdown: CancellationToken,
) {
    let interval = checker.config.check.interval;
    let fast = checker.config.check.fast_interval;
    let mut last: Option<(crate::verdict::Verdict, bool)> = None;
    loop {
        let failovers = trigger.take_failovers();
        if !failovers.is_empty() {
            checker.failover_repair(&failovers).await;
        }
        let snapshot = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = checker.check() => s,
        };
        metrics.observe_check(&snapshot);
        let now = (snapshot.verdict, snapshot.in_rotation);
        if last != Some(now) {
            metrics.verdict_changed();
            if snapshot.in_rotation {
                tracing::info!(
                    verdict = %snapshot.verdict,
                    in_rotation = snapshot.in_rotation,
                    reason = %snapshot.reason,
                    "verdict changed"
                );
            } else {
                tracing::warn!(
                    verdict = %snapshot.verdict,
                    in_rotation = snapshot.in_rotation,
                    reason = %snapshot.reason,
                    "verdict changed"
                );
            }
            crate::systemd::status(&snapshot);
            last = Some(now);
        } else {
            tracing::debug!(verdict = %snapshot.verdict, duration_ms = snapshot.check_duration_ms, "check complete");
        }
        crate::systemd::watchdog();
        let _ = tx.send(Arc::new(snapshot));
        let wait = match (checker.pending(), trigger.bursting()) {
            (true, true) => EVENT_CONFIRM,
            (true, false) => fast,
            (false, _) => interval,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = trigger.notified() => {}
        }
    }
}
