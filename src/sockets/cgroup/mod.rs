//! Which processes a systemd unit runs: the pids in the unit's cgroup and in the cgroups below
//! it, for [`NodeSelector::SystemdUnit`](super::NodeSelector::SystemdUnit).
//!
//! systemd gives every unit a cgroup named after it, in the cgroup v2 hierarchy and, on the
//! hybrid layout, in the v1 hierarchy `name=systemd` too (systemd.special(7); systemd's
//! `docs/CGROUP_DELEGATION.md`). The hierarchies are the ones rolecall's mount namespace has
//! mounted, read from `/proc/self/mountinfo`, v2 first. The unit's directory found there is
//! remembered per unit name, so a check reads that cgroup's `cgroup.procs` and nothing else, and
//! looks for the unit again only when the directory is gone or empty (the unit stopped, or
//! was moved to another slice).
//!
//! - `mountinfo`: the cgroup hierarchies from `/proc/self/mountinfo`.
//! - `tree`: the bounded walks: a unit's directory, and the pids of a cgroup tree.

mod mountinfo;
mod tree;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::DiscoverError;
use super::pids::is_running;
use mountinfo::{Hierarchy, mounted_hierarchies};
use tree::{find_unit_dir, pids_below};

/// For the fuzz targets: [`mountinfo::cgroup_hierarchies`] of `text`, each as (whether it is
/// the v2 hierarchy, its mount point).
pub(super) fn fuzz_mountinfo(text: &str) -> Vec<(bool, PathBuf)> {
    mountinfo::cgroup_hierarchies(text)
        .into_iter()
        .map(|h| (h.kind == mountinfo::Kind::Unified, h.mount))
        .collect()
}

/// The suffixes of the unit types rolecall accepts: the ones whose cgroup holds a workload's
/// processes. A slice selects every process of every unit in it.
const UNIT_SUFFIXES: [&str; 3] = [".service", ".scope", ".slice"];

/// The longest unit name systemd accepts (`UNIT_NAME_MAX`, systemd.unit(5)).
const UNIT_NAME_MAX: usize = 255;

/// Why a name is not one of a unit rolecall can look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitNameError {
    #[error("empty unit name")]
    Empty,
    #[error("{0:?} is a path; give the unit's name")]
    Path(String),
    #[error("{0:?} is longer than {UNIT_NAME_MAX} bytes")]
    TooLong(String),
    #[error("{name:?} holds {bad:?}; a unit name has only ASCII letters, digits and \":-_.\\@\"")]
    Character { name: String, bad: char },
    #[error("{0:?} has nothing before its suffix")]
    NoStem(String),
    #[error("{0:?} does not end in {suffixes}", suffixes = UNIT_SUFFIXES.join(", "))]
    Suffix(String),
}

/// Whether `name` is a unit name rolecall can look up: a name systemd would accept (ASCII
/// letters, digits and `:-_.\@`, at most 255 bytes, systemd.unit(5); so never a `/`, which
/// would make it a path) ending in `.service`, `.scope` or `.slice`.
pub(crate) fn check_unit_name(name: &str) -> Result<(), UnitNameError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(UnitNameError::Empty);
    }
    if name.contains('/') {
        return Err(UnitNameError::Path(owned()));
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(UnitNameError::TooLong(owned()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(UnitNameError::Character { name: owned(), bad });
    }
    match UNIT_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        Some(suffix) if name.len() > suffix.len() => Ok(()),
        Some(_) => Err(UnitNameError::NoStem(owned())),
        None => Err(UnitNameError::Suffix(owned())),
    }
}

/// The running pids of `unit`, ascending.
pub(super) fn unit_pids(unit: &str) -> Result<Vec<u32>, DiscoverError> {
    static FOUND: UnitDirs = UnitDirs::new();
    FOUND.pids(unit, mounted_hierarchies)
}

/// The cgroup directory last found for each unit. A selector is plain configuration and a
/// discovery keeps no state between calls, so this memory belongs to the process; a path in it
/// is checked at every use, by reading it.
struct UnitDirs(Mutex<BTreeMap<String, PathBuf>>);

impl UnitDirs {
    const fn new() -> UnitDirs {
        UnitDirs(Mutex::new(BTreeMap::new()))
    }

    /// The running pids of `unit`: from the remembered directory if it still has some, else by
    /// a search of the `hierarchies`.
    fn pids(
        &self,
        unit: &str,
        hierarchies: impl FnOnce() -> Result<Vec<Hierarchy>, DiscoverError>,
    ) -> Result<Vec<u32>, DiscoverError> {
        check_unit_name(unit)
            .map_err(|why| DiscoverError::NodeMissing(format!("not a systemd unit name: {why}")))?;
        if let Some(dir) = self.remembered(unit) {
            match running_pids_in(&dir, unit)? {
                Some(pids) if !pids.is_empty() => return Ok(pids),
                _ => self.set(unit, None),
            }
        }
        let (dir, pids) = search(unit, &hierarchies()?)?;
        self.set(unit, Some(dir));
        Ok(pids)
    }

    fn remembered(&self, unit: &str) -> Option<PathBuf> {
        let found = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        found.get(unit).cloned()
    }

    fn set(&self, unit: &str, dir: Option<PathBuf>) {
        let mut found = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match dir {
            Some(dir) => found.insert(unit.to_owned(), dir),
            None => found.remove(unit),
        };
    }
}

/// The first of `hierarchies` where `unit` has a cgroup with a running process: its
/// directory and pids. `NodeMissing` if no hierarchy has one; a search that could not look
/// everywhere (`Unreadable`) fails with its reason unless an empty cgroup of the unit was found.
fn search(unit: &str, hierarchies: &[Hierarchy]) -> Result<(PathBuf, Vec<u32>), DiscoverError> {
    if hierarchies.is_empty() {
        return Err(DiscoverError::Unreadable(format!(
            "systemd unit {unit}: no cgroup2 or name=systemd cgroup hierarchy is mounted \
             (/proc/self/mountinfo)"
        )));
    }
    let mut empty = None;
    let mut blind = None;
    for hierarchy in hierarchies {
        let dir = match find_unit_dir(&hierarchy.mount, unit) {
            Ok(Some(dir)) => dir,
            Ok(None) => continue,
            Err(err) => {
                blind.get_or_insert(err);
                continue;
            }
        };
        match running_pids_in(&dir, unit)? {
            Some(pids) if !pids.is_empty() => return Ok((dir, pids)),
            Some(_) => {
                empty.get_or_insert(dir);
            }
            None => {}
        }
    }
    if let Some(dir) = empty {
        return Err(DiscoverError::NodeMissing(format!(
            "systemd unit {unit} has no running process (its cgroup {} is empty)",
            dir.display()
        )));
    }
    if let Some(err) = blind {
        return Err(err);
    }
    let mounts: Vec<String> = hierarchies
        .iter()
        .map(|h| h.mount.display().to_string())
        .collect();
    Err(DiscoverError::NodeMissing(format!(
        "no cgroup for systemd unit {unit} under {}: the unit is not running",
        mounts.join(" or ")
    )))
}

/// The running (not zombie) pids in the cgroup tree at `dir`, ascending; `None` if it is gone.
fn running_pids_in(dir: &Path, unit: &str) -> Result<Option<Vec<u32>>, DiscoverError> {
    let Some(mut pids) = pids_below(dir, unit)? else {
        return Ok(None);
    };
    pids.sort_unstable();
    pids.dedup();
    let mut running = Vec::with_capacity(pids.len());
    for pid in pids {
        if is_running(pid)? {
            running.push(pid);
        }
    }
    Ok(Some(running))
}

/// The contents of a file of at most `limit` bytes; a longer one is an error (`InvalidData`)
/// rather than a truncated answer.
fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {limit} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
