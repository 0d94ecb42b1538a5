//! rolecall: tells load balancers and orchestrators whether a node's live Redis traffic goes to
//! Sentinel's one true master, and whether it can write there.
//!
//! # Layout
//!
//! Data flows one way: from the configuration and the world outside (the sentinels, the node's
//! sockets, the servers) through one pure decision into one published snapshot, which every
//! output only reads.
//!
//! ```text
//!            events ── "check now" (Sentinel pub/sub) ──┐
//!                                                       ▼
//! config ──► check (the loop: all Redis I/O) ──┬── sentinel  Sentinel's view, the master by majority
//!                                              ├── sockets   the node's established connections
//!                                              ├── probe     ROLE and the write probe
//!                                              ▼
//!                                       verdict (pure) ──► repair (opt-in: kill, pause, command)
//!                                              ▼
//!                          snapshot (one writer, watch) ══► agent ──► haproxy (push)
//!                                                       ══► http (with maintenance)
//!                                                       ══► metrics, systemd
//! ```
//!
//! The modules, in layers, in the order of their imports: each module imports only from the
//! modules listed before it.
//!
//! 1. Leaves. `secret`: passwords that never print. `tls`: the TLS settings and their files,
//!    read again when they change. `runclock`: the policy clock, which
//!    leaves out the time rolecall itself was frozen. `listen`: the bounded accept of the
//!    servers. `logs`: the log line's format (plain, the journal's, JSON) and a level that
//!    changes at run time. [`sockets`]: the node's established TCP connections (socket inodes from
//!    /proc/PID/fd, matched against a NETLINK_SOCK_DIAG dump; the /proc/net/tcp tables as
//!    fallback).
//! 2. `conn`: the connection layer every part that talks to Redis shares: addresses and their
//!    resolution (once per check), auth, the pool, one command under a timeout, error classes.
//! 3. Inputs. `sentinel`: every sentinel asked concurrently, the real sentinels counted by id
//!    behind the configured addresses, the master decided by their majority or by an elected
//!    failover leader. `probe`: `ROLE`, the write probe, `CLIENT LIST`.
//! 4. `verdict`: the pure decision and its rise/fall/grace/hold policy.
//! 5. [`config`]: the TOML file, raw and validated; every section's types and defaults, and the
//!    words HAProxy's agent check understands.
//! 6. [`snapshot`]: the one published state, plain data, and the history of its verdict
//!    changes. `metrics` and `systemd` read it;
//!    `metrics` also counts what later modules hand it as plain values (Sentinel events, HAProxy
//!    pushes), and serves OpenMetrics or the Prometheus text format as the scrape asks.
//! 7. `events`: Sentinel event subscriptions, and the trigger that asks for a check at once.
//!    `repair`: the opt-in repairs: kill the node's stale connections, pause writes on a
//!    master being failed over, run a command under a fleet lock. `fleet`: the fleet guard,
//!    which keeps a floor of the fleet in rotation on a condition every node may share.
//! 8. `check`: the check loop, the only owner of Redis I/O and the only writer of the
//!    snapshot; it calls the repairs with the facts of each check.
//! 9. Outputs. `maintenance`: the operator's switch (a flag file, or `POST` and `DELETE` on
//!    `/maintenance`). `agent`: HAProxy's agent check, and what rolecall holds in HAProxy.
//!    `haproxy`: the optional push of each change to HAProxy's runtime API. [`console`]: what
//!    a person reads (the page at `/`, and the `rolecall status` and `rolecall maint`
//!    commands, made of the `/status` document). `http`: `/`, `/livez`, `/readyz`, `/status`,
//!    `/metrics`, `/maintenance`.
//!
//! [`run`] wires them together with bound listeners and one cancellation token. `fuzzing`
//! (hidden) hands outside input to the parsers for the fuzz targets in `fuzz/` and the
//! property tests; it imports from every layer and nothing imports it.

#![forbid(unsafe_code)]

pub(crate) mod agent;
pub(crate) mod check;
pub mod config;
pub(crate) mod conn;
pub mod console;
pub(crate) mod events;
pub(crate) mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod haproxy;
pub(crate) mod http;
pub(crate) mod listen;
pub mod logs;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod probe;
pub(crate) mod repair;
pub(crate) mod runclock;
pub(crate) mod secret;
pub(crate) mod sentinel;
pub mod snapshot;
pub mod sockets;
pub(crate) mod systemd;
pub(crate) mod tls;
pub(crate) mod verdict;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::check::Checker;
use crate::config::Config;
use crate::events::Trigger;
use crate::metrics::Metrics;

/// Listeners bound before [`run`] (so that bad addresses fail before anything starts).
pub struct Listeners {
    pub agent: Option<TcpListener>,
    pub http: Option<TcpListener>,
}

/// How long the servers get to finish open connections after `shutdown`.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(6);

/// Runs rolecall until `shutdown` is cancelled. A configuration sent on `reloads` is one
/// `config::reload` prepared: the check loop takes it at its next check.
pub async fn run(
    config: Config,
    listeners: Listeners,
    reloads: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let fds = listen::raise_fd_limit();
    let per_server = listen::cap(usize::MAX);
    tracing::debug!(limit = fds, per_server, "file descriptors");
    let config = Arc::new(config);
    let mut checker = Checker::new(config.clone());
    // The operator's switch, and what rolecall itself holds in HAProxy (shared by the agent
    // and the push, persisted in `[agent] state_file`). The fleet guard counts a node in
    // maintenance out.
    let maintenance = maintenance::Maintenance::new(config.maintenance.clone());
    let on = maintenance.clone();
    checker.watch_maintenance(move || on.state().on);
    let (tx, rx) = watch::channel(Arc::new(checker.starting_snapshot()));
    let metrics = Arc::new(Metrics::new());
    // The last verdict changes, kept by the check loop as it publishes, read by `/status`.
    let history = Arc::new(snapshot::History::default());
    let trigger = Trigger::default();
    let mut tasks = tokio::task::JoinSet::new();
    if config.check.sentinel_events {
        tasks.spawn(follow_events(
            checker.event_sources(),
            config.check.timeout,
            trigger.clone(),
            metrics.clone(),
            reloads.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(runclock::run(shutdown.clone()));
    tasks.spawn(check::run(
        checker,
        tx,
        (metrics.clone(), history.clone()),
        trigger,
        reloads.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(maintenance::watch_file(
        maintenance.clone(),
        reloads.clone(),
        shutdown.clone(),
    ));
    let outputs = Outputs {
        snapshots: rx,
        metrics,
        history,
        maintenance,
    };
    serve_outputs(&mut tasks, &config, listeners, outputs, &shutdown);
    systemd::ready();
    shutdown.cancelled().await;
    systemd::stopping();
    drain(tasks).await;
}

/// What the check loop publishes, for the outputs to serve.
struct Outputs {
    snapshots: watch::Receiver<Arc<snapshot::Snapshot>>,
    metrics: Arc<Metrics>,
    history: Arc<snapshot::History>,
    maintenance: Arc<maintenance::Maintenance>,
}

/// Spawns the outputs: the agent's memory of what it holds in HAProxy, the push to HAProxy's
/// runtime API, the agent and the HTTP server, as configured.
fn serve_outputs(
    tasks: &mut tokio::task::JoinSet<()>,
    config: &Config,
    listeners: Listeners,
    o: Outputs,
    shutdown: &CancellationToken,
) {
    let memory = Arc::new(agent::Memory::new(
        config.agent.as_ref().and_then(|a| a.state_file.clone()),
        runclock::now(),
    ));
    tasks.spawn(agent::persist(memory.clone(), shutdown.clone()));
    if let (Some(push), Some(cfg)) = (config.haproxy.clone(), config.agent.clone()) {
        tasks.spawn(haproxy::run(
            push,
            cfg,
            o.snapshots.clone(),
            o.maintenance.clone(),
            memory.clone(),
            o.metrics.clone(),
            shutdown.clone(),
        ));
    }
    if let (Some(l), Some(cfg)) = (listeners.agent, config.agent.clone()) {
        tasks.spawn(agent::serve(
            l,
            o.snapshots.clone(),
            cfg,
            memory,
            o.maintenance.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(l) = listeners.http {
        tasks.spawn(http::serve(
            l,
            o.snapshots.clone(),
            (o.metrics, o.history),
            o.maintenance,
            shutdown.clone(),
        ));
    }
}

/// Waits, at most [`SHUTDOWN_DRAIN`], for the tasks to finish after `shutdown`.
async fn drain(mut tasks: tokio::task::JoinSet<()>) {
    if tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(timeout = ?SHUTDOWN_DRAIN, "shutdown drain ran out; stopping anyway");
    }
}

/// One event subscription per configured sentinel of every group, each feeding the trigger and
/// counting its events in the metrics, until `shutdown`. A reload that changes a group's
/// sentinels ends every subscription and starts those of the sentinels now configured (the
/// event and vote logs stay).
async fn follow_events(
    mut groups: Vec<check::EventSource>,
    timeout: Duration,
    trigger: Trigger,
    metrics: Arc<Metrics>,
    mut reloads: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    loop {
        let round = shutdown.child_token();
        let mut tasks = tokio::task::JoinSet::new();
        for group in &groups {
            for sentinel in &group.sentinels {
                let source = events::Source {
                    group: group.name.clone(),
                    metrics: metrics.clone(),
                    sentinel: sentinel.clone(),
                    auth: group.auth.clone(),
                    tls: group.tls.clone(),
                    master_name: group.master_name.clone(),
                    timeout,
                    trigger: trigger.clone(),
                    log: group.log.clone(),
                    votes: group.votes.clone(),
                };
                tasks.spawn(events::follow(source, round.clone()));
            }
        }
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            () = sentinels_changed(&mut groups, &mut reloads) => false,
        };
        round.cancel();
        while tasks.join_next().await.is_some() {}
        if stop {
            return;
        }
    }
}

/// Returns when a reload changes the sentinels of one of `groups` (updated to the new ones);
/// never, once there can be no more reloads.
async fn sentinels_changed(
    groups: &mut [check::EventSource],
    reloads: &mut watch::Receiver<Arc<Config>>,
) {
    while reloads.changed().await.is_ok() {
        let config = reloads.borrow_and_update().clone();
        let mut changed = false;
        for (group, new) in groups.iter_mut().zip(&config.groups) {
            let sentinels = check::parse_sentinels(new);
            if group.sentinels != sentinels {
                group.sentinels = sentinels;
                changed = true;
            }
        }
        if changed {
            return;
        }
    }
    std::future::pending().await
}

/// Runs one complete check (for `rolecall check`) and returns its snapshot.
pub async fn check_once(mut config: Config) -> snapshot::Snapshot {
    // One look, not a member of the fleet: it writes nothing to the fleet's registry.
    config.fleet.guard = false;
    let mut checker = Checker::new(Arc::new(config));
    checker.check().await
}
