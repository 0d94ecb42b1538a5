//! What the benchmarks share: counts from the environment, percentiles and their one-line
//! summary, and a process's CPU time from `/proc/PID/stat`.

/// `name` from the environment as a count, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`-th percentile (nearest rank) of `sorted`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints `name: n=… median=… p99=… max=… min=…` of `ms`, in milliseconds.
pub fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: n={} median={:.1} ms p99={:.1} ms max={:.1} ms min={:.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.first().copied().unwrap_or(f64::NAN),
    );
}

/// utime + stime of a whole process (every thread, live or exited) in ms, from `/proc/PID/stat`.
pub fn proc_cpu_ms(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let rest = &text[text.rfind(')').expect("stat has a command name") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), counted from 1; `rest` starts at field 3.
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("stat tick count");
    (ticks(14) + ticks(15)) as f64 * 1000.0 / clock_ticks_per_sec()
}

/// The kernel's clock ticks per second (`/proc/PID/stat` counts CPU time in them).
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(hz > 0, "sysconf(_SC_CLK_TCK) = {hz}");
    hz as f64
}
