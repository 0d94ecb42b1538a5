//! What a failed discovery means for a health check, and how an I/O error under `/proc` maps
//! onto it.
//!
//! [`DiscoverError::NodeMissing`] when the node is not running (a process that vanishes halfway
//! counts as missing); [`DiscoverError::Unreadable`] when rolecall cannot look (no permission),
//! in which case nothing is known about the node.

use std::io;
use std::path::Path;

/// Why a discovery has no answer, split by what it means for a health check.
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

/// Whether an error reading `/proc/PID/...` means the process is gone: ENOENT once it is
/// reaped, ESRCH while it is being torn down.
pub(super) fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

pub(super) fn unreadable(path: &Path, err: &io::Error) -> DiscoverError {
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
pub(super) fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
