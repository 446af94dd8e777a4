//! Injected misbehaviour for API routes: transit latency, HubSpot's arrival queue, answer
//! latency, HubSpot-shaped 5xx answers and dropped connections.
//!
//! A request's path through them: `latency_ms` (+ jitter) on its way to HubSpot, then the
//! arrival queue (`arrival_service_us`), then it is counted in the rate-limit windows, then
//! `answer_latency_ms`, then the drop/5xx roll, then the answer. So the first two decide how
//! late an arrival lands after its send, the third only how late the answer comes back.

use std::time::Duration;

use rand::Rng as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Transit to HubSpot: a fixed delay before the request is counted in any window, so its
    /// arrival lags its send by this much.
    pub latency_ms: u64,
    /// Uniformly random extra transit delay in [0, latency_jitter_ms].
    pub latency_jitter_ms: u64,
    /// HubSpot's processing and the way back: a delay after the request was counted and
    /// before its answer (5xx and drops included) leaves.
    pub answer_latency_ms: u64,
    /// HubSpot's arrival queue: after transit, requests pass one at a time, first come first
    /// served, each taking this long at the head before it is counted; 0 turns it off. A
    /// burst of N is counted over N × this, later than it was sent. Paced from each
    /// request's own queueing instant, so sub-millisecond values hold on average despite
    /// tokio's 1 ms timer.
    pub arrival_service_us: u64,
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

    /// The transit delay, jitter drawn.
    pub(crate) fn delay(&self) -> Option<Duration> {
        let jitter = if self.latency_jitter_ms > 0 {
            rand::rng().random_range(0..=self.latency_jitter_ms)
        } else {
            0
        };
        let total = self.latency_ms.saturating_add(jitter);
        (total > 0).then(|| Duration::from_millis(total))
    }

    pub(crate) fn answer_delay(&self) -> Option<Duration> {
        (self.answer_latency_ms > 0).then(|| Duration::from_millis(self.answer_latency_ms))
    }

    pub(crate) fn arrival_service(&self) -> Duration {
        Duration::from_micros(self.arrival_service_us)
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
