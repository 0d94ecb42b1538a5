//! The raw stage: the TOML file exactly as written. Every table rejects keys it does not know
//! (`deny_unknown_fields`, so a misspelt key is an error with its line and column, not a
//! silently ignored setting), and every key the file may omit is an `Option`: no default is
//! applied here. The defaults live in `defaults`, the decisions in `validate` and `opt_in`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) node: RawNode,
    #[serde(default)]
    pub(super) redis: Vec<RawRedis>,
    #[serde(default)]
    pub(super) check: RawCheck,
    pub(super) agent: Option<RawAgent>,
    pub(super) http: Option<RawHttp>,
    pub(super) repair: Option<RawRepair>,
    pub(super) maintenance: Option<RawMaintenance>,
    pub(super) haproxy: Option<RawHaproxy>,
    pub(super) fleet: Option<RawFleet>,
    pub(super) log: Option<RawLog>,
}

/// `[log]`: what SIGHUP may change about the logs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
}

/// `[fleet]`: the fleet guard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) guard: Option<bool>,
    pub(super) name: Option<String>,
    pub(super) floor: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub(super) window: Option<Duration>,
}

/// `[node]`: which process is the node.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) process: Option<String>,
    pub(super) systemd_unit: Option<String>,
    pub(super) namespace: Option<bool>,
    pub(super) state_dir: Option<PathBuf>,
}

/// One `[[redis]]` table: a Sentinel-managed master.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) name: Option<String>,
    pub(super) master_name: String,
    pub(super) sentinels: Vec<String>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) sentinel_username: Option<String>,
    pub(super) sentinel_password_file: Option<PathBuf>,
    pub(super) sentinel_password_env: Option<String>,
    pub(super) replica_reads: Option<bool>,
    /// `[redis.tls]`: TLS to the data servers (and to the sentinels, unless `sentinel_tls`).
    pub(super) tls: Option<RawTls>,
    /// `[redis.sentinel_tls]`: TLS to the sentinels, where it differs.
    pub(super) sentinel_tls: Option<RawTls>,
}

/// `[redis.tls]` / `[redis.sentinel_tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) enabled: Option<bool>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
}

/// `[check]`: timing, the verdict policy and the write probe.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(default, with = "humantime_serde")]
    pub(super) interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) fast_interval: Option<Duration>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) unknown_hold: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) disconnected_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) stale_master_grace: Option<Duration>,
    pub(super) write_probe: Option<bool>,
    pub(super) sentinel_events: Option<bool>,
    pub(super) probe_key_prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) probe_ttl: Option<Duration>,
}

/// `[agent]`: the HAProxy agent-check server. The words stay text here, so that a wrong one
/// is refused by validation with the list of words HAProxy accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) listen: String,
    pub(super) out_reply: Option<String>,
    /// `reply.<verdict> = "<word>"`.
    #[serde(default)]
    pub(super) reply: BTreeMap<String, String>,
    pub(super) state_file: Option<PathBuf>,
}

/// `[http]`: the probe and status endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: String,
}

/// `[repair]` (opt-in).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepair {
    pub(super) kill_stale_connections: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub(super) kill_interval: Option<Duration>,
    pub(super) kill_attempts: Option<u32>,
    pub(super) pause_writes_on_failover: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub(super) pause_for: Option<Duration>,
    pub(super) fence_old_master: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub(super) fence_lease: Option<Duration>,
    pub(super) command: Option<Vec<String>>,
    pub(super) command_on: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub(super) command_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) command_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) command_cooldown: Option<Duration>,
    pub(super) lock_key: Option<String>,
    pub(super) dry_run: Option<bool>,
}

/// `[maintenance]` (opt-in): the operator's switch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    pub(super) file: Option<PathBuf>,
    pub(super) token_file: Option<PathBuf>,
}

/// `[haproxy]` (opt-in): the push to HAProxy's runtime API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHaproxy {
    pub(super) runtime_api: Vec<String>,
    pub(super) servers: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) timeout: Option<Duration>,
}
