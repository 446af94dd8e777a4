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

use std::time::Duration;

use super::time::{micros_ceil, Tick};
use outside::{EpochMax, Outside};
use send_log::SendLog;

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
    /// Whether a send after a quiet spell waits for a first answer (see
    /// `SlidingLog::probe_out_until`): for windows whose answers carry HubSpot's count.
    pub learn_first: bool,
}

impl WindowSpec {
    /// Largest limit the engine honours; larger limits are clamped down to it.
    ///
    /// The log stores one tick per slot, so an absurd configured limit must not turn into
    /// an absurd allocation: at most 8 MiB, and only once that many sends were made in
    /// one window. HubSpot's largest documented burst is 250; the headroom is for budgets
    /// set high on purpose so that they never bind (a gateway measured for its own cost),
    /// and clamping lowers throughput but never breaks the limit.
    pub const MAX_LIMIT: u32 = 1 << 20;

    /// A spec without safety margins.
    pub const fn new(limit: u32, window: Duration) -> WindowSpec {
        WindowSpec {
            limit,
            window,
            margin_time: Duration::ZERO,
            margin_slots: 0,
            learn_first: false,
        }
    }

    /// The same spec, learning HubSpot's count before spending after a quiet spell.
    pub const fn learning_first(self) -> WindowSpec {
        WindowSpec {
            learn_first: true,
            ..self
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
    sends: SendLog,
    /// Slots another client of the same budget (Zapier, a second region) spends, as
    /// learned from HubSpot's `-Remaining`; they are kept free for it.
    outside: Outside,
    /// How long after their admission our answers came back, largest per epoch: the time
    /// margin the log is really holding sends for, beyond `span`.
    answer_delay: EpochMax,
    /// Whether quiet spells end with a probe (`WindowSpec::learn_first`).
    learn_first: bool,
    /// When HubSpot's count was last read from an answer; `Tick::MAX` never.
    last_counted: Tick,
    /// When another client's use was last seen above zero; `Tick::MAX` never.
    outside_seen: Tick,
    /// The admission of the send that ends the current quiet spell; `Tick::MAX` none.
    probe: Tick,
    /// The latest admission (sends move later as answers come; this does not).
    last_admitted: Tick,
    /// Oldest sends found gone from the window at the latest search for them: where the
    /// next one starts. Any value gives the same answers, only slower; the log never holds
    /// more than `MAX_LIMIT` sends, so it fits `u32`.
    gone_hint: u32,
}

/// The longest a probe holds the rest back: beyond it, an answer that slow says little
/// about the window now, and the calls waiting would pay more than a stale count costs.
const PROBE_TIMEOUT_MAX_MICROS: u64 = 250_000;

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
            sends: SendLog::default(),
            outside: Outside::NONE,
            answer_delay: EpochMax::EMPTY,
            learn_first: spec.learn_first,
            last_counted: Tick::MAX,
            outside_seen: Tick::MAX,
            probe: Tick::MAX,
            last_admitted: Tick::ZERO,
            gone_hint: 0,
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
    /// the last two spans.
    pub fn hubspot_count(&self, now: Tick) -> Option<u32> {
        let read = self.last_counted;
        (read != Tick::MAX && now.0 < read.0.saturating_add(self.span.saturating_mul(2)))
            .then_some(self.outside.hub_used)
    }

    /// The largest delay, within the last two spans, between a send's admission and its
    /// answer: how much longer than `span` the log holds sends, as measured.
    pub fn answer_delay(&self, now: Tick) -> Duration {
        Duration::from_micros(u64::from(self.answer_delay.value_at(now, self.span)))
    }

    /// While another client's use is held for, sends are spaced a span over the slots left
    /// to hubgate apart: the earliest tick the next may go.
    ///
    /// A saturated owner would otherwise send in bursts (each slot is reused a window after
    /// it was taken), and read HubSpot's count only at those bursts: another client's
    /// peaks in between (a block of calls landing beside an earlier one) go unseen, so the
    /// estimate misses them and the next block collides with a full window. Evenly spaced
    /// sends read the count all the time, let as many calls through per window, and leave
    /// the other client's calls room wherever in the window they land. Without another
    /// client, a burst up to the limit still leaves at once.
    fn spaced_from(&self, now: Tick, capacity: usize) -> Tick {
        if !self.learn_first || !self.outside.is_present(now, self.span) || capacity == 0 {
            return Tick::ZERO;
        }
        let spacing = self.span / capacity as u64;
        self.last_admitted.saturating_add_micros(spacing)
    }

    /// Whether a send at `now` would go after a quiet spell, so it should be sent alone and
    /// its answer read before any other: nothing was learned in the last four spans, or
    /// another client was seen within four spans and HubSpot's count is older than a tenth
    /// of one.
    ///
    /// Between a saturated owner's bursts no answer comes back (see `spaced_from`), so a
    /// burst judged on the last count could overflow the window. One send first, then the
    /// rest on its fresh count, costs one answer's delay per quiet spell, and only while
    /// someone else is spending the budget or nothing is known.
    fn ends_quiet_spell(&self, now: Tick) -> bool {
        if !self.learn_first {
            return false;
        }
        let four_spans = self.span.saturating_mul(4);
        if self.last_counted == Tick::MAX || now.0 >= self.last_counted.0.saturating_add(four_spans)
        {
            return true;
        }
        let seen_lately = self.outside_seen != Tick::MAX
            && now.0 < self.outside_seen.0.saturating_add(four_spans);
        seen_lately && now.0 > self.last_counted.0.saturating_add(self.span / 10)
    }

    /// While a probe is out and unanswered, the tick until which nothing else is sent: the
    /// probe's admission plus twice the recent answer delay (a twentieth of a span when no
    /// delay was measured yet; at most a quarter of a span or 250 ms). An answer that brings
    /// HubSpot's count ends the wait at once; one that never comes ends it at the timeout.
    pub fn probe_out_until(&self, now: Tick) -> Option<Tick> {
        if !self.probe_unanswered() || !self.ends_quiet_spell(now) {
            return None;
        }
        let delay = u64::from(self.answer_delay.value_at(now, self.span));
        let timeout = if delay == 0 {
            self.span / 20
        } else {
            delay.saturating_mul(2).saturating_add(1_000)
        };
        let until = self
            .probe
            .saturating_add_micros(timeout.min(self.span / 4).min(PROBE_TIMEOUT_MAX_MICROS));
        (until > now).then_some(until)
    }

    /// Whether a probe went out and no count came back since. One whose answer is late or
    /// never brings a count (a failure) stops holding the rest back at its timeout, and no
    /// new probe starts until some answer brings a count again: otherwise every send of a
    /// slow upstream would become a probe of its own.
    fn probe_unanswered(&self) -> bool {
        self.probe != Tick::MAX
            && (self.last_counted == Tick::MAX || self.last_counted < self.probe)
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
    /// by what was admitted while this call was on its way; the largest estimate of the
    /// last window is what counts, and the answers of calls that had the window to themselves
    /// read it exactly.
    ///
    /// A `reported_max` below the configured limit (a lower tier than configured) counts as
    /// that many more slots that are not ours; a higher one changes nothing. The gap is
    /// taken out of HubSpot's count before the rest is judged, so it is not counted twice.
    pub fn observe_usage(&mut self, now: Tick, hub_used: u32, reported_max: u32, admitted: Tick) {
        let now = self.effective(now);
        let admitted = admitted.min(now);
        let gone = self.gone_by(admitted);
        self.gone_hint = gone as u32;
        let ours = u32::try_from(self.sends.len() - gone).unwrap_or(u32::MAX);
        let tier_gap = self.limit.saturating_sub(reported_max).min(self.capacity);
        let calls = hub_used.saturating_sub(ours).min(self.capacity);
        self.outside
            .observe_count(now, self.span, calls, tier_gap, hub_used.min(reported_max));
        self.last_counted = now;
        if calls > 0 {
            self.outside_seen = now;
        }
    }

    /// HubSpot answered 429 for one of our sends on this window, at `now`: one more call
    /// than fitted, so one more slot belongs to someone else.
    pub fn observe_rejection(&mut self, now: Tick) {
        let now = self.effective(now);
        self.outside
            .observe_rejection(now, self.span, self.capacity);
        self.outside_seen = now;
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
        self.sends.iter()
    }

    /// Log slots allocated (each one `Tick`, 8 bytes): the budget's heap cost.
    pub fn log_capacity(&self) -> usize {
        self.sends.capacity()
    }

    /// Time never runs backwards inside the log: an earlier `now` than the newest send is
    /// read as that send's tick, which keeps the log sorted and errs on the safe side.
    fn effective(&self, now: Tick) -> Tick {
        match self.sends.back() {
            Some(last) if last > now => last,
            _ => now,
        }
    }

    /// When the send at `t` stops counting; `Tick::MAX` (never) when that overflows.
    fn leaves(&self, t: Tick) -> Tick {
        leaves(t, self.span)
    }

    /// Oldest sends whose hold has ended by `at`: searched from where the latest search
    /// for them ended, since that boundary only creeps forward as time passes.
    fn gone_by(&self, at: Tick) -> usize {
        let span = self.span;
        self.sends
            .partition_near(self.gone_hint as usize, |t| leaves(t, span) <= at)
    }

    /// Earliest tick `>= now` at which one send is allowed; `Tick::MAX` means never.
    pub fn next_free(&self, now: Tick) -> Tick {
        if self.capacity == 0 {
            return Tick::MAX;
        }
        let capacity = self.capacity_at(now) as usize;
        // Judged at `now` itself, not the newest send's tick when that is later: the send
        // is stamped at `now` (see `commit`), and any `capacity + 1` sends in a row, this
        // one among them, then start with one whose hold ended by `now`.
        let now = now
            .max(self.blocked_until)
            .max(self.probe_out_until(now).unwrap_or(Tick::ZERO))
            .max(self.spaced_from(now, capacity));
        if self.sends.len() >= capacity {
            let oldest = self.sends.get(self.sends.len() - capacity);
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
        if free == Tick::MAX || free > now {
            Err(free)
        } else {
            Ok(())
        }
    }

    /// Records one send at `now` without checking; callers check first (see `BudgetBook`).
    ///
    /// The send is stamped at `now` exactly, in its place among any sends stamped later
    /// (another thread's, a moment before, or sends moved to their answers): an answer's
    /// bound then finds the very stamp its call's admission left (`observe_arrival_bound`
    /// with `held_at` = `now`). Stamped at the newest tick instead, a send admitted a
    /// moment after another on a second thread would sit later than its admission, and
    /// its answer would move nothing.
    pub fn commit(&mut self, now: Tick) {
        if self.ends_quiet_spell(now) && !self.probe_unanswered() {
            self.probe = now;
        }
        self.last_admitted = self.last_admitted.max(now);
        if self.sends.capacity() == 0 {
            self.sends
                .reserve_exact((self.capacity as usize).min(PREALLOC_MAX));
        }
        if self.sends.len() >= self.capacity as usize {
            self.sends.pop_front();
            self.gone_hint = self.gone_hint.saturating_sub(1);
        }
        if self.capacity > 0 {
            self.sends.insert_sorted(now);
            // Keeps the next search for sends gone from the window short when no answer
            // brings HubSpot's count (which moves it on too).
            self.gone_hint = self.gone_by(now) as u32;
        }
    }

    /// One of our sends, admitted at or before `admitted`, reached HubSpot no later than
    /// `by`: its answer (or failure) came then, or its connection opened only then, or it
    /// was still on its way then. The newest send at or before `held_at` (its admission,
    /// or where an earlier bound for the same send moved it) moves to `by`, so the log
    /// holds the slot until HubSpot has surely let it go (`by + span`), however long the
    /// network or HubSpot's own queue delayed the call. Moving a send later only ever
    /// keeps its slot longer; any send of the log stands for any other.
    ///
    /// A call still unanswered a span after its admission would otherwise free its slot
    /// while HubSpot may not even have counted it yet: bounds taken while it is on its way,
    /// each less than a span after the last, keep it held until the answer comes.
    pub fn observe_arrival_bound(&mut self, admitted: Tick, held_at: Tick, by: Tick) {
        let span = self.span;
        let delay = u32::try_from(by.0.saturating_sub(admitted.0)).unwrap_or(u32::MAX);
        self.answer_delay.record(by, span, delay);
        let at = self.sends.at_or_before(held_at);
        let Some(newest) = at.checked_sub(1) else {
            return;
        };
        if by <= self.sends.get(newest) {
            return;
        }
        self.sends.move_later(newest, by);
    }

    /// Admits and records one send at `now`, or says when to try again.
    pub fn try_reserve(&mut self, now: Tick) -> Result<(), Tick> {
        self.check(now)?;
        self.commit(now);
        Ok(())
    }

    /// Sends in the log that still count at `now`, ignoring `block_until`.
    fn in_window(&self, now: Tick) -> u32 {
        let gone = self.gone_by(self.effective(now));
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
            base.max(self.leaves(self.sends.get(logged + slot - cap)))
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
        self.learn_first = spec.learn_first;
        let keep = self.capacity as usize;
        if self.sends.len() > keep {
            self.sends.keep_newest(keep);
            self.sends.shrink_to(keep);
            self.gone_hint = 0;
        }
        self.outside.clamp(self.capacity);
    }

    /// Whether forgetting this budget would change no answer from `now` on.
    pub fn is_idle(&self, now: Tick) -> bool {
        self.blocked_until <= now
            && self
                .sends
                .back()
                .is_none_or(|last| self.leaves(last) <= now)
    }
}

/// When a send at `t` held for `span` stops counting; `Tick::MAX` (never) on overflow.
fn leaves(t: Tick, span: u64) -> Tick {
    match t.0.checked_add(span) {
        Some(v) => Tick(v),
        None => Tick::MAX,
    }
}

mod outside;
mod send_log;
#[cfg(test)]
mod tests;
