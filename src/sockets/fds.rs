//! The sockets a process holds: the links in `/proc/PID/fd`, where `socket:[INODE]` names a
//! socket by its inode.
//!
//! Reading them needs ptrace access mode READ on the process (proc(5)): `CAP_SYS_PTRACE`, or
//! the node's user. An fd closed, or a process gone, while the directory is read is not an
//! error.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::{DiscoverError, is_gone, unreadable};
use super::pids::proc_path;

/// Parses a `/proc/PID/fd` link target `socket:[12345]` into the socket's inode.
pub(super) fn parse_socket_link(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Adds the inodes of the sockets process `pid` holds to `inodes`. `Ok(false)` if the process
/// is gone.
pub(super) fn collect_socket_inodes(
    pid: u32,
    inodes: &mut HashSet<u64>,
) -> Result<bool, DiscoverError> {
    collect_socket_inodes_in(&proc_path(pid, "fd"), inodes)
}

pub(super) fn collect_socket_inodes_in(
    dir: &Path,
    inodes: &mut HashSet<u64>,
) -> Result<bool, DiscoverError> {
    for_each_socket_fd(dir, |inode, _| {
        inodes.insert(inode);
    })
}

/// Calls `found(inode, fd link path)` for every socket fd in `dir` (a `/proc/PID/fd`);
/// `Ok(false)` if the process is gone.
pub(super) fn for_each_socket_fd(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
