//! Failover benchmark with real processes on loopback (`cargo bench --bench failover`).
//!
//! 1. Reaction time: from the first `+switch-master` heard on any sentinel to the changed
//!    verdict on rolecall's agent port, over `ROLECALL_BENCH_FAILOVERS` (default 20) real
//!    failovers of each kind: the master frozen until Sentinel elects a leader and fails over,
//!    and an operator's `SENTINEL FAILOVER` with Sentinel events on and, for comparison in the
//!    same run, polling only (`sentinel_events = false`, the same 1 s interval).
//! 2. Lost writes: a Sentinel-following node counts its acknowledged INCRs; after each failover
//!    the final master's counter is compared with it. Without repair, with the kill repair
//!    without the write pause, and with the kill repair as configured by default (with the pause)
//!    (`ROLECALL_BENCH_LOSS_FAILOVERS`, default 5, failovers each).
//!
//! Prints medians, p99 and max. Every wait is bounded; all traffic stays on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    DemoNode, RolecallConfig, SwitchWatcher, Topology, env_count, percentile, summary,
    value_to_string,
};

/// How the failovers of a reaction run happen.
#[derive(Clone, Copy, PartialEq)]
enum Failover {
    /// The master freezes (`kill -STOP`, as a stalled VM or a long pause would); the sentinels
    /// see it down, agree, elect a leader, and the leader promotes the replica. The old master
    /// resumes as the promotion starts and claims `master` until Sentinel demotes it.
    Frozen,
    /// An operator's `SENTINEL FAILOVER`: one sentinel acts alone, no election.
    Manual { events: bool },
}

/// Reaction times (ms) over `n` failovers: from the first `+switch-master`, and from the second
/// (2 of the 3 sentinels, a majority, name the new master); and how many sentinels were heard
/// voting for a leader each time.
fn reaction(n: usize, kind: Failover) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let mut topology = Topology::start(1, 3);
    let node = DemoNode::follow(&topology);
    let events = kind != Failover::Manual { events: false };
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("interval", "\"1s\"")
        .check("timeout", "\"300ms\"")
        .check("fast_interval", "\"100ms\"")
        .check("sentinel_events", if events { "true" } else { "false" })
        .start();
    let watch = SwitchWatcher::start_channels(
        &topology.sentinel_addrs(),
        &[
            "+switch-master",
            "+failover-state-send-slaveof-noone",
            "+vote-for-leader",
        ],
    );
    let (mut out, mut from_majority, mut voters) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        rolecall.wait_for_verdict("ok", Duration::from_secs(30));
        let heard = watch.count();
        let votes = watch.events("+vote-for-leader").len();
        let old = match kind {
            Failover::Manual { .. } => topology.failover().0,
            Failover::Frozen => {
                let old = topology.master_addr();
                let promotions = watch.events("+failover-state-send-slaveof-noone").len();
                topology.server_mut(old).stop();
                support::wait_until(
                    Duration::from_secs(40),
                    "the elected leader to start promoting the replica",
                    || watch.events("+failover-state-send-slaveof-noone").len() > promotions,
                );
                topology.server_mut(old).cont();
                old
            }
        };
        let t0 = watch.first_after(heard, Duration::from_secs(20));
        // Poll the agent every 2 ms from the announcement on (bounded: 20 s) until the verdict
        // shows there. Polling starts only now: each poll leaves a TIME_WAIT socket in the
        // namespace.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut changed = None;
        while Instant::now() < deadline {
            let reply = rolecall.try_agent(Some("\n")).unwrap_or_default();
            if reply.contains("stale_master") || reply.contains("stuck_on_replica") {
                changed = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let changed = changed.expect("the agent to report the failover within 20 s");
        let ms = changed.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let majority = watch.nth_after(heard, 2, Duration::from_secs(10));
        let ms2 = changed.saturating_duration_since(majority).as_secs_f64() * 1000.0;
        let distinct: std::collections::BTreeSet<usize> = watch.events("+vote-for-leader")[votes..]
            .iter()
            .map(|h| h.sentinel)
            .collect();
        eprintln!(
            "  failover {}: {ms:.1} ms after the first +switch-master, {ms2:.1} ms after the second (majority {:.1} ms after the first); {} sentinel(s) heard voting",
            i + 1,
            majority.saturating_duration_since(t0).as_secs_f64() * 1000.0,
            distinct.len()
        );
        out.push(ms);
        from_majority.push(ms2);
        voters.push(distinct.len());
        topology.wait_demoted(old);
        topology.wait_settled();
    }
    (out, from_majority, voters)
}

/// Acknowledged writes lost per failover with the given `[repair]` section.
fn lost_writes(n: usize, repair: &str) -> Vec<f64> {
    let topology = Topology::start(1, 3);
    let mut out = Vec::new();
    for _ in 0..n {
        let mut node = DemoNode::follow(&topology);
        let mut rolecall = RolecallConfig::new()
            .pid(node.pid())
            .topology(&topology)
            .check("interval", "\"500ms\"")
            .check("timeout", "\"200ms\"")
            .extra(repair)
            .start();
        rolecall.wait_for_verdict("ok", Duration::from_secs(30));
        let (old, new) = topology.failover();
        let line = format!("connected {new}");
        node.wait_for_line(Duration::from_secs(30), |l| l == line);
        topology.wait_demoted(old);
        topology.wait_settled();
        let acked = node.terminate() as i64;
        let held = topology
            .server(new)
            .try_cli(&["GET", &node.count_key()])
            .ok()
            .and_then(|v| value_to_string(&v).parse::<i64>().ok())
            .unwrap_or(0);
        // Counters start at 0 per node name: the node's key is fresh in each round only if the
        // key is deleted; delete it on the new master so the next round starts from 0.
        let _ = topology.server(new).try_cli(&["DEL", &node.count_key()]);
        eprintln!("  acked {acked}, held {held}, lost {}", acked - held);
        out.push((acked - held) as f64);
        rolecall.terminate();
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches in test mode: skip the
    // long measurement there (it is not a test).
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover benchmark: run with `cargo bench --bench failover`");
        return;
    }
    let n = env_count("ROLECALL_BENCH_FAILOVERS", 20);
    let m = env_count("ROLECALL_BENCH_LOSS_FAILOVERS", 5);
    println!(
        "reaction time, +switch-master to the verdict on the agent port ({n} failovers each):"
    );
    let (frozen, frozen_majority, voters) = reaction(n, Failover::Frozen);
    let (with_events, with_events_majority, _) = reaction(n, Failover::Manual { events: true });
    let (polling, polling_majority, _) = reaction(n, Failover::Manual { events: false });
    summary(
        "  master frozen (election), events, from the first +switch-master",
        frozen,
    );
    summary(
        "  master frozen (election), events, from the majority's         ",
        frozen_majority,
    );
    println!(
        "  (sentinels heard voting for the leader per failover: {:?})",
        voters
    );
    summary(
        "  SENTINEL FAILOVER, events, from the first +switch-master ",
        with_events,
    );
    summary(
        "  SENTINEL FAILOVER, events, from the majority's           ",
        with_events_majority,
    );
    summary(
        "  SENTINEL FAILOVER, polling only, from the first +switch-master ",
        polling,
    );
    summary(
        "  SENTINEL FAILOVER, polling only, from the majority's           ",
        polling_majority,
    );
    println!(
        "acknowledged writes lost per failover, node writing every 100 ms ({m} failovers each):"
    );
    let none = lost_writes(m, "");
    let kill_only = lost_writes(
        m,
        "[repair]\nkill_stale_connections = true\npause_writes_on_failover = false\n",
    );
    let kill = lost_writes(m, "[repair]\nkill_stale_connections = true\n");
    for (name, v) in [
        ("  no repair                                       ", none),
        (
            "  kill_stale_connections, pause_writes_on_failover = false",
            kill_only,
        ),
        ("  kill_stale_connections (pauses writes by default)", kill),
    ] {
        let mut s = v.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: median {:.0} lost, max {:.0}, total {:.0}",
            percentile(&s, 50.0),
            s.last().copied().unwrap_or(f64::NAN),
            s.iter().sum::<f64>()
        );
    }
}
