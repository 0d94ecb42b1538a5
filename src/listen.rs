//! Accepting connections for the agent and HTTP servers: at most a fixed number at once (a
//! flood of idle clients waits for a slot instead of exhausting file descriptors), a short
//! back-off when `accept` fails (EMFILE and the like) instead of spinning, and an end on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection with the slot it holds until dropped, or `None` on shutdown.
/// `what` names the server in the log line of a failed `accept`.
pub async fn accept(
    what: &'static str,
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = slots.clone().acquire_owned() => p.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, _)) => return Some((stream, permit)),
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
    async fn connections_beyond_the_slots_wait_and_shutdown_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let shutdown = CancellationToken::new();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (_s1, permit) = accept("test", &listener, &slots, &shutdown).await.unwrap();
        // The only slot is taken: the second connection waits.
        let second = tokio::time::timeout(
            Duration::from_millis(100),
            accept("test", &listener, &slots, &shutdown),
        )
        .await;
        assert!(second.is_err(), "no slot, no accept");
        drop(permit);
        assert!(accept("test", &listener, &slots, &shutdown).await.is_some());
        shutdown.cancel();
        assert!(accept("test", &listener, &slots, &shutdown).await.is_none());
    }
}
