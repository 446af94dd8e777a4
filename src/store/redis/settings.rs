//! `[store]` as the Redis store reads it, and what it does while Redis is away.

use std::time::Duration;

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
