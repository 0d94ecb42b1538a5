//! Properties of every parser that reads outside input, on generated input: none panics, what
//! each keeps is bounded by what it read, and text rolecall writes parses back to the same
//! value. The fuzz targets in `fuzz/` check the same entry points (`rolecall::fuzzing`, which
//! asserts the bounds and round trips itself) for far longer; these run on every test run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use redis::Value;
use rolecall::fuzzing;

/// A mount point: absolute, with the characters mountinfo escapes (space, tab, newline,
/// backslash) among ordinary ones.
fn mount_point() -> impl Strategy<Value = String> {
    "(/[a-z0-9 \t\n\\\\._-]{1,12}){1,4}"
}

/// A path as the kernel prints it in mountinfo: space, tab, newline and backslash as `\NNN`.
fn escape_mount(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// A RESP value as a server could send it, up to three levels deep.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,40}".prop_map(Value::SimpleString),
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(Value::BulkString),
        "(ip|port|runid|flags|name|config-epoch|master|slave|connected|message|\\+switch-master)"
            .prop_map(|s| Value::BulkString(s.into_bytes())),
        "[0-9]{1,6}".prop_map(|s| Value::BulkString(s.into_bytes())),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..6).prop_map(Value::Map),
            proptest::collection::vec(inner, 0..6).prop_map(Value::Set),
        ]
    })
}

/// How many values and bytes of text `v` holds: what rolecall may keep of it is no more.
fn size(v: &Value) -> (usize, usize) {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(size).fold((1, 0), add),
        Value::Map(kv) => kv
            .iter()
            .flat_map(|(k, v)| [size(k), size(v)])
            .fold((1, 0), add),
        Value::BulkString(b) => (1, b.len()),
        Value::SimpleString(s) => (1, s.len()),
        _ => (1, 24),
    }
}

fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0 + b.0, a.1 + b.1)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// A host as Sentinel announces one: an IPv4 or IPv6 address, or a DNS name.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
    ]
}

/// The plain form rolecall keeps a host in: an IPv4-mapped IPv6 address is its IPv4 address.
fn plain(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or(v6.to_string(), |v4| v4.to_string()),
        _ => host.to_string(),
    }
}

/// A `/proc/net/tcp{,6}` line for an ESTABLISHED connection, as `tcp4_seq_show` and
/// `tcp6_seq_show` print it: each 32-bit word of the address in `%08X` of its host-order value.
fn proc_line(slot: usize, local: SocketAddr, remote: SocketAddr, inode: u64) -> String {
    let endpoint = |sa: SocketAddr| {
        let octets = match sa.ip() {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        let words: String = octets
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        format!("{words}:{:04X}", sa.port())
    };
    format!(
        "{slot:4}: {} {} 01 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 {}",
        endpoint(local),
        endpoint(remote),
        "0000000000000000 20 4 30 10 -1"
    )
}

/// One `SOCK_DIAG_BY_FAMILY` message holding an `inet_diag_msg` (linux/inet_diag.h) for an
/// IPv4 connection in `state`.
fn diag_message(seq: u32, state: u8, local: SocketAddr, remote: SocketAddr, inode: u32) -> Vec<u8> {
    let ip = |sa: SocketAddr| match sa.ip() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let mut payload = vec![libc::AF_INET as u8, state, 0, 0];
    payload.extend(local.port().to_be_bytes());
    payload.extend(remote.port().to_be_bytes());
    payload.extend(ip(local));
    payload.extend([0; 12]);
    payload.extend(ip(remote));
    payload.extend([0; 12]);
    // Interface, cookie, expires, rqueue, wqueue, uid, inode.
    for word in [0, u32::MAX, u32::MAX, 0, 0, 0, 1000, inode] {
        payload.extend(word.to_ne_bytes());
    }
    let mut message = Vec::new();
    message.extend((16 + payload.len() as u32).to_ne_bytes());
    message.extend(20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
    message.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
    message.extend(seq.to_ne_bytes());
    message.extend(0u32.to_ne_bytes());
    message.extend(payload);
    message
}

fn v4_socket() -> impl Strategy<Value = SocketAddr> {
    (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(ip), port))
}

fn socket() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// `::ffff:a.b.c.d` as the parsers give it: `a.b.c.d`.
fn normalised(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(
        match sa.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        },
        sa.port(),
    )
}

proptest! {
    #[test]
    fn agent_requests_and_replies_stay_one_bounded_line(
        bytes in proptest::collection::vec(any::<u8>(), 0..400)
    ) {
        fuzzing::agent_line(&bytes);
    }

    #[test]
    fn an_agent_send_line_selects_the_group_it_names(
        name in "[A-Za-z0-9_.-]{1,40}", pad in "[ \t]{0,3}", end in "(\n|\r\n|)"
    ) {
        let line = format!("{pad}{name}{pad}{end}trailing");
        let expected = if end.is_empty() { format!("{name}{pad}trailing") } else { name.clone() };
        prop_assert_eq!(fuzzing::agent_line(line.as_bytes()).group, Some(expected));
    }

    #[test]
    fn maintenance_requests_never_panic_and_keep_a_bounded_note(
        header in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        fuzzing::http_maintenance(&header, &body);
    }

    #[test]
    fn only_the_bearer_token_is_authorized(
        scheme in "[bB][eE][aA][rR][eE][rR]", pad in " {0,2}", other in "[A-Za-z0-9_-]{1,20}"
    ) {
        let header = format!("{pad}{scheme} {}{pad}", fuzzing::MAINTENANCE_TOKEN);
        prop_assert!(fuzzing::http_maintenance(header.as_bytes(), b"").0);
        prop_assume!(other != fuzzing::MAINTENANCE_TOKEN);
        let wrong = format!("{scheme} {other}");
        prop_assert!(!fuzzing::http_maintenance(wrong.as_bytes(), b"").0);
        let basic = format!("Basic {}", fuzzing::MAINTENANCE_TOKEN);
        prop_assert!(!fuzzing::http_maintenance(basic.as_bytes(), b"").0);
    }

    #[test]
    fn address_text_never_panics_and_what_parses_prints_back(s in "\\PC{0,60}") {
        fuzzing::address(&s);
    }

    #[test]
    fn an_address_written_as_host_port_parses_to_its_host_and_port(
        host in host(), port in any::<u16>()
    ) {
        let text = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        prop_assert_eq!(fuzzing::address(&text), Some((plain(&host), port)));
    }

    #[test]
    fn configuration_text_never_panics(s in "\\PC{0,300}") {
        let _ = fuzzing::config_toml(&s);
    }

    #[test]
    fn the_example_configuration_with_one_line_replaced_never_panics(
        at in any::<prop::sample::Index>(),
        line in "[a-z_]{1,16} = (\"\\PC{0,30}\"|[0-9]{1,12}|true|\\[\\])"
    ) {
        let example = include_str!("../rolecall.example.toml");
        let mut lines: Vec<&str> = example.lines().collect();
        let i = at.index(lines.len());
        lines[i] = &line;
        let _ = fuzzing::config_toml(&lines.join("\n"));
    }

    #[test]
    fn proc_net_tcp_text_never_panics(s in "\\PC{0,400}", v6 in any::<bool>()) {
        fuzzing::proc_net_tcp(&s, v6);
    }

    #[test]
    fn proc_net_tcp_lines_parse_to_the_connections_the_kernel_printed(
        conns in proptest::collection::vec((socket(), socket(), any::<u64>()), 0..8),
        v6 in any::<bool>()
    ) {
        let v6_addr = |sa: SocketAddr| match sa {
            SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            v6 => v6,
        };
        let v4_addr = |sa: SocketAddr| match sa.ip() {
            IpAddr::V6(ip) => {
                let v4 = ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST);
                SocketAddr::new(IpAddr::V4(v4), sa.port())
            }
            IpAddr::V4(_) => sa,
        };
        let conns: Vec<(SocketAddr, SocketAddr, u64)> = conns
            .into_iter()
            .map(|(l, r, inode)| {
                if v6 {
                    (v6_addr(l), v6_addr(r), inode)
                } else {
                    (v4_addr(l), v4_addr(r), inode)
                }
            })
            .collect();
        let mut text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
            retrnsmt   uid  timeout inode\n"
            .to_string();
        for (i, (l, r, inode)) in conns.iter().enumerate() {
            text.push_str(&proc_line(i, *l, *r, *inode));
            text.push('\n');
        }
        let parsed: Vec<(SocketAddr, SocketAddr, u64)> = fuzzing::proc_net_tcp(&text, v6)
            .into_iter()
            .map(|(c, inode)| (c.local, c.remote, inode))
            .collect();
        let expected: Vec<(SocketAddr, SocketAddr, u64)> =
            conns.iter().map(|(l, r, i)| (normalised(*l), normalised(*r), *i)).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn mountinfo_text_never_panics(s in "\\PC{0,400}") {
        fuzzing::mountinfo(&s);
    }

    #[test]
    fn a_cgroup_mount_printed_as_the_kernel_prints_it_is_found_at_its_mount_point(
        mounts in proptest::collection::vec(
            (mount_point(), prop_oneof![Just("cgroup2"), Just("cgroup"), Just("tmpfs")], any::<bool>()),
            0..6,
        )
    ) {
        let mut text = String::new();
        for (i, (mount, fs, systemd)) in mounts.iter().enumerate() {
            let options = if *systemd { "rw,name=systemd" } else { "rw,cpu" };
            text.push_str(&format!(
                "{} 1 0:{i} / {} rw,relatime shared:{i} - {fs} {fs} {options}\n",
                20 + i,
                escape_mount(mount)
            ));
        }
        // The first of each kind, v2 first (every line here mounts its hierarchy's root).
        let first = |v2: bool| mounts.iter().find(|(_, fs, systemd)| {
            if v2 { *fs == "cgroup2" } else { *fs == "cgroup" && *systemd }
        });
        let expected: Vec<(bool, std::path::PathBuf)> = [true, false]
            .into_iter()
            .filter_map(|v2| first(v2).map(|(m, _, _)| (v2, std::path::PathBuf::from(m))))
            .collect();
        prop_assert_eq!(fuzzing::mountinfo(&text), expected);
    }

    #[test]
    fn sock_diag_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::sock_diag(&bytes);
    }

    #[test]
    fn a_dump_datagram_gives_its_established_connections_and_confirms_the_first(
        records in
            proptest::collection::vec((v4_socket(), v4_socket(), any::<u32>(), 1u8..12), 1..6)
    ) {
        let datagram: Vec<u8> = records
            .iter()
            .flat_map(|(l, r, inode, state)| diag_message(1, *state, *l, *r, *inode))
            .collect();
        let (table, parsed, confirmed) = fuzzing::sock_diag(&datagram);
        prop_assert!(parsed);
        let got: Vec<(SocketAddr, SocketAddr, u64)> =
            table.iter().map(|(c, inode)| (c.local, c.remote, *inode)).collect();
        let established: Vec<(SocketAddr, SocketAddr, u64)> = records
            .iter()
            .filter(|r| r.3 == 1)
            .map(|(l, r, inode, _)| (*l, *r, u64::from(*inode)))
            .collect();
        prop_assert_eq!(got, established);
        // The answer to lookup 1 is the first record: confirmed when it is ESTABLISHED.
        prop_assert_eq!(confirmed, Some(records[0].3 == 1));
    }

    #[test]
    fn resp_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Some(v) = fuzzing::resp(&bytes) {
            fuzzing::resp_sentinel(&v);
            fuzzing::resp_server(&v);
        }
    }

    #[test]
    fn what_rolecall_keeps_of_a_reply_is_bounded_by_the_reply(v in value()) {
        let (values, bytes) = size(&v);
        for kept in [fuzzing::resp_sentinel(&v), fuzzing::resp_server(&v)] {
            prop_assert!(kept.items <= 3 * values + 8, "{kept:?} of {values} values");
            prop_assert!(kept.bytes <= 4 * bytes + 200, "{kept:?} of {bytes} bytes");
        }
    }

    #[test]
    fn event_payloads_never_panic(channel in "[+-]?[a-z-]{0,30}", payload in "\\PC{0,120}") {
        fuzzing::event(&channel, &payload);
    }

    #[test]
    fn a_master_address_reply_is_read_as_that_server(host in host(), port in any::<u16>()) {
        let reply = Value::Array(vec![bulk(&host), bulk(&port.to_string())]);
        prop_assert_eq!(fuzzing::master_addr(&reply), Some((plain(&host), port)));
    }
}
