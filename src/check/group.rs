//! One group's part of a check: route the node's connections to the group's servers, gather
//! the servers' facts (`ROLE`, the write probe on Sentinel's master, and with `replica_reads`
//! the last commands of the clients of the replicas the node is on), remember their roles,
//! observe, repair, and build the group's status once the policy has decided.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::config::{GroupConfig, RepairConfig};
use crate::conn::{ErrorClass, Pool, ServerAddr, ServerError, Software};
use crate::events::{EventLog, VoteLog};
use crate::probe::{LastCommands, Role, ServerFacts, last_commands, server_facts};
use crate::repair::fence::Established;
use crate::repair::{GroupRepair, note};
use crate::sentinel::{Asked, Members, Reports, SentinelView};
use crate::snapshot::{
    ConnectionStatus, EventStatus, GroupStatus, KillReport, ProbeStatus, SentinelStatus,
    ServerStatus, UnplacedStatus,
};
use crate::sockets::NodeSockets;
use crate::verdict::{
    Decision, GroupFacts, Observation, ReplicaReads, RoutedConnection, Tracker, Unplaced, Verdict,
    observe_group_reading,
};

use super::{ms, route};

/// One Sentinel-managed master and what rolecall keeps about it across checks.
pub(super) struct Group {
    pub config: GroupConfig,
    pub sentinels: Vec<ServerAddr>,
    pub sentinel_pool: Pool,
    pub server_pool: Pool,
    pub tracker: Tracker,
    pub repair: GroupRepair,
    pub events: EventLog,
    /// Leader votes heard on this group's sentinels.
    pub votes: VoteLog,
    /// Whether the node was ever seen connected to this topology.
    pub seen_on_topology: bool,
    /// Servers whose last answer to `ROLE` was replica.
    pub last_replicas: BTreeSet<ServerAddr>,
    /// Sentinel's master as of the last check, if it said `master` to `ROLE`.
    pub verified_master: Option<ServerAddr>,
    /// Node connections placed by `CLIENT LIST` or `run_id`, for their lifetime.
    pub placements: route::Memo,
    /// The group's real sentinels, as their answers made them known.
    pub members: Members,
    /// Each sentinel's last full answer (most checks ask only the master's address).
    pub reports: Reports,
    /// When this group's sentinels were last asked.
    pub asked_at: Option<Instant>,
    /// What each server and sentinel runs, as it said on rolecall's last new connection to it.
    pub software: BTreeMap<ServerAddr, Software>,
}

/// The write probe a check makes on Sentinel's master: key and time to live.
pub(super) type Probe = Option<(String, Duration)>;

/// What one group's check found: the observation, and what the group's status shows.
pub(super) struct GroupCheck {
    pub obs: Observation,
    asked: Vec<Asked>,
    view: SentinelView,
    placed: Vec<route::Placed>,
    unplaced: Vec<Unplaced>,
    facts: BTreeMap<ServerAddr, ServerFacts>,
    probe: Option<Result<(), ServerError>>,
    repair: Option<KillReport>,
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

impl Group {
    /// Checks this group against Sentinel's `view` (from the sentinels `asked`) and the node's
    /// sockets.
    pub async fn check(
        &mut self,
        asked: Vec<Asked>,
        view: SentinelView,
        sockets: &NodeSockets,
        probe: Probe,
        timeout: Duration,
        repair: &RepairConfig,
    ) -> GroupCheck {
        self.server_pool.refresh(view.servers()).await;
        let routes = route::route(
            &mut self.server_pool,
            &view,
            sockets,
            &mut self.placements,
            timeout,
        )
        .await;
        let routed = routes.routed();
        let facts = self.gather_facts(&view, &routed, probe, timeout).await;
        self.server_pool.retain(|a| routes.known.contains(a));
        let probe = view
            .master
            .as_ref()
            .and_then(|m| facts.get(m))
            .and_then(|f| f.probe.clone());
        self.seen_on_topology |= !routed.is_empty();
        self.remember_roles(&facts, &routes.known);
        self.remember_software(&facts, &asked, &routes.known);
        let last = self.replica_clients(&view, &routed, &facts, timeout).await;
        let mut obs = self.observe(
            &view,
            (&routed, &routes.unplaced),
            &facts,
            probe.as_ref(),
            &last,
        );
        self.verified_master = view
            .master
            .clone()
            .filter(|m| matches!(facts.get(m).map(|f| &f.role), Some(Ok(Role::Master))));
        let kill = self
            .repairs(
                &mut obs,
                &view,
                &routed,
                &facts,
                probe.as_ref(),
                repair,
                timeout,
            )
            .await;
        GroupCheck {
            obs,
            asked,
            view,
            placed: routes.placed,
            unplaced: routes.unplaced,
            facts,
            probe,
            repair: kill,
        }
    }

    /// The repairs after a check: the kill (whose rounds may prove the node pinned, which
    /// `obs` then says) and the fence. Returns what the kill did.
    #[allow(clippy::too_many_arguments)]
    async fn repairs(
        &mut self,
        obs: &mut Observation,
        view: &SentinelView,
        routed: &[RoutedConnection],
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        probe: Option<&Result<(), ServerError>>,
        repair: &RepairConfig,
        timeout: Duration,
    ) -> Option<KillReport> {
        let targets = self.kill_targets(obs, routed, facts);
        let kill = self
            .repair
            .kill_stale(
                repair,
                self.verified_master.as_ref(),
                view.elected.is_some(),
                &targets,
                &self.server_pool,
                timeout,
            )
            .await;
        if let Some(n) = kill.as_ref().and_then(|r| note(r, repair.kill_attempts)) {
            obs.reason = format!("{}; {n}", obs.reason);
        }
        if repair.fence_old_master {
            self.fence(view, facts, probe, repair).await;
        }
        // Killed `kill_attempts` times and back on the old master each time: the node does not
        // ask Sentinel, and the grace that waits for it to follow does not apply.
        if obs.verdict == Verdict::StaleMaster
            && kill.as_ref().is_some_and(|r| !r.given_up.is_empty())
        {
            obs.pinned = true;
            obs.reason = format!(
                "{}; out of rotation now, without waiting out the grace",
                obs.reason
            );
        }
        kill
    }

    /// The fence on old masters that still claim master, after this check's facts.
    async fn fence(
        &mut self,
        view: &SentinelView,
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        probe: Option<&Result<(), ServerError>>,
        repair: &RepairConfig,
    ) {
        let roles: BTreeMap<ServerAddr, Role> = facts
            .iter()
            .filter_map(|(a, f)| Some((a.clone(), f.role.as_ref().ok()?.clone())))
            .collect();
        let established = Established {
            master: view.master.as_ref(),
            verified: self.verified_master.is_some(),
            probe_ok: matches!(probe, Some(Ok(()))),
        };
        self.repair
            .fence
            .after_check(established, &roles, &self.server_pool, repair.fence_lease)
            .await;
    }

    /// `ROLE` of every server the node talks to and of Sentinel's master; the write probe on
    /// the master (unless rolecall itself holds writes there). Keeps the connections that still
    /// work, forgets the others.
    async fn gather_facts(
        &mut self,
        view: &SentinelView,
        routed: &[RoutedConnection],
        probe: Probe,
        timeout: Duration,
    ) -> BTreeMap<ServerAddr, ServerFacts> {
        let mut ask: BTreeSet<ServerAddr> = routed.iter().map(|r| r.server.clone()).collect();
        // Old masters the fence watches, until they answer as replicas.
        ask.extend(self.repair.fence.candidates().cloned());
        if let Some(m) = &view.master {
            ask.insert(m.clone());
        }
        let stamp = now_millis().to_string();
        let probe = probe.filter(|_| {
            !self
                .repair
                .holds_writes_on(view.master.as_ref(), Instant::now())
        });
        let fact_futures: Vec<_> = ask
            .iter()
            .map(|addr| {
                let conn = self.server_pool.connection(addr);
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
                        Err(_) => timed_out(addr, deadline, p.is_some()),
                    }
                }
            })
            .collect();
        let mut facts = BTreeMap::new();
        for (addr, f, conn) in join_all(fact_futures).await {
            match conn {
                Some(c) => self.server_pool.keep(&addr, c),
                None => self.server_pool.forget(&addr),
            }
            facts.insert(addr, f);
        }
        facts
    }

    /// What this check alone says about the group (the pure rules of `verdict`).
    fn observe(
        &self,
        view: &SentinelView,
        (routed, unplaced): (&[RoutedConnection], &[Unplaced]),
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        probe: Option<&Result<(), ServerError>>,
        last: &BTreeMap<ServerAddr, Result<LastCommands, ServerError>>,
    ) -> Observation {
        let role_of = |a: &ServerAddr| facts.get(a).map(|f| f.role.clone());
        let reads = self.config.replica_reads.then_some(ReplicaReads {
            last_commands: last,
        });
        observe_group_reading(
            &GroupFacts {
                view,
                connections: routed,
                role_of: &role_of,
                probe,
                seen_on_topology: self.seen_on_topology,
                last_replicas: &self.last_replicas,
                unplaced,
            },
            reads.as_ref(),
        )
    }

    /// The connections the kill repair may act on: all of them, except, with `replica_reads`,
    /// the node's intended reads: its connections on replicas while this check does not find
    /// it `stuck_on_replica` (a node that is gets all of them killed, so that it re-resolves).
    fn kill_targets(
        &self,
        obs: &Observation,
        routed: &[RoutedConnection],
        facts: &BTreeMap<ServerAddr, ServerFacts>,
    ) -> Vec<RoutedConnection> {
        let intended = |r: &RoutedConnection| {
            self.config.replica_reads
                && obs.verdict != Verdict::StuckOnReplica
                && matches!(
                    facts.get(&r.server).map(|f| &f.role),
                    Some(Ok(Role::Replica { .. }))
                )
        };
        routed.iter().filter(|r| !intended(r)).cloned().collect()
    }

    /// With `replica_reads`, `CLIENT LIST TYPE normal` on each server other than Sentinel's
    /// master that the node has a connection on and that answered `ROLE` as replica: one
    /// command per such replica per check, concurrently, through the connections `ROLE` used.
    /// Nothing is asked with the setting off.
    async fn replica_clients(
        &mut self,
        view: &SentinelView,
        routed: &[RoutedConnection],
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        timeout: Duration,
    ) -> BTreeMap<ServerAddr, Result<LastCommands, ServerError>> {
        if !self.config.replica_reads {
            return BTreeMap::new();
        }
        let replicas: BTreeSet<&ServerAddr> = routed
            .iter()
            .map(|r| &r.server)
            .filter(|s| view.master.as_ref() != Some(*s))
            .filter(|s| {
                matches!(
                    facts.get(*s).map(|f| &f.role),
                    Some(Ok(Role::Replica { .. }))
                )
            })
            .collect();
        let asks = replicas.into_iter().map(|addr| {
            let conn = self.server_pool.get(addr);
            let addr = addr.clone();
            async move {
                let last = match conn {
                    Some(mut c) => last_commands(&mut c, &addr, timeout).await,
                    None => Err(ServerError::new(
                        ErrorClass::Connect,
                        format!("server {addr}: no connection"),
                    )),
                };
                (addr, last)
            }
        });
        join_all(asks).await.into_iter().collect()
    }

    /// Remembers what each server and sentinel said it runs (asked on each new connection),
    /// for the servers still `known` and the sentinels still asked.
    fn remember_software(
        &mut self,
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        asked: &[Asked],
        known: &BTreeSet<ServerAddr>,
    ) {
        let said = facts
            .iter()
            .filter_map(|(a, f)| Some((a, f.software.as_ref()?)))
            .chain(asked.iter().filter_map(|a| {
                let r = a.answer.result.as_ref().ok()?;
                Some((&a.target.addr, r.software.as_ref()?))
            }));
        for (addr, sw) in said {
            self.software.insert(addr.clone(), sw.clone());
        }
        self.software
            .retain(|a, _| known.contains(a) || asked.iter().any(|x| &x.target.addr == a));
    }

    /// Remembers which servers last said replica (a replica that stops answering is still the
    /// replica it last said it was), for the servers still `known`.
    fn remember_roles(
        &mut self,
        facts: &BTreeMap<ServerAddr, ServerFacts>,
        known: &BTreeSet<ServerAddr>,
    ) {
        for (addr, f) in facts {
            match &f.role {
                Ok(Role::Replica { .. }) => {
                    self.last_replicas.insert(addr.clone());
                }
                Ok(_) => {
                    self.last_replicas.remove(addr);
                }
                Err(_) => {}
            }
        }
        self.last_replicas.retain(|a| known.contains(a));
    }

    /// The group's status for the snapshot, with the policy's `decision`; and the check's
    /// observation, for the node's verdict.
    pub fn status(&self, check: GroupCheck, decision: Decision) -> (Observation, GroupStatus) {
        let GroupCheck {
            obs,
            asked,
            view,
            placed,
            unplaced,
            facts,
            probe,
            repair,
        } = check;
        let majority = view.master.is_some() && view.votes > view.configured / 2;
        let mut dissent = view.dissent.clone();
        if let Some(p) = &view.problem {
            dissent.insert(0, p.clone());
        }
        let status = GroupStatus {
            name: self.config.name.clone(),
            master_name: self.config.master_name.clone(),
            verdict: decision.verdict,
            in_rotation: decision.in_rotation,
            reason: decision.reason,
            other_servers: view.others.clone(),
            master: view.master,
            votes: view.votes,
            elected: view.elected,
            configured_sentinels: self.sentinels.len(),
            sentinels_known: view.configured,
            sentinels_asked: asked.len(),
            majority,
            dissent,
            sentinels: asked
                .iter()
                .map(|a| sentinel_status(a, self.software.get(&a.target.addr)))
                .collect(),
            connections: connection_statuses(&placed, &facts),
            unplaced: unplaced.iter().map(unplaced_status).collect(),
            servers: server_statuses(&facts, &self.software),
            probe: probe.as_ref().map(|r| ProbeStatus {
                ok: r.is_ok(),
                error: r.as_ref().err().map(|e| e.to_string()),
                error_class: r.as_ref().err().map(|e| e.class),
            }),
            repair,
            fenced: self.repair.fence.fenced(Instant::now()),
            last_event: self.last_event(),
        };
        (obs, status)
    }

    /// Whether a Sentinel event about this group's master came after `since` (or ever, without
    /// `since`).
    pub fn event_since(&self, since: Option<Instant>) -> bool {
        let at = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|e| e.at);
        match (at, since) {
            (Some(at), Some(since)) => at > since,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The last Sentinel event about this group's master.
    fn last_event(&self) -> Option<EventStatus> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|e| EventStatus {
                age_ms: e.at.map(|t| t.elapsed().as_millis() as u64),
                sentinel: e.sentinel,
                channel: e.channel,
                payload: e.payload,
            })
    }
}

/// The facts of a server that did not answer within `deadline`.
fn timed_out(
    addr: ServerAddr,
    deadline: Duration,
    probed: bool,
) -> (
    ServerAddr,
    ServerFacts,
    Option<redis::aio::MultiplexedConnection>,
) {
    let e = ServerError::timeout("server", &addr, deadline);
    let facts = ServerFacts {
        software: None,
        role: Err(e.clone()),
        latency: None,
        probe: probed.then_some(Err(e)),
    };
    (addr, facts, None)
}

/// The node's connections as `/status` shows them, each with its server's role.
fn connection_statuses(
    placed: &[route::Placed],
    facts: &BTreeMap<ServerAddr, ServerFacts>,
) -> Vec<ConnectionStatus> {
    placed
        .iter()
        .map(|p| ConnectionStatus {
            local: p.routed.connection.local.to_string(),
            remote: p.routed.connection.remote.to_string(),
            server: p.routed.server.clone(),
            placed_by: p.by,
            role: facts
                .get(&p.routed.server)
                .and_then(|f| f.role.as_ref().ok())
                .map(|role| role.name().to_string()),
        })
        .collect()
}

fn unplaced_status(u: &Unplaced) -> UnplacedStatus {
    UnplacedStatus {
        local: u.connection.local.to_string(),
        remote: u.connection.remote.to_string(),
        why: u.why.clone(),
    }
}

/// The servers the check asked, as `/status` shows them.
fn server_statuses(
    facts: &BTreeMap<ServerAddr, ServerFacts>,
    software: &BTreeMap<ServerAddr, Software>,
) -> Vec<ServerStatus> {
    facts
        .iter()
        .map(|(addr, f)| ServerStatus {
            addr: addr.clone(),
            role: f.role.as_ref().ok().map(|r| r.name().to_string()),
            error: f.role.as_ref().err().map(|e| e.to_string()),
            latency_ms: f.latency.map(ms),
            software: software.get(addr).cloned(),
        })
        .collect()
}

fn sentinel_status(asked: &Asked, software: Option<&Software>) -> SentinelStatus {
    let a = &asked.answer;
    SentinelStatus {
        software: software.cloned(),
        addr: a.addr.clone(),
        id: asked.id.clone(),
        found: asked.target.found,
        via: asked.target.via.clone(),
        counted: asked.counted,
        master: a.result.as_ref().ok().and_then(|r| r.master.clone()),
        tilt: a.result.as_ref().is_ok_and(|r| r.tilt),
        error: a.result.as_ref().err().map(|e| e.to_string()),
        latency_ms: a.latency.map(ms),
    }
}
