//! Fencing the demoted master: after a failover the old master keeps `role:master` and
//! acknowledges writes until Sentinel demotes it (about 10 s after `SENTINEL FAILOVER`), and
//! every one of them is lost when it resyncs. Once the sentinel majority (or the elected
//! leader) names another master that answers `ROLE` as master and took the probe write,
//! rolecall holds writes on the old one (`CLIENT PAUSE <lease> WRITE`), renewing the lease at
//! every check while it still claims master, and lifts it (`CLIENT UNPAUSE`) at once when:
//!
//! - it answers `ROLE` as a replica, or becomes Sentinel's master again;
//! - a sentinel announces it converts it (`+convert-to-slave`): a paused server holds
//!   Sentinel's own link too (Sentinel's hello is a `PUBLISH`, which a write pause blocks, and
//!   its demotion transaction waits behind it), so the pause must end for the demotion to run;
//! - it has been fenced for [`FENCE_MAX`] (a bound, whatever else happens).
//!
//! Never on Sentinel's master. A rolecall that dies mid-fence lets the pause lapse within one
//! lease. Which servers get which action is decided by [`plan`], pure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::conn::{ErrorClass, Pool, ServerAddr, command};
use crate::probe::Role;

/// The longest rolecall fences one server in one episode.
pub const FENCE_MAX: Duration = Duration::from_secs(60);

/// What rolecall knows of a server it may fence.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// When it stopped being Sentinel's master.
    pub since: Instant,
    /// Until when rolecall's pause holds, if it paused it.
    pub paused_until: Option<Instant>,
    /// Fencing over for this episode (Sentinel converts it, or [`FENCE_MAX`]): never renewed.
    pub done: bool,
    /// Paused as a promotion of its replica starts, while it is still Sentinel's master: that
    /// pause runs its course (or an aborted failover lifts it) until another master is
    /// established.
    pub promoting: bool,
    /// Whether the fence said it holds this server (once per episode).
    pub announced: bool,
}

/// What one check does to one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pause (or renew the pause on) writes.
    Pause,
    /// Lift rolecall's pause, and keep the candidate (it may still claim master).
    Lift,
    /// Lift rolecall's pause if it holds one, and forget the candidate.
    Forget,
}

/// What a check established: Sentinel's master, whether it answered `ROLE` as master and took
/// the probe write.
#[derive(Debug, Clone, Copy)]
pub struct Established<'a> {
    pub master: Option<&'a ServerAddr>,
    pub verified: bool,
    pub probe_ok: bool,
}

/// The action for each candidate (pure).
pub fn plan(
    candidates: &BTreeMap<ServerAddr, Candidate>,
    roles: &dyn Fn(&ServerAddr) -> Option<Role>,
    established: Established<'_>,
    now: Instant,
) -> Vec<(ServerAddr, Action)> {
    let mut actions = Vec::new();
    for (server, c) in candidates {
        let action = match roles(server) {
            _ if established.master == Some(server) && c.promoting => None,
            _ if established.master == Some(server) => Some(Action::Forget),
            Some(Role::Replica { .. }) => Some(Action::Forget),
            _ if c.done => None,
            _ if now.saturating_duration_since(c.since) >= FENCE_MAX => Some(Action::Lift),
            Some(Role::Master)
                if established.master.is_some() && established.verified && established.probe_ok =>
            {
                Some(Action::Pause)
            }
            // Not established this check, or the server did not answer: the lease runs out
            // unless a later check renews it.
            _ => None,
        };
        if let Some(a) = action {
            actions.push((server.clone(), a));
        }
    }
    actions
}

/// The fence's state for one group.
#[derive(Debug, Default)]
pub struct Fence {
    candidates: BTreeMap<ServerAddr, Candidate>,
    /// Sentinel's verified master as of the last check: when it changes, the old one becomes a
    /// candidate.
    last_master: Option<ServerAddr>,
    acl_reported: bool,
}

impl Fence {
    /// The servers whose `ROLE` each check must ask.
    pub fn candidates(&self) -> impl Iterator<Item = &ServerAddr> {
        self.candidates.keys()
    }

    /// The servers whose writes rolecall holds paused at `now`.
    pub fn fenced(&self, now: Instant) -> Vec<String> {
        self.candidates
            .iter()
            .filter(|(_, c)| c.paused_until.is_some_and(|t| now < t))
            .map(|(s, _)| s.to_string())
            .collect()
    }

    /// After a check: makes the previous verified master a candidate when another one is
    /// verified, then pauses, renews or lifts per [`plan`].
    pub async fn after_check(
        &mut self,
        established: Established<'_>,
        roles: &BTreeMap<ServerAddr, Role>,
        pool: &Pool,
        lease: Duration,
    ) {
        let now = Instant::now();
        let verified = established.master.filter(|_| established.verified);
        if let (Some(old), Some(new)) = (&self.last_master, verified)
            && old != new
        {
            self.candidates.entry(old.clone()).or_insert(Candidate {
                since: now,
                paused_until: None,
                done: false,
                promoting: false,
                announced: false,
            });
        }
        if let Some(m) = verified {
            self.last_master = Some(m.clone());
            for (server, c) in self.candidates.iter_mut() {
                c.promoting &= server == m;
            }
        }
        let role = |a: &ServerAddr| roles.get(a).cloned();
        let actions = plan(&self.candidates, &role, established, now);
        for (server, action) in actions {
            self.act(&server, action, pool, lease).await;
        }
    }

    /// The promotion pause (`repair.pause_writes_on_failover`) holds writes on `server` until
    /// `until`: the fence renews it from there.
    pub fn paused(&mut self, server: &ServerAddr, until: Instant) {
        let c = self.candidates.entry(server.clone()).or_insert(Candidate {
            since: Instant::now(),
            paused_until: None,
            done: false,
            promoting: true,
            announced: false,
        });
        c.paused_until = Some(until);
        c.done = false;
        c.promoting = true;
    }

    /// Forgets `server` (a failover aborted: it stays the master).
    pub fn forget(&mut self, server: &ServerAddr) {
        self.candidates.remove(server);
    }

    /// A sentinel converts `server` to a replica: lift the pause at once so Sentinel's demotion
    /// runs, and do not pause it again in this episode.
    pub async fn converting(&mut self, server: &ServerAddr, pool: &Pool) {
        let Some(c) = self.candidates.get_mut(server) else {
            return;
        };
        c.done = true;
        if c.paused_until.is_some() {
            self.act(server, Action::Lift, pool, Duration::ZERO).await;
        }
    }

    async fn act(&mut self, server: &ServerAddr, action: Action, pool: &Pool, lease: Duration) {
        let Some(mut conn) = pool.get(server) else {
            return;
        };
        let mut cmd = redis::cmd("CLIENT");
        match action {
            Action::Pause => cmd.arg("PAUSE").arg(lease.as_millis() as u64).arg("WRITE"),
            Action::Lift | Action::Forget => cmd.arg("UNPAUSE"),
        };
        let was_paused = self
            .candidates
            .get(server)
            .is_some_and(|c| c.paused_until.is_some());
        if action != Action::Pause && !was_paused {
            // Nothing to lift: only the state changes.
            match action {
                Action::Forget => {
                    self.candidates.remove(server);
                }
                _ => {
                    if let Some(c) = self.candidates.get_mut(server) {
                        c.done = true;
                    }
                }
            }
            return;
        }
        match command(&mut conn, server, "server", pool.timeout(), &cmd).await {
            Ok(_) => self.acted(server, action, lease),
            Err(e) if matches!(e.class, ErrorClass::NoPerm | ErrorClass::Auth) => {
                if !self.acl_reported {
                    tracing::error!(server = %server, error = %e, "repair: fencing refused; grant rolecall's user +client|pause and +client|unpause on the data servers, or set repair.fence_old_master = false");
                    self.acl_reported = true;
                }
            }
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "repair: fencing command failed")
            }
        }
    }

    fn acted(&mut self, server: &ServerAddr, action: Action, lease: Duration) {
        let now = Instant::now();
        match action {
            Action::Pause => {
                if let Some(c) = self.candidates.get_mut(server) {
                    if !c.announced {
                        tracing::warn!(server = %server, lease_ms = lease.as_millis() as u64, "repair: fenced the old master (writes paused while it still claims master)");
                        c.announced = true;
                    }
                    c.paused_until = Some(now + lease);
                }
            }
            Action::Lift => {
                if let Some(c) = self.candidates.get_mut(server) {
                    c.paused_until = None;
                    c.done = true;
                }
                tracing::warn!(server = %server, "repair: lifted the fence on the old master");
            }
            Action::Forget => {
                self.candidates.remove(server);
                tracing::warn!(server = %server, "repair: lifted the fence (the old master is a replica now, or Sentinel's master again)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> ServerAddr {
        s.parse().unwrap()
    }

    fn candidate(since: Instant, paused: bool, done: bool) -> Candidate {
        Candidate {
            since,
            paused_until: paused.then(|| since + Duration::from_secs(100)),
            done,
            promoting: false,
            announced: false,
        }
    }

    #[test]
    fn the_promotion_pause_runs_its_course_while_the_old_master_is_still_sentinels() {
        let now = Instant::now();
        let old = a("127.0.0.1:7001");
        let mut cs = BTreeMap::new();
        cs.insert(
            old.clone(),
            Candidate {
                promoting: true,
                ..candidate(now, true, false)
            },
        );
        let still = Established {
            master: Some(&old),
            verified: true,
            probe_ok: false,
        };
        assert!(plan(&cs, &|_| Some(Role::Master), still, now).is_empty());
    }

    #[test]
    fn the_old_master_is_paused_only_while_it_claims_master_and_the_new_one_is_established() {
        let now = Instant::now();
        let (old, new) = (a("127.0.0.1:7001"), a("127.0.0.1:7002"));
        let mut cs = BTreeMap::new();
        cs.insert(old.clone(), candidate(now, false, false));
        let master = |_: &ServerAddr| Some(Role::Master);
        let est = |verified, probe_ok| Established {
            master: Some(&new),
            verified,
            probe_ok,
        };
        assert_eq!(
            plan(&cs, &master, est(true, true), now),
            vec![(old.clone(), Action::Pause)]
        );
        // Not established: nothing (the lease runs out).
        assert!(plan(&cs, &master, est(false, true), now).is_empty());
        assert!(plan(&cs, &master, est(true, false), now).is_empty());
        let none = Established {
            master: None,
            verified: false,
            probe_ok: false,
        };
        assert!(plan(&cs, &master, none, now).is_empty());
        // Silent: nothing either.
        assert!(plan(&cs, &|_| None, est(true, true), now).is_empty());
    }

    #[test]
    fn a_replica_or_sentinels_master_again_is_unpaused_and_forgotten() {
        let now = Instant::now();
        let (old, new) = (a("127.0.0.1:7001"), a("127.0.0.1:7002"));
        let mut cs = BTreeMap::new();
        cs.insert(old.clone(), candidate(now, true, false));
        let replica = |_: &ServerAddr| {
            Some(Role::Replica {
                master: None,
                link_up: false,
            })
        };
        let est = Established {
            master: Some(&new),
            verified: true,
            probe_ok: true,
        };
        assert_eq!(
            plan(&cs, &replica, est, now),
            vec![(old.clone(), Action::Forget)]
        );
        // Fail-back: Sentinel names the old master again, which still claims master.
        let back = Established {
            master: Some(&old),
            verified: true,
            probe_ok: true,
        };
        assert_eq!(
            plan(&cs, &|_| Some(Role::Master), back, now),
            vec![(old.clone(), Action::Forget)]
        );
    }

    #[test]
    fn converting_or_the_bound_ends_the_fence_for_the_episode() {
        let t0 = Instant::now();
        let (old, new) = (a("127.0.0.1:7001"), a("127.0.0.1:7002"));
        let est = Established {
            master: Some(&new),
            verified: true,
            probe_ok: true,
        };
        let master = |_: &ServerAddr| Some(Role::Master);
        let mut cs = BTreeMap::new();
        cs.insert(old.clone(), candidate(t0, false, true));
        assert!(
            plan(&cs, &master, est, t0).is_empty(),
            "done: never paused again"
        );
        cs.insert(old.clone(), candidate(t0, true, false));
        assert_eq!(
            plan(&cs, &master, est, t0 + FENCE_MAX),
            vec![(old.clone(), Action::Lift)]
        );
    }
}
