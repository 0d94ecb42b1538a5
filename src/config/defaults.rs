//! The value of every key the file may leave out, in one place (rolecall.example.toml shows
//! the same values). Two defaults depend on other keys and are applied where those are
//! validated: `node.name` is the host name, and `repair.pause_writes_on_failover` follows
//! `repair.kill_stale_connections`. A `[[redis]]` table's `name` is its `master_name`.

use std::time::Duration;

use crate::verdict::Verdict;

use super::OutWord;

/// `redis.replica_reads`: off; a node connection on a replica is `stuck_on_replica`.
pub(crate) const REDIS_REPLICA_READS: bool = false;

/// `check.interval`: time between checks.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// `check.timeout`: each connect and each command; must stay below the interval.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_millis(300);
/// `check.fast_interval`: the next check this soon while a verdict change awaits confirmation.
pub(crate) const CHECK_FAST_INTERVAL: Duration = Duration::from_millis(100);
/// `check.rise`: consecutive checks to return to `ok`.
pub(crate) const CHECK_RISE: u32 = 2;
/// `check.fall`: consecutive checks for any other change.
pub(crate) const CHECK_FALL: u32 = 2;
/// `check.unknown_hold`: while rolecall cannot tell, the last state holds this long, then
/// rolecall fails open.
pub(crate) const CHECK_UNKNOWN_HOLD: Duration = Duration::from_secs(30);
/// `check.disconnected_grace`: a node without connections stays in rotation this long
/// (reconnects are normal).
pub(crate) const CHECK_DISCONNECTED_GRACE: Duration = Duration::from_secs(5);
/// `check.stale_master_grace`: a node on a server that still claims `master` stays in
/// rotation this long.
pub(crate) const CHECK_STALE_MASTER_GRACE: Duration = Duration::from_secs(15);
/// `check.write_probe`: `SET <prefix>:<node> <ms> PX <ttl>` on the master at every check.
pub(crate) const CHECK_WRITE_PROBE: bool = true;
/// `check.sentinel_events`: subscribe to Sentinel events and check at once on a failover.
pub(crate) const CHECK_SENTINEL_EVENTS: bool = true;
/// `check.probe_key_prefix`.
pub(crate) const CHECK_PROBE_KEY_PREFIX: &str = "rolecall";
/// `check.probe_ttl`: the write probe's key expires after this long.
pub(crate) const CHECK_PROBE_TTL: Duration = Duration::from_secs(10);

/// `agent.out_reply`: the word for a node out of rotation, and for every verdict without a
/// `reply.<verdict>` of its own. `drain` lets established connections finish.
pub(crate) const AGENT_OUT_REPLY: OutWord = OutWord::Drain;

/// `repair.kill_stale_connections`: off; repair is opt-in.
pub(crate) const REPAIR_KILL_STALE_CONNECTIONS: bool = false;
/// `repair.kill_interval`: at most one kill round per server this often.
pub(crate) const REPAIR_KILL_INTERVAL: Duration = Duration::from_secs(1);
/// `repair.kill_attempts`: rounds before concluding the node does not ask Sentinel.
pub(crate) const REPAIR_KILL_ATTEMPTS: u32 = 3;
/// `repair.pause_for`: how long a failover pauses writes on the old master.
pub(crate) const REPAIR_PAUSE_FOR: Duration = Duration::from_secs(3);
/// `repair.fence_lease`: each pause on the old master lasts this long unless renewed; a
/// rolecall that stops renewing releases it within this.
pub(crate) const REPAIR_FENCE_LEASE: Duration = Duration::from_secs(2);
/// `repair.command_on`: the verdicts that start the command's clock.
pub(crate) const REPAIR_COMMAND_ON: [Verdict; 2] = [Verdict::StuckOnReplica, Verdict::StaleMaster];
/// `repair.command_after`: how long the verdict must persist before the command runs.
pub(crate) const REPAIR_COMMAND_AFTER: Duration = Duration::from_secs(30);
/// `repair.command_timeout`.
pub(crate) const REPAIR_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// `repair.command_cooldown`: at least this long between two runs.
pub(crate) const REPAIR_COMMAND_COOLDOWN: Duration = Duration::from_secs(600);
/// `repair.lock_key`: the fleet-wide lock on the master, one node at a time.
pub(crate) const REPAIR_LOCK_KEY: &str = "rolecall:repair-lock";
/// `repair.dry_run`.
pub(crate) const REPAIR_DRY_RUN: bool = false;

/// `haproxy.timeout`: connect, send and read, per HAProxy and change.
pub(crate) const HAPROXY_TIMEOUT: Duration = Duration::from_millis(500);

/// `fleet.guard`: on; no shared condition takes the fleet below its floor.
pub(crate) const FLEET_GUARD: bool = true;
/// `fleet.floor`: the share of the fleet recently in rotation that stays in.
pub(crate) const FLEET_FLOOR: f64 = 0.5;
/// `fleet.window`: how recently a node must have been in rotation to count in the fleet.
pub(crate) const FLEET_WINDOW: Duration = Duration::from_secs(60);

/// `node.state_dir` when systemd gives no `$STATE_DIRECTORY`.
pub(crate) const NODE_STATE_DIR: &str = "/var/lib/rolecall";
