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
    /// A caller's whole request body must arrive within this time from when hubgate
    /// starts reading it, however steadily it trickles; past it: 408.
    pub body_read_timeout_ms: u64,
    /// An answer the caller does not read for this long (its socket accepts no bytes)
    /// closes the connection, and with it the upstream stream behind the answer.
    pub response_write_timeout_ms: u64,
    /// Caller connections open at once; one beyond it is answered 503 and closed.
    pub max_connections: usize,
    /// Connections the kernel queues before hubgate accepts them (capped by
    /// `net.core.somaxconn`), so a burst of new connections costs no SYN retries.
    pub listen_backlog: u32,
    /// Threads serving caller connections, each with its own runtime and upstream
    /// connection pool: `"auto"` one per core, or a number; 0: none, connections share the
    /// main runtime's threads.
    pub workers: Workers,
    /// A connection with no call in flight this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout_ms: u64,
    /// HTTP/2: a ping goes to a connection quiet for this long (0: none) ...
    pub h2_keep_alive_interval_ms: u64,
    /// ... and one not acknowledged within this long closes the connection.
    pub h2_keep_alive_timeout_ms: u64,
    /// On SIGTERM/SIGINT, `/readyz` answers 503 for this long while the listener still
    /// accepts, so load balancers stop sending before it closes.
    pub drain_ms: u64,
    /// After the drain, in-flight requests get this long to finish; a call is sent
    /// upstream only while its answer can come back (`[upstream] response_timeout_ms`)
    /// before this ends, others get 503 with nothing sent.
    pub shutdown_grace_ms: u64,
}

/// `[server] workers`: a number of worker threads, or `"auto"` for one per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Workers {
    Count(usize),
    Auto(Auto),
}

/// The one word `workers` takes besides a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auto {
    Auto,
}

impl Workers {
    /// How many worker threads to start; 0: none.
    pub fn threads(self) -> usize {
        match self {
            Workers::Count(count) => count,
            Workers::Auto(Auto::Auto) => {
                std::thread::available_parallelism().map_or(1, usize::from)
            }
        }
    }
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
            body_read_timeout_ms: 300_000,
            response_write_timeout_ms: 30_000,
            max_connections: 10_000,
            listen_backlog: 4096,
            workers: Workers::Auto(Auto::Auto),
            idle_timeout_ms: 120_000,
            h2_keep_alive_interval_ms: 20_000,
            h2_keep_alive_timeout_ms: 20_000,
            drain_ms: 5_000,
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
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn response_write_timeout(&self) -> Duration {
        Duration::from_millis(self.response_write_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
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
        if matches!(self.workers, Workers::Count(count) if count > 1024) {
            problems.add(
                "server.workers",
                "must be at most 1024 (0: none); more threads than cores only add switching",
            );
        }
        if self.header_read_timeout_ms == 0 {
            problems.add("server.header_read_timeout_ms", "must be greater than 0");
        }
        for (key, value) in [
            ("server.body_idle_timeout_ms", self.body_idle_timeout_ms),
            ("server.body_read_timeout_ms", self.body_read_timeout_ms),
            (
                "server.response_write_timeout_ms",
                self.response_write_timeout_ms,
            ),
            ("server.max_connections", self.max_connections as u64),
            ("server.listen_backlog", u64::from(self.listen_backlog)),
            ("server.idle_timeout_ms", self.idle_timeout_ms),
            (
                "server.h2_keep_alive_timeout_ms",
                self.h2_keep_alive_timeout_ms,
            ),
        ] {
            if value == 0 {
                problems.add(key, "must be greater than 0");
            }
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

    #[test]
    fn workers_are_one_per_core_by_default_and_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(ServerConfig::default().workers.threads(), cores);
        let parse = |toml: &str| toml::from_str::<ServerConfig>(toml).map(|c| c.workers.threads());
        assert_eq!(parse("workers = \"auto\"").unwrap(), cores);
        assert_eq!(parse("workers = 0").unwrap(), 0, "off when asked");
        assert_eq!(parse("workers = 3").unwrap(), 3);
        assert!(parse("workers = \"many\"").is_err());
        let mut problems = Problems::default();
        ServerConfig {
            workers: Workers::Count(1024),
            ..ServerConfig::default()
        }
        .check(&mut problems);
        assert!(problems.is_empty(), "{}", problems.summary());
        ServerConfig {
            workers: Workers::Count(1025),
            ..ServerConfig::default()
        }
        .check(&mut problems);
        let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["server.workers"]);
    }
}
