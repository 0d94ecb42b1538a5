//! The ESTABLISHED TCP sockets of the node's network namespace, and which of them the node
//! holds.
//!
//! The sockets are listed one of two ways ([`Method`]):
//!
//! - **Netlink** (`NETLINK_SOCK_DIAG`, [`netlink`](super::netlink)): binary records of the
//!   ESTABLISHED sockets only. A netlink socket sees the namespace it was opened in, which is
//!   rolecall's, so this way is taken only when `/proc/PID/ns/net` and `/proc/self/ns/net` name
//!   the same namespace (always for
//!   [`NodeSelector::Namespace`](super::NodeSelector::Namespace); for the other selectors the
//!   node normally runs beside rolecall, on the host or in the same pod). rolecall cannot enter
//!   another namespace: `setns` needs `CAP_SYS_ADMIN` and unsafe code. Netlink still walks the
//!   kernel's whole hash table (once for both families), so its cost grows with the table and
//!   the namespace's sockets too, but it stays the cheaper way (BENCHMARKS.md; `benches/discovery.rs` compares both).
//! - **/proc** ([`proc_net`](super::proc_net)): `/proc/PID/net/tcp` and `tcp6`, which list every
//!   socket of that process's namespace as text, TIME_WAIT included. The kernel formats the
//!   whole table at every read, so a read costs in proportion to every socket of the namespace,
//!   and a busy node's namespace holds many. Even an empty namespace is not free: the
//!   established hash table is shared by all namespaces (unless
//!   `net.ipv4.tcp_child_ehash_entries` is set), and every `read` of either file walks all its
//!   buckets, EOF included. It is the way for a node in another namespace, and the fallback
//!   when netlink is unavailable (a sandbox that refuses `NETLINK_SOCK_DIAG`, a kernel without
//!   `inet_diag`); the fallback is logged once, at debug level.
//!
//! When a selector matches several processes they are assumed to share one network namespace
//! (the usual case: workers of one service, one container); a process in another namespace
//! would find no match for its inodes in the first one's list, and its connections would be
//! missed.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::connection::{NodeSockets, Table, keep_ports, sorted};
use super::error::{DiscoverError, is_gone, unreadable};
use super::fds::{collect_socket_inodes, collect_socket_inodes_in};
use super::netlink::{NetlinkError, dump_established};
use super::pids::proc_path;
use super::proc_net::read_tcp_tables;

/// How [`discover_with`](super::discover_with) lists the ESTABLISHED sockets of the node's
/// network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Netlink when the node shares rolecall's network namespace and netlink works, `/proc`
    /// otherwise. What [`discover`](super::discover) uses.
    #[default]
    Auto,
    /// `NETLINK_SOCK_DIAG` only. Fails with [`DiscoverError::Unreadable`] when the node is in
    /// another network namespace or netlink is unavailable.
    Netlink,
    /// `/proc/PID/net/tcp` and `tcp6` only.
    Proc,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Auto => "auto",
            Method::Netlink => "netlink",
            Method::Proc => "proc",
        })
    }
}

/// The ESTABLISHED sockets (with inodes) of the network namespace of `pid`, and the method
/// that listed them. `Ok(None)` if the process is gone.
pub(super) fn namespace_table_of(
    pid: u32,
    method: Method,
    ports: &BTreeSet<u16>,
) -> Result<Option<(Table, Method)>, DiscoverError> {
    let by_proc = || Ok(read_tcp_tables(&proc_path(pid, "net"))?.map(|t| (t, Method::Proc)));
    if method == Method::Proc {
        return by_proc();
    }
    let ns = proc_path(pid, "ns/net");
    match shares_our_netns(&ns) {
        Ok(true) => match dump_established(ports) {
            Ok(table) => Ok(Some((table, Method::Netlink))),
            Err(err) if method == Method::Auto => {
                note_netlink_unavailable(&err);
                by_proc()
            }
            Err(err) => Err(DiscoverError::Unreadable(err.to_string())),
        },
        Ok(false) if method == Method::Auto => {
            note_other_netns(pid);
            by_proc()
        }
        Ok(false) => Err(DiscoverError::Unreadable(format!(
            "pid {pid} is in another network namespace than rolecall; netlink sock_diag only \
             sees rolecall's"
        ))),
        Err(err) if is_gone(&err) => Ok(None),
        // /proc/PID/ns is guarded like /proc/PID/fd, which was just read; whatever this is,
        // reading /proc/PID/net tells the same or says what is wrong.
        Err(_) if method == Method::Auto => by_proc(),
        Err(err) => Err(unreadable(&ns, &err)),
    }
}

/// Whether the namespace link `ns` (`/proc/PID/ns/net`) names rolecall's network namespace.
/// The link reads `net:[INODE]`, the same text for every process of one namespace
/// (namespaces(7)).
fn shares_our_netns(ns: &Path) -> io::Result<bool> {
    let theirs = std::fs::read_link(ns)?;
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    Ok(theirs == ours)
}

static NETLINK_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);
static OTHER_NETNS_LOGGED: AtomicBool = AtomicBool::new(false);

fn note_netlink_unavailable(err: &NetlinkError) {
    if !NETLINK_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            error = %err,
            "netlink sock_diag unavailable, reading /proc/PID/net/tcp instead (logged once)"
        );
    }
}

fn note_other_netns(pid: u32) {
    if !OTHER_NETNS_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            pid,
            "node is in another network namespace, reading /proc/PID/net/tcp (logged once)"
        );
    }
}

/// The established connections held by `pids`, from the namespace of the first pid still
/// running (all pids are assumed to share it).
pub(super) fn sockets_of(
    pids: Vec<u32>,
    method: Method,
    ports: &BTreeSet<u16>,
    missing: impl Fn() -> String,
) -> Result<(NodeSockets, Method), DiscoverError> {
    let mut inodes = HashSet::new();
    let mut alive = Vec::with_capacity(pids.len());
    for pid in pids {
        if collect_socket_inodes(pid, &mut inodes)? {
            alive.push(pid);
        } else {
            tracing::debug!(pid, "process exited during socket discovery");
        }
    }
    let mut table = None;
    for &pid in &alive {
        table = namespace_table_of(pid, method, ports)?;
        if table.is_some() {
            break;
        }
    }
    let Some((mut table, used)) = table else {
        return Err(DiscoverError::NodeMissing(missing()));
    };
    keep_ports(&mut table, ports);
    let connections = table
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(connection, _)| connection)
        .collect();
    let sockets = NodeSockets {
        pids: alive,
        connections: sorted(connections),
    };
    Ok((sockets, used))
}

/// Every established connection of rolecall's network namespace that rolecall does not hold.
pub(super) fn namespace_sockets(
    method: Method,
    ports: &BTreeSet<u16>,
) -> Result<(NodeSockets, Method), DiscoverError> {
    let (table, used) = namespace_table(method, ports)?;
    let sockets = NodeSockets {
        pids: Vec::new(),
        connections: sorted(
            table
                .into_iter()
                .map(|(connection, _)| connection)
                .collect(),
        ),
    };
    Ok((sockets, used))
}

/// [`namespace_sockets`] with each connection's inode.
pub(super) fn namespace_table(
    method: Method,
    ports: &BTreeSet<u16>,
) -> Result<(Table, Method), DiscoverError> {
    let own_fds = Path::new("/proc/self/fd");
    let gone = || DiscoverError::Unreadable("/proc/self vanished".to_owned());
    // rolecall opens and closes its own connections (probes) while this runs. Listing its fds
    // both before and after listing the sockets means one of its sockets can be taken for the
    // node's only if it was opened and closed again within this call.
    let mut own = HashSet::new();
    if !collect_socket_inodes_in(own_fds, &mut own)? {
        return Err(gone());
    }
    let by_proc = || {
        let table = read_tcp_tables(Path::new("/proc/self/net"))?.ok_or_else(gone)?;
        Ok::<_, DiscoverError>((table, Method::Proc))
    };
    let (mut table, used) = match method {
        Method::Proc => by_proc()?,
        Method::Netlink => (
            dump_established(ports).map_err(|err| DiscoverError::Unreadable(err.to_string()))?,
            Method::Netlink,
        ),
        Method::Auto => match dump_established(ports) {
            Ok(table) => (table, Method::Netlink),
            Err(err) => {
                note_netlink_unavailable(&err);
                by_proc()?
            }
        },
    };
    if !collect_socket_inodes_in(own_fds, &mut own)? {
        return Err(gone());
    }
    keep_ports(&mut table, ports);
    // Inode 0: the handshake is done but nobody has accept()ed the socket yet, so no process
    // holds it (it sits in a listener's queue, e.g. rolecall's own HTTP port).
    table.retain(|(_, inode)| *inode != 0 && !own.contains(inode));
    Ok((table, used))
}
