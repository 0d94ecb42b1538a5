//! Discovery in steady state (README, "What it does", 2), with real processes on loopback: a
//! `redis-server` master and replica watched by three sentinels, a node (a small python3
//! process holding raw TCP connections to the master) and the `rolecall` binary.
//!
//! While the node is `ok` and no Sentinel event comes, rolecall confirms the node's known
//! connections by exact `sock_diag` lookups instead of dumping the namespace's sockets, and
//! dumps at least every 10 s (`DUMP_EVERY`). Both sides of that rule, end to end:
//!
//! - a known connection that closes is seen at the next check (the lookup fails, so rolecall
//!   dumps at once);
//! - a connection the node adds beside its known ones is seen at the next dump, within
//!   `DUMP_EVERY` and a few checks.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use support::{RolecallConfig, Topology, wait_until};

/// `DUMP_EVERY` in src/sockets/memory.rs.
const DUMP_EVERY: Duration = Duration::from_secs(10);
/// From start to a confirmed verdict: a few checks of 250 ms; generous for a loaded machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// A few checks of 250 ms, with margin for a loaded two-core machine.
const CHECKS: Duration = Duration::from_secs(4);

/// The node: connects to `port` on 127.0.0.1 and sends `PING`, prints `one`; once `more` exists,
/// opens a second connection the same way and prints `two`; once `close` exists, closes the
/// first and prints `closed`; then waits (every wait bounded, 120 s in all).
const NODE: &str = r#"
import os, socket, sys, time
port, more, close = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.time() + 120
def dial():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    s.recv(64)
    return s
def wait_for(path):
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
first = dial()
print("one", flush=True)
wait_for(more)
second = dial()
print("two", flush=True)
wait_for(close)
first.close()
print("closed", flush=True)
while time.time() < deadline:
    time.sleep(0.1)
"#;

struct Node {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Node {
    fn start(port: u16, more: &Path, close: &Path) -> Node {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(NODE)
            .arg(port.to_string())
            .arg(more)
            .arg(close)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("this test needs python3 on PATH (apt-get install python3)");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout"));
        Node { child, lines }
    }

    /// Reads the node's next line, which must be `want` (the node prints nothing else, and
    /// exits within its own bound, so this read ends).
    fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.lines
            .read_line(&mut line)
            .expect("read the node's stdout");
        assert_eq!(line.trim(), want, "the node's next line");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's connections (local ends) that rolecall placed on a server of group 0.
fn connections(status: &serde_json::Value) -> Vec<String> {
    let mut locals: Vec<String> = status["groups"][0]["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["local"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    locals.sort();
    locals
}

#[test]
fn a_closed_connection_is_seen_at_the_next_check_and_an_added_one_within_the_dump_period() {
    let topology = Topology::start(1, 3);
    let dir = tempfile::tempdir().unwrap();
    let (more, close) = (dir.path().join("more"), dir.path().join("close"));
    let mut node = Node::start(topology.master_addr().port(), &more, &close);
    node.expect("one");
    let mut rolecall = RolecallConfig::new()
        .pid(node.child.id())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let first = connections(&rolecall.status());
    assert_eq!(first.len(), 1, "{first:?}");

    // Added beside the known one: seen at a dump, at most DUMP_EVERY and a few checks later.
    std::fs::write(&more, b"").unwrap();
    node.expect("two");
    wait_until(
        DUMP_EVERY + CHECKS,
        "rolecall to see the node's second connection",
        || connections(&rolecall.status()).len() == 2,
    );
    let both = connections(&rolecall.status());
    assert!(both.contains(&first[0]), "{both:?}");

    // A known one closed: the next check's lookup fails and rolecall lists the sockets at once.
    std::fs::write(&close, b"").unwrap();
    node.expect("closed");
    wait_until(
        CHECKS,
        "rolecall to see the node's first connection closed",
        || {
            let now = connections(&rolecall.status());
            now.len() == 1 && now[0] != first[0]
        },
    );
    assert_eq!(rolecall.status()["verdict"], "ok");
}
