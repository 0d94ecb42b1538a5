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
    AgentConfig, CheckConfig, Config, FleetConfig, GroupConfig, HaproxyConfig, HttpConfig,
    LogConfig, MaintenanceConfig, NodeConfig, RepairCommand, RepairConfig,
};
use crate::sockets::NodeSelector;
use crate::tls::{Tls, TlsSettings};
use crate::verdict::Policy;

/// What a configured secret shows as.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration, as TOML text.
    pub fn show(&self) -> String {
        toml::to_string(&self.tables()).unwrap_or_else(|e| format!("# cannot show: {e}\n"))
    }

    /// One TOML table per section, keyed by the section's name (`redis` is an array of them).
    // Every function here takes its struct apart without `..`: a new key does not compile
    // until it is shown (and so until a reload sees it change).
    pub(super) fn tables(&self) -> Table {
        let Config {
            node: n,
            groups,
            check: c,
            agent: a,
            http: h,
            repair: r,
            maintenance: m,
            haproxy: hp,
            fleet: f,
            log: LogConfig { level },
        } = self;
        let mut t = Table::new();
        t.insert("node".into(), node(n).into());
        let groups = groups.iter().map(|g| group(g).into()).collect();
        t.insert("redis".into(), Value::Array(groups));
        t.insert("check".into(), check(c).into());
        put(&mut t, "agent", a.as_ref().map(agent));
        put(&mut t, "http", h.as_ref().map(http));
        t.insert("repair".into(), repair(r).into());
        t.insert("maintenance".into(), maintenance(m).into());
        put(&mut t, "haproxy", hp.as_ref().map(haproxy));
        t.insert("fleet".into(), fleet(f).into());
        let mut log = Table::new();
        put(&mut log, "level", level.clone());
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

fn int(n: u32) -> Value {
    i64::from(n).into()
}

/// Inserts `key` only when there is a value: TOML has no null.
fn put(t: &mut Table, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        t.insert(key.into(), v.into());
    }
}

/// A table from keys and values.
fn table<const N: usize>(entries: [(&str, Value); N]) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn node(n: &NodeConfig) -> Table {
    let NodeConfig {
        name,
        selector,
        state_dir,
    } = n;
    let (key, value): (&str, Value) = match selector {
        NodeSelector::Pid(pid) => ("pid", int(*pid)),
        NodeSelector::PidFile(p) => ("pid_file", path(p)),
        NodeSelector::Process(name) => ("process", name.clone().into()),
        NodeSelector::SystemdUnit(unit) => ("systemd_unit", unit.clone().into()),
        NodeSelector::Namespace => ("namespace", true.into()),
    };
    // An empty state_dir is how the file says "nowhere".
    let state_dir = state_dir.as_deref().map_or_else(|| "".into(), path);
    table([
        ("name", name.clone().into()),
        (key, value),
        ("state_dir", state_dir),
    ])
}

fn group(g: &GroupConfig) -> Table {
    let GroupConfig {
        name,
        master_name,
        sentinels,
        username,
        password,
        sentinel_username,
        sentinel_password,
        replica_reads,
        tls: data_tls,
        sentinel_tls,
    } = g;
    let mut t = table([
        ("name", name.clone().into()),
        ("master_name", master_name.clone().into()),
        ("sentinels", strings(sentinels)),
    ]);
    put(&mut t, "username", username.clone());
    put(&mut t, "password", password.as_ref().map(|_| REDACTED));
    put(&mut t, "sentinel_username", sentinel_username.clone());
    let sentinel_password = sentinel_password.as_ref().map(|_| REDACTED);
    put(&mut t, "sentinel_password", sentinel_password);
    t.insert("replica_reads".into(), (*replica_reads).into());
    put(&mut t, "tls", data_tls.as_deref().map(tls));
    put(&mut t, "sentinel_tls", sentinel_tls.as_deref().map(tls));
    t
}

fn tls(tls: &Tls) -> Table {
    let TlsSettings {
        ca_file,
        client,
        server_name,
    } = tls.settings();
    let mut t = table([("enabled", true.into())]);
    put(&mut t, "ca_file", ca_file.as_deref().map(path));
    put(&mut t, "cert_file", client.as_ref().map(|(c, _)| path(c)));
    put(&mut t, "key_file", client.as_ref().map(|(_, k)| path(k)));
    put(&mut t, "server_name", server_name.clone());
    t
}

fn check(c: &CheckConfig) -> Table {
    let CheckConfig {
        interval,
        timeout,
        fast_interval,
        policy:
            Policy {
                rise,
                fall,
                unknown_hold,
                disconnected_grace,
                stale_master_grace,
            },
        write_probe,
        sentinel_events,
        probe_key_prefix,
        probe_ttl,
    } = c;
    table([
        ("interval", duration(*interval)),
        ("timeout", duration(*timeout)),
        ("fast_interval", duration(*fast_interval)),
        ("rise", int(*rise)),
        ("fall", int(*fall)),
        ("unknown_hold", duration(*unknown_hold)),
        ("disconnected_grace", duration(*disconnected_grace)),
        ("stale_master_grace", duration(*stale_master_grace)),
        ("write_probe", (*write_probe).into()),
        ("sentinel_events", (*sentinel_events).into()),
        ("probe_key_prefix", probe_key_prefix.clone().into()),
        ("probe_ttl", duration(*probe_ttl)),
    ])
}

fn agent(a: &AgentConfig) -> Table {
    let AgentConfig {
        listen,
        out_reply,
        state_file,
    } = a;
    let replies: Table = out_reply
        .iter()
        .map(|(v, w)| (v.as_str().to_string(), w.to_string().into()))
        .collect();
    let mut t = table([
        ("listen", listen.to_string().into()),
        ("reply", replies.into()),
    ]);
    put(&mut t, "state_file", state_file.as_deref().map(path));
    t
}

fn http(h: &HttpConfig) -> Table {
    let HttpConfig { listen } = h;
    table([("listen", listen.to_string().into())])
}

fn repair(r: &RepairConfig) -> Table {
    let RepairConfig {
        kill_stale_connections,
        kill_interval,
        kill_attempts,
        pause_writes_on_failover,
        pause_for,
        fence_old_master,
        fence_lease,
        command,
    } = r;
    let mut t = table([
        ("kill_stale_connections", (*kill_stale_connections).into()),
        ("kill_interval", duration(*kill_interval)),
        ("kill_attempts", int(*kill_attempts)),
        (
            "pause_writes_on_failover",
            (*pause_writes_on_failover).into(),
        ),
        ("pause_for", duration(*pause_for)),
        ("fence_old_master", (*fence_old_master).into()),
        ("fence_lease", duration(*fence_lease)),
    ]);
    if let Some(c) = command {
        t.extend(repair_command(c));
    }
    t
}

fn repair_command(c: &RepairCommand) -> Table {
    let RepairCommand {
        argv,
        on,
        after,
        timeout,
        cooldown,
        lock_key,
        dry_run,
    } = c;
    table([
        ("command", strings(argv)),
        ("command_on", strings(on.iter().map(|v| v.as_str()))),
        ("command_after", duration(*after)),
        ("command_timeout", duration(*timeout)),
        ("command_cooldown", duration(*cooldown)),
        ("lock_key", lock_key.clone().into()),
        ("dry_run", (*dry_run).into()),
    ])
}

fn maintenance(m: &MaintenanceConfig) -> Table {
    let MaintenanceConfig {
        file,
        token,
        state_file,
    } = m;
    let mut t = Table::new();
    put(&mut t, "file", file.as_deref().map(path));
    put(&mut t, "token", token.as_ref().map(|_| REDACTED));
    put(&mut t, "state_file", state_file.as_deref().map(path));
    t
}

fn haproxy(h: &HaproxyConfig) -> Table {
    let HaproxyConfig {
        runtime_api,
        servers,
        timeout,
    } = h;
    table([
        ("runtime_api", strings(runtime_api)),
        ("servers", strings(servers)),
        ("timeout", duration(*timeout)),
    ])
}

fn fleet(f: &FleetConfig) -> Table {
    let FleetConfig {
        guard,
        name,
        floor,
        window,
    } = f;
    table([
        ("guard", (*guard).into()),
        ("name", name.clone().into()),
        ("floor", (*floor).into()),
        ("window", duration(*window)),
    ])
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
