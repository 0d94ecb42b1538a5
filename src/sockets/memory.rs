//! [`FdMemory`], what the last discovery learned from the node's fds and sockets, and
//! [`discover_remembering`], the daemon's discovery, which reads the fds again only when that
//! memory cannot account for the candidate sockets, and in steady state lists no sockets at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::connection::{Connection, NodeSockets, Table, keep_ports, sorted};
use super::error::DiscoverError;
use super::exact::still_established;
use super::fds::{for_each_socket_fd, parse_socket_link};
use super::namespace::{Method, namespace_table, namespace_table_of};
use super::pids::{NodeSelector, node_pids, proc_path};

/// A full read of the node's fds at least this often, even when nothing new appeared.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);

/// The namespace's sockets are listed (dumped) at least this often, even while exact lookups
/// confirm the node's known connections ([`Listing::KnownMayDo`]): the bound on how long a
/// connection the node adds beside its others (no known one closing) goes unseen in steady
/// state. A dump walks the kernel's whole established-socket table (about 1.2 ms of CPU on the
/// benchmark machine), so this sets most of what a check costs in steady state (BENCHMARKS.md).
pub const DUMP_EVERY: Duration = Duration::from_secs(10);

/// Whether a discovery may confirm the node's known connections by exact lookups instead of
/// listing the namespace's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// List them: something may have changed (a Sentinel event, a verdict other than `ok`,
    /// the first check).
    Always,
    /// Steady state: exact lookups may stand in for the listing (see [`FdMemory`]).
    KnownMayDo,
}

/// What the last discovery learned from the node's fds and sockets, so that the next one need
/// not read every fd, nor list every socket, again.
///
/// **The fds.** A node of a message server holds tens of thousands of client sockets, and
/// reading `/proc/PID/fd`, one `readlink` per fd, is then most of the cost of a discovery
/// (BENCHMARKS.md), while only its few connections to the topology's ports matter. The table of
/// candidate connections (to the topology's ports, from the whole namespace) is read first. If
/// every candidate socket was seen at the last full read — as the node's, in a known fd, or as
/// another process's — and the pids are the same, the node's sockets are checked with one
/// `readlink` each (the fd still holds that socket) and nothing else is read. Any new candidate
/// socket (a reconnect, a failover), a changed fd, other pids, or [`FULL_SCAN_EVERY`] means a
/// full read. A socket that was another process's cannot become the node's except by fd
/// passing, which the periodic full read bounds.
///
/// **The sockets.** Listing the namespace's sockets (a netlink dump) walks the kernel's whole
/// established-socket hash table, whatever the filter. In steady state ([`Listing::KnownMayDo`]:
/// the caller saw the node `ok` and no Sentinel event since), with the same pids and ports, at
/// least one known connection and a dump less than [`DUMP_EVERY`] old, the node's known
/// connections are confirmed instead: each fd still holds its socket, and an exact lookup per
/// connection finds it still ESTABLISHED with the same inode. Any difference, and any error,
/// means a dump, as before. A node that reconnects closes a known connection, so a failover, a
/// kill or a redial is seen at once; a connection added beside the others is seen at the next
/// dump. A node without connections is always listed.
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
    /// The node's candidate connections as the last netlink dump found them.
    known: Option<Known>,
    /// Discoveries answered by exact lookups of the known connections, without a dump.
    pub confirmed: u64,
}

/// The node's candidate connections at a dump, for exact lookups until the next.
#[derive(Debug)]
struct Known {
    pids: Vec<u32>,
    ports: BTreeSet<u16>,
    table: Table,
    /// The fd holding each of `table`'s sockets (none for the namespace selector).
    links: Vec<PathBuf>,
    at: Instant,
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
                if !still_holds(link, *inode) {
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

    /// The known connections, if they may stand in for a dump and are all still there.
    fn confirm(
        &self,
        pids: &[u32],
        ports: &BTreeSet<u16>,
        now: Instant,
    ) -> Option<Vec<Connection>> {
        let known = self.known.as_ref()?;
        if known.table.is_empty()
            || known.pids != pids
            || &known.ports != ports
            || now.saturating_duration_since(known.at) >= DUMP_EVERY
        {
            return None;
        }
        let fds_hold = known
            .links
            .iter()
            .zip(&known.table)
            .all(|(link, (_, inode))| still_holds(link, *inode));
        if !fds_hold {
            return None;
        }
        match still_established(&known.table) {
            Ok(true) => Some(known.table.iter().map(|(c, _)| *c).collect()),
            Ok(false) => None,
            Err(err) => {
                tracing::debug!(error = %err, "exact socket lookups failed, listing the sockets");
                None
            }
        }
    }

    /// Remembers the node's candidate connections of a dump (`table`, with the fd of each when
    /// the node has pids) for exact lookups; a listing from /proc is not remembered (netlink
    /// sees only rolecall's namespace).
    fn listed(&mut self, pids: &[u32], ports: &BTreeSet<u16>, table: Table, method: Method) {
        if method != Method::Netlink {
            self.known = None;
            return;
        }
        let links: Option<Vec<PathBuf>> = if pids.is_empty() {
            Some(Vec::new())
        } else {
            table
                .iter()
                .map(|(_, i)| self.node.get(i).cloned())
                .collect()
        };
        self.known = links.map(|links| Known {
            pids: pids.to_vec(),
            ports: ports.clone(),
            table,
            links,
            at: Instant::now(),
        });
    }
}

/// Whether the fd `link` (`/proc/PID/fd/N`) still holds the socket `inode`.
fn still_holds(link: &PathBuf, inode: u64) -> bool {
    std::fs::read_link(link)
        .ok()
        .and_then(|t| parse_socket_link(&t))
        == Some(inode)
}

/// The node's known connections to `ports`, if exact lookups confirm them all and they may stand
/// in for a listing (see [`FdMemory`]); `Ok(None)` when the sockets must be listed. Costs a few
/// system calls (the selector's pids, a `readlink` and a lookup per connection).
fn confirm_known(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
    memory: &mut FdMemory,
) -> Result<Option<NodeSockets>, DiscoverError> {
    let pids = match node_pids(selector)? {
        Some((pids, _)) => pids,
        None => Vec::new(),
    };
    let Some(connections) = memory.confirm(&pids, ports, Instant::now()) else {
        return Ok(None);
    };
    memory.confirmed += 1;
    Ok(Some(NodeSockets {
        pids,
        connections: sorted(connections),
    }))
}

/// The daemon's discovery: the node's connections to `ports`, reading the node's fds only when
/// `memory` cannot account for the candidate sockets, and, when `listing` allows, confirming the
/// known connections by exact lookups instead of listing the namespace's sockets (see
/// [`FdMemory`]). Gives what [`discover_to_ports`](super::discover_to_ports) gives.
pub fn discover_remembering(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
    memory: &mut FdMemory,
    listing: Listing,
) -> Result<NodeSockets, DiscoverError> {
    if listing == Listing::KnownMayDo
        && let Some(sockets) = confirm_known(selector, ports, memory)?
    {
        return Ok(sockets);
    }
    let now = Instant::now();
    let Some((pids, missing)) = node_pids(selector)? else {
        let (table, method) = namespace_table(Method::Auto, ports)?;
        let connections = sorted(table.iter().map(|(c, _)| *c).collect());
        memory.listed(&[], ports, table, method);
        return Ok(NodeSockets {
            pids: Vec::new(),
            connections,
        });
    };
    let mut table = None;
    for &pid in &pids {
        table = namespace_table_of(pid, Method::Auto, ports)?;
        if table.is_some() {
            break;
        }
    }
    let Some((mut table, method)) = table else {
        return Err(DiscoverError::NodeMissing(missing));
    };
    keep_ports(&mut table, ports);
    if memory.recall(&pids, &table, now).is_none() {
        let alive = read_fds(pids, &missing, &table, memory, now)?;
        return Ok(node_sockets(alive, ports, table, method, memory));
    }
    Ok(node_sockets(pids, ports, table, method, memory))
}

/// Reads every fd of `pids` and teaches `memory` which of `table`'s sockets are the node's;
/// the pids still running.
fn read_fds(
    pids: Vec<u32>,
    missing: &str,
    table: &Table,
    memory: &mut FdMemory,
    now: Instant,
) -> Result<Vec<u32>, DiscoverError> {
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
        return Err(DiscoverError::NodeMissing(missing.to_owned()));
    }
    memory.learn(&alive, table, &links, now);
    Ok(alive)
}

/// The node's connections among `table` (those in the fds `memory` knows), remembered for
/// exact lookups.
fn node_sockets(
    pids: Vec<u32>,
    ports: &BTreeSet<u16>,
    mut table: Table,
    method: Method,
    memory: &mut FdMemory,
) -> NodeSockets {
    table.retain(|(_, inode)| memory.node.contains_key(inode));
    let connections = sorted(table.iter().map(|(c, _)| *c).collect());
    memory.listed(&pids, ports, table, method);
    NodeSockets { pids, connections }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::sockets::connection::normalise;
    use crate::sockets::discover_to_ports;
    use crate::sockets::testutil::{accept_within, addr, our_pid};

    /// A loopback connection to `listener`: the client end, the accepted end, and the
    /// connection as the client (the node) sees it.
    fn connect(listener: &TcpListener) -> (TcpStream, TcpStream, Connection) {
        let port = listener.local_addr().unwrap().port();
        let client =
            TcpStream::connect_timeout(&addr(&format!("127.0.0.1:{port}")), Duration::from_secs(5))
                .unwrap();
        let server = accept_within(listener, Duration::from_secs(5));
        let side = Connection {
            local: normalise(client.local_addr().unwrap()),
            remote: normalise(client.peer_addr().unwrap()),
        };
        (client, server, side)
    }

    #[test]
    fn remembered_fds_are_read_again_only_when_the_candidate_sockets_change() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ports: BTreeSet<u16> = [port].into_iter().collect();
        let selector = NodeSelector::Pid(our_pid());
        let mut memory = FdMemory::default();
        // Every answer is the one a plain discovery gives.
        let discover = |memory: &mut FdMemory| {
            let got = discover_remembering(&selector, &ports, memory, Listing::Always).unwrap();
            let plain = discover_to_ports(&selector, &ports).unwrap();
            assert_eq!(got, plain);
            got.connections
        };

        let (c1, s1, side1) = connect(&listener);
        assert_eq!(discover(&mut memory), vec![side1]);
        assert_eq!(memory.full_scans, 1);
        assert_eq!(discover(&mut memory), vec![side1]);
        assert_eq!(
            memory.full_scans, 1,
            "nothing new: one readlink, no full read"
        );

        let (c2, s2, side2) = connect(&listener);
        let mut both = vec![side1, side2];
        both.sort_unstable();
        assert_eq!(discover(&mut memory), both);
        assert_eq!(memory.full_scans, 2, "a new socket to the port: full read");

        drop((c1, s1));
        assert_eq!(discover(&mut memory), vec![side2]);
        assert_eq!(memory.full_scans, 2, "a socket gone: nothing to read");

        // The same socket in another fd, its first fd closed: the remembered link is stale.
        let c2_again = c2.try_clone().unwrap();
        drop(c2);
        assert_eq!(discover(&mut memory), vec![side2]);
        assert_eq!(memory.full_scans, 3, "a changed fd: full read");
        drop((c2_again, s2));
        assert_eq!(discover(&mut memory), Vec::<Connection>::new());
    }

    #[test]
    fn in_steady_state_known_connections_are_confirmed_without_a_dump_until_one_changes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connect = || connect(&listener);
        let ports: BTreeSet<u16> = [port].into_iter().collect();
        let selector = NodeSelector::Pid(our_pid());
        let mut memory = FdMemory::default();
        let discover = |memory: &mut FdMemory, listing| {
            discover_remembering(&selector, &ports, memory, listing)
                .unwrap()
                .connections
        };
        let steady = Listing::KnownMayDo;

        // No connection known: always listed, so a new one is seen at once.
        assert_eq!(discover(&mut memory, steady), vec![]);
        let (c1, s1, side1) = connect();
        assert_eq!(discover(&mut memory, steady), vec![side1]);
        assert_eq!(memory.confirmed, 0);
        assert_eq!(discover(&mut memory, steady), vec![side1]);
        assert_eq!(
            memory.confirmed, 1,
            "known and unchanged: confirmed, no dump"
        );
        assert_eq!(discover(&mut memory, Listing::Always), vec![side1]);
        assert_eq!(memory.confirmed, 1, "Listing::Always lists");

        // A connection added beside the known one is not looked for until the next listing.
        let (c2, s2, side2) = connect();
        assert_eq!(discover(&mut memory, steady), vec![side1]);
        assert_eq!(memory.confirmed, 2);
        let mut both = vec![side1, side2];
        both.sort_unstable();
        assert_eq!(discover(&mut memory, Listing::Always), both);

        // A known connection closed (a reconnect, a kill): listed at once.
        drop((c1, s1));
        assert_eq!(discover(&mut memory, steady), vec![side2]);
        assert_eq!(memory.confirmed, 2);
        assert_eq!(discover(&mut memory, steady), vec![side2]);
        assert_eq!(memory.confirmed, 3);

        // The same socket moved to another fd: the remembered fd no longer holds it.
        let c2_again = c2.try_clone().unwrap();
        drop(c2);
        let scans = memory.full_scans;
        assert_eq!(discover(&mut memory, steady), vec![side2]);
        assert_eq!((memory.confirmed, memory.full_scans), (3, scans + 1));

        // Other ports asked for: listed.
        let mut wider = ports.clone();
        wider.insert(1);
        discover_remembering(&selector, &wider, &mut memory, steady).unwrap();
        assert_eq!(memory.confirmed, 3);

        // The peer closed it (CLOSE_WAIT): no longer ESTABLISHED, listed, gone.
        drop(s2);
        assert_eq!(discover(&mut memory, Listing::Always), vec![]);
        drop(c2_again);
    }
}
