//! Sentinel's view of one group: every sentinel asked concurrently, each under the check
//! timeout, and the master decided by a majority of the group's *real* sentinels, counted by
//! their ids behind whatever addresses were configured (`members`: a Service in front of all of
//! them is not one vote).
//!
//! A sentinel that did not answer, does not know the master name, or is in TILT mode has no
//! vote (Redis docs, "Sentinel", TILT mode: its view may be wrong). Asking is I/O
//! ([`ask_all`]); deciding is pure ([`decide`]) and table-tested.
//!
//! One more way to a master, and still a majority's: **the configuration of an elected failover
//! leader**. Before a sentinel fails a master over, a majority of the sentinels must vote for it
//! as leader for a new epoch (each voter publishes `+vote-for-leader <leader-id> <epoch>`); once
//! the promoted replica answers as master, the leader names it under that epoch as its
//! `config-epoch`, and Sentinel's own rule makes every other sentinel adopt it (a greater epoch
//! always wins) as soon as the leader's next hello reaches them, up to ~100 ms later. When
//! rolecall has heard a majority of its configured sentinels vote for sentinel L in epoch E, and
//! L names master B under config-epoch E, and no sentinel that answers names another master under
//! an epoch as recent, B is the master: the majority already decided it, by electing L. An
//! operator's `SENTINEL FAILOVER` has no election (one sentinel acts alone), so it is followed
//! once the majority names the new master, as before.
//!
//! Parts: this file holds what a sentinel says (reports, votes, the view); `members` knows which
//! sentinels there are and which answers count; `ask` asks them and reads their replies;
//! `decide` makes the view from the counted answers and the votes.

mod ask;
mod decide;
mod members;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::conn::{ServerAddr, ServerError, Software};

pub use ask::{Reports, ask_group};
pub use decide::decide;
pub use members::{Asked, Found, Members};
// For the fuzz targets (`src/fuzzing.rs`).
pub(crate) use ask::{
    MAX_PEERS, fields, parse_master_addr, parse_peers, parse_replicas, parse_tilt,
};

/// A replica as one sentinel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub addr: ServerAddr,
    pub flags: Vec<String>,
    /// The replica's run id (`runid`), when the sentinel knows it.
    pub run_id: Option<String>,
}

/// One sentinel's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelReport {
    /// `None`: this sentinel does not monitor a master of that name.
    pub master: Option<ServerAddr>,
    pub tilt: bool,
    pub replicas: Vec<ReplicaInfo>,
    /// The sentinel's own id (`SENTINEL MYID`).
    pub id: Option<String>,
    /// The other sentinels it knows of (`SENTINEL SENTINELS`).
    pub peers: Vec<Peer>,
    /// The master's `config-epoch` as it knows it; asked only while a leader vote is on record
    /// (see [`Vote`]).
    pub config_epoch: Option<u64>,
    /// What it runs (`INFO server`), asked on each new connection.
    pub software: Option<Software>,
}

/// Another sentinel of the group, as one sentinel lists it: its id and announced address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: ServerAddr,
}

/// A leader vote heard on one configured sentinel's pub/sub (`+vote-for-leader <id> <epoch>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub voter: ServerAddr,
    pub leader: String,
    pub epoch: u64,
}

/// Parses a `+vote-for-leader` payload: `<leader-id> <epoch>`.
pub fn parse_vote(payload: &str) -> Option<(String, u64)> {
    let mut words = payload.split_whitespace();
    let leader = words.next()?;
    let epoch = words.next()?.parse().ok()?;
    if words.next().is_some() || !valid_id(leader) {
        return None;
    }
    Some((leader.to_string(), epoch))
}

/// A sentinel id as Redis makes them: 40 hex digits (tests and forks may differ in length, so
/// 1 to 64).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How a master was decided when a majority of sentinels does not name it yet: by the sentinel
/// a majority elected as failover leader for `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Elected {
    pub leader: ServerAddr,
    pub epoch: u64,
    /// Configured sentinels heard voting for the leader in that epoch.
    pub voters: usize,
}

#[derive(Debug, Clone)]
pub struct SentinelAnswer {
    pub addr: ServerAddr,
    pub latency: Option<Duration>,
    pub result: Result<SentinelReport, ServerError>,
}

/// The group's topology as the sentinels see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The master named by a majority of the group's sentinels.
    pub master: Option<ServerAddr>,
    pub votes: usize,
    /// The group's sentinels, as `members` counts them: the majority is of these.
    pub configured: usize,
    /// Every other server of the group: replicas any sentinel lists, masters a minority names.
    pub others: Vec<ServerAddr>,
    /// Why there is no master, when there is none.
    pub problem: Option<String>,
    /// Sentinels that did not vote with the majority, and why.
    pub dissent: Vec<String>,
    /// Run ids the sentinels report for the servers (replicas), to recognise a server the node
    /// reaches under another address (NAT, `replica-announce-ip`, host names).
    pub run_ids: BTreeMap<String, ServerAddr>,
    /// Set when the master is the elected failover leader's and a majority does not name it yet.
    pub elected: Option<Elected>,
}

impl SentinelView {
    /// Every server of the group, master first.
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> {
        self.master.iter().chain(self.others.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_parse() {
        assert_eq!(
            parse_vote("0090b383ba647c919e01989bab97af9d5fe0f00f 1"),
            Some(("0090b383ba647c919e01989bab97af9d5fe0f00f".to_string(), 1))
        );
        for bad in ["", "abc", "abc x", "abc 1 2", "not-hex 1", "abc -1"] {
            assert_eq!(parse_vote(bad), None, "{bad:?}");
        }
    }
}
