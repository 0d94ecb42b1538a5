//! The integration-test harness: real `redis-server`, `redis-sentinel`, demo nodes and rolecall
//! itself, each a child process on a free loopback port with its own temp dir, killed on drop.
//! With `ROLECALL_TEST_PEER=valkey` the data servers and sentinels are Valkey's `valkey-server`
//! instead (see [`Peer`]), and the same tests run against Valkey.
//!
//! Modelled on redis-rs's `redis-test` (`src/server.rs`, `src/sentinel.rs`): RAII servers, binary
//! paths overridable by environment variables (`REDIS_SERVER_BIN`, `REDIS_SENTINEL_BIN`,
//! `VALKEY_SERVER_BIN`), and bounded polling that dumps `SENTINEL MASTERS` / `ROLE` when it
//! gives up.
//!
//! # Layout
//!
//! - `peer`: [`Peer`], Redis or Valkey (`ROLECALL_TEST_PEER`), and the binaries each runs;
//!   [`Software`], what a running server says it is.
//! - `process`: child processes (`Proc`, killed on drop), binary lookup, free ports, log tails.
//! - `redis`: [`RedisServer`] and [`Sentinel`] (of the [`Peer`] asked for, checked at start),
//!   and a small sync client (`call`).
//! - `topology`: [`Topology`], a master, its replicas and the sentinels watching it, with
//!   `failover()`.
//! - `node`: [`DemoNode`], the `rolecall-demo-node` binary as a separate process, so rolecall
//!   discovers its sockets by pid.
//! - `rolecall`: [`Rolecall`] and [`RolecallConfig`], the daemon under test with a tiny HTTP and
//!   agent client; started again on other ports if the free ones it picked were taken, and
//!   checked on drop: its log must not hold a secret its configuration names.
//! - `watch`: [`ReadyWatch`], a thread polling `/readyz` through a failover.
//! - `measure`: what the benchmarks share: counts from the environment, percentiles, a
//!   process's CPU time.
//! - `haproxy`: [`Haproxy`], a real `haproxy` running a shipped `haproxy/*.cfg`, read through
//!   its runtime API; [`Backend`], a node's service port.
//! - `haproxy_failover`: [`failover_run`], one real failover in front of three HAProxies (agent
//!   only, with the push, the `down` variant), what they show and how long each took.
//! - `netns`: [`PodNetns`], a network namespace like a Kubernetes pod's and one standing for the
//!   rest of its cluster, linked by a veth pair; [`Netns`], a way to run code (and spawn
//!   processes) inside either.
//! - `tls`: [`TlsCluster`], a TLS-only Sentinel cluster (`port 0`, client certificates
//!   required) with certificates made at test time ([`Pki`]) that name host names only.
//! - `vip`: [`cluster_ips`], Kubernetes ClusterIPs (nftables DNAT) in a [`PodNetns`].
//! - `blackhole`: [`BlackHole`], an nftables rule dropping what a [`PodNetns`]'s pod sends to
//!   some ports (sentinels or servers cut off without a refusal).
//! - `hosts`: [`PrivateHosts`], a hosts file of the test's own that children see as
//!   `/etc/hosts` in a private mount namespace each (the machine's is never touched); every
//!   process type above can be started under one (`.hosts(&h)` on its builder or options).
//! - `chart`: [`Chart`], a Sentinel cluster shaped like Bitnami's `redis` Helm chart: pods named
//!   by Kubernetes hostnames (through a [`PrivateHosts`]), passwords on data servers and
//!   sentinels, a round-robin sentinel Service; `failover()` and the rest by `HOST:PORT`.
//!
//! Every wait here has a deadline ([`wait_until`], [`wait_for`]); nothing sleeps to "let a state
//! settle". Deadlines are generous for a slow two-core machine and cost nothing when things go
//! well, since each poll returns as soon as its condition holds.

// Each test file compiles its own copy of this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

mod blackhole;
mod chart;
mod haproxy;
mod haproxy_failover;
mod hosts;
mod measure;
mod netns;
mod node;
mod peer;
mod process;
mod redis;
mod rolecall;
mod switch;
mod tls;
mod topology;
mod vip;
mod watch;

use std::time::{Duration, Instant};

pub use blackhole::BlackHole;
pub use chart::{Chart, ChartBuilder, Pod};
pub use haproxy::{
    BACKEND, Backend, Haproxy, HaproxyBuilder, RuntimeApi, ServerState, Session, agent_env,
    assert_weight_untouched, check_config, cli, nowhere, push_to, shipped_config, shipped_configs,
};
pub use haproxy_failover::{FailoverTimes, failover_run, ms, print_times};
pub use hosts::{PrivateHosts, has_own_mount_ns, resolves_here};
pub use measure::{env_count, percentile, proc_cpu_ms, summary};
pub use netns::{Netns, PodNetns};
pub use node::{DemoNode, NodeOptions};
pub use peer::{PEER_VAR, Peer, Software, VALKEY_SERVER_VAR};
pub use process::{free_port, free_port_on};
pub use redis::{
    RedisServer, RedisServerBuilder, Sentinel, SentinelBuilder, call, call_auth, call_auth_timeout,
    call_timeout, host_port, parse_info, parse_kv_lines, role_word, value_to_line, value_to_string,
};
pub use rolecall::{
    Dumper, HttpResponse, Rolecall, RolecallConfig, http_status, run_rolecall, run_rolecall_env,
    run_rolecall_under,
};
pub use switch::{Heard, SwitchWatcher};
pub use tls::{Pki, TlsCluster, TlsPod};
pub use topology::{Topology, TopologyBuilder};
pub use vip::cluster_ips;
pub use watch::{ReadyWatch, WatchLog};

/// How often the pollers below look again.
const POLL: Duration = Duration::from_millis(25);

/// Polls `f` until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(timeout, what, || f().then_some(()))
}

/// Polls `f` until it returns `Some`; panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or_dump(timeout, what, f, String::new)
}

/// Like [`wait_for`], and on timeout adds `dump()` (state worth seeing) to the panic message.
pub fn wait_for_or_dump<T>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> Option<T>,
    dump: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    poll_for(timeout, f).unwrap_or_else(|| timed_out(what, start, &dump()))
}

/// Polls `f` until it returns `Some`, or returns `None` after `timeout`: for callers whose
/// panic message needs what `f` borrowed.
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    // Bounded in count too: a poll that returns at once cannot spin more than this.
    let max_polls = timeout.as_millis() / POLL.as_millis().max(1) + 2;
    for _ in 0..max_polls {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
    None
}

/// The panic of a wait that started at `start` and gave up.
pub fn timed_out(what: &str, start: Instant, dump: &str) -> ! {
    panic!(
        "timed out after {:.1?} waiting for {what}\n{dump}",
        start.elapsed()
    )
}
