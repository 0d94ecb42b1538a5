//! The write pause on a failover: when a sentinel starts promoting a replica of the master
//! rolecall verified itself (`+failover-state-send-slaveof-noone`), `CLIENT PAUSE <pause_for>
//! WRITE` on that master, so the writes it would acknowledge and then lose in the split-brain
//! window wait instead, until the kill repair moves the node; `CLIENT UNPAUSE` when the
//! failover is aborted. While the pause holds, the write probe skips that master (it would only
//! wait). Opt-in: `repair.pause_writes_on_failover`.

use std::time::{Duration, Instant};

use crate::config::RepairConfig;
use crate::conn::{ErrorClass, Pool, ServerAddr, command};

use super::GroupRepair;

/// rolecall's own write pause on a master, and when it lapses.
#[derive(Debug, Clone)]
pub(super) struct WritePause {
    master: ServerAddr,
    until: Instant,
}

/// `CLIENT PAUSE <for> WRITE` when a promotion starts, `CLIENT UNPAUSE` when it is aborted.
fn pause_command(pause_for: Duration, starting: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("CLIENT");
    if starting {
        cmd.arg("PAUSE")
            .arg(pause_for.as_millis() as u64)
            .arg("WRITE");
    } else {
        cmd.arg("UNPAUSE");
    }
    cmd
}

impl GroupRepair {
    /// Pauses writes on `old` when a sentinel starts promoting one of its replicas
    /// (`starting`), or lifts the pause when the failover is aborted; only when `old` is the
    /// master this rolecall verified itself (an event alone names nothing).
    pub async fn on_failover(
        &mut self,
        cfg: &RepairConfig,
        pool: &mut Pool,
        verified_master: Option<&ServerAddr>,
        old: &ServerAddr,
        starting: bool,
    ) {
        if verified_master != Some(old) {
            tracing::info!(master = %old, "failover event for a server that is not the verified master; no pause");
            return;
        }
        let Ok((mut conn, fresh)) = pool.connection(old).await else {
            return;
        };
        let cmd = pause_command(cfg.pause_for, starting);
        match command(&mut conn, old, "server", pool.timeout(), &cmd).await {
            Ok(_) => {
                if fresh {
                    pool.keep(old, conn);
                }
                let until = Instant::now() + cfg.pause_for;
                self.pause = starting.then(|| WritePause {
                    master: old.clone(),
                    until,
                });
                // The fence takes this pause over once the new master is established: it
                // renews it while the old master still claims master, and lifts it when
                // Sentinel converts it; an aborted failover ends both.
                if starting && cfg.fence_old_master {
                    self.fence.paused(old, until);
                } else {
                    self.fence.forget(old);
                }
                if starting {
                    tracing::warn!(master = %old, pause_ms = cfg.pause_for.as_millis() as u64, "repair: failover starting; paused writes on the old master");
                } else {
                    tracing::warn!(master = %old, "repair: failover aborted; writes on the master resumed");
                }
            }
            Err(e) if e.class == ErrorClass::NoPerm => {
                tracing::warn!(master = %old, error = %e, "repair: CLIENT PAUSE/UNPAUSE refused by an ACL; grant +client|pause and +client|unpause, or set repair.pause_writes_on_failover = false");
            }
            Err(e) => {
                tracing::warn!(master = %old, error = %e, "repair: CLIENT PAUSE/UNPAUSE failed");
            }
        }
    }

    /// Whether rolecall's own write pause still holds on `master` at `now`: a probe write there
    /// would only wait.
    pub fn holds_writes_on(&self, master: Option<&ServerAddr>, now: Instant) -> bool {
        self.pause
            .as_ref()
            .is_some_and(|p| now < p.until && master == Some(&p.master))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_commands_pause_writes_only_and_unpause() {
        let args = |c: &redis::Cmd| {
            c.args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::from("<not a simple argument>"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            args(&pause_command(Duration::from_millis(1500), true)),
            ["CLIENT", "PAUSE", "1500", "WRITE"]
        );
        assert_eq!(
            args(&pause_command(Duration::from_millis(1500), false)),
            ["CLIENT", "UNPAUSE"]
        );
    }

    #[test]
    fn a_pause_holds_only_on_its_master_and_until_it_lapses() {
        let m: ServerAddr = "127.0.0.1:6379".parse().unwrap();
        let other: ServerAddr = "127.0.0.1:6380".parse().unwrap();
        let t0 = Instant::now();
        let mut r = GroupRepair::default();
        assert!(!r.holds_writes_on(Some(&m), t0));
        r.pause = Some(WritePause {
            master: m.clone(),
            until: t0 + Duration::from_secs(3),
        });
        assert!(r.holds_writes_on(Some(&m), t0));
        assert!(!r.holds_writes_on(Some(&other), t0));
        assert!(!r.holds_writes_on(None, t0));
        assert!(!r.holds_writes_on(Some(&m), t0 + Duration::from_secs(3)));
    }
}
