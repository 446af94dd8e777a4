//! `[store]`: where budgets live (this process, or Redis shared by every replica), and
//! what happens when a shared store fails.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[store]`: where budgets live, and what happens when a shared store fails.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreConfig {
    /// "memory" (this process only), "redis" (one Redis shared by every replica) or
    /// "redis-cluster" (a Redis Cluster shared by every replica).
    pub kind: String,
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` for TLS.
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`kind = "redis-cluster"`), each a `redis://` or
    /// `rediss://` URL; the rest of the cluster is learnt from them.
    pub redis_urls: Vec<String>,
    /// Prefix of every Redis key hubgate writes, so several deployments can share a Redis.
    pub key_prefix: String,
    /// "local_share" (serve each budget's share `limit / replicas` from memory) or
    /// "fail_closed" (answer 503) while Redis cannot be reached.
    pub on_failure: String,
    /// How many hubgate replicas share the budgets; sizes the local share.
    pub replicas: u32,
    /// Longest one Redis command may take before it counts as failed.
    pub command_timeout_ms: u64,
    /// How long Redis may keep failing while it is still reached (commands past the
    /// timeout, OOM, READONLY, BUSY) before the store degrades; until then calls wait and
    /// try again. 0: the first such failure degrades.
    pub degrade_after_ms: u64,
    /// Longest one connection attempt to Redis may take.
    pub connect_timeout_ms: u64,
    /// How often a degraded store checks whether Redis is back.
    pub reconnect_interval_ms: u64,
    /// PEM file of the CA(s) that signed Redis's certificate, for a `rediss://` URL on a
    /// private CA; when set, Redis's certificate is checked against these alone.
    pub ca_file: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: "memory".into(),
            redis_url: String::new(),
            redis_urls: Vec::new(),
            key_prefix: "hubgate".into(),
            on_failure: "local_share".into(),
            replicas: 1,
            command_timeout_ms: 250,
            degrade_after_ms: 1_000,
            connect_timeout_ms: 1_000,
            reconnect_interval_ms: 500,
            ca_file: String::new(),
        }
    }
}

impl StoreConfig {
    /// Whether budgets are shared through Redis (one node or a cluster).
    pub fn is_redis(&self) -> bool {
        self.kind == "redis" || self.is_redis_cluster()
    }

    /// Whether budgets are shared through a Redis Cluster.
    pub fn is_redis_cluster(&self) -> bool {
        self.kind == "redis-cluster"
    }

    /// Whether Redis is reached over TLS (every seed node's URL is `rediss://`).
    fn uses_tls(&self) -> bool {
        if self.is_redis_cluster() {
            !self.redis_urls.is_empty()
                && self.redis_urls.iter().all(|u| u.starts_with("rediss://"))
        } else {
            self.is_redis() && self.redis_url.starts_with("rediss://")
        }
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        if !matches!(self.kind.as_str(), "memory" | "redis" | "redis-cluster") {
            problems.add(
                "store.kind",
                format!(
                    "'{}' is not a store kind; use \"memory\" (one gateway), \"redis\" (shared by replicas) or \"redis-cluster\" (shared through a Redis Cluster)",
                    self.kind
                ),
            );
        }
        if !matches!(self.on_failure.as_str(), "local_share" | "fail_closed") {
            problems.add(
                "store.on_failure",
                format!(
                    "'{}' is not a failure mode; use \"local_share\" (serve each replica's share of every budget) or \"fail_closed\" (answer 503)",
                    self.on_failure
                ),
            );
        }
        if self.is_redis_cluster() {
            self.check_seed_nodes(problems);
        } else if self.is_redis() {
            if let Err(e) = check_redis_url(&self.redis_url) {
                problems.add("store.redis_url", e);
            }
        } else if !self.redis_url.is_empty() {
            problems.add(
                "store.redis_url",
                "is set but store.kind is not \"redis\"; set kind = \"redis\" or remove redis_url",
            );
        }
        if !self.is_redis_cluster() && !self.redis_urls.is_empty() {
            problems.add(
                "store.redis_urls",
                "is set but store.kind is not \"redis-cluster\"; set kind = \"redis-cluster\" or remove redis_urls",
            );
        }
        if self.degrade_after_ms > 60_000 {
            problems.add(
                "store.degrade_after_ms",
                format!(
                    "must be between 0 and 60000 milliseconds, not {}",
                    self.degrade_after_ms
                ),
            );
        }
        if !self.ca_file.is_empty() {
            if !self.uses_tls() {
                problems.add(
                    "store.ca_file",
                    "is only used for TLS to Redis: set kind = \"redis\" and a rediss:// redis_url (or kind = \"redis-cluster\" and rediss:// redis_urls), or remove ca_file",
                );
            } else if !Path::new(&self.ca_file).is_file() {
                problems.add(
                    "store.ca_file",
                    format!("'{}' is not a readable file", self.ca_file),
                );
            }
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        {
            problems.add(
                "store.key_prefix",
                format!(
                    "'{}' is not a usable key prefix; use 1 to 64 letters, digits or - _ . : / (braces would break Redis Cluster hash tags)",
                    self.key_prefix
                ),
            );
        }
        if !(1..=1_000).contains(&self.replicas) {
            problems.add(
                "store.replicas",
                format!(
                    "must be between 1 and 1000 (how many hubgate replicas share the budgets), not {}",
                    self.replicas
                ),
            );
        }
        for (key, value) in [
            ("store.command_timeout_ms", self.command_timeout_ms),
            ("store.connect_timeout_ms", self.connect_timeout_ms),
            ("store.reconnect_interval_ms", self.reconnect_interval_ms),
        ] {
            if value == 0 || value > 60_000 {
                problems.add(
                    key,
                    format!("must be between 1 and 60000 milliseconds, not {value}"),
                );
            }
        }
    }
}

impl StoreConfig {
    /// `redis_urls` for a cluster: at least one seed, each usable, all with one scheme
    /// (the client speaks TLS to every node or to none), and no `redis_url` beside them.
    fn check_seed_nodes(&self, problems: &mut Problems) {
        if !self.redis_url.is_empty() {
            problems.add(
                "store.redis_url",
                "is not used with kind = \"redis-cluster\"; list the cluster's seed nodes in redis_urls instead",
            );
        }
        if self.redis_urls.is_empty() {
            problems.add(
                "store.redis_urls",
                "is required when store.kind = \"redis-cluster\"; list one or more seed nodes, e.g. [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]",
            );
        }
        for (i, url) in self.redis_urls.iter().enumerate() {
            if let Err(e) = check_redis_url(url) {
                problems.add(format!("store.redis_urls.{i}"), e);
            }
        }
        let tls = self
            .redis_urls
            .iter()
            .filter(|u| u.starts_with("rediss://"))
            .count();
        if tls != 0 && tls != self.redis_urls.len() {
            problems.add(
                "store.redis_urls",
                "mixes redis:// and rediss:// seed nodes; a cluster is reached over TLS on every node or on none",
            );
        }
    }
}

/// Accepts `redis://` and `rediss://` URLs the Redis client can use.
fn check_redis_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err(
            "is required when store.kind = \"redis\"; e.g. \"redis://127.0.0.1:6379\" or \"rediss://:password@redis.internal:6380\"".into(),
        );
    }
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        return Err(
            "must start with redis:// or rediss:// (TLS), e.g. \"redis://127.0.0.1:6379\"".into(),
        );
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!("is not a usable Redis URL ({e}); e.g. \"redis://user:password@host:6379/0\"")
    })
}
