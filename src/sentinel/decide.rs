//! Deciding the master from the sentinels' answers: pure, table-tested. A majority of the
//! *configured* sentinels names it, or the failover leader a majority elected does (the module
//! docs of `sentinel`); every sentinel without a vote is named with the reason.

use std::collections::BTreeMap;

use super::{Elected, SentinelAnswer, SentinelView, Vote};
use crate::conn::ServerAddr;

/// The master named by an elected failover leader, if the votes heard make one (module docs).
fn elected_leader(
    configured: usize,
    answers: &[SentinelAnswer],
    votes: &[Vote],
) -> Option<(ServerAddr, Elected)> {
    let majority = configured / 2 + 1;
    let reports = || {
        answers
            .iter()
            .filter_map(|a| Some((&a.addr, a.result.as_ref().ok()?)))
    };
    for (addr, r) in reports() {
        let (Some(id), Some(epoch), Some(master), false) =
            (&r.id, r.config_epoch, &r.master, r.tilt)
        else {
            continue;
        };
        // Voters are the configured sentinels that answered or not; one vote each.
        let voters: std::collections::BTreeSet<&ServerAddr> = votes
            .iter()
            .filter(|v| &v.leader == id && v.epoch == epoch)
            .filter(|v| answers.iter().any(|a| a.addr == v.voter))
            .map(|v| &v.voter)
            .collect();
        if voters.len() < majority {
            continue;
        }
        // No answering sentinel may name another master under an epoch as recent, or under an
        // epoch it did not report.
        let contradicted = reports().any(|(_, o)| match &o.master {
            Some(m) if m != master => o.config_epoch.is_none_or(|e| e >= epoch),
            _ => false,
        });
        if contradicted {
            continue;
        }
        return Some((
            master.clone(),
            Elected {
                leader: addr.clone(),
                epoch,
                voters: voters.len(),
            },
        ));
    }
    None
}

/// Decides the master from the answers of `configured` sentinels of master `name`, and the
/// leader votes heard from them.
pub fn decide(
    name: &str,
    configured: usize,
    answers: &[SentinelAnswer],
    leader_votes: &[Vote],
) -> SentinelView {
    let mut tally = count_votes(name, answers);
    let (master, votes, elected) = choose_master(&tally.votes, configured, answers, leader_votes);
    let mut others = group_servers(&tally.votes, answers);
    let problem = match &master {
        Some(m) => {
            others.retain(|o| o != m);
            let dissent = master_dissent(m, votes, elected.as_ref(), configured, &tally.votes);
            tally.dissent.extend(dissent);
            None
        }
        None => Some(tally.no_master(name, configured)),
    };
    SentinelView {
        master,
        votes,
        configured,
        others,
        problem,
        dissent: tally.dissent,
        run_ids: replica_run_ids(answers),
        elected,
    }
}

/// The answers counted: the masters the sentinels with a vote name, and who has no vote.
struct Tally<'a> {
    /// Each master named by a sentinel with a vote, and by how many.
    votes: BTreeMap<&'a ServerAddr, usize>,
    /// Sentinels without a vote, and why.
    dissent: Vec<String>,
    /// Sentinels that answered, with a vote or not.
    answered: usize,
    /// Sentinels that answered but do not know the master name.
    unknown_name: usize,
}

/// Counts the votes of the sentinels that answered, know master `name` and are not in TILT.
fn count_votes<'a>(name: &str, answers: &'a [SentinelAnswer]) -> Tally<'a> {
    let mut tally = Tally {
        votes: BTreeMap::new(),
        dissent: Vec::new(),
        answered: 0,
        unknown_name: 0,
    };
    for a in answers {
        match &a.result {
            Err(e) => tally.dissent.push(format!("sentinel {}: {e}", a.addr)),
            Ok(r) => {
                tally.answered += 1;
                if r.tilt {
                    tally
                        .dissent
                        .push(format!("sentinel {} is in TILT mode: vote ignored", a.addr));
                } else if let Some(m) = &r.master {
                    *tally.votes.entry(m).or_default() += 1;
                } else {
                    tally.unknown_name += 1;
                    tally.dissent.push(format!(
                        "sentinel {} does not know master name {name:?}",
                        a.addr
                    ));
                }
            }
        }
    }
    tally
}

impl Tally<'_> {
    /// Why no master was decided.
    fn no_master(&self, name: &str, configured: usize) -> String {
        let majority = configured / 2 + 1;
        if self.answered == 0 {
            // The first refusal says why (a password, a certificate, a name): often the same
            // for every sentinel.
            match self.dissent.first() {
                Some(why) => format!("no sentinel answered (0 of {configured}); {why}"),
                None => format!("no sentinel answered (0 of {configured})"),
            }
        } else if self.unknown_name == self.answered {
            format!("master name {name:?} unknown to every sentinel that answered")
        } else {
            let named: Vec<String> = self
                .votes
                .iter()
                .map(|(m, n)| format!("{m} by {n}"))
                .collect();
            format!(
                "no sentinel majority: {majority} of {configured} needed, {} ({} answered)",
                if named.is_empty() {
                    "none named a master".to_string()
                } else {
                    format!("named {}", named.join(", "))
                },
                self.answered
            )
        }
    }
}

/// The master, the votes it has, and the election that decided it when the majority did not.
/// Without a master, the votes are those of the most named server (0 if none is named).
fn choose_master(
    votes: &BTreeMap<&ServerAddr, usize>,
    configured: usize,
    answers: &[SentinelAnswer],
    leader_votes: &[Vote],
) -> (Option<ServerAddr>, usize, Option<Elected>) {
    let majority = configured / 2 + 1;
    let best = votes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| ((*m).clone(), *n));
    // An elected leader's newer configuration goes before a majority that has not heard of it
    // yet; when the majority names the same master, the majority alone decides.
    let by_majority = best
        .as_ref()
        .filter(|(_, n)| *n >= majority)
        .map(|(m, _)| m.clone());
    match elected_leader(configured, answers, leader_votes) {
        Some((m, e)) if by_majority.as_ref() != Some(&m) => {
            let n = votes.get(&m).copied().unwrap_or(0);
            (Some(m), n, Some(e))
        }
        _ => match best {
            Some((m, n)) if n >= majority => (Some(m), n, None),
            Some((_, n)) => (None, n, None),
            None => (None, 0, None),
        },
    }
}

/// Every server of the group the sentinels know of: the masters any of them names and the
/// replicas any of them lists, sorted, each once.
fn group_servers(
    votes: &BTreeMap<&ServerAddr, usize>,
    answers: &[SentinelAnswer],
) -> Vec<ServerAddr> {
    let mut servers: Vec<ServerAddr> = votes.keys().map(|m| (*m).clone()).collect();
    for a in answers {
        if let Ok(r) = &a.result {
            servers.extend(r.replicas.iter().map(|x| x.addr.clone()));
        }
    }
    servers.sort();
    servers.dedup();
    servers
}

/// The run id of each replica the sentinels list.
fn replica_run_ids(answers: &[SentinelAnswer]) -> BTreeMap<String, ServerAddr> {
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
    run_ids
}

/// How the decided master `m`, with `n` votes, differs from what the sentinels say: the
/// election that decided it, if one did, and the masters the others name.
fn master_dissent(
    m: &ServerAddr,
    n: usize,
    elected: Option<&Elected>,
    configured: usize,
    votes: &BTreeMap<&ServerAddr, usize>,
) -> Vec<String> {
    let mut dissent = Vec::new();
    if let Some(e) = elected {
        dissent.push(format!(
            "{m} is named by sentinel {}, failover leader of epoch {} elected by {} of {configured} sentinels ({n} of {configured} name it so far)",
            e.leader, e.epoch, e.voters
        ));
    }
    for (other, n) in votes {
        if *other != m {
            dissent.push(format!("{n} sentinel(s) name {other} as master"));
        }
    }
    dissent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::testutil::*;

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
            let v = decide("mymaster", 3, &answers, &[]);
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
            &[],
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
    fn an_elected_leaders_newer_configuration_goes_before_the_majority() {
        // S3 ("ccc") won epoch 7 with the votes of all three and names N; S1 and S2 have not
        // heard its hello yet and still name M under epoch 6.
        let stale_majority = || {
            vec![
                says_epoch(S1, "aaa", M, 6),
                says_epoch(S2, "bbb", M, 6),
                says_epoch(S3, "ccc", N, 7),
            ]
        };
        let all_voted = [vote(S1, "ccc", 7), vote(S2, "ccc", 7), vote(S3, "ccc", 7)];
        let v = decide("mymaster", 3, &stale_majority(), &all_voted);
        assert_eq!(v.master, Some(a(N)));
        assert_eq!(v.votes, 1);
        assert_eq!(
            v.elected,
            Some(Elected {
                leader: a(S3),
                epoch: 7,
                voters: 3
            })
        );
        assert!(
            v.others.contains(&a(M)),
            "the old master stays in the topology"
        );
        assert!(
            v.dissent
                .iter()
                .any(|d| d.contains("failover leader of epoch 7")),
            "{:?}",
            v.dissent
        );

        // Two votes are a majority of three; the leaders' own vote counts.
        let two = [vote(S1, "ccc", 7), vote(S3, "ccc", 7)];
        assert_eq!(
            decide("mymaster", 3, &stale_majority(), &two).master,
            Some(a(N))
        );

        // And the same holds when the others do not answer at all.
        let alone = vec![silent(S1), silent(S2), says_epoch(S3, "ccc", N, 7)];
        assert_eq!(decide("mymaster", 3, &alone, &all_voted).master, Some(a(N)));

        let not_elected: Vec<(&str, Vec<Vote>, Vec<SentinelAnswer>)> = vec![
            (
                // An operator's SENTINEL FAILOVER: the leader votes for itself, nobody else.
                "only the leader's own vote",
                vec![vote(S3, "ccc", 7)],
                stale_majority(),
            ),
            (
                "votes for another leader",
                vec![vote(S1, "bbb", 7), vote(S2, "bbb", 7), vote(S3, "bbb", 7)],
                stale_majority(),
            ),
            (
                "votes in another epoch",
                vec![vote(S1, "ccc", 5), vote(S2, "ccc", 5), vote(S3, "ccc", 5)],
                stale_majority(),
            ),
            (
                "votes from sentinels rolecall is not configured with",
                vec![
                    vote("127.0.0.9:1", "ccc", 7),
                    vote("127.0.0.9:2", "ccc", 7),
                    vote(S3, "ccc", 7),
                ],
                stale_majority(),
            ),
            (
                "the same voter twice",
                vec![vote(S3, "ccc", 7), vote(S3, "ccc", 7)],
                stale_majority(),
            ),
            (
                "another sentinel names another master under a newer epoch",
                all_voted.to_vec(),
                vec![
                    says_epoch(S1, "aaa", M, 8),
                    says_epoch(S2, "bbb", M, 6),
                    says_epoch(S3, "ccc", N, 7),
                ],
            ),
            (
                "another sentinel names another master without an epoch",
                all_voted.to_vec(),
                vec![
                    says(S1, Some(M), false),
                    says_epoch(S2, "bbb", M, 6),
                    says_epoch(S3, "ccc", N, 7),
                ],
            ),
            (
                "the leader is in TILT",
                all_voted.to_vec(),
                vec![says_epoch(S1, "aaa", M, 6), says_epoch(S2, "bbb", M, 6), {
                    let mut t = says_epoch(S3, "ccc", N, 7);
                    if let Ok(r) = &mut t.result {
                        r.tilt = true;
                    }
                    t
                }],
            ),
        ];
        for (what, votes, answers) in not_elected {
            let v = decide("mymaster", 3, &answers, &votes);
            assert_eq!(v.master, Some(a(M)), "{what}: the majority decides");
            assert_eq!(v.elected, None, "{what}");
        }

        // Once the majority names the leader's master, the majority alone decides.
        let caught_up = vec![
            says_epoch(S1, "aaa", N, 7),
            says_epoch(S2, "bbb", N, 7),
            says_epoch(S3, "ccc", N, 7),
        ];
        let v = decide("mymaster", 3, &caught_up, &all_voted);
        assert_eq!((v.master, v.elected, v.votes), (Some(a(N)), None, 3));
    }

    #[test]
    fn sentinels_without_a_vote_are_named_with_the_reason() {
        let m = a(M);
        let answers = [
            says(S1, Some(M), false),
            says(S2, Some(M), true),
            says(S3, None, false),
            silent("127.0.0.1:26382"),
        ];
        let t = count_votes("mymaster", &answers);
        assert_eq!(t.votes, BTreeMap::from([(&m, 1)]));
        assert_eq!((t.answered, t.unknown_name), (3, 1));
        assert_eq!(
            t.dissent,
            vec![
                "sentinel 127.0.0.1:26380 is in TILT mode: vote ignored",
                "sentinel 127.0.0.1:26381 does not know master name \"mymaster\"",
                "sentinel 127.0.0.1:26382: connection refused",
            ]
        );
    }

    #[test]
    fn why_there_is_no_master_says_who_answered_and_whom_they_named() {
        let cases: Vec<(&str, Vec<SentinelAnswer>, &str)> = vec![
            (
                "none answers",
                vec![silent(S1), silent(S2), silent(S3)],
                "no sentinel answered (0 of 3); sentinel 127.0.0.1:26379: connection refused",
            ),
            (
                "the name is unknown to those that answer",
                vec![says(S1, None, false), silent(S2), says(S3, None, false)],
                "master name \"mymaster\" unknown to every sentinel that answered",
            ),
            (
                "a split",
                vec![
                    says(S1, Some(M), false),
                    says(S2, Some(N), false),
                    silent(S3),
                ],
                "no sentinel majority: 2 of 3 needed, named 127.0.0.1:6379 by 1, 127.0.0.1:6381 by 1 (2 answered)",
            ),
            (
                "only a sentinel in TILT names a master",
                vec![says(S1, Some(M), true), says(S2, None, false), silent(S3)],
                "no sentinel majority: 2 of 3 needed, none named a master (2 answered)",
            ),
        ];
        for (what, answers, want) in cases {
            let tally = count_votes("mymaster", &answers);
            assert_eq!(tally.no_master("mymaster", 3), want, "{what}");
        }
    }
}
