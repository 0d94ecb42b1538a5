//! Rows of TESTING.md's fault matrix about what rolecall can and cannot see, end to end with
//! real sentinels and servers: one sentinel naming another master across a failover (row 9),
//! a 1–1 split with the third sentinel unreachable (row 10), sentinels black-holed by nftables
//! (row 12), a sentinel in TILT (row 13), and this host cut off from the data servers only
//! (row 34).
//!
//! A sentinel is made to name another master by `SENTINEL REMOVE` and `SENTINEL MONITOR` of a
//! standalone server under the same name: no other sentinel publishes hellos there, so it keeps
//! that view. TILT is a real sentinel's own: stopped for longer than its 2 s tilt trigger and
//! resumed, it sits in TILT for 30 s. The black holes are nftables rules in network namespaces
//! the tests make ([`PodNetns`], [`BlackHole`]): rolecall and the node in the pod, Redis in the
//! cluster namespace.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{
    BlackHole, DemoNode, PodNetns, ReadyWatch, RedisServer, Rolecall, RolecallConfig, Topology,
};

/// From start (or a change) to a confirmed verdict: a few 250 ms checks; generous for a loaded
/// two-core machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// The harness's check settings: interval 250 ms, timeout 200 ms. A snapshot older than
/// `interval * 3 + timeout * 4` is stale.
const STALE_AFTER: Duration = Duration::from_millis(250 * 3 + 200 * 4);
/// A bound on a probe answer that proves it waited on no Redis call (loose on purpose; the
/// benchmark measures the real figure).
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// The `unknown_hold` of the tests that wait for the fail-open.
const HOLD: Duration = Duration::from_secs(3);

fn reason(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or("")
}

fn checks(status: &serde_json::Value) -> u64 {
    status["checks"].as_u64().unwrap_or(0)
}

fn first_word(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

fn verdict_changes(rolecall: &Rolecall) -> u64 {
    let body = rolecall.http_get("/metrics").1;
    body.lines()
        .find_map(|l| l.strip_prefix("rolecall_verdict_changes_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .unwrap_or_else(|| panic!("no rolecall_verdict_changes_total in\n{body}"))
}

/// Makes sentinel `i` of `topology` watch `server` under the topology's master name instead.
fn re_point(topology: &Topology, i: usize, server: SocketAddr) {
    let name = topology.master_name();
    let sentinel = topology.sentinel(i);
    sentinel.cli(&["SENTINEL", "REMOVE", name]);
    let (ip, port) = (server.ip().to_string(), server.port().to_string());
    sentinel.cli(&["SENTINEL", "MONITOR", name, &ip, &port, "2"]);
    // Never a failover of its own while the test runs.
    sentinel.cli(&["SENTINEL", "SET", name, "down-after-milliseconds", "60000"]);
}

/// Waits until rolecall holds its node out as `unknown` (whose reason contains `why`), then
/// until it fails open, asserting out of rotation (503, never `up` or `ready`) at each poll
/// before. Returns when it opened.
fn held_out_then_open(rolecall: &mut Rolecall, why: &str) -> Instant {
    let held = rolecall.wait_for_status("held out as unknown", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "unknown" && reason(s).contains(why)
    });
    assert_eq!(held["in_rotation"], false, "{held:#}");
    assert!(reason(&held).contains("holding the last state"), "{held:#}");
    let mut held_polls = 0;
    let opened = support::wait_for(Duration::from_secs(30), "fail open after the hold", || {
        // The agent first: the hold may lapse between the two reads, and once open it stays
        // open, so an agent still holding followed by a 200 is a clean opening.
        let reply = rolecall.agent(Some("\n"));
        let (code, _) = rolecall.http_get("/readyz");
        if code == 200 {
            return Some(Instant::now());
        }
        assert_eq!(code, 503);
        assert!(!["up", "ready"].contains(&first_word(&reply)), "{reply:?}");
        held_polls += 1;
        None
    });
    assert!(held_polls >= 5, "held for a while ({held_polls} polls)");
    let open = rolecall.status();
    assert_eq!(open["verdict"], "unknown", "{open:#}");
    assert_eq!(open["in_rotation"], true, "{open:#}");
    assert!(reason(&open).contains("failing open"), "{open:#}");
    let reply = rolecall.agent(Some("\n"));
    assert!(
        reply.starts_with("up") && reply.contains("#unknown"),
        "{reply:?}"
    );
    opened
}

// ---------------------------------------------------------------------------------------------
// Sentinels that disagree

/// Row 9: sentinel 2 names another server throughout; sentinels 0 and 1 fail over. The node
/// follows Sentinel: in rotation at every poll, a handful of verdict changes, and the dissent
/// in `/status` before and after.
#[test]
fn one_sentinel_naming_another_master_is_outvoted_through_a_failover_and_reported() {
    let topology = Topology::start(1, 3);
    let elsewhere = RedisServer::start();
    let node = DemoNode::follow(&topology);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // Sentinels tell each other of a new configuration directly: one announced where nothing
    // listens hears of the failover only through the servers it watches, and this one will
    // watch none of the topology's.
    let s2 = topology.sentinel(2);
    s2.cli(&["SENTINEL", "CONFIG", "SET", "announce-ip", "127.0.0.3"]);
    let name = topology.master_name();
    support::wait_until(
        VERDICT_TIMEOUT,
        "sentinels 0 and 1 to see the new address",
        || {
            [0, 1].iter().all(|&i| {
                topology
                    .sentinel(i)
                    .cli_str(&["SENTINEL", "SENTINELS", name])
                    .contains("127.0.0.3")
            })
        },
    );
    re_point(&topology, 2, elsewhere.addr());
    let other = elsewhere.addr().to_string();
    let dissent_named =
        |s: &serde_json::Value| s["groups"][0]["dissent"].to_string().contains(&other);
    let s = rolecall.wait_for_status("the dissent reported", VERDICT_TIMEOUT, |s| {
        dissent_named(s)
    });
    assert_eq!(s["verdict"], "ok", "{s:#}");
    assert_eq!(s["groups"][0]["master"], topology.master_addr().to_string());

    let changes_before = verdict_changes(&rolecall);
    let watch = ReadyWatch::start(rolecall.http_addr());
    let (_, new) = topology.failover_among(&[0, 1]);
    let s = rolecall.wait_for_ok_on(&new.to_string(), Duration::from_secs(60));
    let log = watch.finish();
    log.assert_never_out("the follower", &rolecall.report(None));
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    let s = rolecall.wait_for_status("the dissent still reported", VERDICT_TIMEOUT, |s| {
        dissent_named(s) && s["verdict"] == "ok"
    });
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    // No flapping: a follower's failover is a few changes (ok, perhaps stale_master or
    // disconnected for a moment, ok), never one per check.
    let changes = verdict_changes(&rolecall) - changes_before;
    assert!(
        changes <= 4,
        "{changes} verdict changes\n{}",
        rolecall.report(None)
    );
}

/// Row 10: sentinel 0 names the master, sentinel 1 another server, sentinel 2 is stopped (its
/// queries time out). No majority: the node's drain is held as `unknown`, then failed open
/// after `unknown_hold`.
#[test]
fn a_one_to_one_split_with_the_third_sentinel_unreachable_holds_then_fails_open() {
    let mut topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let elsewhere = RedisServer::start();
    let node = DemoNode::pin(topology.replicas()[0].addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("unknown_hold", &format!("\"{}s\"", HOLD.as_secs()))
        .start();
    rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);

    topology.sentinel_mut(2).stop();
    let split = Instant::now();
    re_point(&topology, 1, elsewhere.addr());
    let opened = held_out_then_open(&mut rolecall, "majority");
    let took = opened.duration_since(split);
    // The hold starts at the first check without a majority, after the split; the margin
    // covers noticing it and a loaded machine.
    assert!(
        took >= HOLD && took < HOLD + Duration::from_secs(10),
        "failed open {took:?} after the split, with a {HOLD:?} hold\n{}",
        rolecall.report(None)
    );
    let s = rolecall.status();
    let sentinels = s["groups"][0]["sentinels"].to_string();
    assert!(
        sentinels.contains(&elsewhere.addr().to_string())
            && sentinels.contains(&master.to_string()),
        "both views are reported: {s:#}"
    );
    topology.sentinel_mut(2).cont();
}

/// Row 13: sentinel 2 is put in TILT (stopped past its 2 s tilt trigger, then resumed) and
/// sentinel 0 is killed. Sentinels 1 and 2 name the same master, but only 1 of 3 votes counts:
/// `unknown`, held in rotation, and the TILT named.
#[test]
fn a_sentinel_in_tilt_has_no_vote() {
    let mut topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // The length of the fault: frozen 3 s, past the 2 s tilt trigger.
    topology.sentinel_mut(2).stop();
    std::thread::sleep(Duration::from_secs(3));
    topology.sentinel_mut(2).cont();
    let in_tilt = |topology: &Topology| {
        topology
            .sentinel(2)
            .cli_str(&["INFO", "sentinel"])
            .lines()
            .any(|l| l.trim_end() == "sentinel_tilt:1")
    };
    support::wait_until(Duration::from_secs(10), "sentinel 2 in TILT", || {
        in_tilt(&topology)
    });
    topology.sentinel_mut(0).kill();
    let tilted = topology.sentinel(2).addr().to_string();
    let s = rolecall.wait_for_status("no majority without the TILT vote", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "unknown" && s.to_string().contains("TILT")
    });
    assert_eq!(s["in_rotation"], true, "held in rotation: {s:#}");
    assert!(
        s.to_string()
            .contains(&format!("sentinel {tilted} is in TILT mode: vote ignored")),
        "{s:#}"
    );
    // Its vote would have made a majority: it names the same master as sentinel 1, and is
    // still in TILT (30 s) now.
    let name = topology.master_name();
    let named = |i: usize| {
        topology
            .sentinel(i)
            .cli_str(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])
    };
    assert_eq!(named(1), named(2));
    assert!(in_tilt(&topology), "sentinel 2 left TILT during the test");
}

// ---------------------------------------------------------------------------------------------
// Black holes

/// A pod (rolecall and a node) and a topology in its cluster namespace.
struct Cut {
    // Field order is drop order: processes go before the namespaces.
    rolecall: Rolecall,
    node: DemoNode,
    topology: Topology,
    pod: PodNetns,
}

/// rolecall judging `node` by pid, both in `pod`, on `topology`'s sentinels.
fn cut_setup(pinned_to_replica: bool, hold: &str) -> Cut {
    let pod = PodNetns::create();
    let topology = pod.run_in_cluster(|| Topology::builder().ip(pod.cluster_ip()).start());
    let target = pod.run_in_cluster(|| {
        if pinned_to_replica {
            topology.replicas()[0].addr()
        } else {
            topology.master_addr()
        }
    });
    let node = pod.run(|| DemoNode::pin(target));
    let config = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("unknown_hold", hold)
        .dump_from(pod.cluster());
    let rolecall = pod.run(|| config.start());
    Cut {
        rolecall,
        node,
        topology,
        pod,
    }
}

/// Row 12: every sentinel black-holed (nothing answers, not even a refusal). Each check is
/// bounded by the query timeout (checks keep completing, none longer than a snapshot stays
/// fresh), probes answer at once, and the node's drain is held, then failed open.
#[test]
fn black_holed_sentinels_are_bounded_by_the_timeout_and_the_drain_is_held_then_failed_open() {
    let Cut {
        mut rolecall,
        node: _node,
        topology,
        pod,
    } = cut_setup(true, &format!("\"{}s\"", HOLD.as_secs()));
    pod.run(|| rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT));
    let before = checks(&pod.run(|| rolecall.status()));

    let ports: Vec<u16> = topology.sentinel_addrs().iter().map(|a| a.port()).collect();
    let hole = BlackHole::start(&pod, pod.cluster_ip(), &ports);
    let cut = Instant::now();
    let opened = pod.run(|| held_out_then_open(&mut rolecall, "sentinel"));
    assert!(
        opened.duration_since(cut) >= HOLD,
        "failed open {:?} after the cut, with a {HOLD:?} hold",
        opened.duration_since(cut)
    );

    // Still cut off: checks keep completing, each bounded, and probes answer at once.
    let mut slowest = Duration::ZERO;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (live, _) = pod.run(|| rolecall.http_get("/livez"));
        let reply = pod.run(|| rolecall.agent(Some("\n")));
        slowest = slowest.max(t.elapsed());
        assert_eq!(live, 200);
        assert!(reply.starts_with("up"), "{reply:?}");
        seen.push(pod.run(|| rolecall.status()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < PROBE_BOUND, "slowest probe {slowest:?}");
    let last = seen.last().unwrap();
    assert!(
        checks(last) >= before + 5,
        "checks kept completing: {before} -> {}",
        checks(last)
    );
    for s in &seen {
        assert_eq!(s["stale"], false, "{s:#}");
        let took = s["check_duration_ms"].as_f64().unwrap_or(f64::MAX);
        assert!(
            took < STALE_AFTER.as_millis() as f64,
            "a check took {took} ms\n{s:#}"
        );
    }
    let sentinels = last["groups"][0]["sentinels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!sentinels.is_empty(), "{last:#}");
    for x in &sentinels {
        let error = x["error"].as_str().unwrap_or("");
        assert!(
            error.contains("200ms"),
            "each sentinel's error is its timeout: {last:#}"
        );
    }

    // The hole closed: back to the node's own verdict.
    drop(hole);
    pod.run(|| rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT));
}

/// Row 34: this host cut off from the data servers only (the sentinels still answer). The node
/// is cut off too, like every node on the host; nothing about it is the node's own: it stays in
/// rotation at every poll, longer than any grace, and is `ok` again once the cut heals.
#[test]
fn a_host_cut_off_from_the_data_servers_never_takes_its_node_out() {
    let Cut {
        mut rolecall,
        node: _node,
        topology,
        pod,
    } = cut_setup(false, "\"3s\"");
    pod.run(|| rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT));

    let ports: Vec<u16> = topology.server_addrs().iter().map(|a| a.port()).collect();
    let hole = BlackHole::start(&pod, pod.cluster_ip(), &ports);
    let unknown = pod.run(|| {
        rolecall.wait_for_status("rolecall blind to the master", VERDICT_TIMEOUT, |s| {
            s["observed"] == "unknown" || s["verdict"] == "unknown"
        })
    });
    assert_eq!(unknown["in_rotation"], true, "{unknown:#}");
    // Longer than the hold, the disconnected grace (5 s) and `fall`: in rotation at every poll.
    let until = Instant::now() + Duration::from_secs(8);
    let mut polls = 0;
    while Instant::now() < until {
        let s = pod.run(|| rolecall.status());
        assert_eq!(s["in_rotation"], true, "after {polls} polls: {s:#}");
        let (code, _) = pod.run(|| rolecall.http_get("/readyz"));
        assert_eq!(code, 200, "after {polls} polls: {s:#}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(polls >= 20, "polled throughout ({polls} polls)");

    drop(hole);
    pod.run(|| rolecall.wait_for_verdict("ok", Duration::from_secs(60)));
}
