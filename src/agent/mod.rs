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
//! A `#description` is shown by HAProxy with the health word it accompanies. The words for a node
//! out of rotation, and which of them are administrative, are [`OutWord`]'s (in `config`).
//!
//! HAProxy's parser, as rolecall relies on it (src/tcpcheck.c, `tcpcheck_agent_expect_reply`;
//! configuration.txt, "agent-check"): the line ends at the first CR or LF; words are separated by
//! spaces, tabs or commas, in any order, the last of each category winning; the categories are
//! health (`up`, `down`, `stopped`, `fail`), administrative (`ready`, `drain`, `maint`), a weight
//! (`N%`) and `maxconn:N`; a `#` starts a description that HAProxy only uses when a health word is
//! present. Any other word is reported as an error. An empty line changes nothing ("CHECKED: No
//! status change"), which is what rolecall answers when it has nothing to say: before its first
//! confirmed verdict, and while blind (`unknown`) out of rotation. So a restarted or blind rolecall
//! never drains a node. The agent's `drain`/`maint`/`ready` set the same flags as the runtime API's
//! `set server <b>/<s> state drain|maint|ready` (`srv_adm_set_drain` and friends in
//! include/haproxy/server.h), so an operator's drain and rolecall's cannot be told apart by
//! HAProxy: hence the [`Memory`] of what rolecall told it. Maintenance pauses the health check but
//! not the agent check (src/server.c, `srv_set_admin_flag`), so the agent can lift its own `maint`.
//!
//! rolecall never sends a weight: HAProxy computes a percentage as `initial weight * N / 100`
//! rounded down (src/server.c, `server_parse_weight_change_request`), so any percentage below
//! 100 turns a base weight of 1 into 0, which HAProxy treats as DRAIN. The shipped
//! configurations use `weight 100`, so that an operator's `set weight N%` keeps its meaning.

mod memory;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::defaults::AGENT_OUT_REPLY;
use crate::config::{AgentConfig, OutWord};
use crate::maintenance::Maintenance;
use crate::snapshot::{Effective, Snapshot};

pub use memory::{Memory, persist};

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

/// What rolecall tells HAProxy about a node (or group), before it becomes words. The agent
/// writes it as a line; the optional push to HAProxy's runtime API as commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stance {
    /// Nothing to say: no complete check yet, or blind (`unknown`) while out of rotation.
    /// An empty line, which changes nothing in HAProxy: it keeps whatever it holds, so a
    /// starting or blind rolecall never drains a node.
    Hold,
    In,
    /// Out of rotation, with the configured word ([`OutWord`]: administrative or operational).
    Out(OutWord),
    /// The operator's maintenance switch ([`crate::maintenance`]).
    Maint,
}

impl Stance {
    /// The administrative word (`drain`/`maint`) this stance sets in HAProxy, if any: sticky
    /// until a `ready`.
    pub fn admin_word(&self) -> Option<OutWord> {
        match self {
            Stance::Maint => Some(OutWord::Maint),
            Stance::Out(w) if w.is_admin() => Some(*w),
            _ => None,
        }
    }

    /// Whether this stance marks the server's operational state DOWN (`down`/`fail`/`stopped`).
    pub fn is_down(&self) -> bool {
        matches!(self, Stance::Out(w) if !w.is_admin())
    }
}

/// The stance for state `e`: maintenance first (the operator knows without Redis), then
/// nothing before the first complete check or while blind and out of rotation (`unknown`
/// before its first confirmed verdict, or holding an out state), then the verdict.
pub fn stance(e: &Effective, checked: bool, maintenance: bool, cfg: &AgentConfig) -> Stance {
    if maintenance {
        Stance::Maint
    } else if !checked {
        Stance::Hold
    } else if e.in_rotation {
        Stance::In
    } else if e.verdict == crate::verdict::Verdict::Unknown {
        Stance::Hold
    } else {
        Stance::Out(
            cfg.out_reply
                .get(&e.verdict)
                .copied()
                .unwrap_or(AGENT_OUT_REPLY),
        )
    }
}

/// The reply line (with its `\n`) for `stance`; `ready` is added when `ready_due` (see
/// [`Memory::tell`]) and the stance does not itself set an administrative state.
pub fn line(stance: &Stance, e: &Effective, maintenance_reason: &str, ready_due: bool) -> String {
    let described = || sanitize(&format!("{}: {}", e.verdict, e.reason));
    let ready = if ready_due { " ready" } else { "" };
    match stance {
        // No word and no description (HAProxy only considers one beside a health word): an
        // empty line, "no status change". `/status` says why.
        Stance::Hold => "\n".to_string(),
        Stance::In if e.verdict == crate::verdict::Verdict::Ok => format!("up{ready}\n"),
        // In rotation but not `ok` (a grace period, degraded, unknown): say why beside `up`,
        // so the state shows in HAProxy's logs and on the agent port at once.
        Stance::In => format!("up{ready} #{}\n", described()),
        // `up` beside the administrative word keeps the agent's health check passing (the node
        // process itself is fine; only its traffic must move) and carries the description.
        Stance::Maint => format!(
            "{} up #{}\n",
            OutWord::Maint,
            sanitize(&format!(
                "maintenance: {maintenance_reason}; verdict {}: {}",
                e.verdict, e.reason
            ))
        ),
        Stance::Out(w) if w.is_admin() => format!("{w} up #{}\n", described()),
        // Health words carry the description themselves; `ready` lifts a drain or maint that
        // rolecall itself left behind (a `down` does not touch the administrative state).
        Stance::Out(w) => format!("{w}{ready} #{}\n", described()),
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
    maintenance: Arc<Maintenance>,
) {
    let request = read_request(&mut stream).await;
    let snapshot = rx.borrow().clone();
    let maint = maintenance.state();
    let now = crate::runclock::now();
    let selected = parse_request(&request).and_then(|name| snapshot.group_at(&name, now));
    let effective = selected.unwrap_or_else(|| snapshot.at(now));
    let stance = stance(&effective, snapshot.checked, maint.on, &cfg);
    let due = memory.tell(&stance, now);
    let line = line(&stance, &effective, &maint.reason(), due);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves agent checks on `listener` until `shutdown`, telling `memory` what it answers.
pub async fn serve(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    cfg: AgentConfig,
    memory: Arc<Memory>,
    maintenance: Arc<Maintenance>,
    shutdown: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    let slots = crate::listen::Slots::new(crate::listen::cap(MAX_CONNECTIONS));
    let tasks = tokio_util::task::TaskTracker::new();
    while let Some((stream, slot)) =
        crate::listen::accept("agent", &listener, &slots, &shutdown).await
    {
        let (rx, cfg, memory, maintenance) =
            (rx.clone(), cfg.clone(), memory.clone(), maintenance.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = serve_one(stream, rx, cfg, memory, maintenance) => {}
                // A newer connection needed the place: this one was the oldest.
                _ = slot.shed.cancelled() => {}
            }
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
    use std::time::Instant;

    /// The reply line for a node or group in state `e` after a complete check, outside
    /// maintenance, through the memory the server keeps: `last_out` is when rolecall last took
    /// the node out (so `ready` accompanies `up` within [`READY_WINDOW`] of it, and never
    /// otherwise, so a drain set by an operator survives).
    fn reply(e: &Effective, cfg: &AgentConfig, last_out: Option<Instant>, now: Instant) -> String {
        // A memory that holds nothing yet: a start whose state file says rolecall left nothing.
        let memory = Memory::new(Some("/nonexistent/rolecall-state".into()), now);
        if let Some(t) = last_out {
            memory.tell(&Stance::Out(OutWord::Drain), t);
        }
        let s = stance(e, true, false, cfg);
        let due = memory.tell(&s, now);
        line(&s, e, "", due)
    }

    pub(super) fn cfg(out: &str) -> AgentConfig {
        let out = OutWord::parse(out).unwrap();
        let mut out_reply = std::collections::BTreeMap::new();
        for v in Verdict::ALL {
            if !v.in_rotation_by_default() {
                out_reply.insert(v, out);
            }
        }
        AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            out_reply,
            state_file: None,
        }
    }

    /// What HAProxy makes of an agent line: a model of `tcpcheck_agent_expect_reply` in
    /// HAProxy's src/tcpcheck.c (words split on space, tab and comma up to the first CR/LF;
    /// `#` starts the description; the last word of each category wins; other words are
    /// errors).
    #[derive(Debug, Default, PartialEq)]
    struct Parsed {
        health: Option<String>,
        admin: Option<String>,
        weight: Option<String>,
        maxconn: Option<String>,
        errors: Vec<String>,
        /// Only used by HAProxy beside a health word.
        description: Option<String>,
    }

    fn haproxy_parse(reply: &str) -> Option<Parsed> {
        let end = reply.find(['\r', '\n'])?;
        let line = &reply[..end];
        let (words, description) = match line.split_once('#') {
            Some((w, d)) => (w, Some(d.trim_start_matches([' ', '\t']).to_string())),
            None => (line, None),
        };
        let mut p = Parsed {
            description,
            ..Parsed::default()
        };
        for w in words.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
            let lower = w.to_ascii_lowercase();
            match lower.as_str() {
                "up" | "down" | "stopped" | "fail" => p.health = Some(lower),
                "ready" | "drain" | "maint" => p.admin = Some(lower),
                _ if w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('%') => {
                    p.weight = Some(lower)
                }
                _ if lower.starts_with("maxconn:") => p.maxconn = Some(lower),
                _ => p.errors.push(w.to_string()),
            }
        }
        Some(p)
    }

    fn states() -> Vec<(Stance, Effective)> {
        let mut out = Vec::new();
        for v in Verdict::ALL {
            for in_rotation in [true, false] {
                let e = eff(v, in_rotation);
                for word in ["drain", "down", "maint", "fail", "stopped"] {
                    out.push((stance(&e, true, false, &cfg(word)), e.clone()));
                }
                out.push((stance(&e, false, false, &cfg("drain")), e.clone()));
                out.push((stance(&e, true, true, &cfg("down")), e.clone()));
            }
        }
        out
    }

    #[test]
    fn every_reply_is_one_line_that_haproxy_parses_without_error() {
        for (s, e) in states() {
            for due in [false, true] {
                let r = line(&s, &e, "flag file /run/rolecall/maintenance exists", due);
                assert!(r.ends_with('\n') && r.matches('\n').count() == 1, "{r:?}");
                assert!(!r.contains('\r'), "{r:?}");
                let p = haproxy_parse(&r).unwrap();
                assert!(p.errors.is_empty(), "{r:?}: {p:?}");
                // Never a weight: a percentage of a small base weight rounds down to 0.
                assert!(
                    p.weight.is_none() && p.maxconn.is_none() && !r.contains('%'),
                    "{r:?}"
                );
                // A description only where HAProxy uses it: beside a health word.
                if p.description.is_some() {
                    assert!(p.health.is_some(), "{r:?}");
                }
                match &s {
                    Stance::Hold => {
                        assert_eq!((p.health, p.admin), (None, None), "changes nothing: {r:?}")
                    }
                    Stance::Maint => {
                        assert_eq!(p.admin.as_deref(), Some("maint"), "{r:?}");
                        assert_eq!(p.health.as_deref(), Some("up"), "{r:?}");
                    }
                    Stance::In => {
                        assert_eq!(p.health.as_deref(), Some("up"), "{r:?}");
                        assert_eq!(p.admin.as_deref(), due.then_some("ready"), "{r:?}");
                    }
                    Stance::Out(w) if w.is_admin() => {
                        assert_eq!(p.admin.as_deref(), Some(w.as_str()), "{r:?}");
                        assert_eq!(p.health.as_deref(), Some("up"), "{r:?}");
                    }
                    Stance::Out(w) => {
                        assert_eq!(p.health.as_deref(), Some(w.as_str()), "{r:?}");
                        assert_eq!(p.admin.as_deref(), due.then_some("ready"), "{r:?}");
                        assert!(p.description.is_some(), "{r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn before_the_first_check_and_while_blind_and_out_the_reply_changes_nothing() {
        let e = Effective {
            verdict: Verdict::Unknown,
            in_rotation: false,
            reason: "no complete check yet".into(),
            stale: false,
        };
        let s = stance(&e, false, false, &cfg("drain"));
        assert_eq!(s, Stance::Hold);
        assert_eq!(line(&s, &e, "", false), "\n");
        assert_eq!(stance(&e, false, true, &cfg("drain")), Stance::Maint);
        // Blind while out of rotation (before the first confirmed verdict, or holding an out
        // state): still nothing that changes HAProxy.
        assert_eq!(stance(&e, true, false, &cfg("drain")), Stance::Hold);
        // Blind and failed open: in.
        let open = Effective {
            in_rotation: true,
            ..e.clone()
        };
        assert_eq!(stance(&open, true, false, &cfg("drain")), Stance::In);
    }

    pub(super) fn eff(verdict: Verdict, in_rotation: bool) -> Effective {
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
