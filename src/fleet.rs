//! The fleet guard: the rolecalls of one fleet never take their nodes out, on a condition they
//! may all share, below a floor.
//!
//! One rolecall sees one node. When every node of a fleet looks `disconnected` or
//! `stale_master` at once (the sentinels re-pointed at another topology, a copied
//! `sentinel.conf`), each rolecall alone would drain its node and empty the backend. So each
//! rolecall keeps a record of its node in a registry, a hash on the first group's verified
//! master (`<probe_key_prefix>:fleet:<name>`, field = node name):
//!
//! ```text
//! 1 <written, unix ms> <last in or shared-out, unix ms> <in|shared|out> <1|0 in rotation>
//! ```
//!
//! - `in`: in rotation; `shared`: out on a condition the fleet may share (the guard may keep
//!   it in); `out`: out on evidence only this node has (`stuck_on_replica`, `node_missing`),
//!   in maintenance, or never ready since rolecall started: the guard never keeps it in.
//! - The record is written when it changes and every `window / 4` otherwise (one `HSET` and
//!   one `PEXPIRE` in a round trip); the registry is read (`HGETALL`) only when the node would
//!   go out on a shared condition, or was let out on one.
//! - To go out on a shared condition a rolecall takes the registry's lock (`SET NX PX`,
//!   4 timeouts), reads the registry, and only if [`judge`] lets it out writes its record as
//!   out, then goes out. Without the lock it stays in until the next check. Every
//!   shared-out is thus decided one at a time on what is already written, so the fleet never
//!   drops below the floor on a shared condition. Coming back in needs no lock.
//! - [`judge`] is pure: the fleet is the nodes whose record says in rotation, or out only on a
//!   shared condition, within `window`; the floor is `ceil(floor × fleet)`, at least 1; the
//!   nodes in rotation with nothing wrong count towards it first, then the shared-out
//!   candidates are kept in, those in rotation now first, then by name. Every rolecall
//!   computes the same choice from the same records, so the fleet does not flap.
//! - When the registry cannot be read or written (no verified master, an error, an ACL),
//!   rolecall falls back to the rules without the guard and says so.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::config::FleetConfig;
use crate::conn::{ServerAddr, ServerError, pipeline, text};
use crate::snapshot::{FleetStatus, GuardState};
use crate::verdict::{Decision, Verdict};

/// Records not written for this long are deleted from the registry (a node gone for good, a
/// pod name that will not come back).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// At most this many records are read from the registry.
const MAX_RECORDS: usize = 100_000;

/// What a node's rolecall decided, before the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    In,
    /// Out on a condition the whole fleet may share.
    Shared,
    /// Out on evidence only this node has, in maintenance, or not ready.
    Out,
}

impl Want {
    fn as_str(self) -> &'static str {
        match self {
            Want::In => "in",
            Want::Shared => "shared",
            Want::Out => "out",
        }
    }
}

/// One node's record in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub at_ms: u64,
    pub last_in_ms: u64,
    pub want: Want,
    pub in_rotation: bool,
}

impl Record {
    pub fn encode(&self) -> String {
        format!(
            "1 {} {} {} {}",
            self.at_ms,
            self.last_in_ms,
            self.want.as_str(),
            u8::from(self.in_rotation)
        )
    }

    /// A record as written; `None` for anything else (another version, garbage).
    pub fn parse(s: &str) -> Option<Record> {
        let mut parts = s.split(' ');
        if parts.next()? != "1" {
            return None;
        }
        let at_ms = parts.next()?.parse().ok()?;
        let last_in_ms = parts.next()?.parse().ok()?;
        let want = match parts.next()? {
            "in" => Want::In,
            "shared" => Want::Shared,
            "out" => Want::Out,
            _ => return None,
        };
        let in_rotation = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        parts.next().is_none().then_some(Record {
            at_ms,
            last_in_ms,
            want,
            in_rotation,
        })
    }
}

/// What the registry says about the fleet, for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Nodes in rotation, or out only on a shared condition, within the window.
    pub members: usize,
    /// Members in rotation now with a fresh record.
    pub in_rotation: usize,
    pub floor: usize,
    /// Shared-out nodes kept in rotation, in the order chosen.
    pub kept: Vec<String>,
    /// Whether `me` is one of them.
    pub keep_me: bool,
}

/// The guard's choice for `me` from the registry's `records` (pure; see the module's rules).
pub fn judge(
    records: &BTreeMap<String, Record>,
    me: &str,
    now_ms: u64,
    share: f64,
    window: Duration,
) -> Judgement {
    let window = window.as_millis() as u64;
    let recent = |t: u64| t.saturating_add(window) >= now_ms;
    let members: Vec<(&String, &Record)> = records
        .iter()
        .filter(|(_, r)| r.want != Want::Out && recent(r.last_in_ms))
        .collect();
    let fresh = |r: &Record| recent(r.at_ms);
    let in_rotation = members
        .iter()
        .filter(|(_, r)| fresh(r) && r.in_rotation)
        .count();
    let healthy = members
        .iter()
        .filter(|(_, r)| fresh(r) && r.in_rotation && r.want == Want::In)
        .count();
    let floor = match members.len() {
        0 => 0,
        n => ((share * n as f64).ceil() as usize).clamp(1, n),
    };
    let mut candidates: Vec<(&String, &Record)> = members
        .iter()
        .filter(|(_, r)| fresh(r) && r.want == Want::Shared)
        .copied()
        .collect();
    // In rotation now first (they need not move), then by name: the same order everywhere.
    candidates.sort_by_key(|(name, r)| (!r.in_rotation, name.as_str()));
    let kept: Vec<String> = candidates
        .into_iter()
        .take(floor.saturating_sub(healthy))
        .map(|(n, _)| n.clone())
        .collect();
    Judgement {
        members: members.len(),
        in_rotation,
        floor,
        keep_me: kept.iter().any(|n| n == me),
        kept,
    }
}

/// What the node wants, from the decision without the guard (out on evidence only the node has:
/// [`Decision::local`]); `ever_in`: the node was in
/// rotation since rolecall started; `local_before`: the last verdict other than `unknown` took
/// it out on evidence only it has (an `unknown` holding that out holds it out).
pub fn want(decision: &Decision, maintenance: bool, ever_in: bool, local_before: bool) -> Want {
    if !decision.checked || maintenance {
        Want::Out
    } else if decision.in_rotation {
        Want::In
    } else if !ever_in || decision.local || (decision.verdict == Verdict::Unknown && local_before) {
        Want::Out
    } else {
        Want::Shared
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The guard's state across checks.
#[derive(Debug)]
pub struct Guard {
    config: FleetConfig,
    node: String,
    key: String,
    lock_key: String,
    timeout: Duration,
    /// The last time the node was in rotation, or out only on a shared condition (0: never
    /// since rolecall started).
    last_in_ms: u64,
    /// The record last written, and where.
    written: Option<(Record, ServerAddr)>,
    /// Whether the node was in rotation at the last check (after the guard).
    was_in: bool,
    /// Whether the last verdict other than `unknown` took the node out on evidence only it has.
    local_before: bool,
    last_state: GuardState,
}

/// The connection to the registry's server: the first group's verified master, or why there is
/// none.
pub type Registry = Result<(ServerAddr, MultiplexedConnection), String>;

impl Guard {
    pub fn new(config: FleetConfig, node: &str, prefix: &str, timeout: Duration) -> Guard {
        let key = format!("{prefix}:fleet:{}", config.name);
        Guard {
            lock_key: format!("{key}:lock"),
            key,
            node: node.to_string(),
            timeout,
            last_in_ms: 0,
            written: None,
            was_in: false,
            local_before: false,
            last_state: if config.guard {
                GuardState::Idle
            } else {
                GuardState::Off
            },
            config,
        }
    }

    /// Applies the guard to `decision` (the node's, after the policy); returns the status to
    /// publish. Logs once per change of the guard's state.
    pub async fn apply(
        &mut self,
        decision: &mut Decision,
        maintenance: bool,
        registry: Registry,
    ) -> FleetStatus {
        let mut status = FleetStatus {
            guard: GuardState::Off,
            name: self.config.name.clone(),
            ..FleetStatus::default()
        };
        if self.config.guard {
            let now = now_ms();
            let want = want(
                decision,
                maintenance,
                self.last_in_ms > 0,
                self.local_before,
            );
            if decision.checked && decision.verdict != Verdict::Unknown {
                self.local_before = !decision.in_rotation && want == Want::Out;
            }
            if want != Want::Out {
                self.last_in_ms = now;
            }
            status.registry = registry.as_ref().ok().map(|(a, _)| a.clone());
            status.guard = match want {
                Want::Shared => self.guard(decision, registry, now, &mut status).await,
                _ => {
                    let record = self.record(want, decision.in_rotation && !maintenance, now);
                    if let Ok((addr, mut conn)) = registry
                        && let Err(e) = self.heartbeat(&mut conn, &addr, record, now).await
                    {
                        status.reason = Some(format!("cannot write the fleet registry: {e}"));
                    }
                    GuardState::Idle
                }
            };
        }
        self.was_in = decision.in_rotation;
        self.log_change(&status);
        status
    }

    fn record(&self, want: Want, in_rotation: bool, now: u64) -> Record {
        Record {
            at_ms: now,
            last_in_ms: self.last_in_ms,
            want,
            in_rotation,
        }
    }

    /// Writes `record` if it changed or the last write is older than a quarter window.
    async fn heartbeat(
        &mut self,
        conn: &mut MultiplexedConnection,
        addr: &ServerAddr,
        record: Record,
        now: u64,
    ) -> Result<(), ServerError> {
        // Written again when it changes, when the registry moved (a failover), and every
        // quarter window.
        let due = self.written.as_ref().is_none_or(|(w, at)| {
            (w.want, w.in_rotation) != (record.want, record.in_rotation)
                || at != addr
                || now.saturating_sub(w.at_ms) >= self.config.window.as_millis() as u64 / 4
        });
        if !due {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.write(&mut pipe, record);
        self.exchange(conn, addr, &pipe).await?;
        self.written = Some((record, addr.clone()));
        Ok(())
    }

    /// `HSET` of `record` and the registry's expiry, onto `pipe`.
    fn write(&self, pipe: &mut redis::Pipeline, record: Record) {
        pipe.cmd("HSET")
            .arg(&self.key)
            .arg(&self.node)
            .arg(record.encode());
        pipe.cmd("PEXPIRE")
            .arg(&self.key)
            .arg(FORGET_AFTER.as_millis() as u64);
    }

    /// Sends `pipe`; every command must succeed. Returns the replies.
    async fn exchange(
        &self,
        conn: &mut MultiplexedConnection,
        addr: &ServerAddr,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, ServerError> {
        pipeline(conn, addr, "fleet registry", self.timeout, pipe)
            .await?
            .into_iter()
            .collect()
    }

    /// The node would be out on a shared condition: may it go out? One round trip writes its
    /// record and reads the registry; going out takes a second, under the lock.
    async fn guard(
        &mut self,
        decision: &mut Decision,
        registry: Registry,
        now: u64,
        status: &mut FleetStatus,
    ) -> GuardState {
        let (addr, mut conn) = match registry {
            Ok(r) => r,
            Err(why) => return self.unreachable(decision, status, &why),
        };
        let was_in = self.was_in;
        let record = self.record(Want::Shared, was_in, now);
        let mut pipe = redis::pipe();
        self.write(&mut pipe, record);
        pipe.cmd("HGETALL").arg(&self.key);
        let replies = match self.exchange(&mut conn, &addr, &pipe).await {
            Ok(r) => r,
            Err(e) => return self.unreachable(decision, status, &e.to_string()),
        };
        self.written = Some((record, addr.clone()));
        let records = self.records(replies.last(), record);
        self.forget_old(&mut conn, &addr, &records, now).await;
        let mut j = self.judge(&records, now);
        let state = if j.keep_me {
            GuardState::Holding
        } else if !was_in {
            GuardState::Released
        } else {
            match self.release(&mut conn, &addr, now).await {
                Ok(Some(again)) => {
                    j = again;
                    if j.keep_me {
                        GuardState::Holding
                    } else {
                        GuardState::Released
                    }
                }
                Ok(None) => GuardState::Waiting,
                Err(e) => return self.unreachable(decision, status, &e.to_string()),
            }
        };
        let summary = format!(
            "{} of {} node(s) of fleet {:?} in rotation, floor {}",
            j.in_rotation, j.members, self.config.name, j.floor
        );
        status.members = Some(j.members);
        status.in_rotation = Some(j.in_rotation);
        status.floor = Some(j.floor);
        status.kept = j.kept;
        let why = match state {
            GuardState::Waiting => format!(
                "kept in rotation by the fleet guard: another rolecall of the fleet is deciding; {summary}"
            ),
            GuardState::Holding => format!(
                "kept in rotation by the fleet guard (a condition the fleet may share): {summary}"
            ),
            _ => format!("the fleet guard lets it out, the floor holds without it: {summary}"),
        };
        decision.in_rotation = state.holds_in();
        decision.reason = format!("{}; {why}", decision.reason);
        status.reason = Some(why);
        state
    }

    /// Going out of rotation: takes the registry's lock and reads the registry again; if the
    /// node is still not kept, writes its record as out (before it goes out, so the next
    /// rolecall to decide counts it). `None`: another rolecall holds the lock.
    async fn release(
        &mut self,
        conn: &mut MultiplexedConnection,
        addr: &ServerAddr,
        now: u64,
    ) -> Result<Option<Judgement>, ServerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&self.lock_key)
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg((self.timeout * 4).as_millis() as u64);
        pipe.cmd("HGETALL").arg(&self.key);
        let replies = self.exchange(conn, addr, &pipe).await?;
        if !matches!(replies.first(), Some(Value::Okay)) {
            return Ok(None);
        }
        let records = self.records(replies.last(), self.record(Want::Shared, true, now));
        let j = self.judge(&records, now);
        if !j.keep_me {
            let out = self.record(Want::Shared, false, now);
            let mut pipe = redis::pipe();
            self.write(&mut pipe, out);
            self.exchange(conn, addr, &pipe).await?;
            self.written = Some((out, addr.clone()));
        }
        Ok(Some(j))
    }

    /// The registry's records as read, with this node's as it stands.
    fn records(&self, reply: Option<&Value>, mine: Record) -> BTreeMap<String, Record> {
        let mut records = parse_registry(reply);
        records.insert(self.node.clone(), mine);
        records
    }

    fn judge(&self, records: &BTreeMap<String, Record>, now: u64) -> Judgement {
        judge(
            records,
            &self.node,
            now,
            self.config.floor,
            self.config.window,
        )
    }

    /// The registry is out of reach: the rules without the guard (the node goes out).
    fn unreachable(
        &self,
        decision: &mut Decision,
        status: &mut FleetStatus,
        why: &str,
    ) -> GuardState {
        let why = format!("fleet registry unreachable ({why}): out without the fleet guard");
        decision.reason = format!("{}; {why}", decision.reason);
        status.reason = Some(why);
        GuardState::Unreachable
    }

    /// Deletes records not written for [`FORGET_AFTER`] (best effort).
    async fn forget_old(
        &self,
        conn: &mut MultiplexedConnection,
        addr: &ServerAddr,
        records: &BTreeMap<String, Record>,
        now: u64,
    ) {
        let old: Vec<&String> = records
            .iter()
            .filter(|(_, r)| r.at_ms.saturating_add(FORGET_AFTER.as_millis() as u64) < now)
            .map(|(n, _)| n)
            .collect();
        if old.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(&self.key).arg(old);
        if let Err(e) = self.exchange(conn, addr, &pipe).await {
            tracing::debug!(error = %e, "could not delete old fleet records");
        }
    }

    fn log_change(&mut self, status: &FleetStatus) {
        if status.guard == self.last_state {
            return;
        }
        self.last_state = status.guard;
        let (fleet, guard) = (&self.config.name, status.guard.as_str());
        let reason = status.reason.as_deref().unwrap_or("nothing to guard");
        if status.guard.holds_in() || status.guard == GuardState::Unreachable {
            tracing::warn!(fleet = %fleet, guard = %guard, "{reason}");
        } else {
            tracing::info!(fleet = %fleet, guard = %guard, "{reason}");
        }
    }
}

/// The records of an `HGETALL` reply (a map in RESP3, a flat array in RESP2); fields that are
/// not records are left out.
pub(crate) fn parse_registry(reply: Option<&Value>) -> BTreeMap<String, Record> {
    let pairs: Vec<(String, String)> = match reply {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        Some(Value::Array(items)) => items
            .chunks_exact(2)
            .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
            .collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .take(MAX_RECORDS)
        .filter_map(|(k, v)| Some((k, Record::parse(&v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const NOW: u64 = 1_000_000_000;

    fn rec(want: Want, in_rotation: bool) -> Record {
        Record {
            at_ms: NOW - 1000,
            last_in_ms: NOW - 1000,
            want,
            in_rotation,
        }
    }

    fn fleet(entries: &[(&str, Record)]) -> BTreeMap<String, Record> {
        entries.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    fn kept(entries: &[(&str, Record)], me: &str) -> (Vec<String>, usize, bool) {
        let j = judge(&fleet(entries), me, NOW, 0.5, WINDOW);
        (j.kept, j.floor, j.keep_me)
    }

    #[test]
    fn records_round_trip_and_garbage_is_not_a_record() {
        for r in [
            rec(Want::In, true),
            rec(Want::Shared, false),
            rec(Want::Out, false),
        ] {
            assert_eq!(Record::parse(&r.encode()), Some(r));
        }
        for bad in [
            "",
            "1",
            "2 1 1 in 1",
            "1 x 1 in 1",
            "1 1 1 maybe 1",
            "1 1 1 in 2",
            "1 1 1 in 1 extra",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_shared_condition_on_every_node_keeps_half_in_chosen_by_name() {
        use Want::*;
        let all = [
            ("a", rec(Shared, true)),
            ("b", rec(Shared, true)),
            ("c", rec(Shared, true)),
        ];
        // Floor ceil(0.5 × 3) = 2: a and b stay, c goes; every rolecall computes the same.
        assert_eq!(kept(&all, "c"), (vec!["a".into(), "b".into()], 2, false));
        assert!(kept(&all, "a").2 && kept(&all, "b").2);
    }

    #[test]
    fn nodes_in_rotation_now_are_kept_before_nodes_already_out() {
        use Want::*;
        // a already went out; b and c still in: b and c are kept, a stays out (no flapping).
        let f = [
            ("a", rec(Shared, false)),
            ("b", rec(Shared, true)),
            ("c", rec(Shared, true)),
        ];
        assert_eq!(kept(&f, "a").0, vec!["b".to_string(), "c".to_string()]);
        // Only c in now: c and then a (by name) are kept.
        let f = [
            ("a", rec(Shared, false)),
            ("b", rec(Shared, false)),
            ("c", rec(Shared, true)),
        ];
        assert_eq!(kept(&f, "b").0, vec!["c".to_string(), "a".to_string()]);
    }

    #[test]
    fn a_condition_only_one_node_has_takes_it_out() {
        use Want::*;
        let f = [
            ("a", rec(In, true)),
            ("b", rec(In, true)),
            ("c", rec(Shared, true)),
        ];
        assert_eq!(kept(&f, "c"), (vec![], 2, false));
    }

    #[test]
    fn node_local_evidence_counts_out_and_never_in() {
        use Want::*;
        // c is stuck on a replica: out, and not a member; a and b share a condition and the
        // floor (ceil(0.5 × 2) = 1) keeps a.
        let f = [
            ("a", rec(Shared, true)),
            ("b", rec(Shared, true)),
            ("c", rec(Out, false)),
        ];
        let j = judge(&fleet(&f), "b", NOW, 0.5, WINDOW);
        assert_eq!((j.members, j.floor, j.kept), (2, 1, vec!["a".to_string()]));
    }

    #[test]
    fn the_floor_is_never_zero_and_one_node_alone_is_kept() {
        use Want::*;
        assert_eq!(
            kept(&[("a", rec(Shared, true))], "a"),
            (vec!["a".into()], 1, true)
        );
        let j = judge(&fleet(&[("a", rec(Shared, true))]), "a", NOW, 0.01, WINDOW);
        assert_eq!(j.floor, 1);
        let j = judge(&BTreeMap::new(), "a", NOW, 0.5, WINDOW);
        assert_eq!((j.floor, j.kept.len()), (0, 0));
        // floor = 1.0 keeps every member.
        let f = [("a", rec(Shared, true)), ("b", rec(Shared, true))];
        assert_eq!(judge(&fleet(&f), "b", NOW, 1.0, WINDOW).kept.len(), 2);
    }

    #[test]
    fn old_records_leave_the_fleet_and_stale_ones_are_not_counted_in() {
        use Want::*;
        let gone = Record {
            at_ms: NOW - 120_000,
            last_in_ms: NOW - 120_000,
            ..rec(In, true)
        };
        // A node last in two minutes ago is not a member.
        let j = judge(
            &fleet(&[("a", rec(Shared, true)), ("z", gone)]),
            "a",
            NOW,
            0.5,
            WINDOW,
        );
        assert_eq!((j.members, j.floor), (1, 1));
        // A rolecall that stopped writing 70 s ago, its node in rotation 50 s ago: a member
        // (the floor counts it) but not counted in rotation, so the guard keeps more in.
        let silent = Record {
            at_ms: NOW - 70_000,
            last_in_ms: NOW - 50_000,
            ..rec(In, true)
        };
        let f = [
            ("a", rec(Shared, true)),
            ("b", rec(Shared, true)),
            ("s", silent),
        ];
        let j = judge(&fleet(&f), "b", NOW, 0.5, WINDOW);
        assert_eq!((j.members, j.in_rotation, j.floor), (3, 2, 2));
        assert_eq!(j.kept, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn what_a_node_wants_follows_its_decision() {
        let d = |verdict, in_rotation, checked| Decision {
            verdict,
            reason: String::new(),
            in_rotation,
            checked,
            local: !in_rotation
                && matches!(verdict, Verdict::StuckOnReplica | Verdict::NodeMissing),
        };
        use Verdict::*;
        assert_eq!(want(&d(Ok, true, true), false, true, false), Want::In);
        assert_eq!(want(&d(Ok, true, true), true, true, false), Want::Out);
        assert_eq!(
            want(&d(Unknown, false, false), false, true, false),
            Want::Out
        );
        assert_eq!(
            want(&d(StuckOnReplica, false, true), false, true, false),
            Want::Out
        );
        assert_eq!(
            want(&d(NodeMissing, false, true), false, true, false),
            Want::Out
        );
        for v in [Disconnected, StaleMaster, Unknown] {
            assert_eq!(
                want(&d(v, false, true), false, true, false),
                Want::Shared,
                "{v}"
            );
            // Never in rotation since rolecall started: nothing to keep.
            assert_eq!(
                want(&d(v, false, true), false, false, false),
                Want::Out,
                "{v}"
            );
        }
        // Blind, holding the out of a node that was on a replica: still out.
        assert_eq!(want(&d(Unknown, false, true), false, true, true), Want::Out);
        assert_eq!(
            want(&d(Disconnected, false, true), false, true, true),
            Want::Shared
        );
    }

    #[test]
    fn registry_replies_in_both_protocols() {
        let r = rec(Want::In, true).encode();
        let resp2 = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(r.clone().into_bytes()),
            Value::BulkString(b"junk".to_vec()),
            Value::BulkString(b"not a record".to_vec()),
        ]);
        assert_eq!(parse_registry(Some(&resp2)).len(), 1);
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(r.into_bytes()),
        )]);
        assert_eq!(parse_registry(Some(&resp3)).len(), 1);
        assert!(parse_registry(Some(&Value::Nil)).is_empty());
    }
}
