//! The estimators behind a window's view of what is not hubgate's: another client's use
//! (the largest count of the last window, in quarter-window buckets), a lower tier than
//! configured and the delay of answers (per span-long epoch).

use crate::time::Tick;

/// The largest value seen of a quantity that changes seldom (the gap to a lower tier, the
/// delay of answers), kept per span-long epoch so it follows the quantity down as well as
/// up: a value is forgotten two spans after it was last seen.
#[derive(Debug, Clone, Copy)]
pub(super) struct EpochMax {
    /// Start of the current epoch; `Tick::MAX` before the first observation.
    epoch_start: Tick,
    /// Largest value seen in the current epoch.
    current: u32,
    /// Largest value seen in the epoch before.
    previous: u32,
}

impl EpochMax {
    pub(super) const EMPTY: EpochMax = EpochMax {
        epoch_start: Tick::MAX,
        current: 0,
        previous: 0,
    };

    /// Moves the epoch forward to cover `at`; true when a new epoch began.
    fn roll(&mut self, at: Tick, span: u64) -> bool {
        let epoch = self.epoch_start.0;
        if self.epoch_start != Tick::MAX && at.0 < epoch.saturating_add(span) {
            return false;
        }
        if self.epoch_start != Tick::MAX && at.0 < epoch.saturating_add(span.saturating_mul(2)) {
            self.epoch_start = Tick(epoch.saturating_add(span));
            self.previous = self.current;
        } else {
            self.epoch_start = at;
            self.previous = 0;
        }
        self.current = 0;
        true
    }

    pub(super) fn record(&mut self, at: Tick, span: u64, value: u32) {
        self.roll(at, span);
        self.current = self.current.max(value);
    }

    /// The largest value still remembered at `now`.
    pub(super) fn value_at(&self, now: Tick, span: u64) -> u32 {
        if self.epoch_start == Tick::MAX {
            return 0;
        }
        let age = now.0.saturating_sub(self.epoch_start.0);
        if age < span {
            self.current.max(self.previous)
        } else if age < span.saturating_mul(2) {
            self.current
        } else {
            0
        }
    }

    pub(super) fn clamp(&mut self, max: u32) {
        self.current = self.current.min(max);
        self.previous = self.previous.min(max);
    }
}

/// The largest value seen in the last window, kept in quarter-window buckets: it follows
/// the quantity down within 1 to 1.25 windows of its last peak, which is how long a slot
/// taken now stays held, and up at once.
///
/// A quantity that only ever moved by a step or two between readings (a stream, however
/// it ramps) is followed down faster, within a quarter to half a window: its count now is
/// what its next window will look like, while one that jumped (a block of calls at once)
/// can jump again when its next block lands, so its peak is kept the whole window.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowMax {
    /// Start of the current bucket; `Tick::MAX` before the first observation.
    start: Tick,
    /// The largest value of each bucket, `at` the current one, the others older in turn.
    buckets: [u32; WindowMax::BUCKETS],
    /// The largest rise between two readings in each bucket.
    jumps: [u32; WindowMax::BUCKETS],
    /// The latest reading.
    last: u32,
    at: u8,
}

impl WindowMax {
    /// Four quarters of a window plus the current one.
    const BUCKETS: usize = 5;

    const EMPTY: WindowMax = WindowMax {
        start: Tick::MAX,
        buckets: [0; WindowMax::BUCKETS],
        jumps: [0; WindowMax::BUCKETS],
        last: 0,
        at: 0,
    };

    fn quarter(span: u64) -> u64 {
        (span / 4).max(1)
    }

    /// Buckets the current one is behind `now` by.
    fn behind(&self, now: Tick, span: u64) -> u64 {
        now.0.saturating_sub(self.start.0) / Self::quarter(span)
    }

    /// Moves the current bucket forward to cover `at`, clearing those it passes; true when
    /// a new bucket began.
    fn advance(&mut self, at: Tick, span: u64) -> bool {
        if self.start == Tick::MAX {
            self.start = at;
            return true;
        }
        let behind = self.behind(at, span);
        if behind == 0 {
            return false;
        }
        for _ in 0..behind.min(Self::BUCKETS as u64) {
            self.at = (self.at + 1) % Self::BUCKETS as u8;
            self.buckets[usize::from(self.at)] = 0;
            self.jumps[usize::from(self.at)] = 0;
        }
        self.start = self
            .start
            .saturating_add_micros(behind.saturating_mul(Self::quarter(span)));
        true
    }

    fn record(&mut self, at: Tick, span: u64, value: u32) {
        self.advance(at, span);
        let i = usize::from(self.at);
        self.buckets[i] = self.buckets[i].max(value);
        self.jumps[i] = self.jumps[i].max(value.saturating_sub(self.last));
        self.last = value;
    }

    /// The largest value and the largest rise of the buckets within `reach` quarters at
    /// `now` (the current one counts as the first).
    fn within(&self, now: Tick, span: u64, reach: u64) -> (u32, u32) {
        let behind = self.behind(now, span);
        (0..Self::BUCKETS as u64)
            .filter(|&back| back.saturating_add(behind) < reach)
            .map(|back| {
                let i = (u64::from(self.at) + Self::BUCKETS as u64 - back) % Self::BUCKETS as u64;
                (self.buckets[i as usize], self.jumps[i as usize])
            })
            .fold((0, 0), |(v, j), (bv, bj)| (v.max(bv), j.max(bj)))
    }

    /// The value to hold for at `now`: the largest of the last window, or of the last half
    /// window for a quantity that moved smoothly all window and was read lately.
    fn value_at(&self, now: Tick, span: u64) -> u32 {
        if self.start == Tick::MAX {
            return 0;
        }
        let (peak, jump) = self.within(now, span, Self::BUCKETS as u64);
        let (recent, _) = self.within(now, span, 2);
        let smooth = jump <= 1 + peak / 16;
        if smooth && self.behind(now, span) < 2 {
            recent
        } else {
            peak
        }
    }

    fn clamp(&mut self, max: u32) {
        for bucket in &mut self.buckets {
            *bucket = (*bucket).min(max);
        }
    }
}

/// What HubSpot's own count says about the window beyond hubgate's sends.
///
/// Two signals feed it. Headers: HubSpot's count (`-Max` minus `-Remaining`) at the call's
/// arrival, beyond the sends of ours it can have counted then. But that count stops at the
/// limit, so when we overshoot it says nothing; then each 429 on this window stands for one
/// call more than fitted, and the 429s of a quarter window are counted too. A `-Max` below the
/// configured limit (a lower tier) is kept apart: it is a constant gap, not a stream, and
/// gets no headroom.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outside {
    /// Another client's calls in one window, as estimated from answers.
    calls: WindowMax,
    /// 429s received on this window in the current bucket of `calls`.
    rejected: u32,
    /// Configured limit minus HubSpot's `-Max`, when that is lower.
    tier_gap: EpochMax,
    /// HubSpot's count at the latest answer: what the dashboard shows beside hubgate's own.
    pub(super) hub_used: u32,
}

impl Outside {
    pub(super) const NONE: Outside = Outside {
        calls: WindowMax::EMPTY,
        rejected: 0,
        tier_gap: EpochMax::EMPTY,
        hub_used: 0,
    };

    /// Slots left free at `now` for what is not ours: the other client's largest recent
    /// use plus headroom for its next calls, and the tier gap.
    ///
    /// The headroom is there because the estimate is a sample: HubSpot's count is read only
    /// when one of our answers comes back, so the other client's peaks between answers (one
    /// call more for an evenly spaced stream, more for a ragged one) are unseen. One slot
    /// plus a sixteenth of its use covers both: while it is held for, our sends are spaced
    /// (see `spaced_from`), so answers come back all the time and peaks go unseen briefly.
    pub(super) fn held(&self, now: Tick, span: u64) -> u32 {
        let calls = self.calls.value_at(now, span);
        let headroom = if calls == 0 { 0 } else { 1 + calls / 16 };
        calls
            .saturating_add(headroom)
            .saturating_add(self.tier_gap.value_at(now, span))
    }

    /// Whether another client's use is being held for at `now`.
    pub(super) fn is_present(&self, now: Tick, span: u64) -> bool {
        self.calls.value_at(now, span) > 0
    }

    /// One answer's reading at `now`: another client's `calls`, the `tier_gap` and
    /// HubSpot's whole count `hub_used`.
    pub(super) fn observe_count(
        &mut self,
        now: Tick,
        span: u64,
        calls: u32,
        tier_gap: u32,
        hub_used: u32,
    ) {
        self.start_bucket(now, span);
        self.calls.record(now, span, calls);
        self.tier_gap.record(now, span, tier_gap);
        self.hub_used = hub_used;
    }

    /// A 429 at `now`: the bucket's 429s, at most `capacity`, are calls of someone else's.
    pub(super) fn observe_rejection(&mut self, now: Tick, span: u64, capacity: u32) {
        self.start_bucket(now, span);
        self.rejected = self.rejected.saturating_add(1).min(capacity);
        self.calls.record(now, span, self.rejected);
    }

    /// Moves `calls` to the bucket covering `now`; a new bucket counts its own 429s.
    fn start_bucket(&mut self, now: Tick, span: u64) {
        if self.calls.advance(now, span) {
            self.rejected = 0;
        }
    }

    /// A new spec's `capacity` bounds every value kept.
    pub(super) fn clamp(&mut self, capacity: u32) {
        self.calls.clamp(capacity);
        self.tier_gap.clamp(capacity);
        self.rejected = self.rejected.min(capacity);
    }
}
