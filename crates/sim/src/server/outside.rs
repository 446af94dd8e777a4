//! Outside consumers: background traffic that spends an owner's burst budget without passing
//! through the gateway, as other integrations of the same app do at HubSpot.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::state::Shared;
use crate::config::OutsideConfig;

/// Starts (or replaces, or with `per_window == 0` stops) the outside consumer of one owner.
/// Its arrivals are spaced evenly so each burst window sees `per_window` of them.
pub(crate) fn set_outside(shared: &Arc<Shared>, o: OutsideConfig) {
    let mut map = shared.outside.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = map.remove(&(o.app_id, o.portal_id)) {
        h.abort();
    }
    if o.per_window == 0 {
        return;
    }
    let period = Duration::from_millis(shared.config.burst_window_ms) / o.per_window;
    let period = period.max(Duration::from_micros(100));
    let limit = shared.burst_limit_for(o.app_id, o.portal_id);
    // A weak handle, so a forgotten consumer never keeps the simulator state alive.
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let handle = shared.runtime.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = weak.upgrade() else { return };
            s.limiter
                .outside_arrival(o.app_id, o.portal_id, limit, Instant::now());
        }
    });
    map.insert((o.app_id, o.portal_id), handle);
}
