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
}

/// A password. Read it with [`Secret::expose`] only where it is sent to a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Reads a secret from a file: the first line, without its line ending. A file that others
    /// can read is refused, as ssh does with private keys: rolecall will not spread a leak.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let unreadable = |error| SecretError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(SecretError::WorldReadable {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
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
}
