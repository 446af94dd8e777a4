//! Owns every budget by key and the all-or-nothing reservation of several budgets per call.
//!
//! A call spends several budgets at once (burst + daily, search + daily, fewer when exempt).
//! `BudgetBook::reserve` either commits a slot in every one of them or commits nothing and
//! says why: the latest `next_free` over the window budgets, or the daily reset.
//!
//! # Mapping onto one atomic store round trip
//! The reservation is state-passing on purpose: each budget's decision is a pure function
//! of (spec, state, now) — `SlidingLog::check`/`commit`, `DailyBudget::check`/`commit` —
//! and `reserve` is "check all, then commit all". A Redis store runs exactly that as one
//! Lua script per reservation: `KEYS` = the budget keys (all but the credential and global
//! ones carry the portal id, so a `{portal_id}` hash tag keeps them in one cluster slot),
//! `ARGV` = each key's spec (capacity, span in µs / daily limit, offset) and `unix_ms`, and
//! `now` read from `TIME` inside the script so replicas share one clock. State per window
//! key is its send ticks (a list trimmed to capacity) plus `blocked_until`; per daily key
//! `{day, used, exhausted}`. The script returns `granted`, `not_before <tick>` or
//! `daily <reset_ms>`, which is `Reservation` verbatim. Nothing here needs a second round
//! trip: no lock, no read-modify-write split across calls.

use std::collections::HashMap;
use std::time::Duration;

use super::daily::{DailyBudget, DailyExhausted, DailySpec};
use super::time::Tick;
use super::window::{SlidingLog, WindowSpec};

/// Names one budget. Window budgets: `Burst`, `Search`, `Unidentified`, `Global`, `Token`;
/// counter budgets: `Daily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetKey {
    /// The rolling burst window of one app installed in one portal.
    Burst {
        /// HubSpot app id.
        app_id: u64,
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// The per-second CRM search window of one portal.
    Search {
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// The daily counter of one portal.
    Daily {
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// A burst window for a credential that could not be resolved to an owner.
    Unidentified {
        /// Hash of the credential (never the credential itself).
        credential_hash: u64,
    },
    /// The one shared window for calls without credentials.
    Global,
    /// The window of OAuth token calls (refresh and exchange), which no other call spends:
    /// anonymous junk cannot take the slots that keep every OAuth app's access alive.
    Token,
}

/// What a budget is configured as; which variant follows from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSpec {
    /// A rolling window.
    Window(WindowSpec),
    /// A daily counter.
    Daily(DailySpec),
}

/// Default specs per budget kind plus per-owner overrides; consulted when a budget is
/// first used, and applied to live budgets in place by `BudgetBook::set_limits`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Burst window of each (app, portal) without an override.
    pub burst: WindowSpec,
    /// Search window of each portal without an override.
    pub search: WindowSpec,
    /// Burst window of each unresolved credential.
    pub unidentified: WindowSpec,
    /// The window shared by calls without credentials.
    pub global: WindowSpec,
    /// The window of OAuth token calls.
    pub token: WindowSpec,
    /// Daily counter of each portal without an override.
    pub daily: DailySpec,
    /// Window specs for particular `Burst`/`Search`/`Unidentified` keys; an override on a
    /// `Daily` key is ignored.
    pub window_overrides: HashMap<BudgetKey, WindowSpec>,
    /// Daily specs per portal id (limit and time zone).
    pub daily_overrides: HashMap<u64, DailySpec>,
}

impl Default for Limits {
    /// HubSpot's documented defaults: 110 per 10 s burst, 5 per second search, no daily
    /// limit; unidentified credentials get the burst default, anonymous calls 10 per second,
    /// OAuth token calls 10 per second of their own.
    fn default() -> Limits {
        let burst = WindowSpec::new(110, Duration::from_secs(10));
        Limits {
            burst,
            search: WindowSpec::new(5, Duration::from_secs(1)),
            unidentified: burst,
            global: WindowSpec::new(10, Duration::from_secs(1)),
            token: WindowSpec::new(10, Duration::from_secs(1)),
            daily: DailySpec::default(),
            window_overrides: HashMap::new(),
            daily_overrides: HashMap::new(),
        }
    }
}

impl Limits {
    /// The spec a budget named `key` starts with.
    pub fn spec_for(&self, key: &BudgetKey) -> BudgetSpec {
        let default = match *key {
            BudgetKey::Daily { portal_id } => {
                return BudgetSpec::Daily(
                    self.daily_overrides
                        .get(&portal_id)
                        .copied()
                        .unwrap_or(self.daily),
                )
            }
            BudgetKey::Burst { .. } => self.burst,
            BudgetKey::Search { .. } => self.search,
            BudgetKey::Unidentified { .. } => self.unidentified,
            BudgetKey::Global => self.global,
            BudgetKey::Token => self.token,
        };
        BudgetSpec::Window(self.window_overrides.get(key).copied().unwrap_or(default))
    }

    /// The shortest time any window holds a send (`WindowSpec::span_micros`): how often a
    /// call still on its way must be bounded so that no window lets its slot go.
    pub fn shortest_span(&self) -> Duration {
        let specs = [
            self.burst,
            self.search,
            self.unidentified,
            self.global,
            self.token,
        ];
        let shortest = specs
            .iter()
            .chain(self.window_overrides.values())
            .map(WindowSpec::span_micros)
            .min()
            .unwrap_or(1);
        Duration::from_micros(shortest)
    }
}

/// One budget's state.
#[derive(Debug, Clone)]
pub enum Budget {
    /// A rolling window.
    Window(SlidingLog),
    /// A daily counter.
    Daily(DailyBudget),
}

impl Budget {
    /// A fresh budget for `spec`.
    pub fn new(spec: BudgetSpec) -> Budget {
        match spec {
            BudgetSpec::Window(w) => Budget::Window(SlidingLog::new(w)),
            BudgetSpec::Daily(d) => Budget::Daily(DailyBudget::new(d)),
        }
    }
}

/// A budget and when it was last asked about, for idle eviction.
#[derive(Debug, Clone)]
struct Entry {
    /// The budget's state.
    budget: Budget,
    /// Latest tick any operation touched it.
    last_used: Tick,
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Every budget had a slot; all were spent at `now`.
    Granted,
    /// Nothing was spent; no earlier tick can succeed (the latest `next_free` over the
    /// window budgets; `Tick::MAX` = never, e.g. limit 0).
    NotBefore(Tick),
    /// Nothing was spent; a daily budget is out until its reset. Takes precedence over
    /// `NotBefore` because waiting for the window would not help.
    DailyExhausted(DailyExhausted),
    /// Nothing was spent; a shared store cannot be reached and `[store] on_failure =
    /// "fail_closed"` refuses calls until it can. `BudgetBook` never answers this.
    StoreUnavailable,
}

/// All budgets by key, created on first use from `Limits`.
#[derive(Debug, Clone)]
pub struct BudgetBook {
    /// Specs for budgets not created yet.
    limits: Limits,
    /// The live budgets; bounded by `evict_idle`. Looked up several times per call, so
    /// hashed with foldhash rather than SipHash.
    budgets: HashMap<BudgetKey, Entry, foldhash::fast::RandomState>,
}

impl BudgetBook {
    /// An empty book.
    pub fn new(limits: Limits) -> BudgetBook {
        BudgetBook {
            limits,
            budgets: HashMap::default(),
        }
    }

    /// The specs used for new budgets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the specs (a config reload) and applies them to every live budget in
    /// place at `unix_ms`: their sends and counts stay, so nothing already spent
    /// is forgotten and nothing waiting has to start over.
    pub fn set_limits(&mut self, limits: Limits, unix_ms: i64) {
        for (key, entry) in &mut self.budgets {
            match (&mut entry.budget, limits.spec_for(key)) {
                (Budget::Window(log), BudgetSpec::Window(spec)) => log.respec(spec),
                (Budget::Daily(day), BudgetSpec::Daily(spec)) => day.respec(spec, unix_ms),
                // A key's kind never changes; a mismatch cannot happen.
                _ => {}
            }
        }
        self.limits = limits;
    }

    /// Live budgets.
    pub fn len(&self) -> usize {
        self.budgets.len()
    }

    /// Whether no budget is live.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// The budget named `key`, creating it from `limits` if new, and marking it used.
    fn entry(&mut self, key: &BudgetKey, now: Tick) -> &mut Budget {
        let limits = &self.limits;
        let entry = self.budgets.entry(*key).or_insert_with(|| Entry {
            budget: Budget::new(limits.spec_for(key)),
            last_used: now,
        });
        entry.last_used = entry.last_used.max(now);
        &mut entry.budget
    }

    /// Spends one slot in every budget of `keys` at `now` (`unix_ms` for daily ones), or
    /// none. A key listed twice is spent once.
    pub fn reserve(&mut self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Reservation {
        let mut not_before: Option<Tick> = None;
        for key in keys {
            match self.entry(key, now) {
                Budget::Window(log) => {
                    if let Err(t) = log.check(now) {
                        not_before = not_before.max(Some(t));
                    }
                }
                Budget::Daily(day) => {
                    if let Err(e) = day.check(unix_ms) {
                        return Reservation::DailyExhausted(e);
                    }
                }
            }
        }
        if let Some(t) = not_before {
            return Reservation::NotBefore(t);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                continue;
            }
            match self.entry(key, now) {
                Budget::Window(log) => log.commit(now),
                Budget::Daily(day) => day.commit(unix_ms),
            }
        }
        Reservation::Granted
    }

    /// How long until a call spending `keys`, with `ahead` calls queued before it that spend
    /// the same budgets, could be granted; `Duration::MAX` means never. A daily budget with
    /// nothing left answers `Err`; one that runs out within `ahead` calls waits for its reset.
    pub fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted> {
        let mut wait = Duration::ZERO;
        for key in keys {
            let this = match (self.budgets.get(key), self.limits.spec_for(key)) {
                (Some(Entry { budget, .. }), _) => match budget {
                    Budget::Window(log) => log.estimate_wait(now, ahead),
                    Budget::Daily(day) => daily_wait(day, unix_ms, ahead)?,
                },
                (None, BudgetSpec::Window(spec)) => spec.idle_wait(ahead),
                (None, BudgetSpec::Daily(spec)) => {
                    daily_wait(&DailyBudget::new(spec), unix_ms, ahead)?
                }
            };
            wait = wait.max(this);
        }
        Ok(wait)
    }

    /// HubSpot answered 429 for window budget `key`: hold it full until `until`.
    /// Ignored for daily keys (use `mark_daily_exhausted`).
    pub fn block_until(&mut self, key: &BudgetKey, now: Tick, until: Tick) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.block_until(until);
        }
    }

    /// HubSpot reported `reported` requests left in window budget `key`; lower our view to
    /// match, never raise it. Ignored for daily keys.
    pub fn observe_remaining(&mut self, key: &BudgetKey, now: Tick, reported: u32) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_remaining(now, reported);
        }
    }

    /// HubSpot counted `hub_used` calls in window budget `key` when the call admitted at
    /// `admitted` arrived, in an answer received at `now`; what our log does not explain is
    /// left to the other client (see `SlidingLog::observe_usage`). Ignored for daily keys.
    pub fn observe_usage(
        &mut self,
        key: &BudgetKey,
        now: Tick,
        hub_used: u32,
        reported_max: u32,
        admitted: Tick,
    ) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_usage(now, hub_used, reported_max, admitted);
        }
    }

    /// A send on window budget `key` admitted by `admitted` reached HubSpot no later than
    /// `by` (see `SlidingLog::observe_arrival_bound`). Ignored for daily keys, which count,
    /// not time.
    pub fn observe_arrival_bound(
        &mut self,
        key: &BudgetKey,
        admitted: Tick,
        held_at: Tick,
        by: Tick,
    ) {
        if let Budget::Window(log) = self.entry(key, by) {
            log.observe_arrival_bound(admitted, held_at, by);
        }
    }

    /// HubSpot answered 429 for window budget `key` at `now`. Ignored for daily keys.
    pub fn observe_rejection(&mut self, key: &BudgetKey, now: Tick) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_rejection(now);
        }
    }

    /// HubSpot answered 429 `DAILY` for `portal_id`: refuse until its local midnight.
    pub fn mark_daily_exhausted(&mut self, portal_id: u64, now: Tick, unix_ms: i64) {
        if let Budget::Daily(day) = self.entry(&BudgetKey::Daily { portal_id }, now) {
            day.mark_exhausted(unix_ms);
        }
    }

    /// HubSpot reported `reported` daily requests left for `portal_id`.
    pub fn observe_daily_remaining(
        &mut self,
        portal_id: u64,
        now: Tick,
        unix_ms: i64,
        reported: u64,
    ) {
        if let Budget::Daily(day) = self.entry(&BudgetKey::Daily { portal_id }, now) {
            day.observe_remaining(unix_ms, reported);
        }
    }

    /// Every live budget, in no particular order, for admin views and metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&BudgetKey, &Budget)> + '_ {
        self.budgets.iter().map(|(k, e)| (k, &e.budget))
    }

    /// The live budget named `key`, for admin views; `None` if not live.
    pub fn get(&self, key: &BudgetKey) -> Option<&Budget> {
        self.budgets.get(key).map(|e| &e.budget)
    }

    /// Forgets budgets untouched for `idle_ttl` whose state is indistinguishable from a
    /// fresh one, so eviction never changes an answer. Returns how many were evicted.
    ///
    /// A daily budget is only idle once its day is over (or nothing was spent): dropping a
    /// live count would hand the portal a second allowance.
    pub fn evict_idle(&mut self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        let before = self.budgets.len();
        self.budgets.retain(|_, e| {
            let quiet = e.last_used.saturating_add(idle_ttl) <= now;
            let idle = match &e.budget {
                Budget::Window(log) => log.is_idle(now),
                Budget::Daily(day) => day.is_idle(unix_ms),
            };
            !(quiet && idle)
        });
        before - self.budgets.len()
    }
}

/// The wait a daily budget imposes on the call with `ahead` calls before it.
fn daily_wait(day: &DailyBudget, unix_ms: i64, ahead: usize) -> Result<Duration, DailyExhausted> {
    day.check(unix_ms)?;
    let ahead = u64::try_from(ahead).unwrap_or(u64::MAX);
    if day.remaining(unix_ms) > ahead {
        return Ok(Duration::ZERO);
    }
    let reset = day.reset_at(unix_ms);
    let ms = u64::try_from(reset.saturating_sub(unix_ms)).unwrap_or(0);
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests;
