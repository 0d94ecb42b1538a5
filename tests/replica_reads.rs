//! Intended replica reads (`[[redis]] replica_reads = true`, TESTING.md row 41), with real
//! processes on loopback: a `redis-server` master and replica watched by three sentinels, a demo
//! node pinned to the master with a read connection on the replica, and the `rolecall` binary.
//!
//! With the setting on, the node's read connection on the replica keeps it in; once Sentinel
//! fails over and demotes the old master, the node's command connection (pinned, redialled to the
//! same address) is on a replica and sends its writes there (`INCR`, refused with `READONLY`):
//! out. With the setting off, the same node is `stuck_on_replica` from the start. And the kill
//! repair leaves the node's intended read connection alone.
//!
//! With one replica, the failover promotes the server the node reads from, so after it the
//! node's read connection (redialled to the same address) is on the new master and its command
//! connection is on the old one: the rule that takes it out is the write on a replica (`cmd=` of
//! `CLIENT LIST`), not the missing master connection (the table tests in
//! `src/verdict/reads.rs` cover that one).

mod support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use support::{DemoNode, Rolecall, RolecallConfig, Topology};

/// From start to a confirmed verdict: a few checks of 250 ms; generous for a loaded two-core
/// machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// Checks a node must stay `ok` through, observation by observation.
const STAYS_OK_CHECKS: u64 = 8;

fn verdict(status: &serde_json::Value) -> &str {
    status["verdict"].as_str().unwrap_or("")
}

fn reason(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or("")
}

/// The servers (`host:port`) of the node's connections that rolecall routed to group 0, sorted.
fn connection_servers(status: &serde_json::Value) -> Vec<String> {
    let mut servers: Vec<String> = status["groups"][0]["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["server"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    servers.sort();
    servers.dedup();
    servers
}

fn sorted(addrs: &[SocketAddr]) -> Vec<String> {
    let mut v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    v.sort();
    v
}

/// Asserts `/readyz` answers `code`.
fn assert_readyz(rolecall: &Rolecall, code: u16) {
    let (status, body) = rolecall.http_get("/readyz");
    assert_eq!(
        status,
        code,
        "/readyz: {status} {body}\n{}",
        rolecall.report(None)
    );
}

/// Waits until the node's verdict is `ok` with connections on both `servers`, then watches
/// [`STAYS_OK_CHECKS`] more checks: each one's own observation must be `ok` too.
fn wait_ok_and_staying(rolecall: &mut Rolecall, servers: &[SocketAddr]) -> serde_json::Value {
    let want = sorted(servers);
    let s = rolecall.wait_for_status(
        &format!("verdict ok with connections on {want:?}"),
        VERDICT_TIMEOUT,
        |s| verdict(s) == "ok" && connection_servers(s) == want,
    );
    let from = s["checks"].as_u64().unwrap_or(0);
    let not_ok = RefCell::new(Vec::new());
    let last = rolecall.wait_for_status(
        &format!("{STAYS_OK_CHECKS} more checks"),
        VERDICT_TIMEOUT,
        |s| {
            if s["observed"] != "ok" || s["verdict"] != "ok" {
                not_ok.borrow_mut().push(format!("{s:#}"));
            }
            s["checks"].as_u64().unwrap_or(0) >= from + STAYS_OK_CHECKS
        },
    );
    let not_ok = not_ok.into_inner();
    assert!(
        not_ok.is_empty(),
        "the node did not stay ok ({} of the statuses): first:\n{}",
        not_ok.len(),
        not_ok[0]
    );
    last
}

#[test]
fn with_replica_reads_a_node_reading_from_the_replica_stays_in_until_its_writes_go_to_the_demoted_old_master()
 {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin_with_reads(master, replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .node_name("reader")
        .topology_with(&topology, "replica_reads = true\n")
        .start();

    // The command connection on the master, the read connection on the replica: in.
    let s = wait_ok_and_staying(&mut rolecall, &[master, replica]);
    assert_eq!(s["in_rotation"], true, "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&format!("master {master}")) && why.contains("read on purpose"),
        "the reason names the master and the intended reads: {why}"
    );
    assert_readyz(&rolecall, 200);

    // Sentinel promotes the replica and, 10-20 s later, demotes the old master and kills its
    // clients; the pinned command connection redials the old master, now a replica, and its
    // INCRs are refused there (READONLY).
    let (old, new) = topology.failover();
    assert_eq!((old, new), (master, replica));
    topology.wait_demoted(old);
    let s = rolecall.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains("replica reads are on")
            && why.contains(&format!("-> {old}"))
            && why.contains("a write (incr)")
            && why.contains(&new.to_string()),
        "the reason says replica reads are on, names the old master {old} the node writes to, its write and Sentinel's master {new}: {why}"
    );
    assert_readyz(&rolecall, 503);
}

#[test]
fn without_replica_reads_the_same_node_is_stuck_on_replica() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin_with_reads(master, replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .node_name("reader")
        .topology(&topology)
        .start();

    let s = rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(connection_servers(&s), sorted(&[master, replica]), "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&format!("-> {replica} goes to a replica")) && !why.contains("replica reads"),
        "the default rule, unchanged: {why}"
    );
    assert_readyz(&rolecall, 503);
}

#[test]
fn with_replica_reads_the_kill_repair_leaves_a_read_connection_alone() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin_with_reads(master, replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .node_name("reader")
        .topology_with(&topology, "replica_reads = true\n")
        .extra("[repair]\nkill_stale_connections = true\nkill_interval = \"200ms\"\n")
        .start();

    // A kill round every 200 ms would have cut the read connection many times over these checks.
    let s = wait_ok_and_staying(&mut rolecall, &[master, replica]);
    assert_eq!(s["in_rotation"], true, "{s:#}");
    let reads: Vec<String> = node
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("reading "))
        .collect();
    assert_eq!(
        reads,
        vec![format!("reading {replica}")],
        "one read connection, never cut: {s:#}"
    );
}
