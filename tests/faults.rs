//! More rows of TESTING.md's fault matrix, end to end: conditions every node shares keep the
//! node in rotation (DEGRADED, rows 19 and 21), an unknown master name holds (row 14), and a
//! frozen master: probes are still answered at once, and a node left on it goes out after the
//! failover (row 4).

mod support;

use std::time::{Duration, Instant};

use support::{DemoNode, RolecallConfig, Topology, run_rolecall};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_master_refusing_writes_for_lack_of_replicas_or_memory_is_degraded_and_stays_in_rotation() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let master = topology.master();
    for (set, reset, code) in [
        (
            ["min-replicas-to-write", "5"],
            ["min-replicas-to-write", "0"],
            "NOREPLICAS",
        ),
        (["maxmemory", "1"], ["maxmemory", "0"], "OOM"),
    ] {
        master.cli(&["CONFIG", "SET", set[0], set[1]]);
        let status = rolecall.wait_for_verdict("degraded", VERDICT_TIMEOUT);
        assert_eq!(status["in_rotation"], true, "{status:#}");
        assert!(
            status["reason"].as_str().unwrap().contains(code),
            "{code}: {status:#}"
        );
        assert_eq!(rolecall.http_get("/readyz").0, 200);
        let reply = rolecall.agent(Some("\n"));
        assert!(
            reply.starts_with("up") && reply.contains("#degraded"),
            "{reply}"
        );
        master.cli(&["CONFIG", "SET", reset[0], reset[1]]);
        rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    }
}

#[test]
fn an_unknown_master_name_holds_and_check_says_so() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let config = || {
        RolecallConfig::new().pid(node.pid()).redis_group(
            "main",
            "no-such-master",
            &topology.sentinel_addrs(),
        )
    };
    let mut rolecall = config().start();
    let status = rolecall.wait_for_status("unknown", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "unknown" && s["checked"] == true
    });
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"no-such-master\" unknown to every sentinel"),
        "{status:#}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config().without_agent().without_http().to_toml()).unwrap();
    let out = run_rolecall(
        &["check", "--config", path.to_str().unwrap()],
        VERDICT_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.starts_with("ROLECALL UNKNOWN") && stdout.contains("unknown to every sentinel"),
        "{stdout}"
    );
}

#[test]
fn with_the_master_frozen_probes_answer_at_once_and_a_node_left_on_it_goes_out() {
    let mut topology = Topology::start(1, 3);
    let old = topology.master_addr();
    let node = DemoNode::pin(old);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("stale_master_grace", "\"2s\"")
        // The rule for a lone node (a fleet of one keeps its node in: tests/fleet.rs).
        .without_fleet_guard()
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    topology.server_mut(old).stop();
    // While the check loop's commands to the frozen master time out, probes answer from the
    // snapshot: each well below the 200 ms command timeout (the budget is generous for a loaded
    // machine; BENCHMARKS.md has no figure for this yet).
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let reply = rolecall.agent(Some("\n"));
        slowest = slowest.max(t.elapsed());
        assert!(reply.ends_with('\n'));
        let t = Instant::now();
        let _ = rolecall.http_get("/readyz");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest probe {slowest:?}"
    );
    // Sentinel fails over (down-after 1 s); the node stays connected to the frozen server,
    // which is not Sentinel's master and does not answer: out after the grace period.
    let new = topology.wait_new_master(old);
    assert_ne!(new, old);
    let status = rolecall.wait_for_status("out of rotation", VERDICT_TIMEOUT, |s| {
        s["in_rotation"] == false
    });
    assert_eq!(status["verdict"], "stale_master", "{status:#}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer ROLE"),
        "{status:#}"
    );
    assert_eq!(rolecall.http_get("/readyz").0, 503);
    topology.server_mut(old).cont();
}

#[test]
fn a_master_down_before_any_failover_is_every_nodes_problem_and_keeps_the_node_in_rotation() {
    // No replica: Sentinel cannot fail over, and keeps naming the dead master. The node loses
    // its connection like every node of the fleet; that is no reason to take this one out.
    let mut topology = Topology::start(0, 3);
    let master = topology.master_addr();
    let node = DemoNode::follow(&topology);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("disconnected_grace", "\"1s\"")
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    topology.server_mut(master).kill();
    let status = rolecall.wait_for_status(
        "the dead master judged as every node's problem",
        VERDICT_TIMEOUT,
        |s| {
            s["observed"] == "unknown"
                && s["observed_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not the node's fault"))
        },
    );
    assert!(
        status["observed_reason"]
            .as_str()
            .unwrap()
            .contains(&master.to_string()),
        "{status:#}"
    );
    // Several disconnected grace periods later the node is still in rotation (bounded: 4 s).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let status = rolecall.status();
        assert_eq!(status["in_rotation"], true, "{status:#}");
        assert_eq!(rolecall.http_get("/readyz").0, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
}
