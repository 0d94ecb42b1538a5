//! The validated stage of the opt-in sections, called by `validate`: `[repair]` (what
//! rolecall may do beyond telling load balancers), `[maintenance]` (the operator's switch)
//! and `[haproxy]` (the push to HAProxy's runtime API). Each is off unless configured, and
//! the last two refuse to run without the output they serve on (`[http]`, `[agent]`).

use std::time::Duration;

use crate::secret::Secret;
use crate::verdict::Verdict;

use super::defaults;
use super::raw::{RawHaproxy, RawMaintenance, RawRepair};
use super::{
    ConfigError, HaproxyConfig, MaintenanceConfig, RepairCommand, RepairConfig, RuntimeApi,
    ServerRef,
};

/// `[repair]`: the connection kill with its write pause, and the command.
pub(super) fn validate_repair(r: RawRepair) -> Result<RepairConfig, ConfigError> {
    let kill_interval = r.kill_interval.unwrap_or(defaults::REPAIR_KILL_INTERVAL);
    if kill_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "repair.kill_interval: must be at least 100ms",
        ));
    }
    let kill_attempts = r.kill_attempts.unwrap_or(defaults::REPAIR_KILL_ATTEMPTS);
    if kill_attempts == 0 {
        return Err(ConfigError::invalid(
            "repair.kill_attempts: must be at least 1",
        ));
    }
    let command = match &r.command {
        None => None,
        Some(argv) => Some(validate_command(argv, &r)?),
    };
    let pause_for = r.pause_for.unwrap_or(defaults::REPAIR_PAUSE_FOR);
    if pause_for < Duration::from_millis(100) || pause_for > Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "repair.pause_for: must be between 100ms and 60s",
        ));
    }
    let kill_stale_connections = r
        .kill_stale_connections
        .unwrap_or(defaults::REPAIR_KILL_STALE_CONNECTIONS);
    let fence_lease = r.fence_lease.unwrap_or(defaults::REPAIR_FENCE_LEASE);
    if fence_lease < Duration::from_millis(200) || fence_lease > Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "repair.fence_lease: must be between 200ms and 60s",
        ));
    }
    Ok(RepairConfig {
        // The kill moves the node only once Sentinel names the new master; the writes the old
        // master acknowledges between the promotion and then are lost unless they wait.
        pause_writes_on_failover: r.pause_writes_on_failover.unwrap_or(kill_stale_connections),
        // And those it acknowledges after, until Sentinel demotes it, are lost too.
        fence_old_master: r.fence_old_master.unwrap_or(kill_stale_connections),
        fence_lease,
        pause_for,
        kill_stale_connections,
        kill_interval,
        kill_attempts,
        command,
    })
}

/// `repair.command` (`argv`, run without a shell) and the keys that go with it.
fn validate_command(argv: &[String], r: &RawRepair) -> Result<RepairCommand, ConfigError> {
    if argv.first().is_none_or(|program| program.is_empty()) {
        return Err(ConfigError::invalid(
            "repair.command: give the program and its arguments, e.g. [\"systemctl\", \"restart\", \"centrifugo\"]",
        ));
    }
    let on = match &r.command_on {
        None => defaults::REPAIR_COMMAND_ON.to_vec(),
        Some(names) => out_verdicts(names)?,
    };
    let timeout = r
        .command_timeout
        .unwrap_or(defaults::REPAIR_COMMAND_TIMEOUT);
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            "repair.command_timeout: must be above zero",
        ));
    }
    let lock_key = r
        .lock_key
        .clone()
        .unwrap_or_else(|| defaults::REPAIR_LOCK_KEY.to_string());
    if lock_key.is_empty() {
        return Err(ConfigError::invalid("repair.lock_key: empty"));
    }
    Ok(RepairCommand {
        argv: argv.to_vec(),
        on,
        after: r.command_after.unwrap_or(defaults::REPAIR_COMMAND_AFTER),
        timeout,
        cooldown: r
            .command_cooldown
            .unwrap_or(defaults::REPAIR_COMMAND_COOLDOWN),
        lock_key,
        dry_run: r.dry_run.unwrap_or(defaults::REPAIR_DRY_RUN),
    })
}

/// `repair.command_on`: only verdicts that take a node out start the command's clock.
fn out_verdicts(names: &[String]) -> Result<Vec<Verdict>, ConfigError> {
    names
        .iter()
        .map(|n| {
            Verdict::from_name(n)
                .filter(|v| !v.in_rotation_by_default())
                .ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "repair.command_on: {n:?} is not a verdict that takes a node out"
                    ))
                })
        })
        .collect()
}

/// `[maintenance]`: the flag file, and the token of the endpoint on `[http]` (`http`: whether
/// it is configured).
pub(super) fn validate_maintenance(
    m: RawMaintenance,
    http: bool,
) -> Result<MaintenanceConfig, ConfigError> {
    if m.file.as_ref().is_some_and(|f| !f.is_absolute()) {
        return Err(ConfigError::invalid(
            "maintenance.file: give an absolute path, e.g. \"/run/rolecall/maintenance\"",
        ));
    }
    let token = match m.token_file {
        None => None,
        Some(_) if !http => {
            return Err(ConfigError::invalid(
                "maintenance.token_file: the maintenance endpoint is served on [http]; configure [http] or drop the token",
            ));
        }
        Some(path) => Some(
            Secret::from_file(&path)
                .map_err(|e| ConfigError::invalid(format!("maintenance.token_file: {e}")))?,
        ),
    };
    Ok(MaintenanceConfig {
        file: m.file,
        token,
        state_file: None,
    })
}

/// `[haproxy]`: every runtime API and this node's server lines (`agent`: whether `[agent]`,
/// which the push only speeds up, is configured).
pub(super) fn validate_haproxy(h: RawHaproxy, agent: bool) -> Result<HaproxyConfig, ConfigError> {
    if !agent {
        return Err(ConfigError::invalid(
            "haproxy: the push speeds up the agent check, which stays the source of truth; configure [agent] too",
        ));
    }
    if h.runtime_api.is_empty() {
        return Err(ConfigError::invalid(
            "haproxy.runtime_api: empty; list each HAProxy's runtime API, \"127.0.0.1:9999\" or \"/run/haproxy/admin.sock\"",
        ));
    }
    let runtime_api = h
        .runtime_api
        .iter()
        .map(|a| {
            RuntimeApi::parse(a)
                .ok_or_else(|| ConfigError::invalid(format!("haproxy.runtime_api: {a:?} is neither \"host:port\" nor an absolute socket path")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if h.servers.is_empty() {
        return Err(ConfigError::invalid(
            "haproxy.servers: empty; name this node's server lines, \"backend/server\"",
        ));
    }
    let servers = h
        .servers
        .iter()
        .map(|s| {
            ServerRef::parse(s).ok_or_else(|| {
                ConfigError::invalid(format!(
                    "haproxy.servers: {s:?} is not \"backend/server\" (printable, no spaces, no ';')"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = h.timeout.unwrap_or(defaults::HAPROXY_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(10) {
        return Err(ConfigError::invalid(
            "haproxy.timeout: must be above zero and at most 10s",
        ));
    }
    Ok(HaproxyConfig {
        runtime_api,
        servers,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::DESIGN_EXAMPLE;
    use crate::config::{Config, RuntimeApi, ServerRef};

    #[test]
    fn the_repair_section_is_off_by_default_and_validated() {
        let c = Config::from_toml_str(DESIGN_EXAMPLE).unwrap();
        assert!(!c.repair.kill_stale_connections && c.repair.command.is_none());
        assert!(!c.repair.pause_writes_on_failover);
        let text = format!(
            "{DESIGN_EXAMPLE}\n[repair]\nkill_stale_connections = true\ncommand = [\"systemctl\", \"restart\", \"x\"]\ncommand_after = \"5s\"\n"
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert!(
            c.repair.pause_writes_on_failover,
            "the kill repair brings the write pause unless told otherwise"
        );
        let off = Config::from_toml_str(&format!(
            "{DESIGN_EXAMPLE}\n[repair]\nkill_stale_connections = true\npause_writes_on_failover = false\n"
        ))
        .unwrap();
        assert!(off.repair.kill_stale_connections && !off.repair.pause_writes_on_failover);
        let cmd = c.repair.command.unwrap();
        assert_eq!(cmd.argv, ["systemctl", "restart", "x"]);
        assert_eq!(cmd.after, Duration::from_secs(5));
        assert_eq!(cmd.on, vec![Verdict::StuckOnReplica, Verdict::StaleMaster]);
        for (bad, why) in [
            ("command = []", "give the program"),
            (
                "command = [\"x\"]\ncommand_on = [\"ok\"]",
                "not a verdict that takes a node out",
            ),
            ("kill_attempts = 0", "at least 1"),
            ("pause_for = \"10ms\"", "between 100ms and 60s"),
        ] {
            let text = format!("{DESIGN_EXAMPLE}\n[repair]\n{bad}\n");
            let err = Config::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn maintenance_and_haproxy_push_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "{DESIGN_EXAMPLE}\n[maintenance]\nfile = \"/run/rolecall/maintenance\"\ntoken_file = {:?}\n\n[haproxy]\nruntime_api = [\"127.0.0.1:9999\", \"/run/haproxy/admin.sock\"]\nservers = [\"centrifugo/node1\"]\n",
            token.display().to_string()
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(
            c.maintenance.file.as_deref(),
            Some(Path::new("/run/rolecall/maintenance"))
        );
        assert_eq!(c.maintenance.token.unwrap().expose(), "t0ken");
        let h = c.haproxy.unwrap();
        assert_eq!(
            h.runtime_api,
            vec![
                RuntimeApi::Tcp("127.0.0.1:9999".into()),
                RuntimeApi::Unix("/run/haproxy/admin.sock".into())
            ]
        );
        assert_eq!(
            h.servers,
            vec![ServerRef::parse("centrifugo/node1").unwrap()]
        );
        assert_eq!(h.timeout, Duration::from_millis(500));

        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("readable by every user") && !err.contains("t0ken"),
            "{err}"
        );
        for (from, to, expect) in [
            (
                "servers = [\"centrifugo/node1\"]",
                "servers = [\"node1\"]",
                "backend/server",
            ),
            (
                "servers = [\"centrifugo/node1\"]",
                "servers = [\"a/b;disable server a/c\"]",
                "backend/server",
            ),
            ("\"127.0.0.1:9999\", ", "\"9999\", ", "neither"),
            (
                "file = \"/run/rolecall/maintenance\"",
                "file = \"maint\"",
                "absolute",
            ),
        ] {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
            let bad = text.replace(from, to);
            let err = Config::from_toml_str(&bad).expect_err(to).to_string();
            assert!(err.contains(expect), "{to}: {err}");
        }
    }
}
