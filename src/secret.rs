//! Secrets (passwords) in a type whose `Debug` and `Display` never show them.

use std::fmt;
use std::path::Path;

/// A password. Read it with [`Secret::expose`] only where it is sent to a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Reads a secret from a file: the first line, without its line ending. A file that others
    /// can read is refused, as ssh does with private keys: rolecall will not spread a leak.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("password file {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(format!(
                "password file {} is readable by every user; chmod o-r it",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("password file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(format!("password file {} is empty", path.display()));
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
        assert!(Secret::from_file(&p).unwrap_err().contains("No such file"));
        std::fs::write(&p, "canary-4711\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&p).unwrap_err();
        assert!(
            e.contains("readable by every user") && !e.contains("canary"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "canary-4711");
    }
}
