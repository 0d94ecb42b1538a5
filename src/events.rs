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
use tokio_util::sync::CancellationToken;

use crate::check::Trigger;
use crate::probe::{Auth, connection_info};
use crate::sentinel::{ServerAddr, Vote, parse_vote};

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

const PING_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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
    pub sentinel: ServerAddr,
    pub auth: Auth,
    pub master_name: String,
    pub timeout: Duration,
    pub trigger: Trigger,
    pub log: EventLog,
    pub votes: VoteLog,
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

async fn subscribe_once(source: &Source, reported: &mut bool) -> Result<(), String> {
    let Source {
        sentinel,
        auth,
        master_name,
        timeout,
        trigger,
        log,
        votes,
    } = source;
    let timeout = *timeout;
    let info = connection_info(sentinel, auth).map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| {
            format!(
                "connect timed out after {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, pubsub.subscribe(CHANNELS))
        .await
        .map_err(|_| "SUBSCRIBE timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if *reported {
        tracing::info!(sentinel = %sentinel, "sentinel event subscription restored");
        *reported = false;
    }
    tracing::debug!(sentinel = %sentinel, "subscribed to sentinel events");
    // Events may have been missed while disconnected: check now.
    trigger.event();
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Err("connection closed".to_string()) };
                let channel = msg.get_channel_name().to_string();
                let payload: String = msg.get_payload().unwrap_or_default();
                // A vote names no master: it is kept, and binds to a failover only through the
                // epoch the leader later reports for this master (sentinel::decide).
                if channel == "+vote-for-leader" {
                    match parse_vote(&payload) {
                        Some((leader, epoch)) => {
                            tracing::info!(sentinel = %sentinel, leader = %leader, epoch, "sentinel voted for a failover leader");
                            votes.record(Vote { voter: sentinel.clone(), leader, epoch }, Instant::now());
                        }
                        None => tracing::debug!(sentinel = %sentinel, payload = %payload, "unreadable +vote-for-leader"),
                    }
                    continue;
                }
                if concerns(&channel, &payload, master_name) {
                    tracing::info!(sentinel = %sentinel, channel = %channel, payload = %payload, "sentinel event");
                    if let Some((starting, old)) = failover_phase(&channel, &payload) {
                        trigger.failover(master_name, old, starting);
                    }
                    *log.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastEvent {
                        sentinel: sentinel.to_string(),
                        channel,
                        payload,
                        at: Some(Instant::now()),
                    });
                    trigger.event();
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("PING failed: {e}")),
                    Err(_) => return Err("PING timed out".to_string()),
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
}
