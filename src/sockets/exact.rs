//! Exact `NETLINK_SOCK_DIAG` lookups: whether the connections a discovery found are still the
//! same ESTABLISHED sockets, without listing the namespace's sockets again.
//!
//! A dump walks every bucket of the kernel's established-socket hash table whatever its filter
//! (262,144 buckets on a host with a few GiB of memory, shared by all namespaces), and was most of
//! a check's CPU (BENCHMARKS.md). A request without `NLM_F_DUMP` names one socket by its
//! addresses and ports; the kernel finds it with one hash lookup (`inet_diag_find_one_icsk` in
//! net/ipv4/inet_diag.c) and answers with its record, or with `ENOENT`. Every connection's
//! request goes in one datagram; the kernel answers each in turn before `send` returns.
//!
//! What a lookup cannot see is a socket it was not asked about: a connection the node opened
//! since the last dump. [`FdMemory`](super::FdMemory) decides when lookups may stand in for a
//! dump.

use std::io;
use std::time::Instant;

use netlink_packet_core::{
    ErrorBuffer, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};

use super::connection::{Connection, Table};
use super::netlink::{NetlinkError, connection_of, open_socket};

/// Requests per datagram. Each answer waits in the socket's receive queue until read, and a
/// batch this size fits the default queue (`net.core.rmem_default`) many times over.
const BATCH: usize = 32;

/// `INET_DIAG_NOCOOKIE`: match the socket by its addresses and ports alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// Whether every connection of `known` (as the node sees it, with its socket's inode) is still
/// that socket and ESTABLISHED. `Ok(false)` as soon as one is gone, was replaced (another inode:
/// the 4-tuple was reused), or left ESTABLISHED (the peer closed it: `CLOSE_WAIT`).
pub(super) fn still_established(known: &Table) -> Result<bool, NetlinkError> {
    let socket = open_socket()?;
    let mut buffer = vec![0u8; 8 * 1024];
    let deadline = Instant::now() + super::netlink::NETLINK_DUMP_LIMIT;
    for batch in known.chunks(BATCH) {
        let mut datagram = Vec::with_capacity(batch.len() * 80);
        for (sequence, (connection, _)) in (1u32..).zip(batch) {
            datagram.extend(lookup_request(connection, sequence));
        }
        socket
            .send(&datagram, 0)
            .map_err(NetlinkError::os("send lookup requests"))?;
        for _ in batch {
            if Instant::now() > deadline {
                return Err(NetlinkError::Malformed(
                    "the lookups were not answered in time".to_owned(),
                ));
            }
            let len = loop {
                match socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC) {
                    Ok(len) => break len,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(NetlinkError::os("receive a lookup answer")(err)),
                }
            };
            let answer = buffer.get(..len).ok_or_else(|| {
                NetlinkError::Malformed(format!("a lookup answer of {len} bytes did not fit"))
            })?;
            if !same_socket(answer, batch)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// An exact `SOCK_DIAG_BY_FAMILY` request for `connection` (no `NLM_F_DUMP`), numbered
/// `sequence`. The family is the connection's; an IPv4 connection of a dual-stack socket
/// (reported as IPv4) is found by an `AF_INET` lookup, which searches the same hash table.
fn lookup_request(connection: &Connection, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = sequence;
    let (family, mut socket_id) = if connection.local.is_ipv4() {
        (AF_INET, SocketId::new_v4())
    } else {
        (AF_INET6, SocketId::new_v6())
    };
    socket_id.source_address = connection.local.ip();
    socket_id.source_port = connection.local.port();
    socket_id.destination_address = connection.remote.ip();
    socket_id.destination_port = connection.remote.port();
    socket_id.cookie = NO_COOKIE;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::ESTABLISHED,
        socket_id,
    };
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Whether one answer (one datagram) says that the socket its sequence number asked about is
/// the one in `batch`: the same connection, ESTABLISHED, the same inode. `ENOENT` (no such
/// socket) is `false`; another error, or an answer that does not parse, is an error.
pub(super) fn same_socket(
    answer: &[u8],
    batch: &[(Connection, u64)],
) -> Result<bool, NetlinkError> {
    let malformed = |what: &str, err: &dyn std::fmt::Display| {
        NetlinkError::Malformed(format!("cannot parse {what}: {err}"))
    };
    let message = NetlinkBuffer::new_checked(answer).map_err(|err| malformed("an answer", &err))?;
    let asked = usize::try_from(message.sequence_number())
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| batch.get(i))
        .ok_or_else(|| {
            NetlinkError::Malformed(format!(
                "an answer to request {} of {}",
                message.sequence_number(),
                batch.len()
            ))
        })?;
    match message.message_type() {
        SOCK_DIAG_BY_FAMILY => {
            let header = InetResponseHeader::parse(message.payload())
                .map_err(|err| malformed("an inet_diag record", &err))?;
            Ok(connection_of(&header).as_ref() == Some(asked))
        }
        NLMSG_ERROR => {
            let error = ErrorBuffer::new_checked(message.payload())
                .map_err(|err| malformed("NLMSG_ERROR", &err))?;
            match error.code().map(|c| c.get().saturating_neg()) {
                Some(libc::ENOENT) => Ok(false),
                Some(code) => Err(NetlinkError::os("look up a socket")(
                    io::Error::from_raw_os_error(code),
                )),
                // An acknowledgement, which these requests do not ask for.
                None => Err(NetlinkError::Malformed(
                    "an acknowledgement instead of an answer".to_owned(),
                )),
            }
        }
        other => Err(NetlinkError::Malformed(format!(
            "unexpected message type {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Shutdown;
    use std::time::Duration;

    use super::*;
    use crate::sockets::netlink::dump_established;
    use crate::sockets::testutil::{Pair, addr, ports};

    /// Both ends of `pair` as a dump lists them, with their inodes.
    fn dumped(pair: &Pair) -> Table {
        let port = pair.server.local_addr().unwrap().port();
        let client_port = pair.client.local_addr().unwrap().port();
        let table = dump_established(&ports(&[port, client_port])).expect("netlink sock_diag");
        let wanted = [pair.client_side(), pair.server_side()];
        let found: Table = table
            .into_iter()
            .filter(|(c, _)| wanted.contains(c))
            .collect();
        assert_eq!(
            found.len(),
            2,
            "both ends of the pair in the dump: {found:?}"
        );
        found
    }

    fn still(known: &Table) -> bool {
        still_established(known).expect("netlink sock_diag lookups")
    }

    #[test]
    fn live_connections_are_confirmed_for_ipv4_ipv6_and_a_dual_stack_socket() {
        let pairs = [
            Pair::connect("127.0.0.1:0", |p| addr(&format!("127.0.0.1:{p}"))),
            Pair::connect("[::1]:0", |p| addr(&format!("[::1]:{p}"))),
            // The accepted end is an IPv6 socket carrying IPv4, reported as IPv4.
            Pair::connect("[::]:0", |p| addr(&format!("127.0.0.1:{p}"))),
        ];
        for pair in &pairs {
            let known = dumped(pair);
            assert!(still(&known), "{known:?}");
        }
        let all: Table = pairs.iter().flat_map(dumped).collect();
        assert!(still(&all));
        // More connections than one datagram carries.
        let many: Table = all.iter().cycle().take(BATCH * 2 + 3).copied().collect();
        assert!(still(&many));
    }

    #[test]
    fn a_closed_replaced_or_half_closed_connection_is_not_confirmed() {
        let pair = Pair::connect("127.0.0.1:0", |p| addr(&format!("127.0.0.1:{p}")));
        let known = dumped(&pair);
        // Another inode for the same addresses: the 4-tuple was reused by another socket.
        let replaced: Table = known.iter().map(|&(c, inode)| (c, inode + 1)).collect();
        assert!(!still(&replaced));
        // The node's end after the server closed: CLOSE_WAIT, no longer ESTABLISHED.
        pair.server.shutdown(Shutdown::Write).unwrap();
        let client_end: Table = known
            .iter()
            .filter(|(c, _)| *c == pair.client_side())
            .copied()
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while still(&client_end) {
            assert!(Instant::now() < deadline, "still ESTABLISHED after 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Both ends gone: the client end is TIME_WAIT or gone, the server end's address is
        // its listener's (a lookup may find the listener, whose inode differs).
        let (mut client, server) = (pair.client, pair.server);
        let _ = client.write_all(b"x");
        drop((client, server));
        assert!(!still(&known));
        for one in &known {
            assert!(!still(&vec![*one]), "{one:?}");
        }
    }
}
