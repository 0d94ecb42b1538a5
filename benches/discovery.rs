//! Discovery benchmark: `/proc/PID/net/tcp` against netlink `sock_diag`, with and without a
//! remote-port filter, in one run.
//!
//! Run it with `cargo bench --bench discovery`. It times `discover_to_ports_with(&NodeSelector::
//! Pid(own pid), ports, method)` four ways, rotating: /proc and netlink unfiltered (`ports`
//! empty), and netlink and /proc filtered to the remote ports of the node's connections to its
//! three listeners (IPv4, IPv6, IPv4 to a dual-stack listener), which stand for the Redis
//! ports. This process is the node and holds both ends of those three connections. Then the
//! daemon's two ways: `discover_remembering` listing the sockets at every call (the fd memory
//! only), and in steady state (`Listing::KnownMayDo`: the known connections confirmed by exact
//! lookups, a dump every `DUMP_EVERY`), with how many of its calls needed no dump.
//!
//! Two cases, for N = 0, 1 000 and 10 000:
//!
//! - **Other sockets**: the network namespace holds N extra sockets in TIME_WAIT and N in
//!   ESTABLISHED, the latter held by a child process, so they are not the node's. The
//!   filtered netlink dump has the kernel skip them.
//! - **Node's sockets**: the node itself holds N extra ESTABLISHED sockets (N/2 loopback pairs,
//!   to a listener whose port is not in the filter), as a message server holds its clients'
//!   websockets. Discovery reads every link of `/proc/PID/fd`; this case also times that scan
//!   alone (`read_dir` and one `readlink` per fd), to give its cost per socket. It runs first,
//!   in the fresh namespace, and its pairs are closed with a reset (`SO_LINGER` 0) so they
//!   leave no TIME_WAIT behind.
//!
//! At every repetition the two unfiltered ways must find the same connections, and each
//! filtered way exactly the unfiltered answer restricted to the ports. It prints the median
//! (and min, max) per N and way, and ratios.
//!
//! So that the namespace holds only these sockets, the benchmark re-runs itself in a new
//! network namespace, `unshare -n` (root) or `unshare -rn` (user namespaces), with loopback
//! brought up by `ip link set lo up`. When neither works it runs in the current namespace, says
//! so, and the counts it prints (from `/proc/net/sockstat`) include everyone's sockets.
//! `ROLECALL_BENCH_NETNS=keep` forces the current namespace.
//!
//! `ROLECALL_BENCH_REPS` (default 31) sets the repetitions per N and way. It raises its
//! open-file limit to the hard limit, and holds fewer ESTABLISHED sockets than asked (saying
//! so) if even that is too low. All traffic stays on 127.0.0.0/8 and `::1`; every wait is
//! bounded.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it only prints how to run it.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rolecall::sockets::{
    Connection, FdMemory, Listing, Method, NodeSelector, discover_remembering,
    discover_to_ports_with,
};

const SIZES: [usize; 3] = [0, 1_000, 10_000];
/// Listeners the TIME_WAIT sockets are spread over (see `make_time_wait`).
const TIME_WAIT_LISTENERS: u8 = 64;
const NETNS_ENV: &str = "ROLECALL_BENCH_NETNS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold") {
        let pairs = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
        return hold(pairs);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("discovery benchmark: run it with `cargo bench --bench discovery`");
        return ExitCode::SUCCESS;
    }
    let netns = match std::env::var(NETNS_ENV).as_deref() {
        Ok("inside") => "a fresh network namespace".to_owned(),
        Ok("keep") => "the current network namespace (ROLECALL_BENCH_NETNS=keep)".to_owned(),
        _ => match unshare_flags() {
            Some(flags) => return rerun_in_new_netns(flags, &args),
            None => "the current network namespace (unshare -n and -rn both failed; counts \
                     include other sockets)"
                .to_owned(),
        },
    };
    run(&netns)
}

/// The `unshare` flags that make a network namespace with loopback up here, if any.
fn unshare_flags() -> Option<&'static str> {
    ["-n", "-rn"].into_iter().find(|flags| {
        Command::new("unshare")
            .args([flags, "ip", "link", "set", "lo", "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

fn rerun_in_new_netns(flags: &str, args: &[String]) -> ExitCode {
    let exe = std::env::current_exe().expect("current_exe");
    let status = Command::new("unshare")
        .args([flags, "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(&args[1..])
        .env(NETNS_ENV, "inside")
        .status()
        .expect("run unshare");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(netns: &str) -> ExitCode {
    let reps = std::env::var("ROLECALL_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31usize)
        .max(1);
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    println!("discovery benchmark in {netns}");
    println!(
        "discover_to_ports_with(&NodeSelector::Pid({}), ports, method), {reps} repetitions per \
         N and way, open-file limit {fd_limit}",
        std::process::id()
    );

    let node = NodeConnections::open();
    let ports = node.listener_ports();
    println!("filtered ways: ports {ports:?}");
    let bench = Bench {
        selector: NodeSelector::Pid(std::process::id()),
        ports,
        node,
        reps,
    };

    // The node's own sockets first, in the fresh namespace: it leaves no TIME_WAIT behind.
    let mut own_rows = Vec::new();
    for n in SIZES {
        // N sockets are N fds of this process, plus a few of its own.
        let established = n.min(limit.saturating_sub(64)) / 2 * 2;
        if established < n {
            println!("N={n}: only {established} node sockets fit the open-file limit");
        }
        let extra = NodePairs::open(established / 2);
        let before = sockstat();
        let mut row = bench.measure(n, before, true);
        row.after = sockstat();
        drop(extra);
        own_rows.push(row);
    }

    let mut rows = Vec::new();
    for n in SIZES {
        // The holder needs one fd per ESTABLISHED socket, plus a few of its own.
        let established = n.min(limit.saturating_sub(64)) / 2 * 2;
        if established < n {
            println!("N={n}: only {established} ESTABLISHED sockets fit the open-file limit");
        }
        let holder = Holder::start(established / 2);
        make_time_wait(n);
        let before = sockstat();
        let mut row = bench.measure(n, before, false);
        row.after = sockstat();
        drop(holder);
        rows.push(row);
    }
    println!();
    println!("Other processes hold N ESTABLISHED sockets, and the namespace N in TIME_WAIT:");
    print_table(&rows);
    println!();
    println!("The node holds N extra ESTABLISHED sockets (N/2 pairs, both ends):");
    print_own_table(&own_rows);
    ExitCode::SUCCESS
}

/// The ways of discovery the benchmark times, rotating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Proc,
    Netlink,
    NetlinkPorts,
    ProcPorts,
}

impl Way {
    const ALL: [Way; 4] = [Way::Proc, Way::Netlink, Way::NetlinkPorts, Way::ProcPorts];

    fn method(self) -> Method {
        match self {
            Way::Proc | Way::ProcPorts => Method::Proc,
            Way::Netlink | Way::NetlinkPorts => Method::Netlink,
        }
    }

    fn filtered(self) -> bool {
        matches!(self, Way::NetlinkPorts | Way::ProcPorts)
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct Bench {
    selector: NodeSelector,
    ports: BTreeSet<u16>,
    node: NodeConnections,
    reps: usize,
}

impl Bench {
    /// Times every [`Way`] `reps` times (after one untimed round each, so all start with warm
    /// caches), checking the answers at every repetition; with `scan`, also the read of the
    /// node's `/proc/PID/fd` alone.
    fn measure(&self, n: usize, before: SockStat, scan: bool) -> Row {
        let mut ms: [Vec<f64>; 4] = Default::default();
        let mut scan_ms = Vec::new();
        let mut remembered_ms = Vec::new();
        let mut memory = FdMemory::default();
        let mut steady_ms = Vec::new();
        let mut steady_memory = FdMemory::default();
        let mut order = Way::ALL;
        let no_ports = BTreeSet::new();
        for rep in 0..=self.reps {
            let mut found: [Vec<Connection>; 4] = Default::default();
            for way in order {
                let ports = if way.filtered() {
                    &self.ports
                } else {
                    &no_ports
                };
                let method = way.method();
                let start = Instant::now();
                let (sockets, used) = discover_to_ports_with(&self.selector, ports, method)
                    .unwrap_or_else(|err| panic!("discover by {method}: {err}"));
                let elapsed = start.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(used, method);
                if rep > 0 {
                    ms[way.index()].push(elapsed);
                }
                found[way.index()] = sockets.connections;
            }
            // The daemon's way: ports, and the fds read again only when the candidate
            // sockets change (after the first, untimed round: never here).
            let start = Instant::now();
            let remembered =
                discover_remembering(&self.selector, &self.ports, &mut memory, Listing::Always)
                    .unwrap_or_else(|err| panic!("discover remembering: {err}"));
            if rep > 0 {
                remembered_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            // The daemon in steady state: the known connections confirmed by exact lookups,
            // the namespace listed every DUMP_EVERY.
            let start = Instant::now();
            let steady = discover_remembering(
                &self.selector,
                &self.ports,
                &mut steady_memory,
                Listing::KnownMayDo,
            )
            .unwrap_or_else(|err| panic!("discover in steady state: {err}"));
            if rep > 0 {
                steady_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            if scan {
                let start = Instant::now();
                let sockets = scan_fds();
                let elapsed = start.elapsed().as_secs_f64() * 1000.0;
                assert!(sockets >= n + 6, "{sockets} socket links for N={n}");
                if rep > 0 {
                    scan_ms.push(elapsed);
                }
            }
            let [by_proc, by_netlink, netlink_ports, proc_ports] = &found;
            assert_eq!(by_proc, by_netlink, "the methods disagree");
            assert!(by_proc.len() >= 6 + if scan { n } else { 0 });
            self.node.assert_found(by_proc);
            let restricted: Vec<Connection> = by_proc
                .iter()
                .filter(|c| self.ports.contains(&c.remote.port()))
                .copied()
                .collect();
            assert_eq!(restricted.len(), 3, "{restricted:?}");
            assert_eq!(netlink_ports, &restricted, "netlink filtered");
            assert_eq!(proc_ports, &restricted, "/proc filtered");
            assert_eq!(remembered.connections, restricted, "remembering");
            assert_eq!(steady.connections, restricted, "steady state");
            order.rotate_left(1);
        }
        let [proc, netlink, netlink_ports, proc_ports] = ms.map(Summary::of);
        Row {
            n,
            before,
            after: before,
            proc,
            netlink,
            netlink_ports,
            proc_ports,
            scan: (!scan_ms.is_empty()).then(|| Summary::of(scan_ms)),
            remembered: Summary::of(remembered_ms),
            full_scans: memory.full_scans,
            steady: Summary::of(steady_ms),
            confirmed: steady_memory.confirmed,
        }
    }
}

/// Reads the links of this process's `/proc/PID/fd` as discovery does, and counts the sockets.
fn scan_fds() -> usize {
    let dir = format!("/proc/{}/fd", std::process::id());
    let mut sockets = 0;
    for entry in std::fs::read_dir(&dir).expect("read /proc/PID/fd") {
        let entry = entry.expect("list /proc/PID/fd");
        if let Ok(target) = std::fs::read_link(entry.path())
            && target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:[")
        {
            sockets += 1;
        }
    }
    sockets
}

struct Row {
    n: usize,
    before: SockStat,
    after: SockStat,
    proc: Summary,
    netlink: Summary,
    netlink_ports: Summary,
    proc_ports: Summary,
    scan: Option<Summary>,
    /// [`discover_remembering`] with ports: what the daemon does at each check.
    remembered: Summary,
    full_scans: u64,
    /// [`discover_remembering`] in steady state ([`Listing::KnownMayDo`]).
    steady: Summary,
    /// Of its calls, those answered by exact lookups (no dump).
    confirmed: u64,
}

fn print_table(rows: &[Row]) {
    println!(
        "| N | TIME_WAIT in ns | TCP in use in ns | /proc median (min–max) | netlink median \
         (min–max) | netlink, ports median (min–max) | /proc, ports median (min–max) | /proc ÷ \
         netlink | netlink ÷ netlink, ports | remembering median (min–max) | steady state \
         (daemon) median (min–max) | steady calls without a dump |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {}–{} | {}–{} | {} | {} | {} | {} | {:.1}× | {:.1}× | {} | {} | {} |",
            row.n,
            row.before.tw,
            row.after.tw,
            row.before.inuse,
            row.after.inuse,
            row.proc,
            row.netlink,
            row.netlink_ports,
            row.proc_ports,
            row.proc.median / row.netlink.median,
            row.netlink.median / row.netlink_ports.median,
            row.remembered,
            row.steady,
            row.confirmed,
        );
    }
}

fn print_own_table(rows: &[Row]) {
    println!(
        "| N (node's) | TIME_WAIT in ns | TCP in use in ns | /proc/PID/fd scan alone median \
         (min–max) | /proc median (min–max) | netlink median (min–max) | netlink, ports median \
         (min–max) | /proc, ports median (min–max) | scan µs per extra socket | netlink, ports \
         µs per extra socket | remembering median (min–max) | full fd reads | steady state \
         (daemon) median (min–max) | steady calls without a dump |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = rows.first();
    let per_socket = |row: &Row, value: fn(&Row) -> f64| match base {
        Some(base) if row.n > 0 => {
            format!("{:.2}", (value(row) - value(base)) * 1000.0 / row.n as f64)
        }
        _ => "–".to_owned(),
    };
    let scan_median = |row: &Row| row.scan.as_ref().map_or(f64::NAN, |s| s.median);
    for row in rows {
        let scan = row
            .scan
            .as_ref()
            .map_or_else(|| "–".to_owned(), ToString::to_string);
        println!(
            "| {} | {}–{} | {}–{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.n,
            row.before.tw,
            row.after.tw,
            row.before.inuse,
            row.after.inuse,
            scan,
            row.proc,
            row.netlink,
            row.netlink_ports,
            row.proc_ports,
            per_socket(row, scan_median),
            per_socket(row, |row| row.netlink_ports.median),
            row.remembered,
            row.full_scans,
            row.steady,
            row.confirmed,
        );
    }
}

struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(mut ms: Vec<f64>) -> Summary {
        ms.sort_by(f64::total_cmp);
        Summary {
            median: ms[ms.len() / 2],
            min: ms[0],
            max: ms[ms.len() - 1],
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} ms ({:.3}–{:.3})", self.median, self.min, self.max)
    }
}

/// The `TCP:` line of `/proc/net/sockstat`, which counts the sockets of this process's network
/// namespace.
#[derive(Clone, Copy, Default)]
struct SockStat {
    inuse: u64,
    tw: u64,
}

fn sockstat() -> SockStat {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let mut stat = SockStat::default();
    if let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        for pair in fields[1..].chunks_exact(2) {
            let value = pair[1].parse().unwrap_or(0);
            match pair[0] {
                "inuse" => stat.inuse = value,
                "tw" => stat.tw = value,
                _ => {}
            }
        }
    }
    stat
}

/// Tops the namespace's TIME_WAIT sockets up to at least `n`: connect, accept, close the
/// accepted end first (so the TIME_WAIT is on the listener's side and frees the client's port),
/// then the client.
///
/// A new connection from a client port that a TIME_WAIT socket of the same listener still
/// names would take that socket over (RFC 6191), so the connections are spread over
/// [`TIME_WAIT_LISTENERS`] listeners on different loopback addresses. Bounded: at most three
/// rounds.
fn make_time_wait(n: usize) {
    let listeners: Vec<TcpListener> = (0..TIME_WAIT_LISTENERS)
        .map(|i| {
            TcpListener::bind((Ipv4Addr::new(127, 0, 1, i + 1), 0)).expect("bind on 127.0.1.x")
        })
        .collect();
    for _ in 0..3 {
        let have = usize::try_from(sockstat().tw).unwrap_or(usize::MAX);
        if have >= n {
            return;
        }
        for i in 0..n - have {
            let listener = &listeners[i % listeners.len()];
            let target = listener.local_addr().unwrap();
            let client = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .unwrap_or_else(|err| panic!("connect to {target}: {err}"));
            let (server, _) = listener.accept().expect("accept");
            drop(server);
            drop(client);
        }
    }
}

/// A child process (this benchmark, `--hold PAIRS`) holding `2 * PAIRS` ESTABLISHED loopback
/// sockets: sockets of the namespace that are not the node's. Killed on drop.
struct Holder(Child);

impl Holder {
    fn start(pairs: usize) -> Holder {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(["--hold", &pairs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the holder");
        let stdout = child.stdout.take().unwrap();
        let holder = Holder(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.trim() == "ready" => holder,
            other => panic!("the holder of {pairs} pairs did not get ready: {other:?}"),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback listener and `pairs` connected pairs to it, both ends of each.
fn open_pairs(pairs: usize) -> (TcpListener, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let target = listener.local_addr().unwrap();
    let mut held = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let client = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("connect to {target}: {err}"));
        let (server, _) = listener.accept().expect("accept");
        held.push(client);
        held.push(server);
    }
    (listener, held)
}

/// The holder's side: open `pairs` connected pairs, say `ready`, and keep them until stdin
/// closes (the parent exits or kills it).
fn hold(pairs: usize) -> ExitCode {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (_listener, held) = open_pairs(pairs);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
    ExitCode::SUCCESS
}

/// The node's own connections: both ends of an IPv4, an IPv6 and an IPv4-to-dual-stack pair.
struct NodeConnections {
    pairs: Vec<(TcpStream, TcpStream, TcpListener)>,
}

impl NodeConnections {
    fn open() -> NodeConnections {
        let pairs = [
            ("127.0.0.1:0", None),
            ("[::1]:0", None),
            ("[::]:0", Some("127.0.0.1")),
        ]
        .into_iter()
        .map(|(listen_on, connect_host)| {
            let listener = TcpListener::bind(listen_on).expect("bind a node listener");
            let mut target = listener.local_addr().unwrap();
            if let Some(host) = connect_host {
                target.set_ip(host.parse().unwrap());
            }
            let client =
                TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (client, server, listener)
        })
        .collect();
        NodeConnections { pairs }
    }

    /// The ports of the node's three listeners: the remote ports of its client ends.
    fn listener_ports(&self) -> BTreeSet<u16> {
        self.pairs
            .iter()
            .map(|(_, _, listener)| listener.local_addr().unwrap().port())
            .collect()
    }

    fn assert_found(&self, found: &[Connection]) {
        for (client, server, _) in &self.pairs {
            for stream in [client, server] {
                let want = Connection {
                    local: plain(stream.local_addr().unwrap()),
                    remote: plain(stream.peer_addr().unwrap()),
                };
                assert!(found.contains(&want), "{want:?} not found");
            }
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, as discovery reports it.
fn plain(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => address,
        },
        SocketAddr::V4(_) => address,
    }
}

/// `pairs` connected loopback pairs held by this process (the node), to a listener of their
/// own. On drop every socket is closed with a reset (`SO_LINGER` 0), which leaves no TIME_WAIT.
struct NodePairs {
    held: Vec<TcpStream>,
    _listener: TcpListener,
}

impl NodePairs {
    fn open(pairs: usize) -> NodePairs {
        let (listener, held) = open_pairs(pairs);
        NodePairs {
            held,
            _listener: listener,
        }
    }
}

impl Drop for NodePairs {
    fn drop(&mut self) {
        for stream in &self.held {
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
    }
}
