//! What every store offers the pacer: one atomic reservation per send (a lane's batch of
//! them in one round trip), wait estimates, lessons from HubSpot's answers, and read-only
//! views of each budget.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hubgate_engine::{Budget, BudgetBook, BudgetKey, DailyExhausted, Limits, Reservation, Tick};

/// A boxed future, so the trait stays object-safe for a network-backed store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something HubSpot told hubgate about a budget (a 429, rate-limit headers) that the
/// store must apply, so every replica sharing the store acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lesson {
    /// HubSpot answered 429 for this window budget: treat it as full until `until`.
    BlockUntil { key: BudgetKey, until: Tick },
    /// `X-HubSpot-RateLimit-Remaining` (or its daily twin for `Daily` keys) reported this
    /// many calls left: lower the local view to match, never raise it.
    Remaining { key: BudgetKey, remaining: u64 },
    /// HubSpot answered 429 `DAILY`: the portal's daily budget is spent until its reset.
    DailyExhausted { portal_id: u64 },
    /// HubSpot counted `hub_used` calls in this window budget (`-Max` minus `-Remaining`);
    /// the part our own sends do not explain is another client's, and is left to it.
    Usage {
        key: BudgetKey,
        hub_used: u64,
        /// `-Max`: HubSpot's limit for this window (a lower tier than configured is believed).
        max: u64,
        /// When the call this count came with was admitted: sends of ours admitted later
        /// are not counted as ones HubSpot had seen.
        admitted: Tick,
    },
    /// HubSpot answered 429 for one of our sends on this window budget.
    Rejected { key: BudgetKey },
    /// A send admitted by `admitted` reached HubSpot no later than `by`, the moment its
    /// answer (or its failure) came back, or it was still on its way then: the window
    /// holds its slot until `by` plus the window, which is when HubSpot has surely let it
    /// go. `held_at` is where the log holds it now: its admission, or the `by` of the
    /// last bound taken while it was on its way.
    ArrivedBy {
        key: BudgetKey,
        admitted: Tick,
        held_at: Tick,
        by: Tick,
    },
}

/// Budget state behind one atomic operation per send. A shared store (Redis) answers
/// `reserve` (and a lane's `reserve_many`) in one round trip; the in-memory store answers
/// `try_reserve_now` at once.
pub trait BudgetStore: Send + Sync + std::fmt::Debug + 'static {
    /// All-or-nothing: one slot in every budget of `keys`, or nothing and the reason.
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Reservation>;

    /// Reserves for each of `asks` in order, each all-or-nothing as `reserve`, and stops
    /// at the first that is not granted: the answers of a prefix of `asks`, every one
    /// `Granted` but the last, which may be a refusal. Asks after it are not tried and
    /// spend nothing. A shared store answers them all in one round trip; by default it is
    /// `reserve` once per ask.
    fn reserve_many<'a>(
        &'a self,
        asks: &'a [&'a [BudgetKey]],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Vec<Reservation>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(asks.len());
            for keys in asks {
                let answer = self.reserve(keys, now, unix_ms).await;
                let granted = answer == Reservation::Granted;
                answers.push(answer);
                if !granted {
                    break;
                }
            }
            answers
        })
    }

    /// Most asks for `keys` worth handing `reserve_many` at once: 1 for a store that
    /// answers without I/O, whose lanes reserve one call at a time as they always did; on a
    /// store shared by replicas, at most one replica's share of the window.
    fn batch_limit(&self, _keys: &[BudgetKey]) -> usize {
        1
    }

    /// A tick before which a reservation for `keys` is known to be refused, unless a
    /// lesson about them comes first (a store that needs a round trip keeps what one more
    /// send would meet after a granted batch), so a lane sleeps instead of asking only to
    /// hear it; `None`: ask.
    fn known_wait(&self, _keys: &[BudgetKey], _now: Tick) -> Option<Tick> {
        None
    }

    /// The tick that names the stamp a reservation asked for at `asked_at`, and granted by
    /// `answered_at`, left in each window's log, for the lessons of its call's answer
    /// (`Lesson::ArrivedBy`'s `held_at`). A store in memory stamps at `asked_at` exactly;
    /// a store that stamps on a clock of its own says the earliest local tick no earlier
    /// than its stamp. Too early a tick would take an older send for the call's own and
    /// hold both a window longer; too late a one could take a later call's.
    fn stamp_tick(&self, asked_at: Tick, _answered_at: Tick) -> Tick {
        asked_at
    }

    /// The same as `reserve` when the store can answer without I/O; `None` when it cannot,
    /// and the caller must queue and let the lane's driver do the round trip.
    fn try_reserve_now(&self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Option<Reservation>;

    /// How long a call spending `keys` with `ahead` calls before it would wait, from the
    /// store's (possibly local) view; `Err` when a daily budget has nothing left.
    fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted>;

    /// Applies what HubSpot said about a budget.
    fn learn(&self, lesson: Lesson, now: Tick, unix_ms: i64) -> StoreFuture<'_, ()>;

    /// Whether `learn` finishes without I/O. A store that needs a round trip (Redis) has
    /// what a successful answer's headers teach applied on a task of its own: the lesson
    /// corrects the budget for later sends, so the answer it came with need not wait.
    fn learns_locally(&self) -> bool {
        true
    }

    /// Takes on new limits (a config reload) at `unix_ms`: live budgets keep their sends
    /// and counts and are judged by the new limits from the next reservation on.
    fn set_limits(&self, limits: Limits, unix_ms: i64);

    /// Drops budgets idle for `idle_ttl`; returns how many.
    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize;

    /// How many budgets are held.
    fn len(&self) -> usize;

    /// Every live budget as it stands at `now` / `unix_ms`, read-only, for the admin API
    /// and the budget metrics (scrape time, never per call).
    fn snapshot(&self, now: Tick, unix_ms: i64) -> Vec<BudgetView>;

    /// The keys of every live budget, without computing their views: what a page of the
    /// admin API sorts before it reads the few budgets it shows.
    fn keys(&self) -> Vec<BudgetKey>;

    /// One live budget's view (`None` if not live), found by its key in O(1).
    fn view(&self, key: &BudgetKey, now: Tick, unix_ms: i64) -> Option<BudgetView>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies a lesson to a book in memory: the whole of `MemoryStore::learn`, and what the
/// Redis store does with its local books.
pub fn apply_lesson(book: &mut BudgetBook, lesson: Lesson, now: Tick, unix_ms: i64) {
    match lesson {
        Lesson::BlockUntil { key, until } => book.block_until(&key, now, until),
        Lesson::Remaining {
            key: BudgetKey::Daily { portal_id },
            remaining,
        } => book.observe_daily_remaining(portal_id, now, unix_ms, remaining),
        Lesson::Remaining { key, remaining } => {
            book.observe_remaining(&key, now, u32::try_from(remaining).unwrap_or(u32::MAX))
        }
        Lesson::DailyExhausted { portal_id } => book.mark_daily_exhausted(portal_id, now, unix_ms),
        Lesson::Usage {
            key,
            hub_used,
            max,
            admitted,
        } => book.observe_usage(
            &key,
            now,
            u32::try_from(hub_used).unwrap_or(u32::MAX),
            u32::try_from(max).unwrap_or(u32::MAX),
            admitted,
        ),
        Lesson::Rejected { key } => book.observe_rejection(&key, now),
        Lesson::ArrivedBy {
            key,
            admitted,
            held_at,
            by,
        } => book.observe_arrival_bound(&key, admitted, held_at, by),
    }
}

/// One budget's state at a moment: plain numbers, so any store (memory, Redis) can fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetView {
    pub key: BudgetKey,
    /// Sends allowed per window (HubSpot's limit less `margin_slots`) or per day; 0 for an
    /// unlimited daily budget.
    pub limit: u64,
    /// Sends in the current rolling window (a window HubSpot blocked counts as full), or
    /// counted today.
    pub used: u64,
    /// Sends still allowed now; `u64::MAX` for an unlimited daily budget.
    pub remaining: u64,
    /// How long until one more send is allowed: 0 when one is allowed now, `None` never
    /// (limit 0) or, for daily budgets, not before `resets_at_unix_ms`.
    pub next_free_in: Option<Duration>,
    /// Daily budgets: unix ms of the next reset (local midnight).
    pub resets_at_unix_ms: Option<i64>,
    /// Window budgets: slots kept free for clients hubgate cannot see (and a lower tier
    /// than configured), as learned from HubSpot's count; 0 for daily budgets.
    pub outside_slots: u64,
    /// Window budgets: HubSpot's own count at the latest answer, if recent.
    pub hubspot_used: Option<u64>,
    /// Window budgets: the largest delay between a send and its answer lately, which is
    /// how much longer than the window each slot is being held.
    pub answer_delay: Duration,
}

impl BudgetView {
    /// Every budget of `book` as it stands at `now` / `unix_ms`.
    pub fn all(book: &BudgetBook, now: Tick, unix_ms: i64) -> Vec<BudgetView> {
        book.iter()
            .map(|(key, budget)| BudgetView::of(*key, budget, now, unix_ms))
            .collect()
    }

    /// The view of `budget` named `key`.
    pub fn of(key: BudgetKey, budget: &Budget, now: Tick, unix_ms: i64) -> BudgetView {
        match budget {
            Budget::Window(log) => {
                let next = log.next_free(now);
                BudgetView {
                    key,
                    limit: u64::from(log.capacity()),
                    used: u64::from(log.used(now)),
                    remaining: u64::from(log.remaining(now)),
                    next_free_in: (next != Tick::MAX).then(|| next.saturating_duration_since(now)),
                    resets_at_unix_ms: None,
                    outside_slots: u64::from(log.held_for_outside(now)),
                    hubspot_used: log.hubspot_count(now).map(u64::from),
                    answer_delay: log.answer_delay(now),
                }
            }
            Budget::Daily(day) => {
                let reset = day.reset_at(unix_ms);
                let remaining = day.remaining(unix_ms);
                BudgetView {
                    key,
                    limit: day.limit(),
                    used: day.used(unix_ms),
                    remaining,
                    next_free_in: Some(if remaining > 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(u64::try_from(reset - unix_ms).unwrap_or(0))
                    }),
                    resets_at_unix_ms: Some(reset),
                    outside_slots: 0,
                    hubspot_used: None,
                    answer_delay: Duration::ZERO,
                }
            }
        }
    }
}
