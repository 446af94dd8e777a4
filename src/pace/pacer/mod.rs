//! Pacing: each call waits in its owner's lane until every budget it spends has a free
//! slot, then goes; calls that cannot make their deadline are refused instead.
//!
//! A lane holds an owner's waiting calls of one kind (burst, search or other, so a slow
//! search never holds up the owner's other calls) in a `FairQueue`: strict priority
//! between `high`, `normal` and `low`, deficit round robin between callers. A call that
//! finds its lane empty reserves at once when the store can answer without I/O, so a
//! burst from idle leaves with no delay. Otherwise it queues, and the lane's driver task —
//! spawned when the lane gets busy, gone when it empties — reserves for the head (on a
//! store that needs a round trip, for every call it would let go one at a time, in one
//! batch), sleeps until the store's "not before" or the next deadline, and wakes on new
//! arrivals.
//! Nothing polls: an idle owner has no task and no timer, and a sweeper drops idle lanes.

mod batch;
mod lane;
mod shares;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use hubgate_engine::{
    BudgetKey, FairQueue, Limits, Priority, RejectReason, Reservation, Seat, Tick,
};
use tokio::sync::{oneshot, Notify};

pub use lane::{Admission, Refusal};
pub use shares::{FairWindows, HighReserve};

use crate::config::RetryConfig;
use crate::hubspot::{Keys, Owner};
use crate::pace::clock::Clock;
use crate::pace::retry;
use crate::store::BudgetStore;
use lane::{lock, settle, Lane, LaneKind, LaneState, LeaveOnDrop, Waiter};
use shares::Shares;

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

#[cfg(test)]
impl PacerConfig {
    /// The pacer alone, for tests: no high reserve and no fair split between callers.
    pub(crate) fn unshared(max_depth_per_owner: usize, idle_ttl: Duration) -> PacerConfig {
        PacerConfig {
            max_depth_per_owner,
            idle_ttl,
            retry: RetryConfig::default(),
            high_reserve: HighReserve::default(),
            fair_windows: FairWindows::default(),
        }
    }
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
#[derive(Debug, Clone)]
pub struct Pacer {
    inner: Arc<PacerInner>,
}

#[derive(Debug)]
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
        self.lane_owners().len()
    }

    /// Every owner with a live lane, once each, read from the lanes' keys alone (no lane
    /// is locked): what a page of the admin API sorts.
    pub fn lane_owners(&self) -> Vec<Owner> {
        let owners: std::collections::HashSet<Owner, foldhash::fast::RandomState> =
            self.inner.lanes.iter().map(|lane| lane.key().0).collect();
        owners.into_iter().collect()
    }

    /// Calls waiting for `owner`, over all its lanes.
    pub fn queue_depth(&self, owner: &Owner) -> usize {
        self.lane_depth(owner).unwrap_or(0)
    }

    /// Calls waiting for `owner` over all its lanes, or `None` when it has no live lane:
    /// one lookup per lane kind, whatever the number of owners.
    pub fn lane_depth(&self, owner: &Owner) -> Option<usize> {
        let mut depth = None;
        for kind in LaneKind::ALL {
            if let Some(lane) = self.inner.lanes.get(&(*owner, kind)) {
                *depth.get_or_insert(0) += lock(&lane.value().state).queue.len();
            }
        }
        depth
    }

    /// Wakes the driver of `owner`'s lane for calls spending `keys`, if there is one: a
    /// lesson can free a slot before the driver's timer (the answer to a probe, see
    /// `SlidingLog::probe_out_until`).
    pub fn wake(&self, owner: Owner, keys: &Keys) {
        if let Some(lane) = self.inner.lanes.get(&(owner, LaneKind::of(keys))) {
            lane.wake.notify_one();
        }
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
    /// result is the time waited and the tick the budgets were reserved at. Dropping the
    /// future (the caller went away) leaves the queue without spending anything.
    pub async fn admit(&self, ask: Ask) -> Result<Admission, Refusal> {
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
            if let Some(at_once) = inner.try_at_once(&mut state, seat, &keys, now, unix_ms) {
                return at_once;
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

impl Pacer {
    /// Reserves for the call only if it can go at once (its lane is empty and every budget
    /// has a free slot without I/O), or says why it never will; `None` when it would wait.
    /// Nothing is queued: what would wait is the caller's to place (a coalesced read joins
    /// a batch instead).
    pub fn admit_now(&self, ask: &Ask) -> Option<Result<Admission, Refusal>> {
        let inner = &self.inner;
        let (now, unix_ms) = (inner.clock.now(), inner.clock.unix_ms());
        let lane = inner.lane(ask.owner, LaneKind::of(&ask.keys));
        let at_once = inner.try_at_once(&mut lock(&lane.state), ask.seat, &ask.keys, now, unix_ms);
        if matches!(at_once, Some(Ok(_))) && !ask.retry {
            use tower::retry::budget::Budget;
            lane.retry_budget.load().deposit();
        }
        at_once
    }
}

impl Pacer {
    /// Whether any window `keys` spend has at most `percent` of its slots left now (a
    /// budget never used yet has them all).
    pub fn is_tight(&self, keys: &Keys, percent: u32) -> bool {
        let inner = &self.inner;
        let (now, unix_ms) = (inner.clock.now(), inner.clock.unix_ms());
        keys.iter()
            .filter(|key| !matches!(key, BudgetKey::Daily { .. }))
            .filter_map(|key| inner.store.view(key, now, unix_ms))
            .any(|view| {
                view.limit > 0
                    && u128::from(view.remaining) * 100
                        <= u128::from(view.limit) * u128::from(percent)
            })
    }

    /// The burst window's slot interval: how often a slot frees when calls go at the limit.
    pub fn burst_slot_interval(&self) -> Duration {
        let (limit, window) = self.inner.config.load().fair_windows.burst;
        window / limit.max(1)
    }
}

impl PacerInner {
    /// The path of a call that finds its lane empty: reserved now (zero wait), refused for
    /// good, or `None` when it has to queue.
    fn try_at_once(
        &self,
        state: &mut LaneState,
        seat: Seat,
        keys: &Keys,
        now: Tick,
        unix_ms: i64,
    ) -> Option<Result<Admission, Refusal>> {
        state.idle_since = now;
        if seat.priority == Priority::High {
            state.last_high = Some(now);
        }
        state.shares.prune(now);
        let asking = [(seat.caller, seat.weight)];
        let split = state.shares.split(seat.priority, &asking);
        if !(state.queue.is_empty()
            && state.shares.allows(&split, seat.caller, seat.weight)
            && self
                .reserve_wait(state, seat.priority, keys, now, unix_ms)
                .is_zero())
        {
            return None;
        }
        match self.store.try_reserve_now(keys, now, unix_ms) {
            Some(Reservation::Granted) => {
                state.shares.record(seat, now);
                Some(Ok(Admission {
                    waited: Duration::ZERO,
                    at: now,
                }))
            }
            Some(Reservation::DailyExhausted(e)) => Some(Err(Refusal::DailyExhausted {
                resets_at_unix_ms: e.resets_at_unix_ms,
            })),
            Some(Reservation::StoreUnavailable) => Some(Err(Refusal::StoreUnavailable)),
            Some(Reservation::NotBefore(_)) | None => None,
        }
    }

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
                    retry_budget: ArcSwap::from_pointee(retry::retry_budget(&config.retry)),
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
        self.reserve_wait_behind(state, priority, keys, (now, unix_ms), 0)
    }

    /// `reserve_wait` for a call reserved after `planned` others of its lane's batch,
    /// which the store does not count yet.
    fn reserve_wait_behind(
        &self,
        state: &LaneState,
        priority: Priority,
        keys: &Keys,
        (now, unix_ms): (Tick, i64),
        planned: usize,
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
            .estimate_wait(keys, now, unix_ms, slots + planned)
            .unwrap_or(Duration::ZERO)
    }
}

/// Serves one lane until it is empty: reserve for the head (and, on a store that needs a
/// round trip, for the calls that would follow it, in one batch), deliver, or sleep until
/// the store says a slot frees up, the high reserve allows, or a deadline passes.
async fn drive(inner: Arc<PacerInner>, lane: Arc<Lane>) {
    loop {
        let now = inner.clock.now();
        let unix_ms = inner.clock.unix_ms();
        let planned = {
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
            batch::plan(&inner, &state, (now, unix_ms))
        };
        let wake_at = match planned {
            Ok(batch) => {
                let answers = match &batch[..] {
                    [(_, keys)] => vec![inner.store.reserve(keys, now, unix_ms).await],
                    _ => {
                        let asks: Vec<&[BudgetKey]> =
                            batch.iter().map(|(_, keys)| &keys[..]).collect();
                        inner.store.reserve_many(&asks, now, unix_ms).await
                    }
                };
                let stamped = inner.store.stamp_tick(now, inner.clock.now());
                let mut state = lock(&lane.state);
                // A prefix of the batch is answered; the asks after it stay queued as they were.
                let settled = batch.iter().zip(answers).find_map(|((ticket, _), answer)| {
                    settle(&mut state, *ticket, answer, stamped, &inner.clock)
                });
                match settled {
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
    pub fn reconfigure(&self, config: PacerConfig, limits: Limits) {
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
                lane.retry_budget
                    .store(Arc::new(retry::retry_budget(&config.retry)));
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
