//! `[coalesce]`: which waiting reads hubgate merges into one upstream call.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// HubSpot's cap on `inputs` in one batch read.
pub const HUBSPOT_MAX_BATCH: usize = 100;

/// `[coalesce]` in config.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct CoalesceConfig {
    /// Single-record CRM reads that would wait for budget go out together as batch reads.
    pub reads: bool,
    /// Identical GETs in flight at once share one upstream call.
    pub identical_gets: bool,
    /// Most reads carried by one batch read (50 with `propertiesWithHistory` whatever this says).
    pub max_batch: usize,
    /// Reads go alone while more than this share (percent) of an owner's burst window is
    /// free; below it they gather for one slot interval and ride batch reads. 0: only reads
    /// that would wait for a slot are merged.
    pub gather_below_free_percent: u32,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            reads: false,
            identical_gets: false,
            max_batch: HUBSPOT_MAX_BATCH,
            gather_below_free_percent: 50,
        }
    }
}

impl CoalesceConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.gather_below_free_percent > 100 {
            problems.add(
                "coalesce.gather_below_free_percent",
                "is a percentage of the burst window, 0 to 100",
            );
        }
        if !(1..=HUBSPOT_MAX_BATCH).contains(&self.max_batch) {
            problems.add(
                "coalesce.max_batch",
                format!(
                    "must be between 1 and {HUBSPOT_MAX_BATCH}: HubSpot refuses batch reads of more inputs"
                ),
            );
        }
    }
}
