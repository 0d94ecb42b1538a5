//! Floods on the probe ports (TESTING.md row 30): thousands of idle connections held open on
//! the agent and the HTTP port, with rolecall under the file-descriptor limit a systemd unit
//! gets by default (1,024, soft and hard: `prlimit`). A new connection sheds the oldest instead
//! of waiting for it, both servers stay below the limit with descriptors left for the checks,
//! so every real probe is answered (well within the kubelet's 1 s probe timeout), no `accept`
//! fails, and the checks go on.
//!
//! The probe latencies are printed (`cargo test --test flood -- --nocapture`); BENCHMARKS.md
//! reports them.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{DemoNode, Topology, free_port, http_status, wait_until};

const IDLE_PER_PORT: usize = 2_000;
const PROBES: usize = 200;

fn agent_probe(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    // An agent-send line (HAProxy's `agent-send`): rolecall answers at once, instead of after
    // waiting briefly for one.
    s.write_all(b"\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    eprintln!(
        "{what}: n={} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[test]
fn probes_are_answered_while_thousands_of_idle_connections_are_held_under_a_1024_fd_limit() {
    let topology = Topology::start(0, 1);
    let node = DemoNode::pin(topology.master_addr());
    let dir = tempfile::tempdir().unwrap();
    let (agent, http) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let config = dir.path().join("rolecall.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"flooded\"\npid = {}\n\n[[redis]]\nmaster_name = \"{}\"\nsentinels = [\"{}\"]\n\n[check]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n\n[agent]\nlisten = \"{agent}\"\n\n[http]\nlisten = \"{http}\"\n",
            node.pid(),
            topology.master_name(),
            topology.sentinel_addrs()[0],
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut rolecall = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_rolecall"))
        .args(["run", "--config"])
        .arg(&config)
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("run prlimit (util-linux) with rolecall");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = rolecall.id();
    let _guard = Kill(std::mem::replace(
        &mut rolecall,
        Command::new("true").spawn().unwrap(),
    ));
    let _ = rolecall.wait();
    wait_until(Duration::from_secs(20), "rolecall ready", || {
        http_status(http, "/readyz") == Some(200)
    });
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limits}"
    );

    // The flood: idle connections that never send a byte, on both ports.
    rlimit::increase_nofile_limit(2 * IDLE_PER_PORT as u64 + 512).unwrap();
    let mut idle = Vec::with_capacity(2 * IDLE_PER_PORT);
    for _ in 0..IDLE_PER_PORT {
        for port in [agent, http] {
            if let Ok(s) = TcpStream::connect_timeout(&port, Duration::from_secs(1)) {
                idle.push(s);
            }
        }
    }
    assert!(
        idle.len() >= IDLE_PER_PORT,
        "{} connections held",
        idle.len()
    );

    let (mut agent_times, mut http_times) = (Vec::new(), Vec::new());
    for _ in 0..PROBES {
        let t = Instant::now();
        let answer = agent_probe(agent).expect("the agent answers during the flood");
        agent_times.push(t.elapsed());
        assert!(answer.starts_with("up"), "{answer:?}");
        let t = Instant::now();
        assert_eq!(
            http_status(http, "/livez"),
            Some(200),
            "/livez during the flood"
        );
        http_times.push(t.elapsed());
    }
    for t in agent_times.iter().chain(&http_times) {
        assert!(*t < Duration::from_secs(1), "a probe took {t:?}");
    }
    report("agent probe during the flood", agent_times);
    report("/livez probe during the flood", http_times);

    // The checks went on (their Redis connections were not starved), and no accept failed.
    let status = |addr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /status HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let before = status(http);
    assert!(before.contains("\"verdict\": \"ok\""), "{before}");
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains("accept failed"), "{log}");
    drop(idle);
}
