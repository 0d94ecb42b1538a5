//! TLS to data servers and sentinels, with rustls: the CA file (or the system's roots), an
//! optional client certificate and key (mutual TLS), and the name to verify — the name rolecall
//! dialled (the announced host name), or an override. There is no way to turn verification off
//! and no fallback to plaintext.
//!
//! The files are read and checked at start (a private key readable by every user is refused,
//! like a password file) and read again, before a new connection, when one changed on disk (a
//! rotated Kubernetes Secret): new connections use the new files, kept ones keep theirs. A
//! rotation that leaves unreadable files is logged and the last good files stay in use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What `[redis.tls]` (or `[redis.sentinel_tls]`) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM file of the CA(s) to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM files of the client certificate (chain) and its private key, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name to verify instead of the one dialled.
    pub server_name: Option<String>,
}

/// A TLS setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Unreadable { path: PathBuf, error: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error(
        "{path} is readable by every user: a private key must not be (chmod o-r, or 0440 with the group of rolecall's user)"
    )]
    WorldReadable { path: PathBuf },
    #[error("server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    #[error("{0}")]
    Rustls(String),
}

/// The file stamps a reload compares: modification time and length of each file.
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// TLS settings with their files loaded, re-read when they change.
pub struct Tls {
    settings: TlsSettings,
    loaded: Mutex<(Stamps, Arc<ClientConfig>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the files of `settings`.
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        if let Some(name) = &settings.server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            return Err(TlsError::ServerName(name.clone()));
        }
        install_crypto();
        let config = read(&settings)?;
        Ok(Tls {
            loaded: Mutex::new((stamps(&settings), config)),
            settings,
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The name to verify for a server dialled as `host`.
    pub fn name_for<'a>(&'a self, host: &'a str) -> &'a str {
        self.settings.server_name.as_deref().unwrap_or(host)
    }

    /// The client configuration for a new connection: read again first if a file changed on
    /// disk.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        // A poisoned lock only means a panic during an earlier reload; what it holds is whole.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamps(&self.settings);
        if now != loaded.0 {
            match read(&self.settings) {
                Ok(certs) => {
                    tracing::info!(files = ?self.files(), "TLS files changed on disk: read again");
                    *loaded = (now, certs);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed on disk but cannot be used: keeping the last good ones");
                    // Not again until they change once more.
                    loaded.0 = now;
                }
            }
        }
        loaded.1.clone()
    }

    fn files(&self) -> Vec<&Path> {
        files(&self.settings)
    }
}

fn files(settings: &TlsSettings) -> Vec<&Path> {
    let mut files: Vec<&Path> = settings.ca_file.iter().map(PathBuf::as_path).collect();
    if let Some((cert, key)) = &settings.client {
        files.push(cert);
        files.push(key);
    }
    files
}

fn stamps(settings: &TlsSettings) -> Stamps {
    files(settings)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// Reads a PEM file that must hold at least one certificate.
fn read_certificates(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read_file(path)?;
    let found = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    if found == 0 {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// Reads a private key file, refusing one every user can read.
fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| TlsError::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(TlsError::WorldReadable {
            path: path.to_path_buf(),
        });
    }
    let pem = read_file(path)?;
    if PrivateKeyDer::from_pem_slice(&pem).is_err() {
        return Err(TlsError::NoKey {
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// The rustls client configuration the settings' files make: the CA's certificates as the
/// only roots (or the system's), and the client certificate chain and key.
fn read(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let rustls = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    match settings.ca_file.as_deref() {
        Some(ca) => {
            let pem = read_certificates(ca)?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                roots.add(cert).map_err(rustls)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // The system's store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match &settings.client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&read_certificates(cert)?)
                    .flatten()
                    .collect();
            let pem = read_key(key)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
                path: key.to_path_buf(),
            })?;
            builder.with_client_auth_cert(chain, key).map_err(rustls)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Makes rustls use *ring* for its cryptography, once per process (rolecall enables no other
/// provider, so rustls cannot pick one by itself).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether `e`, or an error it wraps, is a TLS error (a certificate rustls refused, an alert
/// from the peer): rolecall's own blindness, whatever the server is.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    for _ in 0..16 {
        let Some(mut e) = next else { return false };
        // The redis crate keeps the error it wraps in an `Arc`, and an `Arc`'s `source` skips
        // what it holds: look inside.
        if let Some(shared) = e.downcast_ref::<Shared>() {
            e = shared.as_ref();
        }
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.is::<rustls::Error>()
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["redis-node-0.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_are_checked_at_start_and_a_key_every_user_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let ca = write(dir.path(), "ca.pem", &cert, 0o644);
        let crt = write(dir.path(), "client.pem", &cert, 0o644);
        let good_key = write(dir.path(), "client.key", &key, 0o600);
        let open_key = write(dir.path(), "open.key", &key, 0o644);
        let not_pem = write(dir.path(), "x.pem", "hello", 0o600);
        let ok = |ca: &Path, key: &Path| {
            Tls::load(TlsSettings {
                ca_file: Some(ca.to_path_buf()),
                client: Some((crt.clone(), key.to_path_buf())),
                server_name: None,
            })
        };
        assert!(ok(&ca, &good_key).is_ok());
        assert!(matches!(
            ok(&ca, &open_key),
            Err(TlsError::WorldReadable { .. })
        ));
        assert!(matches!(
            ok(&not_pem, &good_key),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(ok(&ca, &not_pem), Err(TlsError::NoKey { .. })));
        assert!(matches!(
            ok(&dir.path().join("missing"), &good_key),
            Err(TlsError::Unreadable { .. })
        ));
        let bad_name = Tls::load(TlsSettings {
            server_name: Some("not a name".into()),
            ..TlsSettings::default()
        });
        assert!(matches!(bad_name, Err(TlsError::ServerName(_))));
    }

    #[test]
    fn tls_errors_are_told_from_other_errors_through_the_redis_crates_wrapping() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.clone());
        assert!(is_tls_error(&redis::RedisError::from(io)));
        assert!(is_tls_error(&redis::RedisError::from(refused)));
        let refused_connect = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_tls_error(&redis::RedisError::from(refused_connect)));
    }

    #[test]
    fn changed_files_are_read_again_and_bad_ones_keep_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = pair();
        let ca = write(dir.path(), "ca.pem", &first, 0o644);
        let tls = Tls::load(TlsSettings {
            ca_file: Some(ca.clone()),
            ..TlsSettings::default()
        })
        .unwrap();
        let before = tls.client_config();
        assert!(
            Arc::ptr_eq(&before, &tls.client_config()),
            "unchanged files"
        );
        let (second, _) = pair();
        // A different length, so the change shows whatever the clock's resolution.
        let second = format!("{second}\n");
        std::fs::write(&ca, &second).unwrap();
        let after = tls.client_config();
        assert!(!Arc::ptr_eq(&before, &after), "read again");
        std::fs::write(&ca, "garbage").unwrap();
        assert!(
            Arc::ptr_eq(&after, &tls.client_config()),
            "the last good kept"
        );
    }
}
