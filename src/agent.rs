//! The HAProxy agent-check server.
//!
//! Protocol (HAProxy configuration.txt, "agent-check"): HAProxy connects, sends the
//! `agent-send` string if one is configured, and reads one line; the agent answers and closes.
//! rolecall reads at most one short line (bounded in length and time) that may name a group,
//! answers from the published snapshot — never waiting on Redis — and closes.
//!
//! What the words do in HAProxy: `drain`, `maint` (administrative) and `down`/`fail`/
//! `stopped` (operational) are sticky: HAProxy keeps them until the agent says otherwise, and
//! keeps the last state when it cannot reach the agent at all. `ready` lifts an administrative
//! `drain`/`maint` — whoever set it, an operator included — so rolecall sends `ready` only to
//! undo its own drain: beside `up` for a short window after it last took the node out.
//! A `#description` is shown by HAProxy with the health word it accompanies.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::snapshot::{Effective, Snapshot};

/// Longest `agent-send` line rolecall reads; longer input is junk.
const MAX_LINE: usize = 128;
/// How long rolecall waits for an `agent-send` line before answering for the whole node.
/// HAProxy sends it right after connecting; without `agent-send` the answer waits this long,
/// so the shipped HAProxy configuration sends `agent-send "\n"`.
const LINE_WAIT: Duration = Duration::from_millis(100);
/// How long the reply may take to write (a client that does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many agent connections at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 512;
/// After rolecall took the node out, it adds `ready` to `up` for this long, so every HAProxy
/// polling it (an active/passive pair, say) sees its own drain lifted.
pub const READY_WINDOW: Duration = Duration::from_secs(30);

/// What rolecall last told HAProxy, to decide when `ready` is due.
#[derive(Debug, Default)]
pub struct Memory {
    /// When rolecall last answered with a word that takes the node out.
    last_out: Mutex<Option<Instant>>,
}

/// The reply line (with its `\n`) for a node or group in state `e`.
///
/// `ready` accompanies `up` while `now` is within [`READY_WINDOW`] of rolecall's last out
/// reply, and never otherwise, so a drain set by an operator survives.
pub fn reply(e: &Effective, cfg: &AgentConfig, last_out: Option<Instant>, now: Instant) -> String {
    if e.in_rotation {
        let undo = last_out.is_some_and(|t| now.saturating_duration_since(t) < READY_WINDOW);
        let word = if undo { "up ready" } else { "up" };
        // In rotation but not `ok` (a grace period, degraded, unknown): say why beside `up`,
        // so the state shows in HAProxy's logs and on the agent port at once.
        return if e.verdict == crate::verdict::Verdict::Ok {
            format!("{word}\n")
        } else {
            format!(
                "{word} #{}\n",
                sanitize(&format!("{}: {}", e.verdict, e.reason))
            )
        };
    }
    let word = cfg
        .out_reply
        .get(&e.verdict)
        .map(String::as_str)
        .unwrap_or("drain");
    let description = sanitize(&format!("{}: {}", e.verdict, e.reason));
    match word {
        // Health words carry the description themselves.
        "down" | "fail" | "stopped" => format!("{word} #{description}\n"),
        // Administrative words: the description goes with `up`, which keeps the agent's health
        // check passing (the node process itself is fine; only its traffic must move).
        _ => format!("{word} up #{description}\n"),
    }
}

/// One line of printable ASCII: HAProxy reads up to the first CR/LF, and a description is
/// shown in logs and stats.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    if out.len() < s.len() && s.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// Parses the optional `agent-send` line: a group name, or empty for the whole node.
pub fn parse_request(buf: &[u8]) -> Option<String> {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() {
        None
    } else {
        Some(line.to_string())
    }
}

async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    let deadline = tokio::time::Instant::now() + LINE_WAIT;
    let mut chunk = [0u8; MAX_LINE];
    while buf.len() < MAX_LINE && !buf.contains(&b'\n') {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n.min(MAX_LINE - buf.len())]),
        }
    }
    buf
}

async fn serve_one(
    mut stream: TcpStream,
    rx: watch::Receiver<Arc<Snapshot>>,
    cfg: Arc<AgentConfig>,
    memory: Arc<Memory>,
) {
    let request = read_request(&mut stream).await;
    let snapshot = rx.borrow().clone();
    let now = Instant::now();
    let selected = parse_request(&request).and_then(|name| snapshot.group_at(&name, now));
    let effective = selected.unwrap_or_else(|| snapshot.at(now));
    let line = {
        let mut last = memory.last_out.lock().unwrap_or_else(|e| e.into_inner());
        let line = reply(&effective, &cfg, *last, now);
        if !effective.in_rotation {
            *last = Some(now);
        }
        line
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves agent checks on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    cfg: AgentConfig,
    shutdown: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    let memory = Arc::new(Memory::default());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "agent accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (rx, cfg, memory) = (rx.clone(), cfg.clone(), memory.clone());
        tasks.spawn(async move {
            serve_one(stream, rx, cfg, memory).await;
            drop(permit);
        });
    }
    tasks.close();
    // Each connection is bounded by LINE_WAIT + WRITE_TIMEOUT.
    let _ = tokio::time::timeout(LINE_WAIT + WRITE_TIMEOUT, tasks.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    fn cfg(out: &str) -> AgentConfig {
        let mut out_reply = std::collections::BTreeMap::new();
        for v in Verdict::ALL {
            if !v.in_rotation_by_default() {
                out_reply.insert(v, out.to_string());
            }
        }
        AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            out_reply,
        }
    }

    fn eff(verdict: Verdict, in_rotation: bool) -> Effective {
        Effective {
            verdict,
            in_rotation,
            reason: "connection 127.0.0.1:5000 -> 127.0.0.1:6379 goes to a replica".into(),
            stale: false,
        }
    }

    #[test]
    fn replies_are_one_line_of_words_haproxy_accepts() {
        let now = Instant::now();
        let ok = eff(Verdict::Ok, true);
        let stuck = eff(Verdict::StuckOnReplica, false);
        assert_eq!(reply(&ok, &cfg("drain"), None, now), "up\n");
        let r = reply(&stuck, &cfg("drain"), None, now);
        assert!(
            r.starts_with("drain up #stuck_on_replica: connection"),
            "{r}"
        );
        assert_eq!(r.matches('\n').count(), 1);
        assert!(r.ends_with('\n'));
        let r = reply(&stuck, &cfg("down"), None, now);
        assert!(r.starts_with("down #stuck_on_replica"), "{r}");
        // Degraded, unknown and a grace period within rotation stay up, saying why.
        let r = reply(&eff(Verdict::Degraded, true), &cfg("drain"), None, now);
        assert!(r.starts_with("up #degraded: "), "{r}");
        let r = reply(&eff(Verdict::StaleMaster, true), &cfg("drain"), None, now);
        assert!(r.starts_with("up #stale_master: "), "{r}");
    }

    #[test]
    fn ready_only_undoes_rolecalls_own_drain() {
        let now = Instant::now();
        let ok = eff(Verdict::Ok, true);
        assert_eq!(reply(&ok, &cfg("drain"), None, now), "up\n");
        assert_eq!(
            reply(&ok, &cfg("drain"), Some(now), now + Duration::from_secs(2)),
            "up ready\n"
        );
        assert_eq!(
            reply(
                &ok,
                &cfg("drain"),
                Some(now),
                now + READY_WINDOW + Duration::from_secs(1)
            ),
            "up\n"
        );
    }

    #[test]
    fn descriptions_cannot_break_the_line() {
        let mut e = eff(Verdict::StuckOnReplica, false);
        e.reason = "a\nb\r\u{7f}é".into();
        let r = reply(&e, &cfg("drain"), None, Instant::now());
        assert_eq!(r.matches('\n').count(), 1);
        assert!(!r.contains('\r'));
        e.reason = "x".repeat(10_000);
        assert!(reply(&e, &cfg("drain"), None, Instant::now()).len() < 300);
    }

    #[test]
    fn the_request_line_selects_a_group() {
        assert_eq!(parse_request(b"main\n"), Some("main".into()));
        assert_eq!(parse_request(b"  main \r\n"), Some("main".into()));
        assert_eq!(parse_request(b"\n"), None);
        assert_eq!(parse_request(b""), None);
        assert_eq!(parse_request(&[0xff, 0xfe, b'\n']), None);
    }
}
