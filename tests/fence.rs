//! Fencing the demoted master (row 44 of the fault matrix), with real servers on loopback:
//!
//! - after `SENTINEL FAILOVER`, the old master still claims master; rolecall (kill repair on, so
//!   the fence is on) pauses writes there while the new master takes every write at once, lifts
//!   the pause when Sentinel converts the old master, which then resyncs as a replica;
//! - a rolecall killed mid-fence: writes on the old master resume within one lease;
//! - the sentinels naming the old master again while it is fenced: the pause is lifted at once
//!   (the next check), not at the end of the lease (and the other server, which then claims
//!   master without being Sentinel's, is the one fenced).
//!
//! What a write pause does to Sentinel (found with these servers, Redis 7.0): Sentinel's hello
//! is a `PUBLISH` on its command link to each instance, which `CLIENT PAUSE … WRITE` blocks, so
//! the link stalls, the sentinels see the paused old master as `+sdown`, and its demotion
//! transaction (`MULTI`, `SLAVEOF`, `CONFIG REWRITE`, `CLIENT KILL`, `EXEC`) waits behind the
//! blocked `PUBLISH`: a fence that never lifted would keep the old master a master. rolecall
//! lifts it when a sentinel announces `+convert-to-slave` for that server; the demotion then
//! runs and the server resyncs from the new master.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{DemoNode, Rolecall, RolecallConfig, Topology, call_timeout};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
const DEMOTED_TIMEOUT: Duration = Duration::from_secs(60);
/// A write that waits longer than this is held by a pause (a free server answers in well under
/// a millisecond; the rest is margin for a loaded machine).
const HELD: Duration = Duration::from_secs(1);

fn rolecall_for(node: &DemoNode, topology: &Topology, repair: &str) -> Rolecall {
    RolecallConfig::new()
        .pid(node.pid())
        .topology(topology)
        .extra(&format!(
            "[repair]\nkill_stale_connections = true\n{repair}"
        ))
        .start()
}

/// Whether a `SET` on `server` is answered within [`HELD`].
fn writes_pass(server: SocketAddr) -> bool {
    call_timeout(server, &["SET", "rolecall-test:fence", "1"], HELD).is_ok()
}

/// Waits until `/status` shows `server` fenced while Sentinel's master is another one (the
/// pause as the promotion starts is listed too); returns that status.
fn wait_fenced(rolecall: &mut Rolecall, server: SocketAddr) -> serde_json::Value {
    let s = server.to_string();
    rolecall.wait_for_status("the old master fenced", VERDICT_TIMEOUT, |t| {
        t["groups"][0]["master"] != s
            && t["groups"][0]["fenced"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| *x == s))
    })
}

#[test]
fn the_old_master_is_fenced_until_sentinel_converts_it_then_it_resyncs() {
    let topology = Topology::start(1, 3);
    let follower = DemoNode::follow(&topology);
    let mut rolecall = rolecall_for(&follower, &topology, "");
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    let (old, new) = topology.failover();
    let failed_over = Instant::now();
    let s = wait_fenced(&mut rolecall, old);
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    assert_eq!(topology.server(old).role().as_deref(), Some("master"));
    assert!(
        !writes_pass(old),
        "a write on the fenced old master is held"
    );
    // Never on the new master: each write there is answered at once, throughout.
    let mut new_writes = 0;
    let deadline = Instant::now() + DEMOTED_TIMEOUT;
    while topology.server(old).role().as_deref() != Some("slave") {
        assert!(
            Instant::now() < deadline,
            "Sentinel never demoted {old}\n{}",
            topology.dump()
        );
        assert!(writes_pass(new), "a write on the new master was held");
        new_writes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(new_writes > 10, "{new_writes} writes on the new master");
    eprintln!(
        "old master demoted {:?} after the failover",
        failed_over.elapsed()
    );
    // Demoted: the fence is lifted and the old master resyncs from the new one.
    let s = rolecall.wait_for_status("the fence lifted", VERDICT_TIMEOUT, |t| {
        t["groups"][0]["fenced"] == serde_json::json!([])
    });
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    topology.server(old).wait_link_up(Duration::from_secs(30));
    let log = rolecall.stderr();
    assert!(log.contains("fenced the old master"), "{log}");
    assert!(log.contains("lifted the fence"), "{log}");
}

#[test]
fn a_rolecall_killed_mid_fence_lets_the_pause_lapse_within_one_lease() {
    let topology = Topology::start(1, 3);
    let follower = DemoNode::follow(&topology);
    let mut rolecall = rolecall_for(&follower, &topology, "fence_lease = \"2s\"\n");
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let (old, _) = topology.failover();
    wait_fenced(&mut rolecall, old);
    assert!(!writes_pass(old));
    rolecall.kill();
    let killed = Instant::now();
    let mut resumed = None;
    for _ in 0..100 {
        if writes_pass(old) {
            resumed = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = resumed.expect("writes on the old master resume");
    // The last lease was set before the kill, so it ends within 2 s of it; 1 s more for a
    // loaded machine and for the poll (each held write waits up to HELD).
    assert!(
        resumed < Duration::from_secs(3),
        "writes resumed {resumed:?} after the kill, with a 2 s lease"
    );
}

#[test]
fn the_sentinels_naming_the_old_master_again_lift_its_fence_at_once() {
    let topology = Topology::start(1, 3);
    let follower = DemoNode::follow(&topology);
    // A long lease: a pause that ends within a second was lifted, not lapsed.
    let mut rolecall = rolecall_for(&follower, &topology, "fence_lease = \"20s\"\n");
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let (old, _) = topology.failover();
    wait_fenced(&mut rolecall, old);
    assert!(!writes_pass(old));
    let repointed = Instant::now();
    topology.repoint(&old.ip().to_string(), old.port());
    let mut lifted = None;
    for _ in 0..100 {
        if writes_pass(old) {
            lifted = Some(repointed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lifted = lifted.unwrap_or_else(|| panic!("still fenced\n{}", rolecall.report(None)));
    assert!(
        lifted < Duration::from_secs(3),
        "lifted {lifted:?} after the sentinels named it again, with a 20 s lease"
    );
    let old_s = old.to_string();
    let s = rolecall.wait_for_status("Sentinel's master the old one", VERDICT_TIMEOUT, |t| {
        t["groups"][0]["master"] == old_s
    });
    let fenced = s["groups"][0]["fenced"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!fenced.iter().any(|f| *f == old_s), "{s:#}");
    let log = rolecall.stderr();
    assert!(log.contains("lifted the fence"), "{log}");
}
