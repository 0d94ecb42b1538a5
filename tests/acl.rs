//! rolecall with exactly the least-privilege ACL the README documents, on the data servers and
//! on the sentinels (its own user on each, passwords from files): through a real failover the
//! pinned node goes out and the Sentinel-following node stays in. With one permission taken
//! away, the verdict is `unknown` with a reason that names it, and a node in rotation stays
//! in. A canary password shows in no output, at debug level.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{DemoNode, Rolecall, RolecallConfig, Topology};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// The canary: it must never show in anything rolecall writes.
const PASSWORD: &str = "canary-3f9c1d-acl";

/// The README's ACL for rolecall on the data servers (checks, without repair), after `>pw`.
const SERVER_ACL: &[&str] = &[
    "resetkeys",
    "~rolecall:*",
    "resetchannels",
    "-@all",
    "+role",
    "+info",
    "+client|setname",
    "+client|list",
    "+set",
    "+hset",
    "+hgetall",
    "+pexpire",
    "+hdel",
];

/// The README's ACL for rolecall on the sentinels, after `>pw`.
const SENTINEL_ACL: &[&str] = &[
    "resetchannels",
    "&+switch-master",
    "&+vote-for-leader",
    "&+failover-state-send-slaveof-noone",
    "&-failover-abort-not-elected",
    "&-failover-abort-no-good-slave",
    "&-failover-abort-slave-timeout",
    "&+try-failover",
    "&+promoted-slave",
    "&+failover-state-reconf-slaves",
    "&+failover-end",
    "&+odown",
    "&-odown",
    "&+sdown",
    "&-sdown",
    "&+convert-to-slave",
    "&+role-change",
    "&+tilt",
    "&-tilt",
    "-@all",
    "+client|setname",
    "+info",
    "+ping",
    "+subscribe",
    "+sentinel|get-master-addr-by-name",
    "+sentinel|replicas",
    "+sentinel|myid",
    "+sentinel|sentinels",
    "+sentinel|master",
];

fn set_user(rules: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", "rolecall", "reset", "on"]
        .map(str::to_string)
        .to_vec();
    args.push(format!(">{PASSWORD}"));
    args.extend(rules.iter().map(|r| r.to_string()));
    args
}

/// Gives every data server and sentinel of `topology` the README's `rolecall` user.
fn grant(topology: &Topology) {
    let servers = set_user(SERVER_ACL);
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    for s in topology.servers() {
        s.cli(&servers);
    }
    let sentinels = set_user(SENTINEL_ACL);
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    for s in topology.sentinels() {
        s.cli(&sentinels);
    }
}

fn password_file(dir: &Path) -> PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    pw
}

fn rolecall_for(topology: &Topology, node: &DemoNode, name: &str, pw: &Path) -> Rolecall {
    let credentials = format!(
        "username = \"rolecall\"\npassword_file = \"{pw}\"\nsentinel_username = \"rolecall\"\nsentinel_password_file = \"{pw}\"\n",
        pw = pw.display()
    );
    RolecallConfig::new()
        .pid(node.pid())
        .node_name(name)
        .redis_group_with(
            "main",
            topology.master_name(),
            &topology.sentinel_addrs(),
            &credentials,
        )
        .check("stale_master_grace", "\"15s\"")
        .check("unknown_hold", "\"120s\"")
        .env("ROLECALL_LOG", "debug")
        .start()
}

/// Asserts the canary shows nowhere rolecall writes: its log (at debug level), `/status`,
/// `/metrics`.
fn assert_no_canary(rolecall: &Rolecall) {
    let status = rolecall.http_get("/status").1;
    let metrics = rolecall.http_get("/metrics").1;
    for (what, text) in [
        ("log", rolecall.stderr()),
        ("/status", status),
        ("/metrics", metrics),
    ] {
        assert!(!text.contains(PASSWORD), "the password shows in the {what}");
    }
}

#[test]
fn with_only_the_documented_acl_a_failover_is_judged_and_a_missing_permission_is_named() {
    let topology = Topology::start(1, 3);
    grant(&topology);
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let master = topology.master_addr();
    let pinned = DemoNode::pin(master);
    let follower = DemoNode::follow(&topology);
    let mut out = rolecall_for(&topology, &pinned, "pinned", &pw);
    let mut stays = rolecall_for(&topology, &follower, "follower", &pw);
    out.wait_for_verdict("ok", VERDICT_TIMEOUT);
    stays.wait_for_verdict("ok", VERDICT_TIMEOUT);

    let (old, new) = topology.failover();
    assert_eq!(old, master);
    let s = out.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    let new_s = new.to_string();
    let s = stays.wait_for_ok_on(&new_s, DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_eq!(s["groups"][0]["majority"], true, "{s:#}");
    // The fleet guard's registry, kept with exactly these permissions on the new master.
    assert_eq!(s["fleet"]["reason"], serde_json::Value::Null, "{s:#}");
    let key = format!("rolecall:fleet:{}", topology.master_name());
    let fields = topology.server(new).cli_str(&["HKEYS", &key]);
    assert!(fields.contains("follower"), "{fields}");

    // Take one permission away on the data servers: the reason names it; the node stays in.
    for srv in topology.servers() {
        srv.cli(&["ACL", "SETUSER", "rolecall", "-role"]);
    }
    let s = stays.wait_for_verdict("unknown", VERDICT_TIMEOUT);
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("'role'"),
        "the reason names the command: {reason}"
    );
    assert_eq!(s["in_rotation"], true, "{s:#}");
    for srv in topology.servers() {
        srv.cli(&["ACL", "SETUSER", "rolecall", "+role"]);
    }
    stays.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // And on the sentinels.
    for s in topology.sentinels() {
        s.cli(&[
            "ACL",
            "SETUSER",
            "rolecall",
            "-sentinel|get-master-addr-by-name",
        ]);
    }
    let s = stays.wait_for_verdict("unknown", VERDICT_TIMEOUT);
    let reason = s["reason"].as_str().unwrap_or("");
    let dissent = s["groups"][0]["dissent"].to_string();
    assert!(
        dissent.contains("sentinel|get-master-addr-by-name"),
        "the sentinels' refusal names the command: {reason}\n{dissent}"
    );
    assert_eq!(s["in_rotation"], true, "{s:#}");

    assert_no_canary(&out);
    assert_no_canary(&stays);
}
