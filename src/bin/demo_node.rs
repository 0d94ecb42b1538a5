//! `rolecall-demo-node`: a stand-in for an application node, used by rolecall's tests and demos.
//!
//! It holds real TCP connections to Redis so that rolecall finds them through `/proc` by pid:
//!
//! - `pin --addr HOST:PORT` keeps writing (`INCR rolecall-demo:<name>:count`) to one fixed
//!   address and redials that same address after any error. That is the bug rolecall exists to
//!   catch: a client that cached the old master's address and, after a failover, ends up on a
//!   replica (`READONLY`) or on a resumed old master. With `--pubsub-addr` it also keeps a
//!   subscriber connection on a second fixed address. With `--read-addr` it also keeps a read
//!   connection on a second fixed address (`GET` of its counter key every interval, redialled
//!   after any error): an application reading from a replica on purpose, as Centrifugo's
//!   `replica_client` or ioredis's `scaleReads` do.
//! - `follow --sentinel HOST:PORT... --master-name NAME` asks Sentinel for the master before
//!   every (re)connection, as redis-py's Sentinel client does. Note that after a failover with
//!   the old master still alive, such a client keeps writing to the old master until Sentinel
//!   demotes it and kills its clients (10–20 s later). With `--watch` it also subscribes to
//!   `+switch-master` on a sentinel (as Jedis does) and moves at once; that is one more socket,
//!   to a sentinel. With `--pubsub-addr` it also keeps a subscriber connection on a fixed
//!   address, which it never re-resolves: commands follow Sentinel, the subscriber does not.
//!
//! With `--tls-ca` (and `--tls-cert`/`--tls-key` for mutual TLS) every connection speaks TLS
//! (rustls), verifying the host name it dialled.
//!
//! Protocol is hand-written RESP2 over `std::net::TcpStream`, with no client library between
//! the node and its sockets: one command socket (plus the subscriber socket), no pool, no hidden
//! reconnects. After an error *reply* (`READONLY`, ...) the old socket stays open until the new
//! one is connected, so the node is never without a socket merely because it is redialling.
//! Every wait is bounded (connect and read timeouts of 1 s, 100 ms between retries), and Redis
//! errors never end the process: it retries until it is killed.
//!
//! Addresses are `HOST:PORT`: a hostname is resolved with the system resolver on every dial (so
//! a name re-pointed in `/etc/hosts` is followed at the next reconnection), and sentinels that
//! answer hostnames (`announce-hostnames yes`) work the same way.
//!
//! Passwords: `--password-env VAR` names an environment variable holding the data servers'
//! password, `--sentinel-password-env VAR` one holding the sentinels' password (never on the
//! command line, where every user could read it). With one, every connection of that kind
//! sends `AUTH <password>` first, right after connecting, and a refused `AUTH` is an error
//! like any other (logged, then the node redials).
//!
//! Stdout, one line per event, for the tests to read: `connected IP:PORT` on every command
//! connection, `subscribed IP:PORT` / `watching IP:PORT` on every subscriber connection,
//! `reading IP:PORT` on every read connection, `ready` once after the first connection(s), and `acked N` (acknowledged INCRs) on SIGTERM or SIGINT
//! before a clean exit. Connections are named with `CLIENT SETNAME rolecall-demo-<name>` (the
//! subscribers `rolecall-demo-<name>-sub` and `rolecall-demo-<name>-watch`, the reader
//! `rolecall-demo-<name>-read`) so tests can find
//! them in `CLIENT LIST`. Errors go to stderr.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Idle read timeouts in a row after which the subscriber gives its connection up: it sends a
/// `PING` after each one, so this many unanswered pings mean the server is gone or frozen.
const SUBSCRIBER_MAX_IDLE: u32 = 3;
/// Caps on what a reply may announce, so a broken or hostile peer cannot make us allocate
/// without bound (this node only ever needs small replies).
const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1 << 16;
const MAX_DEPTH: usize = 8;

#[derive(Parser)]
#[command(
    name = "rolecall-demo-node",
    about = "A sample Redis client standing in for an application node"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Write to one fixed address forever, redialling that same address after errors.
    Pin {
        /// The Redis server to write to.
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
        /// Also keep a subscriber connection on this address.
        #[arg(long, value_name = "HOST:PORT")]
        pubsub_addr: Option<String>,
        /// Also keep a read connection on this address (a replica read on purpose): `GET` of
        /// the counter key every interval.
        #[arg(long, value_name = "HOST:PORT")]
        read_addr: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Ask Sentinel for the master before every connection and write to it.
    Follow {
        /// A sentinel to ask (repeat for several; the first that answers wins).
        #[arg(long = "sentinel", value_name = "HOST:PORT", required = true)]
        sentinels: Vec<String>,
        /// The master name the sentinels monitor.
        #[arg(long, value_name = "NAME")]
        master_name: String,
        /// Also subscribe to `+switch-master` on a sentinel and move to the announced master at
        /// once (as Jedis does), instead of only when the old master breaks the connection.
        #[arg(long)]
        watch: bool,
        /// Also keep a subscriber connection on this fixed address (never re-resolved).
        #[arg(long, value_name = "HOST:PORT")]
        pubsub_addr: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// Names the counter key, the pub/sub channel and the client name.
    #[arg(long, default_value = "demo", value_parser = parse_name)]
    name: String,
    /// Time between writes.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// An environment variable holding the data servers' password (`AUTH` on every
    /// connection to a data server).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// An environment variable holding the sentinels' password (`AUTH` on every connection to
    /// a sentinel).
    #[arg(long, value_name = "VAR")]
    sentinel_password_env: Option<String>,
    /// Speak TLS to every server and sentinel, trusting this CA (PEM) and verifying the host
    /// name dialled.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// The client certificate (PEM) for mutual TLS, with `--tls-key`.
    #[arg(long, value_name = "FILE", requires = "tls_key", requires = "tls_ca")]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// The password in the environment variable `var` (if one is named); an error when it is
/// unset or empty. The error names the variable, never a value.
fn password_from_env(var: Option<&str>) -> Result<Option<Password>, String> {
    let Some(var) = var else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Some(Password(v))),
        _ => Err(format!("environment variable {var} is not set or empty")),
    }
}

/// A password, sent with `AUTH`; its `Debug` never shows it.
#[derive(Clone)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    // CLIENT SETNAME rejects spaces and newlines; keep names to a safe, greppable set.
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(s.to_owned())
    } else {
        Err("use letters, digits, '-', '_' and '.' only".to_owned())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.mode {
        Mode::Pin { common, .. } | Mode::Follow { common, .. } => common,
    };
    let passwords = match prepare(common) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let acked = Arc::new(AtomicU64::new(0));
    if let Err(e) = spawn_signal_thread(Arc::clone(&acked)) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let switch = Arc::new(Mutex::new(None));
    let (target, common, started) = start(cli.mode, &passwords, &switch);
    writer(
        &target,
        &common,
        passwords.data.as_ref(),
        started,
        &switch,
        &acked,
    )
}

/// The passwords from the environment, and the TLS settings of every connection.
fn prepare(common: &Common) -> Result<Passwords, String> {
    let passwords = password_from_env(common.password_env.as_deref()).and_then(|data| {
        Ok(Passwords {
            data,
            sentinel: password_from_env(common.sentinel_password_env.as_deref())?,
        })
    })?;
    set_tls(common).map_err(|e| format!("TLS: {e}"))?;
    Ok(passwords)
}

/// Where the writer writes, and the connections beside it, started: the replica reader, the
/// event subscriber and the `+switch-master` watch, as `mode` asks. Returns the writer's target,
/// the common options, and one receiver per started connection, told once it is up.
fn start(
    mode: Mode,
    passwords: &Passwords,
    switch: &Arc<Mutex<Option<String>>>,
) -> (Target, Common, Vec<mpsc::Receiver<()>>) {
    let mut started = Vec::new();
    let (target, common, subscriptions) = match mode {
        Mode::Pin {
            addr,
            pubsub_addr,
            read_addr,
            common,
        } => {
            started
                .extend(read_addr.map(|addr| Reader::start(addr, &common, passwords.data.clone())));
            let subscription = pubsub_addr.map(|pubsub| events(pubsub, &common, passwords));
            (Target::Fixed(addr), common, Vec::from_iter(subscription))
        }
        Mode::Follow {
            sentinels,
            master_name,
            watch,
            pubsub_addr,
            common,
        } => {
            let events = pubsub_addr.map(|pubsub| events(pubsub, &common, passwords));
            let subscription = watch.then(|| Subscription {
                addrs: sentinels.clone(),
                password: passwords.sentinel.clone(),
                channel: "+switch-master".to_owned(),
                client_name: format!("rolecall-demo-{}-watch", common.name),
                label: "watching",
                on_message: Some(SwitchWatch {
                    master_name: master_name.clone(),
                    switch: Arc::clone(switch),
                }),
            });
            let target = Target::Sentinel {
                sentinels,
                master_name,
                password: passwords.sentinel.clone(),
            };
            (
                target,
                common,
                subscription.into_iter().chain(events).collect(),
            )
        }
    };
    for sub in subscriptions {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || sub.run(tx));
        started.push(rx);
    }
    (target, common, started)
}

/// The subscriber connection of `--pubsub-addr`: the node's events channel on `addr`.
fn events(addr: String, common: &Common, passwords: &Passwords) -> Subscription {
    Subscription {
        addrs: vec![addr],
        password: passwords.data.clone(),
        channel: format!("rolecall-demo:{}:events", common.name),
        client_name: format!("rolecall-demo-{}-sub", common.name),
        label: "subscribed",
        on_message: None,
    }
}

/// The passwords the node sends, by the kind of server it connects to.
struct Passwords {
    data: Option<Password>,
    sentinel: Option<Password>,
}

/// Prints `acked N` and exits 0 on SIGTERM or SIGINT. The writer thread is never interrupted
/// mid-command; an INCR in flight at that moment is simply not counted.
fn spawn_signal_thread(acked: Arc<AtomicU64>) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Register before returning so a SIGTERM right after `ready` is already handled.
    let (mut term, mut int) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        println!("acked {}", acked.load(Ordering::SeqCst));
        let _ = io::stdout().flush();
        std::process::exit(0);
    });
    Ok(())
}

enum Target {
    Fixed(String),
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        password: Option<Password>,
    },
}

impl Target {
    fn resolve(&self) -> Result<String, String> {
        match self {
            Target::Fixed(addr) => Ok(addr.clone()),
            Target::Sentinel {
                sentinels,
                master_name,
                password,
            } => ask_sentinels(sentinels, master_name, password.as_ref()),
        }
    }
}

/// Why the command connection is being replaced.
struct Broken {
    error: String,
    /// The old connection still works (an error reply, a switch announcement): keep it open
    /// until its replacement is up, so the node never goes without a socket just because it is
    /// redialling. A closed or timed-out connection is dropped at once.
    usable: bool,
}

/// The command connection: connect, name it, `INCR` every interval until an error, repeat.
fn writer(
    target: &Target,
    common: &Common,
    password: Option<&Password>,
    started: Vec<mpsc::Receiver<()>>,
    switch: &Mutex<Option<String>>,
    acked: &AtomicU64,
) -> ExitCode {
    let key = format!("rolecall-demo:{}:count", common.name);
    let client_name = format!("rolecall-demo-{}", common.name);
    let mut ready = false;
    let mut previous: Option<Conn> = None;
    let mut next: Option<String> = None;
    loop {
        let opened = next
            .take()
            .map_or_else(|| target.resolve(), Ok)
            .and_then(|addr| open_named(&addr, &client_name, password));
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("error: {e}; retrying");
                thread::sleep(RETRY_DELAY);
                continue;
            }
        };
        drop(previous.take());
        println!("connected {}", conn.peer);
        if !ready {
            for rx in &started {
                // Subscriber and reader retry forever; whoever waits for `ready` bounds it.
                let _ = rx.recv();
            }
            println!("ready");
            ready = true;
        }
        let broken = loop {
            match conn.call(&["INCR", &key]) {
                Ok(Reply::Int) => {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Reply::Error(e)) => {
                    break Broken {
                        error: format!("{}: INCR: {e}", conn.peer),
                        usable: true,
                    };
                }
                Ok(other) => {
                    break Broken {
                        error: format!("{}: INCR: unexpected reply {other:?}", conn.peer),
                        usable: false,
                    };
                }
                Err(e) => {
                    break Broken {
                        error: format!("{}: INCR: {e}", conn.peer),
                        usable: false,
                    };
                }
            }
            if let Some(addr) = switch.lock().unwrap_or_else(|e| e.into_inner()).take() {
                next = Some(addr.clone());
                break Broken {
                    error: format!("{}: sentinel announced +switch-master to {addr}", conn.peer),
                    usable: true,
                };
            }
            thread::sleep(common.interval);
        };
        eprintln!("error: {}; reconnecting", broken.error);
        if broken.usable {
            previous = Some(conn);
        }
        if next.is_none() {
            thread::sleep(RETRY_DELAY);
        }
    }
}

/// A connection (authenticated with `password`, if any) named with `CLIENT SETNAME`.
fn open_named(addr: &str, client_name: &str, password: Option<&Password>) -> Result<Conn, String> {
    let mut conn = Conn::open(addr, password)?;
    conn.expect_ok(&["CLIENT", "SETNAME", client_name])
        .map_err(|e| format!("{}: CLIENT SETNAME: {e}", conn.peer))?;
    Ok(conn)
}

/// A read connection to one fixed address: `GET <key>` every interval, redialled to the same
/// address after any error (the read path of a client that reads from a replica on purpose).
struct Reader {
    addr: String,
    password: Option<Password>,
    key: String,
    client_name: String,
    interval: Duration,
}

impl Reader {
    /// Starts the reader's thread; the receiver hears of its first connection.
    fn start(addr: String, common: &Common, password: Option<Password>) -> mpsc::Receiver<()> {
        let reader = Reader {
            addr,
            password,
            key: format!("rolecall-demo:{}:count", common.name),
            client_name: format!("rolecall-demo-{}-read", common.name),
            interval: common.interval,
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || reader.run(tx));
        rx
    }

    /// Runs forever; signals `first` after the first connection.
    fn run(self, first: mpsc::Sender<()>) {
        let mut first = Some(first);
        loop {
            if let Err(e) = self.session(&mut first) {
                eprintln!("error: reading {e}; reconnecting");
            }
            thread::sleep(RETRY_DELAY);
        }
    }

    fn session(&self, first: &mut Option<mpsc::Sender<()>>) -> Result<(), String> {
        let mut conn = open_named(&self.addr, &self.client_name, self.password.as_ref())?;
        let peer = conn.peer;
        println!("reading {peer}");
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        loop {
            match conn.call(&["GET", &self.key]) {
                Ok(Reply::Bulk(_)) => {}
                Ok(Reply::Error(e)) => return Err(format!("{peer}: GET: {e}")),
                Ok(other) => return Err(format!("{peer}: GET: unexpected reply {other:?}")),
                Err(e) => return Err(format!("{peer}: GET: {e}")),
            }
            thread::sleep(self.interval);
        }
    }
}

/// A subscriber connection to the first of `addrs` that accepts, redialled (to the first that
/// accepts again) whenever it breaks.
struct Subscription {
    addrs: Vec<String>,
    /// `AUTH` on each connection (the data servers' or the sentinels', by what `addrs` are).
    password: Option<Password>,
    channel: String,
    client_name: String,
    /// The stdout word for each (re)subscription: `subscribed ADDR` / `watching ADDR`.
    label: &'static str,
    on_message: Option<SwitchWatch>,
}

/// Hands `+switch-master` announcements for our master to the writer.
struct SwitchWatch {
    master_name: String,
    switch: Arc<Mutex<Option<String>>>,
}

impl SwitchWatch {
    /// A `+switch-master` message reads `NAME OLD-IP OLD-PORT NEW-IP NEW-PORT`.
    fn handle(&self, reply: &Reply) {
        let Reply::Array(Some(items)) = reply else {
            return;
        };
        let [Reply::Bulk(Some(kind)), _, Reply::Bulk(Some(payload))] = items.as_slice() else {
            return;
        };
        if kind != b"message" {
            return;
        }
        let payload = String::from_utf8_lossy(payload);
        if let [name, _, _, ip, port] = payload.split(' ').collect::<Vec<_>>().as_slice()
            && *name == self.master_name
        {
            let addr = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            *self.switch.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        }
    }
}

impl Subscription {
    /// Runs forever; signals `first` after the first subscription.
    fn run(self, first: mpsc::Sender<()>) {
        let mut first = Some(first);
        loop {
            if let Err(e) = self.session(&mut first) {
                eprintln!("error: {} {e}; reconnecting", self.label);
            }
            thread::sleep(RETRY_DELAY);
        }
    }

    fn session(&self, first: &mut Option<mpsc::Sender<()>>) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut conn = self
            .addrs
            .iter()
            .find_map(|addr| {
                open_named(addr, &self.client_name, self.password.as_ref())
                    .map_err(|e| errors.push(e))
                    .ok()
            })
            .ok_or_else(|| errors.join("; "))?;
        let peer = conn.peer;
        match conn.call(&["SUBSCRIBE", &self.channel]) {
            Ok(Reply::Array(Some(_))) => {}
            Ok(other) => return Err(format!("{peer}: SUBSCRIBE: unexpected reply {other:?}")),
            Err(e) => return Err(format!("{peer}: SUBSCRIBE: {e}")),
        }
        println!("{} {peer}", self.label);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        let mut idle = 0;
        loop {
            if conn.readable().map_err(|e| format!("{peer}: {e}"))? {
                // A message, or a PING reply (`["pong", ""]` in RESP2 subscribed mode).
                let reply = conn.read_reply().map_err(|e| format!("{peer}: {e}"))?;
                if let Some(watch) = &self.on_message {
                    watch.handle(&reply);
                }
                idle = 0;
            } else {
                idle += 1;
                if idle > SUBSCRIBER_MAX_IDLE {
                    return Err(format!("{peer}: no reply to PING"));
                }
                conn.send(&["PING"]).map_err(|e| format!("{peer}: {e}"))?;
            }
        }
    }
}

/// `SENTINEL get-master-addr-by-name` on each sentinel in turn; the first answer wins.
fn ask_sentinels(
    sentinels: &[String],
    master_name: &str,
    password: Option<&Password>,
) -> Result<String, String> {
    let mut errors = Vec::new();
    for sentinel in sentinels {
        let answer = Conn::open(sentinel, password).and_then(|mut conn| {
            conn.call(&["SENTINEL", "get-master-addr-by-name", master_name])
                .map_err(|e| e.to_string())
        });
        match answer {
            Ok(Reply::Array(Some(items))) => match items.as_slice() {
                [Reply::Bulk(Some(host)), Reply::Bulk(Some(port))] => {
                    let host = String::from_utf8_lossy(host);
                    let port = String::from_utf8_lossy(port);
                    return Ok(if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    });
                }
                _ => errors.push(format!("{sentinel}: unexpected reply {items:?}")),
            },
            Ok(Reply::Array(None)) => errors.push(format!("{sentinel}: master name unknown")),
            Ok(other) => errors.push(format!("{sentinel}: unexpected reply {other:?}")),
            Err(e) => errors.push(format!("{sentinel}: {e}")),
        }
    }
    Err(format!("no sentinel answered: {}", errors.join("; ")))
}

#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    /// The value is checked to be an integer and dropped: this node only counts acks.
    Int,
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One RESP2 connection with bounded connect, read and write times.
struct Conn {
    /// Reads are buffered; writes go straight to the stream (`get_mut`).
    reader: BufReader<Stream>,
    peer: SocketAddr,
}

/// The TLS settings every connection uses (`--tls-ca`, `--tls-cert`, `--tls-key`), set once
/// at start; none: plaintext.
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// A connection's byte stream: plain TCP, or TLS over it (verifying the dialled host name).
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Sets [`TLS`] from `--tls-ca` (and `--tls-cert`/`--tls-key`), if given.
fn set_tls(common: &Common) -> Result<(), String> {
    let Some(ca) = &common.tls_ca else {
        return Ok(());
    };
    let client = common.tls_cert.as_deref().zip(common.tls_key.as_deref());
    let _ = TLS.set(Arc::new(tls_config(ca, client)?));
    Ok(())
}

/// The client TLS configuration from PEM files: the CA to trust, and the client certificate
/// and key when both are given.
fn tls_config(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }
    }
}

impl Conn {
    /// Resolves `addr` (`HOST:PORT`, with the system resolver), connects to the first address
    /// that accepts, and sends `AUTH` with `password` if there is one.
    fn open(addr: &str, password: Option<&Password>) -> Result<Conn, String> {
        let mut conn = Conn::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        if let Some(Password(password)) = password {
            conn.expect_ok(&["AUTH", password])
                .map_err(|e| format!("{} ({addr}): AUTH: {e}", conn.peer))?;
        }
        Ok(conn)
    }

    fn connect(addr: &str) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        for candidate in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    stream.set_nodelay(true)?;
                    return Ok(Conn {
                        reader: BufReader::new(Conn::secure(addr, stream)?),
                        peer: candidate,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// With TLS configured, the TLS stream over `stream`, verifying `addr`'s host name.
    fn secure(addr: &str, stream: TcpStream) -> io::Result<Stream> {
        let Some(config) = TLS.get() else {
            return Ok(Stream::Plain(stream));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn =
            rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        // Complete the handshake now, so a refused certificate fails the connect.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)
    }

    fn call(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    fn expect_ok(&mut self, args: &[&str]) -> Result<(), String> {
        match self.call(args) {
            Ok(Reply::Status(s)) if s == "OK" => Ok(()),
            Ok(Reply::Error(e)) => Err(e),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits up to the read timeout for the start of a reply: `Ok(false)` when nothing came.
    /// Only a timeout *between* replies is idleness; one inside a reply breaks the framing
    /// and is returned as an error by `read_reply`, which drops the connection.
    fn readable(&mut self) -> io::Result<bool> {
        match self.reader.fill_buf() {
            Ok([]) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader, 0)
    }
}

fn protocol_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    // Bounded: a line longer than MAX_BULK is a protocol error, not a reason to keep reading.
    let n = r.take(MAX_BULK as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol_error("unterminated line".to_owned()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol_error("line is not UTF-8".to_owned()))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(protocol_error("reply nested too deeply".to_owned()));
    }
    let line = read_line(r)?;
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    let length = |rest: &str, max: usize| -> io::Result<Option<usize>> {
        let n: i64 = rest
            .parse()
            .map_err(|_| protocol_error(format!("bad length {rest:?}")))?;
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            Ok(n) => Err(protocol_error(format!("length {n} over the cap {max}"))),
            Err(_) if n == -1 => Ok(None),
            Err(_) => Err(protocol_error(format!("bad length {n}"))),
        }
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest
            .parse::<i64>()
            .map(|_| Reply::Int)
            .map_err(|_| protocol_error(format!("bad integer {rest:?}"))),
        "$" => match length(rest, MAX_BULK)? {
            None => Ok(Reply::Bulk(None)),
            Some(n) => {
                let mut data = vec![0; n + 2];
                r.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(protocol_error("unterminated bulk string".to_owned()));
                }
                data.truncate(n);
                Ok(Reply::Bulk(Some(data)))
            }
        },
        "*" => match length(rest, MAX_ARRAY)? {
            None => Ok(Reply::Array(None)),
            Some(n) => (0..n)
                .map(|_| read_reply(r, depth + 1))
                .collect::<io::Result<Vec<_>>>()
                .map(|items| Reply::Array(Some(items))),
        },
        _ => Err(protocol_error(format!("unknown reply type in {line:?}"))),
    }
}
