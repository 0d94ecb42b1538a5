//! What SIGHUP may change while rolecall runs, decided as a pure function of the running and
//! the newly read configuration.
//!
//! The reloadable keys are those whose change keeps every piece of state (rise/fall counters,
//! grace periods and holds, pools, what rolecall holds in HAProxy), because the check loop
//! reads them afresh at every check: `[log] level`; in `[check]` `interval`, `fast_interval`,
//! `rise`, `fall`, `unknown_hold`, `disconnected_grace`, `stale_master_grace`, `write_probe`
//! and `probe_ttl`; each `[[redis]]` group's `sentinels` (when the groups are the same ones,
//! by name and order); `[maintenance]` (`file`, `token_file`); and `[repair]` but its fence
//! (`fence_old_master`, `fence_lease`). Any other change (listeners, `check.timeout`,
//! passwords, …) is refused by name and keeps running as it started: it needs a restart.

use toml::{Table, Value};

use super::{Config, RepairConfig};

/// What a reload does with a new configuration.
#[derive(Debug)]
pub struct Reload {
    /// The configuration to run on: the running one with the reloadable keys of the new one.
    pub config: Config,
    /// The reloadable keys that changed (`check.rise`, `log.level`, `redis.main.sentinels`).
    pub applied: Vec<String>,
    /// The keys that changed and need a restart; they keep their running values.
    pub refused: Vec<String>,
}

/// Takes the reloadable keys of `new` into a copy of `running`.
pub fn reload(running: &Config, new: &Config) -> Reload {
    let mut config = running.clone();
    config.log = new.log.clone();
    let (c, n) = (&mut config.check, &new.check);
    c.interval = n.interval;
    c.fast_interval = n.fast_interval;
    c.policy.rise = n.policy.rise;
    c.policy.fall = n.policy.fall;
    c.policy.unknown_hold = n.policy.unknown_hold;
    c.policy.disconnected_grace = n.policy.disconnected_grace;
    c.policy.stale_master_grace = n.policy.stale_master_grace;
    c.write_probe = n.write_probe;
    c.probe_ttl = n.probe_ttl;
    // The fence's candidates and pauses are kept across checks on the terms they began with.
    config.repair = RepairConfig {
        fence_old_master: running.repair.fence_old_master,
        fence_lease: running.repair.fence_lease,
        ..new.repair.clone()
    };
    config.maintenance = new.maintenance.clone();
    let same_groups = running.groups.len() == new.groups.len()
        && running
            .groups
            .iter()
            .zip(&new.groups)
            .all(|(a, b)| a.name == b.name);
    if same_groups {
        for (g, n) in config.groups.iter_mut().zip(&new.groups) {
            g.sentinels = n.sentinels.clone();
        }
    }
    let mut applied = changed_keys(&running.tables(), &config.tables(), "");
    applied.extend(changed_secrets(running, &config));
    let mut refused = changed_keys(&config.tables(), &new.tables(), "");
    refused.extend(changed_secrets(&config, new));
    Reload {
        config,
        applied,
        refused,
    }
}

/// The dotted names of the keys whose values differ (`check.rise`, `redis.main.sentinels`).
fn changed_keys(old: &Table, new: &Table, prefix: &str) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changed = Vec::new();
    for key in keys {
        let name = format!("{prefix}{key}");
        match (old.get(key), new.get(key)) {
            (Some(Value::Table(a)), Some(Value::Table(b))) => {
                changed.extend(changed_keys(a, b, &format!("{name}.")));
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) if key == "redis" => {
                changed.extend(changed_groups(a, b, &name));
            }
            (a, b) if a != b => changed.push(name),
            _ => {}
        }
    }
    changed
}

/// `[[redis]]` tables, compared group by group when the groups are the same ones.
fn changed_groups(old: &[Value], new: &[Value], name: &str) -> Vec<String> {
    let names = |groups: &[Value]| -> Vec<Option<String>> {
        groups
            .iter()
            .map(|g| g.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    if names(old) != names(new) {
        return vec![format!("{name} (groups added, removed or renamed)")];
    }
    old.iter()
        .zip(new)
        .filter_map(|(a, b)| Some((a.as_table()?, b.as_table()?)))
        .flat_map(|(a, b)| {
            let group = a.get("name").and_then(Value::as_str).unwrap_or("?");
            changed_keys(a, b, &format!("{name}.{group}."))
        })
        .collect()
}

/// Secrets show as `<redacted>` in the tables: a new value of one is a change they miss.
fn changed_secrets(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    for (a, b) in old.groups.iter().zip(&new.groups) {
        if a.name == b.name && a.password != b.password {
            changed.push(format!("redis.{}.password", a.name));
        }
        if a.name == b.name && a.sentinel_password != b.sentinel_password {
            changed.push(format!("redis.{}.sentinel_password", a.name));
        }
    }
    if old.maintenance.token != new.maintenance.token {
        changed.push("maintenance.token".into());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::DESIGN_EXAMPLE;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).unwrap()
    }

    #[test]
    fn thresholds_and_the_log_level_are_applied() {
        let running = config(DESIGN_EXAMPLE);
        let text = DESIGN_EXAMPLE.replace(
            "timeout = \"300ms\"\n",
            "timeout = \"300ms\"\nrise = 5\nfall = 4\ninterval = \"2s\"\n",
        ) + "\n[log]\nlevel = \"debug\"\n";
        let text = text.replacen("interval = \"1s\"\n", "", 1);
        let r = reload(&running, &config(&text));
        assert_eq!(r.config.check.policy.rise, 5);
        assert_eq!(r.config.check.policy.fall, 4);
        assert_eq!(r.config.check.interval.as_secs(), 2);
        assert_eq!(r.config.log.level.as_deref(), Some("debug"));
        assert_eq!(
            r.applied,
            ["check.fall", "check.interval", "check.rise", "log.level"]
        );
        assert!(r.refused.is_empty(), "{:?}", r.refused);
    }

    #[test]
    fn other_changes_are_refused_by_name_and_keep_their_running_values() {
        let running = config(DESIGN_EXAMPLE);
        let text = DESIGN_EXAMPLE
            .replace("master_name = \"mymaster\"", "master_name = \"other\"")
            .replace("timeout = \"300ms\"", "timeout = \"200ms\"")
            .replace("0.0.0.0:7070", "0.0.0.0:7072");
        let r = reload(&running, &config(&text));
        assert_eq!(
            r.refused,
            [
                "agent.listen",
                "check.timeout",
                "fleet.name",
                "redis.main.master_name"
            ]
        );
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert_eq!(r.config.groups[0].master_name, "mymaster");
        assert_eq!(r.config.check.timeout.as_millis(), 300);
    }

    #[test]
    fn new_sentinels_are_applied_to_the_same_groups_only() {
        let running = config(DESIGN_EXAMPLE);
        let moved = DESIGN_EXAMPLE.replace("\"10.0.0.3:26379\"", "\"10.0.0.4:26379\"");
        let r = reload(&running, &config(&moved));
        assert_eq!(r.applied, ["redis.main.sentinels"]);
        assert!(r.refused.is_empty(), "{:?}", r.refused);
        assert_eq!(r.config.groups[0].sentinels[2], "10.0.0.4:26379");

        let renamed = moved.replace("name = \"main\"", "name = \"primary\"");
        let r = reload(&running, &config(&renamed));
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert_eq!(r.refused, ["redis (groups added, removed or renamed)"]);
        assert_eq!(r.config.groups[0].sentinels[2], "10.0.0.3:26379");
    }

    #[test]
    fn the_maintenance_and_repair_settings_are_applied() {
        let running = config(DESIGN_EXAMPLE);
        let text = format!(
            "{DESIGN_EXAMPLE}\n[maintenance]\nfile = \"/run/rolecall/maint\"\n\
             \n[repair]\nkill_stale_connections = true\n"
        );
        let r = reload(&running, &config(&text));
        assert_eq!(
            r.applied,
            [
                "maintenance.file",
                "repair.kill_stale_connections",
                "repair.pause_writes_on_failover"
            ]
        );
        assert!(r.config.repair.kill_stale_connections);
        // The fence follows kill_stale_connections by default, and needs a restart.
        assert_eq!(r.refused, ["repair.fence_old_master"]);
        assert!(!r.config.repair.fence_old_master);
        assert_eq!(
            r.config.maintenance.file.as_deref(),
            Some(std::path::Path::new("/run/rolecall/maint"))
        );
    }

    #[test]
    fn a_new_password_is_refused_by_name_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        let with_password = |secret: &str| {
            std::fs::write(&file, secret).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            config(&DESIGN_EXAMPLE.replace(
                "master_name = \"mymaster\"\n",
                &format!("master_name = \"mymaster\"\npassword_file = {file:?}\n"),
            ))
        };
        let running = with_password("first-s3cret");
        let r = reload(&running, &with_password("second-s3cret"));
        assert_eq!(r.refused, ["redis.main.password"]);
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert_eq!(r.config.groups[0].password, running.groups[0].password);
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let r = reload(&config(DESIGN_EXAMPLE), &config(DESIGN_EXAMPLE));
        assert!(r.applied.is_empty() && r.refused.is_empty(), "{r:?}");
    }
}
