//! Finds a node's live TCP connections by reading `/proc`.
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
//! 3. Read `/proc/PID/net/tcp` and `/proc/PID/net/tcp6` once, of the first pid. These tables
//!    list every socket of that process's network namespace, with its inode. When a selector
//!    matches several processes they are assumed to share one network namespace (the usual case:
//!    workers of one service, one container); a process in another namespace would find no
//!    match for its inodes in the first one's tables, and its connections would be missed.
//! 4. Keep the ESTABLISHED entries whose inode one of the pids holds.
//!
//! So the cost is one `readlink` per fd plus one read of each table; there is no syscall per
//! socket. The tables are parsed by hand ([`parse_proc_net_tcp`]) rather than with `procfs`,
//! whose parser rejects a whole table for one line it does not understand; here a malformed line
//! is skipped.
//!
//! Errors are split by what they mean for a health check: [`DiscoverError::NodeMissing`] when
//! the node is not running (a process that vanishes halfway counts as missing), and
//! [`DiscoverError::Unreadable`] when rolecall cannot look (no permission), in which case
//! nothing is known about the node.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

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

/// Finds the established TCP connections of the node named by `selector`.
///
/// Blocking: it reads a few files under `/proc` (call it from `spawn_blocking` in async code).
pub fn discover(selector: &NodeSelector) -> Result<NodeSockets, DiscoverError> {
    match selector {
        NodeSelector::Pid(pid) => {
            let label = format!("pid {pid}");
            require_running(*pid, &label)?;
            sockets_of(vec![*pid], || format!("no process with {label}"))
        }
        NodeSelector::PidFile(path) => {
            let pid = read_pid_file(path)?;
            let label = format!("pid {pid} (from pid file {})", path.display());
            require_running(pid, &label)?;
            sockets_of(vec![pid], || format!("no process with {label}"))
        }
        NodeSelector::Process(name) => {
            let missing = || format!("no process named {name}");
            let pids = pids_named(name)?;
            if pids.is_empty() {
                return Err(DiscoverError::NodeMissing(missing()));
            }
            sockets_of(pids, missing)
        }
        NodeSelector::Namespace => namespace_sockets(),
    }
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
            Ok(target) => inodes.extend(parse_socket_link(&target)),
            // The fd was closed since the directory was listed, or the process is exiting.
            Err(err) if is_gone(&err) => {}
            Err(err) => return Err(unreadable(&entry.path(), &err)),
        }
    }
    Ok(true)
}

/// Reads and parses `DIR/tcp` and `DIR/tcp6`. `Ok(None)` if `DIR/tcp` is gone (its process
/// exited); a missing `tcp6` means IPv6 is disabled and counts as empty.
fn read_tcp_tables(net: &Path) -> Result<Option<Vec<(Connection, u64)>>, DiscoverError> {
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

fn sorted(mut connections: Vec<Connection>) -> Vec<Connection> {
    connections.sort_unstable();
    connections.dedup();
    connections
}

/// The established connections held by `pids`, using the tables of the first pid still
/// running (all pids are assumed to share its network namespace).
fn sockets_of(pids: Vec<u32>, missing: impl Fn() -> String) -> Result<NodeSockets, DiscoverError> {
    let mut inodes = HashSet::new();
    let mut alive = Vec::with_capacity(pids.len());
    for pid in pids {
        if collect_socket_inodes(pid, &mut inodes)? {
            alive.push(pid);
        } else {
            tracing::debug!(pid, "process exited during socket discovery");
        }
    }
    let mut tables = None;
    for &pid in &alive {
        tables = read_tcp_tables(&proc_path(pid, "net"))?;
        if tables.is_some() {
            break;
        }
    }
    let Some(tables) = tables else {
        return Err(DiscoverError::NodeMissing(missing()));
    };
    let connections = tables
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(connection, _)| connection)
        .collect();
    Ok(NodeSockets {
        pids: alive,
        connections: sorted(connections),
    })
}

/// Every established connection of rolecall's network namespace that rolecall does not hold.
fn namespace_sockets() -> Result<NodeSockets, DiscoverError> {
    let own_fds = Path::new("/proc/self/fd");
    let net = Path::new("/proc/self/net");
    let gone = || DiscoverError::Unreadable("/proc/self vanished".to_owned());
    // rolecall opens and closes its own connections (probes) while this runs. Listing its fds
    // both before and after reading the tables means one of its sockets can be taken for the
    // node's only if it was opened and closed again within this call.
    let mut own = HashSet::new();
    if !collect_socket_inodes_in(own_fds, &mut own)? {
        return Err(gone());
    }
    let tables = read_tcp_tables(net)?.ok_or_else(gone)?;
    if !collect_socket_inodes_in(own_fds, &mut own)? {
        return Err(gone());
    }
    let connections = tables
        .into_iter()
        // Inode 0: the handshake is done but nobody has accept()ed the socket yet, so no
        // process holds it (it sits in a listener's queue, e.g. rolecall's own HTTP port).
        .filter(|(_, inode)| *inode != 0 && !own.contains(inode))
        .map(|(connection, _)| connection)
        .collect();
    Ok(NodeSockets {
        pids: Vec::new(),
        connections: sorted(connections),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
