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
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::join_all;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value,
};
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

/// How to reach `addr` at `ip` (its host, or what its name resolved to) with `auth`: no
/// `CLIENT SETINFO` (Redis 7.0 and Sentinel refuse it).
pub fn connection_info(
    addr: &ServerAddr,
    ip: Option<IpAddr>,
    auth: &Auth,
) -> Result<ConnectionInfo, ServerError> {
    let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(u) = &auth.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &auth.password {
        redis = redis.set_password(p.expose());
    }
    let host = ip.map_or_else(|| addr.host.clone(), |ip| ip.to_string());
    // TCP_NODELAY: rolecall sends a few small commands at once on one connection; with Nagle's
    // algorithm each later one waits for the peer's delayed ACK (40 ms on Linux).
    Ok((host, addr.port)
        .into_connection_info()
        .map_err(|e| from_redis(addr, &e))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .set_redis_settings(redis))
}

/// A redis client for `addr` at `ip` (its host, or what its name resolved to) with `auth`;
/// with `tls`, over TLS, verifying `addr`'s host name (or the override) while dialling `ip`.
pub fn client(
    addr: &ServerAddr,
    ip: Option<IpAddr>,
    auth: &Auth,
    tls: Option<&Tls>,
) -> Result<redis::Client, ServerError> {
    client_verifying(addr, &addr.host, ip, auth, tls)
}

/// [`client`], verifying the name `verify` (a configured name `addr`, an IP, was resolved
/// from) instead of `addr`'s host.
fn client_verifying(
    addr: &ServerAddr,
    verify: &str,
    ip: Option<IpAddr>,
    auth: &Auth,
    tls: Option<&Tls>,
) -> Result<redis::Client, ServerError> {
    let Some(tls) = tls else {
        let info = connection_info(addr, ip, auth)?;
        return redis::Client::open(info).map_err(|e| from_redis(addr, &e));
    };
    let plain = connection_info(addr, None, auth)?;
    let info = redis::ConnectionAddr::TcpTls {
        host: tls.name_for(verify).to_string(),
        port: addr.port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()
    .map_err(|e| from_redis(addr, &e))?
    .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
    .set_redis_settings(plain.redis_settings().clone());
    redis::Client::build_with_tls(info, tls.certificates()).map_err(|e| from_redis(addr, &e))
}

/// How to dial a client from [`client`]: the timeouts, and with `ip` the address to dial
/// whatever name the client verifies.
pub fn async_config(timeout: Duration, ip: Option<(IpAddr, u16)>) -> AsyncConnectionConfig {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    match ip {
        Some((ip, port)) => config.set_dns_resolver(Dialled(std::net::SocketAddr::new(ip, port))),
        None => config,
    }
}

/// The address a connection dials, whatever host name it names (and verifies, with TLS).
struct Dialled(std::net::SocketAddr);

impl redis::io::AsyncDNSResolver for Dialled {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _host: &'b str,
        _port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        let at = self.0;
        Box::pin(
            async move { Ok(Box::new(std::iter::once(at)) as Box<dyn Iterator<Item = _> + Send>) },
        )
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
        async move {
            if let Some(c) = cached {
                return Ok((c, false));
            }
            let ip = match resolved {
                Some(r) => r?,
                None => resolve(what, &addr, timeout).await?,
            }
            .first()
            .copied();
            let client = client_verifying(&addr, &verify, ip, &auth, tls.as_deref())?;
            let config = async_config(timeout, ip.map(|ip| (ip, addr.port)));
            let connect = async {
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg("rolecall")
                    .query_async::<()>(&mut c)
                    .await?;
                Ok::<_, redis::RedisError>(c)
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(c)) => Ok((c, true)),
                Ok(Err(e)) => Err(from_redis(&addr, &e)),
                Err(_) => Err(ServerError::timeout(what, &addr, timeout)),
            }
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

/// Runs one command under `timeout`, mapping every failure to a [`ServerError`].
pub async fn command(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    what: &str,
    timeout: Duration,
    cmd: &redis::Cmd,
) -> Result<Value, ServerError> {
    match tokio::time::timeout(timeout, cmd.query_async::<Value>(conn)).await {
        Ok(Ok(Value::ServerError(e))) => {
            let code = e.code().to_string();
            Err(ServerError::new(
                classify_code(&code),
                format!("{addr}: {code} {}", e.details().unwrap_or(""))
                    .trim_end()
                    .to_string(),
            ))
        }
        Ok(Ok(v)) => Ok(v),
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
}
