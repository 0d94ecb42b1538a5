//! The check loop: the only owner of Redis I/O and the only writer of the snapshot.
//!
//! One check: find the node's live connections (/proc) and ask every group's sentinels, all
//! at once; then, per group ([`group`]), place the node's connections on the servers of the
//! topology ([`route`]), ask `ROLE` of those servers and of Sentinel's master, make the write
//! probe on the master, observe, and run the kill repair; finally let the pure policy decide
//! and publish one [`Snapshot`].
//!
//! Checks run every `interval`, and every `fast_interval` while a change of verdict waits for
//! its rise/fall confirmation. A Sentinel event asks for a check at once through the
//! [`Trigger`], and for confirmation checks 2 ms apart for a short while.

mod group;
mod route;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::conn::{Auth, Pool, ServerAddr};
use crate::events::{EventLog, Failover, Trigger, VoteLog};
use crate::fleet::{Guard, Registry};
use crate::metrics::Metrics;
use crate::repair::{CommandRunner, GroupRepair};
use crate::sentinel::{Asked, Members, SentinelView, ask_group, decide};
use crate::snapshot::{GroupStatus, NodeStatus, Snapshot};
use crate::sockets::{
    DiscoverError, FdMemory, Listing, NodeSelector, NodeSockets, discover_remembering,
};
use crate::verdict::{Tracker, Verdict, observe};

use group::{Group, GroupCheck};

/// After a Sentinel event, confirmation checks follow each other this closely (instead of
/// `fast_interval`) while the trigger is bursting: a failover is confirmed by complete checks
/// within milliseconds, and the spacing bounds the load a storm of events can cause.
const EVENT_CONFIRM: Duration = Duration::from_millis(2);

/// A failover is settling for this long after a Sentinel event about the group or a change of
/// its verified master: while the node is `disconnected` or `stale_master` then, checks come
/// every `fast_interval`, so the node's move (or its redial to the demoted master, tens of
/// milliseconds after Sentinel converts it) is seen at once, not at the next interval.
const SETTLE: Duration = Duration::from_secs(30);

/// Within a Sentinel event's burst, while the node is `disconnected` or `stale_master`, checks
/// follow each other this closely: when Sentinel converts the old master it kills its clients,
/// and a pinned node redials it within tens of milliseconds (its client's retry delay); seen at
/// the next check, confirmed 2 ms later. Bounded by the burst (2 s after each event).
const SETTLE_WATCH: Duration = Duration::from_millis(20);

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
    /// The fleet guard.
    fleet: Guard,
    /// What the last check alone saw, and when a group's verified master last changed.
    observed: Verdict,
    master_changed: Option<Instant>,
    /// Whether the operator's maintenance switch is on (the guard counts the node out).
    maintenance: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// What the event subscriptions of one group need: its sentinels, their credentials, the
/// master name, and the logs the group's checks read the last event and the votes from.
pub struct EventSource {
    pub name: String,
    pub sentinels: Vec<ServerAddr>,
    pub auth: Auth,
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub master_name: String,
    pub log: EventLog,
    pub votes: VoteLog,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Checker {
    pub fn new(config: Arc<Config>) -> Checker {
        crate::tls::install_crypto();
        let now = crate::runclock::now();
        let timeout = config.check.timeout;
        let groups = config
            .groups
            .iter()
            .map(|g| Group {
                sentinels: parse_sentinels(g),
                sentinel_pool: Pool::new(
                    "sentinel",
                    sentinel_auth(g),
                    timeout,
                    g.sentinel_tls.clone(),
                ),
                server_pool: Pool::new(
                    "server",
                    Auth {
                        username: g.username.clone(),
                        password: g.password.clone(),
                    },
                    timeout,
                    g.tls.clone(),
                ),
                tracker: Tracker::new(config.check.policy.clone(), now),
                repair: GroupRepair::default(),
                events: EventLog::default(),
                votes: VoteLog::default(),
                seen_on_topology: false,
                last_replicas: BTreeSet::new(),
                verified_master: None,
                placements: Default::default(),
                members: Members::default(),
                reports: Default::default(),
                asked_at: None,
                software: Default::default(),
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
            fleet: Guard::new(
                config.fleet.clone(),
                &config.node.name,
                &config.check.probe_key_prefix,
                timeout,
            ),
            maintenance: None,
            observed: Verdict::Unknown,
            master_changed: None,
            config,
        }
    }

    /// Runs on a reloaded configuration (see `config::reload`: only the reloadable keys differ
    /// from the running one): the verdict trackers take its policy and keep their state; a
    /// group whose sentinels changed asks the new ones and learns their membership afresh;
    /// pools, event logs and the fleet guard are untouched.
    pub fn reconfigure(&mut self, config: Arc<Config>) {
        let policy = &config.check.policy;
        self.tracker.set_policy(policy.clone());
        for (g, new) in self.groups.iter_mut().zip(&config.groups) {
            g.tracker.set_policy(policy.clone());
            if g.config.sentinels != new.sentinels {
                tracing::info!(group = %g.config.name, sentinels = ?new.sentinels, "sentinels changed");
                g.sentinels = parse_sentinels(new);
                // The real sentinels behind the old addresses are not the group's any more:
                // remembered, they would count against a majority of the new ones.
                g.members = Members::default();
                g.reports = Default::default();
                g.config = new.clone();
            }
        }
        self.config = config;
    }

    /// Tells the fleet guard whether the operator's maintenance switch is on.
    pub fn watch_maintenance(&mut self, on: impl Fn() -> bool + Send + Sync + 'static) {
        self.maintenance = Some(Box::new(on));
    }

    /// The fleet registry's server: the first group's verified master, with rolecall's
    /// connection to it.
    fn registry(&self) -> Registry {
        let g = self.groups.first().ok_or("no group")?;
        let m = g
            .verified_master
            .clone()
            .ok_or_else(|| format!("group {}: no verified master", g.config.name))?;
        let c = g
            .server_pool
            .get(&m)
            .ok_or_else(|| format!("no connection to {m}"))?;
        Ok((m, c))
    }

    /// What the event subscriptions need, per group.
    pub fn event_sources(&self) -> Vec<EventSource> {
        self.groups
            .iter()
            .map(|g| EventSource {
                name: g.config.name.clone(),
                sentinels: g.sentinels.clone(),
                auth: sentinel_auth(&g.config),
                tls: g.config.sentinel_tls.clone(),
                master_name: g.config.master_name.clone(),
                log: g.events.clone(),
                votes: g.votes.clone(),
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

    /// The write pause repair for the failovers a sentinel announced (opt-in:
    /// `repair.pause_writes_on_failover`).
    pub async fn failover_repair(&mut self, failovers: &[Failover]) {
        let repair = &self.config.repair;
        if !repair.pause_writes_on_failover {
            return;
        }
        for (name, old, starting) in failovers {
            for g in self
                .groups
                .iter_mut()
                .filter(|g| &g.config.master_name == name)
            {
                g.repair
                    .on_failover(
                        repair,
                        &mut g.server_pool,
                        g.verified_master.as_ref(),
                        old,
                        *starting,
                    )
                    .await;
            }
        }
    }

    /// A sentinel converts `server` to a replica: the fence on it lifts at once, so Sentinel's
    /// demotion runs (a paused server holds Sentinel's link too).
    pub async fn on_conversions(&mut self, conversions: &[(String, ServerAddr)]) {
        for (name, server) in conversions {
            for g in self
                .groups
                .iter_mut()
                .filter(|g| &g.config.master_name == name)
            {
                g.repair.fence.converting(server, &g.server_pool).await;
            }
        }
    }

    /// Whether a verdict change is waiting for confirmation.
    pub fn pending(&self) -> bool {
        self.tracker.pending() || self.groups.iter().any(|g| g.tracker.pending())
    }

    /// Whether a failover is settling around the node: it was `disconnected` or `stale_master`
    /// in the last check, within [`SETTLE`] of a Sentinel event about a group or of a change of
    /// a group's verified master.
    pub fn unsettled(&self) -> bool {
        let recent = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() < SETTLE);
        matches!(self.observed, Verdict::Disconnected | Verdict::StaleMaster)
            && (recent(self.master_changed)
                || self.groups.iter().any(|g| {
                    recent(
                        g.events
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .as_ref()
                            .and_then(|e| e.at),
                    )
                }))
    }

    /// Runs one complete check and returns the snapshot to publish.
    pub async fn check(&mut self) -> Snapshot {
        let started = Instant::now();
        let (node, views) = self.discover_and_ask().await;
        let node_ok: Result<(), DiscoverError> = match &node {
            Ok(_) => Ok(()),
            Err(DiscoverError::NodeMissing(m)) => Err(DiscoverError::NodeMissing(m.clone())),
            Err(DiscoverError::Unreadable(m)) => Err(DiscoverError::Unreadable(m.clone())),
        };
        let empty = NodeSockets::default();
        let sockets = node.as_ref().unwrap_or(&empty);
        let masters: Vec<Option<ServerAddr>> = self
            .groups
            .iter()
            .map(|g| g.verified_master.clone())
            .collect();
        let checks = self.check_groups(views, sockets).await;
        if self
            .groups
            .iter()
            .zip(&masters)
            .any(|(g, m)| g.verified_master.is_some() && &g.verified_master != m)
        {
            self.master_changed = Some(Instant::now());
        }

        // The policy clock: a freeze of rolecall itself is not time that passed for the node.
        let now = crate::runclock::now();
        let mut groups = Vec::with_capacity(checks.len());
        let mut observations = Vec::with_capacity(checks.len());
        for (g, check) in self.groups.iter_mut().zip(checks) {
            let decision = g
                .tracker
                .update(observe(&node_ok, std::slice::from_ref(&check.obs)), now);
            let (obs, status) = g.status(check, decision);
            observations.push(obs);
            groups.push(status);
        }
        let obs = observe(&node_ok, &observations);
        let (observed, observed_reason) = (obs.verdict, obs.reason.clone());
        self.observed = observed;
        let mut decision = self.tracker.update(obs, now);
        let maintenance = self.maintenance.as_ref().is_some_and(|on| on());
        let fleet = self
            .fleet
            .apply(&mut decision, maintenance, self.registry())
            .await;
        if fleet.guard.holds_in() {
            hold_groups_in(&mut groups);
        }
        self.run_repair_command(decision.verdict, now);
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
            groups,
            fleet,
            completed: Some(crate::runclock::now()),
            stale_after: self.stale_after(),
            fail_open_after: self.config.check.policy.unknown_hold,
        }
    }

    /// The node's sockets and every group's Sentinel view, gathered at once: they are
    /// independent. Only connections to the topology's ports matter; they are known from the
    /// last check, and discovery looks again when this check names a new one.
    async fn discover_and_ask(
        &mut self,
    ) -> (
        Result<NodeSockets, DiscoverError>,
        Vec<(Vec<Asked>, SentinelView)>,
    ) {
        let ports = self.ports.clone();
        let selector = &self.config.node.selector;
        // Steady state: the node was `ok` and no Sentinel event came since the last check; its
        // known connections may then be confirmed by exact lookups (see `FdMemory`).
        let listing = if self.observed == Verdict::Ok
            && self.groups.iter().all(|g| !g.event_since(g.asked_at))
        {
            Listing::KnownMayDo
        } else {
            Listing::Always
        };
        let discovery = discover_blocking(
            selector.clone(),
            ports.clone(),
            self.fd_memory.clone(),
            listing,
        );
        let events = self.config.check.sentinel_events;
        let views = join_all(self.groups.iter_mut().map(|g| async move {
            let now = Instant::now();
            let votes = g.votes.current(now);
            // Asked in full after a Sentinel event (and always without events); otherwise
            // mostly only the master's address.
            let refresh = !events || g.event_since(g.asked_at);
            g.asked_at = Some(now);
            let mut asked = ask_group(
                &mut g.sentinel_pool,
                (&mut g.members, &mut g.reports),
                &g.sentinels,
                &g.config.master_name,
                (!votes.is_empty(), refresh),
            )
            .await;
            let count = g.members.count(&mut asked);
            let view = decide(
                &g.config.master_name,
                count.sentinels,
                &count.answers,
                &votes,
            );
            (asked, view)
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
                selector.clone(),
                wanted.clone(),
                self.fd_memory.clone(),
                Listing::Always,
            )
            .await
        } else {
            node
        };
        self.ports = wanted;
        (node, views)
    }

    /// Every group's part of the check, all at once.
    async fn check_groups(
        &mut self,
        views: Vec<(Vec<Asked>, SentinelView)>,
        sockets: &NodeSockets,
    ) -> Vec<GroupCheck> {
        let check = &self.config.check;
        let probe = check.write_probe.then(|| {
            (
                format!("{}:{}", check.probe_key_prefix, self.config.node.name),
                check.probe_ttl,
            )
        });
        let (timeout, repair) = (check.timeout, &self.config.repair);
        join_all(self.groups.iter_mut().zip(views).map(|(g, (asked, view))| {
            g.check(asked, view, sockets, probe.clone(), timeout, repair)
        }))
        .await
    }

    /// The command repair, if configured and due; the fleet lock is taken on the first
    /// verified master.
    fn run_repair_command(&mut self, verdict: Verdict, now: Instant) {
        let Some(cmd) = &self.config.repair.command else {
            return;
        };
        let master = self.groups.iter().find_map(|g| {
            let m = g.verified_master.clone()?;
            let c = g.server_pool.get(&m)?;
            Some((m, c))
        });
        self.runner.maybe_run(
            cmd,
            &self.config.node.name,
            verdict,
            self.tracker.since(),
            master,
            self.config.check.timeout,
            now,
        );
    }
}

/// While the fleet guard keeps the node in, the groups out on a condition the fleet may share
/// are in too (an `agent-send` naming one of them gets the node's answer).
fn hold_groups_in(groups: &mut [GroupStatus]) {
    for g in groups.iter_mut().filter(|g| {
        !g.in_rotation
            && matches!(
                g.verdict,
                Verdict::Disconnected | Verdict::StaleMaster | Verdict::Unknown
            )
    }) {
        g.in_rotation = true;
        g.reason = format!("{}; kept in rotation by the fleet guard", g.reason);
    }
}

/// A group's configured sentinels (validated: each parses).
pub fn parse_sentinels(g: &crate::config::GroupConfig) -> Vec<ServerAddr> {
    g.sentinels
        .iter()
        .map(|s| s.parse().expect("validated sentinel address"))
        .collect()
}

fn sentinel_auth(g: &crate::config::GroupConfig) -> Auth {
    Auth {
        username: g.sentinel_username.clone(),
        password: g.sentinel_password.clone(),
    }
}

/// [`discover_remembering`] off the async runtime: even the steady state's few system calls
/// read the selector's files (a pid file on a filesystem that hangs, a FIFO), which must never
/// stall the runtime that answers the probes.
async fn discover_blocking(
    selector: NodeSelector,
    ports: BTreeSet<u16>,
    memory: Arc<std::sync::Mutex<FdMemory>>,
    listing: Listing,
) -> Result<NodeSockets, DiscoverError> {
    tokio::task::spawn_blocking(move || {
        // Only the check loop discovers, one at a time; a poisoned lock only means a panic in
        // an earlier discovery, and the memory is still consistent or forgotten below.
        let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
        let result = discover_remembering(&selector, &ports, &mut memory, listing);
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

/// Runs checks until `shutdown`, publishing each snapshot.
pub async fn run(
    mut checker: Checker,
    tx: watch::Sender<Arc<Snapshot>>,
    (metrics, history): (Arc<Metrics>, Arc<crate::snapshot::History>),
    trigger: Trigger,
    mut reloads: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let mut last: Option<(Verdict, bool)> = None;
    loop {
        let failovers = trigger.take_failovers();
        if !failovers.is_empty() {
            checker.failover_repair(&failovers).await;
        }
        let conversions = trigger.take_conversions();
        if !conversions.is_empty() {
            checker.on_conversions(&conversions).await;
        }
        let snapshot = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = checker.check() => s,
        };
        metrics.observe_check(&snapshot);
        let now = (snapshot.verdict, snapshot.in_rotation);
        if last != Some(now) {
            metrics.verdict_changed();
            history.record(&snapshot, std::time::SystemTime::now());
            log_change(&snapshot);
            crate::systemd::status(&snapshot);
            last = Some(now);
        } else {
            tracing::debug!(verdict = %snapshot.verdict, duration_ms = snapshot.check_duration_ms, "check complete");
        }
        crate::systemd::watchdog();
        let _ = tx.send(Arc::new(snapshot));
        let check = &checker.config.check;
        let wait = match (checker.pending(), trigger.bursting()) {
            (true, true) => EVENT_CONFIRM,
            (true, false) => check.fast_interval,
            (false, true) if checker.unsettled() => SETTLE_WATCH,
            (false, false) if checker.unsettled() => check.fast_interval,
            (false, _) => check.interval,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = trigger.notified() => {}
            // A reload applies to the next check, which comes at once (a shorter interval is
            // not waited out at the old one); one sent during a check is seen here after it.
            // A closed channel means no more reloads: the branch is then off.
            Ok(()) = reloads.changed() => {
                checker.reconfigure(reloads.borrow_and_update().clone());
            }
        }
    }
}

/// One log line per change of verdict or rotation: info while in rotation, warn when out.
fn log_change(snapshot: &Snapshot) {
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
}
