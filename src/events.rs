//! Sentinel events: a subscription on every configured sentinel to the events that mark a
//! failover (`+switch-master` above all), so that rolecall checks at once instead of at its next
//! interval.
//!
//! Events shorten the path; they never decide anything. An event only asks the check loop for a
//! check now (and for quick confirmation checks after it); the verdict still comes from a
//! complete check in which the sentinel majority names the master. A `+switch-master` that the
//! majority does not confirm changes nothing.
//!
//! Each subscription reconnects after a disconnect with a bounded backoff, and sends a `PING`
//! every few seconds so that a silently dead sentinel is noticed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::conn::{Auth, Budget, ServerAddr, ServerError, dial_pubsub};
use crate::metrics::Metrics;
use crate::sentinel::{Vote, parse_vote};

/// The channels rolecall listens to (Redis docs, "Sentinel API", Pub/Sub messages).
pub const CHANNELS: &[&str] = &[
    "+switch-master",
    "+vote-for-leader",
    "+failover-state-send-slaveof-noone",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "+try-failover",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+failover-end",
    "+odown",
    "-odown",
    "+sdown",
    "-sdown",
    "+convert-to-slave",
    "+role-change",
    "+tilt",
    "-tilt",
];

/// A `PING` on an idle subscription this often finds a sentinel that keeps the connection but
/// stopped answering; a peer that vanished is found sooner by TCP keepalive (`conn`). Rare, so
/// that a check in steady state costs each sentinel one command.
const PING_EVERY: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// After a Sentinel event, the check loop runs quick confirmation checks for this long.
const BURST: Duration = Duration::from_secs(2);

/// A failover a sentinel announced: the master name, the old master, and whether the promotion
/// starts (`true`) or was aborted.
pub type Failover = (String, ServerAddr, bool);

/// Asks the check loop for a check now (a Sentinel event), and carries the failovers announced.
#[derive(Clone, Default)]
pub struct Trigger(Arc<TriggerInner>);

#[derive(Default)]
struct TriggerInner {
    notify: Notify,
    burst_until: Mutex<Option<Instant>>,
    failovers: Mutex<Vec<Failover>>,
    conversions: Mutex<Vec<(String, ServerAddr)>>,
}

impl Trigger {
    /// A Sentinel event: a check now, and quick confirmation checks for a short while.
    pub fn event(&self) {
        *self.0.burst_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + BURST);
        self.0.notify.notify_one();
    }

    /// A sentinel starts promoting a replica of `old` (`starting`), or aborted the failover.
    pub fn failover(&self, master_name: &str, old: ServerAddr, starting: bool) {
        self.0
            .failovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((master_name.to_string(), old, starting));
        self.event();
    }

    /// A sentinel converts `server`, an old master of `master_name`, to a replica.
    pub fn conversion(&self, master_name: &str, server: ServerAddr) {
        self.0
            .conversions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((master_name.to_string(), server));
        self.event();
    }

    /// The conversions announced since the last call: (master name, server).
    pub fn take_conversions(&self) -> Vec<(String, ServerAddr)> {
        std::mem::take(&mut *self.0.conversions.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The failovers announced since the last call.
    pub fn take_failovers(&self) -> Vec<Failover> {
        std::mem::take(&mut *self.0.failovers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether an event asked for quick confirmation checks that are still due.
    pub fn bursting(&self) -> bool {
        self.0
            .burst_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    /// Waits until a check is asked for.
    pub async fn notified(&self) {
        self.0.notify.notified().await;
    }
}

/// Whether an event's payload concerns master `name`.
///
/// Payloads: `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`; instance events
/// `<type> <instance-name> <ip> <port> @ <master-name> <master-ip> <master-port>`, or without the
/// `@ ...` part for the master itself (`master <name> <ip> <port>`); `+tilt` has no payload
/// naming a master and concerns every master of that sentinel.
pub fn concerns(channel: &str, payload: &str, name: &str) -> bool {
    let words: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        "+switch-master" => words.first() == Some(&name),
        "+tilt" | "-tilt" => true,
        _ => match words.iter().position(|w| *w == "@") {
            Some(at) => words.get(at + 1) == Some(&name),
            None => words.first() == Some(&"master") && words.get(1) == Some(&name),
        },
    }
}

/// The master named after `@` in an instance event (`... @ <name> <ip> <port>`).
pub fn master_of(payload: &str) -> Option<ServerAddr> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "@")?;
    let ip = words.get(at + 2)?;
    let port = words.get(at + 3)?.parse().ok()?;
    Some(ServerAddr::new((*ip).to_string(), port))
}

/// The old master of a failover event that concerns it: the promotion starts
/// (`+failover-state-send-slaveof-noone`, published by the leader right before it sends
/// `REPLICAOF NO ONE`) or the failover is aborted.
pub fn failover_phase(channel: &str, payload: &str) -> Option<(bool, ServerAddr)> {
    match channel {
        "+failover-state-send-slaveof-noone" => Some((true, master_of(payload)?)),
        c if c.starts_with("-failover-abort") => {
            // `master <name> <ip> <port>`
            let w: Vec<&str> = payload.split_whitespace().collect();
            let addr = ServerAddr::new((*w.get(2)?).to_string(), w.get(3)?.parse().ok()?);
            Some((false, addr))
        }
        _ => None,
    }
}

/// The server a sentinel converts to a replica:
/// `+convert-to-slave slave <ip>:<port> <ip> <port> @ <master-name> <ip> <port>`.
pub fn conversion(channel: &str, payload: &str) -> Option<ServerAddr> {
    if channel != "+convert-to-slave" {
        return None;
    }
    let w: Vec<&str> = payload.split_whitespace().collect();
    Some(ServerAddr::new(
        (*w.get(2)?).to_string(),
        w.get(3)?.parse().ok()?,
    ))
}

/// The last event seen, for `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastEvent {
    pub sentinel: String,
    pub channel: String,
    pub payload: String,
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// Shared record of the last event per group.
pub type EventLog = Arc<Mutex<Option<LastEvent>>>;

/// How long a leader vote is kept: a failover the vote elected a leader for ends (or is
/// aborted) within Sentinel's `failover-timeout`, 3 minutes by default.
pub const VOTE_TTL: Duration = Duration::from_secs(600);
/// Votes kept per sentinel (one per failover attempt; several masters may share sentinels).
const VOTES_PER_SENTINEL: usize = 8;

/// The leader votes heard on a group's sentinels (`+vote-for-leader`), newest last.
#[derive(Debug, Clone, Default)]
pub struct VoteLog(Arc<Mutex<Vec<(Vote, Instant)>>>);

impl VoteLog {
    pub fn record(&self, vote: Vote, at: Instant) {
        let mut votes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        votes.retain(|(v, t)| at.saturating_duration_since(*t) < VOTE_TTL && *v != vote);
        let from_voter = votes.iter().filter(|(v, _)| v.voter == vote.voter).count();
        if from_voter >= VOTES_PER_SENTINEL
            && let Some(oldest) = votes.iter().position(|(v, _)| v.voter == vote.voter)
        {
            votes.remove(oldest);
        }
        votes.push((vote, at));
    }

    /// The votes younger than [`VOTE_TTL`] at `now`.
    pub fn current(&self, now: Instant) -> Vec<Vote> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(*t) < VOTE_TTL)
            .map(|(v, _)| v.clone())
            .collect()
    }
}

/// What one subscription needs: the sentinel, how to reach it, which master's events matter,
/// and where they go.
pub struct Source {
    /// The group's configured name, for the metrics.
    pub group: String,
    pub sentinel: ServerAddr,
    pub auth: Auth,
    /// TLS to the sentinel, as the checks use it.
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    pub master_name: String,
    pub timeout: Duration,
    pub trigger: Trigger,
    pub log: EventLog,
    pub votes: VoteLog,
    pub metrics: Arc<Metrics>,
}

/// Subscribes to one sentinel until `shutdown`, asking for a check on every event about
/// the source's master and keeping every leader vote.
pub async fn follow(source: Source, shutdown: CancellationToken) {
    let sentinel = &source.sentinel;
    let mut backoff = BACKOFF_MIN;
    let mut reported = false;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = subscribe_once(&source, &mut reported) => r,
        };
        if let Err(e) = result {
            // Logged at warn once per outage; further failures at debug.
            if !reported {
                tracing::warn!(sentinel = %sentinel, error = %e, "sentinel event subscription lost; retrying");
                reported = true;
            } else {
                tracing::debug!(sentinel = %sentinel, error = %e, "sentinel event subscription failed");
            }
        }
        if started.elapsed() > BACKOFF_MAX * 2 {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What one message on a sentinel's pub/sub means for one master: pure, table-tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A leader vote (`+vote-for-leader`): it names no master, and binds to a failover only
    /// through the epoch the leader later reports for this master (`sentinel::decide`).
    Vote(Vote),
    /// A `+vote-for-leader` whose payload cannot be read.
    BadVote,
    /// An event about this master: a check now; the failover's phase when it starts or aborts a
    /// promotion.
    Event {
        failover: Option<(bool, ServerAddr)>,
    },
    /// An event about another master.
    Other,
}

/// Reads a message heard on `sentinel` as it concerns master `master_name`.
pub fn route(sentinel: &ServerAddr, channel: &str, payload: &str, master_name: &str) -> Message {
    if channel == "+vote-for-leader" {
        return match parse_vote(payload) {
            Some((leader, epoch)) => Message::Vote(Vote {
                voter: sentinel.clone(),
                leader,
                epoch,
            }),
            None => Message::BadVote,
        };
    }
    if concerns(channel, payload, master_name) {
        Message::Event {
            failover: failover_phase(channel, payload),
        }
    } else {
        Message::Other
    }
}

/// Acts on one message: keeps a vote, or records an event and asks for a check.
fn deliver(source: &Source, channel: String, payload: String) {
    let sentinel = &source.sentinel;
    match route(sentinel, &channel, &payload, &source.master_name) {
        Message::Vote(vote) => {
            source.metrics.sentinel_event(&source.group, &channel);
            tracing::info!(sentinel = %sentinel, leader = %vote.leader, epoch = vote.epoch, "sentinel voted for a failover leader");
            source.votes.record(vote, Instant::now());
        }
        Message::BadVote => {
            tracing::debug!(sentinel = %sentinel, payload = %payload, "unreadable +vote-for-leader")
        }
        Message::Event { failover } => {
            source.metrics.sentinel_event(&source.group, &channel);
            tracing::info!(sentinel = %sentinel, channel = %channel, payload = %payload, "sentinel event");
            if let Some((starting, old)) = failover {
                source.trigger.failover(&source.master_name, old, starting);
            }
            if let Some(server) = conversion(&channel, &payload) {
                source.trigger.conversion(&source.master_name, server);
            }
            *source.log.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastEvent {
                sentinel: sentinel.to_string(),
                channel,
                payload,
                at: Some(Instant::now()),
            });
            source.trigger.event();
        }
        Message::Other => {}
    }
}

/// Why a subscription ended (the message names its cause; none is carried as a source).
#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    #[error("{0}")]
    Address(ServerError),
    #[error("{0}")]
    Redis(redis::RedisError),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("PING failed: {0}")]
    Ping(redis::RedisError),
    #[error("connection closed")]
    Closed,
}

/// Connects to the source's sentinel and subscribes to [`CHANNELS`], each step under the
/// timeout; the connection's reads are bounded per message by the returned budget.
async fn subscribe(
    source: &Source,
) -> Result<(redis::aio::PubSub, std::sync::Arc<Budget>), SubscribeError> {
    let timeout = source.timeout;
    let (mut pubsub, budget) = dial_pubsub(
        &source.sentinel,
        &source.auth,
        source.tls.as_deref(),
        timeout,
    )
    .await
    .map_err(SubscribeError::Address)?;
    tokio::time::timeout(timeout, pubsub.subscribe(CHANNELS))
        .await
        .map_err(|_| SubscribeError::Timeout("SUBSCRIBE"))?
        .map_err(SubscribeError::Redis)?;
    Ok((pubsub, budget))
}

/// One subscription, until its connection fails.
async fn subscribe_once(source: &Source, reported: &mut bool) -> Result<(), SubscribeError> {
    let sentinel = &source.sentinel;
    let (pubsub, budget) = subscribe(source).await?;
    if *reported {
        tracing::info!(sentinel = %sentinel, "sentinel event subscription restored");
        *reported = false;
    }
    tracing::debug!(sentinel = %sentinel, "subscribed to sentinel events");
    // Events may have been missed while disconnected: check now.
    source.trigger.event();
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Err(SubscribeError::Closed) };
                // Each message may read the whole budget again.
                budget.reset();
                let payload: String = msg.get_payload().unwrap_or_default();
                deliver(source, msg.get_channel_name().to_string(), payload);
            }
            _ = ping.tick() => {
                match tokio::time::timeout(source.timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(SubscribeError::Ping(e)),
                    Err(_) => return Err(SubscribeError::Timeout("PING")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vote_log_keeps_recent_distinct_votes_per_sentinel() {
        let log = VoteLog::default();
        let t0 = Instant::now();
        let v = |voter: &str, epoch: u64| Vote {
            voter: voter.parse().unwrap(),
            leader: "abc".into(),
            epoch,
        };
        log.record(v("127.0.0.1:1", 1), t0);
        log.record(v("127.0.0.1:1", 1), t0);
        log.record(v("127.0.0.1:2", 1), t0);
        assert_eq!(
            log.current(t0),
            vec![v("127.0.0.1:1", 1), v("127.0.0.1:2", 1)]
        );
        for e in 2..20 {
            log.record(v("127.0.0.1:1", e), t0);
        }
        let now = log.current(t0);
        assert_eq!(
            now.iter()
                .filter(|x| x.voter == v("127.0.0.1:1", 0).voter)
                .count(),
            VOTES_PER_SENTINEL
        );
        assert!(now.contains(&v("127.0.0.1:1", 19)) && !now.contains(&v("127.0.0.1:1", 1)));
        assert!(log.current(t0 + VOTE_TTL).is_empty(), "votes expire");
    }

    #[test]
    fn a_conversion_names_the_server_converted() {
        assert_eq!(
            conversion(
                "+convert-to-slave",
                "slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 127.0.0.1 7002"
            ),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(
            conversion(
                "+convert-to-slave",
                "slave redis-0.redis-headless:6379 redis-0.redis-headless 6379 @ mymaster redis-1.redis-headless 6379"
            ),
            Some(ServerAddr::new("redis-0.redis-headless".to_string(), 6379))
        );
        assert_eq!(conversion("+sdown", "slave a:1 a 1 @ m b 2"), None);
        assert_eq!(conversion("+convert-to-slave", "slave a:1 a"), None);
    }

    #[test]
    fn failover_phases_name_the_old_master() {
        let a = |s: &str| s.parse::<ServerAddr>().unwrap();
        assert_eq!(
            failover_phase(
                "+failover-state-send-slaveof-noone",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"
            ),
            Some((true, a("127.0.0.1:6379")))
        );
        assert_eq!(
            failover_phase(
                "-failover-abort-no-good-slave",
                "master mymaster 127.0.0.1 6379"
            ),
            Some((false, a("127.0.0.1:6379")))
        );
        assert_eq!(failover_phase("+switch-master", "mymaster 1 2 3 4"), None);
        assert_eq!(
            failover_phase("+failover-state-send-slaveof-noone", "garbage"),
            None
        );
    }

    #[test]
    fn events_are_matched_to_their_master() {
        let cases = [
            (
                "+switch-master",
                "mymaster 127.0.0.1 6379 127.0.0.1 6380",
                "mymaster",
                true,
            ),
            (
                "+switch-master",
                "other 127.0.0.1 6379 127.0.0.1 6380",
                "mymaster",
                false,
            ),
            (
                "+odown",
                "master mymaster 127.0.0.1 6379 #quorum 2/2",
                "mymaster",
                true,
            ),
            (
                "+odown",
                "master mymasterX 127.0.0.1 6379 #quorum 2/2",
                "mymaster",
                false,
            ),
            (
                "+promoted-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
                "mymaster",
                true,
            ),
            (
                "+convert-to-slave",
                "slave 127.0.0.1:6379 127.0.0.1 6379 @ other 127.0.0.1 6380",
                "mymaster",
                false,
            ),
            (
                "+sdown",
                "sentinel abc 127.0.0.1 26379 @ mymaster 127.0.0.1 6379",
                "mymaster",
                true,
            ),
            ("+tilt", "#tilt mode entered", "mymaster", true),
            ("+try-failover", "", "mymaster", false),
            (
                "+failover-state-send-slaveof-noone",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
                "mymaster",
                true,
            ),
        ];
        for (channel, payload, name, want) in cases {
            assert_eq!(
                concerns(channel, payload, name),
                want,
                "{channel} {payload}"
            );
        }
    }

    #[test]
    fn messages_are_routed_to_what_they_mean_for_the_master() {
        let s1: ServerAddr = "127.0.0.1:26379".parse().unwrap();
        let old: ServerAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(
            route(&s1, "+vote-for-leader", "0123abcd 7", "mymaster"),
            Message::Vote(Vote {
                voter: s1.clone(),
                leader: "0123abcd".into(),
                epoch: 7
            })
        );
        assert_eq!(
            route(&s1, "+vote-for-leader", "not-hex 7", "mymaster"),
            Message::BadVote
        );
        assert_eq!(
            route(
                &s1,
                "+switch-master",
                "mymaster 127.0.0.1 6379 127.0.0.1 6380",
                "mymaster"
            ),
            Message::Event { failover: None }
        );
        assert_eq!(
            route(
                &s1,
                "+failover-state-send-slaveof-noone",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
                "mymaster"
            ),
            Message::Event {
                failover: Some((true, old.clone()))
            }
        );
        assert_eq!(
            route(
                &s1,
                "-failover-abort-no-good-slave",
                "master mymaster 127.0.0.1 6379",
                "mymaster"
            ),
            Message::Event {
                failover: Some((false, old))
            }
        );
        assert_eq!(
            route(
                &s1,
                "+switch-master",
                "other 127.0.0.1 6379 127.0.0.1 6380",
                "mymaster"
            ),
            Message::Other
        );
        assert_eq!(
            route(&s1, "+tilt", "", "mymaster"),
            Message::Event { failover: None }
        );
    }
}
