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
//! Either may carry the operator's words (`rolecall maint on --reason TEXT`): the first line of
//! the flag file, or the body of the `POST`. They are shown as the state's `note`, cut to one
//! line of [`NOTE_MAX`] characters without control characters.
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
/// The longest note kept, in characters.
pub const NOTE_MAX: usize = 200;
/// How much of the flag file is read for its note.
const NOTE_READ: u64 = 4096;

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
    /// What the operator said, while it is on: the flag file's first line, the `POST`'s body
    /// (both, separated by `; `, when both switches carry one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl MaintenanceState {
    /// Why the node is in maintenance, for the agent's description and `/readyz?verbose`.
    pub fn reason(&self) -> String {
        match &self.note {
            Some(note) => format!("{}: {note}", self.source()),
            None => self.source(),
        }
    }

    /// Which switch holds the node in maintenance.
    fn source(&self) -> String {
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
    /// The notes of the file and of the HTTP switch (a std `Mutex`: held to copy a string).
    notes: std::sync::Mutex<Notes>,
    tx: watch::Sender<MaintenanceState>,
}

#[derive(Debug, Default)]
struct Notes {
    file: Option<String>,
    api: Option<String>,
}

/// The operator's words as kept: the first line, without control characters, trimmed, at most
/// [`NOTE_MAX`] characters; `None` when nothing is left.
pub fn clean_note(text: &str) -> Option<String> {
    let line = text.lines().next().unwrap_or("");
    let note: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(NOTE_MAX)
        .collect();
    let note = note.trim();
    (!note.is_empty()).then(|| note.to_string())
}

/// Whether the flag file exists, and its note: a regular file's first line (a FIFO or a
/// device is never opened, so a look cannot block on it).
fn read_flag(path: &Path) -> std::io::Result<Option<Option<String>>> {
    use std::io::Read;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(Some(None));
    }
    let mut text = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => f.take(NOTE_READ).read_to_end(&mut text)?,
        // Removed between the two looks.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(clean_note(&String::from_utf8_lossy(&text))))
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
            notes: std::sync::Mutex::default(),
            tx: watch::channel(MaintenanceState {
                file: config.file.as_ref().map(|p| p.display().to_string()),
                ..MaintenanceState::default()
            })
            .0,
            config: ArcSwap::from_pointee(config.clone()),
        };
        if let Some(path) = &config.file
            && let Ok(flag) = read_flag(path)
        {
            m.set_file(flag);
        }
        if let Some(path) = &config.state_file
            && let Ok(text) = std::fs::read_to_string(path)
            && text.lines().next().is_some_and(|l| l.trim() == "on")
        {
            tracing::warn!(file = %path.display(), "maintenance switched on through POST /maintenance before this start: still on");
            m.notes().api = text.lines().nth(1).and_then(clean_note);
            m.by_api.store(true, Ordering::SeqCst);
            m.publish();
        }
        Arc::new(m)
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Turns the HTTP switch on (with the operator's `note`, if any: it replaces the last) or
    /// off; returns the resulting state. The switch is kept in the state file before it is
    /// published, so a restart keeps it.
    pub fn set_api(&self, on: bool, note: Option<String>) -> MaintenanceState {
        let note = note.as_deref().and_then(clean_note).filter(|_| on);
        let noted = std::mem::replace(&mut self.notes().api, note.clone()) != note;
        if self.by_api.swap(on, Ordering::SeqCst) != on || noted {
            if let Some(path) = &self.config.load().state_file
                && let Err(e) = keep(path, on, note.as_deref())
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

    /// The flag file as last looked at: absent (`None`), or present with its note.
    fn set_file(&self, flag: Option<Option<String>>) {
        let exists = flag.is_some();
        self.notes().file = flag.flatten();
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
        let note = {
            let notes = self.notes();
            let kept = [(by_file, &notes.file), (by_api, &notes.api)];
            let said: Vec<&str> = kept
                .iter()
                .filter_map(|(on, note)| note.as_deref().filter(|_| *on))
                .collect();
            (!said.is_empty()).then(|| said.join("; "))
        };
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
                note,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
        self.state()
    }
}

/// Writes the HTTP switch to `path` atomically (a temp file renamed over it): `on` and the
/// note on the next line, or no file.
fn keep(path: &Path, on: bool, note: Option<&str>) -> std::io::Result<()> {
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
    std::fs::write(&tmp, format!("on\n{}\n", note.unwrap_or_default()))?;
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
        // Without a flag file there is nothing to look at: no wakeup until a reload.
        let watching = m.config.load().file.is_some();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick(), if watching => {}
            Ok(()) = reloads.changed() => {
                let config = reloads.borrow_and_update().maintenance.clone();
                m.reconfigure(config);
                failing = false;
            }
        }
        match m.config.load().file.clone() {
            Some(path) => failing = look(&m, path, failing).await,
            None if m.by_file.load(Ordering::SeqCst) => m.set_file(None),
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
        tokio::task::spawn_blocking(move || read_flag(&p)),
    )
    .await;
    let error = match seen {
        Ok(Ok(Ok(flag))) => {
            m.set_file(flag);
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
        assert!(m.set_api(true, Some("moving racks".into())).by_api);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "on\nmoving racks\n"
        );
        let restarted = Maintenance::new(config.clone());
        assert!(restarted.state().on && restarted.state().by_api);
        assert_eq!(restarted.state().note.as_deref(), Some("moving racks"));
        assert!(!restarted.set_api(false, None).on);
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
        m.set_api(true, None);
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
        m.set_api(true, None);
        let s = m.state();
        assert!(s.on && s.by_api && !s.by_file && s.since_unix_ms.is_some());
        m.set_file(Some(None));
        assert!(m.state().reason().contains("flag file"));
        m.set_api(false, None);
        assert!(m.state().on, "the file still holds it");
        m.set_file(None);
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

    #[test]
    fn the_operators_note_comes_from_the_flag_files_first_line_or_the_post() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("maintenance");
        assert_eq!(read_flag(&flag).unwrap(), None);
        std::fs::write(&flag, "").unwrap();
        assert_eq!(read_flag(&flag).unwrap(), Some(None));
        std::fs::write(
            &flag,
            "  disk swap\u{1b}[31m, back at 15:00 \nsecond line\n",
        )
        .unwrap();
        assert_eq!(
            read_flag(&flag).unwrap(),
            Some(Some("disk swap[31m, back at 15:00".into()))
        );
        std::fs::write(&flag, "x".repeat(10_000)).unwrap();
        let long = read_flag(&flag).unwrap().flatten().unwrap();
        assert_eq!(long.chars().count(), NOTE_MAX);
        assert_eq!(
            read_flag(dir.path()).unwrap(),
            Some(None),
            "a directory: no note"
        );

        let m = with_token("t");
        m.set_file(Some(Some("from the file".into())));
        assert_eq!(m.state().note.as_deref(), Some("from the file"));
        m.set_api(true, Some("from the api\nignored".into()));
        let s = m.state();
        assert_eq!(s.note.as_deref(), Some("from the file; from the api"));
        assert!(
            s.reason().ends_with(": from the file; from the api"),
            "{}",
            s.reason()
        );
        m.set_file(None);
        assert_eq!(m.state().note.as_deref(), Some("from the api"));
        m.set_api(false, None);
        let s = m.state();
        assert!(!s.on && s.note.is_none() && s.reason() == "off");
    }
}
