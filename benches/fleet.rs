//! What a fleet of rolecalls costs the topology they watch, with real processes on loopback
//! (`cargo bench --bench fleet`).
//!
//! One topology (1 master, 1 replica, 3 sentinels) and `ROLECALL_BENCH_FLEET` (default 20)
//! rolecalls, each with its own node name, all watching one idle process (so the node itself
//! sends nothing to Redis), at the default check settings (`interval = "1s"`). Three phases of
//! `ROLECALL_BENCH_FLEET_SECS` (default 30) seconds each, in one run:
//!
//! 1. the topology alone: what it does by itself (subtracted from the others);
//! 2. the fleet with Sentinel events on (the default: one command per sentinel per check
//!    between full answers);
//! 3. the same fleet with `sentinel_events = false` (every check asks each sentinel in full,
//!    as every check did before the events-driven refresh).
//!
//! For each sentinel and for the master: commands per second (`total_commands_processed`) and
//! CPU (utime + stime from `/proc/PID/stat`) above the topology alone, and both scaled to 1,000
//! nodes. Every wait is bounded; all traffic stays on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{
    Rolecall, RolecallConfig, Topology, env_count, parse_info, proc_cpu_ms, value_to_string,
};

/// Commands processed so far, from `INFO stats`.
fn commands(cli: &dyn Fn(&[&str]) -> redis::Value) -> f64 {
    let info = value_to_string(&cli(&["INFO", "stats"]));
    parse_info(&info)
        .get("total_commands_processed")
        .and_then(|v| v.parse().ok())
        .expect("total_commands_processed in INFO stats")
}

/// One sample of every process: (name, commands, CPU ms).
fn sample(topology: &Topology) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    let master = topology.master();
    out.push((
        "master".to_string(),
        commands(&|a| master.cli(a)),
        proc_cpu_ms(master.pid()),
    ));
    for (i, s) in topology.sentinels().iter().enumerate() {
        out.push((
            format!("sentinel {}", i + 1),
            commands(&|a| s.cli(a)),
            proc_cpu_ms(s.pid()),
        ));
    }
    out
}

/// Per process, commands/s and CPU ms/s over `secs`.
fn measure(topology: &Topology, secs: u64) -> Vec<(String, f64, f64)> {
    let before = sample(topology);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = sample(topology);
    let elapsed = t0.elapsed().as_secs_f64();
    before
        .into_iter()
        .zip(after)
        .map(|((name, c0, p0), (_, c1, p1))| (name, (c1 - c0) / elapsed, (p1 - p0) / elapsed))
        .collect()
}

fn fleet(topology: &Topology, idle: &Child, n: usize, events: bool) -> Vec<Rolecall> {
    let mut rolecalls: Vec<Rolecall> = (0..n)
        .map(|i| {
            RolecallConfig::new()
                .pid(idle.id())
                .node_name(&format!("bench-{i}"))
                .topology(topology)
                .check("interval", "\"1s\"")
                .check("timeout", "\"300ms\"")
                .check("sentinel_events", if events { "true" } else { "false" })
                .without_fleet_guard()
                .start()
        })
        .collect();
    for rc in &mut rolecalls {
        rc.wait_for_status("a complete check", Duration::from_secs(60), |s| {
            s["checks"].as_u64().unwrap_or(0) >= 3
        });
    }
    rolecalls
}

fn report(name: &str, idle: &[(String, f64, f64)], with: &[(String, f64, f64)], n: usize) {
    println!("{name} ({n} rolecalls):");
    let scale = 1000.0 / n as f64;
    for ((who, c0, p0), (_, c1, p1)) in idle.iter().zip(with) {
        let (c, p) = (c1 - c0, p1 - p0);
        println!(
            "  {who:<11}: {c:7.1} commands/s, {p:6.1} ms CPU/s above idle; per 1,000 nodes: {:8.0} commands/s, {:6.0} ms CPU/s ({:.1} % of a core)",
            c * scale,
            p * scale,
            p * scale / 10.0
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches in test mode: skip the
    // long measurement there (it is not a test).
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet benchmark: run with `cargo bench --bench fleet`");
        return;
    }
    let n = env_count("ROLECALL_BENCH_FLEET", 20);
    let secs = env_count("ROLECALL_BENCH_FLEET_SECS", 30) as u64;
    let topology = Topology::start(1, 3);
    let mut idle = Command::new("sleep")
        .arg("3600")
        .spawn()
        .expect("start an idle process");
    std::thread::sleep(Duration::from_secs(3));
    let alone = measure(&topology, secs);
    println!("topology alone, {secs} s:");
    for (who, c, p) in &alone {
        println!("  {who:<11}: {c:7.1} commands/s, {p:6.1} ms CPU/s");
    }
    for events in [true, false] {
        let mut rolecalls = fleet(&topology, &idle, n, events);
        let with = measure(&topology, secs);
        let checks: u64 = rolecalls
            .iter()
            .map(|rc| rc.status()["checks"].as_u64().unwrap_or(0))
            .sum();
        report(
            if events {
                "Sentinel events on (the default)"
            } else {
                "sentinel_events = false (every check in full)"
            },
            &alone,
            &with,
            n,
        );
        println!("  ({checks} checks in all so far)");
        for rc in &mut rolecalls {
            rc.terminate();
        }
        for rc in &mut rolecalls {
            rc.wait_exit(Duration::from_secs(10));
        }
    }
    let _ = idle.kill();
    let _ = idle.wait();
}
