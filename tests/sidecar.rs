//! The Kubernetes sidecar mode (`[node] namespace = true`) end to end, in network namespaces
//! the test makes: rolecall judges every established TCP connection of its own network
//! namespace (except its own), as a sidecar sharing only the pod's network namespace with the
//! node must, since it cannot see the node's processes.
//!
//! The layout is a cluster's, in two namespaces ([`PodNetns`]) joined by a veth pair: the pod
//! holds the node (a demo node) and rolecall, and reaches Redis over its `eth0`; the cluster
//! namespace, standing for the rest of the cluster, holds the other end of the pair and the
//! Redis topology (a master, a replica, three sentinels) listening on it, as Redis runs in other
//! pods. Inside the pod, the sentinels' and the replica's own connections (to the replica and
//! the master) would be taken for the node's, which no pod of a real node holds. So the cluster
//! namespace holds the unrelated connections, to the very addresses and ports the node uses:
//! the sentinels' links to both servers, the replica's replication link, and a demo node pinned
//! to the replica (plus, in the second test, one pinned to the master, which ends up on a
//! replica after the failover). Seen from inside the pod, any one of them would take the node
//! out; none may show in `/status`.
//!
//! Each case has its own pair of namespaces and topology (the two tests run in parallel),
//! because in this mode a pinned node and a following node in one namespace would be judged as
//! one node:
//!
//! - a node pinned to the master's address, after `SENTINEL FAILOVER`: out (`/readyz` 503,
//!   `stuck_on_replica` once Sentinel demotes the old master and the node redials it);
//! - a node that follows Sentinel: in rotation throughout the failover (`/readyz` never other
//!   than 200), and `ok` on the new master once the old one is a replica.
//!
//! rolecall and the node are spawned from a thread inside the pod, and the test talks to
//! rolecall's HTTP port from inside the pod too; the topology and the outside demo nodes are
//! spawned from a thread inside the cluster namespace, and every Redis call of the test (the
//! failover, `CLIENT LIST`, the waits on `ROLE`, rolecall's timeout dumps) is made from there,
//! so the test's own Redis calls never show in the pod. Nothing runs in, or talks through, the
//! host's network namespace. Needs root, `ip` (iproute2), `redis-server` and `redis-sentinel`;
//! fails with a message saying so when one is missing.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{DemoNode, PodNetns, ReadyWatch, Rolecall, RolecallConfig, Topology};

/// From start (or from a change of the node's connections) to a confirmed verdict: a few checks
/// of 250 ms; generous for a loaded two-core machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// Checks rolecall must complete, still `ok`, once every outside connection is in place.
const MORE_CHECKS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Helpers

fn verdict(status: &serde_json::Value) -> &str {
    status["verdict"].as_str().unwrap_or("")
}

fn reason(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or("")
}

fn checks(status: &serde_json::Value) -> u64 {
    status["checks"].as_u64().unwrap_or(0)
}

/// The node's connections rolecall placed on the group's servers, as `(local, server)`.
fn connections(status: &serde_json::Value) -> Vec<(String, String)> {
    status["groups"][0]["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let field = |k: &str| c[k].as_str().unwrap_or("").to_owned();
                    (field("local"), field("server"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A rolecall in `pod` judging every connection of the pod (`namespace = true`), on the
/// topology's sentinels, started from inside the pod (its timeout dumps ask the topology from
/// the cluster namespace).
fn sidecar(pod: &PodNetns, topology: &Topology, grace: Option<&str>) -> Rolecall {
    let mut config = RolecallConfig::new()
        .node_selector("namespace", "true")
        .node_name("pod")
        .topology(topology)
        .dump_from(pod.cluster());
    if let Some(grace) = grace {
        config = config.check("stale_master_grace", &format!("{grace:?}"));
    }
    pod.run(|| config.start())
}

/// `GET /readyz` from inside the pod.
fn readyz(pod: &PodNetns, rolecall: &Rolecall) -> (u16, String) {
    pod.run(|| rolecall.http_get("/readyz"))
}

/// The topology for `pod`: started in the cluster namespace, listening on the cluster end of
/// the link.
fn topology_for(pod: &PodNetns) -> Topology {
    pod.run_in_cluster(|| Topology::builder().ip(pod.cluster_ip()).start())
}

/// The addresses (`IP:PORT`, the client's end) of the connections named `name` on `server`,
/// from its `CLIENT LIST` (asked from the cluster namespace).
fn client_addrs(
    pod: &PodNetns,
    topology: &Topology,
    server: SocketAddr,
    name: &str,
) -> Vec<String> {
    pod.run_in_cluster(|| topology.server(server).clients_named(name))
        .into_iter()
        .filter_map(|c| c.get("addr").cloned())
        .collect()
}

/// The `CLIENT LIST` of `server` (asked from the cluster namespace).
fn client_list(
    pod: &PodNetns,
    topology: &Topology,
    server: SocketAddr,
) -> Vec<std::collections::BTreeMap<String, String>> {
    pod.run_in_cluster(|| topology.server(server).client_list())
}

/// Asserts that `/status` lists connections to `server` only, each from the pod's address:
/// none of the same server's clients in the cluster namespace (sentinels, replication, the
/// outside demo nodes), which reach the same address and port.
fn assert_from_the_pod(pod: &PodNetns, status: &serde_json::Value, server: SocketAddr) {
    let listed = connections(status);
    let pod_ip = pod.pod_ip().to_string();
    let from_the_pod = |(local, to): &(String, String)| {
        local.rsplit_once(':').map(|(ip, _)| ip) == Some(pod_ip.as_str())
            && *to == server.to_string()
    };
    assert!(
        !listed.is_empty() && listed.iter().all(from_the_pod),
        "/status lists connections from the pod ({pod_ip}) to {server} only: {listed:?}\n{status:#}"
    );
}

/// Asserts that what `/status` lists is exactly the node's connection to `server`: the one
/// `CLIENT LIST` shows under the node's name, from the pod's address. For a node that keeps its
/// connection (a pinned node redials after every error reply, so its connection changes faster
/// than a status can be compared with `CLIENT LIST`).
fn assert_only_the_pods_connection(
    pod: &PodNetns,
    topology: &Topology,
    status: &serde_json::Value,
    node: &DemoNode,
    server: SocketAddr,
) {
    assert_from_the_pod(pod, status, server);
    let expected: Vec<(String, String)> = client_addrs(pod, topology, server, &node.client_name())
        .into_iter()
        .map(|a| (a, server.to_string()))
        .collect();
    assert_eq!(
        connections(status),
        expected,
        "/status lists the node's connection to {server} (CLIENT LIST: {:?}) and nothing else\n{status:#}",
        client_list(pod, topology, server)
    );
}

/// Asserts that the server at `addr` has, in the cluster namespace, clients that a rolecall
/// seeing that namespace would take for the node's: at least `at_least` connections from the
/// cluster end of the link (the sentinels' and the replica's, and the outside demo nodes).
fn assert_outside_clients(pod: &PodNetns, topology: &Topology, addr: SocketAddr, at_least: usize) {
    let cluster_ip = format!("{}:", pod.cluster_ip());
    let clients = client_list(pod, topology, addr);
    let outside = clients
        .iter()
        .filter(|c| c.get("addr").is_some_and(|a| a.starts_with(&cluster_ip)))
        .count();
    assert!(
        outside >= at_least,
        "{addr} has at least {at_least} clients in the cluster namespace ({cluster_ip}...), has \
         {outside}: {clients:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_sidecar_sharing_only_the_pods_network_namespace_drains_the_pinned_node_after_a_failover() {
    // Declared first, so it goes last: every process inside is killed before it is deleted.
    let pod = PodNetns::create();
    let topology = topology_for(&pod);
    let (master, replica) =
        pod.run_in_cluster(|| (topology.master_addr(), topology.replicas()[0].addr()));

    // Outside the pod: a client on the replica, besides the sentinels and the replication link.
    let outside = pod.run_in_cluster(|| DemoNode::pin(replica));
    // Inside: the node, pinned to the master's address, and its sidecar.
    let node = pod.run(|| DemoNode::pin(master));
    let mut rolecall = sidecar(&pod, &topology, None);

    let s = pod.run(|| rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT));
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_eq!(s["node"]["pids"], serde_json::json!([]), "{s:#}");
    assert_outside_clients(&pod, &topology, replica, 3);
    assert!(
        !client_addrs(&pod, &topology, replica, &outside.client_name()).is_empty(),
        "the outside client is on the replica"
    );
    // Checks done with every outside connection in place: still ok, still only the node's.
    let s = pod.run(|| {
        rolecall.wait_for_status("more checks", VERDICT_TIMEOUT, |t| {
            checks(t) >= checks(&s) + MORE_CHECKS
        })
    });
    assert_eq!(verdict(&s), "ok", "{s:#}");
    assert_only_the_pods_connection(&pod, &topology, &s, &node, master);
    let (code, body) = readyz(&pod, &rolecall);
    assert_eq!(code, 200, "/readyz: {body}\n{}", rolecall.report(None));

    let (old, new) = pod.run_in_cluster(|| topology.failover());
    assert_eq!((old, new), (master, replica));

    // Once Sentinel demotes the old master and kills its clients, the node redials the same
    // address and is on a replica.
    let s = pod.run(|| rolecall.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT));
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&old.to_string()) && why.contains(&new.to_string()),
        "the reason names the replica {old} (the old master) and Sentinel's master {new}: {why}"
    );
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    assert_from_the_pod(&pod, &s, old);
    let (code, body) = readyz(&pod, &rolecall);
    assert_eq!(code, 503, "/readyz: {body}\n{}", rolecall.report(None));
}

#[test]
fn a_sidecar_sharing_only_the_pods_network_namespace_keeps_a_node_following_sentinel_in_through_a_failover()
 {
    let pod = PodNetns::create();
    let topology = topology_for(&pod);
    let (master, replica) =
        pod.run_in_cluster(|| (topology.master_addr(), topology.replicas()[0].addr()));

    // Outside the pod: a client on each server; after the failover the one on the old master is
    // on a replica.
    let on_replica = pod.run_in_cluster(|| DemoNode::pin(replica));
    let on_master = pod.run_in_cluster(|| DemoNode::pin(master));
    // Inside: a node that asks Sentinel for the master before every connection.
    let node = pod.run(|| DemoNode::follow(&topology));
    // The default, spelt out: the node sits on the old master until Sentinel demotes it, about
    // 10 s after the failover.
    let mut rolecall = sidecar(&pod, &topology, Some("15s"));
    let watch = {
        // A thread started inside the pod stays there.
        let addr = rolecall.http_addr();
        pod.run(|| ReadyWatch::start(addr))
    };

    let s = pod.run(|| rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT));
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_outside_clients(&pod, &topology, replica, 3);
    let s = pod.run(|| {
        rolecall.wait_for_status("more checks", VERDICT_TIMEOUT, |t| {
            checks(t) >= checks(&s) + MORE_CHECKS
        })
    });
    assert_eq!(verdict(&s), "ok", "{s:#}");
    assert_only_the_pods_connection(&pod, &topology, &s, &node, master);

    let (old, new) = pod.run_in_cluster(|| topology.failover());
    assert_eq!((old, new), (master, replica));
    // The old master becomes a replica; the outside client pinned to it redials it.
    pod.run_in_cluster(|| topology.wait_demoted(old));

    // The node: on the new master, in rotation, and still so after more checks with the
    // outside clients on both servers.
    let new_s = new.to_string();
    let s = pod.run(|| {
        rolecall.wait_for_status(
            &format!("the node ok with every connection on {new}"),
            DEMOTED_VERDICT_TIMEOUT,
            |t| {
                let cs = connections(t);
                verdict(t) == "ok" && !cs.is_empty() && cs.iter().all(|(_, s)| *s == new_s)
            },
        )
    });
    wait_for_outside_client(&pod, &topology, old, &on_master);
    assert!(
        !client_addrs(&pod, &topology, new, &on_replica.client_name()).is_empty(),
        "the outside client pinned to {new} is on it"
    );
    let s = pod.run(|| {
        rolecall.wait_for_status("more checks", VERDICT_TIMEOUT, |t| {
            checks(t) >= checks(&s) + MORE_CHECKS
        })
    });
    assert_eq!(verdict(&s), "ok", "{s:#}");
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_only_the_pods_connection(&pod, &topology, &s, &node, new);
    let (code, body) = readyz(&pod, &rolecall);
    assert_eq!(code, 200, "/readyz: {body}\n{}", rolecall.report(None));

    // ... and it never left rotation, through the whole stale-master window.
    watch
        .finish()
        .assert_never_out("the node", &rolecall.report(None));
}

/// Waits until the outside client pinned to `addr` is connected to it again (it redials after
/// Sentinel kills the old master's clients).
fn wait_for_outside_client(
    pod: &PodNetns,
    topology: &Topology,
    addr: SocketAddr,
    client: &DemoNode,
) {
    support::wait_until(
        VERDICT_TIMEOUT,
        &format!("the outside client {} on {addr}", client.name()),
        || !client_addrs(pod, topology, addr, &client.client_name()).is_empty(),
    );
}
