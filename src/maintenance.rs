//! The operator's maintenance switch: planned work takes a node out of rotation (agent `maint`,
//! `/readyz` 503) and puts it back, whatever Redis says.
//!
//! Two sources, either of which turns maintenance on:
//!
//! - a flag file (`[maintenance] file`), like Percona clustercheck's disable file: the node is
//!   in maintenance while the file exists (`touch` / `rm`);
//! - `POST /maintenance` / `DELETE /maintenance` on the HTTP port, with
//!   `Authorization: Bearer <token>` where the token is read from `[maintenance] token_file`
//!   (a file every user can read is refused, as password files are). Without a token file the
//!   endpoint does not exist (404). The HTTP switch is kept in a state file in
//!   `[node] state_dir` (written atomically), so a restart does not end a maintenance.
//!
//! A reload (SIGHUP) may change the file and the token: the API switch goes off when its token
//! is removed (as a restart without it would), and the new file is looked at within a
//! [`FILE_POLL`].
//!
//! The file is watched by a small task ([`watch_file`]) that looks every [`FILE_POLL`], not by
//! each probe: probes never touch the filesystem (a hung NFS mount cannot stall them), and the
//! HAProxy push learns of a change without waiting for a probe. The state is published in a
//! `watch` channel that the agent, the HTTP server and the push read.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MaintenanceConfig};

/// How often the flag file is looked at: a `stat`, at most 250 ms late.
pub const FILE_POLL: Duration = Duration::from_millis(250);
/// A `stat` that takes longer than this (a hung network filesystem) keeps the last state.
const STAT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the node is in maintenance, and why. Shown in `/status` as `maintenance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceState {
    pub on: bool,
    /// The flag file exists.
    pub by_file: bool,
    /// Switched on through `POST /maintenance`.
    pub by_api: bool,
    /// The configured flag file, if any.
    pub file: Option<String>,
    /// When maintenance last turned on (Unix milliseconds), while it is on.
    pub since_unix_ms: Option<u64>,
}

impl MaintenanceState {
    /// Why the node is in maintenance, for the agent's description and `/readyz?verbose`.
    pub fn reason(&self) -> String {
        match (self.by_file, self.by_api) {
            (true, true) => format!(
                "flag file {} exists and switched on through POST /maintenance",
                self.file.as_deref().unwrap_or("?")
            ),
            (true, false) => format!("flag file {} exists", self.file.as_deref().unwrap_or("?")),
            (false, true) => "switched on through POST /maintenance".to_string(),
            (false, false) => "off".to_string(),
        }
    }
}

/// The switch: both sources and the published state.
#[derive(Debug)]
pub struct Maintenance {
    /// Swapped whole by a reload; readers load it once per use.
    config: ArcSwap<MaintenanceConfig>,
    by_file: AtomicBool,
    by_api: AtomicBool,
    tx: watch::Sender<MaintenanceState>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Maintenance {
    /// The switch for `config`; looks at the flag file once, at once, so that the first answer
    /// after a start already knows about it.
    pub fn new(config: MaintenanceConfig) -> Arc<Maintenance> {
        let m = Maintenance {
            by_file: AtomicBool::new(false),
            by_api: AtomicBool::new(false),
            tx: watch::channel(MaintenanceState {
                file: config.file.as_ref().map(|p| p.display().to_string()),
                ..MaintenanceState::default()
            })
            .0,
            config: ArcSwap::from_pointee(config.clone()),
        };
        if let Some(path) = &config.file
            && let Ok(exists) = path.try_exists()
        {
            m.set_file(exists);
        }
        if let Some(path) = &config.state_file
            && std::fs::read_to_string(path).is_ok_and(|t| t.trim() == "on")
        {
            tracing::warn!(file = %path.display(), "maintenance switched on through POST /maintenance before this start: still on");
            m.by_api.store(true, Ordering::SeqCst);
            m.publish();
        }
        Arc::new(m)
    }

    pub fn state(&self) -> MaintenanceState {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<MaintenanceState> {
        self.tx.subscribe()
    }

    /// Whether `POST`/`DELETE /maintenance` exist (a token is configured).
    pub fn api_enabled(&self) -> bool {
        self.config.load().token.is_some()
    }

    /// Takes a reloaded `[maintenance]`: the token at once; the new file at the watcher's next
    /// look (until then the old file's state holds, so a renamed flag file does not flap).
    pub fn reconfigure(&self, config: MaintenanceConfig) {
        let old = self.config.swap(Arc::new(config));
        let new = self.config.load();
        if old.token.is_some() && new.token.is_none() && self.by_api.swap(false, Ordering::SeqCst) {
            tracing::info!(
                source = "http",
                "maintenance switched off: its token was removed by a reload"
            );
        }
        if old.file != new.file {
            tracing::info!(file = ?new.file, "maintenance file changed");
        }
        self.publish();
    }

    /// Whether an `Authorization` header value carries the configured bearer token.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        let config = self.config.load();
        let (Some(token), Some(header)) = (&config.token, header) else {
            return false;
        };
        let Ok(header) = std::str::from_utf8(header) else {
            return false;
        };
        let Some((scheme, presented)) = header.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && constant_time_eq(presented.trim().as_bytes(), token.expose().as_bytes())
    }

    /// Turns the HTTP switch on or off; returns the resulting state.
    /// The switch is kept in the state file before it is published, so a restart keeps it.
    pub fn set_api(&self, on: bool) -> MaintenanceState {
        if self.by_api.swap(on, Ordering::SeqCst) != on {
            if let Some(path) = &self.config.load().state_file
                && let Err(e) = keep(path, on)
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot keep the maintenance switch: a restart will forget it");
            }
            if on {
                tracing::warn!(source = "http", "maintenance switched on");
            } else {
                tracing::info!(source = "http", "maintenance switched off");
            }
        }
        self.publish()
    }

    fn set_file(&self, exists: bool) {
        if self.by_file.swap(exists, Ordering::SeqCst) != exists {
            let file = self
                .config
                .load()
                .file
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default();
            if exists {
                tracing::warn!(source = "file", %file, "maintenance switched on");
            } else {
                tracing::info!(source = "file", %file, "maintenance switched off");
            }
        }
        self.publish();
    }

    fn publish(&self) -> MaintenanceState {
        let by_file = self.by_file.load(Ordering::SeqCst);
        let by_api = self.by_api.load(Ordering::SeqCst);
        let file = self
            .config
            .load()
            .file
            .as_ref()
            .map(|p| p.display().to_string());
        self.tx.send_if_modified(|s| {
            let on = by_file || by_api;
            let since = match (s.on, on) {
                (false, true) => Some(unix_ms()),
                (true, true) => s.since_unix_ms,
                _ => None,
            };
            let next = MaintenanceState {
                on,
                by_file,
                by_api,
                file,
                since_unix_ms: since,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
        self.state()
    }
}

/// Writes the HTTP switch to `path` atomically (a temp file renamed over it): `on`, or no file.
fn keep(path: &Path, on: bool) -> std::io::Result<()> {
    if !on {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, "on\n")?;
    std::fs::rename(&tmp, path)
}

/// Equal slices, compared without an early exit (the token's length is not a secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Watches the flag file until `shutdown`, and takes each reloaded `[maintenance]` from
/// `reloads`. Without a file it only waits for a reload that configures one.
pub async fn watch_file(
    m: Arc<Maintenance>,
    mut reloads: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Ok(()) = reloads.changed() => {
                let config = reloads.borrow_and_update().maintenance.clone();
                m.reconfigure(config);
                failing = false;
            }
        }
        match m.config.load().file.clone() {
            Some(path) => failing = look(&m, path, failing).await,
            None if m.by_file.load(Ordering::SeqCst) => m.set_file(false),
            None => {}
        }
    }
}

/// Looks whether the flag file exists, under [`STAT_TIMEOUT`]; returns whether the look
/// failed (said once per run of failures, `failing` being the last look's).
async fn look(m: &Maintenance, path: std::path::PathBuf, failing: bool) -> bool {
    let p = path.clone();
    let seen = tokio::time::timeout(
        STAT_TIMEOUT,
        tokio::task::spawn_blocking(move || p.try_exists()),
    )
    .await;
    let error = match seen {
        Ok(Ok(Ok(exists))) => {
            m.set_file(exists);
            return false;
        }
        // Unreadable (permissions), or the stat hangs: keep the last state, say so once.
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {STAT_TIMEOUT:?}"),
    };
    if !failing {
        tracing::warn!(file = %path.display(), %error, "cannot look at the maintenance file; keeping the last state");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn with_token(token: &str) -> Arc<Maintenance> {
        Maintenance::new(MaintenanceConfig {
            file: None,
            token: Some(Secret::new(token.to_string())),
            state_file: None,
        })
    }

    #[test]
    fn the_http_switch_survives_a_restart_through_its_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join("maintenance-n.state");
        let config = MaintenanceConfig {
            file: None,
            token: Some(crate::secret::Secret::new("t".into())),
            state_file: Some(file.clone()),
        };
        let m = Maintenance::new(config.clone());
        assert!(!m.state().on);
        assert!(m.set_api(true).by_api);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "on\n");
        let restarted = Maintenance::new(config.clone());
        assert!(restarted.state().on && restarted.state().by_api);
        assert!(!restarted.set_api(false).on);
        assert!(!file.exists());
        assert!(!Maintenance::new(config).state().on);
    }

    #[test]
    fn only_the_configured_bearer_token_is_authorized() {
        let m = with_token("s3cret");
        assert!(m.api_enabled());
        assert!(m.authorized(Some(b"Bearer s3cret")));
        assert!(m.authorized(Some(b"bearer  s3cret ")));
        assert!(!m.authorized(Some(b"Bearer s3cre")));
        assert!(!m.authorized(Some(b"Bearer s3cret2")));
        assert!(!m.authorized(Some(b"Basic s3cret")));
        assert!(!m.authorized(Some(b"s3cret")));
        assert!(!m.authorized(None));
        let off = Maintenance::new(MaintenanceConfig::default());
        assert!(!off.api_enabled());
        assert!(!off.authorized(Some(b"Bearer s3cret")));
    }

    #[test]
    fn a_reload_swaps_the_token_and_removing_it_ends_the_api_switch() {
        let m = with_token("old");
        m.set_api(true);
        m.reconfigure(MaintenanceConfig {
            token: Some(Secret::new("new".into())),
            ..MaintenanceConfig::default()
        });
        assert!(m.authorized(Some(b"Bearer new")));
        assert!(!m.authorized(Some(b"Bearer old")));
        assert!(m.state().on, "a new token keeps the switch");
        m.reconfigure(MaintenanceConfig::default());
        assert!(!m.api_enabled());
        assert!(
            !m.state().on,
            "no token: the switch is off, as after a restart"
        );
    }

    #[test]
    fn either_source_turns_maintenance_on() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("maintenance");
        let m = Maintenance::new(MaintenanceConfig {
            file: Some(flag.clone()),
            token: None,
            state_file: None,
        });
        assert!(!m.state().on);
        m.set_api(true);
        let s = m.state();
        assert!(s.on && s.by_api && !s.by_file && s.since_unix_ms.is_some());
        m.set_file(true);
        assert!(m.state().reason().contains("flag file"));
        m.set_api(false);
        assert!(m.state().on, "the file still holds it");
        m.set_file(false);
        let s = m.state();
        assert!(!s.on && s.since_unix_ms.is_none());

        // A file that exists at start is seen before any watcher runs.
        std::fs::write(&flag, "").unwrap();
        let m = Maintenance::new(MaintenanceConfig {
            file: Some(flag),
            token: None,
            state_file: None,
        });
        assert!(m.state().on && m.state().by_file);
    }
}
