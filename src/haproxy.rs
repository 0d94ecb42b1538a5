//! The optional push to HAProxy's runtime API (`[haproxy]`): when the node's stance changes,
//! rolecall tells every configured HAProxy at once, so HAProxy reacts in milliseconds instead
//! of at its next `agent-inter`. The agent check stays the source of truth: it says the same at
//! every poll, and a push that fails is only logged (once per change) — the next poll repairs
//! it.
//!
//! Each word of the agent has its runtime API equivalent (HAProxy management.txt, "set
//! server"), and they set the same flags in HAProxy:
//!
//! | agent | runtime API |
//! |---|---|
//! | `drain` / `maint` | `set server B/S state drain` / `state maint` |
//! | `ready` | `set server B/S state ready` — only to undo rolecall's own drain/maint |
//! | `down` / `fail` / `stopped` | `set server B/S agent down` (the agent's health to 0: the server goes DOWN, and `on-marked-down shutdown-sessions` applies) |
//! | `up` after a `down` | `set server B/S agent up` |
//!
//! `set server … agent …` needs `agent-check` on the server line ("agent checks are not enabled
//! on this server" otherwise). The push runs in its own task, on the published snapshot and the
//! maintenance switch, with a bounded timeout per HAProxy; it never touches the check loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::{Memory, Stance, stance};
use crate::config::{AgentConfig, HaproxyConfig, OutWord, RuntimeApi, ServerRef};
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Longest runtime API answer read; the commands rolecall sends answer with a line at most.
const MAX_ANSWER: usize = 64 * 1024;
/// The stance also changes without a new snapshot (a stalled check loop turns stale): look
/// again this often.
const RECHECK: Duration = Duration::from_secs(1);

/// One runtime API change for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `set server B/S state ready|drain|maint`
    State(&'static str),
    /// `set server B/S agent up|down`
    Agent(&'static str),
}

impl Command {
    pub fn render(&self, server: &ServerRef) -> String {
        match self {
            Command::State(s) => format!("set server {server} state {s}"),
            Command::Agent(s) => format!("set server {server} agent {s}"),
        }
    }
}

/// What rolecall has set in HAProxy (through the agent or the push).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// An administrative state rolecall set (`drain`/`maint`); `Some(None)`: one it may have
    /// set before a restart, which it cannot name.
    pub admin: Option<Option<OutWord>>,
    /// Rolecall marked the server DOWN (`agent down`).
    pub down: bool,
}

impl Pushed {
    /// What rolecall may hold in HAProxy at start, from the agent's memory.
    pub fn at_start(memory: &Memory) -> Pushed {
        Pushed {
            admin: memory.held(),
            down: false,
        }
    }
}

/// The commands that take HAProxy from `pushed` to `stance`, and what is pushed then. Pure.
///
/// `ready` and `agent up` only undo what rolecall itself set, so an operator's drain survives,
/// exactly as with the agent's words.
pub fn plan(pushed: &Pushed, stance: &Stance) -> (Vec<Command>, Pushed) {
    if *stance == Stance::Hold {
        return (Vec::new(), pushed.clone());
    }
    let mut commands = Vec::new();
    let admin = stance.admin_word();
    if admin.map(Some) != pushed.admin {
        match admin {
            // The administrative words are the runtime API's state names.
            Some(word) => commands.push(Command::State(word.as_str())),
            None if pushed.admin.is_some() => commands.push(Command::State("ready")),
            None => {}
        }
    }
    let down = stance.is_down();
    if down != pushed.down {
        commands.push(Command::Agent(if down { "down" } else { "up" }));
    }
    (
        commands,
        Pushed {
            admin: admin.map(Some),
            down,
        },
    )
}

/// A runtime API failure.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("runtime api {api}: {message}")]
    Io { api: String, message: String },
    #[error("runtime api {api} did not answer within {timeout:?}")]
    Timeout { api: String, timeout: Duration },
    #[error("runtime api {api} refused {command:?}: {answer}")]
    Refused {
        api: String,
        command: String,
        answer: String,
    },
}

impl PushError {
    /// The failure's kind, for the metrics: `io`, `timeout` or `refused`.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Io { .. } => "io",
            PushError::Timeout { .. } => "timeout",
            PushError::Refused { .. } => "refused",
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    line: &str,
) -> std::io::Result<String> {
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\n").await?;
    // Without `prompt`, HAProxy runs the line and closes the connection.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 || out.len() >= MAX_ANSWER {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Sends one runtime API line (commands separated by `;`) and returns the answer, bounded by
/// `timeout` as a whole.
pub async fn send(api: &RuntimeApi, line: &str, timeout: Duration) -> Result<String, PushError> {
    let io = |e: std::io::Error| PushError::Io {
        api: api.to_string(),
        message: e.to_string(),
    };
    let work = async {
        match api {
            RuntimeApi::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(io)?;
                let _ = s.set_nodelay(true);
                exchange(s, line).await.map_err(io)
            }
            RuntimeApi::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
                exchange(s, line).await.map_err(io)
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PushError::Timeout {
            api: api.to_string(),
            timeout,
        })?
}

/// Sends `commands` for every server to one HAProxy. The `set server` commands answer nothing
/// on success and one line on failure ("No such server."), so any text is a refusal.
pub async fn push(
    api: &RuntimeApi,
    servers: &[ServerRef],
    commands: &[Command],
    timeout: Duration,
) -> Result<(), PushError> {
    let rendered: Vec<String> = servers
        .iter()
        .flat_map(|s| commands.iter().map(move |c| c.render(s)))
        .collect();
    let line = rendered.join("; ");
    let answer = send(api, &line, timeout).await?;
    let answer = answer.trim();
    if answer.is_empty() {
        Ok(())
    } else {
        Err(PushError::Refused {
            api: api.to_string(),
            command: line,
            answer: answer.lines().collect::<Vec<_>>().join(" / "),
        })
    }
}

/// Pushes every change of the node's stance until `shutdown`.
pub async fn run(
    cfg: HaproxyConfig,
    agent: AgentConfig,
    mut rx: watch::Receiver<Arc<Snapshot>>,
    maintenance: Arc<Maintenance>,
    memory: Arc<Memory>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut pushed = Pushed::at_start(&memory);
    let mut maint_rx = maintenance.subscribe();
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = rx.borrow_and_update().clone();
        let maint = maint_rx.borrow_and_update().clone();
        let now = crate::runclock::now();
        let s = stance(&snapshot.at(now), snapshot.checked, maint.on, &agent);
        let (commands, next) = plan(&pushed, &s);
        if !commands.is_empty() {
            memory.tell(&s, now);
            let started = Instant::now();
            let results = join_all(
                cfg.runtime_api
                    .iter()
                    .map(|api| push(api, &cfg.servers, &commands, cfg.timeout)),
            )
            .await;
            let took_ms = started.elapsed().as_secs_f64() * 1000.0;
            for (api, r) in cfg.runtime_api.iter().zip(results) {
                let api_name = api.to_string();
                metrics.haproxy_push(&api_name, r.as_ref().err().map(PushError::reason));
                match r {
                    Ok(()) => tracing::info!(
                        api = %api,
                        stance = ?s,
                        commands = ?commands,
                        took_ms,
                        "pushed to haproxy"
                    ),
                    // Once per change and HAProxy: the agent repairs it at its next poll.
                    Err(e) => tracing::warn!(
                        error = %e,
                        stance = ?s,
                        "haproxy push failed; the agent check will tell it at its next poll"
                    ),
                }
            }
        }
        pushed = next;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            r = maint_rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(w: &str) -> Stance {
        Stance::Out(OutWord::parse(w).unwrap())
    }

    /// `Some("?")`: an administrative state rolecall cannot name.
    fn pushed(admin: Option<&str>, down: bool) -> Pushed {
        Pushed {
            admin: admin.map(OutWord::parse),
            down,
        }
    }

    #[test]
    fn each_agent_word_has_its_runtime_api_command() {
        let none = Pushed::default();
        let cases: &[(&Pushed, Stance, &[Command])] = &[
            (&none, Stance::In, &[]),
            (&none, Stance::Hold, &[]),
            (&none, out("drain"), &[Command::State("drain")]),
            (&none, Stance::Maint, &[Command::State("maint")]),
            (&none, out("down"), &[Command::Agent("down")]),
            (&none, out("fail"), &[Command::Agent("down")]),
            (&none, out("stopped"), &[Command::Agent("down")]),
            (
                &pushed(Some("drain"), false),
                Stance::In,
                &[Command::State("ready")],
            ),
            (
                &pushed(Some("?"), false),
                Stance::In,
                &[Command::State("ready")],
            ),
            (&pushed(None, true), Stance::In, &[Command::Agent("up")]),
            (
                &pushed(Some("maint"), false),
                out("drain"),
                &[Command::State("drain")],
            ),
            (
                &pushed(Some("maint"), false),
                out("down"),
                &[Command::State("ready"), Command::Agent("down")],
            ),
            (
                &pushed(None, true),
                Stance::Maint,
                &[Command::State("maint"), Command::Agent("up")],
            ),
            (&pushed(Some("drain"), false), out("drain"), &[]),
            (&pushed(Some("drain"), false), Stance::Hold, &[]),
        ];
        for (from, to, expect) in cases {
            let (commands, _) = plan(from, to);
            assert_eq!(&commands, expect, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn ready_is_never_pushed_for_a_drain_rolecall_did_not_set() {
        let (commands, next) = plan(&Pushed::default(), &Stance::In);
        assert!(commands.is_empty());
        assert_eq!(next, Pushed::default());
        // After rolecall's own drain and its undo, nothing more.
        let (_, p) = plan(&Pushed::default(), &out("drain"));
        let (c, p) = plan(&p, &Stance::In);
        assert_eq!(c, vec![Command::State("ready")]);
        assert!(plan(&p, &Stance::In).0.is_empty());
    }

    #[test]
    fn commands_render_as_haproxy_reads_them() {
        let s = ServerRef::parse("centrifugo/node1").unwrap();
        assert_eq!(
            Command::State("drain").render(&s),
            "set server centrifugo/node1 state drain"
        );
        assert_eq!(
            Command::Agent("up").render(&s),
            "set server centrifugo/node1 agent up"
        );
    }
}
