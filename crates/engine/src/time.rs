//! Owns the engine's notion of time: a caller-supplied monotonic `Tick`, never a clock read.

use std::time::Duration;

/// A point on a monotonic time line, in microseconds since an epoch chosen by the caller.
///
/// The engine never reads a clock: the proxy maps tokio `Instant`s onto ticks, a shared
/// store maps Redis `TIME` onto them, and tests drive them by hand. Microseconds are fine
/// enough for HubSpot's millisecond windows, and `u64` of them lasts 584,000 years, so all
/// arithmetic saturates instead of wrapping or panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tick(pub u64);

impl Tick {
    /// The epoch itself.
    pub const ZERO: Tick = Tick(0);
    /// "Never": the answer for a budget that can not admit anything (limit 0).
    pub const MAX: Tick = Tick(u64::MAX);

    /// A tick `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Tick {
        Tick(micros)
    }

    /// A tick `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Tick {
        Tick(millis.saturating_mul(1_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `self + d`, rounding `d` up to whole microseconds and stopping at `Tick::MAX`.
    pub fn saturating_add(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(micros_ceil(d)))
    }

    /// `self - d`, rounding `d` up to whole microseconds and stopping at `Tick::ZERO`.
    pub fn saturating_sub(self, d: Duration) -> Tick {
        Tick(self.0.saturating_sub(micros_ceil(d)))
    }

    /// `self + micros`, stopping at `Tick::MAX`.
    pub const fn saturating_add_micros(self, micros: u64) -> Tick {
        Tick(self.0.saturating_add(micros))
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is not earlier.
    pub fn saturating_duration_since(self, earlier: Tick) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// `d` in whole microseconds, rounded up and capped at `u64::MAX`.
///
/// Rounding up matters for windows: a window truncated by a fraction of a microsecond
/// would let a send through that much too early.
pub fn micros_ceil(d: Duration) -> u64 {
    let nanos = d.as_nanos();
    let micros = nanos.div_ceil(1_000);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Tick::MAX.saturating_add(Duration::MAX), Tick::MAX);
        assert_eq!(Tick::ZERO.saturating_sub(Duration::MAX), Tick::ZERO);
        assert_eq!(Tick::from_millis(u64::MAX), Tick::MAX);
        assert_eq!(
            Tick::ZERO.saturating_duration_since(Tick::MAX),
            Duration::ZERO
        );
        assert_eq!(
            Tick::MAX.saturating_duration_since(Tick::ZERO),
            Duration::from_micros(u64::MAX)
        );
    }

    #[test]
    fn sub_microsecond_durations_round_up() {
        assert_eq!(micros_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(micros_ceil(Duration::from_nanos(1_000)), 1);
        assert_eq!(micros_ceil(Duration::from_nanos(1_001)), 2);
        assert_eq!(Tick(5).saturating_add(Duration::from_nanos(1)), Tick(6));
    }
}
