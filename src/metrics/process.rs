//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape, as Prometheus' own
//! client libraries name them. Where `/proc` is missing or unreadable the metric is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, which the kernel fixes at 100 for
/// user space on every architecture Linux runs rolecall on (proc(5); Prometheus' procfs library
/// assumes the same).
const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub(super) struct Process;

/// One reading of the process.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    start_time: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl Reading {
    fn now() -> Reading {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let (stat, status) = (read("/proc/self/stat"), read("/proc/self/status"));
        let boot = read("/proc/stat").and_then(|s| boot_time(&s));
        let times = stat.as_deref().and_then(cpu_and_start);
        let kb = |key| status.as_deref().and_then(|s| status_kb(s, key));
        Reading {
            cpu_seconds: times.map(|t| t.0),
            start_time: times.zip(boot).map(|((_, start), boot)| boot + start),
            resident_bytes: kb("VmRSS:").map(|k| k * 1024.0),
            virtual_bytes: kb("VmSize:").map(|k| k * 1024.0),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as f64),
            max_fds: read("/proc/self/limits").and_then(|l| max_open_files(&l)),
        }
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = Reading::now();
        if let Some(v) = r.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                CPU,
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_start_time_seconds", START, r.start_time),
            ("process_resident_memory_bytes", RESIDENT, r.resident_bytes),
            ("process_virtual_memory_bytes", VIRTUAL, r.virtual_bytes),
            ("process_open_fds", OPEN_FDS, r.open_fds),
            ("process_max_fds", MAX_FDS, r.max_fds),
        ];
        for (name, help, value) in gauges {
            let Some(v) = value else { continue };
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

const CPU: &str = "Total user and system CPU time spent in seconds.";
const START: &str = "Start time of the process since unix epoch in seconds.";
const RESIDENT: &str = "Resident memory size in bytes.";
const VIRTUAL: &str = "Virtual memory size in bytes.";
const OPEN_FDS: &str = "Number of open file descriptors.";
const MAX_FDS: &str = "Maximum number of open file descriptors.";

/// User plus system CPU seconds, and the start time in seconds after boot, from
/// `/proc/self/stat`. The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after its last `)`: utime and stime are fields 14
/// and 15, starttime field 22 (proc(5)).
fn cpu_and_start(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some(((field(14)? + field(15)?) / USER_HZ, field(22)? / USER_HZ))
}

/// The boot time in seconds since the Unix epoch: the `btime` line of `/proc/stat`.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` figure of `/proc/self/status`, by its key (`VmRSS:`).
fn status_kb(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The soft limit of open files from `/proc/self/limits` (`Max open files  1024  4096  files`).
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => None,
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_proc5_lays_them_out() {
        // A command name with spaces and parentheses; utime 250, stime 50, starttime 12345.
        let stat = "4242 (rolecall (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 5 0 12345 123456789 2000 18446744073709551615";
        assert_eq!(cpu_and_start(stat), Some((3.0, 123.45)));
        assert_eq!(cpu_and_start("4242 (short) S 1"), None);
        assert_eq!(cpu_and_start("no parenthesis"), None);
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(boot_time(proc_stat), Some(1_700_000_000.0));
        assert_eq!(boot_time("cpu 1\n"), None);
        let status = "Name:\trolecall\nVmSize:\t  123456 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(8192.0));
        assert_eq!(status_kb(status, "VmSize:"), Some(123_456.0));
        assert_eq!(status_kb(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax cpu time              unlimited            unlimited            seconds\nMax open files            65536                524288               files\n";
        assert_eq!(max_open_files(limits), Some(65536.0));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn this_process_reads_as_alive() {
        let r = Reading::now();
        let now = super::super::unix_now();
        let start = r.start_time.expect("start time");
        assert!(start > now - 3600.0 && start <= now + 1.0, "{r:?}");
        assert!(r.cpu_seconds.expect("cpu") >= 0.0, "{r:?}");
        assert!(r.resident_bytes.expect("rss") > 1024.0 * 1024.0, "{r:?}");
        assert!(
            r.virtual_bytes.expect("vsz") >= r.resident_bytes.unwrap(),
            "{r:?}"
        );
        let open = r.open_fds.expect("fds");
        assert!(
            open >= 3.0 && open <= r.max_fds.unwrap_or(f64::MAX),
            "{r:?}"
        );
    }
}
