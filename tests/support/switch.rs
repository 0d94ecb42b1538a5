//! Timestamps of Sentinel events heard on every sentinel of a topology — `+switch-master` by
//! default — so tests and benchmarks can measure from the moment a failover is announced, and
//! see who voted for whom.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One event: when it was heard, from which sentinel (index in the list given to `start`), on
/// which channel, with which payload.
#[derive(Debug, Clone)]
pub struct Heard {
    pub at: Instant,
    pub sentinel: usize,
    pub channel: String,
    pub payload: String,
}

/// Listens to Sentinel event channels on each given sentinel, a background thread per sentinel.
pub struct SwitchWatcher {
    heard: Arc<Mutex<Vec<Heard>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const SWITCH: &str = "+switch-master";

impl SwitchWatcher {
    /// `+switch-master` only.
    pub fn start(sentinels: &[SocketAddr]) -> SwitchWatcher {
        SwitchWatcher::start_channels(sentinels, &[SWITCH])
    }

    /// The given channels. A sentinel that stops answering (stopped by the test) is waited for:
    /// its thread keeps reading with a short timeout until the watcher is dropped.
    pub fn start_channels(sentinels: &[SocketAddr], channels: &[&str]) -> SwitchWatcher {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let mut ready = Vec::new();
        let threads = sentinels
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                let (heard, stop, addr, channels) =
                    (heard.clone(), stop.clone(), *addr, channels.clone());
                let (tx, rx) = std::sync::mpsc::channel();
                ready.push(rx);
                std::thread::spawn(move || {
                    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
                    let mut conn = client
                        .get_connection_with_timeout(Duration::from_secs(2))
                        .unwrap_or_else(|e| panic!("connect to sentinel {addr}: {e}"));
                    conn.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let mut pubsub = conn.as_pubsub();
                    for c in &channels {
                        pubsub.subscribe(c).unwrap();
                    }
                    let _ = tx.send(());
                    while !stop.load(Ordering::SeqCst) {
                        match pubsub.get_message() {
                            Ok(msg) => {
                                let payload: String = msg.get_payload().unwrap_or_default();
                                heard.lock().unwrap().push(Heard {
                                    at: Instant::now(),
                                    sentinel: index,
                                    channel: msg.get_channel_name().to_string(),
                                    payload,
                                });
                            }
                            Err(e) if e.is_timeout() => {}
                            Err(e) => panic!("sentinel {addr} subscription: {e}"),
                        }
                    }
                })
            })
            .collect();
        for rx in ready {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("the sentinel event subscriptions to start");
        }
        SwitchWatcher {
            heard,
            stop,
            threads,
        }
    }

    /// Every event heard so far on `channel`, in the order heard.
    pub fn events(&self, channel: &str) -> Vec<Heard> {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.channel == channel)
            .cloned()
            .collect()
    }

    /// How many `+switch-master` announcements were heard so far (each sentinel announces each
    /// switch).
    pub fn count(&self) -> usize {
        self.events(SWITCH).len()
    }

    /// The first announcement heard after the first `skip` ones, waiting up to `timeout`.
    pub fn first_after(&self, skip: usize, timeout: Duration) -> Instant {
        self.nth_after(skip, 1, timeout)
    }

    /// The `n`-th announcement (1-based) heard after the first `skip` ones: with `n` = the
    /// sentinel majority, the moment a majority names the new master.
    pub fn nth_after(&self, skip: usize, n: usize, timeout: Duration) -> Instant {
        super::wait_for(timeout, "+switch-master announcements", || {
            let mut times: Vec<Instant> = self
                .events(SWITCH)
                .iter()
                .skip(skip)
                .map(|h| h.at)
                .collect();
            times.sort();
            times.get(n - 1).copied()
        })
    }
}

impl Drop for SwitchWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
