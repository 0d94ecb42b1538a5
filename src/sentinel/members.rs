//! The real sentinels of a group, whatever addresses were configured for them.
//!
//! A configured entry may be one sentinel's address, a name that resolves to several (a
//! headless Service: one sentinel per address), or one address in front of all of them (a
//! load-balanced Service, where each new connection may reach another sentinel). Counting the
//! configured entries would make a Service "a majority of one". So rolecall counts sentinels by
//! their ids:
//!
//! - each sentinel asked says who it is (`SENTINEL MYID`) and whom it knows
//!   (`SENTINEL SENTINELS`: ids and announced addresses; a sentinel never forgets another
//!   unless reset);
//! - rolecall asks every sentinel it knows of directly, at its announced address, besides the
//!   configured entries, and a sentinel reached at two addresses (directly and through the
//!   Service) is one vote;
//! - the group's sentinels are every id heard of — answering, or listed by one that answered —
//!   in the last [`MEMORY`], plus each configured address that never said who it is; the
//!   master needs a majority of *those*.
//!
//! Why one stale sentinel cannot decide: it is one id, the ids it lists and the ids remembered
//! only add to the count, and an address rolecall cannot tell from a sentinel it knows adds one
//! more. Shrinking the count takes every answering sentinel forgetting an id for
//! [`MEMORY`]. A view rolecall cannot complete is `unknown` (held, then failed open), never
//! a drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::SentinelAnswer;
use crate::conn::{Resolved, ServerAddr};

/// How long rolecall counts a sentinel no answering sentinel lists any more (a sentinel
/// removed with `SENTINEL RESET`, or one rolecall cannot reach): ten minutes.
pub const MEMORY: Duration = Duration::from_secs(600);

/// At most this many sentinels are asked per group and check, and twice as many ids kept.
pub const MAX_SENTINELS: usize = 16;

/// How rolecall came to ask a sentinel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// A configured address (an IP, or a name that did not resolve).
    Configured,
    /// An address a configured name resolved to.
    Resolved,
    /// The address another sentinel announces for it (`SENTINEL SENTINELS`).
    Announced,
}

/// A sentinel address to ask, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: ServerAddr,
    pub found: Found,
    /// The configured name it resolved from (for [`Found::Resolved`]).
    pub via: Option<ServerAddr>,
}

/// One address asked, what it answered, and who answered.
#[derive(Debug, Clone)]
pub struct Asked {
    pub target: Target,
    pub answer: SentinelAnswer,
    /// The sentinel's id: as it said, or as it answered at this address before.
    pub id: Option<String>,
    /// Whether this answer is the vote of its sentinel (one per sentinel).
    pub counted: bool,
}

/// What rolecall remembers of a group's sentinels across checks.
#[derive(Debug, Default)]
pub struct Members {
    /// Each sentinel id heard of, with the address another sentinel announces for it and when
    /// it was last heard of.
    ids: BTreeMap<String, (Option<ServerAddr>, Instant)>,
    /// The ids that answered at each address, and when.
    at: BTreeMap<ServerAddr, BTreeMap<String, Instant>>,
}

/// The answers that count, one per sentinel, and how many sentinels the group has.
#[derive(Debug, Clone)]
pub struct Count {
    pub answers: Vec<SentinelAnswer>,
    pub sentinels: usize,
}

impl Members {
    /// The addresses to ask: the configured entries (a name as each address it resolved to,
    /// or itself when it did not resolve), then each known sentinel's announced address; each
    /// once, at most [`MAX_SENTINELS`].
    pub fn targets(&self, configured: &[(ServerAddr, Resolved)]) -> Vec<Target> {
        let mut targets = Vec::new();
        for (entry, resolved) in configured {
            match (entry.ip(), resolved) {
                (None, Ok(ips)) => targets.extend(ips.iter().map(|ip| Target {
                    addr: ServerAddr::new(ip.to_string(), entry.port),
                    found: Found::Resolved,
                    via: Some(entry.clone()),
                })),
                _ => targets.push(Target {
                    addr: entry.clone(),
                    found: Found::Configured,
                    via: None,
                }),
            }
        }
        let announced = self.ids.values().filter_map(|(a, _)| a.clone());
        targets.extend(announced.map(|addr| Target {
            addr,
            found: Found::Announced,
            via: None,
        }));
        dedup(targets)
    }

    /// Every known sentinel's announced address.
    pub fn announced(&self) -> impl Iterator<Item = &ServerAddr> {
        self.ids.values().filter_map(|(a, _)| a.as_ref())
    }

    /// The known sentinels' announced addresses not among `asked` (learned by this check's
    /// answers), up to the limit.
    pub fn unasked(&self, asked: &[Target]) -> Vec<Target> {
        let room = MAX_SENTINELS.saturating_sub(asked.len());
        let asked: BTreeSet<&ServerAddr> = asked.iter().map(|t| &t.addr).collect();
        let mut seen = BTreeSet::new();
        self.ids
            .values()
            .filter_map(|(a, _)| a.clone())
            .filter(|a| !asked.contains(a) && seen.insert(a.clone()))
            .take(room)
            .map(|addr| Target {
                addr,
                found: Found::Announced,
                via: None,
            })
            .collect()
    }

    /// Learns from a round of answers: who answered where, and whom they list.
    pub fn learn(&mut self, answers: &[(Target, SentinelAnswer)], now: Instant) {
        for (target, answer) in answers {
            let Ok(report) = &answer.result else { continue };
            if let Some(id) = &report.id {
                let known = self.ids.entry(id.clone()).or_insert((None, now));
                known.1 = now;
                if target.found == Found::Announced && known.0.is_none() {
                    known.0 = Some(target.addr.clone());
                }
                let at = self.at.entry(target.addr.clone()).or_default();
                at.insert(id.clone(), now);
            }
            for peer in &report.peers {
                self.ids
                    .insert(peer.id.clone(), (Some(peer.addr.clone()), now));
            }
        }
        self.forget(now);
    }

    /// Forgets what was last heard of more than [`MEMORY`] ago, and the oldest beyond the
    /// limit.
    fn forget(&mut self, now: Instant) {
        let fresh = |t: &Instant| now.saturating_duration_since(*t) <= MEMORY;
        self.ids.retain(|_, (_, t)| fresh(t));
        while self.ids.len() > 2 * MAX_SENTINELS {
            let oldest = self
                .ids
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.ids.remove(&id);
            }
        }
        for ids in self.at.values_mut() {
            ids.retain(|_, t| fresh(t));
        }
        self.at.retain(|_, ids| !ids.is_empty());
        while self.at.len() > 2 * MAX_SENTINELS {
            let oldest = self
                .at
                .iter()
                .min_by_key(|(_, ids)| ids.values().max().copied())
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                self.at.remove(&a);
            }
        }
    }

    /// Who answered at `target`: the id it gave, else the one sentinel that answered there
    /// before or that announces that address (or the name it was resolved from). `Err(true)`: an address several sentinels
    /// answered at (a load-balanced Service), which is not a sentinel of its own;
    /// `Err(false)`: an address rolecall cannot tell from any sentinel it knows.
    fn identify(&self, target: &Target, answer: &SentinelAnswer) -> Result<String, bool> {
        if let Ok(r) = &answer.result
            && let Some(id) = &r.id
        {
            return Ok(id.clone());
        }
        if let Some(ids) = self.at.get(&target.addr) {
            return match ids.keys().collect::<Vec<_>>().as_slice() {
                [one] => Ok((*one).clone()),
                _ => Err(true),
            };
        }
        // The address a sentinel announces, or what its announced name resolved to (a pod
        // name configured for its sentinel: that sentinel, wherever the name points now).
        let names = |a: &ServerAddr| a == &target.addr || target.via.as_ref() == Some(a);
        self.ids
            .iter()
            .find(|(_, (a, _))| a.as_ref().is_some_and(names))
            .map(|(id, _)| id.clone())
            .ok_or(false)
    }

    /// Counts the sentinels behind this check's answers (module docs): the answers that vote,
    /// one per sentinel (its first answer that is not an error, else its first error), and
    /// how many sentinels the group has. Also marks each asked address with its id and whether
    /// it counted.
    pub fn count(&self, asked: &mut [Asked]) -> Count {
        let members: Vec<Option<String>> = asked
            .iter()
            .map(|a| match self.identify(&a.target, &a.answer) {
                Ok(id) => Some(id),
                Err(true) => None,
                // An address that never said who it is stands for a sentinel of its own.
                Err(false) => Some(format!("address {}", a.target.addr)),
            })
            .collect();
        let mut chosen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, member) in members.iter().enumerate() {
            let Some(member) = member else { continue };
            match chosen.get(member.as_str()) {
                Some(&j) if asked[j].answer.result.is_ok() || asked[i].answer.result.is_err() => {}
                _ => {
                    chosen.insert(member, i);
                }
            }
        }
        for (a, member) in asked.iter_mut().zip(&members) {
            a.id = member.clone().filter(|m| self.ids.contains_key(m));
        }
        let mut answers = Vec::with_capacity(chosen.len());
        for &i in chosen.values() {
            asked[i].counted = true;
            answers.push(asked[i].answer.clone());
        }
        answers.sort_by(|a, b| a.addr.cmp(&b.addr));
        let listed = self
            .ids
            .keys()
            .filter(|id| !chosen.contains_key(id.as_str()))
            .count();
        Count {
            sentinels: chosen.len() + listed,
            answers,
        }
    }
}

/// Each address once, the first way it was found kept; at most [`MAX_SENTINELS`].
fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    targets
        .into_iter()
        .filter(|t| seen.insert(t.addr.clone()))
        .take(MAX_SENTINELS)
        .collect()
}

#[cfg(test)]
mod tests;
