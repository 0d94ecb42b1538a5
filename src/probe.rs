//! Server facts through rolecall's own connections: `ROLE` of a server and the write probe
//! (`SET <prefix>:<node> <ts> PX <ttl>`, never `PUBLISH`, which "succeeds" on a replica), with
//! every error classified.
//!
//! Connections are kept in a [`Pool`] and reused across checks; one that fails is dropped and
//! dialled again at the next check. Every connect and command runs under the check timeout.
//! rolecall names its connections `rolecall` (`CLIENT SETNAME`) so that operators, and
//! rolecall's own repair, can tell them from the node's.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use serde::Serialize;

use crate::secret::Secret;
use crate::sentinel::ServerAddr;

/// What a server said when it refused or failed, reduced to what the verdict needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Readonly,
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

/// A server's answer to `ROLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica {
        master: Option<ServerAddr>,
        link_up: bool,
    },
    /// A sentinel, or anything else a server may call itself.
    Other(String),
}

impl Role {
    pub fn name(&self) -> &str {
        match self {
            Role::Master => "master",
            Role::Replica { .. } => "replica",
            Role::Other(s) => s,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Replica {
                master: Some(m), ..
            } => write!(f, "a replica of {m}"),
            other => write!(f, "{}", other.name()),
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

/// The `run_id` of `INFO server`.
pub fn parse_run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix("run_id:"))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// Parses the reply to `ROLE`: `["master", offset, [...]]`,
/// `["slave", host, port, "connected"|"connect"|..., offset]` or `["sentinel", [...]]`.
pub fn parse_role(v: &Value) -> Result<Role, String> {
    let Value::Array(items) = v else {
        return Err(format!("ROLE: expected an array, got {v:?}"));
    };
    let kind = items
        .first()
        .and_then(text)
        .ok_or_else(|| "ROLE: empty or non-text reply".to_string())?;
    match kind.as_str() {
        "master" => Ok(Role::Master),
        "slave" | "replica" => {
            let host = items.get(1).and_then(text);
            let port = items
                .get(2)
                .and_then(text)
                .and_then(|p| p.parse::<u16>().ok());
            let state = items.get(3).and_then(text).unwrap_or_default();
            Ok(Role::Replica {
                master: match (host, port) {
                    (Some(h), Some(p)) => Some(ServerAddr::new(h, p)),
                    _ => None,
                },
                link_up: state == "connected",
            })
        }
        other => Ok(Role::Other(other.to_string())),
    }
}

/// Credentials for a kind of server (data servers or sentinels).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// How to reach `addr` with `auth`: no `CLIENT SETINFO` (Redis 7.0 and Sentinel refuse it).
pub fn connection_info(addr: &ServerAddr, auth: &Auth) -> Result<ConnectionInfo, ServerError> {
    let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(u) = &auth.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &auth.password {
        redis = redis.set_password(p.expose());
    }
    // TCP_NODELAY: rolecall sends a few small commands at once on one connection; with Nagle's
    // algorithm each later one waits for the peer's delayed ACK (40 ms on Linux).
    Ok((addr.host.clone(), addr.port)
        .into_connection_info()
        .map_err(|e| from_redis(addr, &e))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .set_redis_settings(redis))
}

/// rolecall's connections to servers, reused across checks.
pub struct Pool {
    what: &'static str,
    auth: Auth,
    timeout: Duration,
    conns: HashMap<ServerAddr, MultiplexedConnection>,
}

impl Pool {
    /// `what` names the kind of server in messages ("server", "sentinel").
    pub fn new(what: &'static str, auth: Auth, timeout: Duration) -> Pool {
        Pool {
            what,
            auth,
            timeout,
            conns: HashMap::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to `addr`: the cached one, or a new one named `rolecall`.
    /// The returned handle is cheap to clone and usable concurrently.
    pub fn connection(
        &self,
        addr: &ServerAddr,
    ) -> impl Future<Output = Result<(MultiplexedConnection, bool), ServerError>> + 'static {
        let cached = self.conns.get(addr).cloned();
        let info = connection_info(addr, &self.auth);
        let addr = addr.clone();
        let timeout = self.timeout;
        let what = self.what;
        async move {
            if let Some(c) = cached {
                return Ok((c, false));
            }
            let client = redis::Client::open(info?).map_err(|e| from_redis(&addr, &e))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
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
        self.conns.get(addr).cloned()
    }

    /// Keeps a newly made connection for the next checks.
    pub fn keep(&mut self, addr: &ServerAddr, conn: MultiplexedConnection) {
        self.conns.insert(addr.clone(), conn);
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

/// What rolecall learned about one server in one check.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub role: Result<Role, ServerError>,
    pub latency: Option<Duration>,
    /// Whether the write probe ran here and what it gave.
    pub probe: Option<Result<(), ServerError>>,
}

/// Asks `addr` its `ROLE` and, if `probe` is given (key, value, ttl), makes the probe write.
/// Returns the facts and whether the connection should be kept.
pub async fn server_facts(
    conn: Result<(MultiplexedConnection, bool), ServerError>,
    addr: ServerAddr,
    timeout: Duration,
    probe: Option<(String, String, Duration)>,
) -> (ServerAddr, ServerFacts, Option<MultiplexedConnection>) {
    let started = Instant::now();
    let mut conn = match conn {
        Ok((c, _)) => c,
        Err(e) => {
            let probe = probe.map(|_| Err(e.clone()));
            return (
                addr,
                ServerFacts {
                    role: Err(e),
                    latency: None,
                    probe,
                },
                None,
            );
        }
    };
    let role = command(&mut conn, &addr, "server", timeout, &redis::cmd("ROLE"))
        .await
        .and_then(|v| {
            parse_role(&v)
                .map_err(|m| ServerError::new(ErrorClass::Protocol, format!("{addr}: {m}")))
        });
    let latency = role.is_ok().then(|| started.elapsed());
    let probe = match (&role, probe) {
        (_, None) => None,
        (Err(e), Some(_)) => Some(Err(e.clone())),
        (Ok(_), Some((key, value, ttl))) => {
            let mut set = redis::cmd("SET");
            set.arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis() as u64);
            Some(
                command(&mut conn, &addr, "server", timeout, &set)
                    .await
                    .map(|_| ()),
            )
        }
    };
    // A reply error (READONLY, NOREPLICAS, ...) leaves the connection usable; a timeout or an
    // I/O error does not.
    let broken = |e: Option<&ServerError>| {
        e.is_some_and(|e| {
            matches!(
                e.class,
                ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::Protocol
            )
        })
    };
    let keep =
        !broken(role.as_ref().err()) && !broken(probe.as_ref().and_then(|p| p.as_ref().err()));
    (
        addr,
        ServerFacts {
            role,
            latency,
            probe,
        },
        keep.then_some(conn),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_replies_parse() {
        let master = Value::Array(vec![bulk("master"), Value::Int(42), Value::Array(vec![])]);
        assert_eq!(parse_role(&master).unwrap(), Role::Master);
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(42),
        ]);
        assert_eq!(
            parse_role(&replica).unwrap(),
            Role::Replica {
                master: Some(ServerAddr::new("127.0.0.1".into(), 6379)),
                link_up: true
            }
        );
        let syncing = Value::Array(vec![
            bulk("slave"),
            bulk("10.0.0.1"),
            Value::Int(6379),
            bulk("connect"),
            Value::Int(-1),
        ]);
        assert!(matches!(
            parse_role(&syncing).unwrap(),
            Role::Replica { link_up: false, .. }
        ));
        let sentinel = Value::Array(vec![bulk("sentinel"), Value::Array(vec![bulk("mymaster")])]);
        assert_eq!(
            parse_role(&sentinel).unwrap(),
            Role::Other("sentinel".into())
        );
        assert!(parse_role(&Value::Int(1)).is_err());
        assert!(parse_role(&Value::Array(vec![])).is_err());
        assert!(parse_role(&Value::Array(vec![Value::Nil])).is_err());
    }

    #[test]
    fn run_ids_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c0e2a\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info).as_deref(), Some("4f1c0e2a"));
        assert_eq!(parse_run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(parse_run_id(""), None);
    }

    #[test]
    fn error_codes_are_classified() {
        let cases = [
            ("READONLY", ErrorClass::Readonly),
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
}
