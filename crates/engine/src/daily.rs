//! Owns a portal's daily request counter and its reset at local midnight.
//!
//! The daily limit resets at midnight in the account's time zone, which is wall-clock time,
//! not the monotonic `Tick`: every method takes `unix_ms` so the caller decides which clock
//! is the truth (the host's `SystemTime`, or Redis `TIME` with several replicas).

/// Milliseconds in a day; HubSpot's day has no leap seconds either.
const DAY_MS: i64 = 86_400_000;

/// Configuration of one portal's daily budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DailySpec {
    /// Requests per local day; 0 means unlimited (public OAuth apps).
    pub limit: u64,
    /// Offset of the portal's time zone from UTC, in seconds (HubSpot's
    /// `utcOffsetMilliseconds` / 1000); a fixed offset, so the proxy refreshes it across
    /// daylight-saving changes.
    pub utc_offset_secs: i32,
}

/// The daily budget is spent: nothing goes until `resets_at_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DailyExhausted {
    /// Unix time (ms) of the next local midnight, for `Retry-After`.
    pub resets_at_unix_ms: i64,
}

/// A portal's requests counted in its current local day.
#[derive(Debug, Clone)]
pub struct DailyBudget {
    /// Requests per local day; 0 means unlimited.
    limit: u64,
    /// Time zone offset in milliseconds, added to unix time to get local time.
    offset_ms: i64,
    /// Local day number (days since 1970-01-01 local) that `used` counts; `i64::MIN`
    /// before the first call.
    day: i64,
    /// Requests counted in `day` (real sends plus what HubSpot reported).
    used: u64,
    /// HubSpot said `DAILY` during `day`: refuse until it ends, whatever `used` says.
    exhausted: bool,
}

impl DailyBudget {
    /// A budget with nothing spent.
    pub fn new(spec: DailySpec) -> DailyBudget {
        DailyBudget {
            limit: spec.limit,
            offset_ms: i64::from(spec.utc_offset_secs) * 1_000,
            day: i64::MIN,
            used: 0,
            exhausted: false,
        }
    }

    /// Requests per local day; 0 means unlimited.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The local day `unix_ms` falls in.
    fn local_day(&self, unix_ms: i64) -> i64 {
        unix_ms.saturating_add(self.offset_ms).div_euclid(DAY_MS)
    }

    /// The day that counts at `unix_ms`: a wall clock stepping back across midnight keeps
    /// the day already counted rather than refunding it.
    fn current_day(&self, unix_ms: i64) -> i64 {
        self.local_day(unix_ms).max(self.day)
    }

    /// Whether the counters belong to a day that is over at `unix_ms`.
    fn is_stale(&self, unix_ms: i64) -> bool {
        self.local_day(unix_ms) > self.day
    }

    /// Starts a new day if `unix_ms` is past the counted one.
    fn roll(&mut self, unix_ms: i64) {
        if self.is_stale(unix_ms) {
            self.day = self.local_day(unix_ms);
            self.used = 0;
            self.exhausted = false;
        }
    }

    /// Unix time (ms) of the midnight that ends the day counting at `unix_ms`.
    pub fn reset_at(&self, unix_ms: i64) -> i64 {
        self.current_day(unix_ms)
            .saturating_add(1)
            .saturating_mul(DAY_MS)
            .saturating_sub(self.offset_ms)
    }

    /// Requests counted in the day of `unix_ms`.
    pub fn used(&self, unix_ms: i64) -> u64 {
        if self.is_stale(unix_ms) {
            0
        } else {
            self.used
        }
    }

    /// Requests left in the day of `unix_ms`; `u64::MAX` when unlimited.
    pub fn remaining(&self, unix_ms: i64) -> u64 {
        if !self.is_stale(unix_ms) && self.exhausted {
            0
        } else if self.limit == 0 {
            u64::MAX
        } else {
            self.limit.saturating_sub(self.used(unix_ms))
        }
    }

    /// Whether one request may be spent at `unix_ms`, without spending it.
    pub fn check(&self, unix_ms: i64) -> Result<(), DailyExhausted> {
        if self.remaining(unix_ms) == 0 {
            Err(DailyExhausted {
                resets_at_unix_ms: self.reset_at(unix_ms),
            })
        } else {
            Ok(())
        }
    }

    /// Counts one request at `unix_ms` without checking; callers check first.
    pub fn commit(&mut self, unix_ms: i64) {
        self.roll(unix_ms);
        self.used = self.used.saturating_add(1);
    }

    /// Spends one request, or says when the day resets.
    pub fn try_spend(&mut self, unix_ms: i64) -> Result<(), DailyExhausted> {
        self.check(unix_ms)?;
        self.commit(unix_ms);
        Ok(())
    }

    /// HubSpot answered 429 `DAILY`: refuse until the local midnight, even if we counted
    /// fewer (other apps of the portal spend the same budget) or think it unlimited.
    pub fn mark_exhausted(&mut self, unix_ms: i64) {
        self.roll(unix_ms);
        self.exhausted = true;
    }

    /// HubSpot reports `reported` requests left today (`X-HubSpot-RateLimit-Daily-Remaining`);
    /// raise our count to match when it is lower than ours, never lower it.
    pub fn observe_remaining(&mut self, unix_ms: i64, reported: u64) {
        self.roll(unix_ms);
        if self.limit > 0 {
            self.used = self.used.max(self.limit.saturating_sub(reported));
        }
    }

    /// Takes on a new spec in place (a config reload) at `unix_ms`: today's count and a
    /// `DAILY` from HubSpot are kept, so a lowered limit may be spent already and a raised
    /// one frees calls at once. A new time zone moves the coming midnight; today's count
    /// still belongs to the day now running.
    pub fn respec(&mut self, spec: DailySpec, unix_ms: i64) {
        let counting_today = self.day != i64::MIN && !self.is_stale(unix_ms);
        self.limit = spec.limit;
        self.offset_ms = i64::from(spec.utc_offset_secs) * 1_000;
        if counting_today {
            self.day = self.local_day(unix_ms);
        }
    }

    /// Whether forgetting this budget would change no answer from `unix_ms` on.
    pub fn is_idle(&self, unix_ms: i64) -> bool {
        self.is_stale(unix_ms) || (self.used == 0 && !self.exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-10T00:00:00Z.
    const MIDNIGHT_UTC: i64 = 1_710_028_800_000;
    const HOUR: i64 = 3_600_000;

    fn budget(limit: u64, utc_offset_secs: i32) -> DailyBudget {
        DailyBudget::new(DailySpec {
            limit,
            utc_offset_secs,
        })
    }

    #[test]
    fn exhaustion_reports_next_utc_midnight_and_resets_there() {
        let mut b = budget(2, 0);
        let t = MIDNIGHT_UTC + 5 * HOUR;
        assert!(b.try_spend(t).is_ok());
        assert!(b.try_spend(t).is_ok());
        let reset = MIDNIGHT_UTC + 24 * HOUR;
        assert_eq!(
            b.try_spend(t),
            Err(DailyExhausted {
                resets_at_unix_ms: reset
            })
        );
        assert_eq!(b.remaining(reset - 1), 0);
        assert_eq!(b.used(reset), 0);
        assert!(b.try_spend(reset).is_ok());
        assert_eq!(b.remaining(reset), 1);
    }

    #[test]
    fn positive_offset_resets_before_utc_midnight() {
        // UTC+05:30: local midnight is 18:30 UTC the day before.
        let mut b = budget(1, 5 * 3_600 + 1_800);
        let local_midnight = MIDNIGHT_UTC - 5 * HOUR - HOUR / 2;
        b.try_spend(local_midnight - 1).unwrap();
        assert_eq!(
            b.try_spend(local_midnight - 1)
                .unwrap_err()
                .resets_at_unix_ms,
            local_midnight
        );
        assert!(b.try_spend(local_midnight).is_ok());
        assert_eq!(b.reset_at(local_midnight), local_midnight + 24 * HOUR);
    }

    #[test]
    fn negative_offset_resets_after_utc_midnight() {
        // UTC-05:00: local midnight is 05:00 UTC.
        let mut b = budget(1, -5 * 3_600);
        let local_midnight = MIDNIGHT_UTC + 5 * HOUR;
        b.try_spend(MIDNIGHT_UTC + HOUR).unwrap();
        assert_eq!(
            b.try_spend(MIDNIGHT_UTC + 2 * HOUR)
                .unwrap_err()
                .resets_at_unix_ms,
            local_midnight
        );
        assert!(b.try_spend(local_midnight).is_ok());
    }

    #[test]
    fn unlimited_counts_but_never_refuses_unless_hubspot_says_so() {
        let mut b = budget(0, 0);
        for _ in 0..1_000 {
            b.try_spend(MIDNIGHT_UTC).unwrap();
        }
        assert_eq!(b.used(MIDNIGHT_UTC), 1_000);
        assert_eq!(b.remaining(MIDNIGHT_UTC), u64::MAX);
        b.observe_remaining(MIDNIGHT_UTC, 0);
        assert!(b.try_spend(MIDNIGHT_UTC).is_ok());
        b.mark_exhausted(MIDNIGHT_UTC + HOUR);
        assert_eq!(
            b.try_spend(MIDNIGHT_UTC + HOUR),
            Err(DailyExhausted {
                resets_at_unix_ms: MIDNIGHT_UTC + 24 * HOUR
            })
        );
        assert!(b.try_spend(MIDNIGHT_UTC + 24 * HOUR).is_ok());
    }

    #[test]
    fn observe_remaining_raises_the_count_only() {
        let mut b = budget(100, 0);
        b.try_spend(MIDNIGHT_UTC).unwrap();
        b.observe_remaining(MIDNIGHT_UTC, 100);
        assert_eq!(b.remaining(MIDNIGHT_UTC), 99);
        b.observe_remaining(MIDNIGHT_UTC, 10);
        assert_eq!(b.remaining(MIDNIGHT_UTC), 10);
        b.observe_remaining(MIDNIGHT_UTC, 50);
        assert_eq!(b.remaining(MIDNIGHT_UTC), 10);
    }

    #[test]
    fn clock_stepping_back_over_midnight_keeps_the_count() {
        let mut b = budget(1, 0);
        b.try_spend(MIDNIGHT_UTC).unwrap();
        assert_eq!(
            b.try_spend(MIDNIGHT_UTC - 1).unwrap_err().resets_at_unix_ms,
            MIDNIGHT_UTC + 24 * HOUR
        );
    }

    #[test]
    fn extreme_times_and_offsets_do_not_panic() {
        for offset in [i32::MIN, -1, 0, 1, i32::MAX] {
            for t in [i64::MIN, -1, 0, 1, i64::MAX] {
                let mut b = budget(1, offset);
                let _ = b.try_spend(t);
                let _ = b.try_spend(t);
                b.mark_exhausted(t);
                b.observe_remaining(t, 0);
                let _ = (b.reset_at(t), b.used(t), b.remaining(t), b.is_idle(t));
            }
        }
    }
}
