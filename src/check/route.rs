//! Which server of a group's topology each node connection reaches, tried in this order:
//!
//! 1. **By address**: the connection's peer is a server's announced address, or an address its
//!    host name resolves to this check (a pod's IP).
//! 2. **By `CLIENT LIST`**: the peer is something else on a port of the topology — a virtual IP
//!    (a Kubernetes ClusterIP per pod, a load-balanced Service), a NAT, a proxy — and one of the
//!    topology's servers lists the node's own `ip:port` as a client (`addr=`): the server sees
//!    the node's real address through a DNAT, as kube-proxy's are. This is exact even when the
//!    peer has several backends.
//! 3. **By `run_id`**: `INFO server` asked at the peer's address names the `run_id` of a server
//!    of the topology (a NAT or `replica-announce-ip` that hides the node's address from the
//!    server too). Exact when one server is behind the address; through an address with
//!    several backends rolecall's own connection may reach another one, which is why the
//!    `CLIENT LIST` comes first.
//!
//! A connection the last two placed keeps its server for its lifetime (a TCP connection cannot
//! move to another backend), so they are asked about a new connection, not every check: once
//! when `CLIENT LIST` places it; when only `run_id` does, on two checks in a row, since a server
//! lists a client only once it has accepted it, a moment after the node's socket is
//! established. A connection to a Redis outside the topology is asked again each check: a
//! replica Sentinel has not listed yet must not be written off. Only
//! addresses on a port of the topology are asked anything, so rolecall never sends Redis
//! commands to the node's other services. A connection nothing places is reported with why,
//! and is never evidence against the node; one whose `run_id` is another server's (a Redis the
//! topology does not know) is not the group's and is left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::conn::{Pool, ServerAddr, ServerError, command, text};
use crate::probe::{LastCommands, clients, parse_run_id};
use crate::sentinel::SentinelView;
use crate::sockets::{Connection, NodeSockets};
use crate::verdict::{Placement, RoutedConnection, Unplaced};
use futures_util::future::join_all;

/// A node connection placed on a server, and how.
#[derive(Debug, Clone)]
pub(super) struct Placed {
    pub routed: RoutedConnection,
    pub by: Placement,
}

/// The node's connections placed on a group's servers.
pub(super) struct Routes {
    pub placed: Vec<Placed>,
    /// Connections on the topology's ports that nothing placed, with why.
    pub unplaced: Vec<Unplaced>,
    /// Every address rolecall may keep a connection to: the announced servers and the
    /// addresses identified as one of them.
    pub known: BTreeSet<ServerAddr>,
}

impl Routes {
    pub fn routed(&self) -> Vec<RoutedConnection> {
        self.placed.iter().map(|p| p.routed.clone()).collect()
    }
}

/// What rolecall keeps of the node's connections that `CLIENT LIST` or `run_id` placed.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// The server of each live connection, and how it was placed, for the connection's life.
    placed: HashMap<Connection, (ServerAddr, Placement)>,
    /// Connections only `run_id` placed, once: kept when the next check agrees.
    by_run_id: HashMap<Connection, ServerAddr>,
}

/// Places the node's connections on `view`'s servers (module docs). The pool's names must have
/// been refreshed for this check.
pub(super) async fn route(
    pool: &mut Pool,
    view: &SentinelView,
    sockets: &NodeSockets,
    memo: &mut Memo,
    timeout: Duration,
) -> Routes {
    let servers: Vec<ServerAddr> = view.servers().cloned().collect();
    let (by_socket, unresolved) = by_address(pool, &servers);
    let ports: BTreeSet<u16> = servers.iter().map(|s| s.port).collect();
    let live =
        |c: &Connection, s: &ServerAddr| sockets.connections.contains(c) && servers.contains(s);
    memo.placed.retain(|c, (s, _)| live(c, s));
    memo.by_run_id.retain(|c, s| live(c, s));
    let mut placed = Vec::new();
    let mut rest = Vec::new();
    for c in &sockets.connections {
        if let Some(s) = by_socket.get(&c.remote) {
            placed.push(place(*c, s.clone(), Placement::Address));
        } else if let Some((s, by)) = memo.placed.get(c) {
            placed.push(place(*c, s.clone(), *by));
        } else if ports.contains(&c.remote.port()) {
            rest.push(*c);
        }
    }
    let mut unplaced = Vec::new();
    if !rest.is_empty() {
        let lists = client_lists(pool, &servers, timeout).await;
        let (listed, unlisted) = by_client_list(&rest, &lists);
        let ids = by_run_id(pool, view, &unlisted, timeout).await;
        for (c, server) in listed {
            memo.by_run_id.remove(&c);
            memo.placed
                .insert(c, (server.clone(), Placement::ClientList));
            placed.push(place(c, server, Placement::ClientList));
        }
        for (c, why) in unlisted {
            match ids.get(&c.remote) {
                Some(Ok(Some(server))) => {
                    if memo.by_run_id.get(&c) == Some(server) {
                        memo.placed.insert(c, (server.clone(), Placement::RunId));
                    } else {
                        memo.by_run_id.insert(c, server.clone());
                    }
                    placed.push(place(c, server.clone(), Placement::RunId));
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => unplaced.push(unplaced_because(c, &why, e, &unresolved)),
                None => unplaced.push(unplaced_because(c, &why, "not asked", &unresolved)),
            }
        }
    }
    placed.sort_by_key(|p| p.routed.connection);
    let mut known: BTreeSet<ServerAddr> = servers.into_iter().collect();
    known.extend(
        placed
            .iter()
            .filter(|p| p.by == Placement::RunId)
            .map(|p| server_at(&p.routed.connection.remote)),
    );
    Routes {
        placed,
        unplaced,
        known,
    }
}

fn place(connection: Connection, server: ServerAddr, by: Placement) -> Placed {
    Placed {
        routed: RoutedConnection { connection, server },
        by,
    }
}

/// The servers' socket addresses as this check resolved them, and the names that did not
/// resolve (with why).
fn by_address(
    pool: &Pool,
    servers: &[ServerAddr],
) -> (HashMap<SocketAddr, ServerAddr>, Vec<ServerError>) {
    let mut by_socket = HashMap::new();
    let mut unresolved = Vec::new();
    for s in servers {
        match pool.resolved(s) {
            Some(Ok(ips)) => {
                for ip in ips {
                    by_socket
                        .entry(SocketAddr::new(ip, s.port))
                        .or_insert_with(|| s.clone());
                }
            }
            Some(Err(e)) => unresolved.push(e),
            None => {}
        }
    }
    (by_socket, unresolved)
}

/// Why a connection is not placed: what `CLIENT LIST` and `INFO` said, and the names that did
/// not resolve (a server rolecall could not ask).
fn unplaced_because(
    connection: Connection,
    listed: &str,
    info: impl std::fmt::Display,
    unresolved: &[ServerError],
) -> Unplaced {
    let mut why = format!("{listed}; INFO at {}: {info}", connection.remote);
    for e in unresolved {
        why.push_str(&format!("; {e}"));
    }
    Unplaced { connection, why }
}

/// A node connection's remote address as a server address.
fn server_at(sa: &SocketAddr) -> ServerAddr {
    ServerAddr::new(sa.ip().to_string(), sa.port())
}

/// `CLIENT LIST` of every server of the topology, concurrently.
async fn client_lists(
    pool: &mut Pool,
    servers: &[ServerAddr],
    timeout: Duration,
) -> Vec<(ServerAddr, Result<LastCommands, ServerError>)> {
    let asks = servers.iter().map(|addr| {
        let conn = pool.connection(addr);
        let addr = addr.clone();
        async move {
            let (mut c, _) = match conn.await {
                Ok(c) => c,
                Err(e) => return (addr, Err(e), None),
            };
            let list = clients(&mut c, &addr, timeout).await;
            let keep = list.is_ok().then_some(c);
            (addr, list, keep)
        }
    });
    let mut lists = Vec::new();
    for (addr, list, conn) in join_all(asks).await {
        if let Some(c) = conn {
            pool.keep(&addr, c);
        }
        lists.push((addr, list));
    }
    lists
}

/// The connections exactly one server lists as a client by the node's own address, with that
/// server; and the others, with what the lists said of them.
#[allow(clippy::type_complexity)]
fn by_client_list(
    rest: &[Connection],
    lists: &[(ServerAddr, Result<LastCommands, ServerError>)],
) -> (Vec<(Connection, ServerAddr)>, Vec<(Connection, String)>) {
    let failed: Vec<String> = lists
        .iter()
        .filter_map(|(_, l)| l.as_ref().err().map(|e| e.to_string()))
        .collect();
    let mut listed = Vec::new();
    let mut unlisted = Vec::new();
    for c in rest {
        let own = c.local.to_string();
        let owners: Vec<&ServerAddr> = lists
            .iter()
            .filter(|(_, l)| l.as_ref().is_ok_and(|l| l.of(&own).is_some()))
            .map(|(s, _)| s)
            .collect();
        match owners.as_slice() {
            [one] => listed.push((*c, (*one).clone())),
            [] => {
                let mut why = format!("no server lists {own} as a client");
                if !failed.is_empty() {
                    why.push_str(&format!(" (CLIENT LIST failed: {})", failed.join("; ")));
                }
                unlisted.push((*c, why));
            }
            many => {
                let names: Vec<String> = many.iter().map(|s| s.to_string()).collect();
                unlisted.push((
                    *c,
                    format!("{own} is a client of several servers: {}", names.join(", ")),
                ));
            }
        }
    }
    (listed, unlisted)
}

/// What `run_id` says of each peer address of `unlisted`: the topology's server with that run
/// id, `None` for a server outside the topology, or why rolecall could not ask. Asks
/// `INFO server` at each peer address and, for its run id, at Sentinel's master.
async fn by_run_id(
    pool: &mut Pool,
    view: &SentinelView,
    unlisted: &[(Connection, String)],
    timeout: Duration,
) -> BTreeMap<SocketAddr, Result<Option<ServerAddr>, ServerError>> {
    let peers: BTreeSet<SocketAddr> = unlisted.iter().map(|(c, _)| c.remote).collect();
    if peers.is_empty() {
        return BTreeMap::new();
    }
    let mut ask: Vec<ServerAddr> = peers.iter().map(server_at).collect();
    ask.extend(view.master.iter().cloned());
    let infos = join_all(ask.iter().map(|addr| {
        let conn = pool.connection(addr);
        let addr = addr.clone();
        async move {
            let (mut c, _) = match conn.await {
                Ok(c) => c,
                Err(e) => return (addr, Err(e)),
            };
            let mut info = redis::cmd("INFO");
            info.arg("server");
            let id = command(&mut c, &addr, "server", timeout, &info)
                .await
                .map(|v| text(&v).and_then(|t| parse_run_id(&t)));
            (addr, id.map(|id| (id, c)))
        }
    }))
    .await;
    let mut ids = view.run_ids.clone();
    let mut found: BTreeMap<ServerAddr, Result<Option<String>, ServerError>> = BTreeMap::new();
    for (addr, r) in infos {
        let r = r.map(|(id, conn)| {
            pool.keep(&addr, conn);
            id
        });
        if let (Some(m), Ok(Some(id))) = (&view.master, &r)
            && m == &addr
        {
            ids.insert(id.clone(), addr.clone());
        }
        found.insert(addr, r);
    }
    peers
        .into_iter()
        .map(|sa| {
            let id = match found.remove(&server_at(&sa)) {
                Some(r) => r,
                None => Ok(None),
            };
            (sa, id.map(|id| id.and_then(|id| ids.get(&id).cloned())))
        })
        .collect()
}
