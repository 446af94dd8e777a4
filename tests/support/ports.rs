//! Ports are handed over, never released and bound again: a port bound to `127.0.0.1:0`
//! and dropped can be taken by anyone (another test's listener, an outgoing connection)
//! before the one meant to use it binds it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A loopback port that refuses connections and that nobody else can take while this is
/// kept: a socket bound to `127.0.0.1:0` that does not listen (connecting to it is
/// refused, as to a port nothing is bound to). `listen` makes it a listener on the same
/// port, for an upstream that comes up later.
#[derive(Debug)]
pub(crate) struct ClosedPort {
    socket: TcpSocket,
    pub(crate) addr: SocketAddr,
}

impl ClosedPort {
    pub(crate) fn new() -> ClosedPort {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().unwrap();
        ClosedPort { socket, addr }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts listening on the port held all along.
    pub(crate) fn listen(self) -> TcpListener {
        self.socket.listen(128).expect("listen on the held port")
    }
}

/// A port for a child process that must be told a fixed port and cannot be handed a
/// socket (redis-server, a `hubgate sim` that is killed and started again on the same
/// port). Picked at random below the kernel's ephemeral range, so no socket bound to port 0
/// and no outgoing connection, in this process or another, is ever given it. It may still
/// be taken by something else: the caller starts its process on it and, if that process
/// says the port is in use, asks for another.
pub(crate) fn candidate_port() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (low, high) = match (bounds.next().flatten(), bounds.next().flatten()) {
        (Some(low), Some(high)) => (low, high),
        _ => (32_768, 60_999),
    };
    // Thousands of ports below the range, or else above it; if the kernel hands out nearly
    // every port, any port (the retry on "in use" still holds; only a restart on the same
    // port could then lose a race).
    if low >= 2_024 {
        rand::random_range(low.saturating_sub(20_000).max(1_024)..low)
    } else if high <= 64_535 {
        rand::random_range(high + 1..=u16::MAX)
    } else {
        rand::random_range(1_024..=u16::MAX)
    }
}
