//! Pacing: each call waits in its owner's lane until every budget it spends has a free
//! slot, then goes; calls that cannot make their deadline are refused instead.
//!
//! A lane holds an owner's waiting calls of one kind (burst, search or other, so a slow
//! search never holds up the owner's other calls) in a `FairQueue`: strict priority
//! between `high`, `normal` and `low`, deficit round robin between callers. A call that
//! finds its lane empty reserves at once when the store can answer without I/O, so a
//! burst from idle leaves with no delay. Otherwise it queues, and the lane's driver task —
//! spawned when the lane gets busy, gone when it empties — reserves for the head, sleeps
//! until the store's "not before" or the next deadline, and wakes on new arrivals.
//! Nothing polls: an idle owner has no task and no timer, and a sweeper drops idle lanes.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::{oneshot, Notify};
use tower::retry::budget::TpsBudget;

use crate::classify::Keys;
use crate::clock::Clock;
use hubgate_engine::{
    BudgetKey, CallerId, FairQueue, Priority, QueueTicket, RejectReason, Reservation, Seat, Tick,
};
use crate::identity::Owner;
use crate::retry::RetryConfig;
use crate::store::BudgetStore;

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The owner's queue already holds `[queue] max_depth_per_owner` calls; `drain` is
    /// about how long until it has room again.
    QueueFull { depth: usize, drain: Duration },
    /// The estimated wait exceeds the call's deadline, so it was refused on arrival.
    DeadlineUnmeetable {
        estimate: Duration,
        deadline: Duration,
    },
    /// The call's deadline passed while it waited; `retry_after` is the wait a new call
    /// would face now.
    DeadlineExpired {
        waited: Duration,
        retry_after: Duration,
    },
    /// A daily budget has nothing left until its reset.
    DailyExhausted { resets_at_unix_ms: i64 },
    /// The shared budget store is unreachable and `[store] on_failure = "fail_closed"`.
    StoreUnavailable,
}

/// A call's verdict as its lane's driver delivers it.
type Verdict = Result<Duration, Refusal>;

/// What waits in a lane.
struct Waiter {
    /// The budgets the call spends.
    keys: Keys,
    /// Its caller and weight, to count its send against the caller's share.
    seat: Seat,
    /// Where the verdict goes; the caller's future holds the receiver.
    reply: oneshot::Sender<Verdict>,
    /// When the call arrived, for `X-Hubgate-Queue-Ms`.
    arrived: Tick,
}

/// Lanes split an owner's calls by the window they wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LaneKind {
    /// Calls spending a burst-like window (burst, unidentified, anonymous).
    Burst,
    /// CRM searches, which spend the portal's search window.
    Search,
    /// Calls spending no window (exempt ones with only a daily budget).
    Other,
}

impl LaneKind {
    /// The window this kind's callers split.
    fn fair_window(self, windows: &FairWindows) -> (u32, Duration) {
        match self {
            LaneKind::Burst => windows.burst,
            LaneKind::Search => windows.search,
            LaneKind::Other => (0, Duration::ZERO),
        }
    }

    fn of(keys: &Keys) -> LaneKind {
        if keys.iter().any(|k| matches!(k, BudgetKey::Search { .. })) {
            LaneKind::Search
        } else if keys.iter().any(|k| !matches!(k, BudgetKey::Daily { .. })) {
            LaneKind::Burst
        } else {
            LaneKind::Other
        }
    }
}

/// One owner's queue of one kind and the state of its driver.
struct Lane {
    state: Mutex<LaneState>,
    /// Wakes the driver early: a new waiter may carry an earlier deadline or a higher
    /// priority, or the head left.
    wake: Notify,
    /// First tries deposit, retries withdraw: retries stay a share of recent traffic.
    /// Replaced when a reload changes the budget's terms.
    retry_budget: ArcSwap<TpsBudget>,
}

struct LaneState {
    queue: FairQueue<Waiter>,
    /// Whether a driver task owns this lane now; at most one does.
    driving: bool,
    /// When the lane was last used, for idle eviction.
    idle_since: Tick,
    /// When a `high` call last asked; while that is recent, other calls leave the
    /// high reserve free.
    last_high: Option<Tick>,
    /// Each caller's recent sends, so callers active together split the window.
    shares: Shares,
}

/// The active callers of one priority, for splitting a window between them.
struct Split {
    total_weight: u64,
    callers: usize,
}

/// Each caller's sends within the lane's window. Deficit round robin alone orders the
/// waiting calls, but a caller with one call in flight is not waiting when a window's
/// slots free up all at once; its share is kept for it while it is active (sent within
/// the window), and given to the others once it is not.
struct Shares {
    /// The lane's window: capacity and length (capacity 0: no sharing, e.g. exempt calls).
    window: (u32, Duration),
    callers: std::collections::HashMap<CallerId, CallerSends, foldhash::fast::RandomState>,
}

struct CallerSends {
    sends: std::collections::VecDeque<Tick>,
    weight: u32,
    /// Callers share with callers of their own priority; higher ones are served first anyway.
    priority: Priority,
}

impl Shares {
    fn new(window: (u32, Duration)) -> Shares {
        Shares {
            window,
            callers: std::collections::HashMap::default(),
        }
    }

    fn prune(&mut self, now: Tick) {
        let span = self.window.1;
        self.callers.retain(|_, c| {
            while c
                .sends
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= span)
            {
                c.sends.pop_front();
            }
            !c.sends.is_empty()
        });
    }

    fn record(&mut self, seat: Seat, now: Tick) {
        if self.window.0 == 0 {
            return;
        }
        let entry = self
            .callers
            .entry(seat.caller)
            .or_insert_with(|| CallerSends {
                sends: std::collections::VecDeque::new(),
                weight: seat.weight,
                priority: seat.priority,
            });
        entry.weight = seat.weight.max(1);
        entry.priority = seat.priority;
        entry.sends.push_back(now);
    }

    /// How the window splits between the active callers of `priority`: those that sent
    /// within it and those `waiting` (which includes whoever is asking, each caller once:
    /// a queue's ring of callers, or the one asking). Worked out once per decision, then
    /// asked per caller with `allows`; counted in place, without building a set per call.
    fn split(&self, priority: Priority, waiting: &[(CallerId, u32)]) -> Split {
        let mut split = Split {
            total_weight: 0,
            callers: 0,
        };
        for sends in self.callers.values().filter(|s| s.priority == priority) {
            split.total_weight += u64::from(sends.weight.max(1));
            split.callers += 1;
        }
        for &(caller, weight) in waiting {
            if self
                .callers
                .get(&caller)
                .is_none_or(|s| s.priority != priority)
            {
                split.total_weight += u64::from(weight.max(1));
                split.callers += 1;
            }
        }
        split
    }

    /// Whether `caller` may send now without taking the share of another active caller.
    fn allows(&self, split: &Split, caller: CallerId, weight: u32) -> bool {
        let limit = self.window.0;
        if limit == 0 || split.callers <= 1 {
            return true;
        }
        let share =
            (u64::from(limit) * u64::from(weight.max(1)) / split.total_weight.max(1)).max(1);
        let sent = self.callers.get(&caller).map_or(0, |c| c.sends.len()) as u64;
        sent < share
    }

    /// Callers of `priority` active in the window that have nothing waiting: their share
    /// is being kept.
    fn idle_but_active(&self, priority: Priority, waiting: &[(CallerId, u32)]) -> bool {
        self.callers
            .iter()
            .any(|(c, s)| s.priority == priority && !waiting.iter().any(|(w, _)| w == c))
    }

    /// When the next caller's oldest send leaves the window.
    fn next_release(&self) -> Option<Tick> {
        self.callers
            .values()
            .filter_map(|c| c.sends.front())
            .min()
            .map(|t| t.saturating_add(self.window.1))
    }
}

/// The share of each window kept for `high` calls, in slots.
#[derive(Debug, Clone, Copy, Default)]
pub struct HighReserve {
    /// Slots of a burst-like window kept free for `high` calls.
    pub burst_slots: usize,
    /// Slots of a search window kept free for `high` calls.
    pub search_slots: usize,
    /// How long after the last `high` call the reserve is kept; after that it is given
    /// to the other calls (work-conserving).
    pub memory: Duration,
}

/// The windows callers share, per lane kind: capacity and length.
#[derive(Debug, Clone, Copy, Default)]
pub struct FairWindows {
    pub burst: (u32, Duration),
    pub search: (u32, Duration),
}

impl HighReserve {
    fn slots_for(&self, keys: &Keys) -> usize {
        keys.iter()
            .map(|k| match k {
                BudgetKey::Search { .. } => self.search_slots,
                BudgetKey::Daily { .. } => 0,
                _ => self.burst_slots,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Pacing settings, from `[queue]`, `[lanes]`, `[retry]` and `[budgets]`.
#[derive(Debug, Clone)]
pub struct PacerConfig {
    pub max_depth_per_owner: usize,
    /// Lanes and budgets untouched this long are dropped.
    pub idle_ttl: Duration,
    /// Builds each owner's retry budget.
    pub retry: RetryConfig,
    pub high_reserve: HighReserve,
    pub fair_windows: FairWindows,
}

/// One call asking to be sent.
#[derive(Debug, Clone)]
pub struct Ask {
    pub owner: Owner,
    /// The budgets it spends.
    pub keys: Keys,
    /// Its priority, caller and weight.
    pub seat: Seat,
    /// Longest it may wait from now.
    pub max_wait: Duration,
    /// A retry goes to the head of its lane: it already waited its turn once.
    pub retry: bool,
}

/// Shared handle; clones pace through the same lanes and store.
#[derive(Clone)]
pub struct Pacer {
    inner: Arc<PacerInner>,
}

struct PacerInner {
    store: Arc<dyn BudgetStore>,
    /// `DashMap` because every call looks its lane up and owners are many; a guard is
    /// never held across an `.await` (the `Arc<Lane>` is cloned out first).
    lanes: DashMap<(Owner, LaneKind), Arc<Lane>, foldhash::fast::RandomState>,
    clock: Clock,
    /// Swapped whole by a reload; read once per decision.
    config: ArcSwap<PacerConfig>,
}

impl Pacer {
    /// Starts the idle sweeper on the current runtime; it ends when the last handle drops.
    pub fn new(store: Arc<dyn BudgetStore>, clock: Clock, config: PacerConfig) -> Pacer {
        let inner = Arc::new(PacerInner {
            store,
            lanes: DashMap::default(),
            clock,
            config: ArcSwap::from_pointee(config),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&inner)));
        Pacer { inner }
    }

    pub fn store(&self) -> &Arc<dyn BudgetStore> {
        &self.inner.store
    }

    /// Owners with a live lane now (busy or recently used).
    pub fn active_owners(&self) -> usize {
        self.queue_depths().len()
    }

    /// Calls waiting for `owner`, over all its lanes.
    pub fn queue_depth(&self, owner: &Owner) -> usize {
        self.inner
            .lanes
            .iter()
            .filter(|e| e.key().0 == *owner)
            .map(|e| lock(&e.value().state).queue.len())
            .sum()
    }

    /// Whether `owner` may retry one more call of this kind now (spends from its lane's
    /// retry budget).
    pub fn withdraw_retry(&self, owner: Owner, keys: &Keys) -> bool {
        use tower::retry::budget::Budget;
        self.inner
            .lane(owner, LaneKind::of(keys))
            .retry_budget
            .load()
            .withdraw()
    }

    /// Waits until the call may be sent and reserves its budgets, or says why not. The
    /// result is the time waited. Dropping the future (the caller went away) leaves the
    /// queue without spending anything.
    pub async fn admit(&self, ask: Ask) -> Result<Duration, Refusal> {
        let Ask {
            owner,
            keys,
            seat,
            max_wait,
            retry,
        } = ask;
        let inner = self.inner.clone();
        let now = inner.clock.now();
        let unix_ms = inner.clock.unix_ms();
        let lane = inner.lane(owner, LaneKind::of(&keys));
        if !retry {
            use tower::retry::budget::Budget;
            lane.retry_budget.load().deposit();
        }
        let (ticket, receiver) = {
            let mut state = lock(&lane.state);
            state.idle_since = now;
            if seat.priority == Priority::High {
                state.last_high = Some(now);
            }
            state.shares.prune(now);
            let asking = [(seat.caller, seat.weight)];
            let split = state.shares.split(seat.priority, &asking);
            if state.queue.is_empty()
                && state.shares.allows(&split, seat.caller, seat.weight)
                && inner
                    .reserve_wait(&state, seat.priority, &keys, now, unix_ms)
                    .is_zero()
            {
                match inner.store.try_reserve_now(&keys, now, unix_ms) {
                    Some(Reservation::Granted) => {
                        state.shares.record(seat, now);
                        return Ok(Duration::ZERO);
                    }
                    Some(Reservation::DailyExhausted(e)) => {
                        return Err(Refusal::DailyExhausted {
                            resets_at_unix_ms: e.resets_at_unix_ms,
                        })
                    }
                    Some(Reservation::StoreUnavailable) => return Err(Refusal::StoreUnavailable),
                    Some(Reservation::NotBefore(_)) | None => {}
                }
            }
            let estimate = inner
                .store
                .estimate_wait(&keys, now, unix_ms, state.queue.ahead_of(seat))
                .map_err(|e| Refusal::DailyExhausted {
                    resets_at_unix_ms: e.resets_at_unix_ms,
                })?;
            let (reply, receiver) = oneshot::channel();
            let waiter = Waiter {
                keys,
                seat,
                reply,
                arrived: now,
            };
            let deadline = now.saturating_add(max_wait);
            let pushed = if retry {
                Ok(state.queue.push_front(waiter, seat, deadline, now))
            } else {
                state.queue.push(waiter, seat, deadline, now, estimate)
            };
            let ticket = pushed.map_err(|rejected| match rejected.reason {
                RejectReason::QueueFull => Refusal::QueueFull {
                    depth: state.queue.len(),
                    drain: estimate,
                },
                RejectReason::DeadlineUnmeetable { estimate } => Refusal::DeadlineUnmeetable {
                    estimate,
                    deadline: max_wait,
                },
            })?;
            if state.driving {
                lane.wake.notify_one();
            } else {
                state.driving = true;
                tokio::spawn(drive(inner.clone(), lane.clone()));
            }
            (ticket, receiver)
        };
        let mut leave = LeaveOnDrop {
            lane,
            ticket: Some(ticket),
        };
        let verdict = receiver.await;
        leave.ticket = None;
        // The driver never drops a waiter without a verdict; a closed channel means the
        // runtime is shutting down.
        verdict.unwrap_or(Err(Refusal::DeadlineExpired {
            waited: inner.clock.now().saturating_duration_since(now),
            retry_after: Duration::ZERO,
        }))
    }
}

impl PacerInner {
    fn lane(&self, owner: Owner, kind: LaneKind) -> Arc<Lane> {
        if let Some(lane) = self.lanes.get(&(owner, kind)) {
            return lane.clone();
        }
        self.lanes
            .entry((owner, kind))
            .or_insert_with(|| {
                let config = self.config.load();
                Arc::new(Lane {
                    state: Mutex::new(LaneState {
                        queue: FairQueue::new(config.max_depth_per_owner),
                        driving: false,
                        idle_since: self.clock.now(),
                        last_high: None,
                        shares: Shares::new(kind.fair_window(&config.fair_windows)),
                    }),
                    wake: Notify::new(),
                    retry_budget: ArcSwap::from_pointee(config.retry.new_budget()),
                })
            })
            .clone()
    }

    /// How long a call of `priority` must hold back so the high reserve stays free: zero
    /// for `high` calls, when no `high` call asked recently, or when enough slots are free.
    fn reserve_wait(
        &self,
        state: &LaneState,
        priority: Priority,
        keys: &Keys,
        now: Tick,
        unix_ms: i64,
    ) -> Duration {
        let config = self.config.load();
        let reserve = &config.high_reserve;
        let slots = reserve.slots_for(keys);
        let high_recently = state
            .last_high
            .is_some_and(|at| now.saturating_duration_since(at) < reserve.memory);
        if priority == Priority::High || slots == 0 || !high_recently {
            return Duration::ZERO;
        }
        // Free now with `slots` calls ahead means more than `slots` slots are free.
        self.store
            .estimate_wait(keys, now, unix_ms, slots)
            .unwrap_or(Duration::ZERO)
    }
}

/// Removes a waiter whose caller went away before its verdict. It owns its `Arc<Lane>`:
/// a borrowed lane held across the await trips rustc's higher-ranked `Send` check when
/// the future is boxed further up (rust-lang/rust#64552).
struct LeaveOnDrop {
    lane: Arc<Lane>,
    ticket: Option<QueueTicket>,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let mut state = lock(&self.lane.state);
            let was_head = state.queue.peek().map(|(q, _)| q.ticket) == Some(ticket);
            state.queue.remove(ticket);
            if was_head {
                self.lane.wake.notify_one();
            }
        }
    }
}

/// Serves one lane until it is empty: reserve for the head, deliver, or sleep until the
/// store says a slot frees up, the high reserve allows, or a deadline passes.
async fn drive(inner: Arc<PacerInner>, lane: Arc<Lane>) {
    loop {
        let now = inner.clock.now();
        let unix_ms = inner.clock.unix_ms();
        let head = {
            let mut state = lock(&lane.state);
            for expired in state.queue.expire(now) {
                let waited = now.saturating_duration_since(expired.arrived);
                let retry_after = inner
                    .store
                    .estimate_wait(&expired.keys, now, unix_ms, state.queue.len())
                    .unwrap_or(Duration::ZERO);
                let _ = expired.reply.send(Err(Refusal::DeadlineExpired {
                    waited,
                    retry_after,
                }));
            }
            if state.queue.is_empty() {
                state.driving = false;
                state.idle_since = now;
                return;
            }
            state.shares.prune(now);
            // Only the highest priority with waiters competes; within it, callers share.
            let top = state.queue.peek().map_or(Priority::Normal, |(_, p)| p);
            let waiting: Vec<(CallerId, u32)> = state.queue.waiting_callers(top).collect();
            let split = state.shares.split(top, &waiting);
            let fair = state
                .queue
                .peek_eligible(|c| {
                    waiting
                        .iter()
                        .find(|(w, _)| *w == c)
                        .is_some_and(|&(_, weight)| state.shares.allows(&split, c, weight))
                })
                .map(|(head, priority, _)| (head.ticket, head.item.keys.clone(), priority));
            let chosen = match fair {
                Some(head) => Some(head),
                // Everyone waiting is at its share: hold the rest for an active caller
                // between calls, or, if there is none, let the next in turn go.
                None if state.shares.idle_but_active(top, &waiting) => None,
                None => state
                    .queue
                    .peek()
                    .map(|(head, priority)| (head.ticket, head.item.keys.clone(), priority)),
            };
            match chosen {
                Some((ticket, keys, priority)) => {
                    let hold = inner.reserve_wait(&state, priority, &keys, now, unix_ms);
                    if hold.is_zero() {
                        Ok((ticket, keys))
                    } else {
                        let until = now.saturating_add(hold);
                        Err(state.queue.next_deadline().map_or(until, |d| d.min(until)))
                    }
                }
                None => {
                    let until = state.shares.next_release().unwrap_or(now);
                    Err(state.queue.next_deadline().map_or(until, |d| d.min(until)))
                }
            }
        };
        let wake_at = match head {
            Ok((ticket, keys)) => {
                let reservation = inner.store.reserve(&keys, now, unix_ms).await;
                match settle(&mut lock(&lane.state), ticket, reservation, &inner.clock) {
                    Some(wake_at) => wake_at,
                    None => continue,
                }
            }
            Err(wake_at) => wake_at,
        };
        tokio::select! {
            () = tokio::time::sleep_until(inner.clock.instant_of(wake_at)) => {}
            () = lane.wake.notified() => {}
        }
    }
}

/// Delivers the head's verdict, or returns when to try again (the store's "not before",
/// or an earlier deadline in the queue).
fn settle(
    state: &mut LaneState,
    ticket: QueueTicket,
    reservation: Reservation,
    clock: &Clock,
) -> Option<Tick> {
    let verdict = match reservation {
        Reservation::NotBefore(not_before) => {
            return Some(
                state
                    .queue
                    .next_deadline()
                    .map_or(not_before, |d| d.min(not_before)),
            );
        }
        Reservation::Granted => Ok(clock.now()),
        Reservation::DailyExhausted(e) => Err(Refusal::DailyExhausted {
            resets_at_unix_ms: e.resets_at_unix_ms,
        }),
        Reservation::StoreUnavailable => Err(Refusal::StoreUnavailable),
    };
    // When the ticket is gone, its caller left while the slot was being reserved: the
    // slot stays spent (the safe side of the limit) and the next waiter gets its turn.
    if let Some(head) = state.queue.take(ticket) {
        if verdict.is_ok() {
            state.shares.record(head.item.seat, clock.now());
        }
        let verdict = verdict.map(|sent| sent.saturating_duration_since(head.item.arrived));
        let _ = head.item.reply.send(verdict);
    }
    None
}

/// Drops lanes and budgets nobody used for `idle_ttl`, so memory follows active owners.
async fn sweep_idle(inner: Weak<PacerInner>) {
    loop {
        // Read each round, so a reloaded `idle_ttl_ms` sets the pace from the next sweep.
        let period = match inner.upgrade() {
            Some(inner) => sweep_period(inner.config.load().idle_ttl),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.clock.now();
        let ttl = inner.config.load().idle_ttl;
        inner.lanes.retain(|_, lane| {
            let state = lock(&lane.state);
            state.driving
                || !state.queue.is_empty()
                || now.saturating_duration_since(state.idle_since) < ttl
        });
        inner.store.evict_idle(now, inner.clock.unix_ms(), ttl);
    }
}

fn sweep_period(idle_ttl: Duration) -> Duration {
    (idle_ttl / 2).max(Duration::from_secs(1))
}

impl Pacer {
    /// Takes on reloaded settings and limits without dropping anything: every lane keeps
    /// its queue (a lowered `max_depth_per_owner` only refuses new calls), shares the new
    /// window, and its driver wakes to judge its head by the new limits at once; the
    /// store applies the limits to live budgets in place. Calls already sent are not
    /// touched.
    pub fn reconfigure(&self, config: PacerConfig, limits: hubgate_engine::Limits) {
        let inner = &self.inner;
        inner.store.set_limits(limits, inner.clock.unix_ms());
        let old = inner.config.swap(Arc::new(config.clone()));
        let new_retry_terms = (old.retry.budget_percent, old.retry.budget_min_per_second)
            != (
                config.retry.budget_percent,
                config.retry.budget_min_per_second,
            );
        for entry in inner.lanes.iter() {
            let (kind, lane) = (entry.key().1, entry.value());
            {
                let mut state = lock(&lane.state);
                state.queue.set_max_depth(config.max_depth_per_owner);
                state.shares.window = kind.fair_window(&config.fair_windows);
            }
            if new_retry_terms {
                lane.retry_budget.store(Arc::new(config.retry.new_budget()));
            }
            lane.wake.notify_one();
        }
    }

    /// Every live lane's owner and the calls waiting in it (0 for a recently used idle
    /// lane), read at scrape time by the budget metrics and the admin API.
    pub fn queue_depths(&self) -> Vec<(Owner, usize)> {
        let mut depths: std::collections::HashMap<Owner, usize> = std::collections::HashMap::new();
        for lane in self.inner.lanes.iter() {
            *depths.entry(lane.key().0).or_default() += lock(&lane.value().state).queue.len();
        }
        depths.into_iter().collect()
    }

    /// The clock the pacer reads, so views of the store use the same ticks.
    pub fn clock(&self) -> Clock {
        self.inner.clock
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Lane state stays consistent across a panic (each step is a whole queue operation).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{budgets_for, CallClass};
    use hubgate_engine::{DailySpec, Limits, WindowSpec};
    use crate::store::MemoryStore;

    const WINDOW: Duration = Duration::from_millis(1000);
    const OWNER: Owner = Owner::App {
        app_id: 1,
        portal_id: 10,
    };

    #[test]
    fn a_split_counts_each_caller_once_whether_active_waiting_or_both() {
        let seat = |caller, weight, priority| Seat {
            priority,
            caller,
            weight,
        };
        let mut shares = Shares::new((10, WINDOW));
        shares.record(seat(1, 2, Priority::Normal), Tick(0));
        shares.record(seat(1, 2, Priority::Normal), Tick(1));
        shares.record(seat(2, 3, Priority::Normal), Tick(0));
        shares.record(seat(3, 5, Priority::High), Tick(0));
        // 1 is active; 2 active and waiting (its recorded weight counts); 3 active only at
        // another priority, so here it counts as waiting; 4 only waits.
        let split = shares.split(Priority::Normal, &[(2, 9), (3, 7), (4, 1)]);
        assert_eq!(split.callers, 4);
        assert_eq!(split.total_weight, 2 + 3 + 7 + 1);
        let high = shares.split(Priority::High, &[]);
        assert_eq!((high.callers, high.total_weight), (1, 5));
    }

    fn pacer(limit: u32, max_depth: usize, daily: u64) -> Pacer {
        let limits = Limits {
            burst: WindowSpec::new(limit, WINDOW),
            daily: DailySpec {
                limit: daily,
                utc_offset_secs: 0,
            },
            ..Limits::default()
        };
        Pacer::new(
            Arc::new(MemoryStore::new(limits)),
            Clock::new(),
            PacerConfig {
                max_depth_per_owner: max_depth,
                idle_ttl: Duration::from_secs(300),
                retry: RetryConfig::default(),
                high_reserve: HighReserve::default(),
                fair_windows: FairWindows::default(),
            },
        )
    }

    fn ask(owner: Owner, keys: Keys, max_wait: Duration) -> Ask {
        Ask {
            owner,
            keys,
            seat: Seat {
                priority: Priority::Normal,
                caller: 0,
                weight: 1,
            },
            max_wait,
            retry: false,
        }
    }

    fn keys(owner: Owner) -> Keys {
        budgets_for(owner, CallClass::default())
    }

    /// Starts `n` calls at once and returns each one's grant time since start, in order.
    async fn burst(
        pacer: &Pacer,
        owner: Owner,
        n: usize,
        max_wait: Duration,
    ) -> Vec<Result<Duration, Refusal>> {
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer
                        .admit(ask(owner, keys(owner), max_wait))
                        .await
                        .map(|_| start.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_up_to_the_limit_leaves_at_once_and_the_rest_waits_a_window() {
        let pacer = pacer(10, 100, 0);
        let times = burst(&pacer, OWNER, 25, Duration::from_secs(60)).await;
        let times: Vec<Duration> = times.into_iter().map(Result::unwrap).collect();
        assert!(
            times[..10].iter().all(|t| *t == Duration::ZERO),
            "{times:?}"
        );
        assert!(times[10..20].iter().all(|t| *t == WINDOW), "{times:?}");
        assert!(times[20..].iter().all(|t| *t == 2 * WINDOW), "{times:?}");
        assert_eq!(pacer.queue_depth(&OWNER), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_ever_holds_more_than_the_limit() {
        let pacer = pacer(7, 10_000, 0);
        let start = tokio::time::Instant::now();
        let mut calls = Vec::new();
        // Arrivals spread unevenly over about five windows.
        for i in 0..60u64 {
            let pacer = pacer.clone();
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i * i * 37) % 4000)).await;
                pacer
                    .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                    .await
                    .unwrap();
                start.elapsed()
            }));
        }
        let mut sends = Vec::new();
        for call in calls {
            sends.push(call.await.unwrap());
        }
        sends.sort();
        for (i, first) in sends.iter().enumerate() {
            let in_window = sends[i..]
                .iter()
                .take_while(|t| **t < *first + WINDOW)
                .count();
            assert!(
                in_window <= 7,
                "{in_window} sends within a window starting at {first:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_judges_queued_calls_by_the_new_limit_at_once() {
        let pacer = pacer(2, 100, 0);
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer
                        .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                        .await
                        .map(|_| start.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pacer.queue_depth(&OWNER), 4, "two sent, four queued");
        let raised = Limits {
            burst: WindowSpec::new(6, WINDOW),
            ..Limits::default()
        };
        let config = pacer.inner.config.load().as_ref().clone();
        pacer.reconfigure(config, raised);
        let mut times = Vec::new();
        for call in calls {
            times.push(call.await.unwrap().unwrap());
        }
        times.sort();
        assert_eq!(times[..2], [Duration::ZERO; 2]);
        assert!(
            times[2..].iter().all(|t| *t == Duration::from_millis(100)),
            "the queued four leave at the reload, not a window later: {times:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let pacer = pacer(2, 3, 0);
        let results = burst(&pacer, OWNER, 6, Duration::from_secs(60)).await;
        let refused: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
        assert!(
            matches!(refused[..], [&Err(Refusal::QueueFull { depth: 3, drain })] if drain == 2 * WINDOW),
            "{refused:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unmeetable_deadline_is_refused_on_arrival_with_the_estimate() {
        let pacer = pacer(2, 100, 0);
        let results = burst(&pacer, OWNER, 3, Duration::from_millis(500)).await;
        assert!(results[0].is_ok() && results[1].is_ok());
        assert_eq!(
            results[2],
            Err(Refusal::DeadlineUnmeetable {
                estimate: WINDOW,
                deadline: Duration::from_millis(500)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_passes_in_the_queue_is_refused_then() {
        // Two apps of one portal share its search budget; app A's estimate cannot see
        // app B's queue, so A's deadline passes while B's calls take the slots.
        let limits = Limits {
            search: WindowSpec::new(1, WINDOW),
            ..Limits::default()
        };
        let pacer = Pacer::new(
            Arc::new(MemoryStore::new(limits)),
            Clock::new(),
            PacerConfig {
                max_depth_per_owner: 100,
                idle_ttl: Duration::from_secs(300),
                retry: RetryConfig::default(),
                high_reserve: HighReserve::default(),
                fair_windows: FairWindows::default(),
            },
        );
        let search = CallClass {
            search: true,
            ..CallClass::default()
        };
        let (a, b) = (
            Owner::App {
                app_id: 1,
                portal_id: 10,
            },
            Owner::App {
                app_id: 2,
                portal_id: 10,
            },
        );
        pacer
            .admit(ask(b, budgets_for(b, search), Duration::from_secs(60)))
            .await
            .unwrap();
        let queued_b: Vec<_> = (0..3)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer
                        .admit(ask(b, budgets_for(b, search), Duration::from_secs(60)))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let late = pacer
            .admit(ask(a, budgets_for(a, search), Duration::from_millis(1500)))
            .await;
        match late {
            Err(Refusal::DeadlineExpired { waited, .. }) => {
                assert_eq!(waited, Duration::from_millis(1500))
            }
            other => panic!("expected an expired deadline, got {other:?}"),
        }
        for b in queued_b {
            b.await.unwrap().unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_the_queue_spends_nothing() {
        let pacer = pacer(1, 100, 0);
        pacer
            .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
            .await
            .unwrap();
        let leaver = {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer
                    .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pacer.queue_depth(&OWNER), 1);
        leaver.abort();
        let _ = leaver.await;
        assert_eq!(pacer.queue_depth(&OWNER), 0);
        // The slot the leaver would have taken at t = 1 s is still there for the next call.
        let start = tokio::time::Instant::now();
        pacer
            .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), WINDOW - Duration::from_millis(10));
        let fresh = pacer
            .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
            .await;
        assert!(fresh.is_ok());
        assert_eq!(
            start.elapsed(),
            2 * WINDOW - Duration::from_millis(10),
            "one slot per window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_daily_budget_refuses_without_waiting() {
        let pacer = pacer(100, 100, 3);
        let results = burst(&pacer, OWNER, 5, Duration::from_secs(60)).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert!(results[3..]
            .iter()
            .all(|r| matches!(r, Err(Refusal::DailyExhausted { resets_at_unix_ms }) if *resets_at_unix_ms % 86_400_000 == 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_lanes_are_swept() {
        let limits = Limits::default();
        let pacer = Pacer::new(
            Arc::new(MemoryStore::new(limits)),
            Clock::new(),
            PacerConfig {
                max_depth_per_owner: 10,
                idle_ttl: Duration::from_secs(2),
                retry: RetryConfig::default(),
                high_reserve: HighReserve::default(),
                fair_windows: FairWindows::default(),
            },
        );
        for portal_id in 0..50 {
            let owner = Owner::App {
                app_id: 1,
                portal_id,
            };
            pacer
                .admit(ask(owner, keys(owner), Duration::from_secs(1)))
                .await
                .unwrap();
        }
        assert_eq!(pacer.active_owners(), 50);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(pacer.active_owners(), 0);
        // Burst windows are dropped once empty; a portal's daily counter is kept until its
        // day ends, since dropping it would hand the portal a second daily allowance.
        assert_eq!(pacer.store().len(), 50, "only the 50 daily counters remain");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_served_at_once_still_counts_against_its_share() {
        let limits = Limits {
            burst: WindowSpec::new(4, WINDOW),
            ..Limits::default()
        };
        let pacer = Pacer::new(
            Arc::new(MemoryStore::new(limits)),
            Clock::new(),
            PacerConfig {
                max_depth_per_owner: 100,
                idle_ttl: Duration::from_secs(300),
                retry: RetryConfig::default(),
                high_reserve: HighReserve::default(),
                fair_windows: FairWindows {
                    burst: (4, WINDOW),
                    search: (5, WINDOW),
                },
            },
        );
        let as_caller = |caller| Ask {
            seat: Seat {
                priority: Priority::Normal,
                caller,
                weight: 1,
            },
            ..ask(OWNER, keys(OWNER), Duration::from_secs(60))
        };
        // Caller 2 sends once from idle; caller 1 then asks for four. Two of the window's
        // four slots are caller 1's share; caller 2's second share slot is kept for it.
        assert_eq!(pacer.admit(as_caller(2)).await, Ok(Duration::ZERO));
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.admit(as_caller(1)).await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        let mut times = Vec::new();
        for call in calls {
            times.push(call.await.unwrap());
        }
        times.sort();
        assert_eq!(times[..2], [Duration::ZERO, Duration::ZERO]);
        assert_eq!(
            times[2], WINDOW,
            "waits until caller 2's send leaves the window"
        );
    }
}
