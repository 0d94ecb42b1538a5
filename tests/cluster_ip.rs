//! Peers behind virtual IPs: a node that reaches each Redis server through a Kubernetes
//! ClusterIP (as the redis-ha chart announces one per pod) has sockets whose peer is the
//! virtual IP, not the server's address. rolecall places such a connection on the server whose
//! `CLIENT LIST` shows the node's own `ip:port` (kube-proxy's DNAT keeps the client's address),
//! and a connection nothing can place is reported, never counted against the node.
//!
//! The layout is the sidecar test's ([`PodNetns`]): the node and rolecall in a pod namespace,
//! the topology in a cluster namespace; the ClusterIPs are nftables DNAT rules there
//! ([`cluster_ips`]). A TCP proxy (HAProxy) cannot stand in for a ClusterIP there, since the
//! server sees the proxy's address instead of the node's: a node behind per-server TCP proxies
//! (the last test, on loopback) is placed by the `run_id` rolecall reads through the proxy.
//! Needs root, `ip`, `nft`, `redis-server`, `redis-sentinel` and `haproxy`.

mod support;

use std::time::Duration;

use support::{
    DemoNode, Haproxy, PodNetns, RedisServer, Rolecall, RolecallConfig, Topology, cluster_ips,
};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

fn group(status: &serde_json::Value) -> &serde_json::Value {
    &status["groups"][0]
}

/// A rolecall in the pod watching `node` by pid, on `topology`'s sentinels.
fn rolecall_for(pod: &PodNetns, topology: &Topology, node: &DemoNode) -> Rolecall {
    pod.run(|| config_for(pod, topology, node).start())
}

fn config_for(pod: &PodNetns, topology: &Topology, node: &DemoNode) -> RolecallConfig {
    RolecallConfig::new()
        .pid(node.pid())
        .topology(topology)
        .dump_from(pod.cluster())
}

#[test]
fn a_node_reaching_servers_through_cluster_ips_is_placed_by_client_list_and_drained_after_a_failover()
 {
    let pod = PodNetns::create();
    let topology = pod.run_in_cluster(|| Topology::builder().ip(pod.cluster_ip()).start());
    let (master, replica) =
        pod.run_in_cluster(|| (topology.master_addr(), topology.replicas()[0].addr()));
    let vips = cluster_ips(&pod, &[(master.port(), master), (replica.port(), replica)]);
    // The node knows the master only by its ClusterIP, as an application configured with a
    // per-pod Service name would.
    let node = pod.run(|| DemoNode::pin(vips[0]));
    let mut rolecall = rolecall_for(&pod, &topology, &node);

    let s = pod.run(|| rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT));
    assert_eq!(s["in_rotation"], true, "{s:#}");
    let conns = group(&s)["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!conns.is_empty(), "{s:#}");
    for c in &conns {
        assert_eq!(c["remote"], vips[0].to_string(), "{s:#}");
        assert_eq!(c["server"], master.to_string(), "{s:#}");
        assert_eq!(c["placed_by"], "client_list", "{s:#}");
    }
    assert_eq!(group(&s)["unplaced"], serde_json::json!([]), "{s:#}");

    let (old, new) = pod.run_in_cluster(|| topology.failover());
    assert_eq!((old, new), (master, replica));
    // Sentinel demotes the old master; the node redials the same ClusterIP and is on a replica.
    let s = pod.run(|| rolecall.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT));
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let conns = group(&s)["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The node's new connection: placed on the old master by its CLIENT LIST, or, while the
    // server has not accepted it yet, by the run_id through the ClusterIP (one backend here).
    assert!(
        conns.iter().any(|c| c["server"] == old.to_string()
            && c["remote"] == vips[0].to_string()
            && (c["placed_by"] == "client_list" || c["placed_by"] == "run_id")),
        "{s:#}"
    );
    // Once the server lists it, CLIENT LIST places it (the pinned node redials after every
    // READONLY, so its connections come and go).
    let old_s = old.to_string();
    let s = pod.run(|| {
        rolecall.wait_for_status("a connection placed by CLIENT LIST", VERDICT_TIMEOUT, |t| {
            group(t)["connections"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["placed_by"] == "client_list" && c["server"] == old_s)
            })
        })
    });
    assert_eq!(s["verdict"], "stuck_on_replica", "{s:#}");
    let (code, body) = pod.run(|| rolecall.http_get("/readyz"));
    assert_eq!(code, 503, "/readyz: {body}\n{}", rolecall.report(None));
}

#[test]
fn a_connection_nothing_can_place_is_reported_and_never_takes_the_node_out() {
    let pod = PodNetns::create();
    let topology = pod.run_in_cluster(|| Topology::builder().ip(pod.cluster_ip()).start());
    let master = pod.run_in_cluster(|| topology.master_addr());
    // A Redis the topology does not know, which does not answer INFO, behind a ClusterIP on the
    // master's port: rolecall cannot tell where the node's connection goes.
    let other = pod.run_in_cluster(|| {
        RedisServer::start_on(pod.cluster_ip(), &["--rename-command", "INFO", ""])
    });
    let hidden = cluster_ips(&pod, &[(master.port(), other.addr())])[0];
    let node = pod.run(|| DemoNode::pin(hidden));
    let config = config_for(&pod, &topology, &node).check("unknown_hold", "\"3s\"");
    let mut rolecall = pod.run(|| config.start());

    let s = pod.run(|| rolecall.wait_for_verdict("unknown", VERDICT_TIMEOUT));
    let unplaced = group(&s)["unplaced"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(unplaced.len(), 1, "{s:#}");
    assert_eq!(unplaced[0]["remote"], hidden.to_string(), "{s:#}");
    let why = unplaced[0]["why"].as_str().unwrap_or("");
    assert!(why.contains("no server lists"), "{why}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .contains("could not be placed"),
        "{s:#}"
    );
    // Held (here the starting state), then failed open after `unknown_hold`: rolecall never
    // decides against the node on a connection it cannot place.
    let s = pod.run(|| {
        rolecall.wait_for_status("fail open", VERDICT_TIMEOUT, |t| t["in_rotation"] == true)
    });
    assert_eq!(s["verdict"], "unknown", "{s:#}");
    let s = pod.run(|| {
        rolecall.wait_for_status("more checks", VERDICT_TIMEOUT, |t| {
            t["checks"].as_u64().unwrap_or(0) >= s["checks"].as_u64().unwrap_or(0) + 4
        })
    });
    assert_eq!(
        (s["verdict"].as_str(), s["in_rotation"].as_bool()),
        (Some("unknown"), Some(true)),
        "{s:#}"
    );
}

/// One TCP proxy per server (HAProxy frontends on 127.0.0.2, each on its server's port): the
/// servers see HAProxy's address, not the node's, so `CLIENT LIST` cannot place the node's
/// connections; `INFO` through each proxy names its one server's `run_id`.
const PER_SERVER_PROXIES: &str = r#"
global
    stats socket "${RUNTIME_API}" mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h

frontend unused
    bind "${FRONTEND}"
    default_backend master

frontend to_master
    bind "${MASTER_PROXY}"
    default_backend master

frontend to_replica
    bind "${REPLICA_PROXY}"
    default_backend replica

backend master
    server master "${MASTER}"

backend replica
    server replica "${REPLICA}"
"#;

#[test]
fn a_node_reaching_servers_through_per_server_tcp_proxies_is_placed_by_run_id_and_drained_after_a_failover()
 {
    let topology = Topology::start(1, 3);
    let (master, replica) = (topology.master_addr(), topology.replicas()[0].addr());
    let proxy_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let proxied = |a: std::net::SocketAddr| std::net::SocketAddr::new(proxy_ip, a.port());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("proxies.cfg");
    std::fs::write(&config, PER_SERVER_PROXIES).expect("write the HAProxy config");
    let _proxies = Haproxy::config(&config)
        .env("MASTER_PROXY", &proxied(master).to_string())
        .env("REPLICA_PROXY", &proxied(replica).to_string())
        .env("MASTER", &master.to_string())
        .env("REPLICA", &replica.to_string())
        .start();
    let node = DemoNode::pin(proxied(master));
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();

    let s = rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let conns = group(&s)["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!conns.is_empty(), "{s:#}");
    for c in &conns {
        assert_eq!(c["remote"], proxied(master).to_string(), "{s:#}");
        assert_eq!(c["server"], master.to_string(), "{s:#}");
        assert_eq!(c["placed_by"], "run_id", "{s:#}");
    }

    let (old, _) = topology.failover();
    assert_eq!(old, master);
    let s = rolecall.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let conns = group(&s)["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conns
            .iter()
            .any(|c| c["server"] == old.to_string() && c["placed_by"] == "run_id"),
        "{s:#}"
    );
}
