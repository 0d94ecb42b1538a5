//! Failover to HAProxy, with and without the push (`cargo bench --bench haproxy`).
//!
//! `ROLECALL_BENCH_HAPROXY_RUNS` (default 7) real `SENTINEL FAILOVER`s on one topology, each with
//! a node pinned to the master and one following Sentinel, each with its rolecall, and three
//! real HAProxies in front of them: `haproxy/agent-check.cfg` (agent only), the same with
//! rolecall's `[haproxy]` push to its runtime API, and `haproxy/agent-check-down.cfg`. Every run
//! asserts what HAProxy shows (the pinned node DRAIN or DOWN, the follower UP throughout); the
//! bench prints each run's times and their median, p99 and max:
//!
//! - `+switch-master` → rolecall's logged verdict for the pinned node;
//! - that verdict → HAProxy showing DRAIN, agent only (next `agent-inter` poll) and with the push;
//! - the `down` variant's verdict → HAProxy showing DOWN.
//!
//! Every wait is bounded; all traffic stays on 127.0.0.1. Without `--bench` (as `cargo test
//! --benches` runs it) it only prints how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{FailoverTimes, Topology, env_count, failover_run, ms, print_times, summary};

/// One of the intervals a failover run measured.
type Interval = fn(&FailoverTimes) -> Duration;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches in test mode: skip the
    // measurement there (the test `after_a_failover_haproxy_drains_…` runs one failover).
    if !std::env::args().any(|a| a == "--bench") {
        println!("haproxy: run with `cargo bench --bench haproxy` (ROLECALL_BENCH_HAPROXY_RUNS=7)");
        return;
    }
    let runs = env_count("ROLECALL_BENCH_HAPROXY_RUNS", 7);
    let topology = Topology::start(1, 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all: Vec<FailoverTimes> = Vec::with_capacity(runs);
    for run in 0..runs {
        topology.wait_settled();
        let t = failover_run(&topology, dir.path(), run);
        print_times(&format!("run {}", run + 1), &t);
        all.push(t);
    }
    let intervals: [(&str, Interval); 5] = [
        ("+switch-master -> rolecall verdict", |t| {
            t.switch_to_verdict
        }),
        ("verdict -> HAProxy DRAIN, agent only", |t| {
            t.verdict_to_drain_agent
        }),
        ("verdict -> HAProxy DRAIN, with push", |t| {
            t.verdict_to_drain_push
        }),
        ("verdict -> HAProxy DOWN, down variant", |t| {
            t.verdict_to_down_agent
        }),
        ("HAProxy polled every", |t| t.poll),
    ];
    println!("over {runs} failovers:");
    for (name, interval) in intervals {
        summary(name, all.iter().map(|t| ms(interval(t))).collect());
    }
}
