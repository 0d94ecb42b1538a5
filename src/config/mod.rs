//! Configuration: the TOML file as written and the validated [`Config`] the rest of rolecall
//! uses.
//!
//! Two stages, as ripgrep does with its flags: the raw stage only mirrors the file, the
//! validated stage holds decisions (defaults applied, durations checked against each other,
//! secrets read from their files). [`Config::from_toml_str`] is what tests call;
//! [`Config::load`] opens the file and puts its path in front of every error.
//!
//! - `raw`: the file as written (serde, unknown keys rejected, nothing defaulted).
//! - `defaults`: the value of every key the file may leave out, documented in one place.
//! - `validate`: raw to validated, one validator per section; [`Config`] assembled from them.
//! - `opt_in`: the validators of the opt-in sections, `[repair]`, `[maintenance]`, `[haproxy]`.
//! - `reply`: [`OutWord`], the agent's words for a node out of rotation and what each one
//!   does in HAProxy.
//! - `show`: the effective configuration as TOML, secrets redacted (`rolecall config show`).
//! - `reload`: what SIGHUP may change while rolecall runs, and what needs a restart.
//! - here: the validated types, [`ConfigError`], loading, and the shipped [`EXAMPLE`].

pub(crate) mod defaults;
mod opt_in;
mod raw;
mod reload;
mod reply;
mod show;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use crate::sockets::NodeSelector;
use crate::tls::Tls;
use crate::verdict::{Policy, Verdict};

use raw::RawConfig;

pub use reload::{Reload, reload};
pub use reply::OutWord;
pub use show::REDACTED;

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
    /// The fleet guard (`[fleet]`); on by default.
    pub fleet: FleetConfig,
    /// `[log]`.
    pub log: LogConfig,
}

/// `[log]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// The level (tracing's directives); `None`: `ROLECALL_LOG`, else `info`.
    pub level: Option<String>,
}

impl LogConfig {
    /// The level to log at: the file's, else `ROLECALL_LOG` (`from_env`), else `info`.
    pub fn effective_level(&self, from_env: Option<&str>) -> String {
        self.level
            .as_deref()
            .or(from_env.filter(|l| !l.trim().is_empty()))
            .unwrap_or(crate::logs::DEFAULT_LEVEL)
            .to_string()
    }
}

/// The fleet guard (`[fleet]`): the rolecalls that share a registry name are one fleet, and
/// none takes its node out, on a condition they may all share, below the fleet's floor.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub guard: bool,
    /// The registry's name (the key `<probe_key_prefix>:fleet:<name>` on the first group's
    /// master): one per fleet of nodes behind the same backend.
    pub name: String,
    /// The share of the fleet recently in rotation that the guard keeps in (0 < floor ≤ 1;
    /// never fewer than one node).
    pub floor: f64,
    /// A node in rotation (or out only on a shared condition) within this long is part of the
    /// fleet; a record older than this is not counted as in rotation.
    pub window: Duration,
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
    /// Once Sentinel's new master is established, pause writes on the old one while it still
    /// claims master (`CLIENT PAUSE <fence_lease> WRITE`, renewed each check). Defaults to
    /// `kill_stale_connections`.
    pub fence_old_master: bool,
    pub fence_lease: Duration,
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
    /// Where rolecall keeps what must survive a restart (whose drain HAProxy holds, the HTTP
    /// maintenance switch); `None`: nowhere (`state_dir = ""`).
    pub state_dir: Option<PathBuf>,
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
    /// The node reads from replicas on purpose (Centrifugo's `replica_client`, ioredis's
    /// `scaleReads`): a connection on a replica is then not by itself `stuck_on_replica`; the
    /// node is, when it has none to Sentinel's master or sends a write on a replica (see the
    /// README's Verdicts).
    pub replica_reads: bool,
    /// TLS to the data servers; `None`: plaintext.
    pub tls: Option<Arc<Tls>>,
    /// TLS to the sentinels; `None`: plaintext.
    pub sentinel_tls: Option<Arc<Tls>>,
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

/// `[agent]`, validated: where the HAProxy agent check is served, and the word it answers for
/// each verdict that takes the node out.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// Reply word per verdict that takes the node out of rotation.
    pub out_reply: BTreeMap<Verdict, OutWord>,
    /// Where rolecall remembers that it holds a drain/maint in HAProxy, across restarts.
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// `[maintenance]`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenanceConfig {
    /// The flag file: maintenance while it exists.
    pub file: Option<PathBuf>,
    /// The bearer token of `POST`/`DELETE /maintenance`; `None` disables the endpoint.
    pub token: Option<Secret>,
    /// Where the HTTP switch is kept across restarts (in `[node] state_dir`).
    pub state_file: Option<PathBuf>,
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

/// The annotated example configuration (rolecall.example.toml), which loads as it is.
pub const EXAMPLE: &str = include_str!("../../rolecall.example.toml");

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
        validate::validate(raw)
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const DESIGN_EXAMPLE: &str = r#"
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
    fn a_misspelt_key_is_reported_with_line_and_column() {
        let text = DESIGN_EXAMPLE.replace("timeout = \"300ms\"", "timout = \"300ms\"");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.starts_with("13:1: "), "{err}");
        assert!(err.contains("timout"), "{err}");
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
    fn replica_reads_is_off_unless_a_group_says_so_and_must_be_a_boolean() {
        let c = Config::from_toml_str(DESIGN_EXAMPLE).unwrap();
        assert!(!c.groups[0].replica_reads);
        let on = DESIGN_EXAMPLE.replace(
            "master_name = \"mymaster\"\n",
            "master_name = \"mymaster\"\nreplica_reads = true\n",
        );
        assert!(Config::from_toml_str(&on).unwrap().groups[0].replica_reads);
        let bad = on.replace("replica_reads = true", "replica_reads = \"yes\"");
        let err = Config::from_toml_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("replica_reads") || err.contains("boolean"),
            "{err}"
        );
        let shipped = EXAMPLE.replace("# replica_reads = false", "replica_reads = true");
        assert_ne!(shipped, EXAMPLE, "the shipped example shows replica_reads");
        assert!(Config::from_toml_str(&shipped).unwrap().groups[0].replica_reads);
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
