//! `/metrics` as Prometheus reads it, checked by the parsers Prometheus' own projects ship, on a
//! real rolecall watching a real topology:
//!
//! - with the `Accept` header Prometheus scrapes with, OpenMetrics 1.0.0 under its own content
//!   type, accepted by the strict OpenMetrics parser of Python's `prometheus_client`
//!   (`prometheus_client.openmetrics.parser`), with every metric of its type;
//! - without `Accept`, or with `*/*`, the Prometheus text format 0.0.4 under
//!   `text/plain; version=0.0.4`, accepted by `promtool check metrics` (parse and lint);
//! - Sentinel events, failed HAProxy pushes and the master after a failover show as they happen;
//! - the README's metric table lists every metric served, with its type.
//!
//! `tests/run.sh` installs both tools: `prometheus-client` from PyPI, and `promtool` taken out of
//! Debian's `prometheus` package. A missing tool fails the test with that hint; nothing is
//! skipped.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{DemoNode, HttpResponse, Rolecall, RolecallConfig, Topology, free_port, wait_for};

const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// From `SENTINEL FAILOVER` until every sentinel announced the new master and rolecall checked.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Prometheus 2.x's scrape `Accept` (Debian's Prometheus 2.42 sends exactly this).
const PROMETHEUS_2_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// Prometheus 3.x's default scrape `Accept`.
const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parses stdin with the strict OpenMetrics parser; prints `name type` per family.
const STRICT_PARSER: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(f.name, f.type)
";

/// A rolecall with a verdict on a node pinned to the master of a fresh topology.
fn watched() -> (Topology, DemoNode, Rolecall) {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .start();
    rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    (topology, node, rolecall)
}

fn scrape(rolecall: &Rolecall, method: &str, accept: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let r = rolecall
        .http_with(method, "/metrics", &headers)
        .unwrap_or_else(|e| panic!("{method} /metrics: {e}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("vary"), Some("accept"), "{r:?}");
    r
}

/// Runs `program` with `input` on stdin; its exit status, stdout and stderr. Panics with `hint`
/// when the program cannot be started.
fn run_with_input(program: &mut Command, input: &str, hint: &str) -> (bool, String, String) {
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program:?}: {e}; {hint}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The families of an OpenMetrics body as the strict parser reads them: `(name, type)`.
fn strict_openmetrics(body: &str) -> Vec<(String, String)> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let installed = Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "{python} has no prometheus_client: run tests/run.sh, or \
         `python3 -m pip install prometheus-client` (add --break-system-packages on Debian)"
    );
    let (ok, out, err) = run_with_input(
        Command::new(&python).args(["-c", STRICT_PARSER]),
        body,
        "python3 is needed",
    );
    assert!(
        ok,
        "the strict OpenMetrics parser refused the body: {err}\n{body}"
    );
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// `promtool check metrics` on a text-format body: passes only with no parse error and no lint
/// problem.
fn promtool_check(body: &str) {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let hint = "promtool not found: run tests/run.sh (it takes promtool out of Debian's \
                prometheus package into /usr/local/bin), or set PROMTOOL_BIN";
    let (ok, out, err) = run_with_input(
        Command::new(&promtool).args(["check", "metrics"]),
        body,
        hint,
    );
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}{err}\n{body}"
    );
}

/// The `# TYPE name type` lines of a text-format body.
fn text_types(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn has(families: &[(String, String)], name: &str, kind: &str) -> bool {
    families.iter().any(|(n, t)| n == name && t == kind)
}

#[test]
fn a_prometheus_scrape_gets_openmetrics_that_a_strict_parser_reads_with_its_types() {
    let (topology, _node, rolecall) = watched();
    for accept in [PROMETHEUS_2_ACCEPT, PROMETHEUS_3_ACCEPT] {
        let r = scrape(&rolecall, "GET", Some(accept));
        assert_eq!(
            r.header("content-type"),
            Some(OPENMETRICS),
            "{accept}: {r:?}"
        );
        let families = strict_openmetrics(&r.body);
        for (name, kind) in [
            ("rolecall_checks", "counter"),
            ("rolecall_verdict_changes", "counter"),
            ("rolecall_frozen_seconds", "counter"),
            ("rolecall_check_errors", "counter"),
            ("process_cpu_seconds", "counter"),
            ("rolecall_check_duration_seconds", "histogram"),
            ("rolecall_verdict", "gauge"),
            ("rolecall_group_verdict", "gauge"),
            ("rolecall_build_info", "gauge"),
            ("rolecall_master_info", "gauge"),
            ("rolecall_last_check_timestamp_seconds", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert!(has(&families, name, kind), "{name} {kind} in {families:?}");
        }
    }
    let body = scrape(&rolecall, "GET", Some(PROMETHEUS_2_ACCEPT)).body;
    let master = format!("master=\"{}\"", topology.master_addr());
    assert!(
        body.lines()
            .any(|l| l.starts_with("rolecall_master_info{") && l.contains(&master)),
        "{master} in\n{body}"
    );
    let head = scrape(&rolecall, "HEAD", Some(PROMETHEUS_2_ACCEPT));
    assert_eq!(head.header("content-type"), Some(OPENMETRICS), "{head:?}");
}

#[test]
fn a_scrape_that_does_not_ask_for_openmetrics_gets_the_text_format_promtool_accepts() {
    let (_topology, _node, rolecall) = watched();
    for accept in [
        None,
        Some("*/*"),
        Some("text/plain;version=0.0.4;q=0.6,*/*;q=0.5"),
    ] {
        let r = scrape(&rolecall, "GET", accept);
        assert_eq!(r.header("content-type"), Some(TEXT), "{accept:?}: {r:?}");
        assert!(!r.body.contains("# EOF"), "{}", r.body);
        promtool_check(&r.body);
        let types = text_types(&r.body);
        for (name, kind) in [
            ("rolecall_checks_total", "counter"),
            ("rolecall_frozen_seconds_total", "counter"),
            ("process_cpu_seconds_total", "counter"),
            ("rolecall_check_duration_seconds", "histogram"),
            ("rolecall_build_info", "gauge"),
        ] {
            assert!(has(&types, name, kind), "{name} {kind} in {types:?}");
        }
    }
    let head = scrape(&rolecall, "HEAD", None);
    assert_eq!(head.header("content-type"), Some(TEXT), "{head:?}");
}

#[test]
fn the_readme_lists_every_metric_served_with_its_type() {
    let (_topology, _node, rolecall) = watched();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    // Rows of the metric table: | `name{labels}` | type | labels | meaning |
    let listed: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let kind = rest.split('|').nth(1)?.trim();
            let name = name.split('{').next()?;
            Some((name.to_string(), kind.to_string()))
        })
        .filter(|(n, _)| n.starts_with("rolecall_") || n.starts_with("process_"))
        .collect();
    let body = scrape(&rolecall, "GET", None).body;
    for (name, kind) in text_types(&body) {
        assert!(
            has(&listed, &name, &kind),
            "README.md's metric table does not list `{name}` ({kind}); it lists {listed:?}"
        );
    }
}

/// The sample line of `/metrics` (text format) that starts with `prefix`, once there is one.
fn wait_for_sample(rolecall: &Rolecall, prefix: &str, timeout: Duration) -> String {
    wait_for(timeout, prefix, || {
        let body = rolecall.http_get("/metrics").1;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    })
}

#[test]
fn sentinel_events_failed_pushes_and_the_new_master_show_as_they_happen() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let api = format!("127.0.0.1:{}", free_port());
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .extra(&format!(
            "[maintenance]\nfile = \"{{dir}}/maintenance\"\n\n[haproxy]\nruntime_api = [\"{api}\"]\nservers = [\"be/node1\"]\ntimeout = \"500ms\"\n"
        ))
        .start();
    let status = rolecall.wait_for_verdict("ok", VERDICT_TIMEOUT);
    let group = status["groups"][0]["name"].as_str().unwrap().to_string();

    // Maintenance on: rolecall pushes `maint` to an HAProxy that is not there.
    std::fs::write(rolecall.dir().join("maintenance"), "").unwrap();
    let failed = format!("rolecall_haproxy_push_errors_total{{api=\"{api}\",reason=\"io\"}} ");
    wait_for_sample(&rolecall, &failed, VERDICT_TIMEOUT);
    let pushes = format!("rolecall_haproxy_pushes_total{{api=\"{api}\"}} ");
    wait_for_sample(&rolecall, &pushes, VERDICT_TIMEOUT);

    let (old, new) = topology.failover();
    let switch =
        format!("rolecall_sentinel_events_total{{group=\"{group}\",kind=\"+switch-master\"}} ");
    wait_for_sample(&rolecall, &switch, FAILOVER_TIMEOUT);
    let master = format!("rolecall_master_info{{group=\"{group}\",master=\"{new}\"}} 1");
    wait_for_sample(&rolecall, &master, FAILOVER_TIMEOUT);
    let body = rolecall.http_get("/metrics").1;
    assert!(
        !body.contains(&format!("master=\"{old}\"")),
        "only the new master {new} is shown, not {old}:\n{body}"
    );
}
