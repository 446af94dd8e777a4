//! `[retry]`: how many times, how soon and how often hubgate sends a failed call again.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[retry]` in config.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Retries after the first try; 0 turns retrying off.
    pub max_retries: u32,
    /// Backoff before retry n is drawn uniformly from 0 to `base_delay_ms * 2^n`, capped.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Least wait after a 423 Locked (HubSpot asks for at least 2 s).
    pub locked_delay_ms: u64,
    /// Request bodies up to this size are kept for replay; larger ones stream and are
    /// never retried.
    pub max_body_bytes: usize,
    /// Bytes of request bodies kept for replay over all calls at once; a body that finds
    /// no room streams and is never retried.
    pub max_buffered_bytes: usize,
    /// Per owner, retries may add at most this share (percent) of recent first tries...
    pub budget_percent: u32,
    /// ...plus this many per second, so a quiet owner can still retry.
    pub budget_min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 4,
            base_delay_ms: 100,
            max_delay_ms: 10_000,
            locked_delay_ms: 2_000,
            max_body_bytes: 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            budget_percent: 20,
            budget_min_per_second: 5,
        }
    }
}

impl RetryConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.base_delay_ms == 0 {
            problems.add("retry.base_delay_ms", "must be greater than 0");
        }
        if self.max_delay_ms < self.base_delay_ms {
            problems.add(
                "retry.max_delay_ms",
                format!(
                    "must be at least retry.base_delay_ms ({})",
                    self.base_delay_ms
                ),
            );
        }
        if self.budget_percent > 1000 {
            problems.add(
                "retry.budget_percent",
                "is a percentage of first tries; above 1000 it no longer limits a storm",
            );
        }
    }
}
