//! `[store]` as the Redis store reads it, and what it does while Redis is away.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::StoreConfig;

/// What a degraded store does with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Serve each budget's share (`limit / replicas`) from memory.
    LocalShare,
    /// Refuse with 503.
    FailClosed,
}

/// Settings of a Redis store, from `[store]`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// What to do while Redis is unreachable.
    pub on_failure: OnFailure,
    /// Replicas sharing the budgets; divides the local share.
    pub replicas: u32,
    /// Bound on one Redis command.
    pub command_timeout: Duration,
    /// How long Redis may keep failing (no answer in time, a refusal of the whole server)
    /// before the store degrades; meanwhile reservations try again shortly.
    pub degrade_after: Duration,
    /// Bound on one connection attempt.
    pub connect_timeout: Duration,
    /// Period of the prober while degraded.
    pub reconnect_interval: Duration,
    /// PEM CA bundle that alone is trusted for a `rediss://` URL; `None`: the public roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisSettings {
    /// The settings `[store]` describes (which must be valid).
    pub fn from_config(config: &StoreConfig) -> RedisSettings {
        RedisSettings {
            url: config.redis_url.clone(),
            key_prefix: config.key_prefix.clone(),
            on_failure: if config.on_failure == "fail_closed" {
                OnFailure::FailClosed
            } else {
                OnFailure::LocalShare
            },
            replicas: config.replicas.max(1),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            degrade_after: Duration::from_millis(config.degrade_after_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            reconnect_interval: Duration::from_millis(config.reconnect_interval_ms),
            ca_file: (!config.ca_file.is_empty()).then(|| config.ca_file.clone().into()),
        }
    }
}

impl RedisSettings {
    /// A connection to `url`, made lazily: a Redis that is down at start only makes the
    /// first command find it unreachable. Budgets and OAuth installs each hold one.
    pub fn connection(&self) -> anyhow::Result<ConnectionManager> {
        let client = match &self.ca_file {
            None => redis::Client::open(self.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("[store] ca_file: reading {}: {e}", path.display())
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(self.url.as_str(), certificates)
            }
        }
        .map_err(|e| anyhow::anyhow!("[store] redis_url: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            // Reconnect attempts are cheap and the prober paces recovery; keep the manager's
            // own backoff short so a returning Redis is used at once.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.reconnect_interval);
        ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| anyhow::anyhow!("[store] redis_url: {e}"))
    }
}
