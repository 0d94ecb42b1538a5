//! Finds a node's live TCP connections, through netlink `sock_diag` or `/proc`.
//!
//! This module owns the answer to "which established TCP connections does the node hold right
//! now?". A [`NodeSelector`] names the node (a pid, a pid file, a process name, a systemd unit,
//! or every process of rolecall's network namespace); [`discover`] returns a [`NodeSockets`]
//! snapshot.
//! It does not know about Redis: deciding which of those connections matter is the caller's job.
//!
//! - `discover`: the entry points, and how one discovery goes.
//! - `memory`: [`FdMemory`] and [`discover_remembering`], the daemon's discovery, which skips
//!   reading the node's fds while the candidate sockets are ones it has seen, and in steady
//!   state confirms the node's known connections instead of listing the namespace's sockets.
//! - `pids`: a [`NodeSelector`] resolved to running pids (pid files, `/proc/PID/stat`, names).
//! - `cgroup`: a systemd unit's pids, from its cgroup (cgroup v2 or the hybrid `name=systemd`
//!   hierarchy, found in `/proc/self/mountinfo`), and which unit names rolecall accepts.
//! - `fds`: the socket inodes a process holds, from the links in `/proc/PID/fd`.
//! - `namespace`: the ESTABLISHED sockets of the node's network namespace, by netlink or /proc
//!   ([`Method`]), and which of them the node holds.
//! - `netlink`: the `NETLINK_SOCK_DIAG` dump: the request, the datagrams, the kernel's errors.
//! - `exact`: exact `NETLINK_SOCK_DIAG` lookups, which confirm known connections without a
//!   dump (what [`FdMemory`] uses in steady state).
//! - `port_filter`: the bytecode that has the kernel send only sockets to given remote ports.
//! - `proc_net`: the `/proc/PID/net/tcp` and `tcp6` tables ([`parse_proc_net_tcp`]).
//! - `connection`: the plain data: [`Connection`], [`NodeSockets`], a namespace's table.
//! - `error`: [`DiscoverError`], and what an I/O error under `/proc` means for it.

#![forbid(unsafe_code)]

mod cgroup;
mod connection;
mod discover;
mod error;
mod exact;
mod fds;
mod memory;
mod namespace;
mod netlink;
mod pids;
mod port_filter;
mod proc_net;
#[cfg(test)]
mod testutil;

pub(crate) use cgroup::check_unit_name;
pub use connection::{Connection, NodeSockets};
pub use discover::{discover, discover_to_ports, discover_to_ports_with, discover_with};
pub use error::DiscoverError;
pub use memory::{DUMP_EVERY, FULL_SCAN_EVERY, FdMemory, Listing, discover_remembering};
pub use namespace::Method;
pub use pids::NodeSelector;
pub use proc_net::parse_proc_net_tcp;

/// For the fuzz targets (`src/fuzzing.rs`): one datagram of a `sock_diag` dump read into
/// `table`; whether it parsed.
pub(crate) fn fuzz_dump_datagram(datagram: &[u8], table: &mut Vec<(Connection, u64)>) -> bool {
    netlink::parse_dump_datagram(datagram, table).is_ok()
}

/// For the fuzz targets (`src/fuzzing.rs`): whether `answer` confirms its request's
/// connection of `batch`.
pub(crate) fn fuzz_same_socket(answer: &[u8], batch: &[(Connection, u64)]) -> Option<bool> {
    exact::same_socket(answer, batch).ok()
}

/// For the fuzz targets (`src/fuzzing.rs`): the cgroup hierarchies a `/proc/self/mountinfo`
/// text lists, as (`cgroup2` or `name=systemd`, mount point), v2 first.
pub(crate) fn fuzz_mountinfo(text: &str) -> Vec<(bool, std::path::PathBuf)> {
    cgroup::fuzz_mountinfo(text)
}

/// For the fuzz targets (`src/fuzzing.rs`): `/proc/PID/stat` (whose `comm` any process names
/// itself) as its `comm` and state, and a `/proc/PID/fd` link target as a socket's inode.
pub(crate) fn fuzz_proc_entry(text: &[u8]) -> (Option<(&[u8], u8)>, Option<u64>) {
    use std::os::unix::ffi::OsStrExt;
    let link = std::path::Path::new(std::ffi::OsStr::from_bytes(text));
    (pids::parse_stat(text), fds::parse_socket_link(link))
}
