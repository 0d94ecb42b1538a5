//! Hostile peers (TESTING.md row 15): a "sentinel" that answers garbage, announces a 1 GB bulk
//! string and then sends nothing, or announces one and streams it; a "server" that answers
//! `ROLE` with a streamed 1 GB bulk. That source counts as unknown; rolecall neither crashes
//! nor grows (peak RSS, `VmHWM`, under 64 MiB: each connection reads at most
//! `MAX_READ_PER_CHECK` per check); the real sentinels still decide.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{DemoNode, RolecallConfig, Topology};

/// A TCP server on loopback that answers every read with `reply`, until dropped.
struct Mock {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mock {
    fn start(reply: &'static [u8]) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            // Bounded: at most 10 minutes.
            for _ in 0..60_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok((c, _)) = listener.accept() {
                    c.set_nonblocking(true).unwrap();
                    conns.push(c);
                }
                for c in conns.iter_mut() {
                    let mut buf = [0u8; 4096];
                    if let Ok(n) = c.read(&mut buf)
                        && n > 0
                    {
                        let _ = c.write_all(reply);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Mock {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A field of `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`: the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// One GiB, the bulk string the streaming peers announce.
const GIB: u64 = 1 << 30;

/// What a streaming peer answers a command (its words, lowercase) with: `None` to stream a
/// 1 GiB bulk string.
type Answer = fn(&[String]) -> Option<Vec<u8>>;

/// The commands (RESP arrays of bulk strings) in `buf`, each as its words in lowercase.
fn commands(buf: &[u8]) -> Vec<Vec<String>> {
    let text = String::from_utf8_lossy(buf);
    let mut lines = text.split("\r\n");
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        let Some(n) = line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let words: Vec<String> = (0..n)
            .filter_map(|_| {
                lines.next()?;
                lines.next().map(str::to_ascii_lowercase)
            })
            .collect();
        out.push(words);
    }
    out
}

/// A TCP server on loopback that answers each command (`answer` sees the bytes read) and, when
/// `answer` says so, announces a 1 GiB bulk string and streams it as fast as the client reads,
/// until the client closes, the GiB is sent, or the mock is dropped.
struct Streamer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Streamer {
    fn start(answer: Answer) -> Streamer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // (connection, bytes of the bulk still to stream)
            let mut conns: Vec<(std::net::TcpStream, u64)> = Vec::new();
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded: at most 10 minutes of 1 ms turns.
            for _ in 0..600_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok((c, _)) = listener.accept() {
                    c.set_nonblocking(true).unwrap();
                    conns.push((c, 0));
                }
                conns.retain_mut(|(c, left)| {
                    let mut buf = [0u8; 4096];
                    match c.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) if *left == 0 => {
                            for cmd in commands(&buf[..n]) {
                                match answer(&cmd) {
                                    Some(reply) => {
                                        let _ = c.write_all(&reply);
                                    }
                                    None => {
                                        let _ = c.write_all(format!("${GIB}\r\n").as_bytes());
                                        *left = GIB;
                                        break;
                                    }
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return false,
                    }
                    // Stream while the client takes it, a few chunks per turn.
                    for _ in 0..64 {
                        if *left == 0 {
                            break;
                        }
                        let n = chunk.len().min(*left as usize);
                        match c.write(&chunk[..n]) {
                            Ok(w) => *left -= w as u64,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => return false,
                        }
                    }
                    true
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Streamer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bulk string reply.
fn bulk(text: &str) -> Vec<u8> {
    format!("${}\r\n{text}\r\n", text.len()).into_bytes()
}

/// One of three sentinels is the hostile peer at `mock`: rolecall stays `ok` on the majority of
/// the real sentinels (the third, which the others list, is asked too), reports the mock's
/// error, keeps running and stays small. Returns its peak RSS (KiB).
fn hostile_sentinel_is_outvoted(mock: std::net::SocketAddr) -> u64 {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let sentinels = topology.sentinel_addrs();
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .redis_group(
            "main",
            topology.master_name(),
            &[sentinels[0], sentinels[1], mock],
        )
        .start();
    rolecall.wait_for_verdict("ok", Duration::from_secs(20));
    let checks = |r: &support::Rolecall| r.status()["checks"].as_u64().unwrap();
    let before = checks(&rolecall);
    support::wait_until(Duration::from_secs(30), "twenty more checks", || {
        checks(&rolecall) >= before + 20
    });
    let status = rolecall.status();
    assert_eq!(status["verdict"], "ok", "{status:#}");
    assert_eq!(status["groups"][0]["majority"], true, "{status:#}");
    let mock_answer = status["groups"][0]["sentinels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == mock.to_string())
        .cloned()
        .unwrap();
    assert!(mock_answer["error"].is_string(), "{mock_answer:#}");
    assert!(rolecall.is_running());
    let rss = rss_kib(rolecall.pid());
    assert!(rss > 0 && rss < 64 * 1024, "rolecall's RSS is {rss} KiB");
    let peak = status_kib(rolecall.pid(), "VmHWM:");
    assert!(
        peak > 0 && peak < 64 * 1024,
        "rolecall's peak RSS is {peak} KiB"
    );
    peak
}

#[test]
fn a_sentinel_sending_garbage_is_unknown_and_outvoted() {
    let mock = Mock::start(b"@@@ this is not RESP\r\n\x00\xff\r\n");
    hostile_sentinel_is_outvoted(mock.addr);
}

#[test]
fn a_sentinel_announcing_a_1_gb_bulk_string_costs_no_memory() {
    let mock = Mock::start(b"$1073741824\r\nabc");
    hostile_sentinel_is_outvoted(mock.addr);
}

#[test]
fn a_sentinel_streaming_a_1_gb_bulk_string_is_outvoted_and_rolecall_stays_small() {
    // Every command answered with a streamed 1 GiB bulk string.
    let mock = Streamer::start(|_| None);
    let peak = hostile_sentinel_is_outvoted(mock.addr);
    eprintln!("peak RSS with a sentinel streaming 1 GiB: {peak} KiB");
}

/// The streaming server's address, for the fake sentinel (one per test binary run).
static STREAMING_SERVER: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

/// A sentinel that names the streaming server as the master of `mymaster`: just enough RESP.
fn fake_sentinel(cmd: &[String]) -> Option<Vec<u8>> {
    let words: Vec<&str> = cmd.iter().map(String::as_str).collect();
    Some(match words.as_slice() {
        ["sentinel", "get-master-addr-by-name", ..] => {
            let m = STREAMING_SERVER
                .get()
                .expect("the streaming server started first");
            let (ip, port) = (m.ip().to_string(), m.port().to_string());
            let mut r = b"*2\r\n".to_vec();
            r.extend(bulk(&ip));
            r.extend(bulk(&port));
            r
        }
        ["sentinel", "replicas", ..] => b"*0\r\n".to_vec(),
        ["info", ..] => bulk("# Sentinel\r\nsentinel_tilt:0\r\n"),
        ["client", ..] | ["ping"] => b"+OK\r\n".to_vec(),
        _ => b"-ERR not here\r\n".to_vec(),
    })
}

#[test]
fn a_server_answering_role_with_a_streamed_1_gb_bulk_string_is_unknown_and_rolecall_stays_small() {
    let server = Streamer::start(|cmd| match cmd.first().map(String::as_str) {
        Some("role") => None,
        _ => Some(b"+OK\r\n".to_vec()),
    });
    STREAMING_SERVER.set(server.addr).unwrap();
    let sentinel = Streamer::start(fake_sentinel);
    let node = DemoNode::pin(server.addr);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .redis_group("main", "mymaster", &[sentinel.addr])
        .check("unknown_hold", "\"60s\"")
        .start();
    let s = rolecall.wait_for_status("ROLE refused as too large", Duration::from_secs(20), |t| {
        t["groups"][0]["servers"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["error"].is_string()))
    });
    let before = s["checks"].as_u64().unwrap();
    let s = rolecall.wait_for_status("ten more checks", Duration::from_secs(30), |t| {
        t["checks"].as_u64().unwrap_or(0) >= before + 10
    });
    assert_eq!(s["verdict"], "unknown", "{s:#}");
    let peak = status_kib(rolecall.pid(), "VmHWM:");
    eprintln!(
        "peak RSS with a server streaming 1 GiB for ROLE: {} KiB",
        peak
    );
    assert!(
        peak > 0 && peak < 64 * 1024,
        "rolecall's peak RSS is {peak} KiB\n{s:#}"
    );
}
