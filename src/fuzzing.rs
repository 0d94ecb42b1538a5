//! Entry points for the fuzz targets (`fuzz/`) and the property tests (`tests/properties.rs`):
//! one function per kind of input rolecall reads from outside, each handing the bytes to the
//! parsers the daemon itself uses, and checking, with assertions, what must hold of their
//! results (bounded sizes, round trips), so that a fuzzer finds a broken property as a crash.
//!
//! Not an API: hidden from the documentation and free to change. Nothing in the crate uses it.
//! RESP inputs are decoded with the redis crate's own parser (the one every connection uses)
//! and the resulting `redis::Value` goes through rolecall's interpretation of each reply.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use redis::Value;

use crate::agent::{Stance, line, parse_request};
use crate::config::{Config, MaintenanceConfig, OutWord, RuntimeApi, ServerRef};
use crate::conn::{ServerAddr, parse_software, reply_error, text};
use crate::maintenance::{Maintenance, NOTE_MAX, clean_note};
use crate::secret::Secret;
use crate::snapshot::Effective;
use crate::sockets::{
    Connection, fuzz_dump_datagram, fuzz_mountinfo, fuzz_proc_entry, fuzz_same_socket,
    parse_proc_net_tcp,
};
use crate::verdict::Verdict;

/// The longest agent reply line: a word, `up`, `ready`, and a description HAProxy shows, cut
/// at 200 characters plus `...`.
pub const AGENT_REPLY_MAX: usize = 240;

/// What the agent makes of an `agent-send` line: the group it selects, and the reply lines
/// the same bytes give when they are the text of a verdict's reason and of the operator's note.
#[derive(Debug)]
pub struct AgentLine {
    pub group: Option<String>,
    pub replies: Vec<String>,
}

/// The agent's request parser and reply writer, on `bytes`.
pub fn agent_line(bytes: &[u8]) -> AgentLine {
    let group = parse_request(bytes);
    if let Some(g) = &group {
        assert!(!g.contains('\n') && g.trim() == g && g.len() <= bytes.len());
    }
    let text = String::from_utf8_lossy(bytes);
    let e = Effective {
        verdict: Verdict::StuckOnReplica,
        in_rotation: false,
        reason: text.to_string(),
        stale: false,
    };
    let note = clean_note(&text).unwrap_or_default();
    let replies: Vec<String> = [
        Stance::Out(OutWord::Drain),
        Stance::Out(OutWord::Down),
        Stance::Maint,
        Stance::In,
    ]
    .iter()
    .flat_map(|s| [line(s, &e, &note, false), line(s, &e, &note, true)])
    .collect();
    for r in &replies {
        // One line of printable ASCII: HAProxy reads up to the first line ending.
        assert!(r.len() <= AGENT_REPLY_MAX, "agent reply too long: {r:?}");
        assert!(
            r.ends_with('\n') && r.find('\n') == Some(r.len() - 1),
            "{r:?}"
        );
        assert!(
            r[..r.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
        );
    }
    AgentLine { group, replies }
}

/// The bearer token [`http_maintenance`] is configured with.
pub const MAINTENANCE_TOKEN: &str = "s3cret-Token_0";

fn maintenance() -> &'static Arc<Maintenance> {
    static M: OnceLock<Arc<Maintenance>> = OnceLock::new();
    M.get_or_init(|| {
        Maintenance::new(MaintenanceConfig {
            file: None,
            token: Some(Secret::new(MAINTENANCE_TOKEN.to_string())),
            state_file: None,
        })
    })
}

/// What `/maintenance` makes of a request: whether `authorization` (the header's value)
/// carries the token, and the operator's note the `body` leaves.
pub fn http_maintenance(authorization: &[u8], body: &[u8]) -> (bool, Option<String>) {
    let authorized = maintenance().authorized(Some(authorization));
    let note = clean_note(&String::from_utf8_lossy(body));
    if let Some(n) = &note {
        assert!(n.chars().count() <= NOTE_MAX && !n.is_empty());
        assert!(!n.chars().any(char::is_control) && n.trim() == n);
    }
    (authorized, note)
}

/// An address as the configuration and Sentinel give it (`host:port`, `[v6]:port`), as a
/// HAProxy runtime API address, a `backend/server` reference and an agent reply word. Every
/// one that parses prints as text that parses back to the same value. Returns the server
/// address's host and port.
pub fn address(s: &str) -> Option<(String, u16)> {
    if let Some(api) = RuntimeApi::parse(s) {
        assert_eq!(RuntimeApi::parse(&api.to_string()), Some(api));
    }
    if let Some(r) = ServerRef::parse(s) {
        assert_eq!(ServerRef::parse(&r.to_string()), Some(r));
    }
    if let Some(w) = OutWord::parse(s) {
        assert_eq!(OutWord::parse(&w.to_string()), Some(w));
    }
    let addr = s.parse::<ServerAddr>().ok()?;
    let shown = addr.to_string();
    assert_eq!(shown.parse::<ServerAddr>().as_ref(), Ok(&addr), "{shown}");
    assert!(shown.len() <= s.len() + 2, "{s:?} shown as {shown:?}");
    Some((addr.host, addr.port))
}

/// The configuration file's text, validated. The error is the message rolecall prints.
pub fn config_toml(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text).map_err(|e| e.to_string())
}

/// `/proc/net/tcp` (or `tcp6` when `v6`), as the fallback discovery reads it: the
/// ESTABLISHED connections and their inodes, at most one per line. The same text is read as
/// `/proc/PID/stat` and as a `/proc/PID/fd` link.
pub fn proc_net_tcp(text: &str, v6: bool) -> Vec<(Connection, u64)> {
    let (stat, _inode) = fuzz_proc_entry(text.as_bytes());
    if let Some((comm, _state)) = stat {
        assert!(comm.len() < text.len());
    }
    let table = parse_proc_net_tcp(text, v6);
    assert!(table.len() <= text.lines().count());
    table
}

/// `/proc/self/mountinfo`, as the `systemd_unit` selector reads it: the cgroup hierarchies it
/// lists, each `(is cgroup v2, mount point)`. At most one of each kind, v2 first; every mount
/// point is no longer than its line (escapes only shorten it).
pub fn mountinfo(text: &str) -> Vec<(bool, std::path::PathBuf)> {
    let found = fuzz_mountinfo(text);
    assert!(found.len() <= 2, "{found:?}");
    if let [a, b] = found.as_slice() {
        assert!(a.0 && !b.0, "one of each kind, v2 first: {found:?}");
    }
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    for (_, mount) in &found {
        assert!(mount.as_os_str().len() <= longest, "{mount:?}");
    }
    found
}

/// One datagram of a `NETLINK_SOCK_DIAG` dump, and the same bytes as the answer to an exact
/// lookup of the connections the dump gave (and of one it did not). Returns the connections,
/// whether the datagram parsed, and what the lookup answer said (`None`: an error).
pub fn sock_diag(datagram: &[u8]) -> (Vec<(Connection, u64)>, bool, Option<bool>) {
    let mut table = Vec::new();
    let parsed = fuzz_dump_datagram(datagram, &mut table);
    // An inet_diag_msg record is 72 bytes after a 16-byte header, each at least that long.
    assert!(table.len() <= datagram.len() / 88);
    let mut batch = table.clone();
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6379);
    batch.push((Connection { local, remote }, 1));
    let confirmed = fuzz_same_socket(datagram, &batch);
    (table, parsed, confirmed)
}

/// RESP bytes as the redis crate reads them off a connection: `None` for what it refuses.
pub fn resp(bytes: &[u8]) -> Option<Value> {
    redis::parse_redis_value(bytes).ok()
}

/// How much of a reply rolecall kept, for the bounds the properties check.
#[derive(Debug, Default)]
pub struct Kept {
    /// Items kept (addresses, replicas, peers, clients, records, fields).
    pub items: usize,
    /// Bytes of text kept.
    pub bytes: usize,
}

impl Kept {
    fn add(&mut self, items: usize, bytes: usize) {
        self.items += items;
        self.bytes += bytes;
    }
}

/// A sentinel's reply, read as each of its answers (`SENTINEL get-master-addr-by-name`,
/// `SENTINEL replicas`, `SENTINEL SENTINELS`, `SENTINEL MASTER`'s `config-epoch`, `SENTINEL
/// MYID`, `INFO sentinel`, `INFO server`), and as an event message (`+switch-master`,
/// `+vote-for-leader`, `+convert-to-slave`, ...) for master `mymaster`.
pub fn resp_sentinel(v: &Value) -> Kept {
    let mut kept = Kept::default();
    if let Ok(Some(a)) = crate::sentinel::parse_master_addr(v) {
        kept.add(1, a.host.len());
    }
    if let Ok(r) = crate::sentinel::parse_replicas(v) {
        kept.add(r.len(), r.iter().map(|r| r.addr.host.len()).sum());
    }
    if let Ok(p) = crate::sentinel::parse_peers(v) {
        assert!(p.len() <= crate::sentinel::MAX_PEERS);
        kept.add(
            p.len(),
            p.iter().map(|p| p.id.len() + p.addr.host.len()).sum(),
        );
    }
    let f = crate::sentinel::fields(v);
    let _epoch: Option<u64> = f.get("config-epoch").and_then(|e| e.parse().ok());
    kept.add(f.len(), f.iter().map(|(k, v)| k.len() + v.len()).sum());
    if let Some(t) = text(v) {
        let _tilt = crate::sentinel::parse_tilt(&t);
        let _id = crate::sentinel::valid_id(&t);
        software(&t, &mut kept);
    }
    if let Some(msg) = redis::Msg::from_value(v) {
        let payload: String = msg.get_payload().unwrap_or_default();
        event(msg.get_channel_name(), &payload);
    }
    kept
}

/// A reply to `SENTINEL get-master-addr-by-name`, read as the master's host and port.
pub fn master_addr(v: &Value) -> Option<(String, u16)> {
    let a = crate::sentinel::parse_master_addr(v).ok()??;
    Some((a.host, a.port))
}

fn software(info: &str, kept: &mut Kept) {
    if let Some(sw) = parse_software(info) {
        assert!(sw.version.len() <= 64);
        kept.add(1, sw.name.len() + sw.version.len());
    }
}

/// A message on a sentinel's pub/sub, as the event subscription routes it.
pub fn event(channel: &str, payload: &str) -> crate::events::Message {
    let sentinel = ServerAddr::new("127.0.0.1".to_string(), 26379);
    let _converted = crate::events::conversion(channel, payload);
    let _vote = crate::sentinel::parse_vote(payload);
    crate::events::route(&sentinel, channel, payload, "mymaster")
}

/// A data server's reply, read as each answer rolecall interprets (`ROLE`, `INFO server`'s
/// `run_id` and software, `CLIENT LIST`, an error reply to the write probe, the fleet
/// registry's `HGETALL`).
pub fn resp_server(v: &Value) -> Kept {
    let mut kept = Kept::default();
    if let Ok(role) = crate::probe::parse_role(v) {
        kept.add(1, role.to_string().len());
    }
    if let Some(t) = text(v) {
        if let Some(id) = crate::probe::parse_run_id(&t) {
            kept.add(1, id.len());
        }
        software(&t, &mut kept);
        if let Ok(list) = crate::probe::parse_client_list(&t) {
            let n = list.clients();
            assert!(n <= t.lines().count());
            kept.add(n, 0);
        }
    }
    let server = ServerAddr::new("10.0.0.1".to_string(), 6379);
    if let Err(e) = reply_error(&server, v.clone()) {
        kept.add(1, e.message.len());
    }
    let records = crate::fleet::parse_registry(Some(v));
    for r in records.values() {
        assert_eq!(crate::fleet::Record::parse(&r.encode()).as_ref(), Some(r));
    }
    kept.add(records.len(), records.keys().map(String::len).sum());
    kept
}
