//! The kill repair: `CLIENT KILL ADDR <node's address> SKIPME yes` on each server that is not
//! Sentinel's verified master, through rolecall's own connection, so that a Sentinel-aware node
//! re-resolves now instead of writing into the split-brain window. Rate-limited per server;
//! given up after `kill_attempts` rounds in which the node came straight back (it does not ask
//! Sentinel, and the verdict says so). Which servers get a round is decided by [`plan`], pure.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::config::RepairConfig;
use crate::conn::{ErrorClass, Pool, ServerAddr, command};
use crate::snapshot::KillReport;
use crate::verdict::RoutedConnection;

/// The node's connections on each server that is not `master`: the kill repair's targets, as
/// the server sees them (the node's local address).
pub fn stale_connections(
    master: &ServerAddr,
    routed: &[RoutedConnection],
) -> Vec<(ServerAddr, Vec<SocketAddr>)> {
    let mut stale: BTreeMap<ServerAddr, Vec<SocketAddr>> = BTreeMap::new();
    for r in routed.iter().filter(|r| &r.server != master) {
        stale
            .entry(r.server.clone())
            .or_default()
            .push(r.connection.local);
    }
    stale.into_iter().collect()
}

/// Kill rounds on one server.
#[derive(Debug, Clone)]
struct Rounds {
    last: Instant,
    count: u32,
    /// The last check that found the node's connections there.
    seen: Instant,
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
    /// Kills the node's connections on servers other than the verified `master`, through the
    /// connections `pool` keeps to them, and says what it did.
    pub async fn kill_stale(
        &mut self,
        cfg: &RepairConfig,
        master: &ServerAddr,
        routed: &[RoutedConnection],
        pool: &Pool,
        timeout: Duration,
    ) -> KillReport {
        let stale = stale_connections(master, routed);
        let conns: HashMap<ServerAddr, MultiplexedConnection> = stale
            .iter()
            .filter_map(|(s, _)| pool.get(s).map(|c| (s.clone(), c)))
            .collect();
        self.repair(cfg, &stale, &conns, timeout, Instant::now())
            .await
    }

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
        // Forget servers the node has left for good (three kill intervals): a later return
        // starts a fresh count. A node between a kill and its redial is not gone.
        for (server, conns) in stale {
            if let Some(r) = self.rounds.get_mut(server)
                && !conns.is_empty()
            {
                r.seen = now;
            }
        }
        self.rounds
            .retain(|_, r| now.saturating_duration_since(r.seen) < cfg.kill_interval * 3);
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
                seen: now,
            });
            entry.last = now;
            let round = entry.count + 1;
            let killed_before = report.killed.len();
            for addr in targets {
                self.kill_one(&mut conn, &server, addr, round, timeout, &mut report)
                    .await;
            }
            // Only a round that killed the node's connection counts towards giving up: a kill
            // refused (an ACL) or that found nothing proves nothing about the node.
            if report.killed.len() > killed_before
                && let Some(r) = self.rounds.get_mut(&server)
            {
                r.count += 1;
            }
        }
        if self.rounds.is_empty() {
            self.last_error = None;
        }
        report.error = self.last_error.clone();
        report
    }

    /// `CLIENT KILL ADDR <addr> SKIPME yes` on `server`: exactly the node's connection.
    async fn kill_one(
        &mut self,
        conn: &mut MultiplexedConnection,
        server: &ServerAddr,
        addr: SocketAddr,
        round: u32,
        timeout: Duration,
        report: &mut KillReport,
    ) {
        let mut kill = redis::cmd("CLIENT");
        kill.arg("KILL")
            .arg("ADDR")
            .arg(addr.to_string())
            .arg("SKIPME")
            .arg("yes");
        match command(conn, server, "server", timeout, &kill).await {
            Ok(v) => {
                let n = match v {
                    redis::Value::Int(n) => n,
                    _ => 0,
                };
                tracing::info!(
                    server = %server,
                    client = %addr,
                    killed = n,
                    round,
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
            fence_old_master: false,
            fence_lease: Duration::from_secs(2),
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

    #[test]
    fn stale_connections_are_the_nodes_own_on_every_server_but_the_master() {
        use crate::sockets::Connection;
        let routed = |local: &str, server: &str| RoutedConnection {
            connection: Connection {
                local: local.parse().unwrap(),
                remote: server.parse().unwrap(),
            },
            server: a(server),
        };
        let master = a("127.0.0.1:6380");
        let stale = stale_connections(
            &master,
            &[
                routed("127.0.0.1:5001", "127.0.0.1:6379"),
                routed("127.0.0.1:5002", "127.0.0.1:6380"),
                routed("127.0.0.1:5003", "127.0.0.1:6379"),
            ],
        );
        assert_eq!(
            stale,
            vec![(
                a("127.0.0.1:6379"),
                vec![
                    "127.0.0.1:5001".parse().unwrap(),
                    "127.0.0.1:5003".parse().unwrap()
                ]
            )]
        );
        assert!(
            stale_connections(&master, &[routed("127.0.0.1:5002", "127.0.0.1:6380")]).is_empty()
        );
    }
}
