//! The `NETLINK_SOCK_DIAG` dump (sock_diag(7), the interface `ss` uses): the ESTABLISHED TCP
//! sockets of rolecall's network namespace, with their inodes.
//!
//! One dump request for both address families (or, on a kernel that refuses it, one per
//! family; see [`dump_filtered`]) with `idiag_states = 1 << TCP_ESTABLISHED`, so the
//! kernel skips TIME_WAIT and LISTEN sockets without formatting or copying them, and sends the
//! rest as fixed binary records, one `recv` per 32 KiB of them; there is no syscall per socket.
//! A request may carry a port filter ([`port_filter`](super::port_filter)). A netlink socket
//! sees the network namespace it was opened in, which is rolecall's.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};

use super::connection::{Connection, TCP_ESTABLISHED, Table, normalise};
use super::error::describe;
use super::port_filter::{PortMatch, port_filter};

/// Why a netlink dump gave no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum NetlinkError {
    /// A system call failed, or the kernel answered the request with an error code.
    #[error("netlink sock_diag: cannot {what}: {}", describe(.cause))]
    Os {
        what: &'static str,
        cause: io::Error,
    },
    /// The kernel's answer did not parse, or did not end in time.
    #[error("netlink sock_diag: {0}")]
    Malformed(String),
}

impl NetlinkError {
    pub(super) fn os(what: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
        move |cause| NetlinkError::Os { what, cause }
    }
}

/// Bounds every `recv` of a dump, and the whole dump. The kernel fills the next datagram while
/// answering the previous `recv`, so a dump never waits for anything; these only guard against
/// the unexpected.
const NETLINK_RECV_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const NETLINK_DUMP_LIMIT: Duration = Duration::from_secs(5);

/// The kernel sends dump datagrams of at most 32 KiB (`netlink_recvmsg` caps what it allocates
/// for the next one at `SKB_WITH_OVERHEAD(32768)`, net/netlink/af_netlink.c); a smaller buffer
/// would make it send smaller ones.
const NETLINK_RECV_BUFFER: usize = 64 * 1024;

/// Set once the kernel refused an `INET_DIAG_BC_D_EQ` filter; later dumps compare ports with
/// `D_GE` and `D_LE` straight away.
static PORT_EQUAL_REFUSED: AtomicBool = AtomicBool::new(false);

/// Every ESTABLISHED TCP socket of rolecall's network namespace whose remote port is in `ports`
/// (all of them for an empty set), IPv4 then IPv6, with its inode, through `NETLINK_SOCK_DIAG`
/// (sock_diag(7)). The kernel applies the port filter ([`port_filter`]).
pub(super) fn dump_established(ports: &BTreeSet<u16>) -> Result<Table, NetlinkError> {
    let how = if PORT_EQUAL_REFUSED.load(Ordering::Relaxed) {
        PortMatch::Range
    } else {
        PortMatch::Equal
    };
    let filter = port_filter(ports, how);
    match dump_filtered(&filter) {
        // A kernel older than `INET_DIAG_BC_D_EQ` fails the audit of the filter
        // (`inet_diag_bc_audit` refuses an unknown code with EINVAL); `D_GE` and `D_LE` are as
        // old as the bytecode itself.
        Err(NetlinkError::Os { cause, .. })
            if how == PortMatch::Equal
                && !filter.is_empty()
                && cause.raw_os_error() == Some(libc::EINVAL) =>
        {
            PORT_EQUAL_REFUSED.store(true, Ordering::Relaxed);
            tracing::debug!(
                "the kernel refused INET_DIAG_BC_D_EQ, filtering ports with D_GE and D_LE"
            );
            dump_filtered(&port_filter(ports, PortMatch::Range))
        }
        other => other,
    }
}

/// The ESTABLISHED TCP sockets of rolecall's network namespace that pass `filter`, an
/// `INET_DIAG_REQ_BYTECODE` program (none when empty).
///
/// One dump for both families when the kernel takes it: the older `TCPDIAG_GETSOCK` request
/// dumps with no family (`inet_diag_dump_compat` sets `AF_UNSPEC`), so the kernel walks its
/// established-socket hash table once instead of once per family, and the walk is most of a
/// dump's cost. If the kernel refuses that request and then takes the per-family ones, the
/// per-family ones are used from then on.
pub(super) fn dump_filtered(filter: &[u8]) -> Result<Table, NetlinkError> {
    if COMPAT_REFUSED.load(Ordering::Relaxed) {
        return dump_requests(&[
            dump_request(AF_INET, 1, filter),
            dump_request(AF_INET6, 2, filter),
        ]);
    }
    match dump_requests(&[compat_dump_request(filter)]) {
        Err(NetlinkError::Os { what, cause }) => {
            let table = dump_requests(&[
                dump_request(AF_INET, 1, filter),
                dump_request(AF_INET6, 2, filter),
            ])?;
            COMPAT_REFUSED.store(true, Ordering::Relaxed);
            tracing::debug!(
                error = %NetlinkError::Os { what, cause },
                "the kernel refused a TCPDIAG_GETSOCK dump, dumping each family"
            );
            Ok(table)
        }
        other => other,
    }
}

/// Set once the kernel refused a `TCPDIAG_GETSOCK` dump and took the per-family ones.
static COMPAT_REFUSED: AtomicBool = AtomicBool::new(false);

/// Sends each dump request in turn and gathers their records.
fn dump_requests(requests: &[Vec<u8>]) -> Result<Table, NetlinkError> {
    let socket = open_socket()?;
    let deadline = Instant::now() + NETLINK_DUMP_LIMIT;
    let mut buffer = vec![0u8; NETLINK_RECV_BUFFER];
    let mut table = Vec::new();
    for request in requests {
        socket
            .send(request, 0)
            .map_err(NetlinkError::os("send a dump request"))?;
        loop {
            if Instant::now() > deadline {
                return Err(NetlinkError::Malformed(format!(
                    "the dump did not end within {NETLINK_DUMP_LIMIT:?}"
                )));
            }
            // MSG_TRUNC: the length of the datagram, even if it did not fit.
            let len = match socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(NetlinkError::os("receive the dump")(err)),
            };
            let datagram = buffer.get(..len).ok_or_else(|| {
                NetlinkError::Malformed(format!(
                    "a datagram of {len} bytes did not fit in {NETLINK_RECV_BUFFER}"
                ))
            })?;
            match parse_dump_datagram(datagram, &mut table) {
                Ok(Dump::More) => {}
                Ok(Dump::Done) => break,
                // No AF_INET6 handler: the kernel has no IPv6, like a missing /proc/net/tcp6.
                Err(NetlinkError::Os { cause, .. })
                    if requests.len() > 1
                        && request_family(request) == Some(AF_INET6)
                        && cause.raw_os_error() == Some(libc::ENOENT) =>
                {
                    break;
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(table)
}

/// The family byte of a `SOCK_DIAG_BY_FAMILY` request (the first byte of its payload).
fn request_family(request: &[u8]) -> Option<u8> {
    request.get(NETLINK_HEADER_LEN).copied()
}

/// A `NETLINK_SOCK_DIAG` socket connected to the kernel, each `recv` bounded by
/// [`NETLINK_RECV_TIMEOUT`].
pub(super) fn open_socket() -> Result<netlink_sys::Socket, NetlinkError> {
    use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

    let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(NetlinkError::os("open a socket"))?;
    // Port 0 is the kernel; connecting also binds the socket to a port of its own.
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(NetlinkError::os("connect to the kernel"))?;
    socket2::SockRef::from(&socket)
        .set_read_timeout(Some(NETLINK_RECV_TIMEOUT))
        .map_err(NetlinkError::os("set a receive timeout"))?;
    Ok(socket)
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for the ESTABLISHED TCP sockets of `family`, with
/// `filter` as its `INET_DIAG_REQ_BYTECODE` attribute unless it is empty.
fn dump_request(family: u8, sequence: u32, filter: &[u8]) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::ESTABLISHED,
        socket_id: if family == AF_INET6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        },
    };
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    push_filter(&mut bytes, filter);
    let total = u32::try_from(bytes.len()).expect("a request of a few KiB");
    NetlinkBuffer::new(&mut bytes[..]).set_length(total);
    bytes
}

/// A `TCPDIAG_GETSOCK` dump request (`struct inet_diag_req`, linux/inet_diag.h) for the
/// ESTABLISHED TCP sockets of both families, with `filter` as its `INET_DIAG_REQ_BYTECODE`
/// attribute unless it is empty. Its records come back as `TCPDIAG_GETSOCK` messages holding
/// the same `inet_diag_msg` as `SOCK_DIAG_BY_FAMILY` ones.
fn compat_dump_request(filter: &[u8]) -> Vec<u8> {
    // inet_diag_req: family, src_len, dst_len, ext (u8 each), inet_diag_sockid (48 bytes:
    // ports, addresses, interface, cookie), states, dbs (u32 each). The family is ignored for
    // a dump; the sockid is all zeroes (no address or port to match).
    let mut bytes = vec![0u8; NETLINK_HEADER_LEN];
    bytes.extend_from_slice(&[AF_INET, 0, 0, 0]);
    bytes.extend_from_slice(&[0u8; 48]);
    bytes.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    push_filter(&mut bytes, filter);
    let total = u32::try_from(bytes.len()).expect("a request of a few KiB");
    let mut header = NetlinkBuffer::new(&mut bytes[..]);
    header.set_length(total);
    header.set_message_type(TCPDIAG_GETSOCK);
    header.set_flags(NLM_F_REQUEST | NLM_F_DUMP);
    header.set_sequence_number(1);
    bytes
}

/// Appends `filter` to a request as its `INET_DIAG_REQ_BYTECODE` attribute (none when empty):
/// a `struct nlattr` (u16 nla_len, u16 nla_type) and the program, after the request's fixed
/// part (`inet_diag_parse_attrs` in net/ipv4/inet_diag.c reads the attributes there). The
/// program's length is a multiple of 4, so no padding follows. The netlink length is the
/// caller's to set.
fn push_filter(bytes: &mut Vec<u8>, filter: &[u8]) {
    if filter.is_empty() {
        return;
    }
    let attribute_len = u16::try_from(NLA_HEADER_LEN + filter.len())
        .expect("port_filter bounds the program's length");
    bytes.extend_from_slice(&attribute_len.to_ne_bytes());
    bytes.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    bytes.extend_from_slice(filter);
}

/// `TCPDIAG_GETSOCK` in linux/inet_diag.h: the request (and record) type of the older,
/// TCP-only interface.
const TCPDIAG_GETSOCK: u16 = 18;
/// The size of a `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;

/// `INET_DIAG_REQ_BYTECODE` in linux/inet_diag.h: the request attribute holding a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// The size of a `struct nlattr` header.
const NLA_HEADER_LEN: usize = 4;

/// Whether a dump goes on after a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dump {
    More,
    Done,
}

/// Adds the ESTABLISHED connections of one datagram of a `sock_diag` dump to `table`, and tells
/// whether the dump ended (`NLMSG_DONE`). An `NLMSG_ERROR` with a code, or an `NLMSG_DONE`
/// with a negative one, is the kernel refusing or aborting the dump: `NetlinkError::Os`.
///
/// Only the fixed `inet_diag_msg` header of each record is read; the attributes after it
/// (`INET_DIAG_SHUTDOWN`, `INET_DIAG_CGROUP_ID`, ... by kernel version) are skipped.
pub(super) fn parse_dump_datagram(
    mut datagram: &[u8],
    table: &mut Table,
) -> Result<Dump, NetlinkError> {
    let malformed = |what: &str, err: &dyn fmt::Display| {
        NetlinkError::Malformed(format!("cannot parse {what}: {err}"))
    };
    while !datagram.is_empty() {
        let message =
            NetlinkBuffer::new_checked(datagram).map_err(|err| malformed("a message", &err))?;
        let payload = message.payload();
        match message.message_type() {
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                let header = InetResponseHeader::parse(payload)
                    .map_err(|err| malformed("an inet_diag record", &err))?;
                table.extend(connection_of(&header));
            }
            NLMSG_DONE => {
                // Its payload is the dump's return code; the kernel may leave it out.
                let code = match payload.len() {
                    0 => 0,
                    _ => DoneBuffer::new_checked(payload)
                        .map_err(|err| malformed("NLMSG_DONE", &err))?
                        .code(),
                };
                if code < 0 {
                    return Err(NetlinkError::os("finish the dump")(
                        io::Error::from_raw_os_error(code.saturating_neg()),
                    ));
                }
                return Ok(Dump::Done);
            }
            NLMSG_ERROR => {
                let error = ErrorBuffer::new_checked(payload)
                    .map_err(|err| malformed("NLMSG_ERROR", &err))?;
                // No code is an acknowledgement, which a dump does not ask for.
                if let Some(code) = error.code() {
                    return Err(NetlinkError::os("dump TCP sockets")(
                        io::Error::from_raw_os_error(code.get().saturating_neg()),
                    ));
                }
            }
            NLMSG_NOOP => {}
            other => {
                return Err(NetlinkError::Malformed(format!(
                    "unexpected message type {other}"
                )));
            }
        }
        // Messages start on 4-byte boundaries (NLMSG_ALIGN); the last one may be unpadded.
        let step = (message.length() as usize).next_multiple_of(4);
        datagram = datagram.get(step..).unwrap_or_default();
    }
    Ok(Dump::More)
}

/// The connection of one `inet_diag_msg` record and its socket's inode, if it is ESTABLISHED
/// (the dump asks only for those; checked again so this means the same as
/// [`parse_proc_net_tcp`](super::parse_proc_net_tcp)). Ports arrive in network order and
/// addresses as bytes in network order; the crate has already turned them into numbers and
/// addresses.
pub(super) fn connection_of(header: &InetResponseHeader) -> Option<(Connection, u64)> {
    if header.state != TCP_ESTABLISHED {
        return None;
    }
    let id = &header.socket_id;
    let connection = Connection {
        local: normalise(SocketAddr::new(id.source_address, id.source_port)),
        remote: normalise(SocketAddr::new(id.destination_address, id.destination_port)),
    };
    Some((connection, u64::from(header.inode)))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkPayload};

    use super::*;
    use crate::sockets::testutil::{addr, conn, ports};

    fn diag_header(state: u8, local: &str, remote: &str, inode: u32) -> InetResponseHeader {
        let (local, remote) = (addr(local), addr(remote));
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut socket_id = if local.is_ipv4() {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        socket_id.source_port = local.port();
        socket_id.destination_port = remote.port();
        socket_id.source_address = local.ip();
        socket_id.destination_address = remote.ip();
        InetResponseHeader {
            family,
            state,
            timer: None,
            socket_id,
            recv_queue: 0,
            send_queue: 0,
            uid: 1000,
            inode,
        }
    }

    #[test]
    fn sock_diag_records_become_established_connections() {
        use netlink_packet_sock_diag::constants::{TCP_LISTEN, TCP_TIME_WAIT};
        let cases = [
            (
                "ipv4",
                diag_header(TCP_ESTABLISHED, "10.0.1.2:50000", "10.0.2.10:6379", 99),
                Some((conn("10.0.1.2:50000", "10.0.2.10:6379"), 99)),
            ),
            (
                "ipv6",
                diag_header(
                    TCP_ESTABLISHED,
                    "[2001:db8::1]:6379",
                    "[2001:db8::2]:54321",
                    7,
                ),
                Some((conn("[2001:db8::1]:6379", "[2001:db8::2]:54321"), 7)),
            ),
            (
                "ipv4-mapped ipv6 becomes ipv4",
                diag_header(
                    TCP_ESTABLISHED,
                    "[::ffff:127.0.0.1]:6379",
                    "[::ffff:127.0.0.1]:54321",
                    77,
                ),
                Some((conn("127.0.0.1:6379", "127.0.0.1:54321"), 77)),
            ),
            (
                "the largest inode",
                diag_header(TCP_ESTABLISHED, "127.0.0.1:1", "127.0.0.1:2", u32::MAX),
                Some((conn("127.0.0.1:1", "127.0.0.1:2"), 4_294_967_295)),
            ),
            (
                "not yet accepted: inode 0",
                diag_header(TCP_ESTABLISHED, "127.0.0.1:1", "127.0.0.1:2", 0),
                Some((conn("127.0.0.1:1", "127.0.0.1:2"), 0)),
            ),
            (
                "time-wait is skipped",
                diag_header(TCP_TIME_WAIT, "127.0.0.1:1", "127.0.0.1:2", 0),
                None,
            ),
            (
                "listen is skipped",
                diag_header(TCP_LISTEN, "0.0.0.0:6379", "0.0.0.0:0", 5),
                None,
            ),
        ];
        for (name, header, want) in cases {
            assert_eq!(connection_of(&header), want, "case: {name}");
        }
    }

    /// One netlink message as the kernel would send it, `NLMSG_ALIGN`ed.
    fn message(payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn record(header: InetResponseHeader) -> Vec<u8> {
        use netlink_packet_sock_diag::inet::{InetResponse, nlas::Nla};
        // Attributes like those the kernel adds to every record; the parser skips them.
        let nlas = vec![Nla::Shutdown(0), Nla::Tos(0)].into();
        let response = InetResponse { header, nlas };
        message(SockDiagMessage::InetResponse(Box::new(response)).into())
    }

    fn done(code: i32) -> Vec<u8> {
        let mut done = DoneMessage::default();
        done.code = code;
        message(NetlinkPayload::Done(done))
    }

    fn nlmsg_error(code: i32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(code);
        message(NetlinkPayload::Error(error))
    }

    #[test]
    fn sock_diag_datagrams_are_read_until_the_dump_is_done() {
        use netlink_packet_sock_diag::constants::TCP_TIME_WAIT;
        enum Want {
            Ok(Dump, Vec<(Connection, u64)>),
            Os(i32),
            Malformed(&'static str),
        }
        let v4 = || diag_header(TCP_ESTABLISHED, "127.0.0.1:6379", "127.0.0.1:40000", 11);
        let v6 = || diag_header(TCP_ESTABLISHED, "[::1]:6379", "[::1]:40001", 12);
        let tw = || diag_header(TCP_TIME_WAIT, "127.0.0.1:6379", "127.0.0.1:40002", 0);
        let want_v4 = (conn("127.0.0.1:6379", "127.0.0.1:40000"), 11);
        let want_v6 = (conn("[::1]:6379", "[::1]:40001"), 12);
        let mut short_record = record(v4());
        short_record.truncate(short_record.len() - 8);
        let mut cut_record = record(v4());
        cut_record.truncate(40);
        let mut short_payload = message(NetlinkPayload::Noop);
        short_payload.extend(vec![0u8; 32]);
        NetlinkBuffer::new(&mut short_payload[..]).set_message_type(SOCK_DIAG_BY_FAMILY);
        NetlinkBuffer::new(&mut short_payload[..]).set_length(48);
        let mut unknown_type = message(NetlinkPayload::Noop);
        NetlinkBuffer::new(&mut unknown_type[..]).set_message_type(0x99);
        let mut bare_done = message(NetlinkPayload::Noop);
        NetlinkBuffer::new(&mut bare_done[..]).set_message_type(NLMSG_DONE);

        let cases: Vec<(&str, Vec<Vec<u8>>, Want)> = vec![
            (
                "records then done",
                vec![record(v4()), record(tw()), record(v6()), done(0)],
                Want::Ok(Dump::Done, vec![want_v4, want_v6]),
            ),
            (
                "records, more to come",
                vec![record(v4()), record(v6())],
                Want::Ok(Dump::More, vec![want_v4, want_v6]),
            ),
            ("an empty datagram", vec![], Want::Ok(Dump::More, vec![])),
            (
                "noop and an acknowledgement are skipped",
                vec![message(NetlinkPayload::Noop), nlmsg_error(0), record(v4())],
                Want::Ok(Dump::More, vec![want_v4]),
            ),
            (
                "done without a code",
                vec![bare_done],
                Want::Ok(Dump::Done, vec![]),
            ),
            (
                "the kernel refuses the request",
                vec![nlmsg_error(-libc::ENOENT)],
                Want::Os(libc::ENOENT),
            ),
            (
                "the kernel aborts the dump",
                vec![record(v4()), done(-libc::EINTR)],
                Want::Os(libc::EINTR),
            ),
            (
                "a record longer than the datagram",
                vec![short_record],
                Want::Malformed("cannot parse a message"),
            ),
            (
                "a datagram cut inside the header",
                vec![cut_record],
                Want::Malformed("cannot parse a message"),
            ),
            (
                "a record too short for inet_diag_msg",
                vec![short_payload],
                Want::Malformed("cannot parse an inet_diag record"),
            ),
            (
                "an unknown message type",
                vec![unknown_type],
                Want::Malformed("unexpected message type 153"),
            ),
        ];
        for (name, messages, want) in cases {
            let datagram = messages.concat();
            let mut table = Vec::new();
            let got = parse_dump_datagram(&datagram, &mut table);
            match (got, want) {
                (Ok(dump), Want::Ok(want_dump, want_table)) => {
                    assert_eq!(dump, want_dump, "case: {name}");
                    assert_eq!(table, want_table, "case: {name}");
                }
                (Err(NetlinkError::Os { cause, .. }), Want::Os(errno)) => {
                    assert_eq!(cause.raw_os_error(), Some(errno), "case: {name}")
                }
                (Err(NetlinkError::Malformed(message)), Want::Malformed(text)) => {
                    assert!(message.contains(text), "case: {name}: {message}")
                }
                (got, _) => panic!("case {name}: unexpected {got:?} (table {table:?})"),
            }
        }
    }

    #[test]
    fn sock_diag_parser_never_panics_on_cut_or_odd_datagrams() {
        let v6 = diag_header(TCP_ESTABLISHED, "[::1]:6379", "[::1]:40001", 12);
        let datagram = [record(v6), nlmsg_error(-libc::EPERM), done(0)].concat();
        for end in 0..=datagram.len() {
            let _ = parse_dump_datagram(&datagram[..end], &mut Vec::new());
            let _ = parse_dump_datagram(&datagram[end..], &mut Vec::new());
        }
        for odd in [&[0xffu8; 16][..], &[0u8; 16], &[16, 0, 0, 0], &[0xff; 3]] {
            assert!(
                parse_dump_datagram(odd, &mut Vec::new()).is_err(),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn dump_requests_ask_for_established_tcp_sockets_of_one_family() {
        for (family, sequence) in [(AF_INET, 1), (AF_INET6, 2)] {
            let bytes = dump_request(family, sequence, &[]);
            let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
            assert_eq!(message.message_type(), SOCK_DIAG_BY_FAMILY);
            assert_eq!(message.flags(), NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(message.sequence_number(), sequence);
            assert_eq!(message.length() as usize, bytes.len());
            // 16 bytes of nlmsghdr and 56 of inet_diag_req_v2 (linux/inet_diag.h).
            assert_eq!(bytes.len(), 72);
            let request = InetRequestBytes::from(&bytes[16..]);
            assert_eq!(
                request,
                InetRequestBytes {
                    family,
                    protocol: 6,
                    states: 1 << 1,
                }
            );
        }
    }

    /// The fields of an `inet_diag_req_v2` that select the sockets, read by hand so the test
    /// does not trust the crate that wrote them.
    #[derive(Debug, PartialEq, Eq)]
    struct InetRequestBytes {
        family: u8,
        protocol: u8,
        states: u32,
    }

    impl From<&[u8]> for InetRequestBytes {
        fn from(bytes: &[u8]) -> Self {
            InetRequestBytes {
                family: bytes[0],
                protocol: bytes[1],
                states: u32::from_ne_bytes(bytes[4..8].try_into().unwrap()),
            }
        }
    }

    #[test]
    fn a_filtered_dump_request_carries_the_program_as_an_attribute() {
        let filter = port_filter(&ports(&[6379, 26379]), PortMatch::Equal);
        let bytes = dump_request(AF_INET6, 7, &filter);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.length() as usize, bytes.len());
        assert_eq!(message.sequence_number(), 7);
        assert_eq!(bytes.len(), 72 + 4 + filter.len());
        assert_eq!(
            InetRequestBytes::from(&bytes[16..]),
            InetRequestBytes {
                family: AF_INET6,
                protocol: 6,
                states: 1 << 1,
            }
        );
        let attribute = &bytes[72..];
        assert_eq!(
            u16::from_ne_bytes([attribute[0], attribute[1]]),
            u16::try_from(4 + filter.len()).unwrap()
        );
        assert_eq!(u16::from_ne_bytes([attribute[2], attribute[3]]), 1);
        assert_eq!(&attribute[4..], &filter[..]);
    }

    #[test]
    fn a_compat_dump_request_asks_for_established_tcp_of_any_family_with_the_program() {
        let filter = port_filter(&ports(&[6379, 26379]), PortMatch::Equal);
        let bytes = compat_dump_request(&filter);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.length() as usize, bytes.len());
        assert_eq!(message.message_type(), TCPDIAG_GETSOCK);
        assert_eq!(message.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        // nlmsghdr, inet_diag_req (60 bytes), the attribute.
        assert_eq!(bytes.len(), 16 + 60 + 4 + filter.len());
        let states = &bytes[16 + 52..16 + 56];
        assert_eq!(states, (1u32 << 1).to_ne_bytes());
        let attribute = &bytes[76..];
        assert_eq!(u16::from_ne_bytes([attribute[2], attribute[3]]), 1);
        assert_eq!(&attribute[4..], &filter[..]);
        assert_eq!(compat_dump_request(&[]).len(), 76);
    }

    #[test]
    fn one_compat_dump_lists_both_families_as_the_per_family_dumps_do() {
        use crate::sockets::testutil::Pair;
        let pairs = [
            Pair::connect("127.0.0.1:0", |p| addr(&format!("127.0.0.1:{p}"))),
            Pair::connect("[::1]:0", |p| addr(&format!("[::1]:{p}"))),
            Pair::connect("[::]:0", |p| addr(&format!("127.0.0.1:{p}"))),
        ];
        let listening: Vec<u16> = pairs
            .iter()
            .map(|p| p.server.local_addr().unwrap().port())
            .collect();
        let filter = port_filter(&ports(&listening), PortMatch::Range);
        let sorted = |mut t: Table| {
            t.sort_unstable();
            t
        };
        let compat = sorted(
            dump_requests(&[compat_dump_request(&filter)])
                .expect("this kernel takes a TCPDIAG_GETSOCK dump"),
        );
        let per_family = sorted(
            dump_requests(&[
                dump_request(AF_INET, 1, &filter),
                dump_request(AF_INET6, 2, &filter),
            ])
            .unwrap(),
        );
        assert_eq!(compat, per_family);
        for pair in &pairs {
            assert!(
                compat.iter().any(|(c, _)| *c == pair.client_side()),
                "{:?} not in {compat:?}",
                pair.client_side()
            );
        }
        assert!(!COMPAT_REFUSED.load(Ordering::Relaxed));
    }
}
