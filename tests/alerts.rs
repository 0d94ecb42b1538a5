//! The shipped alert rules and dashboard (README "Alerts and dashboard"):
//!
//! - `deploy/prometheus/rolecall-rules.yml` passes `promtool check rules`, and its unit tests,
//!   `rolecall-rules.test.yml`, pass `promtool test rules`; every alert has a case where it
//!   fires and one where it stays quiet;
//! - every query of `deploy/grafana/rolecall.json` (and of its variables) is PromQL that
//!   `promtool check rules` accepts, once Grafana's own variables are replaced;
//! - the rules and the dashboard name only metrics rolecall exports, and only labels those
//!   metrics carry: the README's metric table, which `tests/metrics.rs` checks against a running
//!   rolecall.
//!
//! promtool comes from Debian's prometheus package and PyYAML (to read the YAML) with
//! kubernetes-validate; `tests/run.sh` installs both. A missing tool fails the test with how to
//! install it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(CRATE).join(rel)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{promtool}: {e}; run tests/run.sh (it takes promtool out of Debian's prometheus \
                 package into /usr/local/bin), or set PROMTOOL_BIN"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// A YAML file as JSON, read by PyYAML.
fn yaml(file: &Path) -> Value {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}; python3 is needed"));
    assert!(
        out.status.success(),
        "{python} could not read {}: {} (PyYAML: run tests/run.sh, or `apt-get install \
         python3-yaml`)",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The README's metric table: each metric with its type and labels.
fn exported() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(path("README.md")).expect("README.md");
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let mut cells = rest.split('|').skip(1);
            let kind = cells.next()?.trim().to_string();
            let labels = cells
                .next()?
                .split(',')
                .map(|c| c.trim().trim_matches('`').to_string())
                .filter(|c| !c.is_empty())
                .collect();
            Some((name.to_string(), (kind, labels)))
        })
        .filter(|(n, _)| n.starts_with("rolecall_") || n.starts_with("process_"))
        .collect()
}

/// Keywords and modifiers of PromQL that look like names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names in a PromQL expression, each with the label names its matchers use.
///
/// A name followed by `(` is a function or an aggregation; the lists after `by`, `on`… are
/// label names; a quoted string and a range `[...]` are skipped.
fn metrics_in(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let next_non_space = |from: usize| chars[from..].iter().find(|c| !c.is_whitespace()).copied();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .map_or(chars.len(), |p| i + p + 1);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            let rest: String = chars[i..].iter().collect();
            let modifier =
                rest.trim_start().starts_with("by") || rest.trim_start().starts_with("without");
            if KEYWORDS.contains(&word.as_str()) {
                if after == Some('(') {
                    i = chars[i..]
                        .iter()
                        .position(|&c| c == ')')
                        .map_or(chars.len(), |p| i + p + 1);
                }
            } else if after != Some('(') && !modifier {
                // Not a function, nor an aggregation written `sum by (…) (…)`.
                let (labels, end) = matchers(&chars, i);
                found.push((word, labels));
                i = end;
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The index after the string that starts at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// The label names of the matchers `{...}` that follow a metric name at `i` (if any), and the
/// index after them.
fn matchers(chars: &[char], i: usize) -> (BTreeSet<String>, usize) {
    let mut j = i;
    while j < chars.len() && chars[j].is_whitespace() {
        j += 1;
    }
    let mut labels = BTreeSet::new();
    if chars.get(j) != Some(&'{') {
        return (labels, i);
    }
    j += 1;
    let mut name = String::new();
    while j < chars.len() && chars[j] != '}' {
        let c = chars[j];
        if c == '"' || c == '\'' {
            j = skip_string(chars, j);
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else if !name.is_empty() {
            labels.insert(std::mem::take(&mut name));
        }
        j += 1;
    }
    (labels, j + 1)
}

/// Fails unless every metric `expr` names is exported, with labels it carries.
fn check_names(origin: &str, expr: &str, exported: &BTreeMap<String, (String, BTreeSet<String>)>) {
    let metrics = metrics_in(expr);
    assert!(!metrics.is_empty(), "{origin}: no metric in {expr}");
    for (name, labels) in metrics {
        let histogram_part = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| exported.get(*base).is_some_and(|(k, _)| k == "histogram"));
        let (kind, carried) = exported
            .get(histogram_part.unwrap_or(&name))
            .unwrap_or_else(|| {
                panic!("{origin}: `{name}` is not a metric rolecall exports (README's metric table): {expr}")
            });
        for label in &labels {
            let scrape = ["instance", "job"].contains(&label.as_str());
            let le = label == "le" && kind == "histogram";
            assert!(
                scrape || le || carried.contains(label),
                "{origin}: `{name}` has no label `{label}` (it has {carried:?}): {expr}"
            );
        }
    }
}

/// The alerts of the rules file: name → expression.
fn alerts() -> BTreeMap<String, String> {
    let rules = yaml(&path("deploy/prometheus/rolecall-rules.yml"));
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            (
                r["alert"].as_str().expect("only alerts").to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = path("deploy/prometheus");
    let checked = promtool(&["check", "rules", "rolecall-rules.yml"], &dir);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "rolecall-rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let alerts = alerts();
    let expected: BTreeSet<&str> = [
        "RolecallNodeOutOfRotation",
        "RolecallBlind",
        "RolecallFleetMostlyOut",
        "RolecallRepairRefused",
        "RolecallSentinelDisagreement",
        "RolecallMasterDegraded",
        "RolecallChecksStalled",
    ]
    .into();
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    let tests = yaml(&path("deploy/prometheus/rolecall-rules.test.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for t in case["alert_rule_test"].as_array().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_string();
            assert!(
                alerts.contains_key(&name),
                "a test of an unknown alert {name}"
            );
            let exp = t["exp_alerts"].as_array().map_or(0, Vec::len);
            if exp > 0 { &mut firing } else { &mut quiet }.insert(name);
        }
    }
    for name in alerts.keys() {
        assert!(firing.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }
}

#[test]
fn the_alert_rules_name_only_metrics_rolecall_exports() {
    let exported = exported();
    assert!(exported.len() > 20, "README's metric table: {exported:?}");
    for (name, expr) in alerts() {
        check_names(&name, &expr, &exported);
    }
}

/// Every query of the dashboard, with where it is: panel targets and variable queries
/// (`label_values(SELECTOR, label)` gives its selector).
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path("deploy/grafana/rolecall.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let title = p["title"].as_str().unwrap_or("?");
                out.push((
                    format!("panel {title:?}"),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dashboard["panels"], &mut queries);
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let selector = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(s, _)| s.to_string())
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
        queries.push((format!("variable {}", v["name"]), selector));
    }
    queries
}

/// Grafana's own interval variables, replaced by a duration; the dashboard's variables
/// (`$job`, `$instance`) appear only inside label matchers' strings, where they are text.
fn as_promql(query: &str) -> String {
    ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(query.to_string(), |q, v| q.replace(v, "5m"))
}

#[test]
fn every_dashboard_query_is_promql_over_metrics_rolecall_exports() {
    let queries = dashboard_queries();
    assert!(queries.len() > 20, "{queries:?}");
    let exported = exported();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (origin, query)) in queries.iter().enumerate() {
        let promql = as_promql(query);
        assert!(
            !promql
                .replace("\"$job\"", "")
                .replace("\"$instance\"", "")
                .contains('$'),
            "{origin}: a variable outside a label matcher: {query}"
        );
        check_names(origin, &promql, &exported);
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), &rules).unwrap();
    let checked = promtool(&["check", "rules", "dashboard.yml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}\n{rules}"
    );
}

/// The name check itself: it finds metric names and their matchers' labels, and nothing else.
#[test]
fn the_name_check_finds_metrics_and_labels_and_skips_functions_keywords_and_strings() {
    let found = metrics_in(
        r#"sum by (job) (rate(rolecall_checks_total{job=~"a|b", instance="x"}[5m])) / on (job) group_left count(up) > 0.5 unless process_open_fds"#,
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rolecall_checks_total", "up", "process_open_fds"]);
    assert_eq!(
        found[0].1,
        BTreeSet::from(["job".to_string(), "instance".to_string()])
    );
    let exported = exported();
    let unknown = std::panic::catch_unwind(|| check_names("t", "rolecall_nope == 1", &exported));
    assert!(unknown.is_err());
    let wrong_label = std::panic::catch_unwind(|| {
        check_names("t", r#"rolecall_in_rotation{group="a"}"#, &exported)
    });
    assert!(wrong_label.is_err());
    check_names(
        "t",
        r#"rolecall_group_verdict{group="a", verdict="ok"}"#,
        &exported,
    );
}
