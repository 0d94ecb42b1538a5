//! Hostile peers (TESTING.md row 15): a "sentinel" that answers garbage, or announces a 1 GB bulk
//! string and then sends nothing. That source counts as unknown; rolecall neither crashes nor
//! grows; the real sentinels still decide.

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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn hostile_sentinel_is_outvoted(reply: &'static [u8]) {
    let topology = Topology::start(1, 3);
    let mock = Mock::start(reply);
    let node = DemoNode::pin(topology.master_addr());
    let sentinels = topology.sentinel_addrs();
    // Two real sentinels and the mock: the majority (2 of 3) is still reachable.
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .redis_group(
            "main",
            topology.master_name(),
            &[sentinels[0], sentinels[1], mock.addr],
        )
        .start();
    rolecall.wait_for_verdict("ok", Duration::from_secs(20));
    let checks = |r: &support::Rolecall| r.status()["checks"].as_u64().unwrap();
    let before = checks(&rolecall);
    support::wait_until(Duration::from_secs(20), "twenty more checks", || {
        checks(&rolecall) >= before + 20
    });
    let status = rolecall.status();
    assert_eq!(status["verdict"], "ok", "{status:#}");
    let mock_answer = status["groups"][0]["sentinels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == mock.addr.to_string())
        .cloned()
        .unwrap();
    assert!(mock_answer["error"].is_string(), "{mock_answer:#}");
    assert!(rolecall.is_running());
    let rss = rss_kib(rolecall.pid());
    assert!(rss > 0 && rss < 64 * 1024, "rolecall's RSS is {rss} KiB");
}

#[test]
fn a_sentinel_sending_garbage_is_unknown_and_outvoted() {
    hostile_sentinel_is_outvoted(b"@@@ this is not RESP\r\n\x00\xff\r\n");
}

#[test]
fn a_sentinel_announcing_a_1_gb_bulk_string_costs_no_memory() {
    hostile_sentinel_is_outvoted(b"$1073741824\r\nabc");
}
