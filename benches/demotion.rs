//! How fast a pinned node leaves rotation after a failover, with real processes on loopback
//! (`cargo bench --bench demotion`).
//!
//! 1. Without repair: two nodes, each pinned to one of the two servers, each with its rolecall
//!    (`interval = "1s"`). At every `SENTINEL FAILOVER` (`ROLECALL_BENCH_DEMOTIONS`, default 20)
//!    the node pinned to the old master stays on it; Sentinel demotes it ~10 s later, it kills
//!    its clients and the node redials it, now a replica. Measured: from the old master first
//!    answering `ROLE` as a replica (polled every 2 ms on one connection) to that node's agent
//!    reply saying `drain` (polled every 2 ms from then on).
//! 2. With the kill repair at its defaults: a pinned node and a Sentinel-following node, one
//!    rolecall each (`ROLECALL_BENCH_PINNED`, default 5, failovers): from the first
//!    `+switch-master` to the pinned node's agent reply saying `drain` (the kill rounds prove it
//!    does not ask Sentinel), and whether the follower's `/readyz` ever left 200.
//!
//! 3. Acknowledged writes lost per `SENTINEL FAILOVER` (`ROLECALL_BENCH_LOSS_FAILOVERS`,
//!    default 5, each): a node writing (`INCR`) every 100 ms counts its acknowledged replies;
//!    once the old master is demoted and the group settled, the final master's counter is
//!    compared with it. For a node that follows Sentinel and for one pinned to the old master,
//!    with the kill repair at its defaults (the fence on) and with `fence_old_master = false`;
//!    and, until the demotion, a write on the new master every 100 ms: how many waited longer
//!    than 500 ms.
//!
//! Prints medians, p99 and max. Every wait is bounded; all traffic stays on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    DemoNode, ReadyWatch, Rolecall, RolecallConfig, SwitchWatcher, Topology, call_timeout,
    env_count, percentile, summary, value_to_string,
};

fn rolecall_for(node: &DemoNode, name: &str, topology: &Topology, extra: &str) -> Rolecall {
    RolecallConfig::new()
        .pid(node.pid())
        .node_name(name)
        .topology(topology)
        .check("interval", "\"1s\"")
        .check("timeout", "\"300ms\"")
        .check("fast_interval", "\"100ms\"")
        .extra(extra)
        .start()
}

/// Polls `rolecall`'s agent every 2 ms (bounded by `within`) until its reply starts with
/// `drain`; returns when.
fn wait_drain(rolecall: &Rolecall, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let reply = rolecall.try_agent(Some("\n")).unwrap_or_default();
        if reply.starts_with("drain") {
            return Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!(
        "the agent did not say drain within {within:?}\n{}",
        rolecall.report(None)
    );
}

fn says_replica(v: &redis::Value) -> bool {
    matches!(v, redis::Value::Array(items)
        if items.first().map(support::value_to_string).as_deref() == Some("slave"))
}

/// Polls `ROLE` on `old` every 2 ms on one connection (bounded: 60 s) until it says replica;
/// returns when. Sentinel's demotion kills every normal client in the same transaction as the
/// `SLAVEOF`, so a connection reset followed by `ROLE` saying replica dates the demotion too.
fn wait_demoted(old: std::net::SocketAddr) -> Instant {
    let client = redis::Client::open(format!("redis://{old}/")).unwrap();
    let connect = || {
        client
            .get_connection_with_timeout(Duration::from_secs(1))
            .expect("a connection to the old master")
    };
    let mut conn = connect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "Sentinel did not demote {old}");
        match redis::cmd("ROLE").query::<redis::Value>(&mut conn) {
            Ok(v) if says_replica(&v) => return Instant::now(),
            Ok(_) => {}
            Err(_) => {
                let at = Instant::now();
                conn = connect();
                let v: redis::Value = redis::cmd("ROLE").query(&mut conn).unwrap();
                if says_replica(&v) {
                    return at;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Milliseconds from the old master answering `ROLE` as a replica to the agent's `drain`, over
/// `n` failovers without repair.
fn demotion_to_drain(n: usize) -> Vec<f64> {
    let topology = Topology::start(1, 3);
    let servers = topology.server_addrs();
    let nodes: Vec<DemoNode> = servers.iter().map(|s| DemoNode::pin(*s)).collect();
    let mut rolecalls: Vec<Rolecall> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| rolecall_for(node, &format!("pinned-{i}"), &topology, ""))
        .collect();
    let mut out = Vec::new();
    for i in 0..n {
        let master = topology.master_addr();
        let on_master = servers.iter().position(|s| *s == master).unwrap();
        let rc = &mut rolecalls[on_master];
        rc.wait_for_verdict("ok", Duration::from_secs(30));
        let (old, _) = topology.failover();
        let demoted = wait_demoted(old);
        let drained = wait_drain(rc, Duration::from_secs(10));
        let ms = drained.saturating_duration_since(demoted).as_secs_f64() * 1000.0;
        eprintln!("  failover {}: drain {ms:.1} ms after the demotion", i + 1);
        out.push(ms);
        topology.wait_settled();
    }
    out
}

/// Milliseconds from the first `+switch-master` to the pinned node's `drain`, with the kill
/// repair at its defaults, over `n` failovers; and how many `/readyz` answers other than 200
/// the follower gave.
fn pinned_with_repair(n: usize) -> (Vec<f64>, usize) {
    let topology = Topology::start(1, 3);
    let watch = SwitchWatcher::start(&topology.sentinel_addrs());
    let mut out = Vec::new();
    let mut follower_out = 0;
    let repair = "[repair]\nkill_stale_connections = true\n";
    for i in 0..n {
        let pinned = DemoNode::pin(topology.master_addr());
        let follower = DemoNode::follow(&topology);
        let mut pinned_rc = rolecall_for(&pinned, "pinned", &topology, repair);
        let mut follower_rc = rolecall_for(&follower, "follower", &topology, repair);
        pinned_rc.wait_for_verdict("ok", Duration::from_secs(30));
        follower_rc.wait_for_verdict("ok", Duration::from_secs(30));
        let ready = ReadyWatch::start(follower_rc.http_addr());
        let heard = watch.count();
        let (old, _) = topology.failover();
        let t0 = watch.first_after(heard, Duration::from_secs(20));
        let drained = wait_drain(&pinned_rc, Duration::from_secs(30));
        let ms = drained.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        topology.wait_demoted(old);
        topology.wait_settled();
        follower_rc.wait_for_verdict("ok", Duration::from_secs(30));
        let log = ready.finish();
        eprintln!(
            "  failover {}: pinned node drained {ms:.1} ms after the first +switch-master; follower /readyz not 200 {} time(s) in {} polls",
            i + 1,
            log.out.len(),
            log.polls
        );
        follower_out += log.out.len();
        out.push(ms);
        pinned_rc.terminate();
        follower_rc.terminate();
    }
    (out, follower_out)
}

/// Acknowledged writes the final master lacks, per failover, for a node that follows Sentinel
/// or one `pinned` to the old master, with `repair`; and the writes on the new master that
/// waited longer than 500 ms before the old master was demoted.
fn lost_writes(n: usize, pinned: bool, repair: &str) -> (Vec<f64>, usize) {
    let topology = Topology::start(1, 3);
    let mut out = Vec::new();
    let mut held_on_new = 0;
    for _ in 0..n {
        let mut node = if pinned {
            DemoNode::pin(topology.master_addr())
        } else {
            DemoNode::follow(&topology)
        };
        let mut rolecall = rolecall_for(&node, "writer", &topology, repair);
        rolecall.wait_for_verdict("ok", Duration::from_secs(30));
        let (old, new) = topology.failover();
        let deadline = Instant::now() + Duration::from_secs(60);
        while topology.server(old).role().as_deref() != Some("slave") {
            assert!(Instant::now() < deadline, "Sentinel did not demote {old}");
            if call_timeout(
                new,
                &["SET", "rolecall-bench:new", "1"],
                Duration::from_millis(500),
            )
            .is_err()
            {
                held_on_new += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        topology.wait_settled();
        if !pinned {
            let line = format!("connected {new}");
            node.wait_for_line(Duration::from_secs(30), |l| l == line);
        }
        let acked = node.terminate() as i64;
        let held = topology
            .server(new)
            .try_cli(&["GET", &node.count_key()])
            .ok()
            .and_then(|v| value_to_string(&v).parse::<i64>().ok())
            .unwrap_or(0);
        let _ = topology.server(new).try_cli(&["DEL", &node.count_key()]);
        eprintln!("  acked {acked}, held {held}, lost {}", acked - held);
        out.push((acked - held) as f64);
        rolecall.terminate();
    }
    (out, held_on_new)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches in test mode: skip the
    // long measurement there (it is not a test).
    if !std::env::args().any(|a| a == "--bench") {
        println!("demotion benchmark: run with `cargo bench --bench demotion`");
        return;
    }
    let n = env_count("ROLECALL_BENCH_DEMOTIONS", 20);
    let m = env_count("ROLECALL_BENCH_PINNED", 5);
    println!(
        "without repair, the old master answering ROLE as a replica to drain ({n} failovers):"
    );
    summary("  demotion to drain", demotion_to_drain(n));
    println!(
        "with the kill repair at its defaults, +switch-master to the pinned node's drain ({m} failovers):"
    );
    let (ms, follower_out) = pinned_with_repair(m);
    summary("  +switch-master to drain", ms);
    println!("  follower /readyz answers other than 200: {follower_out}");
    let l = env_count("ROLECALL_BENCH_LOSS_FAILOVERS", 5);
    println!(
        "acknowledged writes lost per SENTINEL FAILOVER, node writing every 100 ms ({l} failovers each):"
    );
    let kill = "[repair]\nkill_stale_connections = true\n";
    let no_fence = "[repair]\nkill_stale_connections = true\nfence_old_master = false\n";
    for (name, pinned, repair) in [
        ("  following, kill repair (fence on)   ", false, kill),
        ("  following, fence_old_master = false ", false, no_fence),
        ("  pinned, kill repair (fence on)      ", true, kill),
        ("  pinned, fence_old_master = false    ", true, no_fence),
    ] {
        let (lost, held) = lost_writes(l, pinned, repair);
        let mut s = lost.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: median {:.0} lost, max {:.0}, total {:.0}; writes on the new master held over 500 ms: {held}",
            percentile(&s, 50.0),
            s.last().copied().unwrap_or(f64::NAN),
            s.iter().sum::<f64>()
        );
    }
}
