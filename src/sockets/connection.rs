//! The plain data of a discovery: one [`Connection`] seen from the node, the [`NodeSockets`]
//! one discovery found, and a network namespace's [`Table`] of ESTABLISHED connections with
//! their socket inodes, as both ways (netlink and /proc) list it.
//!
//! Addresses are normalised here, so that both ways, and both kinds of socket, give the same
//! answer.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};

/// One TCP connection, seen from the node: `local` is the node's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// What one discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSockets {
    /// The processes found, ascending (empty for
    /// [`NodeSelector::Namespace`](super::NodeSelector::Namespace)).
    pub pids: Vec<u32>,
    /// ESTABLISHED TCP connections only, sorted and deduplicated. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, a dual-stack socket talking IPv4) are given as plain IPv4.
    pub connections: Vec<Connection>,
}

/// TCP_ESTABLISHED in include/net/tcp_states.h.
pub(super) const TCP_ESTABLISHED: u8 = 0x01;

/// ESTABLISHED connections of a network namespace, each with its socket's inode.
pub(super) type Table = Vec<(Connection, u64)>;

/// Keeps the connections whose remote port is in `ports`; an empty set keeps all. A netlink
/// table was filtered by the kernel already (unless the set was too large for a filter, see
/// [`MAX_FILTER_PORTS`](super::port_filter::MAX_FILTER_PORTS)); a /proc table is filtered here.
pub(super) fn keep_ports(table: &mut Table, ports: &BTreeSet<u16>) {
    if !ports.is_empty() {
        table.retain(|(connection, _)| ports.contains(&connection.remote.port()));
    }
}

pub(super) fn sorted(mut connections: Vec<Connection>) -> Vec<Connection> {
    connections.sort_unstable();
    connections.dedup();
    connections
}

/// `::ffff:a.b.c.d` (a dual-stack socket carrying IPv4) becomes `a.b.c.d`, so the same peer
/// compares equal whichever kind of socket reached it.
pub(super) fn normalise(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => address,
        },
        SocketAddr::V4(_) => address,
    }
}
