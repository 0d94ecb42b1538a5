//! Accepting connections for the agent and HTTP servers without ever making a probe wait: each
//! server keeps at most a fixed number of connections open, and at the cap a new connection
//! **sheds the oldest** (closes it) instead of queueing behind it, so a flood of idle or slow
//! clients (10,000 held open, slowloris) cannot starve a real probe. The cap is also held below
//! the process's file-descriptor limit, with descriptors left for the check loop's Redis
//! connections, so a flood on one port cannot starve the other port or the checks. A failed
//! `accept` (EMFILE and the like) backs off briefly instead of spinning.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Descriptors kept for everything but the two servers' connections: the check loop's Redis
/// connections, event subscriptions, the runtime, files.
pub const RESERVED_FDS: u64 = 256;

/// Connections told to close that may still hold their descriptor: `accept` waits for them
/// beyond this many, so a burst cannot outrun the closing.
const CLOSING: usize = 16;

/// The open connections of one server, oldest first.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    open: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: AtomicU64,
    /// Slots not dropped yet: open ones and shed ones still closing.
    live: AtomicUsize,
    dropped: Notify,
}

/// One admitted connection: `shed` is cancelled when a newer one needs its place; dropping the
/// slot gives the place back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub shed: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(id, _)| *id != self.id);
        drop(open);
        self.slots.live.fetch_sub(1, Ordering::SeqCst);
        self.slots.dropped.notify_waiters();
    }
}

impl Slots {
    /// At most `max` open connections (see [`cap`]).
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            open: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            dropped: Notify::new(),
        })
    }

    /// Waits while too many shed connections are still closing (their descriptors not yet
    /// given back).
    async fn room(&self) {
        loop {
            let dropped = self.dropped.notified();
            if self.live.load(Ordering::SeqCst) < self.max + CLOSING {
                return;
            }
            dropped.await;
        }
    }

    /// Admits a connection, shedding the oldest ones beyond the cap.
    fn admit(self: &Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let shed = CancellationToken::new();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while open.len() >= self.max {
            match open.pop_front() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        open.push_back((id, shed.clone()));
        self.live.fetch_add(1, Ordering::SeqCst);
        Slot {
            slots: self.clone(),
            id,
            shed,
        }
    }
}

/// The number of connections a server may keep: `max`, or less where the process's
/// file-descriptor limit (`RLIMIT_NOFILE`, raised to its hard limit at start by [`raise_fd_limit`])
/// would not leave [`RESERVED_FDS`] for the rest with both servers full.
pub fn cap(max: usize) -> usize {
    let limit = fd_limit().0;
    let per_server = limit.saturating_sub(RESERVED_FDS) / 2;
    // Never fewer than 16 (or `max`), however low the limit: probes must still get through.
    max.min(usize::try_from(per_server).unwrap_or(usize::MAX))
        .max(16.min(max))
}

/// The soft and hard `RLIMIT_NOFILE`.
fn fd_limit() -> (u64, u64) {
    rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024))
}

/// Raises the soft file-descriptor limit to the hard one (systemd gives 1,024 soft and a far
/// higher hard limit by default): rolecall's connections are capped below it anyway ([`cap`]).
/// Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| fd_limit().0)
}

/// The next connection with its slot (never waiting for one: the oldest is shed), or `None`
/// on shutdown. `what` names the server in the log line of a failed `accept`.
pub async fn accept(
    what: &'static str,
    listener: &TcpListener,
    slots: &Arc<Slots>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, Slot)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = slots.room() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, _)) => return Some((stream, slots.admit())),
                Err(e) => {
                    tracing::warn!(server = what, error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_a_new_connection_sheds_the_oldest_and_shutdown_ends_the_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Slots::new(2);
        let shutdown = CancellationToken::new();
        let mut held = Vec::new();
        for _ in 0..3 {
            let _client = TcpStream::connect(addr).await.unwrap();
            held.push(_client);
        }
        let (_s1, first) = accept("test", &listener, &slots, &shutdown).await.unwrap();
        let (_s2, second) = accept("test", &listener, &slots, &shutdown).await.unwrap();
        assert!(!first.shed.is_cancelled() && !second.shed.is_cancelled());
        // The third is admitted at once, and the oldest is told to go.
        let (_s3, third) = tokio::time::timeout(
            Duration::from_millis(500),
            accept("test", &listener, &slots, &shutdown),
        )
        .await
        .expect("never waits for a slot")
        .unwrap();
        assert!(first.shed.is_cancelled());
        assert!(!second.shed.is_cancelled() && !third.shed.is_cancelled());
        // A closed connection gives its place back: no one else is shed.
        drop(second);
        let _c = TcpStream::connect(addr).await.unwrap();
        let (_s4, fourth) = accept("test", &listener, &slots, &shutdown).await.unwrap();
        assert!(!third.shed.is_cancelled() && !fourth.shed.is_cancelled());
        shutdown.cancel();
        assert!(accept("test", &listener, &slots, &shutdown).await.is_none());
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_checks() {
        let limit = fd_limit().0;
        let c = cap(100_000);
        assert!(
            c as u64 <= limit.saturating_sub(RESERVED_FDS) / 2 || c == 16,
            "{c} of {limit}"
        );
        if limit >= 2 * 8 + RESERVED_FDS {
            assert_eq!(cap(8), 8, "a cap below the limit stands");
        }
    }
}
