//! A Kubernetes-shaped Sentinel cluster, as Bitnami's `redis` chart makes one ([`Chart`]): every
//! server and sentinel named by a pod host name (from the test's own hosts file, in a mount
//! namespace of each process, never the machine's), sentinels that announce host names
//! everywhere, passwords on data servers and sentinels (read by rolecall from password files),
//! and one sentinel Service: an HAProxy TCP frontend round-robin over the three sentinels.
//!
//! - Through the Service, after a real failover, the pinned node goes out, the Sentinel-following
//!   node stays in, and `/status` shows a majority of the three real sentinels decided.
//! - A server name re-pointed to another address is followed within one check; a master name
//!   that stops resolving makes `unknown` (held), never out.

mod support;

use std::time::Duration;

use support::{Chart, ReadyWatch, RolecallConfig};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

fn group(status: &serde_json::Value) -> &serde_json::Value {
    &status["groups"][0]
}

/// Asserts that the group's master rests on all three real sentinels, reached through the
/// Service and at their announced host names, each voting once.
fn assert_majority_of_three(status: &serde_json::Value, chart: &Chart) {
    let g = group(status);
    assert_eq!(g["configured_sentinels"], 1, "{status:#}");
    assert_eq!(g["sentinels_known"], 3, "{status:#}");
    assert_eq!(g["votes"], 3, "{status:#}");
    assert_eq!(g["majority"], true, "{status:#}");
    let sentinels = g["sentinels"].as_array().cloned().unwrap_or_default();
    let counted: Vec<&serde_json::Value> =
        sentinels.iter().filter(|s| s["counted"] == true).collect();
    assert_eq!(counted.len(), 3, "{status:#}");
    let mut ids: Vec<&str> = counted.iter().filter_map(|s| s["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct sentinels: {status:#}");
    let announced: Vec<String> = sentinels
        .iter()
        .filter(|s| s["found"] == "announced")
        .filter_map(|s| s["addr"].as_str().map(str::to_owned))
        .collect();
    let mut expected = chart.sentinel_host_ports();
    expected.sort();
    let mut announced_sorted = announced.clone();
    announced_sorted.sort();
    assert_eq!(announced_sorted, expected, "{status:#}");
    assert!(
        sentinels
            .iter()
            .any(|s| s["found"] == "resolved" && s["via"] == chart.service_host_port()),
        "the Service is asked too, at the address its name resolves to: {status:#}"
    );
}

#[test]
fn through_the_sentinel_service_a_failover_drains_the_pinned_node_and_keeps_the_follower() {
    let chart = Chart::start();
    let master = chart.master();
    let pinned = chart.pin_node(&master);
    let follower = chart.follow_node();
    let mut out = RolecallConfig::new()
        .pid(pinned.pid())
        .node_name("pinned")
        .chart_service(&chart)
        .start();
    let mut stays = RolecallConfig::new()
        .pid(follower.pid())
        .node_name("follower")
        .chart_service(&chart)
        .check("stale_master_grace", "\"15s\"")
        .start();
    let s = out.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_majority_of_three(&s, &chart);
    let s = stays.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_eq!(group(&s)["master"], master, "{s:#}");
    let watch = ReadyWatch::start(stays.http_addr());
    support::wait_for(VERDICT_TIMEOUT, "the follower's rolecall ready", || {
        (stays.http_get("/readyz").0 == 200).then_some(())
    });

    let (old, new) = chart.failover();
    assert_eq!(old, master);

    let s = out.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], false, "{s:#}");
    assert_eq!(group(&s)["master"], new, "{s:#}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains(&old),
        "the reason names {old}: {s:#}"
    );
    assert_majority_of_three(&s, &chart);

    let s = stays.wait_for_ok_on(&new, DEMOTED_VERDICT_TIMEOUT);
    assert_majority_of_three(&s, &chart);
    watch
        .finish()
        .assert_never_out("the follower", &stays.report(None));
}

#[test]
fn a_re_pointed_name_is_followed_within_one_check_and_a_name_that_stops_resolving_is_never_out() {
    let chart = Chart::start();
    let (_, new) = chart.failover();
    chart.wait_settled();
    let n = chart.pod_of(&new);
    let follower = chart.follow_node();
    let mut rolecall = RolecallConfig::new()
        .pid(follower.pid())
        .chart(&chart)
        .check("unknown_hold", "\"60s\"")
        .start();
    let s = rolecall.wait_for_ok_on(&new, VERDICT_TIMEOUT);
    assert_eq!(s["in_rotation"], true, "{s:#}");

    // The pod comes back under another address (its server also listens there).
    let alt = chart.pod(n).alt_ip().to_string();
    let before = s["checks"].as_u64().unwrap_or(0);
    chart.repoint_name(n);
    let rolecall_at = |ip: &str| {
        chart
            .pod(n)
            .server()
            .clients_named("rolecall")
            .iter()
            .any(|c| {
                c.get("laddr")
                    .is_some_and(|l| l.starts_with(&format!("{ip}:")))
            })
    };
    support::wait_until(
        VERDICT_TIMEOUT,
        "rolecall's connection to the new address",
        || rolecall_at(&alt),
    );
    let s = rolecall.status();
    assert!(
        s["checks"].as_u64().unwrap_or(0) <= before + 2,
        "followed within one check (one more may have been under way): {before} -> {}",
        s["checks"]
    );
    // The node's connection, still to the old address, is placed by the server's CLIENT LIST.
    let s = rolecall.wait_for_status("the node placed by CLIENT LIST", VERDICT_TIMEOUT, |t| {
        group(t)["connections"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["placed_by"] == "client_list" && c["server"] == new)
        })
    });
    assert_eq!(s["verdict"], "ok", "{s:#}");

    // The master's name stops resolving (its pod is down, for Kubernetes): unknown, held.
    chart.hide_name(n);
    let s = rolecall.wait_for_verdict("unknown", VERDICT_TIMEOUT);
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .contains("does not resolve"),
        "{s:#}"
    );
    assert_eq!(s["in_rotation"], true, "{s:#}");
    let later = s["checks"].as_u64().unwrap_or(0) + 4;
    let s = rolecall.wait_for_status("more checks", VERDICT_TIMEOUT, |t| {
        t["checks"].as_u64().unwrap_or(0) >= later
    });
    assert_eq!(s["verdict"], "unknown", "{s:#}");
    assert_eq!(s["in_rotation"], true, "{s:#}");
    assert!(rolecall.is_running());
    chart.restore_name(n);
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
}
