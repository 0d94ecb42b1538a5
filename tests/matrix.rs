//! More rows of TESTING.md's fault matrix, end to end with real processes:
//!
//! - row 6: after a frozen master resumes with `min-replicas-to-write 1`, it refuses the node's
//!   writes (NOREPLICAS), the node on it is `stale_master`, and the true master is not degraded;
//! - rows 17 and 29 (a master that does not answer, a hung socket): Sentinel's master frozen
//!   before any failover holds the last state, in rotation, and never takes the node out; every
//!   Redis call is bounded, so checks keep completing and the snapshot stays fresh;
//! - row 17: a master announced where nothing listens (killed before any failover), or under an
//!   address this host cannot reach, holds the last state, in rotation, and never drains;
//! - row 22: a master busy with a long script (BUSY) or loading its dataset (LOADING) holds the
//!   last state, in rotation;
//! - row 29: a check loop that does wedge (a blocking read of the node's pid file) is reported
//!   stale while the probes are still answered at once and the systemd watchdog is no longer
//!   fed, and recovers when released;
//! - row 29 again: a node on a replica that freezes stays out (it is still the replica it was);
//! - row 31: rolecall itself frozen for longer than a snapshot stays fresh, shorter or longer than
//!   the unknown hold, or longer than a running grace period: on resume, nothing changes before a
//!   fresh check — no fail-open, no grace run out, no drain lifted;
//! - row 33: rolecalls given another topology's sentinels (same master name) drain no node.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{DemoNode, Rolecall, RolecallConfig, Topology, call_timeout, value_to_string};

/// From start (or a change of the node's connections) to a confirmed verdict: a few checks of
/// 250 ms; generous for a loaded two-core machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// The harness's check settings (`RolecallConfig::new`): interval 250 ms, timeout 200 ms. A
/// snapshot older than `interval * 3 + timeout * 4` is stale (`Checker::stale_after`).
const STALE_AFTER: Duration = Duration::from_millis(250 * 3 + 200 * 4);
/// A bound on any probe answer that proves it did not wait on Redis or on the check loop: the
/// loop is wedged for good, or its Redis calls time out after 200 ms each. Loose on purpose;
/// the benchmark measures the real figure.
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// Between polls of rolecall while a fault lasts.
const POLL: Duration = Duration::from_millis(100);
/// Sentinel's `down-after-milliseconds` for tests where the master must stay Sentinel's master
/// while it misbehaves (no failover, no `SCRIPT KILL` from Sentinel).
const SLOW_SENTINEL: &str = "sentinel down-after-milliseconds {name} 60000";

// ---------------------------------------------------------------------------------------------
// Helpers

/// 1 master, 1 replica and 3 sentinels that do not fail over before 60 s, so the master stays
/// Sentinel's master while it misbehaves.
fn slow_failover_topology() -> Topology {
    Topology::builder()
        .replicas(1)
        .sentinels(3)
        .sentinel_conf(SLOW_SENTINEL)
        .start()
}

/// A node pinned to `addr` and its rolecall (the harness's check settings), once in rotation.
fn pinned_in_rotation(topology: &Topology, addr: SocketAddr) -> (DemoNode, Rolecall) {
    let node = DemoNode::pin(addr);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    (node, rolecall)
}

fn first_word(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

/// The words of an agent reply before its `#description`.
fn agent_words(reply: &str) -> Vec<&str> {
    reply
        .split('#')
        .next()
        .unwrap_or("")
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect()
}

fn reason(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or("")
}

fn checks(status: &serde_json::Value) -> u64 {
    status["checks"].as_u64().unwrap_or(0)
}

/// `rolecall_verdict_changes_total` from `/metrics`: how many changes of verdict or rotation the
/// check loop published.
fn verdict_changes(rolecall: &Rolecall) -> u64 {
    let (code, body) = rolecall.http_get("/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("rolecall_verdict_changes_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .unwrap_or_else(|| panic!("no rolecall_verdict_changes_total in\n{body}"))
}

/// One in-rotation observation: `/readyz` 200 and an agent reply whose health word is `up` with
/// no administrative word that takes the node out. Returns the agent reply.
fn assert_in_rotation(rolecall: &Rolecall, when: &str) -> String {
    let (code, body) = rolecall.http_get("/readyz");
    assert_eq!(
        code,
        200,
        "{when}: /readyz {code} {body}\n{}",
        rolecall.report(None)
    );
    let reply = rolecall.agent(Some("\n"));
    assert_eq!(
        first_word(&reply),
        "up",
        "{when}: agent {reply:?}\n{}",
        rolecall.report(None)
    );
    reply
}

/// Polls rolecall every [`POLL`] while `lasting()` holds (at most `limit`, and at least once),
/// asserting at every poll that the node is in rotation. Returns every `/status` seen.
fn in_rotation_while(
    rolecall: &Rolecall,
    limit: Duration,
    what: &str,
    mut lasting: impl FnMut() -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    let max_polls = limit.as_millis() / POLL.as_millis() + 1;
    let mut seen = Vec::new();
    for _ in 0..max_polls {
        let status = rolecall.status();
        assert_eq!(
            status["in_rotation"],
            true,
            "{what}: out of rotation after {:?}\n{status:#}\n{}",
            start.elapsed(),
            rolecall.report(None)
        );
        assert_in_rotation(rolecall, what);
        seen.push(status);
        if !lasting() || start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(POLL);
    }
    seen
}

/// What HAProxy sends an agent: an empty `agent-send` line.
const AGENT_PROBE: &[u8] = b"\n";
/// A readiness probe as a kubelet sends it, closing after the answer.
const READYZ_PROBE: &[u8] = b"GET /readyz HTTP/1.1\r\nHost: rolecall\r\nConnection: close\r\n\r\n";

/// Connects to `addr` and sends `request` before returning (the kernel queues both while
/// rolecall is stopped), then reads the whole answer on a thread: bounded by a 15 s read
/// timeout and 64 KiB.
fn queue_probe(
    addr: SocketAddr,
    request: &'static [u8],
) -> std::thread::JoinHandle<Result<String, String>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect to {addr}: {e}"))
        .and_then(|mut stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(15)))
                .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(15))))
                .and_then(|()| stream.write_all(request))
                .map_err(|e| format!("send to {addr}: {e}"))?;
            Ok(stream)
        });
    std::thread::spawn(move || {
        let mut stream = stream?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(64 * 1024)
            .read_to_end(&mut reply)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    })
}

/// The status code of a raw HTTP answer.
fn status_code(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// systemd's side of `NOTIFY_SOCKET`: a datagram socket in a temp dir that records every
/// notification rolecall sends, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    heard: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn start() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-notify-")
            .tempdir()
            .expect("create a temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heard.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Bounded: at most 10 minutes of 100 ms reads.
            for _ in 0..6_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    h.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket {
            path,
            heard,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// When the first notification carrying `line` arrived, if one did.
    fn first(&self, line: &str) -> Option<Instant> {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .find(|(_, m)| m.lines().any(|l| l == line))
            .map(|(at, _)| *at)
    }

    /// How many notifications so far carried `line` (e.g. `WATCHDOG=1`).
    fn count(&self, line: &str) -> usize {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `pid` to `path` atomically (a temp file renamed over it).
fn write_pid_file(path: &Path, pid: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid}\n")).expect("write a pid file");
    std::fs::rename(&tmp, path).expect("rename the pid file into place");
}

// ---------------------------------------------------------------------------------------------
// Row 6: two masters, the resumed one refusing writes for lack of replicas

#[test]
fn a_resumed_old_master_refusing_writes_for_lack_of_replicas_is_stale_master_not_degraded() {
    // Every server refuses writes without a replica; two replicas, so that the promoted one
    // keeps a replica (the other) and takes writes.
    let mut topology = Topology::builder()
        .replicas(2)
        .sentinels(3)
        .server_args(&["--min-replicas-to-write", "1"])
        .start();
    let old = topology.master_addr();
    let node = DemoNode::pin(old);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        // Long enough that the node is still in its grace period when the old master resumes.
        .check("stale_master_grace", "\"60s\"")
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // Frozen: Sentinel fails over (down-after 1 s) to a replica, and the other replica follows
    // the new master.
    topology.server_mut(old).stop();
    let new = topology.wait_new_master(old);
    support::wait_until(
        Duration::from_secs(30),
        &format!("the new master {new} to take a write (it has a replica again)"),
        || {
            topology
                .server(new)
                .try_cli(&["SET", "rolecall-test:w", "1"])
                .is_ok()
        },
    );

    // Resumed: the old master still claims master, but its replicas left, so it refuses the
    // node's writes with NOREPLICAS.
    topology.server_mut(old).cont();
    support::wait_until(
        Duration::from_secs(10),
        &format!("the resumed {old} to refuse writes with NOREPLICAS"),
        || {
            topology
                .server(old)
                .try_cli(&["SET", "rolecall-test:w", "1"])
                .is_err_and(|e| e.code() == Some("NOREPLICAS"))
        },
    );
    support::wait_until(
        Duration::from_secs(10),
        "the node's own writes to be refused with NOREPLICAS",
        || node.stderr_tail(200).contains("NOREPLICAS"),
    );

    // Sentinel's majority decides: the node on the resumed master is stale_master; the true
    // master took rolecall's probe write, so nothing is degraded.
    let status = rolecall.wait_for_status(
        "stale_master on a server that still claims master",
        VERDICT_TIMEOUT,
        |s| s["verdict"] == "stale_master" && reason(s).contains("still claims master"),
    );
    let why = reason(&status);
    assert!(
        why.contains(&old.to_string()) && why.contains(&new.to_string()),
        "the reason names the resumed {old} and Sentinel's master {new}: {why}"
    );
    let group = &status["groups"][0];
    assert_eq!(group["master"], new.to_string(), "{status:#}");
    assert_eq!(group["probe"]["ok"], true, "{status:#}");
    assert_ne!(status["observed"], "degraded", "{status:#}");
    assert_eq!(status["in_rotation"], true, "within its grace: {status:#}");
    let reply = assert_in_rotation(&rolecall, "stale_master within its grace");
    assert!(reply.contains("#stale_master"), "{reply:?}");
}

// ---------------------------------------------------------------------------------------------
// Rows 17 and 29: Sentinel's master does not answer from here (a hung socket)

#[test]
fn a_frozen_master_holds_in_rotation_and_does_not_wedge_the_check_loop() {
    let mut topology = slow_failover_topology();
    let master = topology.master_addr();
    let (_node, mut rolecall) = pinned_in_rotation(&topology, master);

    // Frozen: the sentinels still name it (no failover before 60 s); the kernel still accepts
    // connections to it, and nothing answers on them.
    topology.server_mut(master).stop();
    let status = rolecall.wait_for_status(
        "unknown: Sentinel's master did not answer",
        VERDICT_TIMEOUT,
        |s| s["verdict"] == "unknown",
    );
    let why = reason(&status);
    assert!(
        why.contains(&format!("Sentinel's master {master} did not answer ROLE")),
        "the reason names the silent master {master}: {why}"
    );
    assert!(
        why.contains("holding the last state (in rotation)"),
        "{why}"
    );
    let checks_before = checks(&status);

    // Held in rotation for longer than any grace period (disconnected 5 s, fall 2 checks); the
    // hold (30 s) is not over, so this is the held state, not a fail-open. Meanwhile every
    // Redis call of the check loop is bounded by its timeout: checks keep completing, the
    // snapshot never goes stale, and the probes answer without waiting on the frozen server.
    let mut slowest = Duration::ZERO;
    let seen = in_rotation_while(&rolecall, Duration::from_secs(7), "master frozen", || {
        let t = Instant::now();
        let live = rolecall.http_get("/livez");
        slowest = slowest.max(t.elapsed());
        assert_eq!(live, (200, "ok\n".to_owned()));
        true
    });
    assert!(seen.len() >= 20, "polled throughout ({} polls)", seen.len());
    for s in &seen {
        assert_eq!(
            s["stale"], false,
            "a hung socket wedged the check loop\n{s:#}"
        );
        let took = s["check_duration_ms"].as_f64().unwrap_or(f64::MAX);
        assert!(
            took < STALE_AFTER.as_millis() as f64,
            "a check took {took} ms\n{s:#}"
        );
    }
    let last = seen.last().unwrap();
    assert_eq!(last["verdict"], "unknown", "{last:#}");
    assert!(
        checks(last) >= checks_before + 5,
        "checks kept completing: {checks_before} -> {}",
        checks(last)
    );
    assert!(slowest < PROBE_BOUND, "slowest /livez {slowest:?}");

    // Resumed: back to ok, never having left rotation.
    topology.server_mut(master).cont();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_in_rotation(&rolecall, "master resumed");
}

// ---------------------------------------------------------------------------------------------
// Row 17: Sentinel announces a master this host cannot reach

/// Polls for `span`, asserting at every poll that the node is in rotation and `unknown`,
/// holding its last state, with a reason that names `master`. Returns the number of polls.
fn holds_in_rotation_naming(rolecall: &Rolecall, span: Duration, master: &str) -> usize {
    let seen = in_rotation_while(rolecall, span, "announced master unreachable", || true);
    for s in &seen {
        let why = reason(s);
        assert!(
            s["verdict"] == "unknown"
                && why.contains(master)
                && why.contains("holding the last state (in rotation)"),
            "held as unknown, naming {master}: {s:#}"
        );
    }
    seen.len()
}

#[test]
fn a_master_announced_where_nothing_listens_holds_in_rotation_and_never_goes_out() {
    let mut topology = slow_failover_topology();
    let master = topology.master_addr();
    let (_node, mut rolecall) = pinned_in_rotation(&topology, master);

    // Killed: connections to the announced address are refused, the node has none left (it
    // keeps redialling), and the sentinels keep announcing it (no failover before 60 s). Every
    // node shares this; draining cannot help.
    topology.server_mut(master).kill();
    rolecall.wait_for_verdict("unknown", VERDICT_TIMEOUT);
    // Longer than the disconnected grace (5 s) and far from the unknown hold (30 s).
    let polls = holds_in_rotation_naming(&rolecall, Duration::from_secs(8), &master.to_string());
    assert!(polls >= 20, "polled throughout ({polls} polls)");
    let status = rolecall.status();
    assert_eq!(
        status["groups"][0]["connections"],
        serde_json::json!([]),
        "the node has no connection left: {status:#}"
    );
}

#[test]
fn a_master_announced_under_an_address_unreachable_from_here_holds_in_rotation() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let (_node, mut rolecall) = pinned_in_rotation(&topology, master);

    // The sentinels now announce the same server as 127.0.0.2:PORT (as with a NAT or a wrong
    // `announce-ip`), where nothing listens from this host; the node still reaches it as
    // 127.0.0.1:PORT.
    let announced = format!("127.0.0.2:{}", master.port());
    topology.repoint("127.0.0.2", master.port());
    rolecall.wait_for_status(
        &format!("unknown with Sentinel's master {announced}"),
        VERDICT_TIMEOUT,
        |s| s["verdict"] == "unknown" && s["groups"][0]["master"] == announced,
    );
    let polls = holds_in_rotation_naming(&rolecall, Duration::from_secs(8), &announced);
    assert!(polls >= 20, "polled throughout ({polls} polls)");
}

// ---------------------------------------------------------------------------------------------
// Row 22: BUSY and LOADING on the master

#[test]
fn a_master_busy_with_a_long_script_holds_in_rotation() {
    let topology = // Sentinel would SCRIPT KILL a script that keeps the master BUSY past down-after.
        slow_failover_topology();
    let master = topology.master_addr();
    let (_node, mut rolecall) = pinned_in_rotation(&topology, master);
    let changes_before = verdict_changes(&rolecall);

    // Other clients get BUSY once a script has run for 100 ms; this one spins for 3 s (read-only,
    // so it ends by itself).
    topology
        .master()
        .cli(&["CONFIG", "SET", "busy-reply-threshold", "100"]);
    let script = "local t0 = redis.call('TIME') \
                  local start = t0[1] * 1000000 + t0[2] \
                  while true do \
                    local t = redis.call('TIME') \
                    if t[1] * 1000000 + t[2] - start > 3000000 then return 1 end \
                  end";
    let eval = std::thread::spawn(move || {
        call_timeout(master, &["EVAL", script, "0"], Duration::from_secs(30))
            .map(|v| value_to_string(&v))
    });

    let seen = in_rotation_while(&rolecall, Duration::from_secs(30), "master BUSY", || {
        !eval.is_finished()
    });
    let result = eval.join().expect("the EVAL thread");
    assert_eq!(result.as_deref().ok(), Some("1"), "EVAL: {result:?}");
    let held = seen
        .iter()
        .find(|s| s["verdict"] == "unknown")
        .unwrap_or_else(|| {
            panic!(
                "never unknown while the master was BUSY ({} polls)\n{}",
                seen.len(),
                rolecall.report(None)
            )
        });
    let why = reason(held);
    assert!(why.contains("BUSY"), "the reason says BUSY: {why}");
    assert!(
        why.contains("holding the last state (in rotation)"),
        "{why}"
    );

    // The script over: ok again, and every change on the way was into unknown (held in
    // rotation) or back to ok. At least the one there and back; at most a few (a check that
    // times out on a loaded machine is held as unknown too), never one per check.
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_in_rotation(&rolecall, "script over");
    let changed = verdict_changes(&rolecall) - changes_before;
    let status = rolecall.status();
    assert!((2..=6).contains(&changed), "{changed} verdict changes");
    let recent = status["changes"]
        .as_array()
        .expect("/status lists the changes");
    let since = &recent[recent.len().saturating_sub(changed as usize)..];
    assert_eq!(since.len() as u64, changed, "{status:#}");
    for c in since {
        assert!(
            matches!(c["verdict"].as_str(), Some("unknown" | "ok")) && c["in_rotation"] == true,
            "{c}"
        );
    }
}

#[test]
fn a_master_loading_its_dataset_holds_in_rotation() {
    let topology = slow_failover_topology();
    let master = topology.master_addr();
    let (_node, mut rolecall) = pinned_in_rotation(&topology, master);

    // `DEBUG RELOAD` saves the dataset and loads it again in the same process (what a restart
    // does, without a new port): 20k keys at 100 µs each is about 2–4 s of LOADING, during
    // which the server answers other clients every 1 KiB loaded. ROLE still works (it is
    // allowed while loading); writes get LOADING.
    let m = topology.master();
    m.cli(&["DEBUG", "POPULATE", "20000", "rolecall-test"]);
    m.cli(&["CONFIG", "SET", "key-load-delay", "100"]);
    m.cli(&[
        "CONFIG",
        "SET",
        "loading-process-events-interval-bytes",
        "1024",
    ]);
    let reload = std::thread::spawn(move || {
        call_timeout(master, &["DEBUG", "RELOAD"], Duration::from_secs(60))
            .map(|v| value_to_string(&v))
    });

    let seen = in_rotation_while(&rolecall, Duration::from_secs(60), "master LOADING", || {
        !reload.is_finished()
    });
    let result = reload.join().expect("the DEBUG RELOAD thread");
    assert_eq!(
        result.as_deref().ok(),
        Some("OK"),
        "DEBUG RELOAD: {result:?}"
    );
    let held = seen
        .iter()
        .find(|s| s["verdict"] == "unknown")
        .unwrap_or_else(|| {
            panic!(
                "never unknown while the master was loading ({} polls)\n{}",
                seen.len(),
                rolecall.report(None)
            )
        });
    let why = reason(held);
    assert!(
        why.contains("probe write") && why.to_lowercase().contains("loading"),
        "the reason says the probe write met LOADING: {why}"
    );
    assert!(
        why.contains("holding the last state (in rotation)"),
        "{why}"
    );

    m.cli(&["CONFIG", "SET", "key-load-delay", "0"]);
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_in_rotation(&rolecall, "dataset loaded");
}

// ---------------------------------------------------------------------------------------------
// Row 29: a wedged check loop

/// Row 1: `READY=1` once the listeners are bound, without waiting on Redis: every sentinel is
/// frozen and the check timeout is 4 s, so no check can complete for 4 s; the notification
/// comes first, with `/readyz` 503 meanwhile. Then, with Redis answering, `/readyz` turns 200
/// only after `rise` (3) checks.
#[test]
fn ready_is_notified_without_waiting_on_redis_and_readiness_needs_rise_checks() {
    let mut topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    for i in 0..3 {
        topology.sentinel_mut(i).stop();
    }
    let notify = NotifySocket::start();
    let spawned = Instant::now();
    let blind = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("interval", "\"10s\"")
        .check("timeout", "\"4s\"")
        .env("NOTIFY_SOCKET", &notify.path().display().to_string())
        .start();
    support::wait_until(VERDICT_TIMEOUT, "READY=1", || notify.count("READY=1") == 1);
    let ready_after = notify.first("READY=1").unwrap().duration_since(spawned);
    let status = blind.status();
    assert_eq!(
        checks(&status),
        0,
        "no check could complete yet: {status:#}"
    );
    assert_eq!(blind.http_get("/readyz").0, 503);
    assert!(
        spawned.elapsed() < Duration::from_secs(4),
        "READY=1 {ready_after:?} after the start, status read {:?} after: too slow to show \
         that it did not wait for the 4 s timeout",
        spawned.elapsed()
    );
    drop(blind);
    for i in 0..3 {
        topology.sentinel_mut(i).cont();
    }

    // Redis answers: in rotation only once `rise` checks agree (each status is one snapshot).
    // Checks a second apart, so that statuses polled every 50 ms see the ones before the third.
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("rise", "3")
        .check("interval", "\"1s\"")
        .check("fast_interval", "\"1s\"")
        .start();
    let first_in =
        rolecall.wait_for_status("in rotation", VERDICT_TIMEOUT, |s| s["in_rotation"] == true);
    assert_eq!(first_in["verdict"], "ok", "{first_in:#}");
    assert!(
        checks(&first_in) >= 3,
        "in rotation after fewer than rise = 3 checks: {first_in:#}"
    );
    assert_eq!(rolecall.http_get("/readyz").0, 200);
}

#[test]
fn a_wedged_check_loop_is_reported_stale_while_probes_answer_and_the_watchdog_starves() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let dir = tempfile::Builder::new()
        .prefix("rolecall-test-pidfile-")
        .tempdir()
        .expect("create a temp dir");
    let pid_file = dir.path().join("node.pid");
    write_pid_file(&pid_file, node.pid());
    let notify = NotifySocket::start();
    let mut rolecall = RolecallConfig::new()
        .node_selector("pid_file", &format!("{:?}", pid_file.display().to_string()))
        .topology(&topology)
        .env("NOTIFY_SOCKET", &notify.path().display().to_string())
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    support::wait_until(VERDICT_TIMEOUT, "READY=1 and WATCHDOG=1", || {
        notify.count("READY=1") == 1 && notify.count("WATCHDOG=1") >= 2
    });

    // The pid file becomes a FIFO nobody writes to: the next check blocks in open(2), inside
    // the node discovery that has no timeout of its own. A second name keeps the FIFO
    // reachable to release it.
    let fifo = dir.path().join("wedge.fifo");
    let out = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .output()
        .expect("run mkfifo");
    assert!(out.status.success(), "mkfifo: {out:?}");
    let link = dir.path().join("wedge.link");
    std::fs::hard_link(&fifo, &link).expect("link the FIFO");
    std::fs::rename(&link, &pid_file).expect("put the FIFO in place of the pid file");

    // Stale once no check completed for `stale_after`; the verdict is then `unknown`, holding
    // the last rotation (the node was in).
    let status =
        rolecall.wait_for_status("a stale snapshot", VERDICT_TIMEOUT, |s| s["stale"] == true);
    // `age_ms` is truncated to whole milliseconds, and staleness is `age > stale_after` on the
    // exact clock: a snapshot stale at 1550.4 ms shows `age_ms: 1550`.
    assert!(
        status["age_ms"].as_u64().unwrap_or(0) >= STALE_AFTER.as_millis() as u64,
        "{status:#}"
    );
    assert_eq!(status["verdict"], "unknown", "{status:#}");
    assert_eq!(status["in_rotation"], true, "{status:#}");
    assert!(reason(&status).contains("check loop stalled"), "{status:#}");
    let stuck_checks = checks(&status);
    let watchdogs = notify.count("WATCHDOG=1");

    // While it stays wedged: every probe answered at once, from the last snapshot.
    let mut slowest = Duration::ZERO;
    for _ in 0..15 {
        let t = Instant::now();
        let reply = rolecall.agent(Some("\n"));
        let (live, live_body) = rolecall.http_get("/livez");
        let (ready, ready_body) = rolecall.http_get("/readyz?verbose");
        slowest = slowest.max(t.elapsed());
        assert!(
            reply.starts_with("up") && reply.contains("check loop stalled"),
            "{reply:?}"
        );
        assert_eq!((live, live_body.as_str()), (200, "ok\n"));
        assert_eq!(ready, 200, "{ready_body}");
        assert!(ready_body.contains("[-]snapshot stale"), "{ready_body}");
        std::thread::sleep(POLL);
    }
    assert!(slowest < PROBE_BOUND, "slowest round of probes {slowest:?}");
    let status = rolecall.status();
    assert_eq!(status["stale"], true, "{status:#}");
    assert_eq!(
        checks(&status),
        stuck_checks,
        "no check completed: {status:#}"
    );
    assert_eq!(
        notify.count("WATCHDOG=1"),
        watchdogs,
        "the watchdog is not fed while the check loop is wedged"
    );

    // Released: a pid file again, and the blocked open gets its writer. Checks resume, the
    // snapshot is fresh, and the watchdog is fed again.
    write_pid_file(&pid_file, node.pid());
    let mut writer = support::wait_for(
        Duration::from_secs(5),
        "the wedged check to be waiting on the FIFO",
        || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok()
        },
    );
    writeln!(writer, "{}", node.pid()).expect("write the pid into the FIFO");
    drop(writer);
    let status = rolecall.wait_for_status("a fresh ok snapshot", VERDICT_TIMEOUT, |s| {
        s["stale"] == false && s["verdict"] == "ok" && checks(s) > stuck_checks + 1
    });
    assert_eq!(status["in_rotation"], true, "{status:#}");
    support::wait_until(VERDICT_TIMEOUT, "WATCHDOG=1 again", || {
        notify.count("WATCHDOG=1") > watchdogs
    });
    assert_in_rotation(&rolecall, "check loop released");
}

// ---------------------------------------------------------------------------------------------
// Row 31: rolecall itself frozen

#[test]
fn a_rolecall_frozen_for_less_than_the_hold_changes_nothing_on_resume() {
    let topology = Topology::start(1, 3);
    let on_master = DemoNode::pin(topology.master_addr());
    let on_replica = DemoNode::pin(topology.replicas()[0].addr());
    let config = |pid: u32, name: &str| {
        RolecallConfig::new()
            .pid(pid)
            .node_name(name)
            .topology(&topology)
            .check("unknown_hold", "\"20s\"")
    };
    let mut rc_in = config(on_master.pid(), "in").start();
    let mut rc_out = config(on_replica.pid(), "out").start();
    rc_in.wait_for_verdict("ok", VERDICT_TIMEOUT);
    rc_out.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_in_rotation(&rc_in, "before the freeze");
    assert_eq!(first_word(&rc_out.agent(Some("\n"))), "drain");
    let changes = (verdict_changes(&rc_in), verdict_changes(&rc_out));
    let checks_before = (checks(&rc_in.status()), checks(&rc_out.status()));

    // Frozen for 3 s: longer than a snapshot stays fresh (1.55 s), shorter than the hold (20 s).
    // Probes sent meanwhile wait in the listen queues and are answered first thing on resume.
    // The sleeps set the length of the fault (the freeze); they wait for no state.
    rc_in.stop();
    rc_out.stop();
    let frozen_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let queued: Vec<_> = [&rc_in, &rc_out]
        .iter()
        .map(|rc| {
            (
                queue_probe(rc.agent_addr(), AGENT_PROBE),
                queue_probe(rc.http_addr(), READYZ_PROBE),
            )
        })
        .collect();
    let frozen_for = Duration::from_secs(3);
    std::thread::sleep(frozen_for.saturating_sub(frozen_at.elapsed()));
    assert!(frozen_at.elapsed() > STALE_AFTER);
    rc_in.cont();
    rc_out.cont();

    let mut answers = queued.into_iter().map(|(agent, readyz)| {
        let readyz = readyz.join().expect("readyz thread");
        (
            agent.join().expect("agent thread"),
            readyz.ok().as_deref().and_then(status_code),
        )
    });
    let (agent_in, readyz_in) = answers.next().unwrap();
    let (agent_out, readyz_out) = answers.next().unwrap();
    // The node in rotation stays in; the node out stays out (the agent says nothing, or drain;
    // never `up`, never `ready`, which would lift the drain in HAProxy).
    let agent_in = agent_in.expect("queued agent answer (in)");
    assert_eq!(first_word(&agent_in), "up", "{agent_in:?}");
    assert_eq!(readyz_in, Some(200));
    let agent_out = agent_out.expect("queued agent answer (out)");
    let words = agent_words(&agent_out);
    assert!(
        words.is_empty() || words.contains(&"drain"),
        "{agent_out:?}\n{}",
        rc_out.report(None)
    );
    assert!(!words.contains(&"ready"), "{agent_out:?}");
    assert_eq!(readyz_out, Some(503), "{}", rc_out.report(None));

    // Then fresh checks, with the same verdicts and no change published on the way.
    for (rc, verdict, before) in [
        (&mut rc_in, "ok", checks_before.0),
        (&mut rc_out, "stuck_on_replica", checks_before.1),
    ] {
        let status = rc.wait_for_status("fresh checks after the resume", VERDICT_TIMEOUT, |s| {
            s["stale"] == false && checks(s) >= before + 3
        });
        assert_eq!(status["verdict"], verdict, "{status:#}");
    }
    assert_in_rotation(&rc_in, "after the resume");
    assert_eq!(rc_out.http_get("/readyz").0, 503);
    assert_eq!(first_word(&rc_out.agent(Some("\n"))), "drain");
    assert_eq!(
        (verdict_changes(&rc_in), verdict_changes(&rc_out)),
        changes,
        "no verdict change was published across the freeze"
    );
}

/// Row 29: a node drained as `stuck_on_replica` stays out when the replica it is on stops
/// answering: it is still the replica it last said it was.
#[test]
fn a_node_on_a_replica_that_freezes_stays_out() {
    let mut topology = Topology::start(1, 3);
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin(replica);
    let mut rc = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rc.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    topology.server_mut(replica).stop();
    let start = Instant::now();
    for _ in 0..40 {
        let (code, _) = rc.http_get("/readyz");
        let reply = rc.agent(Some("\n"));
        assert!(
            code == 503 && first_word(&reply) != "up",
            "back in rotation {:?} after the replica froze: /readyz {code}, agent {reply:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Row 33: two nodes on topology A; their rolecalls ask the sentinels of topology B, which
/// monitor another master under the same name. Every node looks disconnected from B: no drain.
#[test]
fn a_bad_sentinel_set_drains_no_node() {
    let a = Topology::start(1, 3);
    let b = Topology::start(1, 3);
    let nodes = [
        DemoNode::pin(a.master_addr()),
        DemoNode::pin(a.master_addr()),
    ];
    let rolecalls: Vec<Rolecall> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            RolecallConfig::new()
                .pid(n.pid())
                .node_name(&format!("n{i}"))
                .redis_group("main", "mymaster", &b.sentinel_addrs())
                .start()
        })
        .collect();
    let start = Instant::now();
    for _ in 0..80 {
        for rc in &rolecalls {
            let reply = rc.agent(Some("\n"));
            let w = first_word(&reply);
            assert!(
                w != "drain" && w != "down",
                "fleet-wide drain after {:?}: agent {reply:?}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Row 31: a rolecall that drained a node, frozen longer than `unknown_hold`, answers a probe
/// queued during the freeze without failing open: the freeze is not time the check loop failed.
#[test]
fn a_rolecall_frozen_longer_than_the_hold_does_not_fail_open_on_resume() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.replicas()[0].addr());
    let mut rc = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("unknown_hold", "\"2s\"")
        .start();
    rc.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_eq!(first_word(&rc.agent(Some("\n"))), "drain");
    rc.stop();
    // The length of the fault: frozen for 4 s, twice the hold. The probes are sent at its end
    // and wait in the listen queues for the resume.
    std::thread::sleep(Duration::from_secs(4));
    let a = queue_probe(rc.agent_addr(), AGENT_PROBE);
    let h = queue_probe(rc.http_addr(), READYZ_PROBE);
    rc.cont();
    let reply = a.join().unwrap().unwrap_or_default();
    let ready = h.join().unwrap().ok().as_deref().and_then(status_code);
    assert!(
        first_word(&reply) != "up" && !reply.contains(" ready") && ready == Some(503),
        "on resume: agent {reply:?}, /readyz {ready:?}"
    );
    // The freeze is on record for the operator.
    let metrics = rc.http_get("/metrics").1;
    let frozen = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rolecall_frozen_seconds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rolecall_frozen_seconds_total in\n{metrics}"));
    assert!(frozen >= 3.0, "frozen {frozen} s, stopped for 4 s");
}

/// Row 31: frozen during a `stale_master` grace, resumed after the grace would have run out and
/// after the node moved to the true master: the node is not taken out on the old evidence.
#[test]
fn a_grace_period_does_not_run_out_while_rolecall_is_frozen() {
    let topology = Topology::start(1, 3);
    let mut node = DemoNode::follow(&topology);
    let mut rc = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("stale_master_grace", "\"3s\"")
        .start();
    rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let (old, new) = topology.failover();
    let s = rc.wait_for_verdict("stale_master", Duration::from_secs(5));
    assert_eq!(s["in_rotation"], true);
    let frozen_at = Instant::now();
    rc.stop();
    // The node moves to Sentinel's master while rolecall is frozen.
    for c in topology.server(old).clients_named(&node.client_name()) {
        topology
            .server(old)
            .cli(&["CLIENT", "KILL", "ID", &c["id"]]);
    }
    let want = format!("connected {new}");
    node.wait_for_line(Duration::from_secs(10), |l| l == want);
    // The length of the fault: frozen for 5 s in all, past the 3 s grace.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(frozen_at.elapsed()));
    rc.cont();
    let start = Instant::now();
    let mut outs = Vec::new();
    for _ in 0..200 {
        let (code, _) = rc.http_get("/readyz");
        if code != 200 {
            {
                let st = rc.status();
                outs.push((
                    start.elapsed(),
                    format!(
                        "checks={} observed={} verdict={} in={} {}",
                        st["checks"],
                        st["observed"],
                        st["verdict"],
                        st["in_rotation"],
                        st["groups"][0]["connections"]
                    ),
                ));
            }
        }
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], true);
    let changes = verdict_changes(&rc);
    assert!(
        outs.is_empty(),
        "out of rotation after the resume: {outs:?}; verdict changes so far {changes}"
    );
}
