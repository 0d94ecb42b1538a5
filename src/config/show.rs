//! The effective configuration as TOML (`rolecall config show`): every key with the value
//! rolecall uses, defaults applied, durations written as the file writes them. Secrets never
//! appear: a configured password or token shows as `"<redacted>"`.
//!
//! The same tables tell a reload what changed ([`super::reload`]): two configurations differ
//! in a section when its table differs, or when a secret of it does (the tables cannot show it).

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::{
    AgentConfig, CheckConfig, Config, FleetConfig, GroupConfig, HaproxyConfig, MaintenanceConfig,
    NodeConfig, RepairConfig,
};
use crate::sockets::NodeSelector;
use crate::tls::Tls;

/// What a configured secret shows as.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration, as TOML text.
    pub fn show(&self) -> String {
        toml::to_string(&self.tables()).unwrap_or_else(|e| format!("# cannot show: {e}\n"))
    }

    /// One TOML table per section, keyed by the section's name (`redis` is an array of them).
    pub(super) fn tables(&self) -> Table {
        let mut t = Table::new();
        t.insert("node".into(), node(&self.node).into());
        let groups = self.groups.iter().map(|g| group(g).into()).collect();
        t.insert("redis".into(), Value::Array(groups));
        t.insert("check".into(), check(&self.check).into());
        if let Some(a) = &self.agent {
            t.insert("agent".into(), agent(a).into());
        }
        if let Some(h) = &self.http {
            let mut http = Table::new();
            http.insert("listen".into(), h.listen.to_string().into());
            t.insert("http".into(), http.into());
        }
        t.insert("repair".into(), repair(&self.repair).into());
        t.insert("maintenance".into(), maintenance(&self.maintenance).into());
        if let Some(h) = &self.haproxy {
            t.insert("haproxy".into(), haproxy(h).into());
        }
        t.insert("fleet".into(), fleet(&self.fleet).into());
        let mut log = Table::new();
        put(&mut log, "level", self.log.level.clone());
        t.insert("log".into(), log.into());
        t
    }
}

fn duration(d: Duration) -> Value {
    humantime::format_duration(d).to_string().into()
}

fn path(p: &Path) -> Value {
    p.display().to_string().into()
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(items.into_iter().map(|s| s.to_string().into()).collect())
}

/// Inserts `key` only when there is a value: TOML has no null.
fn put(t: &mut Table, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        t.insert(key.into(), v.into());
    }
}

fn node(n: &NodeConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), n.name.clone().into());
    let (key, value): (&str, Value) = match &n.selector {
        NodeSelector::Pid(pid) => ("pid", i64::from(*pid).into()),
        NodeSelector::PidFile(p) => ("pid_file", path(p)),
        NodeSelector::Process(name) => ("process", name.clone().into()),
        NodeSelector::SystemdUnit(unit) => ("systemd_unit", unit.clone().into()),
        NodeSelector::Namespace => ("namespace", true.into()),
    };
    t.insert(key.into(), value);
    // An empty state_dir is how the file says "nowhere".
    let state_dir = n.state_dir.as_deref().map_or_else(|| "".into(), path);
    t.insert("state_dir".into(), state_dir);
    t
}

fn group(g: &GroupConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), g.name.clone().into());
    t.insert("master_name".into(), g.master_name.clone().into());
    t.insert("sentinels".into(), strings(&g.sentinels));
    put(&mut t, "username", g.username.clone());
    put(&mut t, "password", g.password.as_ref().map(|_| REDACTED));
    put(&mut t, "sentinel_username", g.sentinel_username.clone());
    let sentinel_password = g.sentinel_password.as_ref().map(|_| REDACTED);
    put(&mut t, "sentinel_password", sentinel_password);
    t.insert("replica_reads".into(), g.replica_reads.into());
    put(&mut t, "tls", g.tls.as_deref().map(tls));
    put(&mut t, "sentinel_tls", g.sentinel_tls.as_deref().map(tls));
    t
}

fn tls(tls: &Tls) -> Table {
    let s = tls.settings();
    let mut t = Table::new();
    t.insert("enabled".into(), true.into());
    put(&mut t, "ca_file", s.ca_file.as_deref().map(path));
    put(&mut t, "cert_file", s.client.as_ref().map(|(c, _)| path(c)));
    put(&mut t, "key_file", s.client.as_ref().map(|(_, k)| path(k)));
    put(&mut t, "server_name", s.server_name.clone());
    t
}

fn check(c: &CheckConfig) -> Table {
    let p = &c.policy;
    let mut t = Table::new();
    t.insert("interval".into(), duration(c.interval));
    t.insert("timeout".into(), duration(c.timeout));
    t.insert("fast_interval".into(), duration(c.fast_interval));
    t.insert("rise".into(), i64::from(p.rise).into());
    t.insert("fall".into(), i64::from(p.fall).into());
    t.insert("unknown_hold".into(), duration(p.unknown_hold));
    t.insert("disconnected_grace".into(), duration(p.disconnected_grace));
    t.insert("stale_master_grace".into(), duration(p.stale_master_grace));
    t.insert("write_probe".into(), c.write_probe.into());
    t.insert("sentinel_events".into(), c.sentinel_events.into());
    t.insert("probe_key_prefix".into(), c.probe_key_prefix.clone().into());
    t.insert("probe_ttl".into(), duration(c.probe_ttl));
    t
}

fn agent(a: &AgentConfig) -> Table {
    let mut t = Table::new();
    t.insert("listen".into(), a.listen.to_string().into());
    let replies: Table = a
        .out_reply
        .iter()
        .map(|(v, w)| (v.as_str().to_string(), w.to_string().into()))
        .collect();
    t.insert("reply".into(), replies.into());
    put(&mut t, "state_file", a.state_file.as_deref().map(path));
    t
}

fn repair(r: &RepairConfig) -> Table {
    let mut t = Table::new();
    t.insert(
        "kill_stale_connections".into(),
        r.kill_stale_connections.into(),
    );
    t.insert("kill_interval".into(), duration(r.kill_interval));
    t.insert("kill_attempts".into(), i64::from(r.kill_attempts).into());
    let pause = r.pause_writes_on_failover;
    t.insert("pause_writes_on_failover".into(), pause.into());
    t.insert("pause_for".into(), duration(r.pause_for));
    t.insert("fence_old_master".into(), r.fence_old_master.into());
    t.insert("fence_lease".into(), duration(r.fence_lease));
    if let Some(c) = &r.command {
        t.insert("command".into(), strings(&c.argv));
        t.insert(
            "command_on".into(),
            strings(c.on.iter().map(|v| v.as_str())),
        );
        t.insert("command_after".into(), duration(c.after));
        t.insert("command_timeout".into(), duration(c.timeout));
        t.insert("command_cooldown".into(), duration(c.cooldown));
        t.insert("lock_key".into(), c.lock_key.clone().into());
        t.insert("dry_run".into(), c.dry_run.into());
    }
    t
}

fn maintenance(m: &MaintenanceConfig) -> Table {
    let mut t = Table::new();
    put(&mut t, "file", m.file.as_deref().map(path));
    put(&mut t, "token", m.token.as_ref().map(|_| REDACTED));
    put(&mut t, "state_file", m.state_file.as_deref().map(path));
    t
}

fn haproxy(h: &HaproxyConfig) -> Table {
    let mut t = Table::new();
    t.insert("runtime_api".into(), strings(&h.runtime_api));
    t.insert("servers".into(), strings(&h.servers));
    t.insert("timeout".into(), duration(h.timeout));
    t
}

fn fleet(f: &FleetConfig) -> Table {
    let mut t = Table::new();
    t.insert("guard".into(), f.guard.into());
    t.insert("name".into(), f.name.clone().into());
    t.insert("floor".into(), f.floor.into());
    t.insert("window".into(), duration(f.window));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::DESIGN_EXAMPLE;

    #[test]
    fn show_prints_every_section_with_defaults_and_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2-s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = DESIGN_EXAMPLE.replace(
            "master_name = \"mymaster\"\n",
            &format!("master_name = \"mymaster\"\npassword_file = {:?}\n", file),
        );
        let shown = Config::from_toml_str(&text).unwrap().show();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password = \"<redacted>\""), "{shown}");
        for line in [
            "rise = ",
            "fall = ",
            "unknown_hold = ",
            "[fleet]",
            "[[redis]]",
        ] {
            assert!(shown.contains(line), "{line} missing from:\n{shown}");
        }
        let parsed: Table = toml::from_str(&shown).expect("show prints TOML");
        assert_eq!(parsed["check"]["interval"].as_str(), Some("1s"));
        assert_eq!(
            parsed["node"]["pid_file"].as_str(),
            Some("/run/centrifugo.pid")
        );
    }
}
