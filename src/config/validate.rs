//! The validated stage: [`validate`] turns the raw file into a [`Config`] by calling one
//! validator per section and assembling their results. This file holds the validators of the
//! sections every configuration has (`[node]`, `[[redis]]`, `[check]`) and of the outputs
//! that tell the load balancers (`[agent]`, `[http]`); the opt-in sections are in `opt_in`.
//!
//! Each validator applies the defaults (`defaults`), checks values against each other and
//! reads secrets from their files. Its errors name the key they are about, the way an
//! operator wrote it: `check.timeout (2s) must be above zero and below check.interval (1s)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use crate::sockets::{NodeSelector, check_unit_name};
use crate::tls::{Tls, TlsSettings};
use crate::verdict::{Policy, Verdict};

use super::defaults;
use super::opt_in::{validate_haproxy, validate_maintenance, validate_repair};
use super::raw::{
    RawAgent, RawCheck, RawConfig, RawFleet, RawHttp, RawLog, RawNode, RawRedis, RawTls,
};
use super::reply::out_word;
use super::{
    AgentConfig, CheckConfig, Config, ConfigError, FleetConfig, GroupConfig, HttpConfig, LogConfig,
    NodeConfig, OutWord,
};

/// The raw file, validated section by section in the order of the file's documentation.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let node = validate_node(raw.node)?;
    let groups = validate_groups(raw.redis)?;
    let check = validate_check(raw.check)?;
    let state = |kind: &str| {
        let file = format!("{kind}-{}.state", file_safe(&node.name));
        node.state_dir.as_ref().map(|d| d.join(file))
    };
    let agent = raw
        .agent
        .map(|a| validate_agent(a, state("agent")))
        .transpose()?;
    let http = raw.http.map(validate_http).transpose()?;
    let repair = validate_repair(raw.repair.unwrap_or_default())?;
    if repair.fence_old_master && repair.fence_lease <= check.interval + check.timeout {
        return Err(ConfigError::invalid(format!(
            "repair.fence_lease: must be longer than check.interval + check.timeout ({}), or a fence would lapse between checks",
            humantime::format_duration(check.interval + check.timeout)
        )));
    }
    let mut maintenance =
        validate_maintenance(raw.maintenance.unwrap_or_default(), http.is_some())?;
    if maintenance.token.is_some() {
        maintenance.state_file = state("maintenance");
    }
    let haproxy = raw
        .haproxy
        .map(|h| validate_haproxy(h, agent.is_some()))
        .transpose()?;
    let fleet = validate_fleet(raw.fleet.unwrap_or_default(), &groups, &check)?;
    let log = validate_log(raw.log.unwrap_or_default())?;
    Ok(Config {
        node,
        groups,
        check,
        agent,
        http,
        repair,
        maintenance,
        haproxy,
        fleet,
        log,
    })
}

/// `[log]`: the level must be one tracing understands (`debug`, `info,rolecall::check=debug`).
fn validate_log(l: RawLog) -> Result<LogConfig, ConfigError> {
    if let Some(level) = &l.level {
        crate::logs::parse_level(level)
            .map_err(|e| ConfigError::invalid(format!("log.level: {e}")))?;
    }
    Ok(LogConfig { level: l.level })
}

/// `[fleet]`: the guard's floor and window; the registry is named after the first group's
/// master unless told otherwise.
fn validate_fleet(
    f: RawFleet,
    groups: &[GroupConfig],
    check: &CheckConfig,
) -> Result<FleetConfig, ConfigError> {
    let floor = f.floor.unwrap_or(defaults::FLEET_FLOOR);
    if !(floor > 0.0 && floor <= 1.0) {
        return Err(ConfigError::invalid(
            "fleet.floor: give the share of the fleet to keep in rotation, above 0 and at most 1 (e.g. 0.5)",
        ));
    }
    let window = f.window.unwrap_or(defaults::FLEET_WINDOW);
    if window < check.interval * 5 {
        return Err(ConfigError::invalid(format!(
            "fleet.window: must be at least 5 check intervals ({})",
            humantime::format_duration(check.interval * 5)
        )));
    }
    let name = match f.name {
        Some(n) if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(ConfigError::invalid(
                "fleet.name: give a name without spaces, e.g. \"centrifugo\"",
            ));
        }
        Some(n) => n,
        None => groups
            .first()
            .map(|g| g.master_name.clone())
            .unwrap_or_default(),
    };
    Ok(FleetConfig {
        guard: f.guard.unwrap_or(defaults::FLEET_GUARD),
        name,
        floor,
        window,
    })
}

/// `[node]`: exactly one way to find the node's process, and its name.
fn validate_node(n: RawNode) -> Result<NodeConfig, ConfigError> {
    let selector = node_selector(&n)?;
    let state_dir = match n.state_dir {
        Some(d) if d.as_os_str().is_empty() => None,
        Some(d) if !d.is_absolute() => {
            return Err(ConfigError::invalid(
                "node.state_dir: give an absolute path, e.g. \"/var/lib/rolecall\" (or \"\" for none)",
            ));
        }
        Some(d) => Some(d),
        None => Some(default_state_dir()),
    };
    let node = NodeConfig {
        name: n.name.unwrap_or_else(host_name),
        selector,
        state_dir,
    };
    if node.name.is_empty() {
        return Err(ConfigError::invalid("node.name: empty"));
    }
    Ok(node)
}

/// `pid`, `pid_file`, `process`, `systemd_unit` and `namespace` are alternatives: exactly one
/// is set. A unit is named as systemd names it, with its type: `centrifugo.service`, a
/// `.scope` or a `.slice`.
fn node_selector(n: &RawNode) -> Result<NodeSelector, ConfigError> {
    let mut selectors = Vec::new();
    if let Some(pid) = n.pid {
        if pid == 0 {
            return Err(ConfigError::invalid("node.pid: 0 is not a process id"));
        }
        selectors.push(NodeSelector::Pid(pid));
    }
    if let Some(p) = &n.pid_file {
        selectors.push(NodeSelector::PidFile(p.clone()));
    }
    if let Some(p) = &n.process {
        if p.is_empty() {
            return Err(ConfigError::invalid("node.process: empty process name"));
        }
        selectors.push(NodeSelector::Process(p.clone()));
    }
    if let Some(unit) = &n.systemd_unit {
        check_unit_name(unit)
            .map_err(|why| ConfigError::invalid(format!("node.systemd_unit: {why}")))?;
        selectors.push(NodeSelector::SystemdUnit(unit.clone()));
    }
    if n.namespace == Some(true) {
        selectors.push(NodeSelector::Namespace);
    }
    match selectors.len() {
        1 => Ok(selectors.remove(0)),
        0 => Err(ConfigError::invalid(
            "node: say how to find the node: one of pid, pid_file, process, systemd_unit or \
             namespace = true",
        )),
        _ => Err(ConfigError::invalid(
            "node: pid, pid_file, process, systemd_unit and namespace are alternatives; set \
             exactly one",
        )),
    }
}

/// The default `[node] state_dir`: the service's state directory when systemd gives one
/// (`StateDirectory=rolecall` sets `$STATE_DIRECTORY`), else `/var/lib/rolecall`.
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| PathBuf::from(defaults::NODE_STATE_DIR))
}

/// `name` with every character but ASCII letters, digits, `.`, `_` and `-` replaced by `_`,
/// for a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Every `[[redis]]` table: at least one, each with its own name.
fn validate_groups(redis: Vec<RawRedis>) -> Result<Vec<GroupConfig>, ConfigError> {
    if redis.is_empty() {
        return Err(ConfigError::invalid(
            "no [[redis]] group: add one with master_name and sentinels",
        ));
    }
    let mut groups: Vec<GroupConfig> = Vec::new();
    for r in redis {
        let group = validate_group(r, &groups)?;
        groups.push(group);
    }
    Ok(groups)
}

/// One `[[redis]]` table; `earlier` are the tables above it, whose names it may not reuse.
fn validate_group(r: RawRedis, earlier: &[GroupConfig]) -> Result<GroupConfig, ConfigError> {
    let name = r.name.unwrap_or_else(|| r.master_name.clone());
    let what = format!("redis {name:?}");
    if r.master_name.is_empty() {
        return Err(ConfigError::invalid(format!("{what}: empty master_name")));
    }
    validate_sentinels(&what, &r.sentinels)?;
    if earlier.iter().any(|g| g.name == name) {
        return Err(ConfigError::invalid(format!(
            "{what}: two [[redis]] groups share this name"
        )));
    }
    let tls = validate_tls(&format!("{what} tls"), r.tls.clone())?;
    // The sentinels speak as the data servers do unless told otherwise.
    let sentinel_tls = match r.sentinel_tls {
        Some(t) => validate_tls(&format!("{what} sentinel_tls"), Some(t))?,
        None => tls.clone(),
    };
    Ok(GroupConfig {
        tls,
        sentinel_tls,
        password: read_secret(&format!("{what} password"), r.password_file, r.password_env)?,
        sentinel_password: read_secret(
            &format!("{what} sentinel password"),
            r.sentinel_password_file,
            r.sentinel_password_env,
        )?,
        name,
        master_name: r.master_name,
        sentinels: r.sentinels,
        username: r.username,
        sentinel_username: r.sentinel_username,
        replica_reads: r.replica_reads.unwrap_or(defaults::REDIS_REPLICA_READS),
    })
}

/// `[redis.tls]` or `[redis.sentinel_tls]`: on when the table is there (unless
/// `enabled = false`, which takes no other key); the files read and checked now.
fn validate_tls(what: &str, t: Option<RawTls>) -> Result<Option<Arc<Tls>>, ConfigError> {
    let Some(t) = t else { return Ok(None) };
    let others = t.ca_file.is_some()
        || t.cert_file.is_some()
        || t.key_file.is_some()
        || t.server_name.is_some();
    if t.enabled == Some(false) {
        if others {
            return Err(ConfigError::invalid(format!(
                "{what}: enabled = false takes no other key"
            )));
        }
        return Ok(None);
    }
    let client = match (t.cert_file, t.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::invalid(format!(
                "{what}: cert_file and key_file go together (a client certificate and its key)"
            )));
        }
    };
    let settings = TlsSettings {
        ca_file: t.ca_file,
        client,
        server_name: t.server_name,
    };
    Tls::load(settings)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| ConfigError::invalid(format!("{what}: {e}")))
}

/// A group's sentinels: at least one, each `host:port`, none twice (it would vote twice).
fn validate_sentinels(what: &str, sentinels: &[String]) -> Result<(), ConfigError> {
    if sentinels.is_empty() {
        return Err(ConfigError::invalid(format!(
            "{what}: sentinels is empty; list every sentinel (\"host:port\")"
        )));
    }
    for s in sentinels {
        if !valid_host_port(s) {
            return Err(ConfigError::invalid(format!(
                "{what}: sentinel {s:?} is not \"host:port\""
            )));
        }
    }
    let mut uniq = sentinels.to_vec();
    uniq.sort();
    uniq.dedup();
    if uniq.len() != sentinels.len() {
        return Err(ConfigError::invalid(format!(
            "{what}: a sentinel is listed twice (it would vote twice)"
        )));
    }
    Ok(())
}

/// An IP address with a port, or a host name (no `:` in it) with a port other than 0.
fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// A password from a file or from an environment variable, not both; `what` names it in
/// errors, which never show the secret.
fn read_secret(
    what: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(format!(
            "{what}: set either a password file or a password environment variable, not both"
        ))),
        (Some(path), None) => Secret::from_file(&path)
            .map(Some)
            .map_err(|e| ConfigError::invalid(format!("{what}: {e}"))),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(ConfigError::invalid(format!(
                "{what}: environment variable {var} is not set or empty"
            ))),
        },
        (None, None) => Ok(None),
    }
}

/// `[check]`: the timing (the timeout below the interval, the fast interval at most the
/// interval), the verdict policy and the write probe.
fn validate_check(c: RawCheck) -> Result<CheckConfig, ConfigError> {
    let interval = c.interval.unwrap_or(defaults::CHECK_INTERVAL);
    let timeout = c.timeout.unwrap_or(defaults::CHECK_TIMEOUT);
    let fast_interval = c.fast_interval.unwrap_or(defaults::CHECK_FAST_INTERVAL);
    if interval < Duration::from_millis(10) {
        return Err(ConfigError::invalid(
            "check.interval: must be at least 10ms",
        ));
    }
    if timeout.is_zero() || timeout >= interval {
        return Err(ConfigError::invalid(format!(
            "check.timeout ({}) must be above zero and below check.interval ({})",
            humantime::format_duration(timeout),
            humantime::format_duration(interval)
        )));
    }
    if fast_interval.is_zero() || fast_interval > interval {
        return Err(ConfigError::invalid(
            "check.fast_interval: must be above zero and at most check.interval",
        ));
    }
    let policy = validate_policy(&c)?;
    let probe_ttl = c.probe_ttl.unwrap_or(defaults::CHECK_PROBE_TTL);
    if probe_ttl < Duration::from_millis(1) {
        return Err(ConfigError::invalid(
            "check.probe_ttl: must be at least 1ms",
        ));
    }
    let probe_key_prefix = c
        .probe_key_prefix
        .unwrap_or_else(|| defaults::CHECK_PROBE_KEY_PREFIX.to_string());
    if probe_key_prefix.is_empty() {
        return Err(ConfigError::invalid("check.probe_key_prefix: empty"));
    }
    Ok(CheckConfig {
        interval,
        timeout,
        fast_interval,
        policy,
        write_probe: c.write_probe.unwrap_or(defaults::CHECK_WRITE_PROBE),
        sentinel_events: c.sentinel_events.unwrap_or(defaults::CHECK_SENTINEL_EVENTS),
        probe_key_prefix,
        probe_ttl,
    })
}

/// The verdict policy of `[check]`: rise and fall of at least one check, and the grace and
/// hold times.
fn validate_policy(c: &RawCheck) -> Result<Policy, ConfigError> {
    let rise = c.rise.unwrap_or(defaults::CHECK_RISE);
    let fall = c.fall.unwrap_or(defaults::CHECK_FALL);
    if rise == 0 || fall == 0 {
        return Err(ConfigError::invalid(
            "check.rise and check.fall: must be at least 1",
        ));
    }
    Ok(Policy {
        rise,
        fall,
        unknown_hold: c.unknown_hold.unwrap_or(defaults::CHECK_UNKNOWN_HOLD),
        disconnected_grace: c
            .disconnected_grace
            .unwrap_or(defaults::CHECK_DISCONNECTED_GRACE),
        stale_master_grace: c
            .stale_master_grace
            .unwrap_or(defaults::CHECK_STALE_MASTER_GRACE),
    })
}

/// `[agent]`: the address, and a word for every verdict that takes the node out: its
/// `reply.<verdict>` if set, `out_reply` otherwise.
fn validate_agent(a: RawAgent, default_state: Option<PathBuf>) -> Result<AgentConfig, ConfigError> {
    let listen = parse_listen("agent", &a.listen)?;
    let default = match &a.out_reply {
        None => defaults::AGENT_OUT_REPLY,
        Some(word) => out_word("agent.out_reply", word)?,
    };
    let mut out_reply: BTreeMap<Verdict, OutWord> = Verdict::ALL
        .into_iter()
        .filter(|v| !v.in_rotation_by_default())
        .map(|v| (v, default))
        .collect();
    for (key, word) in &a.reply {
        let (verdict, word) = verdict_reply(key, word)?;
        out_reply.insert(verdict, word);
    }
    Ok(AgentConfig {
        listen,
        out_reply,
        // An explicit file wins; `state_file = ""` keeps none.
        state_file: match a.state_file {
            Some(f) if f.as_os_str().is_empty() => None,
            Some(f) => Some(f),
            None => default_state,
        },
    })
}

/// `reply.<key> = "<word>"`: `key` must name a verdict that takes the node out.
fn verdict_reply(key: &str, word: &str) -> Result<(Verdict, OutWord), ConfigError> {
    let verdict = Verdict::from_name(key).ok_or_else(|| {
        ConfigError::invalid(format!(
            "agent.reply: {key:?} is not a verdict (one of {})",
            Verdict::ALL.map(|v| v.as_str()).join(", ")
        ))
    })?;
    if verdict.in_rotation_by_default() {
        return Err(ConfigError::invalid(format!(
            "agent.reply.{key}: this verdict keeps the node in rotation; only verdicts that take it out have a reply"
        )));
    }
    Ok((verdict, out_word(&format!("agent.reply.{key}"), word)?))
}

/// `[http]`.
fn validate_http(h: RawHttp) -> Result<HttpConfig, ConfigError> {
    Ok(HttpConfig {
        listen: parse_listen("http", &h.listen)?,
    })
}

/// `<what>.listen`: an IP address and port (a name would need resolving before binding).
fn parse_listen(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::invalid(format!(
            "{what}.listen: {s:?} is not an address like \"0.0.0.0:7070\" or \"[::]:7070\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::DESIGN_EXAMPLE;

    #[test]
    fn pid_is_accepted_as_selector() {
        let text = DESIGN_EXAMPLE.replace("pid_file = \"/run/centrifugo.pid\"", "pid = 1234");
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.node.selector, NodeSelector::Pid(1234));
    }

    #[test]
    fn a_systemd_unit_is_accepted_as_selector_alone_and_by_its_full_name() {
        let with = |line: &str| DESIGN_EXAMPLE.replace("pid_file = \"/run/centrifugo.pid\"", line);
        let c = Config::from_toml_str(&with("systemd_unit = \"centrifugo.service\"")).unwrap();
        assert_eq!(
            c.node.selector,
            NodeSelector::SystemdUnit("centrifugo.service".to_owned())
        );
        let refused = [
            (
                "systemd_unit = \"centrifugo.service\"\nprocess = \"centrifugo\"",
                "node: pid, pid_file, process, systemd_unit and namespace are alternatives; \
                 set exactly one",
            ),
            (
                "systemd_unit = \"centrifugo.service\"\nnamespace = true",
                "set exactly one",
            ),
            (
                "systemd_unit = \"centrifugo\"",
                "node.systemd_unit: \"centrifugo\" does not end in .service, .scope, .slice",
            ),
            (
                "systemd_unit = \"system.slice/centrifugo.service\"",
                "node.systemd_unit: \"system.slice/centrifugo.service\" is a path",
            ),
            ("systemd_unit = \"\"", "node.systemd_unit: empty unit name"),
        ];
        for (line, want) in refused {
            let err = Config::from_toml_str(&with(line))
                .expect_err(line)
                .to_string();
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn tls_tables_are_read_checked_and_the_sentinels_follow_the_servers_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["redis.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let ca = write("ca.pem", &cert.pem(), 0o644);
        let crt = write("tls.crt", &cert.pem(), 0o644);
        let good = write("tls.key", &key.serialize_pem(), 0o600);
        let open = write("open.key", &key.serialize_pem(), 0o644);
        let with = |tables: &str| Config::from_toml_str(&format!("{DESIGN_EXAMPLE}\n{tables}"));
        let both = format!(
            "[redis.tls]\nca_file = \"{ca}\"\ncert_file = \"{crt}\"\nkey_file = \"{good}\"\n"
        );
        let c = with(&both).unwrap();
        let g = &c.groups[0];
        assert!(g.tls.is_some() && g.sentinel_tls.is_some());
        let plain_sentinels = format!("{both}[redis.sentinel_tls]\nenabled = false\n");
        let c = with(&plain_sentinels).unwrap();
        assert!(c.groups[0].tls.is_some() && c.groups[0].sentinel_tls.is_none());
        assert!(with("").unwrap().groups[0].tls.is_none());
        let refused = [
            (
                format!("[redis.tls]\ncert_file = \"{crt}\"\n"),
                "cert_file and key_file go together",
            ),
            (
                format!("[redis.tls]\ncert_file = \"{crt}\"\nkey_file = \"{open}\"\n"),
                "readable by every user",
            ),
            (
                format!("[redis.tls]\nenabled = false\nca_file = \"{ca}\"\n"),
                "enabled = false takes no other key",
            ),
            (
                "[redis.tls]\nserver_name = \"not a name\"\n".to_string(),
                "is not a DNS name",
            ),
            ("[redis.tls]\nverify = false\n".to_string(), "unknown field"),
        ];
        for (tables, want) in refused {
            let err = with(&tables).expect_err(&tables).to_string();
            assert!(err.contains(want), "{tables:?}: {err}");
        }
    }

    #[test]
    fn invalid_configurations_are_refused_with_a_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "timeout = \"300ms\"",
                "timeout = \"2s\"",
                "below check.interval",
            ),
            (
                "interval = \"1s\"",
                "interval = \"1s\"\nrise = 0",
                "at least 1",
            ),
            (
                "interval = \"1s\"",
                "interval = \"soon\"",
                "12:12: invalid value",
            ),
            (
                "sentinels = [\"10.0.0.1:26379\", \"10.0.0.2:26379\", \"10.0.0.3:26379\"]",
                "sentinels = []",
                "sentinels is empty",
            ),
            ("\"10.0.0.3:26379\"]", "\"10.0.0.2:26379\"]", "listed twice"),
            ("\"10.0.0.3:26379\"]", "\"10.0.0.3\"]", "not \"host:port\""),
            (
                "pid_file = \"/run/centrifugo.pid\"",
                "pid_file = \"/run/centrifugo.pid\"\npid = 3",
                "exactly one",
            ),
            (
                "pid_file = \"/run/centrifugo.pid\"",
                "",
                "how to find the node",
            ),
            (
                "listen = \"0.0.0.0:7070\"",
                "listen = \"7070\"",
                "not an address",
            ),
            (
                "listen = \"0.0.0.0:7070\"",
                "listen = \"0.0.0.0:7070\"\nout_reply = \"failed\"",
                "not an agent word",
            ),
        ];
        for (from, to, expect) in cases {
            assert!(DESIGN_EXAMPLE.contains(from), "{from}");
            let text = DESIGN_EXAMPLE.replacen(from, to, 1);
            let err = Config::from_toml_str(&text).expect_err(to).to_string();
            assert!(err.contains(expect), "{to:?}: {err}");
        }
    }

    #[test]
    fn agent_replies_are_configurable_per_verdict() {
        let text = DESIGN_EXAMPLE.replace(
            "listen = \"0.0.0.0:7070\"",
            "listen = \"0.0.0.0:7070\"\nreply.stuck_on_replica = \"down\"",
        );
        let c = Config::from_toml_str(&text).unwrap();
        let a = c.agent.unwrap();
        assert_eq!(a.out_reply[&Verdict::StuckOnReplica].as_str(), "down");
        assert_eq!(a.out_reply[&Verdict::NodeMissing].as_str(), "drain");
        let bad = DESIGN_EXAMPLE.replace(
            "listen = \"0.0.0.0:7070\"",
            "listen = \"0.0.0.0:7070\"\nreply.ok = \"down\"",
        );
        assert!(Config::from_toml_str(&bad).is_err());
    }

    #[test]
    fn the_fleet_guard_is_on_by_default_named_after_the_first_master_and_checked() {
        let c = Config::from_toml_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(
            c.fleet,
            FleetConfig {
                guard: true,
                name: "mymaster".to_string(),
                floor: 0.5,
                window: Duration::from_secs(60),
            }
        );
        let with = |t: &str| format!("{DESIGN_EXAMPLE}\n[fleet]\n{t}\n");
        let c = Config::from_toml_str(&with(
            "guard = false\nname = \"centrifugo\"\nfloor = 1.0\nwindow = \"10s\"",
        ))
        .unwrap();
        assert_eq!(
            (c.fleet.guard, c.fleet.name.as_str(), c.fleet.floor),
            (false, "centrifugo", 1.0)
        );
        for (bad, expect) in [
            ("floor = 0.0", "above 0 and at most 1"),
            ("floor = 1.5", "above 0 and at most 1"),
            ("window = \"2s\"", "at least 5 check intervals"),
            ("name = \"two words\"", "without spaces"),
            ("name = \"\"", "without spaces"),
            ("guard = \"yes\"", "invalid type"),
        ] {
            let err = Config::from_toml_str(&with(bad))
                .expect_err(bad)
                .to_string();
            assert!(err.contains(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_fence_follows_the_kill_repair_and_its_lease_outlasts_a_check() {
        let with = |t: &str| format!("{DESIGN_EXAMPLE}\n[repair]\n{t}\n");
        let c = Config::from_toml_str(DESIGN_EXAMPLE).unwrap();
        assert!(!c.repair.fence_old_master);
        let c = Config::from_toml_str(&with("kill_stale_connections = true")).unwrap();
        assert!(c.repair.fence_old_master);
        assert_eq!(c.repair.fence_lease, Duration::from_secs(2));
        let c = Config::from_toml_str(&with(
            "kill_stale_connections = true\nfence_old_master = false",
        ))
        .unwrap();
        assert!(!c.repair.fence_old_master);
        for (bad, expect) in [
            (
                "kill_stale_connections = true\nfence_lease = \"1s\"",
                "longer than check.interval + check.timeout",
            ),
            ("fence_lease = \"100ms\"", "between 200ms and 60s"),
        ] {
            let err = Config::from_toml_str(&with(bad))
                .expect_err(bad)
                .to_string();
            assert!(err.contains(expect), "{bad:?}: {err}");
        }
        // Off, a short lease is no one's concern.
        assert!(Config::from_toml_str(&with("fence_lease = \"1s\"")).is_ok());
    }
}
