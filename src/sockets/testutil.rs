//! Helpers shared by the tests of several parts: addresses, port sets, and real connected
//! sockets and children of this test process.

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::connection::{Connection, normalise};

pub(super) fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub(super) fn conn(local: &str, remote: &str) -> Connection {
    Connection {
        local: addr(local),
        remote: addr(remote),
    }
}

pub(super) fn ports(list: &[u16]) -> BTreeSet<u16> {
    list.iter().copied().collect()
}

/// A connected pair of sockets, both held by this test process.
pub(super) struct Pair {
    pub(super) client: TcpStream,
    pub(super) server: TcpStream,
    _listener: TcpListener,
}

impl Pair {
    pub(super) fn connect(listen_on: &str, connect_to: impl Fn(u16) -> SocketAddr) -> Pair {
        let listener = TcpListener::bind(listen_on)
            .unwrap_or_else(|err| panic!("cannot listen on {listen_on}: {err}"));
        let port = listener.local_addr().unwrap().port();
        let target = connect_to(port);
        let client = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("cannot connect to {target}: {err}"));
        let server = accept_within(&listener, Duration::from_secs(5));
        Pair {
            client,
            server,
            _listener: listener,
        }
    }

    pub(super) fn client_side(&self) -> Connection {
        Connection {
            local: normalise(self.client.local_addr().unwrap()),
            remote: normalise(self.client.peer_addr().unwrap()),
        }
    }

    pub(super) fn server_side(&self) -> Connection {
        Connection {
            local: normalise(self.server.local_addr().unwrap()),
            remote: normalise(self.server.peer_addr().unwrap()),
        }
    }
}

pub(super) fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection to {} within {limit:?}",
                    listener.local_addr().unwrap()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("accept failed: {err}"),
        }
    }
}

pub(super) fn our_pid() -> u32 {
    std::process::id()
}

/// Kills and reaps the child when the test ends, even by a panic.
pub(super) struct Reaped(pub(super) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A python3 child holding one loopback connection to a listener of this test, that
/// connection as the child sees it, and the test's end of it.
pub(super) fn connected_child() -> (Reaped, Connection, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
             time.sleep(30)\n",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("this test needs python3 on PATH");
    let accepted = accept_within(&listener, Duration::from_secs(10));
    let childs = Connection {
        local: accepted.peer_addr().unwrap(),
        remote: accepted.local_addr().unwrap(),
    };
    (child, childs, accepted)
}
