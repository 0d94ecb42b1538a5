//! [`ReadyWatch`]: a thread polling a rolecall's `/readyz` through a failover, for the tests
//! that must show a node never left rotation. Started inside a network namespace (e.g. from
//! `PodNetns::run`), the thread stays there.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::rolecall::http_request;

/// Time between polls, and the most polls a watcher makes (bounds its life: 200 s).
const WATCH_EVERY: Duration = Duration::from_millis(50);
const WATCH_MAX_POLLS: usize = 4_000;

/// Polls `/readyz` every 50 ms (bounded in count) and remembers every answer other than 200
/// seen after the first 200, with the `/status` of that moment.
pub struct ReadyWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<WatchLog>>,
    thread: Option<JoinHandle<()>>,
}

/// What a [`ReadyWatch`] saw.
#[derive(Default)]
pub struct WatchLog {
    pub polls: usize,
    pub ready_at: Option<Instant>,
    /// (when, answer, /status then) for each non-200 answer after the first 200.
    pub out: Vec<(Instant, String, String)>,
}

impl WatchLog {
    /// Asserts that `who` became ready, that `/readyz` was polled throughout (over 100 polls),
    /// and that it never answered anything but 200 after the first 200; `report` is added to
    /// the failure message.
    pub fn assert_never_out(&self, who: &str, report: &str) {
        assert!(self.ready_at.is_some(), "{who} became ready\n{report}");
        assert!(
            self.polls > 100,
            "/readyz was polled throughout ({} polls)",
            self.polls
        );
        if let Some((at, what, status)) = self.out.first() {
            panic!(
                "{who} left rotation {:?} after it became ready: /readyz {what} ({} such answers)\n--- /status then ---\n{status}\n{report}",
                at.saturating_duration_since(self.ready_at.unwrap()),
                self.out.len(),
            );
        }
    }
}

impl ReadyWatch {
    /// Starts polling the rolecall whose HTTP server is at `addr`.
    pub fn start(addr: SocketAddr) -> ReadyWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(WatchLog::default()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for _ in 0..WATCH_MAX_POLLS {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let answer = http_request(addr, "GET", "/readyz").ok();
                let mut log = seen2.lock().unwrap();
                log.polls += 1;
                match answer {
                    Some(r) if r.status == 200 => {
                        log.ready_at.get_or_insert_with(Instant::now);
                    }
                    other if log.ready_at.is_some() => {
                        let status = http_request(addr, "GET", "/status")
                            .map(|r| r.body)
                            .unwrap_or_default();
                        let what = match other {
                            Some(r) => format!("{} {}", r.status, r.body.trim()),
                            None => "no answer".to_owned(),
                        };
                        log.out.push((Instant::now(), what, status));
                    }
                    _ => {}
                }
                drop(log);
                std::thread::sleep(WATCH_EVERY);
            }
        });
        ReadyWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it saw.
    pub fn finish(mut self) -> WatchLog {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the /readyz watcher thread panicked");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
