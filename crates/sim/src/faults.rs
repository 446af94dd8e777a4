//! Injected misbehaviour for API routes: latency, HubSpot-shaped 5xx answers and dropped connections.

use std::time::Duration;

use rand::Rng as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Fixed delay before every API answer.
    pub latency_ms: u64,
    /// Uniformly random extra delay in [0, latency_jitter_ms].
    pub latency_jitter_ms: u64,
    /// Probability (0..=1) of answering 500/502/503/504 instead of the real response.
    pub error_rate: f64,
    /// Probability (0..=1) of closing the connection without any answer.
    pub drop_rate: f64,
}

/// What the fault roll decided for one request.
pub(crate) enum FaultOutcome {
    Pass,
    Drop,
    Error(u16),
}

impl Faults {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.error_rate),
            "faults.error_rate must be within 0..=1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.drop_rate),
            "faults.drop_rate must be within 0..=1"
        );
        Ok(())
    }

    pub(crate) fn delay(&self) -> Option<Duration> {
        let jitter = if self.latency_jitter_ms > 0 {
            rand::rng().random_range(0..=self.latency_jitter_ms)
        } else {
            0
        };
        let total = self.latency_ms.saturating_add(jitter);
        (total > 0).then(|| Duration::from_millis(total))
    }

    pub(crate) fn roll(&self) -> FaultOutcome {
        let mut rng = rand::rng();
        // `random::<f64>()` is in [0, 1), so a rate of 1.0 always fires and 0.0 never does.
        if self.drop_rate > 0.0 && rng.random::<f64>() < self.drop_rate {
            return FaultOutcome::Drop;
        }
        if self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate {
            const CODES: [u16; 4] = [500, 502, 503, 504];
            return FaultOutcome::Error(CODES[rng.random_range(0..CODES.len())]);
        }
        FaultOutcome::Pass
    }
}
