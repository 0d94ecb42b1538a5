use super::*;
use crate::conn::{ErrorClass, ServerError};
use crate::sentinel::testutil::{M, N, a};
use crate::sentinel::{Peer, SentinelReport, decide};

const SERVICE: &str = "10.96.0.20:26379";
const P: [&str; 3] = [
    "redis-node-0.redis-headless:26379",
    "redis-node-1.redis-headless:26379",
    "redis-node-2.redis-headless:26379",
];
const ID: [&str; 3] = ["aaaa", "bbbb", "cccc"];

fn target(addr: &str, found: Found) -> Target {
    Target {
        addr: a(addr),
        found,
        via: None,
    }
}

/// Sentinel `i` of the three, answering at `addr`, naming `master` and listing the other two.
fn sentinel(i: usize, addr: &str, found: Found, master: &str) -> (Target, SentinelAnswer) {
    let peers = (0..3)
        .filter(|&j| j != i)
        .map(|j| Peer {
            id: ID[j].to_string(),
            addr: a(P[j]),
        })
        .collect();
    let answer = SentinelAnswer {
        addr: a(addr),
        latency: Some(Duration::from_millis(1)),
        result: Ok(SentinelReport {
            master: Some(a(master)),
            id: Some(ID[i].to_string()),
            peers,
            ..SentinelReport::default()
        }),
    };
    (target(addr, found), answer)
}

fn silent(addr: &str, found: Found) -> (Target, SentinelAnswer) {
    let answer = SentinelAnswer {
        addr: a(addr),
        latency: None,
        result: Err(ServerError::new(ErrorClass::Connect, "connection refused")),
    };
    (target(addr, found), answer)
}

fn asked(round: &[(Target, SentinelAnswer)]) -> Vec<Asked> {
    round
        .iter()
        .map(|(t, answer)| Asked {
            target: t.clone(),
            answer: answer.clone(),
            id: None,
            counted: false,
        })
        .collect()
}

/// Learns `round` and counts it.
fn check(members: &mut Members, round: &[(Target, SentinelAnswer)], at: Instant) -> Count {
    members.learn(round, at);
    members.count(&mut asked(round))
}

#[test]
fn a_load_balanced_service_is_not_one_vote_and_each_sentinel_behind_it_votes_once() {
    let mut members = Members::default();
    let t0 = Instant::now();
    // The first check knows only the Service, which reaches sentinel 0: it lists the others.
    let first = [sentinel(0, SERVICE, Found::Configured, M)];
    let count = check(&mut members, &first, t0);
    assert_eq!(count.sentinels, 3, "the two it lists count, unanswered");
    let view = decide("mymaster", count.sentinels, &count.answers, &[]);
    assert_eq!(view.master, None, "one of three is no majority: {view:?}");
    // So the others are asked at their announced addresses, in the same check.
    let configured = [(a(SERVICE), Ok(vec![a(SERVICE).ip().unwrap()]))];
    let targets = members.targets(&configured);
    let announced: Vec<&str> = targets
        .iter()
        .filter(|t| t.found == Found::Announced)
        .map(|t| t.addr.host.as_str())
        .collect();
    assert_eq!(announced.len(), 2, "{targets:?}");
    assert_eq!(
        members.unasked(&[target(SERVICE, Found::Configured)]).len(),
        2
    );
    // Next check: the Service now reaches sentinel 1, and all three are asked directly.
    let second = [
        sentinel(1, SERVICE, Found::Configured, M),
        sentinel(0, P[0], Found::Announced, M),
        sentinel(1, P[1], Found::Announced, M),
        sentinel(2, P[2], Found::Announced, M),
    ];
    let mut marked = asked(&second);
    members.learn(&second, t0);
    let count = members.count(&mut marked);
    assert_eq!(count.sentinels, 3);
    assert_eq!(count.answers.len(), 3, "sentinel 1 votes once");
    let counted: Vec<bool> = marked.iter().map(|m| m.counted).collect();
    assert_eq!(counted.iter().filter(|c| **c).count(), 3);
    assert_eq!(marked[0].id.as_deref(), Some(ID[1]));
    let view = decide("mymaster", count.sentinels, &count.answers, &[]);
    assert_eq!((view.master, view.votes), (Some(a(M)), 3));
    // The Service answered as two sentinels: when it fails it is not a sentinel of its own.
    let third = [
        silent(SERVICE, Found::Configured),
        sentinel(0, P[0], Found::Announced, M),
        sentinel(1, P[1], Found::Announced, M),
        sentinel(2, P[2], Found::Announced, M),
    ];
    assert_eq!(check(&mut members, &third, t0).sentinels, 3);
}

#[test]
fn one_stale_sentinel_cannot_decide_however_it_is_reached() {
    let mut members = Members::default();
    let t0 = Instant::now();
    let healthy = [
        sentinel(0, P[0], Found::Announced, M),
        sentinel(1, P[1], Found::Announced, M),
        sentinel(2, P[2], Found::Announced, M),
    ];
    check(&mut members, &healthy, t0);
    // Only sentinel 2 answers, still naming the old master; it lists no one any more.
    let mut stale = sentinel(2, SERVICE, Found::Configured, N);
    if let Ok(r) = &mut stale.1.result {
        r.peers.clear();
    }
    let round = [
        stale,
        silent(P[0], Found::Announced),
        silent(P[1], Found::Announced),
    ];
    let count = check(&mut members, &round, t0 + Duration::from_secs(5));
    assert_eq!(count.sentinels, 3, "the ids it forgot are remembered");
    let view = decide("mymaster", count.sentinels, &count.answers, &[]);
    assert_eq!(view.master, None, "{view:?}");
    // Past the memory they are forgotten: then only what answers counts.
    let later = t0 + MEMORY + Duration::from_secs(10);
    let mut alone = sentinel(2, SERVICE, Found::Configured, N);
    if let Ok(r) = &mut alone.1.result {
        r.peers.clear();
    }
    let count = check(&mut members, &[alone], later);
    assert_eq!(count.sentinels, 1);
}

#[test]
fn a_configured_name_is_each_address_it_resolves_to_and_an_unknown_address_counts_as_one() {
    let members = Members::default();
    let ips = ["127.0.2.1", "127.0.2.2", "127.0.2.3"];
    let headless = a("redis-headless:26379");
    let configured = [
        (
            headless.clone(),
            Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect()),
        ),
        (
            a("gone:26379"),
            Err(ServerError::new(ErrorClass::Resolve, "gone")),
        ),
        (a("127.0.0.1:26379"), Ok(vec!["127.0.0.1".parse().unwrap()])),
    ];
    let targets = members.targets(&configured);
    let found: Vec<(String, Found)> = targets
        .iter()
        .map(|t| (t.addr.to_string(), t.found))
        .collect();
    assert_eq!(
        found,
        [
            ("127.0.2.1:26379".to_string(), Found::Resolved),
            ("127.0.2.2:26379".to_string(), Found::Resolved),
            ("127.0.2.3:26379".to_string(), Found::Resolved),
            ("gone:26379".to_string(), Found::Configured),
            ("127.0.0.1:26379".to_string(), Found::Configured),
        ]
    );
    assert!(
        targets[..3]
            .iter()
            .all(|t| t.via.as_ref() == Some(&headless))
    );
    // Addresses that never said who they are: each one sentinel.
    let round = [
        silent("gone:26379", Found::Configured),
        silent("127.0.0.1:26379", Found::Configured),
    ];
    let mut m = Members::default();
    assert_eq!(check(&mut m, &round, Instant::now()).sentinels, 2);
}

#[test]
fn a_sentinels_own_name_resolving_elsewhere_is_still_that_sentinel() {
    let mut members = Members::default();
    let t0 = Instant::now();
    let healthy = [
        sentinel(0, P[0], Found::Announced, M),
        sentinel(1, P[1], Found::Announced, M),
        sentinel(2, P[2], Found::Announced, M),
    ];
    check(&mut members, &healthy, t0);
    // Sentinel 0 configured by its pod name, which now points where nothing answers.
    let moved = Target {
        addr: a("127.0.2.9:26379"),
        found: Found::Resolved,
        via: Some(a(P[0])),
    };
    let (_, refused) = silent("127.0.2.9:26379", Found::Resolved);
    let round = [
        (moved, refused),
        sentinel(1, P[1], Found::Announced, M),
        sentinel(2, P[2], Found::Announced, M),
    ];
    let count = check(&mut members, &round, t0);
    assert_eq!(count.sentinels, 3, "not a fourth sentinel");
    let view = decide("mymaster", count.sentinels, &count.answers, &[]);
    assert_eq!((view.master, view.votes), (Some(a(M)), 2));
}

#[test]
fn a_sentinel_that_stops_answering_is_still_the_one_that_answered_there() {
    let mut members = Members::default();
    let t0 = Instant::now();
    let configured = ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"];
    let healthy: Vec<_> = (0..3)
        .map(|i| sentinel(i, configured[i], Found::Configured, M))
        .collect();
    assert_eq!(check(&mut members, &healthy, t0).sentinels, 3);
    let round = [
        healthy[0].clone(),
        healthy[1].clone(),
        silent(configured[2], Found::Configured),
    ];
    let mut marked = asked(&round);
    members.learn(&round, t0);
    let count = members.count(&mut marked);
    assert_eq!(
        count.sentinels, 3,
        "not 4: the silent address is sentinel 2"
    );
    assert_eq!(marked[2].id.as_deref(), Some(ID[2]));
    let view = decide("mymaster", count.sentinels, &count.answers, &[]);
    assert_eq!((view.master, view.votes), (Some(a(M)), 2));
}

#[test]
fn what_one_sentinel_lists_is_bounded() {
    let mut members = Members::default();
    let (t, mut answer) = sentinel(0, SERVICE, Found::Configured, M);
    if let Ok(r) = &mut answer.result {
        r.peers = (0..200)
            .map(|i| Peer {
                id: format!("{i:040x}"),
                addr: a(&format!("10.0.{}.{}:26379", i / 250, i % 250 + 1)),
            })
            .collect();
    }
    members.learn(&[(t, answer)], Instant::now());
    assert!(members.ids.len() <= 2 * MAX_SENTINELS);
    let targets = members.targets(&[]);
    assert!(targets.len() <= MAX_SENTINELS, "{}", targets.len());
}
