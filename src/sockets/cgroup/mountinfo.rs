//! The cgroup hierarchies this machine has mounted, read from `/proc/self/mountinfo`.
//!
//! A line of mountinfo is (proc(5)): mount ID, parent ID, `major:minor`, root, mount point,
//! mount options, optional fields, a lone `-`, filesystem type, source, superblock options.
//! Paths escape space, tab, newline and backslash as three octal digits (`\040`). A unit's
//! cgroup lives in the cgroup v2 hierarchy (type `cgroup2`) and, on the hybrid layout, also
//! in the v1 hierarchy systemd names for itself (type `cgroup`, option `name=systemd`); the
//! v1 controller hierarchies (`cpu`, `memory`…) do not say which unit a process belongs to.

use std::fmt;
use std::path::{Path, PathBuf};

use super::read_bounded;
use crate::sockets::error::{DiscoverError, unreadable};

/// More than any machine's mount table: a Kubernetes node with hundreds of pods has a few
/// thousand lines of about 150 bytes.
const MAX_MOUNTINFO_BYTES: u64 = 16 << 20;

/// Which kind of cgroup hierarchy a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// The cgroup v2 (unified) hierarchy.
    Unified,
    /// The named v1 hierarchy `name=systemd` of the hybrid (and legacy) layout.
    NamedSystemd,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Unified => "cgroup2",
            Kind::NamedSystemd => "cgroup name=systemd",
        })
    }
}

/// A mounted cgroup hierarchy that holds units' cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    pub(super) kind: Kind,
    pub(super) mount: PathBuf,
}

/// The hierarchies of rolecall's mount namespace, v2 first.
pub(super) fn mounted_hierarchies() -> Result<Vec<Hierarchy>, DiscoverError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = read_bounded(path, MAX_MOUNTINFO_BYTES).map_err(|err| unreadable(path, &err))?;
    Ok(cgroup_hierarchies(&String::from_utf8_lossy(&text)))
}

/// The cgroup v2 and `name=systemd` hierarchies a mountinfo table lists: one of each at most,
/// v2 first. A hierarchy mounted twice (a bind mount, a container's view) is taken at the
/// mount of its whole tree (root `/`) if there is one, else at its first mount.
pub(super) fn cgroup_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut found: Vec<(Hierarchy, bool)> = Vec::new();
    for (hierarchy, whole) in mountinfo.lines().filter_map(parse_line) {
        match found.iter_mut().find(|(h, _)| h.kind == hierarchy.kind) {
            Some(slot) if !slot.1 && whole => *slot = (hierarchy, whole),
            Some(_) => {}
            None => found.push((hierarchy, whole)),
        }
    }
    found.sort_by_key(|(h, _)| h.kind);
    found.into_iter().map(|(h, _)| h).collect()
}

/// One mountinfo line as a hierarchy, and whether it mounts the hierarchy's root; `None` for
/// any other mount or a line that does not parse.
fn parse_line(line: &str) -> Option<(Hierarchy, bool)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let root = *fields.get(3)?;
    let mount = *fields.get(4)?;
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fs_type = *fields.get(dash + 1)?;
    let options = *fields.get(dash + 3)?;
    let kind = match fs_type {
        "cgroup2" => Kind::Unified,
        "cgroup" if options.split(',').any(|o| o == "name=systemd") => Kind::NamedSystemd,
        _ => return None,
    };
    let hierarchy = Hierarchy {
        kind,
        mount: PathBuf::from(unescape(mount)),
    };
    Some((hierarchy, root == "/"))
}

/// A mountinfo path with its `\NNN` octal escapes undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(kind: Kind, mount: &str) -> Hierarchy {
        Hierarchy {
            kind,
            mount: PathBuf::from(mount),
        }
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_hybrid_layout_has_both_hierarchies_v2_first() {
        assert_eq!(
            cgroup_hierarchies(HYBRID),
            vec![
                at(Kind::Unified, "/sys/fs/cgroup/unified"),
                at(Kind::NamedSystemd, "/sys/fs/cgroup/systemd"),
            ]
        );
    }

    #[test]
    fn mountinfo_lines_are_read_by_their_fields() {
        let cases: &[(&str, Vec<Hierarchy>)] = &[
            // Pure cgroup v2, with optional fields before the separator.
            (
                "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - \
                 cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
                vec![at(Kind::Unified, "/sys/fs/cgroup")],
            ),
            // The legacy layout: name=systemd among other options; controllers ignored.
            (
                "25 24 0:22 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                 26 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
                vec![at(Kind::NamedSystemd, "/sys/fs/cgroup/systemd")],
            ),
            // An escaped space in the mount point.
            (
                "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 none rw",
                vec![at(Kind::Unified, "/mnt/my cgroups")],
            ),
            // A sub-tree mounted first, the whole tree later: the whole tree wins.
            (
                "50 31 0:38 /kubepods.slice /host/sub rw - cgroup2 cgroup2 rw\n\
                 51 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
                vec![at(Kind::Unified, "/sys/fs/cgroup")],
            ),
            // A mount point or a type that merely looks like a cgroup, and broken lines.
            (
                "60 31 0:40 / /sys/fs/cgroup2 rw - tmpfs cgroup2 rw\n\
                 61 31 0:41 / /x rw - cgroup cgroup rw,name=systemd-ish\n\
                 62 31 0:42 / /y rw cgroup2 cgroup2 rw\n\
                 garbage\n\n",
                vec![],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&cgroup_hierarchies(text), want, "{text}");
        }
    }

    #[test]
    fn octal_escapes_are_undone_and_the_rest_is_kept() {
        let cases = [
            ("/plain", "/plain"),
            ("/a\\040b\\011c\\012d\\134e", "/a b\tc\nd\\e"),
            ("/not\\08x", "/not\\08x"),
            ("/end\\04", "/end\\04"),
        ];
        for (field, want) in cases {
            assert_eq!(unescape(field), want, "{field}");
        }
    }
}
