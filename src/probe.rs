//! Server facts through rolecall's own connections: `ROLE` of a server and the write probe
//! (`SET <prefix>:<node> <ts> PX <ttl>`, never `PUBLISH`, which "succeeds" on a replica), with
//! every error classified, over the connections of [`crate::conn`]; and, for groups with
//! `replica_reads`, `CLIENT LIST TYPE normal` on the replicas the node reads from.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::conn::{
    ErrorClass, ReplyError, ServerAddr, ServerError, Software, command, software, text,
};

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

/// The `run_id` of `INFO server`.
pub fn parse_run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix("run_id:"))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// Parses the reply to `ROLE`: `["master", offset, [...]]`,
/// `["slave", host, port, "connected"|"connect"|..., offset]` or `["sentinel", [...]]`.
pub fn parse_role(v: &Value) -> Result<Role, ReplyError> {
    let Value::Array(items) = v else {
        return Err(ReplyError::new(
            "ROLE",
            format!("expected an array, got {v:?}"),
        ));
    };
    let kind = items
        .first()
        .and_then(text)
        .ok_or_else(|| ReplyError::new("ROLE", "empty or non-text reply"))?;
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

/// What rolecall learned about one server in one check.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub role: Result<Role, ServerError>,
    pub latency: Option<Duration>,
    /// Whether the write probe ran here and what it gave.
    pub probe: Option<Result<(), ServerError>>,
    /// What the server runs, asked on each new connection (`None` on a kept one).
    pub software: Option<Software>,
}

/// Asks `addr` its `ROLE` and, if `probe` is given (key, value, ttl), makes the probe write;
/// on a new connection, also what it runs (`INFO server`). Returns the facts and whether the
/// connection should be kept.
pub async fn server_facts(
    conn: Result<(MultiplexedConnection, bool), ServerError>,
    addr: ServerAddr,
    timeout: Duration,
    probe: Option<(String, String, Duration)>,
) -> (ServerAddr, ServerFacts, Option<MultiplexedConnection>) {
    let started = Instant::now();
    let (conn, fresh) = match conn {
        Ok(c) => c,
        Err(e) => {
            let probe = probe.map(|_| Err(e.clone()));
            return (
                addr,
                ServerFacts {
                    role: Err(e),
                    latency: None,
                    probe,
                    software: None,
                },
                None,
            );
        }
    };
    let mut info_conn = conn.clone();
    let sw = async {
        if fresh {
            software(&mut info_conn, &addr, "server", timeout).await
        } else {
            None
        }
    };
    let role_and_write = role_and_write(&conn, &addr, timeout, probe, started);
    let ((role, latency, written), software) = tokio::join!(role_and_write, sw);
    let probe = match (&role, written) {
        (_, None) => None,
        (Err(e), Some(_)) => Some(Err(e.clone())),
        (Ok(_), Some(written)) => Some(written),
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
            software,
        },
        keep.then_some(conn),
    )
}

/// `ROLE` (with its latency from `started`) and, if `probe` is given, the probe write. The write
/// goes out with `ROLE`, not after its answer: one round trip, so the replies usually arrive
/// together. On a replica it fails (`READONLY`), as it did after the answer.
async fn role_and_write(
    conn: &MultiplexedConnection,
    addr: &ServerAddr,
    timeout: Duration,
    probe: Option<(String, String, Duration)>,
    started: Instant,
) -> (
    Result<Role, ServerError>,
    Option<Duration>,
    Option<Result<(), ServerError>>,
) {
    let (mut role_conn, mut write_conn) = (conn.clone(), conn.clone());
    let role = async {
        let role = command(&mut role_conn, addr, "server", timeout, &redis::cmd("ROLE"))
            .await
            .and_then(|v| {
                parse_role(&v)
                    .map_err(|m| ServerError::new(ErrorClass::Protocol, format!("{addr}: {m}")))
            });
        let latency = role.is_ok().then(|| started.elapsed());
        (role, latency)
    };
    let write = async {
        let (key, value, ttl) = probe?;
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        Some(
            command(&mut write_conn, addr, "server", timeout, &set)
                .await
                .map(|_| ()),
        )
    };
    let ((role, latency), written) = tokio::join!(role, write);
    (role, latency, written)
}

/// The largest `CLIENT LIST` reply rolecall reads (one line per client, about 300 bytes each:
/// some 25,000 clients). The reply is one bulk string the client library has already read by
/// then, so this bounds the parse and what the check keeps, not the read.
pub const CLIENT_LIST_MAX_BYTES: usize = 8 << 20;

/// The last command of each normal client of a server, by its `addr=` (the client's own
/// `ip:port`, as the server sees it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastCommands(BTreeMap<String, String>);

impl LastCommands {
    /// The last command of the client at `addr` (`ip:port`, `[ip6]:port`), if it is connected.
    pub fn of(&self, addr: &str) -> Option<&str> {
        self.0.get(addr).map(String::as_str)
    }

    /// How many clients the list holds.
    pub(crate) fn clients(&self) -> usize {
        self.0.len()
    }
}

/// Parses the reply to `CLIENT LIST`: one line per client of space-separated `field=value`
/// pairs. `addr=` is the client's address and `cmd=` its last command, lowercase, with a
/// subcommand as `container|sub` ("client|setname") since Redis 7.0
/// (https://redis.io/docs/latest/commands/client-list/). A line without either is skipped.
pub fn parse_client_list(reply: &str) -> Result<LastCommands, ReplyError> {
    if reply.len() > CLIENT_LIST_MAX_BYTES {
        return Err(ReplyError::new(
            "CLIENT LIST",
            format!(
                "reply of {} bytes is over the {CLIENT_LIST_MAX_BYTES} rolecall reads",
                reply.len()
            ),
        ));
    }
    let mut last = BTreeMap::new();
    for line in reply.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        if let (Some(addr), Some(cmd)) = (field("addr"), field("cmd")) {
            last.insert(addr.to_string(), cmd.to_ascii_lowercase());
        }
    }
    Ok(LastCommands(last))
}

/// `CLIENT LIST TYPE normal` on `addr`: the last command of each of its normal clients (not
/// replicas, not pub/sub subscribers, which cannot write). Needs `+client|list` in an ACL.
pub async fn last_commands(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    timeout: Duration,
) -> Result<LastCommands, ServerError> {
    client_list(conn, addr, timeout, Some("normal")).await
}

/// `CLIENT LIST` on `addr`, of every type: who is connected, by the client's own `ip:port` as
/// the server sees it (with [`LastCommands::of`]). Needs `+client|list` in an ACL.
pub async fn clients(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    timeout: Duration,
) -> Result<LastCommands, ServerError> {
    client_list(conn, addr, timeout, None).await
}

async fn client_list(
    conn: &mut MultiplexedConnection,
    addr: &ServerAddr,
    timeout: Duration,
    kind: Option<&str>,
) -> Result<LastCommands, ServerError> {
    let mut list = redis::cmd("CLIENT");
    list.arg("LIST");
    if let Some(kind) = kind {
        list.arg("TYPE").arg(kind);
    }
    let reply = command(conn, addr, "server", timeout, &list).await?;
    let text = text(&reply).ok_or_else(|| {
        ServerError::new(
            ErrorClass::Protocol,
            format!("{addr}: CLIENT LIST: expected text, got {reply:?}"),
        )
    })?;
    parse_client_list(&text)
        .map_err(|m| ServerError::new(ErrorClass::Protocol, format!("{addr}: {m}")))
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
    fn client_list_replies_give_each_clients_last_command_by_address() {
        let reply = "id=3 addr=127.0.0.1:50412 laddr=127.0.0.1:6380 fd=8 name=rolecall-demo-a-read age=2 cmd=get user=default\n\
                     id=4 addr=[::1]:50500 laddr=[::1]:6380 fd=9 name= age=1 cmd=client|setname user=default\n\
                     id=5 addr=127.0.0.1:50600 fd=10 name=x age=1 cmd=SET user=default\n\
                     garbage without fields\n";
        let last = parse_client_list(reply).unwrap();
        assert_eq!(last.of("127.0.0.1:50412"), Some("get"));
        assert_eq!(last.of("[::1]:50500"), Some("client|setname"));
        assert_eq!(last.of("127.0.0.1:50600"), Some("set"));
        assert_eq!(last.of("127.0.0.1:1"), None);
        // `laddr=` is the server's side: never taken for the client's.
        assert_eq!(last.of("127.0.0.1:6380"), None);
        assert_eq!(parse_client_list("").unwrap(), LastCommands::default());
        // Valkey 8 and Redis 7.2 add fields (`lib-name=`, `capa=`, `tot-net-in=`, …): read alike.
        let valkey = "id=7 addr=10.0.0.5:40100 laddr=10.0.0.1:6379 fd=11 name=app age=3 idle=0 flags=N capa=redirect db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=set user=default redir=-1 resp=2 lib-name=ioredis lib-ver=5.4.1 tot-net-in=120 tot-net-out=40 tot-cmds=3\n";
        assert_eq!(
            parse_client_list(valkey).unwrap().of("10.0.0.5:40100"),
            Some("set")
        );
        let huge = "x".repeat(CLIENT_LIST_MAX_BYTES + 1);
        assert!(parse_client_list(&huge).is_err());
    }
}
