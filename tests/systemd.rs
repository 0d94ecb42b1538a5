//! The shipped unit stays hardened (TESTING.md row 36): `systemd-analyze security` rates its
//! exposure at most 2.5 of 10 (it is 2.0 today), so a change that loosens it fails here.

use std::process::Command;

#[test]
fn the_shipped_unit_passes_systemd_analyze_security() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/rolecall.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25", unit])
        .output()
        .expect("systemd-analyze not found: install it with `apt-get install -y systemd`");
    assert!(
        out.status.success(),
        "exposure above 2.5:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Overall exposure level for rolecall.service"),
        "{text}"
    );
}

/// `systemctl reload` sends SIGHUP (README "Reload"), and the unit leaves stderr on the journal
/// with `SyslogLevelPrefix=` on (their defaults), so rolecall's `auto` log lines carry their
/// priorities into `journalctl -p` (README "Logs").
#[test]
fn the_shipped_unit_reloads_with_sighup_and_logs_to_the_journal_with_priorities() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/rolecall.service"
    ))
    .expect("the shipped unit");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(get("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    assert!(
        matches!(get("SyslogLevelPrefix"), None | Some("yes" | "true" | "on")),
        "{unit}"
    );
    assert!(
        matches!(get("StandardError"), None | Some("journal" | "inherit")),
        "{unit}"
    );
}
