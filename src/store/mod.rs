//! Where budget state lives: the store trait the pacer reserves through, what HubSpot's
//! answers teach a store (`Lesson`), and the two stores — this process's memory
//! (`memory`) or Redis shared by every replica (`redis`).

mod budget_store;
mod memory;
mod redis;

use std::sync::Arc;

use hubgate_engine::Limits;
use prometheus::IntGauge;

use crate::config::StoreConfig;

pub use budget_store::{apply_lesson, BudgetStore, BudgetView, Lesson, StoreFuture};
pub use memory::MemoryStore;
pub use redis::{Link, OnFailure, RedisSettings, RedisStore, StoreHealth};

/// The store `[store]` asks for: memory, or Redis shared by replicas (returned a second
/// time on its own, for `/readyz`). `degraded` is `hubgate_store_degraded` (always 0 for
/// memory). Must run inside the tokio runtime.
pub fn build(
    config: &StoreConfig,
    limits: Limits,
    degraded: IntGauge,
) -> anyhow::Result<(Arc<dyn BudgetStore>, Option<RedisStore>)> {
    if !config.is_redis() {
        return Ok((Arc::new(MemoryStore::new(limits)), None));
    }
    let store = RedisStore::new(RedisSettings::from_config(config), limits, degraded)?;
    Ok((Arc::new(store.clone()), Some(store)))
}
