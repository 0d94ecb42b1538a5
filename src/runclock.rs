//! rolecall's policy clock: monotonic time minus the time rolecall itself was not running (the
//! process stopped with SIGSTOP, a frozen VM or container, a host that stalled it).
//!
//! Grace periods, holds and a snapshot's age are measured on this clock, so a freeze never
//! counts as time in which rolecall watched and saw nothing: after a resume it does not fail
//! open, or let a grace period run out, on what it saw before the freeze. It checks first
//! (fault matrix row 31). A wedged check loop still ages the snapshot: the ticker runs on the
//! async runtime, not in the loop.
//!
//! A task ticks every [`TICK`]; a gap between two ticks longer than [`TICK`] + [`SLACK`] is
//! time the process was not running. Until the ticker is started (`rolecall check`, unit
//! tests) the clock is the plain monotonic clock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the ticker runs: once a second, as often as a check at the default interval (each
/// wakeup of an idle process costs tens of microseconds of CPU on a virtual machine).
pub const TICK: Duration = Duration::from_secs(1);
/// Lateness of a tick that is still scheduling jitter, not a freeze. A freeze shorter than
/// `TICK + SLACK` (1.5 s) goes unnoticed, and is shorter than the default grace periods (5 s and
/// more) and holds (30 s); a snapshot's freshness has its own margin (`stale_after`).
pub const SLACK: Duration = Duration::from_millis(500);

static BASE: OnceLock<Instant> = OnceLock::new();
static STARTED: AtomicBool = AtomicBool::new(false);
/// Nanoseconds since `BASE` of the last tick.
static LAST_TICK: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds rolecall was not running, up to the last tick.
static FROZEN: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_nanos() as u64
}

/// The part of a gap between ticks that was a freeze.
fn excess(gap: u64) -> u64 {
    let limit = (TICK + SLACK).as_nanos() as u64;
    if gap > limit {
        gap - TICK.as_nanos() as u64
    } else {
        0
    }
}

fn tick(now: Instant) {
    let now = nanos_since_base(now);
    let last = LAST_TICK.swap(now, Ordering::SeqCst);
    let frozen = excess(now.saturating_sub(last));
    if frozen > 0 {
        FROZEN.fetch_add(frozen, Ordering::SeqCst);
        tracing::warn!(
            frozen_ms = frozen / 1_000_000,
            "rolecall was not running (stopped or frozen); checking again before acting"
        );
    }
}

/// Total time rolecall was not running, including a freeze that just ended and that the
/// ticker has not seen yet (a probe answered first thing after a resume).
pub fn frozen() -> Duration {
    if !STARTED.load(Ordering::SeqCst) {
        return Duration::ZERO;
    }
    let now = nanos_since_base(Instant::now());
    let pending = excess(now.saturating_sub(LAST_TICK.load(Ordering::SeqCst)));
    Duration::from_nanos(FROZEN.load(Ordering::SeqCst) + pending)
}

/// Now on the policy clock.
pub fn now() -> Instant {
    let real = Instant::now();
    real.checked_sub(frozen()).unwrap_or(real)
}

/// Runs the ticker until `shutdown`.
pub async fn run(shutdown: CancellationToken) {
    LAST_TICK.store(nanos_since_base(Instant::now()), Ordering::SeqCst);
    STARTED.store(true, Ordering::SeqCst);
    let mut ticks = tokio::time::interval(TICK);
    // After a freeze, one tick, not a burst of the missed ones.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => tick(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gap_beyond_the_slack_is_a_freeze() {
        let ms = |n: u64| n * 1_000_000;
        assert_eq!(excess(ms(1000)), 0);
        assert_eq!(excess(ms(1500)), 0);
        assert_eq!(excess(ms(1501)), ms(501));
        assert_eq!(excess(ms(5000)), ms(4000));
    }
}
