//! Outside consumers: background traffic that spends an owner's burst budget without passing
//! through the gateway, as other integrations of the same app do at HubSpot. One task per
//! owner, following the consumer's pattern (steady, bursty or ramp).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::state::Shared;
use crate::outside::{OutsideConfig, OutsidePattern};

/// How long a ramp may sleep before it looks at its rate again: near either end the rate is
/// close to 0, and sleeping 1/rate there would overshoot the ramp by seconds.
const RAMP_MAX_SLEEP: Duration = Duration::from_millis(50);

/// Starts (or replaces, or with `per_window == 0` stops) the outside consumer of one owner.
/// A finished ramp stays registered until replaced or stopped; its task has simply ended.
/// The config must be valid (`OutsideConfig::validate`); every caller checks first.
pub(crate) fn set_outside(shared: &Arc<Shared>, o: OutsideConfig) {
    let mut map = shared.outside.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = map.remove(&(o.app_id, o.portal_id)) {
        h.abort();
    }
    if o.per_window == 0 {
        return;
    }
    let consumer = Consumer {
        // A weak handle, so a forgotten consumer never keeps the simulator state alive.
        shared: Arc::downgrade(shared),
        app_id: o.app_id,
        portal_id: o.portal_id,
        limit: shared.burst_limit_for(o.app_id, o.portal_id),
    };
    let window = Duration::from_millis(shared.config.burst_window_ms);
    let per_window = o.per_window;
    let handle = shared.runtime.spawn(async move {
        match o.pattern {
            OutsidePattern::Steady => consumer.steady(per_window, window).await,
            OutsidePattern::Bursty { every_ms } => {
                consumer
                    .bursty(per_window, Duration::from_millis(every_ms))
                    .await
            }
            OutsidePattern::Ramp { ramp_ms } => {
                consumer
                    .ramp(per_window, window, Duration::from_millis(ramp_ms))
                    .await
            }
        }
    });
    map.insert((o.app_id, o.portal_id), handle);
}

struct Consumer {
    shared: Weak<Shared>,
    app_id: u64,
    portal_id: u64,
    limit: u32,
}

impl Consumer {
    /// Records `count` arrivals now; false once the simulator is gone, to end the task.
    fn arrive(&self, count: u32) -> bool {
        let Some(s) = self.shared.upgrade() else {
            return false;
        };
        s.limiter.outside_arrivals(
            self.app_id,
            self.portal_id,
            self.limit,
            count,
            Instant::now(),
        );
        true
    }

    /// Evenly spaced, so each burst window sees `per_window` arrivals.
    async fn steady(&self, per_window: u32, window: Duration) {
        let period = (window / per_window).max(Duration::from_micros(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.arrive(1) {
                return;
            }
        }
    }

    /// A whole block at one instant, the first at once.
    async fn bursty(&self, per_window: u32, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.arrive(per_window) {
                return;
            }
        }
    }

    /// Up and down a triangle of rate over `2 × ramp`, then done. Arrivals follow the
    /// triangle's integral rather than summing 1/rate gaps, so late wake-ups and the sleep cap
    /// do not change how many arrivals the ramp makes, only when exactly they land.
    async fn ramp(&self, per_window: u32, window: Duration, ramp: Duration) {
        let shape = Ramp {
            per_window: f64::from(per_window),
            window_ms: window.as_secs_f64() * 1000.0,
            ramp_ms: ramp.as_secs_f64() * 1000.0,
        };
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let t_ms = start.elapsed().as_secs_f64() * 1000.0;
            let due = shape.due(t_ms);
            let whole = due.floor() as u64;
            if whole > done {
                let count = u32::try_from(whole - done).unwrap_or(u32::MAX);
                if !self.arrive(count) {
                    return;
                }
                done = whole;
            }
            if t_ms >= 2.0 * shape.ramp_ms {
                return;
            }
            let rate = shape.rate(t_ms);
            let to_next = if rate > 0.0 {
                ((done + 1) as f64 - due) / rate
            } else {
                f64::INFINITY
            };
            let to_end = 2.0 * shape.ramp_ms - t_ms;
            let wait_ms = to_next.min(to_end).max(0.1);
            let wait = Duration::from_secs_f64(wait_ms / 1000.0).min(RAMP_MAX_SLEEP);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The ramp's triangle: peak rate `per_window / window_ms` arrivals per ms at `ramp_ms`.
struct Ramp {
    per_window: f64,
    window_ms: f64,
    ramp_ms: f64,
}

impl Ramp {
    /// Instantaneous rate at `t_ms`, in arrivals per ms.
    fn rate(&self, t_ms: f64) -> f64 {
        let r = self.ramp_ms;
        let up = if t_ms < r { t_ms } else { 2.0 * r - t_ms };
        (self.per_window * up / (r * self.window_ms)).max(0.0)
    }

    /// Arrivals due by `t_ms`: the rate's integral from 0.
    fn due(&self, t_ms: f64) -> f64 {
        let r = self.ramp_ms;
        let area_ms = if t_ms >= 2.0 * r {
            // Exact at the end, so the total is per_window × ramp / window however the float
            // arithmetic of the partial areas would round.
            r
        } else if t_ms < r {
            t_ms * t_ms / (2.0 * r)
        } else {
            let u = t_ms - r;
            r / 2.0 + u - u * u / (2.0 * r)
        };
        self.per_window * area_ms / self.window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::Ramp;

    #[test]
    fn ramp_integral_is_the_triangle() {
        let r = Ramp {
            per_window: 40.0,
            window_ms: 1000.0,
            ramp_ms: 500.0,
        };
        assert_eq!(r.due(0.0), 0.0);
        assert!((r.due(500.0) - 10.0).abs() < 1e-9);
        assert!((r.due(999.999) - 20.0).abs() < 1e-3);
        assert_eq!(r.due(1000.0), 20.0);
        assert_eq!(r.due(5000.0), 20.0);
        assert!((r.rate(500.0) - 0.04).abs() < 1e-12);
        assert_eq!(r.rate(0.0), 0.0);
        assert_eq!(r.rate(1200.0), 0.0);
    }
}
