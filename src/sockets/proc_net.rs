//! The `/proc/PID/net/tcp` and `tcp6` tables: every socket of a process's network namespace,
//! as text, TIME_WAIT included.
//!
//! They are parsed by hand ([`parse_proc_net_tcp`]) rather than with `procfs`, whose parser
//! rejects a whole table for one line it does not understand; here a malformed line is
//! skipped.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use super::connection::{Connection, TCP_ESTABLISHED, Table, normalise};
use super::error::{DiscoverError, is_gone, unreadable};

/// Parses the text of `/proc/net/tcp` (`v6 == false`) or `/proc/net/tcp6` (`v6 == true`) into
/// the ESTABLISHED connections and their socket inodes, in table order.
///
/// The header line, lines in any other state and lines that do not parse are skipped. The
/// kernel prints each address as 32-bit words in `%08X` of the word as stored, i.e. in host byte
/// order (`0100007F` is 127.0.0.1 on little-endian machines), and the port as a plain number
/// (`tcp4_seq_show` / `get_tcp4_sock` in net/ipv4/tcp_ipv4.c).
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<(Connection, u64)> {
    text.lines()
        .filter_map(|line| parse_tcp_line(line, v6))
        .collect()
}

fn parse_tcp_line(line: &str, v6: bool) -> Option<(Connection, u64)> {
    // Fields: sl, local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt,
    // uid, timeout, inode, then more that vary by kernel and state.
    let mut fields = line.split_whitespace();
    // The slot is "0:"; this also skips the header line, which starts with "sl".
    fields.next()?.strip_suffix(':')?.parse::<u64>().ok()?;
    let local = parse_endpoint(fields.next()?, v6)?;
    let remote = parse_endpoint(fields.next()?, v6)?;
    if parse_hex_u8(fields.next()?)? != TCP_ESTABLISHED {
        return None;
    }
    let inode = fields.nth(5)?.parse::<u64>().ok()?;
    Some((Connection { local, remote }, inode))
}

/// Parses `0100007F:1538` (or 32 hex digits before the colon for IPv6).
fn parse_endpoint(text: &str, v6: bool) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_be_bytes(parse_hex_bytes::<2>(port)?);
    if v6 {
        // Sliced by bytes below: a non-ASCII character would straddle a word.
        if address.len() != 32 || !address.is_ascii() {
            return None;
        }
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(0..4) {
            chunk.copy_from_slice(&kernel_word(&address[word * 8..word * 8 + 8])?);
        }
        Some(normalise(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(octets),
            port,
            0,
            0,
        ))))
    } else {
        if address.len() != 8 {
            return None;
        }
        let octets = kernel_word(address)?;
        Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(octets),
            port,
        )))
    }
}

/// One 32-bit address word as the kernel prints it: `%08X` of the word as it sits in memory, so
/// its bytes in memory order (network order) are the native-endian bytes of the number.
fn kernel_word(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_be_bytes(parse_hex_bytes::<4>(hex)?).to_ne_bytes())
}

/// Parses exactly `2 * N` hex digits, most significant first. Unlike `from_str_radix`, rejects a
/// sign.
fn parse_hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(bytes)
}

fn parse_hex_u8(hex: &str) -> Option<u8> {
    parse_hex_bytes::<1>(hex).map(|[byte]| byte)
}

/// Reads and parses `DIR/tcp` and `DIR/tcp6`. `Ok(None)` if `DIR/tcp` is gone (its process
/// exited); a missing `tcp6` means IPv6 is disabled and counts as empty.
pub(super) fn read_tcp_tables(net: &Path) -> Result<Option<Table>, DiscoverError> {
    let tcp = net.join("tcp");
    let mut entries = match std::fs::read_to_string(&tcp) {
        Ok(text) => parse_proc_net_tcp(&text, false),
        Err(err) if is_gone(&err) => return Ok(None),
        Err(err) => return Err(unreadable(&tcp, &err)),
    };
    let tcp6 = net.join("tcp6");
    match std::fs::read_to_string(&tcp6) {
        Ok(text) => entries.extend(parse_proc_net_tcp(&text, true)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(unreadable(&tcp6, &err)),
    }
    Ok(Some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::testutil::conn;

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
    const TCP6_HEADER: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    // The hex below is what a little-endian kernel prints; on big-endian the words differ.
    #[cfg(target_endian = "little")]
    #[test]
    fn parser_reads_established_lines_and_skips_everything_else() {
        struct Case {
            name: &'static str,
            v6: bool,
            text: String,
            want: Vec<(Connection, u64)>,
        }
        let cases = [
            Case {
                name: "ipv4 established",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:58102", "127.0.0.1:5432"), 123456)],
            },
            Case {
                name: "ipv4 non-loopback address byte order",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n   7: 0201000A:C350 0A02000A:18EB 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("10.0.1.2:50000", "10.0.2.10:6379"), 99)],
            },
            Case {
                name: "ipv6 loopback",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: 00000000000000000000000001000000:18EB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("[::1]:6379", "[::1]:54321"), 4242)],
            },
            Case {
                name: "ipv6 global address word order",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: B80D0120000000000000000001000000:18EB B80D0120000000000000000002000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("[2001:db8::1]:6379", "[2001:db8::2]:54321"), 7)],
            },
            Case {
                name: "ipv4-mapped ipv6 becomes ipv4",
                v6: true,
                text: format!(
                    "{TCP6_HEADER}\n   0: 0000000000000000FFFF00000100007F:18EB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 0 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:6379", "127.0.0.1:54321"), 77)],
            },
            Case {
                name: "listen, time-wait, syn-sent and close-wait are skipped",
                v6: false,
                text: format!(
                    "{TCP_HEADER}\n\
                     \x20  0: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1 0000000000000000 100 0 0 10 0\n\
                     \x20  1: 0100007F:18EB 0100007F:D431 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n\
                     \x20  2: 0100007F:D432 0100007F:18EB 02 00000000:00000000 01:00000064 00000000     0        0 12 1 0000000000000000 100 0 0 10 0\n\
                     \x20  3: 0100007F:D433 0100007F:18EB 08 00000000:00000000 00:00000000 00000000     0        0 13 1 0000000000000000 20 4 30 10 -1\n\
                     \x20  4: 0100007F:D434 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 14 1 0000000000000000 20 4 30 10 -1\n"
                ),
                want: vec![(conn("127.0.0.1:54324", "127.0.0.1:6379"), 14)],
            },
            Case {
                name: "only a header",
                v6: false,
                text: TCP_HEADER.to_owned(),
                want: vec![],
            },
            Case {
                name: "empty text",
                v6: true,
                text: String::new(),
                want: vec![],
            },
            Case {
                name: "malformed lines are skipped, good ones kept",
                v6: false,
                text: [
                    TCP_HEADER,
                    "garbage",
                    "   0:",
                    "   0: 0100007F:E2F6",
                    "   0: 0100007F:E2F6 0100007F:1538 01",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 notanumber",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 -5",
                    "   x: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007G:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: +100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:+2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007FE2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 1 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 ZZ 00000000:00000000 00:00000000 00000000 0 0 5",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 é",
                    "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000 0 0 6",
                ]
                .join("\n"),
                want: vec![(conn("127.0.0.1:58102", "127.0.0.1:5432"), 6)],
            },
            Case {
                name: "ipv6 lines in the ipv4 table are skipped",
                v6: false,
                text: "   0: 00000000000000000000000001000000:18EB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 0 10 -1".to_owned(),
                want: vec![],
            },
            Case {
                name: "ipv4 lines in the ipv6 table are skipped",
                v6: true,
                text: "   0: 0100007F:E2F6 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0 20 4 30 10 -1".to_owned(),
                want: vec![],
            },
        ];
        for case in cases {
            assert_eq!(
                parse_proc_net_tcp(&case.text, case.v6),
                case.want,
                "case: {}",
                case.name
            );
        }
    }

    #[test]
    fn parser_never_panics_on_truncated_or_odd_text() {
        let line = "   0: 0000000000000000FFFF00000100007F:18EB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 0 10 -1 é";
        for end in 0..=line.len() {
            if let Some(prefix) = line.get(..end) {
                parse_proc_net_tcp(prefix, true);
                parse_proc_net_tcp(prefix, false);
            }
        }
        for odd in ["::::", ":", "0: :", "0: é:é é:é 01", "\u{0}\n\r\n"] {
            assert!(parse_proc_net_tcp(odd, true).is_empty(), "{odd:?}");
            assert!(parse_proc_net_tcp(odd, false).is_empty(), "{odd:?}");
        }
    }
    #[test]
    fn a_non_ascii_character_inside_an_ipv6_address_is_a_line_that_does_not_parse() {
        // Found by the proc_net_tcp fuzz target: 32 bytes, a two-byte character across the
        // first word's end.
        let address = format!("0000000\u{239}{}", "0".repeat(23));
        assert_eq!(address.len(), 32);
        let line = format!(
            "   0: {address}:18EB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000   100        0 123 1"
        );
        assert!(parse_proc_net_tcp(&line, true).is_empty());
        // The same line with an ASCII address parses.
        let ascii = line.replace(&address, &"0".repeat(32));
        assert_eq!(parse_proc_net_tcp(&ascii, true).len(), 1);
    }
}
