//! [`Haproxy`]: a real `haproxy -db` running one of the shipped configurations (`haproxy/*.cfg`)
//! with its addresses given through the environment variables those files read
//! (`"${NODE1_ADDR-…}"`), its runtime API on a unix socket in its temp dir or on a free loopback
//! port, killed on drop. [`Backend`]: a tiny TCP listener standing in for a node's service port,
//! so HAProxy's plain connect check passes and sessions can be opened through the frontend.
//!
//! The binary is `HAPROXY_BIN`, else `haproxy` on `PATH` (or /usr/sbin); missing, the test
//! panics with how to install it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::hosts::{PrivateHosts, command_for};
use super::process::{Proc, find_binary, free_port, free_port_on, tail};
use super::{poll_for, timed_out};

/// Until the runtime API answers after the spawn.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const CLI_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 60;

/// The `haproxy` binary (`HAPROXY_BIN` or `PATH`).
pub fn haproxy_bin() -> PathBuf {
    find_binary("HAPROXY_BIN", "haproxy", "apt-get install -y haproxy")
}

/// The repository's `haproxy/NAME` (e.g. `agent-check.cfg`).
pub fn shipped_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("haproxy")
        .join(name)
}

/// Every shipped configuration, `haproxy/*.cfg`.
pub fn shipped_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    out.sort();
    out
}

/// `haproxy -c -f FILE` with `env`, bounded in time.
pub fn check_config(file: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(haproxy_bin());
    cmd.arg("-c").arg("-f").arg(file).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    cmd.stdout(std::fs::File::create(&out_path).expect("create out"))
        .stderr(std::fs::File::create(&err_path).expect("create err"));
    let mut proc = Proc::spawn(cmd, format!("haproxy -c -f {}", file.display()));
    let status = proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("haproxy -c -f {} did not finish", file.display()));
    Output {
        status,
        stdout: std::fs::read(out_path).unwrap_or_default(),
        stderr: std::fs::read(err_path).unwrap_or_default(),
    }
}

/// Where a [`Haproxy`]'s runtime API listens.
#[derive(Debug, Clone)]
pub enum RuntimeApi {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl RuntimeApi {
    /// A unix socket `admin.sock` in `dir` (chosen before HAProxy starts, so that rolecall's
    /// `[haproxy]` section can name it).
    pub fn unix_in(dir: &Path, name: &str) -> RuntimeApi {
        RuntimeApi::Unix(dir.join(name))
    }

    /// A loopback port that was free a moment ago.
    pub fn free_tcp() -> RuntimeApi {
        RuntimeApi::Tcp(SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    /// As rolecall's `[haproxy] runtime_api` entry.
    pub fn for_rolecall(&self) -> String {
        match self {
            RuntimeApi::Tcp(a) => a.to_string(),
            RuntimeApi::Unix(p) => p.display().to_string(),
        }
    }
}

/// One server as the runtime API shows it: `show servers state` (numeric states) joined with
/// `show stat` (the status text and the agent's last result).
#[derive(Debug, Clone)]
pub struct ServerState {
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op: u8,
    /// `srv_admin_state`: a mask; 0x01 forced maint, 0x08 forced drain.
    pub admin: u8,
    pub uweight: u32,
    pub iweight: u32,
    /// `show stat` `scur`: established sessions.
    pub sessions: u32,
    /// `show stat` `status`: `UP`, `DOWN`, `DRAIN`, `MAINT`, possibly with a suffix.
    pub status: String,
    /// `show stat` `agent_status` (`L7OK`, `L7STS`, `L4CON`, `CHECKED`, …).
    pub agent_status: String,
    /// `show stat` `last_agt`: "via agent : up (…)".
    pub last_agent: String,
}

impl ServerState {
    /// The first word of `status`.
    pub fn word(&self) -> &str {
        self.status.split_whitespace().next().unwrap_or("")
    }
    /// In rotation: running, no drain, no maintenance (`UP`).
    pub fn is_up(&self) -> bool {
        self.op == 2 && self.admin & 0x09 == 0
    }
    /// Forced drain, not maintenance (`DRAIN`).
    pub fn is_drain(&self) -> bool {
        self.admin & 0x08 != 0 && self.admin & 0x01 == 0
    }
    /// Forced maintenance (`MAINT`).
    pub fn is_maint(&self) -> bool {
        self.admin & 0x01 != 0
    }
    /// Operationally down, not in maintenance (`DOWN`).
    pub fn is_down(&self) -> bool {
        self.op == 0 && self.admin & 0x01 == 0
    }
}

/// Builds a [`Haproxy`]; see [`Haproxy::shipped`] and [`Haproxy::config`]. Defaults: the
/// runtime API on a unix socket in its temp dir, the frontend on a free port of 127.0.0.1, the
/// machine's `/etc/hosts`.
pub struct HaproxyBuilder {
    config: PathBuf,
    env: Vec<(String, String)>,
    api: Option<RuntimeApi>,
    hosts: Option<PrivateHosts>,
    frontend_ip: IpAddr,
}

impl HaproxyBuilder {
    /// An environment variable for HAProxy (the addresses the configuration reads); not
    /// `RUNTIME_API` or `FRONTEND`, which the harness sets.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The runtime API at `api`, chosen beforehand (see [`RuntimeApi::unix_in`],
    /// [`RuntimeApi::free_tcp`]).
    pub fn api(mut self, api: RuntimeApi) -> Self {
        self.api = Some(api);
        self
    }

    /// The local address of the frontend (`FRONTEND`, on a free port of it).
    pub fn frontend_ip(mut self, ip: IpAddr) -> Self {
        self.frontend_ip = ip;
        self
    }

    /// Runs HAProxy with `hosts` as its `/etc/hosts`: server addresses given as names are
    /// resolved through it (once, at start, by the system resolver: HAProxy's default
    /// `init-addr last,libc`).
    pub fn hosts(mut self, hosts: &PrivateHosts) -> Self {
        self.hosts = Some(hosts.clone());
        self
    }

    /// Starts HAProxy and waits until its runtime API answers; a few attempts (a free port
    /// can be taken by someone else before HAProxy binds it), then panics with its log.
    pub fn start(self) -> Haproxy {
        let mut last = String::new();
        for _ in 0..3 {
            match Haproxy::try_start(&self) {
                Ok(h) => return h,
                Err(e) => last = e,
            }
        }
        panic!(
            "haproxy with {} did not start:\n{last}",
            self.config.display()
        );
    }
}

/// A running `haproxy -db -f haproxy/NAME`, SIGKILLed on drop.
pub struct Haproxy {
    proc: Proc,
    dir: TempDir,
    api: RuntimeApi,
    frontend: SocketAddr,
    log: PathBuf,
    name: String,
}

impl Haproxy {
    /// Starts the shipped configuration `name` with `env` (which must not set `RUNTIME_API` or
    /// `FRONTEND`: the harness picks them), the runtime API on a unix socket in the temp dir.
    pub fn start(name: &str, env: &[(&str, String)]) -> Haproxy {
        Haproxy::start_api(name, env, None)
    }

    /// [`Haproxy::start`] with the runtime API at `api`, chosen beforehand (see
    /// [`RuntimeApi::unix_in`], [`RuntimeApi::free_tcp`]).
    pub fn start_with_api(name: &str, env: &[(&str, String)], api: RuntimeApi) -> Haproxy {
        Haproxy::start_api(name, env, Some(api))
    }

    /// A builder for the shipped configuration `name` (`haproxy/NAME`).
    pub fn shipped(name: &str) -> HaproxyBuilder {
        Haproxy::config(&shipped_config(name))
    }

    /// A builder for any configuration file (one a test writes, say). The file must take its
    /// frontend address from `"${FRONTEND}"` and its runtime API from `"${RUNTIME_API}"`
    /// (`stats socket "${RUNTIME_API}" mode 600 level admin`), as the shipped ones do: the
    /// harness waits for the runtime API to answer.
    pub fn config(path: &Path) -> HaproxyBuilder {
        HaproxyBuilder {
            config: path.to_path_buf(),
            env: Vec::new(),
            api: None,
            hosts: None,
            frontend_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn start_api(name: &str, env: &[(&str, String)], api: Option<RuntimeApi>) -> Haproxy {
        let mut builder = Haproxy::shipped(name);
        for (k, v) in env {
            builder = builder.env(k, v);
        }
        if let Some(api) = api {
            builder = builder.api(api);
        }
        builder.start()
    }

    fn try_start(b: &HaproxyBuilder) -> Result<Haproxy, String> {
        let name = b.config.file_name().map_or_else(
            || b.config.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-haproxy-")
            .tempdir()
            .expect("create a temp dir");
        let api = b
            .api
            .clone()
            .unwrap_or_else(|| RuntimeApi::Unix(dir.path().join("admin.sock")));
        let frontend = SocketAddr::new(b.frontend_ip, free_port_on(b.frontend_ip));
        let log = dir.path().join("haproxy.log");
        let mut cmd = command_for(b.hosts.as_ref(), haproxy_bin());
        cmd.arg("-db")
            .arg("-f")
            .arg(&b.config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("create haproxy.log"))
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("open haproxy.log"),
            )
            .env(
                "RUNTIME_API",
                match &api {
                    RuntimeApi::Tcp(a) => format!("ipv4@{a}"),
                    RuntimeApi::Unix(p) => p.display().to_string(),
                },
            )
            .env("FRONTEND", frontend.to_string());
        for (k, v) in &b.env {
            cmd.env(k, v);
        }
        let what = match b.hosts {
            Some(_) => format!("haproxy -f {name} (private hosts)"),
            None => format!("haproxy -f {name}"),
        };
        let mut proc = Proc::spawn(cmd, what);
        let mut h = None;
        let up = poll_for(START_TIMEOUT, || {
            if let Some(status) = proc.try_wait() {
                h = Some(status);
                return Some(false);
            }
            cli(&api, "show info").ok().map(|_| true)
        });
        match (up, h) {
            (Some(true), _) => Ok(Haproxy {
                proc,
                dir,
                api,
                frontend,
                log,
                name,
            }),
            (_, Some(status)) => Err(format!(
                "haproxy exited ({status})\n{}",
                tail(&log, LOG_TAIL_LINES)
            )),
            _ => Err(format!(
                "the runtime API did not answer within {START_TIMEOUT:?}\n{}",
                tail(&log, LOG_TAIL_LINES)
            )),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn runtime_api(&self) -> &RuntimeApi {
        &self.api
    }

    /// Where clients connect (`FRONTEND`).
    pub fn frontend(&self) -> SocketAddr {
        self.frontend
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// One runtime API command (or several separated by `;`); its answer. Panics on failure.
    pub fn cli(&self, command: &str) -> String {
        cli(&self.api, command).unwrap_or_else(|e| {
            panic!(
                "runtime api {command:?}: {e}\n{}",
                self.log_tail(LOG_TAIL_LINES)
            )
        })
    }

    /// Every server of `backend`, by name.
    pub fn servers(&self, backend: &str) -> BTreeMap<String, ServerState> {
        let state = self.cli(&format!("show servers state {backend}"));
        let stat = parse_csv(&self.cli("show stat"));
        let mut out = BTreeMap::new();
        let mut lines = state.lines().filter(|l| !l.trim().is_empty());
        let _version = lines.next();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches('#')
            .split_whitespace()
            .collect();
        for line in lines {
            let row: BTreeMap<&str, &str> = header
                .iter()
                .copied()
                .zip(line.split_whitespace())
                .collect();
            let name = row.get("srv_name").copied().unwrap_or("").to_owned();
            let num = |k: &str| row.get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            let s = stat
                .iter()
                .find(|r| {
                    r.get("pxname").map(String::as_str) == Some(backend)
                        && r.get("svname") == Some(&name)
                })
                .cloned()
                .unwrap_or_default();
            let text = |k: &str| s.get(k).cloned().unwrap_or_default();
            out.insert(
                name,
                ServerState {
                    op: num("srv_op_state") as u8,
                    admin: num("srv_admin_state") as u8,
                    uweight: num("srv_uweight"),
                    iweight: num("srv_iweight"),
                    sessions: text("scur").parse().unwrap_or(0),
                    status: text("status"),
                    agent_status: text("agent_status"),
                    last_agent: text("last_agt"),
                },
            );
        }
        out
    }

    /// `(srv_op_state, srv_admin_state)` of `backend/server` from one `show servers state`:
    /// the cheapest read, for tight polling. `None` if there is no such server.
    pub fn op_admin(&self, backend: &str, server: &str) -> Option<(u8, u8)> {
        let state = self.cli(&format!("show servers state {backend}"));
        state
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 6 && f[3] == server)
            .and_then(|f| Some((f[5].parse().ok()?, f[6].parse().ok()?)))
    }

    /// `backend/server`'s state; panics if there is no such server.
    pub fn server(&self, backend: &str, server: &str) -> ServerState {
        self.servers(backend)
            .remove(server)
            .unwrap_or_else(|| panic!("no server {backend}/{server} in {}", self.name))
    }

    /// Polls `backend/server` until `pred` holds; returns that state. On timeout panics with
    /// the last state and HAProxy's log (health-check changes are logged).
    pub fn wait_for(
        &self,
        backend: &str,
        server: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ServerState) -> bool,
    ) -> ServerState {
        let start = Instant::now();
        let mut last = None;
        let found = poll_for(timeout, || {
            let s = self.server(backend, server);
            let ok = pred(&s);
            last = Some(s.clone());
            ok.then_some(s)
        });
        found.unwrap_or_else(|| {
            timed_out(
                &format!("{}: {backend}/{server} {what}", self.name),
                start,
                &format!(
                    "last state: {last:?}\n--- haproxy log ---\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                ),
            )
        })
    }
}

/// One runtime API exchange: HAProxy runs the line and closes (no `prompt`).
pub fn cli(api: &RuntimeApi, command: &str) -> Result<String, String> {
    fn exchange(mut s: impl Read + Write, command: &str) -> std::io::Result<String> {
        s.write_all(command.as_bytes())?;
        s.write_all(b"\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }
    match api {
        RuntimeApi::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, CLI_TIMEOUT).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(CLI_TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(CLI_TIMEOUT)))
                .map_err(|e| e.to_string())?;
            exchange(s, command).map_err(|e| e.to_string())
        }
        RuntimeApi::Unix(path) => {
            let s = UnixStream::connect(path).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(CLI_TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(CLI_TIMEOUT)))
                .map_err(|e| e.to_string())?;
            exchange(s, command).map_err(|e| e.to_string())
        }
    }
}

/// `show stat`'s CSV as one map per row (no field of interest here contains a comma).
fn parse_csv(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches('#')
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

/// A node's service port: accepts connections and holds them open (a WebSocket session, as far
/// as HAProxy can tell) until the peer closes or the backend is dropped.
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend listener");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("backend address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                // Health checks connect and close at once; sessions stay until their peer
                // closes them.
                held.retain(|s| {
                    let mut b = [0u8; 1];
                    !matches!(s.peek(&mut b), Ok(0))
                });
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(true);
                        held.push(s);
                        if held.len() > 1024 {
                            held.remove(0);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Backend {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client session through HAProxy's frontend, to see whether HAProxy cuts it.
pub struct Session {
    stream: TcpStream,
}

impl Session {
    pub fn open(frontend: SocketAddr) -> Session {
        let stream = TcpStream::connect_timeout(&frontend, CLI_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to the frontend {frontend}: {e}"));
        Session { stream }
    }

    /// Whether HAProxy has closed the session (EOF or reset), looking for up to `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(within));
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The backend of the shipped configurations.
pub const BACKEND: &str = "centrifugo";

/// A loopback address nothing listens on (an agent HAProxy cannot reach).
pub fn nowhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The environment of the agent configurations for node1 and node2: service address and agent.
pub fn agent_env(
    node1: SocketAddr,
    agent1: SocketAddr,
    node2: SocketAddr,
    agent2: SocketAddr,
) -> Vec<(&'static str, String)> {
    vec![
        ("NODE1_ADDR", node1.to_string()),
        ("NODE1_AGENT_HOST", agent1.ip().to_string()),
        ("NODE1_AGENT_PORT", agent1.port().to_string()),
        ("NODE2_ADDR", node2.to_string()),
        ("NODE2_AGENT_HOST", agent2.ip().to_string()),
        ("NODE2_AGENT_PORT", agent2.port().to_string()),
    ]
}

/// `[haproxy]`: push to `api` for `centrifugo/<server>`.
pub fn push_to(api: &RuntimeApi, server: &str) -> String {
    format!(
        "[haproxy]\nruntime_api = [{:?}]\nservers = [\"{BACKEND}/{server}\"]\ntimeout = \"500ms\"\n",
        api.for_rolecall()
    )
}

/// Asserts HAProxy's weight is still the configured one (rolecall never sends a percentage).
pub fn assert_weight_untouched(s: &ServerState) {
    assert_eq!(
        (s.uweight, s.iweight),
        (100, 100),
        "rolecall must not change the weight: {s:?}"
    );
}
