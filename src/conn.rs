//! The connection layer every part that talks to Redis shares: server addresses as Sentinel
//! announces them, credentials, rolecall's pool of kept connections, one command under a
//! timeout, and the classes of error a server's answer falls into.
//!
//! Connections are kept in a [`Pool`] and reused across checks; one that fails is dropped and
//! dialled again at the next check. Every connect and command runs under the check timeout.
//! rolecall names its connections `rolecall` (`CLIENT SETNAME`) so that operators, and
//! rolecall's own repair, can tell them from the node's.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use futures_util::future::join_all;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use serde::{Serialize, Serializer};

use crate::secret::Secret;
use crate::tls::Tls;

/// A server address as Sentinel announces it: an IP or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn new(host: String, port: u16) -> ServerAddr {
        // "::ffff:10.0.0.1" and "10.0.0.1" are one server; keep the plain form.
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => plain_ip(ip).to_string(),
            Err(_) => host,
        };
        ServerAddr { host, port }
    }

    /// The address as an IP, when it is one (not a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// The plain form of an IP: "::ffff:10.0.0.1" is 10.0.0.1.
pub fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a host name resolved to: its addresses (sorted, each once), or why it did not.
pub type Resolved = Result<Vec<IpAddr>, ServerError>;

/// Resolves `addr`'s host with the system resolver under `timeout` (an IP is itself). A name
/// that resolves to nothing, fails, or takes longer is a [`ErrorClass::Resolve`] error naming
/// it. Kubernetes removes a pod's name from DNS while the pod is down, so this is routine.
pub async fn resolve(what: &str, addr: &ServerAddr, timeout: Duration) -> Resolved {
    if let Some(ip) = addr.ip() {
        return Ok(vec![ip]);
    }
    let lookup = tokio::net::lookup_host((addr.host.as_str(), addr.port));
    let failed = |why: String| {
        ServerError::new(
            ErrorClass::Resolve,
            format!("{what} {addr}: name does not resolve ({why})"),
        )
    };
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(found)) => {
            let mut ips: Vec<IpAddr> = found.map(|sa| plain_ip(sa.ip())).collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                Err(failed("no address".to_string()))
            } else {
                Ok(ips)
            }
        }
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Text that is not a server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    #[error("{0:?}: bad port")]
    BadPort(String),
}

impl FromStr for ServerAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<ServerAddr, AddrError> {
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            return Ok(ServerAddr::new(sa.ip().to_string(), sa.port()));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AddrError::NotHostPort(s.to_string()))?;
        if host.is_empty() || host.contains(':') {
            return Err(AddrError::NotHostPort(s.to_string()));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| AddrError::BadPort(s.to_string()))?;
        Ok(ServerAddr::new(host.to_string(), port))
    }
}

impl Serialize for ServerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a server said when it refused or failed, reduced to what the verdict needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Readonly,
    /// Valkey's answer to a write on a replica for a client that enabled
    /// `CLIENT CAPA redirect`: `-REDIRECT host:port` instead of `READONLY`.
    Redirect,
    NoReplicas,
    Misconf,
    Oom,
    Loading,
    Busy,
    MasterDown,
    Auth,
    NoPerm,
    Timeout,
    Connect,
    /// A host name that does not resolve (or not within the timeout): rolecall cannot reach the
    /// server, which says nothing about the node.
    Resolve,
    /// The TLS handshake failed (a certificate rustls refused, a name that does not match, a
    /// server that wants a client certificate): rolecall's own blindness.
    Tls,
    Protocol,
    Other,
}

impl ErrorClass {
    /// The class as `/status` and the metrics name it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Readonly => "readonly",
            ErrorClass::Redirect => "redirect",
            ErrorClass::NoReplicas => "no_replicas",
            ErrorClass::Misconf => "misconf",
            ErrorClass::Oom => "oom",
            ErrorClass::Loading => "loading",
            ErrorClass::Busy => "busy",
            ErrorClass::MasterDown => "master_down",
            ErrorClass::Auth => "auth",
            ErrorClass::NoPerm => "no_perm",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Resolve => "resolve",
            ErrorClass::Tls => "tls",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Other => "other",
        }
    }
}

/// A failed fact: its class and a message for humans (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub class: ErrorClass,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ServerError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> ServerError {
        ServerError {
            class,
            message: message.into(),
        }
    }

    pub fn timeout(what: &str, addr: &ServerAddr, after: Duration) -> ServerError {
        ServerError::new(
            ErrorClass::Timeout,
            format!(
                "{what} {addr} did not answer within {}",
                humantime::format_duration(after)
            ),
        )
    }
}

/// Classifies an error reply code (the first word of a RESP error) or a client error.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "READONLY" => ErrorClass::Readonly,
        "REDIRECT" => ErrorClass::Redirect,
        "NOREPLICAS" => ErrorClass::NoReplicas,
        "MISCONF" => ErrorClass::Misconf,
        "OOM" => ErrorClass::Oom,
        "LOADING" => ErrorClass::Loading,
        "BUSY" => ErrorClass::Busy,
        "MASTERDOWN" => ErrorClass::MasterDown,
        "NOAUTH" | "WRONGPASS" => ErrorClass::Auth,
        "NOPERM" => ErrorClass::NoPerm,
        _ => ErrorClass::Other,
    }
}

/// Turns a redis crate error into a [`ServerError`], naming the server.
pub fn from_redis(addr: &ServerAddr, e: &redis::RedisError) -> ServerError {
    use redis::ErrorKind;
    if crate::tls::is_tls_error(e) {
        return ServerError::new(ErrorClass::Tls, format!("{addr}: TLS: {e}"));
    }
    let class = if let Some(code) = e.code() {
        match classify_code(code) {
            ErrorClass::Other if e.kind() == ErrorKind::AuthenticationFailed => ErrorClass::Auth,
            c => c,
        }
    } else if e.is_timeout() {
        ErrorClass::Timeout
    } else if e.kind() == ErrorKind::AuthenticationFailed {
        ErrorClass::Auth
    } else if e.is_connection_refusal() || e.kind() == ErrorKind::Io {
        ErrorClass::Connect
    } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        ErrorClass::Protocol
    } else {
        ErrorClass::Other
    };
    ServerError::new(class, format!("{addr}: {e}"))
}

/// A reply that does not have the shape its command promises (a server that is not Redis, or a
/// version rolecall does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {problem}")]
pub struct ReplyError {
    pub command: &'static str,
    pub problem: String,
}

impl ReplyError {
    pub fn new(command: &'static str, problem: impl Into<String>) -> ReplyError {
        ReplyError {
            command,
            problem: problem.into(),
        }
    }
}

/// A reply as text, where it is text (or a number).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// What a server or sentinel runs, from its `INFO server`: `redis` or `valkey`, and the
/// version. Valkey keeps `redis_version` (7.2.4, for clients that test it) and adds
/// `server_name:valkey` and `valkey_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Software {
    pub name: String,
    pub version: String,
}

/// Reads the [`Software`] from the text of `INFO server`.
pub fn parse_software(info: &str) -> Option<Software> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
            .filter(|v| !v.is_empty() && v.len() <= 64)
    };
    let (name, version) = match (field("valkey_version"), field("server_name")) {
        (Some(v), _) => ("valkey", v),
        (None, Some("valkey")) => ("valkey", field("redis_version")?),
        _ => ("redis", field("redis_version")?),
    };
    Some(Software {
        name: name.to_string(),
        version: version.to_string(),
    })
}

/// `INFO server` on `conn`, read as [`Software`]; `None` when it fails or says neither.
pub async fn software(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    what: &str,
    timeout: Duration,
) -> Option<Software> {
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let reply = command(conn, addr, what, timeout, &info).await.ok()?;
    parse_software(&text(&reply)?)
}

/// Credentials for a kind of server (data servers or sentinels).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// At most this many bytes are read from one connection between two checks (for an event
/// subscription: per message): above the largest reply rolecall reads (`CLIENT LIST`, 8 MiB),
/// and small enough that no peer — a sentinel or server that announces a 1 GB bulk string and
/// streams it, say — can make rolecall hold more than a few times this. Past it the
/// connection fails (the peer is unknown for this check) and is dropped.
pub const MAX_READ_PER_CHECK: u64 = 9 << 20;

/// The bytes one connection may still read: reset each check (by [`Pool::refresh`]).
#[derive(Debug, Default)]
pub struct Budget(AtomicU64);

impl Budget {
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Any byte stream a connection runs over: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A stream that fails once it has read its [`Budget`] ([`MAX_READ_PER_CHECK`]).
pub struct Bounded {
    inner: Box<dyn Transport>,
    budget: Arc<Budget>,
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let used = this.budget.0.load(Ordering::Relaxed);
        if used >= MAX_READ_PER_CHECK {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the peer sent more than {MAX_READ_PER_CHECK} bytes in one check"),
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let read = (buf.filled().len() - before) as u64;
            this.budget.0.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The redis settings of a connection with `auth`: no `CLIENT SETINFO` (Redis 7.0 and
/// Sentinel refuse it).
fn redis_settings(auth: &Auth) -> RedisConnectionInfo {
    let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(u) = &auth.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &auth.password {
        redis = redis.set_password(p.expose());
    }
    redis
}

/// TCP keepalive of every connection rolecall opens: a peer that vanished without a word (a
/// host gone, a partition, a pod's address that no longer answers) is found within
/// 5 + 3 × 2 = 11 s of silence, by the kernel, without a command. It is what keeps an idle
/// event subscription honest between its rare `PING`s.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(5))
    .with_interval(Duration::from_secs(2))
    .with_retries(3);

/// Opens the byte stream to `addr` at `ip`: TCP (`TCP_NODELAY`: rolecall sends a few small
/// commands at once; with Nagle's algorithm each later one would wait for the peer's delayed
/// ACK; and [`KEEPALIVE`]), and with `tls` the TLS handshake, verifying `verify` (the name dialled, or the one a
/// configured name resolved from) or the configured override. Not bounded in time: callers
/// put it under their timeout.
async fn open_stream(
    addr: &ServerAddr,
    ip: IpAddr,
    verify: &str,
    tls: Option<&Tls>,
    budget: Arc<Budget>,
) -> Result<Bounded, ServerError> {
    let sock = tokio::net::TcpStream::connect(std::net::SocketAddr::new(ip, addr.port))
        .await
        .map_err(|e| ServerError::new(ErrorClass::Connect, format!("{addr}: {e}")))?;
    let _ = sock.set_nodelay(true);
    let _ = socket2::SockRef::from(&sock).set_tcp_keepalive(&KEEPALIVE);
    let inner: Box<dyn Transport> = match tls {
        None => Box::new(sock),
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(tls.name_for(verify).to_string())
                .map_err(|e| {
                    ServerError::new(ErrorClass::Tls, format!("{addr}: TLS: {verify:?}: {e}"))
                })?;
            let connector = tokio_rustls::TlsConnector::from(tls.client_config());
            let stream = connector
                .connect(name, sock)
                .await
                .map_err(|e| ServerError::new(ErrorClass::Tls, format!("{addr}: TLS: {e}")))?;
            Box::new(stream)
        }
    };
    Ok(Bounded { inner, budget })
}

/// A connection to `addr` at `ip` with `auth` (and `tls`, verifying `verify`), its reads
/// bounded by the returned [`Budget`]; connect, handshake and authentication under `timeout`.
pub async fn dial(
    addr: &ServerAddr,
    ip: IpAddr,
    verify: &str,
    auth: &Auth,
    tls: Option<&Tls>,
    timeout: Duration,
) -> Result<(MultiplexedConnection, Arc<Budget>), ServerError> {
    let budget = Arc::new(Budget::default());
    let connect = async {
        let stream = open_stream(addr, ip, verify, tls, budget.clone()).await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let (conn, driver) =
            MultiplexedConnection::new_with_config(&redis_settings(auth), stream, config)
                .await
                .map_err(|e| from_redis(addr, &e))?;
        tokio::spawn(driver);
        Ok::<_, ServerError>(conn)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(conn)) => Ok((conn, budget)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ServerError::timeout("server", addr, timeout)),
    }
}

/// A pub/sub connection to the sentinel at `addr` (its name resolved now, under `timeout`),
/// each message's bytes bounded by the returned [`Budget`] (reset it after each).
pub async fn dial_pubsub(
    addr: &ServerAddr,
    auth: &Auth,
    tls: Option<&Tls>,
    timeout: Duration,
) -> Result<(redis::aio::PubSub, Arc<Budget>), ServerError> {
    let ip = *resolve("sentinel", addr, timeout)
        .await?
        .first()
        .expect("resolve gives at least one address");
    let budget = Arc::new(Budget::default());
    let connect = async {
        let stream = open_stream(addr, ip, &addr.host, tls, budget.clone()).await?;
        redis::aio::PubSub::new(&redis_settings(auth), stream)
            .await
            .map_err(|e| from_redis(addr, &e))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(pubsub)) => Ok((pubsub, budget)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ServerError::timeout("sentinel", addr, timeout)),
    }
}

/// A kept connection and the IP it was dialled at (`None`: not known to be current).
struct Kept {
    conn: MultiplexedConnection,
    ip: Option<IpAddr>,
}

/// rolecall's connections to servers, reused across checks.
///
/// Host names are resolved once per check ([`Pool::refresh`]), under the timeout, and a kept
/// connection to a name that now resolves elsewhere (a pod that came back with a new IP) is
/// dropped, so the next connection goes to the address the name has now.
pub struct Pool {
    what: &'static str,
    auth: Auth,
    timeout: Duration,
    conns: HashMap<ServerAddr, Kept>,
    /// What each host name asked about this check resolved to.
    names: HashMap<ServerAddr, Resolved>,
    tls: Option<std::sync::Arc<Tls>>,
    /// The name TLS verifies for an address that a configured name resolved to.
    verify_as: HashMap<ServerAddr, String>,
    /// The read budget of every connection the pool dialled, reset each check.
    budgets: Arc<Mutex<Vec<Weak<Budget>>>>,
}

impl Pool {
    /// `what` names the kind of server in messages ("server", "sentinel").
    pub fn new(
        what: &'static str,
        auth: Auth,
        timeout: Duration,
        tls: Option<std::sync::Arc<Tls>>,
    ) -> Pool {
        Pool {
            what,
            auth,
            timeout,
            conns: HashMap::new(),
            names: HashMap::new(),
            tls,
            verify_as: HashMap::new(),
            budgets: Arc::default(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves the host names among `addrs` again, all at once, each under the timeout, and
    /// drops the kept connections to names that no longer resolve to the address they were
    /// dialled at. What resolved is what [`Pool::connection`] dials until the next refresh.
    pub async fn refresh<'a>(&mut self, addrs: impl IntoIterator<Item = &'a ServerAddr>) {
        let mut names: Vec<&ServerAddr> = addrs.into_iter().filter(|a| a.ip().is_none()).collect();
        names.sort();
        names.dedup();
        let (what, timeout) = (self.what, self.timeout);
        let resolved = join_all(names.iter().map(|a| resolve(what, a, timeout))).await;
        // A new check: every connection may read its budget again.
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets.retain(|b| match b.upgrade() {
            Some(b) => {
                b.reset();
                true
            }
            None => false,
        });
        drop(budgets);
        self.names = names.into_iter().cloned().zip(resolved).collect();
        let names = &self.names;
        self.conns.retain(|addr, kept| match names.get(addr) {
            None => true,
            Some(Ok(ips)) => kept.ip.is_some_and(|ip| ips.contains(&ip)),
            Some(Err(_)) => false,
        });
    }

    /// The names TLS verifies for addresses that configured names resolved to (replacing the
    /// last ones).
    pub fn set_verify_as(&mut self, names: impl IntoIterator<Item = (ServerAddr, String)>) {
        self.verify_as = names.into_iter().collect();
    }

    /// What `addr`'s host resolved to at the last refresh (an IP: itself); `None` for a name
    /// not refreshed.
    pub fn resolved(&self, addr: &ServerAddr) -> Option<Resolved> {
        match addr.ip() {
            Some(ip) => Some(Ok(vec![ip])),
            None => self.names.get(addr).cloned(),
        }
    }

    /// A connection to `addr`: the kept one, or a new one named `rolecall`, dialled at what its
    /// name resolved to (resolved now if it was not refreshed). The returned handle is cheap
    /// to clone and usable concurrently.
    pub fn connection(
        &self,
        addr: &ServerAddr,
    ) -> impl Future<Output = Result<(MultiplexedConnection, bool), ServerError>> + 'static {
        let cached = self.conns.get(addr).map(|k| k.conn.clone());
        let resolved = self.resolved(addr);
        let auth = self.auth.clone();
        let addr = addr.clone();
        let timeout = self.timeout;
        let what = self.what;
        let tls = self.tls.clone();
        let verify = self
            .verify_as
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| addr.host.clone());
        let budgets = self.budgets.clone();
        async move {
            if let Some(c) = cached {
                return Ok((c, false));
            }
            let resolved = match resolved {
                Some(r) => r?,
                None => resolve(what, &addr, timeout).await?,
            };
            let ip = *resolved
                .first()
                .expect("resolve gives at least one address");
            let (mut c, budget) = dial(&addr, ip, &verify, &auth, tls.as_deref(), timeout)
                .await
                .map_err(|e| match e.class {
                    ErrorClass::Timeout => ServerError::timeout(what, &addr, timeout),
                    _ => e,
                })?;
            budgets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::downgrade(&budget));
            let mut setname = redis::cmd("CLIENT");
            setname.arg("SETNAME").arg("rolecall");
            command(&mut c, &addr, what, timeout, &setname).await?;
            Ok((c, true))
        }
    }

    /// The kept connection to `addr`, if any.
    pub fn get(&self, addr: &ServerAddr) -> Option<MultiplexedConnection> {
        self.conns.get(addr).map(|k| k.conn.clone())
    }

    /// Keeps a connection for the next checks, as dialled at what `addr` resolved to now.
    pub fn keep(&mut self, addr: &ServerAddr, conn: MultiplexedConnection) {
        let ip = match self.resolved(addr) {
            Some(Ok(ips)) => ips.first().copied(),
            _ => None,
        };
        self.conns.insert(addr.clone(), Kept { conn, ip });
    }

    /// Drops the connection to `addr` (after an error), so the next check dials again.
    pub fn forget(&mut self, addr: &ServerAddr) {
        self.conns.remove(addr);
    }

    /// Drops connections to servers no longer in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&ServerAddr) -> bool) {
        self.conns.retain(|a, _| keep(a));
    }
}

/// A reply that is a server's error (`-READONLY ...`), as a [`ServerError`].
pub(crate) fn reply_error(addr: &ServerAddr, v: Value) -> Result<Value, ServerError> {
    match v {
        Value::ServerError(e) => {
            let code = e.code().to_string();
            Err(ServerError::new(
                classify_code(&code),
                format!("{addr}: {code} {}", e.details().unwrap_or(""))
                    .trim_end()
                    .to_string(),
            ))
        }
        v => Ok(v),
    }
}

/// Runs one command under `timeout`, mapping every failure to a [`ServerError`].
pub async fn command(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    what: &str,
    timeout: Duration,
    cmd: &redis::Cmd,
) -> Result<Value, ServerError> {
    match tokio::time::timeout(timeout, cmd.query_async::<Value>(conn)).await {
        Ok(Ok(v)) => reply_error(addr, v),
        Ok(Err(e)) => Err(from_redis(addr, &e)),
        Err(_) => Err(ServerError::timeout(what, addr, timeout)),
    }
}

/// Sends `pipe`'s commands in one round trip under `timeout`: one result per command (a
/// command the server refused is its error), or the error that broke the exchange.
pub async fn pipeline(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    what: &str,
    timeout: Duration,
    pipe: &redis::Pipeline,
) -> Result<Vec<Result<Value, ServerError>>, ServerError> {
    let mut pipe = pipe.clone();
    pipe.ignore_errors();
    match tokio::time::timeout(timeout, pipe.query_async::<Vec<Value>>(conn)).await {
        Ok(Ok(replies)) => Ok(replies.into_iter().map(|v| reply_error(addr, v)).collect()),
        Ok(Err(e)) => Err(from_redis(addr, &e)),
        Err(_) => Err(ServerError::timeout(what, addr, timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        let cases = [
            ("READONLY", ErrorClass::Readonly),
            ("REDIRECT", ErrorClass::Redirect),
            ("NOREPLICAS", ErrorClass::NoReplicas),
            ("MISCONF", ErrorClass::Misconf),
            ("OOM", ErrorClass::Oom),
            ("LOADING", ErrorClass::Loading),
            ("BUSY", ErrorClass::Busy),
            ("MASTERDOWN", ErrorClass::MasterDown),
            ("NOAUTH", ErrorClass::Auth),
            ("WRONGPASS", ErrorClass::Auth),
            ("NOPERM", ErrorClass::NoPerm),
            ("ERR", ErrorClass::Other),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(code), class, "{code}");
        }
    }

    fn a(s: &str) -> ServerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_software_is_read_from_info_server() {
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
        let sw = |name: &str, version: &str| Software {
            name: name.into(),
            version: version.into(),
        };
        assert_eq!(parse_software(redis), Some(sw("redis", "7.0.15")));
        assert_eq!(parse_software(valkey), Some(sw("valkey", "8.1.8")));
        assert_eq!(
            parse_software("redis_version:7.2.4\r\nserver_name:valkey\r\n"),
            Some(sw("valkey", "7.2.4"))
        );
        assert_eq!(parse_software("# Server\r\nrun_id:abc\r\n"), None);
        assert_eq!(
            parse_software(&format!("redis_version:{}", "9".repeat(100))),
            None
        );
    }

    #[test]
    fn addresses_parse_and_normalise() {
        assert_eq!(a("[::ffff:127.0.0.1]:6379"), a("127.0.0.1:6379"));
        assert_eq!(a("[::1]:6379").to_string(), "[::1]:6379");
        assert_eq!(a("redis-1:6379").host, "redis-1");
        assert!("6379".parse::<ServerAddr>().is_err());
        assert!(":6379".parse::<ServerAddr>().is_err());
    }

    #[test]
    fn an_error_class_is_named_as_status_serializes_it() {
        use ErrorClass::*;
        for c in [
            Readonly, Redirect, NoReplicas, Misconf, Oom, Loading, Busy, MasterDown, Auth, NoPerm,
            Timeout, Connect, Resolve, Tls, Protocol, Other,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
