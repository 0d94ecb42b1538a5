//! [`DemoNode`]: the `rolecall-demo-node` binary as a separate process, so rolecall finds its
//! sockets by pid. Stdout lines (`connected ADDR`, `subscribed ADDR`, `ready`, `acked N`) are
//! collected by a thread; stderr goes to a file in the node's temp dir. [`NodeOptions`] starts
//! one with passwords (handed over in environment variables, never on its command line) and
//! under a [`PrivateHosts`], for servers and sentinels named by hostnames.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::hosts::{PrivateHosts, command_for};
use super::process::{Proc, tail};
use super::topology::Topology;
use super::wait_for_or_dump;

/// Connecting and printing `ready` (milliseconds normally).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The environment variables the harness hands the node's passwords in (named to it with
/// `--password-env` / `--sentinel-password-env`).
const PASSWORD_ENV: &str = "ROLECALL_DEMO_PASSWORD";
const SENTINEL_PASSWORD_ENV: &str = "ROLECALL_DEMO_SENTINEL_PASSWORD";

/// How to start a [`DemoNode`] beyond its mode and addresses: the data servers' password
/// (`AUTH` on its command, subscriber and read connections), the sentinels' password (`AUTH`
/// on its connections to sentinels), and a [`PrivateHosts`] to resolve names through.
/// Addresses are `HOST:PORT` text here, so that a node can be given hostnames.
///
/// ```ignore
/// let node = NodeOptions::new().hosts(&hosts).password("pw").pin("redis-node-0.example:6379");
/// ```
#[derive(Clone, Default)]
pub struct NodeOptions {
    hosts: Option<PrivateHosts>,
    password: Option<String>,
    sentinel_password: Option<String>,
}

impl NodeOptions {
    pub fn new() -> NodeOptions {
        NodeOptions::default()
    }

    /// Runs the node with `hosts` as its `/etc/hosts`: it resolves `HOST:PORT` (its `--addr`
    /// on every redial, and the sentinels' answers) through the system resolver.
    pub fn hosts(mut self, hosts: &PrivateHosts) -> Self {
        self.hosts = Some(hosts.clone());
        self
    }

    /// The data servers' password (`--password-env`).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The sentinels' password (`--sentinel-password-env`).
    pub fn sentinel_password(mut self, password: &str) -> Self {
        self.sentinel_password = Some(password.to_owned());
        self
    }

    /// `pin --addr ADDR`: writes to `addr` and only ever redials `addr` (re-resolving a
    /// hostname each time).
    pub fn pin(self, addr: &str) -> DemoNode {
        self.start("pin", &["pin", "--addr", addr])
    }

    /// `pin --addr ADDR --pubsub-addr PUBSUB`.
    pub fn pin_with_pubsub(self, addr: &str, pubsub: &str) -> DemoNode {
        self.start("pinsub", &["pin", "--addr", addr, "--pubsub-addr", pubsub])
    }

    /// `pin --addr ADDR --read-addr READ`.
    pub fn pin_with_reads(self, addr: &str, read: &str) -> DemoNode {
        self.start("pinread", &["pin", "--addr", addr, "--read-addr", read])
    }

    /// `follow`: asks these sentinels (`HOST:PORT` each) for `master_name` before every
    /// connection.
    pub fn follow(self, sentinels: &[String], master_name: &str) -> DemoNode {
        self.follow_args("follow", sentinels, master_name, &[])
    }

    /// `follow --watch`: also subscribed to `+switch-master` on a sentinel.
    pub fn follow_watching(self, sentinels: &[String], master_name: &str) -> DemoNode {
        self.follow_args("watch", sentinels, master_name, &["--watch"])
    }

    fn follow_args(
        self,
        kind: &str,
        sentinels: &[String],
        master_name: &str,
        extra: &[&str],
    ) -> DemoNode {
        let mut args = vec!["follow", "--master-name", master_name];
        args.extend_from_slice(extra);
        for s in sentinels {
            args.extend(["--sentinel", s]);
        }
        self.start(kind, &args)
    }

    /// Runs the binary with `args` plus a unique `--name` (from `kind`) and the password
    /// options, and waits for `ready`.
    pub fn start(self, kind: &str, args: &[&str]) -> DemoNode {
        DemoNode::launch(kind, args, &self)
    }
}

/// A running `rolecall-demo-node`, SIGKILLed on drop.
pub struct DemoNode {
    proc: Proc,
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
    _dir: TempDir,
}

impl DemoNode {
    /// `pin --addr ADDR`: writes to `addr` and only ever redials `addr`.
    pub fn pin(addr: SocketAddr) -> DemoNode {
        DemoNode::start("pin", &["pin", "--addr", &addr.to_string()])
    }

    /// `pin --addr ADDR --pubsub-addr PUBSUB`: also a subscriber connection, only ever
    /// redialled to `pubsub`.
    pub fn pin_with_pubsub(addr: SocketAddr, pubsub: SocketAddr) -> DemoNode {
        DemoNode::start(
            "pinsub",
            &[
                "pin",
                "--addr",
                &addr.to_string(),
                "--pubsub-addr",
                &pubsub.to_string(),
            ],
        )
    }

    /// `pin --addr ADDR --read-addr READ`: also a read connection (`GET` every interval), only
    /// ever redialled to `read`: a node reading from a replica on purpose.
    pub fn pin_with_reads(addr: SocketAddr, read: SocketAddr) -> DemoNode {
        DemoNode::start(
            "pinread",
            &[
                "pin",
                "--addr",
                &addr.to_string(),
                "--read-addr",
                &read.to_string(),
            ],
        )
    }

    /// `follow`: asks the topology's sentinels for the master before every connection.
    pub fn follow(topology: &Topology) -> DemoNode {
        DemoNode::follow_sentinels(&topology.sentinel_addrs(), topology.master_name())
    }

    /// `follow --watch`: also subscribed to `+switch-master` on a sentinel, so it moves as soon
    /// as the failover is announced (one more socket, to a sentinel).
    pub fn follow_watching(topology: &Topology) -> DemoNode {
        DemoNode::follow_args(
            "watch",
            &topology.sentinel_addrs(),
            topology.master_name(),
            &["--watch"],
        )
    }

    /// `follow --watch --pubsub-addr PUBSUB`: commands follow Sentinel and move at
    /// `+switch-master`; the subscriber stays on `pubsub`, only ever redialled there.
    pub fn follow_watching_with_pubsub(topology: &Topology, pubsub: SocketAddr) -> DemoNode {
        DemoNode::follow_args(
            "watchsub",
            &topology.sentinel_addrs(),
            topology.master_name(),
            &["--watch", "--pubsub-addr", &pubsub.to_string()],
        )
    }

    pub fn follow_sentinels(sentinels: &[SocketAddr], master_name: &str) -> DemoNode {
        DemoNode::follow_args("follow", sentinels, master_name, &[])
    }

    fn follow_args(
        kind: &str,
        sentinels: &[SocketAddr],
        master_name: &str,
        extra: &[&str],
    ) -> DemoNode {
        let sentinels: Vec<String> = sentinels.iter().map(SocketAddr::to_string).collect();
        NodeOptions::new().follow_args(kind, &sentinels, master_name, extra)
    }

    /// Runs the binary with `args` plus a unique `--name` (from `kind`), and waits for `ready`.
    pub fn start(kind: &str, args: &[&str]) -> DemoNode {
        NodeOptions::new().start(kind, args)
    }

    /// Options for a node with passwords or a private hosts file: see [`NodeOptions`].
    pub fn options() -> NodeOptions {
        NodeOptions::new()
    }

    fn launch(kind: &str, args: &[&str], options: &NodeOptions) -> DemoNode {
        let name = format!("{kind}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-node-")
            .tempdir()
            .expect("create a temp dir");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = command_for(
            options.hosts.as_ref(),
            env!("CARGO_BIN_EXE_rolecall-demo-node"),
        );
        cmd.args(args).args(["--name", &name]);
        if let Some(password) = &options.password {
            cmd.args(["--password-env", PASSWORD_ENV])
                .env(PASSWORD_ENV, password);
        }
        if let Some(password) = &options.sentinel_password {
            cmd.args(["--sentinel-password-env", SENTINEL_PASSWORD_ENV])
                .env(SENTINEL_PASSWORD_ENV, password);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create stderr.log"));
        let what = match options.hosts {
            Some(_) => format!("rolecall-demo-node {name} (private hosts)"),
            None => format!("rolecall-demo-node {name}"),
        };
        let mut proc = Proc::spawn(cmd, what);
        let stdout = proc.take_stdout();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        // Drains stdout so the node never blocks on a full pipe; ends at EOF (node exit).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut node = DemoNode {
            proc,
            name,
            lines,
            stderr,
            _dir: dir,
        };
        node.wait_for_line(READY_TIMEOUT, |l| l == "ready");
        node
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The `--name` it runs with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `CLIENT SETNAME` of its command connection.
    pub fn client_name(&self) -> String {
        format!("rolecall-demo-{}", self.name)
    }

    /// `CLIENT SETNAME` of its subscriber connection (`pin --pubsub-addr`).
    pub fn subscriber_client_name(&self) -> String {
        format!("rolecall-demo-{}-sub", self.name)
    }

    /// `CLIENT SETNAME` of its read connection (`pin --read-addr`).
    pub fn read_client_name(&self) -> String {
        format!("rolecall-demo-{}-read", self.name)
    }

    /// `CLIENT SETNAME` of its `+switch-master` subscription on a sentinel (`follow --watch`).
    pub fn watch_client_name(&self) -> String {
        format!("rolecall-demo-{}-watch", self.name)
    }

    /// The key it INCRs.
    pub fn count_key(&self) -> String {
        format!("rolecall-demo:{}:count", self.name)
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The addresses of its `connected ADDR` lines, oldest first: resolved addresses, also for
    /// a node given hostnames.
    pub fn connections(&self) -> Vec<SocketAddr> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("connected ")?.parse().ok())
            .collect()
    }

    /// Waits for a stdout line matching `pred` (already printed or yet to come) and returns it;
    /// panics with its stderr if it times out or the node exits.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let (name, lines, stderr) = (
            self.name.clone(),
            Arc::clone(&self.lines),
            self.stderr.clone(),
        );
        let mut exited = None;
        wait_for_or_dump(
            timeout,
            &format!("a matching stdout line from demo node {name}"),
            || {
                if let Some(l) = lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return Some(l.clone());
                }
                exited = self.proc.try_wait();
                // Exited: let the collector thread drain the pipe, then give up.
                if exited.is_some() {
                    std::thread::sleep(Duration::from_millis(50));
                    if let Some(l) = lines.lock().unwrap().iter().find(|l| pred(l)) {
                        return Some(l.clone());
                    }
                    panic!(
                        "demo node {name} exited ({exited:?})\n{}",
                        report(&name, &lines, &stderr)
                    );
                }
                None
            },
            || report(&name, &lines, &stderr),
        )
    }

    /// Its stdout so far and the tail of its stderr.
    pub fn report(&self) -> String {
        report(&self.name, &self.lines, &self.stderr)
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr, lines)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// SIGTERM, then the `acked N` it prints as it exits.
    pub fn terminate(&mut self) -> u64 {
        self.proc.signal(libc::SIGTERM);
        let line = self.wait_for_line(EXIT_TIMEOUT, |l| l.starts_with("acked "));
        let status: Option<ExitStatus> = self.proc.wait_exit(EXIT_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "demo node {} did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.name,
            self.report()
        );
        line["acked ".len()..].parse().expect("acked N")
    }

    pub fn stop(&mut self) {
        self.proc.signal(libc::SIGSTOP);
    }

    pub fn cont(&mut self) {
        self.proc.signal(libc::SIGCONT);
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

fn report(name: &str, lines: &Mutex<Vec<String>>, stderr: &std::path::Path) -> String {
    format!(
        "--- demo node {name} stdout ---\n{}\n--- stderr ---\n{}",
        lines.lock().unwrap().join("\n"),
        tail(stderr, 40)
    )
}
