//! `rolecall maint on [--reason TEXT] | off | status`: the operator's maintenance switch from
//! the command line, through what the configuration has (see `maintenance`).
//!
//! `on` writes the flag file when `[maintenance] file` is configured (it needs no running
//! daemon and no token, and survives restarts), else calls `POST /maintenance` with the token
//! of `[maintenance] token_file`; `--reason` is the file's first line or the `POST`'s body.
//! `off` ends every switch configured: it removes the flag file and, with a token, calls
//! `DELETE /maintenance` (a switch left on through the endpoint would keep the node out).
//! Then each waits a moment for the daemon to show the change and prints its state.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use super::client::{EX_USAGE, Endpoint, UNKNOWN, fetch_status, now_ms, request};
use super::text;
use super::view::Status;
use crate::config::Config;
use crate::maintenance::clean_note;

/// How long `on`/`off` waits for the daemon to show the change (it looks at the flag file
/// every 250 ms).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
const SETTLE_POLL: Duration = Duration::from_millis(100);

pub enum MaintAction {
    On { reason: Option<String> },
    Off,
    Status,
}

/// The switches a configuration has, and where the daemon answers.
struct Switches {
    file: Option<std::path::PathBuf>,
    token: Option<String>,
    http: Option<Endpoint>,
}

/// Runs `action` with the configuration at `path`; returns the exit code: 0 done (for
/// `status`: the daemon answered), 1 failed, 3 the daemon did not answer (`status`), 64 the
/// configuration cannot be loaded or configures no switch.
pub async fn maint(path: &Path, action: MaintAction) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rolecall: {e}");
            return EX_USAGE;
        }
    };
    let sw = Switches {
        file: config.maintenance.file.clone(),
        token: config
            .maintenance
            .token
            .as_ref()
            .map(|t| t.expose().to_string()),
        http: config.http.as_ref().map(|h| Endpoint::listen(h.listen)),
    };
    if sw.file.is_none() && sw.token.is_none() {
        eprintln!(
            "rolecall: {}: neither [maintenance] file nor [maintenance] token_file is configured; \
             rolecall maint needs one of them",
            path.display()
        );
        return EX_USAGE;
    }
    match action {
        MaintAction::Status => show(&sw).await,
        MaintAction::On { reason } => on(&sw, reason).await,
        MaintAction::Off => off(&sw).await,
    }
}

async fn on(sw: &Switches, reason: Option<String>) -> u8 {
    let note = reason.as_deref().and_then(clean_note);
    let done = match (&sw.file, &sw.token, &sw.http) {
        (Some(file), _, _) => match write_flag(file, note.as_deref()) {
            Ok(()) => format!("flag file {} written", file.display()),
            Err(e) => {
                eprintln!(
                    "rolecall: cannot write the flag file {}: {e}",
                    file.display()
                );
                return 1;
            }
        },
        (None, Some(token), Some(ep)) => match call(ep, Method::POST, token, note).await {
            Ok(()) => "switched on through POST /maintenance".to_string(),
            Err(e) => {
                eprintln!("rolecall: {e}");
                return 1;
            }
        },
        // A token without [http] does not validate; said rather than assumed.
        _ => {
            eprintln!("rolecall: no flag file, and no [http] listener for POST /maintenance");
            return EX_USAGE;
        }
    };
    settle(sw, true, &done).await
}

async fn off(sw: &Switches) -> u8 {
    let mut done = Vec::new();
    if let Some(file) = &sw.file {
        match std::fs::remove_file(file) {
            Ok(()) => done.push(format!("flag file {} removed", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.push(format!("no flag file {}", file.display()))
            }
            Err(e) => {
                eprintln!(
                    "rolecall: cannot remove the flag file {}: {e}",
                    file.display()
                );
                return 1;
            }
        }
    }
    if let (Some(token), Some(ep)) = (&sw.token, &sw.http) {
        if let Err(e) = call(ep, Method::DELETE, token, None).await {
            eprintln!("rolecall: the switch of /maintenance is unchanged: {e}");
            return 1;
        }
        done.push("switched off through DELETE /maintenance".to_string());
    }
    settle(sw, false, &done.join("; ")).await
}

/// `POST` or `DELETE /maintenance` with the token (and the note as the body).
async fn call(
    ep: &Endpoint,
    method: Method,
    token: &str,
    note: Option<String>,
) -> Result<(), String> {
    let url = ep.url("/maintenance");
    let (status, body) = request(ep, method, "/maintenance", Some(token), note).await?;
    match status {
        StatusCode::OK => Ok(()),
        StatusCode::UNAUTHORIZED => Err(format!(
            "{url} refused the token of [maintenance] token_file (401): the daemon runs with another token"
        )),
        StatusCode::NOT_FOUND => Err(format!(
            "{url} does not exist (404): the running daemon has no [maintenance] token_file (reload it)"
        )),
        other => Err(format!(
            "{url} answered {other}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}

/// Waits for the daemon to show maintenance `on` (or off), then prints its state; `done` says
/// what was changed. A daemon that does not answer takes the flag file when it runs: that is
/// still done.
async fn settle(sw: &Switches, on: bool, done: &str) -> u8 {
    let Some(ep) = &sw.http else {
        println!("{done} (no [http] listener to ask the daemon)");
        return 0;
    };
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let status = fetch_status(ep).await.and_then(Status::from_json);
        match status {
            Ok(s) if s.maintenance.on == on => {
                println!("{done}; {}", text::maintenance(&s, now_ms()));
                return 0;
            }
            Ok(s) if Instant::now() >= deadline => {
                println!("{done}; but still {}", text::maintenance(&s, now_ms()));
                return 1;
            }
            Err(e) => {
                let later = if sw.file.is_some() {
                    ": the daemon takes the flag file when it runs"
                } else {
                    ""
                };
                println!("{done}; {e}{later}");
                return 0;
            }
            Ok(_) => tokio::time::sleep(SETTLE_POLL).await,
        }
    }
}

/// `maint status`: the daemon's maintenance state, or the flag file's when the daemon cannot
/// be asked.
async fn show(sw: &Switches) -> u8 {
    let flag = || {
        sw.file.as_ref().map(|f| {
            let exists = f.try_exists().unwrap_or(false);
            format!(
                "flag file {} {}",
                f.display(),
                if exists { "exists" } else { "does not exist" }
            )
        })
    };
    let Some(ep) = &sw.http else {
        println!(
            "{} (no [http] listener to ask the daemon)",
            flag().unwrap_or_default()
        );
        return 0;
    };
    match fetch_status(ep).await.and_then(Status::from_json) {
        Ok(s) => {
            println!("{}", text::maintenance(&s, now_ms()));
            0
        }
        Err(e) => {
            println!("UNKNOWN - {e}");
            if let Some(f) = flag() {
                println!("{f}");
            }
            UNKNOWN
        }
    }
}

/// Writes the flag file atomically (a temp file renamed over it), its first line the note.
fn write_flag(path: &Path, note: Option<&str>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{}\n", note.unwrap_or_default()))?;
    std::fs::rename(&tmp, path)
}
