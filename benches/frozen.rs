//! Probe latency while Sentinel's master is frozen (`cargo bench --bench frozen`): TESTING.md's
//! fault-matrix row 4, "probes answered in under 1 ms while the master is frozen", as a figure.
//!
//! One topology (1 master, 1 replica, 3 sentinels) on loopback, a demo node pinned to the master,
//! and one rolecall at its default check settings (`interval = "1s"`, `timeout = "300ms"`). In
//! one run:
//!
//! 1. the master running: `ROLECALL_BENCH_FROZEN_PROBES` (default 500) agent-check probes (a
//!    fresh connection, `\n`, the reply read to EOF) and as many `GET /readyz`, alternating,
//!    5 ms apart;
//! 2. the master stopped (`SIGSTOP`): the same probes, while every check's `ROLE` and probe write
//!    to it wait out the timeout, Sentinel marks it down and fails over, and rolecall follows;
//! 3. the master resumed.
//!
//! Prints the latency (median, p99, max) of each kind in each phase, the verdicts seen during
//! the freeze, and the ratio frozen ÷ running. Every probe is bounded by the harness's timeouts,
//! every loop by its count; all traffic stays on 127.0.0.1. Without `--bench` (as
//! `cargo test --benches` runs it) it only prints how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{DemoNode, Rolecall, RolecallConfig, Topology, env_count, percentile};

const PROBES_ENV: &str = "ROLECALL_BENCH_FROZEN_PROBES";
/// Between two probes of a phase: the freeze lasts about probes × 2 × this.
const PACE: Duration = Duration::from_millis(5);

/// Latencies (ms) of the agent and `/readyz` probes of one phase, and the agent words seen.
struct Phase {
    agent: Vec<f64>,
    readyz: Vec<f64>,
    words: BTreeSet<String>,
}

fn probe_phase(rolecall: &Rolecall, probes: usize) -> Phase {
    let mut phase = Phase {
        agent: Vec::with_capacity(probes),
        readyz: Vec::with_capacity(probes),
        words: BTreeSet::new(),
    };
    for _ in 0..probes {
        let t = Instant::now();
        let reply = rolecall.agent(Some("\n"));
        phase.agent.push(t.elapsed().as_secs_f64() * 1000.0);
        let word = reply.split_whitespace().next().unwrap_or("").to_owned();
        phase.words.insert(word);
        let t = Instant::now();
        let (code, _) = rolecall.http_get("/readyz");
        phase.readyz.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(code == 200 || code == 503, "/readyz answered {code}");
        std::thread::sleep(PACE);
    }
    phase
}

fn row(kind: &str, what: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let median = percentile(&ms, 50.0);
    println!(
        "| {kind} | {what} | {} | {median:.3} ms | {:.3} ms | {:.3} ms |",
        ms.len(),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
    );
    median
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("frozen: run with `cargo bench --bench frozen` ({PROBES_ENV}=500)");
        return;
    }
    let probes = env_count(PROBES_ENV, 500);
    let mut topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let node = DemoNode::pin(master);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("interval", "\"1s\"")
        .check("timeout", "\"300ms\"")
        .check("fast_interval", "\"100ms\"")
        .start();
    rolecall.wait_for_verdict("ok", Duration::from_secs(60));

    let running = probe_phase(&rolecall, probes);
    topology.server_mut(master).stop();
    let frozen_at = Instant::now();
    let frozen = probe_phase(&rolecall, probes);
    let frozen_for = frozen_at.elapsed();
    let checks_frozen = rolecall.status()["checks"].as_u64().unwrap_or(0);
    topology.server_mut(master).cont();

    println!(
        "master frozen for {:.1} s; agent words while frozen: {:?}; checks so far: {checks_frozen}",
        frozen_for.as_secs_f64(),
        frozen.words
    );
    println!();
    println!("| probe | master | n | median | p99 | max |");
    println!("|---|---|---:|---:|---:|---:|");
    let agent_running = row("agent-check", "running", running.agent);
    let agent_frozen = row("agent-check", "frozen", frozen.agent);
    let readyz_running = row("`/readyz`", "running", running.readyz);
    let readyz_frozen = row("`/readyz`", "frozen", frozen.readyz);
    println!();
    println!(
        "frozen ÷ running, medians: agent-check {:.2}, /readyz {:.2}",
        agent_frozen / agent_running,
        readyz_frozen / readyz_running
    );
}
