//! Configuration: the TOML file as written (`Raw*`, serde, unknown keys rejected) and the
//! validated [`Config`] the rest of rolecall uses.
//!
//! Two stages, as ripgrep does with its flags: the raw stage only mirrors the file, the
//! validated stage holds decisions (defaults applied, durations checked against each other,
//! secrets read from their files). [`Config::from_toml_str`] is what tests call;
//! [`Config::load`] opens the file and puts its path in front of every error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::sockets::NodeSelector;
use crate::verdict::{Policy, Verdict};

/// A configuration error, printed as `FILE:LINE:COL: message` where a position is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{location}{message}")]
    Parse { location: String, message: String },
    #[error("{location}{message}")]
    Invalid { location: String, message: String },
}

impl ConfigError {
    fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            location: String::new(),
            message: message.into(),
        }
    }

    fn with_path(self, path: &Path) -> Self {
        let p = path.display();
        match self {
            ConfigError::Parse { location, message } => ConfigError::Parse {
                location: format!("{p}:{location}"),
                message,
            },
            ConfigError::Invalid { location, message } => ConfigError::Invalid {
                location: format!("{p}: {location}"),
                message,
            },
            other => other,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    redis: Vec<RawRedis>,
    #[serde(default)]
    check: RawCheck,
    agent: Option<RawAgent>,
    http: Option<RawHttp>,
    repair: Option<RawRepair>,
    maintenance: Option<RawMaintenance>,
    haproxy: Option<RawHaproxy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    file: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHaproxy {
    runtime_api: Vec<String>,
    servers: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepair {
    kill_stale_connections: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    kill_interval: Option<Duration>,
    kill_attempts: Option<u32>,
    pause_writes_on_failover: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pause_for: Option<Duration>,
    command: Option<Vec<String>>,
    command_on: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    command_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    command_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    command_cooldown: Option<Duration>,
    lock_key: Option<String>,
    dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    pid: Option<u32>,
    pid_file: Option<PathBuf>,
    process: Option<String>,
    namespace: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    name: Option<String>,
    master_name: String,
    sentinels: Vec<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    sentinel_username: Option<String>,
    sentinel_password_file: Option<PathBuf>,
    sentinel_password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    fast_interval: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    unknown_hold: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    disconnected_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stale_master_grace: Option<Duration>,
    write_probe: Option<bool>,
    sentinel_events: Option<bool>,
    probe_key_prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    probe_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: String,
    out_reply: Option<String>,
    #[serde(default)]
    reply: std::collections::BTreeMap<String, String>,
    state_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub groups: Vec<GroupConfig>,
    pub check: CheckConfig,
    pub agent: Option<AgentConfig>,
    pub http: Option<HttpConfig>,
    pub repair: RepairConfig,
    /// The operator's maintenance switch (`[maintenance]`); off unless configured.
    pub maintenance: MaintenanceConfig,
    /// Push to HAProxy's runtime API (`[haproxy]`); off unless configured.
    pub haproxy: Option<HaproxyConfig>,
}

/// Repair (opt-in): what rolecall may do beyond telling load balancers.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// `CLIENT KILL` the node's connections on a server that is not Sentinel's master.
    pub kill_stale_connections: bool,
    /// At most one kill round per server this often.
    pub kill_interval: Duration,
    /// Kill rounds on one server before rolecall concludes the node does not ask Sentinel.
    pub kill_attempts: u32,
    /// When a sentinel starts promoting a replica of the verified master, pause writes on that
    /// master (`CLIENT PAUSE <pause_for> WRITE`): writes it would acknowledge and then lose
    /// wait instead, until the kill repair moves the node. Defaults to `kill_stale_connections`.
    pub pause_writes_on_failover: bool,
    pub pause_for: Duration,
    pub command: Option<RepairCommand>,
}

#[derive(Debug, Clone)]
pub struct RepairCommand {
    pub argv: Vec<String>,
    /// Verdicts that start the clock.
    pub on: Vec<Verdict>,
    /// How long the verdict must persist before the command runs.
    pub after: Duration,
    pub timeout: Duration,
    pub cooldown: Duration,
    /// Fleet-wide lock key on Sentinel's master (`SET key node NX PX ttl`).
    pub lock_key: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub selector: NodeSelector,
}

/// One Sentinel-managed master.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: String,
    pub master_name: String,
    pub sentinels: Vec<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub fast_interval: Duration,
    pub policy: Policy,
    pub write_probe: bool,
    /// Subscribe to Sentinel events and check at once on a failover (polling stays the fallback).
    pub sentinel_events: bool,
    pub probe_key_prefix: String,
    pub probe_ttl: Duration,
}

/// HAProxy agent reply words (see `agent`), validated to words HAProxy accepts.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// Reply word per verdict that takes the node out of rotation.
    pub out_reply: std::collections::BTreeMap<Verdict, String>,
    /// Where rolecall remembers that it holds a drain/maint in HAProxy, across restarts.
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// `[maintenance]`, validated.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceConfig {
    /// The flag file: maintenance while it exists.
    pub file: Option<PathBuf>,
    /// The bearer token of `POST`/`DELETE /maintenance`; `None` disables the endpoint.
    pub token: Option<Secret>,
}

/// `[haproxy]`, validated.
#[derive(Debug, Clone)]
pub struct HaproxyConfig {
    /// Every HAProxy in front of this node.
    pub runtime_api: Vec<RuntimeApi>,
    /// This node's server lines, in every HAProxy.
    pub servers: Vec<ServerRef>,
    /// Connect, send and read, per HAProxy and change.
    pub timeout: Duration,
}

/// Where a runtime API listens (`stats socket` with `level admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeApi {
    /// `"127.0.0.1:9999"`, `"lb1:9999"`.
    Tcp(String),
    /// `"/run/haproxy/admin.sock"`.
    Unix(PathBuf),
}

impl RuntimeApi {
    pub fn parse(s: &str) -> Option<RuntimeApi> {
        if s.starts_with('/') {
            return Some(RuntimeApi::Unix(PathBuf::from(s)));
        }
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
            .then(|| RuntimeApi::Tcp(s.to_string()))
    }
}

impl fmt::Display for RuntimeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeApi::Tcp(a) => f.write_str(a),
            RuntimeApi::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `backend/server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub backend: String,
    pub server: String,
}

impl ServerRef {
    /// Names that are safe on a runtime API command line: printable, no blanks, and no `;`
    /// (which separates commands there).
    pub fn parse(s: &str) -> Option<ServerRef> {
        let (backend, server) = s.split_once('/')?;
        let ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_graphic() && c != ';' && c != '/')
        };
        (ok(backend) && ok(server)).then(|| ServerRef {
            backend: backend.to_string(),
            server: server.to_string(),
        })
    }
}

impl fmt::Display for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

/// Words HAProxy's agent check understands as an administrative or operational state
/// (HAProxy configuration.txt, "agent-check"). `up`/`ready` are rolecall's own and not
/// configurable.
const OUT_WORDS: &[&str] = &["drain", "down", "maint", "fail", "stopped"];

pub const EXAMPLE: &str = include_str!("../rolecall.example.toml");

impl Config {
    /// Reads and validates the file at `path`; errors carry the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Config::from_toml_str(&text).map_err(|e| e.with_path(path))
    }

    /// Parses and validates configuration text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                location,
                message: e.message().trim().to_string(),
            }
        })?;
        validate(raw)
    }

    /// Refuses a configuration `rolecall run` cannot serve: without `[agent]` and `[http]` it
    /// would have nobody to tell (`rolecall check` needs neither).
    pub fn check_runnable(&self) -> Result<(), ConfigError> {
        if self.agent.is_none() && self.http.is_none() {
            return Err(ConfigError::invalid(
                "neither [agent] nor [http] is configured: rolecall run would have nobody to tell",
            ));
        }
        Ok(())
    }

    /// The group with this name, if any.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn parse_listen(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::invalid(format!(
            "{what}.listen: {s:?} is not an address like \"0.0.0.0:7070\" or \"[::]:7070\""
        ))
    })
}

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

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let n = &raw.node;
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
    if n.namespace == Some(true) {
        selectors.push(NodeSelector::Namespace);
    }
    let selector = match selectors.len() {
        1 => selectors.remove(0),
        0 => {
            return Err(ConfigError::invalid(
                "node: say how to find the node: one of pid, pid_file, process or namespace = true",
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                "node: pid, pid_file, process and namespace are alternatives; set exactly one",
            ));
        }
    };
    let node = NodeConfig {
        name: n.name.clone().unwrap_or_else(host_name),
        selector,
    };
    if node.name.is_empty() {
        return Err(ConfigError::invalid("node.name: empty"));
    }

    if raw.redis.is_empty() {
        return Err(ConfigError::invalid(
            "no [[redis]] group: add one with master_name and sentinels",
        ));
    }
    let mut groups: Vec<GroupConfig> = Vec::new();
    for r in raw.redis {
        let name = r.name.unwrap_or_else(|| r.master_name.clone());
        let what = format!("redis {name:?}");
        if r.master_name.is_empty() {
            return Err(ConfigError::invalid(format!("{what}: empty master_name")));
        }
        if r.sentinels.is_empty() {
            return Err(ConfigError::invalid(format!(
                "{what}: sentinels is empty; list every sentinel (\"host:port\")"
            )));
        }
        for s in &r.sentinels {
            if !valid_host_port(s) {
                return Err(ConfigError::invalid(format!(
                    "{what}: sentinel {s:?} is not \"host:port\""
                )));
            }
        }
        let mut uniq = r.sentinels.clone();
        uniq.sort();
        uniq.dedup();
        if uniq.len() != r.sentinels.len() {
            return Err(ConfigError::invalid(format!(
                "{what}: a sentinel is listed twice (it would vote twice)"
            )));
        }
        if groups.iter().any(|g| g.name == name) {
            return Err(ConfigError::invalid(format!(
                "{what}: two [[redis]] groups share this name"
            )));
        }
        groups.push(GroupConfig {
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
        });
    }

    let c = raw.check;
    let interval = c.interval.unwrap_or(Duration::from_secs(1));
    let timeout = c.timeout.unwrap_or(Duration::from_millis(300));
    let fast_interval = c.fast_interval.unwrap_or(Duration::from_millis(100));
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
    let rise = c.rise.unwrap_or(2);
    let fall = c.fall.unwrap_or(2);
    if rise == 0 || fall == 0 {
        return Err(ConfigError::invalid(
            "check.rise and check.fall: must be at least 1",
        ));
    }
    let probe_ttl = c.probe_ttl.unwrap_or(Duration::from_secs(10));
    if probe_ttl < Duration::from_millis(1) {
        return Err(ConfigError::invalid(
            "check.probe_ttl: must be at least 1ms",
        ));
    }
    let probe_key_prefix = c.probe_key_prefix.unwrap_or_else(|| "rolecall".to_string());
    if probe_key_prefix.is_empty() {
        return Err(ConfigError::invalid("check.probe_key_prefix: empty"));
    }
    let check = CheckConfig {
        interval,
        timeout,
        fast_interval,
        policy: Policy {
            rise,
            fall,
            unknown_hold: c.unknown_hold.unwrap_or(Duration::from_secs(30)),
            disconnected_grace: c.disconnected_grace.unwrap_or(Duration::from_secs(5)),
            stale_master_grace: c.stale_master_grace.unwrap_or(Duration::from_secs(15)),
        },
        write_probe: c.write_probe.unwrap_or(true),
        sentinel_events: c.sentinel_events.unwrap_or(true),
        probe_key_prefix,
        probe_ttl,
    };

    let agent = match raw.agent {
        None => None,
        Some(a) => {
            let listen = parse_listen("agent", &a.listen)?;
            let default = a.out_reply.unwrap_or_else(|| "drain".to_string());
            check_out_word("agent.out_reply", &default)?;
            let mut out_reply = std::collections::BTreeMap::new();
            for v in Verdict::ALL {
                if !v.in_rotation_by_default() {
                    out_reply.insert(v, default.clone());
                }
            }
            for (k, word) in a.reply {
                let v = Verdict::from_name(&k).ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "agent.reply: {k:?} is not a verdict (one of {})",
                        Verdict::ALL.map(|v| v.as_str()).join(", ")
                    ))
                })?;
                if v.in_rotation_by_default() {
                    return Err(ConfigError::invalid(format!(
                        "agent.reply.{k}: this verdict keeps the node in rotation; only verdicts that take it out have a reply"
                    )));
                }
                check_out_word(&format!("agent.reply.{k}"), &word)?;
                out_reply.insert(v, word);
            }
            Some(AgentConfig {
                listen,
                out_reply,
                state_file: a.state_file,
            })
        }
    };
    let http = match raw.http {
        None => None,
        Some(h) => Some(HttpConfig {
            listen: parse_listen("http", &h.listen)?,
        }),
    };
    let repair = validate_repair(raw.repair.unwrap_or_default())?;
    let maintenance = validate_maintenance(raw.maintenance.unwrap_or_default(), http.is_some())?;
    let haproxy = match raw.haproxy {
        None => None,
        Some(h) => Some(validate_haproxy(h, agent.is_some())?),
    };
    Ok(Config {
        node,
        groups,
        check,
        agent,
        http,
        repair,
        maintenance,
        haproxy,
    })
}

fn validate_maintenance(m: RawMaintenance, http: bool) -> Result<MaintenanceConfig, ConfigError> {
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
    })
}

fn validate_haproxy(h: RawHaproxy, agent: bool) -> Result<HaproxyConfig, ConfigError> {
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
    let timeout = h.timeout.unwrap_or(Duration::from_millis(500));
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

fn validate_repair(r: RawRepair) -> Result<RepairConfig, ConfigError> {
    let kill_interval = r.kill_interval.unwrap_or(Duration::from_secs(1));
    if kill_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "repair.kill_interval: must be at least 100ms",
        ));
    }
    let kill_attempts = r.kill_attempts.unwrap_or(3);
    if kill_attempts == 0 {
        return Err(ConfigError::invalid(
            "repair.kill_attempts: must be at least 1",
        ));
    }
    let command = match r.command {
        None => None,
        Some(argv) if argv.is_empty() || argv[0].is_empty() => {
            return Err(ConfigError::invalid(
                "repair.command: give the program and its arguments, e.g. [\"systemctl\", \"restart\", \"centrifugo\"]",
            ));
        }
        Some(argv) => {
            let on = match r.command_on {
                None => vec![Verdict::StuckOnReplica, Verdict::StaleMaster],
                Some(names) => names
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
                    .collect::<Result<_, _>>()?,
            };
            let timeout = r.command_timeout.unwrap_or(Duration::from_secs(60));
            if timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "repair.command_timeout: must be above zero",
                ));
            }
            let lock_key = r
                .lock_key
                .unwrap_or_else(|| "rolecall:repair-lock".to_string());
            if lock_key.is_empty() {
                return Err(ConfigError::invalid("repair.lock_key: empty"));
            }
            Some(RepairCommand {
                argv,
                on,
                after: r.command_after.unwrap_or(Duration::from_secs(30)),
                timeout,
                cooldown: r.command_cooldown.unwrap_or(Duration::from_secs(600)),
                lock_key,
                dry_run: r.dry_run.unwrap_or(false),
            })
        }
    };
    let pause_for = r.pause_for.unwrap_or(Duration::from_secs(3));
    if pause_for < Duration::from_millis(100) || pause_for > Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "repair.pause_for: must be between 100ms and 60s",
        ));
    }
    let kill_stale_connections = r.kill_stale_connections.unwrap_or(false);
    Ok(RepairConfig {
        // The kill moves the node only once Sentinel names the new master; the writes the old
        // master acknowledges between the promotion and then are lost unless they wait.
        pause_writes_on_failover: r.pause_writes_on_failover.unwrap_or(kill_stale_connections),
        pause_for,
        kill_stale_connections,
        kill_interval,
        kill_attempts,
        command,
    })
}

fn check_out_word(what: &str, word: &str) -> Result<(), ConfigError> {
    if OUT_WORDS.contains(&word) {
        Ok(())
    } else {
        Err(ConfigError::invalid(format!(
            "{what}: {word:?} is not an agent word HAProxy accepts for a node out of rotation (one of {})",
            OUT_WORDS.join(", ")
        )))
    }
}

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

impl fmt::Display for CheckConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interval {} timeout {} rise {} fall {}",
            humantime::format_duration(self.interval),
            humantime::format_duration(self.timeout),
            self.policy.rise,
            self.policy.fall
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
[node]
name = "centrifugo-1"          # default: the host name
pid_file = "/run/centrifugo.pid" # or: pid = 1234 / process = "centrifugo" / systemd_unit = "centrifugo.service" / namespace = true

[[redis]]                        # one table per Sentinel-managed master; several for a sharded setup
name = "main"
master_name = "mymaster"
sentinels = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"]

[check]
interval = "1s"
timeout = "300ms"

[agent]
listen = "0.0.0.0:7070"

[http]
listen = "0.0.0.0:7071"
"#;

    #[test]
    fn the_design_example_loads_as_written() {
        let c = Config::from_toml_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.node.name, "centrifugo-1");
        assert_eq!(
            c.node.selector,
            NodeSelector::PidFile("/run/centrifugo.pid".into())
        );
        assert_eq!(c.groups.len(), 1);
        assert_eq!(c.groups[0].sentinels.len(), 3);
        assert_eq!(c.check.interval, Duration::from_secs(1));
        assert_eq!(c.check.timeout, Duration::from_millis(300));
        assert_eq!(c.agent.unwrap().listen.port(), 7070);
        assert_eq!(c.http.unwrap().listen.port(), 7071);
    }

    #[test]
    fn the_shipped_example_loads() {
        let c = Config::from_toml_str(EXAMPLE).unwrap();
        assert!(!c.groups.is_empty());
    }

    #[test]
    fn pid_is_accepted_as_selector() {
        let text = DESIGN_EXAMPLE.replace("pid_file = \"/run/centrifugo.pid\"", "pid = 1234");
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.node.selector, NodeSelector::Pid(1234));
    }

    #[test]
    fn a_misspelt_key_is_reported_with_line_and_column() {
        let text = DESIGN_EXAMPLE.replace("timeout = \"300ms\"", "timout = \"300ms\"");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.starts_with("13:1: "), "{err}");
        assert!(err.contains("timout"), "{err}");
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
        assert_eq!(a.out_reply[&Verdict::StuckOnReplica], "down");
        assert_eq!(a.out_reply[&Verdict::NodeMissing], "drain");
        let bad = DESIGN_EXAMPLE.replace(
            "listen = \"0.0.0.0:7070\"",
            "listen = \"0.0.0.0:7070\"\nreply.ok = \"down\"",
        );
        assert!(Config::from_toml_str(&bad).is_err());
    }

    #[test]
    fn a_config_without_listeners_serves_check_but_not_run() {
        let text = DESIGN_EXAMPLE
            .replace("[agent]\nlisten = \"0.0.0.0:7070\"\n", "")
            .replace("[http]\nlisten = \"0.0.0.0:7071\"\n", "");
        let c = Config::from_toml_str(&text).unwrap();
        assert!(c.agent.is_none() && c.http.is_none());
        assert!(
            c.check_runnable()
                .unwrap_err()
                .to_string()
                .contains("nobody to tell")
        );
        assert!(
            Config::from_toml_str(DESIGN_EXAMPLE)
                .unwrap()
                .check_runnable()
                .is_ok()
        );
    }

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

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn haproxy_addresses_and_server_names_parse() {
        for bad in ["node1", "a/b;shutdown", "a /b", "/b", "a/", "a/b/c"] {
            assert!(ServerRef::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            RuntimeApi::parse("/run/haproxy/admin.sock"),
            Some(RuntimeApi::Unix("/run/haproxy/admin.sock".into()))
        );
        assert_eq!(
            RuntimeApi::parse("127.0.0.1:9999"),
            Some(RuntimeApi::Tcp("127.0.0.1:9999".into()))
        );
        assert!(RuntimeApi::parse("9999").is_none());
        assert!(RuntimeApi::parse("lb:0").is_none());
    }
}
