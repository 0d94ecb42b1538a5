//! Which processes are the node: a [`NodeSelector`] resolved to running pids.
//!
//! `/proc/PID/stat` tells whether a process exists and is not a zombie; its second field is the
//! same `comm` as `/proc/PID/comm`, which [`NodeSelector::Process`] matches. A pid file is read
//! again at every discovery, so a restarted node is followed. A systemd unit's processes are
//! the pids of its cgroup ([`cgroup`](super::cgroup)).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::cgroup::unit_pids;
use super::error::{DiscoverError, describe, is_gone, unreadable};

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
    /// Every running process of a systemd unit (`centrifugo.service`): the pids in the unit's
    /// cgroup and in the cgroups below it, in the cgroup v2 hierarchy or the hybrid layout's
    /// `name=systemd` one. A restarted unit is followed, whatever its pids.
    SystemdUnit(String),
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
            NodeSelector::SystemdUnit(unit) => write!(f, "systemd unit {unit}"),
            NodeSelector::Namespace => f.write_str("network namespace"),
        }
    }
}

/// The running pids a selector names, with the message for a node that is not running; `None`
/// for [`NodeSelector::Namespace`], which names no process.
pub(super) fn node_pids(
    selector: &NodeSelector,
) -> Result<Option<(Vec<u32>, String)>, DiscoverError> {
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
        NodeSelector::SystemdUnit(unit) => {
            let pids = unit_pids(unit)?;
            Ok(Some((
                pids,
                format!("systemd unit {unit} has no running process"),
            )))
        }
    }
}

pub(super) fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// A pid file holds a number and a newline: more than this is not a pid file (and is not
/// read: a pid file pointed at a huge or endless file costs nothing).
const PID_FILE_MAX: u64 = 4096;

/// The first `max` bytes of `path`.
fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut text)?;
    Ok(text)
}

/// Reads a pid file; every way it fails to name a pid, except not being allowed to read it,
/// means the node is not running.
fn read_pid_file(path: &Path) -> Result<u32, DiscoverError> {
    let missing =
        |why: &str| DiscoverError::NodeMissing(format!("pid file {}: {why}", path.display()));
    let text = match read_at_most(path, PID_FILE_MAX) {
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

/// Whether `pid` is a running (not zombie) process; one that is gone is not.
pub(super) fn is_running(pid: u32) -> Result<bool, DiscoverError> {
    let path = proc_path(pid, "stat");
    match std::fs::read(&path) {
        Ok(stat) => match parse_stat(&stat) {
            Some((_, state)) => Ok(!has_exited(state)),
            None => Err(DiscoverError::Unreadable(format!(
                "cannot parse {}",
                path.display()
            ))),
        },
        Err(err) if is_gone(&err) => Ok(false),
        Err(err) => Err(unreadable(&path, &err)),
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

/// Parses `/proc/PID/stat` into `comm` (field 2) and the state letter (field 3).
///
/// `comm` is in parentheses and may itself hold spaces and `)`, so it ends at the last `)`
/// (proc(5)).
pub(super) fn parse_stat(stat: &[u8]) -> Option<(&[u8], u8)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_read_only_as_far_as_a_pid_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let padded = dir.path().join("padded.pid");
        std::fs::write(&padded, format!("1234\n{}", " ".repeat(100_000))).unwrap();
        assert_eq!(read_pid_file(&padded).unwrap(), 1234);
        // An endless file is not read to its end.
        let endless = read_pid_file(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(endless, DiscoverError::NodeMissing(_)),
            "{endless:?}"
        );
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
            (
                NodeSelector::SystemdUnit("centrifugo.service".to_owned()),
                "systemd unit centrifugo.service",
            ),
            (NodeSelector::Namespace, "network namespace"),
        ];
        for (selector, want) in cases {
            assert_eq!(selector.to_string(), want);
        }
    }
}
