//! Which server of a group's topology each node connection reaches: first by address (each
//! announced server, host names resolved under the check timeout), then by identity — a
//! connection to an address Sentinel does not announce, on a port a server of the topology
//! listens on, may reach one of them under another address (NAT, `replica-announce-ip`, host
//! names); the `run_id` of `INFO server` there says which.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;

use crate::conn::{Pool, ServerAddr, command, text};
use crate::probe::parse_run_id;
use crate::sentinel::SentinelView;
use crate::sockets::NodeSockets;
use crate::verdict::RoutedConnection;

/// The node's connections placed on a group's servers.
pub(super) struct Routes {
    /// Each node connection that reaches a server of the topology, with that server.
    pub routed: Vec<RoutedConnection>,
    /// Every address rolecall may keep a connection to: the announced servers and the
    /// addresses identified as one of them.
    pub known: BTreeSet<ServerAddr>,
}

/// Places the node's connections on `view`'s servers, by address and then by run id.
pub(super) async fn route(
    pool: &mut Pool,
    view: &SentinelView,
    sockets: &NodeSockets,
    timeout: Duration,
) -> Routes {
    let servers: Vec<ServerAddr> = view.servers().cloned().collect();
    let resolved = join_all(servers.iter().map(|s| resolve(s, timeout))).await;
    let mut by_socket: HashMap<SocketAddr, ServerAddr> = HashMap::new();
    for (s, addrs) in servers.iter().zip(resolved) {
        for a in addrs {
            by_socket.entry(a).or_insert_with(|| s.clone());
        }
    }
    let aliases = identify(pool, view, &servers, sockets, &by_socket, timeout).await;
    for (socket, server) in &aliases {
        by_socket.insert(*socket, server.clone());
    }
    let routed = sockets
        .connections
        .iter()
        .filter_map(|c| {
            by_socket.get(&c.remote).map(|s| RoutedConnection {
                connection: *c,
                server: s.clone(),
            })
        })
        .collect();
    let mut known: BTreeSet<ServerAddr> = servers.into_iter().collect();
    known.extend(aliases.keys().map(server_at));
    Routes { routed, known }
}

/// A node connection's remote address as a server address.
fn server_at(sa: &SocketAddr) -> ServerAddr {
    ServerAddr::new(sa.ip().to_string(), sa.port())
}

/// Resolves a server address to the socket addresses a node connection may show.
async fn resolve(addr: &ServerAddr, timeout: Duration) -> Vec<SocketAddr> {
    if let Ok(ip) = addr.host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, addr.port)];
    }
    match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((addr.host.as_str(), addr.port)),
    )
    .await
    {
        Ok(Ok(it)) => it
            .map(|sa| match sa.ip() {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), sa.port()),
                    None => sa,
                },
                IpAddr::V4(_) => sa,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Finds which topology server each unplaced node connection reaches, by run id: asks
/// `INFO server` at the address the node uses and, for the master, at the announced address.
/// Only addresses on a port of the topology are asked, so rolecall never sends Redis commands to
/// the node's other services. Returns the node's remote address → the announced server.
async fn identify(
    pool: &mut Pool,
    view: &SentinelView,
    servers: &[ServerAddr],
    sockets: &NodeSockets,
    by_socket: &HashMap<SocketAddr, ServerAddr>,
    timeout: Duration,
) -> BTreeMap<SocketAddr, ServerAddr> {
    let ports: BTreeSet<u16> = servers.iter().map(|s| s.port).collect();
    let candidates: BTreeSet<SocketAddr> = sockets
        .connections
        .iter()
        .map(|c| c.remote)
        .filter(|r| !by_socket.contains_key(r) && ports.contains(&r.port()))
        .collect();
    if candidates.is_empty() {
        return BTreeMap::new();
    }
    let mut ask: Vec<ServerAddr> = candidates.iter().map(server_at).collect();
    if let Some(m) = &view.master {
        ask.push(m.clone());
    }
    let infos = join_all(ask.iter().map(|addr| {
        let conn = pool.connection(addr);
        let addr = addr.clone();
        async move {
            let Ok((mut c, _)) = conn.await else {
                return (addr, None);
            };
            let mut info = redis::cmd("INFO");
            info.arg("server");
            let id = command(&mut c, &addr, "server", timeout, &info)
                .await
                .ok()
                .and_then(|v| text(&v))
                .and_then(|t| parse_run_id(&t));
            (addr, id.map(|id| (id, c)))
        }
    }))
    .await;
    let mut ids = view.run_ids.clone();
    let mut found: BTreeMap<ServerAddr, String> = BTreeMap::new();
    for (addr, r) in infos {
        if let Some((id, conn)) = r {
            pool.keep(&addr, conn);
            if view.master.as_ref() == Some(&addr) {
                ids.insert(id.clone(), addr.clone());
            }
            found.insert(addr, id);
        }
    }
    candidates
        .into_iter()
        .filter_map(|sa| {
            let id = found.get(&server_at(&sa))?;
            Some((sa, ids.get(id)?.clone()))
        })
        .collect()
}
