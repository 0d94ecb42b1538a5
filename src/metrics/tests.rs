use std::time::Duration;

use super::*;
use crate::conn::{ErrorClass, ServerAddr, Software};
use crate::sentinel::Found;
use crate::snapshot::{
    FleetStatus, GroupStatus, KillReport, NodeStatus, ProbeStatus, SentinelStatus, ServerStatus,
};
use crate::verdict::Verdict;

fn snapshot() -> Snapshot {
    Snapshot::starting(
        NodeStatus {
            name: "n".into(),
            selector: "pid 1".into(),
            pids: vec![],
            running: true,
        },
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
}

fn addr(s: &str) -> ServerAddr {
    s.parse().unwrap()
}

fn sentinel(a: &str, error: Option<&str>) -> SentinelStatus {
    SentinelStatus {
        addr: addr(a),
        id: None,
        found: Found::Configured,
        via: None,
        counted: true,
        software: Some(Software {
            name: "valkey".into(),
            version: "8.0.1".into(),
        }),
        master: None,
        tilt: false,
        error: error.map(str::to_string),
        latency_ms: Some(1.0),
    }
}

fn server(a: &str, error: Option<&str>) -> ServerStatus {
    ServerStatus {
        addr: addr(a),
        role: error.is_none().then(|| "master".to_string()),
        error: error.map(str::to_string),
        latency_ms: error.is_none().then_some(2.0),
        software: None,
    }
}

/// A group whose master is `master`, with one silent sentinel, one server whose `ROLE` failed,
/// and a write probe refused with READONLY.
fn group(master: &str) -> GroupStatus {
    GroupStatus {
        name: "main".into(),
        master_name: "mymaster".into(),
        verdict: Verdict::StuckOnReplica,
        in_rotation: false,
        reason: "r".into(),
        master: Some(addr(master)),
        votes: 2,
        elected: None,
        configured_sentinels: 3,
        sentinels_known: 3,
        sentinels_asked: 3,
        majority: true,
        dissent: vec![],
        sentinels: vec![
            sentinel("127.0.0.1:26379", None),
            sentinel("127.0.0.1:26380", Some("timed out")),
        ],
        connections: vec![],
        unplaced: vec![],
        other_servers: Vec::new(),
        servers: vec![
            server(master, None),
            server("127.0.0.1:6380", Some("refused")),
        ],
        probe: Some(ProbeStatus {
            ok: false,
            error: Some("READONLY".into()),
            error_class: Some(ErrorClass::Readonly),
        }),
        repair: Some(KillReport {
            killed: vec!["127.0.0.1:5000".into()],
            given_up: vec![],
            error: None,
        }),
        fenced: vec![],
        last_event: None,
    }
}

/// The sample lines of `text` (no comments).
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn metrics_show_the_verdict_and_check_duration() {
    let m = Metrics::new();
    let mut s = snapshot();
    s.verdict = Verdict::StuckOnReplica;
    s.check_duration_ms = 2.0;
    m.observe_check(&s);
    let text = m.encode(Format::Text);
    let lines = samples(&text);
    for want in [
        "rolecall_verdict{verdict=\"stuck_on_replica\"} 1",
        "rolecall_verdict{verdict=\"ok\"} 0",
        "rolecall_check_duration_seconds_count 1",
        "rolecall_in_rotation 0",
        "rolecall_maintenance 0",
        "rolecall_repair_kills_total 0",
        "rolecall_checks_total 1",
    ] {
        assert!(lines.contains(&want), "{want} in\n{text}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rolecall_frozen_seconds_total ")),
        "{text}"
    );
    m.set_maintenance(true);
    assert!(samples(&m.encode(Format::Text)).contains(&"rolecall_maintenance 1"));
}

#[test]
fn counters_end_in_total_and_keep_their_type_in_both_formats() {
    let m = Metrics::new();
    m.observe_check(&snapshot());
    let text = m.encode(Format::Text);
    // Prometheus text 0.0.4: the TYPE line names the sample itself.
    for counter in [
        "checks",
        "verdict_changes",
        "repair_kills",
        "frozen_seconds",
    ] {
        let want = format!("# TYPE rolecall_{counter}_total counter");
        assert!(text.contains(&want), "{want} in\n{text}");
    }
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    // OpenMetrics: the family without `_total`, its samples with it, and the closing EOF.
    let om = m.encode(Format::OpenMetrics);
    assert!(om.contains("# TYPE rolecall_checks counter\n"), "{om}");
    assert!(om.contains("\nrolecall_checks_total 1\n"), "{om}");
    assert!(
        om.contains("# TYPE rolecall_frozen_seconds counter\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
}

#[test]
fn the_build_and_the_process_are_described() {
    let text = Metrics::new().encode(Format::Text);
    let lines = samples(&text);
    let build = format!(
        "rolecall_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        option_env!("ROLECALL_REVISION").unwrap_or("unknown")
    );
    assert!(lines.contains(&build.as_str()), "{build} in\n{text}");
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "{name} in\n{text}"
        );
    }
}

#[test]
fn a_check_stamps_its_time() {
    let m = Metrics::new();
    let before = unix_now();
    m.observe_check(&snapshot());
    let text = m.encode(Format::Text);
    let stamp: f64 = samples(&text)
        .iter()
        .find_map(|l| l.strip_prefix("rolecall_last_check_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no timestamp in\n{text}"))
        .parse()
        .unwrap();
    assert!(stamp >= before && stamp <= unix_now(), "{stamp} {before}");
}

#[test]
fn groups_show_their_verdict_master_and_errors_by_stage_and_class() {
    let m = Metrics::new();
    let mut s = snapshot();
    s.groups = vec![group("127.0.0.1:6379")];
    m.observe_check(&s);
    m.observe_check(&s);
    let text = m.encode(Format::Text);
    let lines = samples(&text);
    for want in [
        "rolecall_group_verdict{group=\"main\",verdict=\"stuck_on_replica\"} 1",
        "rolecall_group_verdict{group=\"main\",verdict=\"ok\"} 0",
        "rolecall_master_info{group=\"main\",master=\"127.0.0.1:6379\"} 1",
        "rolecall_check_errors_total{group=\"main\",stage=\"sentinel\"} 2",
        "rolecall_check_errors_total{group=\"main\",stage=\"role\"} 2",
        "rolecall_check_errors_total{group=\"main\",stage=\"probe\"} 2",
        "rolecall_check_errors_total{group=\"main\",stage=\"repair\"} 0",
        "rolecall_probe_errors_total{group=\"main\",class=\"readonly\"} 2",
        "rolecall_repair_kills_total 2",
        "rolecall_sentinel_up{group=\"main\",sentinel=\"127.0.0.1:26380\"} 0",
        "rolecall_software_info{group=\"main\",kind=\"sentinel\",addr=\"127.0.0.1:26379\",software=\"valkey\",version=\"8.0.1\"} 1",
    ] {
        assert!(lines.contains(&want), "{want} in\n{text}");
    }
}

#[test]
fn after_a_failover_only_the_new_master_is_shown() {
    let m = Metrics::new();
    let mut s = snapshot();
    s.groups = vec![group("127.0.0.1:6379")];
    m.observe_check(&s);
    s.groups = vec![group("127.0.0.1:6381")];
    m.observe_check(&s);
    let text = m.encode(Format::Text);
    let masters: Vec<&str> = samples(&text)
        .into_iter()
        .filter(|l| l.starts_with("rolecall_master_info"))
        .collect();
    assert_eq!(
        masters,
        ["rolecall_master_info{group=\"main\",master=\"127.0.0.1:6381\"} 1"],
        "{text}"
    );
    s.groups[0].master = None;
    m.observe_check(&s);
    assert!(!m.encode(Format::Text).contains("rolecall_master_info{"));
}

#[test]
fn sentinel_events_and_haproxy_pushes_are_counted() {
    let m = Metrics::new();
    m.sentinel_event("main", "+switch-master");
    m.sentinel_event("main", "+switch-master");
    m.sentinel_event("main", "+sdown");
    m.haproxy_push("127.0.0.1:9999", None);
    m.haproxy_push("127.0.0.1:9999", Some("timeout"));
    let text = m.encode(Format::Text);
    let lines = samples(&text);
    for want in [
        "rolecall_sentinel_events_total{group=\"main\",kind=\"+switch-master\"} 2",
        "rolecall_sentinel_events_total{group=\"main\",kind=\"+sdown\"} 1",
        "rolecall_haproxy_pushes_total{api=\"127.0.0.1:9999\"} 2",
        "rolecall_haproxy_push_errors_total{api=\"127.0.0.1:9999\",reason=\"timeout\"} 1",
    ] {
        assert!(lines.contains(&want), "{want} in\n{text}");
    }
}

#[test]
fn the_fleet_guard_shows_its_state() {
    let m = Metrics::new();
    let mut s = snapshot();
    s.fleet = FleetStatus {
        guard: crate::snapshot::GuardState::Holding,
        members: Some(4),
        ..FleetStatus::default()
    };
    m.observe_check(&s);
    let text = m.encode(Format::Text);
    let lines = samples(&text);
    assert!(
        lines.contains(&"rolecall_fleet_guard{state=\"holding\"} 1"),
        "{text}"
    );
    assert!(lines.contains(&"rolecall_fleet_members 4"), "{text}");
}
