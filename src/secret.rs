//! Secrets (passwords) in a type whose `Debug` and `Display` never show them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a password file was not used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("password file {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("password file {} is readable by every user; chmod o-r it", path.display())]
    WorldReadable { path: PathBuf },
    #[error("password file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("password file {} is not a regular file (a pipe, a device or a directory)", path.display())]
    NotAFile { path: PathBuf },
    #[error("password file {} is larger than {} bytes; it should hold one line", path.display(), MAX_FILE)]
    TooLarge { path: PathBuf },
}

/// The most a password file may hold. Redis passwords are a line; a bigger file is the wrong
/// file, and reading it whole would be a waste at best.
pub const MAX_FILE: u64 = 64 * 1024;

/// A password. Read it with [`Secret::expose`] only where it is sent to a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Reads a secret from a file: the first line, without its line ending. A file that others
    /// can read is refused, as ssh does with private keys: rolecall will not spread a leak.
    /// The file is opened once, without blocking, and must be a regular file of at most
    /// [`MAX_FILE`] bytes: a pipe or a device named by mistake is refused, not waited on.
    /// Symbolic links are followed (Kubernetes mounts secrets through them).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        use std::io::Read;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path_buf = || path.to_path_buf();
        let unreadable = |error| SecretError::Unreadable {
            path: path_buf(),
            error,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile { path: path_buf() });
        }
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(SecretError::WorldReadable { path: path_buf() });
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(SecretError::TooLarge { path: path_buf() });
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            unreadable(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
        })?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(SecretError::Empty { path: path_buf() });
        }
        Ok(Secret(line))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("canary-4711".into());
        assert!(!format!("{s:?} {s}").contains("canary"));
        assert_eq!(s.expose(), "canary-4711");
    }

    #[test]
    fn a_world_readable_or_missing_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        assert!(
            Secret::from_file(&p)
                .unwrap_err()
                .to_string()
                .contains("No such file")
        );
        std::fs::write(&p, "canary-4711\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("readable by every user") && !e.contains("canary"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "canary-4711");
    }

    #[test]
    fn a_pipe_a_directory_or_an_oversized_password_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO with no writer: opening it for reading would block forever.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .expect("run mkfifo (coreutils)");
        assert!(made.success());
        let e = Secret::from_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = Secret::from_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");

        let big = dir.path().join("big");
        let mut text = "canary-4711\n".to_string();
        text.push_str(&"x".repeat(MAX_FILE as usize));
        std::fs::write(&big, &text).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Secret::from_file(&big).unwrap_err().to_string();
        assert!(e.contains("larger than") && !e.contains("canary"), "{e}");
        // Exactly the bound is accepted.
        text.truncate(MAX_FILE as usize);
        std::fs::write(&big, &text).unwrap();
        assert_eq!(Secret::from_file(&big).unwrap().expose(), "canary-4711");

        // Through a symbolic link, as Kubernetes mounts a secret.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert_eq!(Secret::from_file(&link).unwrap().expose(), "canary-4711");
    }
}
