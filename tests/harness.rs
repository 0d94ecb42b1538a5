//! Tests of the test harness itself (`tests/support`), without the daemon: the topology really
//! fails over, and the demo nodes behave as the rolecall tests assume.

mod support;

use std::time::Duration;

use support::{DemoNode, RedisServer, Topology, value_to_string, wait_until};

const WRITES_TIMEOUT: Duration = Duration::from_secs(20);

/// The demo node's counter on `server` (0 if absent or unreadable).
fn count(server: &RedisServer, node: &DemoNode) -> i64 {
    server
        .try_cli(&["GET", &node.count_key()])
        .ok()
        .and_then(|v| value_to_string(&v).parse().ok())
        .unwrap_or(0)
}

/// Waits until the node's counter on `server` has grown by `n` (its writes land there).
fn wait_for_writes(server: &RedisServer, node: &DemoNode, n: i64) {
    let start = count(server, node);
    wait_until(
        WRITES_TIMEOUT,
        &format!("{n} more writes from {} on {}", node.name(), server.addr()),
        || count(server, node) >= start + n,
    );
}

#[test]
fn failover_promotes_the_replica_and_demotes_the_old_master() {
    let topology = Topology::start(1, 3);
    let first = topology.servers()[0].addr();
    assert_eq!(topology.master_addr(), first);
    assert_eq!(topology.server(first).role().as_deref(), Some("master"));

    let (old, new) = topology.failover();

    assert_eq!(old, first);
    assert_eq!(new, topology.servers()[1].addr());
    assert_eq!(topology.master_addr(), new);
    topology.wait_demoted(old);
    assert_eq!(topology.server(old).role().as_deref(), Some("slave"));
    assert_eq!(topology.wait_settled(), new);
}

#[test]
fn a_pinned_node_keeps_redialling_the_old_master_after_failover() {
    let topology = Topology::start(1, 3);
    let first = topology.master_addr();
    let mut node = DemoNode::pin_with_pubsub(first, first);
    let old_master = topology.server(first);
    wait_for_writes(old_master, &node, 3);
    assert_eq!(old_master.clients_named(&node.client_name()).len(), 1);
    let subscribers = old_master.clients_named(&node.subscriber_client_name());
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0]["sub"], "1");

    let (old, new) = topology.failover();
    topology.wait_demoted(old);

    // Sentinel's CLIENT KILL on the demoted master drops both connections; the node redials
    // the same address and now gets READONLY on every write.
    wait_until(
        WRITES_TIMEOUT,
        "the pinned node to hit READONLY on the demoted master",
        || node.stderr_tail(20).contains("READONLY"),
    );
    let new_master = topology.server(new);
    wait_until(
        WRITES_TIMEOUT,
        "both of the node's connections to be back on the old master",
        || {
            old_master.clients_named(&node.client_name()).len() == 1
                && old_master
                    .clients_named(&node.subscriber_client_name())
                    .len()
                    == 1
        },
    );
    assert!(new_master.clients_named(&node.client_name()).is_empty());
    assert!(
        node.connections().iter().all(|&a| a == old),
        "{}",
        node.report()
    );
    assert!(node.connections().len() >= 2, "{}", node.report());
    assert!(node.is_running());
}

#[test]
fn following_nodes_move_to_the_new_master_after_failover() {
    let topology = Topology::start(1, 3);
    let follower = DemoNode::follow(&topology);
    let watcher = DemoNode::follow_watching(&topology);
    let first = topology.master_addr();
    wait_for_writes(topology.server(first), &follower, 3);
    wait_for_writes(topology.server(first), &watcher, 3);
    let watch_sessions = topology
        .sentinels()
        .iter()
        .map(|s| s.cli_str(&["CLIENT", "LIST"]))
        .filter(|list| list.contains(&format!("name={} ", watcher.watch_client_name())))
        .count();
    assert_eq!(watch_sessions, 1, "the watcher subscribes on one sentinel");

    let (old, new) = topology.failover();

    // The watcher moves on `+switch-master`. The plain follower only notices when the old
    // master, still writable, is demoted and Sentinel kills its clients (10–20 s later).
    let new_master = topology.server(new);
    for node in [&watcher, &follower] {
        wait_until(
            WRITES_TIMEOUT + Duration::from_secs(20),
            &format!("{} to connect to the new master", node.name()),
            || new_master.clients_named(&node.client_name()).len() == 1,
        );
        wait_for_writes(new_master, node, 3);
        assert_eq!(node.connections().last(), Some(&new), "{}", node.report());
    }
    assert!(
        topology
            .server(old)
            .clients_named(&follower.client_name())
            .is_empty(),
        "{}",
        follower.report()
    );
}

#[test]
fn a_demo_node_reports_its_acknowledged_writes_on_sigterm() {
    let server = RedisServer::start();
    let mut node = DemoNode::pin(server.addr());
    wait_for_writes(&server, &node, 5);

    let acked = node.terminate();

    // A write in flight at the signal may be applied but not counted.
    let applied = count(&server, &node);
    assert!(acked >= 5, "acked {acked}");
    assert!(
        applied == i64::try_from(acked).unwrap() || applied == i64::try_from(acked).unwrap() + 1,
        "acked {acked}, applied {applied}"
    );
}
