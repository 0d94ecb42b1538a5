//! One real failover in front of three HAProxies, shared by `tests/haproxy.rs` (one run, what
//! HAProxy shows) and `benches/haproxy.rs` (several runs, the timings).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::haproxy::{
    BACKEND, Backend, Haproxy, RuntimeApi, ServerState, Session, agent_env,
    assert_weight_untouched, push_to,
};
use super::node::DemoNode;
use super::rolecall::{Rolecall, RolecallConfig};
use super::switch::SwitchWatcher;
use super::topology::Topology;

/// From start to a confirmed verdict: a few 250 ms checks.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// HAProxy to show a change: an agent poll (`agent-inter` 1 s by default) or a health check.
const HAPROXY_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover: Sentinel demotes the old master 10–20 s later, then rolecall confirms.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(90);

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub struct FailoverTimes {
    /// `+switch-master` to rolecall's logged verdict change for the pinned node.
    pub switch_to_verdict: Duration,
    /// rolecall's verdict change to HAProxy showing DRAIN, agent only (`agent-inter 1s`).
    pub verdict_to_drain_agent: Duration,
    /// The same with the push.
    pub verdict_to_drain_push: Duration,
    /// The second rolecall's verdict change to HAProxy showing DOWN (`down` variant, agent
    /// only).
    pub verdict_to_down_agent: Duration,
    /// How often the test looked at the three HAProxies (the resolution of the above).
    pub poll: Duration,
}

/// When rolecall logged its change to `verdict` (the RFC 3339 timestamp of its log line).
fn logged_change(rc: &Rolecall, verdict: &str) -> Option<SystemTime> {
    rc.stderr()
        .lines()
        .rfind(|l| l.contains("verdict changed") && l.contains(&format!("verdict={verdict}")))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// An `Instant` of this process as wall-clock time.
fn wall(at: Instant) -> SystemTime {
    SystemTime::now() - Instant::now().saturating_duration_since(at)
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Opens two sessions through `h`'s frontend, one on each server: the second only once HAProxy
/// has placed the first, so that leastconn sends it to the other server (two connections
/// accepted together may both be placed before either counts).
fn one_session_each(h: &Haproxy) -> Vec<Session> {
    let placed = |n: u32| {
        h.wait_for(
            BACKEND,
            "node1",
            "the sessions placed",
            HAPROXY_TIMEOUT,
            |s1| s1.sessions + h.server(BACKEND, "node2").sessions == n,
        )
    };
    let first = Session::open(h.frontend());
    placed(1);
    let second = Session::open(h.frontend());
    placed(2);
    for server in ["node1", "node2"] {
        let s = h.server(BACKEND, server);
        assert_eq!(s.sessions, 1, "one session on {server}: {s:?}");
    }
    vec![first, second]
}

/// One failover with a node pinned to the master and one following Sentinel, each with its
/// rolecall, in front of them three HAProxies: `agent-check.cfg` (agent only), the same with
/// rolecall pushing to its runtime API, and `agent-check-down.cfg` (a second rolecall for the
/// pinned node answering `down`). Asserts what HAProxy shows; returns the timings.
pub fn failover_run(topology: &Topology, dir: &Path, run: usize) -> FailoverTimes {
    let master = topology.master_addr();
    let pinned = DemoNode::pin(master);
    let follower = DemoNode::follow_watching(topology);
    let (b1, b2) = (Backend::start(), Backend::start());
    let push_api = RuntimeApi::unix_in(dir, &format!("push-{run}.sock"));
    // The pinned node goes out when Sentinel demotes the old master (`stuck_on_replica`);
    // the long grace keeps the split-brain window itself from taking anyone out.
    let base = |node: &DemoNode| {
        RolecallConfig::new()
            .pid(node.pid())
            .topology(topology)
            .check("stale_master_grace", "\"60s\"")
    };
    let mut p1 = base(&pinned)
        .agent("state_file", "\"{dir}/agent.state\"")
        .extra(&push_to(&push_api, "node1"))
        .start();
    let mut p2 = base(&pinned)
        .agent("state_file", "\"{dir}/agent.state\"")
        .agent("out_reply", "\"down\"")
        .start();
    let mut f = base(&follower)
        .agent("state_file", "\"{dir}/agent.state\"")
        .extra(&push_to(&push_api, "node2"))
        .start();
    for rc in [&mut p1, &mut p2, &mut f] {
        rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    }
    let env = agent_env(b1.addr(), p1.agent_addr(), b2.addr(), f.agent_addr());
    let env_down = agent_env(b1.addr(), p2.agent_addr(), b2.addr(), f.agent_addr());
    let agent_only = Haproxy::start("agent-check.cfg", &env);
    let pushed = Haproxy::start_with_api("agent-check.cfg", &env, push_api);
    let down = Haproxy::start("agent-check-down.cfg", &env_down);
    for h in [&agent_only, &pushed, &down] {
        for s in ["node1", "node2"] {
            h.wait_for(BACKEND, s, "UP", HAPROXY_TIMEOUT, ServerState::is_up);
        }
    }
    // One session on each server, through the drain and the down variants.
    let mut drain_sessions = one_session_each(&agent_only);
    let mut down_sessions = one_session_each(&down);

    let switches = SwitchWatcher::start(&topology.sentinel_addrs());
    let (old, _new) = topology.failover();
    assert_eq!(old, master);
    let switched = wall(switches.first_after(0, Duration::from_secs(30)));

    // Watch the three HAProxies closely until each has taken node1 out.
    let (mut drained_agent, mut drained_push, mut down_agent) = (None, None, None);
    let started = Instant::now();
    let deadline = started + FAILOVER_TIMEOUT;
    let mut polls = 0u32;
    let is_drain = |(_, admin): (u8, u8)| admin & 0x08 != 0;
    let is_down = |(op, _): (u8, u8)| op == 0;
    while Instant::now() < deadline && polls < 500_000 {
        polls += 1;
        let look = |h: &Haproxy| h.op_admin(BACKEND, "node1").unwrap_or_default();
        if drained_agent.is_none() && is_drain(look(&agent_only)) {
            drained_agent = Some(SystemTime::now());
        }
        if drained_push.is_none() && is_drain(look(&pushed)) {
            drained_push = Some(SystemTime::now());
        }
        if down_agent.is_none() && is_down(look(&down)) {
            down_agent = Some(SystemTime::now());
        }
        // The follower stays in rotation throughout, in every HAProxy.
        if polls.is_multiple_of(200) {
            for h in [&agent_only, &pushed, &down] {
                let s = h.server(BACKEND, "node2");
                assert!(
                    s.is_up(),
                    "the follower left rotation: {s:?}\n{}",
                    f.report(None)
                );
            }
        }
        if drained_agent.is_some() && drained_push.is_some() && down_agent.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let poll = started.elapsed() / polls.max(1);
    let report = || {
        format!(
            "drain(agent) {drained_agent:?} drain(push) {drained_push:?} down {down_agent:?}\n{}\n--- haproxy (push) ---\n{}",
            p1.report(None),
            pushed.log_tail(30)
        )
    };
    let (Some(drained_agent), Some(drained_push), Some(down_agent)) =
        (drained_agent, drained_push, down_agent)
    else {
        panic!(
            "HAProxy did not take the pinned node out within {FAILOVER_TIMEOUT:?}: {}",
            report()
        );
    };
    assert_eq!(p1.status()["verdict"], "stuck_on_replica", "{}", report());
    assert!(
        p1.agent(Some("\n"))
            .starts_with("drain up #stuck_on_replica")
    );
    assert!(p2.agent(Some("\n")).starts_with("down #stuck_on_replica"));
    let verdict = logged_change(&p1, "stuck_on_replica")
        .unwrap_or_else(|| panic!("no verdict change in the log: {}", report()));
    let verdict_down = logged_change(&p2, "stuck_on_replica")
        .unwrap_or_else(|| panic!("no verdict change in the log:\n{}", p2.report(None)));

    // What HAProxy shows, in its own words.
    let s = agent_only.server(BACKEND, "node1");
    assert_eq!(s.word(), "DRAIN", "{s:?}");
    assert!(
        s.last_agent.contains("stuck_on_replica"),
        "the cause: {s:?}"
    );
    assert_weight_untouched(&s);
    let s = pushed.server(BACKEND, "node1");
    assert_eq!(s.word(), "DRAIN", "{s:?}");
    let s = down.server(BACKEND, "node1");
    assert_eq!(s.word(), "DOWN", "{s:?}");
    assert!(s.last_agent.contains("down (stuck_on_replica"), "{s:?}");
    for h in [&agent_only, &pushed, &down] {
        let s = h.server(BACKEND, "node2");
        assert_eq!(s.word(), "UP", "{s:?}");
    }
    // `drain` keeps established sessions; `down` with on-marked-down shutdown-sessions cuts
    // the pinned node's at once.
    assert!(agent_only.server(BACKEND, "node1").sessions >= 1);
    assert!(
        drain_sessions
            .iter_mut()
            .all(|s| !s.closed_within(Duration::from_millis(200))),
        "drain must not cut sessions"
    );
    down.wait_for(BACKEND, "node1", "no sessions left", HAPROXY_TIMEOUT, |s| {
        s.sessions == 0
    });
    let cut = down_sessions
        .iter_mut()
        .map(|s| s.closed_within(Duration::from_secs(2)))
        .filter(|closed| *closed)
        .count();
    assert_eq!(cut, 1, "exactly the pinned node's session is cut");

    FailoverTimes {
        switch_to_verdict: since(verdict, switched),
        verdict_to_drain_agent: since(drained_agent, verdict),
        verdict_to_drain_push: since(drained_push, verdict),
        verdict_to_down_agent: since(down_agent, verdict_down),
        poll,
    }
}

pub fn print_times(label: &str, t: &FailoverTimes) {
    eprintln!(
        "{label}: +switch-master -> rolecall verdict {:.0} ms; verdict -> HAProxy DRAIN: agent only {:.1} ms, with push {:.1} ms; verdict -> DOWN (down variant, agent only) {:.1} ms (HAProxy polled every {:.1} ms)",
        ms(t.switch_to_verdict),
        ms(t.verdict_to_drain_agent),
        ms(t.verdict_to_drain_push),
        ms(t.verdict_to_down_agent),
        ms(t.poll),
    );
}
