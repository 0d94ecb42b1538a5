//! What rolecall last told HAProxy through the agent, so that it sends `ready` only to undo
//! an administrative state (`drain`, `maint`) it set itself, never an operator's; and the
//! `[agent] state_file` that keeps this across a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::OutWord;

use super::{READY_WINDOW, Stance};

/// What rolecall last told HAProxy, to decide when `ready` is due: only to undo an
/// administrative state (`drain`, `maint`) that rolecall itself set, never an operator's.
///
/// With a state file (by default in `[node] state_dir`), "rolecall holds drain/maint" survives
/// a restart: a restarted rolecall that finds the file releases its own drain once the node is
/// healthy, and one that does not find it leaves any drain alone. Without one (`state_dir =
/// ""`, or a directory rolecall cannot write), a restarted rolecall cannot prove a drain is
/// its own and leaves every drain alone: the safe side; it says at start how to lift one.
#[derive(Debug)]
pub struct Memory {
    held: Mutex<Held>,
    state_file: Option<PathBuf>,
    /// What the state file should say (the held word), written by [`persist`].
    persist_tx: watch::Sender<Option<OutWord>>,
}

#[derive(Debug, Default)]
struct Held {
    /// When rolecall last answered with an administrative word that takes the node out.
    last_out: Option<Instant>,
    /// That word; `None` when unknown (a start without a state file).
    word: Option<OutWord>,
}

impl Memory {
    /// Loads the memory at start (`now`): from `state_file`. Without one, or with one rolecall
    /// cannot write, it holds nothing it could prove (module docs), and says so.
    pub fn new(state_file: Option<PathBuf>, now: Instant) -> Memory {
        const LIFT: &str = "a drain or maint HAProxy holds from before this start is left alone; lift one by hand with `set server <backend>/<server> state ready` on HAProxy's runtime API";
        let held = match &state_file {
            None => {
                tracing::warn!("no state file (node.state_dir = \"\"): {LIFT}");
                Held::default()
            }
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Held {
                    last_out: Some(now),
                    word: OutWord::parse(text.trim()).filter(|w| w.is_admin()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Err(e) = writable_dir(path) {
                        tracing::warn!(file = %path.display(), error = %e, "the state file cannot be written: {LIFT}");
                    }
                    Held::default()
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the state file cannot be read: {LIFT}");
                    Held::default()
                }
            },
        };
        let initial = held.word;
        Memory {
            held: Mutex::new(held),
            state_file,
            persist_tx: watch::channel(initial).0,
        }
    }

    /// Records that rolecall tells HAProxy `stance` at `now`; returns whether `ready` is due:
    /// within [`READY_WINDOW`] of rolecall's last administrative out word. After the window
    /// the memory (and the state file) is cleared, so a later drain is the operator's.
    pub fn tell(&self, stance: &Stance, now: Instant) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(word) = stance.admin_word() {
            held.last_out = Some(now);
            held.word = Some(word);
            self.persist_tx
                .send_if_modified(|w| replace_if_different(w, Some(word)));
            return false;
        }
        if *stance == Stance::Hold {
            // Whatever rolecall held stays held: its `ready` window starts again when it can
            // tell again.
            if held.last_out.is_some() {
                held.last_out = Some(now);
            }
            return false;
        }
        let due = held
            .last_out
            .is_some_and(|t| now.saturating_duration_since(t) < READY_WINDOW);
        if !due && held.last_out.is_some() {
            *held = Held::default();
            self.persist_tx
                .send_if_modified(|w| replace_if_different(w, None));
        }
        due
    }

    /// The administrative word rolecall left in HAProxy, as far as it can prove: `Some(word)`
    /// (`word` is `None` for a state file that names no word it knows), `None` when none.
    pub fn held(&self) -> Option<Option<OutWord>> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.last_out.map(|_| held.word)
    }
}

/// Makes sure the state file's directory exists (creating it, mode 0700) and takes a file.
fn writable_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let probe = path.with_extension("probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

fn replace_if_different(slot: &mut Option<OutWord>, value: Option<OutWord>) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}

/// Keeps `[agent] state_file` in step with the memory until `shutdown`: the word rolecall
/// holds (`drain`/`maint`) while it holds one, no file otherwise. Written off the probe path,
/// atomically (a temp file renamed over it).
pub async fn persist(memory: Arc<Memory>, shutdown: CancellationToken) {
    let Some(path) = memory.state_file.clone() else {
        return;
    };
    let mut rx = memory.persist_tx.subscribe();
    rx.mark_changed();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        let word = *rx.borrow_and_update();
        let p = path.clone();
        let result = tokio::task::spawn_blocking(move || write_state(&p, word)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the agent state file")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the agent state file")
            }
        }
    }
}

fn write_state(path: &std::path::Path, word: Option<OutWord>) -> std::io::Result<()> {
    match word {
        Some(w) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{w}\n"))?;
            std::fs::rename(&tmp, path)
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::tests::{cfg, eff};
    use crate::agent::{line, stance};
    use crate::verdict::Verdict;

    #[test]
    fn maintenance_answers_maint_and_its_end_answers_ready() {
        let t0 = Instant::now();
        let memory = Memory::new(Some("/nonexistent/rolecall-state".into()), t0);
        let ok = eff(Verdict::Ok, true);
        assert!(
            !memory.tell(&Stance::In, t0),
            "no drain of rolecall's to undo"
        );
        let m = stance(&ok, true, true, &cfg("drain"));
        assert!(!memory.tell(&m, t0));
        assert!(
            line(&m, &ok, "flag file /f exists", false)
                .starts_with("maint up #maintenance: flag file /f exists; verdict ok")
        );
        let t1 = t0 + Duration::from_secs(5);
        assert!(memory.tell(&Stance::In, t1));
        assert_eq!(line(&Stance::In, &ok, "", true), "up ready\n");
        let later = t1 + READY_WINDOW;
        assert!(!memory.tell(&Stance::In, later), "the window is over");
        assert!(memory.held().is_none());
        assert!(!memory.tell(&Stance::In, t0), "and forgotten");
    }

    #[test]
    fn a_down_answer_does_not_make_ready_due_but_lifts_rolecalls_own_maint() {
        let t0 = Instant::now();
        let memory = Memory::new(Some("/nonexistent/rolecall-state".into()), t0);
        let down = Stance::Out(OutWord::Down);
        assert!(!memory.tell(&down, t0));
        assert!(!memory.tell(&Stance::In, t0 + Duration::from_secs(1)));
        // Maintenance ends while the node is stuck and answered with `down`: HAProxy still
        // holds rolecall's maint, which only `ready` lifts.
        assert!(!memory.tell(&Stance::Maint, t0));
        assert!(memory.tell(&down, t0 + Duration::from_secs(1)));
        let stuck = eff(Verdict::StuckOnReplica, false);
        assert!(line(&down, &stuck, "", true).starts_with("down ready #stuck_on_replica"));
    }

    #[test]
    fn a_restart_releases_only_a_drain_the_state_file_says_is_rolecalls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.state");
        let t0 = Instant::now();
        // No file: the drain HAProxy may hold is an operator's.
        let m = Memory::new(Some(path.clone()), t0);
        assert!(m.held().is_none());
        assert!(!m.tell(&Stance::In, t0));
        // The file names rolecall's drain: `ready` once healthy.
        std::fs::write(&path, "drain\n").unwrap();
        let m = Memory::new(Some(path.clone()), t0);
        assert_eq!(m.held(), Some(Some(OutWord::Drain)));
        assert!(m.tell(&Stance::In, t0 + Duration::from_secs(1)));
        // Without a state file rolecall cannot prove a drain is its own, and lifts none.
        let m = Memory::new(None, t0);
        assert!(m.held().is_none());
        assert!(!m.tell(&Stance::In, t0 + Duration::from_secs(1)));
        // Nor with one in a directory it cannot create.
        let m = Memory::new(Some("/proc/rolecall-no/agent.state".into()), t0);
        assert!(m.held().is_none());
        assert!(!m.tell(&Stance::In, t0 + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn the_state_file_follows_what_rolecall_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.state");
        let t0 = Instant::now();
        let memory = Arc::new(Memory::new(Some(path.clone()), t0));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(persist(memory.clone(), shutdown.clone()));
        let wait = |want: Option<&'static str>| {
            let path = path.clone();
            async move {
                for _ in 0..400 {
                    let now = std::fs::read_to_string(&path).ok();
                    if now.as_deref().map(str::trim) == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("state file never became {want:?}");
            }
        };
        memory.tell(&Stance::Out(OutWord::Drain), t0);
        wait(Some("drain")).await;
        memory.tell(&Stance::Maint, t0);
        wait(Some("maint")).await;
        memory.tell(&Stance::In, t0 + READY_WINDOW + Duration::from_secs(1));
        wait(None).await;
        shutdown.cancel();
        task.await.unwrap();
    }
}
