//! rolecall against a real HAProxy (Debian's 2.6), running the shipped `haproxy/*.cfg` files
//! with addresses given through the environment variables they read, and read back only through
//! HAProxy's runtime API (`show servers state`, `show stat`): what HAProxy itself does with
//! rolecall's agent words and pushes.
//!
//! - every shipped configuration passes `haproxy -c`;
//! - a real failover: the pinned node's server goes DRAIN (DOWN with the `down` variant, which
//!   also cuts its sessions), the Sentinel-following node's stays UP; the time from rolecall's
//!   verdict to HAProxy's change is printed with and without the push;
//! - an operator's manual drain survives rolecall's polls while the node is healthy;
//! - rolecall killed: HAProxy keeps the agent's state (the HTTP-check variant marks the node
//!   DOWN instead); restarted: the state is re-evaluated and rolecall's own drain released;
//! - the maintenance switch (flag file and `POST`/`DELETE /maintenance`) as MAINT and back;
//! - `agent-send` selects a `[[redis]]` group.
//!
//! `cargo bench --bench haproxy` measures the failover timings over several runs (medians).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    BACKEND, Backend, DemoNode, Haproxy, Rolecall, RolecallConfig, RuntimeApi, ServerState,
    Topology, agent_env, assert_weight_untouched, check_config, failover_run, free_port, nowhere,
    print_times, push_to, shipped_configs, wait_until,
};

/// From start (or a change of the node) to a confirmed verdict: a few 250 ms checks.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// HAProxy to show a change: an agent poll (`agent-inter` 1 s by default) or a health check.
const HAPROXY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers

/// One master and one sentinel (quorum 1): enough Redis for a node that is simply healthy.
fn small_topology() -> Topology {
    Topology::builder()
        .replicas(0)
        .sentinels(1)
        .quorum(1)
        .start()
}

/// Asserts `pred` holds at every poll for `window`: a state that must survive HAProxy's agent
/// polls (`agent-inter` is 200 ms where this is used, so the window spans several polls).
fn assert_holds(
    h: &Haproxy,
    server: &str,
    what: &str,
    window: Duration,
    pred: impl Fn(&ServerState) -> bool,
) {
    let end = Instant::now() + window;
    let mut polls = 0;
    while Instant::now() < end && polls < 10_000 {
        let s = h.server(BACKEND, server);
        assert!(
            pred(&s),
            "{server} stopped being {what} after {polls} polls: {s:?}\n{}",
            h.log_tail(40)
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP/1.1 request with an optional bearer token: `(status, body)`.
fn http_auth(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The shipped configurations

#[test]
fn every_shipped_haproxy_config_passes_haproxy_c_as_shipped_and_as_the_tests_run_it() {
    let configs = shipped_configs();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["agent-check.cfg", "agent-check-down.cfg", "http-check.cfg"] {
        assert!(
            names.iter().any(|n| n == want),
            "haproxy/{want} missing: {names:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut env = agent_env(nowhere(), nowhere(), nowhere(), nowhere());
    env.push(("NODE1_HTTP_PORT", "7071".into()));
    env.push(("NODE2_HTTP_PORT", "7071".into()));
    env.push(("AGENT_SEND", "main".into()));
    env.push(("AGENT_INTER", "200ms".into()));
    env.push(("FRONTEND", format!("127.0.0.1:{}", free_port())));
    env.push((
        "RUNTIME_API",
        dir.path().join("admin.sock").display().to_string(),
    ));
    for config in &configs {
        for (label, env) in [("defaults", &Vec::new()), ("test environment", &env)] {
            let out = check_config(config, env);
            assert!(
                out.status.success(),
                "haproxy -c -f {} ({label}): {}\n{}",
                config.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A real failover

#[test]
fn after_a_failover_haproxy_drains_the_pinned_node_and_keeps_the_follower_up() {
    let topology = Topology::start(1, 3);
    let dir = tempfile::tempdir().unwrap();
    let t = failover_run(&topology, dir.path(), 0);
    print_times("failover", &t);
    // Not a timing assertion (see BENCHMARKS.md for figures), only the bound of the mechanism:
    // without push HAProxy learns at its next agent poll (agent-inter 1 s, plus a check).
    assert!(
        t.verdict_to_drain_agent < Duration::from_secs(5),
        "{:?}",
        t.verdict_to_drain_agent
    );
}

// ---------------------------------------------------------------------------------------------
// An operator's drain

#[test]
fn an_operators_manual_drain_is_not_undone_while_the_node_is_healthy_and_ready_brings_it_back() {
    let topology = small_topology();
    let node = DemoNode::pin(topology.master_addr());
    let (b1, b2) = (Backend::start(), Backend::start());
    let api = RuntimeApi::free_tcp();
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .agent("state_file", "\"{dir}/agent.state\"")
        .extra(&push_to(&api, "node1"))
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let mut env = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
    env.push(("AGENT_INTER", "200ms".into()));
    let h = Haproxy::start_with_api("agent-check.cfg", &env, api);
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    let answer = h.cli(&format!("set server {BACKEND}/node1 state drain"));
    assert_eq!(answer.trim(), "", "runtime api: {answer:?}");
    // HAProxy asks rolecall every 200 ms: 3 s is 15 polls, none of which may lift the drain.
    assert_holds(
        &h,
        "node1",
        "DRAIN",
        Duration::from_secs(3),
        ServerState::is_drain,
    );
    assert_eq!(h.server(BACKEND, "node1").word(), "DRAIN");
    assert_eq!(
        rolecall.agent(Some("\n")),
        "up\n",
        "no `ready` for a drain rolecall did not set"
    );

    h.cli(&format!("set server {BACKEND}/node1 state ready"));
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    assert_holds(
        &h,
        "node1",
        "UP",
        Duration::from_secs(1),
        ServerState::is_up,
    );
    assert_weight_untouched(&h.server(BACKEND, "node1"));
}

// ---------------------------------------------------------------------------------------------
// rolecall killed and restarted

/// A node pinned to `topology`'s master, named to rolecall by a pid file in `dir` (so a
/// restarted node can be followed), and a rolecall that keeps its agent state file in its own
/// directory, `ok`.
fn pinned_by_pid_file(topology: &Topology, dir: &Path) -> (DemoNode, std::path::PathBuf, Rolecall) {
    let pid_file = dir.join("node.pid");
    let node = DemoNode::pin(topology.master_addr());
    std::fs::write(&pid_file, node.pid().to_string()).unwrap();
    let mut rolecall = RolecallConfig::new()
        .node_selector("pid_file", &format!("{:?}", pid_file.display().to_string()))
        .topology(topology)
        .agent("state_file", "\"{dir}/agent.state\"")
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    (node, pid_file, rolecall)
}

#[test]
fn rolecall_killed_leaves_haproxys_state_alone_and_a_restart_re_evaluates_and_releases_its_drain() {
    let topology = small_topology();
    let dir = tempfile::tempdir().unwrap();
    let (node, pid_file, mut rolecall) = pinned_by_pid_file(&topology, dir.path());
    let state_file = rolecall.dir().join("agent.state");
    let (b1, b2) = (Backend::start(), Backend::start());
    let mut env = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
    env.push(("AGENT_INTER", "200ms".into()));
    let agent = Haproxy::start("agent-check.cfg", &env);
    let http = Haproxy::start(
        "http-check.cfg",
        &[
            ("NODE1_ADDR", b1.addr().to_string()),
            ("NODE1_HTTP_PORT", rolecall.http_addr().port().to_string()),
            ("NODE2_ADDR", b2.addr().to_string()),
            ("NODE2_HTTP_PORT", free_port().to_string()),
        ],
    );
    agent.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    http.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    // 1. A healthy node, rolecall killed: the agent check is ignored, the HTTP check fails.
    rolecall.kill();
    agent.wait_for(
        BACKEND,
        "node1",
        "its agent unreachable",
        HAPROXY_TIMEOUT,
        |s| s.agent_status.starts_with("L4"),
    );
    http.wait_for(
        BACKEND,
        "node1",
        "DOWN",
        HAPROXY_TIMEOUT,
        ServerState::is_down,
    );
    assert_holds(
        &agent,
        "node1",
        "UP",
        Duration::from_secs(1),
        ServerState::is_up,
    );
    rolecall.restart();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    http.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    assert!(!state_file.exists(), "rolecall holds nothing");

    // 2. The node dies: rolecall drains it and remembers that the drain is its own.
    drop(node);
    rolecall.wait_for_verdict("node_missing", VERDICT_TIMEOUT);
    agent.wait_for(
        BACKEND,
        "node1",
        "DRAIN",
        HAPROXY_TIMEOUT,
        ServerState::is_drain,
    );
    wait_until(VERDICT_TIMEOUT, "the state file to say drain", || {
        std::fs::read_to_string(&state_file).is_ok_and(|s| s.trim() == "drain")
    });

    // Killed: HAProxy keeps the drain (it cannot reach the agent, and ignores that).
    rolecall.kill();
    agent.wait_for(
        BACKEND,
        "node1",
        "its agent unreachable",
        HAPROXY_TIMEOUT,
        |s| s.agent_status.starts_with("L4"),
    );
    assert_holds(
        &agent,
        "node1",
        "DRAIN",
        Duration::from_secs(1),
        ServerState::is_drain,
    );

    // A new node process, and rolecall restarted: it re-evaluates, and because the state file
    // says the drain is its own, it sends `ready` with `up`.
    let node = DemoNode::pin(topology.master_addr());
    std::fs::write(&pid_file, node.pid().to_string()).unwrap();
    rolecall.restart();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(rolecall.agent(Some("\n")), "up ready\n");
    let s = agent.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    assert_eq!(s.word(), "UP");
    assert!(s.last_agent.starts_with("via agent : up"), "{s:?}");
    http.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
}

/// Row 28, as the README's "Stopping rolecall" decides: SIGTERM changes nothing in HAProxy. A
/// drain rolecall holds stays while it is stopped and through a restart on a node still out (it
/// is never put back, not even for a poll), and a restarted rolecall lifts it once the node is
/// healthy, because its state file says the drain is its own.
#[test]
fn sigterm_leaves_rolecalls_drain_in_haproxy_and_a_restart_keeps_a_failed_node_out_and_releases_a_healed_one()
 {
    let topology = small_topology();
    let dir = tempfile::tempdir().unwrap();
    let (node, pid_file, mut rolecall) = pinned_by_pid_file(&topology, dir.path());
    let state_file = rolecall.dir().join("agent.state");
    let (b1, b2) = (Backend::start(), Backend::start());
    let mut env = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
    env.push(("AGENT_INTER", "200ms".into()));
    let h = Haproxy::start("agent-check.cfg", &env);
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    // The node dies: rolecall drains it, and says the drain is its own.
    drop(node);
    rolecall.wait_for_verdict("node_missing", VERDICT_TIMEOUT);
    h.wait_for(
        BACKEND,
        "node1",
        "DRAIN",
        HAPROXY_TIMEOUT,
        ServerState::is_drain,
    );
    wait_until(VERDICT_TIMEOUT, "the state file to say drain", || {
        std::fs::read_to_string(&state_file).is_ok_and(|s| s.trim() == "drain")
    });

    // SIGTERM: a clean stop (exit 0) that leaves HAProxy's drain and the state file alone.
    let stop = |rolecall: &mut support::Rolecall| {
        rolecall.terminate();
        let status = rolecall.wait_exit(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "{}", rolecall.report(None));
        h.wait_for(
            BACKEND,
            "node1",
            "its agent unreachable",
            HAPROXY_TIMEOUT,
            |s| s.agent_status.starts_with("L4"),
        );
        assert_holds(
            &h,
            "node1",
            "DRAIN",
            Duration::from_secs(1),
            ServerState::is_drain,
        );
        let kept = std::fs::read_to_string(&state_file).unwrap_or_default();
        assert_eq!(kept.trim(), "drain", "the state file survives the stop");
    };
    stop(&mut rolecall);

    // Restarted with the node still gone: drained from the first poll to the verdict and after.
    rolecall.restart();
    assert_holds(
        &h,
        "node1",
        "DRAIN",
        Duration::from_secs(2),
        ServerState::is_drain,
    );
    rolecall.wait_for_verdict("node_missing", VERDICT_TIMEOUT);
    assert_holds(
        &h,
        "node1",
        "DRAIN",
        Duration::from_secs(1),
        ServerState::is_drain,
    );
    stop(&mut rolecall);

    // The node is back while rolecall is stopped: still drained (nothing tells HAProxy), until
    // the restarted rolecall sees it healthy and lifts its own drain.
    let node = DemoNode::pin(topology.master_addr());
    std::fs::write(&pid_file, node.pid().to_string()).unwrap();
    assert_holds(
        &h,
        "node1",
        "DRAIN",
        Duration::from_secs(1),
        ServerState::is_drain,
    );
    rolecall.restart();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(rolecall.agent(Some("\n")), "up ready\n");
    let s = h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    assert!(s.last_agent.starts_with("via agent : up"), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Maintenance

#[test]
fn the_maintenance_switch_puts_the_node_in_maint_and_back_as_haproxy_sees_it() {
    let topology = small_topology();
    let node = DemoNode::pin(topology.master_addr());
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("maintenance");
    let token = dir.path().join("token");
    write_private(&token, "let-me-in\n");
    let (b1, b2) = (Backend::start(), Backend::start());
    let api = RuntimeApi::unix_in(dir.path(), "admin.sock");
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .agent("state_file", "\"{dir}/agent.state\"")
        .extra(&format!(
            "[maintenance]\nfile = {:?}\ntoken_file = {:?}\n",
            flag.display().to_string(),
            token.display().to_string()
        ))
        .extra(&push_to(&api, "node1"))
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let env = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
    let agent_only = Haproxy::start("agent-check.cfg", &env);
    let pushed = Haproxy::start_with_api("agent-check.cfg", &env, api);
    for h in [&agent_only, &pushed] {
        h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
    }

    // The flag file.
    std::fs::write(&flag, "").unwrap();
    for h in [&pushed, &agent_only] {
        h.wait_for(
            BACKEND,
            "node1",
            "MAINT",
            HAPROXY_TIMEOUT,
            ServerState::is_maint,
        );
        // The push may come first; the agent says the same at its next poll, with the cause.
        let s = h.wait_for(
            BACKEND,
            "node1",
            "MAINT from the agent",
            HAPROXY_TIMEOUT,
            |s| s.is_maint() && s.last_agent.contains("maintenance: flag file"),
        );
        assert_eq!(s.word(), "MAINT", "{s:?}");
    }
    assert_eq!(
        rolecall.http_get("/readyz"),
        (503, "not ready: maintenance\n".into())
    );
    let status = rolecall.status();
    assert_eq!(status["maintenance"]["on"], true, "{status:#}");
    assert_eq!(status["maintenance"]["by_file"], true, "{status:#}");
    assert!(
        rolecall
            .agent(Some("\n"))
            .starts_with("maint up #maintenance: flag file")
    );

    std::fs::remove_file(&flag).unwrap();
    for h in [&pushed, &agent_only] {
        let s = h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
        assert_eq!(s.word(), "UP", "{s:?}");
    }
    assert_eq!(
        rolecall.agent(Some("\n")),
        "up ready\n",
        "rolecall lifts its own maint"
    );
    assert_eq!(rolecall.http_get("/readyz").0, 200);

    // The HTTP switch: the token is required.
    let http = rolecall.http_addr();
    assert_eq!(http_auth(http, "POST", "/maintenance", None).0, 401);
    assert_eq!(
        http_auth(http, "POST", "/maintenance", Some("guess")).0,
        401
    );
    assert_holds(
        &pushed,
        "node1",
        "UP",
        Duration::from_millis(500),
        ServerState::is_up,
    );
    let (code, body) = http_auth(http, "POST", "/maintenance", Some("let-me-in"));
    assert_eq!(code, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (j["on"].clone(), j["by_api"].clone()),
        (true.into(), true.into())
    );
    for h in [&pushed, &agent_only] {
        h.wait_for(
            BACKEND,
            "node1",
            "MAINT",
            HAPROXY_TIMEOUT,
            ServerState::is_maint,
        );
    }
    assert_eq!(rolecall.http_get("/readyz").0, 503);
    let (code, _) = http_auth(http, "DELETE", "/maintenance", Some("let-me-in"));
    assert_eq!(code, 200);
    for h in [&pushed, &agent_only] {
        let s = h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
        assert_weight_untouched(&s);
    }
    assert_eq!(rolecall.status()["maintenance"]["on"], false);
}

// ---------------------------------------------------------------------------------------------
// agent-send

#[test]
fn agent_send_names_the_group_haproxy_asks_about() {
    let main = small_topology();
    let other = Topology::builder()
        .replicas(1)
        .sentinels(1)
        .quorum(1)
        .master_name("other")
        .start();
    // Commands on `main`'s master, the subscriber on `other`'s replica: `main` is in rotation,
    // `other` is out (stuck_on_replica).
    let node = DemoNode::pin_with_pubsub(main.master_addr(), other.replicas()[0].addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .agent("state_file", "\"{dir}/agent.state\"")
        .redis_group("main", main.master_name(), &main.sentinel_addrs())
        .redis_group("other", other.master_name(), &other.sentinel_addrs())
        .start();
    rolecall.wait_for_status(
        "group main in rotation and group other out",
        VERDICT_TIMEOUT,
        |s| {
            s["groups"][0]["name"] == "main"
                && s["groups"][0]["in_rotation"] == true
                && s["groups"][1]["name"] == "other"
                && s["groups"][1]["in_rotation"] == false
        },
    );
    // Polled: on a loaded machine a check may time out (`unknown`) now and then.
    let answers = |send: &str, what: &str, pred: &dyn Fn(&str) -> bool| {
        let mut last = String::new();
        let ok = support::poll_for(VERDICT_TIMEOUT, || {
            last = rolecall.agent(Some(send));
            pred(&last).then_some(())
        });
        assert!(
            ok.is_some(),
            "agent-send {send:?}: expected {what}, last {last:?}"
        );
    };
    answers("main", "up", &|r| r == "up\n");
    answers("other", "drain", &|r| {
        r.starts_with("drain up #stuck_on_replica")
    });
    answers("\n", "drain", &|r| {
        r.starts_with("drain up #stuck_on_replica")
    });

    let (b1, b2) = (Backend::start(), Backend::start());
    let env = |group: &str| {
        let mut e = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
        e.push(("AGENT_SEND", group.to_owned()));
        e
    };
    let for_main = Haproxy::start("agent-check.cfg", &env("main"));
    let for_other = Haproxy::start("agent-check.cfg", &env("other"));
    let whole = Haproxy::start("agent-check.cfg", &env(""));
    for_other.wait_for(
        BACKEND,
        "node1",
        "DRAIN",
        HAPROXY_TIMEOUT,
        ServerState::is_drain,
    );
    whole.wait_for(
        BACKEND,
        "node1",
        "DRAIN",
        HAPROXY_TIMEOUT,
        ServerState::is_drain,
    );
    let s = for_main.wait_for(BACKEND, "node1", "an agent answer", HAPROXY_TIMEOUT, |s| {
        s.agent_status == "L7OK"
    });
    assert!(s.is_up(), "{s:?}");
    assert_holds(
        &for_main,
        "node1",
        "UP",
        Duration::from_secs(2),
        ServerState::is_up,
    );
}

// ---------------------------------------------------------------------------------------------
// The shipped example configuration: what survives a start and a restart

/// `rolecall.example.toml` as shipped, pointed at `topology`, the node's pid file, the test's
/// ports and a maintenance token: nothing else changed (its state is kept where the service's
/// `StateDirectory` would put it, which the harness gives each daemon).
fn example_config(topology: &Topology, pid_file: &Path, token: &Path) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rolecall.example.toml"
    ))
    .expect("read rolecall.example.toml");
    let sentinels: Vec<String> = topology
        .sentinel_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    shipped
        .lines()
        .map(|line| {
            let key = |k: &str| line.starts_with(k);
            if key("pid_file = ") {
                format!("pid_file = \"{}\"", pid_file.display())
            } else if key("master_name = ") {
                format!("master_name = \"{}\"", topology.master_name())
            } else if key("sentinels = ") {
                format!("sentinels = [{}]", sentinels.join(", "))
            } else if key("listen = \"0.0.0.0:7070\"") {
                "listen = \"{agent}\"".to_string()
            } else if key("listen = \"0.0.0.0:7071\"") {
                "listen = \"{http}\"".to_string()
            } else if key("# [maintenance]") {
                "[maintenance]".to_string()
            } else if key("# token_file = ") {
                format!("token_file = \"{}\"", token.display())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn with_the_example_configuration_restarts_keep_an_operators_drain_and_maintenance_and_lift_only_rolecalls_own_drain()
 {
    let topology = small_topology();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("node.pid");
    let token = dir.path().join("maintenance.token");
    write_private(&token, "t0ken-example\n");
    let node = DemoNode::pin(topology.master_addr());
    std::fs::write(&pid_file, node.pid().to_string()).unwrap();
    let config = example_config(&topology, &pid_file, &token);
    assert!(config.contains("[maintenance]"));
    assert!(
        !config.lines().any(|l| l.starts_with("state_")),
        "no state file configured"
    );
    let mut rolecall = Rolecall::start(&config);
    let (b1, b2) = (Backend::start(), Backend::start());
    let mut env = agent_env(b1.addr(), rolecall.agent_addr(), b2.addr(), nowhere());
    env.push(("AGENT_INTER", "200ms".into()));
    let h = Haproxy::start("agent-check.cfg", &env);
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    // 1. An operator drains the node once rolecall has judged it and HAProxy has heard the
    //    agent: it stays drained, and across a restart of rolecall.
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    h.wait_for(BACKEND, "node1", "agent heard", HAPROXY_TIMEOUT, |s| {
        s.is_up() && s.last_agent.starts_with("via agent : up")
    });
    h.cli(&format!("set server {BACKEND}/node1 state drain"));
    let five = Duration::from_secs(5);
    assert_holds(&h, "node1", "DRAIN", five, ServerState::is_drain);
    rolecall.kill();
    rolecall.restart();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_holds(&h, "node1", "DRAIN", five, ServerState::is_drain);
    h.cli(&format!("set server {BACKEND}/node1 state ready"));
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    // 2. The HTTP maintenance switch survives a restart.
    let (code, body) = http_auth(
        rolecall.http_addr(),
        "POST",
        "/maintenance",
        Some("t0ken-example"),
    );
    assert_eq!(code, 200, "{body}");
    h.wait_for(
        BACKEND,
        "node1",
        "MAINT",
        HAPROXY_TIMEOUT,
        ServerState::is_maint,
    );
    rolecall.kill();
    rolecall.restart();
    let s = rolecall.status();
    assert_eq!(s["maintenance"]["by_api"], true, "{s:#}");
    assert_holds(
        &h,
        "node1",
        "MAINT",
        Duration::from_secs(2),
        ServerState::is_maint,
    );
    let (code, body) = http_auth(
        rolecall.http_addr(),
        "DELETE",
        "/maintenance",
        Some("t0ken-example"),
    );
    assert_eq!(code, 200, "{body}");
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);

    // 3. rolecall's own drain (the node died), rolecall killed, the node back: a restarted
    //    rolecall lifts its own drain once the node is healthy.
    drop(node);
    rolecall.wait_for_verdict("node_missing", VERDICT_TIMEOUT);
    h.wait_for(
        BACKEND,
        "node1",
        "DRAIN",
        HAPROXY_TIMEOUT,
        ServerState::is_drain,
    );
    rolecall.kill();
    let node = DemoNode::pin(topology.master_addr());
    std::fs::write(&pid_file, node.pid().to_string()).unwrap();
    rolecall.restart();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    h.wait_for(BACKEND, "node1", "UP", HAPROXY_TIMEOUT, ServerState::is_up);
}
