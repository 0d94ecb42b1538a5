//! rolecall with exactly the least-privilege ACL the README documents, on the data servers and
//! on the sentinels (its own user on each, passwords from files): through a real failover the
//! pinned node goes out and the Sentinel-following node stays in. With one permission taken
//! away, the verdict is `unknown` with a reason that names it, and a node in rotation stays
//! in. A canary password shows in no output, at debug level; with the passwords given through
//! `password_env` and `sentinel_password_env`, in no output of any command either, through
//! authentication that succeeds, a failover, a refused command, a wrong password and a stop.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{DemoNode, Rolecall, RolecallConfig, Topology, run_rolecall_env};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// The canary: it must never show in anything rolecall writes.
const PASSWORD: &str = "canary-3f9c1d-acl";
/// A second canary, the sentinels' password where it differs from the data servers'.
const SENTINEL_PASSWORD: &str = "canary-8e27b4-sentinel";
/// How long a one-shot command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

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
    set_user_with(PASSWORD, rules)
}

fn set_user_with(password: &str, rules: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", "rolecall", "reset", "on"]
        .map(str::to_string)
        .to_vec();
    args.push(format!(">{password}"));
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

/// Gives the data servers the `rolecall` user with `PASSWORD` and the sentinels theirs with
/// `SENTINEL_PASSWORD`.
fn grant_two_passwords(topology: &Topology) {
    let servers = set_user_with(PASSWORD, SERVER_ACL);
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    for s in topology.servers() {
        s.cli(&servers);
    }
    let sentinels = set_user_with(SENTINEL_PASSWORD, SENTINEL_ACL);
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    for s in topology.sentinels() {
        s.cli(&sentinels);
    }
}

/// Everything a rolecall shows: every HTTP endpoint, the agent's reply, and every command that
/// reads its configuration (run with the same environment), each labelled.
fn every_output(rolecall: &Rolecall, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in ["/status", "/metrics", "/readyz?verbose", "/livez", "/"] {
        out.push((path.to_owned(), rolecall.http_get(path).1));
    }
    out.push(("agent".to_owned(), rolecall.agent(Some("\n"))));
    let config = rolecall.config_path().display().to_string();
    for args in [
        vec!["config", "show"],
        vec!["config", "check"],
        vec!["check"],
        vec!["status"],
        vec!["status", "--json"],
    ] {
        let mut all = args.clone();
        all.extend(["--config", &config]);
        let o = run_rolecall_env(&all, env, COMMAND_TIMEOUT);
        let what = args.join(" ");
        out.push((
            format!("{what} (stdout)"),
            String::from_utf8_lossy(&o.stdout).into(),
        ));
        out.push((
            format!("{what} (stderr)"),
            String::from_utf8_lossy(&o.stderr).into(),
        ));
    }
    out
}

/// Fails if either canary shows in any of `outputs`, naming the output and the stage.
fn assert_no_canaries(stage: &str, outputs: &[(String, String)]) {
    for (what, text) in outputs {
        for canary in [PASSWORD, SENTINEL_PASSWORD] {
            assert!(
                !text.contains(canary),
                "{stage}: a password shows in {what}:\n{text}"
            );
        }
    }
}

#[test]
fn passwords_from_the_environment_authenticate_and_show_in_no_output_whatever_happens() {
    let topology = Topology::start(1, 3);
    grant_two_passwords(&topology);
    let node = DemoNode::follow(&topology);
    let env = [
        ("ROLECALL_TEST_PW", PASSWORD),
        ("ROLECALL_TEST_SENTINEL_PW", SENTINEL_PASSWORD),
    ];
    let credentials = "username = \"rolecall\"\npassword_env = \"ROLECALL_TEST_PW\"\n\
                       sentinel_username = \"rolecall\"\n\
                       sentinel_password_env = \"ROLECALL_TEST_SENTINEL_PW\"\n";
    let mut config = RolecallConfig::new()
        .pid(node.pid())
        .redis_group_with(
            "main",
            topology.master_name(),
            &topology.sentinel_addrs(),
            credentials,
        )
        .check("unknown_hold", "\"120s\"")
        .env("ROLECALL_LOG", "debug");
    for (k, v) in env {
        config = config.env(k, v);
    }
    let mut rolecall = config.start();

    // Authenticated on both sides: ok, with every sentinel's vote.
    let s = rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(s["groups"][0]["majority"], true, "{s:#}");
    assert_no_canaries("authenticated", &every_output(&rolecall, &env));

    // Through a failover (events and checks at debug level).
    let (_, new) = topology.failover();
    rolecall.wait_for_ok_on(&new.to_string(), DEMOTED_VERDICT_TIMEOUT);
    assert_no_canaries("after a failover", &every_output(&rolecall, &env));

    // `role` taken away (row 23): unknown, naming the command; the node stays in rotation.
    for srv in topology.servers() {
        srv.cli(&["ACL", "SETUSER", "rolecall", "-role"]);
    }
    let s = rolecall.wait_for_verdict("unknown", VERDICT_TIMEOUT);
    let why = s["reason"].as_str().unwrap_or("");
    assert!(
        why.contains("'role'"),
        "the reason names the command: {s:#}"
    );
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_eq!(rolecall.http_get("/readyz").0, 200);
    let reply = rolecall.agent(Some("\n"));
    assert!(reply.starts_with("up"), "{reply:?}");
    assert_no_canaries("a command refused", &every_output(&rolecall, &env));
    for srv in topology.servers() {
        srv.cli(&["ACL", "SETUSER", "rolecall", "+role"]);
    }
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // The passwords changed under it: authentication fails on both sides; unknown, in rotation.
    for srv in topology.servers() {
        srv.cli(&[
            "ACL",
            "SETUSER",
            "rolecall",
            "resetpass",
            ">another-password",
        ]);
    }
    for sen in topology.sentinels() {
        sen.cli(&[
            "ACL",
            "SETUSER",
            "rolecall",
            "resetpass",
            ">another-password",
        ]);
    }
    // A new password does not end the sessions already authenticated; rolecall must dial again.
    for srv in topology.servers() {
        srv.cli(&["CLIENT", "KILL", "USER", "rolecall"]);
    }
    for sen in topology.sentinels() {
        sen.cli(&["CLIENT", "KILL", "USER", "rolecall"]);
    }
    let s = rolecall.wait_for_status("authentication refused", VERDICT_TIMEOUT, |s| {
        s["verdict"] == "unknown"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Password authentication failed"))
    });
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert_no_canaries("authentication refused", &every_output(&rolecall, &env));

    rolecall.terminate();
    rolecall.wait_exit(COMMAND_TIMEOUT);
    let log = rolecall.stderr();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    assert_no_canaries("stopped", &[("the log".to_owned(), log)]);
}
