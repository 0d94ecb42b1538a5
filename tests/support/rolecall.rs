//! [`Rolecall`]: the daemon under test (`rolecall run --config FILE`) with its agent and HTTP
//! listeners on free loopback ports, a tiny HTTP/1.1 and agent client, and polling of `/status`
//! that dumps everything worth seeing when it gives up. [`RolecallConfig`] writes the config.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::chart::Chart;
use super::hosts::{PrivateHosts, command_for};
use super::netns::Netns;
use super::process::{Proc, free_port, tail};
use super::topology::{Topology, dump_state};
use super::{poll_for, timed_out};

const ROLECALL: &str = env!("CARGO_BIN_EXE_rolecall");
/// Until `/livez` answers after the spawn.
const LIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts on other free ports when the ones picked were taken before rolecall bound them.
const PORT_ATTEMPTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-response bound of the HTTP and agent clients.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The responses here are small; anything bigger is a bug worth failing on, not reading.
const MAX_RESPONSE: usize = 8 << 20;
const STATUS_POLL: Duration = Duration::from_millis(50);
const STDERR_TAIL_LINES: usize = 80;

/// A `rolecall.toml` for tests. Defaults: node name `test-node`, checks every 250 ms with a
/// 200 ms timeout and a 50 ms fast interval, agent and HTTP listeners on free ports (the
/// `{agent}` and `{http}` placeholders that [`Rolecall::start`] fills in).
pub struct RolecallConfig {
    node: Vec<(String, String)>,
    groups: Vec<String>,
    check: Vec<(String, String)>,
    agent: Option<Vec<(String, String)>>,
    http: bool,
    extra: String,
    env: Vec<(String, String)>,
    dump: Option<DumpTargets>,
    dump_netns: Option<Netns>,
    hosts: Option<PrivateHosts>,
}

/// A function that describes the state of the Redis side for a timeout message (see
/// [`Chart::dumper`]).
pub type Dumper = Arc<dyn Fn() -> String + Send + Sync>;

/// What to dump about Redis when a wait on rolecall times out, and the network namespace to ask
/// from (the caller's when `None`).
#[derive(Clone)]
struct DumpTargets {
    what: DumpWhat,
    netns: Option<Netns>,
}

#[derive(Clone)]
enum DumpWhat {
    /// A [`Topology`]'s servers and sentinels (no passwords).
    Topology {
        master_name: String,
        sentinels: Vec<SocketAddr>,
        servers: Vec<SocketAddr>,
    },
    /// Whatever this says (a [`Chart`]'s dump).
    Custom(Dumper),
}

impl DumpTargets {
    fn topology(topology: &Topology) -> DumpTargets {
        DumpTargets {
            what: DumpWhat::Topology {
                master_name: topology.master_name().to_owned(),
                sentinels: topology.sentinel_addrs(),
                servers: topology.server_addrs(),
            },
            netns: None,
        }
    }

    fn dump(&self) -> String {
        let dump = || match &self.what {
            DumpWhat::Topology {
                master_name,
                sentinels,
                servers,
            } => dump_state(master_name, sentinels, servers),
            DumpWhat::Custom(f) => f(),
        };
        match &self.netns {
            Some(netns) => netns.run(dump),
            None => dump(),
        }
    }
}

impl Default for RolecallConfig {
    fn default() -> Self {
        RolecallConfig::new()
    }
}

impl RolecallConfig {
    pub fn new() -> RolecallConfig {
        RolecallConfig {
            node: vec![("name".to_owned(), "\"test-node\"".to_owned())],
            groups: Vec::new(),
            check: vec![
                ("interval".to_owned(), "\"250ms\"".to_owned()),
                ("timeout".to_owned(), "\"200ms\"".to_owned()),
                ("fast_interval".to_owned(), "\"50ms\"".to_owned()),
            ],
            agent: Some(Vec::new()),
            http: true,
            extra: String::new(),
            env: Vec::new(),
            dump: None,
            dump_netns: None,
            hosts: None,
        }
    }

    /// `[node] pid = PID` (replacing any other selector).
    pub fn pid(self, pid: u32) -> Self {
        self.node_selector("pid", &pid.to_string())
    }

    /// One `[node]` selector (`pid`, `pid_file`, `process`, `namespace`) with its TOML value,
    /// e.g. `.node_selector("process", "\"rolecall-demo-n\"")`; replaces any other selector.
    pub fn node_selector(mut self, key: &str, toml_value: &str) -> Self {
        self.node.retain(|(k, _)| k == "name");
        self.node.push((key.to_owned(), toml_value.to_owned()));
        self
    }

    pub fn node_name(mut self, name: &str) -> Self {
        set(&mut self.node, "name", &toml_string(name));
        self
    }

    /// A `[[redis]]` group for the topology (named after its master), whose state is also
    /// dumped when a wait times out.
    pub fn topology(self, topology: &Topology) -> Self {
        self.topology_with(topology, "")
    }

    /// [`RolecallConfig::topology`] with more keys in its `[[redis]]` group, given as TOML
    /// lines (`replica_reads = true`, say).
    pub fn topology_with(mut self, topology: &Topology, extra: &str) -> Self {
        self.dump = Some(DumpTargets::topology(topology));
        self.redis_group_with(
            topology.master_name(),
            topology.master_name(),
            &topology.sentinel_addrs(),
            extra,
        )
    }

    /// Asks the topology's state for timeout dumps from inside `netns` (where the topology
    /// runs, when the test's own namespace cannot reach it), whichever thread dumps.
    pub fn dump_from(mut self, netns: &Netns) -> Self {
        self.dump_netns = Some(netns.clone());
        self
    }

    /// A `[[redis]]` group for a [`Chart`] (named after its master name): its sentinels by
    /// their pod hostnames, its password files (`password_file`, `sentinel_password_file`).
    /// Also runs rolecall under the chart's [`PrivateHosts`] (see [`RolecallConfig::hosts`])
    /// and adds the chart's state to timeout dumps.
    pub fn chart(self, chart: &Chart) -> Self {
        self.chart_with(chart, &chart.sentinel_host_ports(), "")
    }

    /// [`RolecallConfig::chart`] asking the sentinels through the chart's sentinel Service
    /// (one `HOST:PORT` in front of all of them, round-robin), as a Kubernetes client would.
    pub fn chart_service(self, chart: &Chart) -> Self {
        self.chart_with(chart, &[chart.service_host_port()], "")
    }

    /// [`RolecallConfig::chart`] with the `sentinels` entries given (`HOST:PORT` each) and more
    /// keys for the group as TOML lines.
    pub fn chart_with(self, chart: &Chart, sentinels: &[String], extra: &str) -> Self {
        let list: Vec<String> = sentinels.iter().map(|s| toml_string(s)).collect();
        let body = format!(
            "name = {name}\nmaster_name = {name}\nsentinels = [{list}]\n\
             password_file = {password}\nsentinel_password_file = {sentinel_password}\n{extra}",
            name = toml_string(chart.master_name()),
            list = list.join(", "),
            password = toml_string(&chart.password_file().display().to_string()),
            sentinel_password = toml_string(&chart.sentinel_password_file().display().to_string()),
        );
        self.hosts(chart.hosts())
            .dump_with(chart.dumper())
            .redis_group_toml(&body)
    }

    /// Runs rolecall (and its restarts, and [`Rolecall::command`]) with `hosts` as its
    /// `/etc/hosts` (see [`PrivateHosts`]).
    pub fn hosts(mut self, hosts: &PrivateHosts) -> Self {
        self.hosts = Some(hosts.clone());
        self
    }

    /// Adds what `dumper` says to timeout dumps (replacing a topology's).
    pub fn dump_with(mut self, dumper: Dumper) -> Self {
        self.dump = Some(DumpTargets {
            what: DumpWhat::Custom(dumper),
            netns: None,
        });
        self
    }

    /// A `[[redis]]` group.
    pub fn redis_group(self, name: &str, master_name: &str, sentinels: &[SocketAddr]) -> Self {
        self.redis_group_with(name, master_name, sentinels, "")
    }

    /// A `[[redis]]` group with more keys, given as TOML lines (credentials, say).
    pub fn redis_group_with(
        self,
        name: &str,
        master_name: &str,
        sentinels: &[SocketAddr],
        extra: &str,
    ) -> Self {
        let list: Vec<String> = sentinels
            .iter()
            .map(|s| toml_string(&s.to_string()))
            .collect();
        self.redis_group_toml(&format!(
            "name = {}\nmaster_name = {}\nsentinels = [{}]\n{extra}",
            toml_string(name),
            toml_string(master_name),
            list.join(", ")
        ))
    }

    /// A `[[redis]]` group from its raw body (for keys the helpers above do not cover).
    pub fn redis_group_toml(mut self, body: &str) -> Self {
        self.groups.push(body.to_owned());
        self
    }

    /// A `[check]` key with its TOML value, e.g. `.check("rise", "1")`, `.check("interval", "\"1s\"")`.
    pub fn check(mut self, key: &str, toml_value: &str) -> Self {
        set(&mut self.check, key, toml_value);
        self
    }

    /// An `[agent]` key besides `listen`, e.g. `.agent("out_reply", "\"down\"")`.
    pub fn agent(mut self, key: &str, toml_value: &str) -> Self {
        set(self.agent.get_or_insert_with(Vec::new), key, toml_value);
        self
    }

    pub fn without_agent(mut self) -> Self {
        self.agent = None;
        self
    }

    pub fn without_http(mut self) -> Self {
        self.http = false;
        self
    }

    /// `[fleet] guard = false`: the rules without the fleet guard, for the tests of a verdict
    /// that takes a lone node out (with the guard, a fleet of one keeps its node in).
    pub fn without_fleet_guard(self) -> Self {
        self.extra("[fleet]\nguard = false")
    }

    /// Raw TOML appended at the end (e.g. `[agent.reply]` tables).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// An environment variable for the daemon (e.g. `NOTIFY_SOCKET`, `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The config text, with `{agent}`, `{http}` and `{dir}` placeholders.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[node]\n");
        for (k, v) in &self.node {
            let _ = writeln!(out, "{k} = {v}");
        }
        for g in &self.groups {
            let _ = write!(out, "\n[[redis]]\n{g}");
        }
        out.push_str("\n[check]\n");
        for (k, v) in &self.check {
            let _ = writeln!(out, "{k} = {v}");
        }
        if let Some(agent) = &self.agent {
            out.push_str("\n[agent]\nlisten = \"{agent}\"\n");
            for (k, v) in agent {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        if self.http {
            out.push_str("\n[http]\nlisten = \"{http}\"\n");
        }
        if !self.extra.is_empty() {
            out.push('\n');
            out.push_str(&self.extra);
        }
        out
    }

    /// Starts rolecall and waits until `/livez` answers (on other ports if the free ports it
    /// picked were taken meanwhile).
    pub fn start(self) -> Rolecall {
        let text = self.to_toml();
        let dump = self.dump.map(|d| DumpTargets {
            netns: self.dump_netns,
            ..d
        });
        Rolecall::start_with(&text, &self.env, dump, self.hosts)
    }

    /// Starts rolecall without waiting for anything (for configs it should refuse).
    pub fn spawn(self) -> Rolecall {
        let text = self.to_toml();
        let dump = self.dump.map(|d| DumpTargets {
            netns: self.dump_netns,
            ..d
        });
        Rolecall::spawn_with(&text, &self.env, dump, self.hosts)
    }
}

fn set(entries: &mut Vec<(String, String)>, key: &str, value: &str) {
    entries.retain(|(k, _)| k != key);
    entries.push((key.to_owned(), value.to_owned()));
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An HTTP response from [`Rolecall::http`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running `rolecall run --config FILE`, SIGKILLed on drop.
pub struct Rolecall {
    proc: Proc,
    dir: TempDir,
    config: PathBuf,
    stderr: PathBuf,
    agent: SocketAddr,
    http: SocketAddr,
    dump: Option<DumpTargets>,
    hosts: Option<PrivateHosts>,
    /// The passwords and tokens its configuration names (files, environment variables): on
    /// drop, none may show in its log.
    secrets: Vec<String>,
}

impl Drop for Rolecall {
    /// Every test with a secret is a canary test too: its log must not hold the secret, at
    /// whatever level the test ran (a failing test is left to its own message).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for log in [self.stderr.clone(), self.dir.path().join("stdout.log")] {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for secret in &self.secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret of the configuration shows in {}",
                    log.display()
                );
            }
        }
    }
}

/// The secrets `config` names: the first line of each `*password_file` and `token_file`, and
/// the value of each `*password_env` variable in `env`. Shorter than 6 characters is too short
/// to search a log for.
fn secrets_in(config: &str, env: &[(String, String)]) -> Vec<String> {
    let mut secrets = Vec::new();
    for line in config.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let secret = if key.ends_with("password_file") || key == "token_file" {
            std::fs::read_to_string(value)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned))
        } else if key.ends_with("password_env") {
            env.iter().find(|(k, _)| k == value).map(|(_, v)| v.clone())
        } else {
            None
        };
        secrets.extend(secret.filter(|s| s.trim().len() >= 6));
    }
    secrets
}

impl Rolecall {
    /// Starts rolecall with this config text (after replacing `{agent}`, `{http}` and `{dir}`)
    /// and waits until `/livez` answers.
    pub fn start(config_toml: &str) -> Rolecall {
        Rolecall::start_with(config_toml, &[], None, None)
    }

    /// Spawns rolecall and waits until `/livez` answers. The free ports put in for `{agent}`
    /// and `{http}` may be taken by another process before rolecall binds them: then it
    /// starts again on others, as the Redis and HAProxy harnesses do.
    fn start_with(
        config_toml: &str,
        env: &[(String, String)],
        dump: Option<DumpTargets>,
        hosts: Option<PrivateHosts>,
    ) -> Rolecall {
        let picked_ports = config_toml.contains("{agent}") || config_toml.contains("{http}");
        for attempt in 1..=PORT_ATTEMPTS {
            let mut r = Rolecall::spawn_with(config_toml, env, dump.clone(), hosts.clone());
            let Some(status) = r.try_live() else {
                return r;
            };
            let taken = r.stderr().contains("Address already in use");
            if !(picked_ports && taken && attempt < PORT_ATTEMPTS) {
                panic!(
                    "rolecall exited ({status}) before answering /livez\n{}",
                    r.report(None)
                );
            }
        }
        unreachable!("the last attempt panics instead of retrying")
    }

    /// Starts rolecall without waiting for anything.
    pub fn spawn(config_toml: &str) -> Rolecall {
        Rolecall::spawn_with(config_toml, &[], None, None)
    }

    /// [`Rolecall::spawn`] with `hosts` as its `/etc/hosts` (see [`PrivateHosts`]).
    pub fn spawn_under(hosts: &PrivateHosts, config_toml: &str) -> Rolecall {
        Rolecall::spawn_with(config_toml, &[], None, Some(hosts.clone()))
    }

    /// Adds the topology's `SENTINEL MASTERS` / `ROLE` to timeout dumps (for a raw config).
    pub fn dump_topology(mut self, topology: &Topology) -> Self {
        self.dump = Some(DumpTargets::topology(topology));
        self
    }

    /// The private hosts file it runs with, if any.
    pub fn private_hosts(&self) -> Option<&PrivateHosts> {
        self.hosts.as_ref()
    }

    /// Starts rolecall again after [`Rolecall::kill`] (or a SIGTERM and [`Rolecall::wait_exit`]):
    /// the same config file, directory, ports and state directory, so HAProxy finds the agent
    /// where it was and rolecall what it kept. The environment given with
    /// [`RolecallConfig::env`] is not kept. Appends to the same stderr
    /// log; waits until `/livez` answers.
    pub fn restart(&mut self) {
        assert!(
            !self.proc.is_running(),
            "restart() needs a stopped rolecall"
        );
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap_or_else(|e| panic!("open {name}: {e}"))
        };
        let mut cmd = command_for(self.hosts.as_ref(), ROLECALL);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .env("STATE_DIRECTORY", self.dir.path().join("state"));
        self.proc = Proc::spawn(cmd, "rolecall run (restarted)");
        self.wait_live();
    }

    fn spawn_with(
        config_toml: &str,
        env: &[(String, String)],
        dump: Option<DumpTargets>,
        hosts: Option<PrivateHosts>,
    ) -> Rolecall {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-daemon-")
            .tempdir()
            .expect("create a temp dir");
        let agent = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        while http == agent {
            http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        }
        let text = config_toml
            .replace("{agent}", &agent.to_string())
            .replace("{http}", &http.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config = dir.path().join("rolecall.toml");
        std::fs::write(&config, &text).expect("write rolecall.toml");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = command_for(hosts.as_ref(), ROLECALL);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(
                std::fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log"),
            )
            .stderr(std::fs::File::create(&stderr).expect("create stderr.log"))
            // What systemd's `StateDirectory=` gives: the default `[node] state_dir`, here the
            // daemon's own, kept across restart() (a test may set another).
            .env("STATE_DIRECTORY", dir.path().join("state"));
        for (k, v) in env {
            cmd.env(k, v.replace("{journal_stream}", &device_inode(&stderr)));
        }
        let proc = Proc::spawn(cmd, "rolecall run");
        let secrets = secrets_in(&text, env);
        Rolecall {
            proc,
            dir,
            config,
            stderr,
            agent,
            http,
            dump,
            hosts,
            secrets,
        }
    }

    /// Waits until `GET /livez` answers 200; panics with the log if rolecall exits first.
    pub fn wait_live(&mut self) {
        if let Some(status) = self.try_live() {
            panic!(
                "rolecall exited ({status}) before answering /livez\n{}",
                self.report(None)
            );
        }
    }

    /// Waits until `GET /livez` answers 200 (then `None`) or rolecall exits (its status);
    /// panics with the log after [`LIVE_TIMEOUT`].
    fn try_live(&mut self) -> Option<ExitStatus> {
        let mut last = String::new();
        let mut exited = None;
        let start = Instant::now();
        let live = poll_for(LIVE_TIMEOUT, || {
            if let Some(status) = self.proc.try_wait() {
                exited = Some(status);
                return Some(());
            }
            match http_request(self.http, "GET", "/livez") {
                Ok(r) if r.status == 200 => Some(()),
                Ok(r) => {
                    last = format!("{} {}", r.status, r.body);
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        if exited.is_some() {
            return exited;
        }
        if live.is_none() {
            timed_out(
                "rolecall to answer GET /livez with 200",
                start,
                &format!("last answer: {last}\n{}", self.report(None)),
            );
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.agent
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr, lines)
    }

    /// The whole stderr log so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// The value of an unlabelled metric in `/metrics`; panics, showing the page, when it is
    /// not there.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.http_get("/metrics").1;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Any request; `Err` describes a connection or protocol failure.
    pub fn http(&self, method: &str, path: &str) -> Result<HttpResponse, String> {
        http_request(self.http, method, path)
    }

    /// [`Rolecall::http`] with extra request headers.
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        http_request_with(self.http, method, path, headers)
    }

    /// `GET path` as `(status, body)`; panics if there is no HTTP answer.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        match self.http("GET", path) {
            Ok(r) => (r.status, r.body),
            Err(e) => panic!("GET {path}: {e}\n{}", self.report(None)),
        }
    }

    /// `GET /status` as JSON.
    pub fn try_status(&self) -> Result<serde_json::Value, String> {
        let r = self.http("GET", "/status")?;
        if r.status != 200 {
            return Err(format!("GET /status: {} {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).map_err(|e| format!("GET /status: {e}: {}", r.body))
    }

    /// `GET /status` as JSON; panics (with the log) if it is not a 200 with JSON.
    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.report(None)))
    }

    /// One agent exchange: connect, send `send` (a newline is added if missing), read the
    /// reply until rolecall closes. `Err` on connection failure or timeout.
    pub fn try_agent(&self, send: Option<&str>) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.agent, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to agent {}: {e}", self.agent))?;
        if let Some(line) = send {
            let mut line = line.to_owned();
            if !line.ends_with('\n') {
                line.push('\n');
            }
            stream
                .set_write_timeout(Some(RESPONSE_TIMEOUT))
                .and_then(|()| stream.write_all(line.as_bytes()))
                .map_err(|e| format!("write to agent {}: {e}", self.agent))?;
        }
        let bytes = read_to_eof(&mut stream)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// [`Rolecall::try_agent`], panicking on failure.
    pub fn agent(&self, send: Option<&str>) -> String {
        self.try_agent(send)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.report(None)))
    }

    /// Polls `/status` until `.verdict` is `verdict`; returns that status. On timeout panics
    /// with the last status, rolecall's log and the topology's state.
    pub fn wait_for_verdict(&mut self, verdict: &str, timeout: Duration) -> serde_json::Value {
        // The starting state is `unknown` ("no complete check yet"): only a check's verdict counts.
        self.wait_for_status(&format!("verdict {verdict:?}"), timeout, |s| {
            s["verdict"] == verdict && s["checks"].as_u64().unwrap_or(0) >= 1
        })
    }

    /// Waits for `ok` with every connection of the (first) group placed on `server`
    /// (`HOST:PORT` as `/status` shows it); returns that status.
    pub fn wait_for_ok_on(&mut self, server: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for_status(&format!("ok on {server}"), timeout, |t| {
            let cs = t["groups"][0]["connections"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            t["verdict"] == "ok" && !cs.is_empty() && cs.iter().all(|c| c["server"] == server)
        })
    }

    /// Polls `/status` every 50 ms until `pred` holds; returns that status. Panics like
    /// [`Rolecall::wait_for_verdict`], and at once if rolecall exits.
    pub fn wait_for_status(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no answer yet)");
        let max_polls = timeout.as_millis() / STATUS_POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(status) = self.proc.try_wait() {
                panic!(
                    "rolecall exited ({status}) while waiting for {what}\n{}",
                    self.report(Some(&last))
                );
            }
            match self.try_status() {
                Ok(s) if pred(&s) => return s,
                Ok(s) => last = serde_json::to_string_pretty(&s).unwrap_or_default(),
                Err(e) => last = e,
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(STATUS_POLL.min(deadline - now));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            self.report(Some(&last))
        );
    }

    /// The last status (if given), rolecall's log tail and the topology's state.
    pub fn report(&self, last_status: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(s) = last_status {
            let _ = writeln!(out, "--- last /status ---\n{s}");
        }
        let _ = writeln!(
            out,
            "--- rolecall stderr (last {STDERR_TAIL_LINES} lines) ---\n{}",
            self.stderr_tail(STDERR_TAIL_LINES)
        );
        if let Some(d) = &self.dump {
            out.push_str(&d.dump());
        }
        out
    }

    /// Runs `rolecall ARGS --config FILE` (e.g. `["check"]`, `["config", "check"]`) against this
    /// instance's config, bounded by `timeout`.
    pub fn command(&self, args: &[&str], timeout: Duration) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config.display().to_string();
        all.extend(["--config", &config]);
        run_rolecall_under(self.hosts.as_ref(), &all, timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// SIGHUP: rolecall reads its configuration file again (`systemctl reload`).
    pub fn reload(&mut self) {
        self.proc.signal(libc::SIGHUP);
    }

    /// SIGTERM (a clean shutdown; see [`Rolecall::wait_exit`]).
    pub fn terminate(&mut self) {
        self.proc.signal(libc::SIGTERM);
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

    /// Waits for rolecall to exit; panics (with its log) if it has not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.proc.wait_exit(timeout) {
            Some(status) => status,
            None => panic!(
                "rolecall did not exit within {timeout:?}\n{}",
                self.report(None)
            ),
        }
    }
}

/// `DEVICE:INODE` of a file, as systemd sets `JOURNAL_STREAM` for the stream it connects to
/// the journal (the `{journal_stream}` placeholder of [`RolecallConfig::env`] values: rolecall's
/// stderr log).
fn device_inode(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Runs the rolecall binary with `args` to completion, killing it after `timeout` (then panics).
pub fn run_rolecall(args: &[&str], timeout: Duration) -> Output {
    run_rolecall_under(None, args, timeout)
}

/// [`run_rolecall`] with these environment variables set (and none removed).
pub fn run_rolecall_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    run_rolecall_with(None, args, env, timeout)
}

/// [`run_rolecall`] with `hosts` (if any) as its `/etc/hosts`.
pub fn run_rolecall_under(
    hosts: Option<&PrivateHosts>,
    args: &[&str],
    timeout: Duration,
) -> Output {
    run_rolecall_with(hosts, args, &[], timeout)
}

fn run_rolecall_with(
    hosts: Option<&PrivateHosts>,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = command_for(hosts, ROLECALL);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .envs(env.iter().copied());
    let mut proc = Proc::spawn(cmd, format!("rolecall {}", args.join(" ")));
    let status = proc.wait_exit(timeout);
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "rolecall {args:?} did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads until the peer closes, bounded in time and size.
fn read_to_eof(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no end of response within {RESPONSE_TIMEOUT:?} (got {:?})",
                String::from_utf8_lossy(&out)
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_RESPONSE {
                    return Err(format!("response over {MAX_RESPONSE} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "read: {e} (got {:?})",
                    String::from_utf8_lossy(&out)
                ));
            }
        }
    }
}

/// A `Connection: close` HTTP/1.1 request on a fresh connection, read to EOF.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<HttpResponse, String> {
    http_request_with(addr, method, path, &[])
}

/// [`http_request`] with extra request headers (`("Accept", "…")`).
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream
        .set_write_timeout(Some(RESPONSE_TIMEOUT))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let raw = read_to_eof(&mut stream)?;
    parse_response(&raw)
        .map_err(|e| format!("{method} {path}: {e}: {:?}", String::from_utf8_lossy(&raw)))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The status code of `GET path` on `addr`, or `None` if the request failed. For threads that
/// poll without holding the [`Rolecall`].
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_request(addr, "GET", path).ok().map(|r| r.status)
}
