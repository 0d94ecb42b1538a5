//! Timestamps of Sentinel's `+switch-master` announcements, heard on every sentinel of a
//! topology, so tests and benchmarks can measure from the moment a failover is announced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Listens to `+switch-master` on each given sentinel in a background thread per sentinel.
pub struct SwitchWatcher {
    heard: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SwitchWatcher {
    pub fn start(sentinels: &[SocketAddr]) -> SwitchWatcher {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut ready = Vec::new();
        let threads = sentinels
            .iter()
            .map(|addr| {
                let (heard, stop, addr) = (heard.clone(), stop.clone(), *addr);
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
                    pubsub.subscribe("+switch-master").unwrap();
                    let _ = tx.send(());
                    while !stop.load(Ordering::SeqCst) {
                        match pubsub.get_message() {
                            Ok(msg) => {
                                let payload: String = msg.get_payload().unwrap_or_default();
                                heard.lock().unwrap().push((Instant::now(), payload));
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
                .expect("the +switch-master subscriptions to start");
        }
        SwitchWatcher {
            heard,
            stop,
            threads,
        }
    }

    /// How many announcements were heard so far (each sentinel announces each switch).
    pub fn count(&self) -> usize {
        self.heard.lock().unwrap().len()
    }

    /// The first announcement heard after the first `skip` ones, waiting up to `timeout`.
    pub fn first_after(&self, skip: usize, timeout: Duration) -> Instant {
        self.nth_after(skip, 1, timeout)
    }

    /// The `n`-th announcement (1-based) heard after the first `skip` ones: with `n` = the
    /// sentinel majority, the moment a majority names the new master.
    pub fn nth_after(&self, skip: usize, n: usize, timeout: Duration) -> Instant {
        super::wait_for(timeout, "+switch-master announcements", || {
            let heard = self.heard.lock().unwrap();
            let mut times: Vec<Instant> = heard.iter().skip(skip).map(|(t, _)| *t).collect();
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
