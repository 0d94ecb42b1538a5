//! The command line and the logs, with the real binary: `--version` names the commit, the
//! configuration file comes from `--config`, `ROLECALL_CONFIG` or `/etc/rolecall/rolecall.toml`,
//! `config show` hides secrets; the log formats as journald, a terminal or a log shipper gets
//! them; and SIGHUP, which reloads what may change (the log level, the thresholds) without
//! resetting any state, and keeps running on the old configuration when the file is bad.
//!
//! Most need no Redis: the node is a pid that does not exist (`node_missing`, out of rotation:
//! a warning), and the sentinel a port nobody listens on. Moving to new sentinels on SIGHUP
//! runs against a real topology.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::{
    DemoNode, Rolecall, RolecallConfig, Topology, free_port, run_rolecall, run_rolecall_env,
    wait_for,
};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// From start, or from a reload, to what the test waits for: a few checks of 250 ms, generous
/// for a loaded two-core machine.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);
/// A pid above any default `pid_max` (4194304 on 64-bit Linux): never a running process.
const NO_SUCH_PID: u32 = 4_194_303;

/// A rolecall watching a node that does not run: it logs `rolecall started` (info), then
/// `verdict changed` to `unknown` (no complete check yet) and to `node_missing` (warnings), with
/// no Redis anywhere.
fn missing_node() -> RolecallConfig {
    let sentinel = SocketAddr::from(([127, 0, 0, 1], free_port()));
    RolecallConfig::new()
        .pid(NO_SUCH_PID)
        .redis_group("main", "mymaster", &[sentinel])
}

/// The stderr lines of `r`, once `pred` holds for one of them.
fn wait_for_line(r: &Rolecall, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
    wait_for(LOG_TIMEOUT, what, || {
        let lines: Vec<String> = r.stderr().lines().map(str::to_owned).collect();
        lines.iter().any(|l| pred(l)).then_some(lines)
    })
}

/// A line that carries a date-time like `2026-11-30T11:48:28.123456Z`.
fn has_timestamp(line: &str) -> bool {
    line.split(|c: char| c.is_whitespace() || c == '"')
        .any(|w| {
            let b = w.as_bytes();
            b.len() >= 19 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
        })
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes `config` to `dir/name`, with free ports for its listeners.
fn write_config(dir: &Path, name: &str, config: RolecallConfig) -> std::path::PathBuf {
    let text = config
        .to_toml()
        .replace("{agent}", &format!("127.0.0.1:{}", free_port()))
        .replace("{http}", &format!("127.0.0.1:{}", free_port()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Replaces `old` by `new` in the running rolecall's configuration file.
fn edit_config(r: &Rolecall, old: &str, new: &str) {
    let text = std::fs::read_to_string(r.config_path()).unwrap();
    assert!(text.contains(old), "{old:?} not in:\n{text}");
    std::fs::write(r.config_path(), text.replacen(old, new, 1)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = run_rolecall(&["--version"], COMMAND_TIMEOUT);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let revision = line
        .trim()
        .strip_prefix(concat!("rolecall ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `rolecall VERSION (COMMIT)`: {line:?}"));
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(g) if g.status.success() => {
            assert_eq!(revision, String::from_utf8_lossy(&g.stdout).trim())
        }
        _ => assert_eq!(revision, "unknown"),
    }
}

#[test]
fn the_config_file_comes_from_rolecall_config_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "from-env.toml", missing_node());
    let path = path.to_str().unwrap();
    let out = run_rolecall_env(
        &["config", "check"],
        &[("ROLECALL_CONFIG", path)],
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{path}: ok")),
        "{}",
        stdout(&out)
    );

    // --config wins over the variable; without either, the default path is named.
    let out = run_rolecall_env(
        &["config", "check", "--config", "/nonexistent/given.toml"],
        &[("ROLECALL_CONFIG", path)],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("/nonexistent/given.toml"),
        "{}",
        stderr(&out)
    );
    let out = run_rolecall(&["config", "check"], COMMAND_TIMEOUT);
    if !Path::new("/etc/rolecall/rolecall.toml").exists() {
        assert_eq!(out.status.code(), Some(64));
        assert!(
            stderr(&out).contains("/etc/rolecall/rolecall.toml"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn config_show_prints_the_effective_configuration_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("redis.password");
    write_private(&password, "correct-horse-battery-staple\n");
    let config = missing_node().redis_group_toml(&format!(
        "name = \"second\"\nmaster_name = \"other\"\nsentinels = [\"127.0.0.1:1\"]\n\
         password_file = {:?}\n",
        password
    ));
    let path = write_config(dir.path(), "rolecall.toml", config);
    let out = run_rolecall(
        &["config", "show", "--config", path.to_str().unwrap()],
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        !shown.contains("correct-horse"),
        "the password leaked:\n{shown}"
    );
    assert!(shown.contains("password = \"<redacted>\""), "{shown}");
    // Defaults applied: the file says nothing of rise, fall or the grace periods.
    let table: toml::Table = toml::from_str(&shown).expect("config show prints TOML");
    assert_eq!(table["check"]["rise"].as_integer(), Some(2), "{shown}");
    assert_eq!(
        table["check"]["interval"].as_str(),
        Some("250ms"),
        "{shown}"
    );
    assert_eq!(
        table["node"]["pid"].as_integer(),
        Some(i64::from(NO_SUCH_PID))
    );
}

// ---------------------------------------------------------------------------------------------
// The logs

#[test]
fn under_journald_every_line_carries_its_priority_and_no_timestamp() {
    // JOURNAL_STREAM names rolecall's stderr, as systemd sets it.
    let r = missing_node()
        .env("JOURNAL_STREAM", "{journal_stream}")
        .start();
    assert_journal_lines(&r);
}

#[test]
fn log_format_journal_prefixes_the_lines_wherever_stderr_goes() {
    let r = missing_node().env("ROLECALL_LOG_FORMAT", "journal").start();
    assert_journal_lines(&r);
}

/// Waits for the warning about the missing node; then every line so far has a priority prefix
/// and no timestamp, and `rolecall started` is info.
fn assert_journal_lines(r: &Rolecall) {
    let lines = wait_for_line(r, "a warning about the missing node", |l| {
        l.starts_with("<4>") && l.contains("node_missing")
    });
    let priority = |l: &str| l.get(..3).map(str::to_owned);
    for line in &lines {
        assert!(
            matches!(
                priority(line).as_deref(),
                Some("<3>" | "<4>" | "<6>" | "<7>")
            ),
            "a line without a priority prefix: {line:?}\n{lines:#?}"
        );
        assert!(
            !has_timestamp(line),
            "journald stamps lines itself: {line:?}"
        );
    }
    let started = lines.iter().find(|l| l.contains("rolecall started"));
    assert_eq!(
        started.and_then(|l| priority(l)).as_deref(),
        Some("<6>"),
        "{lines:#?}"
    );
}

#[test]
fn a_journal_stream_that_is_not_stderr_gets_plain_lines() {
    // A child of a service inherits JOURNAL_STREAM with its stderr elsewhere (here a file).
    let r = missing_node().env("JOURNAL_STREAM", "8:1234").start();
    let lines = wait_for_line(&r, "the node_missing line", |l| l.contains("node_missing"));
    for line in lines.iter().filter(|l| !l.is_empty()) {
        assert!(!line.starts_with('<'), "{line:?}");
        assert!(
            has_timestamp(line),
            "plain lines have a timestamp: {line:?}"
        );
    }
}

#[test]
fn json_lines_hold_the_verdict_and_reason_as_fields() {
    let r = missing_node().env("ROLECALL_LOG_FORMAT", "json").start();
    let lines = wait_for_line(&r, "the node_missing line", |l| l.contains("node_missing"));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let change = events
        .iter()
        .find(|e| e["message"] == "verdict changed" && e["verdict"] == "node_missing")
        .expect("the change to node_missing");
    assert_eq!(change["level"], "WARN");
    assert_eq!(change["in_rotation"], false);
    assert!(change["reason"].as_str().is_some_and(|r| !r.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// SIGHUP

#[test]
fn sighup_raises_the_log_level_without_resetting_the_checks() {
    let mut r = missing_node().start();
    r.wait_for_verdict("node_missing", LOG_TIMEOUT);
    assert!(!r.stderr().contains("check complete"), "debug before asked");
    let before = r.status();
    let text = std::fs::read_to_string(r.config_path()).unwrap();
    std::fs::write(r.config_path(), text + "\n[log]\nlevel = \"debug\"\n").unwrap();
    r.reload();
    wait_for(LOG_TIMEOUT, "a few debug lines after SIGHUP", || {
        (r.stderr().matches("check complete").count() >= 3).then_some(())
    });
    let after = r.status();
    assert!(
        after["checks"].as_u64() > before["checks"].as_u64(),
        "the check count went on: {before} then {after}"
    );
    // A verdict started again would go through `unknown` and log a second change.
    assert_eq!(after["verdict"], "node_missing");
    let log = r.stderr();
    assert_eq!(log.matches("verdict changed").count(), 2, "{log}");
    assert!(r.is_running());
}

#[test]
fn sighup_applies_a_new_threshold_and_names_what_needs_a_restart() {
    // fall = 1000: node_missing is observed but never confirmed.
    let mut r = missing_node().check("fall", "1000").start();
    wait_for(LOG_TIMEOUT, "a few checks", || {
        (r.status()["checks"].as_u64()? >= 3).then_some(())
    });
    assert_eq!(
        r.status()["verdict"],
        "unknown",
        "not out before the threshold"
    );
    edit_config(&r, "fall = 1000", "fall = 2");
    edit_config(&r, "timeout = \"200ms\"", "timeout = \"150ms\"");
    r.reload();
    r.wait_for_verdict("node_missing", LOG_TIMEOUT);
    let lines = wait_for_line(&r, "the reload lines", |l| {
        l.contains("configuration reloaded")
    });
    let refused = lines.iter().find(|l| l.contains("need a restart"));
    assert!(
        refused.is_some_and(|l| l.contains("check.timeout") && l.contains("WARN")),
        "{lines:#?}"
    );
    let reloaded = lines.iter().find(|l| l.contains("configuration reloaded"));
    assert!(
        reloaded.is_some_and(|l| l.contains("check.fall")),
        "{lines:#?}"
    );
}

#[test]
fn sighup_with_a_bad_file_keeps_running_on_the_old_configuration() {
    let mut r = missing_node().check("fall", "1000").start();
    edit_config(&r, "fall = 1000", "fall = 2\nfal = 3");
    r.reload();
    let lines = wait_for_line(&r, "the refused reload", |l| l.contains("reload refused"));
    let refused = lines.iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("ERROR") && refused.contains("fal"),
        "{refused}"
    );
    let checks = r.status()["checks"].as_u64().unwrap();
    wait_for(LOG_TIMEOUT, "more checks after the bad reload", || {
        (r.status()["checks"].as_u64()? > checks + 3).then_some(())
    });
    assert!(r.is_running());
    let status = r.status();
    assert_eq!(
        status["verdict"], "unknown",
        "fall = 2 was not applied: {status}"
    );
    assert_eq!(r.http_get("/livez").0, 200);
}

/// `"a", "b"`: addresses as the harness writes them in `sentinels = [...]`.
fn toml_list(addrs: &[SocketAddr]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    quoted.join(", ")
}

#[test]
fn sighup_moves_the_checks_and_the_event_subscriptions_to_new_sentinels() {
    let topology = Topology::start(1, 3);
    let node = DemoNode::pin(topology.master_addr());
    let dead: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let mut r = RolecallConfig::new()
        .pid(node.pid())
        .redis_group("main", topology.master_name(), &dead)
        .start()
        .dump_topology(&topology);
    wait_for(LOG_TIMEOUT, "a few checks on the dead sentinels", || {
        (r.status()["checks"].as_u64()? >= 3).then_some(())
    });
    assert_eq!(r.status()["verdict"], "unknown");

    let live = topology.sentinel_addrs();
    edit_config(&r, &toml_list(&dead), &toml_list(&live));
    let text = std::fs::read_to_string(r.config_path()).unwrap();
    std::fs::write(r.config_path(), text + "\n[log]\nlevel = \"debug\"\n").unwrap();
    r.reload();
    r.wait_for_verdict("ok", LOG_TIMEOUT);
    let lines = wait_for_line(&r, "a subscription to a new sentinel", |l| {
        l.contains("subscribed to sentinel events") && l.contains(&live[0].to_string())
    });
    assert!(
        lines.iter().any(|l| l.contains("sentinels changed")),
        "{lines:#?}"
    );
    let reloaded = lines.iter().find(|l| l.contains("configuration reloaded"));
    assert!(
        reloaded.is_some_and(|l| l.contains("redis.main.sentinels")),
        "{lines:#?}"
    );
}

#[test]
fn sighup_configures_a_maintenance_flag_file_that_is_then_watched() {
    let mut r = missing_node().start();
    let flag = r.dir().join("maintenance");
    std::fs::write(&flag, "").unwrap();
    let before = r.status();
    assert_eq!(before["maintenance"]["on"], false, "{before}");
    let text = std::fs::read_to_string(r.config_path()).unwrap();
    let section = format!("\n[maintenance]\nfile = {:?}\n", flag);
    std::fs::write(r.config_path(), text + &section).unwrap();
    r.reload();
    let status = wait_for(LOG_TIMEOUT, "maintenance by the new file", || {
        let s = r.status();
        (s["maintenance"]["on"] == true).then_some(s)
    });
    assert_eq!(status["maintenance"]["by_file"], true, "{status}");
    std::fs::remove_file(&flag).unwrap();
    wait_for(LOG_TIMEOUT, "maintenance off once the file is gone", || {
        (r.status()["maintenance"]["on"] == false).then_some(())
    });
    assert!(r.is_running());
}
