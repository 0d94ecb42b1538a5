//! Finds a node's live TCP connections, through netlink `sock_diag` or `/proc`.
//!
//! This module owns the answer to "which established TCP connections does the node hold right
//! now?". A [`NodeSelector`] names the node (a pid, a pid file, a process name, or every
//! process of rolecall's network namespace); [`discover`] returns a [`NodeSockets`] snapshot.
//! It does not know about Redis: deciding which of those connections matter is the caller's job.
//!
//! How a discovery works, and what it costs:
//!
//! 1. Resolve the selector to pids (`/proc/PID/stat` tells whether a process exists and is not
//!    a zombie; its second field is the same `comm` as `/proc/PID/comm`).
//! 2. Read the links in `/proc/PID/fd` of each pid; a link `socket:[INODE]` names a socket the
//!    process holds.
//! 3. List the ESTABLISHED TCP sockets of the network namespace of the first pid, with their
//!    inodes. When a selector matches several processes they are assumed to share one network
//!    namespace (the usual case: workers of one service, one container); a process in another
//!    namespace would find no match for its inodes in the first one's list, and its
//!    connections would be missed.
//! 4. Keep the sockets whose inode one of the pids holds.
//!
//! Step 3 has two ways ([`Method`]):
//!
//! - **Netlink** (`NETLINK_SOCK_DIAG`, the interface `ss` uses): one dump request per address
//!   family with `idiag_states = 1 << TCP_ESTABLISHED`, so the kernel skips TIME_WAIT and
//!   LISTEN sockets without formatting or copying them, and sends the rest as fixed binary
//!   records. A netlink socket sees the namespace it was opened in, which is rolecall's, so
//!   this way is taken only when `/proc/PID/ns/net` and `/proc/self/ns/net` name the same
//!   namespace (always for [`NodeSelector::Namespace`]; for the other selectors the node
//!   normally runs beside rolecall, on the host or in the same pod). rolecall cannot enter
//!   another namespace: `setns` needs `CAP_SYS_ADMIN` and unsafe code.
//! - **/proc**: read `/proc/PID/net/tcp` and `/proc/PID/net/tcp6`, which list every socket of
//!   that process's namespace as text, TIME_WAIT included. The kernel formats the whole table at
//!   every read: ~10 ms of system time with 6,000 TIME_WAIT sockets, and a busy node's
//!   namespace holds far more. Even an empty namespace is not free: the established hash table
//!   is shared by all namespaces (unless `net.ipv4.tcp_child_ehash_entries` is set), and every
//!   `read` of either file walks all its buckets, EOF included. It is the way for a node in
//!   another namespace, and the fallback
//!   when netlink is unavailable (a sandbox that refuses `NETLINK_SOCK_DIAG`, a kernel without
//!   `inet_diag`); the fallback is logged once, at debug level. The tables are parsed by hand
//!   ([`parse_proc_net_tcp`]) rather than with `procfs`, whose parser rejects a whole table for
//!   one line it does not understand; here a malformed line is skipped.
//!
//! So the cost is one `readlink` per fd plus, by netlink, one `recv` per 32 KiB of binary
//! records of the namespace's ESTABLISHED sockets; there is no syscall per socket. The daemon
//! narrows both: the dump carries a port filter ([`discover_to_ports`]), and [`FdMemory`] lets
//! [`discover_remembering`] skip the read of every fd while the candidate sockets are the ones
//! it has seen. Netlink
//! still walks the hash table once per family, so its cost grows with the namespace's sockets,
//! but 5–15 times slower than /proc (`benches/discovery.rs` compares both ways).
//!
//! A caller that only cares about connections to a few remote ports (a message server's node
//! holds tens of thousands of client sockets and a handful of Redis connections) asks
//! [`discover_to_ports`]. Netlink then sends an `INET_DIAG_REQ_BYTECODE` filter with the dump
//! request (built by `port_filter`), and the kernel formats and copies only the sockets whose
//! remote port is in the set; the walk of the hash table remains, and so does the `readlink` of
//! every fd the node holds. The /proc way applies the same
//! filter after parsing, so both ways give the same answer.
//!
//! Errors are split by what they mean for a health check: [`DiscoverError::NodeMissing`] when
//! the node is not running (a process that vanishes halfway counts as missing), and
//! [`DiscoverError::Unreadable`] when rolecall cannot look (no permission), in which case
//! nothing is known about the node.

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};

/// Which process (or processes) is the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    /// One process, by pid.
    Pid(u32),
    /// A file holding the node's pid in decimal (surrounding whitespace ignored). It is re-read
    /// at every discovery, so a restarted node is followed.
    PidFile(PathBuf),
    /// Every process whose `comm` equals this name. The kernel truncates `comm` to 15 bytes
    /// (`TASK_COMM_LEN` is 16 with the NUL), so a longer name is compared truncated.
    Process(String),
    /// Every established TCP socket of rolecall's own network namespace, except rolecall's own
    /// sockets. For a node that shares a pod (network namespace) with rolecall.
    Namespace,
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSelector::Pid(pid) => write!(f, "pid {pid}"),
            NodeSelector::PidFile(path) => write!(f, "pid file {}", path.display()),
            NodeSelector::Process(name) => write!(f, "process {name}"),
            NodeSelector::Namespace => f.write_str("network namespace"),
        }
    }
}

/// One TCP connection, seen from the node: `local` is the node's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// What one discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSockets {
    /// The processes found, ascending (empty for [`NodeSelector::Namespace`]).
    pub pids: Vec<u32>,
    /// ESTABLISHED TCP connections only, sorted and deduplicated. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, a dual-stack socket talking IPv4) are given as plain IPv4.
    pub connections: Vec<Connection>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The node's process is not running (pid gone, pid file missing/empty/garbage pointing
    /// nowhere, no process with that name).
    #[error("{0}")]
    NodeMissing(String),
    /// rolecall could not read /proc (permission denied etc.) — rolecall is blind, the node is
    /// not known to be missing.
    #[error("{0}")]
    Unreadable(String),
}

/// How [`discover_with`] lists the ESTABLISHED sockets of the node's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Netlink when the node shares rolecall's network namespace and netlink works, `/proc`
    /// otherwise. What [`discover`] uses.
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

/// Finds the established TCP connections of the node named by `selector`.
///
/// Blocking: it reads a few files under `/proc` and talks to the kernel over netlink (call it
/// from `spawn_blocking` in async code).
pub fn discover(selector: &NodeSelector) -> Result<NodeSockets, DiscoverError> {
    discover_with(selector, Method::Auto).map(|(sockets, _)| sockets)
}

/// [`discover`] with a chosen [`Method`]; also returns the method that gave the answer
/// ([`Method::Netlink`] or [`Method::Proc`], never [`Method::Auto`]).
///
/// For tests and benchmarks that compare the two ways; the daemon uses [`discover`].
pub fn discover_with(
    selector: &NodeSelector,
    method: Method,
) -> Result<(NodeSockets, Method), DiscoverError> {
    discover_to_ports_with(selector, &BTreeSet::new(), method)
}

/// [`discover`], keeping only the connections whose remote port is in `ports` (an empty set
/// keeps every connection).
///
/// By netlink the kernel does the filtering (an `INET_DIAG_REQ_BYTECODE` filter), so the
/// namespace's other sockets are neither formatted nor copied; by /proc the same filter is
/// applied after parsing. Both give the same answer.
pub fn discover_to_ports(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
) -> Result<NodeSockets, DiscoverError> {
    discover_to_ports_with(selector, ports, Method::Auto).map(|(sockets, _)| sockets)
}

/// [`discover_to_ports`] with a chosen [`Method`], like [`discover_with`].
pub fn discover_to_ports_with(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
    method: Method,
) -> Result<(NodeSockets, Method), DiscoverError> {
    match node_pids(selector)? {
        Some((pids, missing)) => sockets_of(pids, method, ports, || missing.clone()),
        None => namespace_sockets(method, ports),
    }
}

/// The running pids a selector names, with the message for a node that is not running; `None`
/// for [`NodeSelector::Namespace`], which names no process.
fn node_pids(selector: &NodeSelector) -> Result<Option<(Vec<u32>, String)>, DiscoverError> {
    match selector {
        NodeSelector::Namespace => Ok(None),
        NodeSelector::Pid(pid) => {
            let label = format!("pid {pid}");
            require_running(*pid, &label)?;
            Ok(Some((vec![*pid], format!("no process with {label}"))))
        }
        NodeSelector::PidFile(path) => {
            let pid = read_pid_file(path)?;
            let label = format!("pid {pid} (from pid file {})", path.display());
            require_running(pid, &label)?;
            Ok(Some((vec![pid], format!("no process with {label}"))))
        }
        NodeSelector::Process(name) => {
            let pids = pids_named(name)?;
            let missing = format!("no process named {name}");
            if pids.is_empty() {
                return Err(DiscoverError::NodeMissing(missing));
            }
            Ok(Some((pids, missing)))
        }
    }
}

/// A full read of the node's fds at least this often, even when nothing new appeared.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);

/// What the last discovery learned from the node's fds, so that the next one need not read
/// every fd again: a node of a message server holds tens of thousands of client sockets, and
/// reading `/proc/PID/fd` costs ~4.5 µs per fd (BENCHMARKS.md), while only its few connections
/// to the topology's ports matter.
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

/// Parses the text of `/proc/net/tcp` (`v6 == false`) or `/proc/net/tcp6` (`v6 == true`) into
/// the ESTABLISHED connections and their socket inodes, in table order.
///
/// The header line, lines in any other state and lines that do not parse are skipped. The
/// kernel prints each address as 32-bit words in `%08X` of the word as stored, i.e. in host byte
/// order (`0100007F` is 127.0.0.1 on little-endian machines), and the port as a plain number
/// (`tcp4_seq_show` / `get_tcp4_sock` in net/ipv4/tcp_ipv4.c).
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<(Connection, u64)> {
    text.lines()
        .filter_map(|line| parse_tcp_line(line, v6))
        .collect()
}

/// TCP_ESTABLISHED in include/net/tcp_states.h.
const TCP_ESTABLISHED: u8 = 0x01;

fn parse_tcp_line(line: &str, v6: bool) -> Option<(Connection, u64)> {
    // Fields: sl, local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt,
    // uid, timeout, inode, then more that vary by kernel and state.
    let mut fields = line.split_whitespace();
    // The slot is "0:"; this also skips the header line, which starts with "sl".
    fields.next()?.strip_suffix(':')?.parse::<u64>().ok()?;
    let local = parse_endpoint(fields.next()?, v6)?;
    let remote = parse_endpoint(fields.next()?, v6)?;
    if parse_hex_u8(fields.next()?)? != TCP_ESTABLISHED {
        return None;
    }
    let inode = fields.nth(5)?.parse::<u64>().ok()?;
    Some((Connection { local, remote }, inode))
}

/// Parses `0100007F:1538` (or 32 hex digits before the colon for IPv6).
fn parse_endpoint(text: &str, v6: bool) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_be_bytes(parse_hex_bytes::<2>(port)?);
    if v6 {
        if address.len() != 32 {
            return None;
        }
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(0..4) {
            chunk.copy_from_slice(&kernel_word(&address[word * 8..word * 8 + 8])?);
        }
        Some(normalise(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(octets),
            port,
            0,
            0,
        ))))
    } else {
        if address.len() != 8 {
            return None;
        }
        let octets = kernel_word(address)?;
        Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(octets),
            port,
        )))
    }
}

/// One 32-bit address word as the kernel prints it: `%08X` of the word as it sits in memory, so
/// its bytes in memory order (network order) are the native-endian bytes of the number.
fn kernel_word(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_be_bytes(parse_hex_bytes::<4>(hex)?).to_ne_bytes())
}

/// Parses exactly `2 * N` hex digits, most significant first. Unlike `from_str_radix`, rejects a
/// sign.
fn parse_hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(bytes)
}

fn parse_hex_u8(hex: &str) -> Option<u8> {
    parse_hex_bytes::<1>(hex).map(|[byte]| byte)
}

/// `::ffff:a.b.c.d` (a dual-stack socket carrying IPv4) becomes `a.b.c.d`, so the same peer
/// compares equal whichever kind of socket reached it.
fn normalise(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => address,
        },
        SocketAddr::V4(_) => address,
    }
}

/// Parses `/proc/PID/stat` into `comm` (field 2) and the state letter (field 3).
///
/// `comm` is in parentheses and may itself hold spaces and `)`, so it ends at the last `)`
/// (proc(5)).
fn parse_stat(stat: &[u8]) -> Option<(&[u8], u8)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?;
    let state = *stat.get(close + 2)?;
    (stat.get(close + 1) == Some(&b' ')).then_some((comm, state))
}

/// Whether a process in this state has exited: Z (zombie, not yet reaped) or X (dead).
fn has_exited(state: u8) -> bool {
    matches!(state, b'Z' | b'X')
}

/// Parses a `/proc/PID/fd` link target `socket:[12345]` into the socket's inode.
fn parse_socket_link(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether an error reading `/proc/PID/...` means the process is gone: ENOENT once it is
/// reaped, ESRCH while it is being torn down.
fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

fn unreadable(path: &Path, err: &io::Error) -> DiscoverError {
    if err.kind() == io::ErrorKind::PermissionDenied {
        // /proc/PID/fd is guarded by ptrace access mode READ (proc(5)).
        DiscoverError::Unreadable(format!(
            "cannot read {}: permission denied; rolecall needs CAP_SYS_PTRACE or the same user \
             as the node",
            path.display()
        ))
    } else {
        DiscoverError::Unreadable(format!("cannot read {}: {}", path.display(), describe(err)))
    }
}

/// An I/O error's text without std's " (os error N)" suffix.
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Reads a pid file; every way it fails to name a pid, except not being allowed to read it,
/// means the node is not running.
fn read_pid_file(path: &Path) -> Result<u32, DiscoverError> {
    let missing =
        |why: &str| DiscoverError::NodeMissing(format!("pid file {}: {why}", path.display()));
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(missing(&describe(&err)));
        }
        Err(err) => {
            return Err(DiscoverError::Unreadable(format!(
                "cannot read pid file {}: {}",
                path.display(),
                describe(&err)
            )));
        }
    };
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if text.is_empty() {
        return Err(missing("empty"));
    }
    match text.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => {
            let shown: String = text.chars().take(40).collect();
            Err(missing(&format!("does not hold a pid: {shown:?}")))
        }
    }
}

/// Fails with `NodeMissing` unless `pid` is a running (not zombie) process.
fn require_running(pid: u32, label: &str) -> Result<(), DiscoverError> {
    let path = proc_path(pid, "stat");
    let stat = match std::fs::read(&path) {
        Ok(stat) => stat,
        Err(err) if is_gone(&err) => {
            return Err(DiscoverError::NodeMissing(format!(
                "no process with {label}"
            )));
        }
        Err(err) => return Err(unreadable(&path, &err)),
    };
    match parse_stat(&stat) {
        Some((_, state)) if has_exited(state) => Err(DiscoverError::NodeMissing(format!(
            "{label} has exited (zombie, not yet reaped by its parent)"
        ))),
        Some(_) => Ok(()),
        None => Err(DiscoverError::Unreadable(format!(
            "cannot parse {}",
            path.display()
        ))),
    }
}

/// The running processes whose comm is `name`, ascending.
fn pids_named(name: &str) -> Result<Vec<u32>, DiscoverError> {
    let wanted = name.as_bytes();
    let truncated = &wanted[..wanted.len().min(15)];
    let proc = Path::new("/proc");
    let entries = std::fs::read_dir(proc).map_err(|err| unreadable(proc, &err))?;
    let mut pids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| unreadable(proc, &err))?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = proc_path(pid, "stat");
        let stat = match std::fs::read(&path) {
            Ok(stat) => stat,
            Err(err) if is_gone(&err) => continue,
            Err(err) => return Err(unreadable(&path, &err)),
        };
        if let Some((comm, state)) = parse_stat(&stat) {
            // Exact match too, in case a kernel reports more than 15 bytes.
            if (comm == wanted || comm == truncated) && !has_exited(state) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// Adds the inodes of the sockets process `pid` holds to `inodes`. `Ok(false)` if the process
/// is gone.
fn collect_socket_inodes(pid: u32, inodes: &mut HashSet<u64>) -> Result<bool, DiscoverError> {
    collect_socket_inodes_in(&proc_path(pid, "fd"), inodes)
}

fn collect_socket_inodes_in(dir: &Path, inodes: &mut HashSet<u64>) -> Result<bool, DiscoverError> {
    for_each_socket_fd(dir, |inode, _| {
        inodes.insert(inode);
    })
}

/// Calls `found(inode, fd link path)` for every socket fd in `dir` (a `/proc/PID/fd`);
/// `Ok(false)` if the process is gone.
fn for_each_socket_fd(
    dir: &Path,
    mut found: impl FnMut(u64, PathBuf),
) -> Result<bool, DiscoverError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if is_gone(&err) => return Ok(false),
        Err(err) => return Err(unreadable(dir, &err)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if is_gone(&err) => return Ok(false),
            Err(err) => return Err(unreadable(dir, &err)),
        };
        match std::fs::read_link(entry.path()) {
            Ok(target) => {
                if let Some(inode) = parse_socket_link(&target) {
                    found(inode, entry.path());
                }
            }
            // The fd was closed since the directory was listed, or the process is exiting.
            Err(err) if is_gone(&err) => {}
            Err(err) => return Err(unreadable(&entry.path(), &err)),
        }
    }
    Ok(true)
}

/// Reads and parses `DIR/tcp` and `DIR/tcp6`. `Ok(None)` if `DIR/tcp` is gone (its process
/// exited); a missing `tcp6` means IPv6 is disabled and counts as empty.
fn read_tcp_tables(net: &Path) -> Result<Option<Table>, DiscoverError> {
    let tcp = net.join("tcp");
    let mut entries = match std::fs::read_to_string(&tcp) {
        Ok(text) => parse_proc_net_tcp(&text, false),
        Err(err) if is_gone(&err) => return Ok(None),
        Err(err) => return Err(unreadable(&tcp, &err)),
    };
    let tcp6 = net.join("tcp6");
    match std::fs::read_to_string(&tcp6) {
        Ok(text) => entries.extend(parse_proc_net_tcp(&text, true)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(unreadable(&tcp6, &err)),
    }
    Ok(Some(entries))
}

/// ESTABLISHED connections of a network namespace, each with its socket's inode.
type Table = Vec<(Connection, u64)>;

/// Keeps the connections whose remote port is in `ports`; an empty set keeps all. A netlink
/// table was filtered by the kernel already (unless the set was too large for a filter, see
/// [`MAX_FILTER_PORTS`]); a /proc table is filtered here.
fn keep_ports(table: &mut Table, ports: &BTreeSet<u16>) {
    if !ports.is_empty() {
        table.retain(|(connection, _)| ports.contains(&connection.remote.port()));
    }
}

fn sorted(mut connections: Vec<Connection>) -> Vec<Connection> {
    connections.sort_unstable();
    connections.dedup();
    connections
}

/// The ESTABLISHED sockets (with inodes) of the network namespace of `pid`, and the method
/// that listed them. `Ok(None)` if the process is gone.
fn namespace_table_of(
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
fn sockets_of(
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
fn namespace_sockets(
    method: Method,
    ports: &BTreeSet<u16>,
) -> Result<(NodeSockets, Method), DiscoverError> {
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
    let connections = table
        .into_iter()
        // Inode 0: the handshake is done but nobody has accept()ed the socket yet, so no
        // process holds it (it sits in a listener's queue, e.g. rolecall's own HTTP port).
        .filter(|(_, inode)| *inode != 0 && !own.contains(inode))
        .map(|(connection, _)| connection)
        .collect();
    let sockets = NodeSockets {
        pids: Vec::new(),
        connections: sorted(connections),
    };
    Ok((sockets, used))
}

/// Why a netlink dump gave no answer.
#[derive(Debug, thiserror::Error)]
enum NetlinkError {
    /// A system call failed, or the kernel answered the request with an error code.
    #[error("netlink sock_diag: cannot {what}: {}", describe(.cause))]
    Os {
        what: &'static str,
        cause: io::Error,
    },
    /// The kernel's answer did not parse, or did not end in time.
    #[error("netlink sock_diag: {0}")]
    Malformed(String),
}

impl NetlinkError {
    fn os(what: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
        move |cause| NetlinkError::Os { what, cause }
    }
}

/// Bounds every `recv` of a dump, and the whole dump. The kernel fills the next datagram while
/// answering the previous `recv`, so a dump never waits for anything; these only guard against
/// the unexpected.
const NETLINK_RECV_TIMEOUT: Duration = Duration::from_secs(1);
const NETLINK_DUMP_LIMIT: Duration = Duration::from_secs(5);

/// The kernel sends dump datagrams of at most 32 KiB (`netlink_recvmsg` caps what it allocates
/// for the next one at `SKB_WITH_OVERHEAD(32768)`, net/netlink/af_netlink.c); a smaller buffer
/// would make it send smaller ones.
const NETLINK_RECV_BUFFER: usize = 64 * 1024;

/// Set once the kernel refused an `INET_DIAG_BC_D_EQ` filter; later dumps compare ports with
/// `D_GE` and `D_LE` straight away.
static PORT_EQUAL_REFUSED: AtomicBool = AtomicBool::new(false);

/// Every ESTABLISHED TCP socket of rolecall's network namespace whose remote port is in `ports`
/// (all of them for an empty set), IPv4 then IPv6, with its inode, through `NETLINK_SOCK_DIAG`
/// (sock_diag(7)). The kernel applies the port filter ([`port_filter`]).
fn dump_established(ports: &BTreeSet<u16>) -> Result<Table, NetlinkError> {
    let how = if PORT_EQUAL_REFUSED.load(Ordering::Relaxed) {
        PortMatch::Range
    } else {
        PortMatch::Equal
    };
    let filter = port_filter(ports, how);
    match dump_filtered(&filter) {
        // A kernel older than `INET_DIAG_BC_D_EQ` fails the audit of the filter
        // (`inet_diag_bc_audit` refuses an unknown code with EINVAL); `D_GE` and `D_LE` are as
        // old as the bytecode itself.
        Err(NetlinkError::Os { cause, .. })
            if how == PortMatch::Equal
                && !filter.is_empty()
                && cause.raw_os_error() == Some(libc::EINVAL) =>
        {
            PORT_EQUAL_REFUSED.store(true, Ordering::Relaxed);
            tracing::debug!(
                "the kernel refused INET_DIAG_BC_D_EQ, filtering ports with D_GE and D_LE"
            );
            dump_filtered(&port_filter(ports, PortMatch::Range))
        }
        other => other,
    }
}

/// The ESTABLISHED TCP sockets of rolecall's network namespace that pass `filter`, an
/// `INET_DIAG_REQ_BYTECODE` program (none when empty).
fn dump_filtered(filter: &[u8]) -> Result<Table, NetlinkError> {
    use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

    let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(NetlinkError::os("open a socket"))?;
    // Port 0 is the kernel; connecting also binds the socket to a port of its own.
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(NetlinkError::os("connect to the kernel"))?;
    socket2::SockRef::from(&socket)
        .set_read_timeout(Some(NETLINK_RECV_TIMEOUT))
        .map_err(NetlinkError::os("set a receive timeout"))?;
    let deadline = Instant::now() + NETLINK_DUMP_LIMIT;
    let mut buffer = vec![0u8; NETLINK_RECV_BUFFER];
    let mut table = Vec::new();
    for (sequence, family) in [(1, AF_INET), (2, AF_INET6)] {
        socket
            .send(&dump_request(family, sequence, filter), 0)
            .map_err(NetlinkError::os("send a dump request"))?;
        loop {
            if Instant::now() > deadline {
                return Err(NetlinkError::Malformed(format!(
                    "the dump did not end within {NETLINK_DUMP_LIMIT:?}"
                )));
            }
            // MSG_TRUNC: the length of the datagram, even if it did not fit.
            let len = match socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(NetlinkError::os("receive the dump")(err)),
            };
            let datagram = buffer.get(..len).ok_or_else(|| {
                NetlinkError::Malformed(format!(
                    "a datagram of {len} bytes did not fit in {NETLINK_RECV_BUFFER}"
                ))
            })?;
            match parse_dump_datagram(datagram, &mut table) {
                Ok(Dump::More) => {}
                Ok(Dump::Done) => break,
                // No AF_INET6 handler: the kernel has no IPv6, like a missing /proc/net/tcp6.
                Err(NetlinkError::Os { cause, .. })
                    if family == AF_INET6 && cause.raw_os_error() == Some(libc::ENOENT) =>
                {
                    break;
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(table)
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for the ESTABLISHED TCP sockets of `family`, with
/// `filter` as its `INET_DIAG_REQ_BYTECODE` attribute unless it is empty.
fn dump_request(family: u8, sequence: u32, filter: &[u8]) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::ESTABLISHED,
        socket_id: if family == AF_INET6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        },
    };
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    if !filter.is_empty() {
        // A struct nlattr (u16 nla_len, u16 nla_type) and the program, after the
        // inet_diag_req_v2 (`inet_diag_parse_attrs` in net/ipv4/inet_diag.c reads the attributes
        // there). The program's length is a multiple of 4, so no padding follows.
        let attribute_len = u16::try_from(NLA_HEADER_LEN + filter.len())
            .expect("port_filter bounds the program's length");
        bytes.extend_from_slice(&attribute_len.to_ne_bytes());
        bytes.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        bytes.extend_from_slice(filter);
        let total = u32::try_from(bytes.len()).expect("a request of a few KiB");
        NetlinkBuffer::new(&mut bytes[..]).set_length(total);
    }
    bytes
}

/// `INET_DIAG_REQ_BYTECODE` in linux/inet_diag.h: the request attribute holding a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// The size of a `struct nlattr` header.
const NLA_HEADER_LEN: usize = 4;
/// `inet_diag_bc_op` codes (linux/inet_diag.h).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_D_GE: u8 = 4;
const INET_DIAG_BC_D_LE: u8 = 5;
const INET_DIAG_BC_D_EQ: u8 = 12;
/// The size of one `inet_diag_bc_op`, and of a port comparison: the op and a second op holding
/// the port.
const BC_OP_LEN: usize = 4;
const BC_PORT_TEST_LEN: usize = 2 * BC_OP_LEN;

/// Above this many ports no filter is sent and the whole table is filtered in user space: the
/// kernel runs the program for every socket, one comparison per port, and jump offsets are
/// 16-bit. A Redis topology has a handful of ports.
const MAX_FILTER_PORTS: usize = 1024;

/// How [`port_filter`] compares a socket's remote port with one of the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    /// One `INET_DIAG_BC_D_EQ`.
    Equal,
    /// `INET_DIAG_BC_D_GE` then `INET_DIAG_BC_D_LE` with the same port, for kernels without
    /// `D_EQ`.
    Range,
}

/// The `INET_DIAG_REQ_BYTECODE` program that accepts a socket whose remote port is in `ports`:
/// empty (no filter) when `ports` is empty or holds more than [`MAX_FILTER_PORTS`].
///
/// The kernel's interpreter (`inet_diag_bc_run` in net/ipv4/inet_diag.c) walks a sequence of
/// 4-byte `struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }` (host byte order). Each op
/// tests the socket and moves forward by `yes` bytes if the test holds, by `no` bytes if not;
/// the socket is accepted if this lands exactly on the end of the program, rejected if it
/// lands past it. A port comparison (`D_EQ`, `D_GE`, `D_LE`) is followed by a second op whose
/// `no` holds the port, compared with `ntohs(inet_dport)`: the socket's remote port.
/// `INET_DIAG_BC_JMP` always takes its `no`.
///
/// The ports are tested one after the other, like `ss` compiles `dport = :A or dport = :B`
/// (`ssfilter_bytecompile` in iproute2's misc/ss.c):
///
/// ```text
/// test A: D_EQ  yes 8  no 12       a match goes on to the JMP, a mismatch to test B
///         port A (in `no`)
///         JMP   yes 4  no  →end    a match of A: jump to the end, accept
/// test B: D_EQ  yes 8  no 12       the last test: a match lands on the end (accept), a
///         port B                   mismatch 4 bytes past it (reject)
/// ```
///
/// With [`PortMatch::Range`] a test is `D_GE yes 8 no 20; port; D_LE yes 8 no 12; port`.
/// `yes` is one byte, so every accepting jump of the chain is a `JMP`'s 16-bit `no`.
///
/// The kernel checks a program before the dump (`inet_diag_bc_audit`): every `yes` at least
/// the op's length with its argument (8 for a port comparison, 4 for `JMP`), every `no` at
/// least that too and at most 4 bytes past the end, every offset a multiple of 4, every `no`
/// target inside the program an op that the chain of `yes` jumps reaches, and that chain
/// ending exactly on the end. The layout above meets all of them.
fn port_filter(ports: &BTreeSet<u16>, how: PortMatch) -> Vec<u8> {
    if ports.is_empty() || ports.len() > MAX_FILTER_PORTS {
        return Vec::new();
    }
    let codes: &[u8] = match how {
        PortMatch::Equal => &[INET_DIAG_BC_D_EQ],
        PortMatch::Range => &[INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE],
    };
    let test_len = BC_PORT_TEST_LEN * codes.len();
    let total = ports.len() * (test_len + BC_OP_LEN) - BC_OP_LEN;
    let offset = |n: usize| u16::try_from(n).expect("MAX_FILTER_PORTS bounds the program");
    let mut program = Vec::with_capacity(total);
    let mut push_op = |code: u8, yes: u8, no: u16| {
        program.push(code);
        program.push(yes);
        program.extend_from_slice(&no.to_ne_bytes());
    };
    for (index, &port) in ports.iter().enumerate() {
        for (step, &code) in codes.iter().enumerate() {
            // A mismatch skips the rest of this test and its JMP: the next port's test, or 4
            // bytes past the end after the last one.
            let no = test_len - step * BC_PORT_TEST_LEN + BC_OP_LEN;
            push_op(code, BC_PORT_TEST_LEN as u8, offset(no));
            push_op(0, 0, port);
        }
        if index + 1 < ports.len() {
            let jmp_at = (index + 1) * (test_len + BC_OP_LEN) - BC_OP_LEN;
            push_op(INET_DIAG_BC_JMP, BC_OP_LEN as u8, offset(total - jmp_at));
        }
    }
    program
}

/// Whether a dump goes on after a datagram.
#[derive(Debug, PartialEq, Eq)]
enum Dump {
    More,
    Done,
}

/// Adds the ESTABLISHED connections of one datagram of a `sock_diag` dump to `table`, and tells
/// whether the dump ended (`NLMSG_DONE`). An `NLMSG_ERROR` with a code, or an `NLMSG_DONE`
/// with a negative one, is the kernel refusing or aborting the dump: `NetlinkError::Os`.
///
/// Only the fixed `inet_diag_msg` header of each record is read; the attributes after it
/// (`INET_DIAG_SHUTDOWN`, `INET_DIAG_CGROUP_ID`, ... by kernel version) are skipped.
fn parse_dump_datagram(mut datagram: &[u8], table: &mut Table) -> Result<Dump, NetlinkError> {
    let malformed = |what: &str, err: &dyn fmt::Display| {
        NetlinkError::Malformed(format!("cannot parse {what}: {err}"))
    };
    while !datagram.is_empty() {
        let message =
            NetlinkBuffer::new_checked(datagram).map_err(|err| malformed("a message", &err))?;
        let payload = message.payload();
        match message.message_type() {
            SOCK_DIAG_BY_FAMILY => {
                let header = InetResponseHeader::parse(payload)
                    .map_err(|err| malformed("an inet_diag record", &err))?;
                table.extend(connection_of(&header));
            }
            NLMSG_DONE => {
                // Its payload is the dump's return code; the kernel may leave it out.
                let code = match payload.len() {
                    0 => 0,
                    _ => DoneBuffer::new_checked(payload)
                        .map_err(|err| malformed("NLMSG_DONE", &err))?
                        .code(),
                };
                if code < 0 {
                    return Err(NetlinkError::os("finish the dump")(
                        io::Error::from_raw_os_error(code.saturating_neg()),
                    ));
                }
                return Ok(Dump::Done);
            }
            NLMSG_ERROR => {
                let error = ErrorBuffer::new_checked(payload)
                    .map_err(|err| malformed("NLMSG_ERROR", &err))?;
                // No code is an acknowledgement, which a dump does not ask for.
                if let Some(code) = error.code() {
                    return Err(NetlinkError::os("dump TCP sockets")(
                        io::Error::from_raw_os_error(code.get().saturating_neg()),
                    ));
                }
            }
            NLMSG_NOOP => {}
            other => {
                return Err(NetlinkError::Malformed(format!(
                    "unexpected message type {other}"
                )));
            }
        }
        // Messages start on 4-byte boundaries (NLMSG_ALIGN); the last one may be unpadded.
        let step = (message.length() as usize).next_multiple_of(4);
        datagram = datagram.get(step..).unwrap_or_default();
    }
    Ok(Dump::More)
}

/// The connection of one `inet_diag_msg` record and its socket's inode, if it is ESTABLISHED
/// (the dump asks only for those; checked again so this means the same as
/// [`parse_proc_net_tcp`]). Ports arrive in network order and addresses as bytes in network
/// order; the crate has already turned them into numbers and addresses.
fn connection_of(header: &InetResponseHeader) -> Option<(Connection, u64)> {
    if header.state != TCP_ESTABLISHED {
        return None;
    }
    let id = &header.socket_id;
    let connection = Connection {
        local: normalise(SocketAddr::new(id.source_address, id.source_port)),
        remote: normalise(SocketAddr::new(id.destination_address, id.destination_port)),
    };
    Some((connection, u64::from(header.inode)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkPayload};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn conn(local: &str, remote: &str) -> Connection {
        Connection {
            local: addr(local),
            remote: addr(remote),
        }
    }

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
    const TCP6_HEADER: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    // The hex below is what a little-endian kernel prints; on big-endian the words differ.
    #[cfg(target_endian = "little")]
    #[test]
    fn parser_reads_established_lines_and_skips_everything_else() {
        struct Case {
            name: &'static str,
            v6: bool,
            text: String,
            want: Vec<(Connection, u64)>,
        }
        let cases = [
            Case {
                name: "ipv4 established",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:58102", "127.0.0.1:5432"), 123456)],
            },
            Case {
                name: "ipv4 non-loopback address byte order",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n   7: 0201000A:C350 0A02000A:18EB 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("10.0.1.2:50000", "10.0.2.10:6379"), 99)],
            },
            Case {
                name: "ipv6 loopback",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: 00000000000000000000000001000000:18EB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("[::1]:6379", "[::1]:54321"), 4242)],
            },
            Case {
                name: "ipv6 global address word order",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: B80D0120000000000000000001000000:18EB B80D0120000000000000000002000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("[2001:db8::1]:6379", "[2001:db8::2]:54321"), 7)],
            },
            Case {
                name: "ipv4-mapped ipv6 becomes ipv4",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: 0000000000000000FFFF00000100007F:18EB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:6379", "127.0.0.1:54321"), 77)],
            },
            Case {
                name: "listen, time-wait, syn-sent and close-wait are skipped",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n\
                     \x20  0: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1 0000000000000000 100 0 0 10 0\n\
                     \x20  1: 0100007F:18EB 0100007F:D431 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n\
                     \x20  2: 0100007F:D432 0100007F:18EB 02 00000000:00000000 01:00000064 00000000     0        0 12 1 0000000000000000 100 0 0 10 0\n\
                     \x20  3: 0100007F:D433 0100007F:18EB 08 00000000:00000000 00:00000000 00000000     0        0 13 1 0000000000000000 20 4 30 10 -1\n\
                     \x20  4: 0100007F:D434 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 14 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:54324", "127.0.0.1:6379"), 14)],
            },
            Case {
                name: "only a header",
                v6: false,
                text: TCP_HEADER.to_owned(),
                want: vec![],
            },
            Case {
                name: "empty text",
                v6: true,
                text: String::new(),
                want: vec![],
            },
            Case {
                name: "malformed lines are skipped, good ones kept",
                v6: false,
                text: [
                    TCP_HEADER,
                    "garbage",
                    "   0:",
                    "   0: 0100007F:E2F6",
                    "   0: 0100007F:E2F6 0100007F:1538 01",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 notanumber",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 -5",
                    "   x: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007G:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: +100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:+2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007FE2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 1 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 ZZ 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 é",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 6",
                ]
                .join("\n"),
                want: vec![(conn("127.0.0.1:58102", "127.0.0.1:5432"), 6)],
            },
            Case {
                name: "ipv6 lines in the ipv4 table are skipped",
                v6: false,
                text: "   0: 00000000000000000000000001000000:18EB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 0 10 -1".to_owned(),
                want: vec![],
            },
            Case {
                name: "ipv4 lines in the ipv6 table are skipped",
                v6: true,
                text: "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0 20 4 30 10 -1".to_owned(),
                want: vec![],
            },
        ];
        for case in cases {
            assert_eq!(
                parse_proc_net_tcp(&case.text, case.v6),
                case.want,
                "case: {}",
                case.name
            );
        }
    }

    #[test]
    fn parser_never_panics_on_truncated_or_odd_text() {
        let line = "   0: 0000000000000000FFFF00000100007F:18EB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 0 10 -1 é";
        for end in 0..=line.len() {
            if let Some(prefix) = line.get(..end) {
                parse_proc_net_tcp(prefix, true);
                parse_proc_net_tcp(prefix, false);
            }
        }
        for odd in ["::::", ":", "0: :", "0: é:é é:é 01", "\u{0}\n\r\n"] {
            assert!(parse_proc_net_tcp(odd, true).is_empty(), "{odd:?}");
            assert!(parse_proc_net_tcp(odd, false).is_empty(), "{odd:?}");
        }
    }

    #[test]
    fn stat_parser_finds_comm_and_state() {
        type Comm = &'static [u8];
        let cases: [(Comm, Option<(Comm, u8)>); 7] = [
            (b"6423 (cat) R 6414 6414 4395 0", Some((b"cat", b'R'))),
            (b"1 (a) b) c) S 0 1", Some((b"a) b) c", b'S'))),
            (b"99 (with space) Z 1 99", Some((b"with space", b'Z'))),
            (b"7 () D 1", Some((b"", b'D'))),
            (b"7 (cat)", None),
            (b"7 (cat)R", None),
            (b"garbage", None),
        ];
        for (stat, want) in cases {
            assert_eq!(
                parse_stat(stat),
                want,
                "{:?}",
                String::from_utf8_lossy(stat)
            );
        }
    }

    #[test]
    fn socket_links_give_inodes_and_other_links_none() {
        let cases = [
            ("socket:[12345]", Some(12345)),
            ("socket:[0]", Some(0)),
            ("pipe:[12345]", None),
            ("anon_inode:[eventpoll]", None),
            ("/dev/null", None),
            ("socket:[]", None),
            ("socket:[12x]", None),
            ("socket:[12345", None),
        ];
        for (link, want) in cases {
            assert_eq!(parse_socket_link(Path::new(link)), want, "{link}");
        }
    }

    #[test]
    fn io_errors_are_split_into_gone_and_unreadable() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        let esrch = io::Error::from_raw_os_error(libc::ESRCH);
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert!(is_gone(&enoent));
        assert!(is_gone(&esrch));
        assert!(!is_gone(&eacces));
        let err = unreadable(Path::new("/proc/1/fd"), &eacces);
        assert!(matches!(err, DiscoverError::Unreadable(_)));
        assert_eq!(
            err.to_string(),
            "cannot read /proc/1/fd: permission denied; rolecall needs CAP_SYS_PTRACE or the \
             same user as the node"
        );
        assert_eq!(describe(&enoent), "No such file or directory");
    }

    #[test]
    fn selectors_display_what_they_name() {
        let cases = [
            (NodeSelector::Pid(1234), "pid 1234"),
            (
                NodeSelector::PidFile(PathBuf::from("/run/x.pid")),
                "pid file /run/x.pid",
            ),
            (
                NodeSelector::Process("centrifugo".to_owned()),
                "process centrifugo",
            ),
            (NodeSelector::Namespace, "network namespace"),
        ];
        for (selector, want) in cases {
            assert_eq!(selector.to_string(), want);
        }
    }

    /// A connected pair of sockets, both held by this test process.
    struct Pair {
        client: TcpStream,
        server: TcpStream,
        _listener: TcpListener,
    }

    impl Pair {
        fn connect(listen_on: &str, connect_to: impl Fn(u16) -> SocketAddr) -> Pair {
            let listener = TcpListener::bind(listen_on)
                .unwrap_or_else(|err| panic!("cannot listen on {listen_on}: {err}"));
            let port = listener.local_addr().unwrap().port();
            let target = connect_to(port);
            let client = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .unwrap_or_else(|err| panic!("cannot connect to {target}: {err}"));
            let server = accept_within(&listener, Duration::from_secs(5));
            Pair {
                client,
                server,
                _listener: listener,
            }
        }

        fn client_side(&self) -> Connection {
            Connection {
                local: normalise(self.client.local_addr().unwrap()),
                remote: normalise(self.client.peer_addr().unwrap()),
            }
        }

        fn server_side(&self) -> Connection {
            Connection {
                local: normalise(self.server.local_addr().unwrap()),
                remote: normalise(self.server.peer_addr().unwrap()),
            }
        }
    }

    fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + limit;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    return stream;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection to {} within {limit:?}",
                        listener.local_addr().unwrap()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("accept failed: {err}"),
            }
        }
    }

    fn our_pid() -> u32 {
        std::process::id()
    }

    fn discovered(selector: &NodeSelector) -> NodeSockets {
        discover(selector).unwrap_or_else(|err| panic!("discover({selector}) failed: {err}"))
    }

    /// Kills and reaps the child when the test ends, even by a panic.
    struct Reaped(Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn exited_pid() -> u32 {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        pid
    }

    #[test]
    fn pid_selector_finds_our_own_ipv4_connection_from_both_ends() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let found = discovered(&NodeSelector::Pid(our_pid()));
        assert_eq!(found.pids, vec![our_pid()]);
        assert!(
            found.connections.contains(&pair.client_side()),
            "{:?} not in {found:?}",
            pair.client_side()
        );
        assert!(
            found.connections.contains(&pair.server_side()),
            "{:?} not in {found:?}",
            pair.server_side()
        );
        assert!(found.connections.is_sorted());
    }

    #[test]
    fn pid_selector_finds_an_ipv6_loopback_connection() {
        let pair = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let found = discovered(&NodeSelector::Pid(our_pid()));
        let client = pair.client_side();
        assert!(client.local.is_ipv6() && client.remote.is_ipv6());
        assert!(
            found.connections.contains(&client),
            "{client:?} not in {found:?}"
        );
        assert!(found.connections.contains(&pair.server_side()));
    }

    #[test]
    fn ipv4_reaching_a_dual_stack_listener_is_reported_as_plain_ipv4() {
        let pair = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        let raw_server_local = pair.server.local_addr().unwrap();
        assert!(
            raw_server_local.is_ipv6(),
            "the accepted socket should be an IPv6 socket carrying IPv4, got {raw_server_local}"
        );
        let port = raw_server_local.port();
        let found = discovered(&NodeSelector::Pid(our_pid()));
        let want = Connection {
            local: addr(&format!("127.0.0.1:{port}")),
            remote: pair.client.local_addr().unwrap(),
        };
        assert_eq!(want, pair.server_side());
        assert!(
            found.connections.contains(&want),
            "{want:?} not in {found:?}"
        );
        let mapped = found.connections.iter().find(|c| {
            [c.local, c.remote].iter().any(|a| match a {
                SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
                SocketAddr::V4(_) => false,
            })
        });
        assert_eq!(mapped, None, "a v4-mapped address was not normalised");
    }

    #[test]
    fn pid_selector_reports_an_exited_process_as_missing() {
        let pid = exited_pid();
        match discover(&NodeSelector::Pid(pid)) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert_eq!(message, format!("no process with pid {pid}"));
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn pid_selector_reports_a_zombie_as_missing() {
        let child = Reaped(Command::new("true").spawn().expect("spawn true"));
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat =
                std::fs::read(proc_path(pid, "stat")).expect("an unreaped child has /proc/PID");
            if parse_stat(&stat).is_some_and(|(_, state)| state == b'Z') {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} did not exit within 10s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        match discover(&NodeSelector::Pid(pid)) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert!(message.contains("zombie"), "{message}")
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn pid_file_selector_follows_the_file() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.pid");
        let selector = NodeSelector::PidFile(path.clone());

        match discover(&selector) {
            Err(DiscoverError::NodeMissing(message)) => assert_eq!(
                message,
                format!("pid file {}: No such file or directory", path.display())
            ),
            other => panic!("missing file: expected NodeMissing, got {other:?}"),
        }

        let cases: [(&str, &str); 5] = [
            ("", "empty"),
            ("  \n", "empty"),
            ("not a pid\n", "does not hold a pid"),
            ("0\n", "does not hold a pid"),
            ("-12\n", "does not hold a pid"),
        ];
        for (content, want) in cases {
            std::fs::write(&path, content).unwrap();
            match discover(&selector) {
                Err(DiscoverError::NodeMissing(message)) => {
                    assert!(message.contains(want), "{content:?}: {message}")
                }
                other => panic!("{content:?}: expected NodeMissing, got {other:?}"),
            }
        }

        let gone = exited_pid();
        std::fs::write(&path, format!("{gone}\n")).unwrap();
        match discover(&selector) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert!(message.contains(&format!("pid {gone}")), "{message}")
            }
            other => panic!("pid of an exited process: expected NodeMissing, got {other:?}"),
        }

        let mut file = std::fs::File::create(&path).unwrap();
        write!(file, "  {}\n\n", our_pid()).unwrap();
        drop(file);
        let found = discovered(&selector);
        assert_eq!(found.pids, vec![our_pid()]);
        assert!(found.connections.contains(&pair.client_side()), "{found:?}");
    }

    #[test]
    fn process_selector_matches_our_own_comm() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let comm = comm.trim_end_matches('\n');
        let found = discovered(&NodeSelector::Process(comm.to_owned()));
        assert!(found.pids.contains(&our_pid()), "{comm}: {found:?}");
        assert!(found.connections.contains(&pair.client_side()), "{found:?}");

        // The test binary's name (rolecall-<hash>) is longer than 15 bytes, so the kernel
        // truncated it; a longer name with the same first 15 bytes matches too.
        if comm.len() == 15 {
            let longer = format!("{comm}-and-more");
            let found = discovered(&NodeSelector::Process(longer));
            assert!(found.pids.contains(&our_pid()));
        }
    }

    #[test]
    fn process_selector_without_a_match_reports_missing() {
        let name = "no-such-proc-x";
        match discover(&NodeSelector::Process(name.to_owned())) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert_eq!(message, "no process named no-such-proc-x")
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn namespace_selector_lists_a_childs_connection_but_none_of_ours() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = Command::new("python3")
            .args([
                "-c",
                "import socket, sys, time\n\
                 s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                 time.sleep(30)\n",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .map(Reaped)
            .expect("this test needs python3 on PATH");
        let accepted = accept_within(&listener, Duration::from_secs(10));
        let childs = Connection {
            local: accepted.peer_addr().unwrap(),
            remote: accepted.local_addr().unwrap(),
        };
        let ours = Connection {
            local: childs.remote,
            remote: childs.local,
        };
        let own_pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));

        let found = discovered(&NodeSelector::Namespace);
        assert!(found.pids.is_empty());
        assert!(
            found.connections.contains(&childs),
            "{childs:?} not in {found:?}"
        );
        for own in [ours, own_pair.client_side(), own_pair.server_side()] {
            assert!(
                !found.connections.contains(&own),
                "our own {own:?} in {found:?}"
            );
        }

        let found = discovered(&NodeSelector::Pid(child.0.id()));
        assert_eq!(found.pids, vec![child.0.id()]);
        assert_eq!(found.connections, vec![childs]);
    }

    fn diag_header(state: u8, local: &str, remote: &str, inode: u32) -> InetResponseHeader {
        let (local, remote) = (addr(local), addr(remote));
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut socket_id = if local.is_ipv4() {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        socket_id.source_port = local.port();
        socket_id.destination_port = remote.port();
        socket_id.source_address = local.ip();
        socket_id.destination_address = remote.ip();
        InetResponseHeader {
            family,
            state,
            timer: None,
            socket_id,
            recv_queue: 0,
            send_queue: 0,
            uid: 1000,
            inode,
        }
    }

    #[test]
    fn sock_diag_records_become_established_connections() {
        use netlink_packet_sock_diag::constants::{TCP_LISTEN, TCP_TIME_WAIT};
        let cases = [
            (
                "ipv4",
                diag_header(TCP_ESTABLISHED, "10.0.1.2:50000", "10.0.2.10:6379", 99),
                Some((conn("10.0.1.2:50000", "10.0.2.10:6379"), 99)),
            ),
            (
                "ipv6",
                diag_header(
                    TCP_ESTABLISHED,
                    "[2001:db8::1]:6379",
                    "[2001:db8::2]:54321",
                    7,
                ),
                Some((conn("[2001:db8::1]:6379", "[2001:db8::2]:54321"), 7)),
            ),
            (
                "ipv4-mapped ipv6 becomes ipv4",
                diag_header(
                    TCP_ESTABLISHED,
                    "[::ffff:127.0.0.1]:6379",
                    "[::ffff:127.0.0.1]:54321",
                    77,
                ),
                Some((conn("127.0.0.1:6379", "127.0.0.1:54321"), 77)),
            ),
            (
                "the largest inode",
                diag_header(TCP_ESTABLISHED, "127.0.0.1:1", "127.0.0.1:2", u32::MAX),
                Some((conn("127.0.0.1:1", "127.0.0.1:2"), 4_294_967_295)),
            ),
            (
                "not yet accepted: inode 0",
                diag_header(TCP_ESTABLISHED, "127.0.0.1:1", "127.0.0.1:2", 0),
                Some((conn("127.0.0.1:1", "127.0.0.1:2"), 0)),
            ),
            (
                "time-wait is skipped",
                diag_header(TCP_TIME_WAIT, "127.0.0.1:1", "127.0.0.1:2", 0),
                None,
            ),
            (
                "listen is skipped",
                diag_header(TCP_LISTEN, "0.0.0.0:6379", "0.0.0.0:0", 5),
                None,
            ),
        ];
        for (name, header, want) in cases {
            assert_eq!(connection_of(&header), want, "case: {name}");
        }
    }

    /// One netlink message as the kernel would send it, `NLMSG_ALIGN`ed.
    fn message(payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn record(header: InetResponseHeader) -> Vec<u8> {
        use netlink_packet_sock_diag::inet::{InetResponse, nlas::Nla};
        // Attributes like those the kernel adds to every record; the parser skips them.
        let nlas = vec![Nla::Shutdown(0), Nla::Tos(0)].into();
        let response = InetResponse { header, nlas };
        message(SockDiagMessage::InetResponse(Box::new(response)).into())
    }

    fn done(code: i32) -> Vec<u8> {
        let mut done = DoneMessage::default();
        done.code = code;
        message(NetlinkPayload::Done(done))
    }

    fn nlmsg_error(code: i32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(code);
        message(NetlinkPayload::Error(error))
    }

    #[test]
    fn sock_diag_datagrams_are_read_until_the_dump_is_done() {
        use netlink_packet_sock_diag::constants::TCP_TIME_WAIT;
        enum Want {
            Ok(Dump, Vec<(Connection, u64)>),
            Os(i32),
            Malformed(&'static str),
        }
        let v4 = || diag_header(TCP_ESTABLISHED, "127.0.0.1:6379", "127.0.0.1:40000", 11);
        let v6 = || diag_header(TCP_ESTABLISHED, "[::1]:6379", "[::1]:40001", 12);
        let tw = || diag_header(TCP_TIME_WAIT, "127.0.0.1:6379", "127.0.0.1:40002", 0);
        let want_v4 = (conn("127.0.0.1:6379", "127.0.0.1:40000"), 11);
        let want_v6 = (conn("[::1]:6379", "[::1]:40001"), 12);
        let mut short_record = record(v4());
        short_record.truncate(short_record.len() - 8);
        let mut cut_record = record(v4());
        cut_record.truncate(40);
        let mut short_payload = message(NetlinkPayload::Noop);
        short_payload.extend(vec![0u8; 32]);
        NetlinkBuffer::new(&mut short_payload[..]).set_message_type(SOCK_DIAG_BY_FAMILY);
        NetlinkBuffer::new(&mut short_payload[..]).set_length(48);
        let mut unknown_type = message(NetlinkPayload::Noop);
        NetlinkBuffer::new(&mut unknown_type[..]).set_message_type(0x99);
        let mut bare_done = message(NetlinkPayload::Noop);
        NetlinkBuffer::new(&mut bare_done[..]).set_message_type(NLMSG_DONE);

        let cases: Vec<(&str, Vec<Vec<u8>>, Want)> = vec![
            (
                "records then done",
                vec![record(v4()), record(tw()), record(v6()), done(0)],
                Want::Ok(Dump::Done, vec![want_v4, want_v6]),
            ),
            (
                "records, more to come",
                vec![record(v4()), record(v6())],
                Want::Ok(Dump::More, vec![want_v4, want_v6]),
            ),
            ("an empty datagram", vec![], Want::Ok(Dump::More, vec![])),
            (
                "noop and an acknowledgement are skipped",
                vec![message(NetlinkPayload::Noop), nlmsg_error(0), record(v4())],
                Want::Ok(Dump::More, vec![want_v4]),
            ),
            (
                "done without a code",
                vec![bare_done],
                Want::Ok(Dump::Done, vec![]),
            ),
            (
                "the kernel refuses the request",
                vec![nlmsg_error(-libc::ENOENT)],
                Want::Os(libc::ENOENT),
            ),
            (
                "the kernel aborts the dump",
                vec![record(v4()), done(-libc::EINTR)],
                Want::Os(libc::EINTR),
            ),
            (
                "a record longer than the datagram",
                vec![short_record],
                Want::Malformed("cannot parse a message"),
            ),
            (
                "a datagram cut inside the header",
                vec![cut_record],
                Want::Malformed("cannot parse a message"),
            ),
            (
                "a record too short for inet_diag_msg",
                vec![short_payload],
                Want::Malformed("cannot parse an inet_diag record"),
            ),
            (
                "an unknown message type",
                vec![unknown_type],
                Want::Malformed("unexpected message type 153"),
            ),
        ];
        for (name, messages, want) in cases {
            let datagram = messages.concat();
            let mut table = Vec::new();
            let got = parse_dump_datagram(&datagram, &mut table);
            match (got, want) {
                (Ok(dump), Want::Ok(want_dump, want_table)) => {
                    assert_eq!(dump, want_dump, "case: {name}");
                    assert_eq!(table, want_table, "case: {name}");
                }
                (Err(NetlinkError::Os { cause, .. }), Want::Os(errno)) => {
                    assert_eq!(cause.raw_os_error(), Some(errno), "case: {name}")
                }
                (Err(NetlinkError::Malformed(message)), Want::Malformed(text)) => {
                    assert!(message.contains(text), "case: {name}: {message}")
                }
                (got, _) => panic!("case {name}: unexpected {got:?} (table {table:?})"),
            }
        }
    }

    #[test]
    fn sock_diag_parser_never_panics_on_cut_or_odd_datagrams() {
        let v6 = diag_header(TCP_ESTABLISHED, "[::1]:6379", "[::1]:40001", 12);
        let datagram = [record(v6), nlmsg_error(-libc::EPERM), done(0)].concat();
        for end in 0..=datagram.len() {
            let _ = parse_dump_datagram(&datagram[..end], &mut Vec::new());
            let _ = parse_dump_datagram(&datagram[end..], &mut Vec::new());
        }
        for odd in [&[0xffu8; 16][..], &[0u8; 16], &[16, 0, 0, 0], &[0xff; 3]] {
            assert!(
                parse_dump_datagram(odd, &mut Vec::new()).is_err(),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn dump_requests_ask_for_established_tcp_sockets_of_one_family() {
        for (family, sequence) in [(AF_INET, 1), (AF_INET6, 2)] {
            let bytes = dump_request(family, sequence, &[]);
            let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
            assert_eq!(message.message_type(), SOCK_DIAG_BY_FAMILY);
            assert_eq!(message.flags(), NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(message.sequence_number(), sequence);
            assert_eq!(message.length() as usize, bytes.len());
            // 16 bytes of nlmsghdr and 56 of inet_diag_req_v2 (linux/inet_diag.h).
            assert_eq!(bytes.len(), 72);
            let request = InetRequestBytes::from(&bytes[16..]);
            assert_eq!(
                request,
                InetRequestBytes {
                    family,
                    protocol: 6,
                    states: 1 << 1,
                }
            );
        }
    }

    /// The fields of an `inet_diag_req_v2` that select the sockets, read by hand so the test
    /// does not trust the crate that wrote them.
    #[derive(Debug, PartialEq, Eq)]
    struct InetRequestBytes {
        family: u8,
        protocol: u8,
        states: u32,
    }

    impl From<&[u8]> for InetRequestBytes {
        fn from(bytes: &[u8]) -> Self {
            InetRequestBytes {
                family: bytes[0],
                protocol: bytes[1],
                states: u32::from_ne_bytes(bytes[4..8].try_into().unwrap()),
            }
        }
    }

    /// One `inet_diag_bc_op` as the kernel reads it.
    fn op(code: u8, yes: u8, no: u16) -> Vec<u8> {
        let mut bytes = vec![code, yes];
        bytes.extend_from_slice(&no.to_ne_bytes());
        bytes
    }

    fn ports(list: &[u16]) -> BTreeSet<u16> {
        list.iter().copied().collect()
    }

    #[test]
    fn port_filters_are_laid_out_like_ss_compiles_them() {
        const EQ: u8 = 12;
        const GE: u8 = 4;
        const LE: u8 = 5;
        const JMP: u8 = 1;
        /// A name, the ports, how they are compared, and the program's ops.
        type Case = (&'static str, Vec<u16>, PortMatch, Vec<Vec<u8>>);
        let cases: Vec<Case> = vec![
            (
                "one port",
                vec![6379],
                PortMatch::Equal,
                vec![op(EQ, 8, 12), op(0, 0, 6379)],
            ),
            (
                "two ports, ascending whatever the order given",
                vec![26379, 6379],
                PortMatch::Equal,
                vec![
                    op(EQ, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 12),
                    op(EQ, 8, 12),
                    op(0, 0, 26379),
                ],
            ),
            (
                "four ports",
                vec![7000, 7001, 26379, 6379],
                PortMatch::Equal,
                vec![
                    op(EQ, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 36),
                    op(EQ, 8, 12),
                    op(0, 0, 7000),
                    op(JMP, 4, 24),
                    op(EQ, 8, 12),
                    op(0, 0, 7001),
                    op(JMP, 4, 12),
                    op(EQ, 8, 12),
                    op(0, 0, 26379),
                ],
            ),
            (
                "one port as a range",
                vec![6379],
                PortMatch::Range,
                vec![op(GE, 8, 20), op(0, 0, 6379), op(LE, 8, 12), op(0, 0, 6379)],
            ),
            (
                "three ports as ranges",
                vec![1, 65535, 6379],
                PortMatch::Range,
                vec![
                    op(GE, 8, 20),
                    op(0, 0, 1),
                    op(LE, 8, 12),
                    op(0, 0, 1),
                    op(JMP, 4, 40),
                    op(GE, 8, 20),
                    op(0, 0, 6379),
                    op(LE, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 20),
                    op(GE, 8, 20),
                    op(0, 0, 65535),
                    op(LE, 8, 12),
                    op(0, 0, 65535),
                ],
            ),
            ("no port: no filter", vec![], PortMatch::Equal, vec![]),
        ];
        for (name, list, how, want) in cases {
            assert_eq!(
                port_filter(&ports(&list), how),
                want.concat(),
                "case: {name}"
            );
        }
        let too_many: BTreeSet<u16> = (1..=u16::try_from(MAX_FILTER_PORTS + 1).unwrap()).collect();
        assert!(port_filter(&too_many, PortMatch::Equal).is_empty());
        let most: BTreeSet<u16> = (1..=u16::try_from(MAX_FILTER_PORTS).unwrap()).collect();
        assert_eq!(
            port_filter(&most, PortMatch::Range).len(),
            MAX_FILTER_PORTS * 20 - 4
        );
    }

    /// `inet_diag_bc_audit` (net/ipv4/inet_diag.c), for the codes `port_filter` uses: whether
    /// the kernel accepts `program`.
    fn kernel_audit(program: &[u8]) -> bool {
        let at = |offset: usize| -> (u8, usize, usize) {
            let op = &program[offset..offset + 4];
            (
                op[0],
                usize::from(op[1]),
                usize::from(u16::from_ne_bytes([op[2], op[3]])),
            )
        };
        // valid_cc: whether an op starts `cc` bytes before the end, on the chain of yes jumps.
        let valid_cc = |cc: usize| {
            let (mut offset, mut len) = (0usize, program.len() as isize);
            while len >= 0 {
                if cc as isize > len {
                    return false;
                }
                if cc as isize == len {
                    return true;
                }
                let (_, yes, _) = at(offset);
                if yes < 4 || yes % 4 != 0 {
                    return false;
                }
                len -= yes as isize;
                offset += yes;
            }
            false
        };
        if program.len() < 4 {
            return false;
        }
        let (mut offset, mut len) = (0usize, program.len() as isize);
        while len > 0 {
            let (code, yes, no) = at(offset);
            let min_len = match code {
                INET_DIAG_BC_D_EQ | INET_DIAG_BC_D_GE | INET_DIAG_BC_D_LE => {
                    if len < 8 {
                        return false;
                    }
                    8
                }
                INET_DIAG_BC_JMP => 4,
                _ => return false,
            };
            if no < min_len || no as isize > len + 4 || no % 4 != 0 {
                return false;
            }
            if (no as isize) < len && !valid_cc((len - no as isize) as usize) {
                return false;
            }
            if yes < min_len || yes as isize > len + 4 || yes % 4 != 0 {
                return false;
            }
            offset += yes;
            len -= yes as isize;
        }
        len == 0
    }

    /// `inet_diag_bc_run` (net/ipv4/inet_diag.c) for a socket whose remote port is `dport`.
    fn kernel_run(program: &[u8], dport: u16) -> bool {
        let (mut offset, mut len) = (0usize, program.len() as isize);
        while len > 0 {
            let op = &program[offset..offset + 4];
            let argument = || u16::from_ne_bytes([program[offset + 6], program[offset + 7]]);
            let yes = match op[0] {
                INET_DIAG_BC_JMP => false,
                INET_DIAG_BC_D_EQ => dport == argument(),
                INET_DIAG_BC_D_GE => dport >= argument(),
                INET_DIAG_BC_D_LE => dport <= argument(),
                code => panic!("unexpected code {code}"),
            };
            let step = if yes {
                usize::from(op[1])
            } else {
                usize::from(u16::from_ne_bytes([op[2], op[3]]))
            };
            offset += step;
            len -= step as isize;
        }
        len == 0
    }

    #[test]
    fn port_filters_pass_the_kernels_audit_and_accept_exactly_their_ports() {
        let sets: Vec<BTreeSet<u16>> = vec![
            ports(&[6379]),
            ports(&[6379, 26379]),
            ports(&[1, 6379, 6380, 26379, 65535]),
            (7000..7040).collect(),
            (1..=u16::try_from(MAX_FILTER_PORTS).unwrap())
                .map(|p| p * 60)
                .collect(),
        ];
        let probes: Vec<u16> = [0, 1, 2, 59, 60, 61, 6378, 6379, 6380, 6381, 26379]
            .into_iter()
            .chain(6990..7050)
            .chain([61_439, 61_440, 61_441, 65_534, 65_535])
            .collect();
        for set in &sets {
            for how in [PortMatch::Equal, PortMatch::Range] {
                let program = port_filter(set, how);
                assert!(kernel_audit(&program), "{how:?} {set:?}: refused");
                for set_port in set.iter().copied().chain(probes.iter().copied()) {
                    assert_eq!(
                        kernel_run(&program, set_port),
                        set.contains(&set_port),
                        "{how:?}, port {set_port}, set of {}",
                        set.len()
                    );
                }
            }
        }
        // The audit model refuses what the kernel refuses.
        let mut bad_yes = port_filter(&ports(&[6379]), PortMatch::Equal);
        bad_yes[1] = 4;
        assert!(!kernel_audit(&bad_yes));
        let mut bad_no = port_filter(&ports(&[6379, 6380]), PortMatch::Equal);
        bad_no[2..4].copy_from_slice(&6u16.to_ne_bytes());
        assert!(!kernel_audit(&bad_no));
    }

    #[test]
    fn a_filtered_dump_request_carries_the_program_as_an_attribute() {
        let filter = port_filter(&ports(&[6379, 26379]), PortMatch::Equal);
        let bytes = dump_request(AF_INET6, 7, &filter);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.length() as usize, bytes.len());
        assert_eq!(message.sequence_number(), 7);
        assert_eq!(bytes.len(), 72 + 4 + filter.len());
        assert_eq!(
            InetRequestBytes::from(&bytes[16..]),
            InetRequestBytes {
                family: AF_INET6,
                protocol: 6,
                states: 1 << 1,
            }
        );
        let attribute = &bytes[72..];
        assert_eq!(
            u16::from_ne_bytes([attribute[0], attribute[1]]),
            u16::try_from(4 + filter.len()).unwrap()
        );
        assert_eq!(u16::from_ne_bytes([attribute[2], attribute[3]]), 1);
        assert_eq!(&attribute[4..], &filter[..]);
    }

    /// Runs `selector` filtered to `ports` by /proc, netlink, /proc until both /proc answers
    /// agree, and checks that netlink agreed too, like [`both_ways`].
    fn both_ways_to(selector: &NodeSelector, ports: &BTreeSet<u16>) -> NodeSockets {
        let mut last = None;
        for _ in 0..50 {
            let before = discover_to_ports_with(selector, ports, Method::Proc).unwrap();
            let netlink = discover_to_ports_with(selector, ports, Method::Netlink).unwrap();
            let after = discover_to_ports_with(selector, ports, Method::Proc).unwrap();
            assert_eq!(
                (before.1, netlink.1, after.1),
                (Method::Proc, Method::Netlink, Method::Proc)
            );
            if before.0 == after.0 && netlink.0 == before.0 {
                return netlink.0;
            }
            last = Some((before.0, netlink.0, after.0));
        }
        let (before, netlink, after) = last.unwrap();
        panic!(
            "{selector} to {ports:?}: netlink never agreed with a stable /proc\n\
             proc before: {before:?}\nnetlink: {netlink:?}\nproc after: {after:?}"
        );
    }

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

    #[test]
    fn a_port_filter_keeps_exactly_the_connections_to_those_remote_ports() {
        let v4 = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v4_other = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v6 = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let v6_other = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let mapped = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        // Remote ports: the listeners of v4, v6 and mapped (their client sides), and the client
        // port of v6_other (its server side, whose remote end is that client).
        let wanted = [
            v4.client_side(),
            v6.client_side(),
            mapped.client_side(),
            v6_other.server_side(),
        ];
        let set: BTreeSet<u16> = wanted.iter().map(|c| c.remote.port()).collect();
        assert_eq!(set.len(), 4);
        let mut want = wanted.to_vec();
        want.sort_unstable();
        let unwanted = [
            v4.server_side(),
            v4_other.client_side(),
            v4_other.server_side(),
            v6.server_side(),
            v6_other.client_side(),
            mapped.server_side(),
        ];
        let selector = NodeSelector::Pid(our_pid());

        // Only this test's listeners and client ports are in the set, so exactly these
        // connections of this process go to those ports, whatever other tests hold.
        let (by_proc, used) = discover_to_ports_with(&selector, &set, Method::Proc).unwrap();
        assert_eq!(used, Method::Proc);
        assert_eq!(by_proc.connections, want);
        assert!(want.iter().any(|c| c.remote.is_ipv6()) && want.iter().any(|c| c.remote.is_ipv4()));

        let all = discover_with(&selector, Method::Proc).unwrap().0;
        for connection in wanted.iter().chain(&unwanted) {
            assert!(
                all.connections.contains(connection),
                "{connection:?} not in {all:?}"
            );
        }

        if netlink_refused() {
            return;
        }
        let found = both_ways_to(&selector, &set);
        assert_eq!(found.connections, want);
        for connection in unwanted {
            assert!(!found.connections.contains(&connection));
        }
        let (found, used) = discover_to_ports_with(&selector, &set, Method::Auto).unwrap();
        assert_eq!((found.connections, used), (want.clone(), Method::Netlink));

        // Both layouts, straight from the kernel: only sockets to those ports come back.
        for how in [PortMatch::Equal, PortMatch::Range] {
            let table = dump_filtered(&port_filter(&set, how)).unwrap();
            for (connection, _) in &table {
                assert!(
                    set.contains(&connection.remote.port()),
                    "{how:?}: {connection:?}"
                );
            }
            for connection in &want {
                assert!(
                    table.iter().any(|(c, _)| c == connection),
                    "{how:?}: {connection:?} not in {table:?}"
                );
            }
        }

        // The kernel audits the program: one whose first `yes` is shorter than a port
        // comparison is refused, as `kernel_audit` models.
        let mut bad = port_filter(&set, PortMatch::Equal);
        bad[1] = 4;
        match dump_filtered(&bad) {
            Err(NetlinkError::Os { cause, .. }) => {
                assert_eq!(cause.raw_os_error(), Some(libc::EINVAL))
            }
            other => panic!("a bad program: expected EINVAL, got {other:?}"),
        }

        // The namespace selector filters the same way (our own sockets are left out).
        let found = both_ways_to(&NodeSelector::Namespace, &set);
        for connection in &found.connections {
            assert!(set.contains(&connection.remote.port()), "{connection:?}");
        }
    }

    /// Whether netlink sock_diag is refused here (a sandbox); tests of the netlink path then
    /// say so and pass, as `discover` itself falls back to /proc.
    fn netlink_refused() -> bool {
        match dump_established(&BTreeSet::new()) {
            Ok(_) => false,
            Err(NetlinkError::Os { cause, .. })
                if matches!(
                    cause.raw_os_error(),
                    Some(
                        libc::EPERM
                            | libc::EACCES
                            | libc::EPROTONOSUPPORT
                            | libc::EAFNOSUPPORT
                            | libc::ENOENT
                    )
                ) =>
            {
                eprintln!("netlink sock_diag is refused here ({cause}); only /proc is tested");
                true
            }
            Err(err) => panic!("netlink sock_diag failed: {err}"),
        }
    }

    /// Runs `selector` by /proc, netlink, /proc until both /proc answers agree (other tests of
    /// this process open and close sockets meanwhile), and checks that netlink agreed too.
    fn both_ways(selector: &NodeSelector) -> NodeSockets {
        both_ways_to(selector, &BTreeSet::new())
    }

    #[test]
    fn netlink_and_proc_find_the_same_connections() {
        if netlink_refused() {
            return;
        }
        let v4 = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v6 = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let mapped = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        assert!(mapped.server.local_addr().unwrap().is_ipv6());

        let found = both_ways(&NodeSelector::Pid(our_pid()));
        for pair in [&v4, &v6, &mapped] {
            for side in [pair.client_side(), pair.server_side()] {
                assert!(
                    found.connections.contains(&side),
                    "{side:?} not in {found:?}"
                );
            }
        }
        assert!(
            found
                .connections
                .iter()
                .all(|c| c.local.is_ipv4() == c.remote.is_ipv4())
        );

        let found = both_ways(&NodeSelector::Namespace);
        for pair in [&v4, &v6, &mapped] {
            for ours in [pair.client_side(), pair.server_side()] {
                assert!(
                    !found.connections.contains(&ours),
                    "our own {ours:?} in {found:?}"
                );
            }
        }

        let (_, used) = discover_with(&NodeSelector::Pid(our_pid()), Method::Auto).unwrap();
        assert_eq!(used, Method::Netlink);
        let (_, used) = discover_with(&NodeSelector::Namespace, Method::Auto).unwrap();
        assert_eq!(used, Method::Netlink);
    }

    /// Starts `script` (Python) in a new network namespace with loopback up, and waits for it
    /// to print `ready`. `None` if this machine cannot make namespaces (no root, no user
    /// namespaces, no `unshare` or `ip`).
    fn in_new_netns(script: &str) -> Option<Reaped> {
        use std::io::BufRead;
        let shell = format!("ip link set lo up && exec python3 -c '{script}'");
        for flags in ["-n", "-rn"] {
            let Ok(child) = Command::new("unshare")
                .args([flags, "sh", "-c", &shell])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            else {
                return None;
            };
            let mut child = Reaped(child);
            let stdout = child.0.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.trim() == "ready" => return Some(child),
                _ => continue,
            }
        }
        None
    }

    #[test]
    fn a_node_in_another_network_namespace_is_read_through_its_proc_tables() {
        let script = "import socket, time\n\
                      l = socket.create_server((\"127.0.0.1\", 0))\n\
                      c = socket.create_connection(l.getsockname())\n\
                      s, _ = l.accept()\n\
                      print(\"ready\", flush=True)\n\
                      time.sleep(30)\n";
        // The test suite runs as root (CI does); a machine that cannot make a namespace fails
        // here rather than passing untested.
        let child = in_new_netns(script).expect(
            "cannot create a network namespace: run the tests as root, or install util-linux \
             (unshare) and iproute2 (ip)",
        );
        let pid = child.0.id();
        let selector = NodeSelector::Pid(pid);

        let (found, used) = discover_with(&selector, Method::Auto).unwrap();
        assert_eq!(used, Method::Proc);
        assert_eq!(found.pids, vec![pid]);
        // Both ends of the child's loopback pair, which rolecall's namespace does not have.
        assert_eq!(found.connections.len(), 2, "{found:?}");
        let [a, b] = [found.connections[0], found.connections[1]];
        assert_eq!((a.local, a.remote), (b.remote, b.local), "{found:?}");

        match discover_with(&selector, Method::Netlink) {
            Err(DiscoverError::Unreadable(message)) => {
                assert!(message.contains("another network namespace"), "{message}")
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }
}
