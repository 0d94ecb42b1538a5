//! Test helpers shared by the sentinel tests: answers as sentinels give them.

use std::time::Duration;

use super::*;
use crate::conn::{ErrorClass, ServerError};

pub(super) fn a(s: &str) -> ServerAddr {
    s.parse().unwrap()
}

pub(super) fn says(sentinel: &str, master: Option<&str>, tilt: bool) -> SentinelAnswer {
    SentinelAnswer {
        addr: a(sentinel),
        latency: Some(Duration::from_millis(1)),
        result: Ok(SentinelReport {
            master: master.map(a),
            tilt,
            replicas: vec![ReplicaInfo {
                addr: a("127.0.0.1:6380"),
                flags: vec!["slave".into()],
                run_id: Some("r1".into()),
            }],
            ..Default::default()
        }),
    }
}

/// A sentinel with id `id` naming `master` under `epoch`.
pub(super) fn says_epoch(sentinel: &str, id: &str, master: &str, epoch: u64) -> SentinelAnswer {
    let mut answer = says(sentinel, Some(master), false);
    if let Ok(r) = &mut answer.result {
        r.id = Some(id.to_string());
        r.config_epoch = Some(epoch);
    }
    answer
}

pub(super) fn vote(voter: &str, leader: &str, epoch: u64) -> Vote {
    Vote {
        voter: a(voter),
        leader: leader.to_string(),
        epoch,
    }
}

pub(super) fn silent(sentinel: &str) -> SentinelAnswer {
    SentinelAnswer {
        addr: a(sentinel),
        latency: None,
        result: Err(ServerError::new(ErrorClass::Connect, "connection refused")),
    }
}

pub(super) const S1: &str = "127.0.0.1:26379";
pub(super) const S2: &str = "127.0.0.1:26380";
pub(super) const S3: &str = "127.0.0.1:26381";
pub(super) const M: &str = "127.0.0.1:6379";
pub(super) const N: &str = "127.0.0.1:6381";
