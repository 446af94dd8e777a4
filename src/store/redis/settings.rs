//! `[store]` as the Redis store reads it, and what it does while Redis is away.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};

use super::link::Link;
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
    /// `redis://` or `rediss://` URL of one node (empty for a cluster).
    pub url: String,
    /// Seed nodes of a Redis Cluster; empty for one node.
    pub cluster_seeds: Vec<String>,
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
            cluster_seeds: if config.is_redis_cluster() {
                config.redis_urls.clone()
            } else {
                Vec::new()
            },
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
    /// A connection to `url` (or to the cluster its seeds name), made lazily: a Redis that
    /// is down at start only makes the first command find it unreachable. Budgets and
    /// OAuth installs each hold one.
    pub fn connection(&self) -> anyhow::Result<Link> {
        if !self.cluster_seeds.is_empty() {
            return self.cluster_connection().map(Link::Cluster);
        }
        self.node_connection().map(Link::Node)
    }

    /// The CA bundle of `ca_file`, for a TLS connection to a private CA's Redis.
    fn certificates(&self) -> anyhow::Result<Option<redis::TlsCertificates>> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("[store] ca_file: reading {}: {e}", path.display()))?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    fn cluster_connection(&self) -> anyhow::Result<redis::cluster_async::ClusterConnection> {
        let mut builder = ClusterClientBuilder::new(self.cluster_seeds.iter().map(String::as_str))
            // A master that stops answering is the store's to handle (per slot, see
            // `failover`); the client's own retries only bridge a MOVED or a refreshed slot
            // map, and stay well inside one command timeout.
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(u64::try_from(self.command_timeout.as_millis() / 4).unwrap_or(50));
        if let Some(certificates) = self.certificates()? {
            builder = builder.certs(certificates);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("[store] redis_urls: {e}"))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.command_timeout);
        Ok(client.get_pending_async_connection_with_config(config))
    }

    fn node_connection(&self) -> anyhow::Result<ConnectionManager> {
        let client = match self.certificates()? {
            None => redis::Client::open(self.url.as_str()),
            Some(certificates) => redis::Client::build_with_tls(self.url.as_str(), certificates),
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
