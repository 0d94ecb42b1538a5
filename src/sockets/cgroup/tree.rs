//! Bounded walks of a cgroup tree: the directory of a unit, and the pids in a cgroup and the
//! cgroups below it.
//!
//! systemd names a unit's cgroup after the unit and puts it in its slice's cgroup
//! (systemd.slice(5)): `system.slice/centrifugo.service` for a system service, a nested slice
//! `a-b.slice` at `a.slice/a-b.slice`, a user's units below `user.slice/user-UID.slice/
//! user@UID.service/app.slice`. So the search looks at `system.slice/<unit>` first, then walks
//! the tree breadth-first, going into slices and services (a user manager's slices live in its
//! service) but not into scopes or other cgroups, which hold containers' and delegated trees.
//! Each walk is capped in depth and in directory entries read, and says so when it runs out.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use super::read_bounded;
use crate::sockets::error::{DiscoverError, is_gone, unreadable};

/// The search finds a unit at most this many levels below a hierarchy's root; systemd's
/// deepest units (a user's app in a nested slice, a Kubernetes pod's container) are about six
/// levels down.
pub(super) const SEARCH_DEPTH: usize = 8;
/// A unit's own tree (its delegated sub-cgroups) is read at most this deep.
pub(super) const UNIT_DEPTH: usize = 16;
/// Directory entries one walk reads at most. A cgroup directory holds a few dozen files, so
/// this is a few thousand cgroups.
pub(super) const MAX_ENTRIES: usize = 200_000;
/// One `cgroup.procs` at most: more than a hundred thousand pids.
const MAX_PROCS_BYTES: u64 = 1 << 20;

/// The directory of `unit`'s cgroup under `root`, or `None` if it has none there.
pub(super) fn find_unit_dir(root: &Path, unit: &str) -> Result<Option<PathBuf>, DiscoverError> {
    let conventional = root.join("system.slice").join(unit);
    if conventional.is_dir() {
        return Ok(Some(conventional));
    }
    let mut budget = MAX_ENTRIES;
    let mut queue = VecDeque::from([(root.to_path_buf(), 0)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let Some(children) = subdirs(&dir, &mut budget, unit)? else {
            continue;
        };
        for (child, name) in children {
            if name == unit {
                return Ok(Some(child));
            }
            if depth + 1 < SEARCH_DEPTH && (name.ends_with(".slice") || name.ends_with(".service"))
            {
                queue.push_back((child, depth + 1));
            }
        }
    }
    Ok(None)
}

/// The pids listed in the `cgroup.procs` of `dir` and of every cgroup below it, unsorted; `None`
/// if `dir` is gone (the unit stopped). A pid the reader's pid namespace cannot see is 0 there
/// and is left out.
pub(super) fn pids_below(dir: &Path, unit: &str) -> Result<Option<Vec<u32>>, DiscoverError> {
    let mut pids = Vec::new();
    let mut budget = MAX_ENTRIES;
    let mut queue = VecDeque::from([(dir.to_path_buf(), 0)]);
    while let Some((cgroup, depth)) = queue.pop_front() {
        match read_procs(&cgroup.join("cgroup.procs"))? {
            Some(found) => pids.extend(found),
            None if depth == 0 => return Ok(None),
            None => continue,
        }
        let Some(children) = subdirs(&cgroup, &mut budget, unit)? else {
            continue;
        };
        if depth == UNIT_DEPTH && !children.is_empty() {
            return Err(DiscoverError::Unreadable(format!(
                "systemd unit {unit}: its cgroup {} is more than {UNIT_DEPTH} levels deep",
                dir.display()
            )));
        }
        queue.extend(children.into_iter().map(|(child, _)| (child, depth + 1)));
    }
    Ok(Some(pids))
}

/// The pids in one `cgroup.procs`; `None` if the cgroup is gone.
fn read_procs(path: &Path) -> Result<Option<Vec<u32>>, DiscoverError> {
    let text = match read_bounded(path, MAX_PROCS_BYTES) {
        Ok(text) => text,
        Err(err) if cgroup_gone(&err) => return Ok(None),
        // A threaded cgroup lists no processes: its threads' processes are listed in the
        // domain cgroup above it (cgroups(7), "Threaded mode").
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Some(Vec::new())),
        Err(err) => return Err(unreadable(path, &err)),
    };
    let pids = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
        .filter(|&pid| pid != 0)
        .collect();
    Ok(Some(pids))
}

/// The directories in `dir`, with their names; `None` if `dir` is gone. Counts the entries
/// read against `budget` and fails when it runs out.
fn subdirs(
    dir: &Path,
    budget: &mut usize,
    unit: &str,
) -> Result<Option<Vec<(PathBuf, String)>>, DiscoverError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if cgroup_gone(&err) => return Ok(None),
        Err(err) => return Err(unreadable(dir, &err)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let Some(left) = budget.checked_sub(1) else {
            return Err(DiscoverError::Unreadable(format!(
                "systemd unit {unit}: gave up after reading {MAX_ENTRIES} cgroup entries, \
                 at {}",
                dir.display()
            )));
        };
        *budget = left;
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if cgroup_gone(&err) => return Ok(None),
            Err(err) => return Err(unreadable(dir, &err)),
        };
        // The type from the directory entry itself: no stat per file.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(Some(out))
}

/// Whether an error reading a cgroup's files means the cgroup was removed meanwhile: ENOENT,
/// or ENODEV from a file of a cgroup being removed.
fn cgroup_gone(err: &io::Error) -> bool {
    is_gone(err) || err.raw_os_error() == Some(libc::ENODEV)
}
