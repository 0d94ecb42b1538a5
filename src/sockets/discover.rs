//! The entry points: a [`NodeSelector`] in, the node's ESTABLISHED TCP connections out.
//!
//! How a discovery works:
//!
//! 1. Resolve the selector to running pids ([`pids`](super::pids)).
//! 2. Read the links in `/proc/PID/fd` of each pid; a link `socket:[INODE]` names a socket the
//!    process holds ([`fds`](super::fds)).
//! 3. List the ESTABLISHED TCP sockets of the network namespace of the first pid, with their
//!    inodes, by netlink or /proc ([`namespace`](super::namespace)).
//! 4. Keep the sockets whose inode one of the pids holds.
//!
//! So the cost is one `readlink` per fd plus, by netlink, one `recv` per 32 KiB of binary
//! records of the namespace's ESTABLISHED sockets; there is no syscall per socket. The daemon
//! narrows both: the dump carries a port filter ([`discover_to_ports`]), and
//! [`FdMemory`](super::FdMemory) lets [`discover_remembering`](super::discover_remembering)
//! skip the read of every fd while the candidate sockets are the ones it has seen.
//!
//! A caller that only cares about connections to a few remote ports (a message server's node
//! holds tens of thousands of client sockets and a handful of Redis connections) asks
//! [`discover_to_ports`]. Netlink then sends an `INET_DIAG_REQ_BYTECODE` filter with the dump
//! request ([`port_filter`](super::port_filter)), and the kernel formats and copies only the
//! sockets whose remote port is in the set; the walk of the hash table remains, and so does the
//! `readlink` of every fd the node holds. The /proc way applies the same filter after parsing,
//! so both ways give the same answer.

use std::collections::BTreeSet;

use super::connection::NodeSockets;
use super::error::DiscoverError;
use super::namespace::{Method, namespace_sockets, sockets_of};
use super::pids::{NodeSelector, node_pids};

/// Finds the established TCP connections of the node named by `selector`.
///
/// Blocking: it reads a few files under `/proc` and talks to the kernel over netlink (call it
/// from `spawn_blocking` in async code).
pub fn discover(selector: &NodeSelector) -> Result<NodeSockets, DiscoverError> {
    discover_with(selector, Method::Auto).map(|(sockets, _)| sockets)
}

/// [`discover`] with a chosen [`Method`]; also returns the method that gave the answer
/// ([`Method::Netlink`] or [`Method::Proc`], never [`Method::Auto`]).
///
/// For tests and benchmarks that compare the two ways; the daemon uses [`discover`].
pub fn discover_with(
    selector: &NodeSelector,
    method: Method,
) -> Result<(NodeSockets, Method), DiscoverError> {
    discover_to_ports_with(selector, &BTreeSet::new(), method)
}

/// [`discover`], keeping only the connections whose remote port is in `ports` (an empty set
/// keeps every connection).
///
/// By netlink the kernel does the filtering (an `INET_DIAG_REQ_BYTECODE` filter), so the
/// namespace's other sockets are neither formatted nor copied; by /proc the same filter is
/// applied after parsing. Both give the same answer.
pub fn discover_to_ports(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
) -> Result<NodeSockets, DiscoverError> {
    discover_to_ports_with(selector, ports, Method::Auto).map(|(sockets, _)| sockets)
}

/// [`discover_to_ports`] with a chosen [`Method`], like [`discover_with`].
pub fn discover_to_ports_with(
    selector: &NodeSelector,
    ports: &BTreeSet<u16>,
    method: Method,
) -> Result<(NodeSockets, Method), DiscoverError> {
    match node_pids(selector)? {
        Some((pids, missing)) => sockets_of(pids, method, ports, || missing.clone()),
        None => namespace_sockets(method, ports),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sockets::connection::Connection;
    use crate::sockets::netlink::{NetlinkError, dump_established, dump_filtered};
    use crate::sockets::pids::{parse_stat, proc_path};
    use crate::sockets::port_filter::{PortMatch, port_filter};
    use crate::sockets::testutil::{Pair, Reaped, addr, connected_child, our_pid};

    fn discovered(selector: &NodeSelector) -> NodeSockets {
        discover(selector).unwrap_or_else(|err| panic!("discover({selector}) failed: {err}"))
    }

    fn exited_pid() -> u32 {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        pid
    }

    #[test]
    fn pid_selector_finds_our_own_ipv4_connection_from_both_ends() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let found = discovered(&NodeSelector::Pid(our_pid()));
        assert_eq!(found.pids, vec![our_pid()]);
        assert!(
            found.connections.contains(&pair.client_side()),
            "{:?} not in {found:?}",
            pair.client_side()
        );
        assert!(
            found.connections.contains(&pair.server_side()),
            "{:?} not in {found:?}",
            pair.server_side()
        );
        assert!(found.connections.is_sorted());
    }

    #[test]
    fn pid_selector_finds_an_ipv6_loopback_connection() {
        let pair = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let found = discovered(&NodeSelector::Pid(our_pid()));
        let client = pair.client_side();
        assert!(client.local.is_ipv6() && client.remote.is_ipv6());
        assert!(
            found.connections.contains(&client),
            "{client:?} not in {found:?}"
        );
        assert!(found.connections.contains(&pair.server_side()));
    }

    #[test]
    fn ipv4_reaching_a_dual_stack_listener_is_reported_as_plain_ipv4() {
        let pair = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        let raw_server_local = pair.server.local_addr().unwrap();
        assert!(
            raw_server_local.is_ipv6(),
            "the accepted socket should be an IPv6 socket carrying IPv4, got {raw_server_local}"
        );
        let port = raw_server_local.port();
        let found = discovered(&NodeSelector::Pid(our_pid()));
        let want = Connection {
            local: addr(&format!("127.0.0.1:{port}")),
            remote: pair.client.local_addr().unwrap(),
        };
        assert_eq!(want, pair.server_side());
        assert!(
            found.connections.contains(&want),
            "{want:?} not in {found:?}"
        );
        let mapped = found.connections.iter().find(|c| {
            [c.local, c.remote].iter().any(|a| match a {
                SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
                SocketAddr::V4(_) => false,
            })
        });
        assert_eq!(mapped, None, "a v4-mapped address was not normalised");
    }

    #[test]
    fn pid_selector_reports_an_exited_process_as_missing() {
        let pid = exited_pid();
        match discover(&NodeSelector::Pid(pid)) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert_eq!(message, format!("no process with pid {pid}"));
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn pid_selector_reports_a_zombie_as_missing() {
        let child = Reaped(Command::new("true").spawn().expect("spawn true"));
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat =
                std::fs::read(proc_path(pid, "stat")).expect("an unreaped child has /proc/PID");
            if parse_stat(&stat).is_some_and(|(_, state)| state == b'Z') {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} did not exit within 10s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        match discover(&NodeSelector::Pid(pid)) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert!(message.contains("zombie"), "{message}")
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn pid_file_selector_follows_the_file() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.pid");
        let selector = NodeSelector::PidFile(path.clone());

        match discover(&selector) {
            Err(DiscoverError::NodeMissing(message)) => assert_eq!(
                message,
                format!("pid file {}: No such file or directory", path.display())
            ),
            other => panic!("missing file: expected NodeMissing, got {other:?}"),
        }

        let cases: [(&str, &str); 5] = [
            ("", "empty"),
            ("  \n", "empty"),
            ("not a pid\n", "does not hold a pid"),
            ("0\n", "does not hold a pid"),
            ("-12\n", "does not hold a pid"),
        ];
        for (content, want) in cases {
            std::fs::write(&path, content).unwrap();
            match discover(&selector) {
                Err(DiscoverError::NodeMissing(message)) => {
                    assert!(message.contains(want), "{content:?}: {message}")
                }
                other => panic!("{content:?}: expected NodeMissing, got {other:?}"),
            }
        }

        let gone = exited_pid();
        std::fs::write(&path, format!("{gone}\n")).unwrap();
        match discover(&selector) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert!(message.contains(&format!("pid {gone}")), "{message}")
            }
            other => panic!("pid of an exited process: expected NodeMissing, got {other:?}"),
        }

        let mut file = std::fs::File::create(&path).unwrap();
        write!(file, "  {}\n\n", our_pid()).unwrap();
        drop(file);
        let found = discovered(&selector);
        assert_eq!(found.pids, vec![our_pid()]);
        assert!(found.connections.contains(&pair.client_side()), "{found:?}");
    }

    #[test]
    fn process_selector_matches_our_own_comm() {
        let pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let comm = comm.trim_end_matches('\n');
        let found = discovered(&NodeSelector::Process(comm.to_owned()));
        assert!(found.pids.contains(&our_pid()), "{comm}: {found:?}");
        assert!(found.connections.contains(&pair.client_side()), "{found:?}");

        // The test binary's name (rolecall-<hash>) is longer than 15 bytes, so the kernel
        // truncated it; a longer name with the same first 15 bytes matches too.
        if comm.len() == 15 {
            let longer = format!("{comm}-and-more");
            let found = discovered(&NodeSelector::Process(longer));
            assert!(found.pids.contains(&our_pid()));
        }
    }

    #[test]
    fn process_selector_without_a_match_reports_missing() {
        let name = "no-such-proc-x";
        match discover(&NodeSelector::Process(name.to_owned())) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert_eq!(message, "no process named no-such-proc-x")
            }
            other => panic!("expected NodeMissing, got {other:?}"),
        }
    }

    #[test]
    fn namespace_selector_lists_a_childs_connection_but_none_of_ours() {
        let (child, childs, _accepted) = connected_child();
        let ours = Connection {
            local: childs.remote,
            remote: childs.local,
        };
        let own_pair = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));

        let found = discovered(&NodeSelector::Namespace);
        assert!(found.pids.is_empty());
        assert!(
            found.connections.contains(&childs),
            "{childs:?} not in {found:?}"
        );
        for own in [ours, own_pair.client_side(), own_pair.server_side()] {
            assert!(
                !found.connections.contains(&own),
                "our own {own:?} in {found:?}"
            );
        }

        let found = discovered(&NodeSelector::Pid(child.0.id()));
        assert_eq!(found.pids, vec![child.0.id()]);
        assert_eq!(found.connections, vec![childs]);
    }

    /// Runs `selector` filtered to `ports` by /proc, netlink, /proc until both /proc answers
    /// agree, and checks that netlink agreed too, like [`both_ways`].
    fn both_ways_to(selector: &NodeSelector, ports: &BTreeSet<u16>) -> NodeSockets {
        let mut last = None;
        for _ in 0..50 {
            let before = discover_to_ports_with(selector, ports, Method::Proc).unwrap();
            let netlink = discover_to_ports_with(selector, ports, Method::Netlink).unwrap();
            let after = discover_to_ports_with(selector, ports, Method::Proc).unwrap();
            assert_eq!(
                (before.1, netlink.1, after.1),
                (Method::Proc, Method::Netlink, Method::Proc)
            );
            if before.0 == after.0 && netlink.0 == before.0 {
                return netlink.0;
            }
            last = Some((before.0, netlink.0, after.0));
        }
        let (before, netlink, after) = last.unwrap();
        panic!(
            "{selector} to {ports:?}: netlink never agreed with a stable /proc\n\
             proc before: {before:?}\nnetlink: {netlink:?}\nproc after: {after:?}"
        );
    }

    #[test]
    fn a_port_filter_keeps_exactly_the_connections_to_those_remote_ports() {
        let v4 = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v4_other = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v6 = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let v6_other = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let mapped = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        // Remote ports: the listeners of v4, v6 and mapped (their client sides), and the client
        // port of v6_other (its server side, whose remote end is that client).
        let wanted = [
            v4.client_side(),
            v6.client_side(),
            mapped.client_side(),
            v6_other.server_side(),
        ];
        let set: BTreeSet<u16> = wanted.iter().map(|c| c.remote.port()).collect();
        assert_eq!(set.len(), 4);
        let mut want = wanted.to_vec();
        want.sort_unstable();
        let unwanted = [
            v4.server_side(),
            v4_other.client_side(),
            v4_other.server_side(),
            v6.server_side(),
            v6_other.client_side(),
            mapped.server_side(),
        ];
        let selector = NodeSelector::Pid(our_pid());

        // Only this test's listeners and client ports are in the set, so exactly these
        // connections of this process go to those ports, whatever other tests hold.
        let (by_proc, used) = discover_to_ports_with(&selector, &set, Method::Proc).unwrap();
        assert_eq!(used, Method::Proc);
        assert_eq!(by_proc.connections, want);
        assert!(want.iter().any(|c| c.remote.is_ipv6()) && want.iter().any(|c| c.remote.is_ipv4()));

        let all = discover_with(&selector, Method::Proc).unwrap().0;
        for connection in wanted.iter().chain(&unwanted) {
            assert!(
                all.connections.contains(connection),
                "{connection:?} not in {all:?}"
            );
        }

        if netlink_refused() {
            return;
        }
        let found = both_ways_to(&selector, &set);
        assert_eq!(found.connections, want);
        for connection in unwanted {
            assert!(!found.connections.contains(&connection));
        }
        let (found, used) = discover_to_ports_with(&selector, &set, Method::Auto).unwrap();
        assert_eq!((found.connections, used), (want.clone(), Method::Netlink));

        // Both layouts, straight from the kernel: only sockets to those ports come back.
        for how in [PortMatch::Equal, PortMatch::Range] {
            let table = dump_filtered(&port_filter(&set, how)).unwrap();
            for (connection, _) in &table {
                assert!(
                    set.contains(&connection.remote.port()),
                    "{how:?}: {connection:?}"
                );
            }
            for connection in &want {
                assert!(
                    table.iter().any(|(c, _)| c == connection),
                    "{how:?}: {connection:?} not in {table:?}"
                );
            }
        }

        // The kernel audits the program: one whose first `yes` is shorter than a port
        // comparison is refused, as `kernel_audit` models.
        let mut bad = port_filter(&set, PortMatch::Equal);
        bad[1] = 4;
        match dump_filtered(&bad) {
            Err(NetlinkError::Os { cause, .. }) => {
                assert_eq!(cause.raw_os_error(), Some(libc::EINVAL))
            }
            other => panic!("a bad program: expected EINVAL, got {other:?}"),
        }

        // The namespace selector filters the same way (our own sockets are left out).
        let found = both_ways_to(&NodeSelector::Namespace, &set);
        for connection in &found.connections {
            assert!(set.contains(&connection.remote.port()), "{connection:?}");
        }
    }

    /// Whether netlink sock_diag is refused here (a sandbox) and the environment allows the
    /// netlink half of a test to be skipped (`ROLECALL_TEST_ALLOW_NO_NETLINK=1`). Refused
    /// without that permission, the test fails: netlink is the path rolecall takes by default,
    /// and a run that never exercised it must not pass as one that did.
    fn netlink_refused() -> bool {
        let cause = match dump_established(&BTreeSet::new()) {
            Ok(_) => return false,
            Err(NetlinkError::Os { cause, .. })
                if matches!(
                    cause.raw_os_error(),
                    Some(
                        libc::EPERM
                            | libc::EACCES
                            | libc::EPROTONOSUPPORT
                            | libc::EAFNOSUPPORT
                            | libc::ENOENT
                    )
                ) =>
            {
                cause
            }
            Err(err) => panic!("netlink sock_diag failed: {err}"),
        };
        if std::env::var_os(ALLOW_NO_NETLINK).is_some_and(|v| v == "1") {
            eprintln!(
                "netlink sock_diag is refused here ({cause}); {ALLOW_NO_NETLINK}=1: \
                 only /proc is tested"
            );
            return true;
        }
        panic!(
            "netlink sock_diag is refused here ({cause}): run the tests where a process may \
             open NETLINK_SOCK_DIAG (outside a seccomp sandbox that refuses it), or set \
             {ALLOW_NO_NETLINK}=1 to test only the /proc path"
        )
    }

    /// The variable that lets a test skip its netlink half where netlink is refused.
    const ALLOW_NO_NETLINK: &str = "ROLECALL_TEST_ALLOW_NO_NETLINK";

    /// Runs `selector` by /proc, netlink, /proc until both /proc answers agree (other tests of
    /// this process open and close sockets meanwhile), and checks that netlink agreed too.
    fn both_ways(selector: &NodeSelector) -> NodeSockets {
        both_ways_to(selector, &BTreeSet::new())
    }

    #[test]
    fn netlink_and_proc_find_the_same_connections() {
        if netlink_refused() {
            return;
        }
        let v4 = Pair::connect("127.0.0.1:0", |port| addr(&format!("127.0.0.1:{port}")));
        let v6 = Pair::connect("[::1]:0", |port| addr(&format!("[::1]:{port}")));
        let mapped = Pair::connect("[::]:0", |port| addr(&format!("127.0.0.1:{port}")));
        assert!(mapped.server.local_addr().unwrap().is_ipv6());

        let found = both_ways(&NodeSelector::Pid(our_pid()));
        for pair in [&v4, &v6, &mapped] {
            for side in [pair.client_side(), pair.server_side()] {
                assert!(
                    found.connections.contains(&side),
                    "{side:?} not in {found:?}"
                );
            }
        }
        assert!(
            found
                .connections
                .iter()
                .all(|c| c.local.is_ipv4() == c.remote.is_ipv4())
        );

        let found = both_ways(&NodeSelector::Namespace);
        for pair in [&v4, &v6, &mapped] {
            for ours in [pair.client_side(), pair.server_side()] {
                assert!(
                    !found.connections.contains(&ours),
                    "our own {ours:?} in {found:?}"
                );
            }
        }

        let (_, used) = discover_with(&NodeSelector::Pid(our_pid()), Method::Auto).unwrap();
        assert_eq!(used, Method::Netlink);
        let (_, used) = discover_with(&NodeSelector::Namespace, Method::Auto).unwrap();
        assert_eq!(used, Method::Netlink);
    }

    /// Starts `script` (Python) in a new network namespace with loopback up, and waits for it
    /// to print `ready`. `None` if this machine cannot make namespaces (no root, no user
    /// namespaces, no `unshare` or `ip`).
    fn in_new_netns(script: &str) -> Option<Reaped> {
        use std::io::BufRead;
        let shell = format!("ip link set lo up && exec python3 -c '{script}'");
        for flags in ["-n", "-rn"] {
            let Ok(child) = Command::new("unshare")
                .args([flags, "sh", "-c", &shell])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            else {
                return None;
            };
            let mut child = Reaped(child);
            let stdout = child.0.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.trim() == "ready" => return Some(child),
                _ => continue,
            }
        }
        None
    }

    #[test]
    fn a_node_in_another_network_namespace_is_read_through_its_proc_tables() {
        let script = "import socket, time\n\
                      l = socket.create_server((\"127.0.0.1\", 0))\n\
                      c = socket.create_connection(l.getsockname())\n\
                      s, _ = l.accept()\n\
                      print(\"ready\", flush=True)\n\
                      time.sleep(30)\n";
        // The test suite runs as root (CI does); a machine that cannot make a namespace fails
        // here rather than passing untested.
        let child = in_new_netns(script).expect(
            "cannot create a network namespace: run the tests as root, or install util-linux \
             (unshare) and iproute2 (ip)",
        );
        let pid = child.0.id();
        let selector = NodeSelector::Pid(pid);

        let (found, used) = discover_with(&selector, Method::Auto).unwrap();
        assert_eq!(used, Method::Proc);
        assert_eq!(found.pids, vec![pid]);
        // Both ends of the child's loopback pair, which rolecall's namespace does not have.
        assert_eq!(found.connections.len(), 2, "{found:?}");
        let [a, b] = [found.connections[0], found.connections[1]];
        assert_eq!((a.local, a.remote), (b.remote, b.local), "{found:?}");

        match discover_with(&selector, Method::Netlink) {
            Err(DiscoverError::Unreadable(message)) => {
                assert!(message.contains("another network namespace"), "{message}")
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }
}
