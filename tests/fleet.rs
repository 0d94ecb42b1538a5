//! The fleet guard (rows 33 and 42 of the fault matrix), with three nodes and three rolecalls
//! on loopback:
//!
//! - the sentinels re-pointed at another topology under the same master name (`SENTINEL
//!   REMOVE`/`MONITOR`) while every node stays on the first: every node is `disconnected`, and
//!   at no moment are all three out of rotation (agent and `/readyz`); the guard keeps two in
//!   (floor ceil(0.5 × 3) = 2) and lets the third out, the same two on every rolecall, and says
//!   so in `/status`, the metrics, the agent's description and the log;
//! - the same with the registry refused (an ACL without `HGETALL`): today's rules, every node
//!   goes out, each saying the registry is unreachable — the other side of the guard;
//! - the seed incident among healthy nodes: the node pinned to the old master goes out (first
//!   as `stale_master` once its grace ran out, the floor holding without it, then
//!   `stuck_on_replica`), while the nodes that follow Sentinel never leave rotation.

mod support;

use std::time::{Duration, Instant};

use support::{DemoNode, ReadyWatch, RedisServer, Rolecall, RolecallConfig, Topology};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the re-pointed fleet is watched: well past the disconnected grace (2 s here).
const WATCH_FOR: Duration = Duration::from_secs(12);
const POLL: Duration = Duration::from_millis(100);

fn first_word(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

/// Three nodes pinned to `topology`'s master, each with its rolecall (`n1`..`n3`), all `ok`.
fn pinned_fleet(topology: &Topology) -> (Vec<DemoNode>, Vec<Rolecall>) {
    let nodes: Vec<DemoNode> = (0..3)
        .map(|_| DemoNode::pin(topology.master_addr()))
        .collect();
    let mut rolecalls: Vec<Rolecall> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            RolecallConfig::new()
                .pid(n.pid())
                .node_name(&format!("n{}", i + 1))
                .topology(topology)
                .check("disconnected_grace", "\"2s\"")
                .start()
        })
        .collect();
    for rc in &mut rolecalls {
        rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    }
    (nodes, rolecalls)
}

/// Whether each rolecall has its node in rotation, by the agent and by `/readyz`.
fn rotation(rolecalls: &[Rolecall]) -> Vec<(bool, bool)> {
    rolecalls
        .iter()
        .map(|rc| {
            let agent = first_word(&rc.agent(Some("\n"))) == "up";
            let ready = rc.http_get("/readyz").0 == 200;
            (agent, ready)
        })
        .collect()
}

fn reports(rolecalls: &[Rolecall]) -> String {
    rolecalls
        .iter()
        .map(|rc| rc.report(None))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sentinels_re_pointed_at_another_topology_never_take_the_whole_fleet_out() {
    let topology = Topology::start(1, 3);
    let other = RedisServer::start();
    let (_nodes, mut rolecalls) = pinned_fleet(&topology);

    topology.repoint(&other.addr().ip().to_string(), other.port());
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < WATCH_FOR {
        let r = rotation(&rolecalls);
        assert!(
            r.iter().any(|(agent, _)| *agent),
            "every agent takes its node out after {:?}: {r:?}\n{}",
            start.elapsed(),
            reports(&rolecalls)
        );
        assert!(
            r.iter().any(|(_, ready)| *ready),
            "every /readyz is 503 after {:?}: {r:?}\n{}",
            start.elapsed(),
            reports(&rolecalls)
        );
        rounds += 1;
        std::thread::sleep(POLL);
    }
    assert!(rounds >= 50, "polled throughout ({rounds} rounds)");

    // Settled: two kept in, one out (the first to decide, while the others were still in),
    // and every rolecall computes the same two.
    let other_s = other.addr().to_string();
    let statuses: Vec<serde_json::Value> = rolecalls
        .iter_mut()
        .map(|rc| {
            rc.wait_for_status("the guard settled", VERDICT_TIMEOUT, |s| {
                s["verdict"] == "disconnected"
                    && s["groups"][0]["master"] == other_s
                    && matches!(s["fleet"]["guard"].as_str(), Some("holding" | "released"))
            })
        })
        .collect();
    let kept = statuses[0]["fleet"]["kept"].clone();
    let out: Vec<usize> = (0..3)
        .filter(|i| statuses[*i]["fleet"]["guard"] == "released")
        .collect();
    assert_eq!(out.len(), 1, "one node out: {statuses:#?}");
    let out = out[0];
    let names: Vec<String> = (1..=3)
        .filter(|i| i - 1 != out)
        .map(|i| format!("n{i}"))
        .collect();
    assert_eq!(kept, serde_json::json!(names), "{statuses:#?}");
    let r = rotation(&rolecalls);
    for (i, s) in statuses.iter().enumerate() {
        let f = &s["fleet"];
        assert_eq!(f["name"], topology.master_name(), "{s:#}");
        assert_eq!(
            f["registry"], other_s,
            "the registry is on Sentinel's master: {s:#}"
        );
        assert_eq!(
            (f["members"].as_u64(), f["floor"].as_u64()),
            (Some(3), Some(2)),
            "{s:#}"
        );
        assert_eq!(
            f["kept"], kept,
            "every rolecall keeps the same nodes: {s:#}"
        );
        let holding = i != out;
        assert_eq!(
            f["guard"],
            if holding { "holding" } else { "released" },
            "{s:#}"
        );
        assert_eq!(s["in_rotation"], holding, "{s:#}");
        assert_eq!(
            r[i],
            (holding, holding),
            "agent and /readyz of n{}: {s:#}",
            i + 1
        );
    }
    let held = if out == 0 { 1 } else { 0 };
    // Said on every output: the agent's description, the metrics, one log line.
    let reply = rolecalls[held].agent(Some("\n"));
    assert!(
        reply.starts_with("up #disconnected") && reply.contains("fleet guard"),
        "{reply:?}"
    );
    let metrics = rolecalls[held].http_get("/metrics").1;
    for line in [
        "rolecall_fleet_guard{state=\"holding\"} 1",
        "rolecall_fleet_members 3",
        "rolecall_fleet_floor 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // One line per change of the guard's state, not per check: it starts holding once (after
    // waiting, maybe, while another rolecall decided) and stays.
    let log = rolecalls[held].stderr();
    let guard_lines: Vec<&str> = log.lines().filter(|l| l.contains("fleet=")).collect();
    let holding = guard_lines
        .iter()
        .filter(|l| l.contains("guard=holding"))
        .count();
    assert!(
        holding == 1 && guard_lines.len() <= 2,
        "one log line per change:\n{log}"
    );
    let log = rolecalls[out].stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("guard=released") && l.contains("lets it out")),
        "{log}"
    );
    // The registry itself: one record per node, on Sentinel's master.
    let key = format!("rolecall:fleet:{}", topology.master_name());
    let fields = other.cli_str(&["HKEYS", &key]);
    for n in ["n1", "n2", "n3"] {
        assert!(fields.contains(n), "{n} in {fields}");
    }
}

#[test]
fn with_the_registry_refused_every_node_goes_out_by_todays_rules_and_says_why() {
    let topology = Topology::start(1, 3);
    let other = RedisServer::start();
    // rolecall may write its record but not read the fleet's.
    other.cli(&["ACL", "SETUSER", "default", "-hgetall"]);
    let (_nodes, mut rolecalls) = pinned_fleet(&topology);

    topology.repoint(&other.addr().ip().to_string(), other.port());
    for rc in &mut rolecalls {
        let s = rc.wait_for_status("out, the registry unreachable", VERDICT_TIMEOUT, |s| {
            s["in_rotation"] == false
        });
        assert_eq!(s["verdict"], "disconnected", "{s:#}");
        assert_eq!(s["fleet"]["guard"], "unreachable", "{s:#}");
        let why = s["reason"].as_str().unwrap_or("");
        assert!(
            why.contains("fleet registry unreachable") && why.contains("NOPERM"),
            "{why}"
        );
    }
    assert_eq!(
        rotation(&rolecalls),
        vec![(false, false); 3],
        "{}",
        reports(&rolecalls)
    );
}

#[test]
fn the_pinned_node_among_healthy_ones_still_goes_out() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let followers = [DemoNode::follow(&topology), DemoNode::follow(&topology)];
    let pinned = DemoNode::pin(master);
    let mut kept: Vec<Rolecall> = followers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            RolecallConfig::new()
                .pid(n.pid())
                .node_name(&format!("follower{}", i + 1))
                .topology(&topology)
                .start()
        })
        .collect();
    // A short grace: the pinned node's `stale_master` runs out before Sentinel demotes the old
    // master, so the guard decides it, with the followers still in rotation.
    let mut out = RolecallConfig::new()
        .pid(pinned.pid())
        .node_name("pinned")
        .topology(&topology)
        .check("stale_master_grace", "\"1s\"")
        .start();
    for rc in kept.iter_mut().chain(std::iter::once(&mut out)) {
        rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    }
    let watches: Vec<ReadyWatch> = kept
        .iter()
        .map(|rc| ReadyWatch::start(rc.http_addr()))
        .collect();

    let (old, new) = topology.failover();
    assert_eq!(old, master);
    let s = out.wait_for_status("stale_master, out", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "stale_master" && s["in_rotation"] == false
    });
    assert_eq!(s["fleet"]["guard"], "released", "{s:#}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("lets it out"),
        "{s:#}"
    );
    let s = out.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(s["fleet"]["guard"], "idle", "node-local evidence: {s:#}");
    assert_eq!(first_word(&out.agent(Some("\n"))), "drain");
    assert_eq!(out.http_get("/readyz").0, 503);
    let new_s = new.to_string();
    for rc in &mut kept {
        rc.wait_for_ok_on(&new_s, DEMOTED_VERDICT_TIMEOUT);
    }
    for (rc, w) in kept.iter().zip(watches) {
        w.finish().assert_never_out("a follower", &rc.report(None));
    }
}
