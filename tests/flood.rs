//! Floods on the probe ports (TESTING.md row 30): thousands of connections held open on the
//! agent and the HTTP port — idle, slowloris (a byte a second), oversized request heads and
//! agent lines, junk — with rolecall under the file-descriptor limit a systemd unit
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

    rlimit::increase_nofile_limit(2 * IDLE_PER_PORT as u64 + 512).unwrap();
    for flood in [Flood::Idle, Flood::Slowloris, Flood::Oversized, Flood::Junk] {
        let held = flood.start(agent, http);
        assert!(
            held.len() >= IDLE_PER_PORT,
            "{flood:?}: {} connections held",
            held.len()
        );
        let slow = flood.keep_sending(&held);
        let (mut agent_times, mut http_times) = (Vec::new(), Vec::new());
        for _ in 0..PROBES {
            let t = Instant::now();
            let answer = agent_probe(agent).expect("the agent answers during the flood");
            agent_times.push(t.elapsed());
            assert!(answer.starts_with("up"), "{flood:?}: {answer:?}");
            let t = Instant::now();
            assert_eq!(http_status(http, "/livez"), Some(200), "{flood:?}: /livez");
            http_times.push(t.elapsed());
        }
        drop(slow);
        // Unaffected: no probe waited behind the flood, whose connections are only dropped by
        // the 5 s header timeout. Loose for a loaded machine; BENCHMARKS.md has the figures.
        for t in agent_times.iter().chain(&http_times) {
            assert!(*t < Duration::from_secs(2), "{flood:?}: a probe took {t:?}");
        }
        report(&format!("{flood:?}: agent probe"), agent_times);
        report(&format!("{flood:?}: /livez probe"), http_times);
        drop(held);
    }

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
}

/// What the flooding connections do.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// Never send a byte.
    Idle,
    /// Send a request head (agent: a line) one byte per second, never finishing it.
    Slowloris,
    /// Send 64 KiB of request head (agent: of one line) without ever ending it.
    Oversized,
    /// Agent: lines of junk words; HTTP: junk that is not HTTP.
    Junk,
}

impl Flood {
    /// Opens the flood's connections, `IDLE_PER_PORT` on each port, and sends what it sends
    /// first.
    fn start(self, agent: SocketAddr, http: SocketAddr) -> Vec<TcpStream> {
        let big = vec![b'a'; 64 * 1024];
        let mut held = Vec::with_capacity(2 * IDLE_PER_PORT);
        for _ in 0..IDLE_PER_PORT {
            for port in [agent, http] {
                let Ok(mut s) = TcpStream::connect_timeout(&port, Duration::from_secs(1)) else {
                    continue;
                };
                let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
                let first: &[u8] = match (self, port == http) {
                    (Flood::Idle, _) => b"",
                    (Flood::Slowloris, true) => b"G",
                    (Flood::Slowloris, false) => b"m",
                    (Flood::Oversized, true) => b"GET /livez HTTP/1.1\r\nX-Big: ",
                    (Flood::Oversized, false) => &big,
                    (Flood::Junk, true) => b"\x00\x01 not http at all\r\n\r\n",
                    (Flood::Junk, false) => b"\x00junk, more junk;;; ready maint down\n",
                };
                let _ = s.write_all(first);
                if matches!((self, port == http), (Flood::Oversized, true)) {
                    let _ = s.write_all(&big);
                }
                held.push(s);
            }
        }
        held
    }

    /// For slowloris, a thread that sends one more byte on each connection every second
    /// until dropped.
    fn keep_sending(self, held: &[TcpStream]) -> Option<Slow> {
        if !matches!(self, Flood::Slowloris) {
            return None;
        }
        let conns: Vec<TcpStream> = held.iter().filter_map(|s| s.try_clone().ok()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = conns;
            // Bounded: at most two minutes.
            for _ in 0..120 {
                for c in conns.iter_mut() {
                    let _ = c.write_all(b"x");
                }
                for _ in 0..10 {
                    if s.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Some(Slow {
            stop,
            thread: Some(thread),
        })
    }
}

/// The slowloris sender, stopped when dropped.
struct Slow {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
