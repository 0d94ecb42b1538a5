//! [`FdMemory`], what the last discovery learned from the node's fds, and
//! [`discover_remembering`], the daemon's discovery, which reads the fds again only when that
//! memory cannot account for the candidate sockets.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::connection::{Connection, NodeSockets, Table, keep_ports, sorted};
use super::discover::discover_to_ports;
use super::error::DiscoverError;
use super::fds::{for_each_socket_fd, parse_socket_link};
use super::namespace::{Method, namespace_table_of};
use super::pids::{NodeSelector, node_pids, proc_path};

/// A full read of the node's fds at least this often, even when nothing new appeared.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);

/// What the last discovery learned from the node's fds, so that the next one need not read
/// every fd again: a node of a message server holds tens of thousands of client sockets, and
/// reading `/proc/PID/fd`, one `readlink` per fd, is then most of the cost of a discovery
/// (BENCHMARKS.md), while only its few connections to the topology's ports matter.
///
/// The table of candidate connections (to the topology's ports, from the whole namespace) is
/// read first. If every candidate socket was seen at the last full read — as the node's, in a
/// known fd, or as another process's — and the pids are the same, the node's sockets are checked
/// with one `readlink` each (the fd still holds that socket) and nothing else is read. Any new
/// candidate socket (a reconnect, a failover), a changed fd, other pids, or [`FULL_SCAN_EVERY`]
/// means a full read. A socket that was another process's cannot become the node's except by fd
/// passing, which the periodic full read bounds.
#[derive(Debug, Default)]
pub struct FdMemory {
    pids: Vec<u32>,
    /// The node's candidate sockets: inode → its `/proc/PID/fd/N` link.
    node: HashMap<u64, PathBuf>,
    /// Candidate sockets that were not the node's.
    foreign: HashSet<u64>,
    scanned_at: Option<Instant>,
    /// Full reads of the fds so far.
    pub full_scans: u64,
}

impl FdMemory {
    /// The node's connections among `table`, if what is remembered still accounts for every
    /// candidate.
    fn recall(&self, pids: &[u32], table: &Table, now: Instant) -> Option<Vec<Connection>> {
        let fresh = self
            .scanned_at
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_SCAN_EVERY);
        if !fresh || self.pids != pids {
            return None;
        }
        let mut out = Vec::new();
        for (connection, inode) in table {
            if let Some(link) = self.node.get(inode) {
                let still = std::fs::read_link(link)
                    .ok()
                    .and_then(|t| parse_socket_link(&t));
                if still != Some(*inode) {
                    return None;
                }
                out.push(*connection);
            } else if !self.foreign.contains(inode) {
                return None;
            }
        }
        Some(out)
    }

    fn learn(&mut self, pids: &[u32], table: &Table, links: &HashMap<u64, PathBuf>, now: Instant) {
        self.pids = pids.to_vec();
        self.node.clear();
        self.foreign.clear();
        for (_, inode) in table {
            match links.get(inode) {
                Some(link) => {
                    self.node.insert(*inode, link.clone());
                }
                None => {
                    self.foreign.insert(*inode);
                }
            }
        }
        self.scanned_at = Some(now);
        self.full_scans += 1;
    }
}

/// [`discover_to_ports`], reading the node's fds only when `memory` cannot account for the
/// candidate sockets (see [`FdMemory`]). What the daemon uses.
pub fn discover_remembering(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
    memory: &mut FdMemory,
) -> Result<NodeSockets, DiscoverError> {
    let Some((pids, missing)) = node_pids(selector)? else {
        return discover_to_ports(selector, ports);
    };
    let mut table = None;
    for &pid in &pids {
        table = namespace_table_of(pid, Method::Auto, ports)?;
        if table.is_some() {
            break;
        }
    }
    let Some((mut table, _)) = table else {
        return Err(DiscoverError::NodeMissing(missing));
    };
    keep_ports(&mut table, ports);
    let now = Instant::now();
    if let Some(connections) = memory.recall(&pids, &table, now) {
        return Ok(NodeSockets {
            pids,
            connections: sorted(connections),
        });
    }
    let mut links = HashMap::new();
    let mut alive = Vec::with_capacity(pids.len());
    for pid in pids {
        if for_each_socket_fd(&proc_path(pid, "fd"), |inode, link| {
            links.insert(inode, link);
        })? {
            alive.push(pid);
        } else {
            tracing::debug!(pid, "process exited during socket discovery");
        }
    }
    if alive.is_empty() {
        return Err(DiscoverError::NodeMissing(missing));
    }
    memory.learn(&alive, &table, &links, now);
    let connections = table
        .into_iter()
        .filter(|(_, inode)| links.contains_key(inode))
        .map(|(connection, _)| connection)
        .collect();
    Ok(NodeSockets {
        pids: alive,
        connections: sorted(connections),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::sockets::connection::normalise;
    use crate::sockets::testutil::{accept_within, addr, our_pid};

    #[test]
    fn remembered_fds_are_read_again_only_when_the_candidate_sockets_change() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connect = || {
            let client = TcpStream::connect_timeout(
                &addr(&format!("127.0.0.1:{port}")),
                Duration::from_secs(5),
            )
            .unwrap();
            let server = accept_within(&listener, Duration::from_secs(5));
            (client, server)
        };
        let side = |c: &TcpStream| Connection {
            local: normalise(c.local_addr().unwrap()),
            remote: normalise(c.peer_addr().unwrap()),
        };
        let ports: BTreeSet<u16> = [port].into_iter().collect();
        let selector = NodeSelector::Pid(our_pid());
        let mut memory = FdMemory::default();
        // Every answer is the one a plain discovery gives.
        let discover = |memory: &mut FdMemory| {
            let got = discover_remembering(&selector, &ports, memory).unwrap();
            let plain = discover_to_ports(&selector, &ports).unwrap();
            assert_eq!(got, plain);
            got.connections
        };

        let (c1, s1) = connect();
        assert_eq!(discover(&mut memory), vec![side(&c1)]);
        assert_eq!(memory.full_scans, 1);
        assert_eq!(discover(&mut memory), vec![side(&c1)]);
        assert_eq!(
            memory.full_scans, 1,
            "nothing new: one readlink, no full read"
        );

        let (c2, s2) = connect();
        let mut both = vec![side(&c1), side(&c2)];
        both.sort_unstable();
        assert_eq!(discover(&mut memory), both);
        assert_eq!(memory.full_scans, 2, "a new socket to the port: full read");

        drop((c1, s1));
        assert_eq!(discover(&mut memory), vec![side(&c2)]);
        assert_eq!(memory.full_scans, 2, "a socket gone: nothing to read");

        // The same socket in another fd, its first fd closed: the remembered link is stale.
        let c2_again = c2.try_clone().unwrap();
        let c2_side = side(&c2);
        drop(c2);
        assert_eq!(discover(&mut memory), vec![c2_side]);
        assert_eq!(memory.full_scans, 3, "a changed fd: full read");
        drop((c2_again, s2));
        assert_eq!(discover(&mut memory), Vec::<Connection>::new());
    }
}
