//! `[server]`: the listeners callers and operators connect to, and the bounds on what
//! callers send.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// The listeners callers and operators connect to, and the bounds on what callers send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address callers use as their HubSpot base URL.
    pub listen: String,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Largest total size of request headers (names + values) accepted; larger get 431.
    pub max_header_bytes: usize,
    /// A caller must finish sending request headers within this time.
    pub header_read_timeout_ms: u64,
    /// A caller's request body may pause at most this long while hubgate reads it; past
    /// it: 408, and nothing more of the call is sent upstream.
    pub body_idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: 256 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        if let Err(e) = parse_addr(&self.listen) {
            problems.add("server.listen", e);
        }
        if let Err(e) = parse_addr(&self.admin_listen) {
            problems.add("server.admin_listen", e);
        }
        if self.listen == self.admin_listen {
            problems.add(
                "server.admin_listen",
                "must differ from server.listen: the admin listener is a separate port",
            );
        }
        if self.max_body_bytes == 0 {
            problems.add("server.max_body_bytes", "must be greater than 0");
        }
        if self.max_header_bytes < 1024 {
            problems.add(
                "server.max_header_bytes",
                "must be at least 1024: HubSpot calls carry a bearer token and more",
            );
        }
        if self.header_read_timeout_ms == 0 {
            problems.add("server.header_read_timeout_ms", "must be greater than 0");
        }
        if self.body_idle_timeout_ms == 0 {
            problems.add("server.body_idle_timeout_ms", "must be greater than 0");
        }
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("'{value}' is not an address like 127.0.0.1:8080 or [::1]:8080"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_listeners_stay_on_loopback_unless_configured_otherwise() {
        let config = ServerConfig::default();
        for addr in [&config.listen, &config.admin_listen] {
            assert!(parse_addr(addr).unwrap().ip().is_loopback(), "{addr}");
        }
        assert!(
            !crate::config::InboundConfig::default().require_caller_key,
            "inbound auth is opt-in"
        );
    }
}
