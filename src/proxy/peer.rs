//! What the listener knows about a caller's connection, attached to each of its requests:
//! the caller's address and the address of hubgate it reached.

use std::net::SocketAddr;
use std::sync::Arc;

/// The caller's socket address, attached by the server to each request, with its IP
/// address as text: a caller without `X-Hubgate-Caller` is named by it, and formatting it
/// once per connection spares every call on it.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    /// `addr`'s IP address as text.
    pub ip: Arc<str>,
}

impl PeerAddr {
    pub fn new(addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            addr,
            ip: addr.ip().to_string().into(),
        }
    }
}

/// hubgate's own address as the caller reached it, attached by the server to each request.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);
