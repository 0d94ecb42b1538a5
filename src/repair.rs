//! Repair (opt-in): what draining cannot do.
//!
//! Draining a node does not stop its writes; making it reconnect does. Two repairs:
//!
//! - **Kill stale connections**: when a node connection goes to a server that is not Sentinel's
//!   master, `CLIENT KILL ADDR <node's address> SKIPME yes` on that server, through rolecall's
//!   own connection, so a Sentinel-aware client re-resolves now instead of writing into the
//!   split-brain window. Exactly the node's connections (matched by address and port as the
//!   server sees them): never rolecall's own, never another client's. Only when Sentinel's
//!   master has been verified (`ROLE` says master), rate-limited per server, and given up after
//!   `kill_attempts` rounds in which the node came straight back to the same server (it does
//!   not ask Sentinel: repair cannot fix it, and the verdict says so).
//! - **Run a command** (e.g. restart the node) once an out-of-rotation verdict has persisted for
//!   a set time, with a timeout, a cooldown, and a fleet-wide lock on the master (`SET key node
//!   NX PX ttl`) so that no two nodes of a fleet run it at once. A dry-run mode only logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

use crate::config::{RepairCommand, RepairConfig};
use crate::conn::{ErrorClass, ServerAddr, ServerError, command};
use crate::snapshot::KillReport;
use crate::verdict::Verdict;

/// Kill rounds on one server.
#[derive(Debug, Clone)]
struct Rounds {
    last: Instant,
    count: u32,
}

/// State of the kill repair across checks.
#[derive(Debug, Default)]
pub struct Killer {
    rounds: HashMap<ServerAddr, Rounds>,
    acl_reported: bool,
    /// The last kill failure, shown until a kill succeeds or the node leaves stale servers.
    last_error: Option<String>,
}

/// Decides which servers get a kill round now: pure, table-tested.
///
/// `stale` lists each server that is not Sentinel's master with the node's connections on it.
pub fn plan(
    rounds: &HashMap<ServerAddr, (Instant, u32)>,
    stale: &[(ServerAddr, Vec<SocketAddr>)],
    cfg: &RepairConfig,
    now: Instant,
) -> (Vec<ServerAddr>, Vec<ServerAddr>) {
    let mut kill = Vec::new();
    let mut given_up = Vec::new();
    for (server, conns) in stale {
        if conns.is_empty() {
            continue;
        }
        match rounds.get(server) {
            Some((_, n)) if *n >= cfg.kill_attempts => given_up.push(server.clone()),
            Some((last, _)) if now.saturating_duration_since(*last) < cfg.kill_interval => {}
            _ => kill.push(server.clone()),
        }
    }
    (kill, given_up)
}

impl Killer {
    /// Kills the node's connections on stale servers. `conns` gives rolecall's own connection
    /// to each server (made by the check that found the problem).
    pub async fn repair(
        &mut self,
        cfg: &RepairConfig,
        stale: &[(ServerAddr, Vec<SocketAddr>)],
        conns: &HashMap<ServerAddr, MultiplexedConnection>,
        timeout: Duration,
        now: Instant,
    ) -> KillReport {
        // Forget servers the node has left: a later return starts a fresh count.
        self.rounds
            .retain(|s, _| stale.iter().any(|(t, c)| t == s && !c.is_empty()));
        let view: HashMap<ServerAddr, (Instant, u32)> = self
            .rounds
            .iter()
            .map(|(k, r)| (k.clone(), (r.last, r.count)))
            .collect();
        let (kill, given_up) = plan(&view, stale, cfg, now);
        let mut report = KillReport {
            given_up: given_up.iter().map(ToString::to_string).collect(),
            ..KillReport::default()
        };
        for server in kill {
            let Some(mut conn) = conns.get(&server).cloned() else {
                continue;
            };
            let targets = stale
                .iter()
                .find(|(s, _)| *s == server)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            let entry = self.rounds.entry(server.clone()).or_insert(Rounds {
                last: now,
                count: 0,
            });
            entry.last = now;
            entry.count += 1;
            for addr in targets {
                let mut kill = redis::cmd("CLIENT");
                kill.arg("KILL")
                    .arg("ADDR")
                    .arg(addr.to_string())
                    .arg("SKIPME")
                    .arg("yes");
                match command(&mut conn, &server, "server", timeout, &kill).await {
                    Ok(v) => {
                        let n = match v {
                            redis::Value::Int(n) => n,
                            _ => 0,
                        };
                        tracing::info!(
                            server = %server,
                            client = %addr,
                            killed = n,
                            round = entry.count,
                            "repair: killed the node's connection on a server that is not Sentinel's master"
                        );
                        if n > 0 {
                            report.killed.push(format!("{addr} on {server}"));
                        }
                        self.last_error = None;
                    }
                    Err(e) if matches!(e.class, ErrorClass::NoPerm | ErrorClass::Auth) => {
                        if !self.acl_reported {
                            tracing::error!(
                                server = %server,
                                error = %e,
                                "repair: CLIENT KILL refused; grant rolecall's user +client|kill to enable kill_stale_connections"
                            );
                            self.acl_reported = true;
                        }
                        self.last_error = Some(format!("CLIENT KILL refused: {e}"));
                    }
                    Err(e) => {
                        tracing::warn!(server = %server, client = %addr, error = %e, "repair: CLIENT KILL failed");
                        self.last_error = Some(e.to_string());
                    }
                }
            }
        }
        if self.rounds.is_empty() {
            self.last_error = None;
        }
        report.error = self.last_error.clone();
        report
    }
}

/// The note the verdict's reason gets when repair is on.
pub fn note(report: &KillReport, attempts: u32) -> Option<String> {
    if !report.given_up.is_empty() {
        return Some(format!(
            "repair cannot fix it: the node came back to {} after {attempts} kill round(s) (it does not ask Sentinel)",
            report.given_up.join(", ")
        ));
    }
    if !report.killed.is_empty() {
        return Some(format!(
            "repair: killed {} so the node re-asks Sentinel",
            report.killed.join(", ")
        ));
    }
    None
}

/// State of the command repair.
#[derive(Debug, Default)]
pub struct CommandRunner {
    running: Arc<AtomicBool>,
    last_run: Option<Instant>,
    /// The episode (start of the verdict) the command last ran for.
    ran_for: Option<Instant>,
}

/// Whether the command is due: pure.
pub fn command_due(
    cmd: &RepairCommand,
    verdict: Verdict,
    since: Instant,
    ran_for: Option<Instant>,
    last_run: Option<Instant>,
    now: Instant,
) -> bool {
    cmd.on.contains(&verdict)
        && now.saturating_duration_since(since) >= cmd.after
        && ran_for != Some(since)
        && last_run.is_none_or(|t| now.saturating_duration_since(t) >= cmd.cooldown)
}

impl CommandRunner {
    /// Starts the command in the background if it is due. `master` is a connection to
    /// Sentinel's verified master for the fleet lock.
    #[allow(clippy::too_many_arguments)]
    pub fn maybe_run(
        &mut self,
        cmd: &RepairCommand,
        node: &str,
        verdict: Verdict,
        since: Instant,
        master: Option<(ServerAddr, MultiplexedConnection)>,
        timeout: Duration,
        now: Instant,
    ) {
        if self.running.load(Ordering::SeqCst)
            || !command_due(cmd, verdict, since, self.ran_for, self.last_run, now)
        {
            return;
        }
        if cmd.dry_run {
            tracing::warn!(argv = ?cmd.argv, verdict = %verdict, "repair (dry run): would run the command");
            self.ran_for = Some(since);
            self.last_run = Some(now);
            return;
        }
        let Some((master_addr, conn)) = master else {
            tracing::warn!(verdict = %verdict, "repair: no verified master to hold the fleet lock; command not run");
            return;
        };
        self.running.store(true, Ordering::SeqCst);
        let running = self.running.clone();
        let cmd = cmd.clone();
        let node = node.to_string();
        // The episode is marked at once: a lock held elsewhere means another node is being
        // repaired, and this one waits for its own next episode or the cooldown.
        self.ran_for = Some(since);
        self.last_run = Some(now);
        tokio::spawn(async move {
            run_locked(cmd, node, verdict, master_addr, conn, timeout).await;
            running.store(false, Ordering::SeqCst);
        });
    }
}

fn lock_value(node: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{node}:{ms}")
}

async fn run_locked(
    cmd: RepairCommand,
    node: String,
    verdict: Verdict,
    master: ServerAddr,
    mut conn: MultiplexedConnection,
    timeout: Duration,
) {
    let value = lock_value(&node);
    // The lock outlives the command's timeout, so it never expires while the command runs.
    let ttl = cmd.timeout + Duration::from_secs(10);
    let mut set = redis::cmd("SET");
    set.arg(&cmd.lock_key)
        .arg(&value)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64);
    match command(&mut conn, &master, "server", timeout, &set).await {
        Ok(redis::Value::Nil) => {
            let mut get = redis::cmd("GET");
            get.arg(&cmd.lock_key);
            let holder = match command(&mut conn, &master, "server", timeout, &get).await {
                Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => "another node".to_string(),
            };
            tracing::warn!(lock = %cmd.lock_key, holder = %holder, "repair: fleet lock held elsewhere; command not run");
            return;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(lock = %cmd.lock_key, error = %e, "repair: cannot take the fleet lock; command not run");
            return;
        }
    }
    tracing::warn!(argv = ?cmd.argv, verdict = %verdict, lock = %cmd.lock_key, "repair: running the command");
    let started = Instant::now();
    let result = run_command(&cmd.argv, cmd.timeout).await;
    match &result {
        Ok(status) if status.success() => {
            tracing::info!(argv = ?cmd.argv, elapsed_ms = started.elapsed().as_millis() as u64, "repair: command succeeded")
        }
        Ok(status) => {
            tracing::error!(argv = ?cmd.argv, status = %status, "repair: command failed")
        }
        Err(e) => tracing::error!(argv = ?cmd.argv, error = %e, "repair: command did not complete"),
    }
    // Release only our own lock: compare and delete in one step.
    let mut release = redis::cmd("EVAL");
    release
        .arg("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end")
        .arg(1)
        .arg(&cmd.lock_key)
        .arg(&value);
    if let Err(e) = command(&mut conn, &master, "server", timeout, &release).await {
        tracing::warn!(lock = %cmd.lock_key, error = %e, "repair: could not release the fleet lock; it expires by itself");
    }
}

/// Runs `argv` (no shell) under `timeout`; the child is killed when the timeout runs out.
pub async fn run_command(
    argv: &[String],
    timeout: Duration,
) -> Result<std::process::ExitStatus, ServerError> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ServerError::new(
                ErrorClass::Other,
                format!("cannot start {:?}: {e}", argv[0]),
            )
        })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(ServerError::new(ErrorClass::Other, e.to_string())),
        Err(_) => {
            let _ = child.kill().await;
            Err(ServerError::new(
                ErrorClass::Timeout,
                format!("killed after {}", humantime::format_duration(timeout)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RepairConfig {
        RepairConfig {
            kill_stale_connections: true,
            kill_interval: Duration::from_secs(1),
            kill_attempts: 3,
            pause_writes_on_failover: false,
            pause_for: Duration::from_secs(3),
            command: None,
        }
    }

    fn a(s: &str) -> ServerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn kills_are_rate_limited_and_given_up_after_the_attempts() {
        let now = Instant::now();
        let conn: Vec<SocketAddr> = vec!["127.0.0.1:5000".parse().unwrap()];
        let stale = vec![(a("127.0.0.1:6379"), conn)];
        let mut rounds = HashMap::new();
        assert_eq!(
            plan(&rounds, &stale, &cfg(), now).0.len(),
            1,
            "first sight: kill"
        );
        rounds.insert(a("127.0.0.1:6379"), (now, 1));
        assert!(
            plan(&rounds, &stale, &cfg(), now + Duration::from_millis(500))
                .0
                .is_empty(),
            "too soon"
        );
        assert_eq!(
            plan(&rounds, &stale, &cfg(), now + Duration::from_secs(1))
                .0
                .len(),
            1
        );
        rounds.insert(a("127.0.0.1:6379"), (now, 3));
        let (kill, given_up) = plan(&rounds, &stale, &cfg(), now + Duration::from_secs(5));
        assert!(kill.is_empty());
        assert_eq!(given_up, vec![a("127.0.0.1:6379")]);
        let empty = vec![(a("127.0.0.1:6379"), vec![])];
        assert_eq!(plan(&HashMap::new(), &empty, &cfg(), now).0.len(), 0);
    }

    fn command_cfg() -> RepairCommand {
        RepairCommand {
            argv: vec!["true".into()],
            on: vec![Verdict::StuckOnReplica],
            after: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
            lock_key: "k".into(),
            dry_run: false,
        }
    }

    #[test]
    fn the_command_runs_once_per_episode_after_the_delay_and_honours_the_cooldown() {
        let c = command_cfg();
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        assert!(
            !command_due(&c, Verdict::StuckOnReplica, t0, None, None, s(9)),
            "too early"
        );
        assert!(command_due(
            &c,
            Verdict::StuckOnReplica,
            t0,
            None,
            None,
            s(10)
        ));
        assert!(
            !command_due(&c, Verdict::Ok, t0, None, None, s(10)),
            "wrong verdict"
        );
        assert!(
            !command_due(
                &c,
                Verdict::StuckOnReplica,
                t0,
                Some(t0),
                Some(s(10)),
                s(100)
            ),
            "ran for this episode"
        );
        // A new episode within the cooldown waits; after it, runs.
        assert!(!command_due(
            &c,
            Verdict::StuckOnReplica,
            s(20),
            Some(t0),
            Some(s(10)),
            s(40)
        ));
        assert!(command_due(
            &c,
            Verdict::StuckOnReplica,
            s(20),
            Some(t0),
            Some(s(10)),
            s(70)
        ));
    }

    #[tokio::test]
    async fn a_command_that_overruns_its_timeout_is_killed() {
        let r = run_command(&["sleep".into(), "10".into()], Duration::from_millis(100)).await;
        assert_eq!(r.unwrap_err().class, ErrorClass::Timeout);
        let r = run_command(&["true".into()], Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.success());
        assert!(
            run_command(&["/nonexistent/x".into()], Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
