//! Maps the runtime's clocks onto engine time: tokio's monotonic `Instant` to `Tick`, the
//! wall clock to unix milliseconds for daily resets. The one place that reads the wall
//! clock (clippy.toml forbids it elsewhere), so there is one thing to replace in a test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use hubgate_engine::Tick;

/// The gateway's clock. tokio's `Instant` (not std's) so tests with paused time drive it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The instant that is `Tick(0)`.
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn now(&self) -> Tick {
        self.tick_of(Instant::now())
    }

    pub fn tick_of(&self, instant: Instant) -> Tick {
        let micros = instant.saturating_duration_since(self.epoch).as_micros();
        Tick::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The instant of `tick`; "never" (`Tick::MAX`) maps to a day from now, which is far
    /// enough for a timer and short enough not to overflow.
    pub fn instant_of(&self, tick: Tick) -> Instant {
        let far = Instant::now() + Duration::from_secs(86_400);
        self.epoch
            .checked_add(Duration::from_micros(tick.as_micros()))
            .map_or(far, |at| at.min(far))
    }

    /// The wall clock now.
    pub fn wall(&self) -> SystemTime {
        wall_now()
    }

    pub fn unix_ms(&self) -> i64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The wall clock now: the one place hubgate reads it.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
