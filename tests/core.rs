//! Black-box tests of rolecall's core, with real processes: real `redis-server` /
//! `redis-sentinel` topologies, demo nodes holding real connections, and the `rolecall` binary
//! itself, observed only through what it serves (`/status`, `/readyz`, `/livez`, `/metrics`,
//! the agent port) and its exit codes.
//!
//! The verdicts of the README's table on real failures: a pinned node after a failover
//! (`stale_master`, then `stuck_on_replica`), a node following Sentinel (stays in rotation), a
//! node publishing to a replica, split command / pub/sub connections, a vanished node process,
//! every sentinel stopped (hold, then fail open); and the command line: `check`, `config check`,
//! `config example`, SIGTERM and a bad configuration.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{
    DemoNode, ReadyWatch, Rolecall, RolecallConfig, Topology, call, free_port, parse_info,
    run_rolecall, value_to_string,
};

/// From start (or from a change of the node's connections) to a confirmed verdict: a few checks
/// of 250 ms; generous for a loaded two-core machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// A one-shot `rolecall check` / `config check` / `config example`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// SIGTERM to exit (rolecall drains its servers for at most 6 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Helpers

/// `/status`'s `.verdict`.
fn verdict(status: &serde_json::Value) -> &str {
    status["verdict"].as_str().unwrap_or("")
}

fn reason(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or("")
}

/// The servers (`host:port`) of the node's connections that rolecall routed to group 0.
fn connection_servers(status: &serde_json::Value) -> Vec<String> {
    status["groups"][0]["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["server"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The first word of an agent reply.
fn first_word(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

/// Asserts `/readyz` answers `code`, and the agent's reply (for the whole node) starts with
/// `word`; returns the reply.
fn assert_rotation(rolecall: &Rolecall, code: u16, word: &str) -> String {
    let (status, body) = rolecall.http_get("/readyz");
    assert_eq!(
        status,
        code,
        "/readyz: {status} {body}\n{}",
        rolecall.report(None)
    );
    let reply = rolecall.agent(Some("\n"));
    assert_eq!(
        first_word(&reply),
        word,
        "agent reply {reply:?}\n{}",
        rolecall.report(None)
    );
    assert_eq!(reply.matches('\n').count(), 1, "one line: {reply:?}");
    reply
}

/// A config file for the one-shot commands, written in `dir`. Its listeners (a config needs
/// one) get ports that were free a moment ago; `rolecall check` does not bind them.
fn write_config(dir: &Path, name: &str, config: RolecallConfig) -> PathBuf {
    let text = config
        .to_toml()
        .replace("{agent}", &format!("127.0.0.1:{}", free_port()))
        .replace("{http}", &format!("127.0.0.1:{}", free_port()));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a config file");
    path
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A one-shot command's output, for assertion messages.
fn show(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Sentinel addresses nothing listens on (ports that were free a moment ago).
fn dead_sentinels() -> Vec<SocketAddr> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 3 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Failover

#[test]
fn a_node_pinned_to_the_old_master_is_stuck_on_replica_after_a_failover_and_a_follower_ends_ok() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let pinned = DemoNode::pin(master);
    let follower = DemoNode::follow(&topology);
    let mut pinned_rc = RolecallConfig::new()
        .pid(pinned.pid())
        .node_name("pinned")
        .topology(&topology)
        .start();
    let mut follower_rc = RolecallConfig::new()
        .pid(follower.pid())
        .node_name("follower")
        .topology(&topology)
        // The default, spelt out: the follower sits on the old master until Sentinel demotes
        // it, about 10 s after the failover (measured here: +convert-to-slave 10.0 s after
        // +switch-master, the follower ok 0.6 s later).
        .check("stale_master_grace", "\"15s\"")
        .start();
    let watch = ReadyWatch::start(follower_rc.http_addr());

    for rc in [&mut pinned_rc, &mut follower_rc] {
        let s = rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
        assert_eq!(s["in_rotation"], true, "{s:#}");
        assert_eq!(connection_servers(&s), vec![master.to_string()], "{s:#}");
        assert_rotation(rc, 200, "up");
    }

    let (old, new) = topology.failover();
    assert_eq!((old, new), (master, replica));

    // The pinned node: once Sentinel demotes the old master and kills its clients, the node
    // redials the same address and is on a replica.
    let s = pinned_rc.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&old.to_string()) && why.contains(&new.to_string()),
        "the reason names the replica {old} (the old master) and Sentinel's master {new}: {why}"
    );
    assert_eq!(s["groups"][0]["master"], new.to_string(), "{s:#}");
    let reply = assert_rotation(&pinned_rc, 503, "drain");
    assert!(reply.contains("#stuck_on_replica"), "{reply:?}");
    assert!(reply.contains(&old.to_string()), "{reply:?}");

    // The follower: on the new master, in rotation.
    let new_s = new.to_string();
    let s = follower_rc.wait_for_status(
        &format!("the follower ok with every connection on {new}"),
        DEMOTED_VERDICT_TIMEOUT,
        |s| {
            let servers = connection_servers(s);
            verdict(s) == "ok" && !servers.is_empty() && servers.iter().all(|c| *c == new_s)
        },
    );
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_rotation(&follower_rc, 200, "up");

    // ... and it never left rotation, through the whole stale-master window.
    watch
        .finish()
        .assert_never_out("the follower", &follower_rc.report(None));
}

/// After a failover, while the node is `disconnected` or `stale_master`, rolecall checks every
/// `fast_interval` until the group settles: the pinned node's redial to the demoted master
/// (tens of milliseconds after Sentinel converts it) is seen at once, not at the next interval
/// (5 s here).
#[test]
fn a_pinned_node_is_out_at_once_after_the_demotion_not_at_the_next_interval() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let pinned = DemoNode::pin(master);
    let mut rolecall = RolecallConfig::new()
        .pid(pinned.pid())
        .topology(&topology)
        .check("interval", "\"5s\"")
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let (old, _) = topology.failover();
    let mut demoted = None;
    for _ in 0..3000 {
        if topology.server(old).role().as_deref() == Some("slave") {
            demoted = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let demoted = demoted.expect("Sentinel demotes the old master within 30 s");
    let mut out = None;
    for _ in 0..1000 {
        if first_word(&rolecall.agent(Some("\n"))) == "drain" {
            out = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = out
        .map(|t| t.saturating_duration_since(demoted))
        .unwrap_or_else(|| {
            panic!(
                "not out within 5 s of the demotion\n{}",
                rolecall.report(None)
            )
        });
    // A check at the next interval could come up to 5 s later; the demotion's events bring
    // one at once. The bound leaves room for a loaded machine (BENCHMARKS.md has the figure).
    assert!(
        took < Duration::from_secs(3),
        "out {took:?} after the demotion, with a 5 s interval\n{}",
        rolecall.report(None)
    );
    assert_eq!(rolecall.status()["verdict"], "stuck_on_replica");
}

#[test]
fn a_node_on_the_old_master_while_it_still_claims_master_is_stale_master() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let node = DemoNode::pin(master);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    let (old, new) = topology.failover();

    // Sentinel names the new master at once; the old one claims master for about 10 s more.
    let s = rolecall.wait_for_verdict("stale_master", Duration::from_secs(5));
    let old_role = topology.server(old).role();
    assert_eq!(
        old_role.as_deref(),
        Some("master"),
        "the old master still claims master when rolecall says stale_master\n{}",
        topology.dump()
    );
    let why = reason(&s);
    assert!(
        why.contains(&old.to_string()) && why.contains(&new.to_string()),
        "the reason names the old master {old} and Sentinel's master {new}: {why}"
    );
    assert!(why.contains("still claims master"), "{why}");
    // Within its grace period the node stays in rotation, saying why.
    assert_eq!(s["in_rotation"], true, "{s:#}");
    let reply = assert_rotation(&rolecall, 200, "up");
    assert!(reply.contains("#stale_master"), "{reply:?}");
    assert_eq!(topology.server(old).role().as_deref(), Some("master"));
}

// ---------------------------------------------------------------------------------------------
// Sentinels gone

#[test]
fn all_sentinels_stopped_hold_the_last_state_then_fail_open_and_livez_stays_200() {
    let hold = Duration::from_secs(3);
    let mut topology = Topology::start(1, 3);
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin(replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("unknown_hold", "\"3s\"")
        .start();
    rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_rotation(&rolecall, 503, "drain");

    // Taken before the kills: rolecall is blind only once a majority is gone, so its hold
    // cannot start before this.
    let killed = Instant::now();
    for i in 0..topology.sentinels().len() {
        topology.sentinel_mut(i).kill();
    }

    // Blind: `unknown`, holding the last state (out of rotation).
    let s = rolecall.wait_for_verdict("unknown", Duration::from_secs(10));
    let why = reason(&s).to_owned();
    assert!(
        why.contains("sentinel"),
        "the reason names the sentinels: {why}"
    );
    assert!(why.contains("holding the last state"), "{why}");
    assert_eq!(s["in_rotation"], false, "held out of rotation: {s:#}");
    let sentinels = s["groups"][0]["sentinels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sentinels.len(), 3, "{s:#}");
    assert!(
        sentinels.iter().all(|x| x["error"].is_string()),
        "each sentinel's error is reported: {s:#}"
    );

    // Then fail open after the hold, with /livez 200 at every poll throughout.
    let mut polls = 0;
    let mut held_polls = 0;
    let opened = support::wait_for(
        Duration::from_secs(20),
        "/readyz 200 (fail open) after the unknown hold",
        || {
            polls += 1;
            let (live, body) = rolecall.http_get("/livez");
            assert_eq!(
                (live, body.as_str()),
                (200, "ok\n"),
                "/livez at poll {polls}"
            );
            let (ready, _) = rolecall.http_get("/readyz");
            if ready == 200 {
                return Some(Instant::now());
            }
            assert_eq!(ready, 503);
            held_polls += 1;
            None
        },
    );
    // The hold starts at the first blind check, which is after the kill.
    assert!(
        opened.duration_since(killed) >= hold,
        "failed open {:?} after the sentinels were killed, before the {hold:?} hold",
        opened.duration_since(killed)
    );
    assert!(
        held_polls > 10,
        "held out of rotation for a while ({held_polls} polls)"
    );
    let s = rolecall.status();
    assert_eq!(verdict(&s), "unknown", "{s:#}");
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert!(
        reason(&s).contains("sentinel") && reason(&s).contains("failing open"),
        "{}",
        reason(&s)
    );
    let reply = assert_rotation(&rolecall, 200, "up");
    assert!(reply.contains("#unknown"), "{reply:?}");
    assert_eq!(rolecall.http_get("/livez").0, 200);
}

// ---------------------------------------------------------------------------------------------
// The node process

#[test]
fn a_node_whose_process_exits_is_node_missing() {
    let topology = Topology::start(1, 3);
    let mut node = DemoNode::pin(topology.master_addr());
    let pid = node.pid();
    let mut rolecall = RolecallConfig::new().pid(pid).topology(&topology).start();
    let s = rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(s["node"]["pids"], serde_json::json!([pid]), "{s:#}");
    assert_rotation(&rolecall, 200, "up");

    node.kill();

    let s = rolecall.wait_for_verdict("node_missing", VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(s["node"]["running"], false, "{s:#}");
    assert!(reason(&s).contains(&pid.to_string()), "{}", reason(&s));
    let reply = assert_rotation(&rolecall, 503, "drain");
    assert!(reply.contains("#node_missing"), "{reply:?}");
    assert_eq!(rolecall.http_get("/livez").0, 200);
}

#[test]
fn a_node_publishing_to_a_replica_is_out() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    // What makes it silent: PUBLISH on a replica "succeeds" (no subscriber hears it).
    let published = call(replica, &["PUBLISH", "rolecall-test", "hello"]).expect("PUBLISH");
    assert_eq!(value_to_string(&published), "0");
    let node = DemoNode::pin(replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();

    let s = rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&format!("-> {replica} goes to a replica")),
        "the reason names the replica {replica}: {why}"
    );
    assert!(
        why.contains(&master.to_string()),
        "and the master {master}: {why}"
    );
    assert!(
        connection_servers(&s).contains(&replica.to_string()),
        "{s:#}"
    );
    let reply = assert_rotation(&rolecall, 503, "drain");
    assert!(reply.contains("#stuck_on_replica"), "{reply:?}");
}

#[test]
fn a_node_with_a_pubsub_connection_on_the_old_master_is_out() {
    // Commands on Sentinel's master, the subscriber on the other server (a replica): every
    // connection counts.
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let node = DemoNode::pin_with_pubsub(master, replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();

    let s = rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let mut servers = connection_servers(&s);
    servers.sort();
    let mut want = vec![master.to_string(), replica.to_string()];
    want.sort();
    assert_eq!(servers, want, "both connections are seen: {s:#}");
    let why = reason(&s);
    assert!(
        why.contains(&format!("-> {replica} goes to a replica")),
        "the reason names the subscriber's server {replica}: {why}"
    );
    let reply = assert_rotation(&rolecall, 503, "drain");
    assert!(reply.contains("#stuck_on_replica"), "{reply:?}");
}

/// Row 7 across a failover: the node's commands follow Sentinel to the new master at once, its
/// subscriber stays on the old master's address. While the old master still claims master the
/// subscriber makes the node `stale_master`; once Sentinel demotes it (and kills its
/// subscribers) the subscriber redials it, a replica now: out of rotation.
#[test]
fn a_node_whose_subscriber_stays_on_the_old_master_across_a_failover_goes_out() {
    let topology = Topology::start(1, 3);
    let old = topology.master_addr();
    let mut node = DemoNode::follow_watching_with_pubsub(&topology, old);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    let (_, new) = topology.failover();
    // The commands moved, the subscriber did not, and the old master still claims master.
    let want = format!("connected {new}");
    node.wait_for_line(VERDICT_TIMEOUT, |l| l == want);
    let mut both = vec![old.to_string(), new.to_string()];
    both.sort();
    let split = rolecall.wait_for_status("split connections judged", VERDICT_TIMEOUT, |s| {
        let mut servers = connection_servers(s);
        servers.sort();
        s["verdict"] == "stale_master" && servers == both
    });
    assert_eq!(
        split["in_rotation"], true,
        "within the grace period: {split:#}"
    );
    assert!(
        reason(&split).contains(&format!(
            "-> {old} goes to a server that still claims master"
        )),
        "{split:#}"
    );

    // Demoted: the subscriber is back on the old address, a replica now.
    let s = rolecall.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(topology.server(old).role().as_deref(), Some("slave"));
    assert!(
        reason(&s).contains(&format!("-> {old} goes to a replica"))
            && reason(&s).contains(&format!("Sentinel's master is {new}")),
        "{s:#}"
    );
    let reply = assert_rotation(&rolecall, 503, "drain");
    assert!(reply.contains("#stuck_on_replica"), "{reply:?}");
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn check_exits_0_when_ok_and_2_when_stuck_on_replica() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let replica = topology.replicas()[0].addr();
    let on_master = DemoNode::pin(master);
    let on_replica = DemoNode::pin(replica);
    let dir = tempfile::tempdir().expect("a temp dir");
    let ok_config = write_config(
        dir.path(),
        "ok.toml",
        RolecallConfig::new()
            .pid(on_master.pid())
            .topology(&topology),
    );
    let stuck_config = write_config(
        dir.path(),
        "stuck.toml",
        RolecallConfig::new()
            .pid(on_replica.pid())
            .topology(&topology),
    );
    let blind_config = write_config(
        dir.path(),
        "blind.toml",
        RolecallConfig::new().pid(on_master.pid()).redis_group(
            "main",
            "mymaster",
            &dead_sentinels(),
        ),
    );
    let check = |path: &Path| {
        run_rolecall(
            &["check", "--config", &path.display().to_string()],
            COMMAND_TIMEOUT,
        )
    };

    let out = check(&ok_config);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("ROLECALL OK - ok: "),
        "{}",
        show(&out)
    );
    assert_eq!(stdout(&out).lines().count(), 1, "{}", show(&out));

    let out = check(&stuck_config);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("ROLECALL CRITICAL - stuck_on_replica: "),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains(&replica.to_string()),
        "{}",
        show(&out)
    );

    let out = check(&blind_config);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("ROLECALL UNKNOWN - unknown: "),
        "{}",
        show(&out)
    );
}

#[test]
fn config_check_names_the_line_and_column_of_a_misspelt_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("rolecall.toml");
    let text = "\
[node]
name = \"n1\"
pid = 1

[[redis]]
master_name = \"mymaster\"
sentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\", \"127.0.0.1:26381\"]

[check]
interval = \"1s\"
  timout = \"300ms\"

[http]
listen = \"127.0.0.1:7071\"
";
    std::fs::write(&path, text).expect("write the config");
    let p = path.display().to_string();
    let out = run_rolecall(&["config", "check", "--config", &p], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{p}:11:3:")),
        "FILE:LINE:COL of `timout` (line 11, column 3) in: {err}"
    );
    assert!(err.contains("timout"), "{err}");

    // The same file spelt right passes.
    std::fs::write(&path, text.replace("timout", "timeout")).expect("write the config");
    let out = run_rolecall(&["config", "check", "--config", &p], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains(": ok"), "{}", show(&out));

    // `config example` prints a file `config check` accepts.
    let out = run_rolecall(&["config", "example"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let example = stdout(&out);
    assert!(example.contains("[[redis]]"), "{example}");
    let example_path = dir.path().join("example.toml");
    std::fs::write(&example_path, &example).expect("write the example");
    let out = run_rolecall(
        &[
            "config",
            "check",
            "--config",
            &example_path.display().to_string(),
        ],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn sigterm_stops_rolecall_with_exit_0() {
    let mut rolecall = RolecallConfig::new()
        .pid(std::process::id())
        .redis_group("main", "mymaster", &dead_sentinels())
        .start();
    // A complete check (blind: no sentinel listens), so the loop is running.
    rolecall.wait_for_status("a complete check", VERDICT_TIMEOUT, |s| {
        s["checked"] == true
    });
    let (http, agent) = (rolecall.http_addr(), rolecall.agent_addr());

    rolecall.terminate();
    let status = rolecall.wait_exit(EXIT_TIMEOUT);

    assert_eq!(status.code(), Some(0), "{}", rolecall.report(None));
    // Both listeners are released.
    for addr in [http, agent] {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr} after exit: {e}"));
    }
}

#[test]
fn a_bad_config_exits_64_before_binding() {
    // timeout above interval: valid TOML, invalid configuration.
    let bad = RolecallConfig::new()
        .pid(std::process::id())
        .redis_group("main", "mymaster", &dead_sentinels())
        .check("interval", "\"1s\"")
        .check("timeout", "\"2s\"");

    // With the HTTP port free: exit 64 with the reason, and the port was never taken.
    let bad = bad.to_toml();
    let mut rolecall = Rolecall::spawn(&bad);
    let status = rolecall.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(64), "{}", rolecall.report(None));
    let log = rolecall.stderr();
    assert!(
        log.contains(&rolecall.config_path().display().to_string()) && log.contains("timeout"),
        "the error names the file and the key: {log}"
    );
    assert!(!log.contains("listening"), "{log}");
    for addr in [rolecall.http_addr(), rolecall.agent_addr()] {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    }

    // With both ports held by someone else: still 64 (the configuration is refused before any
    // bind is attempted), where a valid configuration exits 1 (port in use).
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let agent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let fill = |text: String| {
        text.replace("{http}", &http.local_addr().unwrap().to_string())
            .replace("{agent}", &agent.local_addr().unwrap().to_string())
    };
    let mut refused = Rolecall::spawn(&fill(bad));
    let status = refused.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(64), "{}", refused.report(None));
    assert!(
        !refused.stderr().contains("cannot listen"),
        "{}",
        refused.stderr()
    );

    let valid = RolecallConfig::new().pid(std::process::id()).redis_group(
        "main",
        "mymaster",
        &dead_sentinels(),
    );
    let mut in_use = Rolecall::spawn(&fill(valid.to_toml()));
    let status = in_use.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", in_use.report(None));
    assert!(
        in_use.stderr().contains("cannot listen"),
        "{}",
        in_use.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[test]
fn http_endpoints_refuse_wrong_methods_and_paths() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    let r = rolecall.http("POST", "/readyz").expect("POST /readyz");
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"), "{r:?}");
    let r = rolecall.http("DELETE", "/status").expect("DELETE /status");
    assert_eq!(r.status, 405, "{r:?}");
    let r = rolecall.http("GET", "/nope").expect("GET /nope");
    assert_eq!(r.status, 404, "{r:?}");
    let r = rolecall
        .http("GET", "/readyz/extra")
        .expect("GET /readyz/extra");
    assert_eq!(r.status, 404, "{r:?}");
    let r = rolecall.http("HEAD", "/livez").expect("HEAD /livez");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "", "HEAD has no body: {r:?}");
    let r = rolecall.http("GET", "/livez").expect("GET /livez");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{r:?}");
    let r = rolecall
        .http("GET", "/readyz?verbose")
        .expect("GET /readyz?verbose");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.ends_with("readyz check passed\n"), "{r:?}");
    assert!(r.body.contains("[+]node ok"), "{r:?}");

    let r = rolecall.http("GET", "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .lines()
            .any(|l| l == "rolecall_verdict{verdict=\"ok\"} 1"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .lines()
            .any(|l| l == "rolecall_verdict{verdict=\"stuck_on_replica\"} 0"),
        "{}",
        r.body
    );
    assert!(
        r.body.lines().any(|l| l == "rolecall_in_rotation 1"),
        "{}",
        r.body
    );
    let count = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("rolecall_check_duration_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rolecall_check_duration_seconds_count in\n{}", r.body));
    assert!(count >= 2.0, "at least rise = 2 checks: {count}");
    let r = rolecall.http("GET", "/status").expect("GET /status");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
}

#[test]
fn the_node_verdict_is_the_worst_of_several_groups_and_agent_send_selects_one() {
    // Two shards, each its own master, replica and sentinels; the node talks to shard a's
    // master and to shard b's replica.
    let a = Topology::start(1, 3);
    let b = Topology::builder()
        .master_name("shard-b")
        .replicas(1)
        .sentinels(3)
        .start();
    let node = DemoNode::pin_with_pubsub(a.master_addr(), b.replicas()[0].addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .redis_group("a", a.master_name(), &a.sentinel_addrs())
        .redis_group("b", "shard-b", &b.sentinel_addrs())
        .start();
    let status = rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    let groups = status["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{status:#}");
    assert_eq!(groups[0]["name"], "a");
    assert_eq!(groups[0]["verdict"], "ok", "{status:#}");
    assert_eq!(groups[1]["name"], "b");
    assert_eq!(groups[1]["verdict"], "stuck_on_replica", "{status:#}");
    // agent-send selects a group; an empty line is the whole node.
    assert_eq!(first_word(&rolecall.agent(Some("a\n"))), "up");
    assert_eq!(first_word(&rolecall.agent(Some("b\n"))), "drain");
    assert_eq!(first_word(&rolecall.agent(Some("\n"))), "drain");
    assert_eq!(rolecall.http_get("/readyz").0, 503);
}

#[test]
fn rolecall_reuses_its_connections_across_checks_and_redials_a_broken_one() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let master = topology.master();
    let ids = || -> Vec<String> {
        master
            .clients_named("rolecall")
            .iter()
            .map(|c| c["id"].clone())
            .collect()
    };
    let checks = |r: &Rolecall| r.status()["checks"].as_u64().unwrap();
    let first = ids();
    assert_eq!(first.len(), 1, "one connection of rolecall's on the master");
    let before = checks(&rolecall);
    support::wait_until(VERDICT_TIMEOUT, "five more checks", || {
        checks(&rolecall) >= before + 5
    });
    assert_eq!(ids(), first, "the same connection across checks");
    // Broken (killed by the server): dialled again, and the node stays ok.
    master.cli(&["CLIENT", "KILL", "ID", &first[0]]);
    support::wait_until(VERDICT_TIMEOUT, "a new rolecall connection", || {
        let now = ids();
        now.len() == 1 && now != first
    });
    let status = rolecall.status();
    assert_eq!(verdict(&status), "ok", "{status:#}");
    assert_eq!(rolecall.http_get("/readyz").0, 200);
}

#[test]
fn wrong_credentials_hold_and_fail_open_and_the_password_never_shows() {
    const CANARY: &str = "canary-7f3a9b-password";
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis.password");
    std::fs::write(&pw, format!("{CANARY}\n")).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let credentials = format!(
        "username = \"rolecall\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let config = || {
        RolecallConfig::new()
            .pid(node.pid())
            .redis_group_with(
                "main",
                topology.master_name(),
                &topology.sentinel_addrs(),
                &credentials,
            )
            .check("unknown_hold", "\"2s\"")
    };
    let path = write_config(dir.path(), "canary.toml", config());
    let mut rolecall = config().start();
    // Blind from the start: unknown, naming the refused credentials; never out for it.
    let status = rolecall.wait_for_status("unknown, failed open", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "unknown" && s["in_rotation"] == true
    });
    let why = reason(&status).to_lowercase();
    assert!(
        why.contains("wrongpass") || why.contains("auth"),
        "{status:#}"
    );
    assert_eq!(rolecall.http_get("/readyz").0, 200);
    let mut outputs = vec![
        rolecall.http_get("/status").1,
        rolecall.http_get("/metrics").1,
        rolecall.http_get("/readyz?verbose").1,
        rolecall.agent(Some("\n")),
    ];
    for args in [
        vec!["config", "check", "--config", path.to_str().unwrap()],
        vec!["check", "--config", path.to_str().unwrap()],
    ] {
        let out = run_rolecall(&args, COMMAND_TIMEOUT);
        outputs.push(stdout(&out));
        outputs.push(stderr(&out));
    }
    rolecall.terminate();
    outputs.push(rolecall.stderr());
    for o in &outputs {
        assert!(!o.contains(CANARY), "the password leaked:\n{o}");
    }
    // The one-shot check names the failure too (without the password).
    let check_line = outputs[outputs.len() - 3].to_lowercase();
    assert!(
        check_line.starts_with("rolecall unknown")
            && (check_line.contains("wrongpass") || check_line.contains("auth")),
        "{check_line}"
    );
}

#[test]
fn a_world_readable_or_missing_password_file_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    let base = |pw: &Path| {
        format!(
            "[node]\npid = 1\n[[redis]]\nmaster_name = \"m\"\nsentinels = [\"127.0.0.1:1\"]\npassword_file = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            pw.display()
        )
    };
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, base(&pw)).unwrap();
    let out = run_rolecall(
        &["config", "check", "--config", cfg.to_str().unwrap()],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(stderr(&out).contains("No such file"), "{}", show(&out));
    std::fs::write(&pw, "canary-x\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run_rolecall(&["run", "--config", cfg.to_str().unwrap()], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        stderr(&out).contains("readable by every user"),
        "{}",
        show(&out)
    );
    assert!(!stderr(&out).contains("canary-x"));
}

#[test]
fn a_server_announced_under_another_address_is_recognised_by_its_run_id() {
    // Every server also listens on 127.0.0.2 and replicas announce themselves there: Sentinel
    // lists the replica as 127.0.0.2:P while the node dials 127.0.0.1:P (TESTING.md row 16).
    let topology = Topology::builder()
        .replicas(1)
        .sentinels(3)
        .server_args(&[
            "--bind",
            "127.0.0.1",
            "127.0.0.2",
            "--replica-announce-ip",
            "127.0.0.2",
        ])
        .start();
    let replica = topology.servers()[1].addr();
    let announced = format!("127.0.0.2:{}", replica.port());
    let node = DemoNode::pin(replica);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    // On the replica, found by identity (not "disconnected").
    let status = rolecall.wait_for_verdict("stuck_on_replica", VERDICT_TIMEOUT);
    assert_eq!(
        connection_servers(&status),
        vec![announced.clone()],
        "{status:#}"
    );
    // After a failover that replica is the master Sentinel names (by its announced address):
    // the node, still dialling 127.0.0.1:P, is on the master.
    let (_, new) = topology.failover();
    assert_eq!(new.to_string(), announced);
    let status = rolecall.wait_for_verdict("ok", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(rolecall.http_get("/readyz").0, 200, "{status:#}");
    let remote = status["groups"][0]["connections"][0]["remote"]
        .as_str()
        .unwrap();
    assert_eq!(remote, replica.to_string(), "{status:#}");
}

/// What `INFO server` says a process runs, as rolecall should name it: `valkey` and
/// `valkey_version` on Valkey, else `redis` and `redis_version`.
fn runs(info: &std::collections::BTreeMap<String, String>) -> (String, String) {
    match info.get("valkey_version") {
        Some(v) => ("valkey".to_string(), v.clone()),
        None => ("redis".to_string(), info["redis_version"].clone()),
    }
}

#[test]
fn status_and_metrics_say_what_each_server_and_sentinel_runs() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::follow(&topology);
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    let s = rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let g = &s["groups"][0];
    let metrics = rolecall.http_get("/metrics").1;
    let mut seen = 0;
    for (kind, list) in [("server", &g["servers"]), ("sentinel", &g["sentinels"])] {
        for entry in list.as_array().cloned().unwrap_or_default() {
            let addr: SocketAddr = entry["addr"].as_str().unwrap().parse().unwrap();
            let info = if kind == "server" {
                topology.server(addr).info("server")
            } else {
                let i = topology
                    .sentinel_addrs()
                    .iter()
                    .position(|a| *a == addr)
                    .expect("a sentinel of the topology");
                parse_info(&topology.sentinel(i).cli_str(&["INFO", "server"]))
            };
            let (name, version) = runs(&info);
            assert_eq!(entry["software"]["name"], name, "{kind} {addr}: {s:#}");
            assert_eq!(
                entry["software"]["version"], version,
                "{kind} {addr}: {s:#}"
            );
            let line = format!(
                "rolecall_software_info{{group=\"mymaster\",kind=\"{kind}\",addr=\"{addr}\",software=\"{name}\",version=\"{version}\"}} 1"
            );
            assert!(metrics.contains(&line), "{line} in:\n{metrics}");
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "the master and three sentinels: {s:#}");
}
