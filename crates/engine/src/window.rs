//! Owns one exact rolling-window budget: the send log, its admission rule and wait estimates.
//!
//! HubSpot's burst and search windows are rolling: at no instant may the last `W` hold more
//! than `L` requests. A token bucket either overshoots (`B + r·W` per window) or forbids
//! bursts, so this keeps the send times of the last `capacity` sends instead. A send at
//! `now` is allowed when the oldest of them has left the window; that is exact, lets a
//! full burst out at once, and costs one `Tick` per slot.
//!
//! Every send occupies the half-open interval `[t, t + span)` with
//! `span = window + margin_time`, so any `capacity + 1` consecutive sends are at least
//! `span` apart: no interval of length `window` ever holds more than `capacity`.

use std::collections::VecDeque;
use std::time::Duration;

use super::time::{micros_ceil, Tick};

/// Configuration of one rolling-window budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    /// Sends HubSpot allows per window (`X-HubSpot-RateLimit-Max`); 0 admits nothing.
    pub limit: u32,
    /// Length of HubSpot's rolling window; zero limits sends per microsecond only.
    pub window: Duration,
    /// Extra time each send is kept in the window, covering clock skew and network jitter
    /// between our send and HubSpot's arrival stamp.
    pub margin_time: Duration,
    /// Slots per window left unused, for other clients of the same budget and jitter.
    pub margin_slots: u32,
}

impl WindowSpec {
    /// Largest limit the engine honours; larger limits are clamped down to it.
    ///
    /// The log stores one tick per slot, so an absurd configured limit must not turn into
    /// an absurd allocation. HubSpot's largest documented burst is 250; clamping lowers
    /// throughput but never breaks the limit.
    pub const MAX_LIMIT: u32 = 65_536;

    /// A spec without safety margins.
    pub const fn new(limit: u32, window: Duration) -> WindowSpec {
        WindowSpec {
            limit,
            window,
            margin_time: Duration::ZERO,
            margin_slots: 0,
        }
    }

    /// The same spec with the given margins.
    pub const fn with_margins(self, margin_time: Duration, margin_slots: u32) -> WindowSpec {
        WindowSpec {
            margin_time,
            margin_slots,
            ..self
        }
    }

    /// Sends admitted per window after the slot margin: `min(limit, MAX_LIMIT) - margin_slots`.
    pub fn capacity(&self) -> u32 {
        self.limit
            .min(Self::MAX_LIMIT)
            .saturating_sub(self.margin_slots)
    }

    /// How long one send occupies the window, in microseconds: `window + margin_time`,
    /// at least 1 so that sends at one tick still count against each other.
    pub fn span_micros(&self) -> u64 {
        micros_ceil(self.window)
            .saturating_add(micros_ceil(self.margin_time))
            .max(1)
    }

    /// Wait for the request with `ahead` requests before it on a budget that is idle now.
    pub fn idle_wait(&self, ahead: usize) -> Duration {
        SlidingLog::new(*self).estimate_wait(Tick::ZERO, ahead)
    }
}

/// The exact rolling-window budget: the send times still able to matter, oldest first.
#[derive(Debug, Clone)]
pub struct SlidingLog {
    /// HubSpot's limit (clamped to `MAX_LIMIT`), kept to translate `-Remaining` headers.
    limit: u32,
    /// Sends admitted per window after the slot margin; the log never holds more.
    capacity: u32,
    /// How long one send occupies the window (`window + margin_time`), microseconds.
    span: u64,
    /// HubSpot said 429: nothing is admitted before this tick, whatever the log says.
    blocked_until: Tick,
    /// Send times of the last `capacity` sends (real and phantom), non-decreasing; only the
    /// oldest matters for admission, the rest are needed to answer after it has left.
    sends: VecDeque<Tick>,
    /// Slots another client of the same budget (Zapier, a second region) spends, as
    /// learned from HubSpot's `-Remaining`; they are kept free for it.
    outside: Outside,
    /// How long after their admission our answers came back, largest per epoch: the time
    /// margin the log is really holding sends for, beyond `span`.
    answer_delay: EpochMax,
}

/// The largest value seen of a quantity that drifts (another client's use, the gap to a
/// lower tier, the delay of answers), kept per span-long epoch so it follows the quantity
/// down as well as up: a value is forgotten two spans after it was last seen.
#[derive(Debug, Clone, Copy)]
struct EpochMax {
    /// Start of the current epoch; `Tick::MAX` before the first observation.
    epoch_start: Tick,
    /// Largest value seen in the current epoch.
    current: u32,
    /// Largest value seen in the epoch before.
    previous: u32,
}

impl EpochMax {
    const EMPTY: EpochMax = EpochMax {
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

    fn record(&mut self, at: Tick, span: u64, value: u32) {
        self.roll(at, span);
        self.current = self.current.max(value);
    }

    /// The largest value still remembered at `now`.
    fn value_at(&self, now: Tick, span: u64) -> u32 {
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

    fn clamp(&mut self, max: u32) {
        self.current = self.current.min(max);
        self.previous = self.previous.min(max);
    }
}

/// What HubSpot's own count says about the window beyond hubgate's sends.
///
/// Two signals feed it. Headers: HubSpot's count (`-Max` minus `-Remaining`) at the call's
/// arrival, beyond the sends of ours it can have counted then. But that count stops at the
/// limit, so when we overshoot it says nothing; then each 429 on this window stands for one
/// call more than fitted, and the 429s of an epoch are counted too. A `-Max` below the
/// configured limit (a lower tier) is kept apart: it is a constant gap, not a stream, and
/// gets no headroom.
#[derive(Debug, Clone, Copy)]
struct Outside {
    /// Another client's calls in one window, as estimated from answers.
    calls: EpochMax,
    /// 429s received on this window in the current epoch of `calls`.
    rejected: u32,
    /// Configured limit minus HubSpot's `-Max`, when that is lower.
    tier_gap: EpochMax,
    /// HubSpot's count at the latest answer (recorded with `tier_gap`, whose epoch dates
    /// it): what the dashboard shows beside hubgate's own count.
    hub_used: u32,
}

impl Outside {
    const NONE: Outside = Outside {
        calls: EpochMax::EMPTY,
        rejected: 0,
        tier_gap: EpochMax::EMPTY,
        hub_used: 0,
    };

    /// Slots left free at `now` for what is not ours: the other client's largest recent
    /// use plus headroom for its next calls, and the tier gap.
    ///
    /// The headroom is there because the estimate is a sample: HubSpot's count is read only
    /// when one of our answers comes back, so the other client's peaks between answers (one
    /// call more for an evenly spaced stream, more for a ragged one) are unseen. One slot plus
    /// an eighth of its use covers both at the cost of a few percent of what it leaves us.
    fn held(&self, now: Tick, span: u64) -> u32 {
        let calls = self.calls.value_at(now, span);
        let headroom = if calls == 0 { 0 } else { 1 + calls / 8 };
        calls
            .saturating_add(headroom)
            .saturating_add(self.tier_gap.value_at(now, span))
    }
}

/// Log entries preallocated on the first send; beyond it the deque grows on demand, so a
/// huge limit only costs memory when it is really used.
const PREALLOC_MAX: usize = 1_024;

impl SlidingLog {
    /// An idle budget; it allocates nothing until the first send.
    pub fn new(spec: WindowSpec) -> SlidingLog {
        SlidingLog {
            limit: spec.limit.min(WindowSpec::MAX_LIMIT),
            capacity: spec.capacity(),
            span: spec.span_micros(),
            blocked_until: Tick::ZERO,
            sends: VecDeque::new(),
            outside: Outside::NONE,
            answer_delay: EpochMax::EMPTY,
        }
    }

    /// Slots left to hubgate at `now`: the capacity minus what is held for another client
    /// and a lower tier, never below one so that hubgate keeps learning from HubSpot's
    /// answers.
    fn capacity_at(&self, now: Tick) -> u32 {
        if self.capacity == 0 {
            return 0;
        }
        self.capacity
            .saturating_sub(self.outside.held(now, self.span))
            .max(1)
    }

    /// Slots kept free at `now` for another client and a lower tier than configured.
    pub fn held_for_outside(&self, now: Tick) -> u32 {
        self.capacity.saturating_sub(self.capacity_at(now))
    }

    /// HubSpot's count (`-Max` minus `-Remaining`) from the latest answer, if it came within
    /// the last span.
    pub fn hubspot_count(&self, now: Tick) -> Option<u32> {
        let seen = self.outside.tier_gap.epoch_start;
        (seen != Tick::MAX && now.0 < seen.0.saturating_add(self.span.saturating_mul(2)))
            .then_some(self.outside.hub_used)
    }

    /// The largest delay, within the last two spans, between a send's admission and its
    /// answer: how much longer than `span` the log holds sends, as measured.
    pub fn answer_delay(&self, now: Tick) -> Duration {
        Duration::from_micros(u64::from(self.answer_delay.value_at(now, self.span)))
    }

    /// HubSpot counted `hub_used` calls in its window (`-Max` minus `-Remaining`) when the
    /// call admitted at `admitted` arrived; its answer came at `now`, out of `reported_max`.
    /// What our own sends can not explain is another client's use, and that many slots
    /// (plus headroom) are left to it from now on.
    ///
    /// Ours are counted as every send whose hold had not ended when this call was admitted:
    /// HubSpot counted the call later still, so it had dropped no more of them. Sends
    /// admitted after this one are counted too, though some arrived after it: leaving them
    /// out would take every send that overtook this one on another connection for someone
    /// else's, and a burst's answers would invent another client. So the estimate errs low
    /// by what was admitted while this call was on its way; the largest estimate of an
    /// epoch is what counts, and the answers of calls that had the window to themselves
    /// read it exactly.
    ///
    /// A `reported_max` below the configured limit (a lower tier than configured) counts as
    /// that many more slots that are not ours; a higher one changes nothing. The gap is
    /// taken out of HubSpot's count before the rest is judged, so it is not counted twice.
    pub fn observe_usage(&mut self, now: Tick, hub_used: u32, reported_max: u32, admitted: Tick) {
        let now = self.effective(now);
        let admitted = admitted.min(now);
        let gone = self.sends.partition_point(|&t| self.leaves(t) <= admitted);
        let ours = u32::try_from(self.sends.len() - gone).unwrap_or(u32::MAX);
        let tier_gap = self.limit.saturating_sub(reported_max).min(self.capacity);
        let calls = hub_used.saturating_sub(ours).min(self.capacity);
        let span = self.span;
        if self.outside.calls.roll(now, span) {
            self.outside.rejected = 0;
        }
        self.outside.calls.record(now, span, calls);
        self.outside.tier_gap.record(now, span, tier_gap);
        self.outside.hub_used = hub_used.min(reported_max);
    }

    /// HubSpot answered 429 for one of our sends on this window, at `now`: one more call
    /// than fitted, so one more slot belongs to someone else.
    pub fn observe_rejection(&mut self, now: Tick) {
        let now = self.effective(now);
        let span = self.span;
        if self.outside.calls.roll(now, span) {
            self.outside.rejected = 0;
        }
        self.outside.rejected = self.outside.rejected.saturating_add(1).min(self.capacity);
        let rejected = self.outside.rejected;
        self.outside.calls.record(now, span, rejected);
    }

    /// Sends admitted per window (limit minus slot margin).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How long one send occupies the window, including the time margin.
    pub fn span(&self) -> Duration {
        Duration::from_micros(self.span)
    }

    /// The tick before which `block_until` forbids sending.
    pub fn blocked_until(&self) -> Tick {
        self.blocked_until
    }

    /// The recorded send times, oldest first: the whole state a shared store must keep.
    pub fn sends(&self) -> impl ExactSizeIterator<Item = Tick> + '_ {
        self.sends.iter().copied()
    }

    /// Log slots allocated (each one `Tick`, 8 bytes): the budget's heap cost.
    pub fn log_capacity(&self) -> usize {
        self.sends.capacity()
    }

    /// Time never runs backwards inside the log: an earlier `now` than the newest send is
    /// read as that send's tick, which keeps the log sorted and errs on the safe side.
    fn effective(&self, now: Tick) -> Tick {
        match self.sends.back() {
            Some(&last) if last > now => last,
            _ => now,
        }
    }

    /// When the send at `t` stops counting; `Tick::MAX` (never) when that overflows.
    fn leaves(&self, t: Tick) -> Tick {
        match t.0.checked_add(self.span) {
            Some(v) => Tick(v),
            None => Tick::MAX,
        }
    }

    /// Earliest tick `>= now` at which one send is allowed; `Tick::MAX` means never.
    pub fn next_free(&self, now: Tick) -> Tick {
        if self.capacity == 0 {
            return Tick::MAX;
        }
        let capacity = self.capacity_at(now) as usize;
        let now = self.effective(now).max(self.blocked_until);
        if self.sends.len() >= capacity {
            let oldest = self.sends[self.sends.len() - capacity];
            now.max(self.leaves(oldest))
        } else {
            now
        }
    }

    /// Whether one send is allowed at `now`, without recording it: `Err(not_before)`.
    ///
    /// Nothing is ever admitted at `Tick::MAX`: it stands for "never", and refusing there
    /// keeps saturated arithmetic at the end of time from admitting an extra send.
    pub fn check(&self, now: Tick) -> Result<(), Tick> {
        let free = self.next_free(now);
        if free == Tick::MAX || free > self.effective(now) {
            Err(free)
        } else {
            Ok(())
        }
    }

    /// Records one send at `now` without checking; callers check first (see `BudgetBook`).
    pub fn commit(&mut self, now: Tick) {
        let now = self.effective(now);
        if self.sends.capacity() == 0 {
            self.sends
                .reserve_exact((self.capacity as usize).min(PREALLOC_MAX));
        }
        if self.sends.len() >= self.capacity as usize {
            self.sends.pop_front();
        }
        if self.capacity > 0 {
            self.sends.push_back(now);
        }
    }

    /// One of our sends, admitted at or before `admitted`, reached HubSpot no later than
    /// `by`: its answer (or failure) came then, or its connection opened only then. The
    /// newest send at or before `admitted` moves to `by`, so the log holds the slot until
    /// HubSpot has surely let it go (`by + span`), however long the network or HubSpot's
    /// own queue delayed the call. Moving a send later only ever keeps its slot longer; any
    /// send of the log stands for any other.
    pub fn observe_arrival_bound(&mut self, admitted: Tick, by: Tick) {
        let span = self.span;
        let delay = u32::try_from(by.0.saturating_sub(admitted.0)).unwrap_or(u32::MAX);
        self.answer_delay.record(by, span, delay);
        let at = self.sends.partition_point(|&t| t <= admitted);
        let Some(newest) = at.checked_sub(1) else {
            return;
        };
        if by <= self.sends[newest] {
            return;
        }
        self.sends.remove(newest);
        let to = self.sends.partition_point(|&t| t <= by);
        self.sends.insert(to, by);
    }

    /// Admits and records one send at `now`, or says when to try again.
    pub fn try_reserve(&mut self, now: Tick) -> Result<(), Tick> {
        self.check(now)?;
        self.commit(now);
        Ok(())
    }

    /// Sends in the log that still count at `now`, ignoring `block_until`.
    fn in_window(&self, now: Tick) -> u32 {
        let now = self.effective(now);
        let gone = self.sends.partition_point(|&t| self.leaves(t) <= now);
        u32::try_from(self.sends.len() - gone).unwrap_or(u32::MAX)
    }

    /// Slots taken at `now`; a blocked window counts as full.
    pub fn used(&self, now: Tick) -> u32 {
        if self.blocked_until > now {
            self.capacity
        } else {
            self.in_window(now)
        }
    }

    /// Slots free at `now` (capacity, less another client's observed use, minus used).
    pub fn remaining(&self, now: Tick) -> u32 {
        self.capacity_at(now).saturating_sub(self.used(now))
    }

    /// HubSpot answered 429: treat the window as full until `until` (never shortens a block).
    pub fn block_until(&mut self, until: Tick) {
        self.blocked_until = self.blocked_until.max(until);
    }

    /// HubSpot reports `reported` requests left in its window; if that is fewer than we
    /// believe, fill the log with phantom sends at `now` so that ours matches (keeping the
    /// slot margin). More than we believe changes nothing: the configured limit stays the
    /// ceiling.
    ///
    /// Phantoms are stamped `now` because we can not know when the other client sent; that
    /// holds them for a full span, which may cost some throughput but never a 429.
    pub fn observe_remaining(&mut self, now: Tick, reported: u32) {
        let hub_used = self.limit.saturating_sub(reported).min(self.capacity);
        let used = self.in_window(now);
        for _ in used..hub_used {
            self.commit(now);
        }
    }

    /// Wait, from `now`, until the send with `ahead` sends queued before it may leave,
    /// assuming every one of them leaves as early as allowed. `Duration::MAX` means never.
    ///
    /// Future send `k` leaves at `t_k = max(base, t_{k-C} + span)` where `C` is the capacity
    /// and indices below zero reach into the log; for `k >= C` that is `t_{k-C} + span`, so
    /// `t_k = t_{k mod C} + (k div C)·span`: O(1), however long the queue.
    pub fn estimate_wait(&self, now: Tick, ahead: usize) -> Duration {
        if self.capacity == 0 {
            return Duration::MAX;
        }
        let base = self.effective(now).max(self.blocked_until);
        let cap = self.capacity_at(now) as usize;
        let (rounds, slot) = (ahead / cap, ahead % cap);
        let logged = self.sends.len();
        let first = if logged + slot >= cap {
            base.max(self.leaves(self.sends[logged + slot - cap]))
        } else {
            base
        };
        let rounds = u64::try_from(rounds).unwrap_or(u64::MAX);
        let at = first.saturating_add_micros(rounds.saturating_mul(self.span));
        if at == Tick::MAX {
            Duration::MAX
        } else {
            at.saturating_duration_since(now)
        }
    }

    /// Takes on a new spec in place (a config reload): the sends already made keep
    /// counting, measured with the new span, so a lowered limit holds from the next send
    /// and a raised one frees slots at once. Only the newest `capacity` sends matter for
    /// admission, so older ones are dropped; what another client was seen to spend is kept.
    pub fn respec(&mut self, spec: WindowSpec) {
        self.limit = spec.limit.min(WindowSpec::MAX_LIMIT);
        self.capacity = spec.capacity();
        self.span = spec.span_micros();
        let keep = self.capacity as usize;
        if self.sends.len() > keep {
            self.sends.drain(..self.sends.len() - keep);
            self.sends.shrink_to(keep);
        }
        let capacity = self.capacity;
        self.outside.calls.clamp(capacity);
        self.outside.tier_gap.clamp(capacity);
        self.outside.rejected = self.outside.rejected.min(capacity);
    }

    /// Whether forgetting this budget would change no answer from `now` on.
    pub fn is_idle(&self, now: Tick) -> bool {
        self.blocked_until <= now
            && self
                .sends
                .back()
                .is_none_or(|&last| self.leaves(last) <= now)
    }
}

#[cfg(test)]
mod tests;
