//! Cost benchmark (`cargo bench --bench cost`): what rolecall costs to run and to ask, against
//! a per-probe check script, in one run on loopback.
//!
//! One topology for the whole run: 1 master + 1 replica + 3 sentinels (quorum 2) and a demo
//! node that follows Sentinel (it INCRs on the master every 100 ms). In order:
//!
//! 1. Idle baseline: `ROLECALL_BENCH_COST_SECS` (default 60) seconds without rolecall. What the
//!    topology does by itself (sentinels pinging and `INFO`-polling each other and the servers,
//!    hello messages, the node's writes) is measured here and subtracted from the later windows
//!    at the same rate.
//! 2. rolecall running (the release binary, started as the test harness starts it; checks every
//!    1 s with the default timeout, fast interval, rise and fall), for the same number of
//!    seconds once it has published `ok` and made three more checks: its CPU (utime + stime from
//!    `/proc/PID/stat`, and from its CPU-time clock, which has nanosecond resolution), RSS
//!    (`VmRSS`, and `VmHWM`, the peak, from `/proc/PID/status`), the checks it made
//!    (`rolecall_checks_total` on `/metrics`), and the Redis commands and new connections it
//!    caused, per check.
//! 3. Probes: `ROLECALL_BENCH_COST_PROBES` (default 2000) sequential agent-check exchanges (a
//!    fresh connection, `\n` as the shipped HAProxy configuration sends, the reply read to EOF),
//!    then as many `GET /readyz` (HTTP/1.1, `Connection: close`): latency (median, p99, max),
//!    rolecall's CPU per probe (its CPU-time clock over the phase minus the checks it made
//!    meanwhile at the cost per check of phase 2), and the Redis commands per probe beyond the
//!    idle baseline and those checks (zero when probes are answered from the published
//!    snapshot).
//! 4. The alternative, with rolecall stopped: `ROLECALL_BENCH_COST_SCRIPT_RUNS` (default 200)
//!    sequential runs of a check script of the kind written for HAProxy `external-check` or a
//!    Kubernetes exec probe (`redis-cli SENTINEL get-master-addr-by-name` on one sentinel, then
//!    `redis-cli ROLE` on the master it names; no look at the node's connections, so it does
//!    strictly less than one rolecall check). The script is written to a temp dir at run time
//!    and executed directly, as HAProxy does, with HAProxy's four arguments. Latency, CPU of the
//!    script and its children per run (`getrusage(RUSAGE_CHILDREN)` deltas), and Redis commands
//!    and connections per run beyond the idle baseline.
//!
//! Redis commands are counted on every server from `INFO commandstats` (per command) and on every
//! sentinel from `INFO stats` `total_commands_processed` (Redis 7.0's Sentinel has no
//! commandstats section); the benchmark's own `INFO` calls and connections are subtracted
//! exactly. Redis-side CPU is not reported: the idle topology's own CPU (sentinel timers, `hz`)
//! varies between windows by more than rolecall's commands add to it.
//!
//! Prints a Markdown table. Every loop is bounded in count and time; all traffic stays on
//! 127.0.0.1. Without `--bench` (as `cargo test --benches` runs it) it only prints how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{DemoNode, Rolecall, RolecallConfig, Topology, env_count, percentile, proc_cpu_ms};

const SECS_ENV: &str = "ROLECALL_BENCH_COST_SECS";
const PROBES_ENV: &str = "ROLECALL_BENCH_COST_PROBES";
const SCRIPT_RUNS_ENV: &str = "ROLECALL_BENCH_COST_SCRIPT_RUNS";
/// Connect, read and write bound of the benchmark's own `INFO` calls.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Each probe phase and the script phase give up after this long, whatever their count.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// One run of the check script is killed after this long (and counted as failed).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running script is looked at: the resolution of its latency.
const SCRIPT_POLL: Duration = Duration::from_micros(200);
/// Redis replies read here are small `INFO` sections; anything larger is a bug.
const MAX_BULK: usize = 16 << 20;

/// The check script an operator would put behind HAProxy's `external-check command` or a
/// Kubernetes exec probe: healthy when the master Sentinel names says `master` to `ROLE`.
/// Shell builtins only, besides the two `redis-cli` calls.
const CHECK_SCRIPT: &str = r#"#!/bin/sh
# Health check for HAProxy external-check or a Kubernetes exec probe: exit 0 when the master
# that Sentinel names answers ROLE with "master". HAProxy passes <proxy_addr> <proxy_port>
# <server_addr> <server_port>; the settings come from the environment.
SENTINEL_HOST=${SENTINEL_HOST:-127.0.0.1}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
MASTER_NAME=${MASTER_NAME:-mymaster}
addr=$(redis-cli -h "$SENTINEL_HOST" -p "$SENTINEL_PORT" --raw SENTINEL get-master-addr-by-name "$MASTER_NAME") || exit 1
set -- $addr
[ $# -eq 2 ] || exit 1
role=$(redis-cli -h "$1" -p "$2" --raw ROLE) || exit 1
case "$role" in
master*) exit 0 ;;
*) exit 1 ;;
esac
"#;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches in test mode: skip the
    // long measurement there (it is not a test).
    if !std::env::args().any(|a| a == "--bench") {
        println!("cost benchmark: run with `cargo bench --bench cost`");
        return;
    }
    let secs = env_count(SECS_ENV, 60).max(5) as u64;
    let probes = env_count(PROBES_ENV, 2000).max(10);
    let script_runs = env_count(SCRIPT_RUNS_ENV, 200).max(10);
    run(Duration::from_secs(secs), probes, script_runs);
}

fn run(window: Duration, probes: usize, script_runs: usize) {
    let bin = env!("CARGO_BIN_EXE_rolecall");
    println!("cost benchmark: {bin}");
    println!(
        "1 master + 1 replica + 3 sentinels (quorum 2), a Sentinel-following demo node, all on \
         127.0.0.1; {} CPU(s) online; load average {}",
        online_cpus(),
        load_average()
    );
    let topology = Topology::start(1, 3);
    let node = DemoNode::follow(&topology);
    let redis = RedisSet::new(&topology);
    let master = topology.master_addr();

    // The accounting of the benchmark's own calls, checked: two samples in a row differ by
    // nothing but what the topology happened to do in those few milliseconds.
    let (a, b) = (redis.sample(), redis.sample());
    let own = redis.usage(&a, &b);
    println!(
        "sampling check: {:.0} commands and {:.0} connections between two samples {:.1} ms apart",
        own.total(""),
        own.conns_total(),
        own.secs * 1000.0
    );

    // 1. What the topology does by itself.
    println!(
        "\n[1/4] idle baseline: {:.0} s without rolecall",
        window.as_secs_f64()
    );
    let a = redis.sample();
    sleep_bounded(window);
    let b = redis.sample();
    let idle = redis.usage(&a, &b);
    println!(
        "  {:.1} commands/s on the servers, {:.1} on the sentinels; {:.2} new connections/s",
        idle.servers() / idle.secs,
        idle.total("sentinels ") / idle.secs,
        idle.conns_total() / idle.secs,
    );

    // 2. rolecall running.
    println!(
        "\n[2/4] rolecall, checks every 1 s: {:.0} s after its first `ok` and 3 more checks",
        window.as_secs_f64()
    );
    // rolecall's own defaults for interval, timeout and fast interval (the harness writes
    // faster ones for tests unless told otherwise); rise and fall are left at theirs.
    let mut rolecall = RolecallConfig::new()
        .pid(node.pid())
        .topology(&topology)
        .check("interval", "\"1s\"")
        .check("timeout", "\"300ms\"")
        .check("fast_interval", "\"100ms\"")
        .start();
    rolecall.wait_for_verdict("ok", Duration::from_secs(60));
    let first = metrics(&rolecall).checks;
    support::wait_until(
        Duration::from_secs(30),
        "rolecall to make 3 more checks",
        || metrics(&rolecall).checks >= first + 3.0,
    );
    let pid = rolecall.pid();
    let (m0, a) = (metrics(&rolecall), redis.sample());
    let (cpu0, clock0) = (proc_cpu_ms(pid), proc_cpu_clock_ms(pid));
    sleep_bounded(window);
    let (cpu1, clock1) = (proc_cpu_ms(pid), proc_cpu_clock_ms(pid));
    let (m1, b) = (metrics(&rolecall), redis.sample());
    assert!(
        rolecall.is_running(),
        "rolecall exited\n{}",
        rolecall.report(None)
    );
    let status = rolecall.status();
    assert_eq!(
        status["verdict"],
        "ok",
        "verdict at the end of the window\n{}",
        rolecall.report(None)
    );
    let mem = proc_mem_kib(pid);
    let used = redis.usage(&a, &b);
    let checks = m1.checks - m0.checks;
    assert!(checks > 0.0, "no check in the window");
    let running = Running {
        secs: used.secs,
        checks,
        check_ms: (m1.duration_sum - m0.duration_sum) / (m1.duration_count - m0.duration_count)
            * 1000.0,
        cpu_ms: cpu1 - cpu0,
        cpu_clock_ms: clock1 - clock0,
        rss_kib: mem.0,
        hwm_kib: mem.1,
        per_check: used.excess(&idle).per(checks),
    };
    running.print();

    // 3. Probes, answered from the published snapshot.
    println!("\n[3/4] {probes} sequential probes of each kind, rolecall still running");
    let agent = probe_phase(&rolecall, &redis, &idle, &running, probes, "agent", |r| {
        let reply = r.try_agent(Some("\n"))?;
        if reply.starts_with("up") {
            Ok(())
        } else {
            Err(format!("agent reply {reply:?}"))
        }
    });
    agent.print("agent-check");
    let readyz = probe_phase(&rolecall, &redis, &idle, &running, probes, "readyz", |r| {
        let resp = r.http("GET", "/readyz")?;
        if resp.status == 200 {
            Ok(())
        } else {
            Err(format!("/readyz: {} {}", resp.status, resp.body))
        }
    });
    readyz.print("/readyz");
    let mem_after = proc_mem_kib(pid);
    println!(
        "  rolecall RSS after the probes: {:.1} MiB (peak {:.1} MiB)",
        mem_after.0 / 1024.0,
        mem_after.1 / 1024.0
    );
    rolecall.terminate();
    rolecall.wait_exit(Duration::from_secs(20));

    // 4. The check script, rolecall stopped.
    println!(
        "\n[4/4] check script (sh + 2 × redis-cli), {script_runs} sequential runs, rolecall stopped"
    );
    let script = script_phase(&topology, &redis, &idle, master, script_runs);
    script.print("check script");

    print_table(window, &idle, &running, &agent, &readyz, &script, mem_after);
    println!("\nload average at the end: {}", load_average());
}

/// Sleeps `d` in steps of at most 1 s (a bounded number of steps).
fn sleep_bounded(d: Duration) {
    let deadline = Instant::now() + d;
    for _ in 0..=d.as_secs() + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine shows here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

fn online_cpus() -> i64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

// ---------------------------------------------------------------------------------------------
// Process accounting from /proc and getrusage.

/// CPU time of a whole process (every thread, live or exited) in ms, with nanosecond resolution:
/// the scheduler's runtime through the process's CPU-time clock (`clock_getcpuclockid`).
/// `/proc/PID/stat` counts in 10 ms clock ticks, too coarse for phases of a second or two.
fn proc_cpu_clock_ms(pid: u32) -> f64 {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into the variable we own.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    assert_eq!(rc, 0, "clock_getcpuclockid({pid}): error {rc}");
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the variable we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(
        rc,
        0,
        "clock_gettime(CPU clock of {pid}): {}",
        std::io::Error::last_os_error()
    );
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// `(VmRSS, VmHWM)` in KiB: resident memory now, and its peak.
fn proc_mem_kib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU (user + system, ms) of every child this process has waited for, and their children.
fn children_cpu_ms() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct we own and pass by pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let ms = |tv: libc::timeval| tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Redis-side counting.

/// The five Redis processes, where to ask `INFO`.
struct RedisSet {
    /// `(kind, addr)`, the kind being `master`, `replica` or `sentinels` (the roles do not
    /// change during the run: there is no failover).
    instances: Vec<(&'static str, SocketAddr)>,
}

/// Counters of every instance at one moment.
struct Sample {
    at: Instant,
    /// Per instance: calls by command (servers), or `total` (sentinels); and connections.
    counts: Vec<(BTreeMap<String, f64>, f64)>,
}

/// What the Redis side did over a window (or per check, per probe, once divided).
#[derive(Clone, Debug, Default)]
struct Usage {
    secs: f64,
    /// Commands by `master CMD`, `replica CMD` (from commandstats; the replica's include what
    /// it applies from the replication stream) and `sentinels total`.
    calls: BTreeMap<String, f64>,
    /// New connections by `master`, `replica`, `sentinels`.
    conns: BTreeMap<String, f64>,
}

impl RedisSet {
    fn new(topology: &Topology) -> RedisSet {
        let master = topology.master_addr();
        let mut instances = Vec::new();
        for s in topology.servers() {
            let kind = if s.addr() == master {
                "master"
            } else {
                "replica"
            };
            instances.push((kind, s.addr()));
        }
        for s in topology.sentinels() {
            instances.push(("sentinels", s.addr()));
        }
        RedisSet { instances }
    }

    /// One fresh connection per instance: `INFO stats` then, on servers, `INFO commandstats`.
    fn sample(&self) -> Sample {
        let counts = self
            .instances
            .iter()
            .map(|&(kind, addr)| {
                let sentinel = kind == "sentinels";
                let sections: &[&str] = if sentinel {
                    &["stats"]
                } else {
                    &["stats", "commandstats"]
                };
                let replies =
                    redis_info(addr, sections).unwrap_or_else(|e| panic!("INFO on {addr}: {e}"));
                let stats = support::parse_info(&replies[0]);
                let number = |k: &str| {
                    stats
                        .get(k)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or_else(|| panic!("{addr}: no {k} in INFO stats"))
                };
                let mut calls = BTreeMap::new();
                if sentinel {
                    calls.insert("total".to_owned(), number("total_commands_processed"));
                } else {
                    calls = parse_commandstats(&replies[1]);
                }
                (calls, number("total_connections_received"))
            })
            .collect();
        Sample {
            at: Instant::now(),
            counts,
        }
    }

    /// From sample `a` to sample `b`, without the benchmark's own calls. Between two samples an
    /// instance counts, of ours: one connection (`b`'s, accepted before `b`'s `INFO stats`
    /// reply), and the `INFO` calls that finished after `a`'s last reply was made and before
    /// `b`'s last one: on a server `a`'s `INFO commandstats` and `b`'s `INFO stats` (2), on a
    /// sentinel `a`'s `INFO stats` (1). (A command is counted when it completes.)
    fn usage(&self, a: &Sample, b: &Sample) -> Usage {
        let mut u = Usage {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            ..Usage::default()
        };
        for (i, &(kind, _)) in self.instances.iter().enumerate() {
            let sentinel = kind == "sentinels";
            let ((ca, na), (cb, nb)) = (&a.counts[i], &b.counts[i]);
            for (cmd, after) in cb {
                let ours = match (sentinel, cmd.as_str()) {
                    (true, _) => 1.0,
                    (false, "info") => 2.0,
                    (false, _) => 0.0,
                };
                let d = after - ca.get(cmd).copied().unwrap_or(0.0) - ours;
                *u.calls.entry(format!("{kind} {cmd}")).or_default() += d;
            }
            *u.conns.entry(kind.to_owned()).or_default() += nb - na - 1.0;
        }
        u
    }
}

impl Usage {
    /// This window minus what the idle topology does in as long.
    fn excess(&self, idle: &Usage) -> Usage {
        let scale = self.secs / idle.secs;
        let mut out = self.clone();
        for (k, v) in &idle.calls {
            *out.calls.entry(k.clone()).or_default() -= v * scale;
        }
        for (k, v) in &idle.conns {
            *out.conns.entry(k.clone()).or_default() -= v * scale;
        }
        out
    }

    /// Minus `n` times `each` (e.g. the checks made during a probe phase).
    fn minus(&self, each: &Usage, n: f64) -> Usage {
        let mut out = self.clone();
        for (k, v) in &each.calls {
            *out.calls.entry(k.clone()).or_default() -= v * n;
        }
        for (k, v) in &each.conns {
            *out.conns.entry(k.clone()).or_default() -= v * n;
        }
        out
    }

    /// Everything divided by `n` (per check, per probe).
    fn per(&self, n: f64) -> Usage {
        Usage {
            secs: self.secs / n,
            calls: self.calls.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
            conns: self.conns.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
        }
    }

    /// Commands on the `master`, the `replica`, the `sentinels`, or everywhere (`""`).
    fn total(&self, kind: &str) -> f64 {
        self.calls
            .iter()
            .filter(|(k, _)| k.starts_with(kind))
            .map(|(_, v)| v)
            .sum()
    }

    /// Commands on the two servers.
    fn servers(&self) -> f64 {
        self.total("master ") + self.total("replica ")
    }

    fn conns(&self, kind: &str) -> f64 {
        self.conns.get(kind).copied().unwrap_or(0.0)
    }

    fn conns_total(&self) -> f64 {
        self.conns.values().sum()
    }

    /// `sentinels 9.00; master 2.00 (role 1.00, set 1.00); replica ...; new connections ...`:
    /// the commands on each server by name where they are at least `min` in size.
    fn describe(&self, min: f64) -> String {
        let by_cmd = |kind: &str| {
            let prefix = format!("{kind} ");
            let mut cmds: Vec<(&str, f64)> = self
                .calls
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, *v)))
                .filter(|(_, v)| v.abs() >= min)
                .collect();
            cmds.sort_by(|a, b| b.1.total_cmp(&a.1));
            let list: Vec<String> = cmds.iter().map(|(c, v)| format!("{c} {v:.2}")).collect();
            format!("{kind} {:.2} ({})", self.total(&prefix), list.join(", "))
        };
        format!(
            "sentinels {:.2}; {}; {}; new connections: sentinels {:.2}, master {:.2}, replica {:.2}",
            self.total("sentinels "),
            by_cmd("master"),
            by_cmd("replica"),
            self.conns("sentinels"),
            self.conns("master"),
            self.conns("replica"),
        )
    }
}

/// `cmdstat_NAME:calls=N,...` lines as `NAME -> N`.
fn parse_commandstats(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, fields) = l.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// `INFO section` for each section, pipelined on one fresh connection, in raw RESP2 (no client
/// library that might add `HELLO`, `CLIENT SETINFO` or `SELECT` to what is counted).
fn redis_info(addr: SocketAddr, sections: &[&str]) -> Result<Vec<String>, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut request = String::new();
    for s in sections {
        let _ = write!(request, "*2\r\n$4\r\nINFO\r\n${}\r\n{s}\r\n", s.len());
    }
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(&stream);
    sections.iter().map(|_| read_bulk(&mut reader)).collect()
}

fn read_bulk(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader
        .take(1024)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let line = line.trim_end();
    if let Some(err) = line.strip_prefix('-') {
        return Err(err.to_owned());
    }
    let len: usize = line
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected reply {line:?}"))?;
    if len > MAX_BULK {
        return Err(format!("bulk reply of {len} bytes"));
    }
    let mut body = vec![0u8; len + 2];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read: {e}"))?;
    body.truncate(len);
    String::from_utf8(body).map_err(|_| "INFO reply is not UTF-8".to_owned())
}

// ---------------------------------------------------------------------------------------------
// rolecall's own counters.

struct Metrics {
    checks: f64,
    duration_sum: f64,
    duration_count: f64,
}

/// `rolecall_checks_total` and `rolecall_check_duration_seconds_{sum,count}` from `/metrics`.
fn metrics(rolecall: &Rolecall) -> Metrics {
    let (status, body) = rolecall.http_get("/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    };
    Metrics {
        checks: value("rolecall_checks_total"),
        duration_sum: value("rolecall_check_duration_seconds_sum"),
        duration_count: value("rolecall_check_duration_seconds_count"),
    }
}

/// rolecall over the measured window.
struct Running {
    secs: f64,
    checks: f64,
    /// Mean wall time of one check (rolecall's histogram).
    check_ms: f64,
    /// rolecall's utime + stime over the window, from `/proc/PID/stat` (10 ms ticks).
    cpu_ms: f64,
    /// The same from its CPU-time clock (ns resolution; the two differ by up to a few ticks).
    cpu_clock_ms: f64,
    rss_kib: f64,
    hwm_kib: f64,
    /// Redis-side usage per check beyond the idle baseline.
    per_check: Usage,
}

impl Running {
    fn cpu_per_check_ms(&self) -> f64 {
        self.cpu_ms / self.checks
    }

    fn clock_per_check_ms(&self) -> f64 {
        self.cpu_clock_ms / self.checks
    }

    fn core_percent(&self) -> f64 {
        self.cpu_ms / (self.secs * 1000.0) * 100.0
    }

    fn print(&self) {
        println!(
            "  {:.1} s, {:.0} checks, mean check {:.2} ms (wall)",
            self.secs, self.checks, self.check_ms
        );
        println!(
            "  rolecall CPU (/proc/PID/stat) {:.0} ms: {:.2} ms per check, {:.3} % of one core",
            self.cpu_ms,
            self.cpu_per_check_ms(),
            self.core_percent()
        );
        println!(
            "  rolecall CPU (CPU-time clock) {:.1} ms: {:.3} ms per check",
            self.cpu_clock_ms,
            self.clock_per_check_ms()
        );
        println!(
            "  rolecall RSS {:.1} MiB, peak {:.1} MiB",
            self.rss_kib / 1024.0,
            self.hwm_kib / 1024.0
        );
        println!(
            "  Redis commands per check beyond the idle baseline: {:.2} = {}",
            self.per_check.total(""),
            self.per_check.describe(0.05)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Probes and the script.

/// Latencies (ms) and costs of one kind of probe.
struct Phase {
    n: usize,
    failures: usize,
    latency_ms: Vec<f64>,
    /// CPU per probe of the answering side (rolecall; or the script and its children).
    cpu_ms_per_probe: f64,
    /// Client-side CPU per run, sorted (the script only).
    cpu_ms_each: Vec<f64>,
    /// Redis-side usage per probe beyond the idle baseline (and the checks made meanwhile).
    per_probe: Usage,
}

impl Phase {
    fn median(&self) -> f64 {
        percentile(&self.latency_ms, 50.0)
    }

    fn p99(&self) -> f64 {
        percentile(&self.latency_ms, 99.0)
    }

    fn max(&self) -> f64 {
        self.latency_ms.last().copied().unwrap_or(f64::NAN)
    }

    fn print(&self, name: &str) {
        println!(
            "  {name}: n={} (failed {}) latency median {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms",
            self.n,
            self.failures,
            self.median(),
            self.p99(),
            self.max(),
            self.latency_ms.first().copied().unwrap_or(f64::NAN),
        );
        println!(
            "    CPU per probe {:.3} ms; Redis commands per probe {:.3} = {}",
            self.cpu_ms_per_probe,
            self.per_probe.total(""),
            self.per_probe.describe(0.01),
        );
    }
}

/// `n` sequential probes with `probe` (bounded by [`PHASE_TIMEOUT`]): latencies, rolecall's CPU
/// per probe and the Redis commands per probe, both net of the checks made meanwhile.
fn probe_phase(
    rolecall: &Rolecall,
    redis: &RedisSet,
    idle: &Usage,
    running: &Running,
    n: usize,
    what: &str,
    probe: impl Fn(&Rolecall) -> Result<(), String>,
) -> Phase {
    let pid = rolecall.pid();
    let (m0, a) = (metrics(rolecall), redis.sample());
    let cpu0 = proc_cpu_clock_ms(pid);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut latency_ms = Vec::with_capacity(n);
    let mut failures = 0;
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let ok = probe(rolecall);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match ok {
            Ok(()) => latency_ms.push(ms),
            Err(e) => {
                failures += 1;
                eprintln!("  {what} probe failed: {e}");
            }
        }
    }
    let cpu1 = proc_cpu_clock_ms(pid);
    let b = redis.sample();
    let m1 = metrics(rolecall);
    let done = latency_ms.len() + failures;
    assert!(
        done == n,
        "{what}: only {done} of {n} probes within {PHASE_TIMEOUT:?}"
    );
    // Checks ran meanwhile: their CPU and commands are taken out at the rates of phase 2.
    let checks = m1.checks - m0.checks;
    let probes = n as f64;
    let cpu = cpu1 - cpu0 - checks * running.clock_per_check_ms();
    let per_probe = redis
        .usage(&a, &b)
        .excess(idle)
        .minus(&running.per_check, checks)
        .per(probes);
    latency_ms.sort_by(f64::total_cmp);
    Phase {
        n,
        failures,
        latency_ms,
        cpu_ms_per_probe: cpu / probes,
        cpu_ms_each: Vec::new(),
        per_probe,
    }
}

/// `runs` sequential runs of [`CHECK_SCRIPT`] against the first sentinel (bounded by
/// [`PHASE_TIMEOUT`] in all and [`SCRIPT_TIMEOUT`] each). Each must exit 0: the master is up.
fn script_phase(
    topology: &Topology,
    redis: &RedisSet,
    idle: &Usage,
    master: SocketAddr,
    runs: usize,
) -> Phase {
    let dir = tempfile::Builder::new()
        .prefix("rolecall-bench-cost-")
        .tempdir()
        .expect("create a temp dir");
    let script = dir.path().join("check-redis-master.sh");
    std::fs::write(&script, CHECK_SCRIPT).expect("write the check script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the check script");
    let sentinel = topology.sentinel(0).addr();
    println!(
        "  {} (SENTINEL_PORT={}, MASTER_NAME={}; Sentinel names {master})",
        script.display(),
        sentinel.port(),
        topology.master_name()
    );
    // One untimed run: the script must work, and the binaries are in the page cache after it.
    run_script(&script, sentinel, topology.master_name())
        .unwrap_or_else(|e| panic!("the check script fails: {e}"));

    let a = redis.sample();
    let cpu_start = children_cpu_ms();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut latency_ms = Vec::with_capacity(runs);
    let mut cpu_ms_each = Vec::with_capacity(runs);
    let mut failures = 0;
    let mut done = 0;
    for _ in 0..runs {
        if Instant::now() >= deadline {
            break;
        }
        done += 1;
        let cpu0 = children_cpu_ms();
        let t0 = Instant::now();
        let result = run_script(&script, sentinel, topology.master_name());
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        cpu_ms_each.push(children_cpu_ms() - cpu0);
        match result {
            Ok(()) => latency_ms.push(ms),
            Err(e) => {
                failures += 1;
                eprintln!("  script run failed: {e}");
            }
        }
    }
    let cpu = children_cpu_ms() - cpu_start;
    let b = redis.sample();
    assert_eq!(
        done, runs,
        "only {done} of {runs} runs within {PHASE_TIMEOUT:?}"
    );
    latency_ms.sort_by(f64::total_cmp);
    cpu_ms_each.sort_by(f64::total_cmp);
    Phase {
        n: runs,
        failures,
        latency_ms,
        cpu_ms_per_probe: cpu / runs as f64,
        cpu_ms_each,
        per_probe: redis.usage(&a, &b).excess(idle).per(runs as f64),
    }
}

/// Executes the script as HAProxy's external-check does (`execve` of the command, with
/// `<proxy_addr> <proxy_port> <server_addr> <server_port>`); `Ok` when it exits 0.
fn run_script(script: &Path, sentinel: SocketAddr, master_name: &str) -> Result<(), String> {
    let mut child = Command::new(script)
        .args(["127.0.0.1", "0", "127.0.0.1", "0"])
        .env("SENTINEL_HOST", sentinel.ip().to_string())
        .env("SENTINEL_PORT", sentinel.port().to_string())
        .env("MASTER_NAME", master_name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", script.display()))?;
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let max_polls = SCRIPT_TIMEOUT.as_micros() / SCRIPT_POLL.as_micros() + 2;
    for _ in 0..max_polls {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(SCRIPT_POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("still running after {SCRIPT_TIMEOUT:?}; killed"))
}

// ---------------------------------------------------------------------------------------------
// The summary.

fn print_table(
    window: Duration,
    idle: &Usage,
    running: &Running,
    agent: &Phase,
    readyz: &Phase,
    script: &Phase,
    mem_after: (f64, f64),
) {
    let script_cpu_median = percentile(&script.cpu_ms_each, 50.0);
    println!("\n## Summary\n");
    println!(
        "Idle topology (subtracted below): {:.1} Redis commands/s.\n",
        idle.total("") / idle.secs,
    );
    println!("| running rolecall (checks every 1 s) | measured |");
    println!("|---|---:|");
    println!(
        "| checks in the {:.0} s window | {:.0} (mean check {:.2} ms) |",
        window.as_secs_f64(),
        running.checks,
        running.check_ms
    );
    println!(
        "| rolecall CPU per check | {:.2} ms (CPU-time clock: {:.2} ms) |",
        running.cpu_per_check_ms(),
        running.clock_per_check_ms()
    );
    println!(
        "| rolecall CPU, share of one core | {:.2} % |",
        running.core_percent()
    );
    println!(
        "| rolecall RSS at the end of the window (peak) | {:.1} MiB ({:.1} MiB) |",
        running.rss_kib / 1024.0,
        running.hwm_kib / 1024.0
    );
    println!(
        "| rolecall RSS after {} + {} probes (peak) | {:.1} MiB ({:.1} MiB) |",
        agent.n,
        readyz.n,
        mem_after.0 / 1024.0,
        mem_after.1 / 1024.0
    );
    println!(
        "| Redis commands per check, sent by rolecall: sentinels + master | {:.1} + {:.1} |",
        running.per_check.total("sentinels "),
        running.per_check.total("master ")
    );
    println!(
        "| … and applied by the replica (replication of the probe write) | {:.1} |",
        running.per_check.total("replica ")
    );
    println!(
        "| Redis connections opened per check | {:.2} |",
        running.per_check.conns_total()
    );
    println!();
    println!("| per probe | agent-check | `/readyz` | check script |");
    println!("|---|---:|---:|---:|");
    println!("| runs | {} | {} | {} |", agent.n, readyz.n, script.n);
    println!(
        "| latency, median | {:.3} ms | {:.3} ms | {:.2} ms |",
        agent.median(),
        readyz.median(),
        script.median()
    );
    println!(
        "| latency, p99 | {:.3} ms | {:.3} ms | {:.2} ms |",
        agent.p99(),
        readyz.p99(),
        script.p99()
    );
    println!(
        "| CPU of the answering side | {:.3} ms (rolecall) | {:.3} ms (rolecall) | {:.2} ms (median {:.2}; sh + 2 redis-cli) |",
        agent.cpu_ms_per_probe, readyz.cpu_ms_per_probe, script.cpu_ms_per_probe, script_cpu_median
    );
    println!(
        "| Redis commands | {:.3} | {:.3} | {:.2} (sentinel {:.2}, master {:.2}, replica {:.2}) |",
        agent.per_probe.total(""),
        readyz.per_probe.total(""),
        script.per_probe.total(""),
        script.per_probe.total("sentinels "),
        script.per_probe.total("master "),
        script.per_probe.total("replica ")
    );
    println!(
        "| Redis connections opened | {:.3} | {:.3} | {:.2} |",
        agent.per_probe.conns_total(),
        readyz.per_probe.conns_total(),
        script.per_probe.conns_total()
    );
    println!();
    println!(
        "Ratios: script ÷ agent-check latency (medians) {:.0}×; script CPU per run ÷ rolecall \
         CPU per agent probe {:.0}×; script CPU per run ÷ rolecall CPU per check {:.1}×.",
        script.median() / agent.median(),
        script.cpu_ms_per_probe / agent.cpu_ms_per_probe,
        script.cpu_ms_per_probe / running.cpu_per_check_ms()
    );
    let failed = agent.failures + readyz.failures + script.failures;
    assert_eq!(failed, 0, "{failed} probe(s) or script run(s) failed");
}
