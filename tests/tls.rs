//! rolecall against a TLS-only Sentinel cluster ([`TlsCluster`]: `port 0` on data servers and
//! sentinels, so no plaintext port exists to fall back to; client certificates required;
//! certificates made at test time that name the pods' host names and no IP).
//!
//! - Mutual TLS through a real failover: the pinned node goes out, the Sentinel-following node
//!   stays in, and the kill repair's `CLIENT KILL` works over TLS; with passwords on every
//!   server and sentinel, a canary password shows in no output at debug level.
//! - A wrong CA, an expired server certificate, a name that does not match, a missing client
//!   certificate: each `unknown` naming the TLS error, never out; rotated files are picked up
//!   without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{DemoNode, NodeOptions, ReadyWatch, Rolecall, RolecallConfig, TlsCluster};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

fn group(status: &serde_json::Value) -> &serde_json::Value {
    &status["groups"][0]
}

/// The demo node speaking TLS with the cluster's client certificate.
fn node(cluster: &TlsCluster, kind: &str, args: &[&str]) -> DemoNode {
    let tls = cluster.node_tls_args();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(tls.iter().map(String::as_str));
    let mut options = NodeOptions::new().hosts(cluster.hosts());
    if let Some(pw) = cluster.password() {
        options = options.password(pw).sentinel_password(pw);
    }
    options.start(kind, &all)
}

/// The canary: it must never show in anything rolecall writes.
const PASSWORD: &str = "canary-7e21b4-tls";

/// `password_file` and `sentinel_password_file` lines for the cluster's password.
fn password_lines(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "password_file = \"{p}\"\nsentinel_password_file = \"{p}\"\n",
        p = pw.display()
    )
}

/// Asserts the canary shows nowhere rolecall writes: its log (at debug level), `/status`,
/// `/metrics`.
fn assert_no_canary(rolecall: &Rolecall) {
    for (what, text) in [
        ("log", rolecall.stderr()),
        ("/status", rolecall.http_get("/status").1),
        ("/metrics", rolecall.http_get("/metrics").1),
    ] {
        assert!(!text.contains(PASSWORD), "the password shows in the {what}");
    }
}

fn pinned(cluster: &TlsCluster, addr: &str) -> DemoNode {
    node(cluster, "pin", &["pin", "--addr", addr])
}

fn follower(cluster: &TlsCluster) -> DemoNode {
    let sentinels = cluster.sentinel_host_ports();
    let mut args = vec!["follow", "--master-name", cluster.master_name()];
    for s in &sentinels {
        args.extend(["--sentinel", s.as_str()]);
    }
    node(cluster, "follow", &args)
}

/// `[redis.tls]` lines: the CA, and the client certificate unless `client` is `None`.
fn tls_table(ca: &Path, client: Option<(&Path, &Path)>, server_name: Option<&str>) -> String {
    let mut t = format!("[redis.tls]\nca_file = \"{}\"\n", ca.display());
    if let Some((cert, key)) = client {
        t.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(name) = server_name {
        t.push_str(&format!("server_name = \"{name}\"\n"));
    }
    t
}

fn rolecall(cluster: &TlsCluster, node: &DemoNode, tls: &str, extra: &str) -> RolecallConfig {
    let list: Vec<String> = cluster
        .sentinel_host_ports()
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect();
    let body = format!(
        "master_name = \"{}\"\nsentinels = [{}]\n{tls}",
        cluster.master_name(),
        list.join(", ")
    );
    RolecallConfig::new()
        .pid(node.pid())
        .hosts(cluster.hosts())
        .redis_group_toml(&body)
        .extra(extra)
}

fn client(cluster: &TlsCluster) -> Option<(&Path, &Path)> {
    Some((&cluster.pki.client.0, &cluster.pki.client.1))
}

/// The TLS error text rolecall reports: in the reason or the sentinels' dissent.
fn reported(status: &serde_json::Value) -> String {
    format!("{} {}", status["reason"], group(status)["dissent"])
}

#[test]
fn over_mutual_tls_a_failover_drains_the_pinned_node_keeps_the_follower_and_the_kill_repair_works()
{
    let cluster = TlsCluster::start_with(Some(PASSWORD));
    let master = cluster.master();
    let pin = pinned(&cluster, &master);
    let follow = follower(&cluster);
    let dir = tempfile::tempdir().unwrap();
    // The password lines go in the group, before its [redis.tls] table.
    let tls = format!(
        "{}{}",
        password_lines(dir.path()),
        tls_table(&cluster.pki.ca, client(&cluster), None)
    );
    let mut out = rolecall(
        &cluster,
        &pin,
        &tls,
        "[repair]\nkill_stale_connections = true\npause_writes_on_failover = false\nkill_interval = \"200ms\"\nkill_attempts = 5\n",
    )
    .node_name("pinned")
    .env("ROLECALL_LOG", "debug")
    .start();
    let mut stays = rolecall(&cluster, &follow, &tls, "")
        .node_name("follower")
        .check("stale_master_grace", "\"15s\"")
        .env("ROLECALL_LOG", "debug")
        .start();
    let s = out.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(group(&s)["master"], master, "{s:#}");
    assert_eq!(group(&s)["majority"], true, "{s:#}");
    stays.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let watch = ReadyWatch::start(stays.http_addr());
    support::wait_for(VERDICT_TIMEOUT, "the follower's rolecall ready", || {
        (stays.http_get("/readyz").0 == 200).then_some(())
    });

    let (old, new) = cluster.failover();
    assert_eq!(old, master);
    // The kill repair closes the pinned node's connection on the old master, over TLS. The
    // counter, not `/status`: a check's `repair.killed` lasts until the next check, and the
    // kill rounds may be over by the time the failover above has been seen.
    support::wait_until(DEMOTED_VERDICT_TIMEOUT, "a kill over TLS", || {
        out.metric("rolecall_repair_kills_total") >= 1.0
    });
    let s = out.status();
    assert!(group(&s)["repair"]["error"].is_null(), "{s:#}");
    let s = out.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(group(&s)["master"], new, "{s:#}");
    // The event subscriptions speak TLS too: the failover's events were heard.
    assert!(
        group(&s)["last_event"]["channel"].is_string(),
        "a Sentinel event heard over TLS: {s:#}"
    );

    let s = stays.wait_for_ok_on(&new, DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], true, "{s:#}");
    watch
        .finish()
        .assert_never_out("the follower", &stays.report(None));
    assert_no_canary(&out);
    assert_no_canary(&stays);
}

/// Copies `from` over `to` (the file rolecall's configuration names), as a rotated Secret does.
fn rotate(from: &Path, to: &Path) {
    let text = std::fs::read(from).unwrap();
    std::fs::write(to, text).unwrap();
}

/// Closes rolecall's connections to every server and sentinel, so its next ones are new.
fn reconnect(cluster: &TlsCluster) {
    for p in &cluster.pods {
        cluster.kill_clients_named(&p.server_host_port(), "rolecall");
        cluster.kill_clients_named(&p.sentinel_host_port(), "rolecall");
    }
}

fn own_copy(dir: &Path, from: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

/// Waits for `unknown` naming `error`, and asserts the node stayed in rotation.
fn assert_unknown_naming(rolecall: &mut Rolecall, error: &str) -> serde_json::Value {
    let s = rolecall.wait_for_status(&format!("unknown naming {error}"), VERDICT_TIMEOUT, |t| {
        t["verdict"] == "unknown" && reported(t).contains(error)
    });
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert!(reported(&s).contains("TLS:"), "{s:#}");
    s
}

#[test]
fn tls_failures_are_unknown_with_the_error_named_and_rotated_files_are_picked_up() {
    let cluster = TlsCluster::start();
    let master = cluster.master();
    let follow = follower(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let ca = own_copy(dir.path(), &cluster.pki.ca, "ca.pem");
    let tls = tls_table(&ca, client(&cluster), None);
    let mut rc = rolecall(&cluster, &follow, &tls, "")
        .check("unknown_hold", "\"120s\"")
        .start();
    let pid = rc.pid();
    rc.wait_for_verdict("ok", VERDICT_TIMEOUT);

    // A CA that signed nothing of the cluster's (the file replaced on disk).
    rotate(&cluster.pki.other_ca, &ca);
    reconnect(&cluster);
    assert_unknown_naming(&mut rc, "UnknownIssuer");
    // The right one back: picked up without a restart.
    rotate(&cluster.pki.ca, &ca);
    reconnect(&cluster);
    rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(rc.pid(), pid, "no restart");

    // The master presents an expired certificate to new connections, then one for another
    // name; then its own again.
    for (pair, error) in [
        (&cluster.pki.expired, "certificate expired"),
        (&cluster.pki.wrong_name, "certificate not valid for name"),
    ] {
        cluster.present(&master, pair);
        cluster.kill_clients_named(&master, "rolecall");
        assert_unknown_naming(&mut rc, error);
        cluster.present(&master, &cluster.pki.server);
        cluster.kill_clients_named(&master, "rolecall");
        rc.wait_for_verdict("ok", VERDICT_TIMEOUT);
    }

    // A name override the certificates do not carry, and no client certificate (settings,
    // not files): fresh rolecalls, which hold their starting state and then fail open; never
    // out on their own blindness.
    for (tls, error) in [
        (
            tls_table(&cluster.pki.ca, client(&cluster), Some("wrong.tls.test")),
            "certificate not valid for name",
        ),
        (
            tls_table(&cluster.pki.ca, None, None),
            "CertificateRequired",
        ),
    ] {
        let mut fresh = rolecall(&cluster, &follow, &tls, "")
            .check("unknown_hold", "\"2s\"")
            .start();
        let s = fresh.wait_for_status(&format!("unknown naming {error}"), VERDICT_TIMEOUT, |t| {
            t["verdict"] == "unknown" && reported(t).contains(error)
        });
        assert!(reported(&s).contains("TLS:"), "{s:#}");
        let s = fresh.wait_for_status("fail open", VERDICT_TIMEOUT, |t| t["in_rotation"] == true);
        assert_eq!(s["verdict"], "unknown", "{s:#}");
        assert!(
            fresh.stderr().contains(error),
            "the log names {error}:\n{}",
            fresh.stderr_tail(20)
        );
    }
}
