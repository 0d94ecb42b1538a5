//! [`RedisServer`] and [`Sentinel`]: one `redis-server` / `redis-sentinel` process each, on a
//! free loopback port, with its own temp dir and log file, killed on drop; plus `call`, a sync
//! one-command client (redis-rs) with bounded connect and read times.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;
use tempfile::TempDir;

use super::hosts::{PrivateHosts, command_for};
use super::peer::{Peer, Software};
use super::process::{Proc, free_port_on, tail};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a server may take to answer its first PING (a loaded CI machine can be slow to
/// exec and map a binary; a healthy start takes a few milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at a fresh port when the one picked was taken before the server bound it.
const PORT_ATTEMPTS: usize = 5;
/// Per-command bounds of [`call`]: long enough for a loaded machine, short enough that a
/// SIGSTOPped server costs a test only a few seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const LOG_TAIL_LINES: usize = 40;

/// Runs one command on the server at `addr` on a fresh connection (connect and read bounded by
/// 3 s). Server error replies come back as `Err`.
pub fn call(addr: SocketAddr, args: &[&str]) -> redis::RedisResult<Value> {
    call_timeout(addr, args, CALL_TIMEOUT)
}

/// [`call`] with its own bound for connecting and for each read and write.
pub fn call_timeout(
    addr: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> redis::RedisResult<Value> {
    call_auth_timeout(addr, None, args, timeout)
}

/// [`call`] to a server with a password (`requirepass`): `AUTH password` first when given.
pub fn call_auth(
    addr: SocketAddr,
    password: Option<&str>,
    args: &[&str],
) -> redis::RedisResult<Value> {
    call_auth_timeout(addr, password, args, CALL_TIMEOUT)
}

/// [`call_auth`] with its own bound for connecting and for each read and write.
pub fn call_auth_timeout(
    addr: SocketAddr,
    password: Option<&str>,
    args: &[&str],
    timeout: Duration,
) -> redis::RedisResult<Value> {
    use redis::IntoConnectionInfo as _;
    let (name, rest) = args.split_first().expect("a command");
    let mut info = format!("redis://{addr}/").into_connection_info()?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    let mut cmd = redis::cmd(name);
    for arg in rest {
        cmd.arg(*arg);
    }
    cmd.query(&mut con)
}

/// A reply as text, roughly as `redis-cli` prints it: arrays one item per line (nested ones
/// indented), maps as `key: value` lines.
pub fn value_to_string(value: &Value) -> String {
    fn write(out: &mut String, value: &Value, indent: usize) {
        let pad = " ".repeat(indent);
        match value {
            Value::Nil => out.push_str("(nil)"),
            Value::Int(n) => write!(out, "{n}").unwrap(),
            Value::BulkString(b) => out.push_str(&String::from_utf8_lossy(b)),
            Value::SimpleString(s) => out.push_str(s),
            Value::Okay => out.push_str("OK"),
            Value::Double(d) => write!(out, "{d}").unwrap(),
            Value::Boolean(b) => write!(out, "{b}").unwrap(),
            Value::VerbatimString { text, .. } => out.push_str(text),
            Value::ServerError(e) => write!(out, "(error) {e:?}").unwrap(),
            Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                        out.push_str(&pad);
                    }
                    if matches!(item, Value::Array(_) | Value::Map(_)) {
                        out.push_str("-\n");
                        out.push_str(&pad);
                        out.push_str("  ");
                        write(out, item, indent + 2);
                    } else {
                        write(out, item, indent);
                    }
                }
            }
            Value::Map(pairs) => {
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                        out.push_str(&pad);
                    }
                    write(out, k, indent);
                    out.push_str(": ");
                    write(out, v, indent + 2);
                }
            }
            other => write!(out, "{other:?}").unwrap(),
        }
    }
    let mut out = String::new();
    write(&mut out, value, 0);
    out
}

/// A reply on one line: scalars as text, arrays as `[a, b, [c, d]]`. For dumps.
pub fn value_to_line(value: &Value) -> String {
    match value {
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => format!(
            "[{}]",
            items
                .iter()
                .map(value_to_line)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Map(pairs) => format!(
            "{{{}}}",
            pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", value_to_line(k), value_to_line(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => value_to_string(other).replace('\n', "\\n"),
    }
}

/// A role word in the harness's spelling: `master` or `slave` (as Redis and Valkey 8 say in
/// `ROLE`, `INFO replication` and Sentinel's flags) also where a server says `primary` or
/// `replica`; any other word as it is.
pub fn role_word(word: &str) -> &str {
    match word {
        "primary" => "master",
        "replica" => "slave",
        other => other,
    }
}

/// `INFO` text as a map of `field -> value` (section headers and blank lines dropped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `CLIENT LIST` text: one map per line of `key=value` fields.
pub fn parse_kv_lines(text: &str) -> Vec<BTreeMap<String, String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// A flat `[k1, v1, k2, v2, ...]` array (or a RESP3 map) as a map, as `SENTINEL MASTERS`,
/// `SENTINEL replicas` and `SENTINEL sentinels` return each instance.
pub(crate) fn flat_pairs(value: &Value) -> BTreeMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| (value_to_string(&kv[0]), value_to_string(&kv[1])))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| (value_to_string(k), value_to_string(v)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A list of instances (`SENTINEL replicas NAME` and the like) as one map each.
pub(crate) fn instances(value: &Value) -> Vec<BTreeMap<String, String>> {
    match value {
        Value::Array(items) => items.iter().map(flat_pairs).collect(),
        _ => Vec::new(),
    }
}

/// An `[ip, port]` reply (`SENTINEL get-master-addr-by-name`) as an address.
pub(crate) fn addr_reply(value: &Value) -> Option<SocketAddr> {
    match value {
        Value::Array(items) if items.len() == 2 => {
            let ip: IpAddr = value_to_string(&items[0]).parse().ok()?;
            let port: u16 = value_to_string(&items[1]).parse().ok()?;
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

/// A `[host, port]` reply (`SENTINEL get-master-addr-by-name`) as `HOST:PORT` text, the host
/// as the sentinel names it (an IP address, or a hostname with `announce-hostnames yes`).
pub(crate) fn host_port_reply(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) if items.len() == 2 => {
            let host = value_to_string(&items[0]);
            let port: u16 = value_to_string(&items[1]).parse().ok()?;
            Some(host_port(&host, port))
        }
        _ => None,
    }
}

/// `HOST:PORT`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The process, port, temp dir and log of one server or sentinel.
struct Instance {
    proc: Proc,
    /// `redis-server`, `valkey-server --sentinel`, ... (for messages).
    what: String,
    ip: IpAddr,
    port: u16,
    /// What the harness's own client sends with `AUTH` (the instance's `requirepass`).
    password: Option<String>,
    dir: TempDir,
    log: PathBuf,
    /// stdout and stderr, where a server writes what happens before its log file is open
    /// (a config error, say).
    stdio: PathBuf,
}

impl Instance {
    /// Starts `what` with the command `make(port, dir)` builds, on a fresh port, and waits
    /// until it answers PING at `ip`. Retries on another port if the one picked was taken
    /// meanwhile.
    ///
    /// `make` gives the program and its arguments only: the caller's `hosts` (if any) wraps it
    /// (see [`PrivateHosts::wrap`]), and the working directory and stdio are set here. The
    /// PINGs authenticate with `password`.
    fn start(
        what: &str,
        ip: IpAddr,
        password: Option<&str>,
        hosts: Option<&PrivateHosts>,
        mut make: impl FnMut(u16, &Path) -> Command,
    ) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-")
            .tempdir()
            .expect("create a temp dir");
        let log = dir.path().join("redis.log");
        let stdio = dir.path().join("stdio.log");
        let what = match hosts {
            Some(_) => format!("{what} (private hosts)"),
            None => what.to_owned(),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port_on(ip);
            let _ = std::fs::remove_file(&log);
            let out = std::fs::File::create(&stdio).expect("create stdio.log");
            let made = make(port, dir.path());
            let mut cmd = match hosts {
                Some(h) => h.wrap(&made),
                None => made,
            };
            cmd.current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup stdio.log"))
                .stderr(out);
            let mut proc = Proc::spawn(cmd, format!("{what} on port {port}"));
            let addr = SocketAddr::new(ip, port);
            let started = Instant::now();
            loop {
                if let Some(status) = proc.try_wait() {
                    let log_tail = tail(&log, LOG_TAIL_LINES);
                    if log_tail.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        break;
                    }
                    panic!(
                        "{what} on port {port} exited ({status}) before answering PING\n\
                         --- log ---\n{log_tail}\n--- stdout/stderr ---\n{}",
                        tail(&stdio, LOG_TAIL_LINES)
                    );
                }
                if call_auth_timeout(addr, password, &["PING"], Duration::from_secs(1)).is_ok() {
                    return Instance {
                        proc,
                        what,
                        ip,
                        port,
                        password: password.map(str::to_owned),
                        dir,
                        log,
                        stdio,
                    };
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "{what} on port {port} did not answer PING within {START_TIMEOUT:?}\n\
                     --- log ---\n{}\n--- stdout/stderr ---\n{}",
                    tail(&log, LOG_TAIL_LINES),
                    tail(&stdio, LOG_TAIL_LINES)
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        unreachable!("the last attempt panics instead of retrying")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut out = tail(&self.log, lines);
        let stdio = tail(&self.stdio, lines);
        if !stdio.trim().is_empty() {
            out.push_str("\n--- stdout/stderr ---\n");
            out.push_str(&stdio);
        }
        out
    }

    /// What it says it is (`INFO server`); panics if it does not answer or names no version.
    fn software(&self) -> Software {
        let info = parse_info(&value_to_string(&self.cli(&["INFO", "server"])));
        Software::from_info(&info)
            .unwrap_or_else(|| panic!("INFO server on {} names no version: {info:?}", self.addr()))
    }

    /// Panics (killing it) unless it says it is `peer` in `mode`: the harness never runs one
    /// peer where the test asked for the other. Asks `HELLO` (no arguments: the protocol stays
    /// as it is), else `INFO server`; a server that has both renamed away (a test's choice) was
    /// still started from a binary whose `--version` names the peer (see `Peer::check_binary`).
    fn check_peer(&self, peer: Peer, mode: &str) {
        let said = self
            .call(&["HELLO"])
            .ok()
            .and_then(|v| Software::from_hello(&flat_pairs(&v)))
            .or_else(|| {
                let info = self.call(&["INFO", "server"]).ok()?;
                Software::from_info(&parse_info(&value_to_string(&info)))
            });
        if let Some(software) = said {
            software.check(peer, mode, &format!("{} ({})", self.what, self.addr()));
        }
    }

    /// One command through the harness's client, with `AUTH` if the instance has a password.
    fn call(&self, args: &[&str]) -> redis::RedisResult<Value> {
        call_auth(self.addr(), self.password.as_deref(), args)
    }

    fn cli(&self, args: &[&str]) -> Value {
        self.call(args).unwrap_or_else(|e| {
            panic!("{args:?} on {}: {e}", self.addr());
        })
    }
}

/// Builds a [`RedisServer`]; see [`RedisServer::builder`]. Defaults: a standalone master on
/// 127.0.0.1, no password, the machine's `/etc/hosts`.
pub struct RedisServerBuilder {
    ip: IpAddr,
    also_bind: Vec<IpAddr>,
    args: Vec<String>,
    password: Option<String>,
    hosts: Option<PrivateHosts>,
}

impl RedisServerBuilder {
    /// The address it listens on and the harness talks to (its first `bind` address, which is
    /// also the source address of its own connections, to a master say).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// One more address to listen on (the same port): e.g. where a pod's hostname can be
    /// re-pointed while the server keeps answering on its first address.
    pub fn also_bind(mut self, ip: IpAddr) -> Self {
        self.also_bind.push(ip);
        self
    }

    /// More command-line options, e.g. `&["--replica-announce-ip", "node-0.example"]`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `--requirepass PASSWORD`; the harness's own client ([`RedisServer::cli`] and the rest)
    /// then sends `AUTH PASSWORD`.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// `--masterauth PASSWORD`: what it sends to its master as a replica.
    pub fn masterauth(self, password: &str) -> Self {
        self.args(&["--masterauth", password])
    }

    /// `--replicaof HOST PORT` (`host` may be a hostname, resolved by the server itself).
    pub fn replica_of(self, host: &str, port: u16) -> Self {
        self.args(&["--replicaof", host, &port.to_string()])
    }

    /// Runs it with `hosts` as its `/etc/hosts` (see [`PrivateHosts`]).
    pub fn hosts(mut self, hosts: &PrivateHosts) -> Self {
        self.hosts = Some(hosts.clone());
        self
    }

    /// Starts it on a free port and waits until it answers PING (see
    /// [`RedisServer::wait_link_up`] for a replica's sync).
    pub fn start(self) -> RedisServer {
        let peer = Peer::current();
        let bin = peer.server_bin();
        let debug = peer.check_binary(&bin).takes_enable_debug_command();
        let ip = self.ip;
        // One argument each: redis-server quotes an argument with a space as one word.
        let mut bind = vec![ip.to_string()];
        bind.extend(self.also_bind.iter().map(IpAddr::to_string));
        let inner = Instance::start(
            peer.server_label(),
            ip,
            self.password.as_deref(),
            self.hosts.as_ref(),
            |port, dir| {
                let mut cmd = Command::new(&bin);
                cmd.args(["--port", &port.to_string(), "--bind"])
                    .args(&bind)
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .arg("--dir")
                    .arg(dir)
                    .arg("--logfile")
                    .arg(dir.join("redis.log"));
                // Redis 7 waits 5 s for more replicas before a diskless full sync; with one
                // replica at a time that only slows every sync (and every demotion) down.
                cmd.args(["--repl-diskless-sync-delay", "0"]);
                if debug {
                    cmd.args(["--enable-debug-command", "yes"]);
                }
                if !ip.is_loopback() {
                    cmd.args(["--protected-mode", "no"]);
                }
                if let Some(password) = &self.password {
                    cmd.args(["--requirepass", password]);
                }
                cmd.args(&self.args);
                cmd
            },
        );
        inner.check_peer(peer, "standalone");
        RedisServer { inner }
    }
}

/// One `redis-server` on a free loopback port: no persistence, its own temp dir and log,
/// `repl-diskless-sync-delay 0`, `DEBUG` enabled where supported. SIGKILLed on drop.
pub struct RedisServer {
    inner: Instance,
}

impl RedisServer {
    /// A standalone master.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A standalone master with extra command-line options, e.g. `["--min-replicas-to-write", "1"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(LOOPBACK, extra)
    }

    /// [`RedisServer::start_with`], listening on `ip` instead of loopback (an address of the
    /// caller's network namespace, such as the cluster end of a
    /// [`PodNetns`](super::PodNetns)'s veth pair, started from inside the cluster namespace).
    /// Protected mode is off there, since nothing on it has a password.
    pub fn start_on(ip: IpAddr, extra: &[&str]) -> RedisServer {
        RedisServer::builder().ip(ip).args(extra).start()
    }

    /// A server with more to choose than the `start*` functions offer: a password, a second
    /// listening address, a private hosts file. See [`RedisServerBuilder`].
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder {
            ip: LOOPBACK,
            also_bind: Vec::new(),
            args: Vec::new(),
            password: None,
            hosts: None,
        }
    }

    /// A replica of `master` (started answering PING; see [`RedisServer::wait_link_up`]).
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        RedisServer::start_replica_of_with(master, &[])
    }

    /// A replica of `master`, listening on the same address as it.
    pub fn start_replica_of_with(master: &RedisServer, extra: &[&str]) -> RedisServer {
        let ip = master.addr().ip();
        let (host, port) = (ip.to_string(), master.port().to_string());
        let mut args = vec!["--replicaof", &host, &port];
        args.extend_from_slice(extra);
        RedisServer::start_on(ip, &args)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn pid(&self) -> u32 {
        self.inner.proc.pid()
    }

    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.inner.log_tail(lines)
    }

    /// Runs one command; panics on a connection or server error.
    pub fn cli(&self, args: &[&str]) -> Value {
        self.inner.cli(args)
    }

    pub fn try_cli(&self, args: &[&str]) -> redis::RedisResult<Value> {
        self.inner.call(args)
    }

    /// The password its `requirepass` asks for (the harness's own client sends it).
    pub fn password(&self) -> Option<&str> {
        self.inner.password.as_deref()
    }

    /// [`RedisServer::cli`] as text (see [`value_to_string`]).
    pub fn cli_str(&self, args: &[&str]) -> String {
        value_to_string(&self.cli(args))
    }

    /// What it says it is (`INFO server`): Redis or Valkey, which version.
    pub fn software(&self) -> Software {
        self.inner.software()
    }

    /// `INFO section` as a map.
    pub fn info(&self, section: &str) -> BTreeMap<String, String> {
        parse_info(&self.cli_str(&["INFO", section]))
    }

    /// The first word of `ROLE` (`master`, `slave`; see [`role_word`]), or `None` if the
    /// server did not answer.
    pub fn role(&self) -> Option<String> {
        match self.inner.call(&["ROLE"]) {
            Ok(Value::Array(items)) => items
                .first()
                .map(|w| role_word(&value_to_string(w)).to_owned()),
            _ => None,
        }
    }

    /// `CLIENT LIST`, one map per client (`name`, `addr`, `laddr`, `flags`, `sub`, ...).
    pub fn client_list(&self) -> Vec<BTreeMap<String, String>> {
        parse_kv_lines(&self.cli_str(&["CLIENT", "LIST"]))
    }

    /// The clients that set this name (`CLIENT SETNAME`).
    pub fn clients_named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.client_list()
            .into_iter()
            .filter(|c| c.get("name").is_some_and(|n| n == name))
            .collect()
    }

    /// Waits until this replica reports `master_link_status:up`.
    pub fn wait_link_up(&self, timeout: Duration) {
        super::wait_for_or_dump(
            timeout,
            &format!("replica {} to report master_link_status:up", self.addr()),
            || {
                let info = parse_info(&value_to_string(
                    &self.inner.call(&["INFO", "replication"]).ok()?,
                ));
                (info.get("master_link_status").map(String::as_str) == Some("up")).then_some(())
            },
            || self.log_tail(LOG_TAIL_LINES),
        )
    }

    /// SIGSTOP: the kernel still accepts connections to it, but it answers nothing.
    pub fn stop(&mut self) {
        self.inner.proc.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`RedisServer::stop`].
    pub fn cont(&mut self) {
        self.inner.proc.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap. The temp dir (and log) stay until drop.
    pub fn kill(&mut self) {
        self.inner.proc.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.inner.proc.is_running()
    }
}

/// Default `down-after-milliseconds`: Sentinel marks a silent master down after this long, so
/// a frozen master fails over in about 3 s.
pub(crate) const DOWN_AFTER_MS: u64 = 1000;
/// Default `failover-timeout`: also how long a sentinel waits before retrying a failover of the
/// same master (twice this), so keep it short for tests that fail over more than once.
pub(crate) const FAILOVER_TIMEOUT_MS: u64 = 5000;

/// Builds a [`Sentinel`]; see [`Sentinel::builder`]. Defaults: on 127.0.0.1, no password, the
/// machine's `/etc/hosts`, `down-after-milliseconds 1000`, `failover-timeout 5000`,
/// `parallel-syncs 1`.
pub struct SentinelBuilder {
    ip: IpAddr,
    master_host: String,
    master_port: u16,
    master_name: String,
    quorum: usize,
    conf: Vec<String>,
    password: Option<String>,
    hosts: Option<PrivateHosts>,
}

impl SentinelBuilder {
    /// The address it listens on (`bind`) and the harness talks to.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// One more `sentinel.conf` line, after the generated ones: `{name}` stands for the master
    /// name, `{port}` for the sentinel's own port (e.g. `sentinel announce-port {port}`).
    pub fn conf(mut self, line: &str) -> Self {
        self.conf.push(line.to_owned());
        self
    }

    /// `requirepass PASSWORD` in `sentinel.conf`: clients must `AUTH`, and (with no `sentinel
    /// sentinel-pass`) the sentinel sends it to the other sentinels too, so they must all have
    /// the same. The harness's own client ([`Sentinel::cli`] and the rest) sends `AUTH`.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// `sentinel auth-pass NAME PASSWORD`: what it sends to the master and its replicas.
    pub fn auth_pass(self, password: &str) -> Self {
        let line = format!("sentinel auth-pass {{name}} {password}");
        self.conf(&line)
    }

    /// Runs it with `hosts` as its `/etc/hosts` (see [`PrivateHosts`]).
    pub fn hosts(mut self, hosts: &PrivateHosts) -> Self {
        self.hosts = Some(hosts.clone());
        self
    }

    /// Writes `sentinel.conf` (mode 0600: it may hold passwords), starts the sentinel on a free
    /// port and waits until it answers PING.
    pub fn start(self) -> Sentinel {
        let peer = Peer::current();
        peer.check_binary(&peer.sentinel_bin());
        let ip = self.ip;
        let name = &self.master_name;
        let inner = Instance::start(
            peer.sentinel_label(),
            ip,
            self.password.as_deref(),
            self.hosts.as_ref(),
            |port, dir| {
                let mut conf = format!(
                    "port {port}\n\
                     bind {ip}\n\
                     daemonize no\n\
                     dir {dir}\n\
                     logfile {log}\n",
                    dir = dir.display(),
                    log = dir.join("redis.log").display(),
                );
                if let Some(password) = &self.password {
                    conf.push_str(&format!("requirepass {password}\n"));
                }
                // A hostname in `sentinel monitor` needs `resolve-hostnames yes` before it.
                for line in self.conf.iter().filter(|l| is_hostname_option(l)) {
                    conf.push_str(line);
                    conf.push('\n');
                }
                conf.push_str(&format!(
                    "sentinel monitor {name} {mhost} {mport} {quorum}\n\
                     sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n\
                     sentinel parallel-syncs {name} 1\n",
                    mhost = self.master_host,
                    mport = self.master_port,
                    quorum = self.quorum,
                ));
                if !ip.is_loopback() {
                    conf.push_str("protected-mode no\n");
                }
                for line in self.conf.iter().filter(|l| !is_hostname_option(l)) {
                    conf.push_str(
                        &line
                            .replace("{name}", name)
                            .replace("{port}", &port.to_string()),
                    );
                    conf.push('\n');
                }
                // Sentinel rewrites its config file (it must be writable), so it lives in the
                // dir.
                let path = dir.join("sentinel.conf");
                write_private(&path, &conf);
                peer.sentinel_command(&path)
            },
        );
        inner.check_peer(peer, "sentinel");
        Sentinel {
            inner,
            master_name: self.master_name,
        }
    }
}

/// `sentinel resolve-hostnames` / `sentinel announce-hostnames`: global options that must come
/// before a `sentinel monitor` naming a host.
fn is_hostname_option(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(
        words.as_slice(),
        ["sentinel", "resolve-hostnames" | "announce-hostnames", ..]
    )
}

/// Writes `text` to a new file at `path` readable by its owner only.
fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// One `redis-sentinel` monitoring one master, with a generated `sentinel.conf` in its temp dir.
/// SIGKILLed on drop.
pub struct Sentinel {
    inner: Instance,
    master_name: String,
}

impl Sentinel {
    /// Monitors `master` as `master_name` with the given quorum, `down-after-milliseconds 1000`,
    /// `failover-timeout 5000` and `parallel-syncs 1`.
    pub fn start(master: &RedisServer, master_name: &str, quorum: usize) -> Sentinel {
        Sentinel::start_with(master.addr(), master_name, quorum, &[])
    }

    /// Like [`Sentinel::start`], for a master address, with extra `sentinel.conf` lines (each
    /// may use `{name}` for the master name).
    pub fn start_with(
        master: SocketAddr,
        master_name: &str,
        quorum: usize,
        extra_conf: &[String],
    ) -> Sentinel {
        Sentinel::start_on(LOOPBACK, master, master_name, quorum, extra_conf)
    }

    /// [`Sentinel::start_with`], listening on `ip` instead of loopback (see
    /// [`RedisServer::start_on`]).
    pub fn start_on(
        ip: IpAddr,
        master: SocketAddr,
        master_name: &str,
        quorum: usize,
        extra_conf: &[String],
    ) -> Sentinel {
        let mut builder =
            Sentinel::builder(&master.ip().to_string(), master.port(), master_name, quorum).ip(ip);
        for line in extra_conf {
            builder = builder.conf(line);
        }
        builder.start()
    }

    /// A sentinel with more to choose than the `start*` functions offer: a master named by a
    /// hostname, a password, a private hosts file. See [`SentinelBuilder`].
    pub fn builder(
        master_host: &str,
        master_port: u16,
        master_name: &str,
        quorum: usize,
    ) -> SentinelBuilder {
        SentinelBuilder {
            ip: LOOPBACK,
            master_host: master_host.to_owned(),
            master_port,
            master_name: master_name.to_owned(),
            quorum,
            conf: Vec::new(),
            password: None,
            hosts: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn pid(&self) -> u32 {
        self.inner.proc.pid()
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.inner.log_tail(lines)
    }

    pub fn cli(&self, args: &[&str]) -> Value {
        self.inner.cli(args)
    }

    pub fn try_cli(&self, args: &[&str]) -> redis::RedisResult<Value> {
        self.inner.call(args)
    }

    /// The password its `requirepass` asks for (the harness's own client sends it).
    pub fn password(&self) -> Option<&str> {
        self.inner.password.as_deref()
    }

    pub fn cli_str(&self, args: &[&str]) -> String {
        value_to_string(&self.cli(args))
    }

    /// This sentinel's answer to `SENTINEL get-master-addr-by-name`, or `None` when it does not
    /// answer (stopped, killed) or does not know the name.
    pub fn master_addr(&self) -> Option<SocketAddr> {
        let reply = self
            .inner
            .call(&["SENTINEL", "get-master-addr-by-name", &self.master_name])
            .ok()?;
        addr_reply(&reply)
    }

    /// This sentinel's answer to `SENTINEL get-master-addr-by-name` as `HOST:PORT` text, the
    /// host as it names it (a hostname with `announce-hostnames yes`), or `None` when it does
    /// not answer or does not know the name.
    pub fn master_host_port(&self) -> Option<String> {
        let reply = self
            .inner
            .call(&["SENTINEL", "get-master-addr-by-name", &self.master_name])
            .ok()?;
        host_port_reply(&reply)
    }

    /// What it says it is (`INFO server`): Redis or Valkey, which version.
    pub fn software(&self) -> Software {
        self.inner.software()
    }

    /// `SENTINEL MYID`, or `None` when it does not answer.
    pub fn myid(&self) -> Option<String> {
        self.inner
            .call(&["SENTINEL", "MYID"])
            .ok()
            .map(|v| value_to_string(&v))
    }

    /// `SENTINEL replicas NAME`: one map per replica (`ip`, `port`, `flags`, ...).
    pub fn replicas(&self) -> Vec<BTreeMap<String, String>> {
        self.inner
            .call(&["SENTINEL", "replicas", &self.master_name])
            .map(|v| instances(&v))
            .unwrap_or_default()
    }

    /// `SENTINEL sentinels NAME`: the *other* sentinels this one knows.
    pub fn sentinels(&self) -> Vec<BTreeMap<String, String>> {
        self.inner
            .call(&["SENTINEL", "sentinels", &self.master_name])
            .map(|v| instances(&v))
            .unwrap_or_default()
    }

    /// `SENTINEL MASTER NAME` as a map (empty if it does not answer).
    pub fn master_info(&self) -> BTreeMap<String, String> {
        self.inner
            .call(&["SENTINEL", "MASTER", &self.master_name])
            .map(|v| flat_pairs(&v))
            .unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.inner.proc.signal(libc::SIGSTOP);
    }

    pub fn cont(&mut self) {
        self.inner.proc.signal(libc::SIGCONT);
    }

    pub fn kill(&mut self) {
        self.inner.proc.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.inner.proc.is_running()
    }
}
