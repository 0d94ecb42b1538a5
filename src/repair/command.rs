//! The command repair: run a command (e.g. restart the node) once an out-of-rotation verdict
//! has persisted for a set time, with a timeout and a cooldown, under a fleet-wide lock on
//! Sentinel's verified master (`SET key node NX PX ttl`) so that no two nodes of a fleet run it
//! at once. Whether it is due is decided by [`command_due`], pure. A dry-run mode only logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

use crate::config::RepairCommand;
use crate::conn::{ErrorClass, ServerAddr, ServerError, command};
use crate::verdict::Verdict;

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
